#!/usr/bin/env bash
# Issue 12's GEMM study on this machine: every candidate and MKL's torch.matmul on the engine's
# GEMM shapes (bench/gemm-study/README.md), interleaved, with one markdown table per path.
#
#   bash bench/gemm_study.sh [ROUNDS] [OUTDIR]       # default 3 rounds, gemm-study-out/
#
# 1. Builds bench/gemm-study twice in release: with the gemm crate's x86-v4 feature (AVX-512
#    kernels, as the workspace enables it; target/release) and without it (the gemm crate's
#    AVX2+FMA kernels; target/avx2/release). On an AVX-512 CPU the second build stands in for
#    AVX2-only CPUs (our kernel and faer's kernel take their AVX2 paths by an explicit switch,
#    MKL by MKL_ENABLE_INSTRUCTIONS=AVX2).
# 2. Records the CPU model and flags (lscpu) in OUTDIR/machine.json.
# 3. Each round runs, each behind bench/quiet.sh's `measured` (waits up to QUIET_WAIT s for the
#    1-minute load average to fall below QUIET_MAX = 0.5, logs load before/after and foreign CPU to
#    OUTDIR/load.jsonl): the AVX-512 build (gemm, faer, own, own with B packed once), the AVX2 build
#    (same, AVX2 paths), torch.matmul (MKL), torch.matmul with MKL restricted to AVX2.
# 4. Prints bench/gemm_study_table.py's tables: it marks the results NOT EVIDENCE when any run
#    started at load average ≥ 0.5 or saw > 0.5 foreign cores.
#
# Env: TORCH_PYTHON (python with torch + MKL; default python3), THREADS (2), BUDGET_MS (60 per
# shape × candidate × round), QUIET_MAX (0.5), QUIET_WAIT (120). About 4-6 minutes on 2 quiet cores
# after the builds (the waits for the load average to settle between runs are most of it).
set -euo pipefail
cd "$(dirname "$0")/.."
export QUIET_WAIT=${QUIET_WAIT:-120}
. bench/quiet.sh
ROUNDS=${1:-3}
OUT=${2:-gemm-study-out}
PY=${TORCH_PYTHON:-python3}
THREADS=${THREADS:-2}
BUDGET_MS=${BUDGET_MS:-60}
MAN=bench/gemm-study/Cargo.toml
V4=bench/gemm-study/target/release/gemm-study
V3=bench/gemm-study/target/avx2/release/gemm-study

"$PY" -c 'import torch' 2>/dev/null || {
  echo "gemm_study: $PY cannot import torch; set TORCH_PYTHON to a python with torch (MKL)" >&2
  exit 2
}
cargo build --release --manifest-path "$MAN"
cargo build --release --manifest-path "$MAN" --no-default-features --target-dir bench/gemm-study/target/avx2

mkdir -p "$OUT"
rm -f "$OUT/results.jsonl" "$OUT/load.jsonl"
flag() { grep -qw "$1" /proc/cpuinfo && echo yes || echo no; }
AVX512=$(flag avx512f)
machine_json "$OUT"
# Add the flags, thread count and torch build to machine.json.
"$PY" - "$OUT/machine.json" "$(flag avx2)" "$(flag fma)" "$AVX512" "$THREADS" <<'EOF'
import json, sys, torch
p, avx2, fma, avx512, threads = sys.argv[1:]
m = json.load(open(p))
m.update(avx2=avx2, fma=fma, avx512f=avx512, threads=int(threads),
         torch=f"{torch.__version__}, MKL {torch.backends.mkl.is_available()}")
json.dump(m, open(p, "w"))
EOF
"$V4" shapes >"$OUT/shapes.jsonl"
echo "gemm_study: CPU $(cpu_model), avx512f $AVX512, load average $(load1) at start" >&2

export RAYON_NUM_THREADS=$THREADS
COMMON=(--threads "$THREADS" --budget-ms "$BUDGET_MS")
for r in $(seq "$ROUNDS"); do
  echo "gemm_study: round $r of $ROUNDS" >&2
  if [ "$AVX512" = yes ]; then
    measured "$OUT/load.jsonl" "$V4" run "${COMMON[@]}" --round "$r" \
      --candidates gemm,faer,own-avx512,own-prepacked-avx512 >>"$OUT/results.jsonl"
    measured "$OUT/load.jsonl" "$V3" run "${COMMON[@]}" --round "$r" \
      --candidates gemm,faer-avx2,own-avx2,own-prepacked-avx2 >>"$OUT/results.jsonl"
    measured "$OUT/load.jsonl" "$PY" bench/gemm_study_torch.py --shapes "$OUT/shapes.jsonl" \
      --threads "$THREADS" --budget-ms "$BUDGET_MS" --round "$r" --label mkl >>"$OUT/results.jsonl"
    measured "$OUT/load.jsonl" env MKL_ENABLE_INSTRUCTIONS=AVX2 "$PY" bench/gemm_study_torch.py \
      --shapes "$OUT/shapes.jsonl" --threads "$THREADS" --budget-ms "$BUDGET_MS" --round "$r" \
      --label mkl-avx2 >>"$OUT/results.jsonl"
  else
    # AVX2-only CPU: the x86-v4 build's gemm crate falls back to AVX2 at run time.
    measured "$OUT/load.jsonl" "$V4" run "${COMMON[@]}" --round "$r" \
      --candidates gemm,faer,own-avx2,own-prepacked-avx2 >>"$OUT/results.jsonl"
    measured "$OUT/load.jsonl" "$PY" bench/gemm_study_torch.py --shapes "$OUT/shapes.jsonl" \
      --threads "$THREADS" --budget-ms "$BUDGET_MS" --round "$r" --label mkl >>"$OUT/results.jsonl"
  fi
done
python3 bench/gemm_study_table.py "$OUT" | tee "$OUT/table.md"
