#!/usr/bin/env bash
# GPU call (sixteenth session): both presets on the six-head training list (data/train_extra/splits.json), run at once
# on one H200 (7 loader workers each), the full 20-epoch cosine schedule (trainer.max_steps=-1), a 6.5-minute cap.
set -u
A="trainer.max_steps=-1 data.num_workers=7 +trainer.max_time='00:00:06:30'"
mkdir -p $OUT/train data/models
for p in x2_iso x4_thick; do
  (PRESETS=$p bash scripts/train_pretrained.sh $A > $OUT/train/$p.log 2>&1; cp data/models/$p.ckpt $OUT/train/${p}_six.ckpt; cp benchmarks/logs/pretrained_train_$p.json $OUT/train/; tar czf $OUT/train/${p}_run.tgz --exclude="*.ckpt" -C outputs/pretrained $p ) &
done
wait
grep -v "it/s" $OUT/train/*.log | tail -12
