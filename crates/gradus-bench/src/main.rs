//! gradus' side of the speed comparisons in `bench/` (DESIGN.md §5.7): the same model, batch and
//! step as `bench/torch_train_step.py` and `bench/torch_generate.py`, one JSON line on stdout.
//!
//!     RAYON_NUM_THREADS=2 target/release/gradus-bench train-step --preset base --steps 20 --warmup 3
//!     RAYON_NUM_THREADS=2 target/release/gradus-bench train-step --preset lab  --steps 20 --warmup 3
//!     RAYON_NUM_THREADS=2 target/release/gradus-bench train-step --preset base --engine reference
//!     RAYON_NUM_THREADS=2 target/release/gradus-bench train-step --preset base --lora 8   # bench/lora_step.sh
//!     RAYON_NUM_THREADS=2 target/release/gradus-bench generate   --preset base --repeats 3
//!
//! Threads: candle's GEMM and gradus' fused ops both run on rayon's global pool, whose size is
//! `RAYON_NUM_THREADS` (candle reads the same variable for its GEMM parallelism). `--threads`
//! (default 2) sets that variable before the pool starts unless it is already set.

use std::time::Instant;

use clap::{Args, Parser, Subcommand, ValueEnum};
use gradus_data::pack::Batch;
use gradus_model::fast::{FastDecoder, FastOptions};
use gradus_model::generate::{generate, SamplingConfig};
use gradus_model::{Decoder, DecoderConfig};
use gradus_tensor::rng::Rng;
use gradus_tensor::{Device, Result};
use gradus_train::optim::{AdamW, AdamWConfig};
use gradus_train::trainer::batch_loss;
use serde_json::{json, Value};

#[derive(Parser)]
#[command(about = "gradus speed benches (compare with bench/torch_*.py)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Forward + loss + backward + AdamW step, timed per step.
    TrainStep(TrainArgs),
    /// Greedy KV-cache generation (8 prompts × 16 tokens, 64 new tokens by default).
    Generate(GenArgs),
    /// f32 GEMM throughput of candle's matmul (the GEMM gradus uses), same shapes as bench/sgemm_peak.py.
    Sgemm(SgemmArgs),
    /// Sentence-embedding throughput of the BERT encoder (compare with bench/st_embed.py).
    Embed(EmbedArgs),
    /// Synthetic-corpus generation throughput (documents/s; the built-in generator of gradus-tasks).
    Corpus(CorpusArgs),
    /// Training steps of `gradus lab icl-transience` (the L2 arm, at the shapes of
    /// bench/icl_transience.py): data generation + forward + backward + L2 + Adam, timed per step.
    IclStep(IclStepArgs),
}

#[derive(Args)]
struct IclStepArgs {
    #[arg(long, default_value_t = 200)]
    steps: usize,
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

/// Median and mean step time of the transience lab's training step.
fn icl_step_bench(a: &IclStepArgs, threads: usize) -> Result<Value> {
    use gradus_train::icl::emergence::LabSize;
    use gradus_train::icl::transience::{run_config, TransienceOptions};
    let o = TransienceOptions::new(std::env::temp_dir(), LabSize::Default);
    let mut cfg = run_config(&o, o.l2);
    // The shapes bench/icl_transience.py hard-codes, so both sides run the same model (the lab's
    // default before its tuning, which BENCHMARKS.md measured): K = L = 64, the query's class ×3
    // (N = 8), every sequence bursty, MLP width 256.
    cfg.data.n_classes = 64;
    cfg.data.n_labels = 64;
    cfg.data.burstiness = 3;
    cfg.data.p_bursty = 1.0;
    cfg.model.intermediate_size = 256;
    let mut l = gradus_train::icl::IclLearner::new(cfg.clone())?;
    let mut times = Vec::with_capacity(a.steps);
    let mut loss = 0.0;
    for i in 0..a.warmup + a.steps {
        let t0 = std::time::Instant::now();
        loss = l.train_step()?.0;
        let dt = t0.elapsed().as_secs_f64();
        if i >= a.warmup {
            times.push(dt);
        }
    }
    let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
    times.sort_by(|x, y| x.total_cmp(y));
    let median = times.get(times.len() / 2).copied().unwrap_or(0.0);
    Ok(json!({
        "impl": "gradus", "threads": threads, "steps": a.steps, "warmup": a.warmup,
        "batch": cfg.train.batch_size, "seq": 2 * cfg.data.context + 1,
        "hidden": cfg.model.hidden_size, "layers": cfg.model.num_hidden_layers,
        "median_step_ms": 1e3 * median, "mean_step_ms": 1e3 * mean,
        "steps_per_second": 1.0 / median.max(1e-12), "last_loss": loss,
    }))
}

#[derive(Args)]
struct CorpusArgs {
    #[arg(long, default_value_t = 10_000)]
    n_docs: usize,
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

/// Median documents/s over `repeats` generations of the default corpus (seed 2).
fn corpus_bench(a: &CorpusArgs, threads: usize) -> Result<Value> {
    let cfg = gradus_tasks::CorpusConfig {
        n_docs: a.n_docs,
        seed: 2,
        ..Default::default()
    };
    let mut rates = Vec::new();
    for _ in 0..a.repeats.max(1) {
        let t = std::time::Instant::now();
        let docs = gradus_tasks::corpus(&cfg)?;
        rates.push(docs.len() as f64 / t.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    Ok(
        json!({"bench": "corpus", "n_docs": a.n_docs, "threads": threads, "docs_per_s_median": rates[rates.len() / 2]}),
    )
}

#[derive(Args)]
struct EmbedArgs {
    /// BERT checkpoint dir (config.json, model.safetensors, tokenizer.json), e.g. all-MiniLM-L6-v2.
    #[arg(long)]
    model: std::path::PathBuf,
    /// JSONL with a `text` field (bench/st_embed.py --make-corpus writes one).
    #[arg(long)]
    input: std::path::PathBuf,
    #[arg(long, default_value_t = 256)]
    max_len: usize,
    #[arg(long, default_value_t = 8192)]
    batch_tokens: usize,
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

#[derive(Args)]
struct SgemmArgs {
    #[arg(long, default_value_t = 10)]
    repeats: usize,
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

#[derive(Clone, Copy, ValueEnum)]
enum Preset {
    Base,
    Lab,
}

#[derive(Args, Clone)]
struct ModelArgs {
    #[arg(long, value_enum, default_value = "base")]
    preset: Preset,
    #[arg(long)]
    vocab: Option<usize>,
    #[arg(long)]
    hidden: Option<usize>,
    #[arg(long)]
    layers: Option<usize>,
    #[arg(long)]
    heads: Option<usize>,
    #[arg(long)]
    intermediate: Option<usize>,
    #[arg(long)]
    seq: Option<usize>,
    #[arg(long)]
    batch: Option<usize>,
    /// Default: = heads (MHA).
    #[arg(long)]
    kv_heads: Option<usize>,
    /// Tie lm_head to the embeddings (default untied, as the torch scripts).
    #[arg(long)]
    tied: bool,
    /// rayon pool size (also candle's GEMM threads); ignored when RAYON_NUM_THREADS is set.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    m: ModelArgs,
    #[arg(long, default_value_t = 20)]
    steps: usize,
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    #[arg(long, default_value_t = 0.1)]
    weight_decay: f64,
    /// Pass no segment ids (plain causal mask) instead of all-ones segments as the trainer does.
    #[arg(long)]
    no_segments: bool,
    /// Also time forward / backward / optimizer separately (adds a sync point per phase).
    #[arg(long)]
    phases: bool,
    /// Training graph: `fast` (the hand-written graph, what `gradus train` runs by default) or
    /// `reference` (the candle autograd decoder).
    #[arg(long, value_enum, default_value = "fast")]
    engine: BenchEngine,
    /// Train LoRA adapters of this rank (alpha = 2·rank) on a frozen base instead of every
    /// weight; 0 = full training.
    #[arg(long, default_value_t = 0)]
    lora: usize,
    /// Modules that get an adapter with `--lora` (comma-separated PEFT names).
    #[arg(
        long,
        default_value = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
    )]
    lora_targets: String,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BenchEngine {
    Fast,
    Reference,
}

#[derive(Args)]
struct GenArgs {
    #[command(flatten)]
    m: ModelArgs,
    #[arg(long, default_value_t = 8)]
    prompts: usize,
    #[arg(long, default_value_t = 16)]
    prompt_len: usize,
    #[arg(long, default_value_t = 64)]
    new_tokens: usize,
    #[arg(long, default_value_t = 3)]
    repeats: usize,
}

/// Resolved sizes, named as in bench/torch_common.py.
struct Sizes {
    vocab: usize,
    hidden: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    intermediate: usize,
    seq: usize,
    batch: usize,
}

impl ModelArgs {
    fn sizes(&self) -> Sizes {
        // (vocab, hidden, layers, heads, intermediate, seq, batch)
        let p = match self.preset {
            Preset::Base => (4096, 256, 4, 4, 1024, 256, 8),
            Preset::Lab => (128, 64, 2, 4, 256, 128, 32),
        };
        let heads = self.heads.unwrap_or(p.3);
        Sizes {
            vocab: self.vocab.unwrap_or(p.0),
            hidden: self.hidden.unwrap_or(p.1),
            layers: self.layers.unwrap_or(p.2),
            heads,
            kv_heads: self.kv_heads.unwrap_or(heads),
            intermediate: self.intermediate.unwrap_or(p.4),
            seq: self.seq.unwrap_or(p.5),
            batch: self.batch.unwrap_or(p.6),
        }
    }

    fn preset_name(&self) -> &'static str {
        match self.preset {
            Preset::Base => "base",
            Preset::Lab => "lab",
        }
    }

    /// The same config as torch_common.build_model: rope_theta 1e4, eps 1e-5, no biases, f32.
    fn decoder_config(&self, s: &Sizes, max_positions: usize) -> DecoderConfig {
        DecoderConfig {
            vocab_size: s.vocab,
            hidden_size: s.hidden,
            intermediate_size: s.intermediate,
            num_hidden_layers: s.layers,
            num_attention_heads: s.heads,
            num_key_value_heads: s.kv_heads,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            max_position_embeddings: max_positions,
            tie_word_embeddings: self.tied,
            initializer_range: 0.02,
            ..DecoderConfig::default()
        }
    }

    fn config_json(&self, s: &Sizes) -> Value {
        json!({"vocab": s.vocab, "hidden": s.hidden, "layers": s.layers, "heads": s.heads,
               "intermediate": s.intermediate, "seq": s.seq, "batch": s.batch, "kv_heads": s.kv_heads})
    }
}

/// Peak resident set size of this process so far (VmHWM), MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|k| k.parse::<f64>().ok())
            })
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split_once(':').map_or("", |x| x.1).trim().to_string())
        })
        .unwrap_or_else(|| "?".into())
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

/// Parameter counts as bench/torch_common.param_counts reports them.
fn param_counts(model: &Decoder) -> (usize, usize, usize, usize) {
    let total: usize = model
        .named_params()
        .iter()
        .map(|(_, v)| v.elem_count())
        .sum();
    let emb = model.embed_tokens.elem_count();
    let head = model.lm_head.as_ref().map_or(0, |h| h.elem_count());
    let non_emb = total - emb + if model.lm_head.is_none() { emb } else { 0 };
    (total, emb, head, non_emb)
}

fn machine(threads: usize) -> Value {
    json!({"cpu": cpu_model(),
           "cpus_visible": std::thread::available_parallelism().map_or(0, |n| n.get()),
           "rayon_threads": threads,
           "candle_gemm_threads": candle_core::utils::get_num_threads()})
}

/// A random (B, T) batch laid out as torch's `labels = input_ids` with the shift inside the model:
/// target t = input t+1 within a row, the last position of every row weighted 0, so the loss is
/// the mean NLL over B·(T−1) targets. Positions 0..T, one segment per row.
fn random_batch(rng: &mut Rng, b: usize, t: usize, vocab: usize) -> Batch {
    let input_ids: Vec<u32> = (0..b * t).map(|_| rng.below(vocab) as u32).collect();
    let mut targets = vec![0u32; b * t];
    let mut loss_weight = vec![0f32; b * t];
    for r in 0..b {
        for i in 0..t - 1 {
            targets[r * t + i] = input_ids[r * t + i + 1];
            loss_weight[r * t + i] = 1.0;
        }
    }
    Batch {
        rows: b,
        seq_len: t,
        input_ids,
        targets,
        loss_weight,
        position_ids: (0..b).flat_map(|_| 0..t as u32).collect(),
        segment_ids: vec![1; b * t],
    }
}

fn train_step(a: &TrainArgs, threads: usize) -> Result<Value> {
    let s = a.m.sizes();
    let cfg = a.m.decoder_config(&s, s.seq);
    let dev = Device::Cpu;
    let mut model = Decoder::new_random(&cfg, a.m.seed, &dev)?;
    if a.lora > 0 {
        let lc = gradus_model::LoraConfig {
            r: a.lora,
            lora_alpha: 2.0 * a.lora as f64,
            lora_dropout: 0.0,
            target_modules: a
                .lora_targets
                .split(',')
                .map(|s| s.trim().to_string())
                .collect(),
            use_rslora: false,
        };
        model.apply_lora(&lc, &mut Rng::derive(a.m.seed, "bench-lora"))?;
    }
    // With LoRA only the adapters train (the fast graph then skips the base's weight gradients).
    let params = if a.lora > 0 {
        model.lora_params()
    } else {
        model.named_params()
    };
    let n_trainable: usize = params.iter().map(|(_, v)| v.elem_count()).sum();
    // torch.optim.AdamW decays every parameter (norm weights too): no exemptions here either.
    let opt_cfg = AdamWConfig {
        betas: (0.9, 0.999),
        eps: 1e-8,
        weight_decay: a.weight_decay,
    };
    let mut opt = AdamW::with_no_decay(params, opt_cfg, |_, _| false)?;
    let mut rng = Rng::derive(a.m.seed + 1, "bench-batches");
    let mut fast = match a.engine {
        BenchEngine::Fast => Some(FastDecoder::new(&model, FastOptions::default())?),
        BenchEngine::Reference => None,
    };

    let mut times = Vec::with_capacity(a.steps);
    let (mut t_fwd, mut t_bwd, mut t_opt) = (Vec::new(), Vec::new(), Vec::new());
    let mut losses = Vec::new();
    for i in 0..a.warmup + a.steps {
        let mut batch = random_batch(&mut rng, s.batch, s.seq, s.vocab);
        if a.no_segments {
            batch.segment_ids.clear();
        }
        let norm = batch.num_target_tokens() as f64;
        let (lv, t0, t1, t2, t3) = match fast.as_mut() {
            Some(f) => {
                // The trainer's fast step: forward to log-probs, dlogp = -w/norm, backward into
                // the flat gradients, fused AdamW over the flat parameters.
                let t0 = Instant::now();
                f.zero_grads();
                let inp = gradus_model::ForwardInput {
                    input_ids: &batch.input_ids,
                    batch: batch.rows,
                    seq_len: batch.seq_len,
                    position_ids: Some(&batch.position_ids),
                    segment_ids: (!a.no_segments).then_some(batch.segment_ids.as_slice()),
                };
                let lp = f.forward(&inp, &batch.targets)?;
                let lv = -lp
                    .iter()
                    .zip(&batch.loss_weight)
                    .map(|(&l, &w)| l as f64 * w as f64)
                    .sum::<f64>()
                    / norm.max(1.0);
                let dlogp: Vec<f32> = batch
                    .loss_weight
                    .iter()
                    .map(|&w| (-(w as f64) / norm.max(1.0)) as f32)
                    .collect();
                let t1 = Instant::now();
                f.backward(&dlogp)?;
                let t2 = Instant::now();
                let (p, g) = f.params_and_grads();
                opt.step_flat(p, g, a.lr)?;
                (lv, t0, t1, t2, Instant::now())
            }
            None => {
                let t0 = Instant::now();
                let loss = if a.no_segments {
                    loss_no_segments(&model, &batch, norm)?
                } else {
                    batch_loss(&model, &batch, norm)?
                };
                let t1 = Instant::now();
                let grads = loss.backward()?;
                let t2 = Instant::now();
                opt.step(&grads, a.lr)?;
                drop(grads);
                let t3 = Instant::now();
                (loss.to_scalar::<f32>()? as f64, t0, t1, t2, t3)
            }
        };
        let dt = t3.duration_since(t0).as_secs_f64();
        losses.push(lv);
        if i >= a.warmup {
            times.push(dt);
            t_fwd.push(t1.duration_since(t0).as_secs_f64());
            t_bwd.push(t2.duration_since(t1).as_secs_f64());
            t_opt.push(t3.duration_since(t2).as_secs_f64());
        }
        if !lv.is_finite() {
            return Err(gradus_tensor::Error::msg(format!(
                "loss became {lv} at step {i}"
            )));
        }
    }
    let (total, emb, head, non_emb) = param_counts(&model);
    let attn = 12 * s.layers * s.hidden * s.seq;
    let flops_tok = 6 * non_emb + attn;
    let tokens = s.batch * s.seq;
    let step_s = median(&times);
    let tps = tokens as f64 / step_s;
    let mut out = json!({
        "bench": "gradus_train_step",
        "preset": a.m.preset_name(),
        "config": a.m.config_json(&s),
        "tied": a.m.tied,
        "engine": match a.engine { BenchEngine::Fast => "fast (hand-written graph, flat AdamW)", BenchEngine::Reference => "reference (candle autograd)" },
        "attention": if a.no_segments { "gradus fused causal (no segments)" } else { "gradus fused causal + segment mask (as the trainer)" },
        "optimizer": format!("AdamW(lr={}, weight_decay={}) on every trained parameter", a.lr, a.weight_decay),
        "lora": if a.lora > 0 { json!({"r": a.lora, "alpha": 2 * a.lora, "targets": a.lora_targets}) } else { Value::Null },
        "n_params_trained": n_trainable,
        "steps": a.steps,
        "warmup": a.warmup,
        "tokens_per_step": tokens,
        "step_ms_median": round(step_s * 1e3, 2),
        "step_ms_min": round(times.iter().cloned().fold(f64::INFINITY, f64::min) * 1e3, 2),
        "step_ms_max": round(times.iter().cloned().fold(0.0, f64::max) * 1e3, 2),
        "tokens_per_s": round(tps, 1),
        "n_params_total": total,
        "n_params_embedding": emb,
        "n_params_lm_head": head,
        "n_params_non_embedding": non_emb,
        "flops_formula": "6*N_matmul + 12*layers*hidden*seq (N_matmul = all params but input embedding)",
        "flops_per_token": flops_tok,
        "flops_per_token_without_lm_head": flops_tok - 6 * s.vocab * s.hidden,
        "achieved_gflops": round(flops_tok as f64 * tps / 1e9, 2),
        "loss_first": round(losses[0], 4),
        "loss_last": round(*losses.last().unwrap_or(&f64::NAN), 4),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "machine": machine(threads),
    });
    if a.lora > 0 {
        out["flops_note"] = json!("flops_per_token and achieved_gflops count a full training step's FLOPs; compare LoRA by step_ms");
    }
    if a.phases {
        out["phase_ms_median"] = json!({
            "forward_loss": round(median(&t_fwd) * 1e3, 2),
            "backward": round(median(&t_bwd) * 1e3, 2),
            "optimizer": round(median(&t_opt) * 1e3, 2),
        });
    }
    Ok(out)
}

/// batch_loss without segment ids (plain causal attention), for the `--no-segments` variant.
fn loss_no_segments(model: &Decoder, b: &Batch, norm: f64) -> Result<gradus_tensor::Tensor> {
    let inp = gradus_model::ForwardInput {
        input_ids: &b.input_ids,
        batch: b.rows,
        seq_len: b.seq_len,
        position_ids: Some(&b.position_ids),
        segment_ids: None,
    };
    let lp = model.target_logprobs(&inp, &b.targets)?;
    let w = gradus_tensor::Tensor::from_slice(&b.loss_weight, b.loss_weight.len(), model.device())?;
    Ok(((lp * w)?.sum_all()?.neg()? / norm.max(1.0))?)
}

fn generate_bench(a: &GenArgs, threads: usize) -> Result<Value> {
    let s = a.m.sizes();
    let max_pos = s.seq.max(a.prompt_len + a.new_tokens);
    let cfg = a.m.decoder_config(&s, max_pos);
    let dev = Device::Cpu;
    let model = Decoder::new_random(&cfg, a.m.seed, &dev)?;
    let mut rng = Rng::derive(a.m.seed + 2, "bench-prompts");
    let prompts: Vec<Vec<u32>> = (0..a.prompts)
        .map(|_| {
            (0..a.prompt_len)
                .map(|_| rng.below(s.vocab) as u32)
                .collect()
        })
        .collect();
    let sc = SamplingConfig {
        max_new_tokens: a.new_tokens,
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
        seed: 0,
    };
    let run = || -> Result<(f64, Vec<Vec<u32>>)> {
        let t0 = Instant::now();
        let out = generate(&model, &prompts, &sc, &[], &mut |_, _| false)?;
        let dt = t0.elapsed().as_secs_f64();
        Ok((dt, out.into_iter().map(|g| g.tokens).collect()))
    };
    let (_, first) = run()?; // untimed warm-up
    if first.iter().any(|r| r.len() != a.new_tokens) {
        return Err(gradus_tensor::Error::msg("a row stopped early"));
    }
    let mut times = Vec::new();
    for _ in 0..a.repeats {
        let (dt, out) = run()?;
        if out != first {
            return Err(gradus_tensor::Error::msg(
                "greedy decoding differed between runs",
            ));
        }
        times.push(dt);
    }
    let t = median(&times);
    let new = a.prompts * a.new_tokens;
    let (total, emb, head, non_emb) = param_counts(&model);
    Ok(json!({
        "bench": "gradus_generate",
        "preset": a.m.preset_name(),
        "config": a.m.config_json(&s),
        "tied": a.m.tied,
        "prompts": a.prompts,
        "prompt_len": a.prompt_len,
        "new_tokens": a.new_tokens,
        "decoding": "greedy, KV cache (gradus_model::generate::generate)",
        "repeats": a.repeats,
        "generate_s_median": round(t, 4),
        "generate_s_min": round(times.iter().cloned().fold(f64::INFINITY, f64::min), 4),
        "generated_tokens_per_s": round(new as f64 / t, 1),
        "ms_per_decode_step": round(t / a.new_tokens as f64 * 1e3, 2),
        "first_generated_ids_row0": &first[0][..8.min(first[0].len())],
        "n_params_total": total,
        "n_params_embedding": emb,
        "n_params_lm_head": head,
        "n_params_non_embedding": non_emb,
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "machine": machine(threads),
    }))
}

fn sgemm(a: &SgemmArgs, threads: usize) -> Result<Value> {
    let shapes = [
        ("square_1024", (1024, 1024, 1024)),
        ("square_2048", (2048, 2048, 2048)),
        ("base_ffn_up_2048x256x1024", (2048, 256, 1024)),
        ("base_lm_head_2048x256x4096", (2048, 256, 4096)),
    ];
    let mut rng = Rng::derive(0, "sgemm");
    let mut res = serde_json::Map::new();
    let mut peak = 0f64;
    let mut peak_pre = 0f64;
    for (name, (m, k, n)) in shapes {
        let x = rng.randn(&[m, k], 1.0, &Device::Cpu)?;
        let w = rng.randn(&[k, n], 1.0, &Device::Cpu)?;
        for _ in 0..2 {
            let _ = x.matmul(&w)?;
        }
        let mut g = Vec::new();
        let mut best_s = f64::INFINITY;
        for _ in 0..a.repeats {
            let t0 = Instant::now();
            let y = x.matmul(&w)?;
            let dt = t0.elapsed().as_secs_f64();
            drop(y);
            best_s = best_s.min(dt);
            g.push(2.0 * (m * k * n) as f64 / dt / 1e9);
        }
        let best = g.iter().cloned().fold(0.0, f64::max);
        peak = peak.max(best);
        // The fast training graph's GEMM: the gemm crate straight into a preallocated output.
        let xs: Vec<f32> = x.flatten_all()?.to_vec1()?;
        let ws: Vec<f32> = w.flatten_all()?.to_vec1()?;
        let mut out = vec![0f32; m * n];
        let par = if threads > 1 {
            gemm::Parallelism::Rayon(threads)
        } else {
            gemm::Parallelism::None
        };
        let mut gp = Vec::new();
        for i in 0..a.repeats + 2 {
            let t0 = Instant::now();
            // SAFETY: xs is m×k, ws is k×n, out is m×n, all row-major and distinct.
            unsafe {
                gradus_tensor::ops::gemm_strided(
                    m,
                    n,
                    k,
                    out.as_mut_ptr(),
                    n,
                    false,
                    xs.as_ptr(),
                    k,
                    1,
                    ws.as_ptr(),
                    n,
                    1,
                    1.0,
                    par,
                );
            }
            let dt = t0.elapsed().as_secs_f64();
            if i >= 2 {
                gp.push(2.0 * (m * k * n) as f64 / dt / 1e9);
            }
        }
        std::hint::black_box(&out);
        let best_pre = gp.iter().cloned().fold(0.0, f64::max);
        peak_pre = peak_pre.max(best_pre);
        res.insert(name.into(), json!({"mkn": [m, k, n], "best_gflops": round(best, 2),
            "median_gflops": round(median(&g), 2), "best_ms": round(best_s * 1e3, 3),
            "best_gflops_prealloc": round(best_pre, 2), "median_gflops_prealloc": round(median(&gp), 2)}));
    }
    Ok(json!({"bench": "gradus_sgemm_peak",
              "gemm": "candle-core matmul (gemm crate), output allocated per call; *_prealloc: gemm crate into a preallocated output (the fast training graph's GEMM)",
              "threads": threads, "repeats": a.repeats, "peak_gflops": round(peak, 2), "peak_gflops_prealloc": round(peak_pre, 2),
              "shapes": res, "machine": machine(threads)}))
}

/// Tokenise + encode + pool every text, best of `repeats` after a warm-up on 64 texts; the same
/// protocol as bench/st_embed.py.
fn embed_bench(a: &EmbedArgs, threads: usize) -> Result<Value> {
    use gradus_data::dataset::{read_dataset, Example, Fields, Shape};
    let enc = gradus_model::encoder::Encoder::load(&a.model)?;
    let mut tok = gradus_data::tokenizer::Tokenizer::from_file(a.model.join("tokenizer.json"))?;
    tok.set_encoder_mode(a.max_len.min(enc.max_len()))?;
    let texts: Vec<String> = read_dataset(&a.input, Shape::Text, &Fields::default())?
        .into_iter()
        .filter_map(|e| match e {
            Example::Text { text } => Some(text),
            _ => None,
        })
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let run = |t: &[&str]| -> Result<f64> {
        let t0 = Instant::now();
        let ids = tok.encode_batch(t, true)?;
        let e = enc.embed(&ids, a.batch_tokens)?;
        std::hint::black_box(e);
        Ok(t0.elapsed().as_secs_f64())
    };
    run(&refs[..refs.len().min(64)])?;
    let mut best = f64::INFINITY;
    for _ in 0..a.repeats.max(1) {
        best = best.min(run(&refs)?);
    }
    Ok(
        json!({"impl": "gradus", "threads": threads, "texts": texts.len(), "seconds": best, "sentences_per_second": texts.len() as f64 / best}),
    )
}

fn main() {
    gradus_tensor::init_runtime();
    let cli = Cli::parse();
    let want = match &cli.cmd {
        Cmd::TrainStep(a) => a.m.threads,
        Cmd::Generate(a) => a.m.threads,
        Cmd::Sgemm(a) => a.threads,
        Cmd::Embed(a) => a.threads,
        Cmd::Corpus(a) => a.threads,
        Cmd::IclStep(a) => a.threads,
    };
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // Before anything touches rayon's global pool or candle reads the variable.
        std::env::set_var("RAYON_NUM_THREADS", want.to_string());
    }
    let threads = rayon::current_num_threads();
    let res = match &cli.cmd {
        Cmd::TrainStep(a) => train_step(a, threads),
        Cmd::Generate(a) => generate_bench(a, threads),
        Cmd::Sgemm(a) => sgemm(a, threads),
        Cmd::Embed(a) => embed_bench(a, threads),
        Cmd::Corpus(a) => corpus_bench(a, threads),
        Cmd::IclStep(a) => icl_step_bench(a, threads),
    };
    match res {
        Ok(v) => println!("{v}"),
        Err(e) => {
            eprintln!("gradus-bench: {e}");
            std::process::exit(1);
        }
    }
}
