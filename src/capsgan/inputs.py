"""Every input file a user names is opened here, one guarded loader per kind: a GAN
checkpoint, a run's config, an ``.npz`` of images, a folder of PNGs (the FID classifier:
:func:`capsgan.classifier.load_classifier`; the IDX files: :mod:`capsgan.data`). numpy,
PIL, torch and OmegaConf each fail their own way on a truncated or foreign file; each
loader turns that into one :class:`~capsgan.errors.UserError` naming the file, the key
that pointed at it, and what to pass instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from capsgan.errors import ConfigError, UserError, brief

# -- checkpoints and run configs ---------------------------------------------------------


def checkpoint_file(
    path: str | Path, named: str, fix: str = "e.g. <run folder>/checkpoints/last.ckpt."
) -> Path:
    """``path`` if it is a file, else a :class:`ConfigError` saying what it is instead
    (``named`` opens the sentence; ``fix`` follows "Pass an existing .ckpt file,")."""
    path = Path(path).expanduser()
    if not path.is_file():
        what = "is a folder, not a .ckpt file" if path.is_dir() else "does not exist"
        raise ConfigError(f"{named} {what}. Pass an existing .ckpt file, {fix}")
    return path


def read_checkpoint(
    path: str | Path, key: str = "ckpt_path", weights_only: bool = False
) -> dict[str, Any]:
    """A Lightning checkpoint of :class:`capsgan.gan_module.GAN` read onto the CPU, or a
    :class:`ConfigError` naming ``path`` and the ``key`` that chose it.

    ``weights_only``: load it as Lightning does on resume (a file this fails on fails
    there too); the other tools unpickle the hyperparameters as well (OmegaConf
    containers, which the safe loader refuses), since the file is the user's own output.
    """
    path = checkpoint_file(path, f"the checkpoint {str(path)!r} (`{key}`)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as err:  # truncated by a kill or a full disk, or another program's file
        others = sorted(p.name for p in path.parent.glob("*.ckpt") if p != path)
        where = f"{', '.join(others[-4:])} in {str(path.parent)!r}" if others else "none is there"
        raise ConfigError(
            f"the checkpoint {str(path)!r} (`{key}`) cannot be read: it is not a readable "
            f"checkpoint ({brief(err)}); it may be truncated or another program's file. "
            f"Pass another .ckpt of the run: {where}."
        ) from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ConfigError(
            f"{str(path)!r} (`{key}`) is not a Lightning checkpoint (it has no state_dict). "
            "Pass a .ckpt file written by this framework (a run's checkpoints/ folder)."
        )
    return checkpoint


def find_run_config(ckpt_path: Path) -> Path | None:
    """``.hydra/config.yaml`` of the run that wrote ``ckpt_path`` (``<run>/checkpoints/x.ckpt``)."""
    folders = (ckpt_path.parent, *ckpt_path.parents[1:3])
    return next((c for f in folders if (c := f / ".hydra" / "config.yaml").is_file()), None)


def read_run_config(path: str | Path) -> DictConfig:
    """A training run's ``.hydra/config.yaml``, or a :class:`ConfigError` naming it."""
    fix = "config_path=<run folder>/.hydra/config.yaml of the run that wrote the checkpoint."
    try:
        cfg = OmegaConf.load(path)
    except Exception as err:  # YAML syntax, binary junk, unreadable
        raise ConfigError(
            f"the run config {str(path)!r} cannot be read ({brief(err)}). Pass {fix}"
        ) from err
    if not isinstance(cfg, DictConfig) or "generator" not in cfg:
        raise ConfigError(
            f"{str(path)!r} has no 'generator' section, so it is not a training run's "
            f"config; pass {fix}"
        )
    return cfg


# -- image files ---------------------------------------------------------------------------


def load_npz(path: Path, key: str | None = None) -> np.ndarray:
    """The image array of an ``.npz``: ``key``, else ``images``, else its only array."""
    try:
        with np.load(path, allow_pickle=False) as data:
            names = list(data.keys())
            if key is None:
                if "images" not in names and len(names) != 1:
                    raise UserError(
                        f"{str(path)!r} holds several arrays ({names}) and none is called "
                        "'images'; pick one with npz_key=<name>."
                    )
                key = "images" if "images" in names else names[0]
            if key not in names:
                raise UserError(f"{str(path)!r} has no array {key!r}; it has {names} (npz_key=).")
            return data[key]
    except UserError:
        raise
    except Exception as err:  # not a zip, truncated, an object array, unreadable
        raise UserError(
            f"{str(path)!r} (`source`) is not a readable .npz of images ({brief(err)}). Save "
            "the images with np.savez(path, images=array) (uint8 N x C x H x W, or floats)."
        ) from err


def read_image(path: Path, key: str) -> Image.Image:
    """One image file (a run's sample grid) as RGB, or a :class:`UserError` naming it."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except Exception as err:  # truncated by a kill, not an image, unreadable
        raise UserError(
            f"{str(path)!r} (read for `{key}`) cannot be read as an image ({brief(err)}); it "
            "may have been cut short by a kill. Delete it, or leave its epoch out."
        ) from err


def load_png_folder(path: Path, channels: int) -> np.ndarray:
    """The ``*.png`` files of a folder, sorted by name, as N x C x H x W uint8."""
    files = sorted(path.glob("*.png"))
    if not files:
        raise UserError(f"{str(path)!r} holds no .png files.")
    arrays = []
    for file in files:
        try:
            with Image.open(file) as img:
                grey = img.mode in ("L", "1", "I;16", "I", "F")
                array = np.asarray(img.convert("L" if channels == 1 and grey else "RGB"))
        except Exception as err:  # not a PNG, truncated, unreadable (permissions)
            raise UserError(
                f"{str(file)!r}, one of the PNGs of `source` {str(path)!r}, cannot be read "
                f"({brief(err)}). Remove or re-save it; every .png in the folder is scored."
            ) from err
        if channels == 1 and array.ndim == 3:  # RGB(A), palette...: grey if R = G = B
            if not (array == array[..., :1]).all():
                raise UserError(
                    f"{str(file)!r} is a colour image but the data set is grey; save "
                    "the samples as grey PNGs (mode L)."
                )
            array = array[..., 0]  # what convert("L") gives for R = G = B
        arrays.append(array)
    if len(sizes := {a.shape[:2] for a in arrays}) > 1:
        raise UserError(
            f"the PNGs in {str(path)!r} have different sizes {sorted(sizes)}; they must all "
            "be single images of the data set's size."
        )
    stacked = np.stack(arrays)  # (N, H, W) or (N, H, W, 3)
    return stacked if stacked.ndim == 3 else stacked.transpose(0, 3, 1, 2)
