#!/usr/bin/env bash
# Interleaved gradus-vs-PyTorch runs for BENCHMARKS.md, with public tools only.
#
#   cargo build --release -p gradus-bench
#   bench/compare.sh [ROUNDS] [OUTDIR]        # default 5 rounds, bench-out/
#   python3 bench/summarize.py bench-out/     # medians, ratios, fraction of sgemm peak
#
# Each round runs every pair A (gradus) then B (PyTorch) once, each under `/usr/bin/time -v`
# (whole-process peak RSS = "Maximum resident set size"); the JSON line each program prints goes
# to OUTDIR/<target>.<side>.jsonl and the time report to OUTDIR/<target>.<side>.time.
# Run it on an otherwise idle machine: torch's OpenMP pool slows down a lot more than rayon when
# another process holds one of the two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
OUT=${2:-bench-out}
mkdir -p "$OUT"
G=target/release/gradus-bench
export RAYON_NUM_THREADS=2

declare -A GRADUS=(
  [train_base]="$G train-step --preset base --steps 30 --warmup 3 --phases"
  [train_lab]="$G train-step --preset lab --steps 200 --warmup 5 --phases"
  [generate_base]="$G generate --preset base --repeats 60"
)
declare -A TORCH=(
  [train_base]="python3 bench/torch_train_step.py --preset base --steps 8 --warmup 2"
  [train_lab]="python3 bench/torch_train_step.py --preset lab --steps 80 --warmup 5"
  [generate_base]="python3 bench/torch_generate.py --preset base --repeats 15 --no-manual-loop"
)

run() { # target side command...
  local t=$1 s=$2; shift 2
  /usr/bin/time -v -a -o "$OUT/$t.$s.time" "$@" >>"$OUT/$t.$s.jsonl"
}

python3 bench/sgemm_peak.py --repeats 10 >>"$OUT/sgemm.torch.jsonl"
$G sgemm --repeats 10 >>"$OUT/sgemm.gradus.jsonl"
for r in $(seq "$ROUNDS"); do
  for t in train_base train_lab generate_base; do
    echo "round $r: $t" >&2
    run "$t" gradus ${GRADUS[$t]}
    run "$t" torch ${TORCH[$t]}
  done
done
