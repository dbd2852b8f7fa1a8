"""Every interval in a committed results report stays within its metric's range (issue 20).

Cheap: reads the markdown under docs/results/, trains nothing. A ``mean [low, high]`` in a
table takes its range from the column's heading; one in prose from the words just before it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
NUM = r"-?\d+(?:\.\d+)?"
INTERVAL = re.compile(rf"({NUM}) \[({NUM}), ({NUM})\]")

UNIT = ("precision", "recall", "accuracy", "share", "acc")


def metric_range(label: str) -> tuple[float, float] | None:
    """(low, high) allowed for a metric named in ``label``; None: any real (KID, an
    unbiased MMD estimate, may be slightly negative)."""
    label = label.lower()
    if "kid" in label:
        return None
    if any(word in label for word in UNIT):
        return 0.0, 1.0
    if "mode" in label:
        return 0.0, 10.0
    return 0.0, float("inf")  # FID, steps, minutes, seconds, ratios, epochs


def intervals(text: str):
    """(label, mean, low, high, line) for each interval in ``text``."""
    head: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if head is None:
                head = cells
                continue
            if set("".join(cells)) <= set("-: "):
                continue
            for i, cell in enumerate(cells):
                label = head[i] if i < len(head) else ""
                for m in INTERVAL.finditer(cell):
                    yield label, *map(float, m.groups()), line
        else:
            head = None
            for m in INTERVAL.finditer(line):
                yield line[max(0, m.start() - 60) : m.start()], *map(float, m.groups()), line


def problems(path: Path) -> list[str]:
    out = []
    for label, mean, low, high, _ in intervals(path.read_text()):
        where = f"{path.relative_to(RESULTS)}: {label!r}: {mean} [{low}, {high}]"
        if not low <= mean <= high:
            out.append(f"{where}: mean outside its interval")
        allowed = metric_range(label)
        if allowed and not (allowed[0] <= low and high <= allowed[1]):
            out.append(f"{where}: outside [{allowed[0]}, {allowed[1]}]")
    return out


REPORTS = sorted(RESULTS.rglob("*.md"))


def test_the_scan_finds_reports_and_bad_intervals():
    assert REPORTS
    bad = "| arm | final precision | final modes | FID <= 1: steps | final KID |\n"
    bad += "|---|---|---|---|---|\n"
    bad += "| a | 0.5 [-0.8, 1.2] | 8.3 [4.5, 12.1] | 624 [-47, 1295] | 118.98 [-41.44, 279.41] |\n"
    found = [(label, low, high) for label, _, low, high, _ in intervals(bad)]
    assert len(found) == 4
    assert [metric_range(label) for label, _, _ in found] == [
        (0.0, 1.0), (0.0, 10.0), (0.0, float("inf")), None]  # fmt: skip
    prose = "the ratio 1.00 [0.18, 5.59] and precision 0.9 [0.8, 1.1]"
    assert len(list(intervals(prose))) == 2


@pytest.mark.parametrize("path", REPORTS, ids=[str(p.relative_to(RESULTS)) for p in REPORTS])
def test_committed_intervals_stay_within_their_metric_range(path):
    assert problems(path) == []
