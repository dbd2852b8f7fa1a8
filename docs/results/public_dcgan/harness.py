"""Run a public PyTorch DCGAN unmodified and snapshot its generator for our FID.

Is the project's `cnn` arm a strong DCGAN, or a straw man? This runs Erik Linder-Noren's
`implementations/dcgan/dcgan.py` (github.com/eriklindernoren/PyTorch-GAN, a widely used
PyTorch GAN collection) as it is published -- its code is executed from a clone, never
copied here -- and, every time that script saves its own sample grid (every
`--sample_interval` batches), draws `--num-samples` images from its generator and writes
them as `<out>/samples_<batches>_<mode>.npz` (uint8, N x 28 x 28) for `src/evaluate.py`
to measure with the project's classifier FID.

The script trains 32x32 images (MNIST resized); the samples are resized back to 28x28
(bilinear, antialiased) for the classifier, and the real-data floor is measured on real
images that took the same 28 -> 32 -> 28 round trip, so the resize does not count against
it. Its generator is sampled twice: in eval mode (BatchNorm running statistics), as ours
is, and in train mode (batch statistics), as the script draws its own sample grids; the
BatchNorm state is restored afterwards, so the snapshots do not change its training.

    git clone https://github.com/eriklindernoren/PyTorch-GAN /tmp/PyTorch-GAN
    DATA_DIR=<folder holding MNIST/raw> python docs/results/public_dcgan/harness.py \
        --script /tmp/PyTorch-GAN/implementations/dcgan/dcgan.py --out /tmp/public_dcgan \
        -- --n_epochs 2 --sample_interval 469 --n_cpu 0
"""

from __future__ import annotations

import argparse
import copy
import os
import runpy
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.utils


def to_28(x: torch.Tensor) -> torch.Tensor:
    """(N, 1, 32, 32) in [-1, 1] -> (N, 28, 28) uint8, as the classifier takes them."""
    x = F.interpolate(x, size=28, mode="bilinear", antialias=True, align_corners=False)
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[:, 0]


def write_real_roundtrip(out: Path, n: int) -> None:
    """Real training images through the script's own transform (PIL resize to 32), then
    back to 28 like the samples: the best score a perfect generator of it could get."""
    import torchvision.transforms as T
    from torchvision.datasets import MNIST

    data = MNIST(os.environ.get("DATA_DIR", "./data"), train=True, download=False)
    transform = T.Compose([T.Resize(32), T.ToTensor(), T.Normalize([0.5], [0.5])])
    images = torch.stack([transform(data[i][0]) for i in range(n)])  # (n, 1, 32, 32)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "real_roundtrip.npz", images=to_28(images).numpy())


def write_ours_roundtrip(out: Path, checkpoints: list[str], n: int) -> None:
    """Our generators' samples (noise as the training callback draws it), upsampled to 32
    the way the script resizes its data, then back to 28: the same distortion as theirs."""
    from capsgan.evaluation import generated_batches
    from capsgan.generation import load_generator
    from capsgan.runs import checkpoint_run

    out.mkdir(parents=True, exist_ok=True)
    for ckpt in map(Path, checkpoints):
        generator, _ = load_generator(ckpt)
        with torch.no_grad():
            z_size = checkpoint_run(ckpt).latent_dim
            images = torch.cat(generated_batches(generator, n, 500, 0, "cpu", z_size))  # uint8
            x = F.interpolate(images.float() / 127.5 - 1, size=32, mode="bilinear", antialias=True)
        run = ckpt.parent.parent.name
        np.savez_compressed(out / f"ours_{run}_{ckpt.stem}.npz", images=to_28(x).numpy())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--script", required=True, help="path of the public dcgan.py")
    parser.add_argument("--out", required=True, help="folder for the samples and its files")
    parser.add_argument("--num-samples", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--real-roundtrip",
        action="store_true",
        help="instead: write the first --num-samples real training images after the same "
        "28 -> 32 -> 28 resizing as real_roundtrip.npz (their floor), and exit",
    )
    parser.add_argument(
        "--ours",
        nargs="+",
        metavar="CKPT",
        help="instead: write --num-samples images of each of our checkpoints after the same "
        "28 -> 32 -> 28 round trip as ours_<run>_<checkpoint>.npz (like for like), and exit",
    )
    parser.add_argument("args", nargs=argparse.REMAINDER, help="-- then the script's own flags")
    opts = parser.parse_args()
    out = Path(opts.out).resolve()
    if opts.real_roundtrip:
        write_real_roundtrip(out, opts.num_samples)
        return
    if opts.ours:
        write_ours_roundtrip(out, opts.ours, opts.num_samples)
        return
    script = Path(opts.script).resolve()
    data = Path(os.environ.get("DATA_DIR", "./data")).resolve()
    # the script reads MNIST from ../../data/mnist relative to where it runs
    work = out / "a" / "b"
    work.mkdir(parents=True, exist_ok=True)
    (out / "data").mkdir(exist_ok=True)
    link = out / "data" / "mnist"
    if not link.exists():
        link.symlink_to(data)
    os.chdir(work)
    torch.manual_seed(opts.seed)
    np.random.seed(opts.seed)

    original_save_image = torchvision.utils.save_image

    def save_image_and_snapshot(tensor, fp, *args, **kwargs):
        original_save_image(tensor, fp, *args, **kwargs)
        caller = sys._getframe(1).f_globals  # the script's module namespace
        generator, latent = caller["generator"], caller["opt"].latent_dim
        done = caller["batches_done"]
        was_training = generator.training
        saved = copy.deepcopy(generator.state_dict())  # train mode moves BatchNorm's stats
        for mode in ("eval", "train"):
            generator.train(mode == "train")
            rng = torch.Generator().manual_seed(0)
            images = []
            with torch.no_grad():
                for start in range(0, opts.num_samples, 500):
                    n = min(500, opts.num_samples - start)
                    images.append(to_28(generator(torch.randn(n, latent, generator=rng))))
            generator.load_state_dict(saved)
            name = f"samples_{done:06d}_{mode}.npz"
            np.savez_compressed(out / name, images=torch.cat(images).numpy())
        generator.train(was_training)
        print(f"[harness] {opts.num_samples} samples after {done} batches", flush=True)

    torchvision.utils.save_image = save_image_and_snapshot
    args = opts.args[1:] if opts.args[:1] == ["--"] else opts.args
    sys.argv = [str(script), *args]
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()
