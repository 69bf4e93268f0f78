//! A trainable BERT masked-LM (`BertForMaskedLM`) built from differentiable candle ops: the
//! training twin of the inference [`crate::encoder::Encoder`], whose forward it reproduces on the
//! same weights (tested), in dependency order: parameters → embeddings → attention → layer → MLM
//! head → save.
//!
//! Shapes: B batch, T time (padded), D hidden, H heads, Dh = D/H, F intermediate, V vocab, M
//! masked positions.
//!
//! Why candle autograd and not a hand-written graph: the SAS lab's models are tiny (D ≤ 128,
//! T ≤ 24), so op overhead, not arithmetic, dominates, and a composed graph gives the SAS
//! regulariser its gradient through the attention probabilities for free. Every op here has a
//! backward (no `candle_nn` fused ops: they drop gradients; DESIGN §2): layer norm and softmax are
//! composed from plain ops.
//!
//! Post-LN block (BERT, Devlin et al. 2019): `x = LN(x + Attn(x)); x = LN(x + W2·gelu(W1·x))`;
//! embeddings `LN(word[id] + position[p] + token_type[0])`; padded keys get an additive −1e9
//! (zero weight). MLM head (HF `BertLMPredictionHead`): `LN(gelu(W h + b)) · Eᵀ + bias` with E the
//! word embeddings (tied, as BERT's). No dropout: the lab's runs are deterministic.
//!
//! **Saved layout** (HF `BertForMaskedLM`): `bert.embeddings.*`, `bert.encoder.layer.N.*`,
//! `cls.predictions.transform.{dense,LayerNorm}.*`, `cls.predictions.bias`; the decoder weight is
//! the word embedding matrix and is not stored twice (HF ties it on load). `Encoder::load` reads
//! the same files.

use std::path::Path;

use gradus_tensor::rng::Rng;
use gradus_tensor::{DType, Device, Error, Result, Tensor, Var, D};

use crate::encoder::EncoderConfig;

/// The trainable masked LM.
pub struct BertMlm {
    pub cfg: EncoderConfig,
    /// (HF name without the `bert.` prefix for encoder tensors, Var), in a fixed order.
    params: Vec<(String, Var)>,
    dtype: DType,
}

/// What [`BertMlm::forward`] returns.
pub struct MlmForward {
    /// Last hidden states (B, T, D).
    pub hidden: Tensor,
    /// Attention probabilities of each layer, (B, H, T, T): row i is query i's distribution over
    /// keys.
    pub attentions: Vec<Tensor>,
}

fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let inv = (var + eps)?.sqrt()?.recip()?;
    Ok(xc.broadcast_mul(&inv)?.broadcast_mul(w)?.broadcast_add(b)?)
}

/// Softmax over the last dim (max detached: shift invariance, no gradient change).
fn softmax(x: &Tensor) -> Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&m)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

/// Log-softmax over the last dim.
fn log_softmax(x: &Tensor) -> Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    let s = x.broadcast_sub(&m)?;
    let lse = s.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok(s.broadcast_sub(&lse)?)
}

impl BertMlm {
    /// The parameter names and shapes of `cfg`, in order.
    fn layout(cfg: &EncoderConfig) -> Vec<(String, Vec<usize>)> {
        let (d, f, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
        let mut l = vec![
            ("embeddings.word_embeddings.weight".to_string(), vec![v, d]),
            (
                "embeddings.position_embeddings.weight".into(),
                vec![cfg.max_position_embeddings, d],
            ),
            (
                "embeddings.token_type_embeddings.weight".into(),
                vec![cfg.type_vocab_size, d],
            ),
            ("embeddings.LayerNorm.weight".into(), vec![d]),
            ("embeddings.LayerNorm.bias".into(), vec![d]),
        ];
        for i in 0..cfg.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            for (n, o, inp) in [
                ("attention.self.query", d, d),
                ("attention.self.key", d, d),
                ("attention.self.value", d, d),
                ("attention.output.dense", d, d),
            ] {
                l.push((format!("{p}.{n}.weight"), vec![o, inp]));
                l.push((format!("{p}.{n}.bias"), vec![o]));
            }
            l.push((format!("{p}.attention.output.LayerNorm.weight"), vec![d]));
            l.push((format!("{p}.attention.output.LayerNorm.bias"), vec![d]));
            l.push((format!("{p}.intermediate.dense.weight"), vec![f, d]));
            l.push((format!("{p}.intermediate.dense.bias"), vec![f]));
            l.push((format!("{p}.output.dense.weight"), vec![d, f]));
            l.push((format!("{p}.output.dense.bias"), vec![d]));
            l.push((format!("{p}.output.LayerNorm.weight"), vec![d]));
            l.push((format!("{p}.output.LayerNorm.bias"), vec![d]));
        }
        l.push(("cls.predictions.transform.dense.weight".into(), vec![d, d]));
        l.push(("cls.predictions.transform.dense.bias".into(), vec![d]));
        l.push(("cls.predictions.transform.LayerNorm.weight".into(), vec![d]));
        l.push(("cls.predictions.transform.LayerNorm.bias".into(), vec![d]));
        l.push(("cls.predictions.bias".into(), vec![v]));
        l
    }

    /// A fresh model: matrices and embeddings N(0, `init_std`²) (BERT: 0.02), biases 0, layer-norm
    /// weights 1, all from `seed`, in `dtype` (F32 to train; F64 for gradient checks).
    pub fn new_random(cfg: &EncoderConfig, init_std: f64, seed: u64, dtype: DType) -> Result<Self> {
        cfg.validate()?;
        if cfg.activation()? != crate::encoder::Activation::Gelu {
            return Err(Error::config(
                "hidden_act",
                "the trainable encoder implements `gelu` (erf) only",
            ));
        }
        let mut rng = Rng::derive(seed, "bert-mlm/init");
        let dev = Device::Cpu;
        let mut params = Vec::new();
        for (name, shape) in Self::layout(cfg) {
            let n: usize = shape.iter().product();
            let vals: Vec<f64> = if shape.len() == 2 {
                (0..n).map(|_| rng.normal() * init_std).collect()
            } else if name.ends_with("LayerNorm.weight") {
                vec![1.0; n]
            } else {
                vec![0.0; n]
            };
            let t = Tensor::from_vec(vals, shape.as_slice(), &dev)?.to_dtype(dtype)?;
            params.push((name, Var::from_tensor(&t)?));
        }
        Ok(Self {
            cfg: cfg.clone(),
            params,
            dtype,
        })
    }

    /// The trainable parameters with their names (as [`BertMlm::save`] writes them, less the
    /// `bert.` prefix of encoder tensors).
    pub fn named_params(&self) -> Vec<(String, Var)> {
        self.params.clone()
    }

    fn p(&self, name: &str) -> Result<&Tensor> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_tensor())
            .ok_or_else(|| Error::msg(format!("bert-mlm: no parameter `{name}`")))
    }

    fn linear(&self, x: &Tensor, prefix: &str) -> Result<Tensor> {
        let w = self.p(&format!("{prefix}.weight"))?;
        let b = self.p(&format!("{prefix}.bias"))?;
        Ok(x.broadcast_matmul(&w.t()?)?.broadcast_add(b)?)
    }

    /// Forward of `ids` (B·T, row-major, right-padded) where sequence b has `lens[b]` real tokens:
    /// hidden states and every layer's attention probabilities.
    pub fn forward(&self, ids: &[u32], b: usize, t: usize, lens: &[usize]) -> Result<MlmForward> {
        let c = &self.cfg;
        if ids.len() != b * t || lens.len() != b {
            return Err(Error::msg(format!(
                "bert-mlm: {} ids and {} lengths for a ({b}, {t}) batch",
                ids.len(),
                lens.len()
            )));
        }
        if t > c.max_position_embeddings {
            return Err(Error::msg(format!(
                "bert-mlm: {t} positions, more than max_position_embeddings = {}",
                c.max_position_embeddings
            )));
        }
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= c.vocab_size) {
            return Err(Error::msg(format!(
                "bert-mlm: token id {bad} is out of range for vocab_size {}",
                c.vocab_size
            )));
        }
        let (d, h) = (c.hidden_size, c.num_attention_heads);
        let dh = d / h;
        let eps = c.layer_norm_eps;
        let dev = Device::Cpu;
        let idt = Tensor::from_slice(ids, b * t, &dev)?;
        let word = self.p("embeddings.word_embeddings.weight")?;
        let x = word.index_select(&idt, 0)?.reshape((b, t, d))?;
        let pos = self
            .p("embeddings.position_embeddings.weight")?
            .narrow(0, 0, t)?;
        let tt = self
            .p("embeddings.token_type_embeddings.weight")?
            .narrow(0, 0, 1)?;
        let x = x.broadcast_add(&pos)?.broadcast_add(&tt)?;
        let mut x = layer_norm(
            &x,
            self.p("embeddings.LayerNorm.weight")?,
            self.p("embeddings.LayerNorm.bias")?,
            eps,
        )?;
        // Additive key mask (B, 1, 1, T): 0 for real tokens, −1e9 for padding.
        let mut mask = vec![0f64; b * t];
        for (bi, &l) in lens.iter().enumerate() {
            if l == 0 || l > t {
                return Err(Error::msg(format!(
                    "bert-mlm: sequence {bi} has length {l}, not in 1..={t}"
                )));
            }
            for m in &mut mask[bi * t + l..(bi + 1) * t] {
                *m = -1e9;
            }
        }
        let mask = Tensor::from_vec(mask, (b, 1, 1, t), &dev)?.to_dtype(self.dtype)?;
        let scale = 1.0 / (dh as f64).sqrt();
        let mut attentions = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let heads = |y: Tensor| -> Result<Tensor> {
                Ok(y.reshape((b, t, h, dh))?.transpose(1, 2)?.contiguous()?)
            };
            let q = heads(self.linear(&x, &format!("{p}.attention.self.query"))?)?;
            let k = heads(self.linear(&x, &format!("{p}.attention.self.key"))?)?;
            let v = heads(self.linear(&x, &format!("{p}.attention.self.value"))?)?;
            let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?.broadcast_add(&mask)?;
            let probs = softmax(&scores)?; // (B, H, T, T)
            let ctx = probs
                .matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b, t, d))?;
            let a = self.linear(&ctx, &format!("{p}.attention.output.dense"))?;
            x = layer_norm(
                &(x + a)?,
                self.p(&format!("{p}.attention.output.LayerNorm.weight"))?,
                self.p(&format!("{p}.attention.output.LayerNorm.bias"))?,
                eps,
            )?;
            let hmid = self
                .linear(&x, &format!("{p}.intermediate.dense"))?
                .gelu_erf()?;
            let y = self.linear(&hmid, &format!("{p}.output.dense"))?;
            x = layer_norm(
                &(x + y)?,
                self.p(&format!("{p}.output.LayerNorm.weight"))?,
                self.p(&format!("{p}.output.LayerNorm.bias"))?,
                eps,
            )?;
            attentions.push(probs);
        }
        Ok(MlmForward {
            hidden: x,
            attentions,
        })
    }

    /// MLM log-probabilities (M, V) at flat rows `rows` (b·T + t) of `hidden` (B, T, D).
    pub fn mlm_logprobs(&self, hidden: &Tensor, rows: &[u32]) -> Result<Tensor> {
        let d = self.cfg.hidden_size;
        let flat = hidden.reshape(((), d))?;
        let idx = Tensor::from_slice(rows, rows.len(), &Device::Cpu)?;
        let hm = flat.index_select(&idx, 0)?;
        let z = self
            .linear(&hm, "cls.predictions.transform.dense")?
            .gelu_erf()?;
        let z = layer_norm(
            &z,
            self.p("cls.predictions.transform.LayerNorm.weight")?,
            self.p("cls.predictions.transform.LayerNorm.bias")?,
            self.cfg.layer_norm_eps,
        )?;
        let word = self.p("embeddings.word_embeddings.weight")?;
        let logits = z
            .matmul(&word.t()?)?
            .broadcast_add(self.p("cls.predictions.bias")?)?;
        log_softmax(&logits)
    }

    /// Mean cross-entropy of `targets` at `rows` (the masked positions); a scalar tensor.
    pub fn mlm_loss(&self, hidden: &Tensor, rows: &[u32], targets: &[u32]) -> Result<Tensor> {
        if rows.is_empty() || rows.len() != targets.len() {
            return Err(Error::msg(format!(
                "bert-mlm: {} masked rows and {} targets (need as many, at least one)",
                rows.len(),
                targets.len()
            )));
        }
        let lp = self.mlm_logprobs(hidden, rows)?;
        let tg = Tensor::from_slice(targets, (targets.len(), 1), &Device::Cpu)?;
        Ok(lp.gather(&tg, 1)?.mean_all()?.neg()?)
    }

    /// The config.json of a `BertForMaskedLM` with this shape.
    pub fn config_json(&self) -> serde_json::Value {
        let c = &self.cfg;
        serde_json::json!({
            "architectures": ["BertForMaskedLM"],
            "model_type": "bert",
            "vocab_size": c.vocab_size,
            "hidden_size": c.hidden_size,
            "num_hidden_layers": c.num_hidden_layers,
            "num_attention_heads": c.num_attention_heads,
            "intermediate_size": c.intermediate_size,
            "hidden_act": c.hidden_act,
            "max_position_embeddings": c.max_position_embeddings,
            "type_vocab_size": c.type_vocab_size,
            "layer_norm_eps": c.layer_norm_eps,
            "pad_token_id": c.pad_token_id.unwrap_or(0),
            "position_embedding_type": "absolute",
            "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0,
            "tie_word_embeddings": true,
        })
    }

    /// Writes `dir/config.json` and `dir/model.safetensors` in the HF `BertForMaskedLM` layout (f32),
    /// atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let json = serde_json::to_string_pretty(&self.config_json())
            .map_err(|e| Error::msg(e.to_string()))?;
        gradus_tensor::io::write_atomic(&dir.join("config.json"), json.as_bytes())?;
        let tensors: Vec<(String, Tensor)> = self
            .params
            .iter()
            .map(|(n, v)| {
                let name = if n.starts_with("cls.") {
                    n.clone()
                } else {
                    format!("bert.{n}")
                };
                Ok((name, v.as_tensor().to_dtype(DType::F32)?))
            })
            .collect::<Result<_>>()?;
        gradus_tensor::io::write_native(&dir.join("model.safetensors"), &tensors)
    }

    /// Loads `dir/config.json` and `dir/model.safetensors` (a [`BertMlm::save`] checkpoint or HF's
    /// `BertForMaskedLM`) in `dtype`.
    pub fn load(dir: &Path, dtype: DType) -> Result<Self> {
        let cfg = EncoderConfig::from_file(&dir.join("config.json"))?;
        let mut m = Self::new_random(&cfg, 0.02, 0, dtype)?;
        m.load_weights(dir)?;
        Ok(m)
    }

    /// Reads the weights of a checkpoint written by [`BertMlm::save`] (or HF's `BertForMaskedLM`)
    /// into this model; shapes must match this model's config (errors name the tensor).
    pub fn load_weights(&mut self, dir: &Path) -> Result<()> {
        let file = dir.join("model.safetensors");
        let map: std::collections::HashMap<String, Tensor> = gradus_tensor::io::read_native(&file)?
            .into_iter()
            .map(|(n, t)| (n.strip_prefix("bert.").unwrap_or(&n).to_string(), t))
            .collect();
        for (name, var) in &self.params {
            let t = map.get(name).ok_or_else(|| Error::MissingTensor {
                path: file.clone(),
                name: name.clone(),
                hint: " (expected a BertForMaskedLM checkpoint)".into(),
            })?;
            if t.dims() != var.dims() {
                return Err(Error::TensorShape {
                    name: name.clone(),
                    expected: var.dims().to_vec(),
                    found: t.dims().to_vec(),
                    context: format!(" in {}", file.display()),
                });
            }
            var.set(&t.to_dtype(self.dtype)?)?;
        }
        Ok(())
    }
}
