#!/usr/bin/env bash
# Ninth session, call 3: the tests on the card (both one-dispatch folds are
# new: reductions' chunks in blocks of 256, row+column partials in blocks
# of 32 groups); then bench = fac8d2b at all sizes, and bench-x2 = fac8d2b
# with two knobs read from the environment for this call only:
# WGRAD_ROWS_PER_GROUP (row+column groups' rows; the code's rule gives 256
# at 2^28, 64 at 2^24) and WGRAD_MAX_CHUNKS (most chunks of a reduction
# folded in its own dispatch; 65535 in the code).
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
R="$out/runs.txt"
el "tests"; WGRAD_REQUIRE_GPU=1 timeout 40 .gpu/bin/fusion --test-threads 4 > "$out/fusion.txt" 2>&1
WGRAD_REQUIRE_GPU=1 WGRAD_PROPTEST_CASES=100 timeout 40 .gpu/bin/random_graphs --test-threads 8 > "$out/random.txt" 2>&1
el "bench"; timeout 40 .gpu/bin/bench --backend gpu --sizes 20,24,28 --kernels >> $R 2>&1
for g in 64 128 256 512; do
  el "logreg rows per group $g"; WGRAD_ROWS_PER_GROUP=$g timeout 30 .gpu/bin/bench-x2 --backend gpu --sizes 28 --workload logreg --kernels >> $R 2>&1
done
for g in 32 64 128; do
  el "logreg 2^24 rows per group $g"; WGRAD_ROWS_PER_GROUP=$g timeout 30 .gpu/bin/bench-x2 --backend gpu --sizes 24 --workload logreg --kernels >> $R 2>&1
done
for c in 16384 65535; do
  el "seed chunks $c"; WGRAD_MAX_CHUNKS=$c timeout 30 .gpu/bin/bench-x2 --backend gpu --sizes 24,28 --workload seed --kernels >> $R 2>&1
done
el "done"
grep "test result" "$out/fusion.txt" "$out/random.txt"; grep -E "panicked|FAILED" "$out/fusion.txt" "$out/random.txt" | head -5
grep -E "^\[|^\| (seed|logreg|rosenbrock) \| 2\^2[048] \| ([0-9]|[0-9.]+ \| [0-9.]+ \| [0-9]+) \|" $R
