#!/usr/bin/env bash
# The runs behind results/compare_omniglot_5w1s.*: the GNN and ProtoNet trained with EGNN's budget (1000 iterations
# of 40 tasks), one thread each, then `egnn compare` on 1000 identical test episodes. Run after
# scripts/omniglot_runs.sh, which trains the EGNN it compares against. Runs resume where they stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
export EGNN_DATA=${EGNN_DATA:-../shared/data}
train() {
  egnn train --dataset omniglot --model "$1" --way 5 --shot 1 --query 1 --iterations 1000 --tasks-per-batch 40 \
    --val-every 250 --val-episodes 200 --threads 1 --out "runs/compare/omniglot_5w1s_$1" --quiet --resume \
    > "runs/compare_$1.log" 2>&1
}
train gnn & train protonet & wait
egnn compare --config configs/compare_omniglot_5w1s.yaml --quiet
