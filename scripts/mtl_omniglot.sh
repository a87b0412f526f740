#!/usr/bin/env bash
# Issue 6: Meta-Transfer Learning on Omniglot (results/mtl_omniglot.json via scripts/collect_mtl.py).
#   pretrain  stage 1: ResNet-12 (32-64-96-128, sized for 2 CPU cores) as a 964-way classifier on the
#             background classes, SGD, 800 iterations of 128 images.
#   5w | 20w  per way (1-shot), on the same test episodes (eval seed 0):
#             stage 2  egnn meta-transfer, with and without HT     -> MTL's own classifier rows
#             stage 3  EGNN on the stage-2 backbone (SS trained), with and without HT
#             EGNN with Conv-4, with and without HT
#             Every meta-training run: 200 iterations of 8 tasks (HT adds a second, hard meta-batch per step).
# One thread per process; every run resumes; finished runs (results.json present) are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
export EGNN_DATA=${EGNN_DATA:-../shared/data}
mkdir -p runs/logs runs/mtl
R=runs/mtl
common=(--dataset omniglot --iterations 200 --tasks-per-batch 8 --val-every 50 --val-episodes 100 --threads 1 --quiet --resume)
done_() { [ -f "$1/results.json" ]; }
stage() {  # way episodes
  local w=$1 n=$2
  for ht in hard-tasks no-hard-tasks; do
    done_ $R/mt_${w}w1s_$ht || egnn meta-transfer --pretrained $R/pretrain/best.pt --way "$w" --shot 1 --"$ht" \
      --test-episodes "$n" "${common[@]}" --out $R/mt_${w}w1s_$ht > runs/logs/mtl_mt_${w}w1s_$ht.log 2>&1
    done_ $R/egnn_mtl_${w}w1s_$ht || egnn train --backbone resnet12-mtl --backbone-checkpoint $R/mt_${w}w1s_$ht/best.pt \
      --way "$w" --shot 1 --transductive --query-max 0 --"$ht" --test-episodes "$n" "${common[@]}" --out $R/egnn_mtl_${w}w1s_$ht \
      > runs/logs/mtl_egnn_mtl_${w}w1s_$ht.log 2>&1
    done_ $R/egnn_conv4_${w}w1s_$ht || egnn train --way "$w" --shot 1 --transductive --query-max 0 --"$ht" --test-episodes "$n" \
      "${common[@]}" --out $R/egnn_conv4_${w}w1s_$ht > runs/logs/mtl_egnn_conv4_${w}w1s_$ht.log 2>&1
  done
}
case "${1:-all}" in
  pretrain) egnn pretrain --dataset omniglot \
      --widths 32,64,96,128 --iterations 800 --val-every 200 --val-episodes 200 --threads 1 --out $R/pretrain --resume \
      > runs/logs/mtl_pretrain.log 2>&1 ;;
  5w) stage 5 1000 ;;
  20w) stage 20 500 ;;
  all) "$0" pretrain; "$0" 5w; "$0" 20w ;;
esac
