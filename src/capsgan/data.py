"""MNIST, Fashion-MNIST and CIFAR-10 held in memory as one tensor, scaled to [-1, 1].

torchvision reads (and, when online, downloads) the files: the IDX files of the MNIST
family, the pickled batches of CIFAR-10; after that the whole split lives in one float
tensor and a batch is one fancy-index into it, so the training loop never touches PIL or
per-sample Python.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset
from torchvision import datasets
from torchvision.datasets.mnist import SN3_PASCALVINCENT_TYPEMAP as IDX_TYPES

from capsgan.errors import DataError

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_FILES = (*CIFAR_TRAIN_FILES, "test_batch", "batches.meta")
IDX_KIND = "uncompressed IDX files"
CIFAR_KIND = "files of CIFAR-10's python version (cifar-10-python.tar.gz, extracted)"


class CIFAR10Copy(datasets.CIFAR10):
    """torchvision's CIFAR-10, reading a copy in its on-disk format whatever its checksums.

    torchvision refuses a ``cifar-10-batches-py/`` whose files' MD5 differ from the
    official ones (a re-pickled copy, a subset, the test suite's synthetic batches). This
    class reads such a copy with a warning instead; the structure and shapes are checked
    by :func:`load_split` (clear error when corrupt). A download is unchanged: torchvision
    verifies the archive's MD5 before extracting it, and only downloads when files are
    missing.
    """

    def _check_integrity(self) -> bool:
        folder = Path(self.root) / self.base_folder
        files = [*self.train_list, *self.test_list, [self.meta["filename"], self.meta["md5"]]]
        if not all((folder / name).is_file() for name, _ in files):
            return False  # torchvision downloads (download=True) or says "not found"
        differ = [name for name, md5 in files if _md5(folder / name) != md5]
        if differ:
            warnings.warn(
                f"the CIFAR-10 files {', '.join(differ)} in {str(folder)!r} are not the "
                "official ones (their MD5 checksums differ); reading them anyway. FIDs "
                "against this copy are not comparable with runs on the official data set.",
                UserWarning,
                stacklevel=2,
            )
        return True

    def _load_meta(self) -> None:
        # torchvision's own checks the official MD5 again; the structure is checked here
        with (Path(self.root) / self.base_folder / self.meta["filename"]).open("rb") as f:
            self.classes = list(pickle.load(f, encoding="latin1")[self.meta["key"]])
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}


def _md5(path: Path) -> str:
    """The file's MD5, computed once per (path, size, mtime) in a process."""
    stat = path.stat()
    return _md5_of(str(path), stat.st_size, stat.st_mtime_ns)


@functools.cache
def _md5_of(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


@dataclass(frozen=True)
class DataSet:
    """What :func:`load_split` knows of a data set: torchvision's class, the folder below
    the data root that holds its files, their names, and the images' native shape."""

    cls: type[datasets.VisionDataset]
    folder: str
    files: tuple[str, ...]
    kind: str  # what the files are, for the "not found" message
    channels: int
    image_size: int


DATASETS: dict[str, DataSet] = {
    "mnist": DataSet(datasets.MNIST, "MNIST/raw", IDX_FILES, IDX_KIND, 1, 28),
    "fashion_mnist": DataSet(datasets.FashionMNIST, "FashionMNIST/raw", IDX_FILES, IDX_KIND, 1, 28),
    "cifar10": DataSet(CIFAR10Copy, "cifar-10-batches-py", CIFAR_FILES, CIFAR_KIND, 3, 32),
}


def default_data_dir() -> str:
    return os.environ.get("DATA_DIR", "./data")


def load_split(name: str, root: str | Path, train: bool, download: bool) -> tuple[Tensor, Tensor]:
    """Read one split as (images uint8 (N, H, W) or (N, C, H, W), labels int64 (N,)), with
    clear errors."""
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; data.name must be one of {sorted(DATASETS)}")
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise DataError(
            f"the data root {str(root)!r} is a file, not a folder. Set DATA_DIR (or data.root) "
            "to a folder; torchvision keeps each data set in its own folder below it "
            "(MNIST/raw/, cifar-10-batches-py/, ...)."
        )
    spec = DATASETS[name]
    raw = root / spec.folder
    cifar = spec.cls is CIFAR10Copy
    bad = _bad_cifar_file(raw, download) if cifar else _bad_idx_file(raw, train, download)
    if bad:
        raise DataError(bad)
    try:
        ds = spec.cls(str(root), train=train, download=download)
    except Exception as err:  # a damaged pickle raises almost any exception
        refused = isinstance(err, (RuntimeError, OSError))  # "not found", a failed download
        if not cifar and (
            isinstance(err, (AssertionError, ValueError, IndexError))
            or (refused and ("shape" in str(err) or "invalid" in str(err)))  # torch's view()
        ):
            raise DataError(
                f"the {name} IDX files in {str(raw)!r} are corrupt or truncated ({err!r}). "
                "Delete them and let torchvision download them again, or copy intact files there."
            ) from err
        if cifar and not refused:
            raise DataError(_cifar_corrupt(raw, train, repr(err))) from err
        if not refused:
            raise
        how = "the download failed" if download else "download is off (data.download=false)"
        raise DataError(
            f"{name} was not found in {str(raw)!r} and {how}. Either run once with internet "
            f"access so torchvision can download it, or copy the {len(spec.files)} "
            f"{spec.kind} ({', '.join(spec.files)}) into {str(raw)!r}, or point DATA_DIR at "
            f"a folder that already has {spec.folder}/ (run with DATA_DIR=<that folder>)."
        ) from err
    if cifar:  # (N, 32, 32, 3) HWC numpy -> (N, 3, 32, 32)
        images, labels = torch.from_numpy(ds.data).permute(0, 3, 1, 2), torch.tensor(ds.targets)
        if len(labels) != len(images) or not bool(((labels >= 0) & (labels < 10)).all()):
            raise DataError(_cifar_corrupt(raw, train, f"{len(images)} images, labels wrong"))
        return images, labels
    return ds.data, ds.targets


def cifar_file_problem(path: Path) -> str | None:
    """Why ``path`` is not a CIFAR-10 batch (or ``batches.meta``) as torchvision reads it."""
    try:
        with path.open("rb") as f:
            entry = pickle.load(f, encoding="latin1")  # as torchvision reads it
    except Exception as err:  # truncated or not a pickle: EOFError, UnpicklingError, ...
        return f"it cannot be unpickled ({type(err).__name__}: {err})"
    if not isinstance(entry, dict):
        return f"it holds a {type(entry).__name__}, not a dict"
    if path.name == "batches.meta":
        return None if "label_names" in entry else "it has no 'label_names' entry"
    data, labels = entry.get("data"), entry.get("labels")
    if data is None or labels is None:
        return (
            f"it has no 'data' and 'labels' entries (its keys: {sorted(map(repr, entry))[:6]}; "
            "the official files' keys are Python 2 strings)"
        )
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape[1:] != (3072,):
        what = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else ""
        return f"its 'data' is a {what or type(data).__name__}, not a uint8 array (N, 3072)"
    if len(labels) != len(data):
        return f"it has {len(data)} images but {len(labels)} labels"
    if any(not 0 <= int(y) < 10 for y in labels):
        return "its labels are not all classes 0..9"
    return None


def _cifar_corrupt(folder: Path, train: bool, err: str) -> str:
    """The message for a CIFAR-10 split torchvision could not read: the first bad file."""
    names = [*(CIFAR_TRAIN_FILES if train else ("test_batch",)), "batches.meta"]
    for name in names:
        problem = cifar_file_problem(folder / name)
        if problem:
            return _corrupt_file(folder / name, problem)
    return (
        f"the CIFAR-10 files in {str(folder)!r} could not be read ({err}). Delete the folder "
        "and let torchvision download it again (data.download=true), or copy intact files there."
    )


def _bad_cifar_file(folder: Path, download: bool) -> str | None:
    """A message naming the CIFAR-10 files that are missing while others are there, or None
    (nothing there, or torchvision may still download: its own paths and messages)."""
    missing = [name for name in CIFAR_FILES if not (folder / name).is_file()]
    if download or not missing or len(missing) == len(CIFAR_FILES):
        return None
    return (
        f"the data files {', '.join(missing)} are missing from {str(folder)!r} (the other "
        f"files are there). Copy them there (all {len(CIFAR_FILES)} files: "
        f"{', '.join(CIFAR_FILES)}), or set data.download=true to let torchvision fetch "
        "what is missing."
    )


def idx_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete IDX file (its header's sizes against its length)."""
    try:
        with path.open("rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[:2] != b"\0\0" or head[2] not in IDX_TYPES:
                return "it does not start with an IDX header"
            dims = f.read(4 * head[3])
        if len(dims) < 4 * head[3]:
            return "its header is cut short"
        shape = [int.from_bytes(dims[i : i + 4], "big") for i in range(0, len(dims), 4)]
        expected = 4 + len(dims) + math.prod(shape) * IDX_TYPES[head[2]].itemsize
        size = path.stat().st_size
    except OSError as err:
        return f"it cannot be read ({err.strerror or err})"
    if size != expected:
        return f"it has {size} bytes but its header {tuple(shape)} says {expected}"
    return None


def _bad_idx_file(raw: Path, train: bool, download: bool) -> str | None:
    """A message naming the split's IDX file that is missing or corrupt, or None: also when
    none is there (torchvision's "not found" then) or torchvision may download the rest."""
    files = [raw / name for name in (IDX_FILES[:2] if train else IDX_FILES[2:])]
    present = [p for p in files if p.exists()]
    if not present or (download and len(present) < len(files)):
        return None
    for path in files:
        if not path.exists():
            return (
                f"the data file {str(path)!r} is missing (the other files of {str(raw)!r} are "
                f"there). Copy it there (all four files: {', '.join(IDX_FILES)}), or set "
                "data.download=true to let torchvision fetch what is missing."
            )
        problem = idx_problem(path)
        if problem:
            return _corrupt_file(path, problem)
    return None


def _corrupt_file(path: Path, problem: str) -> str:  # a CIFAR-10 batch or an IDX file
    return (
        f"the data file {str(path)!r} is corrupt or truncated: {problem}. To fix it, delete it "
        "and let torchvision download it again (data.download=true), or copy an intact file there."
    )


def to_unit_range(images: Tensor) -> Tensor:
    """uint8 (N, H, W) or (N, C, H, W) in [0, 255] -> float (N, C, H, W) in [-1, 1]."""
    if images.dim() == 3:
        images = images.unsqueeze(1)
    return images.float().div_(127.5).sub_(1.0)


class InMemoryDataset(TensorDataset):
    """Images and labels in two tensors; ``__getitems__`` serves a whole batch at once.

    The DataLoader's sampler still yields indices (so Lightning can swap in a
    DistributedSampler), but the fetch is one index_select per batch, not one
    ``__getitem__`` and a collate per sample.
    """

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        super().__init__(images, labels)
        self.images, self.labels = images, labels

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, ...]:
        idx = torch.as_tensor(indices)
        return tuple(t.index_select(0, idx) for t in self.tensors)


class ImageDataModule(L.LightningDataModule):
    """Train and validation loaders for MNIST, Fashion-MNIST or CIFAR-10.

    The validation split is the data set's official test split (10 000 images), which
    the GAN never trains on; the quality metrics compare generated images against it.

    Args:
        root: data root holding ``<DatasetName>/raw/`` (``cifar-10-batches-py/`` for
            CIFAR-10); defaults to ``$DATA_DIR``.
        batch_size: images per batch (real images; the D step adds as many fakes).
        channels, image_size: the image shape the models are built for; checked
            against the files when they are loaded. None: the data set's own (1x28x28
            for the MNIST family, 3x32x32 for CIFAR-10), for callers that know only
            the name (the classifier cache, the report's real-data floor).
        num_workers: DataLoader workers; 0 is fastest for an in-memory tensor.
    """

    def __init__(
        self,
        name: str = "mnist",
        root: str | None = None,
        batch_size: int = 64,
        channels: int | None = None,
        image_size: int | None = None,
        train_subset: int | None = None,
        val_subset: int | None = None,
        download: bool = True,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        self.name, self.root = name, root or default_data_dir()
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        native = DATASETS.get(name)  # None: unknown, load_split says so
        self.channels = channels or (native.channels if native else 1)
        self.image_size = image_size or (native.image_size if native else 28)
        self.train_subset, self.val_subset = train_subset, val_subset
        self.download = download
        self.train_set: InMemoryDataset | None = None
        self.val_set: InMemoryDataset | None = None

    def prepare_data(self) -> None:
        # runs on one process per node: the only place that may download
        for train in (True, False):
            load_split(self.name, self.root, train, self.download)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:  # loaded once, whatever the stage
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
            collate_fn=tuple,  # InMemoryDataset.__getitems__ gives the batch's two tensors
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
