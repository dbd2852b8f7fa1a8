"""The opt-in plateau rule (``experiment=convergence``): stop a run once its quality curve
has stopped improving. Comparisons use equal budgets instead (``experiment=comparison``):
a rule that stops runs gives the arms different amounts of training.

A quality curve (lower is better, e.g. FID at successive evaluations) has **flattened** at
evaluation n when its last ``window`` evaluations did not improve on the best value before
them by more than ``tolerance`` (relative): ``min(v[n-w+1..n]) > (1 - tolerance) *
min(v[1..n-w])``. With the defaults (3 evaluations, 5 %) a run whose FID still drops 5 %
within three evaluations is still learning; one that stalls, oscillates or gets worse
(a collapse) has stopped improving. ``min_evals`` evaluations are always run first,
because the first FIDs of a GAN swing widely before they fall.

A curve that stopped improving is one of two things, and the log and the report say which:
**flattened** (its latest value is within ``tolerance`` of its best) or **degraded after
step N** (it rose above its best, reached at step N, by more than ``tolerance``: a GAN
falling apart, not one that has converged). ``docs/results/plateau_check.py`` replays the
rule on committed curves and reports every stop after which a run still improved.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import lightning as L

log = logging.getLogger(__name__)

DEFAULT_WINDOW = 3
DEFAULT_TOLERANCE = 0.05


def plateau_verdict(
    steps: Sequence[int], values: Sequence[float], n: int, tolerance: float = DEFAULT_TOLERANCE
) -> str:
    """What the curve did by evaluation ``n`` once the rule fired there: "flattened at step
    S" or "degraded after step B" (B: the step of its best value so far)."""
    best = min(range(n + 1), key=lambda i: values[i])
    if values[n] > (1.0 + tolerance) * values[best]:
        return f"degraded after step {steps[best]}"
    return f"flattened at step {steps[n]}"


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
        self.steps: list[int] = []
        self.stopped = False  # the rule fires once (min_steps may keep the run going)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        self.values.append(float(trainer.callback_metrics[self.monitor]))
        self.steps.append(int(trainer.global_step))
        n = flattened_at(self.values, self.window, self.tolerance, self.min_evals)
        if n is not None and not self.stopped:
            self.stopped = trainer.should_stop = True
            if trainer.is_global_zero:
                verdict = plateau_verdict(self.steps, self.values, n, self.tolerance)
                log.info(
                    f"{self.monitor} stopped improving after {len(self.values)} evaluations (the "
                    f"best of the last {self.window} is not {self.tolerance:.0%} better than the "
                    f"best before them): {verdict}; stopping at generator step "
                    f"{trainer.global_step}."
                )

    def state_dict(self) -> dict:
        return {"values": self.values, "steps": self.steps}

    def load_state_dict(self, state_dict: dict) -> None:
        self.values = list(state_dict.get("values", []))
        self.steps = list(state_dict.get("steps", range(len(self.values))))
