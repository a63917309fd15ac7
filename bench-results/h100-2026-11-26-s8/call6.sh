#!/usr/bin/env bash
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/out}; mkdir -p "$out"
source .gpu/env.sh
export XDG_RUNTIME_DIR=/tmp/xdg; mkdir -p -m 700 $XDG_RUNTIME_DIR
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 ))s] $*" >> "$out/runs.txt"; }
for v in bench bench-g256 bench-g512 bench bench-g256 bench-g512; do
  el "$v"; timeout 60 .gpu/bin/$v --backend gpu --workload logreg --sizes 20,24,28 --reps 50 --kernels >> "$out/runs.txt" 2>&1
done
el done
grep -E "^\[|^\| logreg \| 2\^2[48]" "$out/runs.txt"
