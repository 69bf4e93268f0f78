//! A BERT-family encoder for sentence embeddings (inference only), loaded from a Hugging Face
//! `BertModel` checkpoint (`config.json` + `model.safetensors`, names with or without the `bert.`
//! prefix), in dependency order: config → weights → kernels (layer norm, GELU, softmax) → dense →
//! attention → layer → model → pooling.
//!
//! Shapes: N tokens of a batch laid end to end, D hidden, H heads, Dh = D/H, F intermediate.
//!
//! Why plain `f32` buffers and not candle tensors: embedding is inference only, so there is no
//! autograd graph to build or keep, and every step can be fused by hand. A batch is **unpadded**
//! ("varlen"): the token rows of all its sequences are stacked into one (N, D) matrix, so every
//! linear layer is one large GEMM (`gemm` crate, bias pre-loaded into the output and accumulated),
//! and attention runs per sequence over exactly its own tokens — no padding mask is needed and no
//! work is spent on pad tokens. That is exactly what BERT with an attention mask computes for the
//! real tokens: pad keys get −inf (so zero weight), and pad positions are excluded from the mean
//! pooling. Sequences are sorted by length and grouped into batches of about [`Encoder::embed`]'s
//! token budget, so per-sequence attention tiles are similar in size.
//!
//! Post-LN block (BERT): `x = LN(x + Attn(x)); x = LN(x + W2·act(W1·x))`; embeddings are
//! `LN(word[id] + position[p] + token_type[0])`.

use std::collections::HashMap;
use std::path::Path;

use gradus_tensor::ops::gemm_strided;
use gradus_tensor::{Error, Result};
use rayon::prelude::*;
use serde::Deserialize;

// ---------------------------------------------------------------------------------------------
// Config

/// Activation of the feed-forward block (`hidden_act`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU with erf (`"gelu"`).
    Gelu,
    /// tanh approximation (`"gelu_new"`, `"gelu_pytorch_tanh"`, `"gelu_fast"`).
    GeluTanh,
    Relu,
}

/// A BERT encoder's configuration, with the Hugging Face `BertConfig` field names. Unknown fields
/// of `config.json` (dropout rates, `architectures`, ...) are ignored.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct EncoderConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    #[serde(default = "default_pos_type")]
    pub position_embedding_type: String,
    #[serde(default)]
    pub model_type: Option<String>,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_max_pos() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_pos_type() -> String {
    "absolute".into()
}

impl EncoderConfig {
    /// Reads and checks a `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let cfg: Self = serde_json::from_str(&text)
            .map_err(|e| Error::format(path, format!("not a BERT config.json: {e}")))?;
        if let Some(mt) = &cfg.model_type {
            if !matches!(
                mt.as_str(),
                "bert" | "roberta" | "xlm-roberta" | "camembert"
            ) {
                return Err(Error::format(
                    path,
                    format!("model_type `{mt}` is not a BERT-family encoder"),
                ));
            }
            if mt != "bert" {
                return Err(Error::format(
                    path,
                    format!("model_type `{mt}`: only `bert` position ids (0..T) are supported, not RoBERTa's offset ones"),
                ));
            }
        }
        cfg.validate()
            .map_err(|e| Error::format(path, e.to_string()))?;
        Ok(cfg)
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    pub fn activation(&self) -> Result<Activation> {
        match self.hidden_act.as_str() {
            "gelu" => Ok(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluTanh),
            "relu" => Ok(Activation::Relu),
            other => Err(Error::config(
                "hidden_act",
                format!("`{other}` is not supported (gelu, gelu_new, relu)"),
            )),
        }
    }

    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ] {
            if v == 0 {
                return Err(Error::config(name, "must be positive"));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(Error::config(
                "hidden_size",
                format!(
                    "{} is not a multiple of num_attention_heads = {}",
                    self.hidden_size, self.num_attention_heads
                ),
            ));
        }
        if self.position_embedding_type != "absolute" {
            return Err(Error::config(
                "position_embedding_type",
                format!(
                    "`{}`: only `absolute` is supported",
                    self.position_embedding_type
                ),
            ));
        }
        if !(self.layer_norm_eps > 0.0) {
            return Err(Error::config("layer_norm_eps", "must be positive"));
        }
        self.activation()?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Weights

/// Tensors by name: (shape, f32 values).
pub type NamedTensors = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// Reads the float tensors of a safetensors file as f32 (integer buffers such as BERT's
/// `embeddings.position_ids` are skipped), names stripped of a leading `bert.`.
fn read_float_tensors(path: &Path) -> Result<NamedTensors> {
    let (tensors, _) = gradus_tensor::io::read_raw(path)?;
    Ok(tensors
        .into_iter()
        .filter_map(|(name, raw)| {
            let (values, _) = raw.to_f32()?;
            let name = name.strip_prefix("bert.").unwrap_or(&name).to_string();
            Some((name, (raw.shape, values)))
        })
        .collect())
}

struct Weights<'a> {
    map: NamedTensors,
    origin: &'a Path,
}

impl Weights<'_> {
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (s, v) = self.map.remove(name).ok_or_else(|| Error::MissingTensor {
            path: self.origin.to_path_buf(),
            name: name.to_string(),
            hint: " (expected a BertModel checkpoint)".into(),
        })?;
        if s != shape {
            return Err(Error::TensorShape {
                name: name.into(),
                expected: shape.to_vec(),
                found: s,
                context: format!(
                    " in {} (does config.json match the weights?)",
                    self.origin.display()
                ),
            });
        }
        Ok(v)
    }
    fn dense(&mut self, prefix: &str, out: usize, inp: usize) -> Result<Dense> {
        let w = self.take(&format!("{prefix}.weight"), &[out, inp])?;
        let b = self.take(&format!("{prefix}.bias"), &[out])?;
        Ok(Dense::new(w, b, out, inp))
    }
    fn norm(&mut self, prefix: &str, d: usize) -> Result<Norm> {
        Ok(Norm {
            w: self.take(&format!("{prefix}.weight"), &[d])?,
            b: self.take(&format!("{prefix}.bias"), &[d])?,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Kernels (row-wise, vectorisable; compiled twice, baseline and AVX2+FMA, chosen at run time)

macro_rules! dispatch {
    ($(#[$m:meta])* fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn inner($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn fast($($arg: $ty),*) { inner($($arg),*) }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has the features `fast` was compiled for.
                    return unsafe { fast($($arg),*) };
                }
            }
            inner($($arg),*)
        }
    };
}

/// e^x, branch-free (gradus-tensor's; relative error < 4e-7 on [-87, 88], 0 below -87.3).
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    gradus_tensor::ops::simd::exp(x)
}

/// erf(x), Abramowitz & Stegun 7.1.26 (absolute error ≤ 1.5e-7), branch-free.
#[inline(always)]
fn erf_f32(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp_f32(-a * a);
    y.copysign(x)
}

dispatch! {
    fn gelu_erf(xs: &mut [f32]) {
        for x in xs.iter_mut() {
            let v = *x;
            *x = 0.5 * v * (1.0 + erf_f32(v * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

dispatch! {
    fn gelu_tanh(xs: &mut [f32]) {
        const C: f32 = 0.797_884_6; // sqrt(2/pi)
        for x in xs.iter_mut() {
            let v = *x;
            let u = C * (v + 0.044_715 * v * v * v);
            // tanh(u) = 1 - 2/(e^{2u}+1)
            let th = 1.0 - 2.0 / (exp_f32(2.0 * u) + 1.0);
            *x = 0.5 * v * (1.0 + th);
        }
    }
}

dispatch! {
    /// In place: row ← LN(row + res) · w + b, over rows of width w.len().
    fn add_layer_norm(x: &mut [f32], res: &[f32], w: &[f32], b: &[f32], eps: f32) {
        let d = w.len();
        for (row, r) in x.chunks_exact_mut(d).zip(res.chunks_exact(d)) {
            let mut sum = 0.0f32;
            for (a, c) in row.iter_mut().zip(r) {
                *a += *c;
                sum += *a;
            }
            let mean = sum / d as f32;
            let mut var = 0.0f32;
            for a in row.iter() {
                let t = *a - mean;
                var += t * t;
            }
            let inv = 1.0 / (var / d as f32 + eps).sqrt();
            for ((a, g), bb) in row.iter_mut().zip(w).zip(b) {
                *a = (*a - mean) * inv * *g + *bb;
            }
        }
    }
}

dispatch! {
    /// Softmax of each row of `s` (rows of width n), in place. The max and the sum run in 16
    /// independent lanes so that both loops vectorise (a single running sum is a serial chain).
    fn softmax_rows(s: &mut [f32], n: usize) {
        const L: usize = 16;
        for row in s.chunks_exact_mut(n) {
            let mut mx = [f32::NEG_INFINITY; L];
            let mut c = row.chunks_exact(L);
            for x in &mut c {
                for l in 0..L {
                    mx[l] = if x[l] > mx[l] { x[l] } else { mx[l] };
                }
            }
            let mut m = c.remainder().iter().fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
            for v in mx {
                m = if v > m { v } else { m };
            }
            let mut acc = [0f32; L];
            let mut c = row.chunks_exact_mut(L);
            for x in &mut c {
                for l in 0..L {
                    let e = exp_f32(x[l] - m);
                    x[l] = e;
                    acc[l] += e;
                }
            }
            let mut sum = 0.0f32;
            for x in c.into_remainder() {
                let e = exp_f32(*x - m);
                *x = e;
                sum += e;
            }
            sum += acc.iter().sum::<f32>();
            let inv = 1.0 / sum;
            for x in row.iter_mut() {
                *x *= inv;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Layers

/// `y = x Wᵀ + b`; W kept transposed, (in, out) row-major, so the GEMM streams it along rows.
struct Dense {
    wt: Vec<f32>,
    b: Vec<f32>,
    out: usize,
    inp: usize,
}

impl Dense {
    fn new(w: Vec<f32>, b: Vec<f32>, out: usize, inp: usize) -> Self {
        let mut wt = vec![0.0f32; w.len()];
        for o in 0..out {
            for i in 0..inp {
                wt[i * out + o] = w[o * inp + i];
            }
        }
        Dense { wt, b, out, inp }
    }

    /// x (N, in) → (N, out), bias included.
    fn forward(&self, x: &[f32]) -> Vec<f32> {
        let n = x.len() / self.inp;
        let mut y = Vec::with_capacity(n * self.out);
        for _ in 0..n {
            y.extend_from_slice(&self.b);
        }
        // SAFETY: y is (n × out), x is (n × inp), wt is (inp × out), all contiguous row-major.
        unsafe {
            gemm_strided(
                n,
                self.out,
                self.inp,
                y.as_mut_ptr(),
                self.out,
                true,
                x.as_ptr(),
                self.inp,
                1,
                self.wt.as_ptr(),
                self.out,
                1,
                1.0,
                gemm::Parallelism::Rayon(0),
            );
        }
        y
    }
}

struct Norm {
    w: Vec<f32>,
    b: Vec<f32>,
}

struct Layer {
    /// q, k and v projections fused: (D → 3D), output columns [q | k | v].
    qkv: Dense,
    attn_out: Dense,
    ln1: Norm,
    inter: Dense,
    out: Dense,
    ln2: Norm,
}

/// The encoder: embeddings and layers of a `BertModel` (the pooler, if present, is not used).
pub struct Encoder {
    pub cfg: EncoderConfig,
    act: Activation,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    emb_ln: Norm,
    layers: Vec<Layer>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder").field("cfg", &self.cfg).finish()
    }
}

impl Encoder {
    /// Loads `dir/config.json` and `dir/model.safetensors`.
    pub fn load(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::format(
                dir,
                "no such directory (expected a BERT checkpoint: config.json + model.safetensors)",
            ));
        }
        let cfg = EncoderConfig::from_file(&dir.join("config.json"))?;
        let file = dir.join("model.safetensors");
        let map = read_float_tensors(&file)?;
        Self::from_tensors(cfg, map, &file)
    }

    /// Builds the encoder from named f32 tensors (HF names without the `bert.` prefix).
    pub fn from_tensors(cfg: EncoderConfig, map: NamedTensors, origin: &Path) -> Result<Self> {
        cfg.validate()?;
        let act = cfg.activation()?;
        let (d, f) = (cfg.hidden_size, cfg.intermediate_size);
        let mut w = Weights { map, origin };
        let word = w.take("embeddings.word_embeddings.weight", &[cfg.vocab_size, d])?;
        let position = w.take(
            "embeddings.position_embeddings.weight",
            &[cfg.max_position_embeddings, d],
        )?;
        let token_type = w.take(
            "embeddings.token_type_embeddings.weight",
            &[cfg.type_vocab_size, d],
        )?;
        let emb_ln = w.norm("embeddings.LayerNorm", d)?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let q = w.dense(&format!("{p}.attention.self.query"), d, d)?;
            let k = w.dense(&format!("{p}.attention.self.key"), d, d)?;
            let v = w.dense(&format!("{p}.attention.self.value"), d, d)?;
            // Fuse: qkv.wt is (D, 3D) with columns [q | k | v].
            let mut wt = vec![0.0f32; d * 3 * d];
            for r in 0..d {
                for (j, m) in [&q, &k, &v].into_iter().enumerate() {
                    wt[r * 3 * d + j * d..r * 3 * d + (j + 1) * d]
                        .copy_from_slice(&m.wt[r * d..(r + 1) * d]);
                }
            }
            let b = [q.b, k.b, v.b].concat();
            layers.push(Layer {
                qkv: Dense {
                    wt,
                    b,
                    out: 3 * d,
                    inp: d,
                },
                attn_out: w.dense(&format!("{p}.attention.output.dense"), d, d)?,
                ln1: w.norm(&format!("{p}.attention.output.LayerNorm"), d)?,
                inter: w.dense(&format!("{p}.intermediate.dense"), f, d)?,
                out: w.dense(&format!("{p}.output.dense"), d, f)?,
                ln2: w.norm(&format!("{p}.output.LayerNorm"), d)?,
            });
        }
        Ok(Encoder {
            cfg,
            act,
            word,
            position,
            token_type,
            emb_ln,
            layers,
        })
    }

    /// Longest sequence the position table allows.
    pub fn max_len(&self) -> usize {
        self.cfg.max_position_embeddings
    }

    fn check(&self, seqs: &[&[u32]]) -> Result<()> {
        for (s, ids) in seqs.iter().enumerate() {
            if ids.is_empty() {
                return Err(Error::msg(format!(
                    "sequence {s} is empty (an encoder needs at least one token)"
                )));
            }
            if ids.len() > self.max_len() {
                return Err(Error::msg(format!(
                    "sequence {s} has {} tokens, more than max_position_embeddings = {} (truncate when tokenizing)",
                    ids.len(),
                    self.max_len()
                )));
            }
            if let Some(&bad) = ids.iter().find(|&&i| i as usize >= self.cfg.vocab_size) {
                return Err(Error::msg(format!(
                    "sequence {s}: token id {bad} is out of range for vocab_size {}",
                    self.cfg.vocab_size
                )));
            }
        }
        Ok(())
    }

    /// Last hidden states of a batch of sequences (token type 0, positions 0..len): the rows of all
    /// sequences end to end, (Σ len, D).
    pub fn hidden_states(&self, seqs: &[&[u32]]) -> Result<Vec<f32>> {
        self.check(seqs)?;
        let d = self.cfg.hidden_size;
        let eps = self.cfg.layer_norm_eps as f32;
        let n: usize = seqs.iter().map(|s| s.len()).sum();
        // Embeddings: word + position + type 0, then LN (the LN kernel adds the residual: pass
        // word + type as x and position as res).
        let mut x = Vec::with_capacity(n * d);
        let mut pos = Vec::with_capacity(n * d);
        for ids in seqs {
            for (p, &id) in ids.iter().enumerate() {
                let wrow = &self.word[id as usize * d..(id as usize + 1) * d];
                x.extend(wrow.iter().zip(&self.token_type[..d]).map(|(a, b)| a + b));
                pos.extend_from_slice(&self.position[p * d..(p + 1) * d]);
            }
        }
        par_rows(&mut x, &pos, d, |xs, rs| {
            add_layer_norm(xs, rs, &self.emb_ln.w, &self.emb_ln.b, eps)
        });
        let lens: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
        for layer in &self.layers {
            x = self.layer_forward(layer, x, &lens, eps);
        }
        Ok(x)
    }

    fn layer_forward(&self, l: &Layer, mut x: Vec<f32>, lens: &[usize], eps: f32) -> Vec<f32> {
        let d = self.cfg.hidden_size;
        let qkv = l.qkv.forward(&x);
        let ctx = self.attention(&qkv, lens);
        let a = l.attn_out.forward(&ctx);
        par_rows(&mut x, &a, d, |xs, rs| {
            add_layer_norm(xs, rs, &l.ln1.w, &l.ln1.b, eps)
        });
        let mut h = l.inter.forward(&x);
        let f = self.cfg.intermediate_size;
        let act = self.act;
        h.par_chunks_mut(f * 16).for_each(|c| match act {
            Activation::Gelu => gelu_erf(c),
            Activation::GeluTanh => gelu_tanh(c),
            Activation::Relu => c.iter_mut().for_each(|v| *v = v.max(0.0)),
        });
        let y = l.out.forward(&h);
        par_rows(&mut x, &y, d, |xs, rs| {
            add_layer_norm(xs, rs, &l.ln2.w, &l.ln2.b, eps)
        });
        x
    }

    /// Bidirectional attention of each sequence over its own tokens.
    /// qkv (N, 3D) with columns [q | k | v] → context (N, D).
    fn attention(&self, qkv: &[f32], lens: &[usize]) -> Vec<f32> {
        let d = self.cfg.hidden_size;
        let h = self.cfg.num_attention_heads;
        let dh = d / h;
        let scale = 1.0 / (dh as f32).sqrt();
        let n: usize = lens.iter().sum();
        let mut ctx = vec![0.0f32; n * d];
        // Split the output by sequence (rows are contiguous per sequence); one task per sequence.
        let mut parts: Vec<(&mut [f32], usize)> = Vec::with_capacity(lens.len());
        let mut rest = ctx.as_mut_slice();
        let mut start = 0;
        for &t in lens {
            let (a, b) = rest.split_at_mut(t * d);
            parts.push((a, start));
            rest = b;
            start += t;
        }
        parts.into_par_iter().for_each(|(out, r0)| {
            let t = out.len() / d;
            let mut s = vec![0.0f32; t * t];
            let base = &qkv[r0 * 3 * d..(r0 + t) * 3 * d];
            for head in 0..h {
                let q = base[head * dh..].as_ptr();
                let k = base[d + head * dh..].as_ptr();
                let v = base[2 * d + head * dh..].as_ptr();
                s.iter_mut().for_each(|x| *x = 0.0);
                // SAFETY: q, k, v point into `base` with row stride 3D and Dh columns per head; t
                // rows exist. s is (t × t); out is (t × D) and this head writes Dh columns of it.
                unsafe {
                    // S = Q Kᵀ: lhs Q (t × Dh), rhs Kᵀ (Dh × t): element (c, j) = k[j·3D + c].
                    gemm_strided(
                        t,
                        t,
                        dh,
                        s.as_mut_ptr(),
                        t,
                        false,
                        q,
                        3 * d,
                        1,
                        k,
                        1,
                        3 * d,
                        1.0,
                        gemm::Parallelism::None,
                    );
                }
                for x in s.iter_mut() {
                    *x *= scale;
                }
                softmax_rows(&mut s, t);
                unsafe {
                    // O = P V: lhs P (t × t), rhs V (t × Dh) with row stride 3D.
                    gemm_strided(
                        t,
                        dh,
                        t,
                        out[head * dh..].as_mut_ptr(),
                        d,
                        false,
                        s.as_ptr(),
                        t,
                        1,
                        v,
                        3 * d,
                        1,
                        1.0,
                        gemm::Parallelism::None,
                    );
                }
            }
        });
        ctx
    }

    /// Mean-pooled, L2-normalised embeddings, (len(seqs), D) row-major, in the order given.
    ///
    /// Sequences are sorted by length and run in batches of at most `max_batch_tokens` tokens
    /// (at least one sequence per batch); results do not depend on the batching beyond float
    /// rounding in the GEMMs.
    pub fn embed(&self, seqs: &[Vec<u32>], max_batch_tokens: usize) -> Result<Vec<f32>> {
        let d = self.cfg.hidden_size;
        let mut order: Vec<usize> = (0..seqs.len()).collect();
        order.sort_by_key(|&i| (seqs[i].len(), i));
        let mut out = vec![0.0f32; seqs.len() * d];
        let mut i = 0;
        while i < order.len() {
            let mut j = i;
            let mut tokens = 0;
            while j < order.len() && (j == i || tokens + seqs[order[j]].len() <= max_batch_tokens) {
                tokens += seqs[order[j]].len();
                j += 1;
            }
            let batch: Vec<&[u32]> = order[i..j].iter().map(|&k| seqs[k].as_slice()).collect();
            let hs = self.hidden_states(&batch)?;
            let mut r = 0;
            for (b, &k) in order[i..j].iter().enumerate() {
                let t = batch[b].len();
                let e = &mut out[k * d..(k + 1) * d];
                mean_pool_normalize(&hs[r * d..(r + t) * d], d, e);
                r += t;
            }
            i = j;
        }
        Ok(out)
    }
}

/// Runs a row kernel on row-aligned chunks of `x` and `res` in parallel.
fn par_rows(x: &mut [f32], res: &[f32], d: usize, f: impl Fn(&mut [f32], &[f32]) + Sync) {
    const ROWS: usize = 64;
    x.par_chunks_mut(ROWS * d)
        .zip(res.par_chunks(ROWS * d))
        .for_each(|(a, b)| f(a, b));
}

/// Mean of the rows of `h` (t × d), then divided by its L2 norm (sentence-transformers'
/// `Normalize`: `x / max(‖x‖, 1e-12)`), written into `out`.
pub fn mean_pool_normalize(h: &[f32], d: usize, out: &mut [f32]) {
    let t = h.len() / d;
    let mut acc = vec![0.0f64; d];
    for row in h.chunks_exact(d) {
        for (a, &x) in acc.iter_mut().zip(row) {
            *a += x as f64;
        }
    }
    let inv_t = 1.0 / t.max(1) as f64;
    let norm = acc
        .iter()
        .map(|a| (a * inv_t) * (a * inv_t))
        .sum::<f64>()
        .sqrt()
        .max(1e-12);
    for (o, a) in out.iter_mut().zip(&acc) {
        *o = (a * inv_t / norm) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_erf_match_std() {
        for i in -400..=400 {
            let x = i as f32 / 40.0;
            let e = exp_f32(x);
            assert!(((e - x.exp()) / x.exp()).abs() < 1e-6, "exp({x})");
            // erf reference via f64 series would be long; check symmetry and known values instead.
            assert!((erf_f32(x) + erf_f32(-x)).abs() < 1e-7);
        }
        // erf(0.5) = 0.5204998778, erf(1) = 0.8427007929, erf(2) = 0.9953222650 (tables).
        for (x, want) in [
            (0.5f32, 0.520_499_9f32),
            (1.0, 0.842_700_8),
            (2.0, 0.995_322_3),
        ] {
            assert!(
                (erf_f32(x) - want).abs() < 3e-7,
                "erf({x}) = {}",
                erf_f32(x)
            );
        }
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn layer_norm_of_a_known_row() {
        // row [1, 2, 3, 4] + res 0: mean 2.5, var 1.25, (x - 2.5)/sqrt(1.25) = ±0.4472, ±1.3416.
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        add_layer_norm(&mut x, &[0.0; 4], &[1.0; 4], &[0.5; 4], 0.0);
        let want = [
            -1.341_640_8 + 0.5,
            -0.447_213_6 + 0.5,
            0.447_213_6 + 0.5,
            1.341_640_8 + 0.5,
        ];
        for (a, b) in x.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }
}
