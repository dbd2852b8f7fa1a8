"""The comparison report: read runs' TensorBoard events, measure convergence, write report.md.

``python src/report.py <sweep folders | run folders> [--baseline cnn]`` writes ``report.md``
and PNG plots; docs/results.md says how to read them and how the quality levels are fixed.
Each run's settings come from the ``.hydra/`` files Hydra writes next to ``tensorboard/``.
Runs are grouped into arms by the Hydra choices that differ between them; nothing here
knows a model by name. The x axis is generator steps (Lightning's batch counter divided by
``d_steps_per_g``); wall-clock is seconds since the run's first event, which ``train()``
writes after reading the data, so evaluation time counts.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from capsgan.config import unwritable_reason
from capsgan.convergence import (
    DEFAULT_TOLERANCE,
    DEFAULT_WINDOW,
    Interval,
    PairedRatio,
    best_within,
    first_reaching,
    flattened_at,
    paired_ratio,
    t_interval,
)
from capsgan.errors import UserError
from capsgan.locks import folder_in_use
from capsgan.loggers import event_dirs
from capsgan.loggers import find_runs as logged_runs

log = logging.getLogger(__name__)

FID = "val/fid"
FINAL_METRICS = (  # (column, tag, digits) read at each run's last evaluation
    ("KID", "val/kid", 2),
    ("precision", "val/precision", 3),
    ("recall", "val/recall", 3),
    ("modes", "val/modes", 1),
)
LEVEL_FRACTIONS = (0.25, 0.5, 1.0)
# A run counts as collapsed when it ends covering fewer than 8 of the 10 classes, or with a
# final FID this many times its best (e.g. 324 -> 636 for a run that fell apart).
COLLAPSE_MODES = 8
COLLAPSE_FID_FACTOR = 1.5
LAST_EVALS = 3  # the stability window: FID spread over a run's last evaluations
CURVES = (("D loss", "d_loss"), ("G loss", "g_loss"), ("D accuracy", "d_acc"))
NA = "-"  # a table cell without a value
# The statuses of sweep jobs (job.json) and runs (run_info.json) that did not finish
FAILED_STATUSES = ("failed", "running", "killed", "interrupted", "crashed", "diverged")


@dataclass
class Series:
    """One scalar tag of a run: generator step, wall-clock seconds and value per event."""

    steps: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)


@dataclass
class Run:
    """A training run: where it is, what was chosen for it, and its scalars."""

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
        seed = self.cfg.get("seed") if self.cfg is not None else None
        return int(seed) if seed is not None else None

    def setting(self, key: str) -> Any:
        return OmegaConf.select(self.cfg, key) if self.cfg is not None else None

    def series(self, tag: str) -> Series:
        return self.scalars.get(tag, Series())


# -- reading -----------------------------------------------------------------------------------


def is_run(folder: Path) -> bool:
    return bool(event_dirs(folder))


def _job_status(folder: Path) -> tuple[str | None, str | None]:
    """How a run ended, and the first line of its error: a sweep job's ``job.json``, else
    the last session of ``run_info.json`` (None: no record). A "running" record in a folder
    no live process holds is a run that was killed."""
    status = error = None
    for name, key in (("job.json", "error"), ("run_info.json", "message")):
        try:
            record = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            continue
        if name == "run_info.json":
            record = (record.get("sessions") or [{}])[-1]
        status, error = record.get("status"), record.get(key)
        break
    if status == "running" and not folder_in_use(folder):
        status = "killed"
    return (None if status is None else str(status)), error


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run folders (holding ``tensorboard/`` events or a sweep's ``job.json``) in or below
    ``paths``; a sweep job that failed before logging anything is found by its job.json."""
    paths = list(paths)
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise UserError(
                f"{str(path)!r} is not a folder; pass a sweep folder (outputs/multirun/"
                "<date>/<time>) or training run folders (each holding tensorboard/)."
            )
        if is_run(path) or (path / "job.json").is_file():
            found.append(path)
            continue
        below = set(logged_runs(path)) | {p.parent for p in path.rglob("job.json")}
        found += sorted(
            below, key=lambda p: (len(p.parts), [int(s) if s.isdigit() else s for s in p.parts])
        )
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise UserError(
            f"no training runs found in {[str(p) for p in paths]}: a run folder holds "
            "tensorboard/events.out.tfevents.* (written by logger=tensorboard). Pass the "
            "sweep folder or the run folders themselves."
        )
    return unique


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
    scalars: dict[str, Series] = {}
    for tag, items in events.items():
        series = scalars[tag] = Series()
        for wall, step, value in sorted(items):
            # Lightning writes an event at the count of batches *before* the current one
            series.steps.append((step + 1) // steps_per_unit)
            paused = sum(max(0.0, min(wall, end) - begin) for begin, end in pauses)
            series.seconds.append(wall - start - paused)
            series.values.append(float(value))
    return scalars


def session_pauses(folder: Path) -> list[tuple[float, float]]:
    """The times between the sessions of a resumed run (``run_info.json``), which are not
    training time: a run stopped and resumed an hour later did not train for that hour."""
    try:
        sessions = json.loads((folder / "run_info.json").read_text()).get("sessions") or []
        times = [
            (datetime.fromisoformat(s["started"]).timestamp(), s.get("ended")) for s in sessions
        ]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    pauses = []
    for (_, ended), (started, _) in itertools.pairwise(times):
        if ended:
            end = datetime.fromisoformat(ended).timestamp()
            if started > end:
                pauses.append((end, started))
    return pauses


def load_run(folder: str | Path, root: Path | None = None) -> Run:
    """Read one run folder's settings and events."""
    folder = Path(folder)
    hydra_dir = folder / ".hydra"
    cfg = (
        OmegaConf.load(hydra_dir / "config.yaml") if (hydra_dir / "config.yaml").is_file() else None
    )
    choices: dict[str, str] = {}
    overrides: list[str] = []
    if (hydra_dir / "hydra.yaml").is_file():
        hydra_cfg = OmegaConf.load(hydra_dir / "hydra.yaml")
        picked = OmegaConf.select(hydra_cfg, "hydra.runtime.choices") or {}
        choices = {
            str(k): str(v) for k, v in picked.items() if v is not None and not k.startswith("hydra")
        }
        overrides = [str(o) for o in OmegaConf.select(hydra_cfg, "hydra.overrides.task") or []]
    d_steps = OmegaConf.select(cfg, "d_steps_per_g") if cfg is not None else None
    scalars = read_scalars(folder, int(d_steps or 1), session_pauses(folder))
    name = str(folder.relative_to(root)) if root and folder.is_relative_to(root) else ""
    name = "" if name == "." else name  # the one run given
    status, error = _job_status(folder)
    return Run(folder, name or folder.name, choices, overrides, cfg, scalars, status, error)


def assign_arms(runs: Sequence[Run]) -> None:
    """Name each run's arm by the Hydra choices that differ between the runs (the value
    alone when one group differs); runs sharing those and a seed are told apart by their
    other differing overrides (e.g. an lr sweep)."""
    groups = sorted({g for r in runs for g in r.choices})
    varying = [g for g in groups if len({r.choices.get(g) for r in runs}) > 1]
    for run in runs:
        values = [(g, run.choices.get(g, NA)) for g in varying]
        run.arm = values[0][1] if len(values) == 1 else " ".join(f"{g}={v}" for g, v in values)
        run.arm = run.arm or "all runs"
    clashes: dict[tuple[str, int | None], list[Run]] = {}
    for run in runs:
        clashes.setdefault((run.arm, run.seed), []).append(run)
    for members in (m for m in clashes.values() if len(m) > 1):
        keys = {o.split("=", 1)[0] for r in members for o in r.overrides}
        for run in members:
            own = dict(o.split("=", 1) for o in run.overrides if "=" in o)
            differing = [
                f"{k}={own.get(k, NA)}"
                for k in sorted(keys - {"seed"})
                if len(
                    {dict(o.split("=", 1) for o in r.overrides if "=" in o).get(k) for r in members}
                )
                > 1
            ]
            if differing:
                run.arm = f"{run.arm} " + " ".join(differing)


# -- per-run measurements ----------------------------------------------------------------------


@dataclass
class RunSummary:
    """What the report says about one run."""

    run: Run
    fid: Series
    best_fid: float | None = None
    best_step: int | None = None
    final_fid: float | None = None
    final_step: int | None = None
    final: dict[str, float] = field(default_factory=dict)  # FINAL_METRICS at the last eval
    flattened_step: int | None = None
    spread: float | None = None  # (max - min) / mean of the last LAST_EVALS FIDs
    collapse: str | None = None  # why the run counts as collapsed, or None
    seconds: float | None = None  # wall-clock at the last evaluation
    eval_share: float | None = None  # share of that wall-clock spent in quality evaluation
    d_acc: dict[str, float] = field(default_factory=dict)  # the accuracy phases


def _plateau_settings(run: Run) -> tuple[int, float, int]:
    node = run.setting("callbacks.stop_on_plateau") or {}
    return (
        int(node.get("window", DEFAULT_WINDOW)),
        float(node.get("tolerance", DEFAULT_TOLERANCE)),
        int(node.get("min_evals", 0)),
    )


def accuracy_phases(acc: Series) -> dict[str, float]:
    """The founding slides' discriminator-accuracy phases read off ``train/d_acc``: it rises
    to a peak early (the discriminator learns faster), then falls back and settles. A
    5-point moving mean smooths the logged values; the settled value is the mean (and std)
    of the last 10 % of the logged points."""
    values = acc.values
    if len(values) < 5:
        return {}
    smooth = [statistics.fmean(values[max(0, i - 4) : i + 1]) for i in range(len(values))]
    peak = max(range(len(smooth)), key=smooth.__getitem__)
    tail = values[-max(2, len(values) // 10) :]
    return {
        "peak": smooth[peak],
        "peak_step": float(acc.steps[peak]),
        "settled": statistics.fmean(tail),
        "settled_std": statistics.stdev(tail),
    }


def summarize_run(run: Run) -> RunSummary:
    fid = run.series(FID)
    out = RunSummary(run, fid, d_acc=accuracy_phases(run.series("train/d_acc")))
    finite = [i for i, v in enumerate(fid.values) if math.isfinite(v)]
    if not finite:
        return out
    best = min(finite, key=fid.values.__getitem__)
    out.best_fid, out.best_step = fid.values[best], fid.steps[best]
    out.final_fid, out.final_step = fid.values[-1], fid.steps[-1]
    out.seconds = fid.seconds[-1]
    for _, tag, _ in FINAL_METRICS:
        series = run.series(tag)
        if series.values:
            out.final[tag] = series.values[-1]
    window, tolerance, min_evals = _plateau_settings(run)
    flat = flattened_at(fid.values, window, tolerance, min_evals)
    out.flattened_step = None if flat is None else fid.steps[flat]
    last = [v for v in fid.values[-LAST_EVALS:] if math.isfinite(v)]
    if len(last) == LAST_EVALS:
        out.spread = (max(last) - min(last)) / statistics.fmean(last)
    modes = out.final.get("val/modes")
    reasons = []
    if modes is not None and modes < COLLAPSE_MODES:
        reasons.append(f"{modes:.0f} of 10 modes at the end")
    if not math.isfinite(out.final_fid) or out.final_fid > COLLAPSE_FID_FACTOR * out.best_fid:
        reasons.append(f"final FID {out.final_fid:.0f} > {COLLAPSE_FID_FACTOR:g} x best")
    out.collapse = "; ".join(reasons) or None
    metric_seconds = run.series("val/metric_seconds").values
    if metric_seconds and out.seconds:
        out.eval_share = sum(metric_seconds) / out.seconds
    return out


# -- arms, levels and ratios -------------------------------------------------------------------


@dataclass
class Arm:
    name: str
    runs: list[RunSummary]

    def interval(self, values: Iterable[float | None]) -> Interval | None:
        return t_interval([v for v in values if v is not None])

    def by_seed(self, values: dict[int | None, float | None]) -> dict[int, float | None]:
        return {seed: v for seed, v in values.items() if seed is not None}


def group_arms(summaries: Sequence[RunSummary]) -> list[Arm]:
    arms: dict[str, list[RunSummary]] = {}
    for s in summaries:
        arms.setdefault(s.run.arm, []).append(s)
    return [Arm(name, sorted(m, key=lambda s: s.run.seed or 0)) for name, m in sorted(arms.items())]


def pick_baseline(arms: Sequence[Arm], baseline: str) -> Arm:
    if len(arms) == 1:  # runs that differ in no choice: one arm, compared with nothing
        return arms[0]
    for arm in arms:
        if (
            arm.name == baseline
            or baseline in arm.name.split()
            or any(part.endswith(f"={baseline}") for part in arm.name.split())
        ):
            return arm
    raise UserError(
        f"no arm is the baseline {baseline!r}: the arms are {[a.name for a in arms]}. Pass "
        "--baseline <one of them> (the arm every other arm is compared with)."
    )


def quality_levels(baseline: Arm, fractions: Sequence[float] = LEVEL_FRACTIONS) -> list[float]:
    """The baseline's mean best FID within each fraction of its generator steps (the rule of
    docs/results.md): levels the baseline reaches, fixed before the arms are compared."""
    levels = []
    for fraction in fractions:
        bests = [
            best_within(s.fid.steps, s.fid.values, fraction * s.fid.steps[-1])
            for s in baseline.runs
            if s.fid.steps
        ]
        bests = [b for b in bests if b is not None]
        if bests:
            levels.append(statistics.fmean(bests))
    return sorted(set(levels), reverse=True)


@dataclass
class Reaching:
    """Generator steps and wall-clock at which a run first reached a level (None: never)."""

    steps: int | None
    seconds: float | None


def reaching(summary: RunSummary, level: float) -> Reaching:
    i = first_reaching(summary.fid.steps, summary.fid.values, level)
    if i is None:
        return Reaching(None, None)
    return Reaching(summary.fid.steps[i], summary.fid.seconds[i])


def level_ratios(arm: Arm, baseline: Arm, level: float) -> tuple[PairedRatio, PairedRatio]:
    """Paired arm / baseline ratios of (generator steps, wall-clock) to ``level``."""

    def costs(a: Arm, what: str) -> dict[int, float | None]:
        return a.by_seed({s.run.seed: getattr(reaching(s, level), what) for s in a.runs})

    return (
        paired_ratio(costs(arm, "steps"), costs(baseline, "steps")),
        paired_ratio(costs(arm, "seconds"), costs(baseline, "seconds")),
    )


STEP_SLACK = 2  # a resumed run may log its evaluations a step or two off the others'


def value_at_step(summary: RunSummary, step: int) -> float | None:
    """The FID evaluated at ``step`` (within :data:`STEP_SLACK` generator steps)."""
    for s, v in zip(summary.fid.steps, summary.fid.values, strict=True):
        if abs(s - step) <= STEP_SLACK:
            return v
    return None


def common_steps(arms: Sequence[Arm], count: int = 6) -> list[int]:
    """Evaluation steps to compare all arms at: spread over the steps every arm's longest
    run evaluated, plus the last step of the shortest arm (e.g. a 30-minute run)."""
    per_arm = [set().union(*(set(s.fid.steps) for s in a.runs)) for a in arms if a.runs]
    union = sorted(set().union(*per_arm))
    if not union:
        return []
    picks = {
        union[min(len(union) - 1, round(i * (len(union) - 1) / (count - 1)))] for i in range(count)
    }
    picks |= {max(steps) for steps in per_arm if steps}
    picks |= min(per_arm, key=max)  # every evaluation of the shortest arm (a 30-minute run)
    return sorted(picks)


# -- the real-data floor -----------------------------------------------------------------------


def measure_floor(runs: Sequence[Run]) -> tuple[float | None, str]:
    """FID of ``metrics.num_samples`` real training images against the held-out images,
    with the classifier the runs used: the best score a perfect generator could get."""
    from capsgan.classifier import load_classifier, resolve_classifier_dir, weights_path
    from capsgan.data import ImageDataModule
    from capsgan.metrics import real_data_floor

    first = next((r for r in runs if r.cfg is not None), None)
    if first is None:
        return None, "not measured: the runs have no .hydra/config.yaml"
    name, samples = first.setting("data.name"), first.setting("metrics.num_samples")
    root = os.environ.get("DATA_DIR", "./data")
    try:
        path = first.setting("metrics.classifier_path")
        if not path:
            folder = resolve_classifier_dir(root, first.setting("metrics.classifier_dir"), name)
            path = weights_path(folder, name)
        if not Path(path).is_file():
            return None, f"not measured: no {name} classifier at {path}"
        classifier = load_classifier(path)
        dm = ImageDataModule(name=name, root=root, download=False)
        dm.setup("fit")
        fid = real_data_floor(dm, classifier, int(samples))
    except Exception as err:  # the report is still useful without its floor
        return None, f"not measured ({type(err).__name__}: {err}); set DATA_DIR to the data"
    return fid, (
        f"{fid:.2f}: {samples} real training images against the {len(dm.val_set)} held-out "
        f"ones, scored with the runs' classifier ({path})"
    )


# -- formatting --------------------------------------------------------------------------------


def describe_end(run: Run) -> str:
    """A run's status and the first line of its error, for the lists of left-out runs."""
    if run.status is None or run.status in ("ok", "completed"):
        return "no val/fid logged"
    first = (run.error or "").strip().splitlines()[:1]
    return f"{run.status}: {first[0][:120]}" if first else run.status


def fmt(value: float | int | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return NA if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def fmt_interval(iv: Interval | None, digits: int = 2) -> str:
    if iv is None:
        return NA
    if iv.low is None:
        return f"{iv.mean:.{digits}f}"  # one run: no interval
    return f"{iv.mean:.{digits}f} [{iv.low:.{digits}f}, {iv.high:.{digits}f}]"


def fmt_ratio(ratio: PairedRatio) -> str:
    parts = [fmt_interval(ratio.interval)]
    if ratio.ratios:
        parts.append("seeds " + ", ".join(f"{s}: {r:.2f}" for s, r in ratio.ratios.items()))
    if ratio.arm_never:
        parts.append(f"arm never reached it: seeds {ratio.arm_never}")
    if ratio.baseline_never:
        parts.append(f"baseline never reached it: seeds {ratio.baseline_never}")
    return "; ".join(parts)


def table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


# -- plots -------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _mean_curve(
    runs: Sequence[RunSummary], tag: str | None = None
) -> tuple[list[int], list[float]]:
    by_step: dict[int, list[float]] = {}
    for s in runs:
        series = s.fid if tag is None else s.run.series(tag)
        for step, value in zip(series.steps, series.values, strict=True):
            if math.isfinite(value):
                by_step.setdefault(step, []).append(value)
    steps = sorted(by_step)
    return steps, [statistics.fmean(by_step[k]) for k in steps]


def plot_quality(arms: Sequence[Arm], levels: Sequence[float], out: Path) -> Path | None:
    """``fid.png``: FID against generator steps and wall-clock; ``precision_recall.png``."""
    plt = _pyplot()
    if not any(s.fid.values for a in arms for s in a.runs):
        return None
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    (ax_steps, ax_time), (ax_p, ax_r) = axes
    for i, arm in enumerate(arms):
        colour = f"C{i}"
        for s in arm.runs:
            ax_steps.plot(s.fid.steps, s.fid.values, color=colour, alpha=0.35, linewidth=0.8)
            ax_time.plot([t / 60 for t in s.fid.seconds], s.fid.values, color=colour,
                         alpha=0.6, linewidth=0.9, marker=".")  # fmt: skip
        ax_steps.plot(*_mean_curve(arm.runs), color=colour, linewidth=2.2, label=f"{arm.name} "
                      f"(mean of {len(arm.runs)})")  # fmt: skip
        for ax, tag in ((ax_p, "val/precision"), (ax_r, "val/recall")):
            ax.plot(*_mean_curve(arm.runs, tag), color=colour, linewidth=2, label=arm.name)
    for level in levels:
        for ax in (ax_steps, ax_time):
            ax.axhline(level, color="grey", linestyle="--", linewidth=0.8)
    for ax in (ax_steps, ax_time):
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    ax_steps.set(xlabel="generator steps", ylabel="val/fid (log)", title="FID (thin: seeds)")
    ax_time.set(xlabel="wall-clock (minutes)", ylabel="val/fid (log)", title="FID against time")
    ax_p.set(xlabel="generator steps", ylabel="precision", title="precision (mean over seeds)")
    ax_r.set(xlabel="generator steps", ylabel="recall", title="recall (mean over seeds)")
    for ax in (ax_p, ax_r):
        ax.set_ylim(-0.02, 1.02)
        ax.grid(True, alpha=0.3)
    ax_steps.legend(title="dashed: quality levels", fontsize="small")
    ax_p.legend(fontsize="small")
    fig.tight_layout()
    path = out / "fid.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_training_curves(arms: Sequence[Arm], out: Path) -> Path:
    """``training_curves.png``: D loss, G loss and D accuracy against generator steps, a row
    per arm, a colour per seed (thin: logged values; thick: epoch means)."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(arms), 3, figsize=(15, 3.4 * len(arms)), squeeze=False)
    for row, arm in zip(axes, arms, strict=True):
        for i, s in enumerate(arm.runs):
            label = f"seed {s.run.seed}" if s.run.seed is not None else s.run.name
            for ax, (title, key) in zip(row, CURVES, strict=True):
                step = s.run.series(f"train/{key}")
                ax.plot(step.steps, step.values, color=f"C{i}", linewidth=0.6, alpha=0.35)
                mean = s.run.series(f"epoch/{key}")
                ax.plot(mean.steps, mean.values, color=f"C{i}", linewidth=2, marker="o",
                        markersize=3, label=label)  # fmt: skip
                ax.set_title(f"{arm.name}: {title}")
                ax.set_xlabel("generator steps")
                ax.grid(True, alpha=0.3)
        row[2].axhline(0.5, color="grey", linestyle="--", linewidth=1)
        row[2].set_ylim(-0.02, 1.02)
        row[0].legend(fontsize="small")
    fig.tight_layout()
    path = out / "training_curves.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_sample_panel(arms: Sequence[Arm], out: Path, columns: int = 4) -> Path | None:
    """``samples.png``: each arm's fixed-noise samples (its lowest seed) at equal generator
    steps, side by side -- the founding slides' "DCGAN vs CapsuleGAN after N" panels. Needs
    the runs' ``samples/step_NNNNNN.png`` (``callbacks.sample_grid.every_n_steps``)."""
    grids: dict[str, dict[int, Path]] = {}
    for arm in arms:
        first = arm.runs[0].run.path / "samples"
        grids[arm.name] = {int(p.stem.split("_")[1]): p for p in first.glob("step_*.png")}
    all_steps = sorted(set().union(*(set(g) for g in grids.values())))
    if not all_steps:
        return None
    ends = sorted({max(g) for g in grids.values() if g})
    picks = {all_steps[round(i * (len(all_steps) - 1) / (columns - 1))] for i in range(columns)}
    steps = sorted(picks | set(ends))[: columns + 2]
    plt = _pyplot()
    fig, axes = plt.subplots(len(arms), len(steps), figsize=(2.6 * len(steps), 2.8 * len(arms)),
                             squeeze=False)  # fmt: skip
    for row, arm in zip(axes, arms, strict=True):
        for ax, step in zip(row, steps, strict=True):
            ax.set_xticks([])
            ax.set_yticks([])
            path = grids[arm.name].get(step)
            if path is not None:
                ax.imshow(plt.imread(path), cmap="gray")
            else:
                ax.text(0.5, 0.5, "not trained\nthis far", ha="center", va="center")
            if ax is row[0]:
                ax.set_ylabel(arm.name)
            ax.set_title(f"step {step}", fontsize="small")
    fig.tight_layout()
    path = out / "samples.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# -- report.md ---------------------------------------------------------------------------------


def render(
    arms: Sequence[Arm],
    baseline: Arm,
    levels: Sequence[float],
    level_note: str,
    floor_note: str,
    excluded: Sequence[Run],
    plots: Sequence[Path],
) -> str:
    runs = [s for a in arms for s in a.runs]
    lines = ["# Discriminator comparison report", ""]
    lines += [
        f"{len(runs)} runs in {len(arms)} arms; baseline arm: **{baseline.name}**. Steps are "
        "generator steps; wall-clock counts from each run's start, quality evaluations "
        "included. Intervals are 95 % t-intervals over seeds (`mean [low, high]`); a value "
        "without one comes from a single run.",
        "",
        f"Real-data FID floor: {floor_note}.",
        "",
        f"Quality levels (FID): {', '.join(f'**{v:.1f}**' for v in levels) or NA} -- {level_note}.",
        "",
    ]
    if excluded:
        lines += ["Left out (did not finish, or logged no val/fid): " + "; ".join(
            f"`{r.name}` ({describe_end(r)})" for r in excluded) + ".", ""]  # fmt: skip
        if any(r.status == "interrupted" for r in excluded):
            lines += ["Interrupted sweep jobs resume with `python src/train.py -m <the sweep's "
                      "overrides> hydra.sweep.dir=<sweep> ckpt_path=last`.", ""]  # fmt: skip

    lines += ["## Per arm", ""]
    head = ["arm", "runs", "best FID", "final FID"]
    head += [f"final {c}" for c, _, _ in FINAL_METRICS]
    head += ["G steps", "flattened", "collapsed", "min / 1000 steps", "eval share"]
    rows = []
    for arm in arms:
        per_k = [s.seconds / 60 / s.final_step * 1000 for s in arm.runs if s.final_step]
        rows.append(
            [arm.name, str(len(arm.runs)),
             fmt_interval(arm.interval(s.best_fid for s in arm.runs), 1),
             fmt_interval(arm.interval(s.final_fid for s in arm.runs), 1)]
            + [fmt_interval(arm.interval(s.final.get(tag) for s in arm.runs), d)
               for _, tag, d in FINAL_METRICS]
            + [fmt_interval(arm.interval(s.final_step for s in arm.runs), 0),
               f"{sum(s.flattened_step is not None for s in arm.runs)}/{len(arm.runs)}",
               f"{sum(s.collapse is not None for s in arm.runs)}/{len(arm.runs)}",
               fmt_interval(t_interval(per_k), 2),
               fmt_interval(arm.interval(s.eval_share for s in arm.runs), 3)]
        )  # fmt: skip
    lines += table(head, rows)
    lines += [
        "",
        "Final values are those of each run's last evaluation. *Flattened*: the FID curve met "
        "the plateau rule (`capsgan.convergence`). *Collapsed*: fewer than "
        f"{COLLAPSE_MODES} of 10 modes at the end, or a final FID above "
        f"{COLLAPSE_FID_FACTOR:g} x the run's best. *Eval share*: the part of the wall-clock "
        "spent measuring sample quality.",
        "",
    ]

    lines += ["## Generator steps and minutes to each quality level", ""]
    head = ["arm"] + [f"FID <= {v:.1f}: steps" for v in levels]
    head += [f"FID <= {v:.1f}: min" for v in levels]
    rows = []
    for arm in arms:
        cells = [arm.name]
        reach = [[reaching(s, v) for s in arm.runs] for v in levels]
        for per_level in reach:
            done = [r.steps for r in per_level if r.steps is not None]
            cells.append(f"{fmt_interval(t_interval(done), 0)} ({len(done)}/{len(per_level)})")
        for per_level in reach:
            done = [r.seconds / 60 for r in per_level if r.seconds is not None]
            cells.append(fmt_interval(t_interval(done), 1))
        rows.append(cells)
    lines += table(head, rows)
    lines += ["", "`(k/n)`: runs that reached the level; the interval is over those.", ""]

    lines += [f"## Paired ratios to the baseline ({baseline.name})", ""]
    lines += [
        "Per seed, the arm's cost to reach a level divided by the baseline's, then the "
        "geometric mean over seeds with its 95 % interval. The founding claim is a ratio of "
        "about 0.33 in steps (a third of the epochs).",
        "",
    ]
    rows = []
    for arm in (a for a in arms if a is not baseline):
        for level in levels:
            steps, seconds = level_ratios(arm, baseline, level)
            rows.append([arm.name, f"{level:.1f}", fmt_ratio(steps), fmt_ratio(seconds)])
    lines += table(["arm", "level", "steps ratio", "wall-clock ratio"], rows) if rows else [NA]
    lines += [""]

    steps = common_steps(arms)
    if steps:
        lines += ["## FID at equal generator steps", ""]
        rows = [
            [arm.name] + [fmt_interval(arm.interval(value_at_step(s, k) for s in arm.runs), 1)
                          for k in steps]
            for arm in arms
        ]  # fmt: skip
        lines += [*table(["arm"] + [f"step {k}" for k in steps], rows), ""]

    lines += ["## Stability", ""]
    head = ["run", "arm", "seed", f"FID spread, last {LAST_EVALS}", "collapsed",
            "D acc peak (step)", "D acc settled (std)"]  # fmt: skip
    rows = []
    for s in runs:
        acc = s.d_acc
        rows.append([
            f"`{s.run.name}`", s.run.arm, fmt(s.run.seed),
            NA if s.spread is None else f"{100 * s.spread:.0f} %",
            s.collapse or "no",
            f"{acc['peak']:.2f} ({acc['peak_step']:.0f})" if acc else NA,
            f"{acc['settled']:.2f} ({acc['settled_std']:.2f})" if acc else NA,
        ])  # fmt: skip
    lines += table(head, rows)
    lines += [
        "",
        "The founding slides describe three phases of the discriminator's accuracy: a fast "
        "rise to near 100 %, fluctuation while the generator learns, and a standstill near "
        "50 % at convergence. *Peak* is the highest 5-point moving mean of `train/d_acc` and "
        "the generator step it came at; *settled* is the mean (std) of the last 10 % of the "
        "logged values.",
        "",
    ]

    lines += ["## Runs", ""]
    head = ["run", "arm", "seed", "G steps", "best FID (step)", "final FID",
            "flattened at", "precision", "recall", "modes", "minutes"]  # fmt: skip
    rows = [
        [f"`{s.run.name}`", s.run.arm, fmt(s.run.seed), fmt(s.final_step),
         NA if s.best_fid is None else f"{s.best_fid:.1f} ({s.best_step})",
         fmt(s.final_fid, 1), fmt(s.flattened_step) if s.best_fid is not None else NA,
         fmt(s.final.get("val/precision"), 3), fmt(s.final.get("val/recall"), 3),
         fmt(s.final.get("val/modes"), 0),
         NA if s.seconds is None else f"{s.seconds / 60:.1f}"]
        for s in runs
    ]  # fmt: skip
    lines += table(head, rows)
    lines += ["", "*Flattened at*: `-` = the curve was still improving when the run ended.", ""]
    lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(lines) + "\n"


def check_comparable(runs: Sequence[Run]) -> None:
    """FIDs are comparable only on the same data set, sample size and classifier."""
    for key, fix in (
        ("data.name", "report each data set separately"),
        ("metrics.num_samples", "FID depends on the sample size; report them separately"),
        ("metrics.classifier_path", "FIDs from different classifiers are in different units"),
    ):
        values: dict[str, list[str]] = {}
        for run in runs:
            values.setdefault(str(run.setting(key)), []).append(run.name)
        if len(values) > 1:
            listing = "; ".join(
                f"{v} ({len(names)} runs, e.g. {names[0]})" for v, names in values.items()
            )
            raise UserError(
                f"the runs differ in `{key}`: {listing}. Their FIDs cannot be compared: {fix} "
                "(pass only the run or sweep folders that share it)."
            )


def write_report(
    paths: Sequence[str | Path],
    out_dir: str | Path | None = None,
    baseline: str = "cnn",
    levels: Sequence[float] | None = None,
    measure_floor_fid: bool = True,
) -> Path:
    """Read the runs in ``paths``, write ``report.md`` and the plots; return report.md's path.

    ``out_dir`` defaults to the single folder given, or to the common parent of several.
    """
    given = [Path(p).resolve() for p in paths]
    out = Path(out_dir or os.path.commonpath(given))
    reason = unwritable_reason(out)
    if reason:
        raise UserError(
            f"the report cannot be written into {str(out)!r}: {reason}. Pass --out <a folder "
            "you can write to>."
        )
    folders = find_runs(paths)
    out.mkdir(parents=True, exist_ok=True)
    common = Path(os.path.commonpath(given))  # runs are named by their path below it
    loaded = [load_run(f, root=common if common.is_dir() else None) for f in folders]
    excluded = [r for r in loaded if r.status in FAILED_STATUSES or not r.series(FID).values]
    runs = [r for r in loaded if r not in excluded]
    if not runs:
        listing = "; ".join(f"`{r.name}` ({describe_end(r)})" for r in loaded)
        raise UserError(
            f"none of the {len(loaded)} runs found has a finished job with val/fid: they "
            f"failed or were interrupted ({listing}). See each run's train.log (and the "
            "sweep's summary.md); resume an interrupted sweep with `python src/train.py -m "
            "<its overrides> hydra.sweep.dir=<sweep> ckpt_path=last`."
        )
    check_comparable(runs)
    assign_arms(runs)
    arms = group_arms([summarize_run(r) for r in runs])
    base = pick_baseline(arms, baseline)
    if levels:
        levels, level_note = sorted(levels, reverse=True), "given with --levels"
    else:
        levels = quality_levels(base)
        level_note = (
            f"the {base.name} baseline's mean best FID within "
            + ", ".join(f"{f:g}" for f in LEVEL_FRACTIONS)
            + " of its generator steps"
        )
    floor_note = "not measured (--no-floor)"
    if measure_floor_fid:
        _, floor_note = measure_floor(runs)
    plots = [plot_quality(arms, levels, out), plot_training_curves(arms, out),
             plot_sample_panel(arms, out)]  # fmt: skip
    report = out / "report.md"
    text = render(arms, base, levels, level_note, floor_note, excluded, [p for p in plots if p])
    report.write_text(text)
    return report
