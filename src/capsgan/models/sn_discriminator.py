"""Spectral-norm CNN discriminator: every weight divided by its largest singular value.

Miyato, Kataoka, Koyama & Yoshida, "Spectral Normalization for Generative Adversarial
Networks" (ICLR 2018). Normalising each layer's weight W to W / sigma(W) makes every layer,
and so the discriminator, at most 1-Lipschitz (LeakyReLU is), which stabilises GAN training
without BatchNorm; sigma is estimated by one power iteration per training step
(``torch.nn.utils.parametrizations.spectral_norm``). The layout is the paper's "standard CNN"
(Table 3) at the image's size: per width, a 3x3 stride-1 and a 4x4 stride-2 convolution,
then a 3x3 convolution at twice the last width and a linear layer to one logit;
LeakyReLU(0.1) after every convolution, no normalisation layer.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from capsgan.models.cnn_discriminator import check_stride2_blocks
from capsgan.models.interface import ScoreKind


class SNDiscriminator(nn.Module):
    """Spectrally normalised stride-2 conv blocks, then a linear layer to a (B,) logit."""

    score_kind = ScoreKind.LOGIT

    def __init__(
        self,
        image_channels: int = 1,
        image_size: int = 28,
        channels: Sequence[int] = (64, 128),
        negative_slope: float = 0.1,
    ) -> None:
        super().__init__()
        check_stride2_blocks(image_size, channels, negative_slope)
        layers: list[nn.Module] = []
        in_ch, size = image_channels, image_size
        for width in channels:
            layers += [
                spectral_norm(nn.Conv2d(in_ch, width, 3, stride=1, padding=1)),
                nn.LeakyReLU(negative_slope, inplace=True),
                spectral_norm(nn.Conv2d(width, width, 4, stride=2, padding=1)),
                nn.LeakyReLU(negative_slope, inplace=True),
            ]
            in_ch, size = width, size // 2  # 28 -> 14 -> 7 for MNIST
        layers += [
            spectral_norm(nn.Conv2d(in_ch, 2 * in_ch, 3, stride=1, padding=1)),
            nn.LeakyReLU(negative_slope, inplace=True),
        ]
        self.features = nn.Sequential(*layers)
        self.classifier = spectral_norm(nn.Linear(2 * in_ch * size * size, 1))

    def forward(self, x: Tensor) -> Tensor:
        h = self.features(x)  # (B, 2 * channels[-1], S / 2^n, S / 2^n)
        return self.classifier(h.flatten(1)).squeeze(1)  # (B,)
