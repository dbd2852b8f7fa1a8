"""The reference classifier, the classifier-based FID/KID/IS/mode coverage, and the callback."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
import torch

from capsgan.classifier import (
    DigitClassifier,
    fit_classifier,
    load_classifier,
    load_or_train,
    resolve_classifier_dir,
    save_classifier,
)
from capsgan.data import ImageDataModule
from capsgan.metrics import (
    METRIC_KEYS,
    ModeCoverage,
    PrecisionRecall,
    SampleQuality,
    covered_share,
    knn_radii,
    to_uint8,
)
from capsgan.training import train

TINY = {"channels": (8, 16), "hidden": 16, "epochs": 6, "lr": 1e-2, "accelerator": "cpu"}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_dm(tiny_data_dir: Path) -> ImageDataModule:
    dm = ImageDataModule(root=str(tiny_data_dir), batch_size=32, download=False)
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def tiny_classifier(tiny_dm: ImageDataModule, tmp_path_factory: pytest.TempPathFactory):
    """A tiny classifier trained on the synthetic data: (model, info, saved .pt path,
    seconds the training call took)."""
    start = time.perf_counter()
    model, info = fit_classifier(tiny_dm, **TINY)
    wall = time.perf_counter() - start
    path = save_classifier(model, tmp_path_factory.mktemp("classifiers"), "mnist", info)
    return model, info, path, wall


def test_classifier_learns_well_above_chance(tiny_classifier) -> None:
    model, info, path, wall = tiny_classifier
    assert info["test_accuracy"] > 0.5  # 10 classes: chance is 0.1
    # the fit's own time (0.1 s resolution): positive, and within the whole call's
    assert 0 < info["train_seconds"] <= round(wall, 1) + 0.1
    saved = json.loads(path.with_suffix(".json").read_text())
    assert saved["test_accuracy"] == info["test_accuracy"]
    reloaded = load_classifier(path)
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    assert torch.allclose(reloaded(x), model(x), atol=1e-5)
    assert reloaded.features(x).shape == (4, 16)


def test_fid_is_zero_against_itself_and_grows_with_noise(tiny_classifier, tiny_dm) -> None:
    model, *_ = tiny_classifier
    real = tiny_dm.val_set.images
    quality = SampleQuality(model, kid_subsets=10, kid_subset_size=50)
    quality.update(to_uint8(real), real=True)
    fids, kids = [], []
    gen = torch.Generator().manual_seed(0)
    for sigma in (0.0, 0.3, 0.6, 1.0):
        noisy = real + sigma * torch.randn(real.shape, generator=gen)
        quality.update(to_uint8(noisy.clamp(-1, 1)), real=False)
        values = quality.compute()
        fids.append(float(values["fid"]))
        kids.append(float(values["kid"]))
        quality.reset()
    assert abs(fids[0]) < 1e-3 * max(fids[-1], 1.0)
    assert fids == sorted(fids) and fids[1] > fids[0] + 1e-3, fids
    assert kids[-1] > kids[0], kids


def test_mode_coverage_counts_classes(tiny_classifier, tiny_dm) -> None:
    model, *_ = tiny_classifier
    images, labels = to_uint8(tiny_dm.val_set.images), tiny_dm.val_set.labels
    coverage = ModeCoverage(model)
    coverage.update(images, real=True)
    coverage.update(images, real=False)  # the balanced real set against itself
    modes, kl = coverage.compute()
    assert int(modes) == 10 and float(kl) < 0.05
    coverage.reset()  # keeps the real histogram
    predicted = model(tiny_dm.val_set.images).argmax(1)
    one_class = images[predicted == predicted[0]]
    coverage.update(one_class, real=False)
    modes, kl = coverage.compute()
    assert int(modes) == 1
    assert float(kl) == pytest.approx(-torch.log(torch.tensor(0.1)).item(), abs=0.3)
    assert len(labels.unique()) == 10


def test_callback_logs_all_metrics_in_a_short_run(make_cfg, tiny_classifier) -> None:
    _, _, path, _ = tiny_classifier
    cfg = make_cfg(
        "discriminator=cnn",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=3",
        f"metrics.classifier_path={path}",
        "metrics.num_samples=200",
        "metrics.batch_size=64",
    )
    metrics = train(cfg)
    for key in (*METRIC_KEYS, "val/metric_seconds"):
        assert key in metrics and torch.isfinite(torch.tensor(metrics[key])), key
    assert 1 <= metrics["val/modes"] <= 10
    assert 1.0 <= metrics["val/is"] <= 10.0
    assert 0 < metrics["val/metric_seconds"] < 300  # the evaluation's wall time
    events = list((Path(cfg.paths.output_dir) / "tensorboard").glob("events.out.tfevents.*"))
    assert events and b"val/fid" in events[0].read_bytes()


def test_missing_classifier_is_trained_and_cached_on_first_use(tmp_path, tiny_data_dir, caplog):
    caplog.set_level(logging.INFO, logger="capsgan")
    cache = tmp_path / "cache"
    model = load_or_train("fashion_mnist", tiny_data_dir, cache)
    assert isinstance(model, DigitClassifier)
    assert (cache / "fashion_mnist.pt").exists()
    info = json.loads((cache / "fashion_mnist.json").read_text())
    assert 0.0 <= info["test_accuracy"] <= 1.0 and info["train_seconds"] > 0
    assert "training it now" in caplog.text


def test_read_only_data_root_falls_back_to_a_cache_dir(tmp_path, monkeypatch, caplog) -> None:
    caplog.set_level(logging.INFO, logger="capsgan")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    read_only = tmp_path / "shared"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        chosen = resolve_classifier_dir(read_only, None, "mnist")
    finally:
        read_only.chmod(0o755)
    assert chosen == tmp_path / "home" / ".cache" / "capsgan" / "classifiers"
    assert "read-only" in caplog.text
    writable = tmp_path / "data"
    assert resolve_classifier_dir(writable, None, "mnist") == writable / "classifiers"
    assert resolve_classifier_dir(writable, tmp_path / "x", "mnist") == tmp_path / "x"


def test_one_classifier_pass_serves_all_metrics(tiny_classifier, tiny_dm) -> None:
    model, *_ = tiny_classifier
    images = to_uint8(tiny_dm.val_set.images[:50])
    quality = SampleQuality(model, kid_subsets=2, kid_subset_size=20, is_splits=2)
    calls = []
    handle = model.fc.register_forward_hook(lambda *_: calls.append(1))
    try:
        quality.update(images, real=True)
        quality.update(images, real=False)
    finally:
        handle.remove()
    assert len(calls) == 2  # not one per metric (FID, KID, IS, modes)
    values = quality.compute()
    assert float(values["fid"]) == pytest.approx(0.0, abs=1e-3)
    assert int(values["modes"]) >= 1


def test_precision_recall_hand_checkable_cases() -> None:
    """Kynkaanniemi et al.'s k-NN manifolds on point sets whose answer is known."""
    gen = torch.Generator().manual_seed(0)
    cluster = torch.randn(200, 8, generator=gen)
    far = cluster + 100.0  # the same shape, far away

    radii = knn_radii(cluster, k=3)
    assert covered_share(cluster, cluster, radii) == 1.0  # identical sets: every point inside
    assert covered_share(far, cluster, radii) == 0.0  # disjoint clusters: none inside

    # a generator that covers one of two real modes: realistic (precision 1), half the data
    two_modes = torch.cat([cluster, far])
    one_mode = cluster[:100] + 0.01
    real_radii = knn_radii(two_modes, k=3)
    assert covered_share(one_mode, two_modes, real_radii) == 1.0  # precision
    recall = covered_share(two_modes, one_mode, knn_radii(one_mode, k=3))
    assert 0.2 < recall <= 0.5  # none of the far mode; part of the covered one

    # the k-th neighbour excludes the point itself
    line = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    assert knn_radii(line, k=1).tolist() == [1.0, 1.0, 2.0, 4.0]


def test_precision_recall_metric_on_images(tiny_classifier, tiny_dm) -> None:
    model, *_ = tiny_classifier
    metric = PrecisionRecall(model, k=3)
    real = to_uint8(tiny_dm.val_set.images[:64])
    metric.update(real, real=True)
    metric.update(real, real=False)  # a generator that reproduces the real set exactly
    precision, recall = metric.compute()
    assert precision == 1.0 and recall == 1.0
    metric.reset()  # the real features stay; the generated ones go
    metric.update(torch.zeros_like(real), real=False)  # one blank image, 64 times
    precision, recall = metric.compute()
    assert recall < 0.2  # a collapsed generator covers almost none of the data
