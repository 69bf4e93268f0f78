#!/usr/bin/env bash
# Training-step speed of `gradus lab icl-transience` (default size, L2 arm) vs the same model and
# step in PyTorch (bench/icl_transience.py), interleaved x3, each run started below load 0.5.
# Target (issue 16): gradus >= 2x PyTorch's steps/s. Only meaningful on a quiet machine.
# Needs: cargo build --release -p gradus-bench; python3 with torch + transformers.
# Usage: bench/icl_transience.sh [python] (default python3); GRADUS_BENCH=path overrides the binary.
cd "$(dirname "$0")/.."
PY=${1:-python3}
lscpu | grep "Model name"
for round in 1 2 3; do
  for impl in gradus torch; do
    for i in $(seq 1 30); do l=$(cut -d' ' -f1 /proc/loadavg); awk "BEGIN{exit !($l < 0.5)}" && break; sleep 5; done
    l0=$(cut -d' ' -f1 /proc/loadavg)
    if [ $impl = gradus ]; then
      out=$(RAYON_NUM_THREADS=2 ${GRADUS_BENCH:-target/release/gradus-bench} icl-step --steps 300 --warmup 30 2>/dev/null)
    else
      out=$($PY bench/icl_transience.py --steps 300 --warmup 30 --threads 2 2>/dev/null)
    fi
    l1=$(cut -d' ' -f1 /proc/loadavg)
    echo "round $round $impl load_before=$l0 load_after=$l1 $out"
  done
done
