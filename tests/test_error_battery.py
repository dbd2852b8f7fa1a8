"""The error battery: every case of the table in docs/reliability.md ("The third-pass
battery"), run through its tool's own boundary (:func:`capsgan.errors.user_errors`) in this
process, must end with exit code 2 and one ``Error:`` paragraph naming the key or file, no
traceback and no result file. The inputs are the ``inputs`` fixture of conftest.py."""

from __future__ import annotations

import re

import pytest
from omegaconf import open_dict

from capsgan.benchmark import run_benchmark
from capsgan.config import validate_classifier_config
from capsgan.errors import user_errors
from capsgan.evaluation import run_evaluate
from capsgan.gam import run_battle
from capsgan.generation import run_generate
from capsgan.resume import resume_argv
from capsgan.semisupervised import run_semisupervised
from capsgan.training import run
from tests.conftest import ROOT, TINY_OVERRIDES, compose_train_cfg
from tests.helpers import compose

pytestmark = pytest.mark.usefixtures("one_thread")

# (case, tool, arguments, words the Error: paragraph must hold); {name}: a path of `inputs`,
# {tmp}: the test's own folder. docs/reliability.md lists every case with what it gets.
BATTERY = [
    ("T1", "train", ["seed=-1"], ["`seed`", "[0, 4294967295]"]),
    ("T2", "train", ["seed=abc"], ["`seed`", "an integer"]),
    ("T3", "train", ["seed=4294967296"], ["`seed`"]),
    ("T4", "train", ["lr=abc"], ["`lr`", "a number"]),
    ("T5", "train", ["latent_dim=0"], ["`latent_dim`", ">= 1"]),
    ("T6", "train", ["data.batch_size=0"], ["`data.batch_size`"]),
    ("T7", "train", ["trainer.max_epochs=0"], ["trainer.max_epochs"]),
    ("T8", "train", ["betas=[0.5]"], ["`betas`"]),
    ("T9", "train", ["label_smoothing=1"], ["`label_smoothing`", "[0, 1)"]),
    ("T10", "train", ["data.name=svhn"], ["`data.name`"]),
    ("T11", "train", ["threads=0"], ["`threads`"]),
    ("T12", "train", ["metrics.num_samples=abc"], ["`metrics.num_samples`"]),
    ("T13", "train", ["metrics.classifier_dir=/proc/capsgan-clf"],
     ["`metrics.classifier_dir`", "cannot be written"]),
    ("T14", "train", ["metrics.classifier_path={fashion_clf}"], ["trained on fashion_mnist"]),
    ("T15", "train", ["metrics.classifier_path={ckpt}"], ["not a readable classifier"]),
    ("T16", "train", ["metrics.classifier_path={tmp}/none.pt"], ["metrics.classifier_path",
                                                                 "not a file"]),
    ("T17", "train", ["ckpt_path={text_ckpt}"], ["{text_ckpt}", "cannot be read"]),
    ("T18", "train", ["ckpt_path={run}/checkpoints"], ["is a folder"]),
    ("T19", "train", ["trainer.max_epochs=2", "trainer.check_val_every_n_epoch=5"],
     ["no val/fid would be computed", "trainer.max_epochs"]),
    ("T20", "train", ["debug=overfit", "trainer.max_epochs=3"], ["no val/fid would be computed"]),
    ("T21", "train", ["ckpt_path={truncated}/checkpoints/last.ckpt"], ["cannot be read"]),
    ("T22", "train", ["trainer.max_epochs=-1", "trainer.max_steps=2",
                      "trainer.check_val_every_n_epoch=2"], ["trainer.max_steps=2", "val/fid"]),
    ("E1", "evaluate", ["source=real:test", "num_samples=abc"], ["`num_samples`", "an integer"]),
    ("E2", "evaluate", ["source=real:test", "num_samples=0"], ["`num_samples`", ">= 2"]),
    ("E3", "evaluate", ["source=real:test", "real_samples=1"], ["`real_samples`"]),
    ("E4", "evaluate", ["source=real:test", "real_split=val"], ["`real_split`", "train or test"]),
    ("E5", "evaluate", ["source=real:test", "batch_size=0"], ["`batch_size`"]),
    ("E6", "evaluate", ["source=real:test", "seed=-1"], ["`seed`"]),
    ("E7", "evaluate", ["source=real:test", "kid_subset_size=1"], ["`kid_subset_size`"]),
    ("E8", "evaluate", ["source=real:test", "mode_threshold=-1"], ["`mode_threshold`"]),
    ("E9", "evaluate", ["source=real:test", "value_range=[1,0]"], ["`value_range`"]),
    ("E10", "evaluate", ["source=real:test", "device=tpu"], ["`device`"]),
    ("E11", "evaluate", ["source=real:test", "out=/proc/capsgan/x.json"],
     ["/proc/capsgan/x.json", "`out`", "Nothing was computed"]),
    ("E12", "evaluate", ["source=real:test", "out={run}"], ["`out`", "is a folder"]),
    ("E13", "evaluate", ["source=real:test", "classifier_dir=/proc/capsgan-clf"],
     ["`classifier_dir`", "cannot be written"]),
    ("E14", "evaluate", ["source=real:test", "classifier_path={fashion_clf}"],
     ["trained on fashion_mnist"]),
    ("E15", "evaluate", ["source=real:test", "classifier_path={ckpt}"],
     ["not a readable classifier"]),
    ("E16", "evaluate", ["source={missing}"], ["does not exist"]),
    ("E17", "evaluate", ["source={text_npz}"], ["{text_npz}", "not a readable .npz"]),
    ("E18", "evaluate", ["source={object_npz}"], ["{object_npz}", "not a readable .npz"]),
    ("E19", "evaluate", ["source={pngs}"], ["b.png", "cannot be read"]),
    ("E20", "evaluate", ["source={truncated}", "checkpoint=best"], ["last.ckpt", "cannot be read"]),
    ("E21", "evaluate", ["source={run}", "checkpoint=nope.ckpt"], ["checkpoints/nope.ckpt"]),
    ("E22", "evaluate", ["source={no_config}"], ["no run config found"]),
    ("E23", "evaluate", ["source={bad_config}"], ["config.yaml", "cannot be read"]),
    ("E24", "evaluate", ["source=real:val"], ["real:train or real:test"]),
    ("E25", "evaluate", [], ["nothing to score"]),
    ("E26", "evaluate", ["source={good_npz}", "npz_key=nope"], ["npz_key"]),
    ("E27", "evaluate", ["source={truncated}"], ["last.ckpt", "cannot be read"]),
    ("B1", "battle", ["a={run}", "b={run}", "num_samples=0"], ["`num_samples`", ">= 1"]),
    ("B2", "battle", ["a={run}", "b={run}", "num_samples=abc"], ["`num_samples`"]),
    ("B3", "battle", ["a={run}", "b={run}", "test_samples=0"], ["`test_samples`"]),
    ("B4", "battle", ["a={run}", "b={run}", "tolerance=1.5"], ["`tolerance`", "[0, 1)"]),
    ("B5", "battle", ["a={run}", "b={run}", "batch_size=0"], ["`batch_size`"]),
    ("B6", "battle", ["a={run}", "b={run}", "seed=-1"], ["`seed`"]),
    ("B7", "battle", ["a={run}", "b={run}", "batch_stats=maybe"], ["`batch_stats`"]),
    ("B8", "battle", ["a={run}", "b={run}", "out=/proc/capsgan/b.json"], ["`out`"]),
    ("B9", "battle", ["a={run}"], ["needs two GANs"]),
    ("B10", "battle", ["a=[{run},{run}]", "b={run}"], ["same length"]),
    ("B11", "battle", ["a={truncated}", "b={run}"], ["last.ckpt", "cannot be read"]),
    ("B12", "battle", ["a={missing}", "b={run}"], ["neither a checkpoint"]),
    ("B13", "battle", ["a={run}", "b={no_config}"], ["no run config found"]),
    ("S1", "semisupervised", ["run={run}", "n_labels=[]"], ["`n_labels`"]),
    ("S2", "semisupervised", ["run={run}", "n_labels=0"], ["`n_labels`"]),
    ("S3", "semisupervised", ["run={run}", "seeds=0"], ["`seeds`"]),
    ("S4", "semisupervised", ["run={run}", "seeds=abc"], ["`seeds`"]),
    ("S5", "semisupervised", ["run={run}", "cv_folds=1"], ["`cv_folds`", ">= 2"]),
    ("S6", "semisupervised", ["run={run}", "l2_grid=[]"], ["`l2_grid`"]),
    ("S7", "semisupervised", ["run={run}", "l2_grid=[-1]"], ["`l2_grid`"]),
    ("S8", "semisupervised", ["run={run}", "max_iter=0"], ["`max_iter`"]),
    ("S9", "semisupervised", ["run={run}", "out=/proc/capsgan/s.json"], ["`out`"]),
    ("S10", "semisupervised", [], ["pass run="]),
    ("S11", "semisupervised", ["run={truncated}", "n_labels=[30]", "seeds=1"],
     ["last.ckpt", "cannot be read"]),
    ("S12", "semisupervised", ["run={run}", "pixels=maybe"], ["`pixels`"]),
    ("G1", "generate", ["ckpt_path={truncated}/checkpoints/last.ckpt"], ["cannot be read"]),
    ("G2", "generate", ["ckpt_path={ckpt}", "seed=-1"], ["`seed`"]),
    ("G3", "generate", ["ckpt_path={ckpt}", "num_samples=0"], ["`num_samples`"]),
    ("G4", "generate", ["ckpt_path={ckpt}", "out_dir=/proc/capsgan-g"], ["out_dir",
                                                                         "cannot be written"]),
    ("G5", "generate", ["ckpt_path={bad_config}"], ["config.yaml", "cannot be read"]),
    ("G6", "generate", [], ["nothing to do"]),
    ("G7", "generate", ["run_dir={broken_grids}"], ["epoch_0001.png", "cannot be read"]),
    ("T23", "train", ["hydra.run.dir={junk_overrides}", "ckpt_path=last"], ["overrides.yaml",
                                                                          "cannot be read"]),
    ("N1", "bench", ["quick=true", "batch_size=0"], ["`batch_size`"]),
    ("N2", "bench", ["quick=true", "output=/proc/capsgan/bench.json"], ["`output`"]),
    ("N3", "bench", ["quick=true", "seed=-1"], ["`seed`"]),
    ("C1", "train_classifier", ["seed=-1"], ["`seed`"]),
    ("C2", "train_classifier", ["classifier_dir=/proc/capsgan-clf"], ["`classifier_dir`"]),
]  # fmt: skip


def _fill(text: str, paths: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: paths[m.group(1)], text)


def run_tool(tool: str, args: list[str], paths: dict[str, str]) -> None:
    """The command's work, behind its entry point's boundary (as in src/<tool>.py)."""
    if tool == "train" and any(a.startswith("hydra.run.dir=") for a in args):
        with user_errors():  # src/train.py, before Hydra composes a resume
            resume_argv(args, ROOT / "conf")
        return
    if tool == "train":
        cfg = compose_train_cfg([*TINY_OVERRIDES, "discriminator=cnn",
                                 "trainer.limit_train_batches=2", *args])  # fmt: skip
        with open_dict(cfg):
            cfg.paths.output_dir = f"{paths['tmp']}/run"
            cfg.data.root = paths["data"]
        run(cfg)  # src/train.py's run(): its own boundary
        return
    if tool == "bench":
        args = [*args, f"paths.output_dir={paths['tmp']}", f"data.root={paths['data']}"]
    elif tool == "evaluate":
        args = [f"data.root={paths['data']}", f"out={paths['tmp']}/e.json", *args]
    elif tool in ("battle", "semisupervised"):
        args = [f"data_root={paths['data']}", f"out={paths['tmp']}/o.json", *args]
    cfg = compose(tool, *args)
    work, key = {
        "evaluate": (run_evaluate, "out"),
        "battle": (run_battle, "out"),
        "semisupervised": (run_semisupervised, "out"),
        "generate": (run_generate, "out_dir"),
        "bench": (run_benchmark, "output"),
        "train_classifier": (validate_classifier_config, "classifier_dir"),
    }[tool]
    with user_errors(output_key=key):
        work(cfg)


@pytest.mark.parametrize(("case", "tool", "args", "words"), BATTERY, ids=[c[0] for c in BATTERY])
def test_battery(case, tool, args, words, inputs, tmp_path, capsys) -> None:
    paths = {**inputs, "tmp": str(tmp_path)}
    with pytest.raises(SystemExit) as stop:
        run_tool(tool, [_fill(a, paths) for a in args], paths)
    err = capsys.readouterr().err
    assert stop.value.code == 2, err[-2000:]
    assert err.startswith("Error: ") and "Traceback" not in err, err[-2000:]
    for word in words:
        assert _fill(word, paths) in err, (word, err[-2000:])
    assert not list(tmp_path.glob("*.json")), "a refused command wrote its result"


def test_the_battery_is_listed_in_the_docs() -> None:
    text = (ROOT / "docs" / "reliability.md").read_text()
    table = text.split("## The third-pass battery", 1)[1]
    listed = set(re.findall(r"^\| ([A-Z]+\d+) \|", table, re.MULTILINE))
    assert listed == {c[0] for c in BATTERY}, sorted(listed ^ {c[0] for c in BATTERY})
    assert len(BATTERY) >= 60
