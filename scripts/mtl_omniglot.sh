#!/usr/bin/env bash
# Issue 6: Meta-Transfer Learning on Omniglot (results/mtl_omniglot.json via scripts/collect_mtl.py).
#   pretrain  stage 1: ResNet-12 (32-64-96-128, sized for 2 CPU cores) as a 4400-way classifier on the
#             background classes (x4 rotations), SGD, 800 iterations of 128 images.
#   5w | 20w [hard-tasks | no-hard-tasks]   per way (1-shot), on the same test episodes (eval seed 0):
#             stage 2  egnn meta-transfer                       -> MTL's own classifier rows
#             stage 3  EGNN on that stage-2 backbone (SS trained)
#             EGNN with Conv-4
#             with HT (MTL's hard-task meta-batch in every run of the chain) or without. Meta-training runs:
#             8 tasks per batch, 200 iterations at 5-way, 100 at 20-way (HT adds a second, hard meta-batch
#             per iteration). EGNN is transductive with a fixed 1 query per class, as MTL's classifier.
# One thread per process; every run resumes; finished runs (results.json present) are skipped. The HT and no-HT
# chains of a way are independent and can run in parallel.
set -euo pipefail
cd "$(dirname "$0")/.."
export EGNN_DATA=${EGNN_DATA:-../shared/data}
mkdir -p runs/logs runs/mtl
R=runs/mtl
done_() { [ -f "$1/results.json" ]; }
chain() {  # way test-episodes iterations ht
  local w=$1 n=$2 its=$3 ht=$4
  local common=(--dataset omniglot --way "$w" --shot 1 --"$ht" --iterations "$its" --tasks-per-batch 8 --val-every 50
                --val-episodes 100 --test-episodes "$n" --threads 1 --quiet --resume)
  done_ $R/mt_${w}w1s_$ht || egnn meta-transfer --pretrained $R/pretrain/best.pt "${common[@]}" \
    --out $R/mt_${w}w1s_$ht > runs/logs/mtl_mt_${w}w1s_$ht.log 2>&1
  done_ $R/egnn_mtl_${w}w1s_$ht || egnn train --backbone resnet12-mtl --backbone-checkpoint $R/mt_${w}w1s_$ht/best.pt \
    --transductive --query-max 0 "${common[@]}" --out $R/egnn_mtl_${w}w1s_$ht > runs/logs/mtl_egnn_mtl_${w}w1s_$ht.log 2>&1
  done_ $R/egnn_conv4_${w}w1s_$ht || egnn train --transductive --query-max 0 "${common[@]}" \
    --out $R/egnn_conv4_${w}w1s_$ht > runs/logs/mtl_egnn_conv4_${w}w1s_$ht.log 2>&1
}
way() {  # way [ht...]
  local w=$1; shift
  for ht in "${@:-hard-tasks no-hard-tasks}"; do
    for h in $ht; do
      if [ "$w" = 5 ]; then chain 5 1000 200 "$h"; else chain 20 500 100 "$h"; fi
    done
  done
}
case "${1:-all}" in
  pretrain) egnn pretrain --dataset omniglot --widths 32,64,96,128 --iterations 800 --val-every 200 --val-episodes 200 \
      --threads 1 --out $R/pretrain --resume > runs/logs/mtl_pretrain.log 2>&1 ;;
  5w) way 5 "${@:2}" ;;
  5w-equal-steps)  # HT takes two optimiser steps per iteration: the no-HT EGNN runs again with as many steps
    for bb in conv4 mtl; do
      extra=(); [ $bb = mtl ] && extra=(--backbone resnet12-mtl --backbone-checkpoint $R/mt_5w1s_no-hard-tasks/best.pt)
      done_ $R/egnn_${bb}_5w1s_no-hard-tasks_400it || egnn train "${extra[@]}" --transductive --query-max 0 \
        --dataset omniglot --way 5 --shot 1 --no-hard-tasks --iterations 400 --tasks-per-batch 8 --val-every 50 \
        --val-episodes 100 --test-episodes 1000 --threads 1 --quiet --resume --out $R/egnn_${bb}_5w1s_no-hard-tasks_400it \
        > runs/logs/mtl_egnn_${bb}_5w1s_400it.log 2>&1
    done ;;
  20w) way 20 "${@:2}" ;;
  all) "$0" pretrain; "$0" 5w; "$0" 20w ;;
esac
