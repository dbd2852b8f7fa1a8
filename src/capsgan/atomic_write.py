"""Files that are never seen half-written: the one write-then-rename of the package.

A file is written to ``.<name>.<random>.tmp`` in its own folder, flushed to the disk, and
renamed over the target (``os.replace``, atomic on POSIX and Windows), so a reader, a
resumed run or a second process sees the previous complete file or the new one, never a
partial one. A killed writer leaves only a ``.*.tmp`` file, which
:func:`capsgan.locks.remove_stale_temp_files` removes at the next start.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

TEMP_GLOB = ".*.tmp"  # the temporary files' names, for clean-up


def write_atomically(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, fsync it and rename it to
    ``path``; on any error the temporary file is removed and the old ``path`` is untouched."""
    path, tmp = Path(path), None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
        with open(tmp, "xb") as f:  # a new file, as from mkstemp, but in the umask's mode
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(err, OSError) and err.errno is not None:
            # the message names the file the user knows, not our temporary one
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (POSIX only)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def json_safe(value: Any) -> Any:
    """NaN / inf -> strings, so the file is strict JSON; OmegaConf containers -> plain."""
    from omegaconf import OmegaConf

    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    return [json_safe(v) for v in value] if isinstance(value, (list, tuple)) else value


def write_json_atomically(path: str | Path, data: Any, strict: bool = False) -> Path:
    """``data`` as indented JSON (anything JSON cannot hold as its ``str``); ``strict``:
    through :func:`json_safe` first (the result files of evaluate, battle, semisupervised)."""
    text = json.dumps(json_safe(data) if strict else data, indent=2, default=str) + "\n"
    write_atomically(path, lambda f: f.write(text.encode()))
    return Path(path)
