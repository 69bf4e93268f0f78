//! The Llama/Qwen2-family decoder, in dependency order: linear → rotary tables → attention →
//! MLP → block → model. Shapes: B batch, T time, D hidden, H heads, Dh head width, V vocab.
//!
//! Every weight is a candle [`Var`] named exactly as in a Hugging Face checkpoint
//! (`model.layers.0.self_attn.q_proj.weight`, ...), so the optimiser, the checkpoint writer and the
//! loader all speak the same names.

use gradus_tensor::ops;
use gradus_tensor::rng::Rng;
use gradus_tensor::{DType, Device, Error, Result, Tensor, Var};

use crate::config::{DecoderConfig, NormKind};

/// One normalisation layer (`cfg.norm`): RMSNorm (weight), LayerNorm (weight and bias) or none
/// (identity, no parameters). Its parameters are `<name>.weight` and `<name>.bias`.
#[derive(Clone, Debug)]
pub struct Norm {
    pub kind: NormKind,
    /// RMSNorm and LayerNorm.
    pub weight: Option<Var>,
    /// LayerNorm only.
    pub bias: Option<Var>,
    pub eps: f64,
}

impl Norm {
    /// Over the last dimension of `x`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, false)
    }

    /// The same with detached weights (inference, no autograd graph).
    pub fn forward_inference(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, true)
    }

    fn apply(&self, x: &Tensor, detach: bool) -> Result<Tensor> {
        let get = |v: &Option<Var>, what: &str| -> Result<Tensor> {
            let t = v
                .as_ref()
                .ok_or_else(|| Error::msg(format!("{} norm without its {what}", self.kind.name())))?
                .as_tensor();
            Ok(if detach { t.detach() } else { t.clone() })
        };
        match self.kind {
            NormKind::None => Ok(x.clone()),
            NormKind::RmsNorm => ops::rms_norm(x, &get(&self.weight, "weight")?, self.eps),
            NormKind::LayerNorm => {
                let last = x.rank() - 1;
                let mean = x.mean_keepdim(last)?;
                let xc = x.broadcast_sub(&mean)?;
                let var = xc.sqr()?.mean_keepdim(last)?;
                let y = xc.broadcast_div(&(var + self.eps)?.sqrt()?)?;
                Ok(y.broadcast_mul(&get(&self.weight, "weight")?)?
                    .broadcast_add(&get(&self.bias, "bias")?)?)
            }
        }
    }

    fn push_params(&self, v: &mut Vec<(String, Var)>, name: &str) {
        if let Some(w) = &self.weight {
            v.push((format!("{name}.weight"), w.clone()));
        }
        if let Some(b) = &self.bias {
            v.push((format!("{name}.bias"), b.clone()));
        }
    }
}

/// Names and shapes of one normalisation layer's parameters.
fn norm_shapes(cfg: &DecoderConfig, name: &str) -> Vec<(String, Vec<usize>)> {
    let d = cfg.hidden_size;
    match cfg.norm {
        NormKind::None => vec![],
        NormKind::RmsNorm => vec![(format!("{name}.weight"), vec![d])],
        NormKind::LayerNorm => vec![
            (format!("{name}.weight"), vec![d]),
            (format!("{name}.bias"), vec![d]),
        ],
    }
}

/// `y = x Wᵀ + b` with W stored (out, in) as in PyTorch, plus `s · dropout(x) Aᵀ Bᵀ` when a LoRA
/// adapter is attached (see [`crate::lora`]).
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: Var,
    pub bias: Option<Var>,
    pub lora: Option<crate::lora::LoraAdapter>,
}

impl Linear {
    /// x (..., in) → (..., out).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let inner = *dims.last().unwrap_or(&0);
        let rows: usize = dims[..dims.len().saturating_sub(1)].iter().product();
        let w = self.weight.as_tensor();
        let out = w.dim(0)?;
        let x = x.reshape((rows, inner))?;
        let y = x.matmul(&w.t()?)?;
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b.as_tensor())?,
            None => y,
        };
        let y = match &self.lora {
            Some(l) => (y + l.delta(&x)?)?,
            None => y,
        };
        let mut od = dims;
        *od.last_mut().unwrap() = out;
        Ok(y.reshape(od)?)
    }

    /// Forward only, no autograd graph (decoding): the same maths as [`Linear::forward`] on
    /// detached weights, with the GEMV kernel [`ops::linear_rows`] for ≤ [`GEMV_MAX_ROWS`] rows.
    pub fn forward_inference(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = linear_inference(x, &[self])?;
        Ok(y.remove(0))
    }
}

/// Up to this many rows of x, inference projections use the GEMV kernel rather than a GEMM.
pub const GEMV_MAX_ROWS: usize = 16;

/// `[l.forward_inference(x) for l in ls]` in one pass: with few rows the projections that share
/// an input (q/k/v, gate/up) run as one GEMV call, i.e. one parallel region, as if fused.
pub fn linear_inference(x: &Tensor, ls: &[&Linear]) -> Result<Vec<Tensor>> {
    let ys = linear_inference_base(x, ls)?;
    if ls.iter().all(|l| l.lora.is_none()) {
        return Ok(ys);
    }
    // LoRA adapters: add s · x Aᵀ Bᵀ (no dropout) to the base projection.
    let x = x.detach();
    let inner = *x.dims().last().unwrap_or(&0);
    let x2 = x.reshape((x.elem_count() / inner.max(1), inner))?;
    ls.iter()
        .zip(ys)
        .map(|(l, y)| match &l.lora {
            Some(a) => Ok((&y + a.delta_inference(&x2)?.reshape(y.dims())?)?),
            None => Ok(y),
        })
        .collect()
}

fn linear_inference_base(x: &Tensor, ls: &[&Linear]) -> Result<Vec<Tensor>> {
    let x = x.detach();
    let rows = x.elem_count() / x.dims().last().copied().unwrap_or(1).max(1);
    let ws: Vec<(Tensor, Option<Tensor>)> = ls
        .iter()
        .map(|l| {
            (
                l.weight.as_tensor().detach(),
                l.bias.as_ref().map(|b| b.as_tensor().detach()),
            )
        })
        .collect();
    if rows <= GEMV_MAX_ROWS {
        let args: Vec<(&Tensor, Option<&Tensor>)> =
            ws.iter().map(|(w, b)| (w, b.as_ref())).collect();
        return ops::linear_rows(&x, &args);
    }
    let dims = x.dims().to_vec();
    let inner = *dims.last().unwrap_or(&0);
    let x2 = x.reshape((rows, inner))?;
    ws.iter()
        .map(|(w, b)| {
            let y = x2.matmul(&w.t()?)?;
            let y = match b {
                Some(b) => y.broadcast_add(b)?,
                None => y,
            };
            let mut od = dims.clone();
            *od.last_mut().unwrap() = w.dim(0)?;
            Ok(y.reshape(od)?)
        })
        .collect()
}

/// cos/sin tables gathered at each token's position: (B, T, Dh/2) each. Computed in f32 exactly as
/// transformers does (`inv_freq = 1 / theta^(2i/Dh)`, `freqs = pos · inv_freq`).
pub fn rope_tables(
    position_ids: &[u32],
    b: usize,
    t: usize,
    head_dim: usize,
    theta: f64,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let half = head_dim / 2;
    let inv: Vec<f32> = (0..half)
        .map(|i| 1.0f32 / (theta as f32).powf((2 * i) as f32 / head_dim as f32))
        .collect();
    let mut cos = Vec::with_capacity(b * t * half);
    let mut sin = Vec::with_capacity(b * t * half);
    for &p in position_ids {
        for &f in &inv {
            let a = p as f32 * f;
            cos.push(a.cos());
            sin.push(a.sin());
        }
    }
    Ok((
        Tensor::from_vec(cos, (b, t, half), device)?,
        Tensor::from_vec(sin, (b, t, half), device)?,
    ))
}

/// Keys and values of earlier positions, per layer, stored in place ([`ops::KvBuffer`]: (B,
/// capacity, Hkv, Dh), each step written behind the filled prefix, nothing concatenated), plus the
/// rotary cos/sin table for every position seen so far. A pass with a cache is inference only: it
/// records no autograd graph.
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    layers: Vec<Option<ops::KvBuffer>>,
    capacity: usize,
    rope: RopeTable,
}

impl KvCache {
    /// A cache whose buffers grow (by doubling) as positions arrive.
    pub fn new(n_layers: usize) -> Self {
        Self::with_capacity(n_layers, 0)
    }
    /// A cache with room for `capacity` positions per row (prompt + new tokens): no reallocation.
    pub fn with_capacity(n_layers: usize, capacity: usize) -> Self {
        Self {
            layers: vec![None; n_layers],
            capacity,
            rope: RopeTable::default(),
        }
    }
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map_or(0, |b| b.len())
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// cos/sin of `pos · inv_freq` for positions 0..n (row-major (n, Dh/2)), computed once, with the
/// very same f32 operations as [`rope_tables`].
#[derive(Clone, Debug, Default)]
struct RopeTable {
    half: usize,
    theta: f64,
    n: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeTable {
    fn gather(
        &mut self,
        position_ids: &[u32],
        b: usize,
        t: usize,
        head_dim: usize,
        theta: f64,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let half = head_dim / 2;
        if self.half != half || self.theta != theta {
            *self = RopeTable {
                half,
                theta,
                ..Default::default()
            };
        }
        let need = position_ids
            .iter()
            .map(|&p| p as usize + 1)
            .max()
            .unwrap_or(0);
        if need > self.n {
            let n = need.max(2 * self.n).max(64);
            let pos: Vec<u32> = (0..n as u32).collect();
            let (c, s) = rope_tables(&pos, 1, n, head_dim, theta, &Device::Cpu)?;
            self.cos = c.flatten_all()?.to_vec1()?;
            self.sin = s.flatten_all()?.to_vec1()?;
            self.n = n;
        }
        let mut cos = Vec::with_capacity(b * t * half);
        let mut sin = Vec::with_capacity(b * t * half);
        for &p in position_ids {
            let o = p as usize * half;
            cos.extend_from_slice(&self.cos[o..o + half]);
            sin.extend_from_slice(&self.sin[o..o + half]);
        }
        Ok((
            Tensor::from_vec(cos, (b, t, half), device)?,
            Tensor::from_vec(sin, (b, t, half), device)?,
        ))
    }
}

#[derive(Clone, Debug)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    n_heads: usize,
    n_kv: usize,
    head_dim: usize,
}

impl Attention {
    /// x (B, T, D) → (B, T, D). `segments` (B, T) when given.
    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        segments: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let q = self
            .q_proj
            .forward(x)?
            .reshape((b, t, self.n_heads, self.head_dim))?;
        let k = self
            .k_proj
            .forward(x)?
            .reshape((b, t, self.n_kv, self.head_dim))?;
        let v = self
            .v_proj
            .forward(x)?
            .reshape((b, t, self.n_kv, self.head_dim))?;
        let q = ops::rope(&q, cos, sin)?;
        let k = ops::rope(&k, cos, sin)?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let o = ops::attention(&q, &k, &v, segments, scale)?;
        self.o_proj
            .forward(&o.reshape((b, t, self.n_heads * self.head_dim))?)
    }

    /// Inference with a cache: x (B, T, D) → (B, T, D); this step's keys/values are written into
    /// `slot` (created with room for `capacity` positions). `segments` (B, Tpast+T) row-major.
    fn forward_cached(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        segments: Option<&[u32]>,
        slot: &mut Option<ops::KvBuffer>,
        capacity: usize,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let qkv = linear_inference(x, &[&self.q_proj, &self.k_proj, &self.v_proj])?;
        let q = qkv[0].reshape((b, t, self.n_heads, self.head_dim))?;
        let k = qkv[1].reshape((b, t, self.n_kv, self.head_dim))?;
        let v = qkv[2].reshape((b, t, self.n_kv, self.head_dim))?;
        let q = ops::rope(&q, cos, sin)?;
        let k = ops::rope(&k, cos, sin)?;
        let buf = slot.get_or_insert_with(|| {
            ops::KvBuffer::new(b, self.n_kv, self.head_dim, capacity.max(t))
        });
        let past = buf.len();
        buf.append(&k, &v)?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let o = if past == 0 {
            // Prefill: the blocked attention over this step's contiguous keys.
            let segs = match segments {
                Some(s) => Some(Tensor::from_slice(s, (b, t), x.device())?),
                None => None,
            };
            ops::attention(&q, &k, &v, segs.as_ref(), scale)?
        } else {
            buf.attend(&q, segments, scale)?
        };
        self.o_proj
            .forward_inference(&o.reshape((b, t, self.n_heads * self.head_dim))?)
    }
}

#[derive(Clone, Debug)]
pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

impl Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let g = self.gate_proj.forward(x)?;
        let u = self.up_proj.forward(x)?;
        self.down_proj.forward(&ops::swiglu(&g, &u)?)
    }

    fn forward_inference(&self, x: &Tensor) -> Result<Tensor> {
        let gu = linear_inference(x, &[&self.gate_proj, &self.up_proj])?;
        self.down_proj
            .forward_inference(&ops::swiglu(&gu[0], &gu[1])?)
    }
}

#[derive(Clone, Debug)]
pub struct Block {
    pub input_layernorm: Norm,
    pub self_attn: Attention,
    pub post_attention_layernorm: Norm,
    pub mlp: Mlp,
}

/// The decoder with its LM head.
#[derive(Clone, Debug)]
pub struct Decoder {
    pub cfg: DecoderConfig,
    pub embed_tokens: Var,
    pub layers: Vec<Block>,
    pub norm: Norm,
    /// None when tied to `embed_tokens`.
    pub lm_head: Option<Var>,
    device: Device,
}

/// Inputs of one forward pass. All (B, T) row-major.
#[derive(Clone, Copy, Debug)]
pub struct ForwardInput<'a> {
    pub input_ids: &'a [u32],
    pub batch: usize,
    pub seq_len: usize,
    /// Defaults to 0..T per row (offset by the cache length when decoding).
    pub position_ids: Option<&'a [u32]>,
    /// Document ids for packed rows (B, T); with a cache, (B, Tpast + T).
    pub segment_ids: Option<&'a [u32]>,
}

impl<'a> ForwardInput<'a> {
    /// Packed rows: explicit positions and document (segment) ids, all (B, T).
    pub fn packed(
        input_ids: &'a [u32],
        batch: usize,
        seq_len: usize,
        position_ids: &'a [u32],
        segment_ids: &'a [u32],
    ) -> Self {
        Self {
            input_ids,
            batch,
            seq_len,
            position_ids: Some(position_ids),
            segment_ids: Some(segment_ids),
        }
    }

    pub fn new(input_ids: &'a [u32], batch: usize, seq_len: usize) -> Self {
        Self {
            input_ids,
            batch,
            seq_len,
            position_ids: None,
            segment_ids: None,
        }
    }
}

impl Decoder {
    /// A freshly initialised model (weights ~ N(0, initializer_range²), norm weights 1, biases
    /// 0), as
    /// transformers' `_init_weights` does.
    pub fn new_random(cfg: &DecoderConfig, seed: u64, device: &Device) -> Result<Self> {
        cfg.validate()?;
        let mut rng = Rng::derive(seed, "init");
        let std = cfg.initializer_range;
        let mut tensors: Vec<(String, Tensor)> = Vec::new();
        for (name, shape) in param_shapes(cfg) {
            let t = if name.ends_with("norm.weight") {
                Tensor::ones(shape.as_slice(), DType::F32, device)?
            } else if name.ends_with(".bias") {
                Tensor::zeros(shape.as_slice(), DType::F32, device)?
            } else {
                rng.randn(&shape, std, device)?
            };
            tensors.push((name, t));
        }
        Self::from_named(cfg, tensors, device, "<random init>")
    }

    /// Builds the model from named f32 tensors (HF names). `origin` names the source in errors.
    pub fn from_named(
        cfg: &DecoderConfig,
        tensors: Vec<(String, Tensor)>,
        device: &Device,
        origin: &str,
    ) -> Result<Self> {
        cfg.validate()?;
        let mut map: std::collections::HashMap<String, Tensor> = tensors.into_iter().collect();
        let mut take = |name: &str, shape: &[usize]| -> Result<Var> {
            let t = map.remove(name).ok_or_else(|| Error::MissingTensor {
                path: origin.into(),
                name: name.to_string(),
                hint: String::new(),
            })?;
            if t.dims() != shape {
                return Err(Error::TensorShape {
                    name: name.to_string(),
                    expected: shape.to_vec(),
                    found: t.dims().to_vec(),
                    context: format!(" (in {origin}; does config.json match the weights?)"),
                });
            }
            Ok(Var::from_tensor(
                &t.to_dtype(DType::F32)?.to_device(device)?,
            )?)
        };
        let shapes = param_shapes(cfg);
        let shape_of = |n: &str| {
            shapes
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, s)| s.clone())
                .unwrap_or_default()
        };
        let mut lin = |p: &str, bias: bool| -> Result<Linear> {
            let w = format!("{p}.weight");
            let weight = take(&w, &shape_of(&w))?;
            let bias = if bias {
                let b = format!("{p}.bias");
                Some(take(&b, &shape_of(&b))?)
            } else {
                None
            };
            Ok(Linear {
                weight,
                bias,
                lora: None,
            })
        };
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let self_attn = Attention {
                q_proj: lin(&format!("{p}.self_attn.q_proj"), cfg.attention_bias)?,
                k_proj: lin(&format!("{p}.self_attn.k_proj"), cfg.attention_bias)?,
                v_proj: lin(&format!("{p}.self_attn.v_proj"), cfg.attention_bias)?,
                o_proj: lin(&format!("{p}.self_attn.o_proj"), false)?,
                n_heads: cfg.num_attention_heads,
                n_kv: cfg.num_key_value_heads,
                head_dim: cfg.head_dim(),
            };
            let mlp = Mlp {
                gate_proj: lin(&format!("{p}.mlp.gate_proj"), cfg.mlp_bias)?,
                up_proj: lin(&format!("{p}.mlp.up_proj"), cfg.mlp_bias)?,
                down_proj: lin(&format!("{p}.mlp.down_proj"), cfg.mlp_bias)?,
            };
            layers.push((p, self_attn, mlp));
        }
        let mut norm = |name: &str| -> Result<Norm> {
            let (w, b) = match cfg.norm {
                NormKind::None => (false, false),
                NormKind::RmsNorm => (true, false),
                NormKind::LayerNorm => (true, true),
            };
            let d = [cfg.hidden_size];
            Ok(Norm {
                kind: cfg.norm,
                weight: if w {
                    Some(take(&format!("{name}.weight"), &d)?)
                } else {
                    None
                },
                bias: if b {
                    Some(take(&format!("{name}.bias"), &d)?)
                } else {
                    None
                },
                eps: cfg.rms_norm_eps,
            })
        };
        let mut blocks = Vec::with_capacity(layers.len());
        for (p, self_attn, mlp) in layers {
            blocks.push(Block {
                input_layernorm: norm(&format!("{p}.input_layernorm"))?,
                self_attn,
                post_attention_layernorm: norm(&format!("{p}.post_attention_layernorm"))?,
                mlp,
            });
        }
        let norm = norm("model.norm")?;
        let embed_tokens = take(
            "model.embed_tokens.weight",
            &[cfg.vocab_size, cfg.hidden_size],
        )?;
        let lm_head = if cfg.tie_word_embeddings {
            map.remove("lm_head.weight");
            None
        } else {
            Some(take("lm_head.weight", &[cfg.vocab_size, cfg.hidden_size])?)
        };
        Ok(Self {
            cfg: cfg.clone(),
            embed_tokens,
            layers: blocks,
            norm,
            lm_head,
            device: device.clone(),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Every trainable parameter with its Hugging Face name, in a fixed order.
    pub fn named_params(&self) -> Vec<(String, Var)> {
        let mut v = vec![(
            "model.embed_tokens.weight".to_string(),
            self.embed_tokens.clone(),
        )];
        let lin = |v: &mut Vec<(String, Var)>, p: String, l: &Linear| {
            v.push((format!("{p}.weight"), l.weight.clone()));
            if let Some(b) = &l.bias {
                v.push((format!("{p}.bias"), b.clone()));
            }
        };
        for (i, b) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            b.input_layernorm
                .push_params(&mut v, &format!("{p}.input_layernorm"));
            lin(&mut v, format!("{p}.self_attn.q_proj"), &b.self_attn.q_proj);
            lin(&mut v, format!("{p}.self_attn.k_proj"), &b.self_attn.k_proj);
            lin(&mut v, format!("{p}.self_attn.v_proj"), &b.self_attn.v_proj);
            lin(&mut v, format!("{p}.self_attn.o_proj"), &b.self_attn.o_proj);
            b.post_attention_layernorm
                .push_params(&mut v, &format!("{p}.post_attention_layernorm"));
            lin(&mut v, format!("{p}.mlp.gate_proj"), &b.mlp.gate_proj);
            lin(&mut v, format!("{p}.mlp.up_proj"), &b.mlp.up_proj);
            lin(&mut v, format!("{p}.mlp.down_proj"), &b.mlp.down_proj);
        }
        self.norm.push_params(&mut v, "model.norm");
        if let Some(h) = &self.lm_head {
            v.push(("lm_head.weight".to_string(), h.clone()));
        }
        v
    }

    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        if let Some((i, &bad)) = ids
            .iter()
            .enumerate()
            .find(|(_, &x)| x as usize >= self.cfg.vocab_size)
        {
            return Err(Error::msg(format!(
                "token id {bad} at position {i} is out of range for the model's vocab_size {}",
                self.cfg.vocab_size
            )));
        }
        Ok(())
    }

    /// Final hidden states (after the last norm): (B, T, D). With a cache, the pass is inference
    /// only (no autograd graph; see [`KvCache`]).
    pub fn hidden_states(&self, inp: &ForwardInput, cache: Option<&mut KvCache>) -> Result<Tensor> {
        let (b, t) = (inp.batch, inp.seq_len);
        if inp.input_ids.len() != b * t {
            return Err(Error::msg(format!(
                "input_ids has {} tokens, expected batch {b} × seq_len {t}",
                inp.input_ids.len()
            )));
        }
        self.check_ids(inp.input_ids)?;
        let past = cache.as_ref().map_or(0, |c| c.len());
        let pos: Vec<u32> = match inp.position_ids {
            Some(p) => {
                if p.len() != b * t {
                    return Err(Error::msg(format!(
                        "position_ids has {} entries, expected {}",
                        p.len(),
                        b * t
                    )));
                }
                p.to_vec()
            }
            None => (0..b)
                .flat_map(|_| (0..t).map(|i| (past + i) as u32))
                .collect(),
        };
        if let Some(s) = inp.segment_ids {
            if s.len() != b * (past + t) {
                return Err(Error::msg(format!(
                    "segment_ids has {} entries, expected batch {b} × {} positions",
                    s.len(),
                    past + t
                )));
            }
        }
        if let Some(c) = cache {
            return self.hidden_states_cached(inp, &pos, c);
        }
        let (cos, sin) = rope_tables(
            &pos,
            b,
            t,
            self.cfg.head_dim(),
            self.cfg.rope_theta,
            &self.device,
        )?;
        let segs = match inp.segment_ids {
            Some(s) => Some(Tensor::from_slice(s, (b, t), &self.device)?),
            None => None,
        };
        let ids = Tensor::from_slice(inp.input_ids, b * t, &self.device)?;
        let mut h = self
            .embed_tokens
            .as_tensor()
            .index_select(&ids, 0)?
            .reshape((b, t, self.cfg.hidden_size))?;
        for blk in &self.layers {
            let n = blk.input_layernorm.forward(&h)?;
            let a = blk.self_attn.forward(&n, &cos, &sin, segs.as_ref())?;
            h = (h + a)?;
            let n = blk.post_attention_layernorm.forward(&h)?;
            h = (&h + blk.mlp.forward(&n)?)?;
        }
        self.norm.forward(&h)
    }

    /// The cached (decoding) pass: detached weights, GEMV projections for few rows, keys/values
    /// written in place, rotary tables looked up from the cache's table.
    fn hidden_states_cached(
        &self,
        inp: &ForwardInput,
        pos: &[u32],
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let (b, t) = (inp.batch, inp.seq_len);
        if cache.layers.len() != self.layers.len() {
            cache.layers = vec![None; self.layers.len()];
        }
        let capacity = cache.capacity;
        let (cos, sin) = cache.rope.gather(
            pos,
            b,
            t,
            self.cfg.head_dim(),
            self.cfg.rope_theta,
            &self.device,
        )?;
        let ids = Tensor::from_slice(inp.input_ids, b * t, &self.device)?;
        let mut h = self
            .embed_tokens
            .as_tensor()
            .detach()
            .index_select(&ids, 0)?
            .reshape((b, t, self.cfg.hidden_size))?;
        for (blk, slot) in self.layers.iter().zip(cache.layers.iter_mut()) {
            let n = blk.input_layernorm.forward_inference(&h)?;
            let a =
                blk.self_attn
                    .forward_cached(&n, &cos, &sin, inp.segment_ids, slot, capacity)?;
            h = (h + a)?;
            let n = blk.post_attention_layernorm.forward_inference(&h)?;
            h = (&h + blk.mlp.forward_inference(&n)?)?;
        }
        self.norm.forward_inference(&h)
    }

    /// The output projection's weight (V, D): lm_head or the tied embeddings.
    pub fn head_weight(&self) -> &Tensor {
        self.lm_head
            .as_ref()
            .unwrap_or(&self.embed_tokens)
            .as_tensor()
    }

    /// hidden (..., D) → logits (..., V).
    pub fn logits_from_hidden(&self, h: &Tensor) -> Result<Tensor> {
        let dims = h.dims().to_vec();
        let d = *dims.last().unwrap_or(&0);
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let l = h.reshape((rows, d))?.matmul(&self.head_weight().t()?)?;
        let mut od = dims;
        *od.last_mut().unwrap() = self.cfg.vocab_size;
        Ok(l.reshape(od)?)
    }

    /// hidden (..., D) → logits (..., V), forward only (no autograd graph): the GEMV kernel for
    /// ≤ [`GEMV_MAX_ROWS`] rows (one decoding step), a GEMM on detached weights otherwise.
    pub fn logits_inference(&self, h: &Tensor) -> Result<Tensor> {
        let w = self.head_weight().detach();
        let h = h.detach();
        let rows = h.elem_count() / self.cfg.hidden_size.max(1);
        if rows <= GEMV_MAX_ROWS {
            return Ok(ops::linear_rows(&h, &[(&w, None)])?.remove(0));
        }
        let mut od = h.dims().to_vec();
        let l = h.reshape((rows, self.cfg.hidden_size))?.matmul(&w.t()?)?;
        *od.last_mut().unwrap() = self.cfg.vocab_size;
        Ok(l.reshape(od)?)
    }

    /// Logits (B, T, V).
    pub fn forward(&self, inp: &ForwardInput, cache: Option<&mut KvCache>) -> Result<Tensor> {
        let h = self.hidden_states(inp, cache)?;
        self.logits_from_hidden(&h)
    }

    /// Per-position log-prob of `targets` (B·T) under the model: (B·T,). Uses the fused
    /// log-softmax-gather, so no second (B, T, V) tensor is built.
    pub fn target_logprobs(&self, inp: &ForwardInput, targets: &[u32]) -> Result<Tensor> {
        if targets.len() != inp.batch * inp.seq_len {
            return Err(Error::msg(format!(
                "targets has {} entries, expected {}",
                targets.len(),
                inp.batch * inp.seq_len
            )));
        }
        let logits = self
            .forward(inp, None)?
            .reshape((inp.batch * inp.seq_len, self.cfg.vocab_size))?;
        let tg = Tensor::from_slice(targets, targets.len(), &self.device)?;
        ops::token_logprobs(&logits, &tg)
    }
}

impl Decoder {
    /// Per-row sums of target log-probs weighted by `weights` (B·T, e.g. 1 on completion tokens):
    /// (B,). The sequence log-prob `log π(y|x)` of preference objectives.
    pub fn row_logps(
        &self,
        inp: &ForwardInput,
        targets: &[u32],
        weights: &[f32],
    ) -> Result<Tensor> {
        if weights.len() != inp.batch * inp.seq_len {
            return Err(Error::msg(format!(
                "weights has {} entries, expected {}",
                weights.len(),
                inp.batch * inp.seq_len
            )));
        }
        let lp = self.target_logprobs(inp, targets)?;
        let w = Tensor::from_slice(weights, weights.len(), &self.device)?;
        Ok((lp * w)?.reshape((inp.batch, inp.seq_len))?.sum(1)?)
    }
}

/// Names and shapes of every parameter, in checkpoint order.
pub fn param_shapes(cfg: &DecoderConfig) -> Vec<(String, Vec<usize>)> {
    let d = cfg.hidden_size;
    let hd = cfg.head_dim();
    let q = cfg.num_attention_heads * hd;
    let kv = cfg.num_key_value_heads * hd;
    let f = cfg.intermediate_size;
    let mut v = vec![(
        "model.embed_tokens.weight".to_string(),
        vec![cfg.vocab_size, d],
    )];
    for i in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{i}");
        v.extend(norm_shapes(cfg, &format!("{p}.input_layernorm")));
        for (n, o) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
            v.push((format!("{p}.self_attn.{n}.weight"), vec![o, d]));
            if cfg.attention_bias {
                v.push((format!("{p}.self_attn.{n}.bias"), vec![o]));
            }
        }
        v.push((format!("{p}.self_attn.o_proj.weight"), vec![d, q]));
        v.extend(norm_shapes(cfg, &format!("{p}.post_attention_layernorm")));
        for (n, o, i_) in [("gate_proj", f, d), ("up_proj", f, d), ("down_proj", d, f)] {
            v.push((format!("{p}.mlp.{n}.weight"), vec![o, i_]));
            if cfg.mlp_bias {
                v.push((format!("{p}.mlp.{n}.bias"), vec![o]));
            }
        }
    }
    v.extend(norm_shapes(cfg, "model.norm"));
    if !cfg.tie_word_embeddings {
        v.push(("lm_head.weight".to_string(), vec![cfg.vocab_size, d]));
    }
    v
}
