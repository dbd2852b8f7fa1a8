"""Issue 7: bad input gets a clear answer, faults lose nothing, runs are reproducible."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import hydra
import lightning as L
import pytest
import torch
from omegaconf import open_dict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from capsgan.callbacks import DivergenceGuard
from capsgan.checkpointing import AtomicCheckpointIO
from capsgan.config import check_output_dir, resolve_ckpt_path, validate_config
from capsgan.errors import ConfigError, DataError, DivergenceError
from capsgan.loggers import event_dirs
from capsgan.training import RunInterruptedError, build_gan, train
from tests.conftest import ROOT, TINY_CAPSULES, TINY_OVERRIDES, make_idx_root

# No FID network, no per-epoch validation sweep: these tests are about the plumbing.
FAST = [
    "~callbacks.sample_quality",
    "callbacks.model_checkpoint.monitor=null",
    "optimized_metric=null",
    "trainer.limit_val_batches=1",
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def fast_cfg(make_cfg):
    def make(*overrides: str):
        return make_cfg(*FAST, *overrides)

    return make


def with_data_root(cfg, root: Path):
    with open_dict(cfg):
        cfg.data.root = str(root)
    return cfg


def run_info(run: Path) -> dict:
    return json.loads((run / "run_info.json").read_text())["sessions"][-1]


def scalars(run: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of a TensorBoard tag, as TensorBoard shows it (orphans purged)."""
    (folder,) = event_dirs(run)  # one TensorBoard run: tensorboard/<run name>/
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


# -- bad input: config values ------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["lr=-0.001"], ["`lr`", "> 0", "lr=2e-4", "conf/train.yaml"]),
        (["lr_d=0"], ["`lr_d`", "> 0"]),
        (["lr=abc"], ["`lr`", "a number", "'abc'"]),
        (["discriminator.routing_iterations=0"], ["routing_iterations", ">= 1", "conf/discr"]),
        (["data.batch_size=0"], ["data.batch_size", ">= 1", "conf/data/"]),
        (["data.batch_size=1.5"], ["data.batch_size", "an integer"]),
        (["latent_dim=0"], ["latent_dim", ">= 1"]),
        (["d_steps_per_g=0"], ["d_steps_per_g", ">= 1"]),
        (["data.name=svhn"], ["data.name", "svhn", "mnist", "fashion_mnist"]),
        (["discriminator.conv_kernel=25"], ["do not fit", "28x28", "primary_kernel"]),
        (["discriminator=cnn", "discriminator.channels=[8,8,8,8,8]"], ["stride-2 blocks"]),
        (["generator.init_size=8"], ["generator makes images of shape (1, 32, 32)", "(1, 28, 28)"]),
        (["label_smoothing=1.0"], ["label_smoothing", "[0, 1)"]),
        (
            ["discriminator=cnn", "+discriminator.routing_iterations=3"],
            ["`discriminator.routing_iterations`", "no such setting", "remove the override"],
        ),
        (["discriminator.out_capsules=1"], ["`discriminator.out_capsules`", ">= 2", "routing"]),
        (["discriminator.out_capsules=abc"], ["`discriminator.out_capsules`", "an integer"]),
        (["betas=[0.5]"], ["`betas`", "two numbers"]),
    ],
)
def test_bad_config_values_are_named_with_a_fix(fast_cfg, overrides, words) -> None:
    cfg = fast_cfg(*overrides)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    for word in words:
        assert word in str(err.value), (word, str(err.value))
    assert "Traceback" not in str(err.value)


def test_every_shipped_preset_validates(fast_cfg) -> None:
    for group, option in [("discriminator", d) for d in ("cnn", "capsule", "capsule_small")] + [
        ("generator", "seed"),
        ("data", "fashion_mnist"),
    ]:
        validate_config(fast_cfg(f"{group}={option}"))


def test_several_problems_are_reported_together(fast_cfg) -> None:
    with pytest.raises(ConfigError, match="2 problems") as err:
        validate_config(fast_cfg("lr=-1", "latent_dim=0"))
    assert "`lr`" in str(err.value) and "latent_dim" in str(err.value)


@pytest.mark.parametrize("bad", ["lr=-1", "discriminator.routing_iterations=0"])
def test_config_error_stops_before_data(fast_cfg, tmp_path: Path, monkeypatch, bad) -> None:
    instantiate = hydra.utils.instantiate

    def models_only(config, *args, **kwargs):  # the models are built to check them, not data
        if "DataModule" in str(config.get("_target_")):
            raise AssertionError("data was built before validation")
        return instantiate(config, *args, **kwargs)

    monkeypatch.setattr(hydra.utils, "instantiate", models_only)
    cfg = fast_cfg(bad)
    with pytest.raises(ConfigError):
        train(cfg)
    run = Path(cfg.paths.output_dir)
    assert run_info(run)["status"] == "failed"
    assert not (run / "checkpoints").exists() and not (run / "tensorboard").exists()


# -- bad input: data -------------------------------------------------------------------------


def test_missing_data_offline(fast_cfg, tmp_path: Path) -> None:
    cfg = with_data_root(fast_cfg(), tmp_path / "empty")
    with pytest.raises(DataError, match="not found") as err:
        train(cfg)
    assert "data.download=false" in str(err.value) and "DATA_DIR" in str(err.value)
    run = Path(cfg.paths.output_dir)
    assert not (run / "checkpoints").exists() and not (run / "tensorboard").exists()
    assert run_info(run)["status"] == "failed"


def test_truncated_idx_file(fast_cfg, tmp_path: Path) -> None:
    root = make_idx_root(tmp_path / "data", n_train=64, n_test=32)
    images = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:5000])
    with pytest.raises(DataError, match="corrupt or truncated") as err:
        train(with_data_root(fast_cfg(), root))
    assert "MNIST/raw" in str(err.value)


def test_data_root_is_a_file(fast_cfg, tmp_path: Path) -> None:
    a_file = tmp_path / "data.txt"
    a_file.write_text("not a folder")
    with pytest.raises(DataError, match="is a file, not a folder"):
        train(with_data_root(fast_cfg(), a_file))


# -- bad input: checkpoints and the output folder -------------------------------------------


def test_ckpt_path_that_does_not_exist(fast_cfg, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist") as err:
        train(fast_cfg(f"ckpt_path={tmp_path / 'nope.ckpt'}"))
    assert "ckpt_path" in str(err.value)
    with pytest.raises(ConfigError, match="has no") as err:
        resolve_ckpt_path("last", tmp_path / "fresh_run")
    assert "hydra.run.dir" in str(err.value)


def test_corrupt_checkpoint_file(fast_cfg, tmp_path: Path) -> None:
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ConfigError, match="not a readable checkpoint"):
        train(fast_cfg(f"ckpt_path={bad}"))


def test_checkpoint_from_another_architecture(fast_cfg, tmp_path: Path) -> None:
    cfg = fast_cfg("discriminator=cnn")
    module = build_gan(
        cfg, hydra.utils.instantiate(cfg.generator), hydra.utils.instantiate(cfg.discriminator)
    )
    ckpt = tmp_path / "cnn.ckpt"
    torch.save({"state_dict": module.state_dict()}, ckpt)
    with pytest.raises(ConfigError, match="different architecture") as err:
        train(fast_cfg(f"ckpt_path={ckpt}"))  # the capsule discriminator
    assert "discriminator." in str(err.value)


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


# -- bad input through the command line: exit code, one paragraph, no traceback -------------


def cli(tmp_path: Path, *overrides: str, env: dict | None = None, data: Path | None = None):
    cmd = [
        sys.executable,
        str(ROOT / "src" / "train.py"),
        *TINY_OVERRIDES,
        *FAST,
        "discriminator=capsule_small",
        *(f"discriminator.{k}={v}" for k, v in TINY_CAPSULES.items()),
        *overrides,
    ]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    full_env.pop("HYDRA_FULL_ERROR", None)
    full_env.update(env or {})
    if data is not None:
        full_env["DATA_DIR"] = str(data)
    return subprocess.run(
        cmd, cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=300
    )


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


def test_cli_unwritable_output_folder_exits_2(tiny_data_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("")
    proc = cli(tmp_path, f"hydra.run.dir={tmp_path / 'taken' / 'run'}", data=tiny_data_dir)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "cannot be written" in proc.stderr and "hydra.run.dir" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- faults: divergence -------------------------------------------------------------------------


class InjectNaN(L.Callback):
    """Test fault: poison one discriminator weight just before generator step ``at_step``."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.at_step:
            with torch.no_grad():
                next(pl_module.discriminator.parameters()).fill_(float("nan"))


def test_injected_nan_stops_the_run_and_keeps_the_last_good_checkpoint(fast_cfg) -> None:
    cfg = fast_cfg(
        "callbacks.last_checkpoint.every_n_train_steps=2",
        "+callbacks.inject_nan._target_=tests.test_reliability.InjectNaN",
        "+callbacks.inject_nan.at_step=7",
    )
    with pytest.raises(DivergenceError) as err:
        train(cfg)
    message = str(err.value)
    assert "discriminator loss" in message and "generator step 7" in message
    run = Path(cfg.paths.output_dir)
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == 6  # the step-6 save; nothing after the NaN
    assert all(
        torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point()
    )
    module = build_gan(
        cfg, hydra.utils.instantiate(cfg.generator), hydra.utils.instantiate(cfg.discriminator)
    )
    module.load_state_dict(last["state_dict"])
    assert run_info(run)["status"] == "diverged"
    assert not list((run / "checkpoints").glob(".*.tmp"))


def test_a_nan_is_never_saved_even_between_checks(fast_cfg) -> None:
    """The GPU path reads the flag only every few batches; a save in between still refuses."""
    cfg = fast_cfg()
    module = build_gan(
        cfg, hydra.utils.instantiate(cfg.generator), hydra.utils.instantiate(cfg.discriminator)
    )
    guard = next(c for c in module.configure_callbacks() if isinstance(c, DivergenceGuard))
    trainer = SimpleNamespace(current_epoch=0, global_step=12)
    guard.watch(torch.tensor(0.5), torch.tensor(float("inf")), step=11)
    with pytest.raises(DivergenceError, match=r"generator loss .* generator step 11"):
        guard.on_save_checkpoint(trainer, module, {"state_dict": module.state_dict()})
    guard.first_nonfinite = None
    state = module.state_dict()
    guard.on_save_checkpoint(trainer, module, {"state_dict": state})  # all finite: no error
    state["generator.net.0.weight"][0, 0, 0, 0] = float("nan")
    with pytest.raises(DivergenceError, match=r"generator weight 'generator\.net\.0\.weight'"):
        guard.on_save_checkpoint(trainer, module, {"state_dict": state})


# -- faults: atomic checkpoints, SIGTERM, Ctrl-C, SIGKILL -----------------------------------------


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


class SendSignal(L.Callback):
    """Test fault: send ``signum`` to this process just before generator step ``at_step``."""

    def __init__(self, at_step: int, signum: int) -> None:
        self.at_step, self.signum = at_step, signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.at_step:
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize(
    ("signum", "word", "code"), [("SIGTERM", "SIGTERM", 143), ("SIGINT", "Ctrl-C", 130)]
)
def test_sigterm_and_ctrl_c_save_a_checkpoint_then_stop(fast_cfg, signum, word, code) -> None:
    cfg = fast_cfg(
        "+callbacks.signal._target_=tests.test_reliability.SendSignal",
        "+callbacks.signal.at_step=5",
        f"+callbacks.signal.signum={int(getattr(signal, signum))}",
    )
    with pytest.raises(RunInterruptedError) as err:
        train(cfg)
    assert err.value.exit_code == code
    assert f"stopped by {word} at generator step 6" in str(err.value)
    assert "ckpt_path=last" in str(err.value)
    run = Path(cfg.paths.output_dir)
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 6
    assert run_info(run)["status"] == "interrupted"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_continues_the_curves(
    tiny_data_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    common = [
        f"hydra.run.dir={run}",
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=8",
        "callbacks.last_checkpoint.every_n_train_steps=3",
    ]
    killed = cli(
        tmp_path,
        *common,
        "+callbacks.kill._target_=tests.test_reliability.SendSignal",
        "+callbacks.kill.at_step=14",  # epoch 1, batch 6 of 8; last.ckpt is from step 12
        f"+callbacks.kill.signum={int(signal.SIGKILL)}",
        data=tiny_data_dir,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert (ckpt["global_step"], ckpt["epoch"]) == (12, 1)

    # the resume composes from the run's saved overrides (capsgan.resume): drop the killer
    resumed = cli(tmp_path, *common, "ckpt_path=last", "~callbacks.kill", data=tiny_data_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert (final["global_step"], final["epoch"]) == (24, 2)
    opt_g, opt_d = final["optimizer_states"]  # optimizer state carried across the kill
    assert {int(s["step"]) for s in opt_g["state"].values()} == {24}
    assert {int(s["step"]) for s in opt_d["state"].values()} == {24}
    steps = [s for s, _ in scalars(run, "train/d_loss")]
    assert steps == list(range(1, 25)), steps  # generator steps: no gap, no duplicate
    (events,) = event_dirs(run)  # the resumed session writes into the same TensorBoard run
    assert len(list(events.glob("events.out.tfevents.*"))) == 2
    sessions = json.loads((run / "run_info.json").read_text())["sessions"]
    assert [s["status"] for s in sessions] == ["running", "completed"]  # the kill left "running"
    assert sessions[1]["resumed_from"] == "last"


# -- reproducibility ------------------------------------------------------------------------


def test_same_seed_same_losses_for_50_steps(make_cfg, tmp_path: Path) -> None:
    losses = []
    for name in ("a", "b"):
        cfg = make_cfg(
            *FAST,
            "trainer.max_epochs=3",
            "trainer.max_steps=50",
            "trainer.limit_val_batches=0",
            "~callbacks.sample_grid",
            "seed=7",
        )
        with open_dict(cfg):  # a toy generator: this test is about the numbers, not the images
            cfg.paths.output_dir = str(tmp_path / name)
            cfg.generator.init_channels = 16
            cfg.generator.blocks[0].channels = 8
        train(cfg)
        run = Path(cfg.paths.output_dir)
        losses.append([scalars(run, t) for t in ("train/d_loss", "train/g_loss")])
        info = run_info(run)
        assert info["status"] == "completed" and info["git"]["commit"]
        assert torch.__version__.startswith(info["packages"]["torch"])
    assert [s for s, _ in losses[0][0]] == list(range(1, 51))  # generator steps
    assert losses[0] == losses[1]
