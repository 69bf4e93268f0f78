"""The code-aware probe's pretraining corpus: CPython 3.12's standard-library *packages* (asyncio, email,
json, ...; no test, idlelib, lib2to3, tkinter, turtledemo, ensurepip), in 40-line windows, as
stdlib_pkgs.jsonl ({"text": ...}). The probe's own corpus is the *top-level* modules, so the decoder never
saw a probed row.   python make_corpus.py ~/.pyenv/versions/3.12.1/lib/python3.12
"""
import json
import os
import sys

SKIP = {"test", "idlelib", "lib2to3", "site-packages", "__pycache__", "ensurepip",
        "config-3.12-x86_64-linux-gnu", "turtledemo", "tkinter"}


def main() -> int:
    root = sys.argv[1]
    rows = []
    for d in sorted(os.listdir(root)):
        p = os.path.join(root, d)
        if not os.path.isdir(p) or d in SKIP:
            continue
        for dp, _, fn in os.walk(p):
            parts = dp.split(os.sep)
            if "test" in parts or "tests" in parts or "__pycache__" in parts:
                continue
            for f in sorted(fn):
                if not f.endswith(".py"):
                    continue
                try:
                    src = open(os.path.join(dp, f), encoding="utf-8").read()
                except (UnicodeDecodeError, OSError):
                    continue
                lines = src.splitlines()
                for i in range(0, len(lines), 40):
                    t = "\n".join(lines[i:i + 40]).strip()
                    if len(t) > 40:
                        rows.append(t)
    with open("stdlib_pkgs.jsonl", "w") as out:
        for t in rows:
            out.write(json.dumps({"text": t}) + "\n")
    print(len(rows), "rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
