#!/usr/bin/env bash
# Issue 18, item 1: EGNN on Omniglot at GPU scale with the default recipe, the four settings of one mode sharing
# the GPU in one device call (at Omniglot sizes one training leaves the GPU mostly idle):
#   run(command="bash scripts/gpu_omniglot.sh trans", carry=["gpu_data"], timeout_s=600)     # then: nontrans
# with Omniglot copied into the git-ignored gpu_data/ (../shared/GPU.md). Each run validates every 500 iterations,
# stops after 5 validations without a new best or at 8 minutes of training (--patience, --max-minutes), then
# tests its best checkpoint on 1000 fixed episodes with 1 and with 15 queries per class. Each run's
# results.json, metrics.jsonl, log and best.pt (weights only, for results/checkpoints/) come back in $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_omniglot}; mkdir -p "$OUT"
export EGNN_DATA=${EGNN_DATA:-$PWD/gpu_data}
python3 -m pip install -q --no-index --no-build-isolation . 2>&1 | tail -3
mode=${1:-trans}; flag=--transductive; [ "$mode" = nontrans ] && flag=--no-transductive
for setting in 5w1s 5w5s 20w1s 20w5s; do
  way=${setting%%w*}; shot=${setting#*w}; shot=${shot%s}
  tasks=40; [ "$way" = 20 ] && tasks=20
  egnn train --dataset omniglot --way "$way" --shot "$shot" $flag --device cuda --iterations 100000 \
    --tasks-per-batch "$tasks" --val-every 500 --val-episodes 500 --patience 5 --max-minutes 8 \
    --test-queries 1,15 --out "$OUT/omniglot_${setting}_$mode" --quiet > "$OUT/omniglot_${setting}_$mode.log" 2>&1 &
done
wait
rm -f "$OUT"/*/last.pt "$OUT"/*/.lock  # optimiser state stays behind: best.pt and the JSON files come back
tail -n 3 "$OUT"/*.log
