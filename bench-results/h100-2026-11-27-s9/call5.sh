#!/usr/bin/env bash
# Ninth session, call 5: the tests on the card, then bench = f81de1b (this
# session's final code: the next run encoded ahead; reductions of one output
# folding their own chunks; logreg in two dispatches as before), bench
# --no-device-fences (the same code with the folds in second dispatches),
# bench-old = ffb149f (the session's start), anchors.py, bench again; the
# main job (Adam) at 2^28 and 2^20.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/out}; mkdir -p "$out"
source .gpu/env.sh
export XDG_RUNTIME_DIR=/tmp/xdg; mkdir -p -m 700 $XDG_RUNTIME_DIR
python3 - <<'PY'
import lzma, glob, os
for f in glob.glob(".gpu/bin/*.xz"):
    open(f[:-3], "wb").write(lzma.open(f).read()); os.chmod(f[:-3], 0o755)
PY
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 ))s] $*" | tee -a "$out/log.txt"; }
nvidia-smi --query-gpu=name,memory.total,clocks.max.mem,clocks.max.sm,driver_version --format=csv > "$out/gpu.txt" 2>&1
el "tests"; WGRAD_REQUIRE_GPU=1 timeout 40 .gpu/bin/fusion --test-threads 4 > "$out/fusion.txt" 2>&1
WGRAD_REQUIRE_GPU=1 WGRAD_PROPTEST_CASES=100 timeout 40 .gpu/bin/random_graphs --test-threads 8 > "$out/random.txt" 2>&1
el "bench"; timeout 40 .gpu/bin/bench --backend gpu --sizes 20,24,28 --kernels --json > "$out/bench.txt" 2>&1
el "bench two dispatches"; timeout 40 .gpu/bin/bench --backend gpu --sizes 20,24,28 --workload seed --no-device-fences --kernels --json > "$out/bench-two.txt" 2>&1
el "bench-old"; timeout 40 .gpu/bin/bench-old --backend gpu --sizes 20,24,28 --json > "$out/bench-old.txt" 2>&1
el "anchors"; timeout 100 python3 .gpu/anchors.py --sizes 20,24,28 > "$out/anchors.txt" 2> "$out/anchors.log"
el "bench again"; timeout 40 .gpu/bin/bench --backend gpu --sizes 20,24,28 --json > "$out/bench-again.txt" 2>&1
el "main job"; timeout 30 .gpu/bin/gradient_descent --backend gpu --n 268435456 --steps 400 --every 10 > "$out/main.txt" 2>&1
timeout 30 .gpu/bin/gradient_descent --backend gpu --n 1048576 --steps 2000 --every 10 > "$out/main-20.txt" 2>&1
el "done"
grep "test result" "$out/fusion.txt" "$out/random.txt"; grep -E "panicked|FAILED" "$out/fusion.txt" "$out/random.txt" | head -5
for v in bench bench-two bench-old bench-again; do echo "== $v"; grep -E "^\| (seed|rosenbrock|logreg) \| 2\^2[048] \| ([0-9]|[0-9.]+ \| [0-9.]+ \| [0-9]+) \|" "$out/$v.txt"; done
grep -v '^{' "$out/anchors.txt" | tail -n 27; head -1 "$out/anchors.txt"
grep "time per step" "$out/main.txt" "$out/main-20.txt"
