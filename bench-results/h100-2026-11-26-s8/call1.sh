#!/usr/bin/env bash
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/out}; mkdir -p "$out"
source .gpu/env.sh
export XDG_RUNTIME_DIR=/tmp/xdg; mkdir -p -m 700 $XDG_RUNTIME_DIR
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 ))s] $*" | tee -a "$out/log.txt"; }
nvidia-smi --query-gpu=name,memory.total,clocks.max.mem,clocks.max.sm,driver_version --format=csv > "$out/gpu.txt" 2>&1
B=".gpu/bin/bench --backend gpu"
el "logreg subgroups"; timeout 90 $B --workload logreg --sizes 20,24,28 --kernels --json > "$out/logreg_sg.txt" 2>&1
el "logreg trees"; timeout 90 $B --workload logreg --sizes 20,24,28 --kernels --json --no-subgroups > "$out/logreg_tree.txt" 2>&1
el "lab"; timeout 100 .gpu/bin/zz_lab 268435456 > "$out/lab.txt" 2>&1
el "bench all"; timeout 100 $B --sizes 20,24,28 --kernels --json > "$out/all.txt" 2>&1
el "fusion tests"; WGRAD_REQUIRE_GPU=1 timeout 100 .gpu/bin/fusion --test-threads 4 > "$out/fusion.txt" 2>&1
el "random graphs"; WGRAD_REQUIRE_GPU=1 timeout 150 .gpu/bin/random_graphs --test-threads 8 > "$out/random.txt" 2>&1
el "done"
cat "$out/gpu.txt"; cat "$out/lab.txt"
for f in logreg_sg logreg_tree all; do echo "== $f"; grep -v '^{' "$out/$f.txt" | grep -v "^\s*$" | tail -30; done
tail -3 "$out/fusion.txt" "$out/random.txt"
