"""Failures during a run and the way back: a divergence, a signal, a kill or a bug leaves the
last good checkpoint and an honest ``run_info.json``, and a resume carries on where the run
stopped, with the run's own overrides and seed."""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path
from types import SimpleNamespace

import hydra
import lightning as L
import pytest
import torch
from omegaconf import OmegaConf, open_dict

from capsgan import cli as capsgan_cli
from capsgan.callbacks import DivergenceGuard
from capsgan.errors import ConfigError, DivergenceError
from capsgan.loggers import event_dirs
from capsgan.resume import resume_argv
from capsgan.runs import find_runs
from capsgan.training import RunInterruptedError, build_gan, train
from tests.conftest import FAST, ROOT, TINY_OVERRIDES
from tests.helpers import (
    SHORT,
    assert_one_paragraph,
    cli,
    events_of,
    run_info,
    scalars,
    script,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# -- divergence and bugs ------------------------------------------------------------------


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
        "+callbacks.inject_nan._target_=tests.test_faults.InjectNaN",
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


class Crash(L.Callback):
    """Test fault: a bug at the second batch."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 1:
            raise RuntimeError("an unexpected bug")


def test_an_unexpected_exception_is_recorded_as_crashed(two_batch_cfg) -> None:
    cfg = two_batch_cfg("+callbacks.crash._target_=tests.test_faults.Crash")
    with pytest.raises(RuntimeError, match="an unexpected bug"):  # a bug keeps its traceback
        train(cfg)
    info = run_info(Path(cfg.paths.output_dir))
    assert info["status"] == "crashed" and "RuntimeError: an unexpected bug" in info["message"]
    assert info["ended"]


# -- SIGTERM, Ctrl-C, SIGKILL -------------------------------------------------------------


@pytest.mark.parametrize(
    ("signum", "word", "code"), [("SIGTERM", "SIGTERM", 143), ("SIGINT", "Ctrl-C", 130)]
)
def test_sigterm_and_ctrl_c_save_a_checkpoint_then_stop(fast_cfg, signum, word, code) -> None:
    cfg = fast_cfg(
        "+callbacks.signal._target_=tests.helpers.SendSignal",
        "+callbacks.signal.at_step=5",
        f"+callbacks.signal.signum={int(getattr(signal, signum))}",
    )
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN in a background job, else Python's
    with pytest.raises(RunInterruptedError) as err:
        train(cfg)
    assert err.value.exit_code == code
    assert f"stopped by {word} at generator step 6" in str(err.value)
    assert "ckpt_path=last" in str(err.value)
    run = Path(cfg.paths.output_dir)
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 6
    assert run_info(run)["status"] == "interrupted"
    assert signal.getsignal(signal.SIGINT) is before  # the handler it found, restored


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
        "+callbacks.kill._target_=tests.helpers.SendSignal",
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


# -- resume -------------------------------------------------------------------------------


def test_resuming_a_finished_run_trains_nothing_and_says_so(two_batch_cfg) -> None:
    cfg = two_batch_cfg()
    train(cfg)
    run = Path(cfg.paths.output_dir)
    before = (run / "checkpoints" / "last.ckpt").stat().st_mtime_ns
    (run / "checkpoints" / ".last.ckpt.x1y2.tmp").write_bytes(b"half a checkpoint")  # a kill
    with pytest.raises(ConfigError, match="nothing was trained") as err:
        train(two_batch_cfg("ckpt_path=last"))
    assert "trainer.max_epochs" in str(err.value)
    assert (run / "checkpoints" / "last.ckpt").stat().st_mtime_ns == before
    # 4. the half-written file of the "killed" run is removed when the run starts again
    assert not list((run / "checkpoints").glob(".*.tmp"))
    sessions = json.loads((run / "run_info.json").read_text())["sessions"]
    assert [s["status"] for s in sessions] == ["completed", "failed"]


def test_a_smoke_run_writes_no_checkpoint_so_it_is_never_latest(make_cfg) -> None:
    cfg = make_cfg(*FAST, "discriminator=cnn", "debug=fdr")
    train(cfg)
    out = Path(cfg.paths.output_dir)
    assert not list(out.rglob("*.ckpt"))
    assert json.loads((out / "run_info.json").read_text())["sessions"][-1]["status"] == "completed"


def test_resume_argv_puts_the_saved_overrides_first_and_guards_the_architecture(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(["discriminator=cnn", "lr=1e-4"]),
                   run_dir / ".hydra" / "overrides.yaml")  # fmt: skip
    argv = [f"hydra.run.dir={run_dir}", "ckpt_path=last", "lr=3e-4"]
    merged = resume_argv(argv, ROOT / "conf")
    assert merged[0] == "discriminator=cnn" and "lr=1e-4" not in merged and "lr=3e-4" in merged
    with pytest.raises(ConfigError) as err:
        resume_argv([*argv, "discriminator.channels=[8,16]"], ROOT / "conf")
    assert "discriminator=cnn lr=1e-4" in str(err.value)  # the run's saved overrides
    assert "discriminator.channels" in str(err.value)
    fresh = [f"hydra.run.dir={tmp_path / 'new'}", "ckpt_path=last"]
    assert resume_argv(fresh, ROOT / "conf") == fresh  # nothing saved: nothing to compose


RESUME_ARGS = [*TINY_OVERRIDES, *FAST, "trainer.limit_train_batches=2", "discriminator=cnn"]


@pytest.mark.slow
def test_resume_composes_from_the_saved_overrides_and_keeps_the_record(
    tiny_data_dir, tmp_path
) -> None:
    """Resuming without the run's overrides used to overwrite .hydra/config.yaml with the
    default (capsule) config, then fail on the checkpoint that no longer fit."""
    run_dir = tmp_path / "outputs" / "run"
    first = script("train.py", *RESUME_ARGS, f"hydra.run.dir={run_dir}", cwd=tmp_path,
                   data=tiny_data_dir)  # fmt: skip
    assert first.returncode == 0, first.stderr[-2000:]
    record = {p.name: p.read_text() for p in (run_dir / ".hydra").glob("*.yaml")}

    changed = script("train.py", f"hydra.run.dir={run_dir}", "ckpt_path=last",
                     "discriminator=capsule_small", cwd=tmp_path, data=tiny_data_dir)  # fmt: skip
    assert_one_paragraph(changed, "change the architecture", "discriminator=cnn")
    resumed = script("train.py", f"hydra.run.dir={run_dir}", "ckpt_path=last",
                     "trainer.max_epochs=2", cwd=tmp_path, data=tiny_data_dir)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    latest = script("train.py", f"paths.log_dir={tmp_path / 'outputs'}", "ckpt_path=latest",
                    "trainer.max_epochs=3", cwd=tmp_path, data=tiny_data_dir)  # fmt: skip
    assert latest.returncode == 0, latest.stderr[-2000:]

    assert {p.name: p.read_text() for p in (run_dir / ".hydra").glob("*.yaml")} == record
    sessions = json.loads((run_dir / "run_info.json").read_text())["sessions"]
    assert [s["config"] for s in sessions] == [".hydra", ".hydra/session_2", ".hydra/session_3"]
    assert [s["status"] for s in sessions] == ["completed"] * 3
    session_3 = OmegaConf.load(run_dir / ".hydra" / "session_3" / "config.yaml")
    assert session_3.discriminator._target_.endswith("CNNDiscriminator")
    assert session_3.trainer.max_epochs == 3


@pytest.mark.slow
def test_a_resumed_sweep_keeps_each_jobs_record(tiny_data_dir, tmp_path) -> None:
    sweep = tmp_path / "sweep"
    args = ["-m", *RESUME_ARGS, "seed=1", f"hydra.sweep.dir={sweep}"]
    first = script("train.py", *args, cwd=tmp_path, data=tiny_data_dir)
    assert first.returncode == 0, first.stderr[-2000:]
    record = {p.name: p.read_text() for p in (sweep / "0" / ".hydra").glob("*.yaml")}
    resumed = script("train.py", *args, "ckpt_path=last", cwd=tmp_path, data=tiny_data_dir)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert {p.name: p.read_text() for p in (sweep / "0" / ".hydra").glob("*.yaml")} == record
    assert "ckpt_path=last" in (sweep / "0" / ".hydra" / "session_2" / "overrides.yaml").read_text()


def test_ckpt_path_latest_resumes_the_newest_run_in_its_folder(make_cfg, tmp_path: Path) -> None:
    log_dir = tmp_path / "outputs"
    older, newest = log_dir / "2026-01-01" / "09-00-00", log_dir / "2026-01-02" / "10-00-00"
    for folder, epochs in ((older, 1), (newest, 1)):
        cfg = make_cfg(f"trainer.max_epochs={epochs}", *SHORT)
        with open_dict(cfg):
            cfg.paths.output_dir = str(folder)
        train(cfg)
    capsgan_cli.register_resolvers()
    composed = compose_train_cfg_with_hydra(["ckpt_path=latest", f"paths.log_dir={log_dir}"])
    assert composed.hydra.run.dir == str(newest)
    fresh = compose_train_cfg_with_hydra([f"paths.log_dir={tmp_path / 'empty'}"])
    assert "empty" in fresh.hydra.run.dir and fresh.hydra.run.dir != str(newest)

    cfg = make_cfg("trainer.max_epochs=3", *SHORT, "ckpt_path=latest")
    with open_dict(cfg):
        cfg.paths.output_dir = composed.hydra.run.dir
    train(cfg)
    assert (newest / "checkpoints" / "epoch_0003.ckpt").exists()
    assert not (older / "checkpoints" / "epoch_0002.ckpt").exists()
    # one TensorBoard run continued: val/fid_best carries the first session's best on
    acc = events_of(newest)
    fid = [e.value for e in acc.Scalars("val/fid")]
    assert len(fid) == 3 and len(list(event_dirs(newest)[0].glob("events.*"))) == 2
    assert [e.value for e in acc.Scalars("val/fid_best")] == pytest.approx(
        [min(fid[: i + 1]) for i in range(3)]
    )
    assert find_runs(tmp_path / "outputs") == [older, newest]

    cfg = make_cfg("ckpt_path=latest")  # a folder with no last.ckpt: says what latest means
    with pytest.raises(ConfigError, match="ckpt_path=latest resumes the newest run"):
        train(cfg)


def compose_train_cfg_with_hydra(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF_DIR

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return compose("train", overrides=overrides, return_hydra_config=True)


def test_a_resumed_run_seeds_with_its_own_seed(make_cfg, caplog) -> None:
    """A resume that leaves seed= out (the default 42) still seeds with the run's seed=2."""
    cfg = make_cfg("seed=2", *SHORT)
    train(cfg)
    caplog.set_level(logging.INFO)
    train(make_cfg("trainer.max_epochs=2", "ckpt_path=last", *SHORT))
    messages = [r.getMessage() for r in caplog.records]
    assert "Seed set to 2" in messages and "Seed set to 42" not in messages
    assert any("made with seed=2" in m for m in messages)
