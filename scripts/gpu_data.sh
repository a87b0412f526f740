#!/usr/bin/env bash
# The data a device call needs, as one archive: Omniglot's 32,460 small PNGs are 16 MB of bytes but 134 MB on disk,
# and the device tool refused that folder as over its 64 MiB limit (2026-12-04); the archive is 8 MB.
#   bash scripts/gpu_data.sh pack      # here: ../shared's Omniglot and reference -> gpu_pack/data.tgz (git-ignored)
#   source scripts/gpu_data.sh unpack  # there (scripts/gpu_*.sh do it): gpu_pack/data.tgz -> gpu_data/
# then run(command="bash scripts/gpu_plan.sh", carry=["gpu_pack"], ...).
case "${1:-}" in
  pack)
    shared=${SHARED:-$(dirname "$PWD")/shared}
    mkdir -p gpu_pack .git/info
    grep -qx 'gpu_pack/' .git/info/exclude 2>/dev/null || echo gpu_pack/ >> .git/info/exclude
    grep -qx 'gpu_data/' .git/info/exclude || echo gpu_data/ >> .git/info/exclude
    tar -czf gpu_pack/data.tgz -C "$shared/data" omniglot-py -C "$shared" reference && ls -l gpu_pack/data.tgz ;;
  unpack)
    if [ -f gpu_pack/data.tgz ] && [ ! -d gpu_data/omniglot-py ]; then
      mkdir -p gpu_data && tar -xzf gpu_pack/data.tgz -C gpu_data
    fi ;;
  *) echo "usage: bash scripts/gpu_data.sh pack | source scripts/gpu_data.sh unpack" >&2; exit 2 ;;
esac
