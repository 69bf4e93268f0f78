#!/usr/bin/env bash
# TRL DPOTrainer vs `gradus train dpo` on the identical tiny model and pairs, interleaved.
#
#   cargo build --release --bin gradus && bash bench/dpo_compare.sh
#
# 1. bench/trl_dpo.py --export writes the model, tokenizer and pairs (the order TRL trains in).
# 2. ROUNDS times: TRL (its own median step time after warm-up, its ru_maxrss), then gradus on the
#    export with the same settings: batch 8 pairs, sigmoid β 0.1, AdamW lr 1e-6, constant lr,
#    clip 1.0, file order, and an *online* reference (a frozen copy scored every step, as TRL does;
#    gradus' default `precompute` is faster still). gradus' steps/s is the median of
#    metrics.jsonl's `train/steps_per_s` after the same warm-up; its peak RSS is /usr/bin/time's.
# 3. Records the CPU model (lscpu) in OUT/machine.json, both libraries' sgemm peaks, and for every
#    run the load average before/after and the CPU other processes used during it (bench/quiet.sh);
#    prints a speed ratio only when every run was quiet (load average <= 0.5 before it, <= 0.5
#    foreign core during it), and a loud NOT EVIDENCE banner with the raw numbers otherwise.
# Env: ROUNDS (3), OUT (/tmp/gradus-dpo-bench), STEPS (30), WARMUP (3), MODE (online),
#      QUIET_MAX (0.5), QUIET_WAIT (180), GRADUS_BENCH (target/release/gradus-bench, for sgemm).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/quiet.sh
ROUNDS=${ROUNDS:-3}
OUT=${OUT:-/tmp/gradus-dpo-bench}
STEPS=${STEPS:-30}
WARMUP=${WARMUP:-3}
MODE=${MODE:-online}
GRADUS=${GRADUS:-target/release/gradus}
GB=${GRADUS_BENCH:-target/release/gradus-bench}
mkdir -p "$OUT"
rm -f "$OUT"/*.load.jsonl "$OUT"/sgemm.*.jsonl
machine_json "$OUT"
echo "bench: CPU $(cpu_model), load average $(load1) at start" >&2
measured "$OUT/sgemm.torch.load.jsonl" python3 bench/sgemm_peak.py --repeats 10 >>"$OUT/sgemm.torch.jsonl"
if [ -x "$GB" ]; then
  measured "$OUT/sgemm.gradus.load.jsonl" "$GB" sgemm --repeats 10 >>"$OUT/sgemm.gradus.jsonl"
else
  echo "bench: $GB not built (cargo build --release -p gradus-bench); no gradus sgemm peak recorded" >&2
fi
python3 bench/trl_dpo.py --export "$OUT/export" --steps 2 --warmup 0 > "$OUT/export.json"
# No truncation on either side: every pair fits the exported model's context (TRL's max_length is
# None), and gradus refuses a seq_len above max_position_embeddings.
SEQ_LEN=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['max_position_embeddings'])" "$OUT/export/model/config.json")
for r in $(seq 1 "$ROUNDS"); do
  measured "$OUT/trl.load.jsonl" python3 bench/trl_dpo.py --steps "$STEPS" --warmup "$WARMUP" > "$OUT/trl-$r.json"
  rm -rf "$OUT/runs/r$r"
  measured "$OUT/gradus.load.jsonl" /usr/bin/time -f "%M" -o "$OUT/gradus-$r.rss" "$GRADUS" train dpo \
    --set model.init_from="\"$OUT/export/model\"" --set tokenizer.path="\"$OUT/export\"" \
    --set data.source="\"$OUT/export/data.jsonl\"" --set data.seq_len=$SEQ_LEN \
    --set train.steps=$((STEPS + WARMUP)) --set train.batch_size=8 --set train.lr=1e-6 \
    --set train.max_grad_norm=1.0 --set train.progress=false --set train.weight_norms_every=0 \
    --set optimizer.weight_decay=0.0 --set schedule.kind=constant --set schedule.warmup_steps=0 \
    --set prefs.shuffle=false --set prefs.eval_pairs=0 --set reference.mode=$MODE \
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
peaks = {s: max((r.get("peak_gflops", 0) for r in jl(f"{out}/sgemm.{s}.jsonl")), default=None) for s in ("torch", "gradus")}
pre = max((r.get("peak_gflops_prealloc", 0) for r in jl(f"{out}/sgemm.gradus.jsonl")), default=None)
print(f"sgemm peak GFLOP/s: torch/MKL {peaks['torch']}; gradus candle matmul {peaks['gradus']}, gemm crate preallocated {pre}")
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
    g_rss = int(open(f"{out}/gradus-{r}.rss").read().split()[-1]) / 1024
    t_rss = t.get("peak_rss_mib") or t.get("peak_rss_mb")
    rows.append((t["steps_per_s"], g, t_rss, g_rss))
    if bad:
        print(f"round {r} (raw, loaded): TRL {t['steps_per_s']:.2f} steps/s, gradus {g:.2f} steps/s; peak RSS TRL {t_rss:.0f} MiB, gradus {g_rss:.0f} MiB")
    else:
        print(f"round {r}: TRL {t['steps_per_s']:.2f} steps/s, gradus {g:.2f} steps/s -> {g / t['steps_per_s']:.2f}x; peak RSS TRL {t_rss:.0f} MiB, gradus {g_rss:.0f} MiB -> {g_rss / t_rss:.2f}x")
if bad:
    print("!" * 78)
    print("!! NOT EVIDENCE: the machine was loaded during these runs; no ratio printed")
    print("!" * 78)
    for b in bad:
        print(f"   {b}")
    print(json.dumps({"evidence": False, "reasons": bad, "cpu_model": m["cpu_model"]}))
    sys.exit(0)
sp = [g / t for t, g, _, _ in rows]
rs = [g / t for _, _, t, g in rows]
print(json.dumps({"evidence": True, "cpu_model": m["cpu_model"], "speed_ratio_median": statistics.median(sp), "speed_ratios": sp, "rss_ratio_median": statistics.median(rs)}))
PY
