#!/usr/bin/env bash
# The exact commands behind this folder (issue 11, MNIST), run from a git worktree of the
# commit named in report.md, with DATA_DIR pointing at a folder holding MNIST/raw.
# Two lanes of one torch thread each on the 2-core CPU, balanced by measured cost:
#   lane 1: the full capsule (one seed, 30 minutes), then capsule_small x 3 seeds
#   lane 2: cnn and cnn_matched x 3 seeds
set -u
out=${OUT:-outputs/convergence_mnist}
(
  python src/train.py experiment=convergence discriminator=capsule seed=1 \
      +trainer.max_time=00:00:30:00 hydra.run.dir="$out/capsule"
  python src/train.py -m experiment=convergence hydra.launcher.n_jobs=1 \
      hydra.sweeper.params.discriminator=capsule_small hydra.sweep.dir="$out/lane1"
) > "$out.lane1.log" 2>&1 &
python src/train.py -m experiment=convergence hydra.launcher.n_jobs=1 \
    'hydra.sweeper.params.discriminator="cnn,cnn_matched"' hydra.sweep.dir="$out/lane2" \
    > "$out.lane2.log" 2>&1 &
wait

# What was actually run, in order (2026-11-25, UTC):
# 08:13  the script above; lane 2's first command failed at once (an unquoted swept list in a
#        hydra.sweeper.params override) and was started again at 08:15 as written above.
# 10:08  the full capsule, whose first 30 minutes ran while the machine was shared (about half
#        a core: 517 generator steps), was resumed for 25 more minutes once lane 2 had ended:
#   python src/train.py experiment=convergence discriminator=capsule seed=1 \
#       +trainer.max_time=00:00:55:00 hydra.run.dir="$out/capsule" ckpt_path=last
# The report (DATA_DIR set, for the real-data floor):
#   python src/report.py "$out/lane1" "$out/lane2" "$out/capsule" --baseline cnn \
#       --out docs/results/2026-11-25_mnist
