"""The command line: bad input ends with exit code 2 and one ``Error:`` paragraph, no
traceback (unless HYDRA_FULL_ERROR=1); a good run prints no library noise; ``--help``
lists every preset."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from capsgan import cli as capsgan_cli
from capsgan.training import train
from tests.conftest import ROOT, TINY_OVERRIDES
from tests.helpers import assert_one_paragraph, cli, run_info, script

pytestmark = pytest.mark.usefixtures("one_thread")


# -- bad input: exit code 2, one paragraph, no traceback ----------------------------------


def test_cli_bad_config_exits_2_with_one_paragraph(tiny_data_dir: Path, tmp_path: Path) -> None:
    proc = cli(tmp_path, "lr=-1", f"hydra.run.dir={tmp_path / 'run'}", data=tiny_data_dir)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Error: `lr`" in proc.stderr and "> 0" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_cli_hydra_full_error_shows_the_traceback(tiny_data_dir: Path, tmp_path: Path) -> None:
    proc = cli(
        tmp_path,
        "lr=-1",
        f"hydra.run.dir={tmp_path / 'run2'}",
        env={"HYDRA_FULL_ERROR": "1"},
        data=tiny_data_dir,
    )
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_cli_missing_data_exits_2(tmp_path: Path) -> None:
    proc = cli(tmp_path, f"hydra.run.dir={tmp_path / 'run'}", data=tmp_path / "no_data")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "not found" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_negative_thread_count_exits_2_and_is_recorded(tiny_data_dir, tmp_path) -> None:
    run = tmp_path / "run"
    proc = cli(tmp_path, "threads=-1", f"hydra.run.dir={run}", data=tiny_data_dir)
    assert_one_paragraph(proc, "`threads`", ">= 1")
    assert run_info(run)["status"] == "failed"


def test_cli_batch_larger_than_the_data_set_exits_2(tiny_data_dir, tmp_path) -> None:
    run = tmp_path / "run"
    proc = cli(tmp_path, "data.batch_size=1000", f"hydra.run.dir={run}", data=tiny_data_dir)
    assert_one_paragraph(proc, "nothing would be trained")
    assert run_info(run)["status"] == "failed"
    assert not (run / "checkpoints").exists()


@pytest.mark.slow
def test_cli_generate_bench_and_classifier_exit_2(tmp_path: Path) -> None:
    """The three other Hydra entry points: one paragraph, exit 2, no traceback."""
    assert_one_paragraph(script("generate.py", "steps=1", "ckpt_path=x", cwd=tmp_path), "`steps`")
    assert_one_paragraph(script("bench.py", "repeats=0", cwd=tmp_path), "`repeats`")
    assert_one_paragraph(script("train_classifier.py", "epochs=0", cwd=tmp_path), "`epochs`")


@pytest.mark.slow
def test_cli_scoring_tools_exit_2_before_any_work(inputs, tmp_path: Path) -> None:
    proc = script("evaluate.py", "source=real:test", "out=/proc/capsgan/x.json", cwd=tmp_path,
                  data=Path(inputs["data"]))  # fmt: skip
    assert_one_paragraph(proc, "/proc/capsgan/x.json", "`out`")
    proc = script("battle.py", f"a={inputs['run']}", f"b={inputs['run']}", "num_samples=0",
                  cwd=tmp_path)  # fmt: skip
    assert_one_paragraph(proc, "`num_samples`")
    proc = script("train.py", "seed=-1", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path,
                  data=Path(inputs["data"]))  # fmt: skip
    assert_one_paragraph(proc, "`seed`")
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())["sessions"][-1]
    assert info["status"] == "failed" and "`seed`" in info["message"]


def test_optuna_search_without_its_extra_names_the_install_line(monkeypatch, capsys) -> None:
    monkeypatch.setattr(capsgan_cli.importlib.util, "find_spec", lambda name, *args: None)
    with pytest.raises(SystemExit) as stop:
        capsgan_cli.setup(["lr=1e-4", "hparams_search=capsule_optuna"])
    assert stop.value.code == 2
    assert "pip install -e '.[optuna]'" in capsys.readouterr().err
    capsgan_cli.check_optional_plugins(["lr=1e-4"])  # nothing optional asked for: no exit


# -- what a good run prints ---------------------------------------------------------------


def test_train_cli_prints_no_library_noise_and_real_flops(tiny_data_dir: Path, tmp_path: Path):
    """The whole output of a first run (which also trains the classifier): no Lightning tip,
    no deprecation warning, FLOPs counted, and the classifier's reason, place and time."""
    cmd = [
        sys.executable,
        str(ROOT / "src" / "train.py"),
        "discriminator=cnn",
        "debug=limit",
        *[o for o in TINY_OVERRIDES if "enable_progress_bar" not in o],
        "trainer.limit_train_batches=5",
        f"metrics.classifier_dir={tmp_path / 'classifiers'}",  # a first run: none cached
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    env = {**os.environ, "DATA_DIR": str(tiny_data_dir), "COLUMNS": "200"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    for noise in ("Tip:", "Warning", "warn(", "deprecated", "Total FLOPs: 0 "):
        assert noise not in out, (noise, out[-3000:])
    assert "Total FLOPs" in out
    assert "training it now" in out and str(tmp_path / "classifiers") in out
    assert "82 s" in out and "train_classifier.py data=mnist" in out
    # the run folder at the start and as the last line, with the command that opens it
    assert "run folder: run  (view it: tensorboard --logdir run)" in out
    assert proc.stdout.strip().splitlines()[-1].endswith("tensorboard --logdir run)")


def test_warning_filters_match_only_their_message_and_module() -> None:
    capsgan_cli.quiet_library_noise()
    message = "`isinstance(treespec, LeafSpec)` is deprecated, use ..."
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        capsgan_cli.quiet_library_noise()  # after simplefilter, as in a process that starts fresh
        for module in ("lightning.pytorch.utilities._pytree", "mycode"):
            warnings.warn_explicit(message, FutureWarning, "x.py", 1, module=module)
        warnings.warn_explicit("other", FutureWarning, "x.py", 1, module=module)
    assert [(str(w.message)[:10], w.filename) for w in caught] == [
        (message[:10], "x.py"),
        ("other", "x.py"),
    ]
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    lightning_log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    lightning_log.addHandler(handler)
    try:
        lightning_log.warning("💡 Tip: For seamless cloud logging ...")
        lightning_log.warning("GPU available: False")
    finally:
        lightning_log.removeHandler(handler)
    assert [r.getMessage() for r in records] == ["GPU available: False"]


def test_worker_advice_is_silenced_and_only_it(monkeypatch) -> None:
    """Lightning's own check, on a machine where it would advise 15 workers: silent after
    quiet_library_noise(); another warning of the same category still shows."""
    from lightning.fabric.utilities.warnings import PossibleUserWarning
    from lightning.pytorch.trainer.connectors import data_connector

    monkeypatch.setattr(data_connector, "suggested_max_num_workers", lambda devices: 15)
    trainer = SimpleNamespace(num_devices=1, reload_dataloaders_every_n_epochs=0)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(4, 1)))

    def caught(quiet: bool) -> list[str]:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            if quiet:
                capsgan_cli.quiet_library_noise()
            data_connector._worker_check(trainer, loader, "train_dataloader")
            warnings.warn("another possible problem", PossibleUserWarning, stacklevel=1)
        return [str(w.message)[:40] for w in seen]

    assert caught(quiet=False)[0].startswith("The 'train_dataloader' does not have")
    assert caught(quiet=True) == ["another possible problem"]


def test_slow_epoch_is_announced_once_and_training_goes_on(make_cfg, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="capsgan")
    cfg = make_cfg(
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=6",
        "trainer.limit_val_batches=1",
        "callbacks.epoch_time_warning.threshold_minutes=1e-6",
    )
    train(cfg)
    slow = [r.getMessage() for r in caplog.records if "This run is slow here" in r.getMessage()]
    assert len(slow) == 1
    assert "one epoch of 6 batches" in slow[0] and "2 epochs" in slow[0]
    assert "discriminator=capsule_small" in slow[0] and "trainer.precision=bf16-mixed" in slow[0]
    assert "trainer.limit_train_batches=" in slow[0] and "Training goes on" in slow[0]
    assert (Path(cfg.paths.output_dir) / "checkpoints" / "epoch_0002.ckpt").exists()


def test_help_lists_every_preset_of_every_group_with_its_description() -> None:
    """The help is read from conf/ when shown: a preset added there is listed with the
    `# description:` line of its file, and a file without one is caught here."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "src" / "train.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=600,  # a busy machine starts Python + torch slowly
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    presets = sorted((ROOT / "conf").glob("*/**/*.yaml"))
    assert len(presets) > 30
    for path in presets:
        found = re.search(r"^# description: (.+)$", path.read_text(), re.MULTILINE)
        assert found, f"{path} has no `# description:` line"
        group = str(path.parent.relative_to(ROOT / "conf"))
        if group == "hydra":
            continue  # Hydra's own settings, not an option to pick
        assert f"  {group}=  " in proc.stdout, group
        option = [x for x in lines if x.split()[:1] == [path.stem] and found[1] in x]
        assert option, (path, found[1])
    assert "  hydra/launcher=  (default: basic)" in proc.stdout
    assert "    joblib " in proc.stdout  # a plugin's option too
    assert "discriminator=  (default: capsule)" in proc.stdout
    assert "discriminator=capsule_small debug=limit" in proc.stdout  # the CPU smoke test
    assert "ckpt_path=latest" in proc.stdout
    assert "one-minute" not in proc.stdout
