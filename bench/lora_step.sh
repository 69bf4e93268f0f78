#!/usr/bin/env bash
# A LoRA training step vs a full one, on the fast graph and the candle reference path: base preset,
# interleaved x3, each run started below load 0.5 (bench/engine_ab.sh's protocol). LoRA: rank 8,
# alpha 16, every linear (q,k,v,o,gate,up,down) and q,v only; the base is frozen, so the fast graph
# skips the base weight-gradient GEMMs (the reference path still forms them: candle's matmul backward
# computes both operands' gradients).
# Needs: cargo build --release -p gradus-bench. Run on a quiet machine; record in BENCHMARKS.md.
cd "$(dirname "$0")/.."
lscpu | grep "Model name"
PRESET=${PRESET:-base}
for round in 1 2 3; do
 for eng in fast reference; do
  for lora in "0 all" "8 q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj" "8 q_proj,v_proj"; do
   set -- $lora
   for i in $(seq 1 30); do l=$(cut -d' ' -f1 /proc/loadavg); awk "BEGIN{exit !($l < 0.5)}" && break; sleep 5; done
   l0=$(cut -d' ' -f1 /proc/loadavg)
   out=$(RAYON_NUM_THREADS=2 target/release/gradus-bench train-step --preset $PRESET --steps 15 --warmup 3 --engine $eng --lora $1 --lora-targets "$2" --phases 2>/dev/null | tr -d '\n')
   l1=$(cut -d' ' -f1 /proc/loadavg)
   sum=$(echo "$out" | python3 -c "import json,sys; d=json.load(sys.stdin); print({k:v for k,v in d.items() if k in ('step_ms_median','tokens_per_s','n_params_trained') or k.endswith('_ms_median')})" 2>/dev/null)
   echo "round $round $PRESET $eng lora=$1 targets=$2 load_before=$l0 load_after=$l1 $sum"
  done
 done
done
