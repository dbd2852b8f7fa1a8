"""Pictures from a trained GAN: sample grids, latent morphing, the learning-process film.

The founding slides' demonstrations, rebuilt from what a run leaves on disk:

* the *GAN learning process*: the fixed-noise grids ``<run>/samples/epoch_NNNN.png``
  (written by :class:`capsgan.callbacks.SampleGrid`) as one animated GIF and one PNG strip
  of selected epochs;
* *playing with input parameters*: images along straight (``lerp``) or great-circle
  (``slerp``) paths between random latent points, as a strip (one row per pair) and a GIF
  (one frame per step), plus a plain sample grid.

A generator is rebuilt from the run's resolved config (``<run>/.hydra/config.yaml``, which
Hydra writes next to ``checkpoints/``) and the ``generator.*`` weights of a Lightning
checkpoint, loaded onto the CPU whatever device wrote it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image, ImageDraw
from torch import Tensor, nn
from torchvision.transforms.functional import to_pil_image
from torchvision.utils import make_grid

from capsgan.config import check_output_dir, validate_generate_config
from capsgan.errors import ConfigError, UserError, brief
from capsgan.inputs import latent_size, read_checkpoint, read_image
from capsgan.runs import CheckpointRun, checkpoint_folder, run_config, sample_grids

log = logging.getLogger(__name__)

CAPTION_HEIGHT = 14  # pixels above each grid of the learning-process strip for "epoch N"


# -- loading ------------------------------------------------------------------------------


def load_generator(
    ckpt_path: str | Path, config_path: str | Path | None = None, device: str = "cpu"
) -> tuple[nn.Module, Tensor | None]:
    """Rebuild the generator of a training checkpoint; return it (eval mode) and ``fixed_z``.

    Args:
        ckpt_path: a Lightning checkpoint of :class:`capsgan.gan_module.GAN`.
        config_path: the run's ``config.yaml``; by default the ``.hydra/config.yaml`` of the
            run folder holding ``checkpoints/``.
        device: where to put the generator; the checkpoint's tensors are first mapped to
            the CPU, so a checkpoint written on a GPU loads on a machine without one.

    The noise size is the run's (:func:`capsgan.inputs.latent_size` of its config), not
    an attribute of the generator.
    """
    cfg, config_path = run_config(ckpt_path, config_path)
    try:
        generator = hydra.utils.instantiate(cfg.generator)
    except Exception as err:
        raise ConfigError(
            f"the generator described by {str(config_path)!r} cannot be built "
            f"({brief(err)}). Pass config_path= the config of the "
            "run that wrote the checkpoint."
        ) from err
    weights, state = network_weights(ckpt_path, "generator")
    try:
        generator.load_state_dict(weights)
    except RuntimeError as err:
        raise ConfigError(
            f"the generator weights in {str(ckpt_path)!r} do not fit the generator described "
            f"by {str(config_path)!r} ({err}). Pass config_path= the config of the run that "
            "wrote this checkpoint."
        ) from err
    return generator.to(device).eval(), state.get("fixed_z")


def network_weights(
    ckpt_path: str | Path, network: str
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """The weights of one network (``generator`` / ``discriminator``) of a checkpoint of
    :class:`capsgan.gan_module.GAN`, keyed as the network's own ``state_dict``, and the
    checkpoint's whole ``state_dict``; a one-paragraph error for a file that is not one."""
    state = read_checkpoint(ckpt_path)["state_dict"]
    prefix = f"{network}."
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not weights:
        raise UserError(
            f"{str(ckpt_path)!r} holds no {network} weights (no '{prefix}*' keys in its "
            "state_dict); it is not a checkpoint of capsgan's GAN module."
        )
    return weights, state


def load_discriminator(run: CheckpointRun, weights: bool = True) -> nn.Module:
    """The run's discriminator in eval mode, on the CPU: trained (``weights``) or as
    initialised (seeded with the run's seed), for an untrained control."""
    torch.manual_seed(int(run.seed or 0))
    discriminator = hydra.utils.instantiate(run.cfg.discriminator)
    if weights:
        discriminator.load_state_dict(network_weights(run.ckpt, "discriminator")[0])
    return discriminator.eval().requires_grad_(False)


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


def interpolate_pairs(z_start: Tensor, z_end: Tensor, steps: int, spherical: bool) -> Tensor:
    """Paths between row i of z_start and row i of z_end (P, D): (P, steps, D)."""
    path = slerp if spherical else lerp
    return torch.stack([path(a, b, steps) for a, b in zip(z_start, z_end, strict=True)])


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


def sample_grid(generator: nn.Module, z: Tensor, path: Path, nrow: int = 8) -> Path:
    """A PNG grid of the generator's images for latents z (N, D)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    to_grid_image(generate(generator, z), nrow).save(path)
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
    """Morphing between pairs of latent points as ``morph_<lerp|slerp>.png`` and ``.gif``.

    The PNG has one row per pair, its ``steps`` columns walking from the pair's first
    point to its second; the GIF has ``steps`` frames, each a column of all pairs at one
    point of the walk.
    """
    paths = interpolate_pairs(z_start, z_end, steps, spherical)  # (P, steps, D)
    pairs = paths.shape[0]
    images = generate(generator, paths.flatten(0, 1))  # (P * steps, C, H, W), row-major
    name = "morph_slerp" if spherical else "morph_lerp"
    out_dir.mkdir(parents=True, exist_ok=True)
    strip = out_dir / f"{name}.png"
    to_grid_image(images, nrow=steps).save(strip)
    by_step = images.unflatten(0, (pairs, steps)).transpose(0, 1)  # (steps, P, C, H, W)
    frames = [to_grid_image(column, nrow=1) for column in by_step]
    return strip, save_gif(frames, out_dir / f"{name}.gif", frame_ms)


# -- the learning process ---------------------------------------------------------------------


def pick_evenly(items: Sequence[int], count: int) -> list[int]:
    """``count`` items spread evenly over ``items``, first and last included."""
    if count >= len(items):
        return list(items)
    if count <= 1:
        return [items[-1]]
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)]


def captioned(image: Image.Image, caption: str) -> Image.Image:
    """``image`` with a white band of :data:`CAPTION_HEIGHT` pixels above it holding ``caption``."""
    out = Image.new("RGB", (image.width, image.height + CAPTION_HEIGHT), "white")
    out.paste(image.convert("RGB"), (0, CAPTION_HEIGHT))
    ImageDraw.Draw(out).text((2, 1), caption, fill="black")
    return out


def learning_process(
    run_dir: Path,
    out_dir: Path,
    strip_epochs: int | Sequence[int] = 8,
    frame_ms: int = 200,
) -> tuple[Path, Path]:
    """The fixed-noise grids of a run as ``learning_process.gif`` and ``learning_process.png``.

    The GIF has one frame per saved epoch; the PNG strip puts the grids of the selected
    epochs side by side, each captioned with its epoch number (1 = after the first pass, as
    in the file names).

    Args:
        run_dir: a training run folder with ``samples/epoch_NNNN.png``.
        out_dir: where the two files go.
        strip_epochs: how many epochs the strip shows (evenly spaced, first and last
            included), or the list of epochs (from 1, as in the file names) to show.
        frame_ms: duration of one GIF frame.
    """
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
    tiles = [captioned(images[e], f"epoch {e}") for e in chosen]
    strip = Image.new("RGB", (sum(t.width for t in tiles), max(t.height for t in tiles)), "white")
    x = 0
    for tile in tiles:
        strip.paste(tile, (x, 0))
        x += tile.width
    png = out_dir / "learning_process.png"
    strip.save(png)
    return gif, png


# -- the generate.py entry point ------------------------------------------------------------------


def default_out_dir(cfg: DictConfig) -> Path:
    if cfg.out_dir:
        return Path(cfg.out_dir)
    if cfg.ckpt_path:
        ckpt = Path(cfg.ckpt_path)
        return checkpoint_folder(ckpt) / "generated" / ckpt.stem
    return Path(cfg.run_dir) / "generated"


def run_generate(cfg: DictConfig) -> list[Path]:
    """Everything ``src/generate.py`` writes for ``cfg`` (conf/generate.yaml); returns the files."""
    if not cfg.run_dir and not cfg.ckpt_path:
        raise ConfigError(
            "nothing to do: pass run_dir=<training run folder> for the learning-process GIF "
            "and strip, and/or ckpt_path=<run folder>/checkpoints/last.ckpt for a sample grid "
            "and latent morphing (see conf/generate.yaml)."
        )
    validate_generate_config(cfg)
    out_dir = default_out_dir(cfg)
    check_output_dir(out_dir, "out_dir")
    written: list[Path] = []
    if cfg.run_dir:
        epochs = cfg.strip_epochs
        epochs = [int(e) for e in epochs] if OmegaConf.is_list(epochs) else epochs
        written += learning_process(Path(cfg.run_dir), out_dir, epochs, cfg.learning_frame_ms)
    if cfg.ckpt_path:
        generator, fixed_z = load_generator(cfg.ckpt_path, cfg.config_path, cfg.device)
        gen = torch.Generator().manual_seed(int(cfg.seed))
        latent_dim = latent_size(*run_config(cfg.ckpt_path, cfg.config_path))
        z = torch.randn(cfg.num_samples, latent_dim, generator=gen)
        written.append(sample_grid(generator, z, out_dir / "samples.png", cfg.nrow))
        if fixed_z is not None:
            written.append(sample_grid(generator, fixed_z, out_dir / "fixed_noise.png", cfg.nrow))
        z_start = torch.randn(cfg.num_pairs, latent_dim, generator=gen)
        z_end = torch.randn(cfg.num_pairs, latent_dim, generator=gen)
        written += morph(
            generator, z_start, z_end, cfg.steps, out_dir, cfg.slerp, cfg.morph_frame_ms
        )
    for path in written:
        log.info("wrote %s", path)
    return written
