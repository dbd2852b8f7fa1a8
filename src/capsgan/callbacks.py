"""Lightning callbacks: the fixed-noise sample grid of every epoch (and, optionally, of
every N generator steps)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torchvision.utils import make_grid, save_image


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
        step = trainer.fit_loop.epoch_loop._batches_that_stepped  # the scalars' x axis
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
