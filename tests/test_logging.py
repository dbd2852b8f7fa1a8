"""What a run records: TensorBoard's HPARAMS (the session status, the keys, the best FID),
run names, one numbering across console, files and events, and the CSV / W&B / MLflow
loggers."""

from __future__ import annotations

import csv
import importlib.util
import logging
import signal
from pathlib import Path
from typing import ClassVar

import lightning as L
import pytest
from omegaconf import OmegaConf, open_dict
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
from tensorboard.plugins.hparams.backend_context import _sort_and_reduce_to_hparams_limit

from capsgan import cli
from capsgan.errors import ConfigError
from capsgan.loggers import auto_run_name, event_dirs, run_hparams
from capsgan.training import train
from tests.conftest import compose_train_cfg
from tests.helpers import SHORT, events_of


def session_status(run: Path) -> int | None:
    """The HPARAMS session's end status in a run's events (None: no end written)."""
    content = events_of(run).PluginTagToContent("hparams")
    if "_hparams_/session_end_info" not in content:
        return None
    data = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_end_info"])
    return data.session_end_info.status


# -- HPARAMS: the session status ----------------------------------------------------------


class StatusProbe(L.Callback):
    """Reads the HPARAMS session status back from the event file in the middle of the run;
    raises at batch ``crash_at`` when set."""

    seen: ClassVar[list[int | None]] = []  # every probe's readings, in order

    def __init__(self, crash_at: int | None = None) -> None:
        self.crash_at = crash_at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        trainer.logger.experiment.flush()
        StatusProbe.seen.append(session_status(Path(trainer.default_root_dir)))
        if batch_idx == self.crash_at:
            raise RuntimeError("injected crash")


def _with_probe(cfg, crash_at=None):
    with open_dict(cfg):
        cfg.callbacks.status_probe = {
            "_target_": "tests.test_logging.StatusProbe",
            "crash_at": crash_at,
        }
    return cfg


def test_hparams_status_is_unknown_while_running_then_success(make_cfg) -> None:
    StatusProbe.seen = []
    cfg = _with_probe(make_cfg("trainer.max_epochs=2", *SHORT))
    train(cfg)
    run = Path(cfg.paths.output_dir)
    assert len(StatusProbe.seen) == 6 and set(StatusProbe.seen) == {None}  # none while running
    assert session_status(run) == api_pb2.STATUS_SUCCESS


def test_hparams_status_after_a_crash_is_failure(make_cfg) -> None:
    cfg = _with_probe(make_cfg(*SHORT), crash_at=1)
    with pytest.raises(RuntimeError, match="injected crash"):
        train(cfg)
    assert session_status(Path(cfg.paths.output_dir)) == api_pb2.STATUS_FAILURE


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_hparams_status_after_sigterm_or_ctrl_c_stays_unknown(make_cfg, signum: str) -> None:
    from capsgan.training import RunInterruptedError

    cfg = make_cfg(
        "trainer.limit_train_batches=6",
        "+callbacks.signal._target_=tests.helpers.SendSignal",
        "+callbacks.signal.at_step=2",
        f"+callbacks.signal.signum={int(getattr(signal, signum))}",
    )
    with pytest.raises(RunInterruptedError):
        train(cfg)
    assert session_status(Path(cfg.paths.output_dir)) is None  # the resumed run ends it


# -- HPARAMS keys and metrics, run names --------------------------------------------------


def test_hparams_leave_out_paths_and_include_the_best_fid(make_cfg) -> None:
    cfg = make_cfg("trainer.max_epochs=3", *SHORT)
    train(cfg)
    acc = events_of(Path(cfg.paths.output_dir))
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    keys = set(start.session_start_info.hparams)
    assert "lr" in keys and "discriminator/_target_" in keys
    for path_key in ("trainer/default_root_dir", "data/root", "ckpt_path", "trainer/plugins"):
        assert path_key not in keys
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    assert "val/fid_best" in {m.name.tag for m in experiment.experiment.metric_infos}
    fid = [e.value for e in acc.Scalars("val/fid")]
    best = [e.value for e in acc.Scalars("val/fid_best")]
    assert len(fid) == 3 and best == pytest.approx([min(fid[: i + 1]) for i in range(3)])


def fake_hydra(tmp_path: Path, overrides: list[str], mode: str, sweep: list[str] | None = None):
    from hydra.types import RunMode

    sweep_dir = tmp_path / "sweep"
    if sweep is not None:
        sweep_dir.mkdir(exist_ok=True)
        OmegaConf.save({"hydra": {"overrides": {"task": sweep}}}, sweep_dir / "multirun.yaml")
    hc = OmegaConf.create(
        {
            "overrides": {"task": overrides},
            "sweep": {"dir": str(sweep_dir), "params": None},
            "sweeper": {"params": None},
            "runtime": {
                "choices": {
                    "data": "mnist",
                    "generator": "dcgan",
                    "discriminator": "capsule_small",
                    "hydra/launcher": "basic",
                }
            },
        }
    )
    hc.mode = RunMode.MULTIRUN if mode == "multirun" else RunMode.RUN
    return hc


def test_hparams_are_the_keys_that_identify_a_run(tmp_path: Path) -> None:
    cfg = compose_train_cfg(
        ["discriminator=capsule_small", "lr=1e-4", "trainer.max_epochs=3", "paths.output_dir=/x"]
    )
    typed = ["discriminator=capsule_small", "lr=1e-4", "trainer.max_epochs=3", "paths.log_dir=/x"]
    params, apart = run_hparams(cfg, fake_hydra(tmp_path, typed, "run"))
    assert params["discriminator"] == "capsule_small" and params["data"] == "mnist"
    assert params["lr"] == 1e-4 and params["trainer/max_epochs"] == 3 and params["seed"] == 42
    assert params["compile"] is False  # a boolean, not 0.0
    assert "lr_g" not in params  # null: left out
    assert not any(k.startswith(("paths", "trainer/accelerator", "data/root")) for k in params)
    assert len(params) < 25  # not the whole config (72 keys)
    assert apart == {"discriminator", "lr", "trainer/max_epochs"}  # a single run: as typed
    sweep = ["discriminator=cnn,capsule_small", "seed=1,2", "trainer.max_epochs=3"]
    job = ["discriminator=cnn", "seed=2", "trainer.max_epochs=3"]
    _, apart = run_hparams(cfg, fake_hydra(tmp_path, job, "multirun", sweep))
    assert apart == {"discriminator", "seed"}  # a sweep: what varies


def test_run_names_say_what_sets_a_run_apart(tmp_path: Path) -> None:
    cfg = compose_train_cfg(["paths.output_dir=" + str(tmp_path / "run")])
    sweep = ["discriminator=cnn,capsule_small", "seed=1,2", "trainer.max_epochs=3"]
    job = ["discriminator=cnn", "seed=2", "trainer.max_epochs=3"]
    assert auto_run_name(cfg, fake_hydra(tmp_path, job, "multirun", sweep)) == (
        "discriminator=cnn,seed=2"
    )
    single = ["lr=1e-4", "threads=1", "data.root=/somewhere", "+trainer.max_time=00:01:00:00"]
    assert auto_run_name(cfg, fake_hydra(tmp_path, single, "run")) == (
        "discriminator=capsule_small,lr=1e-4,trainer.max_time=00:01:00:00"
    )
    trial = ["lr=5.6115164153345e-05", "instance_noise=0.2598528437324805", "seed=3"]
    optuna = fake_hydra(tmp_path, trial, "multirun", [])
    optuna.sweeper.params = {"lr": "tag(log, interval(1e-5, 1e-3))", "instance_noise": "x"}
    assert auto_run_name(cfg, optuna) == "lr=5.612e-05,instance_noise=0.2599"
    # a resumed run keeps the name its folder's events already have
    (tmp_path / "run" / "tensorboard" / "first_name").mkdir(parents=True)
    (tmp_path / "run" / "tensorboard" / "first_name" / "events.out.tfevents.1").write_bytes(b"")
    with open_dict(cfg):
        cfg.ckpt_path = "last"
    assert auto_run_name(cfg, fake_hydra(tmp_path, [*single, "ckpt_path=last"], "run")) == (
        "first_name"
    )


def test_two_job_sweep_names_its_tensorboard_runs(readme_sweep) -> None:
    sweep, proc = readme_sweep
    out = proc.stdout  # and stderr, in the order they were written
    assert proc.returncode == 0, out[-3000:]
    # the model table and the device lines once per sweep: the first job's, not the second's
    second = out.split("#1 : ")[1]  # Hydra's log line launching the second job
    assert "Total FLOPs" in out and "Total FLOPs" not in second, second
    assert "GPU available" in out and "GPU available" not in second, second
    assert "run folder:" not in out  # a sweep's folder is named by its summary
    names = {p.name for job in ("0", "1") for p in event_dirs(sweep / job)}
    assert names == {"lr=0.0001", "lr=0.0002"}  # the swept key, not the fixed choice
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "1"]  # epochs count from 1
    for job, lr in (("0", "0.0001"), ("1", "0.0002")):
        content = events_of(sweep / job).PluginTagToContent("hparams")
        data = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
        # what TensorBoard's HPARAMS view ticks: the first five after its backend's sort
        # (differing keys first, then by name); alphabetically `lr` is further down
        _sort_and_reduce_to_hparams_limit(data.experiment)
        infos = [h.name for h in data.experiment.hparam_infos]
        assert "lr" in infos[:5] and "lr" not in sorted(infos)[:5], infos
        start = plugin_data_pb2.HParamsPluginData.FromString(
            content["_hparams_/session_start_info"]
        ).session_start_info
        assert start.group_name == f"lr={lr} (job {job})"  # the Trial ID
        assert start.hparams["lr"].number_value == pytest.approx(float(lr))
        assert start.hparams["discriminator"].string_value == "capsule_small"
        assert start.hparams["compile"].WhichOneof("kind") == "bool_value"


# -- numbering and short runs -------------------------------------------------------------


def test_numbering_agrees_across_console_files_and_events(make_cfg, caplog) -> None:
    """Epochs from 1 and generator steps: the console's FID line, the checkpoint and sample
    file names, the capsule plot's title and TensorBoard's x axis say the same numbers."""
    caplog.set_level(logging.INFO, logger="capsgan")
    cfg = make_cfg("trainer.max_epochs=2", *SHORT)
    train(cfg)
    run = Path(cfg.paths.output_dir)
    console = [r.getMessage() for r in caplog.records if "FID" in r.getMessage()]
    assert [m.split(":")[0] for m in console] == [
        "epoch 1, generator step 3",
        "epoch 2, generator step 6",
    ]
    assert sorted(p.name for p in (run / "checkpoints").glob("epoch_*")) == [
        "epoch_0001.ckpt",
        "epoch_0002.ckpt",
    ]
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == [
        "epoch_0001.png",
        "epoch_0002.png",
    ]
    acc = events_of(run)
    image_steps = [e.step for e in acc.Images("samples/fixed_noise")]
    assert image_steps == [e.step for e in acc.Scalars("epoch/d_loss")]
    assert image_steps == [e.step for e in acc.Scalars("val/fid")] == [3, 6]
    assert [e.step for e in acc.Scalars("val_capsules/agreement/real")] == [3, 6]
    assert [e.value for e in acc.Scalars("epoch")][-1] == 2  # the last epoch is the 2nd
    assert [e.step for e in acc.Scalars("train/d_loss")] == [1, 2, 3, 4, 5, 6]


class ShortRunProbe(L.Callback):
    """Reads what the progress bar would show, and the last batch's losses."""

    seen: ClassVar[dict] = {}

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        from capsgan.callbacks import ProgressBar

        bar = ProgressBar()
        bar._trainer = trainer  # as Lightning's setup() attaches it
        ShortRunProbe.seen["total"] = bar.total_train_batches
        ShortRunProbe.seen["description"] = bar._get_train_description(trainer.current_epoch)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        ShortRunProbe.seen["last_d_loss"] = float(outputs["d_loss"])

    def on_train_end(self, trainer, pl_module) -> None:
        ShortRunProbe.seen["bar_d_loss"] = float(trainer.progress_bar_metrics["d_loss"])


def test_max_steps_gives_a_quiet_correct_short_run(make_cfg, recwarn) -> None:
    """trainer.max_steps=3 of 5-batch epochs with the default logging interval of 50: the
    bar counts to 3 in epoch 1/1 and ends on the last batch's losses, the run validates
    before it stops (val/fid, a best checkpoint, no monitor warning), train/ is logged."""
    cli.quiet_library_noise()  # as the entry points do
    ShortRunProbe.seen = {}
    cfg = make_cfg(
        "trainer.max_steps=3",
        "trainer.max_epochs=20",
        "trainer.limit_train_batches=5",
        "trainer.limit_val_batches=1",
        "trainer.log_every_n_steps=50",
        "+callbacks.probe._target_=tests.test_logging.ShortRunProbe",
    )
    metrics = train(cfg)
    messages = [
        str(w.message) for w in recwarn if "does not have many workers" not in str(w.message)
    ]
    assert not messages, messages
    seen = ShortRunProbe.seen
    assert seen["total"] == 3 and seen["description"].strip() == "Epoch 1/1"
    assert seen["bar_d_loss"] == pytest.approx(seen["last_d_loss"])
    assert "val/fid" in metrics
    run = Path(cfg.paths.output_dir)
    assert (run / "checkpoints" / "epoch_0001.ckpt").exists()
    assert [e.step for e in events_of(run).Scalars("train/d_loss")] == [3]


# -- loggers ------------------------------------------------------------------------------


def test_csv_logger_writes_a_row_per_logged_step(make_cfg) -> None:
    cfg = make_cfg("logger=csv", "trainer.max_epochs=2", *SHORT)
    train(cfg)
    run = Path(cfg.paths.output_dir)
    rows = list(csv.DictReader((run / "csv" / "metrics.csv").open()))
    assert [r["train/d_loss"] for r in rows if r["train/d_loss"]] and len(rows) >= 6
    epochs = [r for r in rows if r["epoch/d_loss"]]
    assert [r["epoch"] for r in epochs] == ["1", "2"]  # from 1, as everywhere
    assert len([r for r in rows if r["val/fid"]]) == 2
    assert "lr: 0.0002" in (run / "csv" / "hparams.yaml").read_text()
    assert not (run / "tensorboard").exists()


def test_many_logs_to_tensorboard_and_csv(make_cfg) -> None:
    cfg = make_cfg("logger=many", *SHORT)
    train(cfg)
    run = Path(cfg.paths.output_dir)
    assert (run / "csv" / "metrics.csv").exists() and event_dirs(run)


@pytest.mark.parametrize(("logger", "package"), [("wandb", "wandb"), ("mlflow", "mlflow")])
def test_a_logger_whose_package_is_missing_fails_at_start_with_the_pip_line(
    make_cfg, logger: str, package: str, monkeypatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a)
    )
    cfg = make_cfg(f"logger={logger}")
    with pytest.raises(ConfigError, match=f"pip install {package}"):
        train(cfg)
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()
