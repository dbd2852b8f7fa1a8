"""Errors caused by the user's input (config, data, paths), reported as one paragraph
without a traceback by :func:`user_errors`; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class UserError(Exception):
    """Something the user can fix: the message says what is wrong and how to fix it."""


class ConfigError(UserError):
    """A config value is out of range, of the wrong type, or inconsistent with another;
    ``problems``: one paragraph each, listed together in the message."""

    def __init__(self, *problems: str) -> None:
        self.problems = list(problems)
        many = f"the config has {len(problems)} problems:\n\n" if len(problems) > 1 else ""
        super().__init__(many + "\n\n".join(problems))


class DataError(UserError):
    """The data set is missing, corrupt, or its root is not a usable folder."""


class DivergenceError(UserError):
    """Training produced a non-finite loss or weight; the message names the step and network."""


class StorageError(UserError):
    """A file could not be written: full disk, quota, read-only file system, permissions."""


class RunLockedError(UserError):
    """Another process is running in the same run folder."""


def brief(err: BaseException) -> str:
    """``err`` inside a message: its type and the start of its text."""
    return f"{type(err).__name__}: {str(err)[:200]}"


# errno values that mean "this place cannot take the file", not a bug of ours
STORAGE_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "the operation is not permitted",
    errno.EFBIG: "the file is too large for the file system",
    errno.EIO: "an input/output error of the device",
}


def os_error_in(err: BaseException | None) -> OSError | None:
    """The storage ``OSError`` behind ``err``: itself or one in its cause/context chain."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in STORAGE_ERRNOS:
            return err
        err = err.__cause__ or err.__context__
    return None


def storage_error(
    err: BaseException, path: str | Path | None = None, key: str | None = None
) -> StorageError | None:
    """``err`` as a one-paragraph :class:`StorageError` naming the file, or None when it is
    not a storage failure (a full disk, a quota, a read-only or forbidden place).

    ``key``: the setting of the tool that chose the place (``out``, ``out_dir``...), named
    in the fix; None: a training run's (``hydra.run.dir``, resumed with ``ckpt_path``)."""
    os_err = os_error_in(err)
    if os_err is None:
        return None
    target = path or os_err.filename
    where = repr(str(target)) if target else "a file"
    free = ""
    if target and os_err.errno in (errno.ENOSPC, errno.EDQUOT):
        with contextlib.suppress(OSError):  # the free space is a courtesy
            free = (
                f" ({shutil.disk_usage(Path(target).parent).free / 2**20:.0f} MiB free there now)"
            )
    setting = f"{key}=<another place>" if key else "hydra.run.dir=<folder>"
    if os_err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        fix = (
            "free some space (old runs' checkpoints/ folders are the largest files) or point "
            f"the output at another disk with {setting}"
        )
    else:
        fix = f"make the folder writable or point the output somewhere writable ({setting})"
    kept, again = "Files written before this one are intact", "then run the same command again"
    if not key:  # a training run's
        kept += (
            " (checkpoints are written to a temporary file and renamed, so the previous one "
            "survives)"
        )
        again += " (add ckpt_path=last to resume a training run)"
    return StorageError(
        f"could not write {where}: {STORAGE_ERRNOS[os_err.errno]}{free} "
        f"[{os_err.strerror or os_err}]. {kept}; {fix}, {again}."
    )


@contextmanager
def user_errors(reraise: bool = False, output_key: str | None = None) -> Iterator[None]:
    """The boundary of every entry point: a :class:`UserError` (or a storage failure) is
    printed as one ``Error:`` paragraph on stderr and ends the process with exit code 2
    (3 for divergence); ``HYDRA_FULL_ERROR=1`` keeps the traceback instead. A stopped run
    (:class:`RunInterruptedError`) prints its resume line and exits with its own code.
    ``reraise``: let all of them through (a multirun's job: Hydra records the failure and
    the sweep goes on). ``output_key``: the tool's own output setting (``out``), named in
    a storage failure's fix instead of training's ``hydra.run.dir``."""
    try:
        yield
    except RunInterruptedError as err:
        if reraise:
            raise
        print(str(err), file=sys.stderr)
        sys.exit(err.exit_code)
    except (UserError, OSError) as err:
        user = err if isinstance(err, UserError) else storage_error(err, key=output_key)
        if user is None or reraise or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"Error: {user}", file=sys.stderr)
        sys.exit(3 if isinstance(user, DivergenceError) else 2)


class RunInterruptedError(Exception):
    """The run was stopped by SIGTERM or Ctrl-C (after saving ``last.ckpt`` if training)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
