#!/usr/bin/env bash
# Issue 21, E1 (learning rate per arm), MNIST, as run on 2026-12-04 (2-core AMD EPYC, no GPU).
# From a git worktree of commit 5ba0ac7 (experiment=comparison as first committed), with the
# project's venv; two single-thread jobs side by side (the preset's joblib launcher).
set -u
export DATA_DIR=../shared/data
# E1: 3 arms x lr {1e-4, 2e-4, 4e-4} x seeds, seed-major; 1404 generator steps per run.
python src/train.py -m experiment=comparison trainer.precision=32 trainer.max_steps=1404 \
  'seed=1,2,3' 'discriminator=cnn,cnn_matched,capsule_small' 'lr=1e-4,2e-4,4e-4' \
  hydra.sweep.dir=runs/e1_lr
# (stopped at the session's end: see README.md for which jobs finished)

# The evaluation at the budget the runs missed (budget_evaluation.py says why), then the report:
python src/evaluate.py "source=[$(ls -d runs/e1_lr/[0-9]* | paste -sd, -)]" num_samples=5000 \
  out=runs/e1_budget_evaluation.json      # the finished runs only
python docs/results/2026-12-04_mnist_lr/budget_evaluation.py runs/e1_budget_evaluation.json runs/e1_lr

# Seed 3 and the two-time-scale runs (second session, same worktree): run_e1b.sh, then
# finish_e1.sh (the same evaluation at the budget for each new sweep). The reports:
python src/report.py runs/e1_lr/{0..18} runs/e1_lr_s3/[0-9]* runs/e1_lr_s3cnn/[0-9]* \
  baseline="discriminator=cnn lr=0.0002" out=docs/results/2026-12-04_mnist_lr
# two time-scales beside the same arms at lr 2e-4 (the runs of cnn / capsule_small with lr=2e-4):
python src/report.py <those 6 runs> runs/e1_ttur/[0-9]* baseline="discriminator=cnn lr_d=null" \
  out=docs/results/2026-12-04_mnist_ttur
