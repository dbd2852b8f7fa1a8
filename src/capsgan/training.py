"""``train(cfg)``: build everything from the Hydra config, fit, return the metrics."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException
from omegaconf import DictConfig, open_dict
from torch import nn

from capsgan import run_info
from capsgan.checkpointing import ResumableRun, check_compatible, run_seed
from capsgan.cli import DropLines
from capsgan.config import (
    build_models,
    check_config,
    check_output_dir,
    instantiate,
    resolve_ckpt_path,
)
from capsgan.errors import (
    ConfigError,
    DivergenceError,
    RunInterruptedError,
    UserError,
    storage_error,
    user_errors,
)
from capsgan.gan_module import GAN
from capsgan.hardware import check_speed_switches, device_type, resolve_precision
from capsgan.hparams import GANHParams
from capsgan.inputs import read_checkpoint
from capsgan.locks import hold_run_folder, release_run_folder, remove_stale_temp_files
from capsgan.loggers import auto_run_name, check_logger_packages, log_hparams
from capsgan.preflight import check_before_training, lightning_refusal, nothing_trained
from capsgan.sweep import in_multirun, raise_if_sweep_stopping, resumed_job, spawn_ddp_in_multirun

log = logging.getLogger(__name__)


def instantiate_list(section: DictConfig | None, group: str = "callbacks") -> list[Any]:
    return [_built(c, f"{group}.{k}") for k, c in (section or {}).items() if c and "_target_" in c]


def _built(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """``node`` instantiated; a refusal of its settings (Lightning's, a constructor's) as one
    paragraph naming ``key``, a :class:`UserError` of ours as it is."""
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except (InstantiationException, MisconfigurationException) as err:
        reason = err.__cause__ or err
        if isinstance(reason, UserError):
            raise reason from err
        group = key.split(".", 1)[0]
        raise ConfigError(
            f"`{key}` was refused when the trainer was built: {type(reason).__name__}: "
            f"{reason}. Fix the {key}.* override or conf/{group}/, as the Lightning "
            "documentation of the named setting says; nothing was trained."
        ) from err


def repeated_in_sweep() -> bool:
    """A sweep's job after the first: the model table and the device lines (``GPU
    available: ...``) are the first job's again, and are left out."""
    return in_multirun() and int(HydraConfig.get().job.get("num") or 0) > 0


# Lightning's device lines, left out in the jobs of a sweep after the first
_DEVICE_FILTER = DropLines(
    "GPU available:", "TPU available:", "HPU available:", "LOCAL_RANK:", when=repeated_in_sweep
)


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """Callbacks, loggers and Trainer from the config; Lightning's refusals as ConfigError."""
    _DEVICE_FILTER.install(
        "lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda"
    )
    callbacks = instantiate_list(cfg.get("callbacks"))
    if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a bar when off
        callbacks = [c for c in callbacks if not isinstance(c, L.pytorch.callbacks.ProgressBar)]
    if cfg.trainer.get("fast_dev_run"):
        # a smoke run writes no checkpoint (Lightning's ModelCheckpoint still saves
        # last.ckpt at the end of a fast_dev_run), so ckpt_path=latest never picks it
        callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
    loggers = instantiate_list(cfg.get("logger"), "logger")
    # the model table (and its FLOPs pass) is the same for every job of a sweep: once
    once = {"enable_model_summary": False} if repeated_in_sweep() else {}
    return _built(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False, **once)


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the GAN described by ``cfg``; return the trainer's final metrics as floats.
    Bad input raises a :class:`UserError` before any data is read (or, for what needs the
    data, before the first batch: :mod:`capsgan.preflight`); the run folder is held
    (:mod:`capsgan.locks`) and every way the run ends is recorded in ``run_info.json``."""
    output_dir = str(cfg.paths.output_dir)
    check_output_dir(output_dir)
    rank_zero = rank_zero_only.rank == 0
    if rank_zero:
        hold_run_folder(output_dir)  # a second run in this folder is refused
    try:
        if in_multirun() and rank_zero:
            done = resumed_job(cfg, output_dir)
            if done is not None:
                return done
        if rank_zero:
            remove_stale_temp_files(output_dir)  # a killed run's half-written checkpoint
            hydra = HydraConfig.get() if HydraConfig.initialized() else None
            overrides = list(hydra.overrides.task) if hydra else []
            config_dir = str(hydra.output_subdir) if hydra and hydra.output_subdir else None
            run_info.start_session(output_dir, overrides, cfg.get("ckpt_path"), config_dir)
        try:
            metrics = _fit(cfg, output_dir)
        except BaseException as err:
            converted = None if isinstance(err, UserError) else storage_error(err)
            if rank_zero:
                run_info.end_session(output_dir, *_how_it_ended(converted or err))
            if converted is not None:  # a full disk, a read-only folder: one paragraph
                raise converted from err
            raise
        if rank_zero:
            run_info.end_session(output_dir, "completed", metrics=metrics)
        return metrics
    finally:
        if rank_zero:
            release_run_folder(output_dir)


def _how_it_ended(err: BaseException) -> tuple[str, str]:
    """``run_info.json``'s status and message for a run that ended with ``err``."""
    if isinstance(err, DivergenceError):
        return "diverged", str(err)
    if isinstance(err, RunInterruptedError):
        return "interrupted", str(err)
    if isinstance(err, UserError):
        return "failed", str(err)
    if isinstance(err, KeyboardInterrupt):
        return "interrupted", "stopped by a second Ctrl-C, at once and without saving"
    if isinstance(err, SystemExit):
        return "interrupted", f"the process exited (code {err.code})"
    return "crashed", f"{type(err).__name__}: {err} (an unexpected error: see the traceback)"


def build_gan(cfg: DictConfig, generator: nn.Module, discriminator: nn.Module) -> GAN:
    """The GAN module of ``cfg``: its hyperparameters are the top-level keys named like
    :class:`GANHParams`' fields (``lr``, ``betas``...), one name each in HPARAMS and sweeps."""
    return GAN(generator, discriminator, GANHParams.from_config(cfg))


def _fit(cfg: DictConfig, output_dir: str) -> dict[str, float]:
    # The values, the Trainer (Lightning's own refusals), then the models (their
    # constructors' rules), before any data is read: a bad sweep job fails in seconds.
    check_config(cfg)
    if cfg.get("threads"):  # e.g. parallel sweep jobs sharing the cores ("Scaling out")
        torch.set_num_threads(cfg.threads)
    # a resumed sweep (-m ... ckpt_path=last) starts the jobs that have no last.ckpt afresh
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir, missing_ok=in_multirun())
    device = device_type(cfg.trainer.get("accelerator", "auto"))
    check_speed_switches(cfg, device)  # compile + channels_last on a GPU: refused, why
    precision = resolve_precision(cfg, device)  # trainer.precision: auto -> a Lightning value
    if rank_zero_only.rank == 0:
        run_info.note_session(
            output_dir, precision={"value": precision.precision, "why": precision.reason}
        )
    check_logger_packages(cfg)  # logger=wandb without wandb: the pip line, now
    if not cfg.get("run_name") and "run_name" in cfg:  # null: TensorBoard's name of the run
        with open_dict(cfg):
            cfg.run_name = auto_run_name(cfg)
    trainer = build_trainer(cfg)
    generator, discriminator = build_models(cfg)
    # read as Lightning reads it on resume (weights_only): a file refused here would fail there
    ckpt = read_checkpoint(ckpt_path, "ckpt_path", weights_only=True) if ckpt_path else None
    L.seed_everything(run_seed(cfg.seed, ckpt), workers=True)  # a resume: the run's own
    datamodule = instantiate(cfg, "data", model=False)
    module = build_gan(cfg, generator, discriminator)
    if ckpt is not None:
        check_compatible(ckpt, module, ckpt_path)
        del ckpt  # Lightning reads the file again in fit()
    if rank_zero_only.rank == 0:
        # Missing or corrupt data fails here, before the loggers write an event file that
        # would list a run with no steps (fit() calls it again; reading MNIST took 0.15 s here).
        datamodule.prepare_data()
    started = check_before_training(cfg, trainer, datamodule)  # metrics, checkpoints, data size
    log_hparams(trainer, cfg)
    with warnings.catch_warnings():
        # Both are about step checkpoints with manual optimization, which we want: the
        # state after the generator step, and a resumed epoch that runs its remaining
        # batches from a fresh shuffle (the batches are i.i.d. draws of the data set).
        warnings.filterwarnings("ignore", "Using ModelCheckpoint with manual optimization")
        warnings.filterwarnings("ignore", "You're resuming from a checkpoint that ended before")
        # a run shorter than log_every_n_steps: TrainingLog shortens the interval to it
        warnings.filterwarnings("ignore", "The number of training batches .* is smaller than")
        if ckpt_path:  # a resume writes into its own checkpoints/ folder again, as it should
            warnings.filterwarnings("ignore", "Checkpoint directory .* exists and is not empty")
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        except SIGTERMException as err:
            raise _stopped(trainer, output_dir) from err
        except (MisconfigurationException, ValueError, TypeError) as err:
            refusal = lightning_refusal(err, started)  # Lightning's, before the first batch
            if refusal is None:
                raise
            raise refusal from err
    # Under a spawning strategy (DDP in a multirun) the batches are counted in the spawned
    # processes; the metrics they logged are what comes back to this one.
    if not started.batches and not trainer.callback_metrics:
        raise nothing_trained(cfg, trainer, ckpt_path)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def _stopped(trainer: L.Trainer, output_dir: str) -> RunInterruptedError:
    resumable = next((c for c in trainer.callbacks if isinstance(c, ResumableRun)), None)
    how, saved = (resumable.stopped_by, resumable.saved_path) if resumable else ("SIGTERM", None)
    where = f"saved {str(saved)!r}" if saved else "saved no checkpoint (none was due yet)"
    message = (
        f"stopped by {how} at generator step {trainer.global_step} (epoch "
        f"{trainer.current_epoch + 1}); {where}. Resume with: python src/train.py "
        f"hydra.run.dir={output_dir} ckpt_path=last (the run's saved overrides are reused)"
    )
    return RunInterruptedError(message, 130 if how == "Ctrl-C" else 143)  # as STOP_SIGNALS


def announce_run_folder(cfg: DictConfig, what: str) -> None:
    """Say where a single run writes, with the line that opens it in TensorBoard (a sweep
    prints its folder and summary itself, :class:`capsgan.sweep.SweepSummary`)."""
    folder = Path(str(cfg.paths.output_dir))
    shown = os.path.relpath(folder) if folder.is_relative_to(Path.cwd()) else str(folder)
    log.info("%s: %s  (view it: tensorboard --logdir %s)", what, shown, shown)


def run(cfg: DictConfig) -> float | None:
    """Entry point behind ``src/train.py``: train, then return the optimized metric. A
    :class:`UserError` is one paragraph and exit code 2; in a multirun it is raised, so
    Hydra records the failed job and the others run (:class:`capsgan.sweep.SweepSummary`)."""
    spawn_ddp_in_multirun(cfg)
    single = not in_multirun() and rank_zero_only.rank == 0  # a sweep names its own folder
    if single:
        announce_run_folder(cfg, "run folder")
    # in a multirun the sweep records a failed or interrupted job and goes on
    with user_errors(reraise=in_multirun()):
        raise_if_sweep_stopping()  # a stopped sweep's queued jobs end at once
        metrics = train(cfg)
    metric = cfg.get("optimized_metric")
    if metric and metric in metrics:
        log.info("%s = %.4f", metric, metrics[metric])
    if single:  # last, where the eye lands (a stopped run's message names the folder itself)
        announce_run_folder(cfg, "the run's folder")
    return metrics.get(metric) if metric else None
