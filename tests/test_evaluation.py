"""evaluate.py (score anything), battle.py (GAM) and semisupervised.py on toy data."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torch import Tensor, nn

from capsgan.classifier import ClassifierSpec, DigitClassifier, save_classifier
from capsgan.cli import bracket_lists
from capsgan.errors import UserError
from capsgan.evaluation import output_path, run_evaluate, to_uint8_images
from capsgan.gam import (
    Contender,
    battle,
    called_real,
    run_battle,
    use_batch_statistics,
    verdict,
)
from capsgan.models import CapsuleDiscriminator, CNNDiscriminator
from capsgan.runs import find_runs, resolve_checkpoints
from capsgan.semisupervised import (
    balanced_subset,
    discriminator_features,
    fit_logistic,
    row_space,
    run_semisupervised,
    standardize,
)
from tests.conftest import CONF_DIR, ROOT, train_toy_run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy_run(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-epoch toy CNN GAN run folder with its .hydra config, inside a sweep folder."""
    return train_toy_run(
        tmp_path_factory.mktemp("sweep") / "0", tiny_data_dir, "trainer.max_epochs=2",
        "trainer.limit_train_batches=3", "~callbacks.capsule_diagnostics",
    )  # fmt: skip


@pytest.fixture(scope="module")
def classifier_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained small classifier: the metrics' plumbing does not need a good one."""
    torch.manual_seed(0)
    model = DigitClassifier(ClassifierSpec(channels=(4, 8), hidden=8)).eval()
    return save_classifier(model, tmp_path_factory.mktemp("clf"), "mnist", {})


def compose_cfg(name: str, *overrides: str) -> DictConfig:
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return compose(config_name=name, overrides=list(overrides))


def eval_cfg(tiny_data_dir, classifier_path, tmp_path, source, *overrides) -> DictConfig:
    return compose_cfg(
        "evaluate",
        f"source={source}",
        f"data.root={tiny_data_dir}",
        f"classifier_path={classifier_path}",
        "kid_subset_size=20",
        f"out={tmp_path / 'out.json'}",
        *overrides,
    )


# -- evaluate.py ---------------------------------------------------------------------------


def test_npz_uint8_and_float_layouts_score_the_same(
    tiny_data_dir, classifier_path, tmp_path
) -> None:
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (60, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", images=u8)  # N x H x W, uint8
    np.savez(tmp_path / "b.npz", u8[:, None].astype(np.float32) / 127.5 - 1)  # N x C x H x W
    np.savez(tmp_path / "c.npz", x=u8.astype(np.float64) / 255.0)  # [0, 1], one array
    sources = f"[{tmp_path / 'a.npz'},{tmp_path / 'b.npz'},{tmp_path / 'c.npz'}]"
    cfg = eval_cfg(tiny_data_dir, classifier_path, tmp_path, sources, "num_samples=null")
    rows, path = run_evaluate(cfg)
    assert [r["num_samples"] for r in rows] == [60, 60, 60]
    for key in ("fid", "precision", "recall", "modes", "mode_kl", "is"):
        assert rows[0][key] == pytest.approx(rows[1][key], rel=1e-5, abs=1e-6), key
        assert rows[0][key] == pytest.approx(rows[2][key], rel=1e-5, abs=1e-6), key
    saved = json.loads(path.read_text())
    assert saved["settings"]["real_split"] == "test" and len(saved["results"]) == 3


def test_real_train_split_scores_well_against_test_and_checkpoint_runs(
    tiny_data_dir, classifier_path, tmp_path, toy_run
) -> None:
    cfg = eval_cfg(
        tiny_data_dir, classifier_path, tmp_path, f"[real:train,{toy_run}]", "num_samples=100"
    )
    rows, _ = run_evaluate(cfg)
    real, fake = rows
    assert real["kind"] == "real" and fake["kind"] == "checkpoint"
    assert fake["discriminator"] == "CNNDiscriminator" and fake["num_samples"] == 100
    assert real["fid"] < fake["fid"]  # real images are closer to the real test split
    assert real["num_real"] == 160  # the whole (tiny) test split


def test_same_seed_same_scores_and_sweep_folder_expands(
    tiny_data_dir, classifier_path, tmp_path, toy_run
) -> None:
    assert find_runs(toy_run.parent) == [toy_run]
    assert resolve_checkpoints(toy_run.parent) == [toy_run / "checkpoints" / "last.ckpt"]
    cfg = eval_cfg(tiny_data_dir, classifier_path, tmp_path, str(toy_run.parent), "num_samples=50")
    first, _ = run_evaluate(cfg)
    second, _ = run_evaluate(cfg)
    assert first[0]["fid"] == second[0]["fid"]


def test_png_folder_is_scored_and_a_grid_is_refused(
    tiny_data_dir, classifier_path, tmp_path
) -> None:
    pngs = tmp_path / "pngs"
    pngs.mkdir()
    rng = np.random.default_rng(1)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(pngs / f"{i}.png")
    cfg = eval_cfg(tiny_data_dir, classifier_path, tmp_path, str(pngs), "num_samples=null")
    (row,), _ = run_evaluate(cfg)
    assert row["kind"] == "png" and row["num_samples"] == 12
    grid = tmp_path / "grid"
    grid.mkdir()
    Image.fromarray(np.zeros((242, 242), dtype=np.uint8)).save(grid / "epoch_0001.png")
    cfg = eval_cfg(tiny_data_dir, classifier_path, tmp_path, str(grid), "num_samples=null")
    with pytest.raises(UserError, match=r"242x242 images .* takes 28x28.*grid"):
        run_evaluate(cfg)


@pytest.mark.parametrize(
    ("array", "overrides", "message"),
    [
        (np.zeros((10, 32, 32), np.uint8), [], r"32x32 images .* resize them to 28x28"),
        (np.zeros((10, 28, 28, 1), np.uint8), [], r"channels-last .* np.transpose"),
        (np.zeros((10, 3, 28, 28), np.uint8), [], r"3 channel\(s\) .* convert them to grey"),
        (np.zeros((10, 2, 1, 28, 28), np.uint8), [], r"expected N x H x W or N x C x H x W"),
        (np.full((10, 28, 28), 300.0), [], r"outside the \[0, 255\] range .* value_range"),
        (np.full((10, 28, 28), 0.5), ["value_range=[-1,1]"], None),  # in range: fine
        (np.full((10, 28, 28), 2.0), ["value_range=[0,1]"], r"from 2 to 2, outside the \[0, 1\]"),
        (np.zeros((10, 28, 28), np.uint8), ["num_samples=20"], r"holds 10 images but num_"),
        (np.full((10, 28, 28), np.nan), [], r"NaN"),
    ],
)
def test_file_errors_name_the_problem_and_the_fix(
    tiny_data_dir, classifier_path, tmp_path, array, overrides, message
) -> None:
    np.savez(tmp_path / "x.npz", images=array)
    cfg = eval_cfg(
        tiny_data_dir, classifier_path, tmp_path, str(tmp_path / "x.npz"),
        "num_samples=null", *overrides,
    )  # fmt: skip
    if message is None:
        run_evaluate(cfg)
    else:
        with pytest.raises(UserError, match=message):
            run_evaluate(cfg)


def test_float_ranges_map_to_the_same_uint8() -> None:
    u8 = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16)
    for array in (u8 / 127.5 - 1.0, u8 / 255.0, u8.astype(np.float32)):
        assert torch.equal(to_uint8_images(array, "x"), torch.from_numpy(u8))


def test_bracket_lists_only_touches_the_list_keys() -> None:
    argv = ["n_labels=100,1000", "run=[a,b]", "seeds=3", "other=1,2", "a=x,y"]
    assert bracket_lists(argv, ("n_labels", "run", "a")) == [
        "n_labels=[100,1000]", "run=[a,b]", "seeds=3", "other=1,2", "a=[x,y]",
    ]  # fmt: skip


@pytest.mark.slow
def test_evaluate_script_writes_json_and_reports_errors(
    tiny_data_dir, classifier_path, tmp_path
) -> None:
    np.savez(tmp_path / "s.npz", images=np.zeros((20, 28, 28), np.uint8))
    common = [f"data.root={tiny_data_dir}", f"classifier_path={classifier_path}",
              "kid_subset_size=10", f"out={tmp_path / 'o.json'}"]  # fmt: skip
    script = str(ROOT / "src" / "evaluate.py")
    ok = subprocess.run(
        [sys.executable, script, f"source={tmp_path / 's.npz'}", "num_samples=null", *common],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "FID" in ok.stdout and json.loads((tmp_path / "o.json").read_text())["results"]
    bad = subprocess.run(
        [sys.executable, script, f"source={tmp_path / 's.npz'}", "num_samples=50", *common],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "holds 20 images but num_samples=50" in bad.stderr


# -- GAM ------------------------------------------------------------------------------------


class Scored(nn.Module):
    """A hand-made discriminator: real iff the image is within ``radius`` (mean squared
    distance) of a template, as a logit or as a capsule-like length in [0, 1)."""

    def __init__(self, template: Tensor, radius: float, kind: str = "logit") -> None:
        super().__init__()
        self.template, self.radius, self.score_kind = template, radius, kind

    def forward(self, x: Tensor) -> Tensor:
        margin = self.radius - (x - self.template).pow(2).flatten(1).mean(1)
        logit = 50 * margin
        return logit if self.score_kind == "logit" else torch.sigmoid(logit) * 0.99


class Replay(nn.Module):
    """A 'generator' returning fixed images (plus optional noise), for known outcomes."""

    def __init__(self, images: Tensor, noise: float = 0.0) -> None:
        super().__init__()
        self.images, self.noise = images, noise  # z is 4-dimensional (Contender's latent_dim)

    def forward(self, z: Tensor) -> Tensor:
        idx = torch.arange(len(z)) % len(self.images)
        g = torch.Generator().manual_seed(int(z.abs().sum() * 1000) % 2**31)
        return self.images[idx] + self.noise * torch.randn(self.images[idx].shape, generator=g)


@pytest.fixture
def toy_images() -> tuple[Tensor, Tensor]:
    template = torch.zeros(1, 1, 28, 28)
    torch.manual_seed(0)
    real = template + 0.1 * torch.randn(200, 1, 28, 28)  # mean squared distance ~0.01
    return template, real


def test_called_real_uses_the_score_kind_not_the_class() -> None:
    class Fixed(nn.Module):
        def __init__(self, value: float, kind: str) -> None:
            super().__init__()
            self.value, self.score_kind = value, kind

        def forward(self, x: Tensor) -> Tensor:
            return torch.full((len(x),), self.value)

    images = torch.zeros(3, 1, 28, 28)
    assert called_real(Fixed(0.3, "logit"), images).all()  # sigmoid(0.3) = 0.57
    assert not called_real(Fixed(0.3, "length"), images).any()  # a length of 0.3
    assert called_real(Fixed(0.6, "length"), images).all()
    assert not called_real(Fixed(-0.1, "logit"), images).any()


@pytest.mark.parametrize("kind", ["logit", "length"])
def test_better_generator_wins_when_the_discriminators_agree_on_test(toy_images, kind) -> None:
    template, real = toy_images
    judge = Scored(template, radius=0.05, kind=kind)  # calls every real image real
    good = Contender("good", Replay(real), judge, 4)  # samples = real images: always fool
    bad = Contender("bad", Replay(real, noise=1.0), judge, 4)  # noise: always caught
    result = battle(good, bad, real, num_samples=100)
    assert result.r_test == 1.0 and result.err_a_on_b == 0.0 and result.err_b_on_a == 1.0
    assert result.winner == "a" and result.r_samples == 0.0
    assert battle(bad, good, real, num_samples=100).winner == "b"


def test_better_discriminator_wins_with_the_same_generator(toy_images) -> None:
    template, real = toy_images
    generator = Replay(real, noise=0.2)  # mean squared distance ~0.05 from the template
    strict = Contender("strict", generator, Scored(template, radius=0.03), 4)
    lenient = Contender("lenient", generator, Scored(template, radius=0.2), 4)
    result = battle(strict, lenient, real, num_samples=100)
    assert result.err_a_test == result.err_b_test == 0.0 and result.r_test == 1.0
    assert result.err_a_on_b < result.err_b_on_a and result.winner == "a"


def test_batch_statistics_leave_the_running_statistics_alone() -> None:
    torch.manual_seed(0)
    d = CNNDiscriminator(channels=(4, 8)).eval()
    bn = next(m for m in d.modules() if isinstance(m, nn.BatchNorm2d))
    before = bn.running_mean.clone()
    x = torch.randn(16, 1, 28, 28) + 2.0
    eval_scores = d(x)
    use_batch_statistics(d)
    assert bn.training and not d.training
    batch_scores = d(x)
    assert torch.equal(bn.running_mean, before)
    assert not torch.allclose(eval_scores, batch_scores)


def test_verdict_rule_and_tolerance() -> None:
    assert verdict(1.05, 0.8, 0.1)[0] == "a"
    assert verdict(0.95, 1.3, 0.1)[0] == "b"
    assert verdict(1.0, 1.0, 0.1)[0] == "tie"
    assert verdict(1.2, 0.5, 0.1)[0] == "undecided"
    assert verdict(math.inf, 0.5, 0.1)[0] == "undecided"
    assert verdict(math.nan, 0.5, 0.1)[0] == "undecided"


def test_gan_battling_itself_gives_ratios_of_one(tiny_data_dir, toy_run, tmp_path) -> None:
    cfg = compose_cfg(
        "battle", f"a={toy_run}", f"b={toy_run / 'checkpoints' / 'last.ckpt'}",
        f"data_root={tiny_data_dir}", "num_samples=200", f"out={tmp_path / 'b.json'}",
    )  # fmt: skip
    (result,), path = run_battle(cfg)
    assert torch.is_grad_enabled()  # the tool turns autograd off only inside itself
    assert result.r_test == pytest.approx(1.0, abs=cfg.tolerance)
    assert result.r_samples == pytest.approx(1.0, abs=cfg.tolerance)
    assert result.winner == "tie"
    assert json.loads(path.read_text())["battles"][0]["winner"] == "tie"


def test_trained_gan_against_an_untrained_one(tiny_data_dir, toy_run, tmp_path) -> None:
    """An untrained copy of the toy GAN (both networks re-initialised): the trained side's
    discriminator must make fewer test mistakes, or the rule refuses to call a winner."""
    fresh = tmp_path / "fresh"
    shutil.copytree(toy_run / ".hydra", fresh / ".hydra")
    (fresh / "checkpoints").mkdir()
    ckpt = torch.load(toy_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    torch.manual_seed(123)
    run_cfg = OmegaConf.load(toy_run / ".hydra" / "config.yaml")
    import hydra

    for name in ("generator", "discriminator"):
        module = hydra.utils.instantiate(run_cfg[name])
        for key, value in module.state_dict().items():
            ckpt["state_dict"][f"{name}.{key}"] = value
    torch.save(ckpt, fresh / "checkpoints" / "last.ckpt")
    cfg = compose_cfg(
        "battle", f"a={toy_run}", f"b={fresh}", f"data_root={tiny_data_dir}",
        "num_samples=200", f"out={tmp_path / 'b.json'}",
    )  # fmt: skip
    (result,), _ = run_battle(cfg)
    winner, _ = verdict(result.r_test, result.r_samples, cfg.tolerance)
    assert result.winner == winner
    assert result.winner in ("a", "undecided")  # never the untrained GAN


@pytest.mark.slow
def test_battle_script_and_its_errors(tiny_data_dir, toy_run, tmp_path) -> None:
    script = str(ROOT / "src" / "battle.py")
    common = [f"data_root={tiny_data_dir}", "num_samples=40", "test_samples=40",
              f"out={tmp_path / 'b.json'}"]  # fmt: skip
    ok = subprocess.run(
        [sys.executable, script, f"a={toy_run},{toy_run}", f"b={toy_run},{toy_run}", *common],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert len(json.loads((tmp_path / "b.json").read_text())["battles"]) == 2
    bad = subprocess.run(
        [sys.executable, script, f"a={toy_run}", f"b={toy_run},{toy_run}", *common],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert bad.returncode == 2 and "same length" in bad.stderr


# -- semi-supervised ---------------------------------------------------------------------------


def test_balanced_subset_is_balanced_and_seeded() -> None:
    labels = torch.arange(1000) % 10
    idx = balanced_subset(labels, 100, seed=3)
    assert torch.bincount(labels[idx]).tolist() == [10] * 10
    assert torch.equal(idx, balanced_subset(labels, 100, seed=3))
    assert not torch.equal(idx, balanced_subset(labels, 100, seed=4))
    assert torch.bincount(labels[balanced_subset(labels, 25, 0)]).sort().values.tolist()[-1] == 3


def test_row_space_gives_the_same_classifier_as_the_full_features() -> None:
    torch.manual_seed(0)
    x, test = torch.randn(30, 200), torch.randn(50, 200)
    y = torch.arange(30) % 3
    xs, ts = standardize(x, test)
    full = fit_logistic(xs, y, 3, l2=0.1, max_iter=500)
    xr, tr = row_space(xs, ts)
    assert xr.shape == (30, 29) and tr.shape == (50, 29)  # centred rows: rank n - 1
    small = fit_logistic(xr, y, 3, l2=0.1, max_iter=500)
    torch.testing.assert_close(full(ts.double()), small(tr.double()), atol=1e-3, rtol=1e-3)


def test_features_are_what_the_score_head_reads() -> None:
    images = torch.randn(4, 1, 28, 28)
    cnn = CNNDiscriminator(channels=(8, 16)).eval()
    assert discriminator_features(cnn, images).shape == (4, 16 * 7 * 7)
    caps = dict(conv_channels=8, primary_maps=2, out_dim=4, head_hidden=16)
    fc = CapsuleDiscriminator(**caps, head="fc").eval()
    assert discriminator_features(fc, images).shape == (4, 16)  # the head's hidden layer
    length = CapsuleDiscriminator(**caps, head="length").eval()
    assert discriminator_features(length, images).shape == (4, 10 * 4)  # output capsules
    assert discriminator_features(fc, images, layer="routing").shape == (4, 10 * 4)
    with pytest.raises(UserError, match="no submodule 'nope'"):
        discriminator_features(fc, images, layer="nope")


def test_semisupervised_runs_every_method_seed_and_n(tiny_data_dir, toy_run, tmp_path) -> None:
    cfg = compose_cfg(
        "semisupervised", f"run={toy_run.parent}", "n_labels=[20,40]", "seeds=2",
        "cv_folds=2", "test_samples=100", "l2_grid=[0.01,1.0]", "max_iter=50",
        f"data_root={tiny_data_dir}", f"out={tmp_path / 's.json'}",
    )  # fmt: skip
    rows, path = run_semisupervised(cfg)
    assert torch.is_grad_enabled()
    assert len(rows) == 3 * 2 * 2  # pixels, trained D, untrained D x 2 n x 2 seeds
    assert {r["method"] for r in rows} == {"pixels", "trained_D", "untrained_D"}
    assert all(0.0 <= r["test_error"] <= 1.0 for r in rows)
    pixels = [r["test_error"] for r in rows if r["method"] == "pixels"]
    assert max(pixels) < 0.5  # the synthetic classes are easy from pixels (chance: 0.9)
    summary = json.loads(path.read_text())["summary"]
    assert {s["method"] for s in summary} == {"pixels", "trained_D", "untrained_D"}
    assert summary[1]["n=20"]["count"] == 2


def test_semisupervised_script_accepts_comma_lists(tiny_data_dir, toy_run, tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "src" / "semisupervised.py"), f"run={toy_run}",
         "n_labels=20,30", "seeds=1", "cv_folds=2", "test_samples=60", "untrained=false",
         "max_iter=30", f"data_root={tiny_data_dir}", f"out={tmp_path / 's.json'}"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "n=30: test error %" in result.stdout


def test_evaluation_json_goes_beside_what_was_scored(tmp_path) -> None:
    """Not the current folder, where every evaluation overwrote the last one."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    ckpt = run / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(b"")

    def out(*overrides: str) -> Path:
        return output_path(compose_cfg("evaluate", *overrides, f"paths.log_dir={tmp_path}"))

    assert out(f"source={run}") == run / "evaluation.json"
    assert out(f"source={ckpt}") == run / "checkpoints" / "last.evaluation.json"
    assert out(f"source=[{run},real:test]").parent == tmp_path / "evaluations"
    assert out(f"source={run}", f"out={tmp_path / 'x.json'}") == tmp_path / "x.json"
