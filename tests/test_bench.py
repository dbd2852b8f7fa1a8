"""The benchmark's quick mode, its plain-PyTorch bare loop, and the GPU speed switches,
run on the CPU.

Speed itself is never asserted: that is the benchmark's job. These tests check that the
benchmark runs and reports sane figures, that its bare loop (the denominator of the
overhead ratio), which calls the module's step function, gives the module's numbers, that
its public-code baseline computes the same function as our routing layer, and that the
switches do what they say.
"""

from __future__ import annotations

import copy
import json
import math
import resource
import types
from pathlib import Path
from typing import ClassVar

import hydra
import lightning as L
import pytest
import torch
from hydra import compose as hydra_compose
from hydra import initialize_config_dir

import capsgan.benchmark as bench
from capsgan.benchmark import (
    BareLoop,
    BroadcastRouting,
    check_targets,
    effective_cfg,
    run_benchmark,
)
from capsgan.errors import ConfigError
from capsgan.hardware import resolve_precision
from capsgan.models import RoutingCapsules, squash
from capsgan.training import build_gan, train
from tests.conftest import CONF_DIR, TINY_CAPSULES
from tests.helpers import compose

CASE_KEYS = {
    "discriminator", "routing_iterations", "batch_size", "steps_per_repeat",
    "lightning_images_per_s", "bare_images_per_s", "overhead_ratio", "flops_per_step",
    "achieved_flops_per_s", "flops_ratio_vs_matmul", "peak_memory_mb", "epoch_seconds_estimate",
    "step_ms",
}  # fmt: skip


def numbers(node: object, path: str = "") -> list[tuple[str, float]]:
    """Every int/float leaf of a JSON tree, with its path (booleans excluded)."""
    if isinstance(node, dict):
        return [x for k, v in node.items() for x in numbers(v, f"{path}/{k}")]
    if isinstance(node, list):
        return [x for i, v in enumerate(node) for x in numbers(v, f"{path}[{i}]")]
    if isinstance(node, (int, float)) and not isinstance(node, bool):
        return [(path, float(node))]
    return []


def test_quick_benchmark_writes_a_complete_json(tiny_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = hydra_compose(
            config_name="bench",
            overrides=[
                "quick=true",
                f"data.root={tiny_data_dir}",
                "data.download=false",
                f"paths.output_dir={tmp_path}",
                f"output={out}",
                "device=cpu",
                "trainer.enable_progress_bar=false",
            ],
        )
    run_benchmark(cfg)
    result = json.loads(out.read_text())

    assert set(result) >= {"meta", "matmul_flops_per_s", "data_pipeline", "cases", "scaling",
                           "baseline", "targets"}  # fmt: skip
    cases = {(c["discriminator"], c["routing_iterations"]) for c in result["cases"]}
    assert cases == {("cnn", None)} | {(d, r) for d in ("capsule_small", "capsule") for r in (1, 3)}
    for case in result["cases"]:
        assert set(case) >= CASE_KEYS
        assert ("routing_share" in case) == (case["routing_iterations"] is not None)
    assert [r["batch_size"] for r in result["scaling"]["rows"]] == [8, 16]
    assert result["baseline"]["outputs_match"] is True
    assert set(result["baseline"]) >= {"routing_layer_ours_ms", "routing_layer_baseline_ms",
                                       "routing_layer_speedup"}  # fmt: skip
    assert set(result["targets"]) == {
        "overhead_ratio_min", "capsule_flops_ratio_min", "routing_share_at_3_max",
        "data_images_per_s",
    }  # fmt: skip
    assert result["meta"]["matmul_size"] == 256 and result["meta"]["precision"] == "32-true"
    assert "CPU" in result["meta"]["precision_why"]  # trainer.precision: auto, on this CPU
    figures = numbers({k: v for k, v in result.items() if k != "meta"})
    assert len(figures) > 50
    bad = [(p, v) for p, v in figures if not (math.isfinite(v) and v > 0)]
    assert not bad, f"figures that are not positive and finite: {bad}"


def test_bench_quick_mode_keeps_the_users_values(tmp_path: Path) -> None:
    """quick=true used to overwrite batch_size=0 with its own 8, silently."""
    cfg = compose("bench", "quick=true", "batch_size=4", f"paths.output_dir={tmp_path}")
    assert effective_cfg(cfg, given=["batch_size"]).batch_size == 4
    assert effective_cfg(cfg, given=[]).batch_size == 8  # what the user left alone is sized
    bad = compose("bench", "quick=true", "batch_size=0", f"paths.output_dir={tmp_path}")
    with pytest.raises(ConfigError, match="`batch_size`"):
        run_benchmark(bad)


def test_a_cuda_run_is_held_to_the_gpu_targets() -> None:
    """The issue-22 targets on a GPU: the step time is the full capsule preset's at
    routing 3; the FLOP ratio is the lowest capsule case's."""

    def case(name: str, iterations: int | None, step_ms: float, ratio: float) -> dict:
        return {
            "discriminator": name,
            "routing_iterations": iterations,
            "step_ms": step_ms,
            "overhead_ratio": 0.95,
            "flops_ratio_vs_matmul": ratio,
            "routing_share": 0.1,
        }

    cases = [case("capsule", 3, 4.0, 0.35), case("capsule", 5, 9.0, 0.4),
             case("capsule_small", 3, 2.0, 0.25)]  # fmt: skip
    result = {"meta": {"device": "cuda"}, "cases": cases,
              "data_pipeline": {"images_per_s": 1e6}}  # fmt: skip
    targets = check_targets(result)
    assert set(targets) == {"overhead_ratio_min", "capsule_flops_ratio_min", "capsule_step_ms_max"}
    assert targets["capsule_step_ms_max"] == {"value": 4.0, "target": "<= 5", "met": True}
    assert targets["capsule_flops_ratio_min"]["value"] == 0.25
    assert not targets["capsule_flops_ratio_min"]["met"]
    result["meta"]["device"] = "cpu"
    assert "capsule_step_ms_max" not in check_targets(result)


@pytest.mark.parametrize("iterations", [1, 3])
def test_public_code_baseline_computes_our_routing(iterations: int) -> None:
    torch.manual_seed(0)
    ours = RoutingCapsules(in_caps=36, in_dim=8, out_caps=5, out_dim=6, iterations=iterations)
    theirs = BroadcastRouting(ours)
    u = squash(torch.randn(4, 36, 8))
    u1, u2 = u.clone().requires_grad_(True), u.clone().requires_grad_(True)
    v_ours, v_theirs = ours(u1), theirs(u2)
    torch.testing.assert_close(v_theirs, v_ours, rtol=1e-4, atol=1e-5)
    v_ours.square().sum().backward()
    v_theirs.square().sum().backward()
    torch.testing.assert_close(u2.grad, u1.grad, rtol=1e-4, atol=1e-5)


class LayerProbe(L.Callback):
    """Test probe: during training, records for every convolution and linear layer of both
    networks its output's dtype, whether its input is NHWC, and whether it runs compiled.
    Class-level lists, since ``train(cfg)`` builds the callback from the config."""

    dtypes: ClassVar[list[torch.dtype]] = []
    nhwc_inputs: ClassVar[list[bool]] = []
    compiling: ClassVar[list[bool]] = []

    in_batch: ClassVar[bool] = False  # only the training steps count, not the sample grids

    def on_train_start(self, trainer, pl_module) -> None:
        for cls in (LayerProbe.dtypes, LayerProbe.nhwc_inputs, LayerProbe.compiling):
            cls.clear()
        for net in (pl_module.generator, pl_module.discriminator):
            for layer in net.modules():
                if isinstance(layer, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)):
                    layer.register_forward_hook(self._record)

    def on_train_batch_start(self, *args) -> None:
        LayerProbe.in_batch = True

    def on_train_batch_end(self, *args) -> None:
        LayerProbe.in_batch = False

    @staticmethod
    def _record(layer, args, output) -> None:
        if not LayerProbe.in_batch:
            return
        LayerProbe.dtypes.append(output.dtype)
        LayerProbe.compiling.append(torch.compiler.is_compiling())
        if args[0].dim() == 4:
            LayerProbe.nhwc_inputs.append(args[0].is_contiguous(memory_format=torch.channels_last))


PROBE = "+callbacks.layer_probe._target_=tests.test_bench.LayerProbe"


def test_channels_last_switch_trains_with_nhwc_weights_and_inputs(make_cfg) -> None:
    cfg = make_cfg("channels_last=true", "discriminator=cnn", "trainer.max_steps=2", PROBE)
    module = build_gan(
        cfg, hydra.utils.instantiate(cfg.generator), hydra.utils.instantiate(cfg.discriminator)
    )
    convs = [p for p in module.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    train(cfg)
    # every convolution of both networks saw NHWC input (a (1, C, 1, 1) map is both)
    assert LayerProbe.nhwc_inputs and all(LayerProbe.nhwc_inputs)
    train(make_cfg("discriminator=cnn", "trainer.max_steps=2", PROBE))
    assert not all(LayerProbe.nhwc_inputs)  # the probe can tell: NCHW without the switch


def test_bf16_mixed_precision_runs_the_layers_in_bf16(make_cfg) -> None:
    metrics = train(make_cfg("trainer.precision=bf16-mixed", "trainer.max_steps=2", PROBE))
    assert LayerProbe.dtypes and set(LayerProbe.dtypes) == {torch.bfloat16}
    assert "train/d_loss" in metrics
    train(make_cfg("trainer.max_steps=2", PROBE))
    assert set(LayerProbe.dtypes) == {torch.float32}


@pytest.mark.slow
def test_compile_switch_runs_the_networks_compiled(make_cfg) -> None:
    """torch.compile on the CPU needs a C++ compiler; the first steps take ~a minute."""
    train(make_cfg("compile=true", "discriminator=cnn", "trainer.max_steps=2", PROBE))
    assert LayerProbe.compiling and all(LayerProbe.compiling)


# -- the bare loop steps as the Lightning module does ---------------------------------

# Every hyperparameter that changes the step, each set so that it changes the numbers: a
# clip value that bites, noise annealed within the run, a G step every other batch.
REFERENCE_CASES = {
    "defaults": ["discriminator=cnn"],
    "options": [
        "discriminator=cnn", "label_smoothing=0.2", "instance_noise=0.3",
        "instance_noise_anneal_steps=2", "gradient_clip_val=0.05", "d_steps_per_g=2",
        "lr_g=1e-3", "lr_d=5e-4", "betas=[0.8,0.99]",
    ],
    "length_head_bf16_channels_last": [
        *(f"discriminator.{k}={v}" for k, v in TINY_CAPSULES.items()), "discriminator.head=length",
        "trainer.precision=bf16-mixed", "channels_last=true", "label_smoothing=0.1",
    ],
}  # fmt: skip


class RecordSteps(L.Callback):
    """Seeds the RNG right before the first batch and records each batch's losses."""

    def __init__(self, seed: int) -> None:
        self.seed, self.losses = seed, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            torch.manual_seed(self.seed)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append((outputs["d_loss"], outputs.get("g_loss")))


def module_and_reference(cfg, batches: int = 4, seed: int = 7):
    """The initial weights; (module, losses) after ``batches`` Lightning batches; and the
    same for BareLoop on a copy of the module taken before training, same images."""
    resolve_precision(cfg, "cpu")  # trainer.precision: auto, as train() does
    torch.manual_seed(0)
    module = build_gan(
        cfg, hydra.utils.instantiate(cfg.generator), hydra.utils.instantiate(cfg.discriminator)
    )
    twin = copy.deepcopy(module)
    before = copy.deepcopy(module.state_dict())
    images = torch.rand(batches * 4, 1, 28, 28) * 2 - 1
    data = torch.utils.data.TensorDataset(images, torch.zeros(len(images), dtype=torch.long))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    recorder = RecordSteps(seed)
    trainer = L.Trainer(
        max_epochs=1, accelerator="cpu", devices=1, precision=cfg.trainer.precision,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, log_every_n_steps=1, callbacks=[recorder],
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=loader)
    step, reference_losses = BareLoop(twin, str(cfg.trainer.precision)), []
    real_batches = [real for real, _ in loader]
    torch.manual_seed(seed)
    for batch_idx, real in enumerate(real_batches):
        stats = step(batch_idx, real)
        reference_losses.append((stats["d_loss"], stats.get("g_loss")))
    return before, (module, recorder.losses), (twin, reference_losses)


@pytest.mark.parametrize("case", REFERENCE_CASES)
def test_bare_loop_gives_the_modules_losses_and_weights(make_cfg, case: str) -> None:
    cfg = make_cfg(*REFERENCE_CASES[case])
    before, (module, losses), (twin, reference) = module_and_reference(cfg)
    assert len(losses) == len(reference) == 4
    g_steps = [g is not None for _, g in losses]
    assert g_steps == [g is not None for _, g in reference]
    assert sum(g_steps) == (2 if "d_steps_per_g=2" in REFERENCE_CASES[case] else 4)
    for (d, g), (d_ref, g_ref) in zip(losses, reference, strict=True):
        torch.testing.assert_close(d_ref, d)
        if g is not None:
            torch.testing.assert_close(g_ref, g)
    state, state_ref = module.state_dict(), twin.state_dict()
    assert state.keys() == state_ref.keys()
    for key in state:
        torch.testing.assert_close(state_ref[key], state[key], msg=lambda m, k=key: f"{k}: {m}")
    trained = [k for k, v in before.items() if not torch.equal(v, state[k])]
    assert any(k.startswith("generator.") for k in trained)  # both networks were trained
    assert any(k.startswith("discriminator.") for k in trained)


def test_bare_loop_refuses_a_precision_it_does_not_run(make_cfg) -> None:
    cfg = make_cfg("discriminator=cnn")
    module = build_gan(
        cfg, hydra.utils.instantiate(cfg.generator), hydra.utils.instantiate(cfg.discriminator)
    )
    with pytest.raises(ConfigError, match=r"not '16-mixed'.*trainer.precision"):
        BareLoop(module, "16-mixed")


@pytest.mark.parametrize(("platform", "maxrss"), [("linux", 512 * 1024), ("darwin", 512 * 2**20)])
def test_peak_memory_without_proc_reads_ru_maxrss_in_its_platform_unit(
    monkeypatch, platform: str, maxrss: int
) -> None:
    class NoProc(type(Path())):  # where there is no /proc (macOS, BSD)
        def read_text(self, *args, **kwargs) -> str:
            raise FileNotFoundError(self)

    monkeypatch.setattr(bench, "Path", NoProc)
    monkeypatch.setattr(bench.sys, "platform", platform)
    monkeypatch.setattr(resource, "getrusage", lambda who: types.SimpleNamespace(ru_maxrss=maxrss))
    assert bench.peak_memory_mb(torch.device("cpu")) == 512.0
