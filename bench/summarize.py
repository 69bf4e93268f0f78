"""Summarises bench/compare.sh output: the machine, both sgemm peaks, median tokens/s and peak RSS
per side, and ratios with targets - only when every run of both sides was on a quiet machine.

    python3 bench/summarize.py bench-out/

A run is quiet when the 1-minute load average before it was <= quiet_max (0.5) and other processes
used <= quiet_max cores during it (bench/quiet.sh writes <target>.<side>.load.jsonl). When any run
was not, the absolute medians are printed under a loud NOT EVIDENCE banner and no ratio is printed.
Runs without load records (an old OUTDIR) count as not quiet.
"""
import json
import re
import statistics
import sys
from pathlib import Path

TARGETS = {  # target: (speed key, min speed ratio gradus/torch, max RSS ratio or None) - issue 12
    "train_base": ("tokens_per_s", 1.3, 0.5),
    "train_lab": ("tokens_per_s", 2.0, 0.5),
    "generate_base": ("generated_tokens_per_s", 3.0, None),
}


def jsonl(p: Path) -> list:
    return [json.loads(l) for l in p.read_text().splitlines() if l.startswith("{")] if p.exists() else []


def max_rss_mib(p: Path) -> list:
    if not p.exists():
        return []
    return [int(m) / 1024 for m in re.findall(r"Maximum resident set size \(kbytes\): (\d+)", p.read_text())]


def loud(msg: str) -> None:
    bar = "!" * 78
    print(f"{bar}\n!! {msg}\n{bar}")


def quiet_check(out: Path, name: str, n_runs: int, quiet_max: float) -> list:
    """Reasons why the runs of `name` (<target>.<side>) are not evidence; [] when all were quiet."""
    loads = jsonl(out / f"{name}.load.jsonl")
    if len(loads) < n_runs:
        return [f"{name}: {n_runs - len(loads)} run(s) without a load record"]
    bad = []
    for i, l in enumerate(loads):
        if l["load_before"] > quiet_max:
            bad.append(f"{name} run {i + 1}: load average {l['load_before']} before the run")
        if l["foreign_cores"] > quiet_max:
            bad.append(f"{name} run {i + 1}: other processes used {l['foreign_cores']:.2f} cores during it")
    return bad


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "bench-out")
    machine = json.loads((out / "machine.json").read_text()) if (out / "machine.json").exists() else {}
    quiet_max = float(machine.get("quiet_max", 0.5))
    print(f"CPU: {machine.get('cpu_model', '? (no machine.json)')}, {machine.get('nproc', '?')} cores, "
          f"git {machine.get('git_rev', '?')}")
    sg = {s: jsonl(out / f"sgemm.{s}.jsonl") for s in ("torch", "gradus")}
    peak = {s: max((r["peak_gflops"] for r in sg[s]), default=None) for s in sg}
    prealloc = max((r.get("peak_gflops_prealloc", 0) for r in sg["gradus"]), default=None)
    print(f"sgemm peak GFLOP/s (best of runs): torch/MKL {peak['torch']}; gradus: candle matmul {peak['gradus']}, "
          f"gemm crate into a preallocated output (the fast graph's) {prealloc}")
    for s in sg:
        for why in quiet_check(out, f"sgemm.{s}", len(sg[s]), quiet_max):
            print(f"  (sgemm not quiet: {why})")
    for t, (key, speed_target, rss_target) in TARGETS.items():
        row = {}
        reasons = []
        for side in ("gradus", "torch"):
            runs = jsonl(out / f"{t}.{side}.jsonl")
            if not runs:
                continue
            reasons += quiet_check(out, f"{t}.{side}", len(runs), quiet_max)
            tps = statistics.median(r[key] for r in runs)
            rss = max_rss_mib(out / f"{t}.{side}.time")
            row[side] = dict(n=len(runs), tps=tps, gflops=statistics.median(r.get("achieved_gflops", 0) for r in runs),
                             rss=statistics.median(rss) if rss else None,
                             inproc_rss=statistics.median(r["peak_rss_mib"] for r in runs))
        if len(row) < 2:
            continue
        g, p = row["gradus"], row["torch"]
        if reasons:
            loud(f"{t}: NOT EVIDENCE - the machine was loaded; no ratio printed")
            for r in reasons:
                print(f"   {r}")
            print(f"   (raw, loaded) gradus {g['tps']:.1f}, torch {p['tps']:.1f} {key}")
            continue
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
