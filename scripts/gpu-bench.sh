#!/usr/bin/env bash
# Run on a lent NVIDIA machine (see ../shared/gpu/README.md), in one device
# call: our benchmark (with each kernel's time) and the PyTorch/JAX anchors
# on the same card, the SM clock logged beside them (an idle H100 runs its
# first ~0.3 s of work at 345 MHz: BENCHMARKS.md).
#
# Here, first:   bash ../shared/gpu/prepare.sh .gpu && cargo build --release --example bench
# Then, there:   bash scripts/gpu-bench.sh 20,24,28
#   (carry [".gpu", "target/release/examples/bench"]; results land in $OUT)
set -uo pipefail
cd "$(dirname "$0")/.."
sizes=${1:-20,24,28}
out=${OUT:-/tmp/wgrad-bench}
mkdir -p "$out"
# shellcheck disable=SC1091
source .gpu/env.sh
nvidia-smi --query-gpu=name,memory.total,clocks.max.mem,clocks.max.sm --format=csv >"$out/gpu.txt" 2>&1
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,utilization.gpu --format=csv -lms 100 >"$out/clocks.csv" 2>&1 &
smi=$!
./target/release/examples/bench --backend gpu --sizes "$sizes" --json --kernels >"$out/wgrad.jsonl" 2>"$out/wgrad.log"
python3 .gpu/anchors.py --sizes "$sizes" >"$out/anchors.jsonl" 2>"$out/anchors.log"
kill "$smi"
cat "$out/gpu.txt"
grep -v '^{' "$out/wgrad.jsonl"
grep -v '^{' "$out/anchors.jsonl" | tail -n +2
