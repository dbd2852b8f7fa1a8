"""The reference digit classifier behind the sample-quality metrics.

Inception-v3 weights cannot be downloaded here and mean little for 28x28 grey digits, so
FID, KID and the Inception Score are computed with a small CNN trained by the project on
the same data set (the usual practice of MNIST GAN papers, e.g. the "domain-specific"
classifier of Lucic et al. 2018, "Are GANs Created Equal?"). Its penultimate layer gives
the features of FID/KID, its logits the class probabilities of IS and mode coverage.

One classifier per data set is cached as ``<dir>/<name>.pt`` (weights and architecture)
plus ``<dir>/<name>.json`` (test accuracy, training time), ``<dir>`` as
:func:`resolve_classifier_dir` chooses it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from capsgan.atomic_write import write_atomically, write_json_atomically
from capsgan.data import ImageDataModule
from capsgan.errors import ConfigError, brief
from capsgan.locks import classifier_lock

log = logging.getLogger(__name__)

FALLBACK_DIR = Path("~/.cache/capsgan/classifiers")
_NOTED_FALLBACKS: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class ClassifierSpec:
    """The architecture, saved beside the weights so a file rebuilds its own network."""

    in_channels: int = 1
    image_size: int = 28
    channels: tuple[int, ...] = (32, 64)
    hidden: int = 128
    num_classes: int = 10
    dropout: float = 0.25
    arch: str = "digit"  # "digit" (grey digits/clothes) or "resnet" (RGB); files before it: digit

    def __post_init__(self) -> None:
        if self.arch not in ("digit", "resnet"):
            raise ValueError(f"classifier arch must be 'digit' or 'resnet', got {self.arch!r}")
        # the digit CNN halves the image per block (the residual trunk pools adaptively)
        if self.arch == "digit" and self.image_size // 2 ** len(self.channels) < 1:
            raise ValueError(
                f"`channels` has {len(self.channels)} pooling blocks, which shrink a "
                f"{self.image_size}px image to nothing."
            )


def default_arch(in_channels: int) -> str:
    """The reference classifier's trunk for images of ``in_channels``: the digit CNN for
    grey images (the cached MNIST / Fashion-MNIST classifiers), residual blocks for RGB."""
    return "resnet" if in_channels == 3 else "digit"


def conv_bn_relu(in_ch: int, out_ch: int, stride: int = 1) -> list[nn.Module]:
    """conv3x3 (padding 1, no bias: the BatchNorm has one)-BN-ReLU."""
    return [
        nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    ]


class ResidualBlock(nn.Module):
    """He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016), the basic block
    with downsampling (each block of the trunk halves the image): conv3x3(stride 2)-BN-ReLU-
    conv3x3-BN plus the input through a 1x1 stride-2 conv (projection shortcut), then ReLU."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *conv_bn_relu(in_ch, out_ch, 2),
            nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        )
        self.skip = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 1, 2, bias=False), nn.BatchNorm2d(out_ch)
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.body(x) + self.skip(x))  # (B, out_ch, H / 2, W / 2)


class DigitClassifier(nn.Module):
    """The reference classifier. ``arch="digit"``, a small VGG-style CNN: [conv3x3-BN-ReLU-
    maxpool] per entry of ``channels``, then fc(hidden)-ReLU (the features) -> dropout ->
    fc(num_classes) (the logits).

    With the default (32, 64) channels: 1x28x28 -> 32x14x14 -> 64x7x7 -> 128 -> 10,
    about 4 M multiply-adds per image, so it trains to 99 % on MNIST in minutes on a CPU.
    Inputs are images in [-1, 1] like the GAN's.

    ``arch="resnet"`` (RGB, CIFAR-10) has a conv3x3 stem (16 channels), a stride-2
    :class:`ResidualBlock` per entry of ``channels`` and global average pooling instead,
    then the same fc(hidden) features and head. With (32, 64): 3x32x32 -> 16x32x32 ->
    32x16x16 -> 64x8x8 -> 64 -> 128 -> 10, about 8 M multiply-adds.
    """

    def __init__(self, spec: ClassifierSpec | None = None) -> None:
        super().__init__()
        self.spec = spec = spec or ClassifierSpec()
        chs = spec.channels
        if spec.arch == "resnet":
            layers = conv_bn_relu(spec.in_channels, 16)
            layers += [ResidualBlock(i, o) for i, o in zip([16, *chs[:-1]], chs, strict=True)]
            layers.append(nn.AdaptiveAvgPool2d(1))
            flat = chs[-1]
        else:
            layers = []
            for in_ch, ch in zip([spec.in_channels, *chs[:-1]], chs, strict=True):
                layers += [*conv_bn_relu(in_ch, ch), nn.MaxPool2d(2)]
            flat = chs[-1] * (spec.image_size // 2 ** len(chs)) ** 2
        self.conv = nn.Sequential(*layers)  # (B, C, H, W) -> (B, ch[-1], H/2^k, W/2^k)
        # (B, hidden), then (B, num_classes)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(flat, spec.hidden), nn.ReLU())
        self.head = nn.Sequential(
            nn.Dropout(spec.dropout), nn.Linear(spec.hidden, spec.num_classes)
        )
        self.num_features = spec.hidden
        self.num_classes = spec.num_classes
        self.dataset: str | None = None  # the data set it was trained on, set when loaded

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.spec.in_channels, self.spec.image_size, self.spec.image_size)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate-layer activations (B, hidden), the FID/KID feature space."""
        return self.fc(self.conv(x))

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (B, num_classes)."""
        return self.head(self.features(x))


class ClassifierModule(L.LightningModule):
    """Cross-entropy training of a :class:`DigitClassifier`: Adam with a one-cycle LR,
    which reaches the target accuracies in a few epochs."""

    def __init__(self, model: DigitClassifier, lr: float = 2e-3, weight_decay: float = 1e-4):
        super().__init__()
        self.model, self.lr, self.weight_decay = model, lr, weight_decay
        self.test_acc = MulticlassAccuracy(num_classes=model.num_classes, average="micro")

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        loss = F.cross_entropy(self.model(images), labels)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, labels = batch
        self.test_acc(self.model(images), labels)
        self.log("test/acc", self.test_acc, on_epoch=True)

    def configure_optimizers(self) -> dict[str, Any]:
        opt = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=self.lr, total_steps=int(self.trainer.estimated_stepping_batches)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


# -- cache files -----------------------------------------------------------------------


def weights_path(directory: str | Path, name: str) -> Path:
    return Path(directory) / f"{name}.pt"


def resolve_classifier_dir(data_root: str | Path, configured: str | Path | None, name: str) -> Path:
    """Where the classifier of data set ``name`` is (or will be) cached.

    ``configured`` (``metrics.classifier_dir``) wins when set. Otherwise
    ``<data root>/classifiers`` when it already holds the weights or is writable, else
    ``~/.cache/capsgan/classifiers`` with a logged note: a read-only data root never
    fails a run.
    """
    if configured:
        return Path(configured).expanduser()
    primary = Path(data_root).expanduser() / "classifiers"
    if weights_path(primary, name).exists():
        return primary
    # writable: the nearest folder that exists takes a file; one whose permission bits forbid
    # writing counts as read-only even for root (who could write anyway), so a shared,
    # read-only data root stays untouched
    existing = next(p for p in (primary, *primary.parents) if p.exists())
    with contextlib.suppress(OSError):  # not writable: the fallback below
        if existing.is_dir() and existing.stat().st_mode & 0o222:
            tempfile.NamedTemporaryFile(dir=existing).close()
            return primary
    fallback = FALLBACK_DIR.expanduser()
    if (str(data_root), name) not in _NOTED_FALLBACKS:  # said once per process, not per caller
        _NOTED_FALLBACKS.add((str(data_root), name))
        log.info(
            "The data root %s is read-only; the %s classifier is cached in %s instead "
            "(set metrics.classifier_dir to choose another folder).",
            data_root,
            name,
            fallback,
        )
    return fallback


def save_classifier(model: DigitClassifier, directory: str | Path, name: str, info: dict) -> Path:
    """Write ``<name>.pt`` (spec + weights) and ``<name>.json`` (``info``); return the .pt."""
    path = weights_path(Path(directory).expanduser(), name)
    # the data set is kept in the file: two data sets of one image shape (MNIST and
    # Fashion-MNIST) are told apart only by it, and the wrong one gives FIDs 2-3x off
    state = {"spec": asdict(model.spec), "state_dict": model.state_dict(), "dataset": name}
    write_atomically(path, lambda f: torch.save(state, f))
    write_json_atomically(path.with_suffix(".json"), info)
    return path


def load_classifier(path: str | Path, cached: bool = False) -> DigitClassifier:
    """Rebuild a classifier saved by :func:`save_classifier`, in eval mode.

    A file that is not one (truncated, or another program's) is a :class:`ConfigError`
    naming it; ``cached``: the file is the data set's cache, which the fix deletes.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"no classifier weights at {str(path)!r}. Train them with `python "
            "src/train_classifier.py data=<data set>`, or leave metrics.classifier_path "
            "null so the metrics callback finds or trains the data set's classifier itself."
        )
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        spec = saved["spec"]
        model = DigitClassifier(ClassifierSpec(**{**spec, "channels": tuple(spec["channels"])}))
        model.load_state_dict(saved["state_dict"])
        model.dataset = saved.get("dataset") or _dataset_beside(path)
    except Exception as err:  # truncated zip, pickle error, missing keys, wrong shapes
        fix = (
            "It is the cached classifier of the data set: delete it (and the .json beside it) "
            "and the next run trains it again (a few CPU minutes), or run `python "
            "src/train_classifier.py data=<data set>`."
            if cached
            else "Pass a classifier written by `python src/train_classifier.py` "
            "(<classifier_dir>/<data set>.pt) as metrics.classifier_path, or null to use the "
            "data set's cached one."
        )
        raise ConfigError(
            f"{str(path)!r} is not a readable classifier of this framework ({brief(err)}). {fix}"
        ) from err
    return model.eval()


def _dataset_beside(path: Path) -> str | None:
    """The data set recorded in the ``.json`` beside a classifier written before the
    ``.pt`` kept it; None when there is none."""
    try:
        info = json.loads(path.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return None
    return info.get("dataset") if isinstance(info, dict) else None


def check_classifier_fits(
    model: DigitClassifier, name: str, shape: tuple[int, int, int], key: str
) -> None:
    """Refuse a classifier made for other images: another image shape, or another data set
    of the same shape (an MNIST classifier scoring Fashion-MNIST gives FIDs 2-3x off, with
    no error). ``key``: the setting that chose the file, for the fix."""
    if model.input_shape != tuple(shape):
        problem = f"takes images of shape {model.input_shape} but the {name} images are {shape}"
    elif model.dataset not in (None, name):
        problem = f"was trained on {model.dataset}, but the images are {name}"
    else:
        if model.dataset is None:
            log.warning(
                "the classifier given as %s records no data set; make sure it was trained on %s",
                key,
                name,
            )
        return
    raise ConfigError(
        f"the quality-metric classifier ({key}) {problem}: its FID, KID, IS and mode coverage "
        f"would be measured in the wrong feature space. Set {key} to a classifier trained on "
        f"{name} (`python src/train_classifier.py data={name}`), or null to use (or train) the "
        "data set's own."
    )


# -- training --------------------------------------------------------------------------


def fit_classifier(
    datamodule: ImageDataModule,
    epochs: int = 3,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    channels: Sequence[int] = (32, 64),
    hidden: int = 128,
    dropout: float = 0.25,
    seed: int = 0,
    accelerator: str = "auto",
    enable_progress_bar: bool = False,
) -> tuple[DigitClassifier, dict[str, Any]]:
    """Train a classifier on the data module's training split, test it on its held-out
    split; return the model (eval mode) and an info dict with ``test_accuracy`` and
    ``train_seconds``.

    The global RNG state is restored afterwards, so a GAN run that trains its classifier
    on first use draws the same random numbers as one that found it cached.
    """
    datamodule.prepare_data()
    datamodule.setup("fit")
    assert datamodule.train_set is not None and datamodule.val_set is not None
    spec = ClassifierSpec(
        in_channels=datamodule.channels,
        image_size=datamodule.image_size,
        channels=tuple(channels),
        hidden=hidden,
        num_classes=int(datamodule.train_set.labels.max()) + 1,
        dropout=dropout,
        arch=default_arch(datamodule.channels),  # RGB: residual blocks
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = DigitClassifier(spec)
        module = ClassifierModule(model, lr=lr, weight_decay=weight_decay)
        trainer = L.Trainer(
            max_epochs=epochs,
            accelerator=accelerator,
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=enable_progress_bar,
        )
        start = time.perf_counter()
        trainer.fit(module, train_dataloaders=datamodule.train_dataloader())
        seconds = time.perf_counter() - start
        (result,) = trainer.test(module, dataloaders=datamodule.val_dataloader(), verbose=False)
    model = model.cpu().eval()
    model.dataset = datamodule.name
    info = {
        "dataset": datamodule.name,
        "test_accuracy": round(float(result["test/acc"]), 5),
        "train_seconds": round(seconds, 1),
        "epochs": epochs,
        "train_images": len(datamodule.train_set),
        "test_images": len(datamodule.val_set),
        "spec": asdict(spec),
        "lr": lr,
        "batch_size": datamodule.batch_size,
        "seed": seed,
        "torch_threads": torch.get_num_threads(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return model, info


def train_and_save(
    datamodule: ImageDataModule, directory: str | Path, **fit_kwargs: Any
) -> tuple[DigitClassifier, dict[str, Any]]:
    """:func:`fit_classifier`, then cache the result as ``<directory>/<name>.pt/.json``."""
    name = datamodule.name
    log.info("Training the %s reference classifier (cached in %s) ...", name, directory)
    model, info = fit_classifier(datamodule, **fit_kwargs)
    path = save_classifier(model, directory, name, info)
    log.info(
        "The %s classifier reached %.2f %% test accuracy in %.0f s; saved to %s",
        name,
        100 * info["test_accuracy"],
        info["train_seconds"],
        path,
    )
    return model, info


def load_or_train(
    name: str, data_root: str | Path, directory: str | Path | None = None
) -> DigitClassifier:
    """The cached classifier of data set ``name``; trained (default settings) and cached
    first when missing, holding the cache file's lock: parallel sweep jobs train it once,
    the others wait and then load it (:func:`capsgan.locks.classifier_lock`)."""
    directory = resolve_classifier_dir(data_root, directory, name)
    path = weights_path(directory, name)
    with contextlib.nullcontext() if path.exists() else classifier_lock(path):
        if path.exists():  # cached, or trained by another job while this one waited
            return load_classifier(path, cached=True)
        log.warning(
            "First use of the %s sample-quality metrics (val/fid, val/kid, val/is, modes): their "
            "reference digit classifier is not cached at %s yet: training it now, once per "
            "data set (3 epochs: about 1.5 minutes on one CPU core, 82 s measured for MNIST; "
            "seconds on a GPU). Later runs load it from there. To train it ahead of time: "
            "python src/train_classifier.py data=%s",
            name,
            path,
            name,
        )
        datamodule = ImageDataModule(name=name, root=str(data_root), batch_size=128, download=False)
        # a progress bar where someone watches; none in the log files of sweep jobs
        model, _ = train_and_save(datamodule, directory, enable_progress_bar=sys.stderr.isatty())
        return model
