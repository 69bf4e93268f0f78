#!/usr/bin/env bash
# Interleaved gradus-vs-PyTorch runs for BENCHMARKS.md, with public tools only.
#
#   cargo build --release -p gradus-bench
#   bench/compare.sh [ROUNDS] [OUTDIR]        # default 5 rounds, bench-out/
#   python3 bench/summarize.py bench-out/     # medians; ratios only when every run was quiet
#
# Records the CPU model (lscpu) and the machine in OUTDIR/machine.json, both libraries' sgemm
# peaks (torch/MKL; gradus' candle matmul and the gemm crate into a preallocated output, which is
# what the fast training graph calls), and for every run the load average before and after it and
# the CPU other processes used during it (bench/quiet.sh; OUTDIR/<target>.<side>.load.jsonl).
# Each round runs every pair A (gradus) then B (PyTorch) once, each under `/usr/bin/time -v`
# (whole-process peak RSS = "Maximum resident set size"); the JSON line each program prints goes
# to OUTDIR/<target>.<side>.jsonl and the time report to OUTDIR/<target>.<side>.time.
# summarize.py refuses to print a ratio when any run saw a load average above 0.5 before it, or
# more than 0.5 core of foreign CPU during it: numbers from a loaded machine are not evidence
# (torch's OpenMP pool slows down far more than rayon when another process holds a core).
# Env: QUIET_MAX (0.5), QUIET_WAIT (180 s to wait for quiet before each run), ENGINE (fast).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/quiet.sh
ROUNDS=${1:-5}
OUT=${2:-bench-out}
ENGINE=${ENGINE:-fast}
mkdir -p "$OUT"
G=target/release/gradus-bench
export RAYON_NUM_THREADS=2
machine_json "$OUT"
echo "bench: CPU $(cpu_model), load average $(load1) at start" >&2

declare -A GRADUS=(
  [train_base]="$G train-step --preset base --steps 30 --warmup 3 --phases --engine $ENGINE"
  [train_lab]="$G train-step --preset lab --steps 200 --warmup 5 --phases --engine $ENGINE"
  [generate_base]="$G generate --preset base --repeats 60"
)
declare -A TORCH=(
  [train_base]="python3 bench/torch_train_step.py --preset base --steps 8 --warmup 2"
  [train_lab]="python3 bench/torch_train_step.py --preset lab --steps 80 --warmup 5"
  [generate_base]="python3 bench/torch_generate.py --preset base --repeats 15 --no-manual-loop"
)

run() { # target side command...
  local t=$1 s=$2; shift 2
  measured "$OUT/$t.$s.load.jsonl" /usr/bin/time -v -a -o "$OUT/$t.$s.time" "$@" >>"$OUT/$t.$s.jsonl"
}

measured "$OUT/sgemm.torch.load.jsonl" python3 bench/sgemm_peak.py --repeats 10 >>"$OUT/sgemm.torch.jsonl"
measured "$OUT/sgemm.gradus.load.jsonl" $G sgemm --repeats 10 >>"$OUT/sgemm.gradus.jsonl"
for r in $(seq "$ROUNDS"); do
  for t in train_base train_lab generate_base; do
    echo "round $r: $t" >&2
    run "$t" gradus ${GRADUS[$t]}
    run "$t" torch ${TORCH[$t]}
  done
done
python3 bench/summarize.py "$OUT"
