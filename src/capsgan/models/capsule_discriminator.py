"""Capsule-network discriminator for a GAN.

Architecture after Sabour et al., "Dynamic Routing Between Capsules" (NeurIPS 2017):
Conv (ReLU) -> PrimaryCaps (squash) -> output capsules by routing-by-agreement, then
one of two heads:

* ``head="fc"`` — the founding slides' two fully connected layers on the flattened
  output capsules, ending in one real/fake logit (trained with binary cross-entropy);
* ``head="length"`` — Jaiswal et al., "CapsuleGAN: Generative Adversarial Capsule
  Network" (ECCV Workshops 2018): the length of output capsule 0 is the probability
  that the image is real, trained with the margin loss.

With a single output capsule the softmax over parents makes every coupling 1 and
routing would do nothing, so at least two output capsules are required.
"""

from __future__ import annotations

from torch import Tensor, nn

from capsgan.models.capsules import PrimaryCapsules, RoutingCapsules
from capsgan.models.interface import CapsuleTrace, ScoreKind


class CapsuleDiscriminator(nn.Module):
    """Conv -> PrimaryCaps -> routed output capsules -> real/fake score of shape (B,)."""

    def __init__(
        self,
        image_channels: int = 1,
        image_size: int = 28,
        conv_channels: int = 256,
        conv_kernel: int = 9,
        primary_maps: int = 32,
        primary_dim: int = 8,
        primary_kernel: int = 9,
        primary_stride: int = 2,
        out_capsules: int = 10,
        out_dim: int = 16,
        routing_iterations: int = 3,
        routing_weight_std: float | None = None,
        head: str = "fc",
        head_hidden: int = 512,
    ) -> None:
        super().__init__()
        sizes = {
            "conv_channels": conv_channels, "conv_kernel": conv_kernel,
            "primary_maps": primary_maps, "primary_dim": primary_dim,
            "primary_kernel": primary_kernel, "primary_stride": primary_stride,
            "out_dim": out_dim, "routing_iterations": routing_iterations,
            "head_hidden": head_hidden,
        }  # fmt: skip
        for name, value in sizes.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if routing_weight_std is not None and not routing_weight_std > 0:
            raise ValueError(f"routing_weight_std must be > 0 or None, got {routing_weight_std}")
        if head not in ("fc", "length"):
            raise ValueError(f"head must be 'fc' or 'length', got {head!r}")
        if out_capsules < 2:
            raise ValueError(
                f"out_capsules must be >= 2 (got {out_capsules}): with one output capsule every "
                "coupling coefficient is 1 and routing does nothing"
            )
        # side of the primary-capsule grid (both convolutions are unpadded); < 1: none fits
        grid = (image_size - conv_kernel + 1 - primary_kernel) // primary_stride + 1
        if grid < 1:
            raise ValueError(
                f"conv_kernel={conv_kernel} then primary_kernel={primary_kernel} with "
                f"primary_stride={primary_stride}: the capsule sizes do not fit a {image_size}x"
                f"{image_size} image, they leave no primary-capsule grid (each unpadded "
                "convolution shrinks the image by kernel-1); use smaller kernels, e.g. "
                "conv_kernel=9 primary_kernel=9 for 28x28 images"
            )
        self.score_kind = ScoreKind.LOGIT if head == "fc" else ScoreKind.LENGTH
        self.conv = nn.Sequential(
            nn.Conv2d(image_channels, conv_channels, conv_kernel), nn.ReLU(inplace=True)
        )
        self.primary = PrimaryCapsules(
            conv_channels, primary_maps, primary_dim, primary_kernel, primary_stride
        )
        self.routing = RoutingCapsules(
            primary_maps * grid * grid,
            primary_dim,
            out_capsules,
            out_dim,
            routing_iterations,
            routing_weight_std,
        )
        if head == "fc":
            self.head = nn.Sequential(
                nn.Linear(out_capsules * out_dim, head_hidden),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Linear(head_hidden, 1),
            )

    @property
    def routing_iterations(self) -> int:
        return self.routing.iterations

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(x)  # (B, conv_channels, S - k + 1, S - k + 1)
        u = self.primary(h)  # (B, in_caps, primary_dim)
        v = self.routing(u)  # (B, out_caps, out_dim)
        return self._score(v)

    def _score(self, v: Tensor) -> Tensor:
        if self.score_kind == ScoreKind.LOGIT:  # the fc head
            return self.head(v.flatten(1)).squeeze(1)  # (B,) logit
        return v[:, 0].norm(dim=-1)  # (B,) length of the "real" capsule, in [0, 1)

    def capsule_trace(self, x: Tensor) -> CapsuleTrace:
        """The routing internals for ``x`` (B, C, S, S), every iteration kept: the optional
        diagnostics hook of :mod:`capsgan.models.interface`."""
        u = self.primary(self.conv(x))  # (B, in_caps, primary_dim)
        u_hat, couplings, outputs = self.routing.trace(u)
        return CapsuleTrace(
            primary=u,
            u_hat=u_hat,  # (B, in_caps, out_caps, out_dim)
            couplings=couplings,  # R x (B, in_caps, out_caps)
            outputs=outputs,  # R x (B, out_caps, out_dim)
            score=self._score(outputs[-1]),  # (B,), as forward(x)
            score_capsule=0 if self.score_kind == ScoreKind.LENGTH else None,
        )
