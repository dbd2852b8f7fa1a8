#!/usr/bin/env bash
# How docs/img/hparams.png was made (issue 25): a 4-job sweep on tiny synthetic digits
# (tests/conftest.py's make_idx_root), TensorBoard on it, and headless Chromium (Debian's
# `chromium` package) photographing the HPARAMS tab. The numbers are a toy's; the picture
# shows which columns TensorBoard ticks first: the keys the sweep varies.
set -euo pipefail
out=${1:-/tmp/hparams_shot}
mkdir -p "$out"
python -c "import sys; sys.path.insert(0, '.'); from pathlib import Path; \
from tests.conftest import make_idx_root; make_idx_root(Path('$out/data'), 640, 320)"
DATA_DIR="$out/data" python src/train.py -m discriminator=cnn,capsule_small seed=1,2 \
    data.batch_size=16 trainer.max_epochs=2 trainer.limit_train_batches=10 \
    trainer.limit_val_batches=2 metrics.num_samples=200 trainer.enable_progress_bar=false \
    hydra.sweep.dir="$out/sweep"
tensorboard --logdir "$out/sweep" --port 6006 --host 127.0.0.1 & tb=$!
sleep 15
chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars --window-size=1800,560 \
    --virtual-time-budget=20000 --screenshot=docs/img/hparams.png "http://127.0.0.1:6006/#hparams"
kill $tb
