"""A new model is one class and one YAML (issue 12; docs/extending.md).

The discriminator below lives in this test module and its YAML in a temporary config folder
added through Hydra's search path, not in ``conf/``. With no other edit it must validate
(its constructor's rule shown as the config key), train, appear in a two-arm report with
its ratio to ``cnn``, and run in the benchmark's quick mode. ``discriminator=cnn_sn`` is
the real preset added the same way (one model file, one YAML). The generator below
(issue 23) keeps nothing but its layers, no ``latent_dim`` attribute, exactly what the
contract asks: it must train and then go through generate.py, evaluate.py and battle.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import OmegaConf, open_dict
from torch import Tensor, nn

from capsgan.benchmark import run_benchmark
from capsgan.classifier import ClassifierSpec, DigitClassifier, save_classifier
from capsgan.config import validate_config
from capsgan.errors import ConfigError
from capsgan.evaluation import run_evaluate
from capsgan.gam import run_battle
from capsgan.generation import run_generate
from capsgan.hparams import GANHParams, names
from capsgan.models import ScoreKind
from capsgan.report import write_report
from capsgan.training import train
from tests.conftest import CONF_DIR, ROOT, TINY_OVERRIDES, compose_train_cfg, train_toy_run
from tests.helpers import compose

pytestmark = pytest.mark.usefixtures("one_thread")


class MLPDiscriminator(nn.Module):
    """A two-layer perceptron on the flattened image: the smallest possible discriminator."""

    score_kind = ScoreKind.LOGIT

    def __init__(self, image_channels: int, image_size: int, hidden: int = 32) -> None:
        super().__init__()
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        self.net = nn.Sequential(
            nn.Flatten(),  # (B, C * S * S)
            nn.Linear(image_channels * image_size * image_size, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(1)  # (B,)


class MLPGenerator(nn.Module):
    """z -> fc -> ReLU -> fc -> tanh image. It keeps no ``latent_dim`` attribute: the
    tools read the noise size from the run's config (docs/extending.md)."""

    def __init__(self, latent_dim: int, image_channels: int, image_size: int, hidden: int = 32):
        super().__init__()
        self.shape = (image_channels, image_size, image_size)
        self.net = nn.Sequential(
            nn.Linear(latent_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, image_channels * image_size * image_size),
            nn.Tanh(),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(len(z), *self.shape)  # (B, C, H, W) in [-1, 1]


GENERATOR_YAML = """\
_target_: tests.test_extending.MLPGenerator
latent_dim: ${latent_dim}
image_channels: ${data.channels}
image_size: ${data.image_size}
"""

YAML = """\
_target_: tests.test_extending.MLPDiscriminator
image_channels: ${data.channels}
image_size: ${data.image_size}
hidden: 32
"""


@pytest.fixture(scope="module")
def search_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The Hydra override that adds a config folder holding discriminator/mlp.yaml."""
    folder = tmp_path_factory.mktemp("more_conf")
    (folder / "discriminator").mkdir()
    (folder / "discriminator" / "mlp.yaml").write_text(YAML)
    (folder / "generator").mkdir()
    (folder / "generator" / "mlp.yaml").write_text(GENERATOR_YAML)
    return f"hydra.searchpath=[file://{folder}]"


def test_a_new_discriminator_validates_and_trains(search_path, make_cfg) -> None:
    _, disc = validate_config(make_cfg(search_path, "discriminator=mlp"))
    assert isinstance(disc, MLPDiscriminator)
    with pytest.raises(ConfigError) as err:  # its constructor's rule, as the key to fix
        validate_config(make_cfg(search_path, "discriminator=mlp", "discriminator.hidden=0"))
    assert "`discriminator.hidden`" in str(err.value) and "hidden must be >= 1" in str(err.value)
    with pytest.raises(ConfigError, match=r"`discriminator.hidden` must be an integer"):
        validate_config(make_cfg(search_path, "discriminator=mlp", "discriminator.hidden=wide"))
    cfg = make_cfg(search_path, "discriminator=mlp", "trainer.fast_dev_run=1")
    train(cfg)
    info = json.loads((Path(cfg.paths.output_dir) / "run_info.json").read_text())
    assert info["sessions"][-1]["status"] == "completed"


def test_a_new_discriminator_is_reported_against_cnn(search_path, tiny_data_dir, tmp_path) -> None:
    sweep = tmp_path / "sweep"
    for job, arm in enumerate(("cnn", "mlp")):
        cfg = compose_train_cfg(
            [*TINY_OVERRIDES, search_path, f"discriminator={arm}", "seed=1",
             "trainer.max_steps=4", "trainer.val_check_interval=2",
             "trainer.limit_val_batches=1", "callbacks.model_checkpoint.filename='s{step}'"]
        )  # fmt: skip
        run = sweep / str(job)
        with open_dict(cfg):
            cfg.paths.output_dir = str(run)
            cfg.data.root = str(tiny_data_dir)
        train(cfg)
        (run / ".hydra").mkdir()
        OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
        choices = {"hydra": {"runtime": {"choices": {"discriminator": arm}}}}
        OmegaConf.save(choices, run / ".hydra" / "hydra.yaml")
    text = write_report([sweep], measure_floor_fid=False).read_text()
    ratios = text.split("## Ratios to the baseline (cnn)", 1)[1].split("\n## ", 1)[0]
    assert re.search(r"^\| mlp \|", ratios, re.MULTILINE), ratios


def test_a_new_discriminator_runs_in_the_quick_benchmark(search_path, tiny_data_dir, tmp_path):
    out = tmp_path / "bench.json"
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = hydra_compose(
            "bench",
            [search_path, "+discriminator@presets.mlp=mlp", "discriminators=[mlp]", "quick=true",
             f"data.root={tiny_data_dir}", "data.download=false", f"paths.output_dir={tmp_path}",
             f"output={out}", "device=cpu", "trainer.enable_progress_bar=false"],
        )  # fmt: skip
    run_benchmark(cfg)
    (case,) = json.loads(out.read_text())["cases"]
    assert case["discriminator"] == "mlp" and case["routing_iterations"] is None
    assert case["overhead_ratio"] > 0 and case["flops_per_step"] > 0


def test_a_new_generator_goes_through_generate_evaluate_and_battle(
    search_path, tiny_data_dir, tmp_path
) -> None:
    """Before issue 23 generate.py, evaluate.py and battle.py read ``generator.latent_dim``,
    an attribute the contract never asked for: AttributeError after training."""
    run = train_toy_run(
        tmp_path / "run", tiny_data_dir, search_path, "generator=mlp", "latent_dim=8",
        "trainer.limit_train_batches=2",
    )  # fmt: skip
    assert not hasattr(hydra_instantiate(OmegaConf.load(run / ".hydra/config.yaml").generator),
                       "latent_dim")  # fmt: skip
    ckpt = run / "checkpoints" / "last.ckpt"
    generate = compose("generate", f"ckpt_path={ckpt}", f"out_dir={tmp_path / 'g'}",
                       "num_samples=4", "nrow=2", "num_pairs=2", "steps=3")  # fmt: skip
    written = run_generate(generate)
    assert (tmp_path / "g" / "samples.png") in written
    torch.manual_seed(0)
    clf = save_classifier(DigitClassifier(ClassifierSpec(channels=(4, 8), hidden=8)).eval(),
                          tmp_path / "clf", "mnist", {})  # fmt: skip
    rows, _ = run_evaluate(compose(
        "evaluate", f"source={run}", f"data.root={tiny_data_dir}", f"classifier_path={clf}",
        "num_samples=32", "kid_subset_size=10", f"out={tmp_path / 'e.json'}"))  # fmt: skip
    assert rows[0]["num_samples"] == 32 and rows[0]["fid"] >= 0
    (result,), _ = run_battle(compose(
        "battle", f"a={run}", f"b={ckpt}", f"data_root={tiny_data_dir}", "num_samples=32",
        "test_samples=32", f"out={tmp_path / 'b.json'}"))  # fmt: skip
    assert result.r_samples == pytest.approx(1.0)  # the same GAN on both sides


def test_the_documented_yaml_template_names_the_module() -> None:
    """docs/extending.md's template must work as written, with no export to add."""
    text = (ROOT / "docs" / "extending.md").read_text()
    targets = re.findall(r"^\s*_target_: (\S+)$", text, re.MULTILINE)
    assert targets and all(t.startswith("capsgan.models.my_") for t in targets), targets


def test_cnn_sn_is_a_preset_like_any_other(make_cfg) -> None:
    _, disc = validate_config(make_cfg("discriminator=cnn_sn"))
    assert disc.score_kind is ScoreKind.LOGIT
    weights = [p for name, p in disc.named_parameters() if "original" in name]
    assert len(weights) == 4 + 1 + 1  # two convolutions per width, the last conv, the linear


def test_no_model_is_known_by_name_outside_models() -> None:
    """Models are known by what they declare: no class, _target_ or preset name tests."""
    pattern = re.compile(
        r"CapsuleDiscriminator|CNNDiscriminator|SNDiscriminator|models\.Generator"
        r"|(startswith|endswith)\(\"(capsule|cnn)|endswith\(\"\w*(Discriminator|Generator)"
    )
    hits = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in (ROOT / "src").rglob("*.py")
        if "models" not in path.relative_to(ROOT / "src").parts
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not hits, hits


def test_spectral_norm_keeps_every_weight_at_norm_one() -> None:
    from capsgan.models import SNDiscriminator

    torch.manual_seed(0)
    disc = SNDiscriminator(channels=[8, 16])
    for _ in range(3):  # training-mode forwards refine the power-iteration estimate
        disc(torch.randn(4, 1, 28, 28))
    layers = [m for m in disc.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == 6
    for layer in layers:
        sigma = torch.linalg.matrix_norm(layer.weight.detach().flatten(1), ord=2)
        assert abs(float(sigma) - 1.0) < 0.05, (layer, float(sigma))
    disc.classifier.parametrizations.weight.original.data.mul_(10.0)  # the raw weight grows,
    sigma = torch.linalg.matrix_norm(disc.classifier.weight.detach(), ord=2)  # the used one not
    assert abs(float(sigma) - 1.0) < 0.05


# -- a new GAN hyperparameter is one field plus its use (issue 24) -----------------------

# (file, the line after which, what is added): one field in GANHParams, one line using it
NEW_HPARAM = (
    ("hparams.py", '    channels_last: bool = hp(False, "NHWC memory format")\n',
     '    fake_noise: float = hp(0.0, "extra noise on generated images", ">= 0", '
     'lambda v: v >= 0)\n'),
    ("gan_module.py", "        fake = gen(gan.sample_z(n))\n",
     "        fake = fake + hp.fake_noise * torch.randn_like(fake)\n"),
)  # fmt: skip
NEW_HPARAM_SCRIPT = """
import sys, torch
from omegaconf import open_dict
from capsgan.config import validate_config
from capsgan.errors import ConfigError
from capsgan.loggers import run_hparams
from tests.conftest import TINY_OVERRIDES, compose_train_cfg
from tests.test_bench import module_and_reference

def cfg(*overrides):
    c = compose_train_cfg([*TINY_OVERRIDES, "discriminator=cnn", *overrides])
    with open_dict(c):
        c.data.root, c.paths.output_dir = sys.argv[1], sys.argv[2]
    return c

try:  # the config check
    validate_config(cfg("+fake_noise=-1"))
    sys.exit("fake_noise=-1 was not refused")
except ConfigError as err:
    assert "`fake_noise` (extra noise on generated images) must be >= 0" in str(err), err
    assert "+fake_noise" not in str(err) and "conf/train.yaml" in str(err), err
assert run_hparams(cfg("+fake_noise=0.5"))[0]["fake_noise"] == 0.5  # TensorBoard's HPARAMS
trained = {}
for noise in (0.5, 0.0):  # the GAN (Lightning) and the benchmark's bare loop both use it
    _, (module, losses), (twin, bare) = module_and_reference(cfg(f"+fake_noise={noise}"))
    assert module.hp.fake_noise == module.hparams["fake_noise"] == noise
    for (d, _), (d_bare, _) in zip(losses, bare, strict=True):
        torch.testing.assert_close(d_bare, d)
    for key, value in module.state_dict().items():
        torch.testing.assert_close(twin.state_dict()[key], value)
    trained[noise] = module.discriminator.state_dict()
assert any(not torch.equal(v, trained[0.0][k]) for k, v in trained[0.5].items())
print("ok")
"""


def test_a_new_hyperparameter_is_one_field_plus_its_use(tiny_data_dir, tmp_path) -> None:
    """A copy of the package with one field added to GANHParams and one line using it in
    the step, nothing else: the config check refuses a bad value (naming the key), the
    GAN and HPARAMS get it, and the benchmark's bare loop runs it as Lightning does."""
    package = tmp_path / "src" / "capsgan"
    shutil.copytree(ROOT / "src" / "capsgan", package,
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    for name, after, added in NEW_HPARAM:
        text = (package / name).read_text()
        assert text.count(after) == 1, (name, after)
        (package / name).write_text(text.replace(after, after + added))
    env = {**os.environ, "PYTHONPATH": f"{package.parent}{os.pathsep}{ROOT}"}
    proc = subprocess.run(
        [sys.executable, "-c", NEW_HPARAM_SCRIPT, str(tiny_data_dir), str(tmp_path / "run")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


def test_train_yaml_lists_the_gan_hyperparameters_with_their_defaults() -> None:
    """conf/train.yaml shows each field's default (``--help``, ``lr=...`` without ``+``);
    the two must not drift apart."""
    cfg = OmegaConf.load(CONF_DIR / "train.yaml")
    assert [name for name in names() if name in cfg] == names()  # today every one is listed
    assert GANHParams.from_config(cfg) == GANHParams()  # the listed values are the defaults
