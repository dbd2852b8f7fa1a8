"""``train(cfg)``: build everything from the Hydra config, fit, return the metrics."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import hydra
import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard.summary import hparams

from capsgan.errors import UserError
from capsgan.sweep import in_multirun, spawn_ddp_in_multirun

log = logging.getLogger(__name__)


def instantiate_list(section: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a callbacks/logger group that has a ``_target_``."""
    if not section:
        return []
    return [hydra.utils.instantiate(c) for c in section.values() if c and "_target_" in c]


def flat_hparams(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config flattened to ``a/b/c`` keys for TensorBoard's HPARAMS tab."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():  # _target_ kept: it tells cnn from capsule runs
                walk(v, f"{prefix}/{k}" if prefix else str(k))
        elif isinstance(node, list):
            out[prefix] = str(node)
        else:
            out[prefix] = node

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    skip = ("hydra", "paths", "callbacks", "logger", "module")  # module/* repeats top-level keys
    return {k: v for k, v in out.items() if not k.startswith(skip)}


HPARAM_METRICS = (
    "val/fid", "val/kid", "val/is", "val/modes", "val/mode_kl",
    "val/d_acc", "epoch/d_loss", "epoch/g_loss", "epoch/d_acc",
)  # fmt: skip


def log_hparams(trainer: L.Trainer, params: dict[str, Any]) -> None:
    """Record the run's hyperparameters for TensorBoard's HPARAMS tab.

    The tab lists a run only if its hparams summary names metric tags; it then reads those
    tags' values from the run's own scalars. Lightning's ``log_hyperparams(params,
    metrics)`` would also write a fake value of each metric at step 0, so the summary is
    written directly, naming the metrics without logging any value.
    """
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.hparams.update(params)  # also saved to hparams.yaml
            sanitized = {k: v if isinstance(v, (bool, int, float, str)) else str(v)
                         for k, v in params.items()}  # fmt: skip
            writer = logger.experiment._get_file_writer()
            if writer is None:  # a DDP rank other than 0 has a dummy experiment: no events
                continue
            for summary in hparams(sanitized, dict.fromkeys(HPARAM_METRICS, 0.0)):
                writer.add_summary(summary)
        else:
            logger.log_hyperparams(params)


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the GAN described by ``cfg``; return the trainer's final metrics as floats."""
    L.seed_everything(cfg.seed, workers=True)
    datamodule = hydra.utils.instantiate(cfg.data)
    generator = hydra.utils.instantiate(cfg.generator)
    discriminator = hydra.utils.instantiate(cfg.discriminator)
    image_shape = (cfg.data.channels, cfg.data.image_size, cfg.data.image_size)
    if tuple(generator.output_shape) != image_shape:
        raise UserError(
            f"the generator makes images of shape {tuple(generator.output_shape)} but the data "
            f"are {image_shape}; pick a generator preset for this data set or change the last "
            "block of conf/generator/<preset>.yaml"
        )
    module = hydra.utils.instantiate(cfg.module, generator=generator, discriminator=discriminator)
    callbacks = instantiate_list(cfg.get("callbacks"))
    if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a bar when off
        callbacks = [c for c in callbacks if not isinstance(c, L.pytorch.callbacks.ProgressBar)]
    loggers = instantiate_list(cfg.get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False
    )
    log_hparams(trainer, flat_hparams(cfg))
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def run(cfg: DictConfig) -> float | None:
    """Entry point behind ``src/train.py``: train, then return the optimized metric.

    A :class:`UserError` is printed as one paragraph and ends the process with exit
    code 2 (``HYDRA_FULL_ERROR=1`` shows the traceback instead). In a multirun it is
    raised instead, so Hydra records the failed job and the other jobs still run
    (:class:`capsgan.sweep.SweepSummary`).
    """
    if cfg.get("threads"):  # e.g. parallel sweep jobs sharing the cores (docs/scaling.md)
        torch.set_num_threads(cfg.threads)
    spawn_ddp_in_multirun(cfg)
    try:
        metrics = train(cfg)
    except UserError as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or in_multirun():
            raise
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(2)
    metric = cfg.get("optimized_metric")
    if metric and metric in metrics:
        log.info("%s = %.4f", metric, metrics[metric])
        return metrics[metric]
    return None
