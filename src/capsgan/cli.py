"""What the entry points (``src/train.py``, ``src/train_classifier.py``, ``src/bench.py``,
``src/evaluate.py``) set up before Hydra runs: narrow filters for library messages a user
cannot act on, the ``ckpt_path=latest`` resolver, a plain message when an optional plugin
is missing; and the scoring tools' list arguments and terminal tables.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.warnings import PossibleUserWarning
from omegaconf import OmegaConf

from capsgan.errors import ConfigError, user_errors
from capsgan.help import config_groups

LATEST = "latest"


class DropLines(logging.Filter):
    """Drops the records that start with one of ``prefixes`` (while ``when()`` holds);
    every other record of the logger passes."""

    def __init__(self, *prefixes: str, when: Callable[[], bool] = lambda: True) -> None:
        super().__init__()
        self.prefixes, self.when = prefixes, when

    def filter(self, record: logging.LogRecord) -> bool:
        return not (str(record.msg).startswith(self.prefixes) and self.when())

    def install(self, *loggers: str) -> None:
        """Put this filter on each named logger (addFilter adds it once: idempotent)."""
        for name in loggers:
            logging.getLogger(name).addFilter(self)


# Lightning's advertisements ("💡 Tip: ... litlogger / litmodels"), logged on every Trainer
_TIP_FILTER = DropLines("💡 Tip:")


def quiet_library_noise() -> None:
    """Silence, at their source, library messages the user cannot act on: Lightning's
    ``LeafSpec`` FutureWarning (its fix), its "💡 Tip:" adverts, and its advice to raise
    ``num_workers`` (every loader here serves one in-memory tensor, :mod:`capsgan.data`).
    Each filter matches one message from one module; nothing else is hidden. Idempotent."""
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"lightning\.pytorch\.utilities\._pytree",
    )
    warnings.filterwarnings(
        "ignore",
        message=r"The '\w+' does not have many workers which may be a bottleneck",
        category=PossibleUserWarning,
    )
    # rank_zero_info logs through this logger (lightning_utilities' rank_zero module is
    # pointed at it by lightning.pytorch; fabric's is the same mechanism)
    _TIP_FILTER.install(
        "lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"
    )


# -- ckpt_path=latest ------------------------------------------------------------------


def resume_dir(ckpt_path: object, log_dir: str, default: str) -> str:
    """``hydra.run.dir`` of ``src/train.py``: with ``ckpt_path=latest`` the folder of the
    run under ``log_dir`` whose ``checkpoints/last.ckpt`` is the newest (so the resumed run
    continues its curves and checkpoints there), else ``default``."""
    if str(ckpt_path) != LATEST:
        return default
    found = [p for p in Path(log_dir).rglob("checkpoints/last.ckpt") if p.is_file()]
    return str(max(found, key=lambda p: p.stat().st_mtime).parent.parent) if found else default


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("capsgan.resume_dir", resume_dir, replace=True)
    OmegaConf.register_new_resolver("capsgan.config_groups", config_groups, replace=True)  # --help


# -- optional plugins -----------------------------------------------------------------

OPTUNA = "hydra_plugins.hydra_optuna_sweeper"  # the one optional plugin, an extra
NEEDS_OPTUNA = ("hparams_search=", "hydra/sweeper=optuna")  # the overrides that use it


def check_optional_plugins(argv: Sequence[str]) -> None:
    """A ConfigError with the install line when the command needs a plugin that is not
    installed (Hydra would say only that it cannot find ``hydra/sweeper/optuna``)."""
    arg = next((arg for arg in argv if arg.startswith(NEEDS_OPTUNA)), None)
    try:
        missing = arg is not None and importlib.util.find_spec(OPTUNA) is None
    except ImportError:  # a missing parent package
        missing = True
    if missing:
        raise ConfigError(
            f"`{arg}` needs the Optuna sweeper, an optional extra that is not installed "
            "here. Install it with `pip install -e '.[optuna]'` (the README's dev install "
            "includes it)."
        )


def setup(argv: Sequence[str] = ()) -> None:
    """Everything an entry point needs before ``@hydra.main`` runs: the filters and
    resolvers, in this process (again in a sweep's worker: ``argv`` empty), and the plugins."""
    quiet_library_noise()
    register_resolvers()
    with user_errors():  # one Error: paragraph, exit 2
        check_optional_plugins(argv)


# -- the scoring tools' command lines and tables (evaluate, battle, semisupervised) --------


def as_list(value: Any) -> list[Any]:
    """A key that takes one item or a list of them (null: none), as a list."""
    if value is None:
        return []
    return list(value) if OmegaConf.is_list(value) else [value]


def bracket_lists(argv: list[str], keys: tuple[str, ...]) -> list[str]:
    """``key=a,b`` -> ``key=[a,b]`` for the list-valued ``keys`` of a script without -m.

    Hydra reads an unbracketed comma list as a sweep and refuses it outside ``-m``; the
    evaluation scripts never sweep, so ``n_labels=100,1000`` means the list.
    """
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+~") in keys and "," in value and value[:1] not in "[{'\"":
            arg = f"{key}=[{value}]"
        out.append(arg)
    return out


def print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    """A rich table on the terminal (plain text when not a terminal)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    Console(width=10_000).print(table)  # at its own width: not cut to 80 columns off a terminal
