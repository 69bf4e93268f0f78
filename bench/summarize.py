"""Summarises bench/compare.sh output: median tokens/s and peak RSS per side, ratios, targets.

    python3 bench/summarize.py bench-out/
"""
import json
import re
import statistics
import sys
from pathlib import Path

TARGETS = {  # target: (speed key, min speed ratio gradus/torch, max RSS ratio or None)
    "train_base": ("tokens_per_s", 1.1, 0.7),
    "train_lab": ("tokens_per_s", 1.5, 0.7),
    "generate_base": ("generated_tokens_per_s", 3.0, None),
}


def jsonl(p: Path) -> list:
    return [json.loads(l) for l in p.read_text().splitlines() if l.startswith("{")] if p.exists() else []


def max_rss_mib(p: Path) -> list:
    if not p.exists():
        return []
    return [int(m) / 1024 for m in re.findall(r"Maximum resident set size \(kbytes\): (\d+)", p.read_text())]


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "bench-out")
    peak = {s: max((r["peak_gflops"] for r in jsonl(out / f"sgemm.{s}.jsonl")), default=None)
            for s in ("torch", "gradus")}
    print(f"sgemm peak GFLOP/s (best of runs): torch/MKL {peak['torch']}, candle {peak['gradus']}")
    for t, (key, speed_target, rss_target) in TARGETS.items():
        row = {}
        for side in ("gradus", "torch"):
            runs = jsonl(out / f"{t}.{side}.jsonl")
            if not runs:
                continue
            tps = statistics.median(r[key] for r in runs)
            rss = max_rss_mib(out / f"{t}.{side}.time")
            row[side] = dict(n=len(runs), tps=tps, gflops=statistics.median(r.get("achieved_gflops", 0) for r in runs),
                             rss=statistics.median(rss) if rss else None,
                             inproc_rss=statistics.median(r["peak_rss_mib"] for r in runs))
        if len(row) < 2:
            continue
        g, p = row["gradus"], row["torch"]
        sp = g["tps"] / p["tps"]
        line = f"{t}: gradus {g['tps']:.1f} vs torch {p['tps']:.1f} {key} (n={g['n']}/{p['n']}) -> {sp:.2f}x " \
               f"(target >= {speed_target}: {'MET' if sp >= speed_target else 'MISSED'})"
        if g["rss"] and p["rss"]:
            rr = g["rss"] / p["rss"]
            line += f"; peak RSS {g['rss']:.0f} vs {p['rss']:.0f} MiB -> {rr:.2f}x"
            if rss_target:
                line += f" (target <= {rss_target}: {'MET' if rr <= rss_target else 'MISSED'})"
        if g["gflops"] and peak["torch"]:
            line += f"; GFLOP/s gradus {g['gflops']:.1f} ({g['gflops'] / peak['torch']:.2f} of MKL peak), " \
                    f"torch {p['gflops']:.1f} ({p['gflops'] / peak['torch']:.2f})"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
