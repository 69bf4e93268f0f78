#!/usr/bin/env python3
"""`gradus` as the README test runs it: the real binary ($GRADUS_BIN) with the same arguments,
plus the flags that shorten a run to seconds. Nothing else is changed: paths, fields, quoting and
every other flag are the README's own. Each line it runs is appended to $GRADUS_README_LOG."""
import os
import sys

args = sys.argv[1:]


def replace(flag, value):
    """Set `flag value`, dropping the README's own value of that flag."""
    global args
    out, i = [], 0
    while i < len(args):
        if args[i] == flag:
            i += 2
            continue
        if args[i].startswith(flag + "="):
            i += 1
            continue
        out.append(args[i])
        i += 1
    args = out + [flag, value]


def sets(*kv):
    for x in kv:
        args.extend(["--set", x])


head = args[:2]
if "--show-config" in args or "--help" in args:
    pass
elif head[:1] == ["quickstart"]:
    args.append("--fast")
elif head[:1] == ["train"] and len(head) == 2:
    kind = head[1]
    if kind in ("pretrain", "sft"):
        sets("train.steps=3", "schedule.warmup_steps=1", "data.synthetic_examples=200", "train.eval_every=2")
    elif kind in ("dpo", "reward"):
        sets("train.steps=3", "schedule.warmup_steps=1", "prefs.synthetic_pairs=48", "prefs.eval_pairs=8", "prefs.eval_every=2")
    elif kind == "rl":
        sets("train.steps=2", "schedule.warmup_steps=1", "data.synthetic_prompts=32", "train.grad_accum=1",
             "algorithm.max_generation_rounds=1")
elif head == ["lab", "ranking-accuracy"] or head == ["lab", "phf"]:
    for f in ("--steps", "--samples", "--docs"):
        if f in args:
            i = args.index(f)
            del args[i : i + 2]
    args.append("--fast")
elif head == ["lab", "constrained-rl"]:
    replace("--size", "smoke")
    if "--steps" in args:
        replace("--steps", "3")
elif head == ["lab", "rlvr"]:
    replace("--steps", "2")
    replace("--eval-n", "8")
    replace("--eval-samples", "2")
    sets("train.grad_accum=1", "algorithm.max_generation_rounds=1")
elif head[:1] == ["lab"] and head[1] in ("icl-emergence", "icl-transience", "boolean-icl"):
    replace("--size", "smoke")
    if "--steps" in args:
        replace("--steps", "4")
elif head == ["lab", "sas"]:
    replace("--size", "smoke")
    if "--steps" in args:
        replace("--steps", "4")
    if "--release-step" in args:
        replace("--release-step", "2")
elif head == ["lab", "llome"]:
    sets("budget.rounds=1", "budget.per_round=16", "ga.num_particles=32", "first.steps=2",
         "train.steps=2", "generation.prompts=4", "run.seeds=[0]", "methods=[\"ga\", \"sft\"]")
elif head == ["lab", "evoprompting"]:
    if "--config" in args:
        i = args.index("--config")
        del args[i : i + 2]
    replace("--size", "smoke")
    for i in [i for i, a in enumerate(args) if a == "--set"][::-1]:
        # Settings sized for the default (budget, seeds) would not fit the smoke preset.
        if args[i + 1].split("=")[0] in ("budget.evaluations", "run.seeds", "search.prompts", "search.children"):
            del args[i : i + 2]
elif head == ["lab", "ilf"]:
    replace("--size", "smoke")
elif head == ["eval", "run"]:
    replace("--limit", "4")
elif head == ["eval", "code"] and "--model" in args:
    replace("--n", "2")
    replace("--k", "1")
    replace("--limit", "3")
elif head[:1] == ["sweep"]:
    sets("train.steps=6", "schedule.warmup_steps=1", "train.save_every=3", "train.eval_every=2",
         "dynamics.every=2", "train.log_every=1")
elif head == ["lab", "training-maps"]:
    replace("--seeds", "2")
    replace("--steps", "100")
elif head == ["dynamics", "map"]:
    replace("--restarts", "1")

with open(os.environ["GRADUS_README_LOG"], "a") as log:
    log.write(" ".join(args) + "\n")
os.execv(os.environ["GRADUS_BIN"], ["gradus"] + args)
