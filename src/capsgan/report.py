"""The comparison report: read runs' TensorBoard events, tabulate convergence, plot curves.

``python src/report.py <multirun folder | run folders>`` writes ``report.md`` and PNG plots
(see docs/results.md). Runs are read with TensorBoard's own ``EventAccumulator``; the
run's settings come from the ``.hydra/`` files Hydra writes next to ``tensorboard/``.

Axes. The events' step is Lightning's batch counter; Lightning also logs an ``epoch``
scalar with every write, which maps a step to its (0-based) epoch. Epochs in the report
are counted from 1: "epoch 3" is the state after three passes over the training data,
so "epochs to threshold" is the number of epochs trained. Wall-clock is seconds since the
run's first event (written just before ``fit`` starts, so the set-up inside ``fit`` counts).
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from capsgan.errors import UserError

# The real-data FID floor: the first n training images scored as if generated, against the
# first n test images (the validation set), with the cached classifier's features. A perfect
# generator scores about this, so thresholds are multiples of it. FID is biased upwards for
# small samples, so the floor is kept per (data set, metrics.num_samples), and the runs'
# val_subset must equal num_samples for it to apply. Measured on 2026-11-24 with
# ~/.cache/capsgan/classifiers/mnist.pt (test accuracy 99.31 %); update from docs/metrics.md
# ("Reference points on MNIST") when it states them.
REAL_DATA_FID_FLOOR: dict[tuple[str, int], float] = {
    ("mnist", 10_000): 4.88,
    ("mnist", 2_000): 47.94,
}
DEFAULT_FLOOR_MULTIPLE = 3.0

FID = "val/fid"
NA = "-"  # a table cell without a value
CURVES = (("D loss", "d_loss"), ("G loss", "g_loss"), ("D accuracy", "d_acc"))


@dataclass
class Series:
    """One scalar tag of a run: per-event step, epoch (0-based), wall-clock seconds, value."""

    steps: list[int] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)


@dataclass
class Run:
    """A training run: its settings and its scalars."""

    path: Path
    name: str
    discriminator: str
    routing_iterations: int | None
    lr: float | None
    seed: int | None
    fid_setting: tuple[str, int] | None  # (data set, metrics.num_samples): picks the FID floor
    scalars: dict[str, Series]
    epoch_end_seconds: list[float]  # wall-clock at the last event of each epoch
    batches_per_epoch: int

    @property
    def epochs_run(self) -> int:
        return len(self.epoch_end_seconds)

    @property
    def seconds_per_epoch(self) -> float | None:
        """Mean wall-clock of an epoch, start-up excluded when there are two or more."""
        ends = self.epoch_end_seconds
        if not ends:
            return None
        if len(ends) == 1:
            return ends[0]
        return (ends[-1] - ends[0]) / (len(ends) - 1)

    def per_epoch(self, tag: str) -> Series:
        """The tag's last value in each epoch (epoch-end metrics are logged once anyway)."""
        series, out = self.scalars.get(tag), Series()
        if series is None:
            return out
        last: dict[int, int] = {}
        for i, epoch in enumerate(series.epochs):
            last[epoch] = i
        for epoch, i in sorted(last.items()):
            out.steps.append(series.steps[i])
            out.epochs.append(epoch)
            out.seconds.append(series.seconds[i])
            out.values.append(series.values[i])
        return out


# -- reading ----------------------------------------------------------------------------------


def is_run(folder: Path) -> bool:
    return any((folder / "tensorboard").glob("events.out.tfevents.*"))


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run folders (holding ``tensorboard/events.out.tfevents.*``) in or below ``paths``."""
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise UserError(
                f"{str(path)!r} is not a folder; pass a multirun folder (outputs/multirun/"
                "<date>/<time>) or training run folders (each holding tensorboard/)."
            )
        if is_run(path):
            found.append(path)
        else:
            found += sorted(
                (p.parent.parent for p in path.rglob("tensorboard/events.out.tfevents.*")),
                key=lambda p: (len(p.parts), [int(s) if s.isdigit() else s for s in p.parts]),
            )
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise UserError(
            f"no training runs found in {[str(p) for p in paths]}: a run folder holds "
            "tensorboard/events.out.tfevents.* (written by logger=tensorboard). Pass the "
            "multirun folder of a sweep or the run folders themselves."
        )
    return unique


def _run_settings(folder: Path) -> tuple[Any, ...]:
    """(discriminator name, routing iterations, lr, seed, fid setting) from ``.hydra/``."""
    config, choices = folder / ".hydra" / "config.yaml", folder / ".hydra" / "hydra.yaml"
    if not config.is_file():
        return "unknown", None, None, None, None
    cfg = OmegaConf.load(config)
    disc = cfg.get("discriminator") or {}
    name = None
    if choices.is_file():
        name = OmegaConf.select(OmegaConf.load(choices), "hydra.runtime.choices.discriminator")
    if not name:  # e.g. a config saved by hand: name it after the class
        target = str(disc.get("_target_", "unknown")).rsplit(".", 1)[-1]
        name = {"CNNDiscriminator": "cnn", "CapsuleDiscriminator": "capsule"}.get(target, target)
    routing = disc.get("routing_iterations")
    lr, seed = cfg.get("lr"), cfg.get("seed")
    data, samples = OmegaConf.select(cfg, "data.name"), OmegaConf.select(cfg, "metrics.num_samples")
    val = OmegaConf.select(cfg, "data.val_subset")
    # the floor is for n generated against n real images; other val sizes have no floor here
    same_size = samples is not None and ((val is None and samples == 10_000) or val == samples)
    return (
        str(name),
        int(routing) if routing is not None else None,
        float(lr) if lr is not None else None,
        int(seed) if seed is not None else None,
        (str(data), int(samples)) if data and same_size else None,
    )


def load_run(folder: str | Path, root: Path | None = None) -> Run:
    """Read one run folder's events and settings."""
    folder = Path(folder)
    acc = EventAccumulator(str(folder / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    start = acc.FirstEventTimestamp()
    tags = acc.Tags()["scalars"]
    if "epoch" not in tags:
        raise UserError(
            f"the events in {str(folder / 'tensorboard')!r} have no 'epoch' scalar, which "
            "Lightning writes with every logged metric; they were not written by a training "
            "run of this project (or the run logged nothing yet)."
        )
    epoch_at: dict[int, int] = {}
    for event in acc.Scalars("epoch"):
        epoch_at[event.step] = int(event.value)  # the last write at a step wins
    scalars: dict[str, Series] = {}
    for tag in tags:
        series = scalars[tag] = Series()
        for event in acc.Scalars(tag):
            if event.step in epoch_at:
                series.steps.append(event.step)
                series.epochs.append(epoch_at[event.step])
                series.seconds.append(event.wall_time - start)
                series.values.append(float(event.value))
    epoch_series = scalars["epoch"]
    ends: dict[int, float] = {}
    pairs = zip(epoch_series.steps, epoch_series.epochs, strict=True)
    first_epoch_steps = [step for step, epoch in pairs if epoch == 0]
    for epoch, seconds in zip(epoch_series.epochs, epoch_series.seconds, strict=True):
        ends[epoch] = max(seconds, ends.get(epoch, 0.0))
    name = str(folder.relative_to(root)) if root and folder.is_relative_to(root) else folder.name
    return Run(
        folder,
        name or folder.name,
        *_run_settings(folder),
        scalars=scalars,
        epoch_end_seconds=[ends[e] for e in sorted(ends)],
        batches_per_epoch=max(first_epoch_steps, default=0) + 1,
    )


# -- convergence --------------------------------------------------------------------------------


@dataclass
class Crossing:
    """When a per-epoch curve first reached a threshold (None: never)."""

    epochs: int | None  # epochs trained (1-based)
    seconds: float | None


def first_below(epochs: Sequence[int], seconds: Sequence[float], values: Sequence[float],
                threshold: float) -> Crossing:  # fmt: skip
    """The first epoch whose value is <= threshold; ``epochs`` are 0-based as logged."""
    for epoch, sec, value in zip(epochs, seconds, values, strict=True):
        if math.isfinite(value) and value <= threshold:
            return Crossing(epoch + 1, sec)
    return Crossing(None, None)


def fid_threshold(
    runs: Sequence[Run], threshold: float | None = None, floor_multiple: float | None = None
) -> tuple[float, str]:
    """The FID to reach and how it was chosen: given outright, else ``floor_multiple`` (default
    :data:`DEFAULT_FLOOR_MULTIPLE`) x the real-data floor of the runs' data set and sample size."""
    if threshold is not None:
        return threshold, "given with --fid-threshold"
    multiple = DEFAULT_FLOOR_MULTIPLE if floor_multiple is None else floor_multiple
    settings = {r.fid_setting for r in runs if r.per_epoch(FID).values}
    if not settings:
        return math.nan, "no run logged val/fid"
    if len(settings) > 1 or None in settings:
        raise UserError(
            f"the runs' FIDs were measured with different or unknown settings ({settings}; "
            "data set, metrics.num_samples): FID depends on the sample size, so they share no "
            "real-data floor. Report them separately, or pass --fid-threshold <FID>."
        )
    (setting,) = settings
    if setting not in REAL_DATA_FID_FLOOR:
        raise UserError(
            f"no real-data FID floor is known for data set {setting[0]!r} with "
            f"metrics.num_samples={setting[1]} (known: {sorted(REAL_DATA_FID_FLOOR)}). Pass "
            "--fid-threshold <FID>, or add the measured floor to REAL_DATA_FID_FLOOR in "
            "src/capsgan/report.py."
        )
    floor = REAL_DATA_FID_FLOOR[setting]
    return multiple * floor, (
        f"{multiple:g} x the real-data floor {floor:g} of {setting[0]} at {setting[1]} samples"
    )


@dataclass
class RunRow:
    run: Run
    best_fid: float | None
    best_fid_epoch: int | None
    final_fid: float | None
    crossing: Crossing


def summarize_run(run: Run, threshold: float) -> RunRow:
    fid = run.per_epoch(FID)
    if not fid.values:
        return RunRow(run, None, None, None, Crossing(None, None))
    best = min(range(len(fid.values)), key=fid.values.__getitem__)
    return RunRow(
        run,
        fid.values[best],
        fid.epochs[best] + 1,
        fid.values[-1],
        first_below(fid.epochs, fid.seconds, fid.values, threshold),
    )


def mean_std(values: Sequence[float]) -> tuple[float, float | None] | None:
    """Mean and sample standard deviation (None for a single value); None if empty."""
    if not values:
        return None
    std = statistics.stdev(values) if len(values) > 1 else None
    return statistics.fmean(values), std


def fmt(value: float | int | None, digits: int = 2) -> str:
    if value is None:
        return NA
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def fmt_mean_std(stats: tuple[float, float | None] | None, digits: int = 2) -> str:
    if stats is None:
        return NA
    mean, std = stats
    return fmt(mean, digits) if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


@dataclass
class GroupSummary:
    discriminator: str
    rows: list[RunRow]

    @property
    def reached(self) -> list[RunRow]:
        return [r for r in self.rows if r.crossing.epochs is not None]

    def stat(self, values: Iterable[float | None]) -> tuple[float, float | None] | None:
        return mean_std([v for v in values if v is not None])


def group_rows(rows: Sequence[RunRow]) -> list[GroupSummary]:
    groups: dict[str, list[RunRow]] = {}
    for row in rows:
        groups.setdefault(row.run.discriminator, []).append(row)
    return [GroupSummary(name, members) for name, members in sorted(groups.items())]


def ratio_lines(groups: Sequence[GroupSummary]) -> list[str]:
    """Capsule / CNN ratios of epochs and wall-clock to the threshold, or why there are none."""
    cnn = next((g for g in groups if g.discriminator == "cnn"), None)
    capsules = [g for g in groups if g.discriminator.startswith("capsule")]
    if cnn is None or not capsules:
        return ["No ratio: the runs need both a `cnn` and a `capsule*` discriminator."]
    lines = []
    for caps in capsules:
        label = f"{caps.discriminator} / cnn"
        short = [g for g in (caps, cnn) if len(g.reached) < len(g.rows)]
        if short:
            why = "; ".join(
                f"{len(g.rows) - len(g.reached)} of {len(g.rows)} {g.discriminator} runs "
                "never reached it"
                for g in short
            )
            lines.append(f"- {label}: not defined, {why}.")
            continue
        ep_caps = statistics.fmean(r.crossing.epochs for r in caps.rows)
        ep_cnn = statistics.fmean(r.crossing.epochs for r in cnn.rows)
        s_caps = statistics.fmean(r.crossing.seconds for r in caps.rows)
        s_cnn = statistics.fmean(r.crossing.seconds for r in cnn.rows)
        lines.append(
            f"- {label}, epochs to threshold: **{ep_caps / ep_cnn:.2f}** "
            f"({ep_caps:.2f} / {ep_cnn:.2f}; the claim is about 0.33)"
        )
        lines.append(
            f"- {label}, wall-clock to threshold: **{s_caps / s_cnn:.2f}** "
            f"({s_caps / 60:.1f} min / {s_cnn / 60:.1f} min)"
        )
    return lines


# -- plots ----------------------------------------------------------------------------------------


def _colours(groups: Sequence[str]) -> dict[str, str]:
    return {g: f"C{i}" for i, g in enumerate(sorted(groups))}


def plot_fid(runs: Sequence[Run], threshold: float, out: Path) -> Path | None:
    """``fid.png``: val/fid against epoch and against wall-clock, coloured by discriminator."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_fid = [r for r in runs if r.per_epoch(FID).values]
    if not with_fid:
        return None
    colours = _colours({r.discriminator for r in runs})
    fig, (ax_ep, ax_t) = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    labelled: set[str] = set()
    for run in with_fid:
        fid = run.per_epoch(FID)
        label = None if run.discriminator in labelled else run.discriminator
        labelled.add(run.discriminator)
        style = {"color": colours[run.discriminator], "marker": ".", "alpha": 0.85}
        ax_ep.plot([e + 1 for e in fid.epochs], fid.values, label=label, **style)
        ax_t.plot([s / 60 for s in fid.seconds], fid.values, **style)
    for ax in (ax_ep, ax_t):
        ax.axhline(threshold, color="grey", linestyle="--", linewidth=1)
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    ax_ep.set(xlabel="epoch", ylabel="val/fid (log scale)", title="FID against epochs")
    ax_t.set(xlabel="wall-clock (minutes)", title="FID against wall-clock")
    ax_ep.legend(title=f"discriminator (dashed: threshold {threshold:g})")
    fig.tight_layout()
    path = out / "fid.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_training_curves(runs: Sequence[Run], out: Path) -> Path:
    """``training_curves.png``: D loss, G loss, D accuracy side by side, a row per discriminator.

    Thin lines are the logged per-batch values, thick ones the epoch means (``epoch/*``);
    the x axis is in epochs (fractions within an epoch for the per-batch values).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({r.discriminator for r in runs})
    fig, axes = plt.subplots(
        len(groups), 3, figsize=(15, 3.6 * len(groups)), squeeze=False, sharex="row"
    )
    for row, group in zip(axes, groups, strict=True):
        members = [r for r in runs if r.discriminator == group]
        for i, run in enumerate(members):
            colour = f"C{i}"
            label = f"seed {run.seed}" if run.seed is not None else run.name
            for ax, (title, key) in zip(row, CURVES, strict=True):
                step = run.scalars.get(f"train/{key}")
                if step and step.values:
                    x = [(s + 1) / run.batches_per_epoch for s in step.steps]
                    ax.plot(x, step.values, color=colour, linewidth=0.6, alpha=0.35)
                mean = run.per_epoch(f"epoch/{key}")
                if mean.values:
                    ax.plot([e + 1 for e in mean.epochs], mean.values, color=colour,
                            linewidth=2, marker="o", markersize=3, label=label)  # fmt: skip
                ax.set_title(f"{group}: {title}")
                ax.set_xlabel("epoch")
                ax.grid(True, alpha=0.3)
        row[2].axhline(0.5, color="grey", linestyle="--", linewidth=1)
        row[2].set_ylim(-0.02, 1.02)
        row[0].legend(fontsize="small")
    fig.tight_layout()
    path = out / "training_curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# -- report.md ------------------------------------------------------------------------------------


def render(rows: Sequence[RunRow], threshold: float, threshold_note: str,
           plots: Sequence[Path]) -> str:  # fmt: skip
    has_fid = any(r.best_fid is not None for r in rows)
    lines = ["# Discriminator comparison report", ""]
    lines += [
        f"{len(rows)} runs. Epochs count from 1 (epoch 3 = after three passes over the training "
        "data); wall-clock is measured from each run's start, data loading and metric "
        "evaluation included; s/epoch is the mean epoch length after the first epoch.",
        "",
    ]
    if has_fid:
        lines += [f"FID threshold: **{threshold:g}** ({threshold_note}).", ""]
    else:
        lines += ["The runs logged no `val/fid`: losses and accuracy only.", ""]
    lines += ["## Runs", ""]
    head = ["run", "discriminator", "routing", "lr", "seed", "epochs", "s/epoch"]
    if has_fid:
        head += ["best val/fid (epoch)", "final val/fid", "epochs to thr.", "min to thr."]
    else:
        head += ["final D loss", "final G loss", "final D acc"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        run = r.run
        cells = [
            f"`{run.name}`", run.discriminator, fmt(run.routing_iterations),
            fmt(run.lr, 6) if run.lr is not None else NA, fmt(run.seed),
            str(run.epochs_run), fmt(run.seconds_per_epoch, 1),
        ]  # fmt: skip
        if has_fid:
            best = NA if r.best_fid is None else f"{r.best_fid:.2f} ({r.best_fid_epoch})"
            minutes = None if r.crossing.seconds is None else r.crossing.seconds / 60
            reached = fmt(r.crossing.epochs) if r.best_fid is not None else NA
            if r.best_fid is not None and r.crossing.epochs is None:
                reached = "never"
            cells += [best, fmt(r.final_fid), reached, fmt(minutes, 1) if minutes else reached]
        else:
            for _, key in CURVES:
                vals = run.per_epoch(f"epoch/{key}").values
                cells.append(fmt(vals[-1], 3) if vals else NA)
        lines.append("| " + " | ".join(cells) + " |")
    groups = group_rows(rows)
    lines += ["", "## Per discriminator (mean ± std over runs)", ""]
    head = ["discriminator", "runs", "s/epoch"]
    if has_fid:
        head += ["best val/fid", "final val/fid", "reached thr.", "epochs to thr.", "min to thr."]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in groups:
        cells = [g.discriminator, str(len(g.rows)),
                 fmt_mean_std(g.stat(r.run.seconds_per_epoch for r in g.rows), 1)]  # fmt: skip
        if has_fid:
            cells += [
                fmt_mean_std(g.stat(r.best_fid for r in g.rows)),
                fmt_mean_std(g.stat(r.final_fid for r in g.rows)),
                f"{len(g.reached)}/{len(g.rows)}",
                fmt_mean_std(g.stat(r.crossing.epochs for r in g.reached)),
                fmt_mean_std(g.stat(r.crossing.seconds / 60 for r in g.reached), 1),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    if has_fid:
        lines += ["", "Epochs and minutes to the threshold are averaged over the runs that "
                  "reached it.", "", "## Capsule / CNN", ""]  # fmt: skip
        lines += ratio_lines(groups)
    lines += ["", "## Plots", ""]
    lines += [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(lines) + "\n"


def write_report(
    paths: Sequence[str | Path],
    out_dir: str | Path | None = None,
    threshold: float | None = None,
    floor_multiple: float | None = None,
) -> Path:
    """Read the runs in ``paths``, write ``report.md`` and the plots; return report.md's path.

    ``out_dir`` defaults to the single folder given, or to the common parent of several.
    """
    if threshold is not None and floor_multiple is not None:
        raise UserError(
            "give either --fid-threshold (an absolute FID) or --floor-multiple (a multiple "
            "of the real-data floor), not both."
        )
    folders = find_runs(paths)
    given = [Path(p).resolve() for p in paths]
    out = Path(out_dir or os.path.commonpath(given))
    out.mkdir(parents=True, exist_ok=True)
    runs = [load_run(f, root=out.resolve()) for f in folders]
    thr, note = fid_threshold(runs, threshold, floor_multiple)
    rows = [summarize_run(r, thr) for r in runs]
    plots = [p for p in (plot_fid(runs, thr, out), plot_training_curves(runs, out)) if p]
    report = out / "report.md"
    report.write_text(render(rows, thr, note, plots))
    return report
