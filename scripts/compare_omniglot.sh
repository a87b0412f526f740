#!/usr/bin/env bash
# The baseline runs behind results/compare_omniglot_{5w1s,20w1s,5w5s}.*: the node-labeling GNN and ProtoNet trained
# with EGNN's budget (5w1s: 1000 iterations of 40 tasks; 20w1s: 400 iterations of 20 tasks; 5w5s: 500 iterations
# of 20 tasks), one thread per run, two chains in parallel on a 2-core CPU. Runs resume where they stopped. Then
# `egnn compare` evaluates every model on the same 1000 test episodes (see configs/compare_omniglot_*.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
export EGNN_DATA=${EGNN_DATA:-../shared/data}
mkdir -p runs/logs
train() {  # model way shot iterations tasks normalize val-every
  local name="omniglot_$2w$3s_$1"
  [ -f "runs/compare/$name/results.json" ] && return 0  # finished and tested
  egnn train --dataset omniglot --model "$1" --way "$2" --shot "$3" --query 1 --query-max 0 --iterations "$4" \
    --tasks-per-batch "$5" --normalize "$6" --val-every "$7" --val-episodes 200 --threads 1 --out "runs/compare/$name" \
    --quiet --resume > "runs/logs/compare_$name.log" 2>&1
}
case "${1:-all}" in
  5w) train gnn 5 1 1000 40 off 200; train protonet 5 1 1000 40 off 200 ;;
  20w) train gnn 20 1 400 20 on 200; train protonet 20 1 400 20 on 200 ;;
  5w5s) train gnn 5 5 500 20 off 250 & train protonet 5 5 500 20 off 250 & wait ;;  # as runs/omniglot_5w5s_trans
  all) (train gnn 5 1 1000 40 off 200; train protonet 5 1 1000 40 off 200) &
       (train gnn 20 1 400 20 on 200; train protonet 20 1 400 20 on 200) & wait ;;
esac
