#!/usr/bin/env python3
"""Compare the duplicate clusters of `gradus data dedup --minhash` with datatrove's.

    python3 bench/curate/compare_clusters.py --gradus GRADUS_OUT --corpus CORPUS_DIR --datatrove DT_OUT

gradus: GRADUS_OUT/removed*.jsonl rows name the kept row ("detail.kept" = "path:line"); a cluster
is a kept row plus the rows removed in its favour. The corpus is read to turn "path:line" into ids.
datatrove: DT_OUT/{kept,removed}/*.jsonl carry metadata.minhash_cluster_id (-1: no cluster).
Documents are named by their "id" field. Prints one JSON object: cluster and document counts,
clusters found by both, documents whose cluster is the same set in both, and precision / recall / F1 of the co-clustered pairs (gradus vs datatrove).
"""
import argparse
import glob
import itertools
import json
import os
from collections import defaultdict


def source_key(source):
    """"path:line" -> (absolute path, line)."""
    path, line = source.rsplit(":", 1)
    return os.path.abspath(path), int(line)


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def gradus_clusters(out_dir, corpus):
    src_to_id = {}
    for path in sorted(glob.glob(os.path.join(corpus, "*.jsonl"))):
        for i, row in enumerate(read_jsonl(path), 1):
            src_to_id[(os.path.abspath(path), i)] = row["id"]
    clusters = defaultdict(set)
    for path in sorted(glob.glob(os.path.join(out_dir, "removed*.jsonl"))):
        for r in read_jsonl(path):
            if r["reason"] != "near_duplicate":
                continue
            kept = src_to_id[source_key(r["detail"]["kept"])]
            clusters[kept].add(kept)
            clusters[kept].add(r["row"]["id"])
    return [frozenset(c) for c in clusters.values()]


def datatrove_clusters(out_dir):
    clusters = defaultdict(set)
    for path in sorted(glob.glob(os.path.join(out_dir, "kept", "*.jsonl")) + glob.glob(os.path.join(out_dir, "removed", "*.jsonl"))):
        for r in read_jsonl(path):
            cid = r.get("metadata", {}).get("minhash_cluster_id", -1)
            if cid != -1:
                clusters[cid].add(r["id"])
    return [frozenset(c) for c in clusters.values() if len(c) > 1]


def pairs(clusters):
    out = set()
    for c in clusters:
        out.update(itertools.combinations(sorted(c), 2))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gradus", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--datatrove", required=True)
    ap.add_argument("--show", type=int, default=5, help="print this many clusters found by one tool only")
    a = ap.parse_args()
    g = gradus_clusters(a.gradus, a.corpus)
    d = datatrove_clusters(a.datatrove)
    gp, dp = pairs(g), pairs(d)
    both = len(gp & dp)
    prec = both / len(gp) if gp else 1.0
    rec = both / len(dp) if dp else 1.0
    gdocs = set().union(*g) if g else set()
    ddocs = set().union(*d) if d else set()
    # Per document (in a cluster of either tool): is its cluster the same set in both?
    of_g = {x: c for c in g for x in c}
    of_d = {x: c for c in d for x in c}
    same_doc = sum(1 for x in gdocs | ddocs if of_g.get(x) == of_d.get(x))
    res = {
        "gradus_clusters": len(g),
        "datatrove_clusters": len(d),
        "identical_clusters": len(set(g) & set(d)),
        "gradus_docs_in_clusters": len(gdocs),
        "datatrove_docs_in_clusters": len(ddocs),
        "docs_in_clusters_of_both": len(gdocs & ddocs),
        "gradus_removed": len(gdocs) - len(g),
        "datatrove_removed": len(ddocs) - len(d),
        "docs_with_identical_cluster": same_doc,
        "docs_in_a_cluster_of_either": len(gdocs | ddocs),
        "pairs_gradus": len(gp),
        "pairs_datatrove": len(dp),
        "pair_precision": round(prec, 4),
        "pair_recall": round(rec, 4),
        "pair_f1": round(2 * prec * rec / (prec + rec), 4) if prec + rec else 0.0,
        "only_gradus": [sorted(c) for c in sorted(set(g) - set(d), key=sorted)[: a.show]],
        "only_datatrove": [sorted(c) for c in sorted(set(d) - set(g), key=sorted)[: a.show]],
    }
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
