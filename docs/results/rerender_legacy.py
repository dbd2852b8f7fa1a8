"""Re-render the legacy result reports with the methods of ``capsgan.statistics`` (issue 20).

The folders under docs/results/ were rendered by an older ``report.py``: 95 % t-intervals over
seeds (which leave a metric's range: KID [-41, 279], modes [4.5, 12.1], FID steps
[-47, 1295]) and steps ratios that dropped the seeds that never reached a level. Their per-run
curves were never committed, so they cannot be re-rendered by ``report.py``. This script
recomputes from what *is* committed in each report:

* every per-arm mean and interval whose per-run values are in the report's "Runs" table
  (best / final FID, precision, recall, modes, generator steps, minutes per 1000 steps,
  s/epoch, epochs and minutes to a threshold): ``capsgan.statistics.bootstrap``;
* the exact rank test (``capsgan.statistics.rank_test``) of each arm against the baseline;
* the steps ratios to the baseline with censored seeds counted at their budget
  (``capsgan.statistics.censored_ratio``), where the per-seed costs can be recovered from
  the committed numbers (the per-seed ratios, degenerate intervals, single-run means, the
  runs' generator steps); the derivation is in :func:`_baseline_costs`.

What cannot be recomputed (per-seed KID, eval share, steps to a level, FID at intermediate
steps, the wall-clock ratios of censored seeds) keeps its mean only, marked.

The input is always the legacy report as committed at ``LEGACY`` (``git show``), so running
this twice writes the same files. Run from the repository root::

    PYTHONPATH=src python docs/results/rerender_legacy.py
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

from scipy.stats import t as student_t

from capsgan.statistics import (
    Cost,
    Estimate,
    bootstrap,
    censored_ratio,
    rank_test,
    smallest_p,
    verdict,
)

LEGACY = "fad09e88852dd8f98e9658b4f8c528a68376cb27"  # the last commit with the old reports
ROOT = Path(__file__).resolve().parents[2]
RESULTS = "docs/results"
MEAN_ONLY = "(mean only)"
HEADER = (
    "*Re-rendered on 2026-12-04 with the methods of `capsgan.statistics` from the per-run "
    "values committed here (script: [docs/results/rerender_legacy.py]({up}rerender_legacy.py)); "
    "what could not be recomputed is marked.* Intervals are 95 % percentile-bootstrap "
    "intervals of the mean over seeds (`capsgan.statistics.bootstrap`: always within the "
    "seeds' range, so within the metric's); *p* is the exact two-sided rank test "
    "(`capsgan.statistics.rank_test`) of an arm against the baseline. {small} "
    f"*{MEAN_ONLY}*: per-seed values not committed, the old t-interval removed."
)

# the new-style (arm) reports and the old-style (per discriminator) ones
ARM_REPORTS = {
    "2026-11-25_mnist/report.md": "cnn",
    "2026-12-03_fashion_mnist/report.md": "cnn",
    "capsule_generator/vs_cnn/report.md": "dcgan",
    "capsule_generator/vs_capsule_small/report.md": "dcgan",
}
DISCRIMINATOR_REPORTS = [
    "bf16_cpu_2026-11-24/report.md",
    "compare_2026-11-24/report.md",
    "compare_2026-11-24/report_posthoc_fid200.md",
    "compare_2026-11-24/report_posthoc_fid250.md",
    "pilot/report.md",
]

NUM = r"-?\d+(?:\.\d+)?"
INTERVAL = re.compile(rf"({NUM}) \[({NUM}), ({NUM})\]")


# -- reading the legacy markdown -----------------------------------------------------------------


def legacy(path: str) -> str:
    return subprocess.run(
        ["git", "show", f"{LEGACY}:{RESULTS}/{path}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def sections(text: str) -> list[tuple[str, list[str]]]:
    """The report split at its ``## `` headings: (heading, lines), the preamble first."""
    out: list[tuple[str, list[str]]] = [("", [])]
    for line in text.splitlines():
        if line.startswith("## "):
            out.append((line[3:].strip(), []))
        else:
            out[-1][1].append(line)
    return out


def parse_table(lines: list[str]) -> tuple[list[str], list[list[str]]]:
    rows = [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in lines
        if line.startswith("|")
    ]
    return rows[0], [r for r in rows[2:]]


def render_table(head: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def replace_table(lines: list[str], new: list[str]) -> list[str]:
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    last = first
    while last < len(lines) and lines[last].startswith("|"):
        last += 1
    return lines[:first] + new + lines[last:]


def number(cell: str) -> float | None:
    m = re.match(rf"\s*({NUM})", cell)
    return float(m.group(1)) if m else None


def digits(cell: str) -> int:
    m = re.match(r"\s*-?\d+(?:\.(\d+))?", cell)
    return len(m.group(1) or "") if m else 1


def fmt(est: Estimate | None, nd: int) -> str:
    if est is None:
        return "-"
    text = f"{est.bound} " if est.bound else ""
    text += f"{est.mean:.{nd}f}"
    if est.low is not None:
        text += f" [{est.low:.{nd}f}, {est.high:.{nd}f}]"
    return text


def mean_only(cell: str) -> str:
    """A legacy cell with its t-interval removed: ``445.6 [370.0, 521.3] (2/3)`` ->
    ``445.6 (mean only) (2/3)``; a cell without one is kept."""
    if not INTERVAL.search(cell):
        return cell
    return INTERVAL.sub(lambda m: f"{m.group(1)} {MEAN_ONLY}", cell)


def p_cell(a: list[float], b: list[float]) -> str:
    return verdict(rank_test(a, b)).replace("p = ", "")


# -- arm reports ---------------------------------------------------------------------------------


class ArmReport:
    def __init__(self, path: str, baseline: str):
        self.path, self.baseline = path, baseline
        self.text = legacy(path)
        self.secs = sections(self.text)
        head, rows = parse_table(self.section("Runs"))
        self.runs = [dict(zip(head, r, strict=True)) for r in rows]
        self.arms = sorted({r["arm"] for r in self.runs})
        self.notes: list[str] = []
        self.extra_fid: dict[tuple[str, int], list[float]] = {}

    def section(self, name: str, legacy: bool = False) -> list[str]:
        secs = sections(self.text) if legacy else self.secs
        return next(lines for head, lines in secs if head == name)

    def set_section(self, name: str, lines: list[str]) -> None:
        self.secs = [(h, lines if h == name else old) for h, old in self.secs]

    def values(self, arm: str, column: str) -> list[float]:
        out = []
        for r in self.runs:
            if r["arm"] == arm:
                if column == "min / 1000 steps":
                    out.append(float(r["minutes"]) / float(r["G steps"]) * 1000)
                else:
                    out.append(number(r[column]))
        return out

    def seeds(self, arm: str) -> dict[int, dict]:
        return {int(r["seed"]): r for r in self.runs if r["arm"] == arm}

    # the per-arm table: each column from the runs where they have it
    RUN_COLUMN: ClassVar[dict[str, str]] = {
        "best FID": "best FID (step)",
        "final FID": "final FID",
        "final precision": "precision",
        "final recall": "recall",
        "final modes": "modes",
        "G steps": "G steps",
        "min / 1000 steps": "min / 1000 steps",
    }

    def per_arm(self) -> None:
        lines = self.section("Per arm")
        head, rows = parse_table(lines)
        new_rows = []
        for row in rows:
            arm = row[0]
            cells = [row[0], row[1]]
            for col, cell in zip(head[2:], row[2:], strict=True):
                if col in self.RUN_COLUMN:
                    nd = 0 if col == "G steps" else digits(cell)
                    cells.append(fmt(bootstrap(self.values(arm, self.RUN_COLUMN[col])), nd))
                else:
                    cells.append(mean_only(cell))
            new_rows.append(cells)
        lines = replace_table(lines, render_table(head, new_rows))
        note = (
            "*min / 1000 steps* is recomputed from each run's minutes and generator steps in "
            "the Runs table (rounded there, so a mean may differ from the old one in its last "
            "digit); final KID and the eval share were not committed per run: "
            f"*{MEAN_ONLY}*."
        )
        lines = self._insert_after_table(lines, ["", note])
        lines = self._insert_after_table(lines, ["", *self.tests()], skip=1)
        self.set_section("Per arm", lines)

    @staticmethod
    def _insert_after_table(lines: list[str], extra: list[str], skip: int = 0) -> list[str]:
        i = next(i for i, line in enumerate(lines) if line.startswith("|"))
        while i < len(lines) and lines[i].startswith("|"):
            i += 1
        # after the paragraph that follows the table, ``skip`` paragraphs further
        for _ in range(skip + 1):
            while i < len(lines) and lines[i].strip() == "":
                i += 1
            while i < len(lines) and lines[i].strip() != "":
                i += 1
        return lines[:i] + extra + lines[i:]

    def tests(self) -> list[str]:
        others = [a for a in self.arms if a != self.baseline]
        metrics = ["best FID", "final FID", "final precision", "final recall", "G steps"]
        rows = []
        for arm in others:
            a_n, b_n = len(self.seeds(arm)), len(self.seeds(self.baseline))
            row = [arm, f"{a_n} vs {b_n}", f"{smallest_p(a_n, b_n):.3f}"]
            for m in metrics:
                col = self.RUN_COLUMN[m]
                row.append(p_cell(self.values(arm, col), self.values(self.baseline, col)))
            rows.append(row)
        n_b = len(self.seeds(self.baseline))
        return [
            f"**Rank tests against the baseline ({self.baseline})**, per metric: the exact "
            "two-sided p-value of the difference in mean ranks over the runs above "
            f"(`capsgan.statistics.rank_test`). With {n_b} seeds a side no p-value can fall "
            "below the *smallest p* column, so nothing here can be significant at 0.05 "
            "when that column is 0.05 or more.",
            "",
            *render_table(["arm", "seeds", "smallest p", *metrics], rows),
        ]

    def levels_table(self) -> None:
        lines = self.section("Generator steps and minutes to each quality level")
        head, rows = parse_table(lines)
        rows = [[mean_only(c) for c in row] for row in rows]
        lines = replace_table(lines, render_table(head, rows))
        lines = [
            line.replace(
                "`(k/n)`: runs that reached the level; the interval is over those.",
                "`(k/n)`: runs that reached the level; the mean is over those only (the "
                "per-seed steps and minutes were not committed, so the seeds that never "
                f"reached it cannot be added here as bounds: *{MEAN_ONLY}*); the paired "
                "ratios below count them.",
            )
            for line in lines
        ]
        self.set_section("Generator steps and minutes to each quality level", lines)

    def equal_steps(self) -> None:
        """FID at equal steps: a column is recomputable where every run's value at that step
        is committed (the final FID of runs ending there, their best FID at that step)."""
        lines = self.section("FID at equal generator steps")
        head, rows = parse_table(lines)
        new_rows = []
        for row in rows:
            arm = row[0]
            cells = [arm]
            for col, cell in zip(head[1:], row[1:], strict=True):
                step = int(col.split()[-1])
                values = self.fid_at(arm, step)
                cells.append(fmt(bootstrap(values), 1) if values else mean_only(cell))
            new_rows.append(cells)
        lines = replace_table(lines, render_table(head, new_rows))
        lines += [
            f"*{MEAN_ONLY}*: the runs' FIDs at that step were not committed (only their best "
            "and final FIDs are); a column is recomputed where every run of the arm that "
            "reached the step ended there, or where the values are committed elsewhere in "
            "this folder.",
            "",
        ]
        self.set_section("FID at equal generator steps", lines)

    def fid_at(self, arm: str, step: int) -> list[float] | None:
        if (arm, step) in self.extra_fid:
            return self.extra_fid[(arm, step)]
        runs = self.seeds(arm).values()
        reached = [r for r in runs if int(r["G steps"]) >= step]
        if reached and all(int(r["G steps"]) == step for r in reached) and len(reached) > 1:
            return [float(r["final FID"]) for r in reached]
        return None

    # -- paired ratios -------------------------------------------------------------------------

    def level_rows(self) -> tuple[list[str], dict[str, dict[str, str]]]:
        head, rows = parse_table(
            self.section("Generator steps and minutes to each quality level", legacy=True)
        )
        levels = [h.split(":")[0].replace("FID <= ", "") for h in head[1:] if "steps" in h]
        table = {row[0]: dict(zip(head[1:], row[1:], strict=True)) for row in rows}
        return levels, table

    def grid(self) -> list[int]:
        steps: set[int] = set()
        for m in re.finditer(r"step (\d+)|\((\d+)\)|\| (\d{3,5}) \|", self.text):
            steps.update(int(g) for g in m.groups() if g)
        return sorted(steps)

    def snap(self, value: float) -> float:
        grid = self.grid()
        best = min(grid, key=lambda g: abs(g - value))
        return float(best) if abs(best - value) <= 0.02 * value else value

    def ratio_rows(self) -> list[dict]:
        _, rows = parse_table(
            self.section("Paired ratios to the baseline (" + self.baseline + ")", legacy=True)
        )
        out = []
        for arm, level, steps, wall in rows:
            out.append({"arm": arm, "level": level, "steps": steps, "wall": wall})
        return out

    @staticmethod
    def parse_ratio(cell: str) -> tuple[dict[int, float], list[int], list[int]]:
        per_seed = {}
        m = re.search(r"seeds ((?:\d+: [\d.]+(?:, )?)+)", cell)
        if m:
            for part in m.group(1).split(", "):
                s, r = part.split(": ")
                per_seed[int(s)] = float(r)
        arm_never = re.search(r"arm never reached it: seeds \[([\d, ]+)\]", cell)
        base_never = re.search(r"baseline never reached it: seeds \[([\d, ]+)\]", cell)
        ints = lambda g: [int(x) for x in g.group(1).split(",")] if g else []  # noqa: E731
        return per_seed, ints(arm_never), ints(base_never)

    def _arm_costs(self, arm: str, level: str, table: dict) -> dict[int, float]:
        """Per-seed steps of ``arm`` to ``level`` where the legacy report pins them down: a
        zero-width interval (every seed that reached it at that value) or a single run."""
        cell = table[arm][f"FID <= {level}: steps"]
        m = re.match(rf"({NUM})(?: \[({NUM}), ({NUM})\])? \((\d+)/(\d+)\)", cell)
        if not m:
            return {}
        mean, low, high, k = float(m.group(1)), m.group(2), m.group(3), int(m.group(4))
        reached = self.reached_seeds(arm, level)
        if reached is None or len(reached) != k:
            return {}
        if k == 1 or (low is not None and float(low) == float(high) == mean):
            return {s: mean for s in reached}
        if k == 2 and low is not None:
            return self._two_values(arm, reached, mean, float(high) - mean)
        return {}

    def _two_values(
        self, arm: str, seeds: list[int], mean: float, half_width: float
    ) -> dict[int, float]:
        """Two values behind an old t-interval over two seeds: ``mean +- d`` with
        ``half_width = t(0.975, 1) * d`` (sd = |a - b| / sqrt 2, interval t * sd / sqrt 2);
        each is assigned to the seed whose run could have reached the level by then (its
        cost is at most the step of its best FID), kept only when one assignment fits."""
        d = half_width / student_t.ppf(0.975, 1)
        values = [self.snap(mean - d), self.snap(mean + d)]
        if abs(sum(values) / 2 - mean) > 1:
            return {}
        best_step = {
            s: int(re.search(r"\((\d+)\)", self.seeds(arm)[s]["best FID (step)"]).group(1))
            for s in seeds
        }
        fits = [
            dict(zip(seeds, order, strict=True))
            for order in (values, values[::-1])
            if all(v <= best_step[s] for s, v in zip(seeds, order, strict=True))
        ]
        return fits[0] if len(fits) == 1 else {}

    def reached_seeds(self, arm: str, level: str) -> list[int]:
        """The seeds of ``arm`` that reached ``level``: those whose best FID (Runs table) is
        at or below it (the legacy ratio rows' "never reached it" lists agree)."""
        return sorted(
            s for s, r in self.seeds(arm).items() if number(r["best FID (step)"]) <= float(level)
        )

    def _baseline_costs(self, level: str, table: dict) -> dict[int, float]:
        """The baseline's per-seed steps to ``level``, from (1) its own cell when that pins
        them down, (2) an arm with known per-seed steps divided by its committed per-seed
        ratio (snapped to the evaluation grid: the ratios are rounded to 0.01), (3) the one
        remaining seed from the mean over all ``k`` seeds that reached it."""
        costs = self._arm_costs(self.baseline, level, table)
        costs.update(self._curve_costs(self.baseline, level))
        for row in self.ratio_rows():
            if row["level"] != level:
                continue
            per_seed, _, _ = self.parse_ratio(row["steps"])
            arm_costs = self._arm_costs(row["arm"], level, table)
            for seed, ratio in per_seed.items():
                if seed in arm_costs and seed not in costs and ratio > 0:
                    costs[seed] = self.snap(arm_costs[seed] / ratio)
        reached = self.reached_seeds(self.baseline, level) or []
        cell = table[self.baseline][f"FID <= {level}: steps"]
        m = re.match(rf"({NUM}).*\((\d+)/(\d+)\)", cell)
        missing = [s for s in reached if s not in costs]
        if m and len(missing) == 1 and int(m.group(2)) == len(reached):
            rest = float(m.group(1)) * len(reached) - sum(costs[s] for s in reached if s in costs)
            costs[missing[0]] = self.snap(rest)
        return costs

    def _curve_costs(self, arm: str, level: str) -> dict[int, float]:
        """Steps to ``level`` read off the per-seed FIDs committed elsewhere in the folder
        (``extra_fid``, seeds in order) and each run's final FID at its last step; the legacy
        report timed a level at the first evaluation at or below it (no interpolation)."""
        points = sorted((step, v) for (a, step), v in self.extra_fid.items() if a == arm)
        if not points:
            return {}
        out = {}
        for i, (seed, run) in enumerate(sorted(self.seeds(arm).items())):
            curve = [(step, values[i]) for step, values in points]
            curve.append((int(run["G steps"]), float(run["final FID"])))
            hit = next((step for step, v in curve if v <= float(level)), None)
            if hit is not None:
                out[seed] = float(hit)
        return out

    def ratios(self) -> None:
        name = "Paired ratios to the baseline (" + self.baseline + ")"
        lines = self.section(name)
        head, rows = parse_table(lines)
        _, table = self.level_rows()
        new_rows = []
        self.ratio_summary = {}
        for arm, level, steps, wall in rows:
            per_seed, _, _ = self.parse_ratio(steps)
            arm_never = sorted(set(self.seeds(arm)) - set(self.reached_seeds(arm, level)))
            base_never = sorted(
                set(self.seeds(self.baseline)) - set(self.reached_seeds(self.baseline, level))
            )
            base = self._baseline_costs(level, table)
            arm_known = self._arm_costs(arm, level, table)
            a_runs, b_runs = self.seeds(arm), self.seeds(self.baseline)
            arm_c: dict[int, Cost] = {}
            base_c: dict[int, Cost] = {}
            missing = []
            for seed in sorted(set(a_runs) & set(b_runs)):
                if seed in per_seed:  # both reached it: the committed ratio
                    arm_c[seed], base_c[seed] = Cost(per_seed[seed]), Cost(1.0)
                    continue
                a_cens, b_cens = seed in arm_never, seed in base_never
                a_budget = float(a_runs[seed]["G steps"])
                b_budget = float(b_runs[seed]["G steps"])
                if a_cens and b_cens:
                    arm_c[seed], base_c[seed] = Cost(a_budget, True), Cost(b_budget, True)
                elif a_cens and seed in base:
                    arm_c[seed], base_c[seed] = Cost(a_budget, True), Cost(base[seed])
                elif b_cens and seed in arm_known:
                    arm_c[seed], base_c[seed] = Cost(arm_known[seed]), Cost(b_budget, True)
                else:
                    missing.append(seed)
            if missing:
                cell = (
                    f"not recomputable: the per-seed steps of seeds {missing} are not "
                    f"committed, only their mean (old, censored seeds dropped: "
                    f"{mean_only(steps)})"
                )
            else:
                r = censored_ratio(arm_c, base_c)
                cell = self.fmt_ratio(r)
                self.ratio_summary[(arm, level)] = r
            new_rows.append([arm, level, cell, self.wall(wall)])
        lines = replace_table(lines, render_table(head, new_rows))
        lines = [
            line.replace(
                "then the geometric mean over seeds with its 95 % interval.",
                "then the geometric mean over seeds with its 95 % bootstrap interval "
                "(`capsgan.statistics.censored_ratio`). A seed where the arm never reached "
                "the level counts at its budget (its generator steps in the Runs table) over "
                "the baseline's cost, a lower bound (`>=`); where the baseline never did, "
                "an upper bound (`<=`); `~` when both occur. The baseline's per-seed steps "
                "are recovered from the committed per-seed ratios, zero-width intervals, "
                "means and (two seeds) the old t-interval's width "
                "(docs/results/rerender_legacy.py, `_baseline_costs`, `_two_values`). Wall-clock "
                "ratios are recomputed only where every seed's ratio is committed: the "
                "minutes to a level per seed were not.",
            )
            for line in lines
        ]
        self.set_section(name, lines)

    @staticmethod
    def fmt_ratio(r) -> str:
        parts = [fmt(r.estimate, 2)]
        if r.per_seed:
            parts.append(
                "seeds " + ", ".join(f"{s}: {k}{v:.2f}" for s, (v, k) in r.per_seed.items())
            )
        if r.neither:
            parts.append(f"neither reached it: seeds {r.neither}")
        return "; ".join(parts)

    def wall(self, cell: str) -> str:
        per_seed, arm_never, base_never = self.parse_ratio(cell)
        if not per_seed and not arm_never and not base_never:
            return cell
        if arm_never or base_never:
            if not per_seed:
                return cell
            return (
                "not recomputable (the minutes to the level of the seeds that never reached "
                f"it are not committed); old, those seeds dropped: {mean_only(cell)}"
            )
        r = censored_ratio(
            {s: Cost(v) for s, v in per_seed.items()}, {s: Cost(1.0) for s in per_seed}
        )
        return self.fmt_ratio(r)

    def stability_and_runs(self) -> None:
        pass  # measurements: kept as they are

    def render(self) -> str:
        self.per_arm()
        self.levels_table()
        self.ratios()
        self.equal_steps()
        pre = self.secs[0][1]
        n = max(len(self.seeds(a)) for a in self.arms)
        small = (
            f"With {n} seeds an arm, the smallest two-sided p possible is "
            f"{smallest_p(n, n):.3f}, so no difference here can be significant at 0.05."
            if smallest_p(n, n) >= 0.05
            else ""
        )
        up = "../" * (self.path.count("/") - 0)
        header = HEADER.format(up=up, small=small).replace("  ", " ")
        new_pre = []
        for line in pre:
            line = line.replace(
                " Intervals are 95 % t-intervals over seeds (`mean [low, high]`); a value "
                "without one comes from a single run.",
                " A value without an interval comes from a single run.",
            )
            new_pre.append(line)
        title = new_pre[0]
        out = [title, "", header, *new_pre[1:]]
        for head, lines in self.secs[1:]:
            out.append(f"## {head}")
            out.extend(self.legend(line) for line in lines)
        return "\n".join(out).rstrip("\n") + "\n"

    @staticmethod
    def legend(line: str) -> str:
        """The old plateau rule's label says what it did: it also stopped runs that had got
        worse than their best (compare each run's best FID with its final one)."""
        return line.replace(
            "*Flattened*: the FID curve met the plateau rule (`capsgan.convergence`).",
            "*Flattened*: the run was stopped by the plateau rule of the time "
            "(`capsgan.convergence`), which also stopped runs that had got worse than their "
            "best (compare best and final FID in the Runs table): not a flat curve.",
        ).replace(
            "*Flattened at*: `-` = the curve was still improving when the run ended.",
            "*Flattened at*: the step at which the plateau rule of the time stopped the run "
            "(a run whose final FID is above its best had got worse by then); `-` = the run "
            "ended at its budget (steps or time) with its FID still at its best.",
        )


# -- old-style reports (per discriminator, mean ± std) ---------------------------------------


def render_discriminator_report(path: str) -> str:
    text = legacy(path)
    secs = sections(text)
    runs_lines = next(lines for head, lines in secs if head == "Runs")
    head, rows = parse_table(runs_lines)
    runs = [dict(zip(head, r, strict=True)) for r in rows]
    discs = sorted({r["discriminator"] for r in runs})

    def vals(d: str, col: str) -> list[float | None]:
        return [
            number(r[col]) if number(r[col]) is not None else None
            for r in runs
            if r["discriminator"] == d
        ]

    cols = {
        "s/epoch": ("s/epoch", 1),
        "best val/fid": ("best val/fid (epoch)", 2),
        "final val/fid": ("final val/fid", 2),
        "epochs to thr.": ("epochs to thr.", 2),
        "min to thr.": ("min to thr.", 1),
    }
    new_secs = []
    for name, lines in secs:
        if name.startswith("Per discriminator"):
            h, old_rows = parse_table(lines)
            new_rows = []
            for row in old_rows:
                d = row[0]
                cells = []
                for col, cell in zip(h, row, strict=True):
                    if col in cols:
                        src, nd = cols[col]
                        est = bootstrap(vals(d, src))
                        cells.append(fmt(est, nd) if est else cell)
                    else:
                        cells.append(cell)
                new_rows.append(cells)
            lines = replace_table(lines, render_table(h, new_rows))
            lines = [
                line.replace(
                    "Epochs and minutes to the threshold are averaged over the runs that "
                    "reached it.",
                    "Epochs and minutes to the threshold are averaged over the runs that reached "
                    "it (here every run reached it or none did).",
                )
                for line in lines
            ]
            if "cnn" in discs and len(discs) > 1:
                lines = _insert_tests(lines, runs, discs, vals)
            name = "Per discriminator (mean [95 % bootstrap interval] over runs)"
        if name == "Capsule / CNN":
            lines = _ratio_lines(lines, runs)
        new_secs.append((name, lines))
    n = max(sum(r["discriminator"] == d for r in runs) for d in discs)
    small = (
        f"With {n} seeds a discriminator, the smallest two-sided p possible is "
        f"{smallest_p(n, n):.3f}, so no difference here can be significant at 0.05."
        if len(discs) > 1
        else "The two runs here differ in precision (fp32 and bf16-mixed, summary.md), "
        "not in seed: their interval is over precisions, not seeds."
    )
    up = "../" * path.count("/")
    header = HEADER.format(up=up, small=small)
    pre = new_secs[0][1]
    out = [pre[0], "", header, *pre[1:]]
    for name, lines in new_secs[1:]:
        out.append(f"## {name}")
        out.extend(lines)
    return "\n".join(out).rstrip("\n") + "\n"


def _insert_tests(lines, runs, discs, vals) -> list[str]:
    others = [d for d in discs if d != "cnn"]
    metrics = [("best val/fid", "best val/fid (epoch)"), ("final val/fid", "final val/fid"),
               ("s/epoch", "s/epoch")]  # fmt: skip
    rows = []
    for d in others:
        na = sum(r["discriminator"] == d for r in runs)
        nb = sum(r["discriminator"] == "cnn" for r in runs)
        row = [d, f"{na} vs {nb}", f"{smallest_p(na, nb):.3f}"]
        for _, col in metrics:
            row.append(p_cell([v for v in vals(d, col) if v is not None],
                              [v for v in vals("cnn", col) if v is not None]))  # fmt: skip
        rows.append(row)
    block = [
        "",
        "**Rank tests against cnn**: exact two-sided p-value of the difference in mean ranks "
        "(`capsgan.statistics.rank_test`); with 3 seeds a side the smallest possible p is 0.100, "
        "so nothing here can be significant at 0.05.",
        "",
        *render_table(["discriminator", "seeds", "smallest p", *[m for m, _ in metrics]], rows),
    ]
    i = next(i for i, line in enumerate(lines) if line.startswith("|"))
    while i < len(lines) and lines[i].startswith("|"):
        i += 1
    return lines[:i] + block + lines[i:]


def _ratio_lines(lines: list[str], runs: list[dict]) -> list[str]:
    """The capsule / cnn ratios of epochs and minutes to the threshold, paired by seed."""
    if not any(line.startswith("- capsule_small / cnn, epochs") for line in lines):
        return lines
    out = []
    for key, col, what in [
        ("epochs to threshold", "epochs to thr.", "epochs"),
        ("wall-clock to threshold", "min to thr.", "minutes"),
    ]:
        arm = {int(r["seed"]): Cost(float(r[col])) for r in runs if r["discriminator"] != "cnn"}
        base = {int(r["seed"]): Cost(float(r[col])) for r in runs if r["discriminator"] == "cnn"}
        r = censored_ratio(arm, base)
        p = rank_test([c.value for c in arm.values()], [c.value for c in base.values()])
        out.append(
            f"- capsule_small / cnn, {key}: **{fmt(r.estimate, 2)}** (geometric mean of the "
            f"per-seed ratios of {what}, {ArmReport.fmt_ratio(r).split('; ', 1)[1]}; rank test "
            f"{verdict(p)}; the claim is about 0.33)"
        )
    return ["", *out, ""]


# -- the fixed numbers committed outside the reports ---------------------------------------------


def capsule_generator_extra() -> dict[tuple[str, int], list[float]]:
    """The per-seed FIDs at step 468 against cnn, listed in capsule_generator/README.md's
    table as ``mean [low, high] (seed 1, seed 2)``."""
    text = legacy("capsule_generator/README.md")
    out = {}
    for line in text.splitlines():
        if line.startswith("| `cnn` | 468 |"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            for arm, cell in (("dcgan", cells[2]), ("capsule", cells[3])):
                seeds = re.search(rf"\(({NUM}), ({NUM})\)", cell)
                out[(arm, 468)] = [float(seeds.group(1)), float(seeds.group(2))]
    return out


def main() -> int:
    for path, baseline in ARM_REPORTS.items():
        report = ArmReport(path, baseline)
        if path == "capsule_generator/vs_cnn/report.md":
            report.extra_fid = capsule_generator_extra()
        (ROOT / RESULTS / path).write_text(report.render())
        print(f"wrote {RESULTS}/{path}")
        for (arm, level), r in getattr(report, "ratio_summary", {}).items():
            print(f"  {arm} {level}: {ArmReport.fmt_ratio(r)}")
    for path in DISCRIMINATOR_REPORTS:
        (ROOT / RESULTS / path).write_text(render_discriminator_report(path))
        print(f"wrote {RESULTS}/{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
