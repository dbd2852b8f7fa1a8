"""report.py, capsgan.statistics and the plateau rule: intervals, tests, censored costs."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict
from torch.utils.tensorboard import SummaryWriter

from capsgan.convergence import flattened_at, plateau_verdict
from capsgan.errors import UserError
from capsgan.report import write_report
from capsgan.runs import find_runs, load_run
from capsgan.statistics import (
    Arm,
    Cost,
    best_within,
    bootstrap,
    censored_ratio,
    cost_to_level,
    mean_cost,
    pick_baseline,
    rank_test,
    ratio_test,
    smallest_p,
)
from capsgan.training import train
from tests.conftest import CONF_DIR, ROOT, TINY_CAPSULES, TINY_OVERRIDES, compose_train_cfg

# -- statistics over seeds, by hand ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "low_at_least", "high_at_most"),
    [
        ([0.98, 0.99, 1.0], 0.98, 1.0),  # precision near 1: a t-interval went past 1
        ([0.0, 0.01, 0.3], 0.0, 0.3),  # near 0: never below
        ([100.0, 120.0, 4000.0], 100.0, 4000.0),  # FID with an outlier: never below 0
        ([-1.5, 2.0, 130.0], -1.5, 130.0),  # KID (an unbiased estimate can be negative)
    ],
)
def test_bootstrap_interval_stays_within_the_values(
    values: list[float], low_at_least: float, high_at_most: float
) -> None:
    est = bootstrap(values)
    assert est.mean == pytest.approx(sum(values) / 3) and est.n == 3
    assert low_at_least <= est.low <= est.mean <= est.high <= high_at_most
    assert bootstrap(values) == est  # a fixed generator: a re-rendered report is identical


def test_bootstrap_edge_cases() -> None:
    assert bootstrap([5.0, 5.0]) == bootstrap([5.0, 5.0]) and bootstrap([5.0, 5.0]).low == 5.0
    one = bootstrap([5.0, None, math.nan])  # missing and non-finite values are left out
    assert (one.mean, one.low, one.high, one.n) == (5.0, None, None, 1)
    assert bootstrap([]) is None
    ratio = bootstrap([0.5, 2.0], geometric=True)
    assert ratio.mean == pytest.approx(1.0) and 0.5 <= ratio.low <= ratio.high <= 2.0


def test_rank_test_exact_p_values() -> None:
    # every permutation counted: 3 vs 3 seeds have C(6, 3) = 20, the extreme ones 2 of them
    assert rank_test([1, 2, 3], [4, 5, 6]) == pytest.approx(0.1) == smallest_p(3, 3)
    assert rank_test([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]) == pytest.approx(2 / 252)
    assert smallest_p(5, 5) == pytest.approx(2 / 252)
    assert rank_test([1, 2, 3], [1, 2, 3]) == 1.0 and rank_test([4, 4], [4, 4]) == 1.0
    # interleaved: ranks 1, 3, 5 vs 2, 4, 6 -> a difference of -1; 8 of 20 are as extreme
    assert rank_test([1, 3, 5], [2, 4, 6]) == pytest.approx(0.7)
    assert rank_test([], [1.0]) is None


def test_cost_to_level_interpolates_between_evaluations_and_censors() -> None:
    steps = [468, 936, 1404]
    # two seeds that cross 300 between the same two evaluations no longer tie at 936
    a = cost_to_level(steps, [400, 250, 150], 300, 1404)
    b = cost_to_level(steps, [400, 290, 150], 300, 1404)
    assert a == Cost(468 + 468 * (400 - 300) / (400 - 250))  # 780
    assert b == Cost(468 + 468 * 100 / 110) and a.value < b.value < 936
    assert cost_to_level(steps, [200, 150, 100], 300, 1404) == Cost(468)  # met at the first
    never = cost_to_level(steps, [400, 350, 320], 300, 1404)
    assert never == Cost(1404, censored=True)
    assert cost_to_level(steps, [400, math.nan, 280], 300, 1404) == Cost(1404)  # no line


def test_a_seed_that_never_reaches_a_level_is_a_bound_not_a_gap() -> None:
    # the MNIST audit: two capsule seeds reach the level in the cnn's steps, one never does
    # within its 4680-step budget while that cnn seed took 3700 steps
    arm = {1: Cost(1873), 2: Cost(4680, censored=True), 3: Cost(1873)}
    base = {1: Cost(1873), 2: Cost(3700), 3: Cost(1873)}
    ratio = censored_ratio(arm, base)
    assert ratio.per_seed == {1: (1.0, ""), 2: (pytest.approx(4680 / 3700), ">="), 3: (1.0, "")}
    assert ratio.estimate.bound == ">="
    assert ratio.estimate.mean == pytest.approx((4680 / 3700) ** (1 / 3))  # not 1.00
    assert ratio.estimate.high == pytest.approx(4680 / 3700)
    # dropping seed 2 would have read 1.00 [1.00, 1.00]; the mean cost is a bound as well
    assert mean_cost(list(arm.values())).bound == ">="
    assert mean_cost(list(base.values())).bound == ""
    # a censored cost ranks above every reached one: 3 vs 3 seeds, all of the arm slower
    slow = {s: Cost(4680, censored=True) for s in (1, 2, 3)}
    assert ratio_test(slow, {1: Cost(500), 2: Cost(900), 3: Cost(700)}) == pytest.approx(0.1)


def test_baseline_censored_and_neither_reached() -> None:
    ratio = censored_ratio(
        {1: Cost(500), 2: Cost(900, True)}, {1: Cost(1000, True), 2: Cost(800, True)}
    )
    assert ratio.per_seed == {1: (0.5, "<=")} and ratio.neither == [2]
    assert ratio.estimate.bound == "<="
    mixed = censored_ratio({1: Cost(900, True), 2: Cost(500)}, {1: Cost(300), 2: Cost(900, True)})
    assert mixed.estimate.bound == "~"  # bounds both ways: neither direction is known
    assert censored_ratio({1: Cost(1)}, {2: Cost(1)}).unpaired == [1, 2]


def test_best_within() -> None:
    steps, values = [100, 200, 300, 400], [90.0, math.nan, 40.0, 50.0]
    assert best_within(steps, values, 300) == 40.0
    assert best_within(steps, values, 250) == 90.0
    assert best_within(steps, values, 50) is None


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([100, 90, 80, 70, 60], None),  # still improving
        ([100, 90, 89, 89.5, 88], 4),  # <5 % better for three evaluations
        ([100, 50, 60, 55, 52], 4),  # oscillating above the best
        ([100, 98], None),  # too short to judge
    ],
)
def test_plateau_rule(values: list[float], expected: int | None) -> None:
    assert flattened_at(values, window=3, tolerance=0.05) == expected


def test_plateau_rule_waits_for_min_evals() -> None:
    values = [100, 99, 99, 99, 99, 99]
    assert flattened_at(values, window=3, tolerance=0.05) == 3
    assert flattened_at(values, window=3, tolerance=0.05, min_evals=6) == 5


def test_a_curve_that_rose_above_its_best_is_degraded_not_flattened() -> None:
    steps = [468 * (i + 1) for i in range(6)]
    rising = [300, 200, 180, 190, 230, 260]  # best at step 1404, then worse
    n = flattened_at(rising, window=3, tolerance=0.05)
    assert n == 5 and plateau_verdict(steps, rising, n) == "degraded after step 1404"
    flat = [300, 200, 180, 181, 179, 182]
    n = flattened_at(flat, window=3, tolerance=0.05)
    assert plateau_verdict(steps, flat, n) == f"flattened at step {steps[n]}"


# -- synthetic runs: the report's tables ------------------------------------------------------


def fake_run(
    folder: Path,
    discriminator: str,
    seed: int,
    fids: list[float],
    seconds_per_eval: float,
    every: int = 100,
    status: str | None = None,
) -> Path:
    """A run folder with Lightning-like events: val/* every ``every`` generator steps."""
    (folder / ".hydra").mkdir(parents=True)
    cfg = {
        "seed": seed,
        "d_steps_per_g": 1,
        "data": {"name": "mnist"},
        "metrics": {"num_samples": 500, "classifier_path": None},
        "callbacks": {"stop_on_plateau": {"window": 2, "tolerance": 0.05, "min_evals": 0}},
    }
    OmegaConf.save(cfg, folder / ".hydra/config.yaml")
    hydra = {
        "hydra": {
            "runtime": {"choices": {"discriminator": discriminator, "data": "mnist"}},
            "overrides": {"task": [f"seed={seed}", f"discriminator={discriminator}"]},
        }
    }
    OmegaConf.save(hydra, folder / ".hydra/hydra.yaml")
    if status:
        (folder / "job.json").write_text(json.dumps({"status": status}))
    writer = SummaryWriter(str(folder / "tensorboard"))
    start = time.time()
    writer.add_scalar("epoch", 0, 0, walltime=start)
    for i, fid in enumerate(fids):
        step, wall = every * (i + 1) - 1, start + seconds_per_eval * (i + 1)  # Lightning's step
        for tag, value in (("val/fid", fid), ("val/modes", 10.0), ("val/precision", 0.7),
                           ("val/recall", 0.5), ("val/metric_seconds", 1.0)):  # fmt: skip
            writer.add_scalar(tag, value, step, walltime=wall)
    # the discriminator's accuracy: a peak early, then settling at 0.5 (8 logged points)
    for j, acc in enumerate([0.6, 1.0, 0.9, 0.7, 0.5, 0.5, 0.5, 0.5][: 2 * len(fids)]):
        step = every // 2 * (j + 1) - 1
        writer.add_scalar("train/d_acc", acc, step, walltime=start + seconds_per_eval * j / 2)
    writer.close()
    return folder


@pytest.fixture
def synthetic_sweep(tmp_path: Path) -> Path:
    sweep = tmp_path / "sweep"
    # cnn: best FID within 1/2 of the steps 60 and 70 -> a level of 65; best overall 30, 20
    fake_run(sweep / "0", "cnn", 1, [100, 60, 40, 30], 10.0)
    fake_run(sweep / "1", "cnn", 2, [100, 70, 30, 20], 10.0)
    # capsule: reaches 65 at step 100 (seed 1) and 200 (seed 2); never reaches 25
    fake_run(sweep / "2", "capsule_small", 1, [50, 40, 35, 34], 30.0)
    fake_run(sweep / "3", "capsule_small", 2, [80, 60, 58, 200], 30.0)  # collapses at the end
    return sweep


def report_rows(text: str, section: str) -> list[list[str]]:
    """The table rows of one ``## section`` of report.md, split into cells."""
    part = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("| ").split(" | ") for line in part.splitlines() if line.startswith("| ")]
    return rows[1:]  # without the head


def test_synthetic_sweep_levels_ratios_and_stability(synthetic_sweep: Path) -> None:
    report = write_report([synthetic_sweep], measure_floor_fid=False)
    assert report == synthetic_sweep / "report.md"
    text = report.read_text()
    assert text.startswith("# Comparison report: discriminator\n")
    assert (
        "Budget: **400 generator steps for every arm**, evaluated at steps 100, 200, 300, 400"
        in text
    )
    # levels: the cnn arm's mean best FID within 1/4, 1/2 and all of its 400 steps
    # (1/4 = step 100: 100 and 100; 1/2 = step 200: 60, 70; all: 30, 20)
    assert "**100.0**, **65.0**, **25.0**" in text
    budget = {row[0]: row for row in report_rows(text, "At the budget")}
    assert budget["cnn"][3] == "25.0 [20.0, 30.0]"  # best FIDs 30, 20: within their range
    assert budget["capsule_small"][4] == "117.0 [34.0, 200.0]"  # ends at 34 and 200
    assert budget["capsule_small"][8] == "1/2"  # collapsed: seed 2 ends at 200 > 1.5 x 58
    tests = {(row[0], row[1]): row for row in report_rows(text, "Against the baseline")}
    # 2 vs 2 seeds: the smallest possible p is 2 / C(4, 2) = 0.333
    assert tests[("capsule_small", "FID")][5] == "p = 0.333 (not significant)"
    assert "smallest possible p is 0.333" in text
    levels = {row[0]: row for row in report_rows(text, "Generator steps and minutes")}
    # to 65, interpolated: cnn seed 1 100 -> 60 between steps 100 and 200: 100 + 100 * 35/40
    # = 187.5; seed 2 70 -> 30 between 200 and 300: 200 + 100 * 5/40 = 212.5
    assert levels["cnn"][2] == "200 [188, 212] (2/2)"
    # to 25: cnn seed 1 ends at 30 (censored at its budget, 400), seed 2 at 350 -> a bound
    assert levels["cnn"][3] == ">= 375 [350, 400] (1/2)"
    assert levels["capsule_small"][3] == ">= 400 [400, 400] (0/2)"
    ratios = {(row[0], row[1]): row for row in report_rows(text, "Ratios to the baseline")}
    # to 65: capsule seed 1 is at 50 by step 100; seed 2 crosses 80 -> 60 at 175;
    # cnn at 187.5 and 212.5
    steps = ratios[("capsule_small", "65.0")][2]
    assert f"seeds 1: {100 / 187.5:.2f}, 2: {175 / 212.5:.2f}" in steps
    # to 25: seed 2 of the arm never got there, cnn seed 2 did at 350: a bound >= 400/350
    never = ratios[("capsule_small", "25.0")][2]
    assert never.startswith(f">= {400 / 350:.2f}") and "neither reached it: seeds [1]" in never
    grid = report_rows(text, "Every evaluation")  # FID first, then precision, recall, modes
    assert grid[0] == ["100", "100.0 [100.0, 100.0]", "65.0 [50.0, 80.0]"]
    assert len(grid) == 4 + 3 * (1 + 4)  # FID's 4 steps, then 3 tables with their heads
    assert "### KID" not in text  # logged by no run
    runs = {row[0]: row for row in report_rows(text, "Runs")}
    assert runs["`3`"][4] == "58.0 (300)" and runs["`3`"][5] == "200.0"
    stability = {row[0]: row for row in report_rows(text, "Stability")}
    assert stability["`3`"][4] == "final FID 200 > 1.5 x best"
    assert stability["`3`"][5] == "no"  # it trained its whole budget: not stopped early
    # trailing 5-point means 0.6, 0.8, 0.83, 0.8, ...: the peak is the third point (step 150)
    assert stability["`0`"][6] == "0.83 (150)" and stability["`0`"][7] == "0.50 (0.00)"
    for plot in ("fid.png", "training_curves.png"):
        assert (synthetic_sweep / plot).stat().st_size > 0


def test_report_re_renders_from_its_csvs_alone(synthetic_sweep: Path, tmp_path: Path) -> None:
    first = write_report([synthetic_sweep], out_dir=tmp_path / "a", measure_floor_fid=False)
    curves = (tmp_path / "a" / "curves.csv").read_text().splitlines()
    assert curves[0].startswith("run,step,seconds,") and "val/fid" in curves[0]
    # one row per step: the epoch marker at 1, d_acc every 50 (its evaluations at 100..400 too)
    assert [c.split(",")[1] for c in curves if c.startswith("3,")] == [
        "1",
        *map(str, range(50, 401, 50)),
    ]
    copy = tmp_path / "b"
    copy.mkdir()
    for name in ("curves.csv", "runs.csv"):
        (copy / name).write_text((tmp_path / "a" / name).read_text())
    again = write_report([copy], measure_floor_fid=False)
    assert again == copy / "report.md"
    strip = lambda t: t.split("## Plots")[0]  # noqa: E731 (the plots' list may differ)
    assert strip(again.read_text()) == strip(first.read_text())


def test_a_stopped_run_that_got_worse_is_degraded(tmp_path: Path) -> None:
    sweep = tmp_path / "s"
    fake_run(sweep / "0", "cnn", 1, [300, 200, 180, 190, 230, 260], 1.0)
    fake_run(sweep / "1", "cnn", 2, [300, 200, 180, 181, 179, 182], 1.0)
    for job in ("0", "1"):  # both stopped by the plateau rule before a budget of 1000 steps
        cfg_path = sweep / job / ".hydra" / "config.yaml"
        cfg = OmegaConf.load(cfg_path)
        cfg.callbacks.stop_on_plateau = {"window": 3, "tolerance": 0.05, "min_evals": 0}
        cfg.trainer = {"max_steps": 1000}
        OmegaConf.save(cfg, cfg_path)
    text = write_report([sweep], measure_floor_fid=False).read_text()
    stability = {row[0]: row for row in report_rows(text, "Stability")}
    assert stability["`0`"][5] == "degraded after step 300"
    assert stability["`1`"][5] == "flattened at step 600"


def test_failed_jobs_are_listed_and_the_good_ones_reported(synthetic_sweep: Path) -> None:
    fake_run(synthetic_sweep / "4", "capsule_small", 3, [90], 30.0, status="failed")
    (synthetic_sweep / "5" / ".hydra").mkdir(parents=True)  # failed before any event
    (synthetic_sweep / "5" / "job.json").write_text(json.dumps({"status": "failed"}))
    text = write_report([synthetic_sweep], measure_floor_fid=False).read_text()
    assert "Left out (did not finish, or logged no val/fid): `4` (failed); `5` (failed)." in text
    assert "4 runs in 2 arms" in text


def test_interrupted_killed_and_crashed_runs_are_named_with_how_they_ended(
    synthetic_sweep: Path,
) -> None:
    fake_run(synthetic_sweep / "4", "cnn", 3, [90], 1.0, status="interrupted")
    fake_run(synthetic_sweep / "5", "cnn", 4, [90], 1.0, status="running")  # nobody holds it
    single = fake_run(synthetic_sweep / "6", "cnn", 5, [90], 1.0)
    session = {"status": "crashed", "message": "RuntimeError: boom\nmore"}
    (single / "run_info.json").write_text(json.dumps({"sessions": [session]}))
    text = write_report([synthetic_sweep], measure_floor_fid=False).read_text()
    assert "`4` (interrupted); `5` (killed); `6` (crashed: RuntimeError: boom)." in text
    assert "run again with the same `hydra.sweep.dir=<sweep>`" in text


def test_a_run_still_training_is_reported_with_its_evaluations_so_far(
    synthetic_sweep: Path,
) -> None:
    from capsgan.locks import hold_run_folder, release_run_folder

    live = fake_run(synthetic_sweep / "4", "cnn", 3, [90, 80], 1.0, status="running")
    session = {"status": "running", "pid": 4242, "started": "2026-12-04T10:00:00+00:00"}
    (live / "run_info.json").write_text(json.dumps({"sessions": [session]}))
    hold_run_folder(live)  # a live process trains it
    try:
        text = write_report([synthetic_sweep], measure_floor_fid=False).read_text()
    finally:
        release_run_folder(live)
    assert "Still training (reported with its evaluations so far): `4` (pid 4242, started" in text
    assert "5 runs in 2 arms" in text and "resume" not in text.lower()


def test_all_failed_sweep_says_so(tmp_path: Path) -> None:
    fake_run(tmp_path / "s" / "0", "cnn", 1, [90], 1.0, status="failed")
    with pytest.raises(UserError, match="none of the 1 runs found can be reported"):
        write_report([tmp_path / "s"], measure_floor_fid=False)


def test_baseline_is_the_first_arm_unless_chosen(synthetic_sweep: Path) -> None:
    text = write_report([synthetic_sweep], measure_floor_fid=False).read_text()
    assert "baseline arm: **cnn**" in text  # job 0's arm: the first value of the sweep
    text = write_report([synthetic_sweep], baseline="capsule_small", measure_floor_fid=False)
    ratios = report_rows(text.read_text(), "Ratios to the baseline")
    assert {row[0] for row in ratios} == {"cnn"}
    with pytest.raises(UserError, match=r"no arm is the baseline 'dcgan'.*baseline=<one of them>"):
        write_report([synthetic_sweep], baseline="dcgan", measure_floor_fid=False)


def test_arms_that_differ_by_a_swept_key_and_a_generator_sweep_title(tmp_path: Path) -> None:
    sweep = tmp_path / "s"
    for job, (lr, seed) in enumerate([("1e-4", 1), ("2e-4", 1), ("1e-4", 2), ("2e-4", 2)]):
        run = fake_run(sweep / str(job), "cnn", seed, [100, 80 - job], 1.0)
        hydra = OmegaConf.load(run / ".hydra/hydra.yaml")
        hydra.hydra.runtime.choices = {"generator": "dcgan", "discriminator": "cnn"}
        hydra.hydra.overrides.task.append(f"lr={lr}")
        OmegaConf.save(hydra, run / ".hydra/hydra.yaml")
    text = write_report([sweep], measure_floor_fid=False).read_text()
    assert text.startswith("# Comparison report: lr\n")
    assert "baseline arm: **lr=1e-4**" in text
    assert {row[0] for row in report_rows(text, "Ratios to the baseline")} == {"lr=2e-4"}


def test_a_baseline_named_by_some_of_its_words() -> None:
    names = ["discriminator=cnn lr=0.0002 lr_d=null", "discriminator=cnn lr=0.0002 lr_d=0.0004"]
    names.append("discriminator=capsule_small lr=0.0002 lr_d=null")
    arms = [Arm(name, []) for name in names]
    assert pick_baseline(arms, "discriminator=cnn lr_d=null") is arms[0]
    assert pick_baseline(arms, "capsule_small") is arms[2]  # a value alone
    with pytest.raises(UserError, match=r"several arms match the baseline 'cnn'.*0.0004']"):
        pick_baseline(arms, "cnn")
    with pytest.raises(UserError, match=r"no arm is the baseline 'lr=1'"):
        pick_baseline(arms, "lr=1")


def test_a_run_without_the_swept_key_is_named_by_its_config_value(tmp_path: Path) -> None:
    # E2's shape: the preset's runs set no routing_iterations, the ablations set 1 or 5
    for name, routing, seed in [("a", None, 1), ("b", None, 2), ("c", 1, 1), ("d", 1, 2)]:
        run = fake_run(tmp_path / name, "capsule_small", seed, [100, 90], 1.0)
        cfg = OmegaConf.load(run / ".hydra/config.yaml")
        cfg.discriminator = {"routing_iterations": routing or 3, "head": "fc"}
        OmegaConf.save(cfg, run / ".hydra/config.yaml")
        if routing:
            hydra = OmegaConf.load(run / ".hydra/hydra.yaml")
            hydra.hydra.overrides.task.append(f"discriminator.routing_iterations={routing}")
            OmegaConf.save(hydra, run / ".hydra/hydra.yaml")
    text = write_report(sorted(tmp_path.iterdir()), measure_floor_fid=False).read_text()
    assert "baseline arm: **discriminator.routing_iterations=3**" in text  # not "=-"
    rows = {row[0] for row in report_rows(text, "Ratios to the baseline")}
    assert rows == {"discriminator.routing_iterations=1"}


def test_runs_that_cannot_be_compared_name_the_setting(synthetic_sweep: Path) -> None:
    cfg_path = synthetic_sweep / "3" / ".hydra" / "config.yaml"
    cfg = OmegaConf.load(cfg_path)
    cfg.metrics.num_samples = 10000
    OmegaConf.save(cfg, cfg_path)
    with pytest.raises(UserError, match=r"differ in `metrics.num_samples`: 500 \(3 runs"):
        write_report([synthetic_sweep], measure_floor_fid=False)


def test_run_folders_one_by_one_and_errors(synthetic_sweep: Path, tmp_path: Path) -> None:
    runs = find_runs([synthetic_sweep / "2", synthetic_sweep / "0"])
    assert [p.name for p in runs] == ["2", "0"]
    report = write_report(runs, levels=[50.0], measure_floor_fid=False)
    assert report.parent == synthetic_sweep.resolve()  # the common parent
    assert "**50.0** -- given with levels=" in report.read_text()
    run = load_run(synthetic_sweep / "0")
    assert run.series("val/fid").steps == [100, 200, 300, 400]  # generator steps
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no training runs"):
        write_report([tmp_path / "empty"])
    with pytest.raises(UserError, match="not a folder"):
        write_report([tmp_path / "missing"])
    (tmp_path / "a_file").write_text("")
    with pytest.raises(
        UserError, match=r"cannot be written into .*a file, not a folder.*out=<a folder"
    ):
        write_report([synthetic_sweep], out_dir=tmp_path / "a_file" / "report")


# -- real runs ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def short_runs(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two toy runs (cnn, capsule_small) evaluated every 2 generator steps, same seed."""
    sweep = tmp_path_factory.mktemp("report") / "sweep"
    jobs = {
        "0": ["discriminator=cnn"],
        "1": [
            "discriminator=capsule_small",
            *(f"discriminator.{k}={v}" for k, v in TINY_CAPSULES.items()),
        ],
    }
    for job, overrides in jobs.items():
        cfg = compose_train_cfg(
            [*TINY_OVERRIDES, *overrides, "seed=1", "trainer.max_steps=6",
             "trainer.val_check_interval=2", "trainer.limit_val_batches=1",
             "callbacks.sample_grid.every_n_steps=2",
             "callbacks.model_checkpoint.filename='s{step}'"]
        )  # fmt: skip
        with open_dict(cfg):
            cfg.paths.output_dir = str(sweep / job)
            cfg.data.root = str(tiny_data_dir)
        train(cfg)
        (sweep / job / ".hydra").mkdir()
        OmegaConf.save(cfg, sweep / job / ".hydra" / "config.yaml")
        choices = {"hydra": {"runtime": {"choices": {"discriminator": overrides[0][14:]}}}}
        OmegaConf.save(choices, sweep / job / ".hydra" / "hydra.yaml")
    return sweep


def test_report_on_short_training_runs(short_runs: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "src" / "report.py"), str(short_runs), "floor=false",
         f"out={tmp_path}"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = (tmp_path / "report.md").read_text()
    runs = {row[1]: row for row in report_rows(text, "Runs")}
    assert runs["cnn"][3] == "6" and runs["capsule_small"][3] == "6"  # generator steps
    grid = report_rows(text, "Every evaluation")
    assert [row[0] for row in grid[:3]] == ["2", "4", "6"]  # FID at each evaluation
    assert len(grid[0]) == 3  # the step, then both arms
    for plot in ("fid.png", "training_curves.png", "samples.png", "curves.csv", "runs.csv"):
        assert (tmp_path / plot).stat().st_size > 0
    assert sorted(p.name for p in (short_runs / "0" / "samples").glob("step_*")) == [
        "step_000002.png",
        "step_000004.png",
        "step_000006.png",
    ]


@pytest.mark.slow
def test_report_cli_error_is_one_paragraph(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "src" / "report.py"), str(tmp_path / "missing")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.startswith("Error: ") and "Traceback" not in proc.stderr
    proc = subprocess.run(
        [sys.executable, str(ROOT / "src" / "report.py"), str(tmp_path), "--out", "/proc/x"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "cannot be written into '/proc/x'" in proc.stderr


def test_stop_on_plateau_ends_a_real_run(make_cfg) -> None:
    cfg = make_cfg(
        "discriminator=cnn",
        "trainer.max_steps=40",
        "trainer.val_check_interval=2",
        "trainer.limit_val_batches=1",
        "callbacks.model_checkpoint.filename='s{step}'",
        # window 1, tolerance 0.99: anything but a 100x drop counts as flat
        "+callbacks.stop_on_plateau={_target_: capsgan.convergence.StopOnPlateau, window: 1,"
        " tolerance: 0.99, min_evals: 2}",
    )
    train(cfg)
    run = load_run(cfg.paths.output_dir)
    assert run.series("val/fid").steps == [2, 4]  # stopped at the second evaluation


def test_convergence_preset_sweeps_three_arms_over_three_seeds() -> None:
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose(
            config_name="train", overrides=["experiment=convergence"], return_hydra_config=True
        )
    params = dict(cfg.hydra.sweeper.params)
    assert params == {"seed": "1,2,3", "discriminator": "cnn,cnn_matched,capsule_small"}
    assert cfg.trainer.val_check_interval == cfg.callbacks.sample_grid.every_n_steps
    assert cfg.data.train_subset is None and cfg.data.val_subset is None  # full MNIST


def test_sweep_summary_shows_final_beside_best_and_flags_a_collapse(synthetic_sweep) -> None:
    from capsgan.sweep import metric_summary

    collapsed = metric_summary(synthetic_sweep / "3", "val/fid")  # 80, 60, 58, 200
    assert (collapsed["best"], collapsed["best_step"], collapsed["final"]) == (58, 300, 200)
    assert collapsed["flag"] == f"final 200 is {200 / 58:.2f}x the best"
    steady = metric_summary(synthetic_sweep / "0", "val/fid")  # 100, 60, 40, 30
    assert (steady["best"], steady["final"], steady["flag"]) == (30, 30, None)
    assert metric_summary(synthetic_sweep / "0", "val/kid")["best"] is None  # never logged


def test_time_between_the_sessions_of_a_resumed_run_is_not_training_time(tmp_path: Path) -> None:
    from datetime import datetime

    from capsgan.runs import session_pauses

    sessions = [
        {"started": "2026-11-25T08:00:00+00:00", "ended": "2026-11-25T08:30:00+00:00"},
        {"started": "2026-11-25T10:00:00+00:00", "ended": "2026-11-25T10:20:00+00:00"},
        {"started": "2026-11-25T10:20:00+00:00", "ended": None},  # still running: no pause
    ]
    (tmp_path / "run_info.json").write_text(json.dumps({"sessions": sessions}))
    ((begin, end),) = session_pauses(tmp_path)
    assert end - begin == 90 * 60
    assert begin == datetime.fromisoformat("2026-11-25T08:30:00+00:00").timestamp()
    assert session_pauses(tmp_path / "missing") == []


def test_plateau_check_flags_a_stop_after_which_the_run_improved(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "plateau_check", ROOT / "docs" / "results" / "plateau_check.py"
    )
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    folder = tmp_path / "results" / "x"
    folder.mkdir(parents=True)
    rows = ["run,step,seconds,val/fid"]
    # run a: flat from evaluation 4 on, then falls by a third: a wrong stop
    for i, fid in enumerate([400, 300, 200, 190, 195, 192, 191, 120, 110]):
        rows.append(f"a,{468 * (i + 1)},{i},{fid}")
    # run b: flat at the end and stays flat: a right stop
    for i, fid in enumerate([400, 300, 200, 190, 195, 192, 191, 190, 189]):
        rows.append(f"b,{468 * (i + 1)},{i},{fid}")
    (folder / "curves.csv").write_text("\n".join(rows) + "\n")
    assert check.main([str(tmp_path / "results")]) == 1
    (folder / "curves.csv").write_text("\n".join(r for r in rows if not r.startswith("a,")))
    assert check.main([str(tmp_path / "results")]) == 0


def test_report_cli_reads_both_option_spellings_and_refuses_unknown_ones() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("report_cli", ROOT / "src" / "report.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    paths, options = cli.parse(["a", "--out", "o", "baseline=cnn", "--levels=300,200", "b"])
    assert paths == ["a", "b"]
    assert options == {"out": "o", "baseline": "cnn", "levels": "300,200"}
    assert cli.parse(["a", "--no-floor"])[1] == {"floor": "false"}
    for wrong in ("--no-floor=yes", "--fast", "--floor"):  # a flag that takes no value, and typos
        with pytest.raises(UserError, match="has no option"):
            cli.parse(["a", wrong])
    with pytest.raises(UserError, match="at least one folder"):
        cli.parse(["out=o"])
