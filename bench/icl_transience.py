"""PyTorch reference for the training step of `gradus lab icl-transience` (default size, L2 arm).

    python3 bench/icl_transience.py --steps 200 --warmup 20

The same model and step as gradus (crates/gradus-train/src/icl/, `gradus-bench icl-step`):
transformers LlamaForCausalLM (vocab 65 = 64 labels + ITEM, hidden 64, 2 layers, 4 heads,
intermediate 256, untied head, f32, sdpa attention) fed through `inputs_embeds` =
embed(ids) + W_in x with W_in = nn.Linear(63, 64, bias=False); bursty Gaussian sequences
(K = 64 classes = labels, D = 63, eps 0.1, N = 8 context pairs, the query's class x3 and a
distractor x3, 2 random slots, T = 17), batch 32; cross-entropy of the query's label at the last
position only; L2 penalty 1e-4 added to every gradient (lambda * theta); torch.optim.Adam(lr 1e-3)
(weight decay 0). Each timed step = forward + loss + backward + L2 + step +
zero_grad; the batch is generated before the clock starts (Python's per-sequence loop would
otherwise dominate), while gradus' timed step includes its data generation: the comparison is
conservative for gradus. Prints one JSON line (median/mean step ms, steps/s, versions, CPU).
"""
import argparse
import json
import platform
import statistics
import time

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

K, L, D, N, B = 64, 64, 63, 8, 3
ITEM = L


def batch(gen, mu, bs, eps=0.1):
    ids = torch.empty(bs, 2 * N + 1, dtype=torch.long)
    x = torch.zeros(bs, 2 * N + 1, D)
    target = torch.empty(bs, dtype=torch.long)
    for b in range(bs):
        cls = torch.randperm(K, generator=gen)[:2].tolist()
        ctx = [cls[0]] * B + [cls[1]] * B + torch.randint(0, K, (N - 2 * B,), generator=gen).tolist()
        ctx = [ctx[i] for i in torch.randperm(N, generator=gen).tolist()]
        seq = ctx + [cls[0]]
        eta = torch.randn(N + 1, D, generator=gen) / D ** 0.5
        items = (mu[seq] + eps * eta) / (1 + eps * eps) ** 0.5
        for j, c in enumerate(seq):
            ids[b, 2 * j] = ITEM
            x[b, 2 * j] = items[j]
            if j < N:
                ids[b, 2 * j + 1] = c % L
        target[b] = cls[0] % L
    return ids, x, target


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--l2", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = LlamaConfig(vocab_size=L + 1, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=32,
                      tie_word_embeddings=False, initializer_range=0.02, rms_norm_eps=1e-5,
                      attn_implementation="sdpa")
    model = LlamaForCausalLM(cfg)
    proj = torch.nn.Linear(D, 64, bias=False)
    torch.nn.init.normal_(proj.weight, std=1 / D ** 0.5)
    params = list(model.parameters()) + list(proj.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    gen = torch.Generator().manual_seed(args.seed + 1)
    mu = torch.randn(K, D, generator=gen) / D ** 0.5
    model.train()
    times, loss_v = [], 0.0
    for i in range(args.warmup + args.steps):
        ids, x, target = batch(gen, mu, args.batch)
        t0 = time.perf_counter()
        emb = model.get_input_embeddings()(ids) + proj(x)
        logits = model(inputs_embeds=emb, use_cache=False).logits[:, -1, :]
        loss = torch.nn.functional.cross_entropy(logits, target)
        loss.backward()
        with torch.no_grad():
            for p in params:
                p.grad.add_(p, alpha=args.l2)
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        loss_v = loss.item()
        if i >= args.warmup:
            times.append(dt)
    med = statistics.median(times)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    print(json.dumps({
        "impl": "torch", "torch": torch.__version__, "transformers": transformers.__version__,
        "python": platform.python_version(), "cpu": cpu, "threads": args.threads,
        "steps": args.steps, "warmup": args.warmup, "batch": args.batch, "seq": 2 * N + 1,
        "median_step_ms": 1e3 * med, "mean_step_ms": 1e3 * statistics.mean(times),
        "steps_per_second": 1 / med, "last_loss": loss_v,
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
