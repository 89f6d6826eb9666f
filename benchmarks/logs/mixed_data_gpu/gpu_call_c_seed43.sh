#!/usr/bin/env bash
# GPU call C: the committed x2_iso preset (mixed training list) again with seed 43, for the run-to-run spread.
set -u
timeout 270 env PRESETS=x2_iso bash scripts/train_pretrained.sh seed=43 data.num_workers=14 > $OUT/x2_seed43.log 2>&1
echo rc=$?
cp data/models/x2_iso.ckpt $OUT/x2_iso_mixed_seed43.ckpt; cp benchmarks/logs/pretrained_train_x2_iso.json $OUT/train_x2_iso_seed43.json
grep -v "it/s" $OUT/x2_seed43.log | tail -8
