#!/usr/bin/env bash
# Free space where the build goes: make test needs about 12 GiB on a fresh clone
# (the debug build and its test binaries, the brokers' data, the cluster's images).
# Below FOODLAB_MIN_FREE_GIB the run stops here with the figure, rather than in the
# linker with a bus error.
set -euo pipefail
cd "$(dirname "$0")/.."
min=${FOODLAB_MIN_FREE_GIB:-8}
free_kib=$(df -Pk . | awk 'NR == 2 { print $4 }')
free_gib=$((free_kib / 1024 / 1024))
target=$(du -sk target 2>/dev/null | awk '{ print int($1 / 1024 / 1024) }' || echo 0)
echo "disk: ${free_gib} GiB free here (target/ holds ${target:-0} GiB); at least ${min} GiB wanted"
if ((free_gib < min)); then
    echo "disk: only ${free_gib} GiB free; free some (make clean removes target/) or set FOODLAB_MIN_FREE_GIB" >&2
    exit 1
fi
