"""Sample quality: classifier-based FID, KID, Inception Score, precision / recall and mode
coverage, computed by :class:`SampleQualityCallback` at every validation on generated
samples against the held-out real images (docs/metrics.md).

FID, KID and IS are torchmetrics' with the project's digit classifier
(:mod:`capsgan.classifier`) as ``feature`` module instead of Inception-v3. Every metric is
fed uint8 images in [0, 255], what a PNG of the samples holds (torchmetrics' IS would turn
floats into ``(x * 255).byte()``); :class:`ClassifierFeatures` maps them back to [-1, 1].
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from typing import Literal, NamedTuple

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.image import (
    FrechetInceptionDistance,
    InceptionScore,
    KernelInceptionDistance,
)
from torchmetrics.utilities import dim_zero_cat

from capsgan.classifier import (
    DigitClassifier,
    check_classifier_fits,
    load_classifier,
    load_or_train,
    resolve_classifier_dir,
    weights_path,
)
from capsgan.data import ImageDataModule, to_unit_range
from capsgan.errors import ConfigError

log = logging.getLogger(__name__)


class QualityMetric(NamedTuple):
    column: str  # its name in reports
    tag: str  # val/<SampleQuality.compute()'s key>, as the callback logs it
    digits: int  # shown in reports
    lower_is_better: bool


MIN_IMAGES = 4  # per side: FID needs 2, precision/recall's k-NN radius more than k=3

# The metrics, stated once: SampleQuality.compute()'s keys, the logged tags, TensorBoard's
# HPARAMS metrics (capsgan.loggers), the evaluation's rows and the report's tables.
QUALITY_METRICS = (
    QualityMetric("FID", "val/fid", 1, True),
    QualityMetric("KID", "val/kid", 2, True),  # MMD^2 in the classifier's feature space, raw
    QualityMetric("IS", "val/is", 2, False),
    QualityMetric("precision", "val/precision", 3, False),
    QualityMetric("recall", "val/recall", 3, False),
    QualityMetric("modes", "val/modes", 1, False),
    QualityMetric("mode KL", "val/mode_kl", 3, True),
)
METRIC_KEYS = tuple(m.tag for m in QUALITY_METRICS)
RESULT_KEYS = tuple(tag.removeprefix("val/") for tag in METRIC_KEYS)  # compute()'s
# the report compares arms on these (IS saturates on ten balanced classes: docs/metrics.md)
REPORT_METRICS = tuple(m for m in QUALITY_METRICS if m.tag != "val/is")


def to_uint8(images: Tensor) -> Tensor:
    """Images in [-1, 1] -> uint8 in [0, 255] (rounded, clamped)."""
    return (images.float() + 1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)


class LastBatch(dict):
    """A one-entry memo (``images``, their ``outputs``: features and logits) shared by the
    :class:`ClassifierFeatures` of one classifier: torchmetrics runs its feature module once
    per metric on the same tensor, so one classifier pass serves them all. ``clear()`` after
    the batch releases it."""


class ClassifierFeatures(nn.Module):
    """A frozen :class:`DigitClassifier` as a torchmetrics ``feature`` module: uint8 images
    (B, C, H, W) (float ones are taken to be in [-1, 1]) to the penultimate-layer features
    or the logits. ``num_features`` spares torchmetrics its probe with a dummy image."""

    def __init__(self, classifier: DigitClassifier, output: Literal["features", "logits"],
                 memo: LastBatch | None = None) -> None:  # fmt: skip
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)
        self.output, self.memo = output, memo
        features = output == "features"
        self.num_features = classifier.num_features if features else classifier.num_classes

    def train(self, mode: bool = True) -> ClassifierFeatures:
        return super().train(False)  # BatchNorm/dropout must stay in inference mode

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        memo = LastBatch() if self.memo is None else self.memo
        if memo.get("images") is not images:
            x = to_unit_range(images) if images.dtype == torch.uint8 else images.float()
            features = self.classifier.features(x)
            memo.update(images=images, outputs=(features, self.classifier.head(features)))
        features, logits = memo["outputs"]
        return features if self.output == "features" else logits


class ModeCoverage(Metric):
    """Mode coverage by the classifier's predicted classes. ``compute()`` returns ``(modes,
    kl)``: the classes whose generated share is at least ``threshold`` times their real
    share (``threshold=0``: at least one sample), and KL(p_generated || p_real) in nats
    (log(10) = 2.30 for a generator stuck on one of ten balanced classes). The real
    histogram survives ``reset()``."""

    full_state_update = False

    def __init__(self, classifier: DigitClassifier, threshold: float = 0.1,
                 memo: LastBatch | None = None, **kwargs) -> None:  # fmt: skip
        super().__init__(**kwargs)
        self.classify = ClassifierFeatures(classifier, "logits", memo)
        self.threshold = threshold
        n = classifier.num_classes
        self.add_state("real_counts", torch.zeros(n, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("fake_counts", torch.zeros(n, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, images: Tensor, real: bool) -> None:
        predicted = self.classify(images).argmax(dim=1)
        counts = torch.bincount(predicted, minlength=self.real_counts.numel())
        (self.real_counts if real else self.fake_counts).add_(counts)

    def compute(self) -> tuple[Tensor, Tensor]:
        if self.real_counts.sum() == 0 or self.fake_counts.sum() == 0:
            raise RuntimeError("ModeCoverage needs real and generated images before compute()")
        p_real = self.real_counts.double() / self.real_counts.sum()
        p_fake = self.fake_counts.double() / self.fake_counts.sum()
        covered = (self.fake_counts > 0) & (p_fake >= self.threshold * p_real) & (p_real > 0)
        # 0 log 0 = 0; a class the real set never shows gets a tiny p_real, i.e. a big penalty
        terms = p_fake * (p_fake.clamp_min(1e-12).log() - p_real.clamp_min(1e-12).log())
        return covered.sum(), terms.sum()

    def reset(self) -> None:
        real_counts = self.real_counts.clone()
        super().reset()
        self.real_counts = real_counts


def knn_radii(features: Tensor, k: int, chunk: int = 2048) -> Tensor:
    """Distance of every row of ``features`` (N, D) to its k-th nearest other row: (N,)."""
    radii = [
        # k + 1: each row's nearest neighbour in its own set is itself, at distance 0
        torch.cdist(block, features).kthvalue(k + 1, dim=1).values
        for block in features.split(chunk)
    ]
    return torch.cat(radii)


def covered_share(queries: Tensor, support: Tensor, radii: Tensor, chunk: int = 2048) -> Tensor:
    """Share of ``queries`` (M, D) inside at least one ball (``support`` (N, D), ``radii``
    (N,)) -- the k-NN estimate of the support's manifold."""
    inside = [
        (torch.cdist(block, support) <= radii.unsqueeze(0)).any(dim=1)  # (chunk,)
        for block in queries.split(chunk)
    ]
    return torch.cat(inside).double().mean()


class PrecisionRecall(Metric):
    """Improved precision and recall (Kynkaanniemi et al., NeurIPS 2019) in the classifier's
    feature space: each set's manifold is the union of balls reaching each sample's k-th
    nearest neighbour; precision is the share of generated samples inside the real manifold,
    recall the share of real ones inside the generated one. ``compute()`` returns
    ``(precision, recall)``; real features (and their radii) survive ``reset()``."""

    full_state_update = False

    def __init__(self, classifier: DigitClassifier, k: int = 3, memo: LastBatch | None = None,
                 **kwargs) -> None:  # fmt: skip
        super().__init__(**kwargs)
        self.features, self.k = ClassifierFeatures(classifier, "features", memo), k
        self.add_state("real_features", [], dist_reduce_fx="cat")
        self.add_state("fake_features", [], dist_reduce_fx="cat")
        self._real_radii: Tensor | None = None

    def update(self, images: Tensor, real: bool) -> None:
        features = self.features(images).float()
        (self.real_features if real else self.fake_features).append(features)
        if real:
            self._real_radii = None

    def compute(self) -> tuple[Tensor, Tensor]:
        real, fake = dim_zero_cat(self.real_features), dim_zero_cat(self.fake_features)
        if min(len(real), len(fake)) <= self.k:
            raise RuntimeError(f"PrecisionRecall needs more than k={self.k} real and fake samples")
        if self._real_radii is None or len(self._real_radii) != len(real):
            self._real_radii = knn_radii(real, self.k)
        precision = covered_share(fake, real, self._real_radii)
        recall = covered_share(real, fake, knn_radii(fake, self.k))
        return precision, recall

    def reset(self) -> None:
        real, radii = list(self.real_features), self._real_radii
        super().reset()
        self.real_features, self._real_radii = real, radii


class SampleQuality(nn.Module):
    """FID, KID, IS, precision / recall and mode coverage sharing one classifier: add the
    real (uint8) images once (``update(images, real=True)``), then per evaluation the
    generated ones, :meth:`compute` and :meth:`reset` (which keeps the real statistics).
    torchmetrics syncs the states across DDP processes in ``compute()``."""

    def __init__(self, classifier: DigitClassifier, kid_subsets: int = 100,
                 kid_subset_size: int = 1000, is_splits: int = 10, mode_threshold: float = 0.1,
                 pr_k: int = 3) -> None:  # fmt: skip
        super().__init__()
        self.memo = LastBatch()
        features = ClassifierFeatures(classifier, "features", self.memo)
        self.fid = FrechetInceptionDistance(
            feature=features, reset_real_features=False, input_img_size=classifier.input_shape
        )
        with warnings.catch_warnings():
            # "will save all extracted features in buffer": 20 000 x 128 floats here, 10 MB
            warnings.filterwarnings("ignore", message=r"Metric `.*` will save all extracted")
            self.kid = KernelInceptionDistance(feature=features, subsets=kid_subsets,
                                               subset_size=kid_subset_size,
                                               reset_real_features=False)  # fmt: skip
            self.inception_score = InceptionScore(
                feature=ClassifierFeatures(classifier, "logits", self.memo), splits=is_splits
            )
        self.modes = ModeCoverage(classifier, threshold=mode_threshold, memo=self.memo)
        self.precision_recall = PrecisionRecall(classifier, k=pr_k, memo=self.memo)
        self.kid_subset_size = kid_subset_size

    @torch.no_grad()
    def update(self, images: Tensor, real: bool) -> None:
        for metric in (self.fid, self.kid, self.modes, self.precision_recall):
            metric.update(images, real=real)
        if not real:
            self.inception_score.update(images)
        self.memo.clear()

    @torch.no_grad()
    def compute(self, total_real: int | None = None, total_fake: int | None = None) -> dict:
        """``RESULT_KEYS`` -> 0-d tensors. KID's subsets are shrunk to the smaller set;
        ``total_*`` (all processes together) default to this process's counts."""
        counted = (self.fid.real_features_num_samples, self.fid.fake_features_num_samples)
        n = min(total_real or int(counted[0]), total_fake or int(counted[1]))
        self.kid.subset_size = min(self.kid_subset_size, n)
        # KID and IS: (mean, std); precision / recall float64, modes int64
        means = (self.fid.compute(), self.kid.compute()[0], self.inception_score.compute()[0])
        values = (*means, *self.precision_recall.compute(), *self.modes.compute())
        return {k: v.float() for k, v in zip(RESULT_KEYS, values, strict=True)}

    def reset(self) -> None:
        """Forget the generated images; the real statistics stay."""
        for metric in self.children():  # fid, kid, inception_score, modes, precision_recall
            metric.reset()


class SampleQualityCallback(L.Callback):
    """Logs ``METRIC_KEYS`` and ``val/metric_seconds`` at the end of every validation:
    ``num_samples`` generated images (all processes together; from a fixed noise ``seed``,
    the training RNG left alone) against the data module's held-out images, whose
    statistics are computed once per run.

    Args:
        batch_size: images per generator/classifier forward pass.
        classifier_path: a classifier ``.pt``; None: the data set's cached one, trained
            first if missing (:func:`capsgan.classifier.load_or_train`) in
            ``classifier_dir`` (None: :func:`capsgan.classifier.resolve_classifier_dir`).
        kid_subsets, kid_subset_size, is_splits, mode_threshold: see :class:`SampleQuality`.
        every_n_epochs: evaluate every N validation epochs (above 1, give the
            ``ModelCheckpoint(monitor="val/fid")`` the same, or ``monitor=null``).
    """

    def __init__(self, num_samples: int = 10_000, batch_size: int = 500,
                 classifier_path: str | None = None, classifier_dir: str | None = None,
                 kid_subsets: int = 100, kid_subset_size: int = 1000, is_splits: int = 10,
                 mode_threshold: float = 0.1, seed: int = 0, every_n_epochs: int = 1,
                 ) -> None:  # fmt: skip
        if num_samples < MIN_IMAGES:
            raise ConfigError(
                f"metrics.num_samples is {num_samples}, but the metrics need at least "
                f"{MIN_IMAGES} generated images (FID 2, precision and recall more than k=3); "
                "use a few hundred for a quick check, 10000 for reportable numbers."
            )
        self.num_samples, self.batch_size = num_samples, batch_size
        self.classifier_path, self.classifier_dir = classifier_path, classifier_dir
        self.metric_kwargs = {"kid_subsets": kid_subsets, "kid_subset_size": kid_subset_size,
                              "is_splits": is_splits, "mode_threshold": mode_threshold}  # fmt: skip
        self.seed, self.every_n_epochs = seed, every_n_epochs
        self.quality: SampleQuality | None = None
        self.num_real = 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or self.quality is not None:
            return
        dm = trainer.datamodule
        if self.classifier_path:
            classifier = load_classifier(self.classifier_path)
        else:
            directory = resolve_classifier_dir(dm.root, self.classifier_dir, dm.name)
            if trainer.world_size > 1 and not weights_path(directory, dm.name).exists():
                # A classifier Trainer started inside a DDP process joins the run's process
                # group and hangs both (seen with 2 CPU processes), so train it beforehand.
                raise ConfigError(
                    f"the {dm.name} classifier behind val/fid is not trained yet ({directory} "
                    "has none), and it cannot be trained inside a multi-process (DDP) run. "
                    f"Train it once first: `python src/train_classifier.py data={dm.name}` "
                    "(a few CPU minutes), then start this run again."
                )
            # trains it if missing: in a single process only, so no rank waits for another
            classifier = load_or_train(dm.name, dm.root, self.classifier_dir)
        key = "metrics.classifier_path" if self.classifier_path else "metrics.classifier_dir"
        check_classifier_fits(classifier, dm.name, (dm.channels, dm.image_size, dm.image_size), key)
        self.quality = SampleQuality(classifier, **self.metric_kwargs)

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (
            trainer.sanity_checking
            or self.quality is None
            or ((trainer.current_epoch + 1) % self.every_n_epochs)
        ):
            return
        start = time.perf_counter()
        self.quality.to(pl_module.device)
        rank, world = trainer.global_rank, trainer.world_size
        if self.num_real == 0:
            for batch in trainer.datamodule.val_set.images[rank::world].split(self.batch_size):
                self.quality.update(to_uint8(batch).to(pl_module.device), real=True)
            self.num_real = len(trainer.datamodule.val_set)
        generator = pl_module.generator  # in eval mode: Lightning validates the module in it
        rng = torch.Generator().manual_seed(self.seed + rank)
        share = len(range(self.num_samples)[rank::world])  # this process's
        for first in range(0, share, self.batch_size):  # not `start`: that times the evaluation
            n = min(self.batch_size, share - first)
            z = torch.randn(n, pl_module.hparams.latent_dim, generator=rng).to(pl_module.device)
            self.quality.update(to_uint8(generator(z)), real=False)
        values = self.quality.compute(total_real=self.num_real, total_fake=self.num_samples)
        self.quality.reset()
        seconds = time.perf_counter() - start
        logged = {f"val/{k}": v for k, v in values.items()}
        logged["val/metric_seconds"] = torch.tensor(seconds)
        # every process holds the same synced values: no further reduction
        pl_module.log_dict(logged, on_step=False, on_epoch=True, sync_dist=False)
        if trainer.is_global_zero:
            log.info(
                "epoch %d, generator step %d: FID %.3f, KID %.4f, IS %.2f, precision %.3f, "
                "recall %.3f, modes %d, mode KL %.4f (%d generated vs %d real images, %.1f s)",
                trainer.current_epoch + 1, trainer.global_step,
                *(float(values[k]) for k in RESULT_KEYS[:5]), int(values["modes"]),
                float(values["mode_kl"]), self.num_samples, self.num_real, seconds,
            )  # fmt: skip
        if not math.isfinite(float(values["fid"])):
            log.warning("FID is not finite this epoch; the generator may have diverged")


@torch.no_grad()
def real_data_floor(dm: ImageDataModule, classifier: DigitClassifier, num_samples: int) -> float:
    """The FID a perfect generator would get: ``num_samples`` real *training* images scored
    as if generated against the held-out ones, with ``classifier`` (FID is biased upwards
    for small samples and its units are the classifier's: measured, never from a table)."""
    quality = SampleQuality(classifier)
    for batch in dm.val_set.images.split(500):
        quality.update(to_uint8(batch), real=True)
    for batch in dm.train_set.images[:num_samples].split(500):
        quality.update(to_uint8(batch), real=False)
    return float(quality.fid.compute())
