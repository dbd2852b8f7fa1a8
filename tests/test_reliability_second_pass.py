"""Issue 13: no traceback from any entry point, no lost epoch, sweeps that stop cleanly.

One section per class of the issue. Where the behaviour is about the process (exit code,
no traceback, files left), the test runs the real entry point as a subprocess; the rest
call the library in-process with tiny data and a few batches.
"""

from __future__ import annotations

import errno
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from capsgan import checkpointing
from capsgan.classifier import DigitClassifier, load_classifier, load_or_train, save_classifier
from capsgan.config import (
    unwritable_reason,
    validate_bench_config,
    validate_classifier_config,
    validate_config,
    validate_generate_config,
)
from capsgan.data import load_split
from capsgan.errors import ConfigError, DataError, RunLockedError, StorageError, user_errors
from capsgan.training import run, train
from tests.conftest import CONF_DIR, ROOT, TINY_CAPSULES, TINY_OVERRIDES, make_idx_root
from tests.test_reliability import FAST, cli, run_info

PY_ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
PY_ENV.pop("HYDRA_FULL_ERROR", None)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def fast_cfg(make_cfg):
    def make(*overrides: str):
        return make_cfg(*FAST, "trainer.limit_train_batches=2", *overrides)

    return make


def compose(name: str, *overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return hydra_compose(config_name=name, overrides=list(overrides))


def script(name: str, *args: str, cwd: Path, data: Path | None = None, timeout: int = 300):
    env = dict(PY_ENV)
    if data is not None:
        env["DATA_DIR"] = str(data)
    cmd = [sys.executable, str(ROOT / "src" / name), *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def assert_one_paragraph(proc, *words: str, code: int = 2) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode == code, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert "Error: " in proc.stderr
    for word in words:
        assert word in proc.stderr, (word, proc.stderr[-2000:])


# -- 1. values that reach a library unchecked ----------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["threads=-1"], ["`threads`", ">= 1"]),
        (["threads=1.5"], ["`threads`", "an integer"]),
        (["trainer.check_val_every_n_epoch=0"], ["check_val_every_n_epoch", ">= 1"]),
        (["trainer.num_sanity_val_steps=-5"], ["num_sanity_val_steps"]),
        (["trainer.deterministic=maybe"], ["trainer.deterministic", "warn"]),
        (["+trainer.gradient_clip_val=1.0"], ["trainer.gradient_clip_val", "top-level"]),
        (["+trainer.accumulate_grad_batches=4"], ["accumulate_grad_batches"]),
        (["callbacks.sample_grid.every_n_epochs=0"], ["sample_grid.every_n_epochs"]),
        (["callbacks.sample_grid.nrow=0"], ["sample_grid.nrow"]),
        (["data.pin_memory=maybe"], ["data.pin_memory", "true or false"]),
        (["compile=sometimes"], ["`compile`", "true or false"]),  # yes/no: OmegaConf bools
        (["data.num_workers=-1"], ["data.num_workers"]),
    ],
)
def test_every_user_key_is_checked_at_start_up(make_cfg, overrides, words) -> None:
    with pytest.raises(ConfigError) as err:
        validate_config(make_cfg(*overrides))
    for word in words:
        assert word in str(err.value), (word, str(err.value))


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["metrics.num_samples=2"], ["metrics.num_samples", ">= 4"]),
        (["metrics.batch_size=0"], ["metrics.batch_size"]),
        (["metrics.kid_subset_size=1"], ["kid_subset_size", ">= 2"]),
        (["metrics.mode_threshold=-0.5"], ["mode_threshold"]),
        (["metrics.classifier_path=/no/such/classifier.pt"], ["classifier_path", "not a file"]),
        (["+callbacks.sample_quality.every_n_epochs=0"], ["sample_quality.every_n_epochs"]),
    ],
)
def test_metric_settings_are_checked_at_start_up(make_cfg, overrides, words) -> None:
    with pytest.raises(ConfigError) as err:
        validate_config(make_cfg(*overrides))
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["trainer.limit_train_batches=-3"], ["`trainer`", "limit_train_batches"]),
        (["trainer.limit_val_batches=1.5"], ["`trainer`", "limit_val_batches"]),
        (["trainer.fast_dev_run=-1"], ["`trainer`", "fast_dev_run"]),
        (["trainer.max_epochs=-5"], ["`trainer`", "max_epochs"]),
        (["callbacks.last_checkpoint.every_n_train_steps=-1"], ["`callbacks.last_checkpoint`"]),
        (["callbacks.model_checkpoint.mode=best"], ["`callbacks.model_checkpoint`", "min"]),
        (["callbacks.model_checkpoint.save_top_k=-2"], ["`callbacks.model_checkpoint`"]),
    ],
)
def test_lightnings_own_refusals_come_before_the_models_and_the_data(
    fast_cfg, monkeypatch, overrides, words
) -> None:
    import capsgan.training

    def no_models(cfg):
        raise AssertionError("the models were built before the trainer")

    monkeypatch.setattr(capsgan.training, "build_models", no_models)
    cfg = fast_cfg(*overrides)
    with pytest.raises(ConfigError) as err:
        train(cfg)
    for word in words:
        assert word in str(err.value), (word, str(err.value))
    assert run_info(Path(cfg.paths.output_dir))["status"] == "failed"


def test_cli_negative_thread_count_exits_2_and_is_recorded(tiny_data_dir, tmp_path) -> None:
    run = tmp_path / "run"
    proc = cli(tmp_path, "threads=-1", f"hydra.run.dir={run}", data=tiny_data_dir)
    assert_one_paragraph(proc, "`threads`", ">= 1")
    assert run_info(run)["status"] == "failed"


def test_a_constructor_refusal_is_a_config_error(fast_cfg) -> None:
    cfg = fast_cfg("+discriminator.dropout=0.3")  # a keyword the class does not take
    with pytest.raises(ConfigError, match="the discriminator refused") as err:
        train(cfg)
    assert "dropout" in str(err.value) and "has no such setting" in str(err.value)
    assert "conf/discriminator/" in str(err.value)
    assert run_info(Path(cfg.paths.output_dir))["status"] == "failed"


def test_lightning_refusal_during_set_up_is_a_config_error(fast_cfg) -> None:
    cfg = fast_cfg("+trainer.val_check_interval=1000")  # more batches than an epoch has
    with pytest.raises(ConfigError, match="Lightning refused the settings before training"):
        train(cfg)
    assert run_info(Path(cfg.paths.output_dir))["status"] == "failed"


class Crash(L.Callback):
    """Test fault: a bug at the second batch."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 1:
            raise RuntimeError("an unexpected bug")


def test_an_unexpected_exception_is_recorded_as_crashed(fast_cfg) -> None:
    cfg = fast_cfg("+callbacks.crash._target_=tests.test_reliability_second_pass.Crash")
    with pytest.raises(RuntimeError, match="an unexpected bug"):  # a bug keeps its traceback
        train(cfg)
    info = run_info(Path(cfg.paths.output_dir))
    assert info["status"] == "crashed" and "RuntimeError: an unexpected bug" in info["message"]
    assert info["ended"]


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["steps=1"], ["`steps`", ">= 2", "conf/generate.yaml"]),
        (["num_pairs=abc"], ["`num_pairs`", "an integer"]),
        (["strip_epochs=0"], ["strip_epochs"]),
        (["strip_epochs=[1,-2]"], ["strip_epochs"]),
        (["learning_frame_ms=0"], ["learning_frame_ms"]),
        (["device=tpu"], ["`device`"]),
        (["slerp=sometimes"], ["`slerp`", "true or false"]),
        (["run_dir=/no/such/run"], ["run_dir", "not a folder"]),
        (["ckpt_path=x.ckpt", "config_path=/no/config.yaml"], ["config_path", "not a file"]),
    ],
)
def test_generate_keys_are_checked(overrides, words) -> None:
    cfg = compose("generate", *overrides)
    with pytest.raises(ConfigError) as err:
        validate_generate_config(cfg)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["repeats=0"], ["`repeats`", ">= 1", "conf/bench.yaml"]),
        (["batch_size=0"], ["`batch_size`"]),
        (["warmup=-1"], ["`warmup`"]),
        (["threads=0"], ["`threads`"]),
        (["discriminators=[cnn,resnet]"], ["discriminators", "capsule_small"]),
        (["routing_iterations=[0]"], ["routing_iterations"]),
        (["scaling.batch_sizes=[]"], ["scaling.batch_sizes"]),
        (["baseline.discriminator=vgg"], ["baseline.discriminator"]),
        (["device=tpu"], ["`device`"]),
        (["lr=-1"], ["`lr`"]),
    ],
)
def test_bench_keys_are_checked(overrides, words, tmp_path) -> None:
    with pytest.raises(ConfigError) as err:
        validate_bench_config(compose("bench", f"paths.output_dir={tmp_path}", *overrides))
    for word in words:
        assert word in str(err.value), (word, str(err.value))


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["epochs=0"], ["`epochs`", "conf/train_classifier.yaml"]),
        (["lr=0"], ["`lr`", "> 0"]),
        (["dropout=1.5"], ["`dropout`", "[0, 1)"]),
        (["channels=[32,0]"], ["`channels`"]),
        (["channels=[8,8,8,8,8,8]"], ["pooling blocks"]),
        (["hidden=0"], ["`hidden`"]),
        (["accelerator=tpu"], ["`accelerator`"]),
        (["data.batch_size=0"], ["data.batch_size"]),
        (["classifier_dir=/proc/capsgan-classifiers"], ["classifier_dir", "cannot be written"]),
    ],
)
def test_train_classifier_keys_are_checked(overrides, words) -> None:
    with pytest.raises(ConfigError) as err:
        validate_classifier_config(compose("train_classifier", *overrides))
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_cli_generate_bench_and_classifier_exit_2(tmp_path: Path) -> None:
    """The three other Hydra entry points: one paragraph, exit 2, no traceback."""
    assert_one_paragraph(script("generate.py", "steps=1", "ckpt_path=x", cwd=tmp_path), "`steps`")
    assert_one_paragraph(script("bench.py", "repeats=0", cwd=tmp_path), "`repeats`")
    assert_one_paragraph(script("train_classifier.py", "epochs=0", cwd=tmp_path), "`epochs`")


# -- 2. bad values found only at the end of the first epoch ---------------------------------


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (
            ["~callbacks.sample_quality", "callbacks.model_checkpoint.monitor=val/fid"],
            ["callbacks.model_checkpoint.monitor`=val/fid", "sample_quality", "monitor=null"],
        ),
        (
            [
                "metrics.num_samples=64",
                "+callbacks.sample_quality.every_n_epochs=2",
                "callbacks.model_checkpoint.monitor=val/fid",
                "optimized_metric=null",
            ],
            ["every_n_epochs=2", "callbacks.model_checkpoint.every_n_epochs"],
        ),
        (
            ["metrics.num_samples=64", "data.val_subset=3", "optimized_metric=null"],
            ["at least 4 real images", "data.val_subset=3"],
        ),
    ],
)
def test_validation_and_checkpoint_needs_are_checked_before_the_first_batch(
    make_cfg, overrides, words
) -> None:
    base = ["trainer.limit_train_batches=2", "trainer.limit_val_batches=1"]
    cfg = make_cfg(*base, *overrides)
    with pytest.raises(ConfigError) as err:
        train(cfg)
    for word in words:
        assert word in str(err.value), (word, str(err.value))
    run = Path(cfg.paths.output_dir)
    assert not (run / "checkpoints").exists() and not (run / "tensorboard").exists()
    assert run_info(run)["status"] == "failed"


# -- 3. runs that train nothing ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["data.batch_size=512"], ["nothing would be trained", "320 images", "batch_size=512"]),
        (["data.train_subset=8"], ["nothing would be trained", "data.train_subset=8"]),
        (["trainer.limit_train_batches=0.01"], ["nothing would be trained", "0 batches"]),
        (["d_steps_per_g=5"], ["generator would never be trained", "d_steps_per_g=5"]),
    ],
)
def test_runs_that_would_train_nothing_are_refused(fast_cfg, overrides, words) -> None:
    with pytest.raises(ConfigError) as err:
        train(fast_cfg(*overrides))
    for word in words:
        assert word in str(err.value), (word, str(err.value))


@pytest.mark.parametrize(
    "override", ["trainer.max_epochs=0", "trainer.max_steps=0", "trainer.limit_train_batches=0"]
)
def test_zero_epochs_steps_or_batches_are_refused(fast_cfg, override) -> None:
    with pytest.raises(ConfigError, match="0 would train nothing"):
        validate_config(fast_cfg(override))


def test_cli_batch_larger_than_the_data_set_exits_2(tiny_data_dir, tmp_path) -> None:
    run = tmp_path / "run"
    proc = cli(tmp_path, "data.batch_size=1000", f"hydra.run.dir={run}", data=tiny_data_dir)
    assert_one_paragraph(proc, "nothing would be trained")
    assert run_info(run)["status"] == "failed"
    assert not (run / "checkpoints").exists()


def test_resuming_a_finished_run_trains_nothing_and_says_so(fast_cfg) -> None:
    cfg = fast_cfg()
    train(cfg)
    run = Path(cfg.paths.output_dir)
    before = (run / "checkpoints" / "last.ckpt").stat().st_mtime_ns
    (run / "checkpoints" / ".last.ckpt.x1y2.tmp").write_bytes(b"half a checkpoint")  # a kill
    with pytest.raises(ConfigError, match="nothing was trained") as err:
        train(fast_cfg("ckpt_path=last"))
    assert "trainer.max_epochs" in str(err.value)
    assert (run / "checkpoints" / "last.ckpt").stat().st_mtime_ns == before
    # 4. the half-written file of the "killed" run is removed when the run starts again
    assert not list((run / "checkpoints").glob(".*.tmp"))
    sessions = json.loads((run / "run_info.json").read_text())["sessions"]
    assert [s["status"] for s in sessions] == ["completed", "failed"]


# -- 4. where files go -------------------------------------------------------------------------


def test_unwritable_folder_is_found_by_trying_even_as_root(tmp_path: Path) -> None:
    assert unwritable_reason("/proc/capsgan-run/x") is not None  # root cannot write there
    assert unwritable_reason(tmp_path / "new" / "deeper") is None


def test_cli_unwritable_output_folder_even_as_root(tiny_data_dir, tmp_path) -> None:
    proc = cli(tmp_path, "hydra.run.dir=/proc/capsgan-run", data=tiny_data_dir)
    assert_one_paragraph(proc, "cannot be written", "hydra.run.dir")


def test_full_disk_names_the_file_and_keeps_the_old_checkpoint(fast_cfg, monkeypatch, capsys):
    real_save, calls = torch.save, []

    def save_until_the_disk_fills(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpointing.torch, "save", save_until_the_disk_fills)
    cfg = fast_cfg(
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


def test_corrupt_cached_classifier_and_wrong_classifier_file(tmp_path: Path) -> None:
    cache = tmp_path / "classifiers"
    cache.mkdir()
    (cache / "mnist.pt").write_bytes(b"PK\x03\x04 cut short by a full disk")
    with pytest.raises(ConfigError, match="not a readable classifier") as err:
        load_or_train("mnist", tmp_path, cache)
    assert "mnist.pt" in str(err.value) and "delete it" in str(err.value)
    not_a_classifier = tmp_path / "gan.ckpt"
    torch.save({"state_dict": {"generator.w": torch.zeros(1)}}, not_a_classifier)
    with pytest.raises(ConfigError, match="not a readable classifier") as err:
        load_classifier(not_a_classifier)
    assert "metrics.classifier_path" in str(err.value)


def test_cli_corrupt_checkpoint_given_to_generate(fast_cfg, tmp_path: Path) -> None:
    run = tmp_path / "gan_run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(fast_cfg()))
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "epoch_000.ckpt").write_bytes(b"fine, in a real run")
    bad = run / "checkpoints" / "last.ckpt"
    bad.write_bytes(b"PK\x03\x04 truncated by a kill")
    proc = script("generate.py", f"ckpt_path={bad}", cwd=tmp_path)
    assert_one_paragraph(proc, str(bad), "cannot be read", "epoch_000.ckpt")


def test_data_errors_name_the_file(tmp_path: Path) -> None:
    root = make_idx_root(tmp_path / "data", n_train=32, n_test=16)
    raw = root / "MNIST" / "raw"
    (raw / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="train-labels-idx1-ubyte' is missing"):
        load_split("mnist", root, train=True, download=False)
    labels = raw / "t10k-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-3])
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte' is corrupt or truncated"):
        load_split("mnist", root, train=False, download=False)


# -- 5. sweeps that stop cleanly -----------------------------------------------------------------


class Started(L.Callback):
    """Test probe: writes <run>/started once the first training batch ran, and makes each
    batch last at least 0.1 s, so the jobs are still training when the sweep is stopped."""

    def on_train_batch_end(self, trainer, *args) -> None:
        Path(trainer.default_root_dir, "started").touch()
        time.sleep(0.1)


SWEEP = [
    *TINY_OVERRIDES,
    "discriminator=capsule_small",
    *(f"discriminator.{k}={v}" for k, v in TINY_CAPSULES.items()),
    "++callbacks.sample_quality=null",
    "++callbacks.model_checkpoint.monitor=null",
    "optimized_metric=null",
    "hydra.callbacks.sweep_summary.metric=val/d_loss",
    "trainer.limit_val_batches=1",
    "threads=1",
    "+callbacks.started._target_=tests.test_reliability_second_pass.Started",
]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


@pytest.mark.slow
def test_sigterm_stops_a_joblib_sweep_and_prints_how_to_resume(tiny_data_dir, tmp_path) -> None:
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "lr=1e-4,2e-4,3e-4",  # two run at once, the third waits for a free worker
        *SWEEP,
        "trainer.max_epochs=3",  # 3 x 20 batches of 16 of the 320 images
        f"hydra.sweep.dir={sweep}",
    ]
    cmd = [sys.executable, str(ROOT / "src" / "train.py"), *args]
    env = {**PY_ENV, "DATA_DIR": str(tiny_data_dir)}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 240
    while not ((sweep / "0" / "started").exists() and (sweep / "1" / "started").exists()):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.5)
    pids = [json.loads((sweep / j / "job.json").read_text())["pid"] for j in ("0", "1")]
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-3000:]
    assert "Traceback" not in stderr
    records = {j: json.loads((sweep / j / "job.json").read_text()) for j in ("0", "1", "2")}
    assert {r["status"] for r in records.values()} == {"interrupted"}, records
    assert "not started" in records["2"]["error"]
    for j in ("0", "1"):
        ckpt = torch.load(sweep / j / "checkpoints" / "last.ckpt", weights_only=False)
        assert 0 < ckpt["global_step"] < 60  # stopped mid-run, saved
        assert run_info(sweep / j)["status"] == "interrupted"
    assert "interrupted" in (sweep / "summary.md").read_text()
    time.sleep(2)
    assert not any(_alive(p) for p in pids), "worker processes outlived the sweep"
    resume = stderr.strip().splitlines()[-1]
    assert resume.startswith("python ") and f"hydra.sweep.dir={sweep}" in resume
    assert resume.endswith("ckpt_path=last")

    # the printed command resumes: 0 and 1 from their last.ckpt, 2 from scratch
    resumed = subprocess.run([sys.executable, *shlex.split(resume)[1:]], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for j in ("0", "1", "2"):
        assert json.loads((sweep / j / "job.json").read_text())["status"] == "ok"
        final = torch.load(sweep / j / "checkpoints" / "last.ckpt", weights_only=False)
        assert final["global_step"] == 60
    sessions = json.loads((sweep / "0" / "run_info.json").read_text())["sessions"]
    assert [s["status"] for s in sessions] == ["interrupted", "completed"]
    assert sessions[1]["resumed_from"] == "last"


# -- 6. concurrent writers --------------------------------------------------------------------


def hold_in_another_process(folder: Path) -> subprocess.Popen:
    code = (
        "import sys, time; from capsgan.locks import hold_run_folder; "
        f"hold_run_folder({str(folder)!r}); print('held', flush=True); time.sleep(120)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], env=PY_ENV, stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_run_in_a_held_folder_is_refused_and_a_kill_frees_it(fast_cfg) -> None:
    cfg = fast_cfg()
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


def test_classifier_round_trip_still_loads(tmp_path: Path) -> None:
    path = save_classifier(DigitClassifier(), tmp_path, "mnist", {"test_accuracy": 0.5})
    assert load_classifier(path, cached=True).num_classes == 10


def test_storage_error_keeps_only_storage_failures() -> None:
    from capsgan.errors import storage_error

    assert isinstance(storage_error(OSError(errno.EROFS, "Read-only file system", "/x")),
                      StorageError)  # fmt: skip
    assert storage_error(ValueError("a bug")) is None


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
