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
# Env: ROUNDS (3), OUT (/tmp/gradus-dpo-bench), STEPS (30), WARMUP (3), MODE (online).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
OUT=${OUT:-/tmp/gradus-dpo-bench}
STEPS=${STEPS:-30}
WARMUP=${WARMUP:-3}
MODE=${MODE:-online}
GRADUS=${GRADUS:-target/release/gradus}
mkdir -p "$OUT"
python3 bench/trl_dpo.py --export "$OUT/export" --steps 2 --warmup 0 > "$OUT/export.json"
for r in $(seq 1 "$ROUNDS"); do
  python3 bench/trl_dpo.py --steps "$STEPS" --warmup "$WARMUP" > "$OUT/trl-$r.json"
  rm -rf "$OUT/runs/r$r"
  /usr/bin/time -f "%M" -o "$OUT/gradus-$r.rss" "$GRADUS" train dpo \
    --set model.init_from="\"$OUT/export/model\"" --set tokenizer.path="\"$OUT/export\"" \
    --set data.source="\"$OUT/export/data.jsonl\"" --set data.seq_len=4096 \
    --set train.steps=$((STEPS + WARMUP)) --set train.batch_size=8 --set train.lr=1e-6 \
    --set train.max_grad_norm=1.0 --set train.progress=false --set train.weight_norms_every=0 \
    --set optimizer.weight_decay=0.0 --set schedule.kind=constant --set schedule.warmup_steps=0 \
    --set prefs.shuffle=false --set prefs.eval_pairs=0 --set reference.mode=$MODE \
    --set run.dir="\"$OUT/runs\"" --set run.name=r$r > "$OUT/gradus-$r.out"
done
python3 - "$OUT" "$ROUNDS" "$WARMUP" <<'PY'
import json, statistics, sys
out, rounds, warm = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = []
for r in range(1, rounds + 1):
    t = json.load(open(f"{out}/trl-{r}.json"))
    m = [json.loads(l) for l in open(f"{out}/runs/r{r}/metrics.jsonl")]
    g = statistics.median(x["train/steps_per_s"] for x in m[warm:])
    g_rss = int(open(f"{out}/gradus-{r}.rss").read().split()[-1]) / 1024
    t_rss = t.get("peak_rss_mib") or t.get("peak_rss_mb")
    rows.append((t["steps_per_s"], g, t_rss, g_rss))
    print(f"round {r}: TRL {t['steps_per_s']:.2f} steps/s, gradus {g:.2f} steps/s -> {g / t['steps_per_s']:.2f}x; peak RSS TRL {t_rss:.0f} MiB, gradus {g_rss:.0f} MiB -> {g_rss / t_rss:.2f}x")
sp = [g / t for t, g, _, _ in rows]
rs = [g / t for _, _, t, g in rows]
print(json.dumps({"speed_ratio_median": statistics.median(sp), "speed_ratios": sp, "rss_ratio_median": statistics.median(rs)}))
PY
