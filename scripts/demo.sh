#!/usr/bin/env bash
# The main job end to end on the demo data (CPU is enough; a few minutes on 2 cores):
#   1. train a small x2 super-resolution U-Net on the demo training region (python -m app.train),
#   2. super-resolve the demo test volume to a 0.5 mm grid (python -m app.infer),
#   3. evaluate it, beside the shipped pretrained x2 model (data/models/x2_iso.ckpt), against nearest /
#      trilinear / cubic B-spline on the held-out test region (python -m app.evaluate), ending with the
#      report's path and each model's gain over B-spline.
# Self-installing (creates .venv on first use). Extra arguments go to the training command, e.g.
#   scripts/demo.sh trainer.max_epochs=50        or        scripts/demo.sh trainer=gpu
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
export TRITON_INTERPRET=0  # CPU tensors use torch's operators (the interpreter is for kernel tests)
RUN=${DEMO_DIR:-outputs/demo/$(date +%Y-%m-%d_%H-%M-%S)}

echo "== 1/3 train  -> $RUN/train"
python -m app.train hydra.run.dir="$RUN/train" "$@"
CKPT="$RUN/train/checkpoints/last.ckpt"

echo "== 2/3 super-resolve data/demo/test_t1.nii.gz -> $RUN/sr/"
python -m app.infer input=data/demo/test_t1.nii.gz output="$RUN/sr/" ckpt="$CKPT"

echo "== 3/3 evaluate on the held-out test region -> $RUN/evaluate"
python -m app.evaluate ckpt="[$CKPT,data/models/x2_iso.ckpt]" hydra.run.dir="$RUN/evaluate"
