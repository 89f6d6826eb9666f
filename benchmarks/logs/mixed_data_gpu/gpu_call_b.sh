#!/usr/bin/env bash
# GPU call B: full kernel check alongside two trainings on the mixed (template + 4 real heads) training list.
set -u
A="data.list_file=\${paths.data_dir}/train_extra/splits.json data.num_workers=7 data.batch_size=64 data.patches_per_epoch=16384 trainer.max_epochs=20 trainer.check_val_every_n_epoch=2 data.coarsen.prob=0.5 data.coarsen.max_factor=2.5 data.synth.prob=0.75 +trainer.max_time='00:00:06:00'"
mkdir -p $OUT/train
timeout 100 python benchmarks/logs/kernel_v3h/next/probe_v3h11_stages.py $OUT > $OUT/probe11.log 2>&1; tail -3 $OUT/probe11.log
for p in x2_iso x4_thick; do
  (PRESETS=$p bash scripts/train_pretrained.sh $A > $OUT/train/$p.log 2>&1; cp data/models/$p.ckpt $OUT/train/${p}_mixed.ckpt; cp benchmarks/logs/pretrained_train_$p.json $OUT/train/; tar czf $OUT/train/${p}_run.tgz --exclude="*.ckpt" -C outputs/pretrained $p ) &
done
sleep 20
timeout 450 python scripts/check_kernel_gpu.py --budget-s 420 --out $OUT/kernel_check_gpu.json > $OUT/check.log 2>&1; echo check rc=$? >> $OUT/check.log
tail -5 $OUT/check.log
wait
tail -3 $OUT/train/*.log
