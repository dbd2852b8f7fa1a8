"""Replay the opt-in plateau rule on every committed curve: would it stop a run that later
improves by more than 10 %?

    python docs/results/plateau_check.py [docs/results] [window=3 tolerance=0.05 min_evals=6]

Reads every ``curves.csv`` below the folder (the report writes one per results folder),
applies :func:`capsgan.convergence.flattened_at` to each run's ``val/fid`` curve as
``StopOnPlateau`` would during training, and prints one row per run: where the rule would
stop it, its verdict (flattened / degraded), and how much better the run got after that
stop. A run the rule stops, but which later improves by more than ``MISSED`` (10 %), is
a wrong stop; the script exits 1 if it finds one. Curves shorter than ``min_evals``
evaluations cannot be stopped and are counted as such.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from capsgan.convergence import flattened_at, plateau_verdict

MISSED = 0.10


def curves(path: Path) -> dict[str, tuple[list[int], list[float]]]:
    runs: dict[str, tuple[list[int], list[float]]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            if row.get("val/fid"):
                steps, values = runs.setdefault(row["run"], ([], []))
                steps.append(int(row["step"]))
                values.append(float(row["val/fid"]))
    return runs


def main(argv: list[str]) -> int:
    options = dict(a.split("=", 1) for a in argv if "=" in a)
    folders = [Path(a) for a in argv if "=" not in a] or [Path(__file__).parent]
    window = int(options.get("window", 3))
    tolerance = float(options.get("tolerance", 0.05))
    min_evals = int(options.get("min_evals", 6))
    print(f"plateau rule: window {window}, tolerance {tolerance:g}, min_evals {min_evals}")
    print("| curves.csv | run | evaluations | stops at | verdict | best after the stop |")
    print("|---|---|---|---|---|---|")
    wrong = short = total = 0
    for folder in folders:
        for path in sorted(folder.rglob("curves.csv")):
            for run, (steps, values) in curves(path).items():
                total += 1
                n = flattened_at(values, window, tolerance, min_evals)
                if n is None:
                    short += len(values) < min_evals
                    cells = ["never", "-", "-"]
                else:
                    later = min(values[n + 1 :], default=None)
                    gain = 0.0 if later is None else 1 - later / min(values[: n + 1])
                    wrong += gain > MISSED
                    cells = [
                        str(steps[n]),
                        plateau_verdict(steps, values, n, tolerance),
                        "-" if later is None else f"{later:.1f} ({100 * gain:+.0f} %)",
                    ]
                print(f"| {path.parent.name} | {run} | {len(values)} | " + " | ".join(cells) + " |")
    print(
        f"\n{total} curves; {short} shorter than min_evals (the rule cannot stop them); "
        f"{wrong} stopped although they later improved by more than {100 * MISSED:.0f} %."
    )
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
