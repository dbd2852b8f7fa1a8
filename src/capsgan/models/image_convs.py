"""The two convolutions that touch the image, computed as matmul + fold on the CPU.

Every GAN here has a layer with the image's 1 (or 3) channels on one side: the
discriminator's first convolution reads the image, the generator's last transposed
convolution writes it. oneDNN, PyTorch's CPU convolution library, is slow exactly where
that thin side is the output: the discriminator's gradient with respect to the image
(needed in every generator step) and the generator's transposed convolution. Measured on
the project's 2-core EPYC, batch 64, 1 thread (docs/performance.md): the input gradient
of ``capsule_small``'s 1->64 9x9 convolution took 38.5 ms (7 GFLOP/s against ~90 for a
matmul), the generator's 64->1 4x4 stride-2 transposed convolution 14.3 ms forward and
backward. Both are one matmul and one ``F.fold`` (col2im): 9.0 ms and 4.3 ms.

The layers subclass ``nn.Conv2d`` / ``nn.ConvTranspose2d``, so parameters, initialisation
and checkpoints are unchanged. The matmul + fold path is taken on the CPU only, in fp32
and in bf16 under autocast (where oneDNN is as slow: 19.7 vs 5.9 ms for the image gradient
above); on a GPU (cuDNN) and wherever it does not apply the parent's ``forward`` runs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _pair(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _check_plain(layer: nn.Module) -> None:
    """The fold formulation covers ungrouped, undilated, zero-padded convolutions."""
    if layer.groups != 1 or _pair(layer.dilation) != (1, 1) or layer.padding_mode != "zeros":
        raise ValueError(
            f"{type(layer).__name__} supports groups=1, dilation=1, padding_mode='zeros' only"
        )


class _ConvFoldInputGrad(torch.autograd.Function):
    """conv2d whose input gradient is a matmul + fold; weight and bias gradients, and the
    forward, stay with the library's convolution (fast for these shapes)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None,
                stride: tuple[int, int], padding: tuple[int, int]) -> Tensor:  # fmt: skip
        ctx.save_for_backward(x, weight)
        ctx.has_bias, ctx.stride, ctx.padding = bias is not None, stride, padding
        return F.conv2d(x, weight, bias, stride, padding)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x = grad_w = grad_b = None
        if need_w or need_b:
            _, grad_w, grad_b = torch.ops.aten.convolution_backward(
                grad_out, x, weight, [weight.shape[0]] if ctx.has_bias else None,
                ctx.stride, ctx.padding, (1, 1), False, (0, 0), 1,
                (False, need_w, need_b and ctx.has_bias),
            )  # fmt: skip
        if need_x:
            batch, out_channels = grad_out.shape[:2]
            # every (input channel, kernel tap) column at every output position
            cols = weight.reshape(out_channels, -1).t() @ grad_out.reshape(
                batch, out_channels, -1
            )  # (B, C_in * kh * kw, L)
            # fold sums up to kh * kw overlapping taps per pixel: in fp32 also under bf16
            grad_x = F.fold(
                cols.float(),
                x.shape[-2:],
                weight.shape[-2:],
                stride=ctx.stride,
                padding=ctx.padding,
            ).to(x.dtype)  # fmt: skip  (B, C_in, H, W)
        return grad_x, grad_w, grad_b, None, None


class ImageConv2d(nn.Conv2d):
    """A discriminator's first convolution (few input channels, the image's)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _check_plain(self)

    def forward(self, x: Tensor) -> Tensor:
        # only the image gradient is computed differently, and only on the CPU
        if x.device.type != "cpu" or not x.requires_grad:
            return super().forward(x)
        weight, bias = self.weight, self.bias
        if torch.is_autocast_enabled("cpu"):  # cast as autocast casts a convolution's inputs
            dtype = torch.get_autocast_dtype("cpu")  # (differentiable casts: fp32 grads)
            x, weight = x.to(dtype), weight.to(dtype)
            bias = None if bias is None else bias.to(dtype)
        return _ConvFoldInputGrad.apply(x, weight, bias, _pair(self.stride), _pair(self.padding))


class ImageConvTranspose2d(nn.ConvTranspose2d):
    """A generator's last transposed convolution (few output channels, the image's)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _check_plain(self)

    def forward(self, x: Tensor, output_size: list[int] | None = None) -> Tensor:
        if x.device.type != "cpu" or output_size is not None:
            return super().forward(x, output_size)
        batch, in_channels, height, width = x.shape
        (kh, kw), (sh, sw) = _pair(self.kernel_size), _pair(self.stride)
        (ph, pw), (oph, opw) = _pair(self.padding), _pair(self.output_padding)
        out_h = (height - 1) * sh - 2 * ph + kh + oph
        out_w = (width - 1) * sw - 2 * pw + kw + opw
        # each input pixel's contribution to every (output channel, kernel tap)
        cols = self.weight.reshape(in_channels, -1).t() @ x.reshape(
            batch, in_channels, height * width
        )  # (B, C_out * kh * kw, H * W)
        # fold sums overlapping taps: in fp32 also under bf16 autocast, then back
        out = F.fold(cols.float(), (out_h, out_w), (kh, kw), stride=(sh, sw), padding=(ph, pw))
        out = out.to(cols.dtype)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1).to(out.dtype)
        return out  # (B, C_out, out_h, out_w)
