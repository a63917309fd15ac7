#!/usr/bin/env bash
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/out}; mkdir -p "$out"
source .gpu/env.sh
export XDG_RUNTIME_DIR=/tmp/xdg; mkdir -p -m 700 $XDG_RUNTIME_DIR
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 ))s] $*" >> "$out/runs.txt"; }
for v in bench bench-spin bench bench-spin; do
  el "$v"; timeout 60 .gpu/bin/$v --backend gpu --sizes 20,24,28 --reps 50 >> "$out/runs.txt" 2>&1
done
for v in gradient_descent gd-spin gradient_descent gd-spin; do
  el "$v 2^28"; timeout 40 .gpu/bin/$v --backend gpu --n 268435456 --steps 400 --every 10 >> "$out/runs.txt" 2>&1
done
el done
grep -E "^\[|time per step|^\| (seed|rosenbrock|logreg)" "$out/runs.txt"
