"""generator=capsule: the capsule generator's shapes, routing and training against both
discriminator families."""

from __future__ import annotations

import hydra
import pytest
import torch

from capsgan.models.capsule_generator import CapsuleGenerator
from capsgan.models.capsules import dynamic_routing, squash
from capsgan.training import train


@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32)])
def test_makes_images_of_the_data_shape(channels: int, size: int) -> None:
    gen = CapsuleGenerator(latent_dim=16, image_channels=channels, image_size=size)
    images = gen(torch.randn(5, 16))
    assert images.shape == (5, channels, size, size) == (5, *gen.output_shape)
    assert images.abs().max() <= 1 and images.std() > 0.01  # tanh, and not a constant
    parts, couplings = gen.part_capsules(torch.randn(5, 16))
    assert parts.shape == (5, 8 * (size // 4) ** 2, 8)  # 392 part capsules on 28, 512 on 32
    assert bool((parts.norm(dim=-1) < 1).all())  # squashed
    torch.testing.assert_close(couplings.sum(-1), torch.ones(5, parts.shape[1]))


def test_routing_matches_a_loop_over_parts_and_wholes() -> None:
    """The batched routing against the procedure written capsule by capsule."""
    torch.manual_seed(0)
    u_hat = torch.randn(2, 5, 3, 4)  # (B, parts, wholes, dim)
    v, c = dynamic_routing(u_hat, iterations=3, coupling_dim=2)
    for b in range(2):
        logits = torch.zeros(5, 3)
        for r in range(3):
            coupling = torch.softmax(logits, dim=1)  # over the wholes
            out = torch.stack(
                [squash(sum(coupling[j, i] * u_hat[b, j, i] for i in range(3))) for j in range(5)]
            )
            if r < 2:
                for j in range(5):
                    for i in range(3):
                        logits[j, i] += u_hat[b, j, i] @ out[j]
        torch.testing.assert_close(v[b], out)
        torch.testing.assert_close(c[b], coupling)


def test_routing_iterations_change_the_image_and_every_weight_gets_a_gradient() -> None:
    torch.manual_seed(0)
    gen = CapsuleGenerator(latent_dim=16, image_size=28)
    z = torch.randn(4, 16)
    three = gen(z)
    gen.iterations = 1
    assert (three - gen(z)).abs().max() > 1e-3  # routing does something at initialisation
    gen.iterations = 3
    gen(z).square().mean().backward()
    for name, param in gen.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_sizes_that_do_not_fit_are_refused_with_the_argument() -> None:
    with pytest.raises(ValueError, match="image_size=30 is not a multiple of 2"):
        CapsuleGenerator(latent_dim=8, image_size=30)
    with pytest.raises(ValueError, match="part_dim must be an integer >= 1"):
        CapsuleGenerator(latent_dim=8, part_dim=0)


@pytest.mark.parametrize("discriminator", ["cnn", "capsule_small"])
def test_fast_dev_run_trains_against(make_cfg, discriminator: str) -> None:
    cfg = make_cfg("generator=capsule", f"discriminator={discriminator}", "trainer.fast_dev_run=2")
    gen = hydra.utils.instantiate(cfg.generator)
    assert isinstance(gen, CapsuleGenerator)
    metrics = train(cfg)
    assert {"train/g_loss", "train/d_loss", "train/d_g_z"} <= set(metrics)
    assert torch.isfinite(torch.tensor([metrics["train/g_loss"], metrics["train/d_loss"]])).all()
