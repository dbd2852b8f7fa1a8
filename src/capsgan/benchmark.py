"""Training-speed benchmark (``python src/bench.py``, ``conf/bench.yaml``): what one GAN
step costs through Lightning and in :class:`BareLoop`, and where the time goes; each figure
is defined in docs/performance.md. Repeats of things compared are interleaved, so that load
from other processes hits both alike.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import itertools
import math
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from capsgan.atomic_write import write_json_atomically
from capsgan.config import validate_bench_config
from capsgan.data import ImageDataModule
from capsgan.errors import ConfigError
from capsgan.gan_module import GAN, adversarial_step
from capsgan.hardware import check_speed_switches, resolve_precision
from capsgan.models.capsules import RoutingCapsules, squash
from capsgan.models.interface import supports_capsule_trace
from capsgan.run_info import git_state, machine, package_versions
from capsgan.training import build_gan

# The issues' targets (figure: comparison, threshold) for a CPU run (issue 12) and a CUDA
# run (issue 22, an H200-class card: FLOP ratio at batch 512 in bf16, step time at batch 64)
TARGETS = {
    "overhead_ratio_min": (">=", 0.90),
    "capsule_flops_ratio_min": (">=", 0.70),
    "routing_share_at_3_max": ("<=", 0.20),
    "data_images_per_s": (">=", 100_000.0),
}
GPU_TARGETS = {"overhead_ratio_min": (">=", 0.90), "capsule_flops_ratio_min": (">=", 0.30),
               "capsule_step_ms_max": ("<=", 5.0)}  # fmt: skip
MATMUL_SIZE = {"cpu": 2048, "cuda": 8192}  # the matmul's side when matmul_size is null


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a wall-clock reading covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    """Start :func:`peak_memory_mb` afresh: GPU allocator statistics; on a CPU the RSS
    high-water mark, through ``/proc/self/clear_refs`` on Linux."""
    if device.type == "cuda":
        return torch.cuda.reset_peak_memory_stats(device)
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory_mb(device: torch.device) -> float:
    """max_memory_allocated on a GPU; on a CPU ``VmHWM`` (else the process-wide ``ru_maxrss``)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    unit = 2**20 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, else KiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / unit


def time_interleaved(
    fns: dict[str, Callable[[], None]], device: torch.device, warmup: int, repeats: int
) -> dict[str, float]:
    """Median seconds per call of each function, the calls interleaved repeat by repeat."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def load_average() -> list[float]:
    with contextlib.suppress(OSError):
        return [round(x, 2) for x in os.getloadavg()]
    return []


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


class BroadcastRouting(nn.Module):
    """Routing as most public PyTorch CapsNet code writes it, for comparison only: one
    broadcast ``torch.matmul(W[out, in, d_out, d_in], u[B, 1, in, d_in, 1])`` (W expanded
    over the batch), then broadcast multiply-and-sum. It copies one of our
    :class:`RoutingCapsules`' weights and semantics (agreement from a detached u_hat but in
    the last iteration): the same function, another formulation."""

    def __init__(self, ours: RoutingCapsules) -> None:
        super().__init__()
        self.iterations = ours.iterations
        w = ours.weight.detach().view(ours.in_caps, ours.in_dim, ours.out_caps, ours.out_dim)
        self.weight = nn.Parameter(w.permute(2, 0, 3, 1).contiguous())  # (out, in, d_out, d_in)

    def forward(self, u: Tensor) -> Tensor:
        u_hat = torch.matmul(self.weight, u[:, None, :, :, None]).squeeze(-1)  # (B, out, in, d)
        u_detached = u_hat.detach()
        logits = torch.zeros_like(u_hat[..., :1])  # (B, out, in, 1)
        for r in range(self.iterations):
            c = torch.softmax(logits, dim=1)
            last = r == self.iterations - 1
            v = squash((c * (u_hat if last else u_detached)).sum(dim=2))  # (B, out, d)
            if not last:
                logits = logits + (u_detached * v.unsqueeze(2)).sum(dim=-1, keepdim=True)
        return v


def discriminator(cfg: DictConfig, name: str, iterations: int | None) -> nn.Module:
    """Preset ``name``, with ``routing_iterations`` set when given (presets that route)."""
    kwargs = {} if iterations is None else {"routing_iterations": iterations}
    return hydra.utils.instantiate(cfg.presets[name], **kwargs)


def build_module(cfg: DictConfig, name: str, iterations: int | None) -> GAN:
    torch.manual_seed(cfg.seed)
    generator = hydra.utils.instantiate(cfg.generator)
    return build_gan(cfg, generator, discriminator(cfg, name, iterations))


def build_datamodule(cfg: DictConfig, batch_size: int) -> ImageDataModule:
    dm = hydra.utils.instantiate(cfg.data, batch_size=batch_size)
    dm.prepare_data(), dm.setup("fit")
    return dm


# Lightning precision -> the autocast dtype its plugin runs the step under (None: none)
AUTOCAST = {"32-true": None, "32": None, "bf16-mixed": torch.bfloat16}


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """What Lightning's precision plugin runs the step under, for the plain-PyTorch code."""
    if precision not in AUTOCAST:
        raise ConfigError(
            f"the benchmark's bare loop runs the GAN step under the autocast of precision "
            f"{' / '.join(AUTOCAST)}, not {precision!r} (a gradient scaler it does not "
            "have). Pick one of those (trainer.precision=...), or add the precision to "
            "capsgan.benchmark.AUTOCAST and BareLoop."
        )
    dtype = AUTOCAST[precision]
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


class BareLoop:
    """:func:`capsgan.gan_module.adversarial_step` (what ``GAN.training_step`` runs) in a
    plain PyTorch loop under the Trainer precision's autocast, updating the networks as
    :class:`capsgan.gan_module.Updates` asks: the other network frozen, ``backward``,
    ``clip_grad_norm_``, Adam optimizers from ``configure_optimizers``; no Lightning code."""

    def __init__(self, module: GAN, precision: str, data: Iterator | None = None) -> None:
        autocast(torch.device("cpu"), precision)  # a precision it cannot run: refused now
        self.module, self.precision, self.data = module, precision, data
        opt_g, opt_d = module.configure_optimizers()
        self.optimizers = {"generator": opt_g, "discriminator": opt_d}
        self.generator_steps = 0  # the module's global_step

    @contextlib.contextmanager
    def training(self, network: str) -> Iterator[None]:
        other = "generator" if network == "discriminator" else "discriminator"
        frozen = [p for p in getattr(self.module, other).parameters() if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p in frozen:
                p.requires_grad_(True)

    def update(self, network: str, loss: Tensor) -> None:
        optimizer, clip = self.optimizers[network], self.module.hp.gradient_clip_val
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], clip)
        optimizer.step()
        self.generator_steps += network == "generator"

    def __call__(self, batch_idx: int, real: Tensor) -> dict[str, Tensor]:
        """One batch; its detached statistics, as ``GAN.training_step`` returns them."""
        with autocast(real.device, self.precision):
            return adversarial_step(self.module, real, batch_idx, self)

    def step(self, n: int = 1) -> None:
        for _ in range(n):
            self(*next(self.data))  # one (batch index, images) of ``data``

    def steps(self, n: int) -> Callable[[], None]:
        return functools.partial(self.step, n)


class StepClock(L.Callback):
    """Times repeats of ``steps`` Lightning batches after ``warmup`` ones; at each repeat's
    end it runs ``between`` (a timed bare-loop repeat), so the two paths alternate in time."""

    def __init__(self, device: torch.device, warmup: int, steps: int, repeats: int,
                 between: Callable[[], None]) -> None:  # fmt: skip
        self.device, self.warmup, self.steps, self.repeats = device, warmup, steps, repeats
        self.between, self.lightning, self.bare = between, [], []
        self._start, self._done = 0.0, 0  # batches finished

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        self._done += 1
        if self._done < self.warmup or (self._done - self.warmup) % self.steps:
            return
        synchronize(self.device)
        now = time.perf_counter()
        if self._done > self.warmup:
            self.lightning.append(now - self._start)
        if len(self.bare) < self.repeats:
            self.bare.append(time_interleaved({"b": self.between}, self.device, 0, 1)["b"])
        self._start = time.perf_counter()


def warm_bare_loop(cfg: DictConfig, name: str, iterations: int | None, batch_size: int,
                   device: torch.device) -> tuple[ImageDataModule, BareLoop, int]:  # fmt: skip
    """The data module and a :class:`BareLoop` of preset ``name`` at ``batch_size``, warmed
    up, and enough steps per repeat to last ``min_repeat_seconds`` (a cnn step takes
    milliseconds, a capsule one seconds). The peak memory counts from here."""
    reset_peak_memory(device)
    dm = build_datamodule(cfg, batch_size)
    module = build_module(cfg, name, iterations).to(device)
    data = (  # (batch index within its epoch, images): what Lightning hands training_step
        (batch_idx, real.to(device, non_blocking=True))
        for _epoch in itertools.count()  # the loader cycled
        for batch_idx, (real, _) in enumerate(dm.train_dataloader())
    )
    loop = BareLoop(module, str(cfg.trainer.precision), data)
    loop.step(cfg.warmup)
    one = time_interleaved({"s": loop.steps(1)}, device, 0, 1)["s"]
    return dm, loop, max(int(cfg.steps), math.ceil(cfg.min_repeat_seconds / one))


def fwd_bwd(module: nn.Module, x: Tensor, precision: str) -> Callable[[], None]:
    """A timed call: ``module(x)`` under the run's autocast, then backward of its sum into
    the parameters (and into ``x`` when it is a leaf that needs a gradient)."""

    def run() -> None:
        x.grad = None
        module.zero_grad(set_to_none=True)
        with autocast(x.device, precision):
            out = module(x)
        out.float().sum().backward()

    return run


def traced_routing(disc: nn.Module, x: Tensor) -> tuple[RoutingCapsules, Tensor]:
    """A routing layer of the shapes and iteration count ``disc.capsule_trace(x)`` reports,
    and the discriminator's own primary capsules for ``x`` as a leaf that collects a
    gradient: the routed layer's work, timed apart from the rest of the discriminator."""
    with torch.no_grad():
        trace = disc.capsule_trace(x)
    _, in_caps, in_dim = trace.primary.shape
    out_caps, out_dim = trace.u_hat.shape[2:]
    layer = RoutingCapsules(in_caps, in_dim, out_caps, out_dim, trace.iterations).to(x.device)
    return layer, trace.primary.detach().float().requires_grad_(True)


def effective_cfg(cfg: DictConfig, given: Iterable[str] | None = None) -> DictConfig:
    """The config with ``quick_overrides`` merged in when ``quick=true``, but for the keys
    ``given`` on the command line (default: this process's Hydra task overrides): quick mode
    sizes what the user left alone."""
    if not cfg.quick:
        return cfg
    quick = OmegaConf.create(OmegaConf.to_container(cfg.quick_overrides, resolve=True))
    if given is None:
        overrides = HydraConfig.get().overrides.task if HydraConfig.initialized() else []
        given = [str(o).split("=", 1)[0].lstrip("+~") for o in overrides]
    for key in given:
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(quick, parent) if parent else quick
        if isinstance(node, DictConfig):
            node.pop(leaf, None)
    return OmegaConf.merge(cfg, quick)


def measure_case(
    cfg: DictConfig, name: str, iterations: int | None, device: torch.device, out_dir: Path
) -> dict[str, Any]:
    tag = name if iterations is None else f"{name}_r{iterations}"
    dm, loop, steps = warm_bare_loop(cfg, name, iterations, cfg.batch_size, device)
    with FlopCounterMode(display=False) as counter:  # one GAN step, forward and backward
        loop.step()
    flops = counter.get_total_flops()

    # Lightning: warm-up + 1 untimed batches (as many as the bare loop ran before its
    # repeats), then repeats x steps timed ones, the bare-loop repeats run between them. The
    # training config's Trainer and logging (TensorBoard, progress bar); no validation or
    # checkpoints (they do not run per step).
    clock = StepClock(device, cfg.warmup + 1, steps, cfg.repeats, loop.steps(steps))
    callbacks: list[L.Callback] = [clock]
    if cfg.trainer.get("enable_progress_bar", True) and cfg.callbacks.get("progress_bar"):
        callbacks.append(hydra.utils.instantiate(cfg.callbacks.progress_bar))
    trainer = hydra.utils.instantiate(
        cfg.trainer,
        default_root_dir=str(out_dir),
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        strategy="auto",
        max_epochs=-1,  # small data sets: as many epochs as the batches need
        max_steps=cfg.warmup + 1 + cfg.repeats * steps,  # generator steps = batches here
        limit_train_batches=None,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        fast_dev_run=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=callbacks,
        logger=TensorBoardLogger(str(out_dir), name="tensorboard", version=tag),
    )
    trainer.fit(build_module(cfg, name, iterations), datamodule=dm)
    bare = statistics.median(clock.bare)
    images = cfg.batch_size * steps
    speed = images / statistics.median(clock.lightning[: cfg.repeats])
    result: dict[str, Any] = {
        "discriminator": name, "routing_iterations": iterations, "batch_size": cfg.batch_size,
        "steps_per_repeat": steps, "lightning_images_per_s": speed,
        "bare_images_per_s": images / bare, "overhead_ratio": speed / (images / bare),
        "step_ms": 1e3 * cfg.batch_size / speed,  # one batch
        "flops_per_step": flops, "achieved_flops_per_s": flops * steps / bare,
    }  # fmt: skip
    disc = loop.module.discriminator
    if supports_capsule_trace(disc):  # routing: all of RoutingCapsules, with its gradients
        _, real = next(loop.data)
        layer, u = traced_routing(disc, real)
        fns = {"d": fwd_bwd(disc, real, loop.precision), "r": fwd_bwd(layer, u, loop.precision)}
        t = time_interleaved(fns, device, cfg.warmup, cfg.repeats)
        result["routing_share"] = t["r"] / t["d"]
        # the iterations as the discriminator reports them, whatever its config calls them
        result["routing_iterations"] = layer.iterations
    result["peak_memory_mb"] = peak_memory_mb(device)
    result["epoch_seconds_estimate"] = len(dm.train_dataloader()) * cfg.batch_size / speed
    return result


def measure_scaling(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    """Bare-loop images/s of one capsule preset at several batch sizes."""
    rows, spec = [], cfg.scaling
    for batch_size in spec.batch_sizes:
        _, loop, steps = warm_bare_loop(
            cfg, spec.discriminator, spec.routing_iterations, batch_size, device
        )
        seconds = time_interleaved({"b": loop.steps(steps)}, device, 0, cfg.repeats)
        rows.append({"batch_size": batch_size, "peak_memory_mb": peak_memory_mb(device),
                     "bare_images_per_s": batch_size * steps / seconds["b"]})  # fmt: skip
    return {"discriminator": spec.discriminator, "routing_iterations": spec.routing_iterations,
            "rows": rows}  # fmt: skip


def measure_baseline(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    """Our routing layer vs :class:`BroadcastRouting` at a capsule preset's shapes,
    forward+backward from its primary capsules (whole discriminators would share the
    convolutions, which bound the ratio near 2x whatever the routing costs)."""
    spec, precision = cfg.baseline, str(cfg.trainer.precision)
    torch.manual_seed(cfg.seed)
    disc = discriminator(cfg, spec.discriminator, spec.routing_iterations).to(device)
    x = torch.randn(spec.batch_size, cfg.data.channels, cfg.data.image_size, cfg.data.image_size,
                    device=device)  # fmt: skip
    ours, u = traced_routing(disc, x)
    theirs = BroadcastRouting(ours).to(device)
    with torch.no_grad():
        same = torch.allclose(ours(u), theirs(u), rtol=1e-3, atol=1e-4)
    t = time_interleaved(
        {"ours": fwd_bwd(ours, u, precision), "baseline": fwd_bwd(theirs, u, precision)},
        device, cfg.warmup, cfg.repeats,
    )  # fmt: skip
    return {
        "discriminator": spec.discriminator, "routing_iterations": spec.routing_iterations,
        "batch_size": spec.batch_size, "precision": precision,
        "routing_layer_ours_ms": 1e3 * t["ours"], "routing_layer_baseline_ms": 1e3 * t["baseline"],
        "routing_layer_speedup": t["baseline"] / t["ours"], "outputs_match": bool(same),
    }  # fmt: skip


def measure_data(cfg: DictConfig) -> dict[str, Any]:
    """Images/s of the training loader alone (full passes, on the CPU, no model)."""
    loader = build_datamodule(cfg, cfg.batch_size).train_dataloader()
    epoch = {"data": lambda: sum(1 for _ in loader)}  # every batch, nothing done with it
    seconds = time_interleaved(epoch, torch.device("cpu"), 0, cfg.data_epochs)["data"]
    images = len(loader) * cfg.batch_size  # full batches: the training loader drops the last
    return {"batch_size": cfg.batch_size, "images_per_s": images / seconds}


def check_targets(result: dict[str, Any]) -> dict[str, Any]:
    """Each target of the run's device (TARGETS, or GPU_TARGETS on CUDA): its value,
    threshold and whether it is met."""
    cases = result["cases"]
    capsule = [c for c in cases if "routing_share" in c]
    at_3 = [c for c in capsule if c["routing_iterations"] == 3]
    values = {
        "overhead_ratio_min": min(c["overhead_ratio"] for c in cases),
        "capsule_flops_ratio_min": min((c["flops_ratio_vs_matmul"] for c in capsule), default=None),
        "routing_share_at_3_max": max((c["routing_share"] for c in at_3), default=None),
        "data_images_per_s": result["data_pipeline"]["images_per_s"],
        "capsule_step_ms_max": max(
            (c["step_ms"] for c in at_3 if c["discriminator"] == "capsule"), default=None
        ),
    }
    targets = GPU_TARGETS if result["meta"]["device"].startswith("cuda") else TARGETS
    return {
        key: {"value": values[key], "target": f"{op} {threshold:g}",
              "met": bool(values[key] >= threshold if op == ">=" else values[key] <= threshold)}
        for key, (op, threshold) in targets.items() if values[key] is not None
    }  # fmt: skip


def run_benchmark(cfg: DictConfig) -> dict[str, Any]:
    """Run every measurement of ``cfg`` (see ``conf/bench.yaml``); write and return the JSON."""
    validate_bench_config(cfg)  # the user's values, before quick mode sizes the rest
    cfg = effective_cfg(cfg)
    validate_bench_config(cfg)  # before minutes of measuring: every bad key, one paragraph each
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if cfg.device == "auto" else cfg.device)
    check_speed_switches(cfg, device.type)
    precision = resolve_precision(cfg, device.type)  # auto: as a training run on this device
    autocast(torch.device("cpu"), str(cfg.trainer.precision))  # one the bare loop runs
    threads = torch.get_num_threads()
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    try:
        return _run(cfg, device, precision.reason)
    finally:  # a caller in the same process (the test suite) keeps its thread count
        torch.set_num_threads(threads)


def _run(cfg: DictConfig, device: torch.device, precision_why: str) -> dict[str, Any]:
    out_path, precision = Path(cfg.output), str(cfg.trainer.precision)
    started, cpu = dt.datetime.now(dt.timezone.utc), cpu_model()
    n = cfg.matmul_size or MATMUL_SIZE.get(device.type, 2048)
    meta = {  # what run_info.json records for a training run, and the bench's settings
        "date": started.isoformat(timespec="seconds"), "quick": bool(cfg.quick),
        "device": str(device), "cpu_model": cpu,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu,
        "git": git_state(), "packages": package_versions(), "machine": machine(),
        "precision": precision, "precision_why": precision_why,
        "compile": bool(cfg.get("compile", False)),
        "channels_last": bool(cfg.get("channels_last", False)),
        "batch_size": cfg.batch_size, "warmup": cfg.warmup, "repeats": cfg.repeats,
        "steps": cfg.steps, "load_average_start": load_average(), "matmul_size": n,
    }  # fmt: skip
    # the dense matmul rate of this process: the ceiling the training step is compared to
    dtype = AUTOCAST[precision] or torch.float32
    a, b = torch.randn(2, n, n, device=device, dtype=dtype)
    seconds = time_interleaved({"mm": lambda: a @ b}, device, 1, max(cfg.repeats, 3))["mm"]
    matmul = 2 * n**3 / seconds
    result: dict[str, Any] = {"meta": meta, "matmul_flops_per_s": matmul,
                              "data_pipeline": measure_data(cfg)}  # fmt: skip
    cases = []
    for name in cfg.discriminators:
        routes = "routing_iterations" in cfg.presets[name]  # a constructor argument to sweep
        for iterations in cfg.routing_iterations if routes else [None]:
            case = measure_case(cfg, name, iterations, device, out_path.parent)
            case["flops_ratio_vs_matmul"] = case["achieved_flops_per_s"] / matmul
            cases.append(case)
            r = case["routing_iterations"]  # as the discriminator reports them
            fast, bare = case["lightning_images_per_s"], case["bare_images_per_s"]
            label = name if r is None else f"{name} r={r}"
            print(f"[bench] {label}: lightning {fast:.1f} img/s, bare {bare:.1f} img/s", flush=True)
    result["cases"] = cases
    result["scaling"] = measure_scaling(cfg, device)
    result["baseline"] = measure_baseline(cfg, device)
    result["targets"] = check_targets(result)
    result["meta"]["load_average_end"] = load_average()
    result["meta"]["seconds"] = (dt.datetime.now(dt.timezone.utc) - started).total_seconds()
    write_json_atomically(out_path, result)
    print(format_report(result))
    print(f"\nwritten: {out_path}")
    return result


def format_report(result: dict[str, Any]) -> str:
    meta = result["meta"]
    lines = [
        f"CapsuleGAN Lab benchmark, {meta['date']}, {meta['device_name']} ({meta['device']}, "
        f"{meta['machine']['torch_threads']} threads), torch {meta['packages']['torch']}, "
        f"lightning {meta['packages']['lightning']}, "
        f"precision {meta['precision']}, load {meta['load_average_start']} -> "
        f"{meta['load_average_end']}",
        f"dense matmul ({meta['matmul_size']}², {meta['precision']}): "
        f"{result['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s; data pipeline: "
        f"{result['data_pipeline']['images_per_s']:,.0f} images/s",
        "",
        f"{'discriminator':<14}{'iters':>6}{'Lightning img/s':>16}{'ms/step':>9}{'bare img/s':>12}"
        f"{'(a)/(b)':>9}{'GFLOP/step':>11}{'GFLOP/s':>9}{'/matmul':>9}{'routing':>9}"
        f"{'peak MB':>9}{'epoch s':>9}",
    ]
    for c in result["cases"]:
        share = "-" if c.get("routing_share") is None else f"{c['routing_share']:.1%}"
        lines.append(
            f"{c['discriminator']:<14}{c['routing_iterations'] or '-':>6}"
            f"{c['lightning_images_per_s']:>16.1f}{c['step_ms']:>9.2f}{c['bare_images_per_s']:>12.1f}"
            f"{c['overhead_ratio']:>9.3f}{c['flops_per_step'] / 1e9:>11.2f}"
            f"{c['achieved_flops_per_s'] / 1e9:>9.1f}{c['flops_ratio_vs_matmul']:>9.2f}"
            f"{share:>9}{c['peak_memory_mb']:>9.0f}"
            f"{c['epoch_seconds_estimate']:>9.0f}"
        )
    s = result["scaling"]
    lines += ["", f"batch-size scaling, bare loop, {s['discriminator']} routing "
              f"{s['routing_iterations']}:"]  # fmt: skip
    lines += [f"  batch {r['batch_size']:>4}: {r['bare_images_per_s']:8.1f} images/s, "
              f"peak {r['peak_memory_mb']:.0f} MB" for r in s["rows"]]  # fmt: skip
    b = result["baseline"]
    lines += [
        "",
        f"routing layer vs the public-code formulation ({b['discriminator']}'s shapes, routing "
        f"{b['routing_iterations']}, batch {b['batch_size']}, forward+backward): ours "
        f"{b['routing_layer_ours_ms']:.1f} ms, baseline {b['routing_layer_baseline_ms']:.1f} ms, "
        f"speed-up {b['routing_layer_speedup']:.2f}x (same outputs: {b['outputs_match']})",
        "",
        "targets:",
    ]
    for key, t in result["targets"].items():
        lines.append(f"  {key:<26} {t['value']:>12.4g}  {t['target']:<10} "
                     f"{'met' if t['met'] else 'NOT met'}")  # fmt: skip
    return "\n".join(lines)
