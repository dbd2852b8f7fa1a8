#!/usr/bin/env bash
# Issue 21, E1 second part (session 2026-12-04 18:15 UTC): seed 3's unfinished jobs and the
# two-time-scale runs, from the same worktree of commit 5ba0ac7 as seeds 1-2 (same code).
set -u
cd /work/e1
source .venv/bin/activate
export DATA_DIR=/work/shared/data
python src/train.py -m experiment=comparison trainer.precision=32 trainer.max_steps=1404 \
  'seed=3' 'discriminator=cnn_matched,capsule_small' 'lr=1e-4,2e-4,4e-4' \
  hydra.sweep.dir=/work/e1/runs/e1_lr_s3
python src/train.py -m experiment=comparison trainer.precision=32 trainer.max_steps=1404 \
  'seed=3' 'discriminator=cnn' 'lr=2e-4,4e-4' \
  hydra.sweep.dir=/work/e1/runs/e1_lr_s3cnn
python src/train.py -m experiment=comparison trainer.precision=32 trainer.max_steps=1404 \
  'seed=1,2,3' 'discriminator=cnn,capsule_small' lr_d=4e-4 lr_g=1e-4 \
  hydra.sweep.dir=/work/e1/runs/e1_ttur
