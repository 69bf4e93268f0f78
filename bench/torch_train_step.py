"""PyTorch reference for gradus' training-step speed.

    python3 bench/torch_train_step.py --preset base --steps 20 --warmup 3
    python3 bench/torch_train_step.py --preset lab  --steps 20 --warmup 3

transformers LlamaForCausalLM built from config (f32, random init, seed 0, untied lm_head unless
--tied, sdpa attention unless --attn eager), torch.optim.AdamW(lr 1e-3, weight_decay 0.1, betas
(0.9, 0.999), eps 1e-8, default implementation = single-tensor on CPU), torch on --threads (2) threads. Each step draws a
random [batch, seq] token batch (labels = inputs; the model shifts them) and does
forward + loss + backward + optimizer.step + zero_grad(set_to_none=True); each full step is timed
with perf_counter after --warmup untimed steps. Prints one JSON line.

FLOPs per token (the usual 6N + attention estimate, fwd + bwd):
    6 * N_matmul + 12 * layers * hidden * seq
where N_matmul = every parameter but the input embedding table (a lookup, no FLOPs); it includes
lm_head (vocab * hidden, a real matmul) and the norm weights (negligible). The attention term
counts QK^T and AV over the full seq x seq score matrix (no causal halving), as in Kaplan et al.
and the PaLM MFU formula. `flops_per_token_without_lm_head` is given as well.
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
    ap.add_argument("--steps", type=int, default=20, help="timed steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    cfg = resolve(args)
    model = build_model(cfg, args, max_positions=cfg["seq"])
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    gen = torch.Generator().manual_seed(args.seed + 1)

    def batch():
        return torch.randint(0, cfg["vocab"], (cfg["batch"], cfg["seq"]), generator=gen)

    times, losses = [], []
    for i in range(args.warmup + args.steps):
        ids = batch()
        t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        losses.append(loss.item())
        if i >= args.warmup:
            times.append(dt)

    pc = param_counts(model)
    attn = 12 * cfg["layers"] * cfg["hidden"] * cfg["seq"]
    flops_tok = 6 * pc["n_params_non_embedding"] + attn
    tokens = cfg["batch"] * cfg["seq"]
    step_s = statistics.median(times)
    out = {
        "bench": "torch_train_step",
        "preset": args.preset,
        "config": cfg,
        "tied": args.tied,
        "attn_implementation": args.attn,
        "optimizer": f"AdamW(lr={args.lr}, weight_decay={args.weight_decay})",
        "steps": args.steps,
        "warmup": args.warmup,
        "tokens_per_step": tokens,
        "step_ms_median": round(step_s * 1e3, 2),
        "step_ms_min": round(min(times) * 1e3, 2),
        "step_ms_max": round(max(times) * 1e3, 2),
        "tokens_per_s": round(tokens / step_s, 1),
        **pc,
        "flops_formula": "6*N_matmul + 12*layers*hidden*seq (N_matmul = all params but input embedding)",
        "flops_per_token": flops_tok,
        "flops_per_token_without_lm_head": flops_tok - 6 * cfg["vocab"] * cfg["hidden"],
        "achieved_gflops": round(flops_tok * tokens / step_s / 1e9, 2),
        "loss_first": round(losses[0], 4),
        "loss_last": round(losses[-1], 4),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        **machine(),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
