"""Markdown tables of the GEMM study (issue 12) from the JSON lines `bench/gemm_study.sh` collected.

    python3 bench/gemm_study_table.py gemm-study-out/

Reads OUT/machine.json (CPU model and flags), OUT/results.jsonl (one line per round × candidate ×
shape, from `gemm-study run` and bench/gemm_study_torch.py) and OUT/load.jsonl (bench/quiet.sh:
load average before/after each run and the CPU other processes used during it).

Per CPU one block with a table per instruction-set path (AVX-512: the gemm crate with x86-v4,
faer, our kernel, our kernel with B packed once, MKL; AVX2: the same with the AVX2 kernels and MKL
restricted by MKL_ENABLE_INSTRUCTIONS=AVX2). A cell is the median over rounds of each round's
median GFLOP/s, (min-max over rounds), and the ratio to MKL's median on the same path. Below each
table: the time of one training step's GEMMs per preset, Σ count × median ms (shape counts from
`gemm-study shapes`), and its ratio to MKL; the same for the attention tiles (one thread per call;
MKL's number there is torch.matmul per tile, not PyTorch's fused attention). `own-prepacked` is timed only where B is a weight;
elsewhere its step total uses `own` (packing once does not apply to the weight gradient).

Refuses to call the numbers evidence (prints a loud banner) when any run started with the
1-minute load average ≥ QUIET_MAX (0.5) or saw more than QUIET_MAX cores of foreign CPU.
"""
import json
import os
import statistics
import sys
from collections import defaultdict

QUIET_MAX = float(os.environ.get("QUIET_MAX", "0.5"))

SECTIONS = [
    ("AVX-512", [("gemm crate", ["gemm-avx512"]), ("faer", ["faer"]), ("own", ["own-avx512"]),
                 ("own, B packed once", ["own-prepacked-avx512"]), ("MKL", ["mkl"])]),
    ("AVX2+FMA", [("gemm crate", ["gemm-avx2"]), ("faer", ["faer-avx2", "faer"]), ("own", ["own-avx2"]),
                  ("own, B packed once", ["own-prepacked-avx2"]), ("MKL", ["mkl-avx2", "mkl"])]),
]


def load_jsonl(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip().startswith("{")]


def main() -> int:
    out = sys.argv[1] if len(sys.argv) > 1 else "gemm-study-out"
    machine = json.load(open(os.path.join(out, "machine.json")))
    shapes = {s["id"]: s for s in load_jsonl(os.path.join(out, "shapes.jsonl"))}
    res = load_jsonl(os.path.join(out, "results.jsonl"))
    loads = load_jsonl(os.path.join(out, "load.jsonl"))
    # (candidate, shape) -> per-round medians (GFLOP/s and ms), pack ms
    gf = defaultdict(list)
    ms = defaultdict(list)
    pack = defaultdict(list)
    for r in res:
        key = (r["candidate"], r["shape"])
        gf[key].append(r["median_gflops"])
        ms[key].append(r["median_ms"])
        if r.get("pack_ms") is not None:
            pack[key].append(r["pack_ms"])
    cands = {c for c, _ in gf}
    rounds = max((len(v) for v in gf.values()), default=0)

    loud = [l for l in loads if l["load_before"] >= QUIET_MAX or l["foreign_cores"] > QUIET_MAX]
    print(f"## GEMM study: {machine['cpu_model']}\n")
    print(f"- flags: avx2 {machine['avx2']}, fma {machine['fma']}, avx512f {machine['avx512f']}; "
          f"{machine['nproc']} CPUs, {machine['threads']} threads per GEMM; git {machine['git_rev']}; "
          f"{rounds} rounds (each: every Rust candidate, then torch), {len(loads)} runs")
    print(f"- torch: {machine.get('torch', '?')}")
    if loud:
        print(f"\n**NOT EVIDENCE: {len(loud)} of {len(loads)} runs were not quiet "
              f"(load average before ≥ {QUIET_MAX} or foreign CPU > {QUIET_MAX} cores): "
              + "; ".join(f"load {l['load_before']}, foreign {l['foreign_cores']}" for l in loud[:6])
              + ". Do not copy these numbers anywhere as results.**\n")
    else:
        print(f"- every run quiet: load average before < {QUIET_MAX} and foreign CPU ≤ {QUIET_MAX} cores\n")

    order = list(shapes)
    for title, cols in SECTIONS:
        picked = []
        for label, names in cols:
            name = next((n for n in names if n in cands), None)
            if name:
                picked.append((label, name))
        if not any(label == "MKL" for label, _ in picked) or len(picked) < 2:
            continue
        mkl = dict(picked)["MKL"]
        print(f"### {title} path\n")
        print("GFLOP/s: median over rounds (min-max), × MKL's median on this path.\n")
        print("| shape (layout M×N×K) | per step | " + " | ".join(f"{l} (`{n}`)" for l, n in picked) + " |")
        print("|---|---:|" + "---:|" * len(picked))
        for sid in order:
            s = shapes[sid]
            if not any((n, sid) in gf for _, n in picked):
                continue
            ref = statistics.median(gf[(mkl, sid)]) if (mkl, sid) in gf else None
            cells = []
            for label, n in picked:
                v = gf.get((n, sid))
                if not v:
                    cells.append("-")
                    continue
                med = statistics.median(v)
                cell = f"{med:.0f} ({min(v):.0f}-{max(v):.0f})"
                if ref and n != mkl:
                    cell += f" {med / ref:.2f}×"
                if (n, sid) in pack:
                    cell += f", pack {statistics.median(pack[(n, sid)]):.3f} ms"
                cells.append(cell)
            per = s["count"] if s["count"] else "peak"
            print(f"| {s['group']} {s['layout']} {s['m']}×{s['n']}×{s['k']} | {per} | " + " | ".join(cells) + " |")
        print()
        for preset in ("base", "lab", "base-attn", "lab-attn"):
            ids = [sid for sid in order if shapes[sid]["group"] == preset and shapes[sid]["count"]]
            tot = {}
            for label, n in picked:
                t = 0.0
                ok = True
                for sid in ids:
                    v = ms.get((n, sid))
                    if not v and n.startswith("own-prepacked-"):
                        v = ms.get((n.replace("own-prepacked-", "own-"), sid))
                    if not v:
                        ok = False
                        break
                    t += shapes[sid]["count"] * statistics.median(v)
                if ok:
                    tot[n] = t
            if not tot:
                continue
            flops = sum(shapes[sid]["count"] * 2.0 * shapes[sid]["m"] * shapes[sid]["n"] * shapes[sid]["k"] for sid in ids)
            ref = tot.get(mkl)
            parts = []
            for label, n in picked:
                if n in tot:
                    p = f"{label} {tot[n]:.2f} ms ({flops / tot[n] / 1e6:.0f} GFLOP/s"
                    if ref and n != mkl:
                        p += f", {ref / tot[n]:.2f}× MKL's speed"
                    parts.append(p + ")")
            what = (f"{preset[:-5]} step's attention tiles, one thread per call" if preset.endswith("-attn")
                    else f"{preset} step's linear GEMMs")
            print(f"- **{what}** ({flops / 1e9:.2f} GFLOP, Σ count × median): " + "; ".join(parts))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
