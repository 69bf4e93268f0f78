"""Modular-addition sweep in PyTorch: the reference for `bench/dynamics/modular_sweep.sh`.

The same job as `gradus sweep --config configs/pretrain/modular-addition.toml` (see that file):
per seed, a 1-layer Llama-style decoder (d 128, 4 heads, SwiGLU FFN 512, RoPE, untied head,
norm rmsnorm | layernorm | none), AdamW lr 1e-3, betas (0.9, 0.98), weight decay 1.0 on
matrices only, constant lr after 10 warmup steps, batch 256 drawn by epochs from the training
pairs, loss on the answer token only; every --eval-every steps greedy accuracy on the training
and held-out pairs, and a checkpoint's weight statistics every --dynamics-every steps (the SVD of
each block matrix, as gradus' `[dynamics]` does), seeds one after another. Prints one JSON line
with the wall time, steps/s and each seed's convergence step (first eval with held-out accuracy
>= 0.5). The split and initialisation differ from gradus' (different RNGs); the work is the same.

    pip install torch numpy
    OMP_NUM_THREADS=2 python bench/dynamics/modular_sweep_torch.py --seeds 4 --steps 3000
"""
import argparse
import json
import platform
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--seeds", type=int, default=4)
p.add_argument("--steps", type=int, default=3000)
p.add_argument("--p", type=int, default=113)
p.add_argument("--train-fraction", type=float, default=0.3)
p.add_argument("--norm", default="rmsnorm", choices=["rmsnorm", "layernorm", "none"])
p.add_argument("--eval-every", type=int, default=100)
p.add_argument("--dynamics-every", type=int, default=100)
p.add_argument("--threads", type=int, default=2)
a = p.parse_args()
torch.set_num_threads(a.threads)

D, H, FF, P = 128, 4, 512, a.p
V = P + 3  # numbers, '=', <|endoftext|>, <|pad|> (as gradus' word-level vocabulary)
HD = D // H


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def make_norm():
    if a.norm == "rmsnorm":
        return RMSNorm(D)
    if a.norm == "layernorm":
        return nn.LayerNorm(D, eps=1e-5)
    return nn.Identity()


def rope(x, cos, sin):
    x1, x2 = x[..., : HD // 2], x[..., HD // 2 :]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(V, D)
        self.n1, self.n2, self.nf = make_norm(), make_norm(), make_norm()
        self.q, self.k, self.v, self.o = (nn.Linear(D, D, bias=False) for _ in range(4))
        self.gate, self.up = nn.Linear(D, FF, bias=False), nn.Linear(D, FF, bias=False)
        self.down = nn.Linear(FF, D, bias=False)
        self.head = nn.Linear(D, V, bias=False)
        for prm in self.parameters():
            if prm.dim() == 2:
                nn.init.normal_(prm, std=0.02)
        inv = 1.0 / (10000 ** (torch.arange(0, HD, 2).float() / HD))
        ang = torch.arange(3).float()[:, None] * inv[None]
        self.register_buffer("cos", ang.cos())
        self.register_buffer("sin", ang.sin())

    def forward(self, ids):
        b, t = ids.shape
        x = self.embed(ids)
        n = self.n1(x)
        q, k, v = (m(n).view(b, t, H, HD).transpose(1, 2) for m in (self.q, self.k, self.v))
        q, k = rope(q, self.cos[:t], self.sin[:t]), rope(k, self.cos[:t], self.sin[:t])
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(att.transpose(1, 2).reshape(b, t, D))
        n = self.n2(x)
        x = x + self.down(F.silu(self.gate(n)) * self.up(n))
        return self.head(self.nf(x))


def stats(model):
    # The per-matrix statistics gradus records: norms, trace, singular values of each block matrix.
    out = []
    with torch.no_grad():
        for m in (model.q, model.k, model.v, model.o, model.gate, model.up, model.down):
            w = m.weight
            s = torch.linalg.svdvals(w)
            out.append([w.abs().sum().item(), w.norm().item(), torch.trace(w).item() if w.shape[0] == w.shape[1] else 0.0,
                        s[0].item(), s.mean().item(), s.var().item()])
    return out


pairs = np.array([(x, y) for x in range(P) for y in range(P)])
split_rng = np.random.RandomState(0)
perm = split_rng.permutation(len(pairs))
n_train = max(1, round(a.train_fraction * len(pairs)))
train, held = pairs[perm[:n_train]], pairs[perm[n_train:]]


def tensors(ps):
    ids = torch.tensor(np.stack([ps[:, 0], ps[:, 1], np.full(len(ps), P)], 1), dtype=torch.long)
    ans = torch.tensor((ps[:, 0] + ps[:, 1]) % P, dtype=torch.long)
    return ids, ans


train_ids, train_ans = tensors(train)
held_ids, held_ans = tensors(held)


def accuracy(model, ids, ans):
    with torch.no_grad():
        pred = model(ids)[:, -1, :P].argmax(-1)
    return (pred == ans).float().mean().item()


t0 = time.time()
conv = []
total_steps = 0
for seed in range(a.seeds):
    torch.manual_seed(seed)
    model = Model()
    decay = [q for q in model.parameters() if q.dim() >= 2]
    no_decay = [q for q in model.parameters() if q.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 1.0}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.98), eps=1e-8)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10))
    g = torch.Generator().manual_seed(seed)
    order, pos, first = torch.randperm(len(train), generator=g), 0, None
    stats(model)
    for step in range(1, a.steps + 1):
        if pos + 256 > len(order):
            order, pos = torch.randperm(len(train), generator=g), 0
        idx = order[pos : pos + 256]
        pos += 256
        logits = model(train_ids[idx])[:, -1]
        loss = F.cross_entropy(logits, train_ans[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % a.eval_every == 0 or step == a.steps:
            accuracy(model, train_ids, train_ans)
            acc = accuracy(model, held_ids, held_ans)
            if first is None and acc >= 0.5:
                first = step
        if step % a.dynamics_every == 0:
            stats(model)
    total_steps += a.steps
    conv.append(first)
wall = time.time() - t0
print(json.dumps({
    "impl": "pytorch", "torch": torch.__version__, "python": platform.python_version(),
    "threads": a.threads, "seeds": a.seeds, "steps": a.steps, "p": P, "train_fraction": a.train_fraction,
    "norm": a.norm, "wall_s": round(wall, 2), "steps_per_s": round(total_steps / wall, 1),
    "convergence_steps": conv,
}))
