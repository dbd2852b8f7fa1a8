"""Score anything with the training metrics: ``python src/evaluate.py source=...``.

A *source* (docs/evaluation.md) is a GAN checkpoint, whose ``num_samples`` images come
from a seeded noise batch drawn exactly as the training callback draws its own; a run or
sweep folder; an ``.npz`` of images; a folder of PNG files; or ``real:train`` /
``real:test``. Every source is scored with :class:`capsgan.metrics.SampleQuality` against
``real_samples`` images of the chosen real split, whose statistics are computed once per
data set and split. The design follows PyTorch-StudioGAN's evaluation entry point (two
image sets in, every metric out, the reference set chosen by split), with this project's
classifier as the feature network.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from capsgan.atomic_write import write_json_atomically
from capsgan.classifier import check_classifier_fits, load_classifier, load_or_train
from capsgan.cli import as_list, print_table
from capsgan.config import check_classifier, validate_evaluate_config
from capsgan.data import ImageDataModule
from capsgan.errors import ConfigError, UserError
from capsgan.generation import load_generator
from capsgan.inputs import load_npz, load_png_folder
from capsgan.metrics import RESULT_KEYS, SampleQuality, to_uint8
from capsgan.runs import checkpoint_run, find_runs, has_checkpoints, resolve_checkpoints

log = logging.getLogger(__name__)

REAL_PREFIX = "real:"


# -- images from files ------------------------------------------------------------------


def _check_shape(images: np.ndarray, shape: tuple[int, int, int], what: str) -> np.ndarray:
    """N x H x W or N x C x H x W -> N x C x H x W matching ``shape`` (C, H, W), or a clear
    error naming the mismatch and its fix."""
    channels, height, width = shape
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise UserError(
            f"{what} has shape {images.shape}; expected N x H x W or N x C x H x W images "
            f"(here N x {height} x {width} or N x {channels} x {height} x {width})."
        )
    if images.shape[1] != channels and images.shape[-1] == channels:
        raise UserError(
            f"{what} has shape {images.shape}, which looks channels-last (N x H x W x C); "
            "the images must be N x C x H x W: save np.transpose(images, (0, 3, 1, 2))."
        )
    if images.shape[2:] != (height, width):
        raise UserError(
            f"{what} holds {images.shape[2]}x{images.shape[3]} images but the classifier "
            f"behind the metrics takes {height}x{width}: resize them to {height}x{width} "
            "(or pick the data set they belong to with data=...). A grid of many samples "
            "in one image must be cut into single images first."
        )
    if images.shape[1] != channels:
        fix = "convert them to grey (e.g. average the channels)" if channels == 1 else ""
        raise UserError(
            f"{what} has {images.shape[1]} channel(s) per image but the data set's images "
            f"have {channels}; {fix or f'give them {channels} channels'}."
        )
    return images


def to_uint8_images(
    images: np.ndarray, what: str, value_range: str | tuple[float, float] = "auto"
) -> Tensor:
    """Images of any usual dtype and range -> uint8 tensor in [0, 255].

    uint8 is taken as is; other integers must lie in [0, 255]. Floats are read by
    ``value_range``: a pair (low, high), low < high as :class:`capsgan.config.EvaluateKeys`
    checks, e.g. (-1, 1) for the GAN's tanh output, (0, 1) or (0, 255); or ``auto``:
    [-1, 1] when any value is negative, [0, 1] when the maximum is at most 1, else
    [0, 255]. Values outside the range are an error that names the range assumed.
    """
    if images.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(images))
    if images.dtype == np.bool_ or images.size == 0:
        raise UserError(f"{what} holds {images.dtype} values; give uint8 or float images.")
    lo, hi = float(images.min()), float(images.max())
    if np.issubdtype(images.dtype, np.integer):
        if lo < 0 or hi > 255:
            raise UserError(
                f"{what} holds integers from {lo:g} to {hi:g}, outside [0, 255]; save uint8 "
                "images in [0, 255] (or floats in [-1, 1])."
            )
        return torch.from_numpy(images.astype(np.uint8))
    if not np.isfinite(images).all():
        raise UserError(f"{what} contains NaN or infinite values; fix the images first.")
    if value_range == "auto":
        low, high = (-1.0, 1.0) if lo < 0 else ((0.0, 1.0) if hi <= 1.0 else (0.0, 255.0))
    else:
        low, high = (float(v) for v in value_range)
    slack = 1e-3 * (high - low)
    if lo < low - slack or hi > high + slack:
        raise UserError(
            f"{what} holds floats from {lo:.4g} to {hi:.4g}, outside the [{low:g}, {high:g}] "
            "range assumed (value_range). Rescale the images, or set value_range to the "
            "range they are in: [-1,1], [0,1] or [0,255]."
        )
    scaled = (torch.from_numpy(images.astype(np.float32)) - low) * (255.0 / (high - low))
    return scaled.round_().clamp_(0, 255).to(torch.uint8)


# -- the data set and the real statistics ------------------------------------------------


@dataclass(frozen=True)
class DataSpec:
    name: str
    channels: int
    image_size: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)

    @staticmethod
    def of(data_cfg: DictConfig) -> DataSpec:
        return DataSpec(str(data_cfg.name), int(data_cfg.channels), int(data_cfg.image_size))


def real_images(
    spec: DataSpec, root: str, split: str, n: int | None = None
) -> tuple[Tensor, Tensor]:
    """The first ``n`` (None: all) images of a split (``train`` / ``test``, checked by the
    callers' configs) as uint8 (N, C, H, W), and labels."""
    dm = ImageDataModule(root=root, **asdict(spec))
    dm.prepare_data()
    dm.setup("fit")
    dataset = dm.train_set if split == "train" else dm.val_set
    assert dataset is not None
    if n is not None and n > len(dataset):
        raise UserError(
            f"{n} real images asked for but the {spec.name} {split} split has "
            f"{len(dataset)}; set real_samples={len(dataset)} or less (null: all)."
        )
    return to_uint8(dataset.images[:n]), dataset.labels[:n]


# -- scoring -----------------------------------------------------------------------------


@dataclass
class Source:
    name: str
    kind: str  # checkpoint, npz, png, real
    data: DataSpec
    info: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    latent_dim: int | None = None  # a checkpoint's noise size, from its run's config


def expand_sources(cfg: DictConfig, default_data: DataSpec) -> list[Source]:
    """``cfg.source`` (a path or a list of them) -> the sources to score, in order."""
    paths = [str(p) for p in as_list(cfg.source)]
    if not paths:
        raise ConfigError(
            "nothing to score: pass source=<checkpoint | run folder | sweep folder | .npz | "
            "folder of PNGs | real:train | real:test> (or a list: source=[a,b])."
        )
    sources: list[Source] = []
    for item in paths:
        if item.startswith(REAL_PREFIX):
            split = item[len(REAL_PREFIX) :]
            if split not in ("train", "test"):
                raise ConfigError(f"source={item}: use real:train or real:test.")
            sources.append(Source(item, "real", default_data, {"split": split}))
            continue
        path = Path(item).expanduser()
        if not path.exists():
            raise UserError(f"source {item!r} does not exist.")
        if path.is_file() and path.suffix == ".npz":
            sources.append(Source(str(path), "npz", default_data, path=path))
        elif (path.is_file() and path.suffix == ".ckpt") or (
            path.is_dir() and any(has_checkpoints(run) for run in find_runs(path))
        ):
            for ckpt in resolve_checkpoints(path, str(cfg.checkpoint)):
                info = checkpoint_run(ckpt)
                spec = DataSpec.of(info.cfg.data)
                meta = {"discriminator": info.discriminator, "seed": info.seed}
                sources.append(Source(info.label, "checkpoint", spec, meta, ckpt, info.latent_dim))
        elif path.is_dir() and any(path.glob("*.png")):
            sources.append(Source(str(path), "png", default_data, path=path))
        else:
            raise UserError(
                f"do not know how to score {item!r}: give a .ckpt, a training run folder, a "
                "sweep folder, an .npz of images, a folder of .png files, or real:train / "
                "real:test."
            )
    return sources


@torch.no_grad()
def generated_batches(
    generator: nn.Module, n: int, batch_size: int, seed: int, device: str, latent_dim: int
) -> list[Tensor]:
    """``n`` uint8 images of ``generator``, the noise drawn batch by batch from one seeded
    torch.Generator exactly as :class:`capsgan.metrics.SampleQualityCallback` draws it, so
    a checkpoint rescored with the run's seed and count sees the training callback's z."""
    rng = torch.Generator().manual_seed(seed)
    batches = []
    for start in range(0, n, batch_size):
        z = torch.randn(min(batch_size, n - start), latent_dim, generator=rng).to(device)
        batches.append(to_uint8(generator(z)).cpu())
    return batches


def source_images(source: Source, cfg: DictConfig) -> list[Tensor]:
    """The source's images as uint8 batches, after every shape / range / size check."""
    n = cfg.num_samples
    if source.kind == "checkpoint":
        if n is None:
            raise ConfigError(
                "num_samples=null means 'all images of a file', but a checkpoint makes as "
                "many as asked: set num_samples (10000 for reportable numbers)."
            )
        assert source.path is not None and source.latent_dim is not None
        generator, _ = load_generator(source.path, device=cfg.device)
        return generated_batches(
            generator, int(n), int(cfg.batch_size), int(cfg.seed), cfg.device, source.latent_dim
        )
    if source.kind == "real":
        images, _ = real_images(source.data, str(cfg.data.root), source.info["split"], n)
        return list(images.split(int(cfg.batch_size)))
    assert source.path is not None
    if source.kind == "npz":
        array = load_npz(source.path, cfg.npz_key)
        what = f"{source.path.name} (array of shape {array.shape}, {array.dtype})"
    else:
        array = load_png_folder(source.path, source.data.channels)
        what = f"the PNGs of {str(source.path)!r}"
    array = _check_shape(array, source.data.shape, what)
    if n is not None and len(array) < n:
        raise UserError(
            f"{what} holds {len(array)} images but num_samples={n}: set num_samples="
            f"{len(array)} (or null: all of them). Compare FIDs only at equal sample "
            "counts: FID is biased upwards for smaller samples."
        )
    images = to_uint8_images(array[:n], what, cfg.value_range)  # [:None]: all of them
    return list(images.split(int(cfg.batch_size)))


def reference(spec: DataSpec, cfg: DictConfig) -> tuple[SampleQuality, int]:
    """A :class:`SampleQuality` on ``spec``'s classifier (refused when made for other
    images) holding the statistics of ``real_samples`` images of ``real_split``, and their
    number."""
    path, root = cfg.classifier_path, str(cfg.data.root)
    model = load_classifier(path) if path else load_or_train(spec.name, root, cfg.classifier_dir)
    key = "classifier_path" if path else "classifier_dir"
    check_classifier_fits(model, spec.name, spec.shape, key)
    quality = SampleQuality(
        model, kid_subset_size=int(cfg.kid_subset_size), mode_threshold=float(cfg.mode_threshold)
    ).to(cfg.device)
    images, _ = real_images(spec, root, cfg.real_split, cfg.real_samples)
    for batch in images.split(int(cfg.batch_size)):
        quality.update(batch.to(cfg.device), real=True)
    return quality, len(images)


def score(source: Source, cfg: DictConfig, quality: SampleQuality, num_real: int) -> dict[str, Any]:
    """One row of the results: ``source``'s images against the real ones in ``quality``."""
    log.info("scoring %s ...", source.name)
    start = time.perf_counter()
    num_fake = 0
    for batch in source_images(source, cfg):
        quality.update(batch.to(cfg.device), real=False)
        num_fake += len(batch)
    if num_fake < 2 or num_fake <= quality.precision_recall.k:
        raise UserError(
            f"{source.name}: {num_fake} image(s) are too few to score; FID needs at "
            "least 2 and precision / recall more than pr k=3 (use a few hundred for a "
            "quick check, 10000 for reportable numbers)."
        )
    values = quality.compute(total_real=num_real, total_fake=num_fake)
    quality.reset()
    return {
        "source": source.name,
        "kind": source.kind,
        **source.info,
        "data": source.data.name,
        "real_split": str(cfg.real_split),
        "num_real": num_real,
        "num_samples": num_fake,
        **{k: float(values[k]) for k in RESULT_KEYS},
        "modes": int(values["modes"]),
        "seconds": round(time.perf_counter() - start, 2),
    }


# (column, result key, format) of the evaluation table
COLUMNS = (
    ("source", "source", ""), ("n", "num_samples", ""), ("FID", "fid", ".2f"),
    ("KID", "kid", ".4f"), ("IS", "is", ".2f"), ("precision", "precision", ".3f"),
    ("recall", "recall", ".3f"), ("modes", "modes", ""), ("mode KL", "mode_kl", ".4f"),
)  # fmt: skip


def output_path(cfg: DictConfig) -> Path:
    """Where the JSON goes: ``cfg.out``, else beside what was scored, so that the next
    evaluation of something else does not overwrite it: ``<folder>/evaluation.json`` for a
    run, sweep or PNG folder, ``<file>.evaluation.json`` next to a .ckpt or .npz, and
    ``<paths.log_dir>/evaluations/<date>_<time>.json`` for several sources or real images."""
    if cfg.get("out"):
        return Path(str(cfg.out)).expanduser()
    items = [str(p) for p in as_list(cfg.source)]
    if len(items) == 1 and not items[0].startswith(REAL_PREFIX):
        path = Path(items[0]).expanduser()
        return path / "evaluation.json" if path.is_dir() else path.with_suffix(".evaluation.json")
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    return Path(str(cfg.paths.log_dir)).expanduser() / "evaluations" / f"{stamp}.json"


def write_results(
    out: str | Path,
    cfg: DictConfig,
    keys: Sequence[str],
    table: tuple[str, list[str], list[list[str]]],
    **results: Any,
) -> Path:
    """The end of every scoring tool: its ``table`` (title, columns, rows) on the terminal,
    and at ``out`` a JSON of the ``keys`` of ``cfg`` as ``settings``, then ``results``."""
    print_table(*table)
    payload = {"settings": {k: cfg[k] for k in keys}, **results}
    path = write_json_atomically(out, payload, strict=True)
    log.info("wrote %s", path)
    return path


def run_evaluate(cfg: DictConfig) -> tuple[list[dict[str, Any]], Path]:
    """``src/evaluate.py`` (conf/evaluate.yaml): score every source, print the table, write
    the JSON; return one row per source and the JSON's path."""
    validate_evaluate_config(cfg)  # every key, the device and `out`, before any work
    sources = expand_sources(cfg, DataSpec.of(cfg.data))
    specs = dict.fromkeys(s.data for s in sources)
    for spec in specs:  # each classifier now: a problem found after a first score would lose it
        check_classifier(
            str(cfg.data.root), cfg.classifier_path, cfg.classifier_dir, spec.name, spec.shape
        )
    references = {spec: reference(spec, cfg) for spec in specs}
    rows = [score(source, cfg, *references[source.data]) for source in sources]
    title = f"Sample quality against the real {cfg.real_split} split ({rows[0]['num_real']} images)"
    body = [[format(r[key], spec) for _, key, spec in COLUMNS] for r in rows]
    keys = ("real_split", "real_samples", "num_samples", "seed", "checkpoint")
    table = (title, [name for name, _, _ in COLUMNS], body)
    return rows, write_results(output_path(cfg), cfg, keys, table, results=rows)
