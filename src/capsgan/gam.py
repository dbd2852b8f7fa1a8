"""The Generative Adversarial Metric (Im et al. 2016) as Jaiswal et al. (2018) use it.

Two trained GANs M_a = (G_a, D_a) and M_b = (G_b, D_b) *battle*: each discriminator judges
the real test images and the other GAN's samples. With err the classification error rate
(a real image called fake, a generated one called real; "real" means the discriminator's
probability of real, :func:`capsgan.losses.probability_real` of its own ``score_kind``,
is at least 0.5):

    r_test    = err(D_a on x_test)   / err(D_b on x_test)
    r_samples = err(D_a on G_b(z))   / err(D_b on G_a(z))

The test ratio checks that neither discriminator is simply better at telling real test
images apart (over-fitted or weaker); only when it is close to 1 does the sample ratio
decide: r_samples < 1 means D_a sees through G_b's samples more often than D_b sees
through G_a's, so M_a wins; r_samples > 1, M_b wins. Im et al. call every other outcome a
tie; here "undecided" (r_test not ~ 1) is kept apart from "tie" (r_samples ~ 1).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from capsgan.cli import as_list
from capsgan.config import validate_battle_config
from capsgan.data import to_unit_range
from capsgan.errors import UserError
from capsgan.evaluation import DataSpec, real_images, write_results
from capsgan.generation import generate, load_discriminator, load_network
from capsgan.losses import probability_real
from capsgan.runs import checkpoint_run, resolve_checkpoints

log = logging.getLogger(__name__)


@dataclass
class Contender:
    label: str
    generator: nn.Module
    discriminator: nn.Module
    latent_dim: int  # the run's noise size, from its config (a generator need not say it)


def use_batch_statistics(module: nn.Module) -> None:
    """Normalise with each batch's own statistics, as in training, not the running ones.

    A GAN discriminator's BatchNorm sees batches of only real or only generated images in
    training, while its running statistics average the two kinds; in inference mode it
    therefore judges images under statistics it never trained with. In training mode with
    momentum 0 it normalises each (homogeneous) batch by itself and its running
    statistics stay untouched. Modules without BatchNorm are unaffected.
    """
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.train()
            layer.momentum = 0.0


def load_contender(
    path: str | Path, checkpoint: str = "last", batch_stats: bool = False
) -> tuple[Contender, DataSpec]:
    """A run folder or a checkpoint -> its generator and discriminator (CPU, eval mode)."""
    ckpts = resolve_checkpoints(path, checkpoint)
    if len(ckpts) != 1:
        raise UserError(
            f"{str(path)!r} is a sweep folder with {len(ckpts)} runs; a battle needs one GAN "
            "per side: pass a run folder or a checkpoint (lists a=[...] b=[...] battle pairwise)."
        )
    info = checkpoint_run(ckpts[0])
    generator, discriminator = load_network(info, "generator")[0], load_discriminator(info)
    if batch_stats:
        use_batch_statistics(discriminator)
    contender = Contender(info.label, generator, discriminator, info.latent_dim)
    return contender, DataSpec.of(info.cfg.data)


@torch.no_grad()
def called_real(discriminator: nn.Module, images: Tensor, batch_size: int = 500) -> Tensor:
    """Per image, whether ``discriminator`` calls it real: a bool tensor (N,)."""
    kind = discriminator.score_kind
    out = [
        probability_real(discriminator(x).float(), kind) >= 0.5 for x in images.split(batch_size)
    ]
    return torch.cat(out)


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator; 1 when both are 0 (equally error-free), inf when only the
    denominator is."""
    if denominator == 0:
        return 1.0 if numerator == 0 else math.inf
    return numerator / denominator


@dataclass
class Battle:
    a: str
    b: str
    err_a_test: float
    err_b_test: float
    err_a_on_b: float  # D_a on G_b's samples: share called real
    err_b_on_a: float  # D_b on G_a's samples
    r_test: float = field(init=False)
    r_samples: float = field(init=False)
    r_test_ci95: tuple[float, float] = field(init=False)
    r_samples_ci95: tuple[float, float] = field(init=False)
    winner: str = field(init=False)  # "a", "b", "tie" or "undecided"
    reason: str = field(init=False)
    num_test: int
    num_samples: int
    tolerance: float

    def __post_init__(self) -> None:
        self.r_test = ratio(self.err_a_test, self.err_b_test)
        self.r_samples = ratio(self.err_a_on_b, self.err_b_on_a)
        n, m = self.num_test, self.num_samples
        self.r_test_ci95 = ci95(self.r_test, self.err_a_test, n, self.err_b_test, n)
        self.r_samples_ci95 = ci95(self.r_samples, self.err_a_on_b, m, self.err_b_on_a, m)
        self.winner, self.reason = verdict(self.r_test, self.r_samples, self.tolerance)


def verdict(r_test: float, r_samples: float, tolerance: float) -> tuple[str, str]:
    """Im et al.'s rule: the sample ratio decides only if |r_test - 1| <= tolerance."""
    if not abs(r_test - 1.0) <= tolerance:
        return "undecided", (
            f"r_test = {r_test:.3f} is not within 1 +- {tolerance}: one discriminator "
            "classifies the real test images better, so the sample ratio is not compared"
        )
    if abs(r_samples - 1.0) <= 1e-12:
        return "tie", "r_test ~ 1 and r_samples = 1"
    if r_samples < 1.0:
        return "a", "r_test ~ 1 and r_samples < 1: D_a errs less on G_b than D_b on G_a"
    return "b", "r_test ~ 1 and r_samples > 1: D_b errs less on G_a than D_a on G_b"


def ci95(r: float, p1: float, n1: int, p2: float, n2: int) -> tuple[float, float]:
    """95 % interval of the ratio r = p1 / p2 of two binomial error rates (p1 of n1, p2 of
    n2 trials), by the delta-method standard error of log r; NaN when either rate is 0."""
    if p1 <= 0 or p2 <= 0:
        return (math.nan, math.nan)
    se = math.sqrt((1 - p1) / (n1 * p1) + (1 - p2) / (n2 * p2))
    return (r * math.exp(-1.96 * se), r * math.exp(1.96 * se))


def battle(
    a: Contender,
    b: Contender,
    test_images: Tensor,
    num_samples: int = 10_000,
    seed: int = 0,
    tolerance: float = 0.1,
    batch_size: int = 500,
) -> Battle:
    """Swap the discriminators of ``a`` and ``b``; ``test_images`` in [-1, 1] (N, C, H, W)."""

    def share_real(discriminator: nn.Module, images: Tensor) -> float:
        return called_real(discriminator, images, batch_size).double().mean().item()

    def samples(c: Contender) -> Tensor:  # both generators draw the same seeded noise
        z = torch.randn(num_samples, c.latent_dim, generator=torch.Generator().manual_seed(seed))
        return generate(c.generator, z, batch_size)

    errors = (
        1.0 - share_real(a.discriminator, test_images),
        1.0 - share_real(b.discriminator, test_images),
        share_real(a.discriminator, samples(b)),
        share_real(b.discriminator, samples(a)),
    )
    return Battle(a.label, b.label, *errors, len(test_images), num_samples, tolerance)


@torch.no_grad()  # scoped: callers in the same process keep autograd
def run_battle(cfg: DictConfig) -> tuple[list[Battle], Path]:
    """``src/battle.py`` (conf/battle.yaml): battle a[i] against b[i], print, write JSON."""
    validate_battle_config(cfg)  # every key and `out`, before any GAN is loaded
    results: list[Battle] = []
    test_cache: dict[DataSpec, Tensor] = {}  # test_samples images of each data set
    counts = {k: int(cfg[k]) for k in ("num_samples", "seed", "batch_size")}
    for path_a, path_b in zip(as_list(cfg.a), as_list(cfg.b), strict=True):
        a, spec_a = load_contender(str(path_a), str(cfg.checkpoint), bool(cfg.batch_stats))
        b, spec_b = load_contender(str(path_b), str(cfg.checkpoint), bool(cfg.batch_stats))
        if spec_a != spec_b:
            raise UserError(
                f"{a.label} was trained on {spec_a.name} {spec_a.shape} and {b.label} on "
                f"{spec_b.name} {spec_b.shape}; a battle needs two GANs of the same data set."
            )
        if spec_a not in test_cache:
            images, _ = real_images(spec_a, str(cfg.data_root), "test", cfg.test_samples)
            test_cache[spec_a] = to_unit_range(images)
        log.info("battle: %s vs %s", a.label, b.label)
        results.append(battle(a, b, test_cache[spec_a], tolerance=float(cfg.tolerance), **counts))
    columns = ["a", "b", "err D_a test", "err D_b test", "r_test", "err D_a(G_b)",
               "err D_b(G_a)", "r_samples", "winner"]  # fmt: skip
    body = [
        [r.a, r.b, *(f"{v:.4f}" for v in (r.err_a_test, r.err_b_test)), f"{r.r_test:.3f}",
         *(f"{v:.4f}" for v in (r.err_a_on_b, r.err_b_on_a)), f"{r.r_samples:.3f}",
         {"a": f"a: {r.a}", "b": f"b: {r.b}"}.get(r.winner, r.winner)]  # or tie, undecided
        for r in results
    ]  # fmt: skip
    title = (
        f"GAM battles (Im et al. 2016): winner by r_samples when |r_test - 1| <= {cfg.tolerance}"
    )
    keys = ("checkpoint", "num_samples", "test_samples", "seed", "tolerance", "batch_stats")
    battles = [asdict(r) for r in results]
    return results, write_results(cfg.out, cfg, keys, (title, columns, body), battles=battles)
