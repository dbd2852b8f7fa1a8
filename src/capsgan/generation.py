"""Pictures from a trained GAN: sample grids, latent morphing, the learning-process film.

The founding slides' demonstrations, rebuilt from what a run leaves on disk:

* the *GAN learning process*: the fixed-noise grids ``<run>/samples/epoch_NNNN.png``
  (written by :class:`capsgan.callbacks.SampleGrid`) as one animated GIF and one PNG strip
  of selected epochs;
* *playing with input parameters*: images along straight (``lerp``) or great-circle
  (``slerp``) paths between random latent points, as a strip (one row per pair) and a GIF
  (one frame per step), plus a plain sample grid.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from PIL import Image, ImageDraw
from torch import Tensor, nn
from torchvision.transforms.functional import to_pil_image
from torchvision.utils import make_grid

from capsgan.config import check_output_dir, validate_generate_config
from capsgan.errors import ConfigError, UserError, brief
from capsgan.inputs import read_checkpoint, read_image
from capsgan.runs import CheckpointRun, checkpoint_folder, checkpoint_run, sample_grids

log = logging.getLogger(__name__)

CAPTION_HEIGHT = 14  # pixels above each grid of the learning-process strip for "epoch N"


# -- loading ------------------------------------------------------------------------------


def load_network(
    run: CheckpointRun, network: str, weights: bool = True
) -> tuple[nn.Module, dict[str, Tensor]]:
    """``network`` (``generator`` / ``discriminator``) of a run, rebuilt from its config, in
    eval mode on the CPU: with the checkpoint's weights (``weights``) or as initialised.
    Also returns the checkpoint's whole ``state_dict`` (empty without ``weights``)."""
    fix = "Pass config_path= the config of the run that wrote the checkpoint."
    try:
        module = hydra.utils.instantiate(run.cfg[network])
    except Exception as err:
        raise ConfigError(
            f"the {network} described by {str(run.config_path)!r} cannot be built "
            f"({brief(err)}). {fix}"
        ) from err
    if not weights:
        return module.eval(), {}
    state = read_checkpoint(run.ckpt)["state_dict"]
    prefix = f"{network}."
    own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not own:
        raise UserError(
            f"{str(run.ckpt)!r} holds no {network} weights (no '{prefix}*' keys in its "
            "state_dict); it is not a checkpoint of capsgan's GAN module."
        )
    try:
        module.load_state_dict(own)
    except RuntimeError as err:
        raise ConfigError(
            f"the {network} weights in {str(run.ckpt)!r} do not fit the {network} described "
            f"by {str(run.config_path)!r} ({err}). {fix}"
        ) from err
    return module.eval(), state


def load_generator(
    ckpt_path: str | Path, config_path: str | Path | None = None, device: str = "cpu"
) -> tuple[nn.Module, Tensor | None]:
    """The generator of a training checkpoint (eval mode, on ``device``) and its ``fixed_z``;
    the run's config is ``config_path``, else the ``.hydra/config.yaml`` of its run folder.
    The checkpoint is mapped to the CPU first, so one written on a GPU loads anywhere."""
    generator, state = load_network(checkpoint_run(Path(ckpt_path), config_path), "generator")
    return generator.to(device), state.get("fixed_z")


def load_discriminator(run: CheckpointRun, weights: bool = True) -> nn.Module:
    """The run's discriminator, frozen: trained, or (not ``weights``) as initialised with the
    run's seed, for an untrained control."""
    torch.manual_seed(int(run.seed or 0))
    return load_network(run, "discriminator", weights)[0].requires_grad_(False)


# -- latent paths --------------------------------------------------------------------------


def lerp(z0: Tensor, z1: Tensor, steps: int) -> Tensor:
    """``steps`` points on the straight line from z0 (D,) to z1 (D,), both included: (steps, D)."""
    t = torch.linspace(0.0, 1.0, steps, dtype=z0.dtype, device=z0.device).unsqueeze(1)
    return torch.lerp(z0.unsqueeze(0), z1.unsqueeze(0), t)  # exact at t = 0 and t = 1


def slerp(z0: Tensor, z1: Tensor, steps: int) -> Tensor:
    """``steps`` points on the great circle from z0 to z1, both included: (steps, D).

    White, "Sampling Generative Networks" (2016): Gaussian latents concentrate near a
    sphere, and the straight line between two of them passes through the low-norm middle
    that the generator rarely saw; the spherical path keeps a typical norm. Falls back to
    :func:`lerp` for (anti)parallel endpoints, where the great circle is undefined.
    """
    cos = torch.dot(z0 / z0.norm(), z1 / z1.norm()).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    if torch.sin(omega).abs() < 1e-6:
        return lerp(z0, z1, steps)
    t = torch.linspace(0.0, 1.0, steps, dtype=z0.dtype, device=z0.device).unsqueeze(1)
    path = (torch.sin((1 - t) * omega) * z0 + torch.sin(t * omega) * z1) / torch.sin(omega)
    path[0], path[-1] = z0, z1  # exact endpoints, free of rounding in the sines
    return path


# -- images ---------------------------------------------------------------------------------


@torch.no_grad()
def generate(generator: nn.Module, z: Tensor, batch_size: int = 256) -> Tensor:
    """Images (N, C, H, W) in [-1, 1] for latents z (N, D), on the CPU."""
    device = next(generator.parameters(), torch.empty(0)).device  # a module may have none
    return torch.cat([generator(chunk.to(device)).float().cpu() for chunk in z.split(batch_size)])


def to_grid_image(images: Tensor, nrow: int) -> Image.Image:
    """Images in [-1, 1] -> one PIL grid, scaled like the training run's sample grids."""
    return to_pil_image(make_grid(images, nrow=nrow, normalize=True, value_range=(-1, 1)))


def save_gif(frames: Sequence[Image.Image], path: Path, frame_ms: int) -> Path:
    """An endlessly looping GIF with one frame per image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    first, *rest = frames
    # Pillow merges a frame identical to its predecessor into it (one longer frame)
    first.save(path, save_all=True, append_images=rest, duration=frame_ms, loop=0)
    return path


def morph(
    generator: nn.Module,
    z_start: Tensor,
    z_end: Tensor,
    steps: int,
    out_dir: Path,
    spherical: bool = False,
    frame_ms: int = 100,
) -> tuple[Path, Path]:
    """Morphing between row i of z_start and of z_end (P, D) as ``morph_<lerp|slerp>.png``,
    one row of ``steps`` images per pair, and ``.gif``, one frame (a column of all pairs)
    per step of the walk."""
    path, name = (slerp, "morph_slerp") if spherical else (lerp, "morph_lerp")
    paths = torch.stack([path(a, b, steps) for a, b in zip(z_start, z_end, strict=True)])
    images = generate(generator, paths.flatten(0, 1))  # (P * steps, C, H, W), row-major
    by_step = images.unflatten(0, (len(paths), steps)).transpose(0, 1)  # (steps, P, C, H, W)
    frames = [to_grid_image(column, nrow=1) for column in by_step]
    gif = save_gif(frames, out_dir / f"{name}.gif", frame_ms)  # which makes out_dir
    to_grid_image(images, nrow=steps).save(out_dir / f"{name}.png")
    return out_dir / f"{name}.png", gif


# -- the learning process ---------------------------------------------------------------------


def pick_evenly(items: Sequence[int], count: int) -> list[int]:
    """``count`` items spread evenly over ``items``, first and last included."""
    if count >= len(items):
        return list(items)
    if count <= 1:
        return [items[-1]]
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)]


def learning_process(
    run_dir: Path,
    out_dir: Path,
    strip_epochs: int | Sequence[int] = 8,
    frame_ms: int = 200,
) -> tuple[Path, Path]:
    """The fixed-noise grids ``samples/epoch_NNNN.png`` of a run as ``learning_process.gif``,
    one frame per saved epoch, and ``learning_process.png``, the grids of ``strip_epochs``
    (a count, spread evenly with first and last, or a list of epochs, from 1 as in the file
    names) side by side, each captioned with its epoch."""
    grids = sample_grids(run_dir, "epoch")
    if not grids:
        raise UserError(
            f"no sample grids found in {str(run_dir / 'samples')!r}: run_dir must be a "
            "training run folder whose SampleGrid callback wrote samples/epoch_NNNN.png "
            "(callbacks.sample_grid in conf/callbacks/default.yaml)."
        )
    epochs = list(grids)
    if isinstance(strip_epochs, int):
        chosen = pick_evenly(epochs, strip_epochs)
    else:
        missing = sorted(set(strip_epochs) - set(epochs))
        if missing:
            raise ConfigError(
                f"strip_epochs asks for epochs {missing} but {str(run_dir / 'samples')!r} only "
                f"has grids of epochs {epochs[0]}..{epochs[-1]} ({len(epochs)} files); pick "
                "epochs from that range (from 1, as in the file names) or give a count."
            )
        chosen = list(strip_epochs)
    images = {e: read_image(p, "run_dir") for e, p in grids.items()}
    gif = save_gif([images[e] for e in epochs], out_dir / "learning_process.gif", frame_ms)
    tiles = [images[e] for e in chosen]  # each under a white band holding "epoch N"
    height = CAPTION_HEIGHT + max(t.height for t in tiles)
    strip = Image.new("RGB", (sum(t.width for t in tiles), height), "white")
    x = 0
    for epoch, tile in zip(chosen, tiles, strict=True):
        strip.paste(tile, (x, CAPTION_HEIGHT))
        ImageDraw.Draw(strip).text((x + 2, 1), f"epoch {epoch}", fill="black")
        x += tile.width
    png = out_dir / "learning_process.png"
    strip.save(png)
    return gif, png


# -- the generate.py entry point ------------------------------------------------------------------


def run_generate(cfg: DictConfig) -> list[Path]:
    """Everything ``src/generate.py`` writes for ``cfg`` (conf/generate.yaml); returns the files."""
    if not cfg.run_dir and not cfg.ckpt_path:
        raise ConfigError(
            "nothing to do: pass run_dir=<training run folder> for the learning-process GIF "
            "and strip, and/or ckpt_path=<run folder>/checkpoints/last.ckpt for a sample grid "
            "and latent morphing (see conf/generate.yaml)."
        )
    validate_generate_config(cfg)
    if cfg.out_dir:
        out_dir = Path(cfg.out_dir)
    elif cfg.ckpt_path:
        out_dir = checkpoint_folder(Path(cfg.ckpt_path)) / "generated" / Path(cfg.ckpt_path).stem
    else:
        out_dir = Path(cfg.run_dir) / "generated"
    check_output_dir(out_dir, "out_dir")
    written: list[Path] = []
    if cfg.run_dir:
        strip, frame_ms = cfg.strip_epochs, cfg.learning_frame_ms  # a count or a list of epochs
        written += learning_process(Path(cfg.run_dir), out_dir, strip, frame_ms)
    if cfg.ckpt_path:
        generator, fixed_z = load_generator(cfg.ckpt_path, cfg.config_path, cfg.device)
        latent_dim = checkpoint_run(Path(cfg.ckpt_path), cfg.config_path).latent_dim
        gen = torch.Generator().manual_seed(int(cfg.seed))
        grids = {"samples": torch.randn(cfg.num_samples, latent_dim, generator=gen)}
        out_dir.mkdir(parents=True, exist_ok=True)
        if fixed_z is not None:
            grids["fixed_noise"] = fixed_z
        for name, z in grids.items():
            to_grid_image(generate(generator, z), cfg.nrow).save(out_dir / f"{name}.png")
            written.append(out_dir / f"{name}.png")
        z_start = torch.randn(cfg.num_pairs, latent_dim, generator=gen)
        z_end = torch.randn(cfg.num_pairs, latent_dim, generator=gen)
        written += morph(
            generator, z_start, z_end, cfg.steps, out_dir, cfg.slerp, cfg.morph_frame_ms
        )
    for path in written:
        log.info("wrote %s", path)
    return written
