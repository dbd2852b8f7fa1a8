"""Start-up checks of every entry point, the models and the paths, done before any data
is read so that a sweep fails its bad jobs in seconds: one :class:`capsgan.schema.Keys`
per config node; a model's constructor is its own schema (its annotations' types) and
judges its own ranges; Lightning judges the trainer's when the Trainer is built
(:func:`capsgan.training.build_trainer`, before the models).
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import re
import tempfile
import types
import typing
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import hydra
import torch
from hydra.errors import InstantiationException
from hydra.experimental.callback import Callback
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import MISSING, DictConfig, OmegaConf
from torch import nn

from capsgan.classifier import ClassifierSpec, default_arch
from capsgan.cli import LATEST  # the newest run's last.ckpt, in its folder (cli.resume_dir)
from capsgan.data import DATASETS
from capsgan.errors import ConfigError, user_errors
from capsgan.hparams import GANHParams  # the GAN's keys and their ranges
from capsgan.inputs import checkpoint_file
from capsgan.locks import hold_run_folder
from capsgan.metrics import MIN_IMAGES  # the quality metrics' smallest sample
from capsgan.models.interface import score_kind
from capsgan.resume import LAST  # ckpt_path=last: <run dir>/checkpoints/last.ckpt
from capsgan.resume import register_resolver as register_session_resolver
from capsgan.schema import (  # the checking mechanism (capsgan.config.Keys etc. as before)
    NOUNS,
    Keys,
    Range,
    at_least,
    hp,
    int_list,
    ints,
    key_problems,
    plain,
    raise_problems,
    schema_problems,
    where,
    yaml_file,
)

register_session_resolver()  # hydra.output_subdir (conf/hydra/default.yaml), in every process

# -- training: src/train.py (and src/bench.py, which composes its config) -------------------


@dataclass
class TrainKeys(Keys):
    seed: int = 42
    threads: int | None = at_least(1, default=None)
    ckpt_path: str | None = None
    run_name: str | None = None
    optimized_metric: str | None = None


@dataclass
class DataKeys(Keys):
    PREFIX: ClassVar[str] = "data"
    name: str = hp("mnist", "", f"one of {sorted(DATASETS)}", lambda v: v in DATASETS)
    batch_size: int = at_least(1, default=64)
    channels: int = at_least(1, default=1)
    image_size: int = at_least(1, default=28)
    train_subset: int | None = at_least(1, default=None)
    val_subset: int | None = at_least(1, default=None)
    num_workers: int = at_least(0, default=0)
    download: bool = False
    pin_memory: bool = False
    root: str = ""


NOTHING = "other than 0 (0 would train nothing)"


@dataclass
class TrainerKeys(Keys):
    """Lightning judges the trainer's values when the Trainer is built (max_epochs >= -1,
    limit_*_batches, fast_dev_run...); here are the types it leaves unchecked and this
    project's own rules: a limit of 0 trains nothing, the GAN steps its optimizers itself."""

    PREFIX: ClassVar[str] = "trainer"
    max_epochs: int | None = hp(None, "", NOTHING, lambda v: v != 0, 20)
    max_steps: int = hp(-1, "", f"{NOTHING}; -1: no limit", lambda v: v != 0)
    limit_train_batches: int | float | None = hp(None, "", NOTHING, lambda v: v != 0, "null")
    limit_val_batches: int | float | None = None
    check_val_every_n_epoch: int | None = at_least(1, default=1)
    num_sanity_val_steps: int | None = at_least(-1, default=0)
    log_every_n_steps: int = at_least(1, default=50)
    fast_dev_run: bool | int = False
    deterministic: bool | str | None = hp(
        None, "", "true, false or warn", lambda v: v in (True, False, "warn"), "warn"
    )
    gradient_clip_val: Any = None
    accumulate_grad_batches: Any = 1

    def ranges(self) -> list[Range]:
        return [
            ("gradient_clip_val", self.gradient_clip_val is None, "null: the GAN steps its "
             "optimizers itself, so clip with the top-level gradient_clip_val", "null"),
            ("accumulate_grad_batches", self.accumulate_grad_batches == 1, "1: the GAN steps "
             "its optimizers itself (raise data.batch_size instead)", 1),
        ]  # fmt: skip


@dataclass
class SampleGridKeys(Keys):
    PREFIX: ClassVar[str] = "callbacks.sample_grid"
    every_n_epochs: int = at_least(1, default=1)
    nrow: int = at_least(1, default=8)
    every_n_steps: int | None = at_least(1, default=None)


@dataclass
class SampleQualityKeys(Keys):
    PREFIX: ClassVar[str] = "callbacks.sample_quality"
    every_n_epochs: int = at_least(1, default=1)
    kid_subsets: int = at_least(1, default=100)
    is_splits: int = at_least(1, default=10)


@dataclass
class MetricsKeys(Keys):
    """conf/train.yaml's metrics.*, read by the sample_quality callback when it is on."""

    PREFIX: ClassVar[str] = "metrics"
    num_samples: int = hp(10000, "", f">= {MIN_IMAGES} (FID needs 2 images, precision and "
                          "recall more than k=3)", lambda v: v >= MIN_IMAGES)  # fmt: skip
    batch_size: int = at_least(1, default=500)
    kid_subset_size: int = at_least(2, default=1000)
    mode_threshold: float = at_least(0, default=0.1)
    classifier_path: str | None = None
    classifier_dir: str | None = None


TRAIN_SCHEMAS = (GANHParams, TrainKeys, DataKeys, TrainerKeys, SampleGridKeys)


def check_config(cfg: DictConfig) -> None:
    """One :class:`ConfigError` listing every problem of the keys no model owns."""
    quality = OmegaConf.select(cfg, "callbacks.sample_quality", default=None)
    extra = [SampleQualityKeys, MetricsKeys] if quality else []
    raise_problems(schema_problems(cfg, *TRAIN_SCHEMAS, *extra))
    if not quality:  # then the metrics' classifier, of sane values
        return
    path, data = cfg.metrics.classifier_path, cfg.data
    if path and not Path(str(path)).expanduser().is_file():
        raise ConfigError(
            f"`metrics.classifier_path`={str(path)!r} is not a file. Pass a classifier .pt "
            "written by `python src/train_classifier.py` (<classifier_dir>/<data set>.pt), "
            "or metrics.classifier_path=null to use (or train) the data set's cached one."
        )
    shape, folder = (data.channels, data.image_size, data.image_size), cfg.metrics.classifier_dir
    check_classifier(str(data.root), path, folder, str(data.name), shape, "metrics.")


def validate_config(cfg: DictConfig) -> tuple[nn.Module, nn.Module]:
    check_config(cfg)
    return build_models(cfg)


# -- the models: their constructors' rules --------------------------------------------


def constructor_schema(target: str) -> type | None:
    """The plainly typed arguments (``int``, ``float | None``...) of ``target``'s
    constructor as a schema, so OmegaConf judges their types as it does every other key."""
    module, _, name = target.rpartition(".")
    try:
        hints = typing.get_type_hints(getattr(importlib.import_module(module), name).__init__)
    except Exception:  # a _target_ that cannot be imported is reported when it is built
        return None
    plain = [(arg, hint, field(default=MISSING)) for arg, hint in hints.items() if arg != "return"
             and typing.get_origin(hint) in (None, typing.Union, types.UnionType)
             and set(typing.get_args(hint) or (hint,)) - {type(None)} <= NOUNS.keys()]  # fmt: skip
    return dataclasses.make_dataclass(f"{name}Arguments", plain)


def instantiate(cfg: DictConfig, group: str, model: bool = True) -> Any:
    """``cfg[group]`` instantiated, a failure as a :class:`ConfigError`. A ``model``'s
    arguments are type-checked first, and its constructor's refusal (``ValueError`` /
    ``TypeError``) names the key."""
    schema = constructor_schema(str(cfg[group].get("_target_", ""))) if model else None
    raise_problems(key_problems(cfg, schema, group) if schema else [])
    try:
        return hydra.utils.instantiate(cfg[group])
    except InstantiationException as err:
        reason, yaml = err.__cause__ or err, yaml_file(f"{group}.x")
        if not model or not isinstance(reason, (ValueError, TypeError)):  # a _target_ not found
            raise ConfigError(
                f"the {group} could not be built from the {group}.* settings: "
                f"{type(reason).__name__}: {reason}. Check the {group}.* overrides and {yaml}."
            ) from err
        # the key the message names first, by its argument name (``blocks[1].kernel`` as such)
        message, pattern = str(reason), r"(?<![\w.]){}(\[\d+\](\.\w+)?)?(?!\w)"
        found = [(m.start(), m.group()) for name in map(str, cfg[group]) if not name.startswith("_")
                 and (m := re.search(pattern.format(re.escape(name)), message))]  # fmt: skip
        key = f"{group}.{min(found)[1]}" if found else None
        if "unexpected keyword argument" in message:
            fix = f"The {group} has no such setting: remove the override (or the key in {yaml})."
        else:
            fix = where(key) if key else f"Check the {group}.* overrides and {yaml}."
        what = f"`{key}`" if key else f"its {group}.* settings"
        raise ConfigError(f"the {group} refused {what}: {message}. {fix}") from err


def build_models(cfg: DictConfig) -> tuple[nn.Module, nn.Module]:
    """The generator and discriminator of ``cfg`` (seeded with ``cfg.seed``: their first
    weights are the run's), each refusing bad settings in its constructor; then checked
    together on two images: the generator must make the data's image shape, the
    discriminator must score them with a (B,) score of a kind the losses handle."""
    torch.manual_seed(cfg.seed)
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


# -- paths: the output folder and the checkpoint to resume from ------------------------


def unwritable_reason(folder: str | Path, size: int = 256 * 1024) -> str | None:
    """Why ``folder`` cannot be created and written to, or None if it can: tried with a
    file of ``size`` bytes written to the disk (an empty file fits on a full disk), then
    deleted. Permission bits do not tell: root passes os.access, yet cannot write to /proc."""
    existing = Path(folder).expanduser().absolute()
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
        where_ = f"{str(existing)!r} ({err.strerror or err})"
        return f"no file of {size // 1024} KiB can be written in {where_}"
    return None


def check_output_dir(folder: str | Path, key: str = "paths.output_dir") -> None:
    reason = unwritable_reason(folder)
    if reason:
        hint = (" (single runs: hydra.run.dir=<folder>, sweeps: hydra.sweep.dir=<folder>; the "
                "default is paths.log_dir=outputs under the current folder)"
                if key.startswith(("paths.", "hydra.")) else "")  # fmt: skip
        raise ConfigError(
            f"the output folder {str(folder)!r} cannot be written: {reason}. Point the run "
            f"somewhere writable with {key}=<folder>{hint}."
        )


def resolve_ckpt_path(
    ckpt_path: str | None, output_dir: str | Path, missing_ok: bool = False
) -> str | None:
    """``ckpt_path`` as a file that exists (``last``: ``<output_dir>/checkpoints/last.ckpt``),
    else a :class:`ConfigError` naming it. ``missing_ok`` (the jobs of a resumed sweep):
    ``last`` without the file means "start from scratch"."""
    if ckpt_path in (None, ""):
        return None
    last = Path(output_dir) / "checkpoints" / "last.ckpt"
    if str(ckpt_path) == LATEST and not last.is_file():  # hydra.run.dir is that run's folder
        raise ConfigError(
            "ckpt_path=latest resumes the newest run folder under paths.log_dir (outputs/ by "
            "default) that has checkpoints/last.ckpt, in that folder; there is none. Resume a "
            "given file with ckpt_path=<run>/checkpoints/last.ckpt, or start from scratch with "
            "ckpt_path=null. In a sweep (-m) give each job its own ckpt_path."
        )
    if str(ckpt_path) == LATEST:
        logging.getLogger(__name__).info("ckpt_path=latest: resuming %s", last)
        return str(last)
    if str(ckpt_path) == LAST and not last.is_file():
        if missing_ok:
            return None
        raise ConfigError(
            f"ckpt_path=last but this run folder has no {str(last)!r}. To resume a run, run "
            "in its folder: python src/train.py hydra.run.dir=<that run's folder> "
            "ckpt_path=last (its saved overrides are reused), or pass the file itself: "
            "ckpt_path=<run>/checkpoints/last.ckpt."
        )
    path = last if str(ckpt_path) == LAST else str(ckpt_path)
    fix = (
        "e.g. ckpt_path=outputs/<date>/<time>/checkpoints/last.ckpt, or ckpt_path=last "
        "together with hydra.run.dir=<that run's folder>, or ckpt_path=null to start from scratch."
    )
    return str(checkpoint_file(path, f"ckpt_path={str(ckpt_path)!r}", fix))


class OutputDirCheck(Callback):
    """Hydra callback: refuse an unwritable run/sweep folder before Hydra creates it (its
    own failure there is a traceback): one paragraph, exit code 2."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = str(config.hydra.run.dir)
        with user_errors():
            check_output_dir(folder, "hydra.run.dir")
            # a single run holds its folder from here, before Hydra rewrites .hydra/ in it
            # (released when the process ends; train() takes the same hold again)
            if rank_zero_only.rank == 0:
                hold_run_folder(folder)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        with user_errors():
            check_output_dir(str(config.hydra.sweep.dir), "hydra.sweep.dir")


# -- the other entry points ------------------------------------------------------------------


def check_tool(cfg: DictConfig, schemas: tuple[type[Keys], ...], out: str | None = "out") -> None:
    """One :class:`ConfigError` with every problem of ``schemas``'s keys, else of the device
    and of the output file ``cfg[out]``: a tool's config, checked before any work."""
    raise_problems(schema_problems(cfg, *schemas))  # the checks below need sane values
    problems, yaml, device = [], str(schemas[0].YAML), str(cfg.get("device", "cpu"))
    if device.startswith("cuda") and not torch.cuda.is_available():
        problems.append(
            f"`device`={device} but this machine has no usable CUDA GPU (torch "
            f"{torch.__version__}, CUDA {torch.version.cuda}). Use device=cpu (or auto). "
            f"{where('device', 'cpu', yaml)}"
        )
    if out and cfg.get(out):  # found now, so that no result is computed only to be lost
        file = Path(str(cfg[out])).expanduser()
        reason = f"{str(file)!r} is a folder" if file.is_dir() else unwritable_reason(file.parent)
        if reason:
            problems.append(
                f"the output file {str(file)!r} (`{out}`) cannot be written: {reason}. Nothing "
                f"was computed yet. Pass {out}=<writable folder>/{file.name or 'out.json'} on "
                f"the command line (or set it in {yaml})."
            )
    raise_problems(problems)


@dataclass
class GenerateKeys(Keys):
    YAML: ClassVar[str] = "conf/generate.yaml"
    run_dir: str | None = None
    ckpt_path: str | None = None
    config_path: str | None = None
    out_dir: str | None = None
    strip_epochs: Any = 8
    learning_frame_ms: int = at_least(1, default=200)
    seed: int = 0
    num_samples: int = at_least(1, default=64)
    nrow: int = at_least(1, default=8)
    num_pairs: int = at_least(1, default=6)
    steps: int = at_least(2, default=10)
    slerp: bool = False
    morph_frame_ms: int = at_least(1, default=100)
    device: str = "cpu"

    def ranges(self) -> list[Range]:
        strip = self.strip_epochs
        strip_ok = strip >= 1 if type(strip) is int else ints(strip, 0)
        return [("strip_epochs", strip_ok, "a count >= 1 or a list of epochs >= 0", 8)]


def validate_generate_config(cfg: DictConfig) -> None:
    """Every problem of a ``conf/generate.yaml`` config, as one :class:`ConfigError`."""
    check_tool(cfg, (GenerateKeys,), out=None)  # out_dir: generation checks it
    if cfg.run_dir and not Path(str(cfg.run_dir)).is_dir():
        raise ConfigError(
            f"`run_dir`={str(cfg.run_dir)!r} is not a folder. Pass a training run's folder "
            "(outputs/<date>/<time>, the one holding samples/)."
        )
    if cfg.config_path and not Path(str(cfg.config_path)).is_file():
        raise ConfigError(
            f"`config_path`={str(cfg.config_path)!r} is not a file. Pass <run folder>/.hydra/"
            "config.yaml, or config_path=null to find it next to the checkpoint."
        )


@dataclass
class ClassifierKeys(Keys):
    YAML: ClassVar[str] = "conf/train_classifier.yaml"
    classifier_dir: str | None = None
    seed: int = 0
    epochs: int = at_least(1, default=3)
    lr: float = at_least(0, default=2e-3, strict=True)
    weight_decay: float = at_least(0, default=1e-4)
    channels: list[int] = int_list([32, 64], "[32,64]")  # noqa: RUF009 (a field)
    hidden: int = at_least(1, default=128)
    dropout: float = hp(0.25, "", "in [0, 1)", lambda v: 0 <= v < 1)
    accelerator: str = hp(
        "auto", "", "auto, cpu or gpu", lambda v: v in ("auto", "cpu", "gpu", "cuda", "mps")
    )


def validate_classifier_config(cfg: DictConfig) -> None:
    """Every problem of a ``conf/train_classifier.yaml`` config (its data.* included)."""
    raise_problems(schema_problems(cfg, ClassifierKeys, DataKeys))
    problems, folder = [], cfg.classifier_dir
    try:  # the architecture's own rules (capsgan.classifier)
        ClassifierSpec(cfg.data.channels, cfg.data.image_size, tuple(cfg.channels),
                       arch=default_arch(cfg.data.channels))  # fmt: skip
    except ValueError as err:
        problems.append(f"{err} {where('channels', '[32,64]', ClassifierKeys.YAML)}")
    reason = unwritable_reason(str(folder)) if folder else None
    if reason:
        problems.append(
            f"`classifier_dir`={str(folder)!r} cannot be written: {reason}. Pass a writable "
            "folder, or classifier_dir=null (the data root's classifiers/, else "
            "~/.cache/capsgan/classifiers)."
        )
    raise_problems(problems)


@dataclass
class BenchKeys(Keys):
    YAML: ClassVar[str] = "conf/bench.yaml"
    quick: bool = False
    device: str = "auto"
    discriminators: list[str] = field(default_factory=list)
    routing_iterations: list[int] = int_list([1], "[1,3]")  # noqa: RUF009 (a field)
    batch_size: int = at_least(1, default=64)
    warmup: int = at_least(0, default=1)
    repeats: int = at_least(1, default=5)
    steps: int = at_least(1, default=1)
    min_repeat_seconds: float = at_least(0, default=1.0)
    matmul_size: int | None = at_least(1, default=None)
    data_epochs: int = at_least(1, default=3)
    output: str = "bench.json"


@dataclass
class ScalingKeys(Keys):
    PREFIX: ClassVar[str] = "scaling"
    YAML: ClassVar[str] = "conf/bench.yaml"
    discriminator: str = "capsule_small"
    routing_iterations: int = at_least(1, default=3)
    batch_sizes: list[int] = int_list([32], "[32,64]")  # noqa: RUF009 (a field)


@dataclass
class BaselineKeys(Keys):
    PREFIX: ClassVar[str] = "baseline"
    YAML: ClassVar[str] = "conf/bench.yaml"
    discriminator: str = "capsule"
    routing_iterations: int = at_least(1, default=3)
    batch_size: int = at_least(1, default=64)


def validate_bench_config(cfg: DictConfig) -> None:
    """Every problem of a ``conf/bench.yaml`` config, its training keys included."""
    schemas = (BenchKeys, ScalingKeys, BaselineKeys, *TRAIN_SCHEMAS)
    problems, presets = schema_problems(cfg, *schemas), sorted(cfg.get("presets") or {})
    names = plain(OmegaConf.select(cfg, "discriminators", default=None))
    if not isinstance(names, list) or not names or not set(names) <= set(presets):
        problems.append(
            f"`discriminators` must be a non-empty list of {presets}, but it is {names!r}. "
            f"{where('discriminators', '[cnn,capsule_small]', BenchKeys.YAML)}"
        )
    for key in ("scaling.discriminator", "baseline.discriminator"):
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(value, str) and value not in presets:
            fix = where(key, None, BenchKeys.YAML)
            problems.append(f"`{key}`={value!r} must be one of {presets}. {fix}")
    raise_problems(problems)
    check_tool(cfg, schemas, out="output")


# -- the scoring tools: evaluate.py, battle.py, semisupervised.py ---------------------------


@dataclass
class ToolKeys(Keys):
    """The keys the scoring tools share."""

    checkpoint: str = hp("last", "", "last, best or a file in checkpoints/", bool)
    batch_size: int = at_least(1, default=500)
    out: str = hp("out.json", "", "a file name", bool)
    seed: int = 0


@dataclass
class EvaluateKeys(ToolKeys):
    YAML: ClassVar[str] = "conf/evaluate.yaml"
    out: str | None = hp(None, "", "a file name", bool)  # null: beside what was scored
    real_split: str = hp("test", "", "train or test", lambda v: v in ("train", "test"))
    real_samples: int | None = at_least(2, default=None, example=10000)
    num_samples: int | None = at_least(2, default=None, example=10000)
    npz_key: str | None = None
    value_range: Any = "auto"
    classifier_path: str | None = None
    classifier_dir: str | None = None
    kid_subset_size: int = at_least(2, default=1000)
    mode_threshold: float = at_least(0, default=0.1)
    device: str = "cpu"

    def ranges(self) -> list[Range]:
        low_high = self.value_range if isinstance(self.value_range, list) else []
        pair = len(low_high) == 2 and all(type(b) in (int, float) for b in low_high)
        fine = self.value_range == "auto" or (pair and low_high[0] < low_high[1])
        return [("value_range", fine, "auto or [low,high] with low < high", "auto")]


@dataclass
class BattleKeys(ToolKeys):
    YAML: ClassVar[str] = "conf/battle.yaml"
    num_samples: int = at_least(1, default=10000)
    test_samples: int | None = at_least(1, default=None)
    tolerance: float = hp(0.1, "", "in [0, 1)", lambda v: 0 <= v < 1)
    batch_stats: bool = False
    data_root: str = ""

    a: Any = None  # a run folder or checkpoint, or a list of them battled pairwise with b
    b: Any = None

    def ranges(self) -> list[Range]:
        a, b = ([] if v is None else v if isinstance(v, list) else [v] for v in (self.a, self.b))
        return [
            ("a", bool(a and b), "given with b: a battle needs two GANs, a=<run folder or "
             ".ckpt> b=<run folder or .ckpt> (or lists a=[...] b=[...])", "<run folder>"),
            ("b", not (a and b) or len(a) == len(b), f"as long as a ({len(a)}): the lists are "
             "battled pairwise (a[0] vs b[0], ...), so give them the same length", None),
        ]  # fmt: skip


@dataclass
class SemisupervisedKeys(ToolKeys):
    YAML: ClassVar[str] = "conf/semisupervised.yaml"
    n_labels: Any = 100
    seeds: Any = 3
    test_samples: int | None = at_least(1, default=None)
    feature_layer: str | None = None
    pixels: bool = True
    untrained: bool = True
    l2_grid: list[float] = field(default_factory=lambda: [1.0])
    cv_folds: int = at_least(2, default=3)
    max_iter: int = at_least(1, default=200)
    data_root: str = ""
    run: Any = None  # a run folder, checkpoint or sweep folder, or a list of them

    def ranges(self) -> list[Range]:
        seeds, n = self.seeds, self.n_labels  # a count (seeds 0..k-1) or a list of seeds
        seeds_ok = ints(seeds, 0) if isinstance(seeds, list) else ints([seeds], 1)
        return [
            ("n_labels", ints(n if isinstance(n, list) else [n], 1),
             "a count >= 1 or a non-empty list of them", "[100,1000]"),
            ("seeds", seeds_ok, "a count >= 1 or a non-empty list of seeds >= 0", 3),
            ("l2_grid", bool(self.l2_grid) and min(self.l2_grid) > 0,
             "a non-empty list of numbers > 0", "[1e-3,1e-2,1e-1]"),
            ("run", bool(self.run), "a run folder, checkpoint or sweep folder (or a list "
             "run=[a,b]) of the trained GANs whose discriminators give the features: pass "
             "run=<...>", "<run folder>"),
        ]  # fmt: skip


validate_evaluate_config = partial(check_tool, schemas=(EvaluateKeys, DataKeys))
validate_battle_config = partial(check_tool, schemas=(BattleKeys,))
validate_semisupervised_config = partial(check_tool, schemas=(SemisupervisedKeys,))


# -- the FID classifier: the one that fits, and a cache folder that takes it ----------------


def check_classifier(
    data_root: str, path: str | None, directory: str | None, name: str, shape: tuple, prefix=""
) -> None:
    """The classifier for data set ``name`` (train.py, evaluate.py): a given file must fit
    these images; a missing cached one needs a folder that takes it, found now rather than
    after minutes of training. ``prefix``: ``metrics.`` for train.py's keys."""
    from capsgan.classifier import (
        check_classifier_fits,
        load_classifier,
        resolve_classifier_dir,
        weights_path,
    )

    if path:
        return check_classifier_fits(load_classifier(path), name, shape, f"{prefix}classifier_path")
    key, directory = f"{prefix}classifier_dir", resolve_classifier_dir(data_root, directory, name)
    reason = None if weights_path(directory, name).exists() else unwritable_reason(directory)
    if reason:
        raise ConfigError(
            f"the {name} classifier behind the quality metrics is not cached yet and would be "
            f"trained now, but its folder {str(directory)!r} (`{key}`) cannot be written: "
            f"{reason}. Pass {key}=<writable folder> (or null: the data root's classifiers/, "
            "else ~/.cache/capsgan/classifiers), or train it once with `python "
            f"src/train_classifier.py data={name}`."
        )
