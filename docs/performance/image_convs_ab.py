"""A/B of ``capsgan.models.image_convs`` on a whole GAN training step (issue 12, item 7).

A = the models as configured (the image-side convolutions are ``ImageConv2d`` /
``ImageConvTranspose2d``: matmul + fold for the image gradient and the generator's last layer);
B = the same models, same weights, with those layers swapped for plain ``nn.Conv2d`` /
``nn.ConvTranspose2d`` (oneDNN). One process, one torch thread, both variants built from one
seed; the step is the GAN module's sequence (one discriminator step on a real and a generated
half, then one generator step with the non-saturating loss, Adam on each network). The variants
are timed INTERLEAVED, A then B, for ``--alternations`` rounds after an untimed warm-up, so a
machine whose speed drifts (other load, thermal) moves both alike. Per alternation the script
prints each variant's median step time and B/A; B/A > 1 means the custom layers are faster.
The decision rule of the issue: keep image_convs only if B/A >= 1.10 on an idle machine.

    python docs/performance/image_convs_ab.py                       # fp32, cnn and capsule_small
    python docs/performance/image_convs_ab.py --bf16                # under bf16 autocast
    python docs/performance/image_convs_ab.py --alternations 3 --steps 2 --warmup 1   # smoke

``models/image_convs.py`` was deleted after this script was committed: run the script from
that commit, d018723, where the layers still exist (docs/performance.md says how); B/A >= 1.10
on an idle machine would justify restoring them.

Writes ``--out`` (default ``image_convs_ab.json`` in the current folder) with every step time.
Run it on an idle machine; ``DATA_DIR`` is not needed (the real batch is random, data loading
is not part of the comparison).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra import compose, initialize_config_dir
from torch import Tensor, nn

from capsgan.losses import discriminator_loss, generator_loss
from capsgan.models.image_convs import ImageConv2d, ImageConvTranspose2d

CONF = Path(__file__).resolve().parents[2] / "conf"


def build(discriminator: str, seed: int) -> tuple[nn.Module, nn.Module, Any]:
    """The generator and discriminator of ``python src/train.py discriminator=<name>``."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("train", [f"discriminator={discriminator}"])
    torch.manual_seed(seed)
    gen = hydra.utils.instantiate(cfg.generator)
    disc = hydra.utils.instantiate(cfg.discriminator)
    return gen, disc, cfg


def plain_convs(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every image-side layer replaced by its torch parent class,
    weights copied: the only difference between A and B."""
    model = copy.deepcopy(model)
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, ImageConv2d):
                plain: nn.Module = nn.Conv2d(
                    child.in_channels, child.out_channels, child.kernel_size, child.stride,
                    child.padding, bias=child.bias is not None,
                )  # fmt: skip
            elif isinstance(child, ImageConvTranspose2d):
                plain = nn.ConvTranspose2d(
                    child.in_channels, child.out_channels, child.kernel_size, child.stride,
                    child.padding, child.output_padding, bias=child.bias is not None,
                )  # fmt: skip
            else:
                continue
            plain.load_state_dict(child.state_dict())
            setattr(parent, name, plain)
            swapped += 1
    if not swapped:
        raise SystemExit(f"{type(model).__name__} has no image_convs layer: nothing to compare")
    return model


class Step:
    """One GAN training step (D step, then G step) of one variant, with its own optimizers."""

    def __init__(self, gen: nn.Module, disc: nn.Module, cfg: Any, bf16: bool) -> None:
        self.gen, self.disc = gen.train(), disc.train()
        betas = tuple(cfg.module.betas)
        self.opt_g = torch.optim.Adam(gen.parameters(), lr=float(cfg.lr), betas=betas)
        self.opt_d = torch.optim.Adam(disc.parameters(), lr=float(cfg.lr), betas=betas)
        self.kind = disc.score_kind
        self.latent_dim = int(cfg.latent_dim)
        self.bf16 = bf16

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.bf16:  # what trainer.precision=bf16-mixed does on the CPU
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def __call__(self, real: Tensor) -> None:
        n = real.shape[0]
        with self.autocast():
            with torch.no_grad():
                fake = self.gen(torch.randn(n, self.latent_dim))
            d_loss = discriminator_loss(self.disc(real), self.disc(fake), self.kind)
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()
        self.disc.requires_grad_(False)  # as Lightning's toggle_optimizer: D is frozen
        with self.autocast():
            g_loss = generator_loss(self.disc(self.gen(torch.randn(n, self.latent_dim))), self.kind)
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        self.disc.requires_grad_(True)


def timed(step: Step, real: Tensor, steps: int) -> list[float]:
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step(real)
        times.append(time.perf_counter() - start)
    return times


def compare(name: str, args: argparse.Namespace) -> dict[str, Any]:
    gen, disc, cfg = build(name, args.seed)
    variants = {
        "A_image_convs": Step(gen, disc, cfg, args.bf16),
        "B_plain": Step(plain_convs(gen), plain_convs(disc), cfg, args.bf16),
    }
    channels, size = int(cfg.data.channels), int(cfg.data.image_size)
    real = torch.rand(args.batch_size, channels, size, size) * 2 - 1
    for step in variants.values():
        timed(step, real, args.warmup)
    rounds = []
    for i in range(args.alternations):
        medians = {}
        for label, step in variants.items():  # A then B, every round
            medians[label] = statistics.median(timed(step, real, args.steps))
        ratio = medians["B_plain"] / medians["A_image_convs"]
        rounds.append({**medians, "b_over_a": ratio})
        print(
            f"{name:<14} alternation {i + 1}/{args.alternations}: A (image_convs) "
            f"{medians['A_image_convs'] * 1e3:8.1f} ms  B (nn.Conv2d) "
            f"{medians['B_plain'] * 1e3:8.1f} ms  B/A {ratio:.3f}",
            flush=True,
        )
    ratios = [r["b_over_a"] for r in rounds]
    summary = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
    print(
        f"{name:<14} B/A over {len(ratios)} alternations: median {summary['median']:.3f} "
        f"(min {summary['min']:.3f}, max {summary['max']:.3f}); keep image_convs only if >= 1.10"
    )
    return {"discriminator": name, "rounds": rounds, "b_over_a": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--discriminators", nargs="+", default=["cnn", "capsule_small"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--alternations", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant and round")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per variant")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (bf16-mixed)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="image_convs_ab.json")
    args = parser.parse_args()
    if args.alternations < 1 or args.steps < 1:
        parser.error("--alternations and --steps must be >= 1")
    torch.set_num_threads(args.threads)
    results = [compare(name, args) for name in args.discriminators]
    meta = {
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()),
        "precision": "bf16-mixed" if args.bf16 else "32",
        **{k: v for k, v in vars(args).items() if k not in ("out", "discriminators")},
    }
    Path(args.out).write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
