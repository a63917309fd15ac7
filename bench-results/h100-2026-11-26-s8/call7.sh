#!/usr/bin/env bash
# Final code (e813b0f) and the session's start (79114d2, bench-old) beside
# the PyTorch/JAX anchors, on the same card in one call.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/out}; mkdir -p "$out"
source .gpu/env.sh
export XDG_RUNTIME_DIR=/tmp/xdg; mkdir -p -m 700 $XDG_RUNTIME_DIR
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 ))s] $*" | tee -a "$out/log.txt"; }
nvidia-smi --query-gpu=name,memory.total,clocks.max.mem,clocks.max.sm,driver_version --format=csv > "$out/gpu.txt" 2>&1
for v in bench bench-old; do
  el "$v"; timeout 60 .gpu/bin/$v --backend gpu --sizes 20,24,28 --kernels --json > "$out/$v.txt" 2>&1
done
el "anchors"; timeout 100 python3 .gpu/anchors.py --sizes 20,24,28 > "$out/anchors.txt" 2> "$out/anchors.log"
el "bench again"; timeout 60 .gpu/bin/bench --backend gpu --sizes 20,24,28 --json > "$out/bench-again.txt" 2>&1
el "main job"; timeout 30 .gpu/bin/gradient_descent --backend gpu --n 268435456 --steps 400 --every 10 > "$out/main.txt" 2>&1
el "tests"; WGRAD_REQUIRE_GPU=1 timeout 30 .gpu/bin/fusion --test-threads 4 > "$out/fusion.txt" 2>&1
WGRAD_REQUIRE_GPU=1 WGRAD_PROPTEST_CASES=150 timeout 40 .gpu/bin/random_graphs --test-threads 8 > "$out/random.txt" 2>&1
el "done"
for v in bench bench-old bench-again; do echo "== $v"; grep -E "^\| (seed|rosenbrock|logreg) \| 2\^2[048] \| [0-9.]+ \| [0-9.]+ \| [0-9]+ \|" "$out/$v.txt"; done
grep -v '^{' "$out/anchors.txt" | tail -n 27; head -1 "$out/anchors.txt"
grep "time per step" "$out/main.txt"; grep "test result" "$out/fusion.txt" "$out/random.txt"
