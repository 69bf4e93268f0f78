//! The hand-written training graph of the Llama/Qwen2 decoder (llm.c's shape): forward to
//! per-token log-probs, backward from their gradient, over buffers allocated once and reused.
//!
//! [`FastDecoder`] keeps every parameter in one flat f32 buffer (in the order of
//! [`Decoder::named_params`], then the LoRA adapters of [`Decoder::lora_params`]) and the
//! gradients of the trained ones ([`FastDecoder::trainable`]: all, or only the adapters) in a
//! second buffer laid out the same way. A step is
//! `zero_grads` → for each micro-batch `forward` (per-token log-probs `logp` (N), N = B·T) →
//! the objective turns `logp` into its loss and `dlogp = ∂loss/∂logp` (objectives never see the
//! model) → `backward(dlogp)`, which **adds** every weight gradient into the flat gradient buffer
//! (GEMMs with beta = 1) → the optimiser updates the flat parameters in place
//! (`gradus_train::optim::AdamW::step_flat`). The candle [`Decoder`] stays the reference twin:
//! `tests/fast.rs` compares losses and every parameter's gradient against it.
//!
//! Per layer (x the residual stream, (N, D)):
//! ```text
//! n1 = rmsnorm(x)            q, k, v = n1 Wqᵀ(+bq), n1 Wkᵀ(+bk), n1 Wvᵀ(+bv)
//! q, k = rope(q), rope(k)    o = attention(q, k, v; causal ∧ same segment, GQA)
//! x' = x + o Woᵀ             n2 = rmsnorm(x')
//! a = silu(n2 Wgᵀ) ∘ n2 Wuᵀ  x'' = x' + a Wdᵀ
//! ```
//! then `h = rmsnorm(x_L)`, `logp[n] = log_softmax(h Wheadᵀ)[n, target_n]` with W_head the
//! lm_head or the tied embeddings. The backward runs the same list in reverse, each op calling the
//! kernel of `gradus_tensor::ops::kernels` that the candle op calls (one seam per op): RMSNorm's
//! backward adds into the residual gradient in place (norm + residual fused), RoPE's backward is
//! the inverse rotation, attention recomputes its probabilities from the saved log-sum-exp
//! (FlashAttention-2), and the LM head + log-softmax + gather runs over blocks of rows, so the
//! (N, V) logits exist at once only when they fit in [`FastOptions::logits_budget`] (otherwise each
//! block is recomputed in the backward, and only N log-sum-exps are kept).
//!
//! Buffers are sized for the largest N seen and reused for smaller batches; nothing is allocated
//! per step apart from a few small per-call scratch rows inside the kernels. Every reduction runs
//! in a fixed order, so results do not depend on the number of threads (tested).
//!
//! `rmsnorm` above is the config's `norm`: RMSNorm (default), LayerNorm or none (identity), see
//! `norm.rs`.
//!
//! Continuous inputs: [`FastDecoder::forward_with_embeds`] adds a (B·T, D) `inputs_embeds` to
//! the token embeddings and [`FastDecoder::input_grad`] returns its gradient, so an
//! [`InputProjection`] (or any other encoder) can be trained in front of the graph.
//!
//! LoRA (`lora.rs`): adapters on any of q, k, v, o, gate, up, down add `s · dropout(x) Aᵀ Bᵀ`
//! to their linear's output. Their A and B follow the base weights in the flat buffers (PEFT's
//! names, `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`). With adapters the
//! base is frozen by default: the gradient buffer covers only the adapters
//! ([`FastDecoder::trainable`]) and the backward skips every base weight-gradient GEMM (head,
//! embeddings, norms included); [`FastDecoder::set_train_base`] trains both. Dropout draws the
//! candle path's mask stream exactly (same RNG, same order), so either graph can resume the other.
//!
//! Covered: every Llama/Qwen2 config (GQA, q/k/v and MLP biases, tied or untied head, packed
//! segments, any `norm`, LoRA adapters on any linear with or without dropout) on the CPU;
//! [`FastDecoder::unsupported`] says why a model is not (an odd head_dim, a non-CPU device), and
//! callers fall back to the candle path with a one-line notice.

mod input_proj;
pub(crate) mod linear;
mod lora;
mod norm;
mod params;

pub use input_proj::InputProjection;
use norm::NormIx;

pub use params::{Entry, ParamLayout};

use gradus_tensor::ops::kernels::{self, AttnDims};
use gradus_tensor::rng::{Rng, RngState};
use gradus_tensor::{Error, Result};

use lora::{AdIx, Dropout, LoraActs};

use crate::decoder::{Decoder, ForwardInput};

/// Tunables of the fast graph.
#[derive(Clone, Copy, Debug)]
pub struct FastOptions {
    /// Most logits (rows × V floats) held at once. When all N×V fit, the forward's logits are
    /// kept and turned into their gradient in place; otherwise the head runs over row blocks of
    /// `logits_budget / V` rows, recomputed in the backward.
    pub logits_budget: usize,
}

impl Default for FastOptions {
    fn default() -> Self {
        // 16 Mi floats = 64 MiB.
        Self {
            logits_budget: 16 << 20,
        }
    }
}

/// Indices (into the layout) of one layer's parameters.
#[derive(Clone, Debug)]
struct LayerIx {
    in_norm: NormIx,
    q: (usize, Option<usize>),
    k: (usize, Option<usize>),
    v: (usize, Option<usize>),
    o: usize,
    post_norm: NormIx,
    gate: (usize, Option<usize>),
    up: (usize, Option<usize>),
    down: (usize, Option<usize>),
    /// The adapters of q, k, v, o, gate, up, down ([`crate::lora::LORA_MODULES`] order).
    lora: [Option<AdIx>; 7],
}

/// Indices into [`LayerIx::lora`] and [`LayerActs::lora`].
const Q: usize = 0;
const K: usize = 1;
const V: usize = 2;
const O: usize = 3;
const GATE: usize = 4;
const UP: usize = 5;
const DOWN: usize = 6;

/// Activations of one layer kept from the forward for the backward.
#[derive(Default)]
struct LayerActs {
    /// Residual stream entering the layer (N, D).
    x: Vec<f32>,
    n1: Vec<f32>,
    /// Rotated queries (N, Hq·Dh), rotated keys and values (N, Hkv·Dh).
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// Attention output (N, Hq·Dh) and its log-sum-exp (B, Hq, T).
    o: Vec<f32>,
    lse: Vec<f32>,
    /// Residual stream after attention (N, D).
    x_mid: Vec<f32>,
    n2: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    act: Vec<f32>,
    /// Per adapter (q, k, v, o, gate, up, down): its kept activations (empty without one).
    lora: [LoraActs; 7],
}

/// Every buffer of the graph, for up to `cap` rows.
#[derive(Default)]
struct Workspace {
    cap: usize,
    layers: Vec<LayerActs>,
    /// Residual stream after the last layer, and its final norm (N, D).
    x_out: Vec<f32>,
    h: Vec<f32>,
    logp: Vec<f32>,
    head_lse: Vec<f32>,
    /// Per-row entropy of the softmax (filled when entropies are on, see `set_entropy`).
    entropy: Vec<f32>,
    /// Logits of one row block, or of all rows when they fit.
    logits: Vec<f32>,
    // Scratch shared by the layers.
    qraw: Vec<f32>,
    kraw: Vec<f32>,
    dx: Vec<f32>,
    dn: Vec<f32>,
    df0: Vec<f32>,
    df1: Vec<f32>,
    df2: Vec<f32>,
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
    dqraw: Vec<f32>,
    dkraw: Vec<f32>,
    dout: Vec<f32>,
    /// LoRA scratch: a dropped input or an input gradient (N × widest input), dh (N × r_max).
    lx: Vec<f32>,
    ldh: Vec<f32>,
    /// Norm weight/bias gradients thrown away when the base is frozen (2·D).
    junk: Vec<f32>,
}

/// The inputs of the last forward, kept for the backward.
#[derive(Default)]
struct Saved {
    b: usize,
    t: usize,
    ids: Vec<u32>,
    targets: Vec<u32>,
    pos: Vec<u32>,
    segments: Option<Vec<u32>>,
    /// Whether `ws.logits` still holds the logits of every row (one block, kept).
    logits_kept: bool,
    ready: bool,
    /// Whether `ws.dx` holds ∂loss/∂x₀ of the last backward.
    grad_ready: bool,
    /// Whether the last forward ran with the LoRA adapters (see `set_adapters_enabled`).
    adapters_on: bool,
    /// Whether the last forward computed the rows' entropies (`ws.entropy`).
    entropy_ready: bool,
}

/// cos/sin of `pos · inv_freq` for positions 0..n, (n, Dh/2) row-major, with the very f32
/// operations of [`crate::decoder::rope_tables`].
#[derive(Default)]
struct Rope {
    n: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

/// The hand-written training graph (see the module docs).
pub struct FastDecoder {
    cfg: crate::config::DecoderConfig,
    opts: FastOptions,
    layout: ParamLayout,
    params: Vec<f32>,
    grads: Vec<f32>,
    embed: usize,
    head: usize,
    final_norm: NormIx,
    layers: Vec<LayerIx>,
    ws: Workspace,
    saved: Saved,
    rope: Rope,
    /// Whether the base weights train (their gradients are computed). False by default when the
    /// model has LoRA adapters: only the adapters train.
    train_base: bool,
    /// The first layout entry with a gradient (0, or the first adapter when the base is frozen)
    /// and its offset: `grads` covers `layout.entries[grad_entry..]`.
    grad_entry: usize,
    grad_off: usize,
    /// Adapter dropout (None when the model has none or its probability is 0).
    dropout: Option<Dropout>,
    /// Largest adapter rank (0 without adapters).
    r_max: usize,
    /// False: forwards run the base model alone (the adapters are skipped).
    adapters_enabled: bool,
    /// Whether forwards also compute each row's softmax entropy (see [`FastDecoder::set_entropy`]).
    entropy_on: bool,
}

impl FastDecoder {
    /// Why the fast graph cannot train `model` (None when it can).
    pub fn unsupported(model: &Decoder) -> Option<String> {
        if !model.device().is_cpu() {
            return Some("the model is not on the CPU".into());
        }
        if !model.cfg.head_dim().is_multiple_of(2) {
            return Some(format!("head_dim {} is odd", model.cfg.head_dim()));
        }
        None
    }

    /// A fast graph holding a copy of `model`'s parameters.
    pub fn new(model: &Decoder, opts: FastOptions) -> Result<Self> {
        if let Some(why) = Self::unsupported(model) {
            return Err(Error::msg(format!("fast decoder: not supported: {why}")));
        }
        let layout = ParamLayout::of(model);
        let mut params = vec![0f32; layout.total];
        params::read_params(&layout, model, &mut params)?;
        let cfg = model.cfg.clone();
        let lin = |p: &str| -> Result<(usize, Option<usize>)> {
            Ok((
                layout.index(&format!("{p}.weight"))?,
                layout.find(&format!("{p}.bias")),
            ))
        };
        let norm_ix = |name: &str| -> Result<NormIx> {
            use crate::config::NormKind;
            let (w, b) = match cfg.norm {
                NormKind::None => (None, None),
                NormKind::RmsNorm => (Some(layout.index(&format!("{name}.weight"))?), None),
                NormKind::LayerNorm => (
                    Some(layout.index(&format!("{name}.weight"))?),
                    Some(layout.index(&format!("{name}.bias"))?),
                ),
            };
            Ok(NormIx {
                kind: cfg.norm,
                weight: w,
                bias: b,
            })
        };
        let scales = crate::lora::adapter_scales(model);
        let mut r_max = 0;
        let mut ad = |p: &str| -> Result<Option<AdIx>> {
            let prefix = format!("{}{p}", crate::lora::PEFT_PREFIX);
            let (Some(a), Some(b)) = (
                layout.find(&format!("{prefix}.lora_A.weight")),
                layout.find(&format!("{prefix}.lora_B.weight")),
            ) else {
                return Ok(None);
            };
            let r = layout.entries[a].shape[0];
            r_max = r_max.max(r);
            let scale = scales
                .iter()
                .find(|(n, _)| n == p)
                .map(|(_, s)| *s)
                .ok_or_else(|| Error::msg(format!("fast decoder: no adapter scale for {p}")))?;
            Ok(Some(AdIx {
                a,
                b,
                r,
                scale: scale as f32,
            }))
        };
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let lora = [
                ad(&format!("{p}.self_attn.q_proj"))?,
                ad(&format!("{p}.self_attn.k_proj"))?,
                ad(&format!("{p}.self_attn.v_proj"))?,
                ad(&format!("{p}.self_attn.o_proj"))?,
                ad(&format!("{p}.mlp.gate_proj"))?,
                ad(&format!("{p}.mlp.up_proj"))?,
                ad(&format!("{p}.mlp.down_proj"))?,
            ];
            layers.push(LayerIx {
                in_norm: norm_ix(&format!("{p}.input_layernorm"))?,
                q: lin(&format!("{p}.self_attn.q_proj"))?,
                k: lin(&format!("{p}.self_attn.k_proj"))?,
                v: lin(&format!("{p}.self_attn.v_proj"))?,
                o: layout.index(&format!("{p}.self_attn.o_proj.weight"))?,
                post_norm: norm_ix(&format!("{p}.post_attention_layernorm"))?,
                gate: lin(&format!("{p}.mlp.gate_proj"))?,
                up: lin(&format!("{p}.mlp.up_proj"))?,
                down: lin(&format!("{p}.mlp.down_proj"))?,
                lora,
            });
        }
        let embed = layout.index("model.embed_tokens.weight")?;
        let head = if cfg.tie_word_embeddings {
            embed
        } else {
            layout.index("lm_head.weight")?
        };
        let final_norm = norm_ix("model.norm")?;
        let has_lora = layout.entries.len() > layout.base_entries;
        let (grad_entry, grad_off) = if has_lora {
            (layout.base_entries, layout.base_total)
        } else {
            (0, 0)
        };
        let grads = vec![0f32; layout.total - grad_off];
        let dropout = match (model.lora_dropout_settings(), model.lora_dropout_state()) {
            (Some((p, training)), Some(st)) if p > 0.0 => {
                Some(Dropout::new(p, training, Rng::from_state(st)))
            }
            _ => None,
        };
        Ok(Self {
            cfg,
            opts,
            layout,
            params,
            grads,
            embed,
            head,
            final_norm,
            layers,
            ws: Workspace::default(),
            saved: Saved::default(),
            rope: Rope::default(),
            train_base: !has_lora,
            grad_entry,
            grad_off,
            dropout,
            r_max,
            adapters_enabled: true,
            entropy_on: false,
        })
    }

    /// Runs the following forwards with (true, default) or without the LoRA adapters. Without,
    /// the graph computes the base model (no dropout masks drawn), e.g. the frozen reference of
    /// an RL or DPO objective at no second copy of the weights; a backward then gives the
    /// adapters zero gradient.
    pub fn set_adapters_enabled(&mut self, enabled: bool) {
        self.adapters_enabled = enabled;
    }

    /// Whether the model has LoRA adapters (then, by default, only they train).
    pub fn has_lora(&self) -> bool {
        self.layout.entries.len() > self.layout.base_entries
    }

    /// With LoRA adapters: whether the base weights train too (their gradients are computed and
    /// [`FastDecoder::grads`] covers every parameter) or stay frozen (default: only the adapters'
    /// gradients are computed, and the base's weight-gradient GEMMs are skipped). Without adapters
    /// the base always trains. Resets the gradients.
    pub fn set_train_base(&mut self, train: bool) {
        let train = train || !self.has_lora();
        self.train_base = train;
        (self.grad_entry, self.grad_off) = if train {
            (0, 0)
        } else {
            (self.layout.base_entries, self.layout.base_total)
        };
        self.grads = vec![0f32; self.layout.total - self.grad_off];
    }

    /// The entries [`FastDecoder::grads`] and [`FastDecoder::params_and_grads`] cover, in order:
    /// every parameter, or only the LoRA adapters when the base is frozen. What an optimiser over
    /// the flat buffers is built from (the same names as `lora_params()` / `named_params()`).
    pub fn trainable(&self) -> &[Entry] {
        &self.layout.entries[self.grad_entry..]
    }

    /// Switches adapter dropout on (training) or off (evaluation passes); no effect without it.
    pub fn set_lora_training(&mut self, training: bool) {
        if let Some(d) = &mut self.dropout {
            d.training = training;
        }
    }

    /// The state of the adapter dropout's mask stream (None without dropout), for an exact resume.
    pub fn lora_dropout_state(&self) -> Option<RngState> {
        self.dropout.as_ref().map(|d| d.rng.state())
    }

    /// Restores the adapter dropout's mask stream; an error if the graph has no adapter dropout.
    pub fn set_lora_dropout_state(&mut self, state: RngState) -> Result<()> {
        let d = self
            .dropout
            .as_mut()
            .ok_or_else(|| Error::msg("fast decoder: no LoRA dropout to restore"))?;
        d.rng = Rng::from_state(state);
        Ok(())
    }

    /// The flat layout (names, shapes, offsets), in `named_params` order.
    pub fn layout(&self) -> &ParamLayout {
        &self.layout
    }

    /// The flat parameters.
    pub fn params(&self) -> &[f32] {
        &self.params
    }

    /// The flat gradients accumulated since the last [`FastDecoder::zero_grads`], of the
    /// [`FastDecoder::trainable`] entries (all parameters, or only the adapters).
    pub fn grads(&self) -> &[f32] {
        &self.grads
    }

    /// The trainable parameters (mutable; the [`FastDecoder::trainable`] entries) and their
    /// gradients together, for an optimiser step.
    pub fn params_and_grads(&mut self) -> (&mut [f32], &mut [f32]) {
        (&mut self.params[self.grad_off..], &mut self.grads)
    }

    /// Sets every gradient to zero (start of an optimiser step).
    pub fn zero_grads(&mut self) {
        self.grads.fill(0.0);
    }

    /// Copies `model`'s parameters (and its adapter dropout's stream state) into the graph (e.g.
    /// after a checkpoint was loaded into it).
    pub fn read_from(&mut self, model: &Decoder) -> Result<()> {
        params::read_params(&self.layout, model, &mut self.params)?;
        if let (Some(d), Some(st)) = (&mut self.dropout, model.lora_dropout_state()) {
            d.rng = Rng::from_state(st);
        }
        Ok(())
    }

    /// Writes the flat parameters (and the adapter dropout's stream state) into `model` (before
    /// saving or evaluating it).
    pub fn write_to(&self, model: &Decoder) -> Result<()> {
        params::write_params(&self.layout, &self.params, model)?;
        if let Some(d) = &self.dropout {
            model.set_lora_dropout_state(d.rng.state())?;
        }
        Ok(())
    }

    /// Per-token log-probabilities of `targets` (B·T) under the model: `logp` (B·T). Keeps what
    /// the backward needs; call [`FastDecoder::backward`] before the next forward to train.
    pub fn forward(&mut self, inp: &ForwardInput, targets: &[u32]) -> Result<&[f32]> {
        self.forward_with_embeds(inp, None, targets)
    }

    /// [`FastDecoder::forward`] with continuous inputs: `embeds` (B·T, D) is added to the token
    /// embeddings, `x₀ = E[input_ids] + embeds` (Hugging Face's `inputs_embeds`, plus the id's row:
    /// give rows that should carry only the vector a dedicated marker id, whose embedding then acts
    /// as a learned type embedding). After [`FastDecoder::backward`],
    /// [`FastDecoder::input_grad`] holds ∂loss/∂x₀ = ∂loss/∂embeds, for an input projection.
    pub fn forward_with_embeds(
        &mut self,
        inp: &ForwardInput,
        embeds: Option<&[f32]>,
        targets: &[u32],
    ) -> Result<&[f32]> {
        self.check_and_save(inp, targets)?;
        if let Some(e) = embeds {
            let want = inp.batch * inp.seq_len * self.cfg.hidden_size;
            if e.len() != want {
                return Err(Error::msg(format!(
                    "inputs_embeds has {} values, expected batch {} × seq_len {} × hidden_size {}",
                    e.len(),
                    inp.batch,
                    inp.seq_len,
                    self.cfg.hidden_size
                )));
            }
            if let Some(i) = e.iter().position(|v| !v.is_finite()) {
                return Err(Error::msg(format!(
                    "inputs_embeds[{i}] = {} is not finite",
                    e[i]
                )));
            }
        }
        let n = inp.batch * inp.seq_len;
        self.ensure_capacity(n);
        self.ensure_rope();
        let c = self.cfg.clone();
        let (d, f, hd) = (c.hidden_size, c.intermediate_size, c.head_dim());
        let (hq, hkv) = (c.num_attention_heads, c.num_key_value_heads);
        let (qw, kw) = (hq * hd, hkv * hd);
        let eps = c.rms_norm_eps as f32;
        let scale = 1.0 / (hd as f32).sqrt();
        let dims = AttnDims {
            b: inp.batch,
            tq: inp.seq_len,
            tk: inp.seq_len,
            hq,
            hkv,
            dh: hd,
        };
        let half = hd / 2;
        let Self {
            params,
            layout,
            ws,
            saved,
            rope,
            layers,
            embed,
            head,
            final_norm,
            opts,
            dropout,
            adapters_enabled,
            entropy_on,
            ..
        } = self;
        let on = *adapters_enabled;
        saved.adapters_on = on;
        saved.entropy_ready = *entropy_on;
        let no_lora: [Option<AdIx>; 7] = [None; 7];
        let (params, layout, rope, layers): (&[f32], &ParamLayout, &Rope, &[LayerIx]) =
            (params, layout, rope, layers);
        let p = move |i: usize| &params[layout.range(i)];
        let pb = move |i: Option<usize>| i.map(|i| &params[layout.range(i)]);
        let pos: &[u32] = &saved.pos;
        let table = move |row: usize| {
            let o = pos[row] as usize * half;
            (&rope.cos[o..o + half], &rope.sin[o..o + half])
        };

        // Embedding lookup into the first layer's residual input (or the output when L = 0).
        {
            let e = p(*embed);
            let x0 = match ws.layers.first_mut() {
                Some(l) => &mut l.x,
                None => &mut ws.x_out,
            };
            for (r, &id) in saved.ids.iter().enumerate() {
                let id = id as usize;
                x0[r * d..(r + 1) * d].copy_from_slice(&e[id * d..(id + 1) * d]);
            }
            if let Some(extra) = embeds {
                for (a, &b) in x0[..n * d].iter_mut().zip(extra) {
                    *a += b;
                }
            }
        }
        let segs = saved.segments.as_deref();
        for li in 0..layers.len() {
            let ix = &layers[li];
            let lora_ix = if on { &ix.lora } else { &no_lora };
            let (done, rest) = ws.layers.split_at_mut(li + 1);
            let a = &mut done[li];
            let next_x = match rest.first_mut() {
                Some(nl) => &mut nl.x,
                None => &mut ws.x_out,
            };
            let nm = ix.in_norm;
            norm::forward(
                nm.kind,
                &a.x[..n * d],
                pb(nm.weight),
                pb(nm.bias),
                d,
                eps,
                &mut a.n1[..n * d],
            );
            linear::forward(&mut ws.qraw, &a.n1, p(ix.q.0), pb(ix.q.1), n, d, qw);
            linear::forward(&mut ws.kraw, &a.n1, p(ix.k.0), pb(ix.k.1), n, d, kw);
            linear::forward(&mut a.v, &a.n1, p(ix.v.0), pb(ix.v.1), n, d, kw);
            // LoRA updates (dropout masks drawn in the candle path's order: q, k, v, o, gate,
            // up, down).
            // One adapter's update of `$y` from `$x` where the layer has one at `$slot`.
            macro_rules! adapter {
                ($slot:expr, $x:expr, $y:expr, $dims:expr) => {
                    if let Some(ad) = &lora_ix[$slot] {
                        lora::forward(
                            ad,
                            params,
                            layout,
                            &mut a.lora[$slot],
                            dropout.as_mut(),
                            $x,
                            $y,
                            &mut ws.lx,
                            $dims,
                        );
                    }
                };
            }
            adapter!(Q, &a.n1, &mut ws.qraw, (n, d, qw));
            adapter!(K, &a.n1, &mut ws.kraw, (n, d, kw));
            adapter!(V, &a.n1, &mut a.v, (n, d, kw));
            kernels::rope_rotate(&ws.qraw[..n * qw], hq, hd, &mut a.q[..n * qw], false, table);
            kernels::rope_rotate(
                &ws.kraw[..n * kw],
                hkv,
                hd,
                &mut a.k[..n * kw],
                false,
                table,
            );
            kernels::attention_forward(
                dims,
                scale,
                segs,
                &a.q[..n * qw],
                &a.k[..n * kw],
                &a.v[..n * kw],
                &mut a.o[..n * qw],
                &mut a.lse[..n * hq],
            );
            a.x_mid[..n * d].copy_from_slice(&a.x[..n * d]);
            linear::matmul(&mut a.x_mid, true, &a.o, false, p(ix.o), true, n, d, qw);
            adapter!(O, &a.o, &mut a.x_mid, (n, qw, d));
            let nm = ix.post_norm;
            norm::forward(
                nm.kind,
                &a.x_mid[..n * d],
                pb(nm.weight),
                pb(nm.bias),
                d,
                eps,
                &mut a.n2[..n * d],
            );
            linear::forward(&mut a.gate, &a.n2, p(ix.gate.0), pb(ix.gate.1), n, d, f);
            linear::forward(&mut a.up, &a.n2, p(ix.up.0), pb(ix.up.1), n, d, f);
            adapter!(GATE, &a.n2, &mut a.gate, (n, d, f));
            adapter!(UP, &a.n2, &mut a.up, (n, d, f));
            kernels::swiglu_forward(&a.gate[..n * f], &a.up[..n * f], &mut a.act[..n * f]);
            next_x[..n * d].copy_from_slice(&a.x_mid[..n * d]);
            if let Some(bi) = ix.down.1 {
                let bd = p(bi);
                for r in next_x[..n * d].chunks_exact_mut(d) {
                    for (x, &b) in r.iter_mut().zip(bd) {
                        *x += b;
                    }
                }
            }
            linear::matmul(next_x, true, &a.act, false, p(ix.down.0), true, n, d, f);
            adapter!(DOWN, &a.act, next_x, (n, f, d));
        }
        let nm = *final_norm;
        norm::forward(
            nm.kind,
            &ws.x_out[..n * d],
            pb(nm.weight),
            pb(nm.bias),
            d,
            eps,
            &mut ws.h[..n * d],
        );

        // LM head + log-softmax + gather, over row blocks.
        let v = c.vocab_size;
        let w = p(*head);
        let block = opts
            .logits_budget
            .checked_div(v)
            .unwrap_or(n)
            .clamp(1, n.max(1));
        let mut r0 = 0;
        while r0 < n {
            let r1 = (r0 + block).min(n);
            let rows = r1 - r0;
            linear::matmul(
                &mut ws.logits,
                false,
                &ws.h[r0 * d..r1 * d],
                false,
                w,
                true,
                rows,
                v,
                d,
            );
            kernels::token_logprobs_forward(
                &ws.logits[..rows * v],
                v,
                &saved.targets[r0..r1],
                &mut ws.head_lse[r0..r1],
                &mut ws.logp[r0..r1],
            );
            if *entropy_on {
                kernels::token_entropy(
                    &ws.logits[..rows * v],
                    v,
                    &ws.head_lse[r0..r1],
                    &mut ws.entropy[r0..r1],
                );
            }
            r0 = r1;
        }
        saved.logits_kept = block >= n;
        saved.ready = true;
        Ok(&ws.logp[..n])
    }

    /// The model configuration the graph was built for.
    pub fn config(&self) -> &crate::config::DecoderConfig {
        &self.cfg
    }

    /// Makes later forwards also compute each row's softmax entropy
    /// `H = −Σ_v p_v log p_v` ([`FastDecoder::entropies`]), which [`FastDecoder::backward_ext`]
    /// can then back-propagate (an entropy bonus). Off by default (it costs one more pass over
    /// the logits).
    pub fn set_entropy(&mut self, on: bool) {
        self.entropy_on = on;
    }

    /// The per-row (B·T) softmax entropies of the last forward, in nats; an error when it ran
    /// without [`FastDecoder::set_entropy`]. Valid until the next forward.
    pub fn entropies(&self) -> Result<&[f32]> {
        if !self.saved.entropy_ready {
            return Err(Error::msg(
                "fast decoder: entropies asked of a forward that ran without set_entropy(true)",
            ));
        }
        Ok(&self.ws.entropy[..self.saved.b * self.saved.t])
    }

    /// Adds the gradient of the loss to every parameter's gradient, given `dlogp` (B·T): the
    /// derivative of the loss w.r.t. each log-prob of the last [`FastDecoder::forward`].
    pub fn backward(&mut self, dlogp: &[f32]) -> Result<()> {
        self.backward_ext(dlogp, None, None)
    }

    /// [`FastDecoder::backward`] for a loss that also depends on the rows' entropies and on the
    /// final hidden states: `dentropy` (B·T) = ∂loss/∂H of each row (the forward must have run
    /// with [`FastDecoder::set_entropy`]), `dhidden` (B·T·D) = ∂loss/∂h for h =
    /// [`FastDecoder::final_hidden`] (e.g. a value head on the policy's trunk).
    pub fn backward_ext(
        &mut self,
        dlogp: &[f32],
        dentropy: Option<&[f32]>,
        dhidden: Option<&[f32]>,
    ) -> Result<()> {
        if !self.saved.ready {
            return Err(Error::msg(
                "fast decoder: backward without a forward (or called twice)",
            ));
        }
        let n = self.saved.b * self.saved.t;
        let d = self.cfg.hidden_size;
        for (what, g, want) in [
            ("dlogp", Some(dlogp), n),
            ("dentropy", dentropy, n),
            ("dhidden", dhidden, n * d),
        ] {
            let Some(g) = g else { continue };
            if g.len() != want {
                return Err(Error::msg(format!(
                    "fast decoder: {what} has {} entries, the forward had {want}",
                    g.len()
                )));
            }
            if let Some(i) = g.iter().position(|x| !x.is_finite()) {
                return Err(Error::msg(format!(
                    "fast decoder: {what}[{i}] = {} is not finite",
                    g[i]
                )));
            }
        }
        if dentropy.is_some() && !self.saved.entropy_ready {
            return Err(Error::msg(
                "fast decoder: dentropy given but the forward ran without set_entropy(true)",
            ));
        }
        self.saved.ready = false;
        let c = self.cfg.clone();
        let (d, f, hd) = (c.hidden_size, c.intermediate_size, c.head_dim());
        let (hq, hkv) = (c.num_attention_heads, c.num_key_value_heads);
        let (qw, kw) = (hq * hd, hkv * hd);
        let eps = c.rms_norm_eps as f32;
        let scale = 1.0 / (hd as f32).sqrt();
        let dims = AttnDims {
            b: self.saved.b,
            tq: self.saved.t,
            tk: self.saved.t,
            hq,
            hkv,
            dh: hd,
        };
        let half = hd / 2;
        let v = c.vocab_size;
        let Self {
            params,
            grads,
            layout,
            ws,
            saved,
            rope,
            layers,
            embed,
            head,
            final_norm,
            opts,
            train_base,
            grad_off,
            ..
        } = self;
        let no_lora: [Option<AdIx>; 7] = [None; 7];
        let (tb, goff) = (*train_base, *grad_off);
        let (params, layout, rope, layers, saved): (
            &[f32],
            &ParamLayout,
            &Rope,
            &[LayerIx],
            &Saved,
        ) = (params, layout, rope, layers, saved);
        let p = move |i: usize| &params[layout.range(i)];
        let pos: &[u32] = &saved.pos;
        let table = move |row: usize| {
            let o = pos[row] as usize * half;
            (&rope.cos[o..o + half], &rope.sin[o..o + half])
        };

        // LM head: dlogits in place, dh = dlogits W, dW += dlogitsᵀ h.
        {
            let w = p(*head);
            let block = opts
                .logits_budget
                .checked_div(v)
                .unwrap_or(n)
                .clamp(1, n.max(1));
            let mut r0 = 0;
            while r0 < n {
                let r1 = (r0 + block).min(n);
                let rows = r1 - r0;
                if !saved.logits_kept {
                    linear::matmul(
                        &mut ws.logits,
                        false,
                        &ws.h[r0 * d..r1 * d],
                        false,
                        w,
                        true,
                        rows,
                        v,
                        d,
                    );
                }
                match dentropy {
                    Some(gh) => kernels::token_logprobs_entropy_backward_inplace(
                        &mut ws.logits[..rows * v],
                        v,
                        &ws.head_lse[r0..r1],
                        &ws.entropy[r0..r1],
                        &dlogp[r0..r1],
                        &gh[r0..r1],
                        &saved.targets[r0..r1],
                    ),
                    None => kernels::token_logprobs_backward_inplace(
                        &mut ws.logits[..rows * v],
                        v,
                        &ws.head_lse[r0..r1],
                        &dlogp[r0..r1],
                        &saved.targets[r0..r1],
                    ),
                }
                linear::backward_input(
                    &mut ws.dn[r0 * d..r1 * d],
                    false,
                    &ws.logits,
                    w,
                    rows,
                    d,
                    v,
                );
                if tb {
                    let gw = &mut grads[grange(layout, goff, *head)];
                    linear::backward_params(
                        gw,
                        None,
                        &ws.logits,
                        &ws.h[r0 * d..r1 * d],
                        rows,
                        d,
                        v,
                    );
                }
                r0 = r1;
            }
        }
        if let Some(dh) = dhidden {
            for (a, &b) in ws.dn[..n * d].iter_mut().zip(dh) {
                *a += b;
            }
        }
        let nm = *final_norm;
        let (dw, db) = if tb {
            norm_grads(grads, layout, goff, nm)
        } else {
            junk_grads(&mut ws.junk, nm, d)
        };
        norm::backward(
            nm.kind,
            &ws.x_out[..n * d],
            nm.weight.map(p),
            &ws.dn[..n * d],
            d,
            eps,
            &mut ws.dx[..n * d],
            false,
            dw,
            db,
        );

        let segs = saved.segments.as_deref();
        for li in (0..layers.len()).rev() {
            let ix = &layers[li];
            let lora_ix = if saved.adapters_on {
                &ix.lora
            } else {
                &no_lora
            };
            let a = &ws.layers[li];
            // MLP: x'' = x' + act Wdᵀ (+bd).
            linear::backward_input(&mut ws.df0, false, &ws.dx, p(ix.down.0), n, f, d);
            if tb {
                lin_params(grads, layout, goff, ix.down, &ws.dx, &a.act, (n, f, d));
            }
            // One adapter's backward: its A/B gradients, and dx += its input gradient.
            macro_rules! adapter_back {
                ($slot:expr, $x:expr, $dy:expr, $dx:expr, $dims:expr) => {
                    if let Some(ad) = &lora_ix[$slot] {
                        lora::backward(
                            ad,
                            params,
                            layout,
                            &a.lora[$slot],
                            Some(ad_grads(grads, layout, goff, ad)),
                            $x,
                            $dy,
                            $dx,
                            &mut ws.ldh,
                            &mut ws.lx,
                            $dims,
                        );
                    }
                };
            }
            adapter_back!(DOWN, &a.act, &ws.dx, &mut ws.df0, (n, f, d));
            kernels::swiglu_backward(
                &a.gate[..n * f],
                &a.up[..n * f],
                &ws.df0[..n * f],
                &mut ws.df1[..n * f],
                &mut ws.df2[..n * f],
            );
            linear::backward_input(&mut ws.dn, false, &ws.df1, p(ix.gate.0), n, d, f);
            linear::backward_input(&mut ws.dn, true, &ws.df2, p(ix.up.0), n, d, f);
            if tb {
                lin_params(grads, layout, goff, ix.gate, &ws.df1, &a.n2, (n, d, f));
                lin_params(grads, layout, goff, ix.up, &ws.df2, &a.n2, (n, d, f));
            }
            adapter_back!(GATE, &a.n2, &ws.df1, &mut ws.dn, (n, d, f));
            adapter_back!(UP, &a.n2, &ws.df2, &mut ws.dn, (n, d, f));
            let nm = ix.post_norm;
            let (dw, db) = if tb {
                norm_grads(grads, layout, goff, nm)
            } else {
                junk_grads(&mut ws.junk, nm, d)
            };
            norm::backward(
                nm.kind,
                &a.x_mid[..n * d],
                nm.weight.map(p),
                &ws.dn[..n * d],
                d,
                eps,
                &mut ws.dx[..n * d],
                true,
                dw,
                db,
            );
            // Attention: x' = x + o Woᵀ.
            linear::backward_input(&mut ws.dout, false, &ws.dx, p(ix.o), n, qw, d);
            if tb {
                lin_params(grads, layout, goff, (ix.o, None), &ws.dx, &a.o, (n, qw, d));
            }
            adapter_back!(O, &a.o, &ws.dx, &mut ws.dout, (n, qw, d));
            kernels::attention_backward(
                dims,
                scale,
                segs,
                &a.q[..n * qw],
                &a.k[..n * kw],
                &a.v[..n * kw],
                &a.o[..n * qw],
                &ws.dout[..n * qw],
                &a.lse[..n * hq],
                &mut ws.dq[..n * qw],
                &mut ws.dk[..n * kw],
                &mut ws.dv[..n * kw],
            );
            kernels::rope_rotate(
                &ws.dq[..n * qw],
                hq,
                hd,
                &mut ws.dqraw[..n * qw],
                true,
                table,
            );
            kernels::rope_rotate(
                &ws.dk[..n * kw],
                hkv,
                hd,
                &mut ws.dkraw[..n * kw],
                true,
                table,
            );
            linear::backward_input(&mut ws.dn, false, &ws.dqraw, p(ix.q.0), n, d, qw);
            linear::backward_input(&mut ws.dn, true, &ws.dkraw, p(ix.k.0), n, d, kw);
            linear::backward_input(&mut ws.dn, true, &ws.dv, p(ix.v.0), n, d, kw);
            if tb {
                lin_params(grads, layout, goff, ix.q, &ws.dqraw, &a.n1, (n, d, qw));
                lin_params(grads, layout, goff, ix.k, &ws.dkraw, &a.n1, (n, d, kw));
                lin_params(grads, layout, goff, ix.v, &ws.dv, &a.n1, (n, d, kw));
            }
            adapter_back!(Q, &a.n1, &ws.dqraw, &mut ws.dn, (n, d, qw));
            adapter_back!(K, &a.n1, &ws.dkraw, &mut ws.dn, (n, d, kw));
            adapter_back!(V, &a.n1, &ws.dv, &mut ws.dn, (n, d, kw));
            let nm = ix.in_norm;
            let (dw, db) = if tb {
                norm_grads(grads, layout, goff, nm)
            } else {
                junk_grads(&mut ws.junk, nm, d)
            };
            norm::backward(
                nm.kind,
                &a.x[..n * d],
                nm.weight.map(p),
                &ws.dn[..n * d],
                d,
                eps,
                &mut ws.dx[..n * d],
                true,
                dw,
                db,
            );
        }
        // Embedding: scatter-add the rows in order (deterministic).
        if tb {
            let ge = &mut grads[grange(layout, goff, *embed)];
            for (r, &id) in saved.ids.iter().enumerate() {
                let id = id as usize;
                for (a, &g) in ge[id * d..(id + 1) * d]
                    .iter_mut()
                    .zip(&ws.dx[r * d..(r + 1) * d])
                {
                    *a += g;
                }
            }
        }
        self.saved.grad_ready = true;
        Ok(())
    }

    /// ∂loss/∂x₀ (B·T, D), the gradient of the embedding rows (and so of `inputs_embeds`) of the
    /// last [`FastDecoder::backward`]; None before one ran.
    pub fn input_grad(&self) -> Option<&[f32]> {
        if !self.saved.grad_ready {
            return None;
        }
        let n = self.saved.b * self.saved.t;
        Some(&self.ws.dx[..n * self.cfg.hidden_size])
    }

    /// The final hidden states `h = norm(x_L)` (B·T, D) of the last forward (what the head reads),
    /// e.g. for a value head trained on top of them. Valid until the next forward.
    pub fn final_hidden(&self) -> Result<&[f32]> {
        let n = self.saved.b * self.saved.t * self.cfg.hidden_size;
        if n == 0 || self.ws.h.len() < n {
            return Err(Error::msg("fast decoder: final_hidden before any forward"));
        }
        Ok(&self.ws.h[..n])
    }

    /// The logits (V) at row `row` (= b·T + t) of the last forward, from its final hidden state
    /// (e.g. to classify a query position). Valid until the next forward.
    pub fn head_logits(&self, row: usize) -> Result<Vec<f32>> {
        let n = self.saved.b * self.saved.t;
        if row >= n || self.ws.h.len() < n * self.cfg.hidden_size {
            return Err(Error::msg(format!(
                "fast decoder: head_logits row {row} but the last forward had {n} rows"
            )));
        }
        let (d, v) = (self.cfg.hidden_size, self.cfg.vocab_size);
        let w = &self.params[self.layout.range(self.head)];
        let h = &self.ws.h[row * d..(row + 1) * d];
        Ok((0..v)
            .map(|j| {
                w[j * d..(j + 1) * d]
                    .iter()
                    .zip(h)
                    .map(|(a, b)| a * b)
                    .sum::<f32>()
            })
            .collect())
    }

    fn check_and_save(&mut self, inp: &ForwardInput, targets: &[u32]) -> Result<()> {
        let (b, t) = (inp.batch, inp.seq_len);
        let n = b * t;
        let vocab = self.cfg.vocab_size;
        if inp.input_ids.len() != n {
            return Err(Error::msg(format!(
                "input_ids has {} tokens, expected batch {b} × seq_len {t}",
                inp.input_ids.len()
            )));
        }
        if targets.len() != n {
            return Err(Error::msg(format!(
                "targets has {} entries, expected {n}",
                targets.len()
            )));
        }
        if let Some((i, &bad)) = inp
            .input_ids
            .iter()
            .enumerate()
            .find(|(_, &x)| x as usize >= vocab)
        {
            return Err(Error::msg(format!(
                "token id {bad} at position {i} is out of range for the model's vocab_size {vocab}"
            )));
        }
        if let Some((i, &bad)) = targets
            .iter()
            .enumerate()
            .find(|(_, &x)| x as usize >= vocab)
        {
            return Err(Error::msg(format!(
                "target {bad} at position {i} is out of range for the model's vocab_size {vocab}"
            )));
        }
        let s = &mut self.saved;
        s.b = b;
        s.t = t;
        s.ids.clear();
        s.ids.extend_from_slice(inp.input_ids);
        s.targets.clear();
        s.targets.extend_from_slice(targets);
        s.pos.clear();
        match inp.position_ids {
            Some(p) => {
                if p.len() != n {
                    return Err(Error::msg(format!(
                        "position_ids has {} entries, expected {n}",
                        p.len()
                    )));
                }
                s.pos.extend_from_slice(p);
            }
            None => s.pos.extend((0..b).flat_map(|_| 0..t as u32)),
        }
        s.segments = match inp.segment_ids {
            Some(sg) => {
                if sg.len() != n {
                    return Err(Error::msg(format!(
                        "segment_ids has {} entries, expected batch {b} × {t} positions",
                        sg.len()
                    )));
                }
                Some(sg.to_vec())
            }
            None => None,
        };
        s.ready = false;
        s.grad_ready = false;
        Ok(())
    }

    /// Grows the buffers to hold `n` rows (never shrinks).
    fn ensure_capacity(&mut self, n: usize) {
        if n <= self.ws.cap && self.ws.layers.len() == self.layers.len() {
            return;
        }
        let c = &self.cfg;
        let (d, f, hd) = (c.hidden_size, c.intermediate_size, c.head_dim());
        let (qw, kw) = (c.num_attention_heads * hd, c.num_key_value_heads * hd);
        let n = n.max(self.ws.cap);
        let z = |len: usize| vec![0f32; len];
        let v = c.vocab_size;
        let block = self
            .opts
            .logits_budget
            .checked_div(v)
            .unwrap_or(n)
            .clamp(1, n.max(1));
        let ix_lora: Vec<[Option<AdIx>; 7]> = self.layers.iter().map(|l| l.lora).collect();
        // Each adapter's input width (q, k, v, o, gate, up, down).
        let lora_in = [d, d, d, qw, d, d, f];
        let dropout = self.dropout.is_some();
        self.ws = Workspace {
            cap: n,
            layers: (0..self.layers.len())
                .map(|li| LayerActs {
                    x: z(n * d),
                    n1: z(n * d),
                    q: z(n * qw),
                    k: z(n * kw),
                    v: z(n * kw),
                    o: z(n * qw),
                    lse: z(n * c.num_attention_heads),
                    x_mid: z(n * d),
                    n2: z(n * d),
                    gate: z(n * f),
                    up: z(n * f),
                    act: z(n * f),
                    lora: std::array::from_fn(|j| match &ix_lora[li][j] {
                        Some(ad) => LoraActs {
                            hs: z(n * ad.r),
                            mask: if dropout {
                                z(n * lora_in[j])
                            } else {
                                Vec::new()
                            },
                            masked: false,
                        },
                        None => LoraActs::default(),
                    }),
                })
                .collect(),
            x_out: z(n * d),
            h: z(n * d),
            logp: z(n),
            head_lse: z(n),
            entropy: z(n),
            logits: z(block * v),
            qraw: z(n * qw),
            kraw: z(n * kw),
            dx: z(n * d),
            dn: z(n * d),
            df0: z(n * f),
            df1: z(n * f),
            df2: z(n * f),
            dq: z(n * qw),
            dk: z(n * kw),
            dv: z(n * kw),
            dqraw: z(n * qw),
            dkraw: z(n * kw),
            dout: z(n * qw),
            lx: if self.r_max > 0 {
                z(n * d.max(qw).max(f))
            } else {
                Vec::new()
            },
            ldh: z(n * self.r_max),
            junk: z(2 * d),
        };
    }

    /// Grows the rotary table to cover every saved position.
    fn ensure_rope(&mut self) {
        let need = self
            .saved
            .pos
            .iter()
            .map(|&p| p as usize + 1)
            .max()
            .unwrap_or(0);
        if need <= self.rope.n {
            return;
        }
        let n = need.max(2 * self.rope.n).max(64);
        let hd = self.cfg.head_dim();
        let half = hd / 2;
        let theta = self.cfg.rope_theta as f32;
        let inv: Vec<f32> = (0..half)
            .map(|i| 1.0f32 / theta.powf((2 * i) as f32 / hd as f32))
            .collect();
        let (mut cos, mut sin) = (Vec::with_capacity(n * half), Vec::with_capacity(n * half));
        for p in 0..n {
            for &fr in &inv {
                let a = p as f32 * fr;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        self.rope = Rope { n, cos, sin };
    }
}

/// The range of entry `i`'s gradient in a gradient buffer that starts at element `off` of the
/// layout.
fn grange(layout: &ParamLayout, off: usize, i: usize) -> std::ops::Range<usize> {
    let r = layout.range(i);
    r.start - off..r.end - off
}

/// The gradient slices (dA, dB) of an adapter (A's entry precedes B's in the layout).
fn ad_grads<'g>(
    grads: &'g mut [f32],
    layout: &ParamLayout,
    off: usize,
    ad: &AdIx,
) -> (&'g mut [f32], &'g mut [f32]) {
    let (ra, rb) = (grange(layout, off, ad.a), grange(layout, off, ad.b));
    let (lo, hi) = grads.split_at_mut(rb.start);
    (&mut lo[ra], &mut hi[..rb.end - rb.start])
}

/// Throw-away gradient slices for a norm's weight and bias when the base is frozen (the norm
/// kernels always form them; they cost O(N·D), nothing next to a GEMM).
fn junk_grads(junk: &mut [f32], nm: NormIx, d: usize) -> (Option<&mut [f32]>, Option<&mut [f32]>) {
    let (w, b) = junk[..2 * d].split_at_mut(d);
    (nm.weight.map(|_| w), nm.bias.map(|_| b))
}

/// The gradient slices of a normalisation layer's weight and bias (disjoint ranges of `grads`,
/// which starts at element `off` of the layout).
fn norm_grads<'g>(
    grads: &'g mut [f32],
    layout: &ParamLayout,
    off: usize,
    nm: NormIx,
) -> (Option<&'g mut [f32]>, Option<&'g mut [f32]>) {
    match (nm.weight, nm.bias) {
        (None, _) => (None, None),
        (Some(w), None) => (Some(&mut grads[grange(layout, off, w)]), None),
        (Some(w), Some(b)) => {
            let (rw, rb) = (grange(layout, off, w), grange(layout, off, b));
            if rw.start < rb.start {
                let (lo, hi) = grads.split_at_mut(rb.start);
                (Some(&mut lo[rw]), Some(&mut hi[..rb.end - rb.start]))
            } else {
                let (lo, hi) = grads.split_at_mut(rw.start);
                (Some(&mut hi[..rw.end - rw.start]), Some(&mut lo[rb]))
            }
        }
    }
}

/// dW += dyᵀ x (and db += Σ dy) for the linear layer `ix` (weight, bias) of shape (out, inp).
#[allow(clippy::too_many_arguments)]
fn lin_params(
    grads: &mut [f32],
    layout: &ParamLayout,
    off: usize,
    ix: (usize, Option<usize>),
    dy: &[f32],
    x: &[f32],
    (n, inp, out): (usize, usize, usize),
) {
    let (wr, br) = (
        grange(layout, off, ix.0),
        ix.1.map(|b| grange(layout, off, b)),
    );
    match br {
        Some(br) => {
            // Weight and bias are distinct, non-overlapping ranges of `grads`.
            let (gw, gb) = if wr.start < br.start {
                let (lo, hi) = grads.split_at_mut(br.start);
                (&mut lo[wr], &mut hi[..br.end - br.start])
            } else {
                let (lo, hi) = grads.split_at_mut(wr.start);
                (&mut hi[..wr.end - wr.start], &mut lo[br])
            };
            linear::backward_params(gw, Some(gb), dy, x, n, inp, out);
        }
        None => linear::backward_params(&mut grads[wr], None, dy, x, n, inp, out),
    }
}
