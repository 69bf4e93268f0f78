"""Shared pieces of the PyTorch reference benches: presets, model construction, machine info."""
import argparse
import os
import platform
import resource

import torch

PRESETS = {
    # the speed-target model
    "base": dict(vocab=4096, hidden=256, layers=4, heads=4, intermediate=1024, seq=256, batch=8),
    # the small lab model
    "lab": dict(vocab=128, hidden=64, layers=2, heads=4, intermediate=256, seq=128, batch=32),
}


def add_model_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--preset", choices=sorted(PRESETS), default="base",
                    help="model/batch sizes; explicit flags below override single fields")
    for k in PRESETS["base"]:
        ap.add_argument(f"--{k}", type=int, default=None)
    ap.add_argument("--kv-heads", type=int, default=None, help="default: = heads (MHA)")
    ap.add_argument("--tied", action="store_true", help="tie lm_head to the embeddings (default: untied)")
    ap.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa",
                    help="transformers attention implementation (sdpa is the faster one on CPU)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)


def resolve(args: argparse.Namespace) -> dict:
    cfg = dict(PRESETS[args.preset])
    for k in cfg:
        v = getattr(args, k)
        if v is not None:
            cfg[k] = v
    cfg["kv_heads"] = args.kv_heads or cfg["heads"]
    return cfg


def build_model(cfg: dict, args: argparse.Namespace, max_positions: int):
    """transformers LlamaForCausalLM from config, f32, random init with the given seed."""
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM

    transformers.logging.set_verbosity_error()
    torch.manual_seed(args.seed)
    config = LlamaConfig(
        vocab_size=cfg["vocab"], hidden_size=cfg["hidden"], num_hidden_layers=cfg["layers"],
        num_attention_heads=cfg["heads"], num_key_value_heads=cfg["kv_heads"],
        intermediate_size=cfg["intermediate"], max_position_embeddings=max_positions,
        rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=args.tied,
        bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )
    config._attn_implementation = args.attn
    model = LlamaForCausalLM(config).float()
    model.config._attn_implementation = args.attn
    return model


def param_counts(model) -> dict:
    total = sum(p.numel() for p in model.parameters())  # tied weights are counted once
    emb = model.model.embed_tokens.weight.numel()
    head = 0 if model.config.tie_word_embeddings else model.lm_head.weight.numel()
    return {"n_params_total": total, "n_params_embedding": emb, "n_params_lm_head": head,
            # every matmul weight: all parameters but the input embedding table (a lookup)
            "n_params_non_embedding": total - emb + (emb if model.config.tie_word_embeddings else 0)}


def peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def machine() -> dict:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cpus_visible": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version()}
