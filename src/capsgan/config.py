"""Start-up validation of the composed config: every bad value is reported before any
data is read, so a sweep fails its bad jobs in seconds.

Two kinds of rule, each stated once:

* the models' rules live in their constructors. :func:`build_models` builds the generator
  and the discriminator first (they are cheap) and turns a constructor's ``ValueError`` /
  ``TypeError`` into a :class:`~capsgan.errors.ConfigError` naming the key
  (``discriminator.out_capsules``); the values' types are checked against the
  constructor's annotations. A new model gets its checks by writing them in its
  constructor; nothing here knows a model.
* the keys no constructor owns (the training hyperparameters, data, trainer, callbacks,
  output folder, checkpoint) are a table of typed rules, plus a few cross-key checks.

Each problem becomes one paragraph: the key, the value, what it must be, and the file or
command-line override that fixes it.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import re
import tempfile
import typing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from torch import nn

from capsgan import hparams as gan_hparams
from capsgan.cli import LATEST  # the newest run's last.ckpt, in its folder (cli.resume_dir)
from capsgan.data import DATASETS
from capsgan.errors import ConfigError, user_errors
from capsgan.locks import hold_run_folder
from capsgan.models.interface import score_kind
from capsgan.resume import register_resolver as register_session_resolver

register_session_resolver()  # hydra.output_subdir (conf/hydra/default.yaml), in every process

LAST = "last"  # ckpt_path=last: <run dir>/checkpoints/last.ckpt


# -- the typed rules --------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One key of the schema: its type, its range, and what it is for (for the message)."""

    key: str  # dotted key in the composed config
    kind: str  # "int", "float" (any real number), "str", "bool"
    check: Callable[[Any], bool] = lambda v: True
    must: str = ""  # the range in words, e.g. "> 0"
    meaning: str = ""  # what the key does, so the user knows what to pick
    nullable: bool = False
    example: Any = None  # a sensible value, shown in the fix
    yaml: str | None = None  # the file that sets it, when not found from the key's group


def positive(v: float) -> bool:
    return v > 0


def at_least(n: int) -> Callable[[Any], bool]:
    return lambda v: v >= n


def minimum(key: str, n: int, meaning: str, nullable: bool = False, example: Any = None) -> Rule:
    """An integer rule: ``key`` must be >= ``n``."""
    return Rule(key, "int", at_least(n), f">= {n}", meaning, nullable, example)


def in_unit_interval(v: float) -> bool:
    return 0 <= v < 1


def limit_or_unlimited(v: int) -> bool:
    return v == -1 or v >= 1


def count_or_fraction(minimum: int) -> Callable[[Any], bool]:
    """Lightning's ``limit_*_batches``: an int >= minimum (batches) or a float fraction."""

    def check(v: float) -> bool:
        if isinstance(v, int):
            return v >= minimum
        return 0 < v <= 1 or (minimum == 0 and v == 0)

    return check


SEED_MAX = 2**32 - 1  # numpy's (and so Lightning's seed_everything's) seed range


def seed_ok(v: int) -> bool:
    return 0 <= v <= SEED_MAX


SEED_RANGE = f"in [0, {SEED_MAX}] (numpy's seed range)"

UNLIMITED = "-1 (no limit) or >= 1 (0 would train nothing)"
COMMON_RULES = (
    Rule("seed", "int", seed_ok, SEED_RANGE, "the random seed of the run", example=42),
    Rule("data.name", "str", DATASETS.__contains__, f"one of {sorted(DATASETS)}", example="mnist"),
    minimum("data.batch_size", 1, "real images per batch", example=64),
    minimum("data.channels", 1, "the image channels"),
    minimum("data.image_size", 1, "the image side in pixels"),
    minimum("data.train_subset", 1, "the training images used", True),
    minimum("data.val_subset", 1, "the validation images used", True),
    minimum("data.num_workers", 0, "the DataLoader workers"),
    Rule("data.download", "bool", meaning="whether torchvision may download the data"),
    Rule("data.pin_memory", "bool", meaning="whether batches go to pinned memory"),
    Rule("data.root", "str", meaning="the folder holding <DatasetName>/raw/"),
    minimum("threads", 1, "torch CPU threads of the run", True, 2),
    Rule("ckpt_path", "str", meaning="a checkpoint to resume from, or last", nullable=True),
    Rule("optimized_metric", "str", meaning="the metric returned to a sweeper", nullable=True),
    Rule("trainer.max_epochs", "int", limit_or_unlimited, UNLIMITED, "the epoch limit", True, 20),
    Rule(
        "trainer.max_steps",
        "int",
        limit_or_unlimited,
        UNLIMITED,
        "the generator-step limit",
        example=-1,
    ),
    Rule(
        "trainer.limit_train_batches",
        "float",
        count_or_fraction(1),
        "an integer >= 1 (batches) or a fraction in (0, 1] (0 would train nothing)",
        "the training batches per epoch",
        True,
    ),
    Rule(
        "trainer.limit_val_batches",
        "float",
        count_or_fraction(0),
        "an integer >= 0 (batches) or a fraction in [0, 1]",
        "the validation batches",
        True,
    ),
    minimum("trainer.check_val_every_n_epoch", 1, "the validation interval", True),
    minimum("trainer.num_sanity_val_steps", -1, "the sanity-check batches", True),
    minimum("trainer.log_every_n_steps", 1, "the logging interval"),
    Rule(
        "trainer.gradient_clip_val",
        "float",
        lambda v: False,
        "null: the GAN steps its optimizers itself, so clip with the top-level gradient_clip_val",
        "Lightning's automatic clipping",
        True,
        "null",
    ),
    Rule(
        "trainer.accumulate_grad_batches",
        "int",
        lambda v: v == 1,
        "1: the GAN steps its optimizers itself (raise data.batch_size instead)",
        "Lightning's gradient accumulation",
        example=1,
    ),
    Rule(
        "trainer.deterministic",
        "any",
        lambda v: v in (True, False, "warn"),
        "true, false or warn",
        "torch's deterministic algorithms",
        True,
        "warn",
    ),
    Rule(
        "trainer.fast_dev_run",
        "any",
        lambda v: isinstance(v, int) and v >= 0,
        "false, true or a number of batches >= 1",
        "Lightning's smoke-test mode",
        example="false",
    ),
    minimum(
        "callbacks.model_checkpoint.every_n_epochs",
        0,
        "the epochs between epoch checkpoints (0: none)",
        True,
    ),
    minimum(
        "callbacks.model_checkpoint.save_top_k", -1, "how many epoch checkpoints to keep (-1: all)"
    ),
    Rule(
        "callbacks.model_checkpoint.mode",
        "str",
        lambda v: v in ("min", "max"),
        "min or max",
        "whether a lower or higher monitored value is better",
    ),
    Rule(
        "callbacks.model_checkpoint.monitor",
        "str",
        meaning="the metric ranking checkpoints",
        nullable=True,
    ),
    minimum(
        "callbacks.last_checkpoint.every_n_train_steps",
        0,
        "the generator steps between mid-epoch saves of last.ckpt (0: none)",
        True,
        200,
    ),
    minimum(
        "callbacks.sample_grid.every_n_epochs", 1, "the epochs between sample grids", example=1
    ),
    minimum("callbacks.sample_grid.nrow", 1, "images per grid row"),
    minimum(
        "callbacks.sample_grid.every_n_steps", 1, "the generator steps between step grids", True
    ),
)

# Only when the sample_quality callback is on (its values are interpolated from metrics.*).
METRICS_RULES = (
    Rule(
        "metrics.num_samples",
        "int",
        at_least(4),
        ">= 4 (FID needs 2 images, precision and recall more than k=3)",
        "generated images per quality evaluation",
        example=10000,
    ),
    minimum("metrics.batch_size", 1, "images per metric batch", example=500),
    minimum("metrics.kid_subset_size", 2, "KID's subset size", example=1000),
    Rule(
        "metrics.mode_threshold",
        "float",
        at_least(0),
        ">= 0",
        "the mode-coverage threshold",
        example=0.1,
    ),
    Rule("metrics.classifier_path", "str", meaning="the classifier .pt file", nullable=True),
    Rule("metrics.classifier_dir", "str", meaning="the classifier cache folder", nullable=True),
    minimum(
        "callbacks.sample_quality.every_n_epochs",
        1,
        "the epochs between quality evaluations",
        example=1,
    ),
    minimum("callbacks.sample_quality.kid_subsets", 1, "KID's subsets"),
    minimum("callbacks.sample_quality.is_splits", 1, "IS's splits"),
)

# -- where a key is set, for the "how to fix" part --------------------------------------


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


def describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


# -- the checks ---------------------------------------------------------------------------


def _is_kind(value: Any, kind: str) -> bool:
    if kind == "any":
        return True
    if kind == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool):  # True is an int to Python, never to a user
        return False
    if kind == "int":
        return isinstance(value, int)
    if kind == "float":
        return isinstance(value, (int, float)) and math.isfinite(value)
    return isinstance(value, str)


_ABSENT = object()  # marks a key the config does not have


def check_rule(cfg: DictConfig, rule: Rule) -> str | None:
    """The problem with ``rule.key`` in ``cfg`` as a paragraph, or None if it is fine."""
    value = OmegaConf.select(cfg, rule.key, default=_ABSENT)
    if value is _ABSENT:
        return None  # a custom _target_ without this key: not ours to judge
    if value is None and rule.nullable:
        return None
    noun = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}
    what = f"`{rule.key}` ({rule.meaning})" if rule.meaning else f"`{rule.key}`"
    if not _is_kind(value, rule.kind):
        null = " or null" if rule.nullable else ""
        return (
            f"{what} must be {noun[rule.kind]}{null}{f' {rule.must}' if rule.must else ''}, "
            f"but it is {describe(value)}. {where(rule.key, rule.example, rule.yaml)}"
        )
    try:
        fine = rule.check(value)
    except TypeError:  # e.g. a list where a number was expected, in an "any" rule
        fine = False
    if not fine:
        fix = where(rule.key, rule.example, rule.yaml)
        return f"{what} must be {rule.must}, but it is {value!r}. {fix}"
    return None


def rule_problems(cfg: DictConfig, rules: Iterable[Rule]) -> list[str]:
    """The paragraphs of every rule ``cfg`` breaks."""
    return [p for p in (check_rule(cfg, r) for r in rules) if p]


def raise_problems(problems: list[str]) -> None:
    """One :class:`ConfigError` listing ``problems`` (a paragraph each), if there are any."""
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(f"the config has {len(problems)} problems:\n\n" + "\n\n".join(problems))


def _subset_problems(cfg: DictConfig) -> Iterator[str]:
    subset, batch = cfg.data.get("train_subset"), cfg.data.batch_size
    if subset is not None and subset < batch:
        yield (
            f"`data.train_subset`={subset} is smaller than `data.batch_size`={batch}; the last "
            "incomplete batch is dropped, so there would be nothing to train on. Raise "
            f"data.train_subset or lower data.batch_size. {where('data.train_subset')}"
        )


def config_problems(cfg: DictConfig) -> list[str]:
    """Every problem of the keys no model owns, one paragraph each; empty if they are usable."""
    rules = list(COMMON_RULES)
    if OmegaConf.select(cfg, "callbacks.sample_quality", default=None):
        rules += METRICS_RULES
    problems = rule_problems(cfg, rules) + gan_hparams.config_problems(cfg)  # hparams.py
    if problems:  # the cross-key checks below assume the single keys are sane
        return problems
    problems += _subset_problems(cfg)
    problems += _metrics_problems(cfg)
    return problems


def _metrics_problems(cfg: DictConfig) -> Iterator[str]:
    if not OmegaConf.select(cfg, "callbacks.sample_quality", default=None):
        return
    path = OmegaConf.select(cfg, "metrics.classifier_path", default=None)
    if path and not Path(str(path)).expanduser().is_file():
        yield (
            f"`metrics.classifier_path`={str(path)!r} is not a file. Pass a classifier .pt "
            "written by `python src/train_classifier.py` (<classifier_dir>/<data set>.pt), "
            "or metrics.classifier_path=null to use (or train) the data set's cached one."
        )
        return
    name, shape = str(cfg.data.name), (cfg.data.channels, cfg.data.image_size, cfg.data.image_size)
    try:
        yield from classifier_problems(
            str(cfg.data.root), path, OmegaConf.select(cfg, "metrics.classifier_dir"), name,
            shape, "metrics.",
        )  # fmt: skip
    except ConfigError as err:  # a file that is not a classifier, or one for other images
        yield str(err)


def classifier_problems(
    data_root: str,
    path: str | None,
    directory: str | None,
    name: str,
    shape: tuple[int, int, int],
    prefix: str = "",
) -> Iterator[str]:
    """The classifier a tool will use for data set ``name``, checked at start-up (train.py,
    evaluate.py): a given file must be a classifier of these images; a missing cached one
    must have a folder that takes it once trained. ``prefix``: ``metrics.`` for train.py's
    keys. A file that is no classifier, or one of other images, raises its ConfigError."""
    from capsgan.classifier import check_classifier_fits, load_classifier

    if path:
        check_classifier_fits(load_classifier(path), name, shape, f"{prefix}classifier_path")
        return
    problem = classifier_dir_problem(data_root, directory, name, f"{prefix}classifier_dir")
    if problem:
        yield problem


# -- the models: their constructors' rules --------------------------------------------


def _annotated_kind(hint: Any) -> tuple[str, bool] | None:
    """A constructor argument's annotation as a rule kind and nullability, for the plain
    types (``int``, ``float | None``, ...); None for the rest (lists, mappings...)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    nullable = len(args) < len(typing.get_args(hint))
    plain = args[0] if nullable and len(args) == 1 else hint
    kind = {int: "int", float: "float", str: "str", bool: "bool"}.get(plain)
    return (kind, nullable) if kind else None


def _argument_problems(cfg: DictConfig, group: str) -> list[str]:
    """The values of ``cfg[group]`` whose type is not the constructor's annotation."""
    module, _, name = str(cfg[group].get("_target_", "")).rpartition(".")
    try:
        hints = typing.get_type_hints(getattr(importlib.import_module(module), name).__init__)
    except Exception:  # a _target_ that cannot be imported is reported when it is built
        return []
    problems = []
    for arg, hint in hints.items():
        kind = _annotated_kind(hint)
        if kind and arg in cfg[group]:
            rule = Rule(f"{group}.{arg}", kind[0], nullable=kind[1])
            problems += [p for p in [check_rule(cfg, rule)] if p]
    return problems


def _named_key(message: str, group: str, names: Iterable[str]) -> str | None:
    """The key of ``group`` that a constructor's message names first, by its argument name
    (``blocks[1].kernel`` as such)."""
    found = [
        (m.start(), m.group())
        for name in names
        if (m := re.search(rf"(?<![\w.]){re.escape(name)}(\[\d+\](\.\w+)?)?(?!\w)", message))
    ]
    return f"{group}.{min(found)[1]}" if found else None


def instantiate(cfg: DictConfig, group: str, model: bool = True) -> Any:
    """``cfg[group]`` instantiated, a failure as a :class:`ConfigError`. A ``model``'s
    arguments are type-checked first, and its constructor's refusal (``ValueError`` /
    ``TypeError``) names the key."""
    if model:
        raise_problems(_argument_problems(cfg, group))
    try:
        return hydra.utils.instantiate(cfg[group])
    except InstantiationException as err:
        reason = err.__cause__ or err
        yaml = yaml_file(f"{group}.x")
        if not model or not isinstance(reason, (ValueError, TypeError)):  # a _target_ not found
            raise ConfigError(
                f"the {group} could not be built from the {group}.* settings: "
                f"{type(reason).__name__}: {reason}. Check the {group}.* overrides and {yaml}."
            ) from err
        message = str(reason)
        key = _named_key(message, group, [str(k) for k in cfg[group] if not str(k).startswith("_")])
        if "unexpected keyword argument" in message:
            fix = f"The {group} has no such setting: remove the override (or the key in {yaml})."
        else:
            fix = where(key) if key else f"Check the {group}.* overrides and {yaml}."
        what = f"`{key}`" if key else f"its {group}.* settings"
        raise ConfigError(f"the {group} refused {what}: {message}. {fix}") from err


def build_models(cfg: DictConfig) -> tuple[nn.Module, nn.Module]:
    """The generator and discriminator of ``cfg``, each refusing bad settings in its
    constructor (as a :class:`ConfigError` naming the key); then checked together on two
    images: the generator must make the data's image shape, the discriminator must score
    them with a (B,) score of a kind the losses handle. Cheap: no data is read."""
    generator, discriminator = instantiate(cfg, "generator"), instantiate(cfg, "discriminator")
    try:
        kind = score_kind(discriminator)
    except TypeError as err:
        raise ConfigError(f"{err}. {where('discriminator._target_')}") from err
    data_shape = (cfg.data.channels, cfg.data.image_size, cfg.data.image_size)
    modes = generator.training, discriminator.training
    generator.eval(), discriminator.eval()  # no BatchNorm statistics or power iteration moved
    try:
        with torch.no_grad():
            images = generator(torch.zeros(2, cfg.latent_dim))
            if tuple(images.shape[1:]) != data_shape:
                raise ConfigError(
                    f"the generator makes images of shape {tuple(images.shape[1:])} (channels, "
                    f"height, width) but the {cfg.data.name} images are {data_shape}. Pick a "
                    "generator preset made for this image size (conf/generator/) or change its "
                    f"sizes (the last block's stride/padding/output_padding) in "
                    f"{yaml_file('generator.x')}."
                )
            try:
                score = discriminator(images)
            except (RuntimeError, ValueError) as err:
                raise ConfigError(
                    f"the discriminator cannot score {data_shape} images: {err}. Check its "
                    f"image_channels / image_size against data.* in {yaml_file('discriminator.x')}."
                ) from err
    finally:
        generator.train(modes[0]), discriminator.train(modes[1])
    if tuple(score.shape) != (2,):
        raise ConfigError(
            f"the discriminator ({kind.value} score) returned shape {tuple(score.shape)} for 2 "
            "images; it must return one score per image, shape (B,). See docs/extending.md."
        )
    return generator, discriminator


def validate_config(cfg: DictConfig) -> tuple[nn.Module, nn.Module]:
    """Raise one :class:`ConfigError` listing every problem of the keys no model owns, else
    build the models (from ``cfg.seed``, so their first weights are the run's) and return
    ``(generator, discriminator)``; a model's refusal is a :class:`ConfigError` too."""
    raise_problems(config_problems(cfg))
    torch.manual_seed(cfg.seed)
    return build_models(cfg)


# -- paths: the output folder and the checkpoint to resume from ------------------------


PROBE_BYTES = 256 * 1024  # a probe of realistic size: .hydra/, run_info.json, a JSON result


def unwritable_reason(folder: str | Path, size: int = PROBE_BYTES) -> str | None:
    """Why ``folder`` cannot be created and written to, or None if it can.

    Tried, with a file of ``size`` bytes written to the disk (an empty file fits on a full
    disk, and the first real write then fails), then deleted. Permission bits do not tell:
    root passes os.access everywhere, yet cannot write to a read-only mount or /proc."""
    path = Path(folder).expanduser().absolute()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{str(existing)!r} is a file, not a folder"
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".capsgan-write-test-") as f:
            f.write(b"\0" * size)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        return (
            f"no file of {size // 1024} KiB can be written in {str(existing)!r} "
            f"({err.strerror or err})"
        )
    return None


def check_output_dir(folder: str | Path, key: str = "paths.output_dir") -> None:
    """Raise a :class:`ConfigError` if the run folder cannot be written."""
    reason = unwritable_reason(folder)
    if reason:
        hint = (
            " (single runs: hydra.run.dir=<folder>, sweeps: hydra.sweep.dir=<folder>; the "
            "default is paths.log_dir=outputs under the current folder)"
            if key.startswith(("paths.", "hydra."))
            else ""
        )
        raise ConfigError(
            f"the output folder {str(folder)!r} cannot be written: {reason}. Point the run "
            f"somewhere writable with {key}=<folder>{hint}."
        )


def output_file_problem(path: str | Path, key: str, yaml: str) -> str | None:
    """Why the tool's output file ``path`` (set by ``key``) cannot be written, found before
    the work so that no result is computed only to be lost; None when it can."""
    target = Path(str(path)).expanduser()
    reason = f"{str(target)!r} is a folder" if target.is_dir() else unwritable_reason(target.parent)
    if reason is None:
        return None
    return (
        f"the output file {str(target)!r} (`{key}`) cannot be written: {reason}. Nothing was "
        f"computed yet. Pass {key}=<writable folder>/{target.name or 'out.json'} on the "
        f"command line (or set it in {yaml})."
    )


def resolve_ckpt_path(
    ckpt_path: str | None, output_dir: str | Path, missing_ok: bool = False
) -> str | None:
    """``ckpt_path`` as a file that exists: ``last`` means ``<output_dir>/checkpoints/last.ckpt``.

    Raises a :class:`ConfigError` naming the file when it does not exist. With
    ``missing_ok`` (the jobs of a resumed sweep), ``last`` without the file means "start
    from scratch".
    """
    if ckpt_path in (None, ""):
        return None
    if str(ckpt_path) == LATEST:  # hydra.run.dir is already that run's folder (conf/train.yaml)
        return _resolve_latest(output_dir)
    if str(ckpt_path) == LAST:
        path = Path(output_dir) / "checkpoints" / "last.ckpt"
        if not path.is_file() and missing_ok:
            return None
        if not path.is_file():
            raise ConfigError(
                f"ckpt_path=last but this run folder has no {str(path)!r}. To resume a run, run "
                "in its folder: python src/train.py hydra.run.dir=<that run's folder> "
                "ckpt_path=last (its saved overrides are reused), or pass the file itself: "
                "ckpt_path=<run>/checkpoints/last.ckpt."
            )
        return str(path)
    path = Path(str(ckpt_path)).expanduser()
    if not path.is_file():
        what = "is a folder, not a .ckpt file" if path.is_dir() else "does not exist"
        raise ConfigError(
            f"ckpt_path={str(ckpt_path)!r} {what}. Pass an existing checkpoint file, e.g. "
            "ckpt_path=outputs/<date>/<time>/checkpoints/last.ckpt, or ckpt_path=last together "
            "with hydra.run.dir=<that run's folder>, or ckpt_path=null to start from scratch."
        )
    return str(path)


def _resolve_latest(output_dir: str | Path) -> str:
    path = Path(output_dir) / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise ConfigError(
            "ckpt_path=latest resumes the newest run folder under paths.log_dir (outputs/ by "
            "default) that has checkpoints/last.ckpt, in that folder; there is none. Resume a "
            "given file with ckpt_path=<run>/checkpoints/last.ckpt, or start from scratch with "
            "ckpt_path=null. In a sweep (-m) give each job its own ckpt_path."
        )
    logging.getLogger(__name__).info("ckpt_path=latest: resuming %s", path)
    return str(path)


class OutputDirCheck(Callback):
    """Hydra callback: refuse an unwritable run/sweep folder before Hydra creates it.

    Hydra makes ``hydra.run.dir`` (or ``hydra.sweep.dir``) before the task runs, and its own
    failure there is a traceback. This runs first and exits with code 2 and one paragraph
    (``HYDRA_FULL_ERROR=1`` raises the error instead, with its traceback).
    """

    def _check(self, folder: str, key: str, hold: bool = False) -> None:
        with user_errors():
            check_output_dir(folder, key)
            # a single run holds its folder from here, before Hydra rewrites .hydra/ in it
            # (released when the process ends; train() takes the same hold again)
            if hold and all(os.environ.get(k, "0") == "0" for k in ("RANK", "LOCAL_RANK")):
                hold_run_folder(folder)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(str(config.hydra.run.dir), "hydra.run.dir", hold=True)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(str(config.hydra.sweep.dir), "hydra.sweep.dir")


# -- the other entry points: generate.py, bench.py, train_classifier.py -----------------


def _device_ok(v: str) -> bool:
    return v in ("auto", "cpu", "mps") or v == "cuda" or v.startswith("cuda:")


def _strip_epochs_ok(v: Any) -> bool:
    if isinstance(v, int) and not isinstance(v, bool):
        return v >= 1
    is_list = isinstance(v, (list, tuple)) or OmegaConf.is_list(v)
    return is_list and len(v) > 0 and all(_is_kind(e, "int") and e >= 0 for e in v)


def _file_rules(yaml: str, *rules: tuple) -> tuple[Rule, ...]:
    return tuple(Rule(*r, yaml=yaml) for r in rules)


GENERATE_RULES = _file_rules(
    "conf/generate.yaml",
    ("run_dir", "str", lambda v: True, "", "a training run folder", True),
    ("ckpt_path", "str", lambda v: True, "", "a GAN checkpoint", True),
    ("config_path", "str", lambda v: True, "", "the run's config.yaml", True),
    ("out_dir", "str", lambda v: True, "", "where the pictures go", True),
    (
        "strip_epochs",
        "any",
        _strip_epochs_ok,
        "a count >= 1 or a list of epochs >= 0",
        "the epochs on the learning-process strip",
        False,
        8,
    ),
    ("learning_frame_ms", "int", at_least(1), ">= 1", "ms per learning-process frame", False, 200),
    ("seed", "int", seed_ok, SEED_RANGE, "the seed of the latent points", False, 0),
    ("num_samples", "int", at_least(1), ">= 1", "images in samples.png", False, 64),
    ("nrow", "int", at_least(1), ">= 1", "images per grid row", False, 8),
    ("num_pairs", "int", at_least(1), ">= 1", "morphing rows", False, 6),
    ("steps", "int", at_least(2), ">= 2", "images per morphing row", False, 10),
    ("slerp", "bool", lambda v: True, "", "spherical interpolation"),
    ("morph_frame_ms", "int", at_least(1), ">= 1", "ms per morphing frame", False, 100),
    ("device", "str", _device_ok, "cpu or cuda", "where to generate", False, "cpu"),
)

CLASSIFIER_RULES = _file_rules(
    "conf/train_classifier.yaml",
    ("classifier_dir", "str", lambda v: True, "", "where the classifier is cached", True),
    ("seed", "int", seed_ok, SEED_RANGE, "the seed", False, 0),
    ("epochs", "int", at_least(1), ">= 1", "training epochs", False, 3),
    ("lr", "float", positive, "> 0", "the peak learning rate", False, "2e-3"),
    ("weight_decay", "float", at_least(0), ">= 0", "AdamW's weight decay", False, "1e-4"),
    ("hidden", "int", at_least(1), ">= 1", "the feature size", False, 128),
    ("dropout", "float", in_unit_interval, "in [0, 1)", "the dropout rate", False, 0.25),
    (
        "accelerator",
        "str",
        lambda v: v in ("auto", "cpu", "gpu", "cuda", "mps"),
        "auto, cpu or gpu",
        "where to train",
        False,
        "auto",
    ),
)

BENCH_RULES = _file_rules(
    "conf/bench.yaml",
    ("quick", "bool", lambda v: True, "", "the CI-sized benchmark"),
    ("device", "str", _device_ok, "auto, cpu or cuda", "where to measure", False, "auto"),
    ("batch_size", "int", at_least(1), ">= 1", "the batch size", False, 64),
    ("warmup", "int", at_least(0), ">= 0", "untimed steps", False, 1),
    ("repeats", "int", at_least(1), ">= 1", "timed repeats", False, 5),
    ("steps", "int", at_least(1), ">= 1", "steps per repeat", False, 1),
    ("min_repeat_seconds", "float", at_least(0), ">= 0", "the least time per repeat", False, 1.0),
    ("matmul_size", "int", at_least(1), ">= 1", "the reference matmul's size", True, 2048),
    ("data_epochs", "int", at_least(1), ">= 1", "passes over the loader", False, 3),
    ("threads", "int", at_least(1), ">= 1", "torch CPU threads", True, 2),
    ("output", "str", lambda v: True, "", "the JSON file"),
    ("scaling.discriminator", "str", lambda v: True, "", "the scaling preset"),
    ("scaling.routing_iterations", "int", at_least(1), ">= 1", "the scaling routing iterations"),
    ("baseline.discriminator", "str", lambda v: True, "", "the baseline preset"),
    ("baseline.routing_iterations", "int", at_least(1), ">= 1", "the baseline routing iterations"),
    ("baseline.batch_size", "int", at_least(1), ">= 1", "the baseline batch size"),
)


def _int_list(cfg: DictConfig, key: str, minimum: int, yaml: str) -> list[str]:
    value = OmegaConf.select(cfg, key, default=None)
    if value is None:
        return []
    if (
        not OmegaConf.is_list(value)
        or not value
        or not all(_is_kind(v, "int") and v >= minimum for v in value)
    ):
        return [
            f"`{key}` must be a non-empty list of integers >= {minimum}, but it is "
            f"{OmegaConf.to_container(value) if OmegaConf.is_list(value) else value!r}. "
            f"{where(key, None, yaml)}"
        ]
    return []


def _device_problem(device: str, key: str, yaml: str) -> list[str]:
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        return [
            f"`{key}`={device} but this machine has no usable CUDA GPU (torch "
            f"{torch.__version__}, CUDA {torch.version.cuda}). Use {key}=cpu "
            f"(or auto). {where(key, 'cpu', yaml)}"
        ]
    return []


def validate_generate_config(cfg: DictConfig) -> None:
    """Every problem of a ``conf/generate.yaml`` config, as one :class:`ConfigError`."""
    yaml = "conf/generate.yaml"
    problems = rule_problems(cfg, GENERATE_RULES)
    raise_problems(problems)  # the checks below need sane values
    if cfg.run_dir and not Path(str(cfg.run_dir)).is_dir():
        problems.append(
            f"`run_dir`={str(cfg.run_dir)!r} is not a folder. Pass a training run's folder "
            "(outputs/<date>/<time>, the one holding samples/)."
        )
    if cfg.config_path and not Path(str(cfg.config_path)).is_file():
        problems.append(
            f"`config_path`={str(cfg.config_path)!r} is not a file. Pass <run folder>/.hydra/"
            "config.yaml, or config_path=null to find it next to the checkpoint."
        )
    problems += _device_problem(str(cfg.device), "device", yaml)
    raise_problems(problems)


def validate_classifier_config(cfg: DictConfig) -> None:
    """Every problem of a ``conf/train_classifier.yaml`` config (its data.* included)."""
    yaml = "conf/train_classifier.yaml"
    data_rules = [r for r in COMMON_RULES if r.key.startswith("data.")]
    problems = rule_problems(cfg, [*CLASSIFIER_RULES, *data_rules])
    problems += _int_list(cfg, "channels", 1, yaml)
    if not problems and cfg.data.image_size // 2 ** len(cfg.channels) < 1:
        problems.append(
            f"`channels` has {len(cfg.channels)} pooling blocks, which shrink a "
            f"{cfg.data.image_size}px image to nothing. {where('channels', '[32,64]', yaml)}"
        )
    if cfg.classifier_dir:
        reason = unwritable_reason(str(cfg.classifier_dir))
        if reason:
            problems.append(
                f"`classifier_dir`={str(cfg.classifier_dir)!r} cannot be written: {reason}. "
                "Pass a writable folder, or classifier_dir=null (the data root's classifiers/, "
                "else ~/.cache/capsgan/classifiers)."
            )
    raise_problems(problems)


def validate_bench_config(cfg: DictConfig) -> None:
    """Every problem of a ``conf/bench.yaml`` config, its training keys included."""
    yaml = "conf/bench.yaml"
    problems = rule_problems(
        cfg, [*BENCH_RULES, *(r for r in COMMON_RULES if r.key != "data.batch_size")]
    ) + gan_hparams.config_problems(cfg)  # the GAN's keys (hparams.py)
    problems += _int_list(cfg, "routing_iterations", 1, yaml)
    problems += _int_list(cfg, "scaling.batch_sizes", 1, yaml)
    presets = set(cfg.get("presets") or {})
    names = OmegaConf.select(cfg, "discriminators", default=None)
    if not OmegaConf.is_list(names) or not names or not set(names) <= presets:
        problems.append(
            f"`discriminators` must be a non-empty list of {sorted(presets)}, but it is "
            f"{OmegaConf.to_container(names) if OmegaConf.is_list(names) else names!r}. "
            f"{where('discriminators', '[cnn,capsule_small]', yaml)}"
        )
    for key in ("scaling.discriminator", "baseline.discriminator"):
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(value, str) and value not in presets:
            problems.append(
                f"`{key}`={value!r} must be one of {sorted(presets)}. {where(key, None, yaml)}"
            )
    if not problems:
        problems += _device_problem(str(cfg.device), "device", yaml)
        problems += [p for p in [output_file_problem(cfg.output, "output", yaml)] if p]
    raise_problems(problems)


# -- the scoring tools: evaluate.py, battle.py, semisupervised.py ---------------------------


def _value_range_ok(v: Any) -> bool:
    if v == "auto":
        return True
    pair = list(v) if OmegaConf.is_list(v) or isinstance(v, (list, tuple)) else None
    return (
        bool(pair)
        and len(pair) == 2
        and all(_is_kind(b, "float") for b in pair)
        and (pair[0] < pair[1])
    )


def _count_or_list(minimum: int) -> Callable[[Any], bool]:
    """An integer >= ``minimum`` or a non-empty list of them (``n_labels``, ``seeds``)."""

    def check(v: Any) -> bool:
        values = list(v) if OmegaConf.is_list(v) else [v]
        return bool(values) and all(_is_kind(e, "int") and e >= minimum for e in values)

    return check


def _positive_numbers(v: Any) -> bool:
    return OmegaConf.is_list(v) and len(v) > 0 and all(_is_kind(e, "float") and e > 0 for e in v)


def _seeds_ok(v: Any) -> bool:
    """``seeds``: a count >= 1 (seeds 0..k-1) or a non-empty list of seeds >= 0."""
    return _count_or_list(0)(v) if OmegaConf.is_list(v) else _count_or_list(1)(v)


CHECKPOINT_RULE = ("checkpoint", "str", lambda v: bool(v), "last, best or a file name in "
                   "checkpoints/", "which checkpoint of a run folder", False, "last")  # fmt: skip
EVALUATE_YAML, BATTLE_YAML, SEMI_YAML = (
    "conf/evaluate.yaml",
    "conf/battle.yaml",
    "conf/semisupervised.yaml",
)
EVALUATE_RULES = _file_rules(
    EVALUATE_YAML,
    CHECKPOINT_RULE,
    ("real_split", "str", lambda v: v in ("train", "test"), "train or test",
     "the real images the samples are measured against", False, "test"),
    ("real_samples", "int", at_least(2), ">= 2 (FID needs 2 images)", "real images used", True,
     10000),
    ("num_samples", "int", at_least(2), ">= 2 (FID needs 2 images)",
     "generated images per checkpoint", True, 10000),
    ("seed", "int", seed_ok, SEED_RANGE, "the noise seed", False, 0),
    ("batch_size", "int", at_least(1), ">= 1", "images per forward pass", False, 500),
    ("npz_key", "str", lambda v: True, "", "the array of an .npz", True),
    ("value_range", "any", _value_range_ok, "auto or [low,high] with low < high",
     "the range of float images", False, "auto"),
    ("classifier_path", "str", lambda v: True, "", "a classifier .pt", True),
    ("classifier_dir", "str", lambda v: True, "", "the classifier cache folder", True),
    ("kid_subset_size", "int", at_least(2), ">= 2", "KID's subset size", False, 1000),
    ("mode_threshold", "float", at_least(0), ">= 0", "the mode-coverage threshold", False, 0.1),
    ("device", "str", _device_ok, "cpu or cuda", "where to score", False, "cpu"),
    ("out", "str", lambda v: bool(v), "a file name", "the JSON written", False,
     "evaluation.json"),
)  # fmt: skip
BATTLE_RULES = _file_rules(
    BATTLE_YAML,
    CHECKPOINT_RULE,
    ("num_samples", "int", at_least(1), ">= 1", "generated images per generator", False, 10000),
    ("test_samples", "int", at_least(1), ">= 1", "real test images judged", True, 10000),
    ("seed", "int", seed_ok, SEED_RANGE, "the noise seed", False, 0),
    ("tolerance", "float", in_unit_interval, "in [0, 1)", "how near 1 r_test must be", False, 0.1),
    ("batch_size", "int", at_least(1), ">= 1", "images per forward pass", False, 500),
    ("batch_stats", "bool", lambda v: True, "", "BatchNorm on each batch's own statistics"),
    ("data_root", "str", lambda v: True, "", "the data root"),
    ("out", "str", lambda v: bool(v), "a file name", "the JSON written", False, "battle.json"),
)  # fmt: skip
SEMISUPERVISED_RULES = _file_rules(
    SEMI_YAML,
    CHECKPOINT_RULE,
    ("n_labels", "any", _count_or_list(1), "a count >= 1 or a non-empty list of them",
     "labelled training images", False, "[100,1000]"),
    ("seeds", "any", _seeds_ok, "a count >= 1 or a non-empty list of seeds >= 0",
     "the label draws", False, 3),
    ("test_samples", "int", at_least(1), ">= 1", "real test images", True, 10000),
    ("feature_layer", "str", lambda v: True, "", "the discriminator's feature submodule", True),
    ("pixels", "bool", lambda v: True, "", "the raw-pixel control"),
    ("untrained", "bool", lambda v: True, "", "the untrained-discriminator control"),
    ("l2_grid", "any", _positive_numbers, "a non-empty list of numbers > 0",
     "the L2 strengths tried", False, "[1e-3,1e-2,1e-1]"),
    ("cv_folds", "int", at_least(2), ">= 2", "cross-validation folds", False, 3),
    ("max_iter", "int", at_least(1), ">= 1", "L-BFGS iterations per fit", False, 200),
    ("batch_size", "int", at_least(1), ">= 1", "images per forward pass", False, 500),
    ("data_root", "str", lambda v: True, "", "the data root"),
    ("out", "str", lambda v: bool(v), "a file name", "the JSON written", False,
     "semisupervised.json"),
)  # fmt: skip


def _tool_problems(cfg: DictConfig, rules: Iterable[Rule], yaml: str) -> None:
    """Raise every rule ``cfg`` breaks; then the device and the output file (``out``)."""
    raise_problems(rule_problems(cfg, rules))  # the checks below need sane values
    problems = _device_problem(str(cfg.device), "device", yaml) if "device" in cfg else []
    problems += [p for p in [output_file_problem(cfg.out, "out", yaml)] if p]
    raise_problems(problems)


def validate_evaluate_config(cfg: DictConfig) -> None:
    """Every problem of a ``conf/evaluate.yaml`` config, before anything is scored."""
    _tool_problems(cfg, [*EVALUATE_RULES, *(r for r in COMMON_RULES if r.key == "data.name")],
                   EVALUATE_YAML)  # fmt: skip


def validate_battle_config(cfg: DictConfig) -> None:
    """Every problem of a ``conf/battle.yaml`` config, before any GAN is loaded."""
    _tool_problems(cfg, BATTLE_RULES, BATTLE_YAML)


def validate_semisupervised_config(cfg: DictConfig) -> None:
    """Every problem of a ``conf/semisupervised.yaml`` config, before any feature is computed."""
    _tool_problems(cfg, SEMISUPERVISED_RULES, SEMI_YAML)


# -- the FID classifier: the one that fits, and a cache folder that takes it ----------------


def classifier_dir_problem(
    data_root: str, configured: str | None, name: str, key: str
) -> str | None:
    """Why the ``name`` classifier, missing from its cache, could not be saved there after
    minutes of training; None when it is cached or the folder takes it. Checked at start-up
    by every tool that trains it on first use."""
    from capsgan.classifier import resolve_classifier_dir, weights_path

    directory = resolve_classifier_dir(data_root, configured, name)
    if weights_path(directory, name).exists():
        return None
    reason = unwritable_reason(directory)
    if reason is None:
        return None
    return (
        f"the {name} classifier behind the quality metrics is not cached yet and would be "
        f"trained now, but its folder {str(directory)!r} (`{key}`) cannot be written: "
        f"{reason}. Pass {key}=<writable folder> (or null: the data root's classifiers/, else "
        "~/.cache/capsgan/classifiers), or train it once with `python src/train_classifier.py "
        f"data={name}`."
    )
