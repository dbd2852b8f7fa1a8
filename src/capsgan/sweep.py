"""Sweeps: the per-job record and the ``summary.csv`` / ``summary.md`` of every multirun.

:class:`SweepSummary` is a Hydra callback (configured under ``hydra.callbacks`` in
``conf/hydra/default.yaml``). Hydra calls it in the job's own process, whichever launcher
runs the job (in-process, joblib workers, submitit on a cluster), and once more in the
launching process when the sweep ends:

* ``on_job_start`` / ``on_job_end`` write ``<job dir>/job.json``: the job's overrides, its
  status (``running`` until it ends, then ``ok`` or ``failed`` with the error's first line)
  and its wall time. A job killed from outside stays ``running``.
* ``on_multirun_end`` reads every ``job.json`` under the sweep folder, and the best value of
  ``metric`` (and its epoch) from each job's TensorBoard events, and writes the summary.

A failed job would otherwise end the sweep: Hydra's basic sweeper raises the first failure
after its batch, and the Optuna sweeper after the first failing trial batch, both before
``on_multirun_end``. With ``keep_going`` the callback logs the error (with its traceback for
anything but a :class:`~capsgan.errors.UserError`) in the job's log and hands the sweeper a
finished job without a value, so the other jobs run, Optuna marks the trial FAIL, and the
summary is written. The sweep then exits with status 1 if any job failed.

SIGTERM or Ctrl-C to the launching process stops the running jobs (each saves
``last.ckpt``), keeps the queued ones from starting, writes the summary and prints the
command that resumes the sweep: docs/reliability.md, "Stopping a sweep".

**Resuming a sweep** is running the same command again with the same ``hydra.sweep.dir``
(Hydra itself has no "continue this multirun"): each job's folder decides whether it is
skipped, resumed, run or refused (:func:`job_plan`); ``job.json``'s ``launch`` and the
summary say which.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import shlex
import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from capsgan import run_info
from capsgan.atomic_write import write_json_atomically
from capsgan.errors import RunInterruptedError, UserError
from capsgan.resume import LAST, MULTIRUN_FLAGS, key_of
from capsgan.runs import (
    JOB_RECORD,
    Series,
    collapsed,
    override_values,
    read_job_record,
    read_scalars,
    varying_overrides,
)

log = logging.getLogger(__name__)

STOP_FILE = ".stop"  # in the sweep folder while a stopped sweep winds down
STOP_SIGNALS = {signal.SIGTERM: ("SIGTERM", 143), signal.SIGINT: ("Ctrl-C", 130)}
NO_METRIC = "no {metric}: the job never logged it (no validation in its budget, or no callback)"
NOT_STARTED = "stopped by {} before training started; nothing to save"
# job.json's "launch": what the latest launch of the sweep did with the job, by its job_plan()
LAUNCH = dict(run="run", resume="resumed", skip="skipped", conflict="refused: another job's folder")


def in_multirun() -> bool:
    """True inside a job of a Hydra multirun (``-m`` or ``hydra.mode=MULTIRUN``)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


# the popen-launched DDP strategies; each has a ``ddp_spawn...`` twin
_DDP_POPEN = ("ddp", "ddp_find_unused_parameters_true", "ddp_find_unused_parameters_false")


def spawn_ddp_in_multirun(cfg: DictConfig) -> None:
    """Make DDP start its ranks with ``spawn`` when the job is part of a multirun.

    Lightning's default DDP launch re-runs ``sys.argv`` for every extra rank; with ``-m`` in
    it, each rank would start a whole new sweep of its own. Spawned ranks run the trainer
    from inside this job instead. Where SLURM or torchrun start the ranks (submitit on a
    cluster), Lightning launches nothing and this change has no effect.
    """
    if not in_multirun() or "trainer" not in cfg:
        return
    strategy = cfg.trainer.get("strategy")
    if isinstance(strategy, str) and strategy in _DDP_POPEN:
        cfg.trainer.strategy = "ddp_spawn" + strategy.removeprefix("ddp")
    elif (
        isinstance(strategy, DictConfig)
        and strategy.get("start_method", "popen") == "popen"
        and str(strategy.get("_target_", "")).endswith("DDPStrategy")
    ):
        with open_dict(strategy):
            strategy.start_method = "spawn"
    else:
        return
    log.info("multirun: DDP ranks are spawned from the job (re-running -m would start new sweeps)")


def metric_summary(run_dir: str | Path, tag: str, mode: str = "min") -> dict[str, Any]:
    """Best and final value of scalar ``tag`` in a run's TensorBoard events, the epoch (from
    1) and generator step of each, and a warning when the run ended far from its best.

    A run can fall apart after its best evaluation (e.g. FID 324 -> 636 while the best
    stays 324), so the summary shows the final value beside the best and ``flag`` says why
    the run looks collapsed by the report's rule (:func:`capsgan.runs.collapsed`). Empty
    values when the run logged no finite ``tag``.
    """
    scalars = read_scalars(run_dir)
    series = scalars.get(tag) or Series()
    finite = [i for i, v in enumerate(series.values) if math.isfinite(v)]
    if not finite:
        return dict.fromkeys(("best", "best_epoch", "best_step", "final", "final_step", "flag"))
    i = (min if mode == "min" else max)(finite, key=series.values.__getitem__)
    best, final = series.values[i], series.values[-1]
    epochs = scalars.get("epoch") or Series()
    epoch = dict(zip(epochs.steps, epochs.values, strict=True)).get(series.steps[i])
    modes = (scalars.get("val/modes") or Series()).values
    modes = modes[-1] if modes else None
    few_modes, worse = collapsed(final, best, modes, mode == "min")
    flags = []
    if worse and not math.isfinite(final):
        flags.append("final value not finite")
    elif worse:
        flags.append(f"final {final:.4g} is {final / best:.2f}x the best")
    if few_modes:
        flags.append(f"{modes:.0f} of 10 modes at the end")
    return {
        "best": best,
        "best_epoch": None if epoch is None else int(epoch),  # logged from 1 (GeneratorSteps)
        "best_step": series.steps[i],
        "final": final,
        "final_step": series.steps[-1],
        "flag": "; ".join(flags) or None,
    }


def job_plan(job_dir: str | Path, overrides: Sequence[str]) -> str:
    """What a re-run of a sweep does with the job in ``job_dir``: ``"run"`` (never
    started, or stopped before its first checkpoint), ``"skip"`` (it finished),
    ``"resume"`` (from its ``last.ckpt``) or ``"conflict"`` (the folder holds a job with
    other overrides). The callback (before the job) and the job itself ask the same files."""
    previous = read_job_record(job_dir)
    if previous is None:
        return "run"
    earlier = previous.get("overrides") or []
    # which job it is, not how it was launched (ckpt_path=last on a resumed sweep's command)
    mine, theirs = ([o for o in x if key_of(o) != "ckpt_path"] for x in (overrides, earlier))
    if mine != theirs:
        return "conflict"
    if previous.get("status") == "ok":
        return "skip"
    if (Path(job_dir) / "checkpoints" / "last.ckpt").is_file():
        return "resume"
    return "run"


def resumed_job(cfg: DictConfig, output_dir: str) -> dict[str, float] | None:
    """In a sweep run again with its ``hydra.sweep.dir`` (:func:`job_plan`):
    a finished job's metrics (it is not trained again); for one with a ``last.ckpt``,
    ``ckpt_path`` set to it; for one stopped before its first checkpoint, its earlier
    TensorBoard events moved aside so the new run's curves do not mix with them."""
    overrides = list(HydraConfig.get().overrides.task)
    plan = job_plan(output_dir, overrides)
    if plan == "conflict":
        earlier = " ".join((read_job_record(output_dir) or {}).get("overrides") or [])
        raise UserError(
            f"the job folder {output_dir!r} holds another job of an earlier sweep (overrides "
            f"{earlier}), not this one ({' '.join(overrides)}); it was left as it was. A sweep "
            "is resumed by the same command with the same hydra.sweep.dir; for a different "
            "sweep pass a new hydra.sweep.dir."
        )
    done = run_info.last_session(output_dir)
    if plan == "skip" or (
        cfg.get("ckpt_path") == LAST and done and done.get("status") == "completed"
    ):
        log.info("this job finished in an earlier launch of the sweep (%s); skipped", output_dir)
        return dict((done or {}).get("metrics") or {})
    if plan == "resume" and cfg.get("ckpt_path") is None:
        with open_dict(cfg):
            cfg.ckpt_path = LAST
        log.info("resuming this job from %s/checkpoints/last.ckpt", output_dir)
    events = Path(output_dir) / "tensorboard"
    if plan == "run" and events.is_dir() and cfg.get("ckpt_path") is None:
        aside = events.with_name(f"tensorboard.abandoned.{int(time.time())}")
        events.rename(aside)
        log.warning("this job stopped before its first checkpoint; its events moved to %s", aside)
    return None


def raise_if_sweep_stopping() -> None:
    """In a job of a sweep that is being stopped: end the job before it starts."""
    if in_multirun() and (Path(HydraConfig.get().sweep.dir) / STOP_FILE).exists():
        raise RunInterruptedError("not started: the sweep was stopped", 143)


def _job_signal_handler(signum: int, frame: Any) -> None:
    """A job's SIGTERM / Ctrl-C outside training, where Lightning's handler is not
    installed: stop the job now (there is nothing to save yet). During training Lightning's
    handler calls this one too; it then does nothing, and Lightning stops at the batch
    boundary after saving."""
    if signal.getsignal(signum) is not _job_signal_handler:
        return
    how, code = STOP_SIGNALS[signal.Signals(signum)]
    raise RunInterruptedError(NOT_STARTED.format(how), code)


class SweepSummary(Callback):
    """Writes ``job.json`` per job and ``summary.csv`` / ``summary.md`` per multirun.

    Args:
        metric: the scalar to report the best value of (read from TensorBoard events).
        mode: ``min`` or ``max``: which value of ``metric`` is best.
        keep_going: record a failed job and let the sweep go on (see the module docstring);
            false restores Hydra's own behaviour of ending the sweep with the failure.
    """

    def __init__(self, metric: str = "val/fid", mode: str = "min", keep_going: bool = True):
        if mode not in ("min", "max"):
            raise UserError(f"hydra.callbacks.sweep_summary.mode is {mode!r}; use min or max")
        self.metric, self.mode, self.keep_going = metric, mode, keep_going
        self._launcher_pid: int | None = None  # set in the launching process
        self._sweep_dir: Path | None = None
        self._stopped_by: tuple[str, int] | None = None
        self._job_here = False  # a job runs in the launching process (basic launcher)
        self._jobs: dict[str, tuple[float, str]] = {}  # job folder -> (start time, job_plan())

    # -- in the job's process -----------------------------------------------------------

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # created before the sweeper starts, so a SQLite Optuna study can live in it
        self._sweep_dir = Path(config.hydra.sweep.dir)
        self._sweep_dir.mkdir(parents=True, exist_ok=True)
        (self._sweep_dir / STOP_FILE).unlink(missing_ok=True)  # a resumed sweep runs again
        self._launcher_pid = os.getpid()
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._on_stop_signal)

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        """In the launching process: stop the running jobs, let the queued ones end."""
        if self._stopped_by is not None:  # a second signal: stop at once
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self._stopped_by = STOP_SIGNALS[signal.Signals(signum)]
        assert self._sweep_dir is not None
        (self._sweep_dir / STOP_FILE).touch()
        pids = []
        for record in self._sweep_dir.rglob(JOB_RECORD):
            job = read_job_record(record.parent) or {}
            pid = job.get("pid")
            here = job.get("host") == socket.gethostname()  # a cluster job's pid means nothing here
            if job.get("status") == "running" and here and pid and pid != os.getpid():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)  # it saves last.ckpt at its batch boundary
                    pids.append(pid)
        print(
            f"\n{self._stopped_by[0]}: stopping the sweep: {len(pids)} running job(s) save "
            "their checkpoint and stop, queued jobs will not start "
            f"(send {self._stopped_by[0]} again to stop at once, without saving).",
            file=sys.stderr,
        )
        if self._job_here and signal.getsignal(signal.SIGTERM) == self._on_stop_signal:
            # a job of the basic launcher, in this process, before Lightning's handler is in
            raise RunInterruptedError(NOT_STARTED.format(self._stopped_by[0]), self._stopped_by[1])

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        # rank_zero_only.rank: Lightning's reading of RANK/LOCAL_RANK/SLURM_PROCID (the extra DDP
        # ranks SLURM or torchrun start as copies of the job), as config.py and training.py use
        if config.hydra.mode != RunMode.MULTIRUN or rank_zero_only.rank != 0:
            return
        if os.getpid() == self._launcher_pid:
            self._job_here = True
        else:  # a worker process (joblib, submitit): stop cleanly outside training too
            self._worker_handlers = {s: signal.signal(s, _job_signal_handler) for s in STOP_SIGNALS}
        out = config.hydra.runtime.output_dir
        plan = job_plan(out, list(config.hydra.overrides.task))
        self._jobs[out] = (time.time(), plan)
        if plan in ("skip", "conflict"):
            return  # the record stays as it was; the job itself skips or refuses
        record = self._record(config, "running", None, None, LAUNCH[plan])
        write_json_atomically(Path(out) / JOB_RECORD, record)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN or rank_zero_only.rank != 0:  # as on_job_start
            return
        self._job_here = False
        for signum, handler in getattr(self, "_worker_handlers", {}).items():
            signal.signal(signum, handler)
        self._worker_handlers = {}
        out, num = config.hydra.runtime.output_dir, config.hydra.job.num
        started, plan = self._jobs.pop(out, (time.time(), "run"))
        wall = time.time() - started
        failed = job_return.status == JobStatus.FAILED
        err = job_return._return_value  # the exception if failed; .return_value would raise it
        if plan in ("skip", "conflict"):  # its earlier record, marked with this launch
            record = read_job_record(out) or {}
            record["launch"] = LAUNCH[plan]
            if plan == "conflict" and self.keep_going and failed:
                log.error("job %s refused: %s", num, err)
        else:
            status, error = "ok", None
            if failed:
                first = (str(err).strip().splitlines() or [""])[0]
                status, error = "failed", f"{type(err).__name__}: {first}".rstrip(": ")
                if isinstance(err, RunInterruptedError):
                    status = "interrupted"
                    log.warning("job %s: %s", num, err)
                elif isinstance(err, UserError):  # its paragraph says what to fix
                    log.error("job %s failed: %s", num, err)
                else:
                    log.error("job %s failed", num, exc_info=err)
            record = self._record(config, status, error, wall, LAUNCH[plan])
        write_json_atomically(Path(out) / JOB_RECORD, record)
        if failed and self.keep_going and plan != "skip":
            job_return.status = JobStatus.COMPLETED
            job_return.return_value = None

    @staticmethod
    def _record(
        config: DictConfig, status: str, error: str | None, wall: float | None, launch: str
    ) -> dict:
        return {
            "job": int(config.hydra.job.num),
            "overrides": list(OmegaConf.to_container(config.hydra.overrides.task)),
            "status": status,
            "error": error,
            "launch": launch,
            "wall_s": None if wall is None else round(wall, 1),
            "pid": os.getpid(),  # the launching process stops a running job through it
            "host": socket.gethostname(),
        }

    # -- in the launching process -------------------------------------------------------

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = self.collect(sweep_dir)
        launches = [str(r.get("launch") or "run").split(":")[0] for r in rows]
        if any(x != "run" for x in launches):
            counts = (f"{launches.count(x)} {x}" for x in dict.fromkeys(launches))
            log.info("this launch: %s", ", ".join(counts))
        write_summary(sweep_dir, rows, self.metric)
        summary = sweep_dir / "summary.md"
        log.info("sweep summary: %s", summary)
        missing = [str(r["job"]) for r in rows if r["status"] == "ok" and r["best"] is None]
        if missing:
            log.warning(
                f"{len(missing)} of {len(rows)} jobs finished without logging {self.metric} "
                f"(jobs {', '.join(missing)}): no validation within their budget, or no "
                f"callback computing it; their rows say so in {summary}"
            )
        if self._stopped_by is not None:
            (sweep_dir / STOP_FILE).unlink(missing_ok=True)
            how, code = self._stopped_by
            stopped = [r for r in rows if r["status"] == "interrupted"]
            print(
                f"stopped by {how}: {len(stopped)} of {len(rows)} jobs interrupted (each saved "
                f"its last.ckpt if it had started training); summary: {summary}. "
                f"Resume the sweep with:\n{resume_command(sweep_dir)}",
                file=sys.stderr,
            )
            sys.exit(code)
        failed = [
            r for r in rows if r["status"] != "ok" or str(r.get("launch")).startswith("refused")
        ]
        if failed:
            numbers = ", ".join(str(r["job"]) for r in failed)
            log.error(f"{len(failed)} of {len(rows)} jobs failed ({numbers}); see {summary}")
            if self.keep_going:
                sys.exit(1)  # the sweep as a whole did not succeed; the summary is written

    def collect(self, sweep_dir: Path) -> list[dict[str, Any]]:
        rows = []
        for record in sweep_dir.rglob(JOB_RECORD):
            row = json.loads(record.read_text())
            row["dir"] = str(record.parent.relative_to(sweep_dir))
            row.update(metric_summary(record.parent, self.metric, self.mode))
            if row["status"] == "ok" and row["best"] is None:
                # it trained, but its number is missing: never shown as a plain "ok"
                row["flag"] = NO_METRIC.format(metric=self.metric)
            rows.append(row)
        return sorted(rows, key=lambda r: r["job"])


def resume_command(sweep_dir: Path) -> str:
    """The command line that resumes the sweep this process runs: the same arguments with
    ``hydra.sweep.dir=<sweep_dir> ckpt_path=last`` (replacing any given before)."""
    keep = [a for a in sys.argv[1:] if key_of(a) not in ("hydra.sweep.dir", "ckpt_path")]
    if not any(a in MULTIRUN_FLAGS for a in keep):
        keep.insert(0, "-m")
    args = [*keep, f"hydra.sweep.dir={sweep_dir}", "ckpt_path=last"]
    return " ".join(shlex.quote(a) for a in ["python", sys.argv[0], *args])


def write_summary(sweep_dir: Path, rows: Sequence[dict[str, Any]], metric: str) -> None:
    """``summary.csv`` (the table and every job's full override list) and ``summary.md``
    (the table, with only the overrides that vary between jobs)."""
    keys = varying_overrides(r["overrides"] for r in rows)
    header = ["job", *keys, "status", "this launch", "error", f"best {metric}", "epoch",
              "step", f"final {metric}", "warning", "wall_s", "dir"]  # fmt: skip

    def blank(value: Any, spec: str = "") -> str:
        return "" if value is None else format(value, spec)

    body = [
        [r["job"], *(override_values(r["overrides"]).get(k, "") for k in keys), r["status"],
         r.get("launch") or "run", r["error"] or "", blank(r.get("best"), ".4g"),
         blank(r.get("best_epoch")), blank(r.get("best_step")),  # epochs count from 1
         blank(r.get("final"), ".4g"), r.get("flag") or "", blank(r["wall_s"]), r["dir"]]
        for r in rows
    ]  # fmt: skip
    with (sweep_dir / "summary.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*header, "overrides"])
        for line, row in zip(body, rows, strict=True):
            writer.writerow([*line, " ".join(row["overrides"])])

    def cell(v: Any) -> str:
        text = str(v).replace("|", "\\|").replace("\n", " ")
        return text if len(text) <= 160 else text[:159] + "…"  # the CSV has it whole

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in line) + " |" for line in body]
    ok = sum(r["status"] == "ok" for r in rows)
    (sweep_dir / "summary.md").write_text(
        f"# Sweep summary\n\n{ok} of {len(rows)} jobs ok.\n\n" + "\n".join(lines) + "\n"
    )
