//! The hand-written training graph of the Llama/Qwen2 decoder (llm.c's shape): forward to
//! per-token log-probs, backward from their gradient, over buffers allocated once and reused.
//!
//! [`FastDecoder`] keeps every parameter in one flat f32 buffer (in the order of
//! [`Decoder::named_params`]) and the gradients in a second one of the same layout. A step is
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
//! Covered: every Llama/Qwen2 config (GQA, q/k/v and MLP biases, tied or untied head, packed
//! segments, any `norm`) without LoRA adapters on the CPU; [`FastDecoder::unsupported`] says why a model is
//! not, and callers fall back to the candle path.

mod input_proj;
pub(crate) mod linear;
mod norm;
mod params;

pub use input_proj::InputProjection;
use norm::NormIx;

pub use params::{Entry, ParamLayout};

use gradus_tensor::ops::kernels::{self, AttnDims};
use gradus_tensor::{Error, Result};

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
}

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
}

impl FastDecoder {
    /// Why the fast graph cannot train `model` (None when it can).
    pub fn unsupported(model: &Decoder) -> Option<String> {
        if model.has_lora() {
            return Some(
                "LoRA adapters are attached (the fast graph trains full weights only)".into(),
            );
        }
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
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}");
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
            });
        }
        let embed = layout.index("model.embed_tokens.weight")?;
        let head = if cfg.tie_word_embeddings {
            embed
        } else {
            layout.index("lm_head.weight")?
        };
        let final_norm = norm_ix("model.norm")?;
        let grads = vec![0f32; layout.total];
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
        })
    }

    /// The flat layout (names, shapes, offsets), in `named_params` order.
    pub fn layout(&self) -> &ParamLayout {
        &self.layout
    }

    /// The flat parameters.
    pub fn params(&self) -> &[f32] {
        &self.params
    }

    /// The flat gradients accumulated since the last [`FastDecoder::zero_grads`].
    pub fn grads(&self) -> &[f32] {
        &self.grads
    }

    /// Parameters (mutable) and gradients together, for an optimiser step.
    pub fn params_and_grads(&mut self) -> (&mut [f32], &mut [f32]) {
        (&mut self.params, &mut self.grads)
    }

    /// Sets every gradient to zero (start of an optimiser step).
    pub fn zero_grads(&mut self) {
        self.grads.fill(0.0);
    }

    /// Copies `model`'s parameters into the flat buffer (e.g. after a checkpoint was loaded into it).
    pub fn read_from(&mut self, model: &Decoder) -> Result<()> {
        params::read_params(&self.layout, model, &mut self.params)
    }

    /// Writes the flat parameters into `model`'s Vars (before saving or evaluating it).
    pub fn write_to(&self, model: &Decoder) -> Result<()> {
        params::write_params(&self.layout, &self.params, model)
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
            ..
        } = self;
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
            r0 = r1;
        }
        saved.logits_kept = block >= n;
        saved.ready = true;
        Ok(&ws.logp[..n])
    }

    /// Adds the gradient of the loss to every parameter's gradient, given `dlogp` (B·T): the
    /// derivative of the loss w.r.t. each log-prob of the last [`FastDecoder::forward`].
    pub fn backward(&mut self, dlogp: &[f32]) -> Result<()> {
        if !self.saved.ready {
            return Err(Error::msg(
                "fast decoder: backward without a forward (or called twice)",
            ));
        }
        let n = self.saved.b * self.saved.t;
        if dlogp.len() != n {
            return Err(Error::msg(format!(
                "fast decoder: dlogp has {} entries, the forward had {n} tokens",
                dlogp.len()
            )));
        }
        if let Some(i) = dlogp.iter().position(|g| !g.is_finite()) {
            return Err(Error::msg(format!(
                "fast decoder: dlogp[{i}] = {} is not finite",
                dlogp[i]
            )));
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
            ..
        } = self;
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
                kernels::token_logprobs_backward_inplace(
                    &mut ws.logits[..rows * v],
                    v,
                    &ws.head_lse[r0..r1],
                    &dlogp[r0..r1],
                    &saved.targets[r0..r1],
                );
                linear::backward_input(
                    &mut ws.dn[r0 * d..r1 * d],
                    false,
                    &ws.logits,
                    w,
                    rows,
                    d,
                    v,
                );
                let gw = &mut grads[layout.range(*head)];
                linear::backward_params(gw, None, &ws.logits, &ws.h[r0 * d..r1 * d], rows, d, v);
                r0 = r1;
            }
        }
        let nm = *final_norm;
        let (dw, db) = norm_grads(grads, layout, nm);
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
            let a = &ws.layers[li];
            // MLP: x'' = x' + act Wdᵀ (+bd).
            linear::backward_input(&mut ws.df0, false, &ws.dx, p(ix.down.0), n, f, d);
            lin_params(grads, layout, ix.down, &ws.dx, &a.act, (n, f, d));
            kernels::swiglu_backward(
                &a.gate[..n * f],
                &a.up[..n * f],
                &ws.df0[..n * f],
                &mut ws.df1[..n * f],
                &mut ws.df2[..n * f],
            );
            linear::backward_input(&mut ws.dn, false, &ws.df1, p(ix.gate.0), n, d, f);
            linear::backward_input(&mut ws.dn, true, &ws.df2, p(ix.up.0), n, d, f);
            lin_params(grads, layout, ix.gate, &ws.df1, &a.n2, (n, d, f));
            lin_params(grads, layout, ix.up, &ws.df2, &a.n2, (n, d, f));
            let nm = ix.post_norm;
            let (dw, db) = norm_grads(grads, layout, nm);
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
            lin_params(grads, layout, (ix.o, None), &ws.dx, &a.o, (n, qw, d));
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
            lin_params(grads, layout, ix.q, &ws.dqraw, &a.n1, (n, d, qw));
            lin_params(grads, layout, ix.k, &ws.dkraw, &a.n1, (n, d, kw));
            lin_params(grads, layout, ix.v, &ws.dv, &a.n1, (n, d, kw));
            let nm = ix.in_norm;
            let (dw, db) = norm_grads(grads, layout, nm);
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
        let ge = &mut grads[layout.range(*embed)];
        for (r, &id) in saved.ids.iter().enumerate() {
            let id = id as usize;
            for (a, &g) in ge[id * d..(id + 1) * d]
                .iter_mut()
                .zip(&ws.dx[r * d..(r + 1) * d])
            {
                *a += g;
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
        self.ws = Workspace {
            cap: n,
            layers: (0..self.layers.len())
                .map(|_| LayerActs {
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
                })
                .collect(),
            x_out: z(n * d),
            h: z(n * d),
            logp: z(n),
            head_lse: z(n),
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

/// dW += dyᵀ x (and db += Σ dy) for the linear layer `ix` (weight, bias) of shape (out, inp).
#[allow(clippy::too_many_arguments)]
/// The gradient slices of a normalisation layer's weight and bias (disjoint ranges of `grads`).
fn norm_grads<'g>(
    grads: &'g mut [f32],
    layout: &ParamLayout,
    nm: NormIx,
) -> (Option<&'g mut [f32]>, Option<&'g mut [f32]>) {
    match (nm.weight, nm.bias) {
        (None, _) => (None, None),
        (Some(w), None) => (Some(&mut grads[layout.range(w)]), None),
        (Some(w), Some(b)) => {
            let (rw, rb) = (layout.range(w), layout.range(b));
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

fn lin_params(
    grads: &mut [f32],
    layout: &ParamLayout,
    ix: (usize, Option<usize>),
    dy: &[f32],
    x: &[f32],
    (n, inp, out): (usize, usize, usize),
) {
    let (wr, br) = (layout.range(ix.0), ix.1.map(|b| layout.range(b)));
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
