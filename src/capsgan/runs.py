"""A run folder, the one owner of what a training run leaves on disk.

``outputs/<date>/<time>/`` (a sweep's ``<sweep>/<job>/``) holds ``.hydra/`` (the resolved
config, the Hydra choices and overrides), ``checkpoints/``, ``tensorboard/`` events and the
run's status (a sweep job's ``job.json``, else ``run_info.json``). Here they are found
(:func:`find_runs`), read (:func:`load_run`, :func:`read_scalars`, :func:`checkpoint_run`),
and judged (:func:`collapsed`); the report, the sweep summary, evaluate, battle,
semisupervised, generate and checkpointing all ask this module.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from capsgan import inputs
from capsgan.errors import ConfigError, UserError
from capsgan.locks import folder_in_use, holder
from capsgan.loggers import event_dirs
from capsgan.run_info import last_session, sessions

JOB_RECORD = "job.json"  # a sweep job's record (capsgan.sweep)
RUN_CONFIG = Path(".hydra") / "config.yaml"
# The statuses of sweep jobs (job.json) and runs (run_info.json) that did not finish
FAILED_STATUSES = ("failed", "killed", "interrupted", "crashed", "diverged")
RUNNING = "running"  # a run a live process still trains
# A run counts as collapsed when it ends covering fewer than 8 of the 10 classes, or with a
# final FID this many times its best (e.g. 324 -> 636 for a run that fell apart).
COLLAPSE_MODES = 8
COLLAPSE_FID_FACTOR = 1.5


def collapsed(
    final: float, best: float, modes: float | None, lower_is_better: bool = True
) -> tuple[bool, bool]:
    """The collapse rule above (the report's and the sweep summary's): too few modes, and a
    final value too far from the best (or not finite)."""
    few_modes = modes is not None and modes < COLLAPSE_MODES
    ratio = final / best if best else 1.0
    worse = ratio > COLLAPSE_FID_FACTOR if lower_is_better else ratio < 1 / COLLAPSE_FID_FACTOR
    return few_modes, not math.isfinite(final) or worse


@dataclass
class Series:
    """One scalar tag of a run: generator step, wall-clock seconds and value per event."""

    steps: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)


@dataclass
class Run:
    path: Path
    name: str
    choices: dict[str, str]  # Hydra config-group choices, e.g. {"discriminator": "cnn"}
    overrides: list[str]  # what was typed (or swept) for this run
    cfg: DictConfig | None
    scalars: dict[str, Series]
    status: str | None = None  # how the run ended (job.json / run_info.json), if recorded
    error: str | None = None
    arm: str = ""

    @property
    def seed(self) -> int | None:
        return None if (seed := self.setting("seed")) is None else int(seed)

    def setting(self, key: str) -> Any:
        return OmegaConf.select(self.cfg, key) if self.cfg is not None else None

    def series(self, tag: str) -> Series:
        return self.scalars.get(tag, Series())


# -- finding run folders ---------------------------------------------------------------------


def is_run(folder: Path) -> bool:
    """A run folder: TensorBoard events, a sweep job's record, or a run config beside
    ``checkpoints/`` (a run logged by another logger)."""
    return bool(event_dirs(folder)) or (folder / JOB_RECORD).is_file() or has_checkpoints(folder)


def has_checkpoints(folder: Path) -> bool:
    """A run whose networks can be rebuilt: its config beside ``checkpoints/``."""
    return (folder / RUN_CONFIG).is_file() and (folder / "checkpoints").is_dir()


def _natural(path: Path) -> tuple[int, list[Any]]:
    return len(path.parts), [int(s) if s.isdigit() else s for s in path.parts]


def find_runs(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """The run folders in or below ``paths`` (each path a run, or a sweep / outputs folder
    searched at any depth), in the order given, each sweep's jobs in job order."""
    paths = [paths] if isinstance(paths, (str, Path)) else paths
    found: list[Path] = []
    for path in map(Path, paths):
        if is_run(path):
            found.append(path)
            continue
        below = {p.parent for p in path.rglob(JOB_RECORD)}
        below |= {p.parent.parent for p in path.rglob("config.yaml") if p.parent.name == ".hydra"}
        for events in path.rglob("events.out.tfevents.*"):
            below.add(next((p.parent for p in events.parents if p.name == "tensorboard"), path))
        found += sorted((p for p in below if p != path and is_run(p)), key=_natural)
    return list(dict.fromkeys(found))


# -- status ----------------------------------------------------------------------------------


def read_job_record(folder: str | Path) -> dict[str, Any] | None:
    """A sweep job folder's ``job.json``, or None (none, or unreadable)."""
    with contextlib.suppress(OSError, ValueError):
        record = json.loads((Path(folder) / JOB_RECORD).read_text())
        return record if isinstance(record, dict) else None
    return None


def run_status(folder: Path) -> tuple[str | None, str | None]:
    """How a run ended, and the first line of its error: a sweep job's ``job.json``, else
    the last session of ``run_info.json`` (None: no record). A "running" record in a folder
    no live process holds is a run that was killed; one a live process holds is running,
    and its error field then names the holder."""
    job = read_job_record(folder)
    record = job if job is not None else last_session(folder) or {}
    status, error = record.get("status"), record.get("error" if job is not None else "message")
    if status == RUNNING:
        if not folder_in_use(folder):
            status = "killed"
        else:
            who = holder(folder)
            error = f"pid {who.get('pid', '?')}, started {who.get('started', '?')}" if who else (
                "held by a live process")  # fmt: skip
    return (None if status is None else str(status)), error


def session_pauses(folder: Path) -> list[tuple[float, float]]:
    """The times between the sessions of a resumed run (``run_info.json``), which are not
    training time: a run stopped and resumed an hour later did not train for that hour."""
    pauses = []
    try:
        for before, after in pairwise(sessions(folder)):
            ended, start = before.get("ended"), datetime.fromisoformat(after["started"]).timestamp()
            if ended and start > (end := datetime.fromisoformat(ended).timestamp()):
                pauses.append((end, start))
    except (ValueError, KeyError, TypeError):
        return []
    return pauses


# -- events, config, choices -----------------------------------------------------------------


def read_scalars(
    run_dir: str | Path, steps_per_unit: int = 1, pauses: Sequence[tuple[float, float]] = ()
) -> dict[str, Series]:
    """Every scalar tag of a run (all its TensorBoard event folders), in time order; steps
    divided by ``steps_per_unit`` (the batches per generator step), times in seconds since
    the run's first event, less the ``pauses`` (POSIX (from, to) times between the sessions
    of a resumed run) before each event. The project's one reader of TensorBoard events."""
    logging.getLogger("tensorboard").setLevel(logging.WARNING)
    events: dict[str, list[tuple[float, int, float]]] = {}
    start = math.inf
    for folder in event_dirs(run_dir):
        acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
        acc.Reload()
        try:
            start = min(start, acc.FirstEventTimestamp())
        except ValueError:  # a folder without events
            continue
        for tag in acc.Tags()["scalars"]:
            events.setdefault(tag, []).extend(
                (e.wall_time, e.step, e.value) for e in acc.Scalars(tag)
            )
    # Runs since capsgan.loggers.GeneratorSteps write at the generator step and count epochs
    # from 1; earlier ones wrote Lightning's count of batches before the current one.
    epochs = sorted(events.get("epoch", []))
    generator_steps = bool(epochs) and epochs[0][2] >= 1
    scalars: dict[str, Series] = {}
    for tag, items in events.items():
        series = scalars[tag] = Series()
        for wall, step, value in sorted(items):
            series.steps.append(step if generator_steps else (step + 1) // steps_per_unit)
            paused = sum(max(0.0, min(wall, end) - begin) for begin, end in pauses)
            series.seconds.append(wall - start - paused)
            series.values.append(float(value))
    return scalars


def hydra_record(hydra_dir: Path) -> tuple[dict[str, str], list[str]]:
    """The Hydra config-group choices (``{"discriminator": "cnn"}``) and the overrides of the
    run whose ``.hydra/`` folder this is; empty when it has no readable ``hydra.yaml``."""
    try:
        hydra_cfg = OmegaConf.load(hydra_dir / "hydra.yaml")
    except Exception:  # missing or damaged: the run still has its config
        return {}, []
    picked = OmegaConf.select(hydra_cfg, "hydra.runtime.choices") or {}
    choices = {
        str(k): str(v) for k, v in picked.items() if v is not None and not k.startswith("hydra")
    }
    return choices, [str(o) for o in OmegaConf.select(hydra_cfg, "hydra.overrides.task") or []]


def load_run(folder: str | Path, root: Path | None = None) -> Run:
    """Read one run folder's settings, status and events; named by its path below ``root``."""
    folder = Path(folder)
    config = folder / RUN_CONFIG
    cfg = OmegaConf.load(config) if config.is_file() else None
    choices, overrides = hydra_record(config.parent)
    d_steps = OmegaConf.select(cfg, "d_steps_per_g") if cfg is not None else None
    scalars = read_scalars(folder, int(d_steps or 1), session_pauses(folder))
    name = str(folder.relative_to(root)) if root and folder.is_relative_to(root) else ""
    name = "" if name == "." else name  # the one run given
    return Run(folder, name or folder.name, choices, overrides, cfg, scalars, *run_status(folder))


def override_values(overrides: Sequence[str]) -> dict[str, str]:
    """``["lr=1e-4", "+x=1"]`` -> ``{"lr": "1e-4", "+x": "1"}`` (deletions ``~key`` left out)."""
    return dict(o.split("=", 1) for o in overrides if "=" in o)


def varying_overrides(override_lists: Iterable[Sequence[str]]) -> list[str]:
    """The override keys whose value differs between runs (or that some runs lack), in
    command-line order: what a sweep varied."""
    values = [override_values(o) for o in override_lists]
    keys = dict.fromkeys(k for v in values for k in v)
    return [k for k in keys if len({v.get(k) for v in values}) > 1]


def sample_grids(folder: Path, unit: str = "step") -> dict[int, Path]:
    """``{step: path}`` of a run's fixed-noise grids ``samples/step_NNNNNN.png``, or with
    ``unit="epoch"`` ``{epoch: path}`` of ``samples/epoch_NNNN.png``, epochs counted from 1
    as the file names count them (a folder with ``epoch_0000.png`` was written before they
    did, from 0: its numbers are shifted by one)."""
    found = {
        int(m[1]): p
        for p in (folder / "samples").glob(f"{unit}_*.png")
        if (m := re.fullmatch(rf"{unit}_(\d+)\.png", p.name))
    }
    shift = 1 if unit == "epoch" and 0 in found else 0
    return {number + shift: path for number, path in sorted(found.items())}


# -- checkpoints -----------------------------------------------------------------------------


def saved_run_hint(ckpt_path: Path) -> str:
    """`` That run's config is '...'. It was started with these overrides: ...`` for a message
    about a checkpoint that does not fit, or "" when its run folder is not found."""
    config = inputs.find_run_config(ckpt_path)
    if config is None:
        return ""
    hint = f" That run's config is {str(config)!r}."
    with contextlib.suppress(Exception):  # the overrides are a courtesy
        saved = " ".join(str(o) for o in OmegaConf.load(config.parent / "overrides.yaml"))
        hint += f" It was started with these overrides: {saved or '(none: the defaults)'}."
    return hint


def run_checkpoint(run_dir: Path, which: str = "last") -> Path:
    """``which`` (``last``, ``best``: the one Lightning's ``ModelCheckpoint(monitor=val/fid)``
    recorded, or a file name in ``checkpoints/``) of a run folder."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if which == "best":
        state = inputs.read_checkpoint(last, "checkpoint") if last.is_file() else {}
        for key, value in state.get("callbacks", {}).items():
            best = value.get("best_model_path") if isinstance(value, dict) else None
            if "ModelCheckpoint" in key and best:
                candidate = last.parent / Path(best).name  # the run may have moved
                if candidate.is_file():
                    return candidate
        raise UserError(
            f"{str(run_dir)!r} records no best checkpoint (no ModelCheckpoint with a monitor "
            "in checkpoints/last.ckpt). Pass checkpoint=last or a file name from "
            f"{str(last.parent)!r}."
        )
    name = "last.ckpt" if which == "last" else which
    path = last.parent / name
    if not path.is_file():
        have = sorted(p.name for p in last.parent.glob("*.ckpt"))
        raise UserError(
            f"{str(run_dir)!r} has no checkpoints/{name} (it has {have or 'none'}). Pass "
            "checkpoint=last, checkpoint=best or one of those file names."
        )
    return path


def checkpoint_folder(ckpt: Path) -> Path:
    """The run folder of a checkpoint: above ``checkpoints/``, else the checkpoint's own."""
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent


def resolve_checkpoints(path: str | Path, which: str = "last") -> list[Path]:
    """A checkpoint, a run folder or a sweep folder -> the checkpoints to use."""
    path = Path(path).expanduser()
    if path.is_file() and path.suffix == ".ckpt":
        return [path]
    if path.is_dir():
        runs = [run for run in find_runs(path) if has_checkpoints(run)]
        if runs:
            return [run_checkpoint(run, which) for run in runs]
    raise UserError(
        f"{str(path)!r} is neither a checkpoint (.ckpt), a training run folder (with "
        "checkpoints/ and .hydra/config.yaml) nor a sweep folder holding run folders."
    )


@dataclass
class CheckpointRun:
    ckpt: Path
    config_path: Path
    cfg: DictConfig
    discriminator: str  # the preset name (``cnn``, ``capsule_small``...) or its _target_
    seed: int | None
    label: str

    @property
    def latent_dim(self) -> int:
        """The size of the noise vector z: the run's own ``latent_dim`` (the key the GAN
        samples z with), never an attribute of the generator, which a new model need not
        have (docs/extending.md)."""
        value = OmegaConf.select(self.cfg, "latent_dim")
        value = value or OmegaConf.select(self.cfg, "generator.latent_dim")
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(
                f"the run config {str(self.config_path)!r} gives no usable latent_dim "
                f"({value!r}); the noise size is read from its top-level latent_dim. Pass the "
                "config of a training run."
            )
        return value


def checkpoint_run(ckpt: Path, config_path: str | Path | None = None) -> CheckpointRun:
    """Config and label of the run that wrote ``ckpt``; the config is ``config_path``, else
    the ``.hydra/config.yaml`` of its run folder."""
    fix = "ckpt_path=<run folder>/checkpoints/last.ckpt (or epoch_NNN.ckpt) of a training run."
    ckpt = inputs.checkpoint_file(ckpt, f"the checkpoint {str(ckpt)!r}", fix)
    found = Path(config_path) if config_path else inputs.find_run_config(ckpt)
    if found is None or not found.is_file():
        raise ConfigError(
            f"no run config found for {str(ckpt)!r}: the networks are rebuilt from the "
            "training run's .hydra/config.yaml, looked for next to the checkpoint and in the "
            "run folder above checkpoints/. Keep the checkpoint inside its run folder or pass "
            "config_path=<run folder>/.hydra/config.yaml."
        )
    cfg = inputs.read_run_config(found)
    target = OmegaConf.select(cfg, "discriminator._target_") or "?"
    preset = hydra_record(found.parent)[0].get("discriminator", target.rsplit(".", 1)[-1])
    seed = cfg.get("seed")
    run = checkpoint_folder(ckpt)
    where = f"{run.parent.name}/{run.name}" + ("" if ckpt.name == "last.ckpt" else f":{ckpt.name}")
    return CheckpointRun(ckpt, found, cfg, str(preset), seed, f"{preset} seed={seed} ({where})")
