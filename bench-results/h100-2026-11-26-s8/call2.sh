#!/usr/bin/env bash
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/out}; mkdir -p "$out"
source .gpu/env.sh
export XDG_RUNTIME_DIR=/tmp/xdg; mkdir -p -m 700 $XDG_RUNTIME_DIR
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 ))s] $*" | tee -a "$out/log.txt"; }
nvidia-smi --query-gpu=name,memory.total,clocks.max.mem,clocks.max.sm,driver_version --format=csv > "$out/gpu.txt" 2>&1
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,utilization.gpu --format=csv -lms 100 > "$out/clocks.csv" 2>&1 & smi=$!
for v in new old new2; do
  b=.gpu/bin/bench; [ $v = old ] && b=.gpu/bin/bench-old
  el "bench $v"; timeout 80 $b --backend gpu --sizes 20,24,28 --kernels --json > "$out/bench-$v.txt" 2>&1
done
el "anchors"; timeout 240 python3 .gpu/anchors.py --sizes 20,24,28 > "$out/anchors.txt" 2> "$out/anchors.log"
el "main job"; timeout 60 .gpu/bin/gradient_descent --backend gpu --n 268435456 --steps 40 --every 10 > "$out/main28.txt" 2>&1
timeout 30 .gpu/bin/gradient_descent --backend gpu --n 1048576 --steps 300 --every 10 > "$out/main20.txt" 2>&1
el "tests"; WGRAD_REQUIRE_GPU=1 timeout 60 .gpu/bin/fusion --test-threads 4 > "$out/fusion.txt" 2>&1
WGRAD_REQUIRE_GPU=1 timeout 90 .gpu/bin/random_graphs --test-threads 8 > "$out/random.txt" 2>&1
el "done"; kill $smi
cat "$out/gpu.txt"
for v in new old new2; do echo "== $v"; grep -E "^\| (seed|rosenbrock|logreg) " "$out/bench-$v.txt"; done
grep -v '^{' "$out/anchors.txt" | tail -n 12
tail -n 4 "$out/main28.txt" "$out/main20.txt"
grep "test result" "$out/fusion.txt" "$out/random.txt"
