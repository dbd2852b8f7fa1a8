"""The GAN as a LightningModule with manual optimization, and its one adversarial step.

:func:`adversarial_step` runs under Lightning in :meth:`GAN.training_step`
(:class:`LightningUpdates`) and in plain PyTorch in the benchmark's
:class:`capsgan.benchmark.BareLoop`. ``trainer.global_step`` counts generator steps only
(the README's "Steps and epochs"); no LR scheduler is configured (one added later must be
stepped by hand). The module brings its logging and divergence guard along.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Protocol

import lightning as L
import torch
from torch import Tensor, nn

from capsgan import compat
from capsgan.callbacks import DivergenceGuard, TrainingLog
from capsgan.hparams import GANHParams
from capsgan.losses import discriminator_loss, generator_loss, probability_real
from capsgan.models.interface import score_kind


class Updates(Protocol):
    """How :func:`adversarial_step` updates a network ("generator" / "discriminator")."""

    generator_steps: int  # done so far: the instance-noise schedule's clock

    def training(self, network: str) -> contextlib.AbstractContextManager[None]:
        """Only ``network``'s weights take gradients."""

    def update(self, network: str, loss: Tensor) -> None:
        """Zero the gradients, backpropagate ``loss``, clip and step ``network``'s optimizer."""


def adversarial_step(gan: GAN, real: Tensor, batch_idx: int, updates: Updates) -> dict[str, Tensor]:
    """One D update on the real batch and as many generated images and, every
    ``d_steps_per_g`` batches, one G update (non-saturating loss); the batch's detached
    statistics (``g_loss`` only when G stepped)."""
    hp, kind, gen = gan.hp, gan.score_kind, gan.generator
    sigma = hp.instance_noise_sigma(updates.generator_steps)
    real, n = gan.prepare_images(real), real.shape[0]
    with torch.no_grad():
        fake = gen(gan.sample_z(n))
    with updates.training("discriminator"):
        score_real, score_fake = gan.discriminate(real, sigma), gan.discriminate(fake, sigma)
        d_loss = discriminator_loss(score_real, score_fake, kind, 1.0 - hp.label_smoothing)
        updates.update("discriminator", d_loss)
    stats = gan.d_stats(d_loss, score_real.detach(), score_fake.detach())
    if (batch_idx + 1) % hp.d_steps_per_g == 0:
        with updates.training("generator"):  # D's weights take no gradients here
            g_loss = generator_loss(gan.discriminate(gen(gan.sample_z(n)), sigma), kind)
            updates.update("generator", g_loss)
        stats["g_loss"] = g_loss.detach()
    return stats


class LightningUpdates:
    """:class:`Updates` through Lightning: toggled optimizers, ``manual_backward`` and
    ``clip_gradients`` (the Trainer's gradient_clip_val is refused with manual optimization)."""

    def __init__(self, module: GAN) -> None:
        self.module, self.generator_steps = module, module.global_step  # one per training step
        opt_g, opt_d = module.optimizers()
        self.optimizers = {"generator": opt_g, "discriminator": opt_d}

    def training(self, network: str) -> contextlib.AbstractContextManager[None]:
        return self.module.toggled_optimizer(self.optimizers[network])

    def update(self, network: str, loss: Tensor) -> None:
        optimizer, clip = self.optimizers[network], self.module.hp.gradient_clip_val
        if network == "discriminator":
            compat.step_without_counting(optimizer)  # global_step counts generator steps only
        optimizer.zero_grad(set_to_none=True)
        self.module.manual_backward(loss)
        if clip:
            self.module.clip_gradients(optimizer, gradient_clip_val=clip)
        optimizer.step()


class GAN(L.LightningModule):
    """Generator (z (B, latent_dim) -> images (B, C, H, W) in [-1, 1]) and discriminator
    (images -> (B,) scores of its ``score_kind``, which picks the loss) trained
    adversarially with ``hparams`` (:class:`GANHParams`); ``**fields`` set single ones:
    ``GAN(g, d, lr=1e-4)``."""

    def __init__(
        self, generator: nn.Module, discriminator: nn.Module, hparams: GANHParams | None = None,
        **fields: Any,
    ) -> None:  # fmt: skip
        super().__init__()
        self.hp = dataclasses.replace(hparams, **fields) if hparams else GANHParams(**fields)
        # plain values (checkpoints, hparams.yaml); self.hparams.lr etc. for the callbacks
        self.save_hyperparameters(self.hp.as_dict(), logger=False)
        self.automatic_optimization = False
        self.generator, self.discriminator = generator, discriminator
        self.score_kind = score_kind(discriminator)  # an undeclared kind raises here
        # A buffer, so it is saved in checkpoints: a resumed run keeps drawing the same grid.
        self.register_buffer("fixed_z", torch.randn(self.hp.num_fixed_samples, self.hp.latent_dim))
        for network in (generator, discriminator):
            if self.hp.channels_last:
                network.to(memory_format=torch.channels_last)
            if self.hp.compile:
                network.compile()
        if not self.hp.compile:  # the model summary's FLOPs of both networks for one image
            self.example_input_array = (torch.zeros(1, self.hp.latent_dim), True)

    def forward(self, z: Tensor, score: bool = False) -> Tensor:
        """Images G(z); with ``score``, the discriminator's scores D(G(z)) of them."""
        images = self.generator(z)
        return self.discriminator(images) if score else images

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        hp, adam = self.hp, torch.optim.Adam
        opt_g = adam(self.generator.parameters(), lr=hp.lr_g or hp.lr, betas=hp.betas)
        opt_d = adam(self.discriminator.parameters(), lr=hp.lr_d or hp.lr, betas=hp.betas)
        return [opt_g, opt_d]

    def configure_callbacks(self) -> list[L.Callback]:
        return [TrainingLog(), DivergenceGuard()]

    def sample_z(self, n: int) -> Tensor:
        return torch.randn(n, self.hp.latent_dim, device=self.device)

    def discriminate(self, images: Tensor, sigma: float = 0.0) -> Tensor:
        """D's scores of ``images`` plus instance noise of std ``sigma``."""
        if sigma > 0:
            images = images + sigma * torch.randn_like(images)
        return self.discriminator(images)

    def prepare_images(self, images: Tensor) -> Tensor:
        """A batch in the networks' memory format (NHWC when ``channels_last``)."""
        if self.hp.channels_last:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def d_stats(self, loss: Tensor, score_real: Tensor, score_fake: Tensor) -> dict[str, Tensor]:
        p_real = probability_real(score_real, self.score_kind)
        p_fake = probability_real(score_fake, self.score_kind)
        acc_real, acc_fake = (p_real > 0.5).float().mean(), (p_fake < 0.5).float().mean()
        return {"d_loss": loss.detach(), "d_acc_real": acc_real, "d_acc_fake": acc_fake,
                "d_acc": 0.5 * (acc_real + acc_fake), "d_x": p_real.mean(),
                "d_g_z": p_fake.mean()}  # fmt: skip

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """:func:`adversarial_step`; its statistics go to the callbacks as ``outputs``."""
        return adversarial_step(self, batch[0], batch_idx, LightningUpdates(self))

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        real, _ = batch
        fake = self.generator(self.sample_z(real.shape[0]))
        score_real, score_fake = self.discriminator(real), self.discriminator(fake)
        loss = discriminator_loss(score_real, score_fake, self.score_kind)
        stats = self.d_stats(loss, score_real, score_fake)
        stats["g_loss"] = generator_loss(score_fake, self.score_kind)
        self.log_dict({f"val/{k}": v for k, v in stats.items()}, on_epoch=True, sync_dist=True)
