"""Plain helpers the test modules share: running the entry points as a user does, and
reading back what a run left (``run_info.json``, TensorBoard events). Fixtures are in
conftest.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from capsgan.loggers import event_dirs
from tests.conftest import CONF_DIR, FAST, ROOT, TINY_CAPSULES, TINY_OVERRIDES

# the environment of a subprocess: ``tests`` importable, one thread, Hydra's short errors
PY_ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
PY_ENV.pop("HYDRA_FULL_ERROR", None)

SHORT = ("trainer.limit_train_batches=3", "trainer.limit_val_batches=1")


def compose(name: str, *overrides: str):
    """The config of entry point ``name`` (``conf/<name>.yaml``) with ``overrides``."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return hydra_compose(config_name=name, overrides=list(overrides))


def run_info(run: Path) -> dict:
    return json.loads((run / "run_info.json").read_text())["sessions"][-1]


def scalars(run: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of a TensorBoard tag, as TensorBoard shows it (orphans purged)."""
    (folder,) = event_dirs(run)  # one TensorBoard run: tensorboard/<run name>/
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def events_of(run: Path) -> EventAccumulator:
    (folder,) = event_dirs(run)
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


# -- the entry points as subprocesses -----------------------------------------------------


def cli(tmp_path: Path, *overrides: str, env: dict | None = None, data: Path | None = None):
    cmd = [
        sys.executable,
        str(ROOT / "src" / "train.py"),
        *TINY_OVERRIDES,
        *FAST,
        "discriminator=capsule_small",
        *(f"discriminator.{k}={v}" for k, v in TINY_CAPSULES.items()),
        *overrides,
    ]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    full_env.pop("HYDRA_FULL_ERROR", None)
    full_env.update(env or {})
    if data is not None:
        full_env["DATA_DIR"] = str(data)
    return subprocess.run(
        cmd, cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=300
    )


def script(name: str, *args: str, cwd: Path, data: Path | None = None, timeout: int = 300):
    env = dict(PY_ENV)
    if data is not None:
        env["DATA_DIR"] = str(data)
    cmd = [sys.executable, str(ROOT / "src" / name), *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def assert_one_paragraph(proc, *words: str, code: int = 2) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode == code, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert "Error: " in proc.stderr
    for word in words:
        assert word in proc.stderr, (word, proc.stderr[-2000:])


# -- faults a test injects through ``+callbacks.<name>._target_=tests.helpers.<Class>`` ---


class SendSignal(L.Callback):
    """Test fault: send ``signum`` to this process just before generator step ``at_step``."""

    def __init__(self, at_step: int, signum: int) -> None:
        self.at_step, self.signum = at_step, signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.at_step:
            os.kill(os.getpid(), self.signum)
