#!/usr/bin/env bash
# One sweep on the device machine: every chosen run in its own process sharing the GPU (at Omniglot sizes one
# training leaves it mostly idle), then one report call that reads their cached tests. Everything lands under $OUT
# as it is made, so a call stopped at its time limit still brings back what had finished:
#   $OUT/<spec>.log                 one line per finished run (exit status, seconds), then the report's output;
#   $OUT/<spec>_<run>.tar           per run, written the moment it ends: its log, cached tests (per-episode
#                                   accuracies), metrics.jsonl and best.pt (weights and config);
#   $OUT/<spec>_report.tar          the report (<spec>.json, .md, .png), once every run has ended.
# The device tool brings back at most 8 files (16 MiB each): at most 6 runs per call (4 inside scripts/gpu_plan.sh).
#   run(command="bash scripts/gpu_sweep.sh configs/gpu_omniglot.yaml --only '*/transductive=True'",
#       carry=["gpu_pack"], timeout_s=600)
# after `bash scripts/gpu_data.sh pack` here (Omniglot in one archive). --only picks the runs, once, here;
# every other argument after the spec goes to each `egnn sweep` call (--set max_minutes=3, ...). Back here:
# `tar -xf <spec>_report.tar -C results/` and `tar -xf <spec>_<run>.tar -C results/checkpoints/<spec>`.
# On the CPU (tests/test_gpu_sweep_script.py): NO_INSTALL=1 OUT=... RUNS=... and --set dataset=glyphs
# --set device=cpu plus tiny budgets; PYTHON names the interpreter (default python3).
set -uo pipefail
spec=$1; shift
name=$(basename "$spec" .yaml)
OUT=${OUT:-/tmp/gpu_sweep}; RUNS=${RUNS:-/tmp/gpu_runs/$name}
mkdir -p "$OUT" "$RUNS"
source "$(dirname "$0")/gpu_data.sh" unpack  # gpu_pack/data.tgz -> gpu_data/, once
export EGNN_DATA=${EGNN_DATA:-$PWD/gpu_data} PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python3}
if [ -z "${NO_INSTALL:-}" ]; then
  "$PYTHON" -m pip install -q --no-index --no-build-isolation . 2>&1 | tail -3
fi
egnn() { "$PYTHON" -m egnn.cli "$@"; }
only=(); rest=()  # --only selects the runs here; each run's own process gets its name alone
while [ $# -gt 0 ]; do
  if [ "$1" = "--only" ] && [ $# -ge 2 ]; then only+=(--only "$2"); shift 2; else rest+=("$1"); shift; fi
done
listed=$(egnn sweep "$spec" --list "${only[@]}" "${rest[@]}") || exit 2  # a bad spec, or an --only that picks nothing
mapfile -t runs <<< "$listed"
log="$OUT/$name.log"
start=$(date +%s)
for run in "${runs[@]}"; do
  dir=${run//\//_}  # the sweep's run directory
  file=$(echo "$run" | tr -c 'A-Za-z0-9._\n-' '_')  # names the device tool brings back
  (
    egnn sweep "$spec" --runs "$RUNS" --quiet --only "$run" "${rest[@]}" > "$RUNS/$dir.log" 2>&1
    rc=$?
    (cd "$RUNS" && tar -cf "$OUT/.${name}_$file.tar" "$dir.log" $(ls "$dir"/sweep_tests.json "$dir"/metrics.jsonl \
      "$dir"/best.pt 2>/dev/null)) && mv "$OUT/.${name}_$file.tar" "$OUT/${name}_$file.tar"
    echo "$run: exit $rc after $(( $(date +%s) - start )) s" >> "$log"
  ) &
done
wait
echo "trained and tested ${#runs[@]} runs in parallel in $(( $(date +%s) - start )) s" >> "$log"
report=$(mktemp -d)
egnn sweep "$spec" --runs "$RUNS" --output "$report/$name" --quiet --report "${only[@]}" "${rest[@]}" >> "$log" 2>&1
rc=$?
(cd "$report" && tar -cf "$OUT/.${name}_report.tar" .) && mv "$OUT/.${name}_report.tar" "$OUT/${name}_report.tar"
exit "$rc"
