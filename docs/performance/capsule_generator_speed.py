"""How slow is the capsule generator? Seconds per generator step against the DCGAN one (issue 15).

For each discriminator, the two generators' GANs are built from one seed with the project's
presets (``generator=dcgan`` and ``generator=capsule``) and timed INTERLEAVED in one process,
so load that changes during the run hits both alike. Two figures per pair, median over
``--repeats`` after ``--warmup`` untimed calls:

* ``step``: one whole training step as the GAN module runs it (``benchmark.BareLoop``:
  a discriminator update on a real and a generated batch, then a generator update), which is
  the cost of one generator step in training;
* ``g_fwd_bwd``: the generator's own share, its forward and backward from ``z`` through
  a fixed discriminator's score (what the capsule layers add).

    python docs/performance/capsule_generator_speed.py                     # fp32, 1 thread
    python docs/performance/capsule_generator_speed.py --repeats 3 --warmup 1 --batch-size 8

The real batch is random noise in the data's shape (data loading is not part of it), so no
``DATA_DIR`` is needed. Writes ``--out`` (JSON) with the settings, the load average and the
medians.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from capsgan.benchmark import BareLoop, build_module, load_average, time_interleaved

CONF = Path(__file__).resolve().parents[2] / "conf"


def pair(discriminator: str, args: argparse.Namespace) -> dict[str, float]:
    """Median seconds of each measurement for the two generators against ``discriminator``."""
    fns, device = {}, torch.device("cpu")
    for generator in ("dcgan", "capsule"):
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
            cfg = compose(
                "bench", [f"generator={generator}", f"+discriminator@presets.d={discriminator}"]
            )
        module = build_module(cfg, "d", None)
        shape = (args.batch_size, cfg.data.channels, cfg.data.image_size, cfg.data.image_size)
        real = torch.rand(shape) * 2 - 1
        batch = iter(lambda real=real: (0, real), None)  # the same batch, forever
        loop = BareLoop(module, "32", batch)
        fns[f"step/{generator}"] = loop.steps(1)

        def g_fwd_bwd(module=module) -> None:
            z = module.sample_z(args.batch_size)
            module.discriminator(module.generator(z)).float().mean().backward()

        fns[f"g_fwd_bwd/{generator}"] = g_fwd_bwd
    return time_interleaved(fns, device, args.warmup, args.repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--discriminators", nargs="+", default=["cnn", "capsule_small"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="capsule_generator_speed.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = {
        "meta": {
            "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "threads": args.threads,
            "batch_size": args.batch_size,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "precision": "32",
            "load_average_before": load_average(),
        },
        "seconds": {},
    }
    for name in args.discriminators:
        times = pair(name, args)
        result["seconds"][name] = times
        step = times["step/capsule"] / times["step/dcgan"]
        gen = times["g_fwd_bwd/capsule"] / times["g_fwd_bwd/dcgan"]
        print(
            f"{name:14s} step: dcgan {times['step/dcgan'] * 1e3:7.1f} ms  capsule "
            f"{times['step/capsule'] * 1e3:7.1f} ms  ({step:.2f}x)   G fwd+bwd: dcgan "
            f"{times['g_fwd_bwd/dcgan'] * 1e3:6.1f} ms  capsule "
            f"{times['g_fwd_bwd/capsule'] * 1e3:6.1f} ms  ({gen:.2f}x)",
            flush=True,
        )
    result["meta"]["load_average_after"] = load_average()
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
