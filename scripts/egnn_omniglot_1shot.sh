#!/usr/bin/env bash
# EGNN on Omniglot 5-way and 20-way 1-shot, transductive, trained with 1 query per class: EGNN's rows in
# results/compare_omniglot_* and the models behind the cross-way results. The 5-way run is the one of
# scripts/omniglot_runs.sh (runs/omniglot_5w1s_trans); the 20-way run was cut from 600 to 400 iterations (resumed
# with --iterations 400) to fit a 3-hour session, as were its GNN and ProtoNet baselines. One thread; resumable.
set -euo pipefail
cd "$(dirname "$0")/.."
export EGNN_DATA=${EGNN_DATA:-../shared/data}
mkdir -p runs/logs
run() {  # way iterations tasks normalize test-queries
  egnn train --dataset omniglot --way "$1" --shot 1 --query 1 --query-max 0 --iterations "$2" --tasks-per-batch "$3" --normalize "$4" \
    --val-every 200 --val-episodes 200 --test-queries "$5" --threads 1 --out "runs/omniglot_$1w1s_q1" --quiet \
    --resume > "runs/logs/egnn_$1w1s_q1.log" 2>&1
}
case "${1:-all}" in
  5w) run 5 1000 40 off 1,15 ;;
  20w) run 20 400 20 on 1 ;;
  all) run 5 1000 40 off 1,15; run 20 400 20 on 1 ;;
esac
