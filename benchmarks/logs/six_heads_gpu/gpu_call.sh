#!/usr/bin/env bash
# GPU calls (sixteenth session): both presets on the six-head training list (data/train_extra/splits.json), run at
# once on one H200 (7 loader workers each), the whole cosine schedule of EPOCHS epochs (no step limit), outputs and
# weights tagged SUFFIX.  Usage:  bash gpu_call.sh EPOCHS SUFFIX
# Ran as "20 six" (results in run20/; that call had a 6 min 30 s cap and took the preset's 20 epochs of the time)
# and "35 six35" (run35/). Neither run reached its cap.
set -u
EPOCHS=${1:?epochs} SUFFIX=${2:?suffix}
A="trainer.max_steps=-1 trainer.max_epochs=$EPOCHS data.num_workers=7 +trainer.max_time='00:00:06:50'"
mkdir -p $OUT/train data/models
for p in x2_iso x4_thick; do
  (PRESETS=$p bash scripts/train_pretrained.sh $A > $OUT/train/$p.log 2>&1; cp data/models/$p.ckpt $OUT/train/${p}_$SUFFIX.ckpt; cp benchmarks/logs/pretrained_train_$p.json $OUT/train/; tar czf $OUT/train/${p}_run.tgz --exclude="*.ckpt" -C outputs/pretrained $p ) &
done
wait
grep -h "steps (" $OUT/train/*.log
