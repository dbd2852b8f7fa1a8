"""The GAN as a LightningModule with manual optimization: the adversarial steps only.

Per training batch: one discriminator step on the real batch and an equal number of
generated images, then (every ``d_steps_per_g`` batches) one generator step with the
non-saturating loss. The discriminator's optimizer steps are kept out of
``trainer.global_step`` (:func:`capsgan.compat.step_without_counting`), so it counts
generator steps (the README's "Steps and epochs"); gradients are clipped through
``self.clip_gradients`` (``gradient_clip_val`` here: the Trainer's is refused with manual
optimization); no LR scheduler is configured, so one added later must be stepped by hand.

What the module needs around the steps comes with it (:meth:`GAN.configure_callbacks`):
the step and epoch statistics are logged by :class:`capsgan.callbacks.TrainingLog` and
non-finite losses or weights stop the run through :class:`capsgan.callbacks.DivergenceGuard`.
``training_step`` returns the batch's detached statistics for them.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch import Tensor, nn

from capsgan import compat
from capsgan.callbacks import DivergenceGuard, TrainingLog
from capsgan.losses import discriminator_loss, generator_loss, probability_real
from capsgan.models.interface import score_kind


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

    def configure_callbacks(self) -> list[L.Callback]:
        """The logging and the divergence guard every run of this module needs."""
        return [TrainingLog(), DivergenceGuard()]

    # -- the steps ---------------------------------------------------------------------

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

    def _step(self, optimizer: LightningOptimizer, loss: Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if self.hparams.gradient_clip_val:
            self.clip_gradients(optimizer, gradient_clip_val=self.hparams.gradient_clip_val)
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
        compat.step_without_counting(opt_d)  # global_step counts generator steps only
        self._step(opt_d, loss)
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

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """One D step, and a G step every ``d_steps_per_g`` batches; the batch's detached
        statistics (``g_loss`` only when G stepped) go to the callbacks as ``outputs``."""
        real = self.prepare_images(batch[0])
        stats = self.discriminator_step(real)
        if (batch_idx + 1) % self.hparams.d_steps_per_g == 0:
            stats["g_loss"] = self.generator_step(real.shape[0])
        return stats

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        real, _ = batch
        fake = self.generator(self.sample_z(real.shape[0]))
        score_real, score_fake = self.discriminator(real), self.discriminator(fake)
        loss = discriminator_loss(score_real, score_fake, self.score_kind)
        stats = self._d_stats(loss, score_real, score_fake)
        stats["g_loss"] = generator_loss(score_fake, self.score_kind)
        self.log_dict({f"val/{k}": v for k, v in stats.items()}, on_epoch=True, sync_dist=True)
