"""report.py: reading runs' events, the FID-threshold logic, the table and the plots."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict
from torch.utils.tensorboard import SummaryWriter

from capsgan.errors import UserError
from capsgan.report import (
    DEFAULT_FLOOR_MULTIPLE,
    REAL_DATA_FID_FLOOR,
    fid_threshold,
    find_runs,
    first_below,
    load_run,
    write_report,
)
from capsgan.training import train
from tests.conftest import CONF_DIR, ROOT, TINY_CAPSULES, TINY_OVERRIDES, compose_train_cfg

# -- the threshold logic on synthetic curves ---------------------------------------------------


def test_threshold_reached_in_a_later_epoch() -> None:
    crossing = first_below([0, 1, 2, 3], [10.0, 20.0, 30.0, 40.0], [90, 50, 9, 5], 10.0)
    assert (crossing.epochs, crossing.seconds) == (3, 30.0)  # the third epoch, 1-based


def test_threshold_never_reached() -> None:
    crossing = first_below([0, 1, 2], [1.0, 2.0, 3.0], [90, 50, 11], 10.0)
    assert crossing.epochs is None and crossing.seconds is None


def test_threshold_reached_at_epoch_one() -> None:
    crossing = first_below([0, 1], [5.0, 9.0], [3.0, 2.0], 10.0)
    assert (crossing.epochs, crossing.seconds) == (1, 5.0)


def test_threshold_ignores_nan_and_counts_equality_as_reached() -> None:
    crossing = first_below([0, 1, 2], [1.0, 2.0, 3.0], [math.nan, 10.0, 1.0], 10.0)
    assert crossing.epochs == 2


def test_threshold_default_is_a_multiple_of_the_floor_at_the_runs_sample_size(
    synthetic_sweep: Path,
) -> None:
    runs = [load_run(p) for p in find_runs([synthetic_sweep])]
    floor = REAL_DATA_FID_FLOOR[("mnist", 2000)]
    assert fid_threshold(runs)[0] == pytest.approx(DEFAULT_FLOOR_MULTIPLE * floor)
    assert fid_threshold(runs, floor_multiple=2.0)[0] == pytest.approx(2.0 * floor)
    assert fid_threshold(runs, threshold=7.5) == (7.5, "given with --fid-threshold")
    runs[0].fid_setting = ("mnist", 64)  # FIDs from another sample size: no shared floor
    with pytest.raises(UserError, match="--fid-threshold"):
        fid_threshold(runs)


# -- synthetic runs: the summary and the ratio ---------------------------------------------------


def fake_run(folder: Path, discriminator: str, seed: int, fids: list[float],
             epoch_seconds: float) -> Path:  # fmt: skip
    """A run folder with Lightning-like events: an ``epoch`` scalar with every write."""
    target = {"cnn": "CNNDiscriminator", "capsule_small": "CapsuleDiscriminator"}[discriminator]
    (folder / ".hydra").mkdir(parents=True)
    disc = {"_target_": f"capsgan.models.{target}"}
    if discriminator != "cnn":
        disc["routing_iterations"] = 3
    cfg = {"seed": seed, "lr": 2e-4, "discriminator": disc, "metrics": {"num_samples": 2000},
           "data": {"name": "mnist", "val_subset": 2000}}  # fmt: skip
    OmegaConf.save(cfg, folder / ".hydra/config.yaml")
    choices = {"hydra": {"runtime": {"choices": {"discriminator": discriminator}}}}
    OmegaConf.save(choices, folder / ".hydra/hydra.yaml")
    writer = SummaryWriter(str(folder / "tensorboard"))
    start = time.time()  # the writer's first event (file version) is the run's start
    writer.add_scalar("epoch", 0, 0, walltime=start)
    for epoch, fid in enumerate(fids):
        step, wall = 10 * epoch + 9, start + epoch_seconds * (epoch + 1)
        for tag, value in (("epoch/d_loss", 1.0 / (epoch + 1)), ("val/fid", fid), ("epoch", epoch)):
            writer.add_scalar(tag, value, step, walltime=wall)
        writer.add_scalar("train/d_acc", 0.5, step, walltime=wall)
    writer.close()
    return folder


@pytest.fixture
def synthetic_sweep(tmp_path: Path) -> Path:
    sweep = tmp_path / "sweep"
    fake_run(sweep / "0", "cnn", 1, [100, 60, 30, 12, 8, 6], 10.0)  # reaches 10 at epoch 5
    fake_run(sweep / "1", "cnn", 2, [100, 50, 20, 9, 7, 6], 10.0)  # at epoch 4
    fake_run(sweep / "2", "capsule_small", 1, [50, 9, 8], 30.0)  # at epoch 2
    fake_run(sweep / "3", "capsule_small", 2, [40, 20, 5], 30.0)  # at epoch 3
    return sweep


def test_synthetic_sweep_table_summary_and_ratio(synthetic_sweep: Path) -> None:
    report = write_report([synthetic_sweep], threshold=10.0)
    text = report.read_text()
    assert report == synthetic_sweep / "report.md"
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert [r.split(" | ")[0] for r in rows] == ["| `0`", "| `1`", "| `2`", "| `3`"]
    assert "| `0` | cnn | - | 0.000200 | 1 | 6 | 10.0 | 6.00 (6) | 6.00 | 5 | 0.8 |" in text
    assert "| `3` | capsule_small | 3 | 0.000200 | 2 | 3 | 30.0 | 5.00 (3) | 5.00 | 3 | 1.5 |" in (
        text
    )
    # epochs to threshold: capsule (2 + 3) / 2 = 2.5, cnn (5 + 4) / 2 = 4.5
    assert "| cnn | 2 | 10.0 ± 0.0 | 6.00 ± 0.00 | 6.00 ± 0.00 | 2/2 | 4.50 ± 0.71 |" in text
    assert f"epochs to threshold: **{2.5 / 4.5:.2f}**" in text
    # wall-clock: capsule (60 + 90) / 2 = 75 s, cnn (50 + 40) / 2 = 45 s
    assert f"wall-clock to threshold: **{75 / 45:.2f}**" in text
    assert (synthetic_sweep / "fid.png").stat().st_size > 0
    assert (synthetic_sweep / "training_curves.png").stat().st_size > 0


def test_ratio_is_withheld_when_a_run_never_reaches_the_threshold(synthetic_sweep) -> None:
    text = write_report([synthetic_sweep], threshold=7.0).read_text()
    # cnn runs 0 and 1 reach 7 (epoch 6 and 5); capsule run 2 never does
    assert "| `2` | capsule_small | 3 | 0.000200 | 1 | 3 | 30.0 | 8.00 (3) | 8.00 | never |" in text
    assert "not defined, 1 of 2 capsule_small runs never reached it" in text


def test_run_folders_given_one_by_one_and_errors(synthetic_sweep: Path, tmp_path) -> None:
    runs = find_runs([synthetic_sweep / "2", synthetic_sweep / "0"])
    assert [p.name for p in runs] == ["2", "0"]
    report = write_report(runs, threshold=10.0)
    assert report.parent == synthetic_sweep.resolve()  # the common parent
    run = load_run(synthetic_sweep / "0")
    assert run.epochs_run == 6 and run.seconds_per_epoch == pytest.approx(10.0)
    assert run.batches_per_epoch == 10
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no training runs"):
        write_report([tmp_path / "empty"])
    with pytest.raises(UserError, match="not a folder"):
        write_report([tmp_path / "missing"])


# -- real runs ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def short_runs(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 2-epoch toy runs (cnn with the quality metrics, capsule_small without)."""
    sweep = tmp_path_factory.mktemp("report") / "sweep"
    jobs = {
        "0": ["discriminator=cnn"],
        "1": [
            "discriminator=capsule_small",
            *(f"discriminator.{k}={v}" for k, v in TINY_CAPSULES.items()),
            "~callbacks.sample_quality",
            "callbacks.model_checkpoint.monitor=null",
        ],
    }
    for job, overrides in jobs.items():
        cfg = compose_train_cfg(
            [*TINY_OVERRIDES, *overrides, "trainer.max_epochs=2",
             "trainer.limit_train_batches=3", "trainer.limit_val_batches=1"]
        )  # fmt: skip
        with open_dict(cfg):
            cfg.paths.output_dir = str(sweep / job)
            cfg.data.root = str(tiny_data_dir)
        train(cfg)
        (sweep / job / ".hydra").mkdir()
        OmegaConf.save(cfg, sweep / job / ".hydra" / "config.yaml")
    return sweep


def test_report_on_short_training_runs(short_runs: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "src" / "report.py"), str(short_runs),
         "--fid-threshold", "1e9"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = (short_runs / "report.md").read_text()
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| `")]
    assert [(r[0], r[1], r[5]) for r in rows] == [("| `0`", "cnn", "2"), ("| `1`", "capsule", "2")]
    assert rows[0][9] == "1"  # any FID reaches a threshold of 1e9 after the first epoch
    assert rows[1][7] == "-"  # no val/fid in the capsule run
    assert (short_runs / "fid.png").exists() and (short_runs / "training_curves.png").exists()
    run = load_run(short_runs / "0")
    assert run.batches_per_epoch == 3
    assert len(run.per_epoch("val/fid").values) == 2


def test_report_without_quality_metrics_shows_losses_only(short_runs: Path, tmp_path) -> None:
    text = write_report([short_runs / "1"], out_dir=tmp_path).read_text()
    assert "no `val/fid`: losses and accuracy only" in text
    assert "final D loss" in text and "Capsule / CNN" not in text
    assert not (tmp_path / "fid.png").exists() and (tmp_path / "training_curves.png").exists()


def test_compare_discriminators_preset_sweeps_two_discriminators_over_three_seeds() -> None:
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose(
            config_name="train",
            overrides=["experiment=compare_discriminators"],
            return_hydra_config=True,
        )
    assert dict(cfg.hydra.sweeper.params) == {"seed": "1,2,3", "discriminator": "cnn,capsule_small"}
    assert cfg.metrics.num_samples == cfg.data.val_subset  # the sample size the FID floor is for
    assert ("mnist", cfg.metrics.num_samples) in REAL_DATA_FID_FLOOR
