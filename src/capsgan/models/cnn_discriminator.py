"""DCGAN discriminator: strided convolutions, BatchNorm, LeakyReLU, one logit.

Radford, Metz & Chintala, "Unsupervised Representation Learning with Deep Convolutional
Generative Adversarial Networks" (ICLR 2016). No pooling: each block halves the image
with a stride-2 convolution; the first block has no BatchNorm, as in the paper.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from capsgan.models.interface import ScoreKind


class CNNDiscriminator(nn.Module):
    """Stride-2 conv blocks (4x4, padding 1) then a linear layer to a (B,) logit."""

    score_kind = ScoreKind.LOGIT

    def __init__(
        self,
        image_channels: int = 1,
        image_size: int = 28,
        channels: Sequence[int] = (64, 128),
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        check_stride2_blocks(image_size, channels, negative_slope)
        layers: list[nn.Module] = []
        in_ch, size = image_channels, image_size
        for i, out_ch in enumerate(channels):
            layers.append(nn.Conv2d(in_ch, out_ch, 4, stride=2, padding=1, bias=i == 0))
            if i > 0:
                layers.append(nn.BatchNorm2d(out_ch))
            layers.append(nn.LeakyReLU(negative_slope, inplace=True))
            in_ch, size = out_ch, size // 2  # 28 -> 14 -> 7 for MNIST
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(in_ch * size * size, 1)
        self.apply(dcgan_init)

    def forward(self, x: Tensor) -> Tensor:
        h = self.features(x)  # (B, channels[-1], S / 2^n, S / 2^n)
        return self.classifier(h.flatten(1)).squeeze(1)  # (B,)


def check_stride2_blocks(image_size: int, channels: Sequence[int], negative_slope: float) -> None:
    """A ``ValueError`` naming the argument unless ``channels`` (one stride-2 block per
    entry, LeakyReLU(``negative_slope``) after each) fits an ``image_size`` image."""
    if not channels or not all(isinstance(c, int) and c >= 1 for c in channels):
        raise ValueError(f"channels must be a non-empty list of integers >= 1, got {channels}")
    if image_size // 2 ** len(channels) < 1:
        raise ValueError(
            f"channels has {len(channels)} stride-2 blocks, which shrink a {image_size}px "
            f"image to nothing; use at most {image_size.bit_length() - 1} blocks"
        )
    if negative_slope < 0:
        raise ValueError(f"negative_slope must be >= 0, got {negative_slope}")


def dcgan_init(module: nn.Module) -> None:
    """DCGAN initialisation: conv weights ~ N(0, 0.02), BatchNorm scale ~ N(1, 0.02)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
