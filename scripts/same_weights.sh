#!/usr/bin/env bash
# Does a change alter what training computes? Trains the same fixed-seed Omniglot run (30 iterations, seed 7) at
# revision REV (a temporary git worktree) and in this checkout, and compares the final weights bit for bit.
#   bash scripts/same_weights.sh 932e291        # the revision before the models/evaluation/trainer split
# Needs EGNN_DATA (omniglot-py/). Bit-for-bit holds on one machine; another CPU's rounding may differ.
set -euo pipefail
rev=${1:?usage: scripts/same_weights.sh REV}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'git -C "$repo" worktree remove --force "$work/before" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git -C "$repo" worktree add -f --detach "$work/before" "$rev" >/dev/null 2>&1
for side in before now; do
  tree=$([ $side = before ] && echo "$work/before" || echo "$repo")
  (cd "$tree" && PYTHONPATH="$tree" python -m egnn.cli train --dataset omniglot --iterations 30 --seed 7 \
     --out "$work/run_$side" --quiet > /dev/null)
done
python - "$work" "$rev" <<'PY'
import sys
import torch
work, rev = sys.argv[1:]
a, b = (torch.load(f"{work}/run_{s}/last.pt", weights_only=False)["model"] for s in ("before", "now"))
same = [k for k in a if k in b and torch.equal(a[k], b[k])]
print(f"{len(same)} of {len(a)} state tensors equal bit for bit ({rev} against this checkout)")
sys.exit(0 if len(same) == len(a) == len(b) else 1)
PY
