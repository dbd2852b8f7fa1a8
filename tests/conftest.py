"""Shared fixtures: tiny IDX data sets written to a temp dir, the train config shrunk to
seconds on CPU, and the broken input files of the error tests."""

from __future__ import annotations

import shutil
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write an uint8 array in the MNIST IDX format (magic 0x08, big-endian sizes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += b"".join(struct.pack(">I", n) for n in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class-dependent 28x28 patterns plus noise: learnable, yet no real data needed."""
    rng = np.random.default_rng(seed)
    templates = np.random.default_rng(0).random((10, 7, 7)) > 0.6  # one blob layout per class
    templates = templates.repeat(4, axis=1).repeat(4, axis=2).astype(np.float32) * 200.0
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    images = templates[labels] + rng.normal(0, 20, (n, 28, 28))
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.uint8)


def make_idx_root(root: Path, n_train: int = 320, n_test: int = 160) -> Path:
    for folder in ("MNIST", "FashionMNIST"):
        raw = root / folder / "raw"
        for split, n, seed in (("train", n_train, 1), ("t10k", n_test, 2)):
            images, labels = synthetic_digits(n, seed)
            write_idx(raw / f"{split}-images-idx3-ubyte", images)
            write_idx(raw / f"{split}-labels-idx1-ubyte", labels)
    return root


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the ``gpu``-marked tests, saying why, where torch sees no CUDA GPU (CI)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(
        reason=f"needs a CUDA GPU; torch {torch.__version__} sees none here "
        "(on a GPU machine: bash docs/performance/gpu_check.sh)"
    )
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for a test module (``pytestmark = pytest.mark.usefixtures(
    "one_thread")``): tiny models gain nothing from threads, and on a small shared CPU two
    threads per process contend and can run 10x slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train_toy_run(folder: Path, data_root: Path, *overrides: str) -> Path:
    """Train a toy CNN GAN (no quality metrics) into ``folder`` and save its config where
    Hydra would (``.hydra/config.yaml``): a run folder for the commands that read one."""
    cfg = compose_train_cfg(
        [*TINY_OVERRIDES, "discriminator=cnn", "trainer.limit_val_batches=1",
         "~callbacks.sample_quality", "callbacks.model_checkpoint.monitor=null", *overrides]
    )  # fmt: skip
    with open_dict(cfg):
        cfg.paths.output_dir = str(folder)
        cfg.data.root = str(data_root)
    from capsgan.training import train  # imported late: conftest stays light

    train(cfg)
    (folder / ".hydra").mkdir()
    OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")
    return folder


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root with small synthetic MNIST and FashionMNIST in torchvision's raw layout."""
    return make_idx_root(tmp_path_factory.mktemp("data"))


TINY_CAPSULES = {"conv_channels": 8, "primary_maps": 2, "out_dim": 4, "head_hidden": 16}
TINY_OVERRIDES = [
    "data.batch_size=16",
    "data.download=false",
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "metrics.num_samples=64",  # generated images per quality evaluation (default 10 000)
]


def compose_train_cfg(overrides: list[str] | None = None) -> DictConfig:
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return compose(config_name="train", overrides=overrides or [])


@pytest.fixture
def make_cfg(tiny_data_dir: Path, tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose the train config shrunk to seconds on CPU, writing into ``tmp_path``.

    The default discriminator is ``capsule_small``, shrunk further to toy sizes unless an
    override sets a ``discriminator.`` key itself.
    """

    def make(*overrides: str) -> DictConfig:
        cfg = compose_train_cfg([*TINY_OVERRIDES, "discriminator=capsule_small", *overrides])
        with open_dict(cfg):
            touched = any(o.startswith("discriminator.") for o in overrides)
            if cfg.discriminator._target_.endswith("CapsuleDiscriminator") and not touched:
                cfg.discriminator.update(TINY_CAPSULES)
            cfg.paths.output_dir = str(tmp_path / "run")
            cfg.data.root = str(tiny_data_dir)
        return cfg

    return make


@pytest.fixture(scope="session")
def readme_sweep(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The README's first command, ``train.py discriminator=capsule_small -m
    lr=1e-4,2e-4``, at toy sizes in a subprocess, run once for every test that reads a
    two-job sweep: ``(sweep folder, the process with stdout and stderr interleaved)``."""
    import os
    import subprocess
    import sys

    tmp = tmp_path_factory.mktemp("readme_sweep")
    sweep = tmp / "sweep"
    cmd = [
        sys.executable, str(ROOT / "src" / "train.py"),
        "discriminator=capsule_small",  # an override before -m, as in the README's command
        "-m", "lr=1e-4,2e-4", *TINY_OVERRIDES,
        *(f"discriminator.{k}={v}" for k, v in TINY_CAPSULES.items()),
        "trainer.limit_train_batches=3", "trainer.limit_val_batches=1",
        f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    env = {**os.environ, "DATA_DIR": str(tiny_data_dir), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        cmd, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=600,
    )  # fmt: skip
    return sweep, proc


# No FID network, no per-epoch validation sweep: for the tests of the plumbing.
FAST = [
    "~callbacks.sample_quality",
    "callbacks.model_checkpoint.monitor=null",
    "optimized_metric=null",
    "trainer.limit_val_batches=1",
]


@pytest.fixture
def fast_cfg(make_cfg: Callable[..., DictConfig]) -> Callable[..., DictConfig]:
    """``make_cfg`` with ``FAST``: a run of the default length without the quality metrics."""

    def make(*overrides: str):
        return make_cfg(*FAST, *overrides)

    return make


@pytest.fixture
def two_batch_cfg(make_cfg: Callable[..., DictConfig]) -> Callable[..., DictConfig]:
    """``fast_cfg`` with two training batches an epoch."""

    def make(*overrides: str):
        return make_cfg(*FAST, "trainer.limit_train_batches=2", *overrides)

    return make


@pytest.fixture(scope="session")
def inputs(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A toy run and the broken files a careless or unlucky user has, by placeholder ({run},
    {text_npz}, ...): the paths the error battery's commands name."""
    from capsgan.classifier import ClassifierSpec, DigitClassifier, save_classifier

    base = tmp_path_factory.mktemp("inputs")
    run_dir = train_toy_run(base / "run", tiny_data_dir, "trainer.limit_train_batches=2")
    truncated = base / "truncated"
    shutil.copytree(run_dir, truncated)
    last = truncated / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:2000])  # a kill or a full disk cut it short
    no_config = base / "loose" / "gan.ckpt"
    no_config.parent.mkdir()
    shutil.copy(run_dir / "checkpoints" / "last.ckpt", no_config)
    bad_config = base / "bad_config"
    shutil.copytree(run_dir, bad_config)
    (bad_config / ".hydra" / "config.yaml").write_bytes(b"\x00\xff: [unclosed")
    (base / "text.npz").write_text("these are not images\n")
    np.save(base / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    shutil.move(base / "objects.npy", base / "objects.npz")
    np.savez(base / "good.npz", images=np.zeros((8, 28, 28), np.uint8))
    pngs = base / "pngs"
    pngs.mkdir()
    from PIL import Image

    Image.new("L", (28, 28)).save(pngs / "a.png")
    (pngs / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (base / "text.ckpt").write_text("not a checkpoint\n")
    grids = base / "grids"
    (grids / "samples").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(grids / "samples" / "epoch_0000.png")
    (grids / "samples" / "epoch_0001.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    junk = base / "junk_overrides"
    (junk / ".hydra").mkdir(parents=True)
    (junk / ".hydra" / "overrides.yaml").write_bytes(b"\x00\xff: [unclosed")
    torch.manual_seed(0)
    fashion = save_classifier(
        DigitClassifier(ClassifierSpec(channels=(4, 8), hidden=8)).eval(),
        base / "clf",
        "fashion_mnist",
        {},
    )
    return {
        "data": str(tiny_data_dir),
        "run": str(run_dir),
        "ckpt": str(run_dir / "checkpoints" / "last.ckpt"),
        "truncated": str(truncated),
        "no_config": str(no_config),
        "bad_config": str(bad_config / "checkpoints" / "last.ckpt"),
        "text_npz": str(base / "text.npz"),
        "object_npz": str(base / "objects.npz"),
        "good_npz": str(base / "good.npz"),
        "pngs": str(pngs),
        "text_ckpt": str(base / "text.ckpt"),
        "fashion_clf": str(fashion),
        "missing": str(base / "no_such_thing"),
        "broken_grids": str(grids),
        "junk_overrides": str(junk),
    }
