#!/usr/bin/env bash
# The baseline runs behind results/compare_omniglot_{5w1s,20w1s}.*: the node-labeling GNN and ProtoNet trained with
# EGNN's budget (5w1s: 1000 iterations of 40 tasks; 20w1s: 400 iterations of 20 tasks), one thread per run, two
# chains in parallel on a 2-core CPU. Runs resume where they stopped. Then `egnn compare` evaluates every model
# on the same 1000 test episodes (see configs/compare_omniglot_*.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
export EGNN_DATA=${EGNN_DATA:-../shared/data}
mkdir -p runs/logs
train() {  # model way iterations tasks normalize
  [ -f "runs/compare/omniglot_$2w1s_$1/results.json" ] && return 0  # finished and tested
  egnn train --dataset omniglot --model "$1" --way "$2" --shot 1 --query 1 --query-max 0 --iterations "$3" --tasks-per-batch "$4" --normalize "$5" \
    --val-every 200 --val-episodes 200 --threads 1 --out "runs/compare/omniglot_$2w1s_$1" --quiet --resume \
    > "runs/logs/compare_$2w1s_$1.log" 2>&1
}
case "${1:-all}" in
  5w) train gnn 5 1000 40 off; train protonet 5 1000 40 off ;;
  20w) train gnn 20 400 20 on; train protonet 20 400 20 on ;;
  all) (train gnn 5 1000 40 off; train protonet 5 1000 40 off) & (train gnn 20 400 20 on; train protonet 20 400 20 on) & wait ;;
esac
