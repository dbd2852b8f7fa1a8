"""Locks that keep concurrent writers apart, and the clean-up their holder may do.

* A run folder is held by one process at a time (:func:`hold_run_folder`): a second run
  started in the same folder (``hydra.run.dir=<a running run>``) is refused instead of
  overwriting the first one's checkpoints and ``run_info.json``.
* The cached FID classifier of a data set is trained by one process while the others
  wait for it (:func:`classifier_lock`): the first jobs of a parallel sweep would
  otherwise each train it, minutes of duplicated work and two writers of one file.

Both are ``fcntl.flock`` locks (the ``filelock`` package): the kernel releases them when
the holding process exits, however it exits, so a run killed with SIGKILL leaves no stuck
lock behind (the lock file itself stays, unlocked and harmless).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from capsgan.atomic_write import TEMP_GLOB
from capsgan.errors import RunLockedError
from capsgan.run_info import last_session

log = logging.getLogger(__name__)

LOCK_NAME = ".capsgan.lock"
_held: dict[str, FileLock] = {}  # run folders this process holds, with a re-entry count


def _key(folder: str | Path) -> str:
    return str(Path(folder).absolute())


def hold_run_folder(folder: str | Path) -> None:
    """Take ``folder`` for this process, or raise :class:`RunLockedError` naming the run
    that holds it. Re-entrant: each call needs one :func:`release_run_folder`."""
    key = _key(folder)
    if key in _held:
        _held[key].acquire()
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    # no soft (file-exists) fallback: a killed holder would leave it stuck
    lock = FileLock(Path(folder) / LOCK_NAME, timeout=0, fallback_to_soft=False)
    try:
        lock.acquire()
    except Timeout:  # (a subclass of OSError: first)
        last = holder(folder) or {}  # who trains the run there, if known
        host = (last.get("machine") or {}).get("hostname", "?")
        who = f" (pid {last.get('pid', '?')} on {host}, started {last.get('started', '?')})"
        raise RunLockedError(
            f"the run folder {key!r} is in use by another run{who if last else ''}. Two runs in "
            "one folder would overwrite each other's checkpoints and run_info.json. Wait until "
            "it ends (or stop it: it saves last.ckpt on SIGTERM) and then resume with "
            "ckpt_path=last, or start this run in another folder (hydra.run.dir=<new folder>, "
            "or no hydra.run.dir for a fresh outputs/<date>/<time>)."
        ) from None
    except OSError as err:  # a file system without flock (some NFS mounts): go on unlocked
        log.warning("cannot lock the run folder %s (%s); running without the lock", key, err)
        return
    _held[key] = lock


def release_run_folder(folder: str | Path) -> None:
    """Undo one :func:`hold_run_folder`; the last one frees the folder."""
    lock = _held.get(_key(folder))
    if lock is not None:
        lock.release()
        if not lock.is_locked:
            del _held[_key(folder)]


def folder_in_use(folder: str | Path) -> bool:
    """Whether a live process holds ``folder`` (a run still running), without taking it
    for longer than the check. A session marked "running" in a folder nobody holds was
    killed."""
    path = Path(folder) / LOCK_NAME
    if _key(folder) in _held:
        return True
    if not path.is_file():
        return False
    try:
        with FileLock(path, timeout=0, fallback_to_soft=False):
            return False
    except Timeout:  # (a subclass of OSError: first)
        return True
    except OSError:  # no flock here: nobody can hold it either
        return False


def holder(folder: str | Path) -> dict[str, Any] | None:
    """The newest session of the folder's ``run_info.json`` while it is marked running (its
    ``pid``, ``started`` and ``machine``), else None: who trains the run, if known."""
    last = last_session(folder)
    return last if isinstance(last, dict) and last.get("status") == "running" else None


def remove_stale_temp_files(folder: str | Path, pattern: str = TEMP_GLOB) -> None:
    """Delete the half-written ``.<name>.<random>.tmp`` (:mod:`capsgan.atomic_write`) that a
    killed run left in ``folder`` and its ``checkpoints/`` (or only those ``pattern`` names).
    Call it only while holding their lock, so no live writer's file is taken."""
    folder = Path(folder)
    for path in [*(folder / "checkpoints").glob(pattern), *folder.glob(pattern)]:
        with contextlib.suppress(OSError):
            path.unlink()
            log.warning("removed %s, a half-written file left by a killed run", path)


@contextlib.contextmanager
def classifier_lock(weights: Path) -> Iterator[None]:
    """Hold ``<weights>.lock`` while the classifier ``weights`` is trained and saved; a
    second process waits here, then finds the file. Where no lock file can be made (a
    read-only folder) it goes on unlocked: there is nothing to write there anyway."""
    lock = FileLock(f"{weights}.lock", fallback_to_soft=False)
    try:
        weights.parent.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.info("Another process is training the classifier %s; waiting for it ...", weights)
            lock.acquire()
    except OSError:
        yield
        return
    try:
        remove_stale_temp_files(weights.parent, f".{weights.stem}.*.tmp")  # this data set's only
        yield
    finally:
        lock.release()
