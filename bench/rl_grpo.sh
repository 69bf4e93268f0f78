#!/usr/bin/env bash
# TRL GRPOTrainer (no vLLM) vs `gradus train rl` (GRPO) on the identical tiny model and prompts,
# interleaved; optimizer steps per second with rollouts included, and peak RSS.
#
#   cargo build --release --bin gradus && bash bench/rl_grpo.sh
#
# 1. bench/trl_grpo.py --export writes the model, tokenizer and prompts.
# 2. ROUNDS times: TRL (its median step time after warm-up, its ru_maxrss), then gradus on the export
#    with the same settings: G 8, 16 completions per step (2 prompts), max 32 new tokens, temperature 1,
#    β 0 (no reference), loss dapo, ε 0.2, AdamW lr 1e-6 constant, clip 1.0, reward 1 if the completion
#    holds the word w1. gradus' steps/s is the median of metrics.jsonl's `train/steps_per_s` after the
#    same warm-up (a step's time includes its rollouts: one generation batch per step); its peak RSS is
#    /usr/bin/time's.
# 3. Every run's load is recorded (bench/quiet.sh); a ratio is printed only when all runs were quiet.
# Env: ROUNDS (3), OUT (/tmp/gradus-rl-bench), STEPS (20), WARMUP (3), QUIET_MAX (0.5), QUIET_WAIT (180).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/quiet.sh
ROUNDS=${ROUNDS:-3}
OUT=${OUT:-/tmp/gradus-rl-bench}
STEPS=${STEPS:-20}
WARMUP=${WARMUP:-3}
GRADUS=${GRADUS:-target/release/gradus}
mkdir -p "$OUT"
rm -f "$OUT"/*.load.jsonl
machine_json "$OUT"
echo "bench: CPU $(cpu_model), load average $(load1) at start" >&2
python3 bench/trl_grpo.py --export "$OUT/export" --steps 2 --warmup 0 > "$OUT/export.json"
for r in $(seq 1 "$ROUNDS"); do
  measured "$OUT/trl.load.jsonl" python3 bench/trl_grpo.py --steps "$STEPS" --warmup "$WARMUP" > "$OUT/trl-$r.json"
  rm -rf "$OUT/runs/r$r"
  measured "$OUT/gradus.load.jsonl" /usr/bin/time -f "%M" -o "$OUT/gradus-$r.rss" "$GRADUS" train rl \
    --set model.init_from="\"$OUT/export/model\"" --set tokenizer.path="\"$OUT/export\"" \
    --set data.source="\"$OUT/export/prompts.jsonl\"" \
    --set algorithm.kind=grpo --set algorithm.num_generations=8 --set algorithm.beta=0.0 \
    --set algorithm.loss_type=dapo --set algorithm.epsilon=0.2 \
    --set generation.max_new_tokens=32 --set generation.temperature=1.0 \
    --set 'rewards=[{kind = "regex", pattern = "\\bw1\\b"}]' \
    --set train.steps=$((STEPS + WARMUP)) --set train.batch_size=16 --set train.lr=1e-6 \
    --set train.max_grad_norm=1.0 --set train.progress=false --set train.weight_norms_every=0 \
    --set optimizer.weight_decay=0.0 --set schedule.kind=constant --set schedule.warmup_steps=0 \
    --set log.completions=0 \
    --set run.dir="\"$OUT/runs\"" --set run.name=r$r > "$OUT/gradus-$r.out"
done
python3 - "$OUT" "$ROUNDS" "$WARMUP" "$QUIET_MAX" <<'PY'
import json, statistics, sys
out, rounds, warm, qmax = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
def jl(p):
    try:
        return [json.loads(l) for l in open(p) if l.startswith("{")]
    except FileNotFoundError:
        return []
m = json.load(open(f"{out}/machine.json"))
print(f"CPU: {m['cpu_model']}, {m['nproc']} cores, git {m['git_rev']}")
bad = []
for side in ("trl", "gradus"):
    loads = jl(f"{out}/{side}.load.jsonl")
    if len(loads) < rounds:
        bad.append(f"{side}: {rounds - len(loads)} run(s) without a load record")
    for i, l in enumerate(loads):
        if l["load_before"] > qmax:
            bad.append(f"{side} run {i + 1}: load average {l['load_before']} before the run")
        if l["foreign_cores"] > qmax:
            bad.append(f"{side} run {i + 1}: other processes used {l['foreign_cores']:.2f} cores during it")
rows = []
for r in range(1, rounds + 1):
    t = json.load(open(f"{out}/trl-{r}.json"))
    mm = [json.loads(l) for l in open(f"{out}/runs/r{r}/metrics.jsonl")]
    g = statistics.median(x["train/steps_per_s"] for x in mm[warm:])
    glen = statistics.mean(x["completions/mean_length"] for x in mm)
    g_rss = int(open(f"{out}/gradus-{r}.rss").read().split()[-1]) / 1024
    rows.append((t["steps_per_s"], g, t["peak_rss_mib"], g_rss))
    print(f"round {r}{' (raw, loaded)' if bad else ''}: TRL {t['steps_per_s']:.3f} steps/s (mean completion "
          f"{t['mean_completion_length']}), gradus {g:.3f} steps/s (mean completion {glen:.1f}); "
          f"peak RSS TRL {t['peak_rss_mib']:.0f} MiB, gradus {g_rss:.0f} MiB")
if bad:
    print("!! NOT EVIDENCE: the machine was loaded during these runs; no ratio printed")
    for b in bad:
        print(f"   {b}")
    print(json.dumps({"evidence": False, "reasons": bad, "cpu_model": m["cpu_model"]}))
    sys.exit(0)
sp = [g / t for t, g, _, _ in rows]
rs = [g / t for _, _, t, g in rows]
print(json.dumps({"evidence": True, "cpu_model": m["cpu_model"], "speed_ratio_median": statistics.median(sp),
                  "speed_ratios": sp, "rss_ratio_median": statistics.median(rs)}))
PY
