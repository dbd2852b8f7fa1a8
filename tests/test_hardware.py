"""What the device decides (capsgan.hardware), tested on a CPU by faking torch's capability
queries: ``trainer.precision: auto`` and the refusal of compile + channels_last on GPUs."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch
from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator

from capsgan import hardware
from capsgan.errors import ConfigError, user_errors
from capsgan.hardware import auto_precision, check_speed_switches, device_type, resolve_precision
from capsgan.training import train
from tests.conftest import compose_train_cfg

pytestmark = pytest.mark.usefixtures("one_thread")


def fake_devices(monkeypatch, cuda: bool = False, mps: bool = False, native_bf16: bool = False):
    """torch's answers for a machine with (or without) a CUDA GPU / MPS: an H100's compute
    capability, or a T4's (which emulates bf16: is_bf16_supported() says yes there)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: cuda)
    capability = (9, 0) if native_bf16 else (7, 5)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Fake GPU")


@pytest.mark.parametrize(
    ("accelerator", "cuda", "mps", "expected"),
    [
        ("auto", True, True, "cuda"),
        ("auto", False, True, "mps"),
        ("auto", False, False, "cpu"),
        ("gpu", True, False, "cuda"),
        ("gpu", False, True, "mps"),
        ("gpu", False, False, "gpu"),  # none: left for Lightning to refuse
        ("cpu", True, False, "cpu"),
        ("CUDA", False, False, "cuda"),
    ],
)
def test_device_type_picks_as_lightning_does(monkeypatch, accelerator, cuda, mps, expected):
    fake_devices(monkeypatch, cuda=cuda, mps=mps)
    assert device_type(accelerator) == expected


def test_device_type_of_an_accelerator_object() -> None:
    assert device_type(CUDAAccelerator()) == "cuda"
    assert device_type(CPUAccelerator()) == "cpu"


@pytest.mark.parametrize(
    ("cuda", "native_bf16", "expected"),
    [(True, True, "bf16-mixed"), (True, False, "32-true"), (False, False, "32-true")],
)
def test_auto_precision_follows_the_device(monkeypatch, cuda, native_bf16, expected) -> None:
    """bf16-mixed only on a GPU that computes bf16 natively (an emulating one says yes to
    torch.cuda.is_bf16_supported()); fp32 on the CPU, even one with native bf16 (README
    "Speed")."""
    fake_devices(monkeypatch, cuda=cuda, native_bf16=native_bf16)
    cfg = compose_train_cfg()
    assert cfg.trainer.precision == "auto"  # the default
    choice = resolve_precision(cfg)
    assert choice.precision == cfg.trainer.precision == expected
    assert ("GPU" if cuda else "CPU") in choice.reason


def test_auto_precision_is_fp32_on_mps() -> None:
    assert auto_precision("mps").precision == "32-true"


@pytest.mark.parametrize("explicit", ["32", "bf16-mixed", "16-mixed"])
@pytest.mark.parametrize("native_bf16", [True, False])
def test_an_explicit_precision_always_wins(monkeypatch, explicit, native_bf16) -> None:
    fake_devices(monkeypatch, cuda=True, native_bf16=native_bf16)
    cfg = compose_train_cfg([f"trainer.precision={explicit}"])
    choice = resolve_precision(cfg)
    assert str(cfg.trainer.precision) == choice.precision == explicit  # 32: an int in YAML
    assert "set in the config" in choice.reason


def test_training_records_the_chosen_precision_and_why(make_cfg, caplog) -> None:
    cfg = make_cfg("discriminator=cnn", "trainer.fast_dev_run=1")
    with caplog.at_level(logging.INFO, logger=hardware.__name__):
        train(cfg)
    session = json.loads((Path(cfg.paths.output_dir) / "run_info.json").read_text())
    precision = session["sessions"][-1]["precision"]
    assert precision["value"] == "32-true" and "CPU" in precision["why"]
    assert "trainer.precision=auto: 32-true on cpu" in caplog.text


@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_compile_with_channels_last_is_refused_on_gpus(make_cfg, device: str) -> None:
    cfg = make_cfg("compile=true", "channels_last=true")
    with pytest.raises(ConfigError, match=r"pytorch/pytorch/issues/171622") as err:
        check_speed_switches(cfg, device)
    assert "channels_last=false keeps compile" in str(err.value)
    assert "compile=false keeps the NHWC convolutions" in str(err.value)
    for one in ("compile=true", "channels_last=true"):  # each alone is fine there
        check_speed_switches(make_cfg(one), device)
    check_speed_switches(cfg, "cpu")  # the CPU kernels give the strides compile predicts


def test_the_refusal_comes_before_any_data_and_exits_2(make_cfg, monkeypatch, capsys) -> None:
    """Through train() and the entry points' error boundary, with a faked CUDA GPU: one
    paragraph, exit code 2, nothing trained or saved; run_info says why."""
    fake_devices(monkeypatch, cuda=True, native_bf16=True)
    cfg = make_cfg("compile=true", "channels_last=true", "trainer.accelerator=auto")
    read = []
    monkeypatch.setattr("capsgan.data.ImageDataModule.prepare_data", lambda self: read.append(1))
    with pytest.raises(SystemExit) as exit_info, user_errors():
        train(cfg)
    assert exit_info.value.code == 2 and not read
    stderr = capsys.readouterr().err
    assert stderr.startswith("Error: compile=true together with channels_last=true")
    assert "Traceback" not in stderr
    run = Path(cfg.paths.output_dir)
    assert not (run / "checkpoints").exists()
    assert json.loads((run / "run_info.json").read_text())["sessions"][-1]["status"] == "failed"


@pytest.mark.slow
def test_compile_with_channels_last_trains_on_the_cpu(make_cfg) -> None:
    """The combination refused on GPUs runs on the CPU, whose kernels return the strides
    torch.compile predicts (a C++ compiler is needed; the first steps take ~a minute)."""
    cfg = make_cfg("compile=true", "channels_last=true", "discriminator=cnn",
                   "trainer.max_steps=2", "trainer.limit_val_batches=0",
                   "callbacks.model_checkpoint.monitor=null")  # fmt: skip
    metrics = train(cfg)
    assert math.isfinite(metrics["train/d_loss"]) and math.isfinite(metrics["train/g_loss"])
