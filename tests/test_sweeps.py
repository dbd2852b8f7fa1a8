"""Sweeps that scale: joblib and submitit launchers, the Optuna search, DDP, the summary.

Every test runs ``src/train.py`` as a user would, in a subprocess with tiny settings, and
reads what it left in the sweep folder.
"""

from __future__ import annotations

import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from capsgan.sweep import SweepSummary
from tests.conftest import ROOT, TINY_CAPSULES, TINY_OVERRIDES
from tests.helpers import PY_ENV, run_info

TINY = [
    *TINY_OVERRIDES,
    "discriminator=capsule_small",
    *(f"discriminator.{k}={v}" for k, v in TINY_CAPSULES.items()),
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    # sample-quality metrics would first train their digit classifier: not what is tested here
    "++callbacks.sample_quality=null",
    "++callbacks.model_checkpoint.monitor=null",
    "optimized_metric=val/d_loss",
    "hydra.callbacks.sweep_summary.metric=val/d_loss",
]

TINY_CNN = ["discriminator=cnn", *(o for o in TINY if not o.startswith("discriminator"))]


def train_py(*args: str, cwd: Path, data_dir: Path, timeout: int = 600):
    """Run src/train.py like a user; ``tests`` stays importable for the probe callback."""
    env = {
        **os.environ,
        "DATA_DIR": str(data_dir),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    cmd = [sys.executable, str(ROOT / "src" / "train.py"), *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def read_summary(sweep: Path) -> list[dict[str, str]]:
    with (sweep / "summary.csv").open() as f:
        return list(csv.DictReader(f))


class DDPProbe(L.Callback):
    """Records, per rank, what DDP must get right for the GAN: written to rank_<r>.json.

    The indices each rank's sampler yields, which parameters the DDP wrapper holds, the
    synced epoch metrics, and a checksum of each network's weights after training.
    """

    def __init__(self) -> None:
        self.record: dict = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        sampler = trainer.train_dataloader.sampler
        wrapped = {id(p) for p in trainer.strategy.model.parameters()}
        self.record.update(
            rank=trainer.global_rank,
            world_size=trainer.world_size,
            wrapper=type(trainer.strategy.model).__name__,
            sampler=type(sampler).__name__,
            indices=list(iter(sampler)),
            generator_wrapped=all(id(p) in wrapped for p in pl_module.generator.parameters()),
            discriminator_wrapped=all(
                id(p) in wrapped for p in pl_module.discriminator.parameters()
            ),
        )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record.update(
            generator_sum=float(sum(p.double().sum() for p in pl_module.generator.parameters())),
            discriminator_sum=float(
                sum(p.double().sum() for p in pl_module.discriminator.parameters())
            ),
            metrics={k: float(v) for k, v in trainer.callback_metrics.items()},
        )
        out = Path(trainer.default_root_dir) / f"rank_{trainer.global_rank}.json"
        out.write_text(json.dumps(self.record))


PROBE = "+callbacks.ddp_probe._target_=tests.test_sweeps.DDPProbe"


class ThreadProbe(L.Callback):
    """Writes the process id and torch's thread count of the job to threads.json."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        info = {"pid": os.getpid(), "threads": torch.get_num_threads()}
        (Path(trainer.default_root_dir) / "threads.json").write_text(json.dumps(info))


def assert_ok_jobs(sweep: Path, n: int) -> list[dict[str, str]]:
    rows = read_summary(sweep)
    assert [r["status"] for r in rows] == ["ok"] * n, rows
    for r in rows:
        job = sweep / r["dir"]
        assert (job / ".hydra" / "config.yaml").exists()
        assert (job / "checkpoints" / "last.ckpt").exists()
        assert float(r["best val/d_loss"]) > 0 and r["epoch"] == "1"  # epochs count from 1
    assert (sweep / "summary.md").read_text().count("| ok |") == n
    return rows


# -- configs ------------------------------------------------------------------------------


def compose_with_hydra(*overrides: str):
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF_DIR

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def test_optuna_search_space_and_objective_are_in_the_config() -> None:
    cfg = compose_with_hydra("hparams_search=capsule_optuna")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert sweeper.direction == "minimize" and cfg.optimized_metric == "val/fid"
    assert sweeper.storage == f"sqlite:///{cfg.hydra.sweep.dir}/optuna.db"
    assert dict(sweeper.params) == {
        "lr": "tag(log, interval(1e-5, 1e-3))",
        "discriminator.routing_iterations": "choice(1, 3, 5)",
        "d_steps_per_g": "choice(1, 2, 3)",
        "instance_noise": "interval(0.0, 0.3)",
    }


def test_slurm_gpu_launcher_asks_one_task_per_gpu() -> None:
    from omegaconf import OmegaConf

    cfg = compose_with_hydra(
        "hydra/launcher=slurm_gpu", "hydra.launcher.gpus_per_node=4", "hydra.launcher.partition=gpu"
    )
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert launcher["gpus_per_node"] == launcher["tasks_per_node"] == 4
    assert launcher["partition"] == "gpu" and launcher["timeout_min"] == 240


def test_ddp_in_a_multirun_spawns_its_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-running ``-m`` per rank would start new sweeps: a multirun spawns the ranks."""
    from capsgan import sweep

    cfg = compose_with_hydra("trainer=ddp")
    assert cfg.trainer.strategy.start_method == "popen"
    sweep.spawn_ddp_in_multirun(cfg)  # not in a multirun: untouched
    assert cfg.trainer.strategy.start_method == "popen"
    monkeypatch.setattr(sweep, "in_multirun", lambda: True)
    sweep.spawn_ddp_in_multirun(cfg)
    assert cfg.trainer.strategy.start_method == "spawn"
    cfg = compose_with_hydra("trainer.strategy=ddp_find_unused_parameters_true")
    sweep.spawn_ddp_in_multirun(cfg)
    assert cfg.trainer.strategy == "ddp_spawn_find_unused_parameters_true"
    cfg = compose_with_hydra()  # strategy auto: nothing to change
    sweep.spawn_ddp_in_multirun(cfg)
    assert cfg.trainer.strategy == "auto"


# -- launchers ----------------------------------------------------------------------------


@pytest.mark.slow
def test_joblib_runs_two_jobs_in_their_own_processes(tiny_data_dir: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = train_py(
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "threads=1",
        "lr=1e-4,2e-4",
        *TINY,
        "+callbacks.threads._target_=tests.test_sweeps.ThreadProbe",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        data_dir=tiny_data_dir,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = assert_ok_jobs(sweep, 2)
    assert [r["lr"] for r in rows] == ["0.0001", "0.0002"]
    probes = [json.loads((sweep / j / "threads.json").read_text()) for j in ("0", "1")]
    assert probes[0]["pid"] != probes[1]["pid"]  # two worker processes
    assert [p["threads"] for p in probes] == [1, 1]


@pytest.mark.slow
def test_submitit_local_runs_two_jobs(tiny_data_dir: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = train_py(
        "-m",
        "hydra/launcher=submitit_local",
        "threads=1",  # submitit leaves torch's default (all cores) otherwise
        "lr=1e-4,2e-4",
        *TINY,
        "+callbacks.threads._target_=tests.test_sweeps.ThreadProbe",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        data_dir=tiny_data_dir,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_ok_jobs(sweep, 2)
    assert len(list((sweep / ".submitit").glob("*/*_0_log.out"))) == 2  # two submitit jobs
    assert [json.loads((sweep / j / "threads.json").read_text())["threads"] for j in "01"] == [1, 1]


# -- Optuna -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Deprecated API features detected")  # Optuna 2 + SQLAlchemy 1.4
def test_optuna_search_writes_a_study_that_a_second_sweep_resumes(
    tiny_data_dir: Path, tmp_path: Path
) -> None:
    import optuna

    first, second = tmp_path / "first", tmp_path / "second"
    search = ["hparams_search=capsule_optuna", *TINY]
    proc = train_py(
        *search,
        "hydra.sweeper.n_trials=2",
        f"hydra.sweep.dir={first}",
        cwd=tmp_path,
        data_dir=tiny_data_dir,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    db = first / "optuna.db"
    study = optuna.load_study(study_name="capsule_gan", storage=f"sqlite:///{db}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert set(study.trials[0].params) == {
        "lr",
        "discriminator.routing_iterations",
        "d_steps_per_g",
        "instance_noise",
    }
    assert study.trials[0].params["discriminator.routing_iterations"] in (1, 3, 5)
    assert (first / "optimization_results.yaml").exists()
    rows = assert_ok_jobs(first, 2)
    assert {"lr", "instance_noise"} <= set(rows[0])
    # a later sweep pointed at the same file adds its trials to the study
    proc = train_py(
        *search,
        "hydra.sweeper.n_trials=1",
        f"hydra.sweeper.storage=sqlite:///{db}",
        f"hydra.sweep.dir={second}",
        cwd=tmp_path,
        data_dir=tiny_data_dir,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name="capsule_gan", storage=f"sqlite:///{db}")
    assert len(study.trials) == 3
    assert not (second / "optuna.db").exists()


# -- DDP ----------------------------------------------------------------------------------


def check_ddp_ranks(run_dir: Path) -> None:
    """Both networks wrapped, disjoint data shards, equal weights and synced metrics."""
    ranks = [json.loads((run_dir / f"rank_{r}.json").read_text()) for r in (0, 1)]
    for rank in ranks:
        assert rank["world_size"] == 2 and rank["wrapper"] == "DistributedDataParallel"
        assert rank["sampler"] == "DistributedSampler"
        assert rank["generator_wrapped"] and rank["discriminator_wrapped"]
    a, b = (set(r["indices"]) for r in ranks)
    assert a and b and not a & b and len(a) == len(b)  # each rank its own half of the data
    # gradients were all-reduced: both ranks hold the same weights after training
    for net in ("generator_sum", "discriminator_sum"):
        assert ranks[0][net] == pytest.approx(ranks[1][net], rel=1e-6)
    # epoch means and validation metrics are reduced over the ranks
    synced = [
        k
        for k in ranks[0]["metrics"]
        if k.startswith(("val/", "epoch/")) and not k.endswith("_seconds")  # a rank's own clock
    ]
    assert "val/d_loss" in synced and "epoch/d_loss" in synced
    for k in synced:
        assert ranks[0]["metrics"][k] == pytest.approx(ranks[1]["metrics"][k], rel=1e-5), k


@pytest.mark.slow
def test_two_process_cpu_ddp_fast_dev_run(tiny_data_dir: Path, tmp_path: Path) -> None:
    """With the sample-quality metrics on: FID must come out the same on both ranks."""
    import shutil

    from capsgan.classifier import load_or_train

    # The FID classifier is trained beforehand, in one process: a DDP run refuses to train it
    # (test_ddp_without_a_trained_classifier_says_to_train_it_first).
    data = shutil.copytree(tiny_data_dir, tmp_path / "data", ignore=shutil.ignore_patterns("cl*"))
    load_or_train("mnist", data)
    run = tmp_path / "run"
    with_metrics = [a for a in TINY if "sample_quality" not in a and ".monitor=" not in a]
    proc = train_py(
        *with_metrics,
        "metrics.num_samples=64",
        "metrics.batch_size=32",
        "metrics.kid_subset_size=16",
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.fast_dev_run=2",
        PROBE,
        f"hydra.run.dir={run}",
        cwd=tmp_path,
        data_dir=data,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "distributed_backend=gloo" in proc.stdout + proc.stderr
    check_ddp_ranks(run)
    fids = [json.loads((run / f"rank_{r}.json").read_text())["metrics"]["val/fid"] for r in (0, 1)]
    assert fids[0] == pytest.approx(fids[1])  # computed over both ranks' samples
    assert (run / "samples" / "epoch_0001.png").exists()  # written by rank 0


@pytest.mark.slow
def test_ddp_without_a_trained_classifier_says_to_train_it_first(
    tiny_data_dir: Path, tmp_path: Path
) -> None:
    import shutil

    data = shutil.copytree(tiny_data_dir, tmp_path / "data", ignore=shutil.ignore_patterns("cl*"))
    with_metrics = [a for a in TINY if "sample_quality" not in a and ".monitor=" not in a]
    proc = train_py(
        *with_metrics,
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.fast_dev_run=2",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        data_dir=data,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "python src/train_classifier.py data=mnist" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_ddp_inside_a_multirun_spawns_ranks_instead_of_new_sweeps(
    tiny_data_dir: Path, tmp_path: Path
) -> None:
    sweep = tmp_path / "sweep"
    proc = train_py(
        "-m",
        "seed=7",
        *TINY,
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.fast_dev_run=2",
        PROBE,
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        data_dir=tiny_data_dir,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_ddp_ranks(sweep / "0")
    assert [p.parent for p in tmp_path.rglob("multirun.yaml")] == [sweep]  # one sweep only
    assert [r["status"] for r in read_summary(sweep)] == ["ok"]


# -- the summary --------------------------------------------------------------------------


def test_summary_records_a_failing_job_and_the_sweep_goes_on(
    tiny_data_dir: Path, tmp_path: Path
) -> None:
    sweep = tmp_path / "sweep"
    proc = train_py(
        "-m", "lr=-1,2e-4", *TINY, f"hydra.sweep.dir={sweep}", cwd=tmp_path, data_dir=tiny_data_dir
    )
    assert proc.returncode == 1, proc.stderr[-3000:]  # the sweep reports the failure ...
    rows = read_summary(sweep)  # ... after the job behind the failed one ran
    assert [(r["lr"], r["status"]) for r in rows] == [("-1", "failed"), ("0.0002", "ok")]
    # torch's ValueError, or the ConfigError of a config check that catches it earlier
    assert rows[0]["error"].startswith(("ValueError: ", "ConfigError: ")), rows[0]["error"]
    assert "learning rate" in rows[0]["error"] and "-1" in rows[0]["error"]
    assert rows[0]["best val/d_loss"] == "" and float(rows[1]["best val/d_loss"]) > 0
    assert float(rows[1]["wall_s"]) > 0 and "lr=0.0002" in rows[1]["overrides"]
    md = (sweep / "summary.md").read_text()
    assert "1 of 2 jobs ok" in md and f"| failed | run | {rows[0]['error'][:40]}" in md
    assert "learning rate" in (sweep / "0" / "train.log").read_text()  # the error, in its log


def test_a_user_error_in_a_multirun_is_recorded_not_exited(
    tiny_data_dir: Path, tmp_path: Path
) -> None:
    """A single run exits 2 on a UserError; in a sweep the job is marked failed instead."""
    sweep = tmp_path / "sweep"
    missing = tmp_path / "no_data"
    proc = train_py(
        "-m",
        f"data.root={missing}",
        *TINY,
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        data_dir=tiny_data_dir,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    (row,) = read_summary(sweep)
    assert row["status"] == "failed" and row["error"].startswith("DataError: mnist was not found")


def test_the_sweep_summary_marks_a_job_with_no_metric(tmp_path: Path) -> None:
    job = tmp_path / "0"
    job.mkdir()
    record = {"job": 0, "overrides": ["debug=overfit"], "status": "ok", "error": None,
              "wall_s": 1.0, "pid": 1, "host": "h"}  # fmt: skip
    (job / "job.json").write_text(json.dumps(record))
    (row,) = SweepSummary().collect(tmp_path)
    assert row["best"] is None and "no val/fid" in row["flag"]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic"])
def test_an_interrupted_sweep_finishes_when_its_command_is_run_again(
    launcher: str, tiny_data_dir: Path, tmp_path: Path
) -> None:
    """The skip / resume / rerun decision is the sweep callback's, made in the job's process
    whatever the launcher; joblib's workers making it is
    test_sigterm_stops_a_joblib_sweep_and_prints_how_to_resume (a joblib case here doubled
    the suite's longest test for no new line of code)."""
    sweep = tmp_path / "sweep"
    command = [
        sys.executable, str(ROOT / "src" / "train.py"), "-m", f"hydra/launcher={launcher}",
        *TINY_CNN, "trainer.max_epochs=-1", "trainer.max_steps=8,200",  # job 1 runs longer
        "trainer.limit_train_batches=4", "callbacks.last_checkpoint.every_n_train_steps=4",
        f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    env = {
        **os.environ,
        "DATA_DIR": str(tiny_data_dir),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    # a session end (or a SLURM time limit) while the second job trains
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 300
    done = sweep / "0" / "job.json"
    while not (
        done.is_file()
        and json.loads(done.read_text())["status"] == "ok"
        and (sweep / "1" / "checkpoints" / "last.ckpt").is_file()
    ):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-3000:]
    rows = read_summary(sweep)
    assert [r["status"] for r in rows] == ["ok", "interrupted"], rows
    finished = {
        p: (p.stat().st_mtime_ns, p.read_bytes())
        for p in (sweep / "0").rglob("*")
        if p.is_file() and p.name not in ("job.json", "train.log") and ".hydra" not in p.parts
    }
    config = (sweep / "0" / ".hydra" / "config.yaml").read_bytes()

    # the same command again
    again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=900)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    rows = read_summary(sweep)
    assert [(r["status"], r["this launch"]) for r in rows] == [
        ("ok", "skipped"),
        ("ok", "resumed"),
    ], rows
    assert "this launch: 1 skipped, 1 resumed" in again.stdout + again.stderr
    # the finished job is untouched: its files, its checkpoints, its record of runs
    for path, (mtime, content) in finished.items():
        assert (path.stat().st_mtime_ns, path.read_bytes()) == (mtime, content), path
    assert (sweep / "0" / ".hydra" / "config.yaml").read_bytes() == config
    assert "finished in an earlier launch of the sweep" in (sweep / "0" / "train.log").read_text()
    sessions = json.loads((sweep / "1" / "run_info.json").read_text())["sessions"]
    assert sessions[0]["status"] == "interrupted"
    assert sessions[1]["resumed_from"] == "last"  # from its last.ckpt, not afresh


@pytest.mark.slow
def test_a_job_folder_holding_another_job_is_left_as_it_was(
    tiny_data_dir: Path, tmp_path: Path
) -> None:
    sweep = tmp_path / "sweep"
    base = ["-m", *TINY_CNN, f"hydra.sweep.dir={sweep}"]
    assert train_py(*base, "seed=1", cwd=tmp_path, data_dir=tiny_data_dir).returncode == 0
    config = (sweep / "0" / ".hydra" / "config.yaml").read_bytes()
    record = json.loads((sweep / "0" / "job.json").read_text())
    other = train_py(*base, "seed=7", cwd=tmp_path, data_dir=tiny_data_dir)
    assert other.returncode == 1  # the sweep did not succeed
    assert "holds another job of an earlier sweep (overrides" in other.stdout + other.stderr
    assert (sweep / "0" / ".hydra" / "config.yaml").read_bytes() == config  # put back
    kept = json.loads((sweep / "0" / "job.json").read_text())
    assert kept["overrides"] == record["overrides"] and kept["status"] == "ok"
    assert kept["launch"].startswith("refused")


# -- SIGTERM to a parallel sweep ----------------------------------------------------------


class Started(L.Callback):
    """Test probe: writes <run>/started once the first training batch ran, and makes each
    batch last at least 0.1 s, so the jobs are still training when the sweep is stopped."""

    def on_train_batch_end(self, trainer, *args) -> None:
        Path(trainer.default_root_dir, "started").touch()
        time.sleep(0.1)


SWEEP = [
    *TINY_OVERRIDES,
    "discriminator=capsule_small",
    *(f"discriminator.{k}={v}" for k, v in TINY_CAPSULES.items()),
    "++callbacks.sample_quality=null",
    "++callbacks.model_checkpoint.monitor=null",
    "optimized_metric=null",
    "hydra.callbacks.sweep_summary.metric=val/d_loss",
    "trainer.limit_val_batches=1",
    "threads=1",
    "+callbacks.started._target_=tests.test_sweeps.Started",
]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


@pytest.mark.slow
def test_sigterm_stops_a_joblib_sweep_and_prints_how_to_resume(tiny_data_dir, tmp_path) -> None:
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "lr=1e-4,2e-4,3e-4",  # two run at once, the third waits for a free worker
        *SWEEP,
        "trainer.max_epochs=3",  # 3 x 20 batches of 16 of the 320 images
        f"hydra.sweep.dir={sweep}",
    ]
    cmd = [sys.executable, str(ROOT / "src" / "train.py"), *args]
    env = {**PY_ENV, "DATA_DIR": str(tiny_data_dir)}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 240
    while not ((sweep / "0" / "started").exists() and (sweep / "1" / "started").exists()):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.5)
    pids = [json.loads((sweep / j / "job.json").read_text())["pid"] for j in ("0", "1")]
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-3000:]
    assert "Traceback" not in stderr
    records = {j: json.loads((sweep / j / "job.json").read_text()) for j in ("0", "1", "2")}
    assert {r["status"] for r in records.values()} == {"interrupted"}, records
    assert "not started" in records["2"]["error"]
    for j in ("0", "1"):
        ckpt = torch.load(sweep / j / "checkpoints" / "last.ckpt", weights_only=False)
        assert 0 < ckpt["global_step"] < 60  # stopped mid-run, saved
        assert run_info(sweep / j)["status"] == "interrupted"
    assert "interrupted" in (sweep / "summary.md").read_text()
    time.sleep(2)
    assert not any(_alive(p) for p in pids), "worker processes outlived the sweep"
    resume = stderr.strip().splitlines()[-1]
    assert resume.startswith("python ") and f"hydra.sweep.dir={sweep}" in resume
    assert resume.endswith("ckpt_path=last")

    # the printed command resumes: 0 and 1 from their last.ckpt, 2 from scratch
    resumed = subprocess.run([sys.executable, *shlex.split(resume)[1:]], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for j in ("0", "1", "2"):
        assert json.loads((sweep / j / "job.json").read_text())["status"] == "ok"
        final = torch.load(sweep / j / "checkpoints" / "last.ckpt", weights_only=False)
        assert final["global_step"] == 60
    sessions = json.loads((sweep / "0" / "run_info.json").read_text())["sessions"]
    assert [s["status"] for s in sessions] == ["interrupted", "completed"]
    assert sessions[1]["resumed_from"] == "last"
