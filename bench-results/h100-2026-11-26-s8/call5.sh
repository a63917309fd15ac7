#!/usr/bin/env bash
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/out}; mkdir -p "$out"
source .gpu/env.sh
export XDG_RUNTIME_DIR=/tmp/xdg; mkdir -p -m 700 $XDG_RUNTIME_DIR
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 ))s] $*" >> "$out/runs.txt"; }
for v in bench-spin bench-c4096 bench-spin bench-c4096; do
  el "$v"; timeout 60 .gpu/bin/$v --backend gpu --workload seed --sizes 20,24,28 --reps 50 --kernels >> "$out/runs.txt" 2>&1
done
el done
grep -E "^\[|^\| seed" "$out/runs.txt"
