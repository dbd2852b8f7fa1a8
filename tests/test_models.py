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
from capsgan.models.image_convs import ImageConv2d, ImageConvTranspose2d
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
    s = torch.randn(100, 8) * torch.logspace(-3, 3, 100).unsqueeze(1)
    v = squash(s)
    lengths = v.norm(dim=-1)
    assert ((lengths >= 0) & (lengths < 1)).all()
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
    v3, c3 = layer(u, return_couplings=True)
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


IMAGE_CONV_CASES = [
    (ImageConv2d, nn.Conv2d, {"in_channels": 1, "out_channels": 8, "kernel_size": 9}, 28),
    (ImageConv2d, nn.Conv2d,
     {"in_channels": 3, "out_channels": 8, "kernel_size": 4, "stride": 2, "padding": 1}, 28),
    (ImageConvTranspose2d, nn.ConvTranspose2d,
     {"in_channels": 16, "out_channels": 1, "kernel_size": 4, "stride": 2, "padding": 1}, 14),
    (ImageConvTranspose2d, nn.ConvTranspose2d,
     {"in_channels": 16, "out_channels": 3, "kernel_size": 3, "stride": 2, "padding": 1,
      "output_padding": 1}, 7),
]  # fmt: skip


@pytest.mark.parametrize(("ours", "library", "kwargs", "side"), IMAGE_CONV_CASES)
def test_image_convs_match_the_library_convolution(ours, library, kwargs, side) -> None:
    """The matmul + fold path gives the library's outputs and all three gradients."""
    torch.manual_seed(0)
    layer, reference = ours(**kwargs), library(**kwargs)
    reference.load_state_dict(layer.state_dict())  # same parameter names: checkpoints load
    x = torch.randn(4, kwargs["in_channels"], side, side, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    y, y_ref = layer(x), reference(x_ref)
    grad = torch.randn_like(y)
    y.backward(grad)
    y_ref.backward(grad)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(layer.weight.grad, reference.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(layer.bias.grad, reference.bias.grad, rtol=1e-4, atol=1e-4)


def test_image_convs_sit_at_the_image_ends_of_every_network() -> None:
    for preset in ("dcgan", "seed"):
        gen = hydra.utils.instantiate(compose_train_cfg([f"generator={preset}"]).generator)
        assert isinstance(gen.net[-2], ImageConvTranspose2d)  # then tanh
        assert sum(isinstance(m, ImageConvTranspose2d) for m in gen.modules()) == 1
    for preset in ("cnn", "capsule_small"):
        cfg = compose_train_cfg([f"discriminator={preset}"])
        disc = hydra.utils.instantiate(cfg.discriminator)
        convs = [m for m in disc.modules() if isinstance(m, nn.Conv2d)]
        assert isinstance(convs[0], ImageConv2d)
        assert not any(isinstance(m, ImageConv2d) for m in convs[1:])


def test_image_convs_refuse_what_fold_does_not_cover() -> None:
    with pytest.raises(ValueError, match="groups=1"):
        ImageConv2d(2, 4, 3, groups=2)
    with pytest.raises(ValueError, match="dilation=1"):
        ImageConvTranspose2d(4, 1, 3, dilation=2)


@pytest.mark.parametrize(("ours", "library", "kwargs", "side"), IMAGE_CONV_CASES[::2])
def test_image_convs_follow_bf16_autocast(ours, library, kwargs, side) -> None:
    """Under CPU bf16 autocast: bf16 outputs and fp32 gradients, as close to the fp32 result
    as the library's own bf16 convolution is."""
    torch.manual_seed(0)
    layer, reference = ours(**kwargs), library(**kwargs)
    reference.load_state_dict(layer.state_dict())
    x = torch.randn(4, kwargs["in_channels"], side, side)
    x32 = x.clone().requires_grad_(True)
    exact = reference(x32)  # fp32, no autocast: the truth both are compared with
    grad = torch.randn_like(exact)
    exact.backward(grad)
    truth = (x32.grad, reference.weight.grad.clone())
    errors = {}
    for name, net in (("ours", layer), ("library", reference)):
        net.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = net(xi)
        assert y.dtype == torch.bfloat16
        y.backward(grad.bfloat16())
        assert xi.grad.dtype == net.weight.grad.dtype == torch.float32
        got = (xi.grad, net.weight.grad)
        errors[name] = [(g - t).abs().max().item() for g, t in zip(got, truth, strict=True)]
    for ours_err, library_err in zip(errors["ours"], errors["library"], strict=True):
        assert ours_err <= 2 * library_err + 1e-3, errors


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
