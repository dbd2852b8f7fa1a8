"""generate.py: checkpoint loading, latent interpolation, grids, morphing and the learning film."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from PIL import Image

from capsgan.errors import ConfigError, UserError
from capsgan.generation import (
    CAPTION_HEIGHT,
    generate,
    lerp,
    load_generator,
    pick_evenly,
    run_generate,
    slerp,
)
from tests.conftest import CONF_DIR, ROOT, train_toy_run

EPOCHS = 3
GRID = 8 * (28 + 2) + 2  # the 64 fixed-noise samples, 8 per row, make_grid's 2-pixel padding


def side(n: int) -> int:
    """Pixels of n 28x28 images in a row of make_grid."""
    return n * (28 + 2) + 2


@pytest.fixture(scope="module")
def trained_run(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-epoch toy run folder (CNN discriminator, no quality metrics) with its .hydra config."""
    return train_toy_run(
        tmp_path_factory.mktemp("gen") / "run", tiny_data_dir, f"trainer.max_epochs={EPOCHS}",
        "trainer.limit_train_batches=2",
    )  # fmt: skip


def generate_cfg(*overrides: str) -> DictConfig:
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return compose(config_name="generate", overrides=list(overrides))


def frames(path: Path) -> tuple[int, tuple[int, int]]:
    with Image.open(path) as gif:
        return gif.n_frames, gif.size


def test_checkpoint_gives_sample_grid_and_morphing_strip_and_gif(trained_run, tmp_path) -> None:
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    cfg = generate_cfg(
        f"ckpt_path={ckpt}", f"out_dir={tmp_path}", "num_samples=6", "nrow=3",
        "num_pairs=2", "steps=5", "seed=1",
    )  # fmt: skip
    written = {p.name for p in run_generate(cfg)}
    assert written == {"samples.png", "fixed_noise.png", "morph_lerp.png", "morph_lerp.gif"}
    assert Image.open(tmp_path / "samples.png").size == (side(3), side(2))
    assert Image.open(tmp_path / "fixed_noise.png").size == (side(3), side(22))  # 64 in rows of 3
    assert Image.open(tmp_path / "morph_lerp.png").size == (side(5), side(2))  # a row per pair
    assert frames(tmp_path / "morph_lerp.gif") == (5, (side(1), side(2)))  # a frame per step

    cfg = generate_cfg(f"ckpt_path={ckpt}", f"out_dir={tmp_path}", "slerp=true", "steps=4")
    run_generate(cfg)
    assert frames(tmp_path / "morph_slerp.gif") == (4, (side(1), side(6)))


def test_same_seed_same_pictures_and_default_out_dir(trained_run) -> None:
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    first = Image.open(run_generate(generate_cfg(f"ckpt_path={ckpt}", "seed=3"))[0]).tobytes()
    again = run_generate(generate_cfg(f"ckpt_path={ckpt}", "seed=3"))[0]
    assert again == trained_run / "generated" / "last" / "samples.png"
    assert Image.open(again).tobytes() == first


def test_learning_process_gif_has_a_frame_per_epoch_and_strip_the_chosen_ones(
    trained_run, tmp_path
) -> None:
    run_generate(generate_cfg(f"run_dir={trained_run}", f"out_dir={tmp_path}", "strip_epochs=2"))
    assert frames(tmp_path / "learning_process.gif") == (EPOCHS, (GRID, GRID))
    # two epochs (first and last) side by side, each with its caption band
    assert Image.open(tmp_path / "learning_process.png").size == (2 * GRID, GRID + CAPTION_HEIGHT)

    run_generate(
        generate_cfg(f"run_dir={trained_run}", f"out_dir={tmp_path}", "strip_epochs=[1,2,3]")
    )
    assert Image.open(tmp_path / "learning_process.png").size == (3 * GRID, GRID + CAPTION_HEIGHT)
    with pytest.raises(ConfigError, match="strip_epochs"):
        run_generate(
            generate_cfg(f"run_dir={trained_run}", f"out_dir={tmp_path}", "strip_epochs=[1,8]")
        )


def test_pick_evenly_keeps_first_and_last() -> None:
    assert pick_evenly(list(range(20)), 4) == [0, 6, 13, 19]
    assert pick_evenly([0, 1], 8) == [0, 1]
    assert pick_evenly([0, 1, 2], 1) == [2]


@pytest.mark.parametrize("path", [lerp, slerp])
def test_interpolation_endpoints_equal_the_endpoint_samples(trained_run, path) -> None:
    generator, fixed_z = load_generator(trained_run / "checkpoints" / "last.ckpt")
    assert not generator.training and fixed_z is not None and fixed_z.shape == (64, 64)
    z0, z1 = torch.randn(2, generator.latent_dim, generator=torch.Generator().manual_seed(0))
    walk = path(z0, z1, 7)
    assert walk.shape == (7, generator.latent_dim)
    assert torch.equal(walk[0], z0) and torch.equal(walk[-1], z1)
    images, ends = generate(generator, walk), generate(generator, torch.stack([z0, z1]))
    torch.testing.assert_close(images[[0, -1]], ends)
    assert not torch.allclose(images[3], ends[0])  # the middle is somewhere else


def test_slerp_stays_on_the_sphere_and_lerp_cuts_through_it() -> None:
    z0, z1 = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 3.0])
    torch.testing.assert_close(slerp(z0, z1, 5).norm(dim=1), torch.full((5,), 3.0))
    assert lerp(z0, z1, 3)[1].norm() < 3.0
    torch.testing.assert_close(slerp(z0, 2 * z0, 3), lerp(z0, 2 * z0, 3))  # parallel: a line


def test_checkpoint_outside_its_run_needs_config_path(trained_run, tmp_path) -> None:
    moved = tmp_path / "moved.ckpt"
    shutil.copy(trained_run / "checkpoints" / "last.ckpt", moved)
    with pytest.raises(ConfigError, match="config_path="):
        load_generator(moved)
    generator, _ = load_generator(moved, trained_run / ".hydra" / "config.yaml")
    assert generator.output_shape == (1, 28, 28)
    with pytest.raises(UserError, match="does not exist"):
        load_generator(tmp_path / "missing.ckpt")


@pytest.mark.slow
def test_generate_script_runs_and_reports_a_missing_argument(trained_run, tmp_path) -> None:
    script = str(ROOT / "src" / "generate.py")
    ok = subprocess.run(
        [sys.executable, script, f"run_dir={trained_run}", f"out_dir={tmp_path}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert {p.name for p in tmp_path.iterdir()} == {"learning_process.gif", "learning_process.png"}
    bad = subprocess.run(
        [sys.executable, script], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 2 and "nothing to do" in bad.stderr
