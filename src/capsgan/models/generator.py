"""DCGAN-style generator: a latent vector up-sampled by transposed convolutions.

Radford et al., "Unsupervised Representation Learning with Deep Convolutional GANs"
(ICLR 2016), as in PyTorch's DCGAN example: ConvTranspose -> BatchNorm -> ReLU blocks,
tanh on the output, weights ~ N(0, 0.02). The whole stack is described by a list of
blocks so that one class builds every preset, e.g. the founding slides' design

    z -> 128x3x3 -> 64x5x5 -> 32x7x7 -> 3x14x14 -> 1x28x28   (3x3 kernels throughout)

and the usual MNIST DCGAN, z -> 128x7x7 -> 64x14x14 -> 1x28x28.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from capsgan.models.cnn_discriminator import dcgan_init


class Generator(nn.Module):
    """z (B, latent_dim) -> image (B, C, H, W) in [-1, 1].

    Args:
        latent_dim: size of the noise vector z.
        init_channels, init_size: the first feature map, projected from z by a
            transposed convolution over a 1x1 input (a learned linear projection).
        blocks: up-sampling blocks, each a mapping with ``channels``, ``kernel``,
            ``stride`` and optional ``padding`` / ``output_padding``. The last block's
            ``channels`` is the number of image channels; it gets tanh instead of BN+ReLU.
    """

    def __init__(
        self,
        latent_dim: int,
        init_channels: int,
        init_size: int,
        blocks: Sequence[Mapping[str, Any]],
    ) -> None:
        super().__init__()
        if not blocks:
            raise ValueError(
                "blocks is empty: the generator needs at least one up-sampling block "
                "(channels, kernel, stride, padding, output_padding)"
            )
        sizes = {"latent_dim": latent_dim, "init_channels": init_channels, "init_size": init_size}
        for i, block in enumerate(blocks):
            sizes |= {f"blocks[{i}].{f}": block.get(f) for f in ("channels", "kernel", "stride")}
        for name, value in sizes.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        self.latent_dim = latent_dim
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, init_channels, init_size, bias=False),
            nn.BatchNorm2d(init_channels),
            nn.ReLU(inplace=True),
        ]  # (B, init_channels, init_size, init_size)
        channels, size = init_channels, init_size
        for i, block in enumerate(blocks):
            last = i == len(blocks) - 1
            pad, out_pad = int(block.get("padding", 0)), int(block.get("output_padding", 0))
            out_ch, kernel, stride = block["channels"], block["kernel"], block["stride"]
            layers.append(
                nn.ConvTranspose2d(channels, out_ch, kernel, stride, pad, out_pad, bias=last)
            )
            layers += [nn.Tanh()] if last else [nn.BatchNorm2d(out_ch), nn.ReLU(True)]
            # nn.ConvTranspose2d's output side (dilation 1)
            channels, size = out_ch, (size - 1) * stride - 2 * pad + kernel + out_pad
        self.output_shape = (channels, size, size)
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z.view(z.shape[0], self.latent_dim, 1, 1))  # (B, *output_shape)
