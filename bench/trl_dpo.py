"""TRL reference for gradus' DPO training speed: TRL DPOTrainer optimizer steps/s and peak RSS.

    python3 bench/trl_dpo.py                       # defaults below, 30 timed steps
    python3 bench/trl_dpo.py --export /tmp/dpo_bench   # also write model + tokenizer + data for gradus

A tiny random transformers LlamaForCausalLM (f32, untied, rope_theta 1e4, sdpa attention, seed --seed;
the reference model is TRL's default: a frozen copy loaded from the same saved weights) is trained
with trl.DPOTrainer on synthetic preference pairs:

- tokenizer: word-level, built here: <pad>=0, <s>=1, </s>=2, <unk>=3, then words "w0".."w{vocab-5}"
  (vocab = --vocab in all), Whitespace pre-tokenizer, BOS added by the post-processor. TRL appends
  EOS (the text "</s>") to chosen and rejected, so a prompt of n words is n+1 tokens and a completion
  of m words m+1 tokens.
- data: batch * (warmup + steps) pairs, drawn from random.Random(seed): prompt word counts uniform in
  [P - P//4, P + P//4] (P = --prompt-len), chosen and rejected word counts each uniform in
  [C - C//4, C + C//4] (C = --completion-len), words uniform over the vocabulary words. Strings:
  prompt "w.. w..", completions " w.. w.." (leading space; TRL concatenates prompt + completion as text).
- DPOConfig: loss_type --loss, beta 0.1, per_device_train_batch_size --batch pairs, grad accumulation 1,
  adamw_torch lr 1e-6 (TRL's default), weight_decay 0, constant lr, max_grad_norm 1.0,
  train_sampling_strategy "sequential", gradient_checkpointing False (TRL defaults to True; off here
  because it only trades speed for memory), bf16/fp16 off, use_cpu, logging_steps = every step
  (TRL computes its metrics every step anyway), no checkpoint saving, dataset preparation untimed.

Timed: a TrainerCallback takes perf_counter at every on_step_begin/on_step_end. `step_ms_median` is
the median interval between consecutive on_step_end calls after --warmup steps: a full optimizer step
as a user sees it (batch fetch + collate, policy forward, reference forward, loss, backward, clip,
AdamW, TRL's metrics and logging). `step_ms_median_begin_end` is on_step_begin -> on_step_end (the
same without the batch fetch/collate). steps_per_s = 1000 / step_ms_median; pairs_per_s =
batch * steps_per_s; tokens_per_s counts the real (unpadded) tokens of the chosen and rejected
sequences, prompt included. Peak RSS = ru_maxrss (includes the Python interpreter, torch,
transformers, datasets, TRL and both models).

--export DIR writes what the gradus side needs to train on the identical model and data:
  DIR/model/{config.json,model.safetensors}, DIR/tokenizer.json, DIR/tokenizer_config.json,
  DIR/data.jsonl (the pairs in training order, {"prompt","chosen","rejected"} without the EOS TRL
  appends), DIR/settings.json (this script's JSON line minus timings).
Prints one JSON line.
"""
import argparse
import contextlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import torch  # noqa: E402

from torch_common import machine, peak_rss_mib  # noqa: E402

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]


def build_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    n_words = vocab_size - len(SPECIALS)
    if n_words < 2:
        raise SystemExit(f"--vocab {vocab_size}: need at least {len(SPECIALS) + 2}")
    vocab = {t: i for i, t in enumerate(SPECIALS + [f"w{i}" for i in range(n_words)])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(SPECIALS)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", model_max_length=1 << 20), n_words


def make_pairs(n: int, n_words: int, p_len: int, c_len: int, seed: int) -> list:
    rng = random.Random(seed)

    def words(mean: int) -> str:
        k = rng.randint(max(1, mean - mean // 4), mean + mean // 4)
        return " ".join(f"w{rng.randrange(n_words)}" for _ in range(k))

    return [{"prompt": words(p_len), "chosen": " " + words(c_len), "rejected": " " + words(c_len)}
            for _ in range(n)]


def save_dir(path: str, tok, model_dir: str, pairs: list, settings: dict) -> None:
    os.makedirs(path, exist_ok=True)
    shutil.copytree(model_dir, os.path.join(path, "model"), dirs_exist_ok=True)
    tok.save_pretrained(path)
    for extra in ("special_tokens_map.json", "chat_template.jinja"):
        p = os.path.join(path, extra)
        if os.path.exists(p):
            os.remove(p)
    with open(os.path.join(path, "data.jsonl"), "w") as f:
        for p in pairs:
            f.write(json.dumps(p) + "\n")
    with open(os.path.join(path, "settings.json"), "w") as f:
        json.dump(settings, f, indent=1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=None, help="default: = heads")
    ap.add_argument("--intermediate", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8, help="preference pairs per optimizer step")
    ap.add_argument("--prompt-len", type=int, default=32, help="mean prompt length in words (+1 BOS token)")
    ap.add_argument("--completion-len", type=int, default=32, help="mean completion length in words (+1 EOS token)")
    ap.add_argument("--loss", default="sigmoid", help="TRL loss_type (sigmoid, ipo, ...)")
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=1e-6)
    ap.add_argument("--steps", type=int, default=30, help="timed optimizer steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed optimizer steps first")
    ap.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa")
    ap.add_argument("--gradient-checkpointing", action="store_true", help="TRL's default; off unless given")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--export", metavar="DIR", help="write model, tokenizer, data and settings for gradus")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    import datasets
    import transformers
    import trl
    from transformers import LlamaConfig, LlamaForCausalLM, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    datasets.disable_caching()

    tok, n_words = build_tokenizer(args.vocab)
    n_pairs = args.batch * (args.warmup + args.steps)
    pairs = make_pairs(n_pairs, n_words, args.prompt_len, args.completion_len, args.seed)

    work = tempfile.mkdtemp(prefix="trl_dpo_bench_")
    model_dir = os.path.join(work, "model")
    max_pos = 2 * (args.prompt_len + args.completion_len) + 16
    torch.manual_seed(args.seed)
    config = LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, num_key_value_heads=args.kv_heads or args.heads,
        intermediate_size=args.intermediate, max_position_embeddings=max_pos, rope_theta=10000.0,
        rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    LlamaForCausalLM(config).float().save_pretrained(model_dir)
    gen_cfg = os.path.join(model_dir, "generation_config.json")
    if os.path.exists(gen_cfg):
        os.remove(gen_cfg)

    dpo_args = DPOConfig(
        output_dir=os.path.join(work, "out"), per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1, learning_rate=args.lr, optim="adamw_torch", weight_decay=0.0,
        lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=1.0, beta=args.beta, loss_type=[args.loss],
        max_steps=args.warmup + args.steps, train_sampling_strategy="sequential", disable_dropout=True,
        precompute_ref_log_probs=False, logging_steps=1, report_to="none", use_cpu=True, seed=args.seed,
        bf16=False, fp16=False, gradient_checkpointing=args.gradient_checkpointing, save_strategy="no",
        eval_strategy="no", dataloader_num_workers=0, disable_tqdm=True,
        model_init_kwargs={"dtype": "float32", "attn_implementation": args.attn},
    )

    class Timer(TrainerCallback):
        def __init__(self):
            self.begin, self.end = [], []

        def on_step_begin(self, a, state, control, **kw):
            self.begin.append(time.perf_counter())

        def on_step_end(self, a, state, control, **kw):
            self.end.append(time.perf_counter())

    timer = Timer()
    trainer = DPOTrainer(model=model_dir, args=dpo_args, train_dataset=datasets.Dataset.from_list(pairs),
                         processing_class=tok, callbacks=[timer])
    ds = trainer.train_dataset
    seq_tokens = [len(r["prompt_ids"]) * 2 + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in ds]
    prompt_tok = statistics.mean(len(r["prompt_ids"]) for r in ds)
    compl_tok = statistics.mean((len(r["chosen_ids"]) + len(r["rejected_ids"])) / 2 for r in ds)

    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # Trainer prints its log dicts; stdout keeps only our JSON line
        trainer.train()
    train_s = time.perf_counter() - t0

    w = args.warmup
    full = [b - a for a, b in zip(timer.end[w:-1], timer.end[w + 1:])]  # end(k) -> end(k+1), k >= warmup
    if not full:
        raise SystemExit("need --steps >= 2")
    inner = [e - b for b, e in zip(timer.begin[w + 1:], timer.end[w + 1:])]
    step_s = statistics.median(full)
    timed_tokens = seq_tokens[args.batch * (w + 1):]
    tokens_per_step = sum(timed_tokens) / (len(timed_tokens) / args.batch)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h and "train_runtime" not in h]
    n_params = sum(p.numel() for p in trainer.model.parameters())

    settings = {
        "bench": "trl_dpo",
        "config": {"vocab": args.vocab, "hidden": args.hidden, "layers": args.layers, "heads": args.heads,
                   "kv_heads": args.kv_heads or args.heads, "intermediate": args.intermediate, "tied": False,
                   "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "max_position_embeddings": max_pos},
        "attn_implementation": args.attn,
        "n_params": n_params,
        "batch_pairs": args.batch,
        "prompt_len_words": args.prompt_len,
        "completion_len_words": args.completion_len,
        "mean_prompt_tokens": round(prompt_tok, 2),
        "mean_completion_tokens": round(compl_tok, 2),
        "n_pairs": n_pairs,
        "data_seed": args.seed,
        "dpo": {"loss_type": args.loss, "beta": args.beta, "learning_rate": args.lr, "optim": "adamw_torch",
                "weight_decay": 0.0, "lr_scheduler_type": "constant", "max_grad_norm": 1.0,
                "gradient_accumulation_steps": 1, "train_sampling_strategy": "sequential",
                "gradient_checkpointing": args.gradient_checkpointing, "max_length": dpo_args.max_length,
                "precompute_ref_log_probs": False, "reference": "frozen copy of the initial model"},
        "steps": args.steps,
        "warmup": args.warmup,
        "trl": trl.__version__,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
    }
    out = dict(settings)
    out.update({
        "step_ms_median": round(step_s * 1e3, 2),
        "step_ms_min": round(min(full) * 1e3, 2),
        "step_ms_max": round(max(full) * 1e3, 2),
        "step_ms_median_begin_end": round(statistics.median(inner) * 1e3, 2),
        "steps_per_s": round(1.0 / step_s, 3),
        "pairs_per_s": round(args.batch / step_s, 2),
        "tokens_per_step": round(tokens_per_step, 1),
        "tokens_per_s": round(tokens_per_step / step_s, 1),
        "train_wall_s": round(train_s, 2),
        "loss_first": round(losses[0], 4) if losses else None,
        "loss_last": round(losses[-1], 4) if losses else None,
        "peak_rss_mib": round(peak_rss_mib(), 1),
        **machine(),
    })
    if args.export:
        save_dir(args.export, tok, model_dir, pairs, settings)
        out["export"] = os.path.abspath(args.export)
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
