#!/usr/bin/env bash
# After run_e1b.sh: the evaluation at the budget (step 1400, from last.ckpt) of seed 3 and the
# two-time-scale runs, as for seeds 1-2 (docs/results/2026-12-04_mnist_lr/budget_evaluation.py).
set -u
cd /work/e1
source .venv/bin/activate
export DATA_DIR=/work/shared/data OMP_NUM_THREADS=1
while pgrep -f run_e1b.sh > /dev/null; do sleep 20; done
B=/work/main/docs/results/2026-12-04_mnist_lr/budget_evaluation.py
python src/evaluate.py "source=[runs/e1_lr/18]" num_samples=5000 out=runs/e1_lr18_budget.json
python $B runs/e1_lr18_budget.json runs/e1_lr
for sweep in e1_lr_s3 e1_lr_s3cnn e1_ttur; do
    python src/evaluate.py "source=[$(ls -d runs/$sweep/[0-9]* | paste -sd, -)]" num_samples=5000 \
        out=runs/${sweep}_budget.json
    python $B runs/${sweep}_budget.json runs/$sweep
done
echo FINISHED
