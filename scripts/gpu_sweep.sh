#!/usr/bin/env bash
# One sweep on the device machine: every run its own process sharing the GPU (at Omniglot sizes one training
# leaves it mostly idle), then one report call that reads their cached tests, and the runs' best checkpoints
# (weights and config) back through $OUT in pieces of at most 15 MB (the device tool's limit per file):
#   run(command="bash scripts/gpu_sweep.sh configs/gpu_omniglot.yaml --only '*/transductive=True'",
#       carry=["gpu_data"], timeout_s=600)
# with Omniglot in the git-ignored gpu_data/omniglot-py (../shared/GPU.md). Every argument after the spec goes to
# each `egnn sweep` call (--only, --set max_minutes=3, ...). Back here: results/<spec>.{json,md,png} from
# files_at, and `cat <spec>_checkpoints.tar.part-* | tar -x -C results/checkpoints/<spec>` for the checkpoints.
# On the CPU (tests/test_gpu_sweep_script.py): NO_INSTALL=1 OUT=... RUNS=... and --set dataset=glyphs
# --set device=cpu plus tiny budgets; PYTHON names the interpreter (default python3).
set -uo pipefail
spec=$1; shift
name=$(basename "$spec" .yaml)
OUT=${OUT:-/tmp/gpu_sweep}; RUNS=${RUNS:-/tmp/gpu_runs/$name}
mkdir -p "$OUT" "$RUNS"
export EGNN_DATA=${EGNN_DATA:-$PWD/gpu_data} PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python3}
if [ -z "${NO_INSTALL:-}" ]; then
  "$PYTHON" -m pip install -q --no-index --no-build-isolation . 2>&1 | tail -3
fi
egnn() { "$PYTHON" -m egnn.cli "$@"; }
listed=$(egnn sweep "$spec" --list "$@") || exit 2  # a bad spec or an --only that picks nothing: one line
mapfile -t runs <<< "$listed"
start=$(date +%s)
for run in "${runs[@]}"; do
  egnn sweep "$spec" --runs "$RUNS" --quiet --only "$run" "$@" > "$RUNS/$(echo "$run" | tr '/=,' '___').log" 2>&1 &
done
wait
echo "trained and tested ${#runs[@]} runs in parallel in $(( $(date +%s) - start )) s" | tee "$OUT/$name.log"
for log in "$RUNS"/*.log; do echo "== $log"; tail -n 5 "$log"; done >> "$OUT/$name.log"
egnn sweep "$spec" --runs "$RUNS" --output "$OUT/$name" --quiet --report "$@" 2>&1 | tee -a "$OUT/$name.log"
rc=${PIPESTATUS[0]}
(cd "$RUNS" && ls -d */best.pt 2>/dev/null | tar -cf - -T - | split -b 15m - "$OUT/${name}_checkpoints.tar.part-")
exit "$rc"
