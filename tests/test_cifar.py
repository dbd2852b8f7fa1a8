"""CIFAR-10 (data=cifar10) on a tiny synthetic copy in torchvision's real on-disk format.

The real data cannot be downloaded here, so the tests write ``cifar-10-batches-py/`` as
the official archive has it: Python-2-style pickles (dict keys are py2 ``str``, which
torchvision's ``encoding="latin1"`` turns into ``"data"``, ``"labels"``), ``data`` a uint8
array (N, 3072) of channel-major 32x32 RGB images, ``labels`` a list of ints, and
``batches.meta`` with ``label_names``. Only the sizes differ, and so the MD5s.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

from capsgan.data import CIFAR_FILES, ImageDataModule, load_split
from capsgan.errors import DataError

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class Py2Str(str):
    """A dict key pickled as a Python 2 ``str`` (SHORT_BINSTRING), as in the official files."""


class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler: its dispatch table is open
    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: Py2Str) -> None:
        raw = obj.encode("latin1")
        self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        self.memoize(obj)

    dispatch[Py2Str] = save_py2_str


def write_batch(path: Path, entry: dict) -> None:
    with path.open("wb") as f:
        _Py2Pickler(f, protocol=2).dump({Py2Str(k): v for k, v in entry.items()})


def synthetic_cifar(n: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """Class-dependent colour blobs plus noise, (n, 3072) uint8 channel-major, and labels."""
    rng = np.random.default_rng(seed)
    templates = np.random.default_rng(0).random((10, 3, 8, 8)) * 220.0  # one pattern per class
    templates = templates.repeat(4, axis=2).repeat(4, axis=3)  # (10, 3, 32, 32)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    images = np.clip(templates[labels] + rng.normal(0, 20, (n, 3, 32, 32)), 0, 255)
    return images.astype(np.uint8).reshape(n, 3072), [int(y) for y in labels]


def make_cifar_root(root: Path, per_batch: int = 64, n_test: int = 96) -> Path:
    """A data root with a tiny CIFAR-10 (5 x ``per_batch`` train, ``n_test`` test images)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        data, labels = synthetic_cifar(per_batch, seed=i)
        entry = {"batch_label": "training batch", "data": data, "labels": labels}
        write_batch(folder / f"data_batch_{i}", entry)
    data, labels = synthetic_cifar(n_test, seed=9)
    entry = {"batch_label": "testing batch", "data": data, "labels": labels}
    write_batch(folder / "test_batch", entry)
    write_batch(folder / "batches.meta", {"label_names": CLASSES, "num_vis": 3072})
    return root


@pytest.fixture
def cifar_root(tmp_path: Path) -> Path:
    return make_cifar_root(tmp_path / "data")


def test_a_synthetic_copy_loads_as_rgb_in_unit_range(cifar_root: Path) -> None:
    with pytest.warns(UserWarning, match=r"not the official ones.*MD5"):
        images, labels = load_split("cifar10", cifar_root, train=True, download=False)
    assert images.shape == (320, 3, 32, 32) and images.dtype == torch.uint8
    # the channel-major rows of the file, pixel for pixel: no HWC/CHW mix-up
    data, first_labels = synthetic_cifar(64, seed=1)
    assert torch.equal(images[:64], torch.from_numpy(data.reshape(64, 3, 32, 32)))
    assert labels[:64].tolist() == first_labels
    dm = ImageDataModule(name="cifar10", root=str(cifar_root), batch_size=32, download=False)
    assert (dm.channels, dm.image_size) == (3, 32)  # the data set's own shape when not given
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dm.prepare_data()
        dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 3, 32, 32) and y.shape == (32,)
    assert x.min() >= -1 and x.max() <= 1 and x.min() < 0 < x.max()
    assert len(dm.val_set) == 96


def test_the_data_config_declares_three_channels_of_32px() -> None:
    from tests.conftest import compose_train_cfg

    cfg = compose_train_cfg(["data=cifar10"])
    assert (cfg.data.name, cfg.data.channels, cfg.data.image_size) == ("cifar10", 3, 32)


def test_missing_data_offline_says_what_to_put_where(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"cifar-10-batches-py.*data_batch_1.*DATA_DIR"):
        load_split("cifar10", tmp_path, train=True, download=False)


def test_a_missing_file_is_named(cifar_root: Path) -> None:
    (cifar_root / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataError, match=r"test_batch are missing.*download=true"):
        load_split("cifar10", cifar_root, train=True, download=False)


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[:500]), "cannot be unpickled"),
        (
            lambda p: write_batch(p, {"data": np.zeros((4, 1024), np.uint8), "labels": [0] * 4}),
            r"shape \(4, 1024\)",
        ),
        (
            lambda p: write_batch(p, {"data": np.zeros((4, 3072), np.uint8), "labels": [0] * 3}),
            "4 images but 3 labels",
        ),
    ],
    ids=["truncated", "wrong-shape", "label-count"],
)
def test_a_corrupt_batch_is_named_with_the_fix(cifar_root: Path, damage, problem: str) -> None:
    damage(cifar_root / "cifar-10-batches-py" / "data_batch_3")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the checksum warning
        with pytest.raises(DataError, match=rf"data_batch_3'? is corrupt.*{problem}.*download"):
            load_split("cifar10", cifar_root, train=True, download=False)
        # the test split does not read the damaged batch
        images, _ = load_split("cifar10", cifar_root, train=False, download=False)
    assert len(images) == 96


def test_official_checksums_pass_without_a_warning(cifar_root: Path, monkeypatch) -> None:
    """The warning is about the checksum, not the copy: files with the MD5s torchvision
    expects load silently."""
    from torchvision import datasets

    from capsgan.data import _md5

    folder = cifar_root / "cifar-10-batches-py"
    sums = {name: _md5(folder / name) for name in CIFAR_FILES}
    cls = datasets.CIFAR10
    monkeypatch.setattr(cls, "train_list", [[n, sums[n]] for n, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [["test_batch", sums["test_batch"]]])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": sums["batches.meta"]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        images, _ = load_split("cifar10", cifar_root, train=False, download=False)
    assert len(images) == 96


def test_the_rgb_classifier_is_a_resnet_that_learns_the_synthetic_classes(cifar_root: Path) -> None:
    """The FID classifier for RGB: residual blocks, trained and cached like the digit one,
    and reloaded from its file to the same outputs."""
    from capsgan.classifier import fit_classifier, load_classifier, save_classifier

    dm = ImageDataModule(name="cifar10", root=str(cifar_root), batch_size=32, download=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, info = fit_classifier(dm, epochs=4, accelerator="cpu")
    assert info["spec"]["arch"] == "resnet" and info["spec"]["in_channels"] == 3
    assert any(type(m).__name__ == "ResidualBlock" for m in model.modules())
    assert info["test_accuracy"] >= 0.5  # 10 colour patterns: chance is 0.1
    path = save_classifier(model, cifar_root / "classifiers", "cifar10", info)
    again = load_classifier(path)
    x = dm.val_set.images[:8]
    assert again.input_shape == (3, 32, 32)
    torch.testing.assert_close(again(x), model(x))


def test_two_epochs_log_the_metrics_and_report_on_the_synthetic_copy(tmp_path: Path, monkeypatch):
    """experiment=cifar10 end to end: two short epochs with the sample-quality metrics (their
    classifier trained on first use, on the synthetic copy), RGB sample grids, a report."""
    from omegaconf import OmegaConf, open_dict
    from PIL import Image

    from capsgan.report import write_report
    from capsgan.training import train
    from tests.conftest import TINY_OVERRIDES, compose_train_cfg

    root = make_cifar_root(tmp_path / "data")
    monkeypatch.setenv("DATA_DIR", str(root))  # the report's real-data floor reads it
    run = tmp_path / "sweep" / "0"
    cfg = compose_train_cfg(
        [*TINY_OVERRIDES, "experiment=cifar10", "trainer.max_epochs=2",
         "trainer.limit_train_batches=3", "trainer.limit_val_batches=1",
         "trainer.num_sanity_val_steps=0"]
    )  # fmt: skip
    with open_dict(cfg):
        cfg.paths.output_dir = str(run)
        cfg.data.root = str(root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the synthetic copy's checksums
        metrics = train(cfg)
    for key in ("val/fid", "val/kid", "val/is", "train/g_loss"):
        assert key in metrics and np.isfinite(metrics[key]), key
    cached = root / "classifiers" / "cifar10.pt"
    assert cached.is_file() and '"arch": "resnet"' in cached.with_suffix(".json").read_text()
    grids = sorted((run / "samples").glob("epoch_*.png"))
    assert len(grids) == 2 and Image.open(grids[-1]).mode == "RGB"
    # what a sweep job leaves for the report: its config and its Hydra choices
    (run / ".hydra").mkdir()
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    choices = {"discriminator": "cnn32", "generator": "dcgan32", "data": "cifar10"}
    OmegaConf.save({"hydra": {"runtime": {"choices": choices}}}, run / ".hydra" / "hydra.yaml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = write_report([tmp_path / "sweep"], baseline="cnn32")  # a lone arm is its own
    text = report.read_text()
    assert "1 runs in 1 arms" in text and "classifier" in text
    assert "not measured" not in text.split("floor", 1)[-1].splitlines()[0]  # the RGB floor
