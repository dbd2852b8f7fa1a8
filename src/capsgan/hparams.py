"""The GAN's hyperparameters, stated once: the fields of :class:`GANHParams` are the GAN's
arguments, the config's top-level keys (``lr=1e-4``), their start-up check (a
:class:`capsgan.schema.Keys`), TensorBoard's HPARAMS keys, and what the benchmark's bare loop
runs. A new one is a field plus its use in ``gan_module.adversarial_step`` (docs/extending.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from capsgan.schema import Keys, hp, plain


@dataclass(frozen=True)
class GANHParams(Keys):
    """The GAN's hyperparameters; building one checks them all (a :class:`ConfigError`
    with a paragraph per bad value, naming the key and the fix)."""

    YAML: ClassVar[str] = "conf/train.yaml"

    latent_dim: int = hp(64, "the size of the noise vector z", ">= 1", lambda v: v >= 1, 64)
    lr: float = hp(2e-4, "the Adam learning rate of both networks", "> 0", lambda v: v > 0, "2e-4")
    lr_g: float | None = hp(None, "the generator's learning rate", "> 0", lambda v: v > 0)
    lr_d: float | None = hp(None, "the discriminator's learning rate", "> 0", lambda v: v > 0)
    betas: tuple[float, float] = hp(
        (0.5, 0.999), "Adam's betas", "two numbers in [0, 1)",
        lambda v: len(v) == 2 and all(0 <= b < 1 for b in v),
        "[0.5,0.999]",
    )  # fmt: skip
    d_steps_per_g: int = hp(1, "D steps per G step", ">= 1", lambda v: v >= 1, 1)
    label_smoothing: float = hp(
        0.0, "one-sided label smoothing: real target 1 - this", "in [0, 1)", lambda v: 0 <= v < 1
    )
    instance_noise: float = hp(0.0, "the std of the noise on D's inputs", ">= 0", lambda v: v >= 0)
    instance_noise_anneal_steps: int = hp(
        0, "the generator steps annealing the noise to 0 (0: never)", ">= 0", lambda v: v >= 0
    )
    gradient_clip_val: float | None = hp(None, "the gradient-norm clip", "> 0", lambda v: v > 0)
    num_fixed_samples: int = hp(64, "the sample-grid size", ">= 1", lambda v: v >= 1)
    compile: bool = hp(False, "torch.compile both networks")
    channels_last: bool = hp(False, "NHWC memory format")

    def __post_init__(self) -> None:
        super().__post_init__()  # the types (as OmegaConf reads them), then each hp's range
        object.__setattr__(self, "betas", tuple(self.betas))  # a YAML list: Adam's tuple

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> GANHParams:
        """The fields' values in ``cfg`` (a config's top-level keys), defaults for the rest."""
        return cls(**{name: plain(cfg[name]) for name in names() if name in cfg})

    def as_dict(self) -> dict[str, Any]:
        """Plain values, as checkpoints keep them (``torch.load(weights_only=True)``)."""
        return asdict(self)

    def instance_noise_sigma(self, generator_steps: int) -> float:
        """The noise std after ``generator_steps``: linear annealing to 0 (or constant)."""
        sigma, anneal = self.instance_noise, self.instance_noise_anneal_steps
        return sigma * max(0.0, 1.0 - generator_steps / anneal) if anneal > 0 else sigma


def names() -> list[str]:
    return [f.name for f in fields(GANHParams)]
