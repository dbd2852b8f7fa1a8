"""Lightning callbacks: the GAN's step / epoch logging and divergence guard (which the GAN
brings along), the fixed-noise sample grids, the long-epoch warning and the progress bar."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor
from torchvision.utils import make_grid, save_image

from capsgan import compat
from capsgan.errors import DivergenceError
from capsgan.loggers import GeneratorSteps

log = logging.getLogger(__name__)


class TrainingLog(L.Callback):
    """Logs the statistics ``GAN.training_step`` returns: ``train/<key>`` step values,
    ``epoch/<key>`` means, and ``d_loss`` / ``d_acc`` on the progress bar, off the per-batch
    path (each ``log`` call costs Lightning a fraction of a millisecond; docs/performance.md):
    step values only on the batches the logger writes, the epoch means as running sums on
    the device (one stacked tensor per set of keys: no sync), averaged over DDP ranks."""

    BAR_SECONDS = 0.5  # the progress bar's values are at most this old

    def __init__(self) -> None:
        self._sums: dict[tuple[str, ...], list[Any]] = {}  # a batch's keys -> [sums, batches]
        self._bar_time = -math.inf

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for logger in trainer.loggers:  # x axis: generator steps, as the console counts
            if isinstance(logger, GeneratorSteps):
                logger.follow(trainer)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a run shorter than the logging interval would write no train/ value: log once
        batches = run_batches(trainer, pl_module)
        if math.isfinite(batches) and 1 <= batches < trainer.log_every_n_steps:
            trainer.log_every_n_steps = int(batches)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:  # fmt: skip
        stats: dict[str, Tensor] = outputs
        values = torch.stack([v.float() for v in stats.values()])  # bf16 ones as fp32
        entry = self._sums.setdefault(tuple(stats), [torch.zeros_like(values), 0])
        entry[0].add_(values)
        entry[1] += 1
        if compat.logger_writes_this_batch(trainer):
            pl_module.log_dict(
                {f"train/{k}": v for k, v in stats.items()}, on_step=True, on_epoch=False
            )
        # the bar's values are Python floats (a GPU sync): refreshed every BAR_SECONDS and
        # at an epoch's last batch
        at_max_steps = 0 < trainer.max_steps <= trainer.global_step
        last = batch_idx + 1 == trainer.num_training_batches or at_max_steps
        now = time.monotonic()
        if now - self._bar_time >= self.BAR_SECONDS or last:
            self._bar_time = now
            pl_module.log_dict(
                {"d_loss": stats["d_loss"], "d_acc": stats["d_acc"]},
                prog_bar=True, on_step=True, on_epoch=False, logger=False,
            )  # fmt: skip
        # max_steps ends a run mid-epoch, where Lightning does not validate; stopping it as
        # early stopping does validates first (when due): a shortened run ends with val/
        if at_max_steps:
            trainer.should_stop = True

    def epoch_means(self) -> dict[str, Tensor]:
        """The mean of each key over this epoch's batches (that returned it), so far."""
        sums: dict[str, Tensor] = {}
        counts: dict[str, int] = {}
        for keys, (values, batches) in self._sums.items():
            for key, value in zip(keys, values, strict=True):
                sums[key] = sums.get(key, 0) + value
                counts[key] = counts.get(key, 0) + batches
        return {key: sums[key] / counts[key] for key in sums}

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        means = {f"epoch/{k}": v for k, v in self.epoch_means().items()}
        self._sums.clear()
        if means:
            pl_module.log_dict(means, on_step=False, on_epoch=True, sync_dist=True)


def run_batches(trainer: L.Trainer, pl_module: L.LightningModule) -> float:
    """The training batches of an epoch, fewer when ``max_steps`` (generator steps, each
    ``d_steps_per_g`` batches) ends the run sooner, counted from now."""
    batches = trainer.num_training_batches
    if trainer.max_steps is None or trainer.max_steps < 0:
        return batches
    return min(batches, max((trainer.max_steps - trainer.global_step) * _per_step(pl_module), 0))


def _per_step(pl_module: L.LightningModule) -> int:  # batches per generator step
    return int(getattr(pl_module.hparams, "d_steps_per_g", 1) or 1)


class DivergenceGuard(L.Callback):
    """Stops training with a :class:`DivergenceError` (exit code 3) naming the network and
    the generator step at which a loss first became non-finite, and refuses to write a
    checkpoint holding a non-finite weight. The first bad step is recorded on the device
    and read every ``log_every_n_steps`` batches (every batch on a CPU), at an epoch's end
    and before every checkpoint: the GPU never waits for a per-step check."""

    NETWORKS = ("discriminator", "generator")
    ADVICE = (
        "The run was stopped; no checkpoint was written after that step, so the newest "
        "file in the run's checkpoints/ folder is the last good one. To train stably, "
        "lower the learning rate (lr, or lr_d / lr_g for one network), clip gradients "
        "(gradient_clip_val=1.0), or soften the discriminator (label_smoothing=0.1, "
        "instance_noise=0.1)."
    )
    first_nonfinite: Tensor | None = None  # per network (D, G); -1: never

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:  # fmt: skip
        g_loss = outputs.get("g_loss")  # present when G stepped: one step fewer before it
        self.watch(outputs["d_loss"], g_loss, trainer.global_step - (g_loss is not None))
        if pl_module.device.type == "cpu" or (batch_idx + 1) % trainer.log_every_n_steps == 0:
            self.check(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # raising here stops the file from being written: a diverged model is never saved
        self.check(trainer, checkpoint["state_dict"])

    def watch(self, d_loss: Tensor, g_loss: Tensor | None, step: int) -> None:
        """Record (on the device, without a sync) the first step with a non-finite loss."""
        d_bad = ~torch.isfinite(d_loss)
        g_bad = ~torch.isfinite(g_loss) if g_loss is not None else torch.zeros_like(d_bad)
        bad = torch.stack([d_bad, g_bad])
        if self.first_nonfinite is None:
            self.first_nonfinite = torch.full((2,), -1, dtype=torch.long, device=d_loss.device)
        first = self.first_nonfinite
        self.first_nonfinite = torch.where(bad & (first < 0), step, first)

    def check(self, trainer: L.Trainer, state_dict: dict[str, Tensor] | None = None) -> None:
        """Raise :class:`DivergenceError` if a loss or a weight in ``state_dict`` is non-finite."""
        epoch = trainer.current_epoch + 1  # counted from 1, as the log and progress bar do
        if self.first_nonfinite is not None:
            first = self.first_nonfinite.tolist()  # the one sync, every few batches
            for network, step in zip(self.NETWORKS, first, strict=True):
                if step >= 0:
                    raise DivergenceError(
                        f"training diverged: the {network} loss became NaN or infinite at "
                        f"generator step {step} (epoch {epoch}). {self.ADVICE}"
                    )
        for key, value in (state_dict or {}).items():
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                network = key.split(".", 1)[0]
                raise DivergenceError(
                    f"training diverged: the {network} weight {key!r} holds NaN or infinite "
                    f"values at generator step {trainer.global_step} (epoch {epoch}). "
                    f"{self.ADVICE}"
                )


class SampleGrid(L.Callback):
    """A grid of samples from the module's fixed noise at every epoch end (a film of the
    generator learning): TensorBoard's ``samples/fixed_noise`` at the epoch's generator step
    and ``<run dir>/samples/epoch_NNNN.png`` (epochs from 1); with ``every_n_steps``, also
    ``samples/step_NNNNNN.png`` every N generator steps (runs compared at equal steps)."""

    def __init__(self, every_n_epochs: int = 1, nrow: int = 8, dirname: str = "samples",
                 every_n_steps: int | None = None) -> None:  # fmt: skip
        self.every_n_epochs, self.nrow, self.dirname = every_n_epochs, nrow, dirname
        self.every_n_steps, self._last_step_saved = every_n_steps, -1

    @torch.no_grad()
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1  # from 1, as the console and the checkpoints count
        if not trainer.is_global_zero or epoch % self.every_n_epochs:
            return
        grid = self._grid(pl_module)
        self._save(trainer, grid, f"epoch_{epoch:04d}.png")
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("samples/fixed_noise", grid, trainer.global_step)

    @torch.no_grad()
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        step = trainer.global_step  # generator steps; the same after a batch without one
        due = self.every_n_steps and step % self.every_n_steps == 0
        if not due or not trainer.is_global_zero or step == self._last_step_saved:
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
    """Says once, when ``measure_batches`` batches after the first (which pays one-off costs)
    predict an epoch longer than ``threshold_minutes``, how long the epoch (and the run)
    will take here and how to make it CPU-sized; training goes on."""

    def __init__(self, threshold_minutes: float = 30.0, measure_batches: int = 3) -> None:
        self.threshold_s, self.measure_batches = 60.0 * threshold_minutes, max(1, measure_batches)
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
        epoch_s = per_batch * batches
        if not math.isfinite(batches) or batches <= 0 or epoch_s < self.threshold_s:
            return
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        run = f", and the {epochs} epochs about {_duration(epochs * epoch_s)}" if epochs else ""
        fit = max(1, int(self.threshold_s / 3 / per_batch))  # batches for a ~10-minute epoch
        bf16 = (
            " trainer.precision=bf16-mixed (often faster on CPUs with AVX-512 BF16 or AMX:"
            " measure it with src/bench.py),"
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
            per_batch, batches, _duration(epoch_s), run, bf16, fit, _duration(fit * per_batch),
        )  # fmt: skip


class ProgressBar(RichProgressBar):
    """Lightning's rich progress bar, counting epochs from 1, without ``v_num`` (the last
    four characters of the logger's version, which here is the run's name)."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items

    @property
    def total_train_batches(self) -> int | float:
        """The batches this epoch will train (``max_steps=10`` reads 10/10, not 10/937)."""
        return run_batches(self.trainer, self.trainer.lightning_module)

    def _get_train_description(self, current_epoch: int) -> str:
        # "Epoch 1/20" (Lightning's says "Epoch 0/19"); a private hook, listed in compat.
        # The last epoch is max_epochs', or an earlier one where max_steps ends the run.
        trainer = self.trainer
        last = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        per_epoch = trainer.num_training_batches
        if trainer.max_steps > 0 and math.isfinite(per_epoch) and per_epoch > 0:
            batches = trainer.max_steps * _per_step(trainer.lightning_module)
            last = min(last or math.inf, math.ceil(batches / per_epoch))
        description = f"Epoch {current_epoch + 1}" + (f"/{last}" if last else "")
        return f"{description:{len(self.validation_description)}}"
