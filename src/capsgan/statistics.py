"""Statistics over seeds for comparing GAN arms: intervals that stay possible, costs that
may be censored, and an exact test beside every comparison (docs/results.md, "Methods").

Why these methods:

* **Intervals** are percentile bootstraps of the mean over seeds. A bootstrapped mean is
  always an average of observed values, so its interval stays inside the metric's range
  (a precision interval never leaves [0, 1], a FID interval never goes below 0), where a
  t-interval over three seeds with one outlier gave FID [-302, 4018]. With few seeds the
  bootstrap is close to the seeds' range and under-covers, so every arm-vs-baseline row
  also carries a p-value.
* **Tests** are exact permutation tests of the difference in mean ranks (the Wilcoxon-
  Mann-Whitney statistic, mid-ranks for ties): no normality assumed, and a seed that never
  got somewhere is just a rank above every seed that did. With 3 seeds per arm the
  smallest two-sided p-value possible is 0.1, with 5 it is 0.008: the report says so.
* **Censored costs.** A run that never reached a quality level within its budget did not
  take "no steps" to get there: it took *more than* its budget. Dropping it favours the
  arm that fails, so it enters every mean and ratio at its bound and the result is
  reported as a bound ("≥ 1.26").
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import permutation_test, rankdata

CONFIDENCE = 0.95
RESAMPLES = 10_000
SIGNIFICANCE = 0.05
_SEED = 0  # the bootstrap's generator: a report re-rendered from the same runs is identical


@dataclass(frozen=True)
class Estimate:
    """A mean over seeds with its percentile-bootstrap interval (None for one value).

    ``bound`` is ``">="`` when some values are lower bounds (censored costs, so the true
    mean is at least this), ``"<="`` for upper bounds, ``"~"`` when both occur (neither
    direction is known), and ``""`` for exact values.
    """

    mean: float
    low: float | None
    high: float | None
    n: int
    bound: str = ""


def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def bootstrap(
    values: Sequence[float | None],
    confidence: float = CONFIDENCE,
    geometric: bool = False,
    bound: str = "",
) -> Estimate | None:
    """Mean of ``values`` (geometric mean for ``geometric``: ratios) with the percentile
    bootstrap interval over them; missing and non-finite values are left out."""
    data = _finite(values)
    if geometric:
        data = [math.log(v) for v in data if v > 0]
    if not data:
        return None
    back = math.exp if geometric else float
    mean = statistics.fmean(data)
    if len(data) < 2:
        return Estimate(back(mean), None, None, 1, bound)
    rng = np.random.default_rng(_SEED)
    sample = np.asarray(data)
    means = sample[rng.integers(0, len(data), (RESAMPLES, len(data)))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    # the resampled means are averages of the data, so [low, high] is within [min, max]
    return Estimate(back(mean), back(float(low)), back(float(high)), len(data), bound)


def rank_test(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p-value of an exact permutation test of the difference in mean ranks of
    ``a`` and ``b`` (Wilcoxon-Mann-Whitney); ``inf`` is a valid value (a censored cost,
    tied with the other censored ones). None when either side has no value."""
    a = [float(v) for v in a if v is not None and not math.isnan(v)]
    b = [float(v) for v in b if v is not None and not math.isnan(v)]
    if not a or not b:
        return None
    if len(set(a + b)) == 1:
        return 1.0

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
    """How a p-value reads in a report row."""
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


def cost_to_level(
    xs: Sequence[float], values: Sequence[float], level: float, budget: float
) -> Cost:
    """Where a quality curve (lower is better) first reaches ``level``, interpolated
    linearly between the last evaluation above it and the first at or below it (a curve
    evaluated every 468 steps does not reach a level exactly on the grid); ``xs`` are the
    evaluations' steps or seconds. A level met at the first evaluation costs that
    evaluation's ``x``; one never met is censored at ``budget``."""
    prev: tuple[float, float] | None = None
    for x, v in zip(xs, values, strict=True):
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
    """Per-seed ratios ``arm / baseline`` of a cost, censored seeds included as bounds.

    ``per_seed`` maps a seed to its ratio and its kind: ``""`` exact, ``">="`` the arm
    never reached the level (its budget over the baseline's cost: a lower bound), ``"<="``
    the baseline never did. Seeds where neither reached it carry no information about the
    ratio and are listed in ``neither``; seeds only one side has, in ``unpaired``.
    """

    per_seed: dict[int, tuple[float, str]] = field(default_factory=dict)
    estimate: Estimate | None = None
    neither: list[int] = field(default_factory=list)
    unpaired: list[int] = field(default_factory=list)


def _combined_bound(kinds: Sequence[str]) -> str:
    kinds = {k for k in kinds if k}
    return "" if not kinds else kinds.pop() if len(kinds) == 1 else "~"


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
    kinds = [kind for _, kind in out.per_seed.values()]
    out.estimate = bootstrap(
        [r for r, _ in out.per_seed.values()], geometric=True, bound=_combined_bound(kinds)
    )
    return out


def ratio_test(arm: dict[int, Cost], baseline: dict[int, Cost]) -> float | None:
    """:func:`rank_test` of the two arms' costs, a censored cost ranking above every cost
    that was reached (with equal budgets, never reaching is the slowest outcome)."""
    a = [math.inf if c.censored else c.value for c in arm.values()]
    b = [math.inf if c.censored else c.value for c in baseline.values()]
    return rank_test(a, b)
