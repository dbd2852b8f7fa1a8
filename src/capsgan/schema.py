"""The one checking mechanism, shared by :mod:`capsgan.config` and :mod:`capsgan.hparams`:
settings are structured configs (:class:`Keys` dataclasses, one per config node). Their
values are merged into ``OmegaConf.structured(schema)``, so OmegaConf judges the types,
and ``__post_init__`` judges the ranges, whether the dataclass is built from a config or
in Python. Each problem is one paragraph: the key, the value, what it must be, the fix.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Iterable
from dataclasses import field
from typing import Any, ClassVar

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, ValidationError

from capsgan.errors import ConfigError

SEED_MAX = 2**32 - 1  # numpy's (and so Lightning's seed_everything's) seed range
NOUNS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
Range = tuple[str, bool, str, Any]  # (field, fine, what it must be, example for the fix)


def hp(
    default: Any,
    meaning: str = "",
    must: str = "",
    check: Callable[[Any], bool] | None = None,
    example: Any = None,
) -> Any:
    """A field: its default, what it does and its range (``must`` in words, ``check`` of a
    value of finite numbers; null passes), judged by :class:`Keys`."""
    info = {"meaning": meaning, "must": must, "check": check, "example": example}
    if isinstance(default, list):  # a mutable default: each instance its own copy
        return field(default_factory=lambda: list(default), metadata=info)
    return field(default=default, metadata=info)


def at_least(n: float, default: Any, strict: bool = False, example: Any = None) -> Any:
    must = f"{'>' if strict else '>='} {n}"
    return hp(default, "", must, lambda v: v > n or (v == n and not strict), example)


def yaml_file(key: str) -> str:
    """The YAML file that sets ``key``: conf/<group>/<picked option>.yaml or conf/train.yaml."""
    group = key.split(".", 1)[0]
    if group in ("data", "generator", "discriminator", "trainer", "callbacks", "paths"):
        # the picked option (``data: mnist``); none when composed outside @hydra.main (tests)
        choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
        return f"conf/{group}/{choices.get(group, '<option>')}.yaml"
    return "conf/train.yaml"


def where(key: str, example: Any = None, yaml: str | None = None) -> str:
    """How to fix ``key``: the override to type and the YAML file that holds it."""
    override = f"{key}={example}" if example is not None else f"{key}=..."
    return f"Fix it on the command line ({override}) or in {yaml or yaml_file(key)}."


def raise_problems(problems: list[str]) -> None:
    if problems:
        raise ConfigError(*problems)


def plain(value: Any) -> Any:
    """An OmegaConf node as plain Python (checkpoints must not pickle OmegaConf objects)."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def ints(values: Any, minimum: int) -> bool:
    all_ints = isinstance(values, list) and all(type(v) is int for v in values)
    return all_ints and bool(values) and min(values) >= minimum


def int_list(default: list[int], example: str) -> Any:
    return hp(default, "", "a non-empty list of integers >= 1", lambda v: ints(v, 1), example)


def noun(hint: Any) -> str:
    """A field's type in words: ``int | None`` -> "an integer or null"."""
    args = typing.get_args(hint)
    plain_args = [a for a in args if a is not type(None)] or [hint]
    if typing.get_origin(hint) in (list, tuple):
        return f"a list of {NOUNS.get(plain_args[0], 'a value').split(' ')[-1]}s"
    null = " or null" if type(None) in args else ""
    return " or ".join(NOUNS.get(a, f"a {getattr(a, '__name__', a)}") for a in plain_args) + null


def _problem(schema: type, prefix: str, name: str, must: str, value: str, example: Any) -> str:
    """The paragraph of a bad value: its key, what it is (a field's ``meaning``, :func:`hp`),
    what it must be, and the fix."""
    key, found = f"{prefix}.{name}".lstrip("."), schema.__dataclass_fields__.get(name)
    meaning = found.metadata.get("meaning") if found else None
    what = f"`{key}` ({meaning})" if meaning else f"`{key}`"
    fix = where(key, example, getattr(schema, "YAML", None))
    return f"{what} must be {must}, but it is {value}. {fix}"


def typed(schema: type, values: dict[str, Any], prefix: str = "") -> tuple[DictConfig, list[str]]:
    """``values`` merged into ``OmegaConf.structured(schema)``, which judges their types:
    the typed config and a paragraph per value of the wrong type."""
    cfg, hints = OmegaConf.structured(schema), typing.get_type_hints(schema)
    OmegaConf.set_readonly(cfg, False)  # a frozen schema (GANHParams) takes the values too
    try:
        return OmegaConf.merge(cfg, values), []
    except ValidationError:  # which ones, each with its own paragraph
        problems = []
    for name, value in values.items():
        try:
            cfg = OmegaConf.merge(cfg, {name: value})
        except ValidationError:
            shown = f"{value!r} ({type(value).__name__})"
            problems.append(_problem(schema, prefix, name, noun(hints[name]), shown, None))
    return cfg, problems


class Keys:
    """Base of the schemas: ``PREFIX`` is their config node, ``YAML`` the file that sets
    them (None: found from the key). ``__post_init__`` judges the fields' rules
    (:func:`hp`), then :meth:`ranges`, the rules of several fields or of untyped ones, and
    the range of a ``seed`` and a ``device`` field."""

    PREFIX: ClassVar[str] = ""
    YAML: ClassVar[str | None] = None

    def ranges(self) -> Iterable[Range]:
        return ()

    def __post_init__(self) -> None:
        # the types first, as OmegaConf reads them (built from a config or in Python)
        names = [f.name for f in dataclasses.fields(self)]
        cfg, problems = typed(type(self), {n: getattr(self, n) for n in names}, self.PREFIX)
        raise_problems(problems)
        for name in names:
            object.__setattr__(self, name, plain(cfg[name]))  # a frozen one (GANHParams) too
        rules = []
        for f in dataclasses.fields(self):  # of finite numbers only: nan or inf is no lr
            value, info = getattr(self, f.name), f.metadata
            if info.get("check") and value is not None:
                values = value if isinstance(value, list) else [value]
                finite = all(math.isfinite(v) for v in values if isinstance(v, float))
                fine = finite and info["check"](value)
                rules.append((f.name, fine, info["must"], info["example"]))
        rules += self.ranges()
        if hasattr(self, "seed"):
            seed_range = f"in [0, {SEED_MAX}] (numpy's seed range)"
            rules.append(("seed", 0 <= self.seed <= SEED_MAX, seed_range, None))
        if hasattr(self, "device"):
            ok = self.device in ("auto", "cpu", "mps", "cuda") or self.device.startswith("cuda:")
            rules.append(("device", ok, "auto, cpu or cuda[:n]", "cpu"))
        for name, fine, must, example in rules:
            example = getattr(type(self), name, None) if example is None else example
            if not fine:
                value = repr(getattr(self, name))
                problems.append(_problem(type(self), self.PREFIX, name, must, value, example))
        raise_problems(problems)


def key_problems(cfg: DictConfig, schema: type, prefix: str | None = None) -> list[str]:
    """The problems of ``schema``'s keys in ``cfg``: their types by OmegaConf (a structured
    config of ``schema``), then, for a :class:`Keys`, their ranges by its ``__post_init__``.
    A key the config does not have is not judged (a custom ``_target_`` without it)."""
    prefix = getattr(schema, "PREFIX", "") if prefix is None else prefix
    node = OmegaConf.select(cfg, prefix, default=None) if prefix else cfg
    if not isinstance(node, DictConfig):
        return []
    given = {f.name: plain(node[f.name]) for f in dataclasses.fields(schema) if f.name in node}
    if not hasattr(schema, "__post_init__"):  # a constructor's: types only
        return typed(schema, given, prefix)[1]
    try:
        schema(**given)  # __post_init__: the types, then the ranges
    except ConfigError as err:
        return err.problems
    return []


def schema_problems(cfg: DictConfig, *schemas: type) -> list[str]:
    return [p for schema in schemas for p in key_problems(cfg, schema)]
