"""TRL reference for `gradus train rl` (GRPO) speed: TRL GRPOTrainer optimizer steps/s (rollouts
included, no vLLM) and peak RSS.

    python3 bench/trl_grpo.py                          # defaults below, 20 timed steps
    python3 bench/trl_grpo.py --export /tmp/rl_bench   # also write model + tokenizer + prompts for gradus

A tiny random transformers LlamaForCausalLM (f32, untied, rope_theta 1e4, sdpa attention, seed --seed)
trained with trl.GRPOTrainer on random word prompts:

- tokenizer: word-level, <pad>=0, <s>=1, </s>=2, <unk>=3, then "w0".."w{vocab-5}", BOS added by the
  post-processor (prompt of n words = n + 1 tokens).
- prompts: (warmup + steps) · batch / G prompts from random.Random(seed), word counts uniform in
  [P - P//4, P + P//4] (P = --prompt-len). Same length class for all, so left padding is small.
- reward: 1 when the completion contains the word w1, else 0 (gradus: `kind = "regex"`,
  `pattern = "\\bw1\\b"`).
- GRPOConfig: num_generations --G, per_device_train_batch_size --batch completions (batch / G prompts
  per step), gradient_accumulation_steps 1 (steps_per_generation = 1: one generation per step),
  max_completion_length --completion-len, temperature 1, top_p 1, beta 0 (no reference model),
  loss_type dapo, epsilon 0.2, adamw_torch lr --lr, weight_decay 0, constant lr, max_grad_norm 1,
  use_vllm False, gradient_checkpointing False, bf16/fp16 off, use_cpu, logging every step,
  log_completions False, no checkpoints.

Timed: perf_counter at every on_step_end; `step_ms_median` is the median interval between consecutive
step ends after --warmup steps (generation + rewards + advantages + forward/backward + AdamW + TRL's
metrics). steps_per_s = 1000 / step_ms_median. Peak RSS = ru_maxrss.

--export DIR writes DIR/model/{config.json,model.safetensors}, DIR/tokenizer.json,
DIR/tokenizer_config.json, DIR/prompts.jsonl ({"prompt"} in TRL's sampling order is NOT reproduced:
gradus draws its own order; the prompt set is the same), DIR/settings.json. Prints one JSON line.
"""
import argparse
import contextlib
import json
import os
import random
import re
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


def build_tokenizer(vocab_size):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    n_words = vocab_size - len(SPECIALS)
    vocab = {t: i for i, t in enumerate(SPECIALS + [f"w{i}" for i in range(n_words)])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(SPECIALS)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", model_max_length=1 << 20), n_words


def reward_w1(prompts, completions, **kwargs):
    return [1.0 if re.search(r"\bw1\b", c) else 0.0 for c in completions]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--intermediate", type=int, default=256)
    ap.add_argument("--G", type=int, default=8)
    ap.add_argument("--batch", type=int, default=16, help="completions per optimizer step")
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--completion-len", type=int, default=32, help="max_completion_length")
    ap.add_argument("--lr", type=float, default=1e-6)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--export", metavar="DIR")
    args = ap.parse_args()
    if args.batch % args.G:
        raise SystemExit("--batch must be a multiple of --G")

    torch.set_num_threads(args.threads)
    import datasets
    import transformers
    import trl
    from transformers import LlamaConfig, LlamaForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    datasets.disable_caching()

    tok, n_words = build_tokenizer(args.vocab)
    rng = random.Random(args.seed)
    n_prompts = (args.warmup + args.steps) * args.batch // args.G
    prompts = []
    for _ in range(n_prompts):
        k = rng.randint(max(1, args.prompt_len - args.prompt_len // 4), args.prompt_len + args.prompt_len // 4)
        prompts.append({"prompt": " ".join(f"w{rng.randrange(n_words)}" for _ in range(k))})

    work = tempfile.mkdtemp(prefix="trl_grpo_bench_")
    model_dir = os.path.join(work, "model")
    max_pos = 2 * (args.prompt_len + args.completion_len) + 16
    torch.manual_seed(args.seed)
    config = LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, num_key_value_heads=args.heads, intermediate_size=args.intermediate,
        max_position_embeddings=max_pos, rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    LlamaForCausalLM(config).float().save_pretrained(model_dir)
    gen_cfg = os.path.join(model_dir, "generation_config.json")
    if os.path.exists(gen_cfg):
        os.remove(gen_cfg)

    grpo_args = GRPOConfig(
        output_dir=os.path.join(work, "out"), per_device_train_batch_size=args.batch, num_generations=args.G,
        gradient_accumulation_steps=1, max_completion_length=args.completion_len, temperature=1.0, top_p=1.0,
        beta=0.0, loss_type="dapo", epsilon=0.2, learning_rate=args.lr, optim="adamw_torch", weight_decay=0.0,
        lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=1.0, max_steps=args.warmup + args.steps,
        logging_steps=1, report_to="none", use_cpu=True, seed=args.seed, bf16=False, fp16=False,
        gradient_checkpointing=False, save_strategy="no", eval_strategy="no", dataloader_num_workers=0,
        disable_tqdm=True, use_vllm=False, log_completions=False,
        model_init_kwargs={"dtype": "float32", "attn_implementation": "sdpa"},
    )

    class Timer(TrainerCallback):
        def __init__(self):
            self.end = []

        def on_step_end(self, a, state, control, **kw):
            self.end.append(time.perf_counter())

    timer = Timer()
    trainer = GRPOTrainer(model=model_dir, reward_funcs=[reward_w1], args=grpo_args,
                          train_dataset=datasets.Dataset.from_list(prompts), processing_class=tok,
                          callbacks=[timer])
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        trainer.train()
    train_s = time.perf_counter() - t0
    w = args.warmup
    full = [b - a for a, b in zip(timer.end[w:-1], timer.end[w + 1:])]
    if not full:
        raise SystemExit("need --steps >= 2")
    step_s = statistics.median(full)
    hist = [h for h in trainer.state.log_history if "train_runtime" not in h]
    settings = {
        "bench": "trl_grpo",
        "config": {"vocab": args.vocab, "hidden": args.hidden, "layers": args.layers, "heads": args.heads,
                   "intermediate": args.intermediate, "max_position_embeddings": max_pos},
        "G": args.G, "batch_completions": args.batch, "prompt_len_words": args.prompt_len,
        "max_completion_length": args.completion_len, "lr": args.lr, "steps": args.steps, "warmup": args.warmup,
        "trl": trl.__version__, "transformers": transformers.__version__,
    }
    out = dict(settings)
    out.update({
        "step_ms_median": round(step_s * 1e3, 2),
        "steps_per_s": round(1.0 / step_s, 3),
        "train_wall_s": round(train_s, 2),
        "mean_completion_length": statistics.mean(h.get("completions/mean_length", float("nan")) for h in hist)
        if hist else None,
        "peak_rss_mib": round(peak_rss_mib(), 1),
        **machine(),
    })
    if args.export:
        os.makedirs(args.export, exist_ok=True)
        shutil.copytree(model_dir, os.path.join(args.export, "model"), dirs_exist_ok=True)
        tok.save_pretrained(args.export)
        for extra in ("special_tokens_map.json", "chat_template.jinja"):
            p = os.path.join(args.export, extra)
            if os.path.exists(p):
                os.remove(p)
        with open(os.path.join(args.export, "prompts.jsonl"), "w") as f:
            for p in prompts:
                f.write(json.dumps(p) + "\n")
        with open(os.path.join(args.export, "settings.json"), "w") as f:
            json.dump(settings, f, indent=1)
        out["export"] = os.path.abspath(args.export)
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
