"""Capsule diagnostics in TensorBoard: does routing sharpen, which capsules light up?

Every validation, :class:`CapsuleDiagnostics` runs the first validation batch and as many
generated images (a fixed z of its own) through the discriminator's ``capsule_trace`` hook
and logs under ``val_capsules/`` the coupling entropy per routing iteration, the capsule
lengths, the longest capsule and the prediction agreement; a discriminator without the hook,
or a run without TensorBoard, is skipped. docs/metrics.md ("Capsule diagnostics") reads them.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor
from torch.nn import functional as F

from capsgan.models.interface import CapsuleTrace, supports_capsule_trace

BINS = "auto"  # numpy's rule: TensorBoard's buckets put entropies of 1.8-2.3 in three


def coupling_entropy(couplings: Tensor) -> Tensor:
    """Entropy in nats of couplings (..., J) that sum to 1 over J: (...). 0 log 0 = 0, so a
    one-hot row gives 0 and a uniform one log(J)."""
    return -torch.special.xlogy(couplings, couplings).sum(dim=-1)


def routing_agreement(trace: CapsuleTrace) -> Tensor:
    """Per image (B,): sum_j c_ij cos(u_hat_j|i, v_j) averaged over the input capsules i,
    with the final couplings c_ij: 1 when every prediction points where its output went."""
    v = trace.capsules.unsqueeze(1)  # (B, 1, J, out_dim)
    cosine = F.cosine_similarity(trace.u_hat, v, dim=-1)  # (B, I, J)
    return (trace.couplings[-1] * cosine).sum(dim=-1).mean(dim=-1)  # (B,)


def longest_share(lengths: Tensor) -> Tensor:
    """(B, J) capsule lengths -> (J,): the share of images in which capsule j is longest."""
    batch, capsules = lengths.shape
    return torch.bincount(lengths.argmax(dim=1), minlength=capsules).float() / batch


def capsule_statistics(trace: CapsuleTrace) -> dict[str, Tensor]:
    """Everything the callback logs for one image set, as float32 tensors on the CPU."""
    lengths = trace.lengths.float()  # (B, J)
    stats = {"entropy": torch.stack([coupling_entropy(c.float()) for c in trace.couplings]),
             "lengths": lengths, "longest": longest_share(lengths),  # (R, B, I), (B, J), (J,)
             "agreement": routing_agreement(trace).float()}  # (B,)  # fmt: skip
    if trace.score_capsule is not None:
        stats["score_lengths"] = lengths[:, trace.score_capsule]  # (B,)
        stats["score_capsule"] = torch.tensor(trace.score_capsule)
    return {key: value.detach().cpu() for key, value in stats.items()}


class CapsuleDiagnostics(L.Callback):
    """Logs routing and output-capsule diagnostics to TensorBoard at every validation:
    ``num_images`` real images (at most the first validation batch) and as many generated
    from its own ``seed`` (the training RNG untouched); ``enabled=false`` turns it off."""

    def __init__(self, enabled: bool = True, num_images: int = 64, seed: int = 0) -> None:
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {num_images}")
        self.enabled, self.num_images, self.seed = enabled, num_images, seed
        self._real: Tensor | None = None

    def _writers(self, trainer: L.Trainer, pl_module: L.LightningModule) -> list[Any]:
        """TensorBoard writers to log to; empty when there is nothing to do."""
        active = self.enabled and trainer.is_global_zero and not trainer.sanity_checking
        if not active or not supports_capsule_trace(getattr(pl_module, "discriminator", None)):
            return []
        return [lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0,
                                ) -> None:  # fmt: skip
        if batch_idx == 0 and dataloader_idx == 0 and self._writers(trainer, pl_module):
            self._real = batch[0][: self.num_images].detach()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        real, self._real = self._real, None
        writers = self._writers(trainer, pl_module)
        if real is None or not writers:
            return
        stats = self.measure(pl_module, real)
        step = trainer.global_step  # generator steps: the scalars' x axis (capsgan.loggers)
        title = f"epoch {trainer.current_epoch + 1}, generator step {step}"
        for writer in writers:
            write(writer, stats, step, title)

    @torch.no_grad()
    def measure(self, pl_module: L.LightningModule, real: Tensor) -> dict[str, dict[str, Tensor]]:
        """Statistics of ``real`` and of as many generated images: {"real": ..., "fake": ...}."""
        generator, discriminator = pl_module.generator, pl_module.discriminator
        noise = torch.Generator().manual_seed(self.seed)
        z = torch.randn(real.shape[0], pl_module.hparams.latent_dim, generator=noise)
        modes = generator.training, discriminator.training
        generator.eval(), discriminator.eval()
        try:
            images = {"real": real, "fake": generator(z.to(real.device)).to(real.dtype)}
            return {
                k: capsule_statistics(discriminator.capsule_trace(x)) for k, x in images.items()
            }
        finally:
            generator.train(modes[0]), discriminator.train(modes[1])


def write(writer: Any, stats: dict[str, dict[str, Tensor]], step: int, title: str = "") -> None:
    """Log :meth:`CapsuleDiagnostics.measure`'s statistics to a TensorBoard ``SummaryWriter``."""
    for name, s in stats.items():
        for r, entropy in enumerate(s["entropy"], start=1):  # (B, I) per iteration
            writer.add_scalar(f"val_capsules/entropy/{name}/iter{r}", entropy.mean().item(), step)
            hist = entropy.numpy()  # (B * I) values
            writer.add_histogram(f"val_capsules/entropy_hist/{name}/iter{r}", hist, step, bins=BINS)
        writer.add_scalar(f"val_capsules/length/{name}", s["lengths"].mean().item(), step)
        hist = s["lengths"].numpy()  # (B * J) values
        writer.add_histogram(f"val_capsules/length_hist/{name}", hist, step, bins=BINS)
        if "score_lengths" in s:
            hist = s["score_lengths"].numpy()
            writer.add_histogram(f"val_capsules/score_length_hist/{name}", hist, step, bins=BINS)
        writer.add_scalar(f"val_capsules/agreement/{name}", s["agreement"].mean().item(), step)
    shares = {name: s["longest"] for name, s in stats.items()}
    score = next(iter(stats.values())).get("score_capsule")  # the same for both sets
    image = longest_bar_chart(shares, title, None if score is None else int(score))
    writer.add_image("val_capsules/longest", image, step, dataformats="HWC")


def longest_bar_chart(shares: dict[str, Tensor], title: str = "",
                      score_capsule: int | None = None) -> np.ndarray:  # fmt: skip
    """An RGB image (H, W, 3) uint8: per output capsule, bars of each set's share of images
    in which it is the longest."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # only when it draws
    from matplotlib.figure import Figure  # no pyplot: no global figure state

    fig = Figure(figsize=(5.0, 2.6), dpi=100)
    canvas, ax = FigureCanvasAgg(fig), fig.subplots()
    x, width = np.arange(len(next(iter(shares.values())))), 0.8 / len(shares)
    colors = {"real": "tab:blue", "fake": "tab:orange"}
    for k, (name, share) in enumerate(shares.items()):
        ax.bar(x + (k - (len(shares) - 1) / 2) * width, share.numpy(), width, label=name,
               color=colors.get(name))  # fmt: skip
    labels = [f"{j}\n(score)" if j == score_capsule else str(j) for j in x]
    ax.set_xticks(x, labels)
    ax.set(ylim=(0, 1), xlabel="output capsule", ylabel="longest in (share)")
    ax.set_title(f"Longest output capsule{': ' + title if title else ''}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
