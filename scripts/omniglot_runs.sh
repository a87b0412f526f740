#!/usr/bin/env bash
# The Omniglot runs behind results/omniglot.json: 5-way 1-shot and 5-shot, transductive and not, each tested on
# 1000 fixed episodes with 1 and 15 queries per class. Two runs at a time, one thread each (2-core machine).
# The 5-shot non-transductive run gets fewer iterations: every query has its own graph, ~3x the cost per iteration.
set -euo pipefail
cd "$(dirname "$0")/.."
export EGNN_DATA=${EGNN_DATA:-../shared/data}
run() {  # setting, trans|nontrans, extra flags
  local mode=--transductive; [ "$2" = nontrans ] && mode=--no-transductive
  egnn train --config "configs/omniglot_$1.yaml" $mode --test-queries 1,15 --out "runs/omniglot_$1_$2" "${@:3}" \
    > "runs/omniglot_$1_$2.log" 2>&1
}
mkdir -p runs
if [ "${1:-all}" != "5shot" ]; then
  run 5w1s trans --resume & run 5w1s nontrans --resume & wait
fi
run 5w5s trans & run 5w5s nontrans --iterations 200 & wait
python scripts/collect_omniglot.py
