"""Compare runs: ``python src/report.py <sweep folders | run folders | report folder> [key=value]``.

Writes ``report.md``, ``curves.csv``, ``runs.csv``, ``fid.png``, ``training_curves.png`` and
``samples.png`` into the folder given (the common parent of several, or ``out=``); a report
folder (curves.csv + runs.csv) re-renders alone. See docs/results.md and
:mod:`capsgan.report`.

  out=DIR           where to write (default: the folder given, or the common parent)
  baseline=ARM      the arm every other arm is compared with (default: the first arm, i.e.
                    the sweep's first job's; e.g. baseline=cnn or baseline=lr=0.0002)
  levels=300,200    FID levels to time the runs to (default: from the baseline's curves)
  floor=false       skip measuring the real-data FID floor (it needs DATA_DIR and the
                    classifier)

The earlier ``--out DIR``, ``--baseline ARM``, ``--levels L`` and ``--no-floor`` still work.
"""

from __future__ import annotations

import sys

from capsgan.errors import UserError, user_errors
from capsgan.report import write_report

OPTIONS = ("out", "baseline", "levels", "floor")
FLAGS = {"--out": "out", "--baseline": "baseline", "--levels": "levels"}


def parse(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """Paths and ``key=value`` options (the old ``--flag value`` spellings included)."""
    paths, options = [], {}
    args = iter(argv)
    for arg in args:
        key, eq, value = arg.partition("=")
        if arg in FLAGS:
            options[FLAGS[arg]] = next(args, "")
        elif arg == "--no-floor":
            options["floor"] = "false"
        elif eq and key.lstrip("-") in OPTIONS:  # out=, --out=
            options[key.lstrip("-")] = value
        elif arg.startswith("-"):
            raise UserError(
                f"report.py has no option {arg!r}; it takes folders and "
                f"{', '.join(f'{k}=' for k in OPTIONS)} (python src/report.py --help)."
            )
        else:
            paths.append(arg)
    if not paths:
        raise UserError(
            "report.py needs at least one folder: a sweep folder (outputs/multirun/...), run "
            "folders, or a report folder holding curves.csv and runs.csv."
        )
    return paths, options


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return
    with user_errors(output_key="out"):  # one Error: paragraph and exit 2, a full disk too
        paths, options = parse(argv)
        levels = None
        if options.get("levels"):
            try:
                levels = [float(v) for v in options["levels"].split(",")]
            except ValueError as err:
                raise UserError(
                    f"levels={options['levels']!r} is not a list of numbers; write e.g. "
                    "levels=300,200,150 (FID values)."
                ) from err
        floor = options.get("floor", "true").lower()
        if floor not in ("true", "false"):
            raise UserError(f"floor={options['floor']!r}: use floor=true or floor=false.")
        report = write_report(
            paths, options.get("out"), options.get("baseline"), levels, floor == "true"
        )
    print(f"wrote {report}")


if __name__ == "__main__":
    main()
