#!/usr/bin/env bash
# Modular-addition sweep: gradus vs PyTorch (bench/dynamics/modular_sweep_torch.py), same seeds,
# steps, model, optimiser, evaluation and statistics cadence, 2 threads each, on a quiet machine.
#   bench/dynamics/modular_sweep.sh [SEEDS] [STEPS] [NORM]      (defaults 4 3000 rmsnorm)
# The issue's target: the 40-seed sweep to grokking at least 2x faster than PyTorch:
#   bench/dynamics/modular_sweep.sh 40 20000 layernorm
set -euo pipefail
cd "$(dirname "$0")/../.."
SEEDS=${1:-4}; STEPS=${2:-3000}; NORM=${3:-rmsnorm}
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
echo "load between: $(cut -d' ' -f1 /proc/loadavg)"
OMP_NUM_THREADS=2 python3 bench/dynamics/modular_sweep_torch.py --seeds $SEEDS --steps $STEPS --norm $NORM --threads 2
echo "load after: $(cut -d' ' -f1 /proc/loadavg)"
rm -rf "$OUT"
