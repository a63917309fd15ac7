#!/usr/bin/env bash
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/out}; mkdir -p "$out"
source .gpu/env.sh
export XDG_RUNTIME_DIR=/tmp/xdg; mkdir -p -m 700 $XDG_RUNTIME_DIR
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 ))s] $*" >> "$out/runs.txt"; }
for v in gradient_descent gd-old gradient_descent gd-old; do
  el "$v 2^28"; timeout 40 .gpu/bin/$v --backend gpu --n 268435456 --steps 400 --every 10 >> "$out/runs.txt" 2>&1
done
for v in gradient_descent gd-old; do
  el "$v 2^20"; timeout 20 .gpu/bin/$v --backend gpu --n 1048576 --steps 2000 --every 10 >> "$out/runs.txt" 2>&1
done
el "bench reps 200"; timeout 80 .gpu/bin/bench --backend gpu --sizes 20,28 --reps 200 >> "$out/runs.txt" 2>&1
el done
grep -E "^\[|time per step|moved per step|^\| (seed|rosenbrock|logreg)" "$out/runs.txt"
