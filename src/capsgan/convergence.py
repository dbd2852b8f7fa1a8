"""When has a run converged, and how fast? The definitions the convergence experiment uses
to stop runs and to report them (``report.py``): the plateau rule, confidence intervals
over seeds, and paired per-seed ratios.

A quality curve (lower is better, e.g. FID at successive evaluations) has **flattened** at
evaluation n when its last ``window`` evaluations did not improve on the best value before
them by more than ``tolerance`` (relative): ``min(v[n-w+1..n]) > (1 - tolerance) *
min(v[1..n-w])``. With the defaults (3 evaluations, 5 %) a run whose FID still drops 5 %
within three evaluations is still learning; one that stalls, oscillates or gets worse
(a collapse) has flattened. ``min_evals`` evaluations are always run first, because the
first FIDs of a GAN swing widely before they fall.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import lightning as L
from scipy.stats import t as student_t

log = logging.getLogger(__name__)

DEFAULT_WINDOW = 3
DEFAULT_TOLERANCE = 0.05


def flattened_at(
    values: Sequence[float],
    window: int = DEFAULT_WINDOW,
    tolerance: float = DEFAULT_TOLERANCE,
    min_evals: int = 0,
) -> int | None:
    """The first evaluation index (0-based) at which ``values`` had flattened, else None."""
    for n in range(max(window, min_evals - 1), len(values)):  # >= 1 value before the window
        best_before = min(values[: n - window + 1])
        if min(values[n - window + 1 : n + 1]) > (1.0 - tolerance) * best_before:
            return n
    return None


class StopOnPlateau(L.Callback):
    """Stops training once ``monitor`` (lower is better) has flattened (see the module
    docstring) -- the "train until the curve is flat" rule of a convergence experiment.

    ``trainer.max_steps`` stays the budget's upper bound. The values seen are kept in the
    checkpoint, so a resumed run applies the rule to its whole curve.
    """

    def __init__(
        self,
        monitor: str = "val/fid",
        window: int = DEFAULT_WINDOW,
        tolerance: float = DEFAULT_TOLERANCE,
        min_evals: int = 6,
    ) -> None:
        if window < 1 or not 0 <= tolerance < 1 or min_evals < 0:
            raise ValueError(
                f"StopOnPlateau needs window >= 1, 0 <= tolerance < 1 and min_evals >= 0; got "
                f"window={window}, tolerance={tolerance}, min_evals={min_evals}"
            )
        self.monitor, self.window, self.tolerance = monitor, window, tolerance
        self.min_evals = min_evals
        self.values: list[float] = []
        self.stopped_at_step: int | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        self.values.append(float(trainer.callback_metrics[self.monitor]))
        n = flattened_at(self.values, self.window, self.tolerance, self.min_evals)
        if n is not None and self.stopped_at_step is None:
            self.stopped_at_step = trainer.global_step
            trainer.should_stop = True
            if trainer.is_global_zero:
                log.info(
                    "%s has flattened after %d evaluations (the best of the last %d is within "
                    "%.0f%% of the best before them): stopping at generator step %d.",
                    self.monitor,
                    len(self.values),
                    self.window,
                    100 * self.tolerance,
                    trainer.global_step,
                )

    def state_dict(self) -> dict:
        return {"values": self.values}

    def load_state_dict(self, state_dict: dict) -> None:
        self.values = list(state_dict.get("values", []))


# -- measuring convergence over seeds ------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """A mean with its two-sided confidence interval (Student's t over ``n`` values);
    ``low``/``high`` are None for a single value, where no interval exists."""

    mean: float
    low: float | None
    high: float | None
    n: int


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Interval | None:
    """Mean and t-interval of ``values`` (seeds are few, so t, not the normal quantile)."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None
    mean = statistics.fmean(values)
    if len(values) < 2:
        return Interval(mean, None, None, 1)
    half = student_t.ppf(0.5 + confidence / 2, len(values) - 1) * statistics.stdev(values)
    half /= math.sqrt(len(values))
    return Interval(mean, mean - half, mean + half, len(values))


def first_reaching(steps: Sequence[int], values: Sequence[float], level: float) -> int | None:
    """Index of the first evaluation at or below ``level`` (lower is better), else None."""
    for i, value in enumerate(values):
        if math.isfinite(value) and value <= level:
            return i
    return None


def best_within(steps: Sequence[int], values: Sequence[float], max_step: float) -> float | None:
    """The best (lowest) finite value among evaluations at ``step <= max_step``."""
    within = [v for s, v in zip(steps, values, strict=True) if s <= max_step and math.isfinite(v)]
    return min(within, default=None)


@dataclass(frozen=True)
class PairedRatio:
    """Per-seed ratios ``arm / baseline`` of a cost (e.g. generator steps to a level).

    ``ratios`` holds the seeds where both reached the level; ``interval`` is the geometric
    mean of those ratios with a t-interval computed on their logarithms (ratios multiply,
    so their logs are what averages symmetrically). ``arm_never`` / ``baseline_never`` list
    the seeds where that side never reached it (a censored pair: the arm's ratio is then at
    least its budget over the baseline's cost, or at most the arm's cost over the baseline's
    budget) and ``unpaired`` the seeds only one side has.
    """

    ratios: dict[int, float]
    interval: Interval | None
    arm_never: list[int]
    baseline_never: list[int]
    unpaired: list[int]


def paired_ratio(
    arm: dict[int, float | None], baseline: dict[int, float | None], confidence: float = 0.95
) -> PairedRatio:
    """Pair ``arm`` and ``baseline`` costs by seed (None: never reached) and summarize."""
    ratios, arm_never, base_never = {}, [], []
    for seed in sorted(set(arm) & set(baseline)):
        a, b = arm[seed], baseline[seed]
        if a is None:
            arm_never.append(seed)
        elif b is None:
            base_never.append(seed)
        elif b > 0:
            ratios[seed] = a / b
    unpaired = sorted(set(arm) ^ set(baseline))
    interval = None
    logs = t_interval([math.log(r) for r in ratios.values() if r > 0], confidence)
    if logs is not None:
        low, high = (None, None) if logs.low is None else (math.exp(logs.low), math.exp(logs.high))
        interval = Interval(math.exp(logs.mean), low, high, logs.n)
    return PairedRatio(ratios, interval, arm_never, base_never, unpaired)
