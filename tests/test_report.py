"""report.py and capsgan.convergence: intervals, paired ratios, levels, plateaus, the report."""

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
from scipy.stats import t as student_t
from torch.utils.tensorboard import SummaryWriter

from capsgan.convergence import (
    best_within,
    first_reaching,
    flattened_at,
    paired_ratio,
    t_interval,
)
from capsgan.errors import UserError
from capsgan.report import find_runs, load_run, write_report
from capsgan.training import train
from tests.conftest import CONF_DIR, ROOT, TINY_CAPSULES, TINY_OVERRIDES, compose_train_cfg

# -- arithmetic on synthetic series --------------------------------------------------------------


def test_t_interval_by_hand() -> None:
    iv = t_interval([1.0, 2.0, 3.0])
    half = student_t.ppf(0.975, 2) * 1.0 / math.sqrt(3)  # sd of 1, 2, 3 is 1
    assert iv.mean == 2.0 and iv.n == 3
    assert (iv.low, iv.high) == pytest.approx((2.0 - half, 2.0 + half))
    assert half == pytest.approx(2.484, abs=1e-3)  # t(0.975, 2) = 4.303
    one = t_interval([5.0, None, math.nan])  # missing and non-finite values are left out
    assert (one.mean, one.low, one.high, one.n) == (5.0, None, None, 1)
    assert t_interval([]) is None


def test_paired_ratio_geometric_mean_and_a_seed_that_never_reaches() -> None:
    # seed 1: 100 vs 200 steps (0.5); seed 2: 300 vs 150 (2.0); seed 3: the arm never reached
    ratio = paired_ratio({1: 100, 2: 300, 3: None}, {1: 200, 2: 150, 3: 400})
    assert ratio.ratios == {1: 0.5, 2: 2.0}
    assert ratio.arm_never == [3] and ratio.baseline_never == [] and ratio.unpaired == []
    assert ratio.interval.mean == pytest.approx(1.0)  # geometric mean of 0.5 and 2
    half = student_t.ppf(0.975, 1) * math.log(4) / math.sqrt(2) / math.sqrt(2)
    assert ratio.interval.low == pytest.approx(math.exp(-half))
    assert ratio.interval.high == pytest.approx(math.exp(half))
    other = paired_ratio({1: 10, 4: 5}, {1: None, 2: 7})
    assert other.ratios == {} and other.interval is None
    assert other.baseline_never == [1] and other.unpaired == [2, 4]


def test_first_reaching_and_best_within() -> None:
    steps, values = [100, 200, 300, 400], [90.0, math.nan, 40.0, 50.0]
    assert first_reaching(steps, values, 50.0) == 2  # equality counts; NaN never does
    assert first_reaching(steps, values, 10.0) is None
    assert best_within(steps, values, 250) == 90.0
    assert best_within(steps, values, 400) == 40.0
    assert best_within(steps, values, 50) is None


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([500, 400, 300, 200, 150, 100], None),  # still falling fast: not flat
        ([500, 400, 300, 200, 190, 195, 192, 200], 7),  # 190 then nothing 5 % better
        ([336, 324, 466, 586, 636], 3),  # a collapse flattens it at once
        ([100, 100, 100], None),  # no value before the window yet
    ],
)
def test_plateau_rule(values: list[float], expected: int | None) -> None:
    assert flattened_at(values, window=3, tolerance=0.05) == expected


def test_plateau_rule_waits_for_min_evals() -> None:
    values = [300, 320, 330, 340, 350, 360]
    assert flattened_at(values, window=3, tolerance=0.05) == 3
    assert flattened_at(values, window=3, tolerance=0.05, min_evals=6) == 5


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
    # levels: the cnn arm's mean best FID within 1/4, 1/2 and all of its 400 steps
    # (1/4 = step 100: 100 and 100; 1/2 = step 200: 60, 70; all: 30, 20)
    assert "**100.0**, **65.0**, **25.0**" in text
    per_arm = {row[0]: row for row in report_rows(text, "Per arm")}
    cnn = per_arm["cnn"]
    half = student_t.ppf(0.975, 1) * math.sqrt(50) / math.sqrt(2)  # best FIDs 30 and 20
    assert cnn[2] == f"25.0 [{25 - half:.1f}, {25 + half:.1f}]"
    assert per_arm["capsule_small"][10] == "1/2"  # collapsed: seed 2 ends at 200 > 1.5 x 58
    ratios = {(row[0], row[1]): row for row in report_rows(text, "Paired ratios")}
    # to FID 65: capsule seed 1 at step 100 vs cnn 200 (0.5); seed 2 at 200 vs 300 (2/3)
    steps = ratios[("capsule_small", "65.0")][2]
    assert steps.startswith(f"{math.sqrt(0.5 * 2 / 3):.2f} [") and "seeds 1: 0.50, 2: 0.67" in steps
    # wall-clock: capsule 30 s / cnn 20 s (seed 1), 60 s / 30 s (seed 2)
    assert "seeds 1: 1.50, 2: 2.00" in ratios[("capsule_small", "65.0")][3]
    assert "arm never reached it: seeds [1, 2]" in ratios[("capsule_small", "25.0")][2]
    equal = {row[0]: row for row in report_rows(text, "FID at equal generator steps")}
    assert equal["capsule_small"][1] == f"{65:.1f} [{65 - student_t.ppf(0.975, 1) * 15:.1f}, " \
        f"{65 + student_t.ppf(0.975, 1) * 15:.1f}]"  # fmt: skip
    runs = {row[0]: row for row in report_rows(text, "Runs")}
    assert runs["`3`"][4] == "58.0 (300)" and runs["`3`"][5] == "200.0"
    assert runs["`3`"][6] == "400"  # window 2: neither 58 nor 200 is 5 % below 60
    assert runs["`0`"][6] == "-"  # cnn seed 1 still falling
    stability = {row[0]: row for row in report_rows(text, "Stability")}
    assert stability["`3`"][4] == "final FID 200 > 1.5 x best"
    # trailing 5-point means 0.6, 0.8, 0.83, 0.8, ...: the peak is the third point (step 150)
    assert stability["`0`"][5] == "0.83 (150)" and stability["`0`"][6] == "0.50 (0.00)"
    for plot in ("fid.png", "training_curves.png"):
        assert (synthetic_sweep / plot).stat().st_size > 0


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
    assert "hydra.sweep.dir=<sweep> ckpt_path=last" in text


def test_all_failed_sweep_says_so(tmp_path: Path) -> None:
    fake_run(tmp_path / "s" / "0", "cnn", 1, [90], 1.0, status="failed")
    with pytest.raises(UserError, match="none of the 1 runs found has a finished job"):
        write_report([tmp_path / "s"], measure_floor_fid=False)


def test_baseline_is_chosen_on_the_command_line(synthetic_sweep: Path) -> None:
    text = write_report([synthetic_sweep], baseline="capsule_small", measure_floor_fid=False)
    ratios = report_rows(text.read_text(), "Paired ratios")
    assert {row[0] for row in ratios} == {"cnn"}
    with pytest.raises(UserError, match=r"no arm is the baseline 'dcgan'.*--baseline"):
        write_report([synthetic_sweep], baseline="dcgan", measure_floor_fid=False)


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
    assert "**50.0** -- given with --levels" in report.read_text()
    run = load_run(synthetic_sweep / "0")
    assert run.series("val/fid").steps == [100, 200, 300, 400]  # generator steps
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no training runs"):
        write_report([tmp_path / "empty"])
    with pytest.raises(UserError, match="not a folder"):
        write_report([tmp_path / "missing"])
    (tmp_path / "a_file").write_text("")
    with pytest.raises(UserError, match=r"cannot be written into .*a file, not a folder.*--out"):
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
        [sys.executable, str(ROOT / "src" / "report.py"), str(short_runs), "--no-floor",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = (tmp_path / "report.md").read_text()
    runs = {row[1]: row for row in report_rows(text, "Runs")}
    assert runs["cnn"][3] == "6" and runs["capsule_small"][3] == "6"  # generator steps
    equal = report_rows(text, "FID at equal generator steps")[0]
    assert len(equal) == 4  # the arm, then steps 2, 4 and 6
    for plot in ("fid.png", "training_curves.png", "samples.png"):
        assert (tmp_path / plot).stat().st_size > 0
    assert sorted(p.name for p in (short_runs / "0" / "samples").glob("step_*")) == [
        "step_000002.png",
        "step_000004.png",
        "step_000006.png",
    ]


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

    from capsgan.report import session_pauses

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
