"""Checks that need the built trainer and the loaded data, done before the first batch
(:mod:`capsgan.config` judges each value before anything is built). Lightning would find
these late or never: a checkpoint monitoring ``val/fid`` that no callback logs fails after
a whole epoch; a batch larger than the data set "completes" without training anything.
"""

from __future__ import annotations

import math
import os
import traceback
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig

from capsgan.config import raise_problems
from capsgan.errors import ConfigError
from capsgan.metrics import METRIC_KEYS, MIN_IMAGES, SampleQualityCallback


class TrainingStarted(L.Callback):
    """Counts the training batches this session ran: an error raised while the count is 0
    was raised during set-up, and a fit that returns with 0 trained nothing."""

    def __init__(self) -> None:
        self.batches = 0

    def on_train_batch_start(self, *args: Any, **kwargs: Any) -> None:
        self.batches += 1


def check_before_training(cfg: DictConfig, trainer: L.Trainer, datamodule: Any) -> TrainingStarted:
    """Raise one :class:`ConfigError` for every problem the first epoch would hit; return
    the :class:`TrainingStarted` counter, added to the trainer's callbacks."""
    datamodule.setup("fit")  # the in-memory tensors; fit() finds them loaded
    problems = [*_trains_nothing(cfg, trainer, datamodule), *_metrics(cfg, trainer, datamodule)]
    if trainer.world_size > 1:  # spawned DDP ranks load their own copy: do not pickle this one
        datamodule.train_set = datamodule.val_set = None
    raise_problems(problems)
    started = TrainingStarted()
    trainer.callbacks.append(started)
    return started


def _trains_nothing(cfg: DictConfig, trainer: L.Trainer, dm: Any) -> list[str]:
    images, batches = len(dm.train_set), batches_per_epoch(trainer, dm, limited=False)
    subset = cfg.data.get("train_subset")
    source = f"data.train_subset={subset}" if subset else f"the {dm.name} training split"
    ranks = f" per process ({trainer.world_size} processes)" if trainer.world_size > 1 else ""
    if batches == 0:
        return [
            f"nothing would be trained: {source} has {images} images{ranks}, fewer than one "
            f"batch of data.batch_size={dm.batch_size}, and the last incomplete batch is "
            "dropped. Lower data.batch_size or use more images (data.train_subset=null: all)."
        ]
    per_epoch, limit = batches_per_epoch(trainer, dm), trainer.limit_train_batches
    if per_epoch == 0:  # a fraction of the batches that rounds to none
        return [
            f"nothing would be trained: trainer.limit_train_batches={limit} of the {batches} "
            f"batches per epoch is 0 batches. Use a larger fraction or a count of batches "
            "(trainer.limit_train_batches=10)."
        ]
    d_steps = cfg.get("d_steps_per_g", 1)  # judged >= 1 by the config check
    if per_epoch < d_steps:
        return [
            f"the generator would never be trained: an epoch has {per_epoch} batches but "
            f"d_steps_per_g={d_steps} discriminator batches come before each generator step. "
            "Lower d_steps_per_g or train on more batches per epoch."
        ]
    return []


def batches_per_epoch(trainer: L.Trainer, dm: Any, limited: bool = True) -> int:
    """The training batches of one epoch of this process: its share of the data set in
    whole batches (the last incomplete one is dropped), cut by limit_train_batches."""
    batches = len(dm.train_set) // max(trainer.world_size, 1) // dm.batch_size
    limit = trainer.limit_train_batches if limited else 1.0
    return min(batches, limit) if isinstance(limit, int) else int(batches * limit)


def _metrics(cfg: DictConfig, trainer: L.Trainer, dm: Any) -> list[str]:
    names = {  # monitor: callbacks.<name> of the configured ModelCheckpoints
        str(node.monitor): f"callbacks.{name}"
        for name, node in (cfg.get("callbacks") or {}).items()
        if node and str(node.get("_target_")).endswith("ModelCheckpoint") and node.get("monitor")
    }
    ranked = [  # the checkpoints ranked by a quality metric, each with its config key
        (c, names.get(c.monitor, "callbacks.model_checkpoint"))
        for c in trainer.callbacks
        if isinstance(c, ModelCheckpoint) and c.monitor in (*METRIC_KEYS, "val/metric_seconds")
    ]
    quality = next((c for c in trainer.callbacks if isinstance(c, SampleQualityCallback)), None)
    if quality is None:
        return [
            f"`{name}.monitor`={ckpt.monitor} but the sample_quality callback that logs "
            f"{ckpt.monitor} is not in this run, so the first validation would fail after a "
            f"whole epoch of training. Either keep callbacks.sample_quality, or set "
            f"{name}.monitor=null (keep every epoch, rank none) or monitor a metric the "
            "GAN logs itself (e.g. val/d_loss)."
            for ckpt, name in ranked
        ]
    if trainer.limit_val_batches == 0:
        return []  # no validation, so no metric to miss
    problems, val_every = [], trainer.check_val_every_n_epoch or 1
    for ckpt, name in ranked:
        ckpt_every = ckpt._every_n_epochs or 0
        saves_every = math.lcm(ckpt_every, val_every) if ckpt_every else 0
        if saves_every and saves_every % quality.every_n_epochs:
            problems.append(
                f"`{name}` ranks checkpoints by {ckpt.monitor} every {saves_every} epoch(s), "
                f"but callbacks.sample_quality.every_n_epochs={quality.every_n_epochs} computes "
                f"it less often, so the first epoch without {ckpt.monitor} would fail. Give "
                f"{name}.every_n_epochs the same value ({quality.every_n_epochs}), or "
                f"{name}.monitor=null."
            )
    if len(dm.val_set) < MIN_IMAGES:
        subset = cfg.data.get("val_subset")
        problems.append(
            f"the quality metrics need at least {MIN_IMAGES} real images, but "
            f"{f'data.val_subset={subset}' if subset else 'the validation split'} has "
            f"{len(dm.val_set)}. Raise data.val_subset (null: all), or remove the metrics "
            "(~callbacks.sample_quality callbacks.model_checkpoint.monitor=null)."
        )
    # A checkpoint that ranks by a quality metric which no epoch of the budget computes: the
    # run would end (or fail at its first checkpoint) with no FID at all, yet its sweep would
    # call it ok. ``debug=overfit trainer.max_epochs=3`` validates every 5 epochs.
    mid_epoch = trainer.val_check_interval not in (1, 1.0)  # validation within epochs
    if not ranked or trainer.check_val_every_n_epoch is None or mid_epoch:
        return problems
    budgets = []  # the epochs the run can reach, by each limit it has
    if trainer.max_epochs is not None and trainer.max_epochs >= 1:
        budgets.append((trainer.max_epochs, f"trainer.max_epochs={trainer.max_epochs}"))
    # trainer.global_step counts generator steps: one every d_steps_per_g batches
    g_steps = batches_per_epoch(trainer, dm) // cfg.get("d_steps_per_g", 1)
    if trainer.max_steps >= 1 and g_steps >= 1:
        steps = f"trainer.max_steps={trainer.max_steps} ({g_steps} generator steps an epoch)"
        budgets.append((math.ceil(trainer.max_steps / g_steps), steps))
    if not budgets:
        return problems  # no limit
    max_epochs, limit = min(budgets)
    first = math.lcm(val_every, quality.every_n_epochs)  # the first epoch with a value
    if first <= max_epochs:
        return problems
    monitor, name = ranked[0][0].monitor, ranked[0][1]
    return [
        *problems,
        f"no {monitor} would be computed within the budget: {limit} allows "
        f"{max_epochs} epoch(s), but validation runs every {val_every} epoch(s) "
        f"(trainer.check_val_every_n_epoch) and the quality metrics every "
        f"{quality.every_n_epochs} (callbacks.sample_quality.every_n_epochs), so the first "
        f"{monitor} comes at epoch {first}; `{name}` ranks by it and the run would end "
        f"without one. Raise the budget to {first} epochs or more, lower "
        f"trainer.check_val_every_n_epoch, or set {name}.monitor=null.",
    ]


def nothing_trained(cfg: DictConfig, trainer: L.Trainer, ckpt_path: str | None) -> ConfigError:
    """The error of a fit that returned without a single training batch."""
    if ckpt_path:
        return ConfigError(
            f"nothing was trained: the checkpoint {ckpt_path!r} is at epoch "
            f"{trainer.current_epoch} (generator step {trainer.global_step}), which already "
            f"reaches trainer.max_epochs={cfg.trainer.get('max_epochs')} / trainer.max_steps="
            f"{cfg.trainer.get('max_steps')}. To train on, raise them (e.g. trainer.max_epochs="
            f"{trainer.current_epoch + 10}) with the same ckpt_path; the run folder is unchanged."
        )
    return ConfigError(
        "nothing was trained: the fit ended before its first batch. Check trainer.max_epochs, "
        "trainer.max_steps, trainer.max_time and trainer.limit_train_batches."
    )


def lightning_refusal(err: BaseException, started: TrainingStarted) -> ConfigError | None:
    """Lightning's own refusal of a setting as a :class:`ConfigError`, or None when ``err``
    is something else (ours, or raised after training began: a bug, with its traceback)."""
    frames = [frame for frame, _ in traceback.walk_tb(err.__traceback__)]  # innermost last
    inside = bool(frames) and f"{os.sep}lightning{os.sep}" in frames[-1].f_code.co_filename
    lightning = isinstance(err, MisconfigurationException) or inside
    if not lightning or (started.batches and not isinstance(err, MisconfigurationException)):
        return None
    return ConfigError(
        f"Lightning refused the settings before training: {type(err).__name__}: {err}. Check "
        "the trainer.* and callbacks.* overrides (conf/trainer/, conf/callbacks/) against the "
        "Lightning documentation of the setting named."
    )
