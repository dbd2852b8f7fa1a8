"""``<run>/run_info.json``: what produced a run folder and how the run ended, beyond the
config Hydra saves: the git commit (and uncommitted changes), the versions of the packages
that decide the numbers, the machine, and the status. A resumed run appends a session."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from capsgan.atomic_write import write_json_atomically

FILENAME = "run_info.json"
PACKAGES = ("capsgan", "torch", "torchvision", "lightning", "hydra-core", "omegaconf",
            "torchmetrics", "numpy", "tensorboard")  # fmt: skip


def git_state() -> dict[str, Any]:
    """Commit and dirty flag of the repository holding this package (None outside git)."""

    def git(*args: str) -> str | None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(["git", "-C", str(Path(__file__).parent), *args],
                                 capture_output=True, text=True, timeout=10)  # fmt: skip
            return out.stdout.strip() if out.returncode == 0 else None
        return None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        versions[name] = None
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def machine() -> dict[str, Any]:
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def start_session(output_dir: str | Path, overrides: list[str], ckpt_path: str | None,
                  config_dir: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Add a session (status ``running``) to ``<output_dir>/run_info.json`` and return it.
    ``config_dir``: where Hydra saved its config (``.hydra`` or ``.hydra/session_<n>``)."""
    session = {
        "started": _now(), "status": "running", "pid": os.getpid(),
        "command": [sys.executable, *sys.argv], "overrides": overrides, "config": config_dir,
        "resumed_from": ckpt_path, "git": git_state(), "packages": package_versions(),
        "machine": machine(),
    }  # fmt: skip
    info = _read(output_dir)
    info.setdefault("sessions", []).append(session)
    write_json_atomically(Path(output_dir) / FILENAME, info)
    return session


def note_session(output_dir: str | Path, **fields: Any) -> None:
    """Add ``fields`` to the newest session (what the run decided at start-up, e.g. the
    precision ``auto`` stood for, and why)."""
    info = _read(output_dir)
    if info.get("sessions"):
        info["sessions"][-1].update(fields)
        write_json_atomically(Path(output_dir) / FILENAME, info)


def end_session(output_dir: str | Path, status: str, message: str | None = None, **extra: Any):
    """Record how the newest session ended (completed, failed, diverged, interrupted or
    crashed); best effort: a full disk must not hide the error that ended the run."""
    try:
        note_session(output_dir, status=status, ended=_now(), message=message, **extra)
    except OSError as err:
        print(f"(could not record the run's end in {output_dir}/{FILENAME}: {err})",
              file=sys.stderr)  # fmt: skip


def sessions(output_dir: str | Path) -> list[dict[str, Any]]:
    """The sessions of ``<output_dir>/run_info.json``, oldest first."""
    return _read(output_dir).get("sessions") or []


def last_session(output_dir: str | Path) -> dict[str, Any] | None:
    return (sessions(output_dir) or [None])[-1]


def _read(output_dir: str | Path) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        return json.loads((Path(output_dir) / FILENAME).read_text())
    return {}
