#!/usr/bin/env bash
# The GPU checks of issue 16, as one command for the device machine (about 5 minutes on an H100):
#   run(command="bash scripts/gpu_check.sh", carry=["gpu_pack"], timeout_s=540)
# after `bash scripts/gpu_data.sh pack` here (Omniglot and ../shared/reference in one archive).
# It installs egnn against the machine's own torch (no --no-deps: the version ranges must admit it), prints the
# versions and the GPU, runs the CUDA test suite (in one process, -n 0: the tests share one GPU, and its memory
# checks read its free memory), and leaves its log in $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}; mkdir -p "$OUT"
source "$(dirname "$0")/gpu_data.sh" unpack  # gpu_pack/data.tgz -> gpu_data/, once
export EGNN_DATA=${EGNN_DATA:-$PWD/gpu_data}
python3 -m pip install -q --no-index --no-build-isolation . 2>&1 | tail -3 | tee "$OUT/install.log"
python3 -c "import torch, torchvision, torch_geometric, egnn; print('torch', torch.__version__, 'torchvision', \
torchvision.__version__, 'pyg', torch_geometric.__version__, 'gpu', torch.cuda.get_device_name(0))" | tee "$OUT/versions.txt"
timeout 480 python3 -m pytest -m cuda tests/gpu -q -n 0 -p no:cacheprovider 2>&1 | tee "$OUT/cuda_tests.log" | tail -25
