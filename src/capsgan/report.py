"""The comparison report: compare arms at equal budgets, write report.md.

``python src/report.py <sweep folders | run folders | a report folder> [key=value ...]``
writes ``report.md``, ``curves.csv`` / ``runs.csv`` (every run's curves, from which the
report can be re-rendered alone) and PNG plots; docs/results.md says how to read them.
The runs are read by :mod:`capsgan.runs` and measured, grouped into arms and compared by
:mod:`capsgan.statistics` (arms: the Hydra choices and swept keys that differ between the
runs; nothing here knows a model by name).
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure  # no pyplot: no global backend or figure state
from matplotlib.image import imread
from omegaconf import OmegaConf

from capsgan.config import unwritable_reason
from capsgan.errors import UserError
from capsgan.metrics import REPORT_METRICS as METRICS  # (column, tag, digits, lower is better)
from capsgan.runs import (
    COLLAPSE_FID_FACTOR,
    COLLAPSE_MODES,
    FAILED_STATUSES,
    RUNNING,
    Run,
    Series,
    find_runs,
    load_run,
    sample_grids,
)
from capsgan.statistics import (
    LAST_EVALS,
    STEP_SLACK,
    Arm,
    Cost,
    Estimate,
    Ratio,
    RunSummary,
    assign_arms,
    bootstrap,
    censored_ratio,
    evaluation_grid,
    group_arms,
    mean_cost,
    pick_baseline,
    quality_levels,
    rank_test,
    ratio_test,
    smallest_p,
    summarize_run,
    varying_keys,
    verdict,
)

FID = "val/fid"
LEVEL_FRACTIONS = (0.25, 0.5, 1.0)
CURVES = (("D loss", "d_loss"), ("G loss", "g_loss"), ("D accuracy", "d_acc"))
NA = "-"  # a table cell without a value
CURVES_CSV, RUNS_CSV = "curves.csv", "runs.csv"
# The settings a report needs from a run's config (also what runs.csv keeps of it)
CONFIG_KEYS = (
    "seed",
    "d_steps_per_g",
    "data.name",
    "metrics.num_samples",
    "metrics.classifier_path",
    "metrics.classifier_dir",
    "trainer.max_steps",
    "callbacks.stop_on_plateau",
)


def run_folders(paths: Sequence[Path]) -> list[Path]:
    """:func:`capsgan.runs.find_runs` of ``paths``, each once, or the error saying what to pass."""
    if bad := next((p for p in paths if not p.is_dir()), None):
        raise UserError(
            f"{str(bad)!r} is not a folder; pass a sweep folder (outputs/multirun/"
            "<date>/<time>), training run folders (each holding tensorboard/), or a "
            "report folder holding curves.csv and runs.csv."
        )
    unique = list(dict.fromkeys(p.resolve() for p in find_runs(paths)))
    if not unique:
        raise UserError(
            f"no training runs found in {[str(p) for p in paths]}: a run folder holds "
            "tensorboard/events.out.tfevents.* (written by logger=tensorboard), a report "
            "folder holds curves.csv and runs.csv. Pass the sweep folder or the run folders."
        )
    return unique


# -- curves.csv / runs.csv: a report folder that re-renders alone --------------------------------


def write_csvs(runs: Sequence[Run], out: Path) -> None:
    """``curves.csv``: one row per run and generator step, with the wall-clock seconds and
    every scalar logged at that step; ``runs.csv``: one row per run with what it is (arm,
    seed, status, Hydra choices, overrides and the settings the report reads)."""
    tags = sorted({t for r in runs for t in r.scalars})
    with (out / CURVES_CSV).open("w", newline="") as f:
        writer = csv.DictWriter(f, ["run", "step", "seconds", *tags], restval="")
        writer.writeheader()
        for run in runs:
            rows: dict[int, dict[str, Any]] = {}
            for tag, series in run.scalars.items():
                for step, sec, value in zip(*astuple(series), strict=True):
                    row = rows.setdefault(step, {"run": run.name, "step": step})
                    row[tag] = value  # the csv module writes a float as its repr
                    if tag == FID or "seconds" not in row:  # FID: its own time, for the costs
                        row["seconds"] = f"{sec:.3f}"
            writer.writerows(rows[step] for step in sorted(rows))
    with (out / RUNS_CSV).open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "arm", "seed", "status", "error", "choices", "overrides", "config"])
        for run in runs:
            jsons = (run.choices, run.overrides, {k: run.setting(k) for k in CONFIG_KEYS})
            row = [run.name, run.arm, fmt(run.seed), run.status, run.error]  # None: empty
            writer.writerow(row + [json.dumps(v, default=OmegaConf.to_container) for v in jsons])


def load_csvs(folder: Path) -> list[Run]:
    try:
        with (folder / RUNS_CSV).open(newline="") as f:
            meta = list(csv.DictReader(f))
        with (folder / CURVES_CSV).open(newline="") as f:
            rows = list(csv.DictReader(f))
        runs = {}
        for m in meta:
            cfg = OmegaConf.create()
            for key, value in json.loads(m["config"]).items():
                OmegaConf.update(cfg, key, value, force_add=True)
            runs[m["run"]] = Run(folder / m["run"], m["run"], json.loads(m["choices"]),
                                 json.loads(m["overrides"]), cfg, {}, m["status"] or None,
                                 m["error"] or None)  # fmt: skip
        for row in rows:
            scalars = runs[row.pop("run")].scalars
            step, seconds = int(row.pop("step")), float(row.pop("seconds"))
            for tag, value in ((t, v) for t, v in row.items() if v != ""):
                series = scalars.setdefault(tag, Series())
                series.steps.append(step)
                series.seconds.append(seconds)
                series.values.append(float(value))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(
            f"the report folder {str(folder)!r} has a damaged {RUNS_CSV} / {CURVES_CSV} "
            f"({type(err).__name__}: {err}). Write them again with `python src/report.py "
            "<the sweep or run folders> out=<this folder>`."
        ) from err
    return list(runs.values())


def measure_floor(runs: Sequence[Run]) -> str:
    """FID of ``metrics.num_samples`` real training images against the held-out images,
    with the classifier the runs used (the best score a perfect generator could get), or
    why it was not measured."""
    from capsgan.classifier import load_classifier, resolve_classifier_dir, weights_path
    from capsgan.data import ImageDataModule, default_data_dir
    from capsgan.metrics import real_data_floor

    first = next((r for r in runs if r.cfg is not None), None)
    if first is None:
        return "not measured: the runs have no .hydra/config.yaml"
    name, samples = first.setting("data.name"), first.setting("metrics.num_samples")
    root = default_data_dir()
    try:
        path = first.setting("metrics.classifier_path")
        if not path:
            folder = resolve_classifier_dir(root, first.setting("metrics.classifier_dir"), name)
            path = weights_path(folder, name)
        if not Path(path).is_file():
            return f"not measured: no {name} classifier at {path}"
        classifier = load_classifier(path)
        dm = ImageDataModule(name=name, root=root, download=False)
        dm.setup("fit")
        fid = real_data_floor(dm, classifier, int(samples))
    except Exception as err:  # the report is still useful without its floor
        return f"not measured ({type(err).__name__}: {err}); set DATA_DIR to the data"
    return (
        f"{fid:.2f}: {samples} real training images against the {len(dm.val_set)} held-out "
        f"ones, scored with the runs' classifier ({path})"
    )


def describe_end(run: Run) -> str:
    """A run's status and the first line of its error, for the lists of left-out runs."""
    if run.status is None or run.status in ("ok", "completed"):
        return "no val/fid logged"
    first = (run.error or "").strip().splitlines()[:1]
    return f"{run.status}: {first[0][:120]}" if first else run.status


def fmt(value: float | int | None, digits: int = 2) -> str:
    if value is None:
        return NA
    if isinstance(value, int) or not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}f}"


def fmt_estimate(est: Estimate | None, digits: int = 2, of: int | None = None) -> str:
    """``mean [low, high]``, prefixed by its bound (``>=``) and followed by ``(n/of)`` when
    fewer than ``of`` seeds have a value."""
    if est is None:
        return NA if not of else f"{NA} (0/{of})"
    bound = f"{est.bound} " if est.bound else ""
    interval = "" if est.low is None else f" [{est.low:.{digits}f}, {est.high:.{digits}f}]"
    seeds = f" ({est.n}/{of})" if of and est.n < of else ""
    return f"{bound}{est.mean:.{digits}f}{interval}{seeds}"


def fmt_ratio(ratio: Ratio) -> str:
    seeds = ", ".join(f"{s}: {kind}{r:.2f}" for s, (r, kind) in ratio.per_seed.items())
    parts = [
        fmt_estimate(ratio.estimate),
        seeds and f"seeds {seeds}",
        ratio.neither and f"neither reached it: seeds {ratio.neither}",
        ratio.unpaired and f"unpaired seeds {ratio.unpaired}",
    ]
    return "; ".join(p for p in parts if p)


def table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def section(heading: str, *blocks: str | list[str]) -> list[str]:
    lines = [heading, ""]
    for block in blocks:
        lines += [block, ""] if isinstance(block, str) else [*block, ""]
    return lines


def _save(fig: Figure, path: Path, dpi: int) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path


def _mean_curve(runs: Sequence[RunSummary], tag: str) -> tuple[list[int], list[float]]:
    by_step: dict[int, list[float]] = {}
    for s in runs:
        series = s.run.series(tag)
        for step, value in zip(series.steps, series.values, strict=True):
            if math.isfinite(value):
                by_step.setdefault(step, []).append(value)
    steps = sorted(by_step)
    return steps, [statistics.fmean(by_step[k]) for k in steps]


def plot_quality(arms: Sequence[Arm], levels: Sequence[float], out: Path) -> Path:
    fig = Figure(figsize=(13, 9))
    (ax_steps, ax_time), (ax_p, ax_r) = fig.subplots(2, 2)
    for i, arm in enumerate(arms):
        colour = f"C{i % 10}"
        for s in arm.runs:
            ax_steps.plot(s.fid.steps, s.fid.values, color=colour, alpha=0.35, linewidth=0.8)
            ax_time.plot([t / 60 for t in s.fid.seconds], s.fid.values, color=colour,
                         alpha=0.6, linewidth=0.9, marker=".")  # fmt: skip
        ax_steps.plot(*_mean_curve(arm.runs, FID), color=colour, linewidth=2.2,
                      label=f"{arm.name} (mean of {len(arm.runs)})")  # fmt: skip
        for ax, tag in ((ax_p, "val/precision"), (ax_r, "val/recall")):
            ax.plot(*_mean_curve(arm.runs, tag), color=colour, linewidth=2, label=arm.name)
    for ax in (ax_steps, ax_time):
        for level in levels:
            ax.axhline(level, color="grey", linestyle="--", linewidth=0.8)
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    ax_steps.set(xlabel="generator steps", ylabel="val/fid (log)", title="FID (thin: seeds)")
    ax_time.set(xlabel="wall-clock (minutes)", ylabel="val/fid (log)", title="FID against time")
    for ax, name in ((ax_p, "precision"), (ax_r, "recall")):
        ax.set(xlabel="generator steps", ylabel=name, title=f"{name} (mean over seeds)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(True, alpha=0.3)
    ax_steps.legend(title="dashed: quality levels", fontsize="small")
    ax_p.legend(fontsize="small")
    return _save(fig, out / "fid.png", dpi=100)


def plot_training_curves(arms: Sequence[Arm], out: Path) -> Path:
    """``training_curves.png``: D loss, G loss and D accuracy against generator steps, a row
    per arm, a colour per seed (thin: logged values; thick: epoch means)."""
    fig = Figure(figsize=(15, 3.4 * len(arms)))
    axes = fig.subplots(len(arms), 3, squeeze=False)
    for row, arm in zip(axes, arms, strict=True):
        for i, s in enumerate(arm.runs):
            label = f"seed {s.run.seed}" if s.run.seed is not None else s.run.name
            for ax, (title, key) in zip(row, CURVES, strict=True):
                step = s.run.series(f"train/{key}")
                ax.plot(step.steps, step.values, color=f"C{i}", linewidth=0.6, alpha=0.35)
                mean = s.run.series(f"epoch/{key}")
                ax.plot(mean.steps, mean.values, color=f"C{i}", linewidth=2, marker="o",
                        markersize=3, label=label)  # fmt: skip
                ax.set(title=f"{arm.name}: {title}", xlabel="generator steps")
                ax.grid(True, alpha=0.3)
        row[2].axhline(0.5, color="grey", linestyle="--", linewidth=1)
        row[2].set_ylim(-0.02, 1.02)
        row[0].legend(fontsize="small")
    return _save(fig, out / "training_curves.png", dpi=90)


def plot_sample_panel(arms: Sequence[Arm], grid: Sequence[int], out: Path) -> Path | None:
    """``samples.png``: every seed of every arm (a row each), fixed-noise samples at equal
    generator steps (up to 5 of the evaluation grid, the budget included): a collapsed
    seed shows as plainly as a good one. Needs the runs' ``samples/step_NNNNNN.png``
    (``callbacks.sample_grid.every_n_steps``); a report re-rendered from CSVs has none and
    keeps the panel made from the runs, if any."""
    rows = [
        (f"{a.name}\nseed {s.run.seed}", sample_grids(s.run.path)) for a in arms for s in a.runs
    ]
    if not any(pngs for _, pngs in rows) or not grid:
        return out / "samples.png" if (out / "samples.png").is_file() else None
    picks = sorted({grid[round(i * (len(grid) - 1) / 4)] for i in range(5)})
    fig = Figure(figsize=(2.4 * len(picks), 2.5 * len(rows)))
    axes = fig.subplots(len(rows), len(picks), squeeze=False)
    for ax_row, (label, pngs) in zip(axes, rows, strict=True):
        for ax, step in zip(ax_row, picks, strict=True):
            ax.set(xticks=[], yticks=[])
            # the grid nearest the evaluation, within 1 % of its step (a run's last grid
            # can be a few steps past its last checkpoint)
            slack = max(STEP_SLACK, step // 100)
            near = min(((abs(k - step), k) for k in pngs if abs(k - step) <= slack), default=None)
            if near:
                ax.imshow(imread(pngs[near[1]]), cmap="gray")
            else:
                ax.text(0.5, 0.5, "no grid\nat this step", ha="center", va="center")
            grid_note = f" (grid {near[1]})" if near and near[1] != step else ""
            ax.set_title(f"step {step}{grid_note}", fontsize="small")
        ax_row[0].set_ylabel(label, fontsize="small")
    return _save(fig, out / "samples.png", dpi=90)


# -- report.md, one function per section -------------------------------------------------------


@dataclass
class Context:
    arms: list[Arm]
    baseline: Arm
    levels: list[float]
    grid: list[int]

    @property
    def others(self) -> list[Arm]:
        return [a for a in self.arms if a is not self.baseline]

    @property
    def metrics(self) -> list[tuple[str, str, int, bool]]:
        """The METRICS some run logged (older runs have no precision / recall)."""
        logged = {t for a in self.arms for s in a.runs for t in s.run.scalars}
        return [m for m in METRICS if m[1] in logged]


def section_header(ctx: Context, title: str, notes: dict[str, str], left_out: Sequence[Run],
                   running: Sequence[Run]) -> list[str]:  # fmt: skip
    budgets = {a.name: a.budget for a in ctx.arms}
    if len(set(budgets.values())) == 1:
        budget = (
            f"Budget: **{next(iter(budgets.values()))} generator steps for every arm**, "
            f"evaluated at steps {', '.join(map(str, ctx.grid))}."
        )
    else:
        each = ", ".join(f"{k} {v}" for k, v in budgets.items())
        budget = (
            f"**Unequal budgets** (the longest run of each arm: {each}): a column past an arm's "
            "budget compares the arms that trained that far, and the at-the-budget values are "
            "at different steps."
        )
    n_base = len(ctx.baseline.runs)
    paragraphs = [
        f"{sum(len(a.runs) for a in ctx.arms)} runs in {len(ctx.arms)} arms; baseline arm: "
        f"**{ctx.baseline.name}** (every other arm is compared with it). Steps are generator "
        "steps; wall-clock counts from each run's start, quality evaluations included.",
        budget,
        "Methods (`capsgan.statistics`): `mean [low, high]` is the mean over seeds with its "
        "95 % percentile-bootstrap interval, which stays inside each metric's range; with "
        "few seeds it is close to the seeds' range and under-covers, so every arm-vs-baseline "
        "row carries an exact permutation test of the difference in mean ranks "
        f"(two-sided; with {n_base} baseline seeds the smallest possible p is "
        f"{smallest_p(n_base, n_base):.3f} against an arm of as many). Costs to a level are "
        "interpolated between evaluations; a seed that never reached a level counts at its "
        "budget, and the value is then a bound (`>=`).",
        f"Real-data FID floor: {notes['floor']}.",
        "Quality levels (FID): "
        f"{', '.join(f'**{v:.1f}**' for v in ctx.levels) or NA} -- {notes['levels']}.",
        "KID is the unbiased MMD² in the classifier's 128-d feature space, in raw units "
        "(not x 1000): it can be slightly negative; docs/metrics.md has its noise level.",
    ]
    if running:
        names = "; ".join(f"`{r.name}` ({r.error})" for r in running)
        paragraphs.append(f"Still training (reported with its evaluations so far): {names}.")
    if left_out:
        names = "; ".join(f"`{r.name}` ({describe_end(r)})" for r in left_out)
        paragraphs.append(f"Left out (did not finish, or logged no val/fid): {names}.")
    if any(r.status in ("interrupted", "killed") for r in left_out):
        paragraphs.append(
            "An interrupted sweep finishes when its command is run again with the "
            "same `hydra.sweep.dir=<sweep>`: finished jobs are skipped, the others "
            'resume from their last.ckpt (README, "Scaling out").'
        )
    return section(f"# {title}", *paragraphs)


def section_budget(ctx: Context) -> list[str]:
    head = ["arm", "runs", "G steps", "best FID"]
    head += [f"{name} at the budget" for name, _, _, _ in ctx.metrics]
    head += ["collapsed", "min / 1000 steps", "eval share"]
    rows = []
    for arm in ctx.arms:
        per_k = [s.final_seconds / 60 / s.final_step * 1000 for s in arm.runs if s.final_step]
        rows.append(
            [arm.name, str(len(arm.runs)), fmt(arm.budget),
             fmt_estimate(bootstrap([s.best_fid for s in arm.runs]), 1)]
            + [fmt_estimate(bootstrap([s.final.get(tag) for s in arm.runs]), d, len(arm.runs))
               for _, tag, d, _ in ctx.metrics]
            + [f"{sum(s.collapse is not None for s in arm.runs)}/{len(arm.runs)}",
               fmt_estimate(bootstrap(per_k), 2),
               fmt_estimate(bootstrap([s.eval_share for s in arm.runs]), 3)]
        )  # fmt: skip
    return section(
        "## At the budget",
        table(head, rows),
        "Values at each run's last evaluation (every seed counted; `(k/n)` when k of n runs "
        "logged the metric). *Best FID* is over the whole run. *Collapsed*: fewer than "
        f"{COLLAPSE_MODES} of 10 modes at the end, or a final FID above "
        f"{COLLAPSE_FID_FACTOR:g} x the run's best. *Eval share*: the part of the wall-clock "
        "spent measuring sample quality.",
    )


def section_tests(ctx: Context) -> list[str]:
    if not ctx.others:
        return []
    rows = []
    for arm, (name, tag, digits, lower) in itertools.product(ctx.others, ctx.metrics):
        a, b = ([s.final.get(tag) for s in x.runs] for x in (arm, ctx.baseline))
        ea, eb = bootstrap(a), bootstrap(b)
        better = NA
        if ea and eb and ea.mean != eb.mean:
            better = arm.name if (ea.mean < eb.mean) == lower else ctx.baseline.name
        rows.append([arm.name, name, fmt_estimate(ea, digits), fmt_estimate(eb, digits), better,
                     verdict(rank_test(a, b))])  # fmt: skip
    return section(
        f"## Against the baseline ({ctx.baseline.name}) at the budget",
        table(["arm", "metric", "arm", "baseline", "better mean", "rank test"], rows),
        "*Better mean* only says which mean is better; read it with the test: "
        "*not significant* means these seeds cannot tell the arms apart.",
    )


def section_levels(ctx: Context) -> list[str]:
    if not ctx.levels:
        return []
    head = ["arm"] + [f"FID <= {v:.1f}: {unit}" for unit in ("steps", "min") for v in ctx.levels]
    rows = []
    for arm in ctx.arms:
        cells = [arm.name]
        for what, scale, digits in (("steps", 1.0, 0), ("seconds", 60.0, 1)):
            for level in ctx.levels:
                costs = list(arm.costs(level, what).values())
                reached = sum(not c.censored for c in costs)
                scaled = [Cost(c.value / scale, c.censored) for c in costs]
                cells.append(f"{fmt_estimate(mean_cost(scaled), digits)} ({reached}/{len(costs)})")
        rows.append(cells)
    return section(
        "## Generator steps and minutes to each quality level",
        table(head, rows),
        "`(k/n)`: seeds that reached the level. The others count at their budget, so the "
        "mean is then a lower bound (`>=`).",
    )


def section_ratios(ctx: Context) -> list[str]:
    if not ctx.others or not ctx.levels:
        return []
    rows, base = [], ctx.baseline
    for arm, level in itertools.product(ctx.others, ctx.levels):
        steps, secs = ((arm.costs(level, w), base.costs(level, w)) for w in ("steps", "seconds"))
        rows.append([arm.name, f"{level:.1f}", fmt_ratio(censored_ratio(*steps)),
                     verdict(ratio_test(*steps)), fmt_ratio(censored_ratio(*secs))])  # fmt: skip
    return section(
        f"## Ratios to the baseline ({ctx.baseline.name})",
        "Per seed, the arm's cost to reach a level divided by the baseline's; the geometric "
        "mean over seeds with its bootstrap interval. A seed where only the arm never got "
        "there enters as `>=` (its budget over the baseline's cost), one where only the "
        "baseline never did as `<=`; then the mean is a bound too (`~`: bounds both ways). "
        "The founding claim is a steps ratio of about 0.33.",
        table(["arm", "level", "steps ratio", "steps: rank test", "wall-clock ratio"], rows),
    )


def section_grid(ctx: Context) -> list[str]:
    tables: list[str | list[str]] = []
    for name, tag, digits, _ in ctx.metrics:
        rows = []
        for step in ctx.grid:
            values = [[s.at_step(tag, step) for s in arm.runs] for arm in ctx.arms]
            rows.append([str(step)] + [fmt_estimate(bootstrap(v), digits, len(v)) for v in values])
        tables += [f"### {name}", table(["step", *(a.name for a in ctx.arms)], rows)]
    return section(
        "## Every evaluation",
        "Each metric at every step of the evaluation grid, every seed in the denominator "
        "(`(k/n)`: only k of the arm's n runs were evaluated there).",
        *tables,
    )


def section_stability(ctx: Context) -> list[str]:
    head = ["run", "arm", "seed", f"FID spread, last {LAST_EVALS}", "collapsed", "stopped early",
            "D acc peak (step)", "D acc settled (std)"]  # fmt: skip
    rows = [
        [f"`{s.run.name}`", arm.name, fmt(s.run.seed),
         NA if s.spread is None else f"{100 * s.spread:.0f} %",
         s.collapse or "no", s.stopped or "no",
         f"{s.d_acc['peak']:.2f} ({s.d_acc['peak_step']:.0f})" if s.d_acc else NA,
         f"{s.d_acc['settled']:.2f} ({s.d_acc['settled_std']:.2f})" if s.d_acc else NA]
        for arm in ctx.arms
        for s in arm.runs
    ]  # fmt: skip
    return section(
        "## Stability",
        table(head, rows),
        "*Stopped early*: the opt-in plateau rule (`experiment=convergence`) ended the run "
        'before its budget, "flattened" (its FID stayed within the tolerance of its best) '
        'or "degraded after step N" (it rose above the best it had at step N). The founding '
        "slides describe three phases of the discriminator's accuracy: a fast rise to near "
        "100 %, fluctuation while the generator learns, and a standstill near 50 % at "
        "convergence. *Peak* is the highest 5-point moving mean of `train/d_acc` and the "
        "generator step it came at; *settled* is the mean (std) of the last 10 % of the "
        "logged values.",
    )


def section_runs(ctx: Context) -> list[str]:
    head = ["run", "arm", "seed", "G steps", "best FID (step)", "final FID", "precision",
            "recall", "modes", "mode KL", "minutes"]  # fmt: skip
    rows = [
        [f"`{s.run.name}`", arm.name, fmt(s.run.seed), fmt(s.final_step),
         NA if s.best_fid is None else f"{s.best_fid:.1f} ({s.best_step})",
         fmt(s.final_fid, 1), fmt(s.final.get("val/precision"), 3),
         fmt(s.final.get("val/recall"), 3), fmt(s.final.get("val/modes"), 0),
         fmt(s.final.get("val/mode_kl"), 3),
         NA if s.final_seconds is None else f"{s.final_seconds / 60:.1f}"]
        for arm in ctx.arms
        for s in arm.runs
    ]  # fmt: skip
    return section("## Runs", table(head, rows))


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


def load_runs(paths: Sequence[Path]) -> list[Run]:
    csvs = [p for p in paths if (p / CURVES_CSV).is_file() and (p / RUNS_CSV).is_file()]
    csvs = [p for p in csvs if not find_runs(p)]  # not a sweep a report was written into
    runs = [run for path in csvs for run in load_csvs(path)]
    if folders := [p for p in paths if p not in csvs]:
        common = Path(os.path.commonpath(folders))  # runs are named by their path below it
        root = common if common.is_dir() else None
        runs += [load_run(f, root=root) for f in run_folders(folders)]
    return runs


def write_report(
    paths: Sequence[str | Path],
    out_dir: str | Path | None = None,
    baseline: str | None = None,
    levels: Sequence[float] | None = None,
    measure_floor_fid: bool = True,
) -> Path:
    """Read the runs in ``paths``, write ``report.md``, the CSVs and the plots; return
    report.md's path. ``out_dir`` defaults to the single folder given, or to the common
    parent of several."""
    given = [Path(p).resolve() for p in paths]
    out = Path(out_dir or os.path.commonpath(given))
    if reason := unwritable_reason(out):
        raise UserError(
            f"the report cannot be written into {str(out)!r}: {reason}. Pass out=<a folder "
            "you can write to>."
        )
    loaded = load_runs(given) or run_folders(given)  # no runs in the report folders: say so
    left_out = [r for r in loaded if r.status in FAILED_STATUSES or not r.series(FID).values]
    runs = [r for r in loaded if r not in left_out]
    if not runs:
        listing = "; ".join(f"`{r.name}` ({describe_end(r)})" for r in loaded)
        raise UserError(
            f"none of the {len(loaded)} runs found can be reported: each failed, was "
            f"interrupted or logged no val/fid ({listing}). See each run's train.log "
            "(and the sweep's summary.md); run the sweep's command again with the same "
            "hydra.sweep.dir to finish it."
        )
    check_comparable(runs)
    assign_arms(runs)
    arms = group_arms([summarize_run(r, FID, [m[1] for m in METRICS]) for r in runs])
    base = pick_baseline(arms, baseline)
    if levels:
        levels, level_note = sorted(levels, reverse=True), "given with levels="
    else:
        levels = quality_levels(base, LEVEL_FRACTIONS)
        within = ", ".join(f"{f:g}" for f in LEVEL_FRACTIONS)
        level_note = (
            f"the {base.name} baseline's mean best FID within {within} of its generator steps"
        )
    ctx = Context(arms, base, list(levels), evaluation_grid(arms))
    floor_note = measure_floor(runs) if measure_floor_fid else "not measured (floor=false)"
    out.mkdir(parents=True, exist_ok=True)
    write_csvs(runs, out)
    plots = [plot_quality(arms, levels, out), plot_training_curves(arms, out),
             plot_sample_panel(arms, ctx.grid, out)]  # fmt: skip
    notes = {"floor": floor_note, "levels": level_note}
    groups, others = varying_keys(runs)
    title = f"Comparison report: {', '.join(groups + others)}" if groups + others else "Report"
    lines = section_header(ctx, title, notes, left_out, [r for r in runs if r.status == RUNNING])
    for part in (section_budget, section_tests, section_levels, section_ratios,
                 section_grid, section_stability, section_runs):  # fmt: skip
        lines += part(ctx)
    lines += section(
        "## Plots",
        [f"![{p.stem}]({p.name})" for p in plots if p],
        f"Every run's curves: [{CURVES_CSV}]({CURVES_CSV}), what each run is: "
        f"[{RUNS_CSV}]({RUNS_CSV}); `python src/report.py <this folder>` re-renders this "
        "report from them.",
    )
    (out / "report.md").write_text("\n".join(lines))
    return out / "report.md"
