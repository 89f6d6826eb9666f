#!/usr/bin/env bash
# GPU call 2 (sixteenth session): both presets on the six-head list again, 35 epochs (cosine over 35) instead of 20,
# at once on one H200 (7 loader workers each), a 6 min 50 s cap.
set -u
A="trainer.max_steps=-1 trainer.max_epochs=35 data.num_workers=7 +trainer.max_time='00:00:06:50'"
mkdir -p $OUT/train data/models
for p in x2_iso x4_thick; do
  (PRESETS=$p bash scripts/train_pretrained.sh $A > $OUT/train/$p.log 2>&1; cp data/models/$p.ckpt $OUT/train/${p}_six35.ckpt; cp benchmarks/logs/pretrained_train_$p.json $OUT/train/; tar czf $OUT/train/${p}_run.tgz --exclude="*.ckpt" -C outputs/pretrained $p ) &
done
wait
grep -h "steps (" $OUT/train/*.log
