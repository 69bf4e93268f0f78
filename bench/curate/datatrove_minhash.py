#!/usr/bin/env python3
"""datatrove MinHash dedup (the 4 standard stages) on a directory of JSONL shards, timed end to end.

Same parameters as `gradus data dedup --minhash` defaults: 5-word shingles, 14 buckets x 8 hashes,
seed 1, 64-bit xxhash. Words: datatrove's `simplify_text` (its default TextNormConfig) then a split
on spaces (a WordTokenizer that needs no NLTK/spaCy model; after simplify_text the text is single-
space separated, so this is what a model tokenizer would mostly do too).

Writes kept docs to OUT/kept/ and removed docs to OUT/removed/, both with metadata
minhash_cluster_id (compare with compare_clusters.py). Prints one JSON line:
{"seconds", "input_bytes", "mb_per_s", "tasks", "workers", "datatrove"}.

    python3 bench/curate/datatrove_minhash.py CORPUS_DIR OUT_DIR --workers 2
"""
import argparse
import json
import os
import shutil
import sys
import time

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup.minhash import (
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.hashing import HashConfig
from datatrove.utils.word_tokenizers import WordTokenizer


# The installed xxhash package hashes bytes only, while datatrove 0.10 passes str: encode as UTF-8
# (the hash datatrove means; without this shim stage 1 fails with "Strings must be encoded").
import datatrove.utils.hashes.xxhash as _dt_xxhash  # noqa: E402
import xxhash as _xxhash  # noqa: E402

_dt_xxhash.xxhash64 = lambda data: _xxhash.xxh64_intdigest(data.encode("utf-8") if isinstance(data, str) else data)
_dt_xxhash.xxhash32 = lambda data: _xxhash.xxh32_intdigest(data.encode("utf-8") if isinstance(data, str) else data)


class SpaceTokenizer(WordTokenizer):
    def word_tokenize(self, text):
        return text.split(" ") if text else []

    def sent_tokenize(self, text):
        return [text]

    def span_tokenize(self, text):
        raise NotImplementedError


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus")
    ap.add_argument("out")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--ngram", type=int, default=5)
    ap.add_argument("--bands", type=int, default=14)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()

    files = sorted(f for f in os.listdir(a.corpus) if f.endswith(".jsonl"))
    tasks = len(files)
    size = sum(os.path.getsize(os.path.join(a.corpus, f)) for f in files)
    shutil.rmtree(a.out, ignore_errors=True)
    cfg = MinhashConfig(
        n_grams=a.ngram,
        num_buckets=a.bands,
        hashes_per_bucket=a.rows,
        seed=a.seed,
        hash_config=HashConfig(precision=64, hash_fc="xxhash"),
    )
    w = f"{a.out}/work"
    reader = lambda: JsonlReader(a.corpus, glob_pattern="*.jsonl", text_key="text", id_key="id")  # noqa: E731
    quiet = dict(logging_dir=None, skip_completed=False)
    t0 = time.perf_counter()
    LocalPipelineExecutor(
        pipeline=[reader(), MinhashDedupSignature(output_folder=f"{w}/sigs", config=cfg, language=SpaceTokenizer())],
        tasks=tasks, workers=a.workers, **quiet,
    ).run()
    LocalPipelineExecutor(
        pipeline=[MinhashDedupBuckets(input_folder=f"{w}/sigs", output_folder=f"{w}/buckets", config=cfg)],
        tasks=cfg.num_buckets, workers=a.workers, **quiet,
    ).run()
    LocalPipelineExecutor(
        pipeline=[MinhashDedupCluster(input_folder=f"{w}/buckets", output_folder=f"{w}/remove_ids", config=cfg, save_cluster_id=True)],
        tasks=1, workers=1, **quiet,
    ).run()
    LocalPipelineExecutor(
        pipeline=[
            reader(),
            MinhashDedupFilter(
                input_folder=f"{w}/remove_ids",
                exclusion_writer=JsonlWriter(f"{a.out}/removed", compression=None),
                load_cluster_ids=True,
            ),
            JsonlWriter(f"{a.out}/kept", compression=None),
        ],
        tasks=tasks, workers=a.workers, **quiet,
    ).run()
    secs = time.perf_counter() - t0
    import datatrove

    ver = getattr(datatrove, "__version__", None)
    if ver is None:
        from importlib.metadata import version

        ver = version("datatrove")
    print(json.dumps({"seconds": secs, "input_bytes": size, "mb_per_s": size / 1e6 / secs, "tasks": tasks,
                      "workers": a.workers, "datatrove": ver, "python": sys.version.split()[0]}))


if __name__ == "__main__":
    main()
