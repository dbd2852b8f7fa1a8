"""Compare runs: ``python src/report.py <multirun folder | run folders> [options]``.

Writes ``report.md``, ``fid.png`` and ``training_curves.png`` into the folder given (the
common parent of several); see docs/results.md and :mod:`capsgan.report`.
"""

from __future__ import annotations

import argparse
import os
import sys

from capsgan.errors import UserError
from capsgan.report import DEFAULT_FLOOR_MULTIPLE, REAL_DATA_FID_FLOOR, write_report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="a multirun folder, or run folders")
    parser.add_argument("--out", help="folder for report.md and the plots")
    threshold = parser.add_mutually_exclusive_group()
    threshold.add_argument(
        "--fid-threshold", type=float, help="the FID a run must reach (absolute value)"
    )
    threshold.add_argument(
        "--floor-multiple",
        type=float,
        help=f"threshold = this x the real-data FID floor of the runs' data set and "
        f"metrics.num_samples (default {DEFAULT_FLOOR_MULTIPLE:g}; floors known for "
        f"{sorted(REAL_DATA_FID_FLOOR)})",
    )
    args = parser.parse_args(argv)
    try:
        report = write_report(args.paths, args.out, args.fid_threshold, args.floor_multiple)
    except UserError as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {report}")


if __name__ == "__main__":
    main()
