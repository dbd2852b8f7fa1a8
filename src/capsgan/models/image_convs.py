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


def transposed_size(size: int, kernel: int, stride: int, padding: int, output_padding: int) -> int:
    """Output side of ``nn.ConvTranspose2d`` (dilation 1)."""
    return (size - 1) * stride - 2 * padding + kernel + output_padding


def _check_plain(layer: nn.Module) -> None:
    """The fold formulation covers ungrouped, undilated, zero-padded convolutions with
    numeric padding (``nn.Conv2d`` keeps sizes as tuples, or padding as a string)."""
    if (
        layer.groups != 1
        or layer.dilation != (1, 1)
        or layer.padding_mode != "zeros"
        or isinstance(layer.padding, str)
    ):
        raise ValueError(
            f"{type(layer).__name__} supports groups=1, dilation=1, padding_mode='zeros' and "
            "numeric padding only"
        )


def _conv_transpose_fold(
    x: Tensor, weight: Tensor, size: tuple[int, int], stride: tuple[int, int],
    padding: tuple[int, int],
) -> Tensor:  # fmt: skip
    """Transposed convolution of ``x`` (B, C, H, W) with ``weight`` (C, C_out, kh, kw) to an
    output of side ``size``, as one matmul and one fold (col2im)."""
    batch, channels = x.shape[:2]
    # each input pixel's contribution to every (output channel, kernel tap)
    cols = weight.reshape(channels, -1).t() @ x.reshape(batch, channels, -1)  # (B, C_out*kh*kw, L)
    # fold sums up to kh * kw overlapping taps per pixel: in fp32 also under bf16, then back
    out = F.fold(cols.float(), size, weight.shape[-2:], stride=stride, padding=padding)
    return out.to(cols.dtype)  # (B, C_out, *size)


class _ConvFoldInputGrad(torch.autograd.Function):
    """conv2d whose input gradient (a transposed convolution) is a matmul + fold; weight and
    bias gradients, and the forward, stay with the library's convolution (fast for these
    shapes)."""

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
            grad_x = _conv_transpose_fold(grad_out, weight, x.shape[-2:], ctx.stride, ctx.padding)
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
        return _ConvFoldInputGrad.apply(x, weight, bias, self.stride, self.padding)


class ImageConvTranspose2d(nn.ConvTranspose2d):
    """A generator's last transposed convolution (few output channels, the image's)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _check_plain(self)

    def forward(self, x: Tensor, output_size: list[int] | None = None) -> Tensor:
        if x.device.type != "cpu" or output_size is not None:
            return super().forward(x, output_size)
        size = tuple(
            transposed_size(side, k, s, p, op)
            for side, k, s, p, op in zip(x.shape[-2:], self.kernel_size, self.stride,
                                         self.padding, self.output_padding, strict=True)
        )  # fmt: skip
        out = _conv_transpose_fold(x, self.weight, size, self.stride, self.padding)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1).to(out.dtype)
        return out  # (B, C_out, out_h, out_w)
