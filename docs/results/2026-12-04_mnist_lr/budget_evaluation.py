"""Add the evaluation at the budget that the E1 runs missed, as TensorBoard events.

The E1 runs were started with ``trainer.max_steps=1404`` under the code of commit 5ba0ac7,
where Lightning's ``val_check_interval=468`` counts batches *within* an MNIST epoch of 937:
the runs were evaluated at generator steps 468 and 936, and would next have been at 1405,
one step past the budget. (``experiment=comparison`` now ends on that grid, 4684, and a run
that ends off it is evaluated at its last step.) So each finished run's ``last.ckpt``
(written at generator step 1400, four steps before the end) was scored afterwards with the
same procedure as training's evaluation (``python src/evaluate.py``: the run's classifier,
5000 samples from noise seed 0, the 10 000 test images) and this script writes those values
into ``<run>/tensorboard/budget_evaluation/`` at step 1400, timed at the checkpoint's
modification time, so that ``report.py`` reads them like any evaluation:

    python src/evaluate.py 'source=[<run folders>]' num_samples=5000 out=<json>
    python docs/results/2026-12-04_mnist_lr/budget_evaluation.py <json> <sweep folder>
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter

TAGS = ("fid", "kid", "is", "precision", "recall", "modes", "mode_kl")


def main(evaluation: Path, sweep: Path) -> None:
    for result in json.loads(evaluation.read_text())["results"]:
        job = re.search(r"\(([^()]*)/(\d+)\)$", result["source"]).group(2)
        run = sweep / job
        ckpt = run / "checkpoints" / "last.ckpt"
        step = torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]
        folder = run / "tensorboard" / "budget_evaluation"
        if folder.exists():
            print(f"{run}: already has its budget evaluation; left as it is")
            continue
        writer = SummaryWriter(str(folder))
        wall = ckpt.stat().st_mtime
        for tag in TAGS:
            # runs of that commit write Lightning's count of batches before the current one
            writer.add_scalar(f"val/{tag}", float(result[tag]), step - 1, walltime=wall)
        writer.close()
        print(f"{run}: val/fid {result['fid']:.1f} at generator step {step}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
