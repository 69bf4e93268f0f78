#!/usr/bin/env python3
"""Near-duplicates across CPython versions: summarise a `gradus data dedup --minhash` run over
rows made by `gradus data from-files` (ids are paths .../lib/python3.1x/...), and spot-check pairs.

    python3 bench/curate/stdlib_report.py --gradus OUT --corpus CORPUS_DIR [--spot 12 --seed 0]

Spot checks recompute each sampled (removed, kept) pair independently of gradus: exact Jaccard of
the 5-word shingle sets (lowercase, digit runs -> 0, ASCII punctuation -> space) and a line diff
(difflib) of the two files. Prints Markdown.
"""
import argparse
import difflib
import glob
import json
import os
import random
import re
from collections import Counter, defaultdict

VER = re.compile(r"/lib/python(3\.\d+)/")


def source_key(source):
    """"path:line" -> (absolute path, line)."""
    path, line = source.rsplit(":", 1)
    return os.path.abspath(path), int(line)


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def shingles(text, n=5):
    t = text.lower()
    t = re.sub(r"\d+([.,]\d+)?", "0", t)
    t = re.sub(r"[!-/:-@\[-`{-~]", " ", t)
    w = t.split()
    return {" ".join(w[i:i + n]) for i in range(len(w) - n + 1)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gradus", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--spot", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    src, text = {}, {}
    per_version = Counter()
    for path in sorted(glob.glob(os.path.join(a.corpus, "*.jsonl"))):
        for i, row in enumerate(read_jsonl(path), 1):
            src[(os.path.abspath(path), i)] = row["id"]
            text[row["id"]] = row["text"]
            per_version[VER.search(row["id"]).group(1)] += 1
    clusters = defaultdict(set)
    pairs = []
    for path in sorted(glob.glob(os.path.join(a.gradus, "removed*.jsonl"))):
        for r in read_jsonl(path):
            if r["reason"] not in ("near_duplicate", "exact_duplicate"):
                continue
            kept = src[source_key(r["detail"]["kept"])]
            clusters[kept] |= {kept, r["row"]["id"]}
            pairs.append((r["row"]["id"], kept))
    rel = lambda p: VER.split(p)[-1]  # noqa: E731  path inside the stdlib
    cross = [c for c in clusters.values() if len({VER.search(p).group(1) for p in c}) > 1]
    renamed = [c for c in clusters.values() if len({rel(p) for p in c}) > 1]
    sizes = Counter(len(c) for c in clusters.values())
    same_name_groups = defaultdict(set)
    for p in text:
        same_name_groups[rel(p)].add(p)
    multi = {k: v for k, v in same_name_groups.items() if len(v) > 1}
    split = sum(1 for k, v in multi.items() if not any(v <= c for c in clusters.values()))
    summary = json.load(open(os.path.join(a.gradus, "summary.json")))
    print(f"- files: {len(text)} ({', '.join(f'{v}: {n}' for v, n in sorted(per_version.items()))})")
    print(f"- options: `{json.dumps(summary['report']['options']['method'])}`")
    print(f"- clusters: {len(clusters)} holding {sum(len(c) for c in clusters.values())} files; "
          f"{len(pairs)} files removed, {summary['kept']} kept")
    print(f"- clusters spanning more than one version: {len(cross)} ({sum(len(c) for c in cross)} files)")
    print(f"- cluster sizes: {dict(sorted(sizes.items()))}")
    print(f"- clusters joining files of different names: {len(renamed)}")
    print(f"- file names present in 2+ versions: {len(multi)}; of those not wholly inside one cluster: {split}")
    rng = random.Random(a.seed)
    sample = rng.sample(pairs, min(a.spot, len(pairs)))
    print()
    print("| removed | kept | exact 5-gram Jaccard | lines changed (difflib) |")
    print("|---|---|---|---|")
    for r, k in sorted(sample):
        sa, sb = shingles(text[r]), shingles(text[k])
        j = len(sa & sb) / max(1, len(sa | sb))
        diff = sum(1 for l in difflib.unified_diff(text[r].splitlines(), text[k].splitlines(), lineterm="", n=0)
                   if l[:1] in "+-" and not l.startswith(("+++", "---")))
        short = lambda p: "python" + VER.search(p).group(1) + "/" + rel(p)  # noqa: E731
        print(f"| {short(r)} | {short(k)} | {j:.3f} | {diff} of {len(text[r].splitlines())}+{len(text[k].splitlines())} |")
    for c in renamed[:5]:
        print(f"\ncluster with different names: {sorted(c)}")


if __name__ == "__main__":
    main()
