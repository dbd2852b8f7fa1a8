"""Semi-supervised classification with a trained GAN's discriminator as feature extractor.

The protocol (docs/evaluation.md, with where it stands against Jaiswal et al. 2018): n
class-balanced labelled training images (drawn by ``seed``); a multinomial logistic
regression on the frozen discriminator's features of those n images, its L2 strength
chosen by k-fold cross validation on the same n images; the test error on the real test
split. This is the discriminator-feature protocol of Radford et al. (2016, DCGAN, section
5.1) with a linear classifier. Controls fitted the same way: ``pixels`` (the n labels
alone) and ``untrained`` (the same architecture with its initial weights).

The features are what the discriminator's score head reads, found without looking at the
model's class (see :func:`discriminator_features`), or the output of ``feature_layer``.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from functools import partial
from pathlib import Path
from statistics import fmean, stdev
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from capsgan.cli import as_list
from capsgan.config import validate_semisupervised_config
from capsgan.data import to_unit_range
from capsgan.errors import ConfigError, UserError
from capsgan.evaluation import DataSpec, real_images, write_results
from capsgan.generation import load_discriminator
from capsgan.runs import checkpoint_run, resolve_checkpoints

log = logging.getLogger(__name__)


# -- features ---------------------------------------------------------------------------


@torch.no_grad()
def discriminator_features(
    discriminator: nn.Module, images: Tensor, layer: str | None = None, batch_size: int = 500
) -> Tensor:
    """Features (N, F) of images in [-1, 1]: the input of the last ``nn.Linear`` the
    forward runs (the score head's input), else the output of the last top-level child
    module to run; or, with ``layer``, the output of that named submodule. Flattened."""
    if layer:
        try:
            target = discriminator.get_submodule(layer)
        except AttributeError as err:
            names = [n for n, _ in discriminator.named_children()]
            raise ConfigError(
                f"the discriminator has no submodule {layer!r} (feature_layer); its top-level "
                f"ones are {names} (dotted names reach deeper, e.g. 'head.0')."
            ) from err
    children = {id(m) for m in discriminator.children()}
    captured: dict[str, Tensor] = {}

    def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if layer:  # hooked on the target alone
            captured["x"] = (output[0] if isinstance(output, tuple) else output).clone()
        elif isinstance(module, nn.Linear):
            captured["linear"] = args[0].clone()
        elif id(module) in children and isinstance(output, Tensor):
            captured["child"] = output.clone()

    modules = [target] if layer else discriminator.modules()
    handles = [m.register_forward_hook(hook) for m in modules]
    out = []
    try:
        for batch in images.split(batch_size):
            captured.clear()
            discriminator(batch)
            found = captured.get("x") if layer else captured.get("linear", captured.get("child"))
            if found is None:
                raise UserError(
                    "found no features in the discriminator's forward pass (no nn.Linear and "
                    "no top-level block returning a tensor); name a submodule with "
                    "feature_layer=<name>."
                )
            out.append(found.flatten(1).float())
    finally:
        for handle in handles:
            handle.remove()
    return torch.cat(out)


# -- labelled subsets and the linear classifier --------------------------------------------


def balanced_subset(labels: Tensor, n: int, seed: int) -> Tensor:
    """Indices of ``n`` examples, ``n // K`` per class (the remainder spread over random
    classes), drawn with ``seed``; sorted."""
    classes = torch.unique(labels)  # n >= their number: run_semisupervised checks it first
    k = len(classes)
    rng = torch.Generator().manual_seed(seed)
    per_class = torch.full((k,), n // k, dtype=torch.long)
    per_class[torch.randperm(k, generator=rng)[: n % k]] += 1
    chosen = []
    for c, m in zip(classes, per_class.tolist(), strict=True):
        pool = torch.nonzero(labels == c).squeeze(1)
        if m > len(pool):
            raise ConfigError(
                f"n_labels={n} asks for {m} images of class {int(c)}, which has {len(pool)}."
            )
        chosen.append(pool[torch.randperm(len(pool), generator=rng)[:m]])
    return torch.cat(chosen).sort().values


def standardize(train: Tensor, *others: Tensor) -> list[Tensor]:
    """Zero mean, unit variance per feature by the training rows' statistics (constant
    features are only centred)."""
    mean, std = train.mean(0), train.std(0)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return [(x - mean) / std for x in (train, *others)]


def fit_logistic(x: Tensor, y: Tensor, classes: int, l2: float, max_iter: int = 200) -> nn.Linear:
    """Multinomial logistic regression, mean cross-entropy + l2 * ||W||^2, full-batch
    L-BFGS from zero weights (deterministic)."""
    model = nn.Linear(x.shape[1], classes).double()
    nn.init.zeros_(model.weight)
    nn.init.zeros_(model.bias)
    x, y = x.double(), y.long()
    opt = torch.optim.LBFGS(
        model.parameters(), lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe"
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y) + l2 * model.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return model


@torch.no_grad()
def error_rate(model: nn.Linear, x: Tensor, y: Tensor) -> float:
    return (model(x.double()).argmax(1) != y).double().mean().item()


def row_space(train_x: Tensor, test_x: Tensor) -> tuple[Tensor, Tensor]:
    """Both sets in coordinates of the span of the training rows, when that is smaller
    than the feature space (n labelled images, D > n features).

    An L2-penalised linear model's optimal weights lie in the span of its training rows
    (representer theorem), and every CV fold's rows lie in the span of all n rows, so
    fitting in these n coordinates (orthonormal: the penalty is unchanged) gives the same
    classifiers as fitting in D, at n / D of the cost (100 / 6272 for the CNN's features).
    """
    n, d = train_x.shape
    if d <= n:
        return train_x, test_x
    x = train_x.double()  # float32's rounding would leave a centred set's null direction in
    gram = x @ x.T  # (n, n)
    eigvals, eigvecs = torch.linalg.eigh(gram)
    keep = eigvals > eigvals.max() * 1e-10
    eigvals, eigvecs = eigvals[keep], eigvecs[:, keep]  # (r,), (n, r)
    basis = (eigvecs / eigvals.sqrt()).T @ x  # (r, D), orthonormal rows
    return (eigvecs * eigvals.sqrt()).float(), (test_x.double() @ basis.T).float()


def linear_probe(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    classes: int,
    grid: list[float],
    folds: int,
    seed: int,
    max_iter: int = 200,
) -> dict[str, float]:
    """Standardise by the labelled rows' statistics; pick the L2 strength of ``grid`` with
    the lowest k-fold CV error on the labelled rows (ties: the stronger); refit on all of
    them; return the test error, that L2 and its CV error."""
    x, test_x = row_space(*standardize(train_x, test_x))
    parts = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed)).chunk(folds)

    def cv_error(l2: float) -> float:
        wrong = 0.0
        for i, held in enumerate(parts):
            train = torch.cat([p for j, p in enumerate(parts) if j != i])
            model = fit_logistic(x[train], train_y[train], classes, l2, max_iter)
            wrong += error_rate(model, x[held], train_y[held]) * len(held)
        return wrong / len(x)

    # min keeps the first of equal errors: the strongest, the grid running downwards
    l2, cv = min(((l2, cv_error(l2)) for l2 in sorted(grid, reverse=True)), key=lambda b: b[1])
    model = fit_logistic(x, train_y, classes, l2, max_iter)
    return {"test_error": error_rate(model, test_x, test_y), "l2": l2, "cv_error": cv}


# -- the experiment ---------------------------------------------------------------------------


@torch.no_grad()  # scoped: callers in the same process keep autograd; fits use enable_grad
def run_semisupervised(cfg: DictConfig) -> tuple[list[dict[str, Any]], Path]:
    """``src/semisupervised.py`` (conf/semisupervised.yaml): every run x n x seed x method."""
    validate_semisupervised_config(cfg)  # every key and `out`, before any feature is computed
    paths = [str(p) for p in as_list(cfg.run)]
    n_labels = [int(n) for n in as_list(cfg.n_labels)]
    seeds = cfg.seeds  # seeds=3: [0, 1, 2]; a list: the seeds (config.SemisupervisedKeys)
    seeds = [int(s) for s in seeds] if OmegaConf.is_list(seeds) else list(range(int(seeds)))
    grid = [float(v) for v in cfg.l2_grid]
    folds = int(cfg.cv_folds)
    infos = [checkpoint_run(c) for p in paths for c in resolve_checkpoints(p, str(cfg.checkpoint))]
    specs = {DataSpec.of(i.cfg.data) for i in infos}
    if len(specs) != 1:
        raise UserError(
            f"the runs were trained on different data sets ({sorted(s.name for s in specs)}); "
            "compare runs of one data set at a time."
        )
    (spec,) = specs
    root = str(cfg.data_root)
    train_u8, train_labels = real_images(spec, root, "train")
    test_u8, test_labels = real_images(spec, root, "test", cfg.test_samples)
    classes = int(train_labels.max()) + 1
    if (n := min(n_labels)) * (folds - 1) // folds < classes:  # the smallest n, if any, fails
        raise ConfigError(
            f"n_labels={n} with cv_folds={folds} leaves fewer training images per fold "
            f"than the {classes} classes; use more labels or fewer folds."
        )
    subsets = {(n, s): balanced_subset(train_labels, n, s) for n in n_labels for s in seeds}
    used = torch.unique(torch.cat(list(subsets.values())))  # every labelled image, once; sorted
    train_x, test_x = to_unit_range(train_u8[used]), to_unit_range(test_u8)
    batch = int(cfg.batch_size)
    layer = cfg.feature_layer or None

    # (method, discriminator, run, features)
    extractors = [("pixels", "-", "-", lambda x: x.flatten(1))] if cfg.pixels else []
    kinds = [("trained_D", True), ("untrained_D", False)][: 2 if cfg.untrained else 1]
    for info in infos:
        for method, weights in kinds:
            d = load_discriminator(info, weights)
            features = partial(discriminator_features, d, layer=layer, batch_size=batch)
            extractors.append((method, info.discriminator, info.label, features))

    rows: list[dict[str, Any]] = []
    for method, disc, label, features in extractors:
        start = time.perf_counter()
        labelled, test_features = features(train_x), features(test_x)
        log.info("%s %s: %d features per image", method, label, labelled.shape[1])
        for (n, seed), idx in subsets.items():
            result = linear_probe(labelled[torch.searchsorted(used, idx)], train_labels[idx],
                                  test_features, test_labels, classes, grid, folds, seed,
                                  int(cfg.max_iter))  # fmt: skip
            rows.append({"method": method, "discriminator": disc, "run": label,
                         "n_labels": n, "seed": seed, "feature_dim": labelled.shape[1],
                         **result})  # fmt: skip
            log.info("  n=%d seed=%d: test error %.4f (l2 %g)", n, seed,
                     result["test_error"], result["l2"])  # fmt: skip
        log.info("  %.1f s", time.perf_counter() - start)
        del labelled, test_features

    summary = summarize(rows)
    columns = ["features", "runs", *(f"n={n}: test error %" for n in n_labels)]
    body = [[s["features"], str(s["runs"]), *(_pm(s[f"n={n}"]) for n in n_labels)] for s in summary]
    title = (
        f"Semi-supervised {spec.name}: linear classifier on n labelled images, test error "
        f"on {len(test_labels)} test images (mean +- sd over runs x {len(seeds)} label draws)"
    )
    keys = ("checkpoint", "n_labels", "seeds", "test_samples", "feature_layer", "l2_grid",
            "cv_folds", "max_iter")  # fmt: skip
    path = write_results(cfg.out, cfg, keys, (title, columns, body), summary=summary, results=rows)
    return rows, path


def _pm(stats: dict[str, float]) -> str:
    mean, sd = 100 * stats["mean"], 100 * stats["sd"]
    return f"{mean:.2f}" if math.isnan(sd) else f"{mean:.2f} +- {sd:.2f}"


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample sd of the test error per (method, discriminator) and n."""
    names = {"pixels": "pixels (n labels alone)", "trained_D": "{} GAN's D",
             "untrained_D": "{} D, untrained"}  # fmt: skip
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:  # (method, discriminator) in first-seen order, each n in n_labels' order
        groups[(r["method"], r["discriminator"], r["n_labels"])].append(r)
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for (method, disc, n), group in groups.items():
        entry = out.setdefault((method, disc), {
            "features": names[method].format(disc), "method": method, "discriminator": disc,
            "runs": len({r["run"] for r in group}) if method != "pixels" else 0,
        })  # fmt: skip
        values = [r["test_error"] for r in group]
        sd = stdev(values) if len(values) > 1 else math.nan
        entry[f"n={n}"] = {"mean": fmean(values), "sd": sd, "count": len(values)}
    return list(out.values())
