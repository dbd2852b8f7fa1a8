"""The GAN's hyperparameters, stated once: the fields of :class:`GANHParams` are the GAN's
arguments, the config's top-level keys (``lr=1e-4``), their start-up check (a schema of
``capsgan.config``: OmegaConf judges the types, ``__post_init__`` the ranges), TensorBoard's
HPARAMS keys, and what the benchmark's bare loop runs. A new one is a field plus its use in
``gan_module.adversarial_step`` (docs/extending.md).
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from capsgan.errors import ConfigError

YAML = "conf/train.yaml"


def hp(default: Any, meaning: str, must: str = "", check: Callable[[Any], bool] | None = None,
       example: Any = None) -> Any:  # fmt: skip
    """A field: its default, what it does and its range (``must`` in words, ``check``)."""
    info = {
        "meaning": meaning,
        "must": must,
        "check": check or (lambda v: True),
        "example": example,
    }
    return field(default=default, metadata=info)


@dataclass(frozen=True)
class GANHParams:
    """The GAN's hyperparameters; building one checks them all (a :class:`ConfigError`
    with a paragraph per bad value, naming the key and the fix)."""

    latent_dim: int = hp(64, "the size of the noise vector z", ">= 1", lambda v: v >= 1, 64)
    lr: float = hp(2e-4, "the Adam learning rate of both networks", "> 0", lambda v: v > 0, "2e-4")
    lr_g: float | None = hp(None, "the generator's learning rate", "> 0", lambda v: v > 0)
    lr_d: float | None = hp(None, "the discriminator's learning rate", "> 0", lambda v: v > 0)
    betas: tuple[float, float] = hp(
        (0.5, 0.999), "Adam's betas", "two numbers in [0, 1)", lambda v: all(0 <= b < 1 for b in v),
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
        problems = value_problems({f.name: getattr(self, f.name) for f in fields(self)})
        if problems:
            many = f"the GAN has {len(problems)} problems:\n\n" if len(problems) > 1 else ""
            raise ConfigError(many + "\n\n".join(problems))
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


def names(cls: type = GANHParams) -> list[str]:
    return [f.name for f in fields(cls)]


def plain(value: Any) -> Any:
    """An OmegaConf list as a Python one (checkpoints must not pickle OmegaConf objects)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_object(value) if OmegaConf.is_config(value) else value


_NOUN = {int: "an integer", float: "a number", bool: "true or false"}


def _fits(value: Any, kind: Any) -> bool:
    """``value`` is of the field's type (``bool`` is no number, a number must be finite)."""
    if typing.get_origin(kind) is tuple:
        args = typing.get_args(kind)
        return isinstance(value, (list, tuple)) and len(value) == len(args) and all(
            _fits(v, a) for v, a in zip(value, args, strict=True))  # fmt: skip
    if kind is bool or isinstance(value, bool):
        return kind is bool and isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and math.isfinite(value)
    return isinstance(value, kind)


def value_problems(values: Mapping[str, Any], cls: type = GANHParams) -> list[str]:
    """A paragraph per value of ``values`` (field name -> value) that breaks its field's
    type or range; the fields ``values`` lacks are not judged."""
    problems = []
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if f.name not in values:
            continue
        value, kind, info = values[f.name], hints[f.name], f.metadata
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        nullable = type(None) in typing.get_args(kind)
        if value is None and nullable:
            continue
        kind = args[0] if nullable else kind
        example = "..." if info["example"] is None else info["example"]
        fix = f"Fix it on the command line ({f.name}={example}) or in {YAML}."
        what, must = f"`{f.name}` ({info['meaning']})", info["must"]
        if not _fits(value, kind):
            null = " or null" if nullable else ""
            need = " ".join(w for w in (f"{_NOUN.get(kind, '')}{null}", must) if w)
            shown = list(value) if isinstance(value, (list, tuple)) else value
            problems.append(f"{what} must be {need}, but it is {shown!r} "
                            f"({type(value).__name__}). {fix}")  # fmt: skip
        elif not info["check"](value):
            problems.append(f"{what} must be {must}, but it is {value!r}. {fix}")
    return problems
