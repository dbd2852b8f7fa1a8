"""Checkpoints that survive faults: atomic writes, a save on SIGTERM / Ctrl-C, TensorBoard
curves that continue across a resume, and the checks that a checkpoint can be resumed from.

Why each piece is needed (docs/reliability.md, "Checkpoints, kill and resume"): Lightning's
own save moves a ``$TMPDIR`` file onto the target, a copy across file systems that a kill
can cut short (:class:`AtomicCheckpointIO`); a ``KeyboardInterrupt`` can land in the middle
of an optimizer step, so Ctrl-C goes through Lightning's SIGTERM path (:class:`ResumableRun`),
which also marks a resumed run's first step as a TensorBoard restart, so the killed run's
orphaned steps are dropped: no gap, no duplicate.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException
from tensorboard.compat.proto.event_pb2 import Event, SessionLog
from torch.utils.tensorboard import SummaryWriter

from capsgan.atomic_write import write_atomically
from capsgan.errors import ConfigError, storage_error
from capsgan.loggers import epochs_from_1
from capsgan.runs import saved_run_hint

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` through :func:`capsgan.atomic_write.write_atomically`.

    A reader (or a resumed run) therefore sees either the previous complete file or the
    new complete file under the checkpoint's name, never a partial one. Remote paths
    (``s3://...``) keep Lightning's fsspec transaction.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        try:
            write_atomically(path, lambda f: torch.save(checkpoint, f))
        except BaseException as err:
            converted = storage_error(err, path)
            if converted is None and isinstance(err, RuntimeError) and "write" in str(err):
                # torch's zip writer reports a failed write without the OS error behind it:
                # ENOSPC when the folder's disk is (nearly) full, else EIO
                code = errno.EIO
                with contextlib.suppress(OSError):
                    if shutil.disk_usage(path.parent).free < 2**20:
                        code = errno.ENOSPC
                converted = storage_error(OSError(code, str(err)), path)
            if converted is not None:  # a full disk: one paragraph naming the file
                raise converted from err
            raise


class ModelCheckpoint(L.pytorch.callbacks.ModelCheckpoint):
    """Lightning's, with ``{epoch}`` in file names counted from 1, as the console, the
    progress bar and the sample grids count (``epoch_0001.ckpt`` is the first epoch's)."""

    def format_checkpoint_name(
        self, metrics: dict[str, torch.Tensor], *args: Any, **kw: Any
    ) -> str:
        return super().format_checkpoint_name(epochs_from_1(metrics), *args, **kw)


class ResumableRun(L.Callback):
    """Makes a run stoppable and resumable without losing or repeating anything.

    * SIGTERM or Ctrl-C: save ``<dirpath>/last.ckpt`` at the batch boundary, then stop.
      Nothing is saved for any other exception: a diverged or crashed run must not
      replace the last good checkpoint.
    * Every checkpoint flushes the loggers, before it and again at the next batch (the
      batch's own step is logged after the save), so a run killed later (SIGKILL) keeps
      every step up to the checkpoint it will resume from.
    * A resumed run marks its first step as a restart in TensorBoard (see module doc).
    * Every checkpoint records the run's ``seed``, which a resume seeds with
      (:func:`run_seed`), whatever ``seed`` the resuming command gives.
    """

    def __init__(self, dirpath: str | Path, seed: int | None = None) -> None:
        self.dirpath = Path(dirpath)
        self.seed = seed
        self.stopped_by: str | None = None  # "SIGTERM" or "Ctrl-C", for the exit message
        self.saved_path: Path | None = None
        self._marked_restart = False
        self._flush_at_next_batch = False

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.stopped_by is not None:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.stopped_by = "Ctrl-C"
        print(
            "\nCtrl-C: saving a checkpoint after this batch, then stopping "
            "(press Ctrl-C again to stop at once without saving)."
        )
        os.kill(os.getpid(), signal.SIGTERM)  # Lightning stops at the batch boundary

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # not on_fit_start: Lightning snapshots every signal handler after that hook and
        # puts the snapshot back at its teardown (after an exception too), so the handler
        # ours replaces here is restored, where one installed before would stay installed
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._on_sigint)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._flush_at_next_batch:
            # the step (and epoch/ means) logged right after a checkpoint are not re-run by
            # a resume from it: put them on disk before a kill can take them
            self._flush_at_next_batch = False
            for logger in trainer.loggers:
                logger.save()
        if self._marked_restart or trainer.ckpt_path is None:
            return
        self._marked_restart = True
        # the first step this session writes (the x axis counts generator steps,
        # capsgan.loggers): the killed session's events from here on are dropped
        step = trainer.global_step + 1
        start = Event(step=step, session_log=SessionLog(status=SessionLog.START))
        for logger in trainer.loggers:
            writer = logger.experiment
            if not isinstance(writer, SummaryWriter):
                continue
            if writer.file_writer is None:  # not opened yet: let SummaryWriter write it
                writer.purge_step = step
            else:
                writer.file_writer.add_event(start)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        for logger in trainer.loggers:
            logger.save()  # TensorBoard: flush its events; CSV: write its rows
        self._flush_at_next_batch = True
        if self.seed is not None:
            checkpoint[SEED_KEY] = self.seed

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.sanity_checking:
            return
        if self.stopped_by is None:
            self.stopped_by = "SIGTERM"
        path = self.dirpath / "last.ckpt"
        trainer.save_checkpoint(path, weights_only=False)  # full state, to resume
        self.saved_path = path  # only once written: the exit message names it
        log.info("saved %s at generator step %d", path, trainer.global_step)


SEED_KEY = "capsgan_seed"  # the run's seed, in every checkpoint ResumableRun saves


def run_seed(seed: int, ckpt: dict[str, Any] | None) -> int:
    """The seed to seed a run with: a resumed run's own (its checkpoint's), else ``seed``.
    A resume that gives another seed is told so: its own is the one the run continues."""
    own = (ckpt or {}).get(SEED_KEY)
    if own is None or own == seed:
        return seed
    log.info("resuming a run made with seed=%d: seeding with it (not seed=%d)", own, seed)
    return int(own)


def check_compatible(ckpt: dict[str, Any], module: torch.nn.Module, path: str | Path) -> None:
    ours, theirs = module.state_dict(), ckpt["state_dict"]
    missing = [k for k in ours if k not in theirs]
    unexpected = [k for k in theirs if k not in ours]
    mismatched = [
        f"{k} {tuple(theirs[k].shape)} in the checkpoint vs {tuple(v.shape)} here"
        for k, v in ours.items()
        if k in theirs and hasattr(theirs[k], "shape") and tuple(theirs[k].shape) != v.shape
    ]
    found = {
        "weights differ in shape": mismatched,
        "weights are missing from it": missing,
        "of its weights do not exist here": unexpected,
    }
    details = [f"{len(keys)} {what}, e.g. {keys[0]}" for what, keys in found.items() if keys]
    if not details:
        return
    hint = saved_run_hint(Path(path).resolve())
    raise ConfigError(
        f"the checkpoint {str(path)!r} was saved by a different architecture than the one "
        f"configured now: {'; '.join(details)}. Resume with the same generator= / "
        f"discriminator= options and sizes (latent_dim, data.*) as the run that saved it.{hint} "
        "Or set ckpt_path=null to start from scratch."
    )
