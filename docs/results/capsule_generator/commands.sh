#!/usr/bin/env bash
# The exact commands behind this folder (issue 15: the capsule generator against the DCGAN one
# on MNIST), run 2026-12-03 from a git worktree of commit b564514 with DATA_DIR pointing at a
# folder holding MNIST/raw, one torch thread per job, two jobs at a time on the 2-core CPU
# (after the Fashion-MNIST convergence runs, in the same queue).
#
# experiment=convergence's measurement settings (FID, KID, precision/recall, modes on 5000
# samples every 468 generator steps), fp32 (bf16 is emulated and ~15x slower on this VM), no
# plateau stop: every run trains the same number of generator steps. Against cnn: 937 steps
# (FID at 468 and 936); against capsule_small: 469 steps (FID at 468), sized to the time left
# in the session (capsule_small steps cost ~0.6 s here).
# `python src/train.py -m experiment=capsule_generator` runs the same grid at 1405 steps.
set -u
out=${OUT:-outputs/capsule_generator}
for d in capsule_small cnn; do
  steps=$([ "$d" = cnn ] && echo 937 || echo 469)
  for g in capsule dcgan; do for s in 1 2; do
    python src/train.py experiment=convergence trainer.precision=32 generator=$g \
        discriminator=$d seed=$s trainer.max_steps=$steps callbacks.stop_on_plateau=null \
        hydra.run.dir="$out/${g}_${d}_seed$s"
  done; done
done

# Seconds per generator step, both generators interleaved in one process (1 thread, batch 64):
#   python docs/performance/capsule_generator_speed.py --out docs/results/capsule_generator/speed.json
# The reports, one per discriminator (the arms differ only in the generator):
#   python src/report.py "$out"/*_cnn_seed? --baseline dcgan --out docs/results/capsule_generator/vs_cnn
#   python src/report.py "$out"/*_capsule_small_seed? --baseline dcgan \
#       --out docs/results/capsule_generator/vs_capsule_small
