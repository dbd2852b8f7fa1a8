"""The in-memory data module on small IDX files made in a temp dir."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from capsgan.data import ImageDataModule, load_split
from capsgan.errors import DataError
from tests.conftest import make_idx_root


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_data_module_serves_scaled_batches(tiny_data_dir: Path, name: str) -> None:
    dm = ImageDataModule(name=name, root=str(tiny_data_dir), batch_size=32, download=False)
    dm.prepare_data()
    dm.setup("fit")
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (32, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (32,) and labels.max() < 10
    assert images.min() >= -1 and images.max() <= 1 and images.min() < 0 < images.max()
    assert len(dm.train_dataloader()) == 320 // 32  # drop_last for equal training batches
    assert sum(len(b[0]) for b in dm.val_dataloader()) == 160  # the test split, complete


def test_train_batches_are_shuffled_and_cover_the_set(tiny_data_dir: Path) -> None:
    dm = ImageDataModule(root=str(tiny_data_dir), batch_size=32, download=False)
    dm.setup()
    torch.manual_seed(0)
    first = torch.cat([b[1] for b in dm.train_dataloader()])
    torch.manual_seed(1)
    second = torch.cat([b[1] for b in dm.train_dataloader()])
    assert not torch.equal(first, second)
    assert torch.equal(first.sort().values, dm.train_set.labels.sort().values)


def test_subsets_limit_the_splits(tiny_data_dir: Path) -> None:
    dm = ImageDataModule(root=str(tiny_data_dir), train_subset=64, val_subset=16, download=False)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set)) == (64, 16)


def test_scaling_maps_uint8_range_to_minus_one_one(tiny_data_dir: Path) -> None:
    dm = ImageDataModule(root=str(tiny_data_dir), download=False)
    dm.setup()
    raw, _ = load_split("mnist", tiny_data_dir, train=True, download=False)
    torch.testing.assert_close(dm.train_set.images[:, 0], raw.float() / 127.5 - 1)


def test_missing_data_offline_says_what_to_put_where(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"MNIST[/\\]raw.*train-images-idx3-ubyte.*DATA_DIR"):
        load_split("mnist", tmp_path, train=True, download=False)


def test_data_errors_name_the_file(tmp_path: Path) -> None:
    root = make_idx_root(tmp_path / "data", n_train=32, n_test=16)
    raw = root / "MNIST" / "raw"
    (raw / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="train-labels-idx1-ubyte' is missing"):
        load_split("mnist", root, train=True, download=False)
    labels = raw / "t10k-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-3])
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte' is corrupt or truncated"):
        load_split("mnist", root, train=False, download=False)
