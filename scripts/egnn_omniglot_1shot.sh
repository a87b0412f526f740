#!/usr/bin/env bash
# EGNN on Omniglot 5-way and 20-way 1-shot, transductive, trained with 1 query per class and tested with 1 and 15.
# These runs are EGNN's rows in results/compare_omniglot_*, the 1-query rows of the query-protocol study
# (results/query_protocol_omniglot.json) and the sources of the cross-way results. One thread each; resumable.
set -euo pipefail
cd "$(dirname "$0")/.."
export EGNN_DATA=${EGNN_DATA:-../shared/data}
mkdir -p runs/logs
run() {  # way iterations tasks normalize
  egnn train --dataset omniglot --way "$1" --shot 1 --query 1 --iterations "$2" --tasks-per-batch "$3" --normalize "$4" \
    --val-every 200 --val-episodes 200 --test-queries 1,15 --threads 1 --out "runs/omniglot_$1w1s_q1" --quiet \
    --resume > "runs/logs/egnn_$1w1s_q1.log" 2>&1
}
case "${1:-all}" in
  5w) run 5 1000 40 off ;;
  20w) run 20 600 20 on ;;
  all) run 5 1000 40 off; run 20 600 20 on ;;
esac
