"""Output folders and the disk: an unwritable folder or a full disk is found early and named,
a checkpoint is replaced only by a complete one, and a run folder is held by one run at a
time."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from capsgan import checkpointing
from capsgan.checkpointing import AtomicCheckpointIO
from capsgan.config import check_output_dir, unwritable_reason
from capsgan.errors import ConfigError, RunLockedError, StorageError, user_errors
from capsgan.training import run, train
from tests.conftest import ROOT
from tests.helpers import PY_ENV, assert_one_paragraph, cli, run_info

pytestmark = pytest.mark.usefixtures("one_thread")


# -- an output folder that cannot be written ----------------------------------------------


def test_output_folder_that_cannot_be_written(fast_cfg, tmp_path: Path) -> None:
    a_file = tmp_path / "taken"
    a_file.write_text("")
    cfg = fast_cfg()
    with open_dict(cfg):
        cfg.paths.output_dir = str(a_file / "run")
    with pytest.raises(ConfigError, match="cannot be written") as err:
        train(cfg)
    assert "is a file" in str(err.value) and "hydra.run.dir" in str(err.value)
    check_output_dir(tmp_path / "new" / "deeper")  # a folder that does not exist yet is fine


def test_cli_unwritable_output_folder_exits_2(tiny_data_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("")
    proc = cli(tmp_path, f"hydra.run.dir={tmp_path / 'taken' / 'run'}", data=tiny_data_dir)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "cannot be written" in proc.stderr and "hydra.run.dir" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unwritable_folder_is_found_by_trying_even_as_root(tmp_path: Path) -> None:
    assert unwritable_reason("/proc/capsgan-run/x") is not None  # root cannot write there
    assert unwritable_reason(tmp_path / "new" / "deeper") is None


def test_cli_unwritable_output_folder_even_as_root(tiny_data_dir, tmp_path) -> None:
    proc = cli(tmp_path, "hydra.run.dir=/proc/capsgan-run", data=tiny_data_dir)
    assert_one_paragraph(proc, "cannot be written", "hydra.run.dir")


def test_the_write_probe_is_not_an_empty_file(tmp_path: Path) -> None:
    """A disk with room for an empty file but not for the first real one (simulated by a
    file-size limit of 1 KiB) used to pass the check, then fail in Hydra's .hydra/ write."""
    code = (
        "import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024)); "
        "from capsgan.config import unwritable_reason; print(unwritable_reason(sys.argv[1]))"
    )
    env = {**PY_ENV, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert "can be written" in out.stdout and "KiB" in out.stdout, out.stdout + out.stderr
    assert unwritable_reason(tmp_path) is None  # without the limit, the same folder is fine


# -- a full disk, atomic writes -----------------------------------------------------------


def test_checkpoint_write_is_atomic(tmp_path: Path, monkeypatch) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.ones(1000)}, path)

    def killed_midway(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2, "w": torch.zeros(1000)}, path)
    monkeypatch.undo()
    assert torch.load(path)["step"] == 1  # the previous complete file
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temp file left


def test_full_disk_names_the_file_and_keeps_the_old_checkpoint(two_batch_cfg, monkeypatch, capsys):
    real_save, calls = torch.save, []

    def save_until_the_disk_fills(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpointing.torch, "save", save_until_the_disk_fills)
    cfg = two_batch_cfg(
        "trainer.limit_train_batches=4", "callbacks.last_checkpoint.every_n_train_steps=2"
    )
    with pytest.raises(SystemExit) as exit_:
        run(cfg)  # the entry point's own function, in this process
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Error: could not write" in err and "last.ckpt" in err and "no space left" in err
    assert "Traceback" not in err
    ckpts = Path(cfg.paths.output_dir) / "checkpoints"
    monkeypatch.undo()
    assert torch.load(ckpts / "last.ckpt", weights_only=False)["global_step"] == 2
    assert not list(ckpts.glob(".*.tmp"))
    assert run_info(Path(cfg.paths.output_dir))["status"] == "failed"


def test_user_errors_boundary_turns_a_full_disk_into_one_paragraph(capsys) -> None:
    with pytest.raises(SystemExit) as exit_, user_errors():
        raise OSError(errno.ENOSPC, "No space left on device", "/data/out/samples.png")
    assert exit_.value.code == 2
    assert "'/data/out/samples.png'" in capsys.readouterr().err
    with pytest.raises(ZeroDivisionError), user_errors():  # a bug is not bad input
        raise ZeroDivisionError


def test_a_storage_failure_names_the_file_and_the_tools_own_key(capsys) -> None:
    with pytest.raises(SystemExit) as stop, user_errors(output_key="out"):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/evaluation.json")
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "'/data/evaluation.json'" in err and "out=<another place>" in err
    assert "hydra.run.dir" not in err and "ckpt_path" not in err


def test_storage_error_keeps_only_storage_failures() -> None:
    from capsgan.errors import storage_error

    assert isinstance(storage_error(OSError(errno.EROFS, "Read-only file system", "/x")),
                      StorageError)  # fmt: skip
    assert storage_error(ValueError("a bug")) is None


# -- concurrent writers: the run-folder lock, the classifier cache ------------------------


def hold_in_another_process(folder: Path) -> subprocess.Popen:
    code = (
        "import sys, time; from capsgan.locks import hold_run_folder; "
        f"hold_run_folder({str(folder)!r}); print('held', flush=True); time.sleep(120)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], env=PY_ENV, stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_run_in_a_held_folder_is_refused_and_a_kill_frees_it(two_batch_cfg) -> None:
    cfg = two_batch_cfg()
    run = Path(cfg.paths.output_dir)
    holder = hold_in_another_process(run)
    try:
        with pytest.raises(RunLockedError, match="in use by another run"):
            train(cfg)
        assert not (run / "run_info.json").exists()  # the holder's record is not touched
    finally:
        holder.kill()  # SIGKILL: the kernel drops the lock with the process
        holder.wait()
    train(cfg)
    assert run_info(run)["status"] == "completed"


def test_cli_second_run_in_a_held_folder_exits_2_before_writing(tiny_data_dir, tmp_path) -> None:
    run = tmp_path / "run"
    holder = hold_in_another_process(run)
    try:
        proc = cli(tmp_path, f"hydra.run.dir={run}", data=tiny_data_dir)
    finally:
        holder.kill()
        holder.wait()
    assert_one_paragraph(proc, "in use by another run", "hydra.run.dir=<new folder>")
    assert not (run / ".hydra").exists()  # the first run's config is not overwritten


def test_folder_in_use_tells_a_running_run_from_a_killed_one(tmp_path: Path) -> None:
    from capsgan.locks import folder_in_use

    run = tmp_path / "run"
    holder = hold_in_another_process(run)
    try:
        assert folder_in_use(run)
    finally:
        holder.kill()
        holder.wait()
    assert not folder_in_use(run)


def test_parallel_jobs_train_the_classifier_once(tiny_data_dir, tmp_path) -> None:
    code = (
        "import sys; import capsgan.classifier as c\n"
        "real = c.train_and_save\n"
        "def counted(*a, **k):\n"
        "    print('TRAINED', flush=True); return real(*a, epochs=1)\n"
        "c.train_and_save = counted\n"
        "model = c.load_or_train('mnist', sys.argv[1], sys.argv[2])\n"
        "print('LOADED', model.num_classes)\n"
    )
    cache = tmp_path / "classifiers"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tiny_data_dir), str(cache)],
                         env=PY_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # fmt: skip
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    assert sum(o[0].count("TRAINED") for o in outs) == 1
    assert all("LOADED 10" in o[0] for o in outs)
    assert not list(cache.glob("*.tmp*"))
