"""The machine's f32 GEMM peak as torch (MKL / oneDNN) reaches it on --threads (2) threads.

    python3 bench/sgemm_peak.py --repeats 10

For each shape (M, K, N): C = A @ B with A [M, K], B [K, N] f32 (preallocated output, torch.matmul
with out=), a few untimed warm-up calls, then --repeats timed calls; best (max) and median GFLOP/s,
where FLOPs = 2*M*K*N. Square 1024^3 and 2048^3 (the peak), plus two shapes from the base
training step (tokens 2048 = 8 x 256, hidden 256, ffn 1024; and the lm_head 2048 x 256 x 4096), to
show what the model's own GEMMs can reach. Prints one JSON line; `peak_gflops` is the best
over all shapes.
"""
import argparse
import json
import statistics
import sys
import time

import torch

SHAPES = {
    "square_1024": (1024, 1024, 1024),
    "square_2048": (2048, 2048, 2048),
    "base_ffn_up_2048x256x1024": (2048, 256, 1024),
    "base_lm_head_2048x256x4096": (2048, 256, 4096),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--only", nargs="*", choices=sorted(SHAPES), help="subset of shapes")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    results = {}
    for name, (m, k, n) in SHAPES.items():
        if args.only and name not in args.only:
            continue
        a = torch.randn(m, k, dtype=torch.float32)
        b = torch.randn(k, n, dtype=torch.float32)
        c = torch.empty(m, n, dtype=torch.float32)
        for _ in range(args.warmup):
            torch.matmul(a, b, out=c)
        ts = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            torch.matmul(a, b, out=c)
            ts.append(time.perf_counter() - t0)
        flops = 2.0 * m * k * n
        results[name] = {"mkn": [m, k, n],
                         "best_gflops": round(flops / min(ts) / 1e9, 2),
                         "median_gflops": round(flops / statistics.median(ts) / 1e9, 2),
                         "best_ms": round(min(ts) * 1e3, 3)}

    import platform
    cpu = "?"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(json.dumps({
        "bench": "sgemm_peak",
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "peak_gflops": max(r["best_gflops"] for r in results.values()),
        "peak_gflops_per_thread": round(max(r["best_gflops"] for r in results.values()) / args.threads, 2),
        "shapes": results,
        "blas": "MKL" if torch.backends.mkl.is_available() else "other",
        "cpu": cpu,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
