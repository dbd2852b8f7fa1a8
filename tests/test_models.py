"""Shapes, capsule maths and routing behaviour of the networks."""

from __future__ import annotations

import hydra
import pytest
import torch
from torch import nn

from capsgan.losses import discriminator_loss, probability_real
from capsgan.models import (
    CapsuleDiscriminator,
    CNNDiscriminator,
    Generator,
    RoutingCapsules,
    ScoreKind,
    dynamic_routing,
    score_kind,
    squash,
)
from tests.conftest import compose_train_cfg


@pytest.mark.parametrize("preset", ["dcgan", "seed"])
def test_generator_presets_make_mnist_images(preset: str) -> None:
    cfg = compose_train_cfg([f"generator={preset}"])
    gen = hydra.utils.instantiate(cfg.generator)
    images = gen(torch.randn(3, cfg.latent_dim))
    assert images.shape == (3, 1, 28, 28) == (3, *gen.output_shape)
    assert images.min() >= -1 and images.max() <= 1  # tanh output


def test_seed_generator_follows_the_slides() -> None:
    gen = hydra.utils.instantiate(compose_train_cfg(["generator=seed"]).generator)
    sizes, x = [], torch.randn(2, gen.latent_dim, 1, 1)
    for layer in gen.net:
        x = layer(x)
        if isinstance(layer, torch.nn.ConvTranspose2d):
            sizes.append(tuple(x.shape[1:]))
            assert layer.kernel_size == (3, 3)
    assert sizes == [(128, 3, 3), (64, 5, 5), (32, 7, 7), (3, 14, 14), (1, 28, 28)]


@pytest.mark.parametrize("preset", ["cnn", "capsule", "capsule_small"])
def test_discriminator_presets_score_each_image(preset: str) -> None:
    disc = hydra.utils.instantiate(compose_train_cfg([f"discriminator={preset}"]).discriminator)
    assert disc(torch.randn(2, 1, 28, 28)).shape == (2,)


def test_capsule_preset_has_paper_sizes() -> None:
    disc = hydra.utils.instantiate(compose_train_cfg(["discriminator=capsule"]).discriminator)
    assert disc.routing.in_caps == 32 * 6 * 6 == 1152
    assert (disc.routing.out_caps, disc.routing.out_dim) == (10, 16)
    assert disc.routing_iterations == 3


def test_length_head_scores_are_capsule_lengths() -> None:
    disc = CapsuleDiscriminator(conv_channels=8, primary_maps=2, out_dim=4, head="length")
    score = disc(torch.randn(4, 1, 28, 28))
    assert disc.score_kind is ScoreKind.LENGTH and ((score >= 0) & (score < 1)).all()


def test_an_unknown_score_kind_is_refused_not_trained_with_another_loss() -> None:
    score = torch.rand(4)
    for call in (lambda: discriminator_loss(score, score, "wasserstein"),
                 lambda: probability_real(score, "wasserstein")):  # fmt: skip
        with pytest.raises(ValueError, match="wasserstein"):
            call()
    with pytest.raises(TypeError, match=r"score_kind=None.*ScoreKind\.LOGIT"):
        score_kind(nn.Linear(2, 1))  # declares nothing
    assert score_kind(CNNDiscriminator()) is ScoreKind.LOGIT


def test_squash_maps_lengths_into_unit_interval_and_keeps_direction() -> None:
    g = torch.Generator().manual_seed(0)
    s = torch.randn(100, 8, generator=g) * torch.logspace(-3, 3, 100).unsqueeze(1)
    v = squash(s)
    lengths = v.norm(dim=-1)
    assert ((lengths >= 0) & (lengths <= 1)).all()
    # strictly below 1 where float32 can tell 1 - 1/(1 + |s|^2) from 1
    assert (lengths[s.norm(dim=-1) < 1e3] < 1).all()
    expected = s.norm(dim=-1) ** 2 / (1 + s.norm(dim=-1) ** 2)
    torch.testing.assert_close(lengths, expected, rtol=1e-4, atol=1e-6)
    cosine = torch.nn.functional.cosine_similarity(v, s, dim=-1)
    torch.testing.assert_close(cosine, torch.ones(100), rtol=0, atol=1e-5)


def test_squash_is_finite_at_zero_length() -> None:
    s = torch.zeros(3, 8, requires_grad=True)
    v = squash(s)
    v.sum().backward()
    assert torch.isfinite(v).all() and (v == 0).all()
    assert torch.isfinite(s.grad).all()


def test_coupling_coefficients_sum_to_one_over_output_capsules() -> None:
    _, c = dynamic_routing(torch.randn(4, 5, 30, 6), iterations=3)
    torch.testing.assert_close(c.sum(dim=1), torch.ones(4, 30))


def test_one_iteration_is_uniform_coupling() -> None:
    u_hat = torch.randn(4, 5, 30, 6)
    v, c = dynamic_routing(u_hat, iterations=1)
    torch.testing.assert_close(c, torch.full_like(c, 1 / 5))
    torch.testing.assert_close(v, squash(u_hat.mean(dim=2) * 30 / 5))


def test_routing_iterations_change_the_output() -> None:
    torch.manual_seed(0)
    layer = RoutingCapsules(in_caps=40, in_dim=8, out_caps=4, out_dim=6, iterations=1)
    u = squash(torch.randn(3, 40, 8))
    v1 = layer(u)
    layer.iterations = 3
    v3, c3 = dynamic_routing(layer.predictions(u), layer.iterations)
    assert not torch.allclose(v1, v3, atol=1e-4)
    assert not torch.allclose(c3, torch.full_like(c3, 0.25), atol=1e-3)  # routing did route


def test_routing_iterations_key_changes_the_discriminator() -> None:
    x = torch.randn(2, 1, 28, 28)
    outs = []
    for iters in (1, 3):
        cfg = compose_train_cfg(
            ["discriminator=capsule_small", f"discriminator.routing_iterations={iters}"]
        )
        torch.manual_seed(0)
        outs.append(hydra.utils.instantiate(cfg.discriminator)(x))
    assert not torch.allclose(outs[0], outs[1])


def test_routing_gradient_reaches_predictions_only_through_last_iteration() -> None:
    u_hat = torch.randn(2, 3, 10, 4, requires_grad=True)
    v, c = dynamic_routing(u_hat, iterations=3)
    v.sum().backward()
    # with couplings as constants, d(sum v)/d u_hat is c times the squash Jacobian: recompute it
    u_leaf = u_hat.detach().clone().requires_grad_(True)
    s = torch.matmul(c.detach().unsqueeze(2), u_leaf).squeeze(2)
    squash(s).sum().backward()
    torch.testing.assert_close(u_hat.grad, u_leaf.grad)


@pytest.mark.parametrize(
    ("model", "bad"),
    [
        (CapsuleDiscriminator, {"out_capsules": 1}),
        (CapsuleDiscriminator, {"conv_kernel": 21}),
        (CapsuleDiscriminator, {"head": "softmax"}),
        (CapsuleDiscriminator, {"routing_iterations": 0}),
        (CapsuleDiscriminator, {"primary_maps": 0}),
        (CNNDiscriminator, {"channels": [8] * 5}),
        (CNNDiscriminator, {"channels": []}),
        (CNNDiscriminator, {"negative_slope": -1.0}),
    ],
)
def test_discriminators_reject_bad_sizes_naming_the_argument(model, bad: dict) -> None:
    # start-up turns the argument's name into the config key (capsgan.config.build_models)
    with pytest.raises(ValueError, match=next(iter(bad))):
        model(**bad)


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ({"latent_dim": 0}, "latent_dim"),
        ({"init_size": 0}, "init_size"),
        ({"blocks": []}, "blocks"),
        ({"blocks": [{"channels": 1, "kernel": 0, "stride": 2}]}, r"blocks\[0\].kernel"),
    ],
)
def test_generator_rejects_bad_sizes_naming_the_argument(bad: dict, named: str) -> None:
    args = {"latent_dim": 8, "init_channels": 4, "init_size": 7,
            "blocks": [{"channels": 1, "kernel": 4, "stride": 2, "padding": 1}]}  # fmt: skip
    with pytest.raises(ValueError, match=named):
        Generator(**{**args, **bad})


def test_cnn_matched_has_capsule_smalls_flops_within_15_percent() -> None:
    """The capacity control of the convergence experiment: counted, not computed by hand."""
    from hydra.utils import instantiate
    from torch.utils.flop_counter import FlopCounterMode

    def forward_flops(preset: str) -> int:
        model = instantiate(compose_train_cfg([f"discriminator={preset}"]).discriminator)
        with FlopCounterMode(display=False) as counter:
            model(torch.randn(1, 1, 28, 28))
        return counter.get_total_flops()

    capsule, matched, cnn = (forward_flops(p) for p in ("capsule_small", "cnn_matched", "cnn"))
    assert 0.85 <= matched / capsule <= 1.15
    assert cnn / capsule < 0.85  # the plain DCGAN discriminator is the cheaper baseline


def test_cnn_params_has_capsule_smalls_parameters_within_15_percent() -> None:
    """The capacity control in parameters (issue 21's E3), counted from the built models."""
    from hydra.utils import instantiate

    def parameters(preset: str) -> int:
        model = instantiate(compose_train_cfg([f"discriminator={preset}"]).discriminator)
        return sum(p.numel() for p in model.parameters())

    capsule, matched, cnn = (parameters(p) for p in ("capsule_small", "cnn_params", "cnn"))
    assert 0.85 <= matched / capsule <= 1.15
    assert cnn / capsule < 0.85  # the plain DCGAN discriminator has far fewer
