"""Config composition, the manual-optimization training step, and end-to-end runs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import hydra
import lightning as L
import pytest
import torch
from omegaconf import open_dict

from capsgan import cli, gan_module
from capsgan.callbacks import TrainingLog
from capsgan.hardware import resolve_precision
from capsgan.losses import discriminator_loss
from capsgan.training import build_gan, train
from tests.conftest import CONF_DIR, FAST
from tests.helpers import run_info, scalars

GROUPS = {  # every option of these groups: composed and built below
    "data": ["mnist", "fashion_mnist", "cifar10"],
    "generator": ["dcgan", "seed", "dcgan32", "capsule"],
    "discriminator": ["cnn", "cnn_matched", "cnn_params", "cnn_sn", "cnn32", "capsule",
                      "capsule_small",
                      "capsule32"],
}  # fmt: skip


@pytest.mark.parametrize(("group", "option"), [(g, o) for g, opts in GROUPS.items() for o in opts])
def test_every_config_option_composes_and_instantiates(make_cfg, group: str, option: str) -> None:
    cfg = make_cfg(f"{group}={option}")
    obj = hydra.utils.instantiate(cfg[group])
    assert type(obj).__name__ == cfg[group]["_target_"].rsplit(".", 1)[1]


def test_every_model_and_data_yaml_is_a_listed_option() -> None:
    """So that the test above composes and builds every one of them."""
    on_disk = {(group, p.stem) for group in GROUPS for p in (CONF_DIR / group).glob("*.yaml")}
    listed = {(g, o) for g, opts in GROUPS.items() for o in opts}
    assert on_disk == listed, (
        f"add to GROUPS: {sorted(on_disk - listed)}; remove from GROUPS: {sorted(listed - on_disk)}"
    )
    groups = {p.name for p in CONF_DIR.iterdir() if p.is_dir()}
    assert groups >= {"data", "generator", "discriminator", "trainer", "logger", "callbacks",
                      "paths", "hydra"}  # fmt: skip


QUIET = {"enable_progress_bar": False, "enable_model_summary": False, "accelerator": "cpu"}


def image_batches(batches: int, batch_size: int = 8) -> torch.utils.data.DataLoader:
    """``batches`` batches of random images in [-1, 1] with labels, in a fixed order."""
    images = torch.rand(batches * batch_size, 1, 28, 28) * 2 - 1
    labels = torch.zeros(len(images), dtype=torch.long)
    data = torch.utils.data.TensorDataset(images, labels)
    return torch.utils.data.DataLoader(data, batch_size=batch_size)


def build(make_cfg, *overrides: str):
    cfg = make_cfg(*overrides)
    gen = hydra.utils.instantiate(cfg.generator)
    disc = hydra.utils.instantiate(cfg.discriminator)
    return cfg, build_gan(cfg, gen, disc)


@pytest.mark.parametrize("discriminator", ["cnn", "capsule_small"])
def test_fast_dev_run_trains_both_networks(make_cfg, discriminator: str) -> None:
    cfg = make_cfg(f"discriminator={discriminator}", "trainer.fast_dev_run=2")
    metrics = train(cfg)
    for key in (
        "train/d_loss",
        "train/g_loss",
        "train/d_acc",
        "train/d_x",
        "train/d_g_z",
        "train/d_acc_real",
        "train/d_acc_fake",
    ):
        assert key in metrics and torch.isfinite(torch.tensor(metrics[key])), key
    for key in ("train/d_acc", "train/d_x", "train/d_g_z", "train/d_acc_real"):
        assert 0 <= metrics[key] <= 1, key  # probabilities and accuracies
    assert metrics["train/d_acc"] == pytest.approx(
        (metrics["train/d_acc_real"] + metrics["train/d_acc_fake"]) / 2
    )


def test_length_head_trains_with_the_margin_loss(make_cfg) -> None:
    """Jaiswal-style head: D(x) is a capsule length, so the logged probabilities are in [0, 1)."""
    cfg = make_cfg("trainer.fast_dev_run=2")
    with open_dict(cfg):
        cfg.discriminator.head = "length"
    metrics = train(cfg)
    assert 0 <= metrics["train/d_x"] < 1 and 0 <= metrics["train/d_g_z"] < 1
    assert torch.isfinite(torch.tensor([metrics["train/d_loss"], metrics["train/g_loss"]])).all()


def test_each_optimizer_steps_only_its_own_network(make_cfg) -> None:
    """With d_steps_per_g=2 over 4 batches: D steps 4 times, G twice, each on its own weights."""
    cfg, module = build(
        make_cfg, "d_steps_per_g=2", "trainer.limit_train_batches=4", "trainer.limit_val_batches=0"
    )
    before_g = [p.detach().clone() for p in module.generator.parameters()]
    before_d = [p.detach().clone() for p in module.discriminator.parameters()]
    datamodule = hydra.utils.instantiate(cfg.data)
    resolve_precision(cfg, "cpu")  # trainer.precision: auto, as train() does
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    trainer.fit(module, datamodule=datamodule)
    opt_g, opt_d = (o.optimizer if hasattr(o, "optimizer") else o for o in trainer.optimizers)
    assert {int(s["step"]) for s in opt_d.state.values()} == {4}
    assert {int(s["step"]) for s in opt_g.state.values()} == {2}
    assert set(opt_g.state) == set(module.generator.parameters())
    assert set(opt_d.state) == set(module.discriminator.parameters())
    assert all(
        not torch.equal(a, b) for a, b in zip(before_g, module.generator.parameters(), strict=True)
    )
    assert all(
        not torch.equal(a, b)
        for a, b in zip(before_d, module.discriminator.parameters(), strict=True)
    )
    # global_step counts generator steps only, not both optimizers' steps
    assert trainer.global_step == 2


def test_label_smoothing_sets_the_real_target_of_the_d_loss(make_cfg, monkeypatch) -> None:
    targets = []

    def recording_loss(score_real, score_fake, kind, real_target=1.0):
        targets.append(real_target)
        return discriminator_loss(score_real, score_fake, kind, real_target)

    monkeypatch.setattr(gan_module, "discriminator_loss", recording_loss)
    _, module = build(make_cfg, "discriminator=cnn", "label_smoothing=0.1")
    trainer = L.Trainer(max_steps=2, logger=False, enable_checkpointing=False, **QUIET)
    trainer.fit(module, train_dataloaders=image_batches(2))
    assert targets == [pytest.approx(0.9)] * 2


class DiscriminatorInputs(L.Callback):
    """Records each batch's clean images and every image batch the discriminator sees."""

    def __init__(self) -> None:
        self.clean, self.seen = [], []

    def on_train_start(self, trainer, pl_module) -> None:
        pl_module.discriminator.register_forward_pre_hook(
            lambda _, args: self.seen.append(args[0].detach().clone())
        )

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.clean.append(batch[0])


def test_instance_noise_is_added_to_d_inputs_with_the_annealed_std(make_cfg) -> None:
    """D's first input of each batch is the real batch plus noise of std 0.4 at generator
    step 0, annealed over 4 generator steps: 0.3, 0.2, 0.1; without noise it is the batch."""
    stds = {}
    for sigma in (0.4, 0.0):
        noise = (f"instance_noise={sigma}", "instance_noise_anneal_steps=4")
        _, module = build(make_cfg, "discriminator=cnn", *noise)
        probe = DiscriminatorInputs()
        trainer = L.Trainer(max_steps=4, logger=False, enable_checkpointing=False,
                            callbacks=[probe], **QUIET)  # fmt: skip
        trainer.fit(module, train_dataloaders=image_batches(4, batch_size=64))
        # per batch: D(real), D(fake) in the D step, D(G(z)) in the G step
        assert len(probe.seen) == 3 * len(probe.clean) == 12
        stds[sigma] = [(probe.seen[3 * i] - c).std().item() for i, c in enumerate(probe.clean)]
    assert stds[0.4] == pytest.approx([0.4, 0.3, 0.2, 0.1], rel=0.05)
    assert stds[0.0] == [0.0] * 4


def test_instance_noise_anneals_linearly_to_zero(make_cfg) -> None:
    _, module = build(make_cfg, "instance_noise=0.4", "instance_noise_anneal_steps=10")
    sigmas = [module.hp.instance_noise_sigma(step) for step in (0, 5, 10, 20)]
    assert sigmas == pytest.approx([0.4, 0.2, 0.0, 0.0])


def test_run_folder_has_events_samples_and_checkpoints(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg(
        "trainer.max_epochs=2", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1"
    )
    train(cfg)
    run = Path(cfg.paths.output_dir)
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == [
        "epoch_0001.png",
        "epoch_0002.png",
    ]  # epochs from 1, the checkpoints' too
    ckpts = {p.name for p in (run / "checkpoints").glob("*.ckpt")}
    assert ckpts == {"last.ckpt", "epoch_0001.ckpt", "epoch_0002.ckpt"}


def scalar_events(run: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of every event of one TensorBoard scalar in a run folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


@pytest.mark.parametrize("every", [1, 3])
def test_step_values_are_logged_when_the_logger_writes_and_epoch_means_once(
    make_cfg, every: int
) -> None:
    # 2 epochs of 5 batches: the logger writes batches 3, 6, 9 of the run for every=3, so a
    # schedule counted per epoch (batch_idx) would miss 6 and 9
    cfg = make_cfg(
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=5",
        "trainer.limit_val_batches=0",
        "~callbacks.sample_quality",
        "callbacks.model_checkpoint.monitor=null",
        f"trainer.log_every_n_steps={every}",
    )
    train(cfg)
    run = Path(cfg.paths.output_dir)
    steps = scalar_events(run, "train/d_loss")
    assert [step for step, _ in steps] == list(range(every, 11, every))  # generator steps
    assert len({value for _, value in steps}) == len(steps)  # fresh values, not a stale one
    epoch_means = scalar_events(run, "epoch/d_loss")
    assert len(epoch_means) == 2
    if every == 1:  # every batch is visible: the epoch means are their means
        values = [value for _, value in steps]
        for epoch, (_, mean) in enumerate(epoch_means):
            assert mean == pytest.approx(sum(values[5 * epoch : 5 * epoch + 5]) / 5, rel=1e-5)
    for tag in ("epoch/g_loss", "epoch/d_acc", "train/d_x", "train/g_loss"):
        assert scalar_events(run, tag), tag


def test_epoch_means_count_each_key_over_the_batches_that_returned_it() -> None:
    """With d_steps_per_g=2, g_loss comes every second batch: its mean is over those."""
    log = TrainingLog()
    trainer = SimpleNamespace(
        _logger_connector=SimpleNamespace(should_update_logs=False), fast_dev_run=False,
        log_every_n_steps=100, num_training_batches=4, max_steps=-1, global_step=0,
    )  # fmt: skip
    bar = []  # what the progress bar was given
    module = SimpleNamespace(log_dict=lambda values, **kwargs: bar.append(values))
    for batch_idx, d_loss in enumerate([1.0, 2.0, 3.0, 6.0], start=1):
        stats = {"d_loss": torch.tensor(d_loss), "d_acc": torch.tensor(0.5)}
        if batch_idx % 2 == 0:
            stats["g_loss"] = torch.tensor(d_loss, dtype=torch.bfloat16)
        log.on_train_batch_end(trainer, module, stats, None, batch_idx)
    # refreshed at the first batch and at the epoch's last (index 3 of 4): current values
    assert [b["d_loss"].item() for b in bar] == [1.0, 3.0]
    means = {k: v.item() for k, v in log.epoch_means().items()}
    assert means == {"d_loss": 3.0, "d_acc": 0.5, "g_loss": 4.0}


def test_hyperparameters_reach_tensorboards_hparams_tab(make_cfg) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    cfg = make_cfg("lr=3e-4", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1")
    train(cfg)
    events = EventAccumulator(str(Path(cfg.paths.output_dir) / "tensorboard"))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["lr"].number_value == pytest.approx(3e-4)
    assert hparams["discriminator/_target_"].string_value.endswith("CapsuleDiscriminator")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    names = {m.name.tag for m in experiment.experiment.metric_infos}
    assert {"val/fid", "val/precision", "val/recall", "epoch/d_loss", "val/d_acc"} <= names


def test_two_job_multirun_writes_two_runs(readme_sweep) -> None:
    sweep, proc = readme_sweep
    assert proc.returncode == 0, proc.stdout[-3000:]
    for job in ("0", "1"):
        # in tensorboard/<run name>/ (capsgan.loggers): lr=0.0001 and lr=0.0002
        assert len(list((sweep / job / "tensorboard").rglob("events.out.tfevents.*"))) == 1
        assert (sweep / job / ".hydra" / "config.yaml").exists()
        assert (sweep / job / "checkpoints" / "last.ckpt").exists()
    lrs = [(sweep / j / ".hydra" / "overrides.yaml").read_text() for j in ("0", "1")]
    assert "lr=0.0001" in lrs[0] and "lr=0.0002" in lrs[1]


# -- reproducibility, the debug presets ---------------------------------------------------


@pytest.mark.usefixtures("one_thread")
def test_same_seed_same_losses_for_50_steps(make_cfg, tmp_path: Path) -> None:
    losses = []
    for name in ("a", "b"):
        cfg = make_cfg(
            *FAST,
            "trainer.max_epochs=3",
            "trainer.max_steps=50",
            "trainer.limit_val_batches=0",
            "~callbacks.sample_grid",
            "seed=7",
        )
        with open_dict(cfg):  # a toy generator: this test is about the numbers, not the images
            cfg.paths.output_dir = str(tmp_path / name)
            cfg.generator.init_channels = 16
            cfg.generator.blocks[0].channels = 8
        train(cfg)
        run = Path(cfg.paths.output_dir)
        losses.append([scalars(run, t) for t in ("train/d_loss", "train/g_loss")])
        info = run_info(run)
        assert info["status"] == "completed" and info["git"]["commit"]
        assert torch.__version__.startswith(info["packages"]["torch"])
    assert [s for s, _ in losses[0][0]] == list(range(1, 51))  # generator steps
    assert losses[0] == losses[1]


@pytest.mark.parametrize("preset", ["fdr", "limit", "overfit", "profiler"])
def test_debug_presets_compose_and_run(make_cfg, preset: str, recwarn) -> None:
    cli.quiet_library_noise()  # as the entry points do
    extra = ["trainer.max_epochs=5"] if preset == "overfit" else []
    cfg = make_cfg(f"debug={preset}", *extra)
    train(cfg)
    run = Path(cfg.paths.output_dir)
    if preset == "profiler":
        assert (run / "fit-profile.txt").exists()
    if preset == "limit":
        assert (run / "checkpoints" / "last.ckpt").exists()
    if preset == "overfit":
        assert cfg.trainer.overfit_batches == 4
    messages = [
        str(w.message) for w in recwarn if "does not have many workers" not in str(w.message)
    ]
    assert not messages, messages
