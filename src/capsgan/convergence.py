"""When has a run converged? One definition, used to stop runs and to report them.

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
from collections.abc import Sequence

import lightning as L

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
