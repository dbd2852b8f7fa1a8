"""Bad input files: missing or corrupt data, checkpoints and classifiers, or ones made for
another model or data set, are refused with an error that names the file."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import OmegaConf, open_dict

from capsgan.classifier import DigitClassifier, load_classifier, load_or_train, save_classifier
from capsgan.config import resolve_ckpt_path, validate_config
from capsgan.errors import ConfigError, DataError
from capsgan.evaluation import run_evaluate
from capsgan.training import build_gan, train
from tests.conftest import make_idx_root
from tests.helpers import assert_one_paragraph, compose, run_info, script

pytestmark = pytest.mark.usefixtures("one_thread")


def with_data_root(cfg, root: Path):
    with open_dict(cfg):
        cfg.data.root = str(root)
    return cfg


# -- data ---------------------------------------------------------------------------------


def test_missing_data_offline(fast_cfg, tmp_path: Path) -> None:
    cfg = with_data_root(fast_cfg(), tmp_path / "empty")
    with pytest.raises(DataError, match="not found") as err:
        train(cfg)
    assert "data.download=false" in str(err.value) and "DATA_DIR" in str(err.value)
    run = Path(cfg.paths.output_dir)
    assert not (run / "checkpoints").exists() and not (run / "tensorboard").exists()
    assert run_info(run)["status"] == "failed"


def test_truncated_idx_file(fast_cfg, tmp_path: Path) -> None:
    root = make_idx_root(tmp_path / "data", n_train=64, n_test=32)
    images = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:5000])
    with pytest.raises(DataError, match="corrupt or truncated") as err:
        train(with_data_root(fast_cfg(), root))
    assert "MNIST/raw" in str(err.value)


def test_data_root_is_a_file(fast_cfg, tmp_path: Path) -> None:
    a_file = tmp_path / "data.txt"
    a_file.write_text("not a folder")
    with pytest.raises(DataError, match="is a file, not a folder"):
        train(with_data_root(fast_cfg(), a_file))


# -- checkpoints --------------------------------------------------------------------------


def test_ckpt_path_that_does_not_exist(fast_cfg, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist") as err:
        train(fast_cfg(f"ckpt_path={tmp_path / 'nope.ckpt'}"))
    assert "ckpt_path" in str(err.value)
    with pytest.raises(ConfigError, match="has no") as err:
        resolve_ckpt_path("last", tmp_path / "fresh_run")
    assert "hydra.run.dir" in str(err.value)


def test_corrupt_checkpoint_file(fast_cfg, tmp_path: Path) -> None:
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ConfigError, match="not a readable checkpoint"):
        train(fast_cfg(f"ckpt_path={bad}"))


def test_checkpoint_from_another_architecture(fast_cfg, tmp_path: Path) -> None:
    cfg = fast_cfg("discriminator=cnn")
    module = build_gan(
        cfg, hydra.utils.instantiate(cfg.generator), hydra.utils.instantiate(cfg.discriminator)
    )
    ckpt = tmp_path / "cnn.ckpt"
    torch.save({"state_dict": module.state_dict()}, ckpt)
    with pytest.raises(ConfigError, match="different architecture") as err:
        train(fast_cfg(f"ckpt_path={ckpt}"))  # the capsule discriminator
    assert "discriminator." in str(err.value)


def test_cli_corrupt_checkpoint_given_to_generate(two_batch_cfg, tmp_path: Path) -> None:
    run = tmp_path / "gan_run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(two_batch_cfg()))
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "epoch_000.ckpt").write_bytes(b"fine, in a real run")
    bad = run / "checkpoints" / "last.ckpt"
    bad.write_bytes(b"PK\x03\x04 truncated by a kill")
    proc = script("generate.py", f"ckpt_path={bad}", cwd=tmp_path)
    assert_one_paragraph(proc, str(bad), "cannot be read", "epoch_000.ckpt")


# -- the classifier of the quality metrics ------------------------------------------------


def test_corrupt_cached_classifier_and_wrong_classifier_file(tmp_path: Path) -> None:
    cache = tmp_path / "classifiers"
    cache.mkdir()
    (cache / "mnist.pt").write_bytes(b"PK\x03\x04 cut short by a full disk")
    with pytest.raises(ConfigError, match="not a readable classifier") as err:
        load_or_train("mnist", tmp_path, cache)
    assert "mnist.pt" in str(err.value) and "delete it" in str(err.value)
    not_a_classifier = tmp_path / "gan.ckpt"
    torch.save({"state_dict": {"generator.w": torch.zeros(1)}}, not_a_classifier)
    with pytest.raises(ConfigError, match="not a readable classifier") as err:
        load_classifier(not_a_classifier)
    assert "metrics.classifier_path" in str(err.value)


def test_classifier_round_trip_still_loads(tmp_path: Path) -> None:
    path = save_classifier(DigitClassifier(), tmp_path, "mnist", {"test_accuracy": 0.5})
    assert load_classifier(path, cached=True).num_classes == 10


def test_a_classifier_of_another_data_set_is_refused(make_cfg, inputs, tmp_path) -> None:
    """An MNIST run scored with a Fashion-MNIST classifier (same 1x28x28 shape) used to be
    accepted, with FIDs 2-3x off."""
    with pytest.raises(ConfigError, match="trained on fashion_mnist"):
        validate_config(make_cfg(f"metrics.classifier_path={inputs['fashion_clf']}"))
    cfg = compose("evaluate", f"source={inputs['good_npz']}", f"data.root={inputs['data']}",
                  f"classifier_path={inputs['fashion_clf']}", f"out={tmp_path / 'e.json'}",
                  "num_samples=8")  # fmt: skip
    with pytest.raises(ConfigError, match="trained on fashion_mnist"):
        run_evaluate(cfg)
    assert not (tmp_path / "e.json").exists()
