"""Statistics over seeds for comparing GAN arms; docs/results.md ("Methods") says why each.

* **Intervals**: percentile bootstraps of the mean over seeds, which stay inside the
  metric's range (a t-interval over three seeds with an outlier gave FID [-302, 4018]) but
  under-cover with few seeds, so every arm-vs-baseline row also carries a p-value.
* **Tests**: exact permutation tests of the difference in mean ranks (Wilcoxon-Mann-Whitney,
  mid-ranks for ties): a seed that never got somewhere is a rank above every seed that did.
* **Censored costs**: a run that never reached a level took *more than* its budget; dropping
  it favours the arm that fails, so it enters every mean and ratio at its budget and the
  result is a bound ("≥ 1.26").

Also each run's summary, the arms, the baseline, the quality levels and the evaluation grid
that :mod:`capsgan.report` renders.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from omegaconf import OmegaConf
from scipy.stats import permutation_test, rankdata

from capsgan.convergence import DEFAULT_TOLERANCE, DEFAULT_WINDOW, flattened_at, plateau_verdict
from capsgan.errors import UserError
from capsgan.runs import (
    COLLAPSE_FID_FACTOR,
    Run,
    Series,
    collapsed,
    override_values,
    varying_overrides,
)

CONFIDENCE = 0.95
RESAMPLES = 10_000
SIGNIFICANCE = 0.05
_SEED = 0  # the bootstrap's generator: a report re-rendered from the same runs is identical


@dataclass(frozen=True)
class Estimate:
    """A mean over seeds with its percentile-bootstrap interval (None for one value);
    ``bound``: ``">="`` when some values are lower bounds (censored costs: the true mean is
    at least this), ``"<="`` upper bounds, ``"~"`` both (no direction known), ``""`` exact."""

    mean: float
    low: float | None
    high: float | None
    n: int
    bound: str = ""


def bootstrap(
    values: Sequence[float | None], geometric: bool = False, bound: str = ""
) -> Estimate | None:
    """Mean of ``values`` (geometric mean for ``geometric``: ratios) with the percentile
    bootstrap interval over them; missing and non-finite values are left out."""
    data = [float(v) for v in values if v is not None and math.isfinite(v)]
    if geometric:
        data = [math.log(v) for v in data if v > 0]
    if not data:
        return None
    back = math.exp if geometric else float
    mean = statistics.fmean(data)
    if len(data) < 2:
        return Estimate(back(mean), None, None, 1, bound)
    draws = np.random.default_rng(_SEED).integers(0, len(data), (RESAMPLES, len(data)))
    means = np.asarray(data)[draws].mean(axis=1)
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    # the resampled means are averages of the data, so [low, high] is within [min, max]
    return Estimate(back(mean), back(float(low)), back(float(high)), len(data), bound)


def rank_test(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p-value of an exact permutation test of the difference in mean ranks of
    ``a`` and ``b`` (Wilcoxon-Mann-Whitney); ``inf`` is a valid value (a censored cost,
    tied with the other censored ones). None when either side has no value."""
    a, b = ([float(v) for v in x if v is not None and not math.isnan(v)] for x in (a, b))
    if not a or not b:
        return None

    def mean_rank_difference(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        ranks = rankdata(np.concatenate([x, y], axis=axis), axis=axis)
        return ranks[..., : x.shape[axis]].mean(axis) - ranks[..., x.shape[axis] :].mean(axis)

    if min(len(a), len(b)) < 2:  # scipy wants two values a side; count the few orders here
        pooled, k = np.asarray(a + b), len(a)
        observed = abs(mean_rank_difference(pooled[:k], pooled[k:]))
        stats = [
            abs(mean_rank_difference(pooled[list(idx)], np.delete(pooled, list(idx))))
            for idx in itertools.combinations(range(len(pooled)), k)
        ]
        return sum(t >= observed - 1e-12 for t in stats) / len(stats)
    result = permutation_test(
        (np.asarray(a), np.asarray(b)),
        mean_rank_difference,
        permutation_type="independent",
        vectorized=True,
        n_resamples=100_000,  # exact below C(n_a + n_b, n_a) = 100 000 (up to 8 + 8 seeds)
        alternative="two-sided",
        rng=_SEED,
    )
    return float(min(1.0, result.pvalue))


def smallest_p(n_a: int, n_b: int) -> float:
    """The smallest two-sided p-value :func:`rank_test` can give for these seed counts."""
    return min(1.0, 2 / math.comb(n_a + n_b, n_a)) if n_a and n_b else 1.0


def verdict(p: float | None) -> str:
    if p is None:
        return "-"
    return f"p = {p:.3f}" + (" (significant)" if p < SIGNIFICANCE else " (not significant)")


# -- costs to reach a quality level -------------------------------------------------------------


@dataclass(frozen=True)
class Cost:
    """Generator steps (or seconds) a run took to reach a level; ``censored``: it never did,
    and ``value`` is its budget, a lower bound on the cost."""

    value: float
    censored: bool = False


def cost_to_level(xs: Sequence[float], ys: Sequence[float], level: float, budget: float) -> Cost:
    """Where a quality curve (lower is better) first reaches ``level``, interpolated
    linearly between the last evaluation above it and the first at or below it (a curve
    evaluated every 468 steps does not reach a level exactly on the grid); ``xs`` are the
    evaluations' steps or seconds, ``ys`` their values. A level met at the first evaluation
    costs that evaluation's ``x``; one never met is censored at ``budget``."""
    prev: tuple[float, float] | None = None
    for x, v in zip(xs, ys, strict=True):
        if not math.isfinite(v):
            prev = None  # a diverged evaluation: no line to draw through it
            continue
        if v <= level:
            if prev is None or prev[1] == v:
                return Cost(float(x))
            x0, v0 = prev
            return Cost(x0 + (v0 - level) / (v0 - v) * (x - x0))
        prev = (x, v)
    return Cost(float(budget), censored=True)


def mean_cost(costs: Sequence[Cost]) -> Estimate | None:
    """Mean cost over seeds, censored ones at their budget: then a lower bound (">=")."""
    bound = ">=" if any(c.censored for c in costs) else ""
    return bootstrap([c.value for c in costs], bound=bound)


@dataclass
class Ratio:
    """Per-seed ratios ``arm / baseline`` of a cost: ``per_seed`` maps a seed to its ratio and
    kind, ``""`` exact, ``">="`` the arm never reached the level (its budget over the
    baseline's cost: a lower bound), ``"<="`` the baseline never did. Seeds where neither
    reached it carry no information (``neither``); seeds only one side has are ``unpaired``."""

    per_seed: dict[int, tuple[float, str]] = field(default_factory=dict)
    estimate: Estimate | None = None
    neither: list[int] = field(default_factory=list)
    unpaired: list[int] = field(default_factory=list)


def censored_ratio(arm: dict[int, Cost], baseline: dict[int, Cost]) -> Ratio:
    """Pair ``arm`` and ``baseline`` costs by seed; geometric mean with its bootstrap
    interval, every seed with information counted (see :class:`Ratio`)."""
    out = Ratio(unpaired=sorted(set(arm) ^ set(baseline)))
    for seed in sorted(set(arm) & set(baseline)):
        a, b = arm[seed], baseline[seed]
        if a.censored and b.censored:
            out.neither.append(seed)
        elif a.value > 0 and b.value > 0:
            kind = ">=" if a.censored else "<=" if b.censored else ""
            out.per_seed[seed] = (a.value / b.value, kind)
    kinds = {kind for _, kind in out.per_seed.values() if kind}
    bound = "" if not kinds else kinds.pop() if len(kinds) == 1 else "~"
    out.estimate = bootstrap([r for r, _ in out.per_seed.values()], geometric=True, bound=bound)
    return out


def ratio_test(arm: dict[int, Cost], baseline: dict[int, Cost]) -> float | None:
    """:func:`rank_test` of the two arms' costs, a censored cost ranking above every cost
    that was reached (with equal budgets, never reaching is the slowest outcome)."""
    a, b = ([math.inf if c.censored else c.value for c in x.values()] for x in (arm, baseline))
    return rank_test(a, b)


# -- one run, in numbers ----------------------------------------------------------------------


@dataclass
class RunSummary:
    run: Run
    fid: Series
    best_fid: float | None = None
    best_step: int | None = None
    final_fid: float | None = None
    final_step: int | None = None
    final_seconds: float | None = None
    final: dict[str, float] = field(default_factory=dict)  # every metric tag at the end
    stopped: str | None = None  # the plateau rule's verdict, when it ended the run early
    spread: float | None = None  # (max - min) / mean of the last LAST_EVALS FIDs
    collapse: str | None = None  # why the run counts as collapsed, or None
    eval_share: float | None = None  # share of the wall-clock spent in quality evaluation
    d_acc: dict[str, float] = field(default_factory=dict)  # the accuracy phases

    def at_step(self, tag: str, step: int) -> float | None:
        """``tag``'s value at the evaluation of generator step ``step`` (within
        :data:`STEP_SLACK`: a resumed run may log its evaluations a step or two off)."""
        series = self.run.series(tag)
        near = min(((abs(s - step), i) for i, s in enumerate(series.steps)), default=None)
        return series.values[near[1]] if near and near[0] <= STEP_SLACK else None


STEP_SLACK = 2  # generator steps: one evaluation of a resumed run may be this far off
LAST_EVALS = 3  # the stability window: FID spread over a run's last evaluations


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


def summarize_run(run: Run, fid_tag: str, tags: Sequence[str]) -> RunSummary:
    fid = run.series(fid_tag)
    out = RunSummary(run, fid, d_acc=accuracy_phases(run.series("train/d_acc")))
    finite = [i for i, v in enumerate(fid.values) if math.isfinite(v)]
    if not finite:
        return out
    best = min(finite, key=fid.values.__getitem__)
    out.best_fid, out.best_step = fid.values[best], fid.steps[best]
    out.final_fid, out.final_step = fid.values[-1], fid.steps[-1]
    out.final_seconds = fid.seconds[-1]
    out.final = {tag: run.series(tag).values[-1] for tag in tags if run.series(tag).values}
    # the plateau rule's verdict, when it ended the run before its (known) budget
    node, budget = run.setting("callbacks.stop_on_plateau"), run.setting("trainer.max_steps")
    if node and budget and budget > 0 and fid.steps[-1] < budget - 1:
        window, min_evals = int(node.get("window", DEFAULT_WINDOW)), int(node.get("min_evals", 0))
        tolerance = float(node.get("tolerance", DEFAULT_TOLERANCE))
        n = flattened_at(fid.values, window, tolerance, min_evals)
        out.stopped = None if n is None else plateau_verdict(fid.steps, fid.values, n, tolerance)
    last = [v for v in fid.values[-LAST_EVALS:] if math.isfinite(v)]
    if len(last) == LAST_EVALS:
        out.spread = (max(last) - min(last)) / statistics.fmean(last)
    modes = out.final.get("val/modes")
    few_modes, worse = collapsed(out.final_fid, out.best_fid, modes)
    reasons = [f"{modes:.0f} of 10 modes at the end"] if few_modes else []
    if worse:
        reasons.append(f"final FID {out.final_fid:.0f} > {COLLAPSE_FID_FACTOR:g} x best")
    out.collapse = "; ".join(reasons) or None
    metric_seconds = run.series("val/metric_seconds").values
    if metric_seconds and out.final_seconds:
        out.eval_share = sum(metric_seconds) / out.final_seconds
    return out


# -- arms, levels, the evaluation grid ---------------------------------------------------------


def varying_keys(runs: Sequence[Run]) -> tuple[list[str], list[str]]:
    """The Hydra groups whose choice differs between the runs, and the other overrides
    (not the seed) whose value differs (e.g. an lr sweep)."""
    groups = sorted({g for r in runs for g in r.choices})
    varying = [g for g in groups if len({r.choices.get(g) for r in runs}) > 1]
    others = sorted(set(varying_overrides(r.overrides for r in runs)) - {"seed", *groups})
    return varying, others


def assign_arms(runs: Sequence[Run]) -> None:
    """Name each run's arm by what differs between the runs apart from the seed: the Hydra
    choices (the value alone when one group differs and nothing else), then the other
    swept keys (``lr=0.0002``); a run that did not set a swept key shows the value its config
    resolved (``discriminator.routing_iterations=3``), ``-`` only where that is unknown."""
    groups, others = varying_keys(runs)
    for run in runs:
        own = override_values(run.overrides)
        parts = [(g, run.choices.get(g, "-")) for g in groups]
        for k in others:  # a key the run did not set: its resolved value, as typed
            value = OmegaConf.select(run.cfg, k.lstrip("+~"), default="-") if run.cfg else "-"
            parts.append((k, own.get(k, "null" if value is None else str(value))))
        alone = len(parts) == 1 and groups
        run.arm = parts[0][1] if alone else " ".join(f"{k}={v}" for k, v in parts)
        run.arm = run.arm or "all runs"


@dataclass
class Arm:
    name: str
    runs: list[RunSummary]

    def costs(self, level: float, what: str) -> dict[int, Cost]:
        """Each seed's generator steps (``what="steps"``) or seconds to FID ``level``,
        censored at its last evaluation when never reached."""
        return {
            s.run.seed or 0: cost_to_level(xs := getattr(s.fid, what), s.fid.values, level, xs[-1])
            for s in self.runs
            if s.fid.steps
        }

    @property
    def budget(self) -> int | None:
        """The generator steps of the arm's longest run (its last evaluation)."""
        return max((s.final_step for s in self.runs if s.final_step is not None), default=None)


def group_arms(summaries: Sequence[RunSummary]) -> list[Arm]:
    """Arms in the order their first run comes (the runs are found in a sweep's job order)."""
    arms: dict[str, list[RunSummary]] = {}
    for s in summaries:
        arms.setdefault(s.run.arm, []).append(s)
    return [Arm(name, sorted(m, key=lambda s: s.run.seed or 0)) for name, m in arms.items()]


def pick_baseline(arms: Sequence[Arm], baseline: str | None) -> Arm:
    """The arm named ``baseline``: its whole name, or the one arm whose name holds every word of
    it (a word matches ``key=value`` or, alone, a value), so ``baseline="discriminator=cnn
    lr=0.0002"`` finds ``discriminator=cnn lr=0.0002 lr_d=null``. None: the first arm, i.e.
    that of the sweep's first job (``experiment=comparison`` sweeps the DCGAN discriminator
    first)."""
    if baseline is None or len(arms) == 1:
        return arms[0]

    def holds(arm: Arm, word: str) -> bool:
        return any(w == word or w.endswith(f"={word}") for w in arm.name.split())

    found = [arm for arm in arms if arm.name == baseline] or [
        arm for arm in arms if all(holds(arm, word) for word in baseline.split())
    ]
    if len(found) == 1:
        return found[0]
    what = "several arms match" if found else "no arm is"
    raise UserError(
        f"{what} the baseline {baseline!r}: the arms are {[a.name for a in (found or arms)]}. Pass "
        "baseline=<one of them> (the arm every other arm is compared with)."
    )


def best_within(steps: Sequence[int], values: Sequence[float], max_step: float) -> float | None:
    within = [v for s, v in zip(steps, values, strict=True) if s <= max_step and math.isfinite(v)]
    return min(within, default=None)


def quality_levels(baseline: Arm, fractions: Sequence[float]) -> list[float]:
    """The baseline's mean best FID within each fraction of its generator steps (the rule of
    docs/results.md): levels the baseline reaches, fixed before the arms are compared."""
    fids = [s.fid for s in baseline.runs if s.fid.steps]
    levels = []
    for fraction in fractions:
        bests = [best_within(f.steps, f.values, fraction * f.steps[-1]) for f in fids]
        bests = [b for b in bests if b is not None]
        if bests:
            levels.append(statistics.fmean(bests))
    return sorted(set(levels), reverse=True)


def evaluation_grid(arms: Sequence[Arm]) -> list[int]:
    """Every generator step at which some run was evaluated (equal budgets: one grid)."""
    own = [set(s.fid.steps) for a in arms for s in a.runs]
    merged: list[int] = []
    for k in sorted(set().union(*own)):
        # a resumed run's evaluation a step or two off is the same grid point, unless one
        # run was evaluated at both (a grid that fine)
        near = merged and k - merged[-1] <= STEP_SLACK
        if not near or any(k in steps and merged[-1] in steps for steps in own):
            merged.append(k)
    return merged
