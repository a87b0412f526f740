#!/usr/bin/env bash
# The query-protocol study (results/query_protocol_omniglot.json): transductive EGNN trained with 1, 5 or 15
# queries per class, or with a random 1..15 per batch (the robust recipe, --query-max 15), then tested with 1 and
# 15 queries per class on the same 1000 test episodes. Equal budgets within a way: 5-way 1-shot 600 iterations of
# 10 tasks, tested on 1000 episodes; 20-way 1-shot 300 iterations of 5 tasks (2 for 15 queries: a 320-node graph
# each), tested on 300 episodes. Resumable.
set -euo pipefail
cd "$(dirname "$0")/.."
export EGNN_DATA=${EGNN_DATA:-../shared/data}
mkdir -p runs/logs
run() {  # way iterations tasks test-episodes name query-flags...
  local way=$1 its=$2 tasks=$3 episodes=$4 name=$5; shift 5
  [ -f "runs/query_protocol/omniglot_${way}w1s_$name/results.json" ] && return 0  # finished and tested
  egnn train --dataset omniglot --way "$way" --shot 1 "$@" --iterations "$its" --tasks-per-batch "$tasks" --normalize on \
    --val-every 100 --val-episodes 100 --eval-query 1 --test-queries 1,15 --test-episodes "$episodes" --threads 1 \
    --out "runs/query_protocol/omniglot_${way}w1s_$name" --quiet --resume > "runs/logs/qp_${way}w1s_$name.log" 2>&1
}
case "${1:-5w}" in
  5w-q5) run 5 600 10 1000 q5 --query 5 --query-max 0 ;;
  5w-q15) run 5 600 10 1000 q15 --query 15 --query-max 0 ;;
  20w-random) run 20 300 5 300 random1-15 --query 1 --query-max 15 ;;
  20w-q5) run 20 300 5 300 q5 --query 5 --query-max 0 ;;
  20w-q15) run 20 300 2 300 q15 --query 15 --query-max 0 ;;  # 2 tasks per batch: a 320-node graph each
  5w) run 5 600 10 1000 q1 --query 1 --query-max 0; run 5 600 10 1000 random1-15 --query 1 --query-max 15
      run 5 600 10 1000 q5 --query 5 --query-max 0; run 5 600 10 1000 q15 --query 15 --query-max 0 ;;
  20w) run 20 300 5 300 q1 --query 1 --query-max 0; run 20 300 5 300 random1-15 --query 1 --query-max 15
       run 20 300 5 300 q5 --query 5 --query-max 0; run 20 300 2 300 q15 --query 15 --query-max 0 ;;
esac
