#!/usr/bin/env bash
# Issue 21 on one NVIDIA H200 (the `device` tool, 2026-12-04): E5 (full capsule), E3 (headline,
# 5 seeds, MNIST and Fashion-MNIST), E2 (routing 1/5, length+margin head) and E4 (12 800
# images), as single runs from a job queue, PARALLEL at a time, one torch thread each.
# Every run: experiment=comparison, fp32, 1404 generator steps, evaluated at steps 468, 936
# and 1404 (check_val_every_n_epoch=null makes val_check_interval count total steps, so a
# 12 800-image run has the same grid). Jobs are queued by priority (E5, E3 MNIST seed-major,
# E2, E4, E3 Fashion-MNIST seed-major); none starts after DEADLINE seconds and a running one
# is stopped then (SIGTERM: it saves last.ckpt and is reported as interrupted).
#
# On the device (repository root, wheels for hydra/omegaconf/joblib launcher/torch-fidelity
# in .whl/, gzipped MNIST + Fashion-MNIST and the cached classifiers in .devdata/):
#   bash docs/results/2026-12-04_h200/run_device.sh
# Output: $RUNS/<experiment>/<arm>_s<seed>/; to $OUT: logs.tgz (queue, device, gpu tests) and
# one .tgz per experiment of its run folders without checkpoints.
set -u
PARALLEL=${PARALLEL:-14}
DEADLINE=${DEADLINE:-480}
STEPS=${STEPS:-1404}      # the budget (a local smoke test of this script: STEPS=3 ONLY=s1 ...)
ONLY=${ONLY:-.}           # a regex over the queue's lines
EXTRA=${EXTRA:-}          # more overrides for every job (smoke tests)
GPU_TESTS=${GPU_TESTS:-1} # also run the gpu-marked tests (issue 22), beside the queue
OUT=${OUT:-outputs/device_out}
RUNS=${RUNS:-outputs/device_runs}
mkdir -p "$OUT" "$RUNS"
START=$(date +%s)

mkdir -p /tmp/data
for d in MNIST FashionMNIST; do
    mkdir -p /tmp/data/$d/raw
    for f in .devdata/data/$d/raw/*.gz; do gunzip -c "$f" > /tmp/data/$d/raw/"$(basename "$f" .gz)"; done
done
# the reference classifiers behind FID/KID/precision/recall, the same files as the CPU runs use;
# a writable data root is where the runs look for them (<DATA_DIR>/classifiers)
mkdir -p /tmp/data/classifiers && cp .devdata/classifiers/*.pt .devdata/classifiers/*.json /tmp/data/classifiers/
export DATA_DIR=/tmp/data PYTHONPATH="$PWD/src:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; nproc
  python3 -c "import torch, lightning, hydra, torchvision; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'lightning', lightning.__version__, 'torchvision', torchvision.__version__, 'hydra', hydra.__version__)"; } > "$OUT/device.txt" 2>&1

# the job queue: "<folder> <overrides...>"
{
    for s in 1 2 3; do echo "e5/capsule_s$s discriminator=capsule lr=2e-4 seed=$s"; done
    for s in 1 2 3 4 5; do
        for a in cnn cnn_matched cnn_params cnn_sn; do echo "e3_mnist/${a}_s$s discriminator=$a lr=4e-4 seed=$s"; done
        echo "e3_mnist/capsule_small_s$s discriminator=capsule_small lr=2e-4 seed=$s"
    done
    for s in 1 2 3; do
        echo "e2/routing1_s$s discriminator=capsule_small lr=2e-4 discriminator.routing_iterations=1 seed=$s"
        echo "e2/routing5_s$s discriminator=capsule_small lr=2e-4 discriminator.routing_iterations=5 seed=$s"
        echo "e2/length_s$s discriminator=capsule_small lr=2e-4 discriminator.head=length seed=$s"
    done
    for s in 1 2 3; do
        echo "e4/cnn_12800_s$s discriminator=cnn lr=4e-4 data.train_subset=12800 seed=$s"
        echo "e4/capsule_small_12800_s$s discriminator=capsule_small lr=2e-4 data.train_subset=12800 seed=$s"
    done
    for s in 1 2 3 4 5; do
        for a in cnn cnn_matched cnn_params cnn_sn; do echo "e3_fashion/${a}_s$s data=fashion_mnist discriminator=$a lr=4e-4 seed=$s"; done
        echo "e3_fashion/capsule_small_s$s data=fashion_mnist discriminator=capsule_small lr=2e-4 seed=$s"
    done
} | grep -E "$ONLY" > $RUNS/queue.txt

if [ "$GPU_TESTS" = 1 ]; then
    timeout 300 python3 -m pytest -m gpu tests/test_gpu.py -q -rsxX -p no:cacheprovider \
        > $RUNS/gpu_tests.txt 2>&1 &
fi

run_one() {  # run_one <folder> <overrides...>
    local dir=$1; shift
    local left=$((START + DEADLINE - $(date +%s)))
    if [ "$left" -lt 60 ]; then echo "$dir not started (deadline)" >> $RUNS/queue.log; return; fi
    mkdir -p "$RUNS/$(dirname "$dir")"
    local t0; t0=$(date +%s)
    timeout --signal=TERM --kill-after=20 "$left" python3 src/train.py experiment=comparison \
        trainer.precision=32 trainer.max_steps="$STEPS" trainer.check_val_every_n_epoch=null \
        "$@" $EXTRA hydra.run.dir="$RUNS/$dir" > "$RUNS/$dir.log" 2>&1
    echo "$dir rc=$? wall_s=$(($(date +%s) - t0))" >> $RUNS/queue.log
}
export -f run_one
export START DEADLINE STEPS EXTRA RUNS
xargs -P "$PARALLEL" -L 1 bash -c 'run_one "$@"' _ < $RUNS/queue.txt
echo "queue done after $(($(date +%s) - START)) s" >> $RUNS/queue.log

wait  # the gpu tests
cp "$OUT/device.txt" $RUNS/ && tar czf "$OUT/logs.tgz" -C "$RUNS" queue.txt queue.log device.txt \
    $(cd "$RUNS" && ls gpu_tests.txt 2>/dev/null) && rm "$OUT/device.txt"
for e in e5 e3_mnist e2 e4 e3_fashion; do
    [ -d $RUNS/$e ] || continue
    tar czf "$OUT/$e.tgz" --exclude='*.ckpt' -C "$RUNS" "$e"
    if [ "$(stat -c %s "$OUT/$e.tgz")" -gt 16000000 ]; then  # the transfer's per-file limit
        tar czf "$OUT/$e.tgz" --exclude='*.ckpt' --exclude='epoch_*.png' -C "$RUNS" "$e"
    fi
done
ls -la "$OUT"
