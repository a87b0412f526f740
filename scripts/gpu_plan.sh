#!/usr/bin/env bash
# The GPU plan as one command of at most 8 minutes, ordered by value. Whatever it finishes is under $OUT the
# moment it is finished, so a call stopped at any point brings back all of that (at most 8 files):
#   run(command="bash scripts/gpu_plan.sh", carry=["gpu_pack"], timeout_s=540)
# after `bash scripts/gpu_data.sh pack` here (Omniglot and ../shared/reference in one archive; docs/gpu_plan.md).
#   1. install egnn against the machine's torch; versions, GPU                  -> $OUT/plan.log
#   2. the CUDA tests, most important first, each outcome as it ends (<= 180 s)   -> $OUT/plan.log
#   3. the side-by-side speed rows against the original code, each row written
#      as it is measured (<= 120 s)                                             -> $OUT/bench_gpu.json
#   4. with the time left: the four transductive Omniglot trainings in parallel
#      at the time-budgeted recipe (scripts/gpu_sweep.sh)                        -> $OUT/gpu_omniglot*
# A stage that fails or runs out of its time is noted and the next one starts. Tried end to end on the CPU by
# tests/test_gpu_plan.py: DEVICE=cpu QUICK=1 NO_INSTALL=1 BUDGET=... OUT=... (glyphs, tiny budgets).
set -uo pipefail
OUT=${OUT:-/tmp/gpu_plan}; mkdir -p "$OUT"
BUDGET=${BUDGET:-480}  # seconds for the whole plan
DEVICE=${DEVICE:-cuda}; PYTHON=${PYTHON:-python3}
source "$(dirname "$0")/gpu_data.sh" unpack  # gpu_pack/data.tgz -> gpu_data/, once
export EGNN_DATA=${EGNN_DATA:-$PWD/gpu_data} PYTHONUNBUFFERED=1
start=$(date +%s)
log="$OUT/plan.log"
left() { echo $(( BUDGET - ($(date +%s) - start) )); }
note() { echo "== [$(( $(date +%s) - start )) s] $*" >> "$log"; }
cap() { local want=$1 room; room=$(left); echo $(( want < room ? want : (room > 1 ? room : 1) )); }

note "plan on $DEVICE, budget $BUDGET s"
if [ -z "${NO_INSTALL:-}" ]; then
  "$PYTHON" -m pip install -q --no-index --no-build-isolation . >> "$log" 2>&1; note "install exit $?"
fi
"$PYTHON" -c "import torch, torch_geometric, egnn; print('torch', torch.__version__, 'pyg', torch_geometric.__version__,
'cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0))" >> "$log" 2>&1

# 2. CUDA tests, most important first (tests/gpu/test_cuda.py's order), 4 workers sharing the GPU: one after another
# they took ~6 minutes on the H200 (2026-12-04). -v streams each outcome; at the time limit pytest gets SIGINT, not
# SIGTERM, so it still prints the tracebacks of what failed so far (the first GPU session's had none).
timeout -s INT -k 20 "$(cap "${TEST_SECONDS:-180}")" "$PYTHON" -m pytest -m cuda tests/gpu -v -n "${TEST_WORKERS:-4}" \
  --tb=short -rfE -p no:cacheprovider -o addopts="" >> "$log" 2>&1
note "cuda tests exit $?"

# 3. side by side with the original code, each row written as it is measured
quick=(); [ -n "${QUICK:-}" ] && quick=(--quick)
timeout "$(cap "${BENCH_SECONDS:-120}")" "$PYTHON" scripts/bench_speed.py "${quick[@]}" --ref-dir "${REF_DIR:-gpu_data/reference/fewshot-egnn}" \
  --device "$DEVICE" --kinds "${BENCH_KINDS:-ours_train,ref_train,ours_eval,ref_eval}" ${BENCH_ARGS:-} --out "$OUT/bench_gpu.json" >> "$log" 2>&1
note "bench exit $?"

# 4. trainings with what is left: a time budget per run that leaves a minute for tests and the report
room=$(left)
if [ "$room" -gt 120 ]; then
  minutes=$(awk "BEGIN { printf \"%.2f\", ($room - 75) / 60 }")
  note "trainings: 4 in parallel, $minutes minutes each"
  OUT="$OUT" NO_INSTALL=1 PYTHON="$PYTHON" timeout "$(( room - 5 ))" bash scripts/gpu_sweep.sh "${SPEC:-configs/gpu_omniglot.yaml}" \
    --only '*/transductive=True' --set "max_minutes=$minutes" --set "device=$DEVICE" ${SWEEP_SET:-} >> "$log" 2>&1
  note "trainings exit $?"
else
  note "no time left for the trainings ($room s)"
fi
note "plan done"
