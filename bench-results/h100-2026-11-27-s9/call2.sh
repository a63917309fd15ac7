#!/usr/bin/env bash
# Ninth session, call 2: bench-x is d5351c1 with two knobs read from the
# environment for this call only: WGRAD_MAX_CHUNKS (a reduction's most
# chunks, 4096 in the code) and WGRAD_NO_PRELOAD (the row+column subgroup
# kernel without the columnwise broadcasts read before the rows). bench-s1
# is 89f94b4 (runtime subgroup size, no preload). Kernel times (--kernels)
# with the reduction's two passes apart (--no-device-fences), and steps.
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
for round in 1 2; do
  el "logreg s1"; timeout 30 .gpu/bin/bench-s1 --backend gpu --sizes 24,28 --workload logreg --kernels >> $R 2>&1
  el "logreg x no preload"; WGRAD_NO_PRELOAD=1 timeout 30 .gpu/bin/bench-x --backend gpu --sizes 24,28 --workload logreg --kernels >> $R 2>&1
  el "logreg x preload"; timeout 30 .gpu/bin/bench-x --backend gpu --sizes 24,28 --workload logreg --kernels >> $R 2>&1
done
for c in 4096 16384 65535; do
  el "seed chunks $c two passes"; WGRAD_MAX_CHUNKS=$c timeout 30 .gpu/bin/bench-x --backend gpu --sizes 28 --workload seed --kernels --no-device-fences >> $R 2>&1
  el "seed chunks $c one pass"; WGRAD_MAX_CHUNKS=$c timeout 30 .gpu/bin/bench-x --backend gpu --sizes 24,28 --workload seed --kernels >> $R 2>&1
done
el "done"
grep -E "^\[|^\| (seed|logreg) \| 2\^2[48] \| ([0-9]|[0-9.]+ \| [0-9.]+ \| [0-9]+) \|" $R
