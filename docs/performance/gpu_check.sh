#!/usr/bin/env bash
# The GPU checks of issue 22 in one go, on a machine with a CUDA GPU:
#
#   bash docs/performance/gpu_check.sh [output folder]      (default: outputs/gpu_check/<time>)
#
# Run from the repository root with the project's environment active (or a .venv/ here,
# which this activates); nothing is installed or downloaded. It prints, in turn:
#   1. the device and versions;
#   2. the gpu-marked tests (tests/test_gpu.py: each preset in bf16, compile, channels_last,
#      the refusal of both together, DDP on one GPU, a GPU checkpoint read by evaluate /
#      generate / battle and resumed on the CPU), on toy data written by the tests;
#   3. a short benchmark per precision (bf16-mixed, 32-true) at batch 64 and 512: Lightning
#      vs the bare loop, images/s, ms per step and the share of the measured matmul rate for
#      cnn, capsule_small and capsule (routing 3), with the GPU targets. It reads MNIST
#      from $DATA_DIR (./data); without it, it writes an MNIST-sized synthetic set (speed
#      does not depend on the pixels).
# and ends with one PASS / FAIL line per part; the exit code is the number of failed parts.
# The JSON of every benchmark is kept in the output folder: record its figures, the device
# and the versions in docs/performance.md.
set -u
cd "$(dirname "$0")/../.."
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f .venv/bin/activate ]; then
    # shellcheck disable=SC1091
    source .venv/bin/activate
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
out="${1:-outputs/gpu_check/$(date -u +%Y-%m-%d_%H-%M-%S)}"
mkdir -p "$out"
declare -a summary=()
failed=0

record() {  # record <name> <exit code>
    if [ "$2" -eq 0 ]; then summary+=("PASS  $1"); else summary+=("FAIL  $1 (exit $2)"); failed=$((failed + 1)); fi
}

echo "== 1. device and versions"
python - <<'EOF'
import lightning, torch
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), lightning {lightning.__version__}")
if not torch.cuda.is_available():
    raise SystemExit("no CUDA GPU is visible to torch: nothing to check here")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"cuda:{i} {p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability "
          f"{p.major}.{p.minor}, native bf16: {p.major >= 8 or bool(torch.version.hip)}")
EOF
status=$?
record "device visible" $status
[ $status -ne 0 ] && { printf '%s\n' "${summary[@]}"; exit 1; }

echo; echo "== 2. gpu-marked tests"
python -m pytest -m gpu tests/test_gpu.py -q -rsxX -p no:cacheprovider 2>&1 | tee "$out/gpu_tests.txt"
record "gpu tests (tests/test_gpu.py)" "${PIPESTATUS[0]}"

echo; echo "== 3. benchmark"
data_dir="${DATA_DIR:-./data}"
if [ ! -f "$data_dir/MNIST/raw/train-images-idx3-ubyte" ]; then
    data_dir="$out/synthetic_data"
    echo "no MNIST under \$DATA_DIR: writing an MNIST-sized synthetic set to $data_dir"
    python -c "from pathlib import Path; from tests.conftest import make_idx_root; \
make_idx_root(Path('$data_dir'), n_train=60000, n_test=10000)"
fi
for precision in bf16-mixed 32-true; do
    for batch in 64 512; do
        name="bench-$precision-b$batch"
        echo; echo "-- $name"
        python src/bench.py device=cuda "trainer.precision=$precision" "batch_size=$batch" \
            "data.root=$data_dir" data.download=false routing_iterations=[3] repeats=3 \
            min_repeat_seconds=0.5 "scaling.batch_sizes=[64,128,256,512]" \
            "output=$out/$name.json" "hydra.run.dir=$out/$name" 2>&1 | tee "$out/$name.txt"
        record "$name ($out/$name.json)" "${PIPESTATUS[0]}"
    done
done

echo; echo "== summary (logs and JSON in $out)"
printf '%s\n' "${summary[@]}"
exit $failed
