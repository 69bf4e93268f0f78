#!/usr/bin/env bash
# Modular-addition sweep: gradus vs PyTorch (bench/dynamics/modular_sweep_torch.py), same seeds,
# steps, model, optimiser, evaluation and statistics cadence, 2 threads each, on a quiet machine.
#   bench/dynamics/modular_sweep.sh [SEEDS] [STEPS] [NORM]      (defaults 40 500 layernorm)
# The issue's target: the 40-seed sweep to grokking at least 2x faster than PyTorch. With LayerNorm
# (p = 113, 30% of the pairs) every seed passes held-out accuracy 0.5 by step ~200-300 on both
# sides (both print their convergence steps), so 500 steps is the sweep to grokking; the paper's
# 20,000 steps per seed would take hours on 2 cores (steps/s is what the ratio compares).
set -euo pipefail
cd "$(dirname "$0")/../.."
SEEDS=${1:-40}; STEPS=${2:-500}; NORM=${3:-layernorm}
cargo build --release -p gradus-cli >/dev/null
lscpu | grep "Model name" || true
for i in $(seq 1 60); do l=$(cut -d' ' -f1 /proc/loadavg); awk "BEGIN{exit !($l < 0.5)}" && break; sleep 5; done
echo "load before: $(cut -d' ' -f1 /proc/loadavg)"
OUT=$(mktemp -d)
t0=$(date +%s.%N)
RAYON_NUM_THREADS=2 target/release/gradus sweep --config configs/pretrain/modular-addition.toml \
  --seeds 0..$SEEDS --jobs 1 --metric eval/accuracy \
  --set run.dir="\"$OUT\"" --set train.steps=$STEPS --set train.save_every=$STEPS \
  --set model.config.norm="\"$NORM\"" >/dev/null
t1=$(date +%s.%N)
python3 -c "import json;print(json.dumps({'impl':'gradus','seeds':$SEEDS,'steps':$STEPS,'norm':'$NORM','wall_s':round($t1-$t0,2),'steps_per_s':round($SEEDS*$STEPS/($t1-$t0),1)}))"
python3 -c "import json;rows=json.load(open('$OUT/modular-addition-sweep.json'));print('gradus convergence steps', [r['convergence_step'] if r['converged'] else None for r in rows])"
# The gradus run's own threads lift the 1-minute average: wait for it to fall again.
for i in $(seq 1 60); do l=$(cut -d' ' -f1 /proc/loadavg); awk "BEGIN{exit !($l < 0.5)}" && break; sleep 5; done
echo "load between: $(cut -d' ' -f1 /proc/loadavg)"
OMP_NUM_THREADS=2 python3 bench/dynamics/modular_sweep_torch.py --seeds $SEEDS --steps $STEPS --norm $NORM --threads 2
echo "load after: $(cut -d' ' -f1 /proc/loadavg)"
rm -rf "$OUT"
