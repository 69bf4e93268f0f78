"""MKL's side of the GEMM study (issue 12): torch.matmul on the engine's GEMM shapes and layouts.

    bench/gemm-study/target/release/gemm-study shapes > shapes.jsonl
    python3 bench/gemm_study_torch.py --shapes shapes.jsonl --threads 2 --label mkl
    MKL_ENABLE_INSTRUCTIONS=AVX2 python3 bench/gemm_study_torch.py --shapes shapes.jsonl --label mkl-avx2

Mirrors `gemm-study run` (bench/gemm-study/src/main.rs): the same shapes (one JSON object per line:
m, n, k, layout, accumulate), operands uniform in [-1, 1), a preallocated output, 2 untimed
calls, then at least --min-reps calls and as many as fit in --budget-ms; best and median. Layouts
as the engine's `linear::matmul`: A stored (m, k), or (k, m) for "T" and passed as the transposed
view; B stored (k, n), or (n, k) for "T" and passed as the transposed view. torch hands those
views to MKL's sgemm as transpose flags (no copies). Shapes with accumulate (the weight gradients)
run `c.addmm_(a, b)` (sgemm with beta = 1), the others `torch.matmul(a, b, out=c)`. Shapes marked
single_thread (the attention tiles, one gemm call per task in the engine) run with 1 thread.

MKL_ENABLE_INSTRUCTIONS=AVX2 (read by MKL at load) restricts MKL to its AVX2 kernels: the AVX2-only
reference on an AVX-512 machine. Prints one JSON line per shape, in the Rust binary's schema.
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch


def timed(fn, budget_s, min_reps, clock=time.perf_counter):
    """(best, median) seconds per call and the number of samples; calls under ~50 us are timed
    in batches (a sample = a batch's mean), as gemm-study does."""
    fn()
    t0 = clock()
    fn()
    one = max(clock() - t0, 1e-9)
    batch = min(max(int(50e-6 / one) + 1, 1), 1000)
    ts = []
    start = time.perf_counter()
    while len(ts) < min_reps or (time.perf_counter() - start < budget_s and len(ts) < 10000):
        t0 = clock()
        for _ in range(batch):
            fn()
        ts.append((clock() - t0) / batch)
    ts.sort()
    return ts[0], ts[len(ts) // 2], len(ts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--shapes", required=True, help="JSON lines from `gemm-study shapes`")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget-ms", type=float, default=120.0)
    ap.add_argument("--min-reps", type=int, default=5)
    ap.add_argument("--label", default="mkl")
    ap.add_argument("--round", default="0")
    ap.add_argument("--only", default=None, help="comma-separated groups (base,lab,peak)")
    ap.add_argument("--cpu-time", action="store_true",
                    help="development aid on a loaded machine (needs --threads 1): time by the "
                         "thread's on-CPU time (time.thread_time), as `gemm-study run --cpu-time`")
    args = ap.parse_args()
    if args.cpu_time and args.threads != 1:
        ap.error("--cpu-time needs --threads 1")
    clock = time.thread_time if args.cpu_time else time.perf_counter
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    only = set(args.only.split(",")) if args.only else None
    with open(args.shapes) as f:
        shapes = [json.loads(l) for l in f if l.strip()]
    for s in shapes:
        if only and s["group"] not in only:
            continue
        m, n, k, lay = s["m"], s["n"], s["k"], s["layout"]
        # Attention tiles: the engine issues each on one thread.
        torch.set_num_threads(1 if s.get("single_thread") else args.threads)

        def rnd(*shape):
            return torch.rand(*shape, generator=g, dtype=torch.float32) * 2 - 1

        a = rnd(k, m).t() if lay[0] == "T" else rnd(m, k)
        b = rnd(n, k).t() if lay[1] == "T" else rnd(k, n)
        c = rnd(m, n)
        if s["accumulate"]:
            fn = lambda: c.addmm_(a, b)  # noqa: E731
        else:
            fn = lambda: torch.matmul(a, b, out=c)  # noqa: E731
        best, med, reps = timed(fn, args.budget_ms / 1e3, args.min_reps, clock)
        flops = 2.0 * m * n * k
        print(json.dumps({
            "side": "torch", "build": f"torch {torch.__version__}", "round": args.round,
            "candidate": args.label, "shape": s["id"], "threads": torch.get_num_threads(),
            "reps": reps, "best_ms": round(best * 1e3, 6), "median_ms": round(med * 1e3, 6),
            "median_gflops": round(flops / med / 1e9, 2), "pack_ms": None,
            "mkl": torch.backends.mkl.is_available(),
            "mkl_enable_instructions": os.environ.get("MKL_ENABLE_INSTRUCTIONS"),
        }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
