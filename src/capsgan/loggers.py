"""What a run shows in TensorBoard (the README's "What TensorBoard shows"): its name in the
run selector (a resumed run keeps its folder's), its HPARAMS row, and whether that row says
the run succeeded: written when the run ends, so a running run, or one stopped by SIGTERM /
Ctrl-C until its resumed run ends, reads "unknown"."""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from lightning.pytorch.loggers import CSVLogger as _LightningCSVLogger
from lightning.pytorch.loggers import TensorBoardLogger as _LightningTensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf
from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

from capsgan import hparams as gan_hparams
from capsgan.errors import ConfigError
from capsgan.metrics import METRIC_KEYS
from capsgan.resume import key_of

log = logging.getLogger(__name__)

# Per-run paths and switches that do not change the results: not hyperparameters, and not
# part of a run's name.
NOT_HPARAMS = (
    "trainer/default_root_dir", "trainer/plugins", "data/root", "data/download", "ckpt_path",
    "run_name", "metrics/classifier_dir", "metrics/classifier_path", "paths/",
)  # fmt: skip
NOT_IN_NAME = (
    "ckpt_path", "run_name", "threads", "paths.", "hydra.", "data.root", "data.download",
    "data.num_workers", "trainer.enable_progress_bar", "trainer.accelerator", "trainer.devices",
    "metrics.classifier_dir", "metrics.classifier_path",
)  # fmt: skip
# the config groups whose choice is a hyperparameter of the run (not logger, paths...)
CHOSEN_GROUPS = ("data", "generator", "discriminator", "trainer", "experiment", "debug")
BEST_FID = "val/fid_best"
# the metrics TensorBoard's HPARAMS tab shows: sample quality (capsgan.metrics) and training
HPARAM_METRICS = (*METRIC_KEYS, BEST_FID,
                  "val/d_acc", "epoch/d_loss", "epoch/g_loss", "epoch/d_acc")  # fmt: skip


def _hydra() -> DictConfig | None:
    return HydraConfig.get() if HydraConfig.initialized() else None  # None: outside @hydra.main


def swept_keys(hydra_cfg: Any) -> set[str]:
    """The keys a multirun varies: its sweep overrides (read back from the sweep's
    ``multirun.yaml``) and the keys of ``hydra.sweeper.params`` (Optuna, presets)."""
    keys = {str(k) for k in (OmegaConf.select(hydra_cfg, "sweeper.params") or {})}
    multirun = Path(str(hydra_cfg.sweep.dir)) / "multirun.yaml"
    try:
        task = OmegaConf.load(multirun).hydra.overrides.task
        parsed = OverridesParser.create().parse_overrides(list(task))
        keys |= {o.key_or_group for o in parsed if o.is_sweep_override()}
    except Exception:  # no multirun.yaml (another sweeper) or an unparsable line
        pass
    return keys


def auto_run_name(cfg: DictConfig, hydra_cfg: Any = None) -> str:
    """The name of the run in TensorBoard's run selector: in a sweep the overrides that vary
    between its jobs, in a single run those typed, led by the discriminator choice."""
    hydra_cfg = hydra_cfg if hydra_cfg is not None else _hydra()
    if hydra_cfg is None:
        return ""
    if cfg.get("ckpt_path"):  # a resume: the name the run folder's events already use
        found = event_dirs(str(cfg.paths.output_dir))
        if found:  # "" for events straight in tensorboard/ (runs from before named runs)
            newest = max(found, key=lambda p: p.stat().st_mtime)
            return "" if newest.name == "tensorboard" else newest.name
    overrides = [str(o) for o in hydra_cfg.overrides.task]
    parts: list[str] = []
    if hydra_cfg.mode == RunMode.MULTIRUN:
        varying = swept_keys(hydra_cfg)
        parts = [o.lstrip("+") for o in overrides if key_of(o) in varying]
    if not parts:
        parts = [o.lstrip("+") for o in overrides if not key_of(o).startswith(NOT_IN_NAME)]
        choice = hydra_cfg.runtime.choices.get("discriminator")
        if choice and not any(key_of(o) == "discriminator" for o in parts):
            parts.insert(0, f"discriminator={choice}")
    name = ",".join(_short(p) for p in parts).replace("/", "_").replace(os.sep, "_")
    return name if len(name) <= 120 else name[:119] + "…"


def _short(override: str) -> str:
    """``lr=5.6115164153345e-05`` (an Optuna trial's value) as ``lr=5.612e-05``."""
    key, _, value = override.partition("=")
    try:
        number = float(value)
    except ValueError:
        return override
    return override if len(value) <= 8 or not math.isfinite(number) else f"{key}={number:.4g}"


def event_dirs(run_dir: str | Path) -> list[Path]:
    """The folders holding a run's TensorBoard event files: ``<run>/tensorboard/<name>/``
    (``<run>/tensorboard/`` for runs from before named runs)."""
    return sorted({p.parent for p in Path(run_dir).glob("tensorboard/**/events.out.tfevents.*")})


# -- HPARAMS --------------------------------------------------------------------------


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a/b/c": value}`` of a resolved config (lists as strings)."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}/{k}" if prefix else str(k)))
        return out
    return {prefix: str(node) if isinstance(node, list) else node}


def run_hparams(cfg: DictConfig, hydra_cfg: Any = None) -> tuple[dict[str, Any], set[str]]:
    """What TensorBoard's HPARAMS tab shows of a run (the keys that identify it, as ``a/b``
    names, nulls left out: the config-group choices, the seed, the GAN's hyperparameters,
    the keys typed or swept), and the keys that set it apart (a sweep's varying keys, a
    single run's typed ones), which :func:`log_hparams` marks to be listed first."""
    flat = _flatten(OmegaConf.to_container(cfg, resolve=True))
    wanted = ["seed", *gan_hparams.names()]
    hydra_cfg = hydra_cfg if hydra_cfg is not None else _hydra()
    choices: dict[str, Any] = {}
    if hydra_cfg is None:  # composed outside @hydra.main: the models' classes instead
        wanted += ["data/name", "generator/_target_", "discriminator/_target_"]
        typed: list[str] = []
        varying: set[str] = set()
    else:
        choices = {str(k): v for k, v in hydra_cfg.runtime.choices.items()
                   if "/" not in str(k) and v is not None and k in CHOSEN_GROUPS}  # fmt: skip
        typed = [key_of(str(o)) for o in hydra_cfg.overrides.task]
        varying = swept_keys(hydra_cfg) if hydra_cfg.mode == RunMode.MULTIRUN else set(typed)
    params: dict[str, Any] = dict(choices)
    for key in [*wanted, *typed, *sorted(varying)]:
        name = key.replace(".", "/")
        if name in choices or name.startswith(NOT_HPARAMS):
            continue
        # a typed group key (`+trainer/profiler=...`) or a section: every value under it
        found = {k: v for k, v in flat.items() if k == name or k.startswith(name + "/")}
        params.update({k: v for k, v in found.items() if v is not None})
    apart = {k for k in params if any(k == v.replace(".", "/") or k.startswith(
        v.replace(".", "/") + "/") for v in varying)}  # fmt: skip
    return params, apart


def log_hparams(trainer: L.Trainer, cfg: DictConfig) -> None:
    """Record the run's hyperparameters (:func:`run_hparams`) for TensorBoard's HPARAMS tab
    (other loggers: ``log_hyperparams``). The tab lists a run whose summary names metric tags
    (``HPARAM_METRICS``) and reads them from its scalars; Lightning's ``log_hyperparams(
    params, metrics)`` would write fake values at step 0 and end the session at once, so
    the experiment and session-start summaries are written here (booleans as booleans, the
    keys that set the run apart marked as differing: listed first), the session's end by
    :class:`TensorBoardLogger` when the run ends."""
    params, apart = run_hparams(cfg)
    # the row's name ("Trial ID"): the run's name and its job number or folder, so that two
    # runs of one name stay two rows (``lr=0.0001 (job 1)``)
    hydra_cfg, trial = _hydra(), str(cfg.get("run_name") or "")
    if hydra_cfg is not None:
        multirun = hydra_cfg.mode == RunMode.MULTIRUN
        tail = f"job {hydra_cfg.job.num}" if multirun else Path(str(cfg.paths.output_dir)).name
        trial = f"{trial} ({tail})" if trial else tail
    values = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in params.items()}
    kinds = {bool: api_pb2.DATA_TYPE_BOOL, str: api_pb2.DATA_TYPE_STRING}
    infos = [api_pb2.HParamInfo(name=k, type=kinds.get(type(v), api_pb2.DATA_TYPE_FLOAT64),
                                differs=k in apart) for k, v in values.items()]  # fmt: skip
    metrics = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=t)) for t in HPARAM_METRICS]
    for logger in trainer.loggers:
        if isinstance(logger, _LightningTensorBoardLogger):
            logger.hparams.update(params)  # also saved to hparams.yaml
            writer = logger.experiment._get_file_writer()
            if writer is None:  # a DDP rank other than 0 has a dummy experiment: no events
                continue
            experiment = api_pb2.Experiment(hparam_infos=infos, metric_infos=metrics)
            _add_hparams(writer, metadata.EXPERIMENT_TAG, experiment=experiment)
            start = plugin_data_pb2.SessionStartInfo(group_name=trial, start_time_secs=time.time())
            for k, v in values.items():
                field = {bool: "bool_value", str: "string_value"}.get(type(v), "number_value")
                setattr(start.hparams[k], field, v)
            _add_hparams(writer, metadata.SESSION_START_INFO_TAG, session_start_info=start)
            if isinstance(logger, TensorBoardLogger):
                logger.session_started = True
        else:
            logger.log_hyperparams(params)


def epochs_from_1(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` with Lightning's 0-based ``epoch`` counted from 1, as the console counts."""
    return {**metrics, "epoch": metrics["epoch"] + 1} if "epoch" in metrics else metrics


class GeneratorSteps:
    """A logger whose x axis is the generator step and whose ``epoch`` counts from 1, as
    the console, the file names and the report count (Lightning's x axis counts batches).
    Once :meth:`follow` has the trainer (:class:`capsgan.callbacks.TrainingLog` gives it),
    each value is written at ``trainer.global_step``: a batch's at the generator steps done
    after it, a validation's at the step the console reports with its FID."""

    _trainer: L.Trainer | None = None

    def follow(self, trainer: L.Trainer) -> None:
        self._trainer = trainer

    def on_generator_steps(self, metrics: dict[str, Any], step: int | None) -> tuple[dict, Any]:
        if self._trainer is None:  # outside a GAN run: Lightning's numbers
            return metrics, step
        return epochs_from_1(metrics), self._trainer.global_step


class CSVLogger(GeneratorSteps, _LightningCSVLogger):
    """Lightning's CSV logger on :class:`GeneratorSteps` (``step`` and ``epoch`` columns)."""

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        super().log_metrics(*self.on_generator_steps(metrics, step))  # rank 0 only, as there


class TensorBoardLogger(GeneratorSteps, _LightningTensorBoardLogger):
    """Lightning's TensorBoard logger on :class:`GeneratorSteps`, plus the HPARAMS
    session's end status and the running best ``val/fid`` (see the module docstring)."""

    session_started = False
    _best_fid: float | None = None

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        metrics, step = self.on_generator_steps(metrics, step)
        fid = metrics.get("val/fid")
        if fid is not None and math.isfinite(float(fid)):
            if self._best_fid is None:
                self._best_fid = self._previous_best(step)
            self._best_fid = min(float(fid), self._best_fid)
            metrics = {**metrics, BEST_FID: self._best_fid}
        super().log_metrics(metrics, step)

    def _previous_best(self, step: int | None) -> float:
        """The lowest ``val/fid`` the run's earlier sessions logged before ``step``, which a
        resumed run continues (``inf`` for a fresh run); asked before this session's first."""
        from capsgan.runs import Series, read_scalars  # the project's reader (imports us)

        fid = read_scalars(self.save_dir).get("val/fid") or Series()
        before = [v for s, v in zip(fid.steps, fid.values, strict=True) if step is None or s < step]
        return min([math.inf, *(v for v in before if math.isfinite(v))])

    @rank_zero_only
    def finalize(self, status: str) -> None:
        # The HPARAMS session's end (torch's ``hparams()`` always says success). Called from
        # Lightning's exception handler too: SIGTERM / Ctrl-C leave the status unknown (the
        # resumed run ends the session), anything else is a failure.
        stopped = isinstance(sys.exc_info()[1], (SIGTERMException, KeyboardInterrupt))
        if self.session_started and status != "finished" and (status == "success" or not stopped):
            ok = api_pb2.STATUS_SUCCESS if status == "success" else api_pb2.STATUS_FAILURE
            end = plugin_data_pb2.SessionEndInfo(status=ok, end_time_secs=time.time())
            writer = self.experiment._get_file_writer() if self._experiment is not None else None
            if writer is not None:
                _add_hparams(writer, metadata.SESSION_END_INFO_TAG, session_end_info=end)
            self.session_started = False
        super().finalize(status)


def _add_hparams(writer: Any, tag: str, **data: Any) -> None:
    content = plugin_data_pb2.HParamsPluginData(version=metadata.PLUGIN_DATA_VERSION, **data)
    plugin = SummaryMetadata.PluginData(
        plugin_name=metadata.PLUGIN_NAME, content=content.SerializeToString()
    )
    value = Summary.Value(tag=tag, metadata=SummaryMetadata(plugin_data=plugin))
    writer.add_summary(Summary(value=[value]))


# -- optional logger packages ---------------------------------------------------------

LOGGER_PACKAGES = {  # logger class -> (module to import, pip line)
    "WandbLogger": ("wandb", "pip install wandb"),
    "MLFlowLogger": ("mlflow", "pip install mlflow"),
    "CometLogger": ("comet_ml", "pip install comet-ml"),
}


def check_logger_packages(cfg: DictConfig) -> None:
    """Raise a :class:`ConfigError` with the ``pip install`` line when a configured
    logger's package is missing (before any data is read or model built)."""
    for name, node in (cfg.get("logger") or {}).items():
        target = str((node or {}).get("_target_", ""))
        need = LOGGER_PACKAGES.get(target.rsplit(".", 1)[-1])
        if need and importlib.util.find_spec(need[0]) is None:
            raise ConfigError(
                f"the {name} logger ({target}) needs the {need[0]!r} package, which is not "
                f"installed here. Install it with `{need[1]}`, or pick a logger that needs "
                "nothing more: logger=tensorboard (default), logger=csv or logger=many."
            )
