"""Compare runs: ``python src/report.py <sweep folders | run folders> [options]``.

Writes ``report.md``, ``fid.png``, ``training_curves.png`` and ``samples.png`` into the
folder given (the common parent of several, or ``--out``); see docs/results.md and
:mod:`capsgan.report`.
"""

from __future__ import annotations

import argparse

from capsgan.errors import user_errors
from capsgan.report import write_report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="sweep folders, or run folders")
    parser.add_argument("--out", help="folder for report.md and the plots")
    parser.add_argument(
        "--baseline",
        default="cnn",
        help="the arm every other arm is compared with, by its Hydra choice (default: cnn)",
    )
    parser.add_argument(
        "--levels",
        type=lambda s: [float(v) for v in s.split(",")],
        help="FID levels to time the runs to, e.g. 300,200,150 (default: from the baseline's "
        "curves, see docs/results.md)",
    )
    parser.add_argument(
        "--no-floor",
        action="store_true",
        help="skip measuring the real-data FID floor (it needs DATA_DIR and the classifier)",
    )
    args = parser.parse_args(argv)
    with user_errors():  # one Error: paragraph and exit 2, a full disk included
        report = write_report(args.paths, args.out, args.baseline, args.levels, not args.no_floor)
    print(f"wrote {report}")


if __name__ == "__main__":
    main()
