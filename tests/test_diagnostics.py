"""The capsule-trace hook of the model interface and the TensorBoard capsule diagnostics."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import hydra
import pytest
import torch

from capsgan.diagnostics import (
    CapsuleDiagnostics,
    capsule_statistics,
    coupling_entropy,
    longest_share,
    routing_agreement,
)
from capsgan.models import (
    CapsuleDiscriminator,
    CapsuleTrace,
    CNNDiscriminator,
    dynamic_routing,
    squash,
    supports_capsule_trace,
)
from capsgan.training import build_gan, instantiate_list, train
from tests.conftest import TINY_CAPSULES

QUIET = ("~callbacks.sample_quality", "callbacks.model_checkpoint.monitor=null")


def tiny_capsule_d(**kwargs) -> CapsuleDiscriminator:
    return CapsuleDiscriminator(**{**TINY_CAPSULES, "out_capsules": 5, **kwargs})


@pytest.mark.parametrize("head", ["fc", "length"])
def test_capsule_trace_shapes_and_couplings_sum_to_one(head: str) -> None:
    torch.manual_seed(0)
    d = tiny_capsule_d(head=head, routing_iterations=3)
    x = torch.randn(3, 1, 28, 28)
    trace = d.capsule_trace(x)
    in_caps = d.routing.in_caps
    assert trace.iterations == 3 and len(trace.outputs) == 3
    assert trace.primary.shape == (3, in_caps, 8)
    assert trace.u_hat.shape == (3, in_caps, 5, 4)
    for c, v in zip(trace.couplings, trace.outputs, strict=True):
        assert c.shape == (3, in_caps, 5)  # (B, in_caps, out_caps)
        assert v.shape == (3, 5, 4)  # (B, out_caps, out_dim)
        torch.testing.assert_close(c.sum(dim=-1), torch.ones(3, in_caps))
    torch.testing.assert_close(trace.couplings[0], torch.full_like(trace.couplings[0], 1 / 5))
    assert trace.lengths.shape == (3, 5)
    # the same numbers as the normal forward and routing layer
    torch.testing.assert_close(trace.score, d(x))
    v, c = dynamic_routing(d.routing.predictions(trace.primary), d.routing.iterations)
    torch.testing.assert_close(trace.capsules, v)
    torch.testing.assert_close(trace.couplings[-1], c.transpose(1, 2))
    assert trace.score_capsule == (0 if head == "length" else None)
    if head == "length":
        torch.testing.assert_close(trace.score, trace.lengths[:, 0])


def test_the_hook_is_found_by_its_presence_not_by_name() -> None:
    assert supports_capsule_trace(tiny_capsule_d())
    assert not supports_capsule_trace(CNNDiscriminator())
    assert not supports_capsule_trace(None)

    class Other(torch.nn.Module):  # any model with the method is traced
        def capsule_trace(self, x: torch.Tensor) -> CapsuleTrace: ...

    assert supports_capsule_trace(Other())


def test_coupling_entropy_on_hand_made_couplings() -> None:
    c = torch.tensor(
        [
            [0.25, 0.25, 0.25, 0.25],  # uniform: log 4
            [1.0, 0.0, 0.0, 0.0],  # one-hot: 0 (0 log 0 = 0, not NaN)
            [0.5, 0.5, 0.0, 0.0],  # log 2
            [0.7, 0.1, 0.1, 0.1],
        ]
    )
    expected = [math.log(4), 0.0, math.log(2), -(0.7 * math.log(0.7) + 0.3 * math.log(0.1))]
    torch.testing.assert_close(coupling_entropy(c), torch.tensor(expected))


def test_routing_sharpens_when_the_predictions_agree_on_one_output() -> None:
    """Every input capsule predicts the same vector for output 0 and scattered ones for
    output 1: each iteration moves the couplings towards output 0, lowering the entropy."""
    torch.manual_seed(0)
    in_caps = 20
    u_hat = torch.empty(2, 2, in_caps, 4)  # (B, out_caps, in_caps, out_dim)
    u_hat[:, 0] = torch.tensor([1.0, 0.5, 0.0, 0.0])
    u_hat[:, 1] = torch.randn(2, in_caps, 4)
    record: list = []
    dynamic_routing(u_hat, iterations=4, record=record)
    entropy = [coupling_entropy(c.transpose(1, 2)).mean().item() for c, _ in record]
    assert entropy[0] == pytest.approx(math.log(2))  # the first iteration is uniform
    assert all(a > b for a, b in itertools.pairwise(entropy)), entropy
    share = record[-1][0][:, 0].mean(dim=-1)  # (B,) mean coupling to output 0
    assert (share > 0.6).all()  # coupled mostly to the output they agree on


def test_agreement_is_one_when_every_prediction_points_at_its_output() -> None:
    u = torch.randn(2, 3, 1, 4).expand(2, 3, 6, 4)  # (B, out, in, dim): inputs agree per output
    record: list = []
    dynamic_routing(u, iterations=2, record=record)
    trace = CapsuleTrace(
        primary=torch.zeros(2, 6, 1),
        u_hat=u.transpose(1, 2),
        couplings=tuple(c.transpose(1, 2) for c, _ in record),
        outputs=tuple(v for _, v in record),
        score=torch.zeros(2),
    )
    torch.testing.assert_close(routing_agreement(trace), torch.ones(2))
    flipped = CapsuleTrace(trace.primary, -trace.u_hat, trace.couplings, trace.outputs, trace.score)
    torch.testing.assert_close(routing_agreement(flipped), -torch.ones(2))


def test_longest_share_and_statistics_shapes() -> None:
    lengths = torch.tensor([[0.1, 0.9, 0.2], [0.8, 0.1, 0.2], [0.3, 0.5, 0.4], [0.1, 0.7, 0.0]])
    torch.testing.assert_close(longest_share(lengths), torch.tensor([0.25, 0.75, 0.0]))
    trace = tiny_capsule_d(head="length").capsule_trace(squash(torch.randn(4, 1, 28, 28)))
    stats = capsule_statistics(trace)
    assert stats["entropy"].shape == (3, 4, trace.u_hat.shape[1])
    assert stats["longest"].sum().item() == pytest.approx(1.0)
    assert stats["score_lengths"].shape == (4,) and stats["agreement"].shape == (4,)


def test_measure_leaves_the_training_rng_and_modes_alone(make_cfg) -> None:
    cfg = make_cfg()
    gen = hydra.utils.instantiate(cfg.generator)
    module = build_gan(cfg, gen, hydra.utils.instantiate(cfg.discriminator))
    module.train()
    real = torch.rand(4, 1, 28, 28) * 2 - 1
    state = torch.get_rng_state()
    stats = CapsuleDiagnostics(num_images=4).measure(module, real)
    assert torch.equal(state, torch.get_rng_state())
    assert module.generator.training and module.discriminator.training
    assert set(stats) == {"real", "fake"}


def event_tags(run: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (event_file,) = run.rglob("events.out.tfevents.*")  # wherever the logger puts it
    events = EventAccumulator(str(event_file.parent), size_guidance={"images": 0})
    events.Reload()
    return events


def capsule_tags(events) -> set[str]:
    tags = events.Tags()
    return {t for kind in ("scalars", "histograms", "images") for t in tags[kind]
            if t.startswith("val_capsules/")}  # fmt: skip


def tiny_run(make_cfg, *overrides: str, epochs: int = 2, head: str | None = None):
    cfg = make_cfg(
        f"trainer.max_epochs={epochs}",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        *QUIET,
        *overrides,
    )
    if head is not None:  # not as an override, which would drop the toy capsule sizes
        cfg.discriminator.head = head
    train(cfg)
    return event_tags(Path(cfg.paths.output_dir))


@pytest.mark.parametrize("head", ["fc", "length"])
def test_callback_logs_the_expected_tags_every_validation(make_cfg, head: str) -> None:
    events = tiny_run(make_cfg, head=head)
    expected = {
        f"val_capsules/{kind}/{s}/iter{r}"
        for kind in ("entropy", "entropy_hist")
        for s in ("real", "fake")
        for r in (1, 2, 3)
    }
    expected |= {f"val_capsules/{k}/{s}" for k in ("length", "length_hist", "agreement")
                 for s in ("real", "fake")}  # fmt: skip
    expected.add("val_capsules/longest")
    score_tags = {"val_capsules/score_length_hist/real", "val_capsules/score_length_hist/fake"}
    if head == "length":  # the capsule whose length is the score
        expected |= score_tags
    assert capsule_tags(events) == expected
    # one value per validation (2 epochs; not the sanity check), on the val/* metrics' steps
    steps = [e.step for e in events.Scalars("val_capsules/agreement/real")]
    assert steps == [e.step for e in events.Scalars("val/d_loss")] and len(steps) == 2
    uniform = events.Scalars("val_capsules/entropy/real/iter1")[0].value
    assert uniform == pytest.approx(math.log(10), rel=1e-5)  # iteration 1 is uniform
    for r in (2, 3):  # never above the uniform maximum (toy capsules barely route)
        assert events.Scalars(f"val_capsules/entropy/fake/iter{r}")[0].value <= math.log(10) + 1e-5
    image = events.Images("val_capsules/longest")[0]
    assert image.width > 100 and image.height > 100


@pytest.mark.parametrize(
    "overrides",
    [
        ("discriminator=cnn",),  # no hook: skipped silently
        ("callbacks.capsule_diagnostics.enabled=false",),  # the switch
        ("~callbacks.capsule_diagnostics",),  # removed altogether
    ],
)
def test_no_capsule_tags_for_a_cnn_or_when_switched_off(make_cfg, overrides) -> None:
    events = tiny_run(make_cfg, *overrides, epochs=1)
    assert "val/d_loss" in events.Tags()["scalars"]  # validation did run
    assert capsule_tags(events) == set()


def test_the_switch_and_the_removal_reach_the_callback_list(make_cfg) -> None:
    def diagnostics(*overrides: str) -> list[CapsuleDiagnostics]:
        found = instantiate_list(make_cfg(*overrides).callbacks)
        return [c for c in found if isinstance(c, CapsuleDiagnostics)]

    (on,) = diagnostics()
    assert on.enabled
    (off,) = diagnostics("callbacks.capsule_diagnostics.enabled=false")
    assert not off.enabled
    assert diagnostics("~callbacks.capsule_diagnostics") == []
