"""MNIST-family data sets held in memory as one tensor, scaled to [-1, 1].

torchvision reads (and, when online, downloads) the IDX files; after that the whole split
lives in one float tensor and a batch is one fancy-index into it, so the training loop
never touches PIL or per-sample Python.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets

from capsgan.errors import DataError

DATASETS: dict[str, type[datasets.MNIST]] = {
    "mnist": datasets.MNIST,
    "fashion_mnist": datasets.FashionMNIST,
}
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def default_data_dir() -> str:
    """The data root: ``$DATA_DIR`` or ``./data``."""
    return os.environ.get("DATA_DIR", "./data")


def load_split(name: str, root: str | Path, train: bool, download: bool) -> tuple[Tensor, Tensor]:
    """Read one split as (images uint8 (N, H, W), labels int64 (N,)), with clear errors."""
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; data.name must be one of {sorted(DATASETS)}")
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise DataError(
            f"the data root {str(root)!r} is a file, not a folder. Set DATA_DIR (or data.root) "
            "to a folder; torchvision keeps each data set in <root>/<DatasetName>/raw/."
        )
    cls = DATASETS[name]
    raw = root / cls.__name__ / "raw"
    bad = _bad_idx_file(raw, train, download)
    if bad:
        raise DataError(bad)
    try:
        ds = cls(str(root), train=train, download=download)
    except (AssertionError, ValueError, IndexError) as err:
        raise DataError(
            f"the {name} IDX files in {str(raw)!r} are corrupt or truncated ({err!r}). Delete "
            f"them and let torchvision download them again, or copy intact files there."
        ) from err
    except (RuntimeError, OSError) as err:
        if "shape" in str(err) or "invalid" in str(err):  # torch's view() on a short file
            raise DataError(
                f"the {name} IDX files in {str(raw)!r} are corrupt or truncated ({err}). Delete "
                "them and let torchvision download them again, or copy intact files there."
            ) from err
        how = "the download failed" if download else "download is off (data.download=false)"
        raise DataError(
            f"{name} was not found in {str(raw)!r} and {how}. Either run once with internet "
            f"access so torchvision can download it, or copy the four uncompressed IDX files "
            f"({', '.join(IDX_FILES)}) into {str(raw)!r}, or point DATA_DIR at a folder that "
            f"already has {cls.__name__}/raw/ (run with DATA_DIR=<that folder>)."
        ) from err
    return ds.data, ds.targets


IDX_ITEM_BYTES = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}


def idx_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete IDX file (its header's sizes against its length)."""
    try:
        with path.open("rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[:2] != b"\0\0" or head[2] not in IDX_ITEM_BYTES:
                return "it does not start with an IDX header"
            dims = f.read(4 * head[3])
        if len(dims) < 4 * head[3]:
            return "its header is cut short"
        shape = [int.from_bytes(dims[i : i + 4], "big") for i in range(0, len(dims), 4)]
        expected = 4 + len(dims) + math.prod(shape) * IDX_ITEM_BYTES[head[2]]
        size = path.stat().st_size
    except OSError as err:
        return f"it cannot be read ({err.strerror or err})"
    if size != expected:
        return f"it has {size} bytes but its header {tuple(shape)} says {expected}"
    return None


def _bad_idx_file(raw: Path, train: bool, download: bool) -> str | None:
    """A message naming the split's IDX file that is missing or corrupt, or None.

    Nothing is judged while torchvision may still download (a folder without any of the
    files, download on) or when the folder is absent (torchvision's own message then).
    """
    split = "train" if train else "t10k"
    files = [raw / f"{split}-images-idx3-ubyte", raw / f"{split}-labels-idx1-ubyte"]
    present = [p for p in files if p.exists()]
    if not raw.is_dir() or (download and len(present) < len(files)):
        return None
    fix = (
        "delete it and let torchvision download it again (data.download=true), or copy an "
        "intact file there"
    )
    for path in files:
        if not path.exists():
            if not present and not download:
                return None  # nothing there at all: the "not found" message below
            return (
                f"the data file {str(path)!r} is missing (the other files of {str(raw)!r} are "
                f"there). Copy it there (all four files: {', '.join(IDX_FILES)}), or set "
                "data.download=true to let torchvision fetch what is missing."
            )
        problem = idx_problem(path)
        if problem:
            return (
                f"the data file {str(path)!r} is corrupt or truncated: {problem}. To fix it, {fix}."
            )
    return None


def to_unit_range(images: Tensor) -> Tensor:
    """uint8 (N, H, W) or (N, C, H, W) in [0, 255] -> float (N, C, H, W) in [-1, 1]."""
    if images.dim() == 3:
        images = images.unsqueeze(1)
    return images.float().div_(127.5).sub_(1.0)


def batch_identity(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """collate_fn for :class:`InMemoryDataset`: its batches are already tensors."""
    return batch


class InMemoryDataset(Dataset):
    """Images and labels in two tensors; ``__getitems__`` serves a whole batch at once.

    The DataLoader's sampler still yields indices (so Lightning can swap in a
    DistributedSampler), but the fetch is one index_select per batch, not one
    ``__getitem__`` and a collate per sample.
    """

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        idx = torch.as_tensor(indices)
        return self.images.index_select(0, idx), self.labels.index_select(0, idx)


class ImageDataModule(L.LightningDataModule):
    """Train and validation loaders for MNIST or Fashion-MNIST.

    The validation split is the data set's official test split (10 000 images), which
    the GAN never trains on; the quality metrics compare generated images against it.

    Args:
        name: ``mnist`` or ``fashion_mnist``.
        root: data root holding ``<DatasetName>/raw/``; defaults to ``$DATA_DIR``.
        batch_size: images per batch (real images; the D step adds as many fakes).
        channels, image_size: the image shape the models are built for; checked
            against the files when they are loaded.
        train_subset, val_subset: use only the first N images (None: all).
        download: let torchvision download missing files.
        num_workers: DataLoader workers; 0 is fastest for an in-memory tensor.
    """

    def __init__(
        self,
        name: str = "mnist",
        root: str | None = None,
        batch_size: int = 64,
        channels: int = 1,
        image_size: int = 28,
        train_subset: int | None = None,
        val_subset: int | None = None,
        download: bool = True,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        self.name, self.root = name, root or default_data_dir()
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self.channels, self.image_size = channels, image_size
        self.train_subset, self.val_subset = train_subset, val_subset
        self.download = download
        self.train_set: InMemoryDataset | None = None
        self.val_set: InMemoryDataset | None = None

    def prepare_data(self) -> None:
        # runs on one process per node: the only place that may download
        for train in (True, False):
            load_split(self.name, self.root, train, self.download)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.train_set = self._load(train=True, subset=self.train_subset)
        self.val_set = self._load(train=False, subset=self.val_subset)

    def _load(self, train: bool, subset: int | None) -> InMemoryDataset:
        images, labels = load_split(self.name, self.root, train, download=False)
        images = to_unit_range(images[:subset] if subset else images)
        shape = (self.channels, self.image_size, self.image_size)
        if tuple(images.shape[1:]) != shape:
            raise DataError(
                f"{self.name} images have shape {tuple(images.shape[1:])}, but data.channels / "
                f"data.image_size say {shape}; fix those keys in conf/data/{self.name}.yaml"
            )
        return InMemoryDataset(images, labels[:subset] if subset else labels)

    def _loader(self, dataset: InMemoryDataset | None, shuffle: bool) -> DataLoader:
        assert dataset is not None, "call setup() first"
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=shuffle,  # equal-sized training batches keep BatchNorm statistics sane
            collate_fn=batch_identity,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        # Lightning's overfit_batches (debug=overfit) repeats the first batches: no shuffle
        overfit = self.trainer is not None and bool(self.trainer.overfit_batches)
        return self._loader(self.train_set, shuffle=not overfit)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)
