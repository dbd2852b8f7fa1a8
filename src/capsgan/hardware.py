"""What the run's device decides before the Trainer is built: the device Lightning's
``trainer.accelerator`` picks, what ``trainer.precision: auto`` becomes on it (written into
the config: Lightning accepts no ``auto``), and the speed switches it cannot run together.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import torch
from omegaconf import DictConfig, open_dict

from capsgan.errors import ConfigError

log = logging.getLogger(__name__)

AUTO = "auto"
BF16, FP32 = "bf16-mixed", "32-true"
# The open PyTorch report behind the refusal of compile + channels_last on GPUs.
COMPILE_CHANNELS_LAST_BUG = "https://github.com/pytorch/pytorch/issues/171622"


def device_type(accelerator: Any) -> str:
    """The device Lightning runs on for ``trainer.accelerator`` (``auto``/``gpu``: CUDA,
    else MPS, else, for ``auto``, the CPU); another value (``tpu``, an Accelerator object)
    as its lower-case name."""
    if not isinstance(accelerator, str):  # CUDAAccelerator() -> "cuda"
        return type(accelerator).__name__.lower().removesuffix("accelerator")
    name = accelerator.lower()
    if name in (AUTO, "gpu"):
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu" if name == AUTO else "gpu"  # "gpu" with none: Lightning says so
    return name


class PrecisionChoice(NamedTuple):
    """The precision ``auto`` stands for on one device, and why (for the log and run_info)."""

    precision: str
    reason: str


def auto_precision(device: str) -> PrecisionChoice:
    """What ``trainer.precision: auto`` means on ``device``: ``bf16-mixed`` on a CUDA GPU
    with native bf16, else fp32 (on CPUs the gain varies and emulated bf16 is ~15x slower:
    the user opts in after measuring, README "Speed")."""
    if device == "cuda":
        name = torch.cuda.get_device_name()
        # native bf16: compute capability 8.0+ or ROCm (is_bf16_supported() counts emulation)
        if torch.version.hip or torch.cuda.get_device_capability()[0] >= 8:
            return PrecisionChoice(BF16, f"the GPU ({name}) computes bf16 natively")
        return PrecisionChoice(FP32, f"the GPU ({name}) has no native bf16 (before Ampere)")
    if device == "cpu":
        return PrecisionChoice(
            FP32,
            "bf16-mixed is ~15x slower on CPUs that emulate bf16 and its gain varies by CPU, "
            "preset and load on the others; opt in with trainer.precision=bf16-mixed after "
            "measuring (README, Speed)",
        )
    return PrecisionChoice(FP32, f"bf16 autocast is not measured on {device}")


def resolve_precision(cfg: DictConfig, device: str | None = None) -> PrecisionChoice:
    """Replace ``trainer.precision: auto`` in ``cfg`` by the value for the run's device
    (``device``, or the one ``trainer.accelerator`` picks) and log the choice; an explicit
    value stays and is returned as the user's."""
    value = cfg.trainer.get("precision", FP32)
    if str(value) != AUTO:
        return PrecisionChoice(str(value), "set in the config (trainer.precision)")
    device = device or device_type(cfg.trainer.get("accelerator", AUTO))
    choice = auto_precision(device)
    with open_dict(cfg):
        cfg.trainer.precision = choice.precision
    log.info(
        "trainer.precision=auto: %s on %s, because %s", choice.precision, device, choice.reason
    )
    return choice


def check_speed_switches(cfg: DictConfig, device: str) -> None:
    """Refuse ``compile=true`` with ``channels_last=true`` on a CUDA or MPS device (seen on
    an H200 with torch 2.11; the CPU kernels are fine). ``tests/test_gpu.py`` has a
    strict-xfail reproducer that passes once PyTorch fixes it: then lift this refusal."""
    if not (cfg.get("compile") and cfg.get("channels_last")) or device not in ("cuda", "mps"):
        return
    raise ConfigError(
        f"compile=true together with channels_last=true does not run on {device.upper()}: "
        "torch.compile's backward of the generator's channels-last transposed convolutions "
        "expects other gradient strides than the GPU kernels return, and the run dies after "
        "its first steps with `AssertionError: expected size ..., stride ...` in "
        f"convolution_backward (an open PyTorch bug: {COMPILE_CHANNELS_LAST_BUG}). Turn one "
        "of them off: channels_last=false keeps compile (it fuses the capsule routing's "
        "element-wise work), compile=false keeps the NHWC convolutions; each alone works "
        "there, with trainer.precision=bf16-mixed too."
    )
