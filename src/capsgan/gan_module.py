"""The GAN as a LightningModule with manual optimization.

Per training batch: one discriminator step on the real batch and an equal number of
generated images, then (every ``d_steps_per_g`` batches) one generator step with the
non-saturating loss. Lightning's manual-optimization pitfalls are handled here:

* ``trainer.global_step`` counts every ``optimizer.step()``, so a plain GAN would count
  two steps per batch. The discriminator's steps are kept out of that count, so
  ``global_step``, ``trainer.max_steps`` and ``ModelCheckpoint(every_n_train_steps=...)``
  are in generator steps. TensorBoard's x axis is Lightning's per-batch counter.
* Gradient clipping goes through ``self.clip_gradients`` (Trainer's
  ``gradient_clip_val`` is not allowed with manual optimization): ``gradient_clip_val``
  here.
* No LR schedulers are configured; one added later must be stepped by hand.

Logging is kept off the per-batch path: each ``self.log`` call costs Lightning a fraction
of a millisecond of Python (it walks the stored metric's attributes), which with 15 calls
a batch was ~10 % of a ``cnn`` step on the CPU (docs/performance.md). Step values are
logged only on the batches Lightning's logger writes, and the epoch means are summed on
the device and logged once an epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from capsgan.errors import DivergenceError
from capsgan.losses import discriminator_loss, generator_loss, probability_real
from capsgan.models.interface import score_kind


def _skip_step_count() -> None:
    """Replaces a LightningOptimizer's step-progress hooks (see module docstring)."""


class GAN(L.LightningModule):
    """Generator + discriminator trained adversarially.

    Args:
        generator: maps z (B, latent_dim) to images (B, C, H, W) in [-1, 1].
        discriminator: maps images to a (B,) score; its ``score_kind`` (a
            ``ScoreKind``: logit or capsule length) picks the loss.
        latent_dim: size of z.
        lr: Adam learning rate of both networks unless ``lr_g`` / ``lr_d`` is set.
        betas: Adam betas; DCGAN's (0.5, 0.999) by default.
        d_steps_per_g: discriminator steps (batches) per generator step.
        label_smoothing: one-sided smoothing, the real target becomes 1 - this.
        instance_noise: initial std of Gaussian noise added to every discriminator
            input (real and fake), annealed linearly to 0 over
            ``instance_noise_anneal_steps`` generator steps (0: never annealed).
        gradient_clip_val: clip each network's gradient norm to this (None: off).
        num_fixed_samples: size of the fixed noise batch behind the sample grids.
        compile: ``torch.compile`` both networks (in place, so checkpoints keep their keys);
            pays off on GPUs, where it fuses routing's elementwise work into few kernels.
        channels_last: keep both networks' weights and the image batches in NHWC memory
            format, which tensor-core GPUs convolve faster than NCHW.
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        latent_dim: int,
        lr: float = 2e-4,
        lr_g: float | None = None,
        lr_d: float | None = None,
        betas: Sequence[float] = (0.5, 0.999),
        d_steps_per_g: int = 1,
        label_smoothing: float = 0.0,
        instance_noise: float = 0.0,
        instance_noise_anneal_steps: int = 0,
        gradient_clip_val: float | None = None,
        num_fixed_samples: int = 64,
        compile: bool = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["generator", "discriminator"], logger=False)
        self.automatic_optimization = False
        self.generator = generator
        self.discriminator = discriminator
        self.score_kind = score_kind(discriminator)  # an undeclared kind raises here
        # A buffer, so it is saved in checkpoints: a resumed run keeps drawing the same grid.
        self.register_buffer("fixed_z", torch.randn(num_fixed_samples, latent_dim))
        if channels_last:
            generator.to(memory_format=torch.channels_last)
            discriminator.to(memory_format=torch.channels_last)
        if compile:
            generator.compile()
            discriminator.compile()
        else:
            # Lightning's model summary runs this once through forward(*it), so its FLOPs
            # column counts both networks for one image (a compiled network would compile
            # for batch size 1 first: no summary input then).
            self.example_input_array = (torch.zeros(1, latent_dim), True)
        # Divergence watch: per network (D, G), the generator step at which its loss was
        # first non-finite (-1: never). It stays on the device and is read only every
        # log_every_n_steps batches and before every checkpoint, so the GPU never waits for
        # a per-step sync (on the CPU it is read every batch; that costs nothing there).
        self._first_nonfinite: Tensor | None = None
        self._epoch_sums: dict[str, tuple[Tensor, int]] = {}  # key -> (sum, batches)

    def forward(self, z: Tensor, score: bool = False) -> Tensor:
        """Images G(z); with ``score``, the discriminator's scores D(G(z)) of them."""
        images = self.generator(z)
        return self.discriminator(images) if score else images

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        hp = self.hparams
        betas = tuple(hp.betas)
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=hp.lr_g or hp.lr, betas=betas)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=hp.lr_d or hp.lr, betas=betas)
        return [opt_g, opt_d]

    # -- helpers ---------------------------------------------------------------------

    def sample_z(self, n: int) -> Tensor:
        return torch.randn(n, self.hparams.latent_dim, device=self.device)

    def instance_noise_sigma(self) -> float:
        sigma, anneal = self.hparams.instance_noise, self.hparams.instance_noise_anneal_steps
        if sigma <= 0 or anneal <= 0:
            return sigma
        return sigma * max(0.0, 1.0 - self.global_step / anneal)

    def _discriminate(self, images: Tensor, sigma: float) -> Tensor:
        if sigma > 0:
            images = images + sigma * torch.randn_like(images)
        return self.discriminator(images)

    def _step(self, optimizer: Any, loss: Tensor, count_step: bool = True) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if self.hparams.gradient_clip_val:
            self.clip_gradients(optimizer, gradient_clip_val=self.hparams.gradient_clip_val)
        if not count_step:  # re-installed by Lightning before every training_step
            optimizer._on_before_step = optimizer._on_after_step = _skip_step_count
        optimizer.step()

    def discriminator_step(self, real: Tensor) -> dict[str, Tensor]:
        """One discriminator update; returns detached statistics for logging."""
        _, opt_d = self.optimizers()
        sigma = self.instance_noise_sigma()
        with torch.no_grad():
            fake = self.generator(self.sample_z(real.shape[0]))
        self.toggle_optimizer(opt_d)
        score_real, score_fake = self._discriminate(real, sigma), self._discriminate(fake, sigma)
        real_target = 1.0 - self.hparams.label_smoothing
        loss = discriminator_loss(score_real, score_fake, self.score_kind, real_target)
        self._step(opt_d, loss, count_step=False)
        self.untoggle_optimizer(opt_d)
        return self._d_stats(loss, score_real.detach(), score_fake.detach())

    def generator_step(self, batch_size: int) -> Tensor:
        """One generator update with the non-saturating loss; returns the loss."""
        opt_g, _ = self.optimizers()
        self.toggle_optimizer(opt_g)  # D's weights need no gradients here
        score = self._discriminate(
            self.generator(self.sample_z(batch_size)), self.instance_noise_sigma()
        )
        loss = generator_loss(score, self.score_kind)
        self._step(opt_g, loss)
        self.untoggle_optimizer(opt_g)
        return loss.detach()

    def _d_stats(self, loss: Tensor, score_real: Tensor, score_fake: Tensor) -> dict[str, Tensor]:
        p_real = probability_real(score_real, self.score_kind)
        p_fake = probability_real(score_fake, self.score_kind)
        acc_real = (p_real > 0.5).float().mean()
        acc_fake = (p_fake < 0.5).float().mean()
        return {
            "d_loss": loss.detach(),
            "d_acc_real": acc_real,
            "d_acc_fake": acc_fake,
            "d_acc": 0.5 * (acc_real + acc_fake),
            "d_x": p_real.mean(),
            "d_g_z": p_fake.mean(),
        }

    def prepare_images(self, images: Tensor) -> Tensor:
        """A batch in the networks' memory format (NHWC when ``channels_last``)."""
        if self.hparams.get("channels_last"):
            return images.contiguous(memory_format=torch.channels_last)
        return images

    # -- Lightning hooks ---------------------------------------------------------------

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        real = self.prepare_images(batch[0])
        step = self.global_step  # generator steps before this batch
        stats = self.discriminator_step(real)
        if (batch_idx + 1) % self.hparams.d_steps_per_g == 0:
            stats["g_loss"] = self.generator_step(real.shape[0])
        self._watch_losses(stats["d_loss"], stats.get("g_loss"), step)
        self._accumulate_epoch_means(stats)
        if self._logger_writes_this_batch():
            self.log_dict({f"train/{k}": v for k, v in stats.items()}, on_step=True, on_epoch=False)
        # The progress bar turns its values into Python floats whenever they are logged, a
        # GPU sync; so they are refreshed as often as the logger writes, not every batch.
        if (batch_idx + 1) % self.trainer.log_every_n_steps == 0 or batch_idx == 0:
            self.log_dict(
                {"d_loss": stats["d_loss"], "d_acc": stats["d_acc"]},
                prog_bar=True,
                on_step=True,
                on_epoch=False,
                logger=False,
            )

    def _logger_writes_this_batch(self) -> bool:
        """Whether Lightning's logger writes this batch's step values (every
        ``log_every_n_steps`` batches, counted over the whole run); on other batches
        ``self.log(on_step=True)`` would cost time and write nothing."""
        trainer = self.trainer
        connector = getattr(trainer, "_logger_connector", None)  # private: fall back to True
        return connector is None or bool(connector.should_update_logs or trainer.fast_dev_run)

    def _accumulate_epoch_means(self, stats: dict[str, Tensor]) -> None:
        """Add this batch's statistics to the epoch sums, on the device (no sync)."""
        for key, value in stats.items():
            total, batches = self._epoch_sums.get(key, (0, 0))  # 0 + tensor is a tensor
            self._epoch_sums[key] = (total + value, batches + 1)

    def on_train_epoch_start(self) -> None:
        self._epoch_sums = {}

    def on_train_epoch_end(self) -> None:
        # Training batches are equal-sized (the loader drops the last partial one), so the
        # mean over batches is the mean over images, as Lightning's on_epoch mean would be.
        # Under DDP each rank's mean is averaged over the ranks (one all-reduce per key).
        means = {f"epoch/{k}": total / n for k, (total, n) in self._epoch_sums.items()}
        if means:
            self.log_dict(means, on_step=False, on_epoch=True, sync_dist=True)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        real, _ = batch
        fake = self.generator(self.sample_z(real.shape[0]))
        score_real, score_fake = self.discriminator(real), self.discriminator(fake)
        loss = discriminator_loss(score_real, score_fake, self.score_kind)
        stats = self._d_stats(loss, score_real, score_fake)
        stats["g_loss"] = generator_loss(score_fake, self.score_kind)
        self.log_dict({f"val/{k}": v for k, v in stats.items()}, on_epoch=True, sync_dist=True)

    # -- divergence guard ----------------------------------------------------------------

    NETWORKS = ("discriminator", "generator")

    def _watch_losses(self, d_loss: Tensor, g_loss: Tensor | None, step: int) -> None:
        """Record (on the device, without a sync) the first step with a non-finite loss."""
        d_bad = ~torch.isfinite(d_loss)
        g_bad = ~torch.isfinite(g_loss) if g_loss is not None else torch.zeros_like(d_bad)
        bad = torch.stack([d_bad, g_bad])
        if self._first_nonfinite is None:
            self._first_nonfinite = torch.full((2,), -1, dtype=torch.long, device=d_loss.device)
        first = self._first_nonfinite
        self._first_nonfinite = torch.where(bad & (first < 0), step, first)

    def check_finite(self, state_dict: dict[str, Tensor] | None = None) -> None:
        """Raise :class:`DivergenceError` if a loss (or a weight in ``state_dict``) went
        non-finite; the message names the network and the generator step."""
        epoch = self.trainer.current_epoch + 1 if self._trainer is not None else 1  # from 1
        advice = (
            "The run was stopped; no checkpoint was written after that step, so the newest "
            "file in the run's checkpoints/ folder is the last good one. To train stably, "
            "lower the learning rate (lr, or lr_d / lr_g for one network), clip gradients "
            "(gradient_clip_val=1.0), or soften the discriminator (label_smoothing=0.1, "
            "instance_noise=0.1)."
        )
        if self._first_nonfinite is not None:
            first = self._first_nonfinite.tolist()  # the one sync, every few batches
            for network, step in zip(self.NETWORKS, first, strict=True):
                if step >= 0:
                    raise DivergenceError(
                        f"training diverged: the {network} loss became NaN or infinite at "
                        f"generator step {step} (epoch {epoch}). {advice}"
                    )
        for key, value in (state_dict or {}).items():
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                network = key.split(".", 1)[0]
                raise DivergenceError(
                    f"training diverged: the {network} weight {key!r} holds NaN or infinite "
                    f"values at generator step {self.global_step} (epoch {epoch}). {advice}"
                )

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        trainer = self.trainer
        if (
            self.device.type == "cpu"
            or (batch_idx + 1) % trainer.log_every_n_steps == 0
            or trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        ):
            self.check_finite()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # raising here stops the file from being written: a diverged model is never saved
        self.check_finite(checkpoint["state_dict"])
