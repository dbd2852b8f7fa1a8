"""Lightning callbacks: the fixed-noise sample grid of every epoch (and, optionally, of
every N generator steps), and a warning when the first batches predict a very long epoch."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from torchvision.utils import make_grid, save_image

log = logging.getLogger(__name__)


class SampleGrid(L.Callback):
    """Logs a grid of samples from the module's fixed noise batch at every epoch end.

    The same z every epoch makes the grids a film of the generator learning (the
    founding slides' "GAN learning process"). Each grid goes to TensorBoard's IMAGES
    tab as ``samples/fixed_noise`` and to ``<run dir>/samples/epoch_NNNN.png``. With
    ``every_n_steps``, a grid is also saved as ``samples/step_NNNNNN.png`` every N generator
    steps: runs of different discriminators (or batch counts per epoch) are then compared
    at equal generator steps (``report.py``'s side-by-side panel).
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        nrow: int = 8,
        dirname: str = "samples",
        every_n_steps: int | None = None,
    ) -> None:
        self.every_n_epochs, self.nrow, self.dirname = every_n_epochs, nrow, dirname
        self.every_n_steps = every_n_steps
        self._last_step_saved = -1

    @torch.no_grad()
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if not trainer.is_global_zero or (epoch + 1) % self.every_n_epochs:
            return
        grid = self._grid(pl_module)
        self._save(trainer, grid, f"epoch_{epoch:04d}.png")
        # the step of this epoch's scalars: Lightning logs the epoch/ and val/ values at the
        # last batch's step, one below the batch counter (fit_loop.on_advance_end)
        step = max(trainer.fit_loop.epoch_loop._batches_that_stepped - 1, 0)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("samples/fixed_noise", grid, global_step=step)

    @torch.no_grad()
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        step = trainer.global_step  # generator steps
        if (
            not self.every_n_steps
            or not trainer.is_global_zero
            or step % self.every_n_steps
            or step == self._last_step_saved  # a batch without a generator step
        ):
            return
        self._last_step_saved = step
        self._save(trainer, self._grid(pl_module), f"step_{step:06d}.png")

    def _grid(self, pl_module: L.LightningModule) -> torch.Tensor:
        was_training = pl_module.generator.training
        pl_module.generator.eval()
        images = pl_module.generator(pl_module.fixed_z).float().cpu()
        pl_module.generator.train(was_training)
        return make_grid(images, nrow=self.nrow, normalize=True, value_range=(-1, 1))

    def _save(self, trainer: L.Trainer, grid: torch.Tensor, name: str) -> None:
        out_dir = Path(trainer.default_root_dir) / self.dirname
        out_dir.mkdir(parents=True, exist_ok=True)
        save_image(grid, out_dir / name)


def _duration(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


class EpochTimeWarning(L.Callback):
    """Says once, when the first batches predict an epoch longer than
    ``threshold_minutes``, how long the epoch (and the run) will take here and how to
    make it CPU-sized; training goes on.

    The time is measured over ``measure_batches`` batches after the first one (which pays
    for one-off allocations and kernel selection); validation is not included.
    """

    def __init__(self, threshold_minutes: float = 30.0, measure_batches: int = 3) -> None:
        self.threshold_s = 60.0 * threshold_minutes
        self.measure_batches = max(1, measure_batches)
        self._start: tuple[float, int] | None = None
        self._done = False

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        if self._done or not trainer.is_global_zero:
            return
        if self._start is None:
            self._start = (time.perf_counter(), batch_idx)
            return
        start, first = self._start
        if batch_idx - first < self.measure_batches:
            return
        self._done = True
        per_batch = (time.perf_counter() - start) / (batch_idx - first)
        batches = trainer.num_training_batches
        if not math.isfinite(batches) or batches <= 0:
            return
        epoch_s = per_batch * batches
        if epoch_s < self.threshold_s:
            return
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        run = f", and the {epochs} epochs about {_duration(epochs * epoch_s)}" if epochs else ""
        fit = max(1, int(self.threshold_s / 3 / per_batch))  # batches for a ~10-minute epoch
        bf16 = (
            " trainer.precision=bf16-mixed (faster on CPUs with AVX-512 BF16 and on GPUs),"
            if str(trainer.precision) == "32-true"
            else ""
        )
        log.warning(
            "This run is slow here: the first batches took %.1f s each, so one epoch of %d "
            "batches will take about %s%s (validation not included). Training goes on. For a "
            "CPU-sized run stop it (Ctrl-C saves a checkpoint) and use a smaller discriminator "
            "(discriminator=capsule_small, the CPU-sized capsule one, or discriminator=cnn),%s "
            "or fewer batches an epoch (trainer.limit_train_batches=%d for about %s); or run on "
            "a GPU. Measurements: docs/performance.md.",
            per_batch,
            batches,
            _duration(epoch_s),
            run,
            bf16,
            fit,
            _duration(fit * per_batch),
        )


class ProgressBar(RichProgressBar):
    """Lightning's rich progress bar, counting epochs from 1, without ``v_num`` (the last
    four characters of the logger's version, which here is the run's name)."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items

    def _get_train_description(self, current_epoch: int) -> str:
        # "Epoch 1/20" for the first of 20 epochs, as the log and the summaries count
        # (Lightning's bar says "Epoch 0/19"); a private hook, listed in capsgan.compat
        description = f"Epoch {current_epoch + 1}"
        if self.trainer.max_epochs is not None and self.trainer.max_epochs > 0:
            description += f"/{self.trainer.max_epochs}"
        return f"{description:{len(self.validation_description)}}"
