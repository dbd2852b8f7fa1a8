"""Every private (underscored or undocumented) Lightning / PyTorch / Hydra / TensorBoard API
this code relies on, in one place, with the versions it was checked on.

Checked on ``CHECKED_ON``, the versions below ``pyproject.toml``'s upper pins (``torch<2.15``,
``lightning<2.7``). To move a pin, install the new version, run ``pytest tests/test_compat.py``
(it probes each entry) and then the whole suite, fix what an entry's ``breaks`` names, and
update ``CHECKED_ON``.

Use a private API only where no public one does the job, and add it here in the same
commit. The Lightning trainer internals the training code reads go through the functions
below, so each sits in one place.
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import lightning as L
import lightning_utilities.core.rank_zero as rank_zero
import torch
from hydra.core.utils import JobReturn
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer import call
from torchvision.datasets import CIFAR10

CHECKED_ON = {
    "torch": "2.14.1",
    "torchvision": "0.29.1",
    "lightning": "2.6.6",
    "hydra-core": "1.3.8",
    "tensorboard": "2.21.0",
}


# -- the trainer internals the training code uses --------------------------------------


def logger_writes_this_batch(trainer: Any) -> bool:
    """Whether Lightning's logger writes this batch's step values (every
    ``log_every_n_steps`` batches, counted over the whole run); on other batches
    ``log(on_step=True)`` would cost time and write nothing. Lightning has no public
    accessor; without the private one every batch is logged (slower, same results)."""
    connector = getattr(trainer, "_logger_connector", None)
    return connector is None or bool(connector.should_update_logs or trainer.fast_dev_run)


def step_without_counting(optimizer: Any) -> None:
    """Keep the next ``optimizer.step()`` of a manual-optimization module out of
    ``trainer.global_step``, which otherwise counts every optimizer's steps (a GAN's
    discriminator and generator: two a batch). Lightning has no public switch; it installs
    the hooks again before every ``training_step``, so this lasts one batch."""
    optimizer._on_before_step = optimizer._on_after_step = lambda: None


# -- the register ----------------------------------------------------------------------


class PrivateAPI(NamedTuple):
    name: str  # the attribute or behaviour, as the code uses it
    used_in: str  # where
    why: str  # what it gives that no public API does
    breaks: str  # what goes wrong when it changes
    probe: Callable[[], bool]  # True while the API is there (tests/test_compat.py)


def _has_method(module: str, cls: str, name: str) -> Callable[[], bool]:
    """A probe: class ``cls`` of ``module`` still has the method ``name``."""
    return lambda: callable(getattr(getattr(importlib.import_module(module), cls), name, None))


def _source_has(function: Callable, *snippets: str) -> bool:
    """Whether ``function``'s source still holds each snippet (the behaviour relied on)."""
    source = inspect.getsource(function)
    return all(snippet in source for snippet in snippets)


def _should_update_logs() -> bool:
    from capsgan.cli import quiet_library_noise

    quiet_library_noise()
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    return hasattr(type(trainer._logger_connector), "should_update_logs")


def _optimizer_step_hooks() -> bool:
    opt = LightningOptimizer(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1))
    return callable(opt._on_before_step) and callable(opt._on_after_step)


PRIVATE_APIS = (
    PrivateAPI(
        "Trainer._logger_connector.should_update_logs",
        "compat.logger_writes_this_batch (callbacks.TrainingLog)",
        "whether the logger writes this batch's step values (skips self.log otherwise)",
        "falls back to logging every batch (slower, same results)",
        _should_update_logs,
    ),
    PrivateAPI(
        "LightningOptimizer._on_before_step / _on_after_step",
        "compat.step_without_counting (gan_module.LightningUpdates.update)",
        "keeps the discriminator's optimizer steps out of trainer.global_step",
        "global_step counts two steps per batch; max_steps / checkpoint intervals halve",
        _optimizer_step_hooks,
    ),
    PrivateAPI(
        "torch SummaryWriter._get_file_writer()",
        "loggers.log_hparams, loggers.TensorBoardLogger",
        "writes the HPARAMS summaries without a fake metric value at step 0",
        "no HPARAMS tab (AttributeError at start-up)",
        _has_method("torch.utils.tensorboard", "SummaryWriter", "_get_file_writer"),
    ),
    PrivateAPI(
        "Lightning Logger._experiment (None until first use)",
        "loggers.TensorBoardLogger.finalize",
        "ends the HPARAMS session only when an event file was opened",
        "an empty event file, or no session status",
        lambda: TensorBoardLogger(save_dir="unused")._experiment is None,
    ),
    PrivateAPI(
        "Lightning calls Logger.finalize('failed') inside its `except BaseException` handler",
        "loggers.TensorBoardLogger.finalize (reads sys.exc_info())",
        "tells a crash (HPARAMS status FAILURE) from SIGTERM / Ctrl-C (status left unknown)",
        "an interrupted run reads FAILURE, or a crashed one unknown",
        lambda: _source_has(
            call._call_and_handle_interrupt,
            "except BaseException",
            "_interrupt(trainer, exception)",
        ),
    ),
    PrivateAPI(
        "RichProgressBar._get_train_description(current_epoch)",
        "callbacks.ProgressBar",
        "the bar's 'Epoch N/M' text, counted from 1 as everywhere else",
        "the bar counts from 0 again (nothing else changes)",
        _has_method("lightning.pytorch.callbacks", "RichProgressBar", "_get_train_description"),
    ),
    PrivateAPI(
        "ModelCheckpoint._every_n_epochs",
        "preflight",
        "the checkpoint interval as Lightning normalised it",
        "a wrong start-up check",
        lambda: ModelCheckpoint(every_n_epochs=2)._every_n_epochs == 2,
    ),
    PrivateAPI(
        "logger 'lightning.pytorch.utilities.rank_zero' (lightning_utilities' rank_zero.log)",
        "cli.quiet_library_noise, training.build_trainer",
        "the logger Lightning's '💡 Tip:' and (in a sweep) repeated device lines go through",
        "those lines print again (nothing else changes)",
        # importing lightning.pytorch (above) points rank_zero's logger at its own
        lambda: rank_zero.log.name.endswith("utilities.rank_zero"),
    ),
    PrivateAPI(
        "module lightning.pytorch.utilities._pytree (its LeafSpec FutureWarning)",
        "cli.quiet_library_noise",
        "the module the filtered deprecation warning comes from",
        "the warning prints again if the module is renamed without the fix (harmless)",
        lambda: importlib.util.find_spec("lightning.pytorch.utilities._pytree") is not None,
    ),
    PrivateAPI(
        "hydra JobReturn._return_value",
        "sweep.SweepSummary.on_job_end",
        "a failed job's exception without re-raising it (.return_value raises)",
        "failed sweep jobs end the sweep instead of being recorded",
        lambda: "_return_value" in JobReturn.__dataclass_fields__,
    ),
    PrivateAPI(
        "torchvision CIFAR10._check_integrity / _load_meta (overridden)",
        "data.CIFAR10Copy",
        "reads a CIFAR-10 copy whose MD5s differ from the official files, with a warning",
        "such a copy is refused as corrupt again, or read without the warning",
        # CIFAR10.__init__ must still call both
        lambda: _source_has(CIFAR10.__init__, "self._check_integrity()", "self._load_meta()"),
    ),
)
