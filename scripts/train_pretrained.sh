#!/usr/bin/env bash
# Reproduce the shipped models (data/models/) on a GPU: trains the x2_iso and x4_thick presets (each is the recipe
# of its shipped model) with scripts/bench_train.py (timed records under benchmarks/logs/), then strips each run's
# best checkpoint (by val PSNR on the demo val slab) to weights + hyper-parameters (no optimizer state) into
# data/models/<preset>.ckpt.
# Extra arguments go to both trainings. PRESETS="x2_iso" (or "x4_thick") trains one, e.g. to run both at once on one
# large GPU:  PRESETS=x2_iso scripts/train_pretrained.sh ... &  PRESETS=x4_thick scripts/train_pretrained.sh ... & wait
set -euo pipefail
cd "$(dirname "$0")/.."
for preset in ${PRESETS:-x2_iso x4_thick}; do
  run="outputs/pretrained/$preset"
  python scripts/bench_train.py --out "benchmarks/logs/pretrained_train_$preset.json" --run-dir "$run" -- \
    experiment="$preset" trainer=gpu "$@"
  python - "$run/checkpoints" "data/models/$preset.ckpt" <<'PY'
import sys
from pathlib import Path
import torch
(best,) = Path(sys.argv[1]).glob("best-*.ckpt")
ckpt = torch.load(best, map_location="cpu", weights_only=True)
keep = ("state_dict", "hyper_parameters", "epoch", "global_step", "pytorch-lightning_version")
torch.save({k: ckpt[k] for k in keep if k in ckpt}, sys.argv[2])
print(f"wrote {sys.argv[2]} from {best.name}")
PY
done
