#!/usr/bin/env bash
# The fast training graph vs the candle reference path, interleaved x3, each run started below load 0.5.
# Needs: cargo build --release -p gradus-bench
cd "$(dirname "$0")/.."
lscpu | grep "Model name"
for round in 1 2 3; do
 for preset in lab base; do
  for eng in fast reference; do
   for i in $(seq 1 30); do l=$(cut -d' ' -f1 /proc/loadavg); awk "BEGIN{exit !($l < 0.5)}" && break; sleep 5; done
   l0=$(cut -d' ' -f1 /proc/loadavg)
   out=$(RAYON_NUM_THREADS=2 target/release/gradus-bench train-step --preset $preset --steps 15 --warmup 3 --engine $eng 2>/dev/null | tr -d '\n')
   l1=$(cut -d' ' -f1 /proc/loadavg)
   tps=$(echo "$out" | python3 -c "import json,sys; d=json.load(sys.stdin); print({k:v for k,v in d.items() if 'tok' in k or 'step' in k or 'ms' in k})" 2>/dev/null)
   echo "round $round $preset $eng load_before=$l0 load_after=$l1 $tps"
  done
 done
done
