"""PyTorch reference for gradus' generation speed (KV-cache decoding).

    python3 bench/torch_generate.py --preset base --repeats 3

The same model as torch_train_step.py (transformers LlamaForCausalLM from config, f32, random init,
seed 0, untied, sdpa), in eval mode under torch.inference_mode, torch on --threads (2) threads.
`model.generate` on a batch of --prompts (8) random prompts of --prompt-len (16) tokens, exactly
--new-tokens (64) new tokens each (greedy, use_cache=True, no EOS so no early stop). One untimed
warm-up generate, then --repeats timed ones; the median is reported.
generated_tokens_per_s = prompts * new_tokens / wall time of the whole generate call (prefill
included). Prints one JSON line.

Also timed (unless --no-manual-loop): the same greedy decoding as a plain loop of model forwards
with a DynamicCache and argmax (`manual_loop_*`), i.e. without generate()'s per-step Python
machinery (logits processors, stopping criteria); it must produce the same tokens as generate.
This is the closer like-for-like reference for a hand-written decode loop.
"""
import argparse
import json
import statistics
import sys
import time

import torch

from torch_common import add_model_args, build_model, machine, param_counts, peak_rss_mib, resolve


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_model_args(ap)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3, help="timed generate calls")
    ap.add_argument("--no-manual-loop", action="store_true")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    cfg = resolve(args)
    max_pos = max(cfg["seq"], args.prompt_len + args.new_tokens)
    model = build_model(cfg, args, max_positions=max_pos).eval()
    gen = torch.Generator().manual_seed(args.seed + 2)
    prompts = torch.randint(0, cfg["vocab"], (args.prompts, args.prompt_len), generator=gen)
    attention_mask = torch.ones_like(prompts)

    def run():
        with torch.inference_mode():
            t0 = time.perf_counter()
            out = model.generate(
                input_ids=prompts, attention_mask=attention_mask, do_sample=False, num_beams=1,
                max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, use_cache=True,
                eos_token_id=None, pad_token_id=0)
            dt = time.perf_counter() - t0
        assert out.shape == (args.prompts, args.prompt_len + args.new_tokens), out.shape
        return dt, out

    _, first = run()
    times = []
    for _ in range(args.repeats):
        dt, out = run()
        assert torch.equal(out, first)  # greedy: identical every time
        times.append(dt)

    def manual():
        from transformers import DynamicCache

        with torch.inference_mode():
            t0 = time.perf_counter()
            cache = DynamicCache(config=model.config)
            logits = model(input_ids=prompts, attention_mask=attention_mask, past_key_values=cache,
                           use_cache=True).logits
            nxt = logits[:, -1:].argmax(-1)
            toks = [nxt]
            mask = attention_mask
            for _ in range(args.new_tokens - 1):
                mask = torch.cat([mask, torch.ones_like(nxt)], dim=1)
                logits = model(input_ids=nxt, attention_mask=mask, past_key_values=cache,
                               use_cache=True).logits
                nxt = logits[:, -1:].argmax(-1)
                toks.append(nxt)
            dt = time.perf_counter() - t0
        return dt, torch.cat([prompts] + toks, dim=1)

    manual_out = {}
    if not args.no_manual_loop:
        _, out = manual()
        assert torch.equal(out, first), "manual greedy loop disagrees with generate()"
        mtimes = [manual()[0] for _ in range(args.repeats)]
        mt = statistics.median(mtimes)
        manual_out = {"manual_loop_s_median": round(mt, 4),
                      "manual_loop_tokens_per_s": round(args.prompts * args.new_tokens / mt, 1)}

    t = statistics.median(times)
    new = args.prompts * args.new_tokens
    print(json.dumps({
        "bench": "torch_generate",
        "preset": args.preset,
        "config": cfg,
        "tied": args.tied,
        "attn_implementation": args.attn,
        "prompts": args.prompts,
        "prompt_len": args.prompt_len,
        "new_tokens": args.new_tokens,
        "decoding": "greedy, KV cache (transformers DynamicCache)",
        "repeats": args.repeats,
        "generate_s_median": round(t, 4),
        "generate_s_min": round(min(times), 4),
        "generated_tokens_per_s": round(new / t, 1),
        "ms_per_decode_step": round(t / args.new_tokens * 1e3, 2),
        **manual_out,
        "first_generated_ids_row0": first[0, args.prompt_len:args.prompt_len + 8].tolist(),
        **param_counts(model),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        **machine(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
