"""Issue 23: the scoring tools get train.py's boundary, no write fails after the work, no
number is silently wrong, and resuming never rewrites a run's record.

One section per class of the issue, then the battery: every case of the table in
docs/reliability.md ("The third-pass battery"), run through the tool's own boundary
(:func:`capsgan.errors.user_errors`) in this process, must end with exit code 2 and one
``Error:`` paragraph naming the key or file, and no traceback. Almost all are refused at
start-up, before any model is trained or any image scored.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf, open_dict

from capsgan.benchmark import effective_cfg, run_benchmark
from capsgan.classifier import ClassifierSpec, DigitClassifier, save_classifier
from capsgan.config import unwritable_reason, validate_classifier_config, validate_config
from capsgan.errors import ConfigError, user_errors
from capsgan.evaluation import run_evaluate
from capsgan.gam import run_battle
from capsgan.generation import run_generate
from capsgan.resume import resume_argv
from capsgan.semisupervised import run_semisupervised
from capsgan.sweep import SweepSummary
from capsgan.training import run, train
from tests.conftest import ROOT, TINY_OVERRIDES, compose_train_cfg, train_toy_run
from tests.test_reliability import FAST
from tests.test_reliability_second_pass import PY_ENV, assert_one_paragraph, compose, script

pytestmark = pytest.mark.usefixtures("one_thread")


# -- shared inputs: a toy run, and the broken files a careless or unlucky user has ----------


@pytest.fixture(scope="module")
def inputs(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The paths the battery's commands name, by placeholder ({run}, {text_npz}, ...)."""
    base = tmp_path_factory.mktemp("inputs")
    run_dir = train_toy_run(base / "run", tiny_data_dir, "trainer.limit_train_batches=2")
    truncated = base / "truncated"
    shutil.copytree(run_dir, truncated)
    last = truncated / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:2000])  # a kill or a full disk cut it short
    no_config = base / "loose" / "gan.ckpt"
    no_config.parent.mkdir()
    shutil.copy(run_dir / "checkpoints" / "last.ckpt", no_config)
    bad_config = base / "bad_config"
    shutil.copytree(run_dir, bad_config)
    (bad_config / ".hydra" / "config.yaml").write_bytes(b"\x00\xff: [unclosed")
    (base / "text.npz").write_text("these are not images\n")
    np.save(base / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    shutil.move(base / "objects.npy", base / "objects.npz")
    np.savez(base / "good.npz", images=np.zeros((8, 28, 28), np.uint8))
    pngs = base / "pngs"
    pngs.mkdir()
    from PIL import Image

    Image.new("L", (28, 28)).save(pngs / "a.png")
    (pngs / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (base / "text.ckpt").write_text("not a checkpoint\n")
    grids = base / "grids"
    (grids / "samples").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(grids / "samples" / "epoch_0000.png")
    (grids / "samples" / "epoch_0001.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    junk = base / "junk_overrides"
    (junk / ".hydra").mkdir(parents=True)
    (junk / ".hydra" / "overrides.yaml").write_bytes(b"\x00\xff: [unclosed")
    torch.manual_seed(0)
    fashion = save_classifier(
        DigitClassifier(ClassifierSpec(channels=(4, 8), hidden=8)).eval(),
        base / "clf",
        "fashion_mnist",
        {},
    )
    return {
        "data": str(tiny_data_dir),
        "run": str(run_dir),
        "ckpt": str(run_dir / "checkpoints" / "last.ckpt"),
        "truncated": str(truncated),
        "no_config": str(no_config),
        "bad_config": str(bad_config / "checkpoints" / "last.ckpt"),
        "text_npz": str(base / "text.npz"),
        "object_npz": str(base / "objects.npz"),
        "good_npz": str(base / "good.npz"),
        "pngs": str(pngs),
        "text_ckpt": str(base / "text.ckpt"),
        "fashion_clf": str(fashion),
        "missing": str(base / "no_such_thing"),
        "broken_grids": str(grids),
        "junk_overrides": str(junk),
    }


# -- 1. every key and input file of every entry point ---------------------------------------


def test_bench_quick_mode_keeps_the_users_values(tmp_path: Path) -> None:
    """quick=true used to overwrite batch_size=0 with its own 8, silently."""
    cfg = compose("bench", "quick=true", "batch_size=4", f"paths.output_dir={tmp_path}")
    assert effective_cfg(cfg, given=["batch_size"]).batch_size == 4
    assert effective_cfg(cfg, given=[]).batch_size == 8  # what the user left alone is sized
    bad = compose("bench", "quick=true", "batch_size=0", f"paths.output_dir={tmp_path}")
    with pytest.raises(ConfigError, match="`batch_size`"):
        run_benchmark(bad)


def test_seed_outside_numpys_range_is_refused_before_lightning(make_cfg) -> None:
    for seed in ("-1", str(2**32)):
        with pytest.raises(ConfigError, match=r"`seed`.*\[0, 4294967295\]"):
            validate_config(make_cfg(*FAST, f"seed={seed}"))


# -- 2. writes checked before the work, with a write of realistic size --------------------------


def test_the_write_probe_is_not_an_empty_file(tmp_path: Path) -> None:
    """A disk with room for an empty file but not for the first real one (simulated by a
    file-size limit of 1 KiB) used to pass the check, then fail in Hydra's .hydra/ write."""
    code = (
        "import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024)); "
        "from capsgan.config import unwritable_reason; print(unwritable_reason(sys.argv[1]))"
    )
    env = {**PY_ENV, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert "can be written" in out.stdout and "KiB" in out.stdout, out.stdout + out.stderr
    assert unwritable_reason(tmp_path) is None  # without the limit, the same folder is fine


def test_a_storage_failure_names_the_file_and_the_tools_own_key(capsys) -> None:
    with pytest.raises(SystemExit) as stop, user_errors(output_key="out"):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/evaluation.json")
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "'/data/evaluation.json'" in err and "out=<another place>" in err
    assert "hydra.run.dir" not in err and "ckpt_path" not in err


# -- 3. no number silently wrong or missing ------------------------------------------------------


def test_a_classifier_of_another_data_set_is_refused(make_cfg, inputs, tmp_path) -> None:
    """An MNIST run scored with a Fashion-MNIST classifier (same 1x28x28 shape) used to be
    accepted, with FIDs 2-3x off."""
    with pytest.raises(ConfigError, match="trained on fashion_mnist"):
        validate_config(make_cfg(f"metrics.classifier_path={inputs['fashion_clf']}"))
    cfg = compose("evaluate", f"source={inputs['good_npz']}", f"data.root={inputs['data']}",
                  f"classifier_path={inputs['fashion_clf']}", f"out={tmp_path / 'e.json'}",
                  "num_samples=8")  # fmt: skip
    with pytest.raises(ConfigError, match="trained on fashion_mnist"):
        run_evaluate(cfg)
    assert not (tmp_path / "e.json").exists()


def test_no_validation_within_the_budget_is_refused_before_training(make_cfg) -> None:
    cfg = make_cfg("discriminator=cnn", "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=5")
    with pytest.raises(ConfigError, match="no val/fid would be computed within the budget"):
        train(cfg)
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()


def test_the_sweep_summary_marks_a_job_with_no_metric(tmp_path: Path) -> None:
    job = tmp_path / "0"
    job.mkdir()
    record = {"job": 0, "overrides": ["debug=overfit"], "status": "ok", "error": None,
              "wall_s": 1.0, "pid": 1, "host": "h"}  # fmt: skip
    (job / "job.json").write_text(json.dumps(record))
    (row,) = SweepSummary().collect(tmp_path)
    assert row["best"] is None and "no val/fid" in row["flag"]


# -- 4. resume never rewrites a run's record -------------------------------------------------------


def test_a_smoke_run_writes_no_checkpoint_so_it_is_never_latest(make_cfg) -> None:
    cfg = make_cfg(*FAST, "discriminator=cnn", "debug=fdr")
    train(cfg)
    out = Path(cfg.paths.output_dir)
    assert not list(out.rglob("*.ckpt"))
    assert json.loads((out / "run_info.json").read_text())["sessions"][-1]["status"] == "completed"


def test_resume_argv_puts_the_saved_overrides_first_and_guards_the_architecture(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(["discriminator=cnn", "lr=1e-4"]),
                   run_dir / ".hydra" / "overrides.yaml")  # fmt: skip
    argv = [f"hydra.run.dir={run_dir}", "ckpt_path=last", "lr=3e-4"]
    merged = resume_argv(argv, ROOT / "conf")
    assert merged[0] == "discriminator=cnn" and "lr=1e-4" not in merged and "lr=3e-4" in merged
    with pytest.raises(ConfigError) as err:
        resume_argv([*argv, "discriminator.channels=[8,16]"], ROOT / "conf")
    assert "discriminator=cnn lr=1e-4" in str(err.value)  # the run's saved overrides
    assert "discriminator.channels" in str(err.value)
    fresh = [f"hydra.run.dir={tmp_path / 'new'}", "ckpt_path=last"]
    assert resume_argv(fresh, ROOT / "conf") == fresh  # nothing saved: nothing to compose


RESUME_ARGS = [*TINY_OVERRIDES, *FAST, "trainer.limit_train_batches=2", "discriminator=cnn"]


@pytest.mark.slow
def test_resume_composes_from_the_saved_overrides_and_keeps_the_record(
    tiny_data_dir, tmp_path
) -> None:
    """Resuming without the run's overrides used to overwrite .hydra/config.yaml with the
    default (capsule) config, then fail on the checkpoint that no longer fit."""
    run_dir = tmp_path / "outputs" / "run"
    first = script("train.py", *RESUME_ARGS, f"hydra.run.dir={run_dir}", cwd=tmp_path,
                   data=tiny_data_dir)  # fmt: skip
    assert first.returncode == 0, first.stderr[-2000:]
    record = {p.name: p.read_text() for p in (run_dir / ".hydra").glob("*.yaml")}

    changed = script("train.py", f"hydra.run.dir={run_dir}", "ckpt_path=last",
                     "discriminator=capsule_small", cwd=tmp_path, data=tiny_data_dir)  # fmt: skip
    assert_one_paragraph(changed, "change the architecture", "discriminator=cnn")
    resumed = script("train.py", f"hydra.run.dir={run_dir}", "ckpt_path=last",
                     "trainer.max_epochs=2", cwd=tmp_path, data=tiny_data_dir)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    latest = script("train.py", f"paths.log_dir={tmp_path / 'outputs'}", "ckpt_path=latest",
                    "trainer.max_epochs=3", cwd=tmp_path, data=tiny_data_dir)  # fmt: skip
    assert latest.returncode == 0, latest.stderr[-2000:]

    assert {p.name: p.read_text() for p in (run_dir / ".hydra").glob("*.yaml")} == record
    sessions = json.loads((run_dir / "run_info.json").read_text())["sessions"]
    assert [s["config"] for s in sessions] == [".hydra", ".hydra/session_2", ".hydra/session_3"]
    assert [s["status"] for s in sessions] == ["completed"] * 3
    session_3 = OmegaConf.load(run_dir / ".hydra" / "session_3" / "config.yaml")
    assert session_3.discriminator._target_.endswith("CNNDiscriminator")
    assert session_3.trainer.max_epochs == 3


@pytest.mark.slow
def test_a_resumed_sweep_keeps_each_jobs_record(tiny_data_dir, tmp_path) -> None:
    sweep = tmp_path / "sweep"
    args = ["-m", *RESUME_ARGS, "seed=1", f"hydra.sweep.dir={sweep}"]
    first = script("train.py", *args, cwd=tmp_path, data=tiny_data_dir)
    assert first.returncode == 0, first.stderr[-2000:]
    record = {p.name: p.read_text() for p in (sweep / "0" / ".hydra").glob("*.yaml")}
    resumed = script("train.py", *args, "ckpt_path=last", cwd=tmp_path, data=tiny_data_dir)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert {p.name: p.read_text() for p in (sweep / "0" / ".hydra").glob("*.yaml")} == record
    assert "ckpt_path=last" in (sweep / "0" / ".hydra" / "session_2" / "overrides.yaml").read_text()


# -- the battery ----------------------------------------------------------------------------------

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


# -- the real entry points: exit code 2, no traceback ----------------------------------------------


def test_cli_scoring_tools_exit_2_before_any_work(inputs, tmp_path: Path) -> None:
    proc = script("evaluate.py", "source=real:test", "out=/proc/capsgan/x.json", cwd=tmp_path,
                  data=Path(inputs["data"]))  # fmt: skip
    assert_one_paragraph(proc, "/proc/capsgan/x.json", "`out`")
    proc = script("battle.py", f"a={inputs['run']}", f"b={inputs['run']}", "num_samples=0",
                  cwd=tmp_path)  # fmt: skip
    assert_one_paragraph(proc, "`num_samples`")
    proc = script("train.py", "seed=-1", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path,
                  data=Path(inputs["data"]))  # fmt: skip
    assert_one_paragraph(proc, "`seed`")
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())["sessions"][-1]
    assert info["status"] == "failed" and "`seed`" in info["message"]
