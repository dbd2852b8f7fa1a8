"""Resuming a run in its folder: its config comes from the run's own record, and that
record is never rewritten.

* :func:`resume_argv` (``src/train.py``, before Hydra composes) puts the run's saved
  overrides (``.hydra/overrides.yaml``) first and the user's on top; an override that
  would change the architecture the checkpoint was saved with is refused.
* ``hydra.output_subdir`` (:func:`hydra_output_subdir`) sends Hydra's files of a later
  session to ``.hydra/session_<n>/``, so the run's original ``.hydra/`` stays as it was
  (a resumed sweep's jobs too).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from capsgan.cli import LATEST, resume_dir
from capsgan.errors import ConfigError, brief
from capsgan.schema import plain

LAST = "last"
MULTIRUN_FLAGS = ("-m", "--multirun")
HYDRA_DIR = ".hydra"
# What a checkpoint's weights depend on: changing any of it makes them not fit.
ARCHITECTURE = ("generator", "discriminator", "latent_dim", "data.name", "data.channels",
                "data.image_size")  # fmt: skip


def key_of(override: str) -> str:
    """``+a.b=1`` -> ``a.b``."""
    return override.split("=", 1)[0].lstrip("+~")


def _value(argv: Sequence[str], key: str) -> str | None:
    found = [a.split("=", 1)[1] for a in argv if "=" in a and key_of(a) == key]
    return found[-1] if found else None


def saved_overrides(folder: Path) -> list[str]:
    """The overrides the run was started with (its first session's ``overrides.yaml``)."""
    path = folder / HYDRA_DIR / "overrides.yaml"
    try:
        saved = OmegaConf.load(path)
    except Exception as err:  # binary junk, YAML syntax, unreadable
        raise ConfigError(
            f"the run's saved overrides {str(path)!r} cannot be read ({brief(err)}), so the "
            "resume cannot compose the run's config from them. "
            f"Resume from the file instead: ckpt_path={folder}/checkpoints/last.ckpt with the "
            "run's overrides (they are also in its .hydra/config.yaml), in a new folder."
        ) from err
    return [str(o) for o in saved] if OmegaConf.is_list(saved) else []


def _changes(before: DictConfig, after: DictConfig) -> list[str]:
    """How two composed training configs differ in what the checkpoint's weights depend on."""
    changed = []
    for key in ARCHITECTURE:
        a, b = (plain(OmegaConf.select(cfg, key, default=None)) for cfg in (before, after))
        if isinstance(a, dict) and isinstance(b, dict):
            changed += [f"{key}.{k}: {a.get(k)!r} -> {b.get(k)!r}"
                        for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]  # fmt: skip
        elif a != b:
            changed.append(f"{key}: {a!r} -> {b!r}")
    return changed


def resume_argv(argv: Sequence[str], conf_dir: str | Path, config_name: str = "train") -> list[str]:
    """``argv`` for resuming a run in its folder: the run's saved overrides, then the
    user's (which win), with ``ckpt_path=latest`` spelled out as the folder it means.
    Unchanged when the command resumes nothing: a sweep, or a folder without a saved
    ``.hydra/overrides.yaml`` (the newest run under ``paths.log_dir`` for
    ``ckpt_path=latest``, ``hydra.run.dir`` for ``ckpt_path=last``). A :class:`ConfigError`
    when the user's overrides change the architecture the checkpoint was saved with."""
    ckpt = _value(argv, "ckpt_path")
    if any(a in MULTIRUN_FLAGS for a in argv) or ckpt not in (LATEST, LAST):
        return list(argv)
    log_dir = _value(argv, "paths.log_dir") or "outputs"
    found = resume_dir(LATEST, log_dir, "") if ckpt == LATEST else _value(argv, "hydra.run.dir")
    folder = Path(found) if found else None
    if folder is None or not (folder / HYDRA_DIR / "overrides.yaml").is_file():
        return list(argv)
    saved = saved_overrides(folder)
    flags = [a for a in argv if a.startswith("-")]  # Hydra's options come before overrides
    given = [a for a in argv if key_of(a) != "ckpt_path" and not a.startswith("-")]
    if ckpt == LATEST:
        given = [a for a in given if key_of(a) != "hydra.run.dir"] + [f"hydra.run.dir={folder}"]
    ours = {key_of(a) for a in given}
    before = [s for s in saved if key_of(s) != "ckpt_path"]
    merged = [*flags, *(s for s in before if key_of(s) not in ours), *given, f"ckpt_path={LAST}"]
    task = [a for a in merged if not a.startswith(("hydra.", "-"))]
    try:
        changed = _changes(*(_compose(conf_dir, config_name, o) for o in (before, task)))
    except Exception:  # an override Hydra refuses: Hydra says so itself, in main()
        return merged
    if changed:
        extra = [a for a in given if a not in saved and not a.startswith("hydra.")]
        raise ConfigError(
            f"resuming {str(folder)!r} composes its config from the run's saved overrides "
            f"({str(folder / HYDRA_DIR / 'overrides.yaml')!r}: "
            f"{' '.join(saved) or '(none: the defaults)'}), and the overrides given now "
            f"({' '.join(extra)}) change the architecture its checkpoint was saved with: "
            f"{'; '.join(changed[:4])}. Resume without them (python src/train.py "
            f"hydra.run.dir={folder} ckpt_path=last, plus any non-architecture override such "
            "as trainer.max_epochs=...), or start a new run: drop ckpt_path. The run's record "
            "is unchanged."
        )
    return merged


def _compose(conf_dir: str | Path, config_name: str, overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(Path(conf_dir).resolve())):
            return compose(config_name=config_name, overrides=overrides)
    finally:
        GlobalHydra.instance().clear()


@functools.cache  # the answer before Hydra wrote this session's files, asked once
def hydra_output_subdir(output_dir: str) -> str:
    """``hydra.output_subdir`` of every run and sweep job (``conf/hydra/default.yaml``):
    ``.hydra`` for a new folder, ``.hydra/session_<n>`` when it already holds a run's
    record (the first session is ``.hydra`` itself). Hydra reads it just before it writes
    its files; later readers (run_info's ``config``) get the same answer, remembered per
    folder (``hydra.runtime.output_dir``, an absolute path) for this process."""
    hydra_dir = Path(output_dir) / HYDRA_DIR
    if not (hydra_dir / "config.yaml").is_file():
        return HYDRA_DIR
    n = next(n for n in itertools.count(2) if not (hydra_dir / f"session_{n}").exists())
    return f"{HYDRA_DIR}/session_{n}"


def register_resolver() -> None:
    """The ``capsgan.session_subdir`` resolver. :mod:`capsgan.config` registers it when
    imported, which every Hydra entry point and every sweep worker (through the task
    function's modules) does before Hydra resolves ``hydra.output_subdir``."""
    if not OmegaConf.has_resolver("capsgan.session_subdir"):
        OmegaConf.register_new_resolver("capsgan.session_subdir", hydra_output_subdir)
