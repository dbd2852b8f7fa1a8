"""Start-up checks of the config of every entry point: a bad value is refused before any
data, model or file, in one paragraph that names the key and the fix."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest

from capsgan.config import (
    validate_bench_config,
    validate_classifier_config,
    validate_config,
    validate_generate_config,
)
from capsgan.errors import ConfigError
from capsgan.training import train
from tests.conftest import FAST, ROOT
from tests.helpers import compose, run_info

pytestmark = pytest.mark.usefixtures("one_thread")


# -- train: every key, the metrics, the presets -------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["lr=-0.001"], ["`lr`", "> 0", "lr=2e-4", "conf/train.yaml"]),
        (["lr_d=0"], ["`lr_d`", "> 0"]),
        (["lr=abc"], ["`lr`", "a number", "'abc'"]),
        (["discriminator.routing_iterations=0"], ["routing_iterations", ">= 1", "conf/discr"]),
        (["data.batch_size=0"], ["data.batch_size", ">= 1", "conf/data/"]),
        (["data.batch_size=1.5"], ["data.batch_size", "an integer"]),
        (["latent_dim=0"], ["latent_dim", ">= 1"]),
        (["d_steps_per_g=0"], ["d_steps_per_g", ">= 1"]),
        (["data.name=svhn"], ["data.name", "svhn", "mnist", "fashion_mnist"]),
        (["discriminator.conv_kernel=25"], ["do not fit", "28x28", "primary_kernel"]),
        (["discriminator=cnn", "discriminator.channels=[8,8,8,8,8]"], ["stride-2 blocks"]),
        (["generator.init_size=8"], ["generator makes images of shape (1, 32, 32)", "(1, 28, 28)"]),
        (["label_smoothing=1.0"], ["label_smoothing", "[0, 1)"]),
        (
            ["discriminator=cnn", "+discriminator.routing_iterations=3"],
            ["`discriminator.routing_iterations`", "no such setting", "remove the override"],
        ),
        (["discriminator.out_capsules=1"], ["`discriminator.out_capsules`", ">= 2", "routing"]),
        (["discriminator.out_capsules=abc"], ["`discriminator.out_capsules`", "an integer"]),
        (["betas=[0.5]"], ["`betas`", "two numbers"]),
    ],
)
def test_bad_config_values_are_named_with_a_fix(fast_cfg, overrides, words) -> None:
    cfg = fast_cfg(*overrides)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    for word in words:
        assert word in str(err.value), (word, str(err.value))
    assert "Traceback" not in str(err.value)


def test_every_shipped_preset_validates(fast_cfg) -> None:
    for group, option in [("discriminator", d) for d in ("cnn", "capsule", "capsule_small")] + [
        ("generator", "seed"),
        ("data", "fashion_mnist"),
    ]:
        validate_config(fast_cfg(f"{group}={option}"))


def test_several_problems_are_reported_together(fast_cfg) -> None:
    with pytest.raises(ConfigError, match="2 problems") as err:
        validate_config(fast_cfg("lr=-1", "latent_dim=0"))
    assert "`lr`" in str(err.value) and "latent_dim" in str(err.value)


def test_the_documented_example_message_is_the_one_printed(fast_cfg) -> None:
    with pytest.raises(ConfigError) as err:
        validate_config(fast_cfg("lr=-1"))
    docs = " ".join((ROOT / "docs" / "reliability.md").read_text().split())
    assert f"Error: {' '.join(str(err.value).split())}" in docs  # the quoted `lr=-1` example


@pytest.mark.parametrize("bad", ["lr=-1", "discriminator.routing_iterations=0"])
def test_config_error_stops_before_data(fast_cfg, tmp_path: Path, monkeypatch, bad) -> None:
    instantiate = hydra.utils.instantiate

    def models_only(config, *args, **kwargs):  # the models are built to check them, not data
        if "DataModule" in str(config.get("_target_")):
            raise AssertionError("data was built before validation")
        return instantiate(config, *args, **kwargs)

    monkeypatch.setattr(hydra.utils, "instantiate", models_only)
    cfg = fast_cfg(bad)
    with pytest.raises(ConfigError):
        train(cfg)
    run = Path(cfg.paths.output_dir)
    assert run_info(run)["status"] == "failed"
    assert not (run / "checkpoints").exists() and not (run / "tensorboard").exists()


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["threads=-1"], ["`threads`", ">= 1"]),
        (["threads=1.5"], ["`threads`", "an integer"]),
        (["trainer.check_val_every_n_epoch=0"], ["check_val_every_n_epoch", ">= 1"]),
        (["trainer.num_sanity_val_steps=-5"], ["num_sanity_val_steps"]),
        (["trainer.deterministic=maybe"], ["trainer.deterministic", "warn"]),
        (["+trainer.gradient_clip_val=1.0"], ["trainer.gradient_clip_val", "top-level"]),
        (["+trainer.accumulate_grad_batches=4"], ["accumulate_grad_batches"]),
        (["callbacks.sample_grid.every_n_epochs=0"], ["sample_grid.every_n_epochs"]),
        (["callbacks.sample_grid.nrow=0"], ["sample_grid.nrow"]),
        (["data.pin_memory=maybe"], ["data.pin_memory", "true or false"]),
        (["compile=sometimes"], ["`compile`", "true or false"]),  # yes/no: OmegaConf bools
        (["data.num_workers=-1"], ["data.num_workers"]),
    ],
)
def test_every_user_key_is_checked_at_start_up(make_cfg, overrides, words) -> None:
    with pytest.raises(ConfigError) as err:
        validate_config(make_cfg(*overrides))
    for word in words:
        assert word in str(err.value), (word, str(err.value))


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["metrics.num_samples=2"], ["metrics.num_samples", ">= 4"]),
        (["metrics.batch_size=0"], ["metrics.batch_size"]),
        (["metrics.kid_subset_size=1"], ["kid_subset_size", ">= 2"]),
        (["metrics.mode_threshold=-0.5"], ["mode_threshold"]),
        (["metrics.classifier_path=/no/such/classifier.pt"], ["classifier_path", "not a file"]),
        (["+callbacks.sample_quality.every_n_epochs=0"], ["sample_quality.every_n_epochs"]),
    ],
)
def test_metric_settings_are_checked_at_start_up(make_cfg, overrides, words) -> None:
    with pytest.raises(ConfigError) as err:
        validate_config(make_cfg(*overrides))
    for word in words:
        assert word in str(err.value)


def test_seed_outside_numpys_range_is_refused_before_lightning(make_cfg) -> None:
    for seed in ("-1", str(2**32)):
        with pytest.raises(ConfigError, match=r"`seed`.*\[0, 4294967295\]"):
            validate_config(make_cfg(*FAST, f"seed={seed}"))


# -- refusals of Lightning and of the models' constructors --------------------------------


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["trainer.limit_train_batches=-3"], ["`trainer`", "limit_train_batches"]),
        (["trainer.limit_val_batches=1.5"], ["`trainer`", "limit_val_batches"]),
        (["trainer.fast_dev_run=-1"], ["`trainer`", "fast_dev_run"]),
        (["trainer.max_epochs=-5"], ["`trainer`", "max_epochs"]),
        (["callbacks.last_checkpoint.every_n_train_steps=-1"], ["`callbacks.last_checkpoint`"]),
        (["callbacks.model_checkpoint.mode=best"], ["`callbacks.model_checkpoint`", "min"]),
        (["callbacks.model_checkpoint.save_top_k=-2"], ["`callbacks.model_checkpoint`"]),
    ],
)
def test_lightnings_own_refusals_come_before_the_models_and_the_data(
    two_batch_cfg, monkeypatch, overrides, words
) -> None:
    import capsgan.training

    def no_models(cfg):
        raise AssertionError("the models were built before the trainer")

    monkeypatch.setattr(capsgan.training, "build_models", no_models)
    cfg = two_batch_cfg(*overrides)
    with pytest.raises(ConfigError) as err:
        train(cfg)
    for word in words:
        assert word in str(err.value), (word, str(err.value))
    assert run_info(Path(cfg.paths.output_dir))["status"] == "failed"


def test_a_constructor_refusal_is_a_config_error(two_batch_cfg) -> None:
    cfg = two_batch_cfg("+discriminator.dropout=0.3")  # a keyword the class does not take
    with pytest.raises(ConfigError, match="the discriminator refused") as err:
        train(cfg)
    assert "dropout" in str(err.value) and "has no such setting" in str(err.value)
    assert "conf/discriminator/" in str(err.value)
    assert run_info(Path(cfg.paths.output_dir))["status"] == "failed"


def test_lightning_refusal_during_set_up_is_a_config_error(two_batch_cfg) -> None:
    cfg = two_batch_cfg("+trainer.val_check_interval=1000")  # more batches than an epoch has
    with pytest.raises(ConfigError, match="Lightning refused the settings before training"):
        train(cfg)
    assert run_info(Path(cfg.paths.output_dir))["status"] == "failed"


# -- the other entry points ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["steps=1"], ["`steps`", ">= 2", "conf/generate.yaml"]),
        (["num_pairs=abc"], ["`num_pairs`", "an integer"]),
        (["strip_epochs=0"], ["strip_epochs"]),
        (["strip_epochs=[1,-2]"], ["strip_epochs"]),
        (["learning_frame_ms=0"], ["learning_frame_ms"]),
        (["device=tpu"], ["`device`"]),
        (["slerp=sometimes"], ["`slerp`", "true or false"]),
        (["run_dir=/no/such/run"], ["run_dir", "not a folder"]),
        (["ckpt_path=x.ckpt", "config_path=/no/config.yaml"], ["config_path", "not a file"]),
    ],
)
def test_generate_keys_are_checked(overrides, words) -> None:
    cfg = compose("generate", *overrides)
    with pytest.raises(ConfigError) as err:
        validate_generate_config(cfg)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["repeats=0"], ["`repeats`", ">= 1", "conf/bench.yaml"]),
        (["batch_size=0"], ["`batch_size`"]),
        (["warmup=-1"], ["`warmup`"]),
        (["threads=0"], ["`threads`"]),
        (["discriminators=[cnn,resnet]"], ["discriminators", "capsule_small"]),
        (["routing_iterations=[0]"], ["routing_iterations"]),
        (["scaling.batch_sizes=[]"], ["scaling.batch_sizes"]),
        (["baseline.discriminator=vgg"], ["baseline.discriminator"]),
        (["device=tpu"], ["`device`"]),
        (["lr=-1"], ["`lr`"]),
    ],
)
def test_bench_keys_are_checked(overrides, words, tmp_path) -> None:
    with pytest.raises(ConfigError) as err:
        validate_bench_config(compose("bench", f"paths.output_dir={tmp_path}", *overrides))
    for word in words:
        assert word in str(err.value), (word, str(err.value))


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["epochs=0"], ["`epochs`", "conf/train_classifier.yaml"]),
        (["lr=0"], ["`lr`", "> 0"]),
        (["dropout=1.5"], ["`dropout`", "[0, 1)"]),
        (["channels=[32,0]"], ["`channels`"]),
        (["channels=[8,8,8,8,8,8]"], ["pooling blocks"]),
        (["hidden=0"], ["`hidden`"]),
        (["accelerator=tpu"], ["`accelerator`"]),
        (["data.batch_size=0"], ["data.batch_size"]),
        (["classifier_dir=/proc/capsgan-classifiers"], ["classifier_dir", "cannot be written"]),
    ],
)
def test_train_classifier_keys_are_checked(overrides, words) -> None:
    with pytest.raises(ConfigError) as err:
        validate_classifier_config(compose("train_classifier", *overrides))
    for word in words:
        assert word in str(err.value), (word, str(err.value))


# -- what validation and checkpoints need, and runs that would train nothing --------------


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (
            ["~callbacks.sample_quality", "callbacks.model_checkpoint.monitor=val/fid"],
            ["callbacks.model_checkpoint.monitor`=val/fid", "sample_quality", "monitor=null"],
        ),
        (
            [
                "metrics.num_samples=64",
                "+callbacks.sample_quality.every_n_epochs=2",
                "callbacks.model_checkpoint.monitor=val/fid",
                "optimized_metric=null",
            ],
            ["every_n_epochs=2", "callbacks.model_checkpoint.every_n_epochs"],
        ),
        (
            ["metrics.num_samples=64", "data.val_subset=3", "optimized_metric=null"],
            ["at least 4 real images", "data.val_subset=3"],
        ),
    ],
)
def test_validation_and_checkpoint_needs_are_checked_before_the_first_batch(
    make_cfg, overrides, words
) -> None:
    base = ["trainer.limit_train_batches=2", "trainer.limit_val_batches=1"]
    cfg = make_cfg(*base, *overrides)
    with pytest.raises(ConfigError) as err:
        train(cfg)
    for word in words:
        assert word in str(err.value), (word, str(err.value))
    run = Path(cfg.paths.output_dir)
    assert not (run / "checkpoints").exists() and not (run / "tensorboard").exists()
    assert run_info(run)["status"] == "failed"


def test_no_validation_within_the_budget_is_refused_before_training(make_cfg) -> None:
    cfg = make_cfg("discriminator=cnn", "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=5")
    with pytest.raises(ConfigError, match="no val/fid would be computed within the budget"):
        train(cfg)
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["data.batch_size=512"], ["nothing would be trained", "320 images", "batch_size=512"]),
        (["data.train_subset=8"], ["nothing would be trained", "data.train_subset=8"]),
        (["trainer.limit_train_batches=0.01"], ["nothing would be trained", "0 batches"]),
        (["d_steps_per_g=5"], ["generator would never be trained", "d_steps_per_g=5"]),
    ],
)
def test_runs_that_would_train_nothing_are_refused(two_batch_cfg, overrides, words) -> None:
    with pytest.raises(ConfigError) as err:
        train(two_batch_cfg(*overrides))
    for word in words:
        assert word in str(err.value), (word, str(err.value))


@pytest.mark.parametrize(
    "override", ["trainer.max_epochs=0", "trainer.max_steps=0", "trainer.limit_train_batches=0"]
)
def test_zero_epochs_steps_or_batches_are_refused(two_batch_cfg, override) -> None:
    with pytest.raises(ConfigError, match="0 would train nothing"):
        validate_config(two_batch_cfg(override))
