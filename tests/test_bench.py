"""The benchmark's quick mode and the GPU speed switches, run on the CPU.

Speed itself is never asserted: that is the benchmark's job. These tests check that the
benchmark runs and reports sane figures, that its public-code baseline computes the same
function as our routing layer, and that the switches train.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import hydra
import pytest
import torch
from hydra import compose, initialize_config_dir

from capsgan.benchmark import BroadcastRouting, run_benchmark
from capsgan.models import RoutingCapsules, squash
from capsgan.training import build_gan, train
from tests.conftest import CONF_DIR

CASE_KEYS = {
    "discriminator", "routing_iterations", "batch_size", "steps_per_repeat",
    "lightning_images_per_s", "bare_images_per_s", "overhead_ratio", "flops_per_step",
    "achieved_flops_per_s", "flops_ratio_vs_matmul", "peak_memory_mb", "epoch_seconds_estimate",
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
        cfg = compose(
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
    assert set(result["baseline"]) >= {"ours_ms", "baseline_ms", "speedup", "trunk_ms",
                                       "trunk_share", "speedup_bound_free_routing"}  # fmt: skip
    assert (
        result["targets"]["baseline_speedup"]["bound_free_routing"]
        == (result["baseline"]["speedup_bound_free_routing"])
    )
    assert set(result["targets"]) == {
        "overhead_ratio_min", "capsule_flops_ratio_min", "baseline_speedup",
        "routing_share_at_3_max", "data_images_per_s",
    }  # fmt: skip
    figures = numbers({k: v for k, v in result.items() if k != "meta"})
    assert len(figures) > 50
    bad = [(p, v) for p, v in figures if not (math.isfinite(v) and v > 0)]
    assert not bad, f"figures that are not positive and finite: {bad}"


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


def test_channels_last_switch_trains_with_nhwc_weights(make_cfg) -> None:
    cfg = make_cfg("channels_last=true", "trainer.max_steps=3")
    module = build_gan(
        cfg, hydra.utils.instantiate(cfg.generator), hydra.utils.instantiate(cfg.discriminator)
    )
    convs = [p for p in module.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    images = module.prepare_images(torch.randn(2, 1, 28, 28))
    assert images.is_contiguous(memory_format=torch.channels_last)
    assert math.isfinite(train(cfg)["train/d_loss"])


def test_bf16_mixed_precision_trains_on_cpu(make_cfg) -> None:
    metrics = train(make_cfg("trainer.precision=bf16-mixed", "trainer.max_steps=3"))
    assert math.isfinite(metrics["train/d_loss"]) and math.isfinite(metrics["train/g_loss"])


@pytest.mark.slow
def test_compile_switch_trains(make_cfg) -> None:
    """torch.compile on the CPU needs a C++ compiler; the first steps take ~a minute."""
    metrics = train(make_cfg("compile=true", "discriminator=cnn", "trainer.max_steps=2"))
    assert math.isfinite(metrics["train/d_loss"])
