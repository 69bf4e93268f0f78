//! LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") on the decoder's
//! linear layers, stored in the PEFT layout so adapters move both ways between gradus and PEFT.
//!
//! A linear layer `y = x Wᵀ + b` with an adapter computes
//! `y = x Wᵀ + b + s · dropout(x) Aᵀ Bᵀ`, A (r, in), B (out, r), with `s = lora_alpha / r`
//! (`lora_alpha / √r` with `use_rslora`, Kalajdzievski 2023). A starts Kaiming-uniform as in PEFT
//! (`kaiming_uniform_(a=√5)` gives U(-1/√in, 1/√in)), B starts at zero, so a fresh adapter leaves
//! the model's output exactly unchanged.
//!
//! The adapter is an optional field of [`Linear`]; the base weights stay in
//! [`Decoder::named_params`] and the adapter weights are listed by [`Decoder::lora_params`] under
//! the names PEFT writes to `adapter_model.safetensors`
//! (`base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`). A trainer that should only
//! train the adapters gives the optimiser `lora_params()`; the base is frozen by not being stepped.
//! (candle's backward still computes the base weights' gradients: its matmul backward always
//! forms both operands' gradients, so detaching W would not save that work; skipping it needs a
//! matmul op whose backward returns no weight gradient. Measured by the ignored `lora_step_cost`
//! test: a LoRA forward + backward on this path costs about what full fine-tuning's does. The
//! hand-written graph [`crate::fast::FastDecoder`] trains the same adapters, drawing the same
//! dropout masks, and skips the base's weight gradients; the training recipes run on it.)
//!
//! [`Decoder::without_adapters`] is a shallow clone that shares every base `Var` and drops the
//! adapters: the frozen reference model of DPO-style objectives at no extra memory.
//!
//! Dropout (when `lora_dropout > 0`) draws its masks from one seeded [`Rng`] shared by every
//! adapter of a model, and is active only in training mode ([`Decoder::set_lora_training`]):
//! [`Decoder::apply_lora`] leaves the model in training mode (fresh adapters are made to be
//! trained), [`load_adapter`] in eval mode (PEFT saves adapters with `inference_mode: true`). The
//! dropout stream's state can be read and restored for an exact resume
//! ([`Decoder::lora_dropout_state`], [`Decoder::set_lora_dropout_state`]).
//!
//! Adapter files are written in f32. Loading accepts f32, bf16 and f16.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use gradus_tensor::io::{read_safetensors, write_atomic, write_safetensors, StoreDtype};
use gradus_tensor::rng::{Rng, RngState};
use gradus_tensor::{DType, Device, Error, Result, Tensor, Var};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::decoder::{Decoder, Linear};

/// The linear layers of a decoder block that can carry an adapter (PEFT's module names).
pub const LORA_MODULES: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// Prefix PEFT puts before the base model's parameter names in `adapter_model.safetensors`.
pub const PEFT_PREFIX: &str = "base_model.model.";

/// Adapter file names of the PEFT layout.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

/// Which modules get an adapter and how it is shaped. Field names are PEFT's (`LoraConfig`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraConfig {
    /// Rank of the update (A is (r, in), B is (out, r)). Default 8.
    pub r: usize,
    /// Scale numerator: the update is multiplied by `lora_alpha / r`. Default 16.
    #[serde(alias = "alpha")]
    pub lora_alpha: f64,
    /// Dropout on the adapter's input in training mode, in [0, 1). Default 0.
    #[serde(alias = "dropout")]
    pub lora_dropout: f64,
    /// Module names (any of [`LORA_MODULES`]) that get an adapter in every layer.
    /// Default `["q_proj", "k_proj", "v_proj", "o_proj"]`.
    pub target_modules: Vec<String>,
    /// Rank-stabilised scale `lora_alpha / √r` instead of `lora_alpha / r`. Default false.
    pub use_rslora: bool,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            r: 8,
            lora_alpha: 16.0,
            lora_dropout: 0.0,
            target_modules: ["q_proj", "k_proj", "v_proj", "o_proj"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            use_rslora: false,
        }
    }
}

impl LoraConfig {
    /// Checks every field; the error names the field at fault.
    pub fn validate(&self) -> Result<()> {
        if self.r == 0 {
            return Err(Error::config("lora.r", "must be at least 1"));
        }
        if !self.lora_alpha.is_finite() || self.lora_alpha <= 0.0 {
            return Err(Error::config(
                "lora.lora_alpha",
                format!("must be a positive number, got {}", self.lora_alpha),
            ));
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            return Err(Error::config(
                "lora.lora_dropout",
                format!("must be in [0, 1), got {}", self.lora_dropout),
            ));
        }
        if self.target_modules.is_empty() {
            return Err(Error::config(
                "lora.target_modules",
                "is empty; name at least one module",
            ));
        }
        let mut seen = BTreeSet::new();
        for m in &self.target_modules {
            if !LORA_MODULES.contains(&m.as_str()) {
                return Err(Error::config(
                    "lora.target_modules",
                    format!(
                        "unknown module `{m}`; the decoder's linear layers are {}",
                        LORA_MODULES.join(", ")
                    ),
                ));
            }
            if !seen.insert(m.as_str()) {
                return Err(Error::config(
                    "lora.target_modules",
                    format!("`{m}` is listed twice"),
                ));
            }
        }
        Ok(())
    }

    /// The factor the update B·A is multiplied by.
    pub fn scale(&self) -> f64 {
        if self.use_rslora {
            self.lora_alpha / (self.r as f64).sqrt()
        } else {
            self.lora_alpha / self.r as f64
        }
    }
}

/// The dropout shared by every adapter of one model: its probability, the train/eval switch and
/// the mask stream.
#[derive(Debug)]
pub struct LoraDropout {
    p: f64,
    training: AtomicBool,
    rng: Mutex<Rng>,
}

impl LoraDropout {
    fn new(p: f64, training: bool, rng: Rng) -> Self {
        Self {
            p,
            training: AtomicBool::new(training),
            rng: Mutex::new(rng),
        }
    }

    /// x (N, in) → x with each entry zeroed with probability p and the rest scaled by 1/(1-p)
    /// (inverted dropout, as `torch.nn.Dropout`); x itself in eval mode.
    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        if self.p == 0.0 || !self.training.load(Ordering::Relaxed) {
            return Ok(x.clone());
        }
        let n = x.elem_count();
        let keep = (1.0 / (1.0 - self.p)) as f32;
        let mask: Vec<f32> = {
            let mut rng = self
                .rng
                .lock()
                .map_err(|_| Error::msg("LoRA dropout RNG lock poisoned"))?;
            (0..n)
                .map(|_| if rng.uniform() < self.p { 0.0 } else { keep })
                .collect()
        };
        let mask = Tensor::from_vec(mask, x.dims(), x.device())?.to_dtype(x.dtype())?;
        Ok((x * mask)?)
    }
}

/// One low-rank adapter on a [`Linear`]: A (r, in), B (out, r), the scale, and the model's shared
/// dropout (None when the dropout is 0).
#[derive(Clone, Debug)]
pub struct LoraAdapter {
    pub a: Var,
    pub b: Var,
    pub scale: f64,
    pub dropout: Option<Arc<LoraDropout>>,
}

impl LoraAdapter {
    /// x (N, in) → s · dropout(x) Aᵀ Bᵀ, (N, out).
    pub fn delta(&self, x: &Tensor) -> Result<Tensor> {
        let x = match &self.dropout {
            Some(d) => d.apply(x)?,
            None => x.clone(),
        };
        let h = x.matmul(&self.a.as_tensor().t()?)?;
        Ok((h.matmul(&self.b.as_tensor().t()?)? * self.scale)?)
    }

    /// The update without dropout or autograd (decoding): x (N, in) → s · x Aᵀ Bᵀ.
    pub fn delta_inference(&self, x: &Tensor) -> Result<Tensor> {
        let h = x.detach().matmul(&self.a.as_tensor().detach().t()?)?;
        Ok((h.matmul(&self.b.as_tensor().detach().t()?)? * self.scale)?)
    }

    pub fn rank(&self) -> usize {
        self.a.as_tensor().dim(0).unwrap_or(0)
    }

    /// s · B A, (out, in): what merging adds to the base weight.
    pub fn merged_delta(&self) -> Result<Tensor> {
        Ok((self.b.as_tensor().matmul(self.a.as_tensor())? * self.scale)?)
    }
}

/// Every linear layer of the decoder with its HF prefix (`model.layers.0.self_attn.q_proj`) and
/// module name, in checkpoint order.
fn linears(d: &Decoder) -> Vec<(String, &'static str, &Linear)> {
    let mut v = Vec::new();
    for (i, b) in d.layers.iter().enumerate() {
        let a = &b.self_attn;
        let m = &b.mlp;
        for (name, l) in [
            ("q_proj", &a.q_proj),
            ("k_proj", &a.k_proj),
            ("v_proj", &a.v_proj),
            ("o_proj", &a.o_proj),
        ] {
            v.push((format!("model.layers.{i}.self_attn.{name}"), name, l));
        }
        for (name, l) in [
            ("gate_proj", &m.gate_proj),
            ("up_proj", &m.up_proj),
            ("down_proj", &m.down_proj),
        ] {
            v.push((format!("model.layers.{i}.mlp.{name}"), name, l));
        }
    }
    v
}

fn linears_mut(d: &mut Decoder) -> Vec<(String, &'static str, &mut Linear)> {
    let mut v = Vec::new();
    for (i, b) in d.layers.iter_mut().enumerate() {
        let a = &mut b.self_attn;
        let m = &mut b.mlp;
        for (name, l) in [
            ("q_proj", &mut a.q_proj),
            ("k_proj", &mut a.k_proj),
            ("v_proj", &mut a.v_proj),
            ("o_proj", &mut a.o_proj),
        ] {
            v.push((format!("model.layers.{i}.self_attn.{name}"), name, l));
        }
        for (name, l) in [
            ("gate_proj", &mut m.gate_proj),
            ("up_proj", &mut m.up_proj),
            ("down_proj", &mut m.down_proj),
        ] {
            v.push((format!("model.layers.{i}.mlp.{name}"), name, l));
        }
    }
    v
}

/// The scale of every adapter, by its module's HF prefix (`model.layers.0.self_attn.q_proj`).
pub(crate) fn adapter_scales(d: &Decoder) -> Vec<(String, f64)> {
    linears(d)
        .into_iter()
        .filter_map(|(p, _, l)| l.lora.as_ref().map(|a| (p, a.scale)))
        .collect()
}

/// PEFT's tensor name for A or B of the module at `prefix`.
fn peft_name(prefix: &str, which: char) -> String {
    format!("{PEFT_PREFIX}{prefix}.lora_{which}.weight")
}

impl Decoder {
    /// Adds a fresh adapter (A Kaiming-uniform from `rng`, B = 0) to every target module of every
    /// layer, and puts the adapters in training mode. The dropout stream is seeded from `rng` after
    /// the A matrices are drawn. Errors if the model already has adapters.
    pub fn apply_lora(&mut self, cfg: &LoraConfig, rng: &mut Rng) -> Result<()> {
        cfg.validate()?;
        if self.has_lora() {
            return Err(Error::msg(
                "the model already has LoRA adapters (merge them or use without_adapters() first)",
            ));
        }
        let device = self.device().clone();
        let mut adapters = Vec::new();
        for (_, name, l) in linears(self) {
            if !cfg.target_modules.iter().any(|t| t == name) {
                adapters.push(None);
                continue;
            }
            let (out, inp) = l.weight.as_tensor().dims2()?;
            let bound = 1.0 / (inp as f64).sqrt();
            let a = rng.rand_uniform(&[cfg.r, inp], -bound, bound, &device)?;
            let b = Tensor::zeros((out, cfg.r), DType::F32, &device)?;
            adapters.push(Some((Var::from_tensor(&a)?, Var::from_tensor(&b)?)));
        }
        let dropout = (cfg.lora_dropout > 0.0).then(|| {
            Arc::new(LoraDropout::new(
                cfg.lora_dropout,
                true,
                Rng::new(rng.next_u64()),
            ))
        });
        for ((_, _, l), ad) in linears_mut(self).into_iter().zip(adapters) {
            l.lora = ad.map(|(a, b)| LoraAdapter {
                a,
                b,
                scale: cfg.scale(),
                dropout: dropout.clone(),
            });
        }
        Ok(())
    }

    /// Whether any linear layer carries an adapter.
    pub fn has_lora(&self) -> bool {
        linears(self).iter().any(|(_, _, l)| l.lora.is_some())
    }

    /// The adapter weights (the trainable parameters under LoRA) with PEFT's names, A before B,
    /// modules in checkpoint order.
    pub fn lora_params(&self) -> Vec<(String, Var)> {
        let mut v = Vec::new();
        for (p, _, l) in linears(self) {
            if let Some(ad) = &l.lora {
                v.push((peft_name(&p, 'A'), ad.a.clone()));
                v.push((peft_name(&p, 'B'), ad.b.clone()));
            }
        }
        v
    }

    /// A shallow clone that shares every base weight (same `Var`s, no copy) and has no adapters:
    /// the base model, e.g. the frozen reference of DPO.
    pub fn without_adapters(&self) -> Decoder {
        let mut d = self.clone();
        for (_, _, l) in linears_mut(&mut d) {
            l.lora = None;
        }
        d
    }

    /// A new model whose weights are fresh copies, with `W + s · B A` for every adapted layer and
    /// no adapters. The model it is called on is unchanged.
    pub fn merge_lora(&self) -> Result<Decoder> {
        let mut merged: BTreeMap<String, Tensor> = BTreeMap::new();
        for (p, _, l) in linears(self) {
            if let Some(ad) = &l.lora {
                let w = l.weight.as_tensor();
                merged.insert(
                    format!("{p}.weight"),
                    (w + ad.merged_delta()?.to_dtype(w.dtype())?)?,
                );
            }
        }
        let tensors = self
            .named_params()
            .into_iter()
            .map(|(n, v)| {
                let t = match merged.remove(&n) {
                    Some(t) => t,
                    None => v.as_tensor().copy()?,
                };
                Ok((n, t))
            })
            .collect::<Result<Vec<_>>>()?;
        Decoder::from_named(&self.cfg, tensors, self.device(), "<merged LoRA model>")
    }

    /// Switches adapter dropout on (training) or off (eval). No effect without dropout.
    pub fn set_lora_training(&self, training: bool) {
        if let Some(d) = self.lora_dropout() {
            d.training.store(training, Ordering::Relaxed);
        }
    }

    fn lora_dropout(&self) -> Option<Arc<LoraDropout>> {
        linears(self)
            .into_iter()
            .find_map(|(_, _, l)| l.lora.as_ref().and_then(|a| a.dropout.clone()))
    }

    /// The adapter dropout's probability and whether it is in training mode (None without
    /// dropout): what [`crate::fast::FastDecoder`] needs to draw the same masks.
    pub fn lora_dropout_settings(&self) -> Option<(f64, bool)> {
        self.lora_dropout()
            .map(|d| (d.p, d.training.load(Ordering::Relaxed)))
    }

    /// The state of the dropout mask stream (None without dropout), for an exact resume.
    pub fn lora_dropout_state(&self) -> Option<RngState> {
        self.lora_dropout()
            .and_then(|d| d.rng.lock().ok().map(|r| r.state()))
    }

    /// Restores the dropout mask stream; an error if the model has no adapter dropout.
    pub fn set_lora_dropout_state(&self, state: RngState) -> Result<()> {
        let d = self
            .lora_dropout()
            .ok_or_else(|| Error::msg("the model has no LoRA dropout to restore"))?;
        let mut r = d
            .rng
            .lock()
            .map_err(|_| Error::msg("LoRA dropout RNG lock poisoned"))?;
        *r = Rng::from_state(state);
        Ok(())
    }
}

/// Writes `adapter_config.json` and `adapter_model.safetensors` (f32, PEFT's tensor names) into
/// `dir`, each atomically; PEFT's `PeftModel.from_pretrained(base, dir)` loads them.
/// `base_model_name_or_path` is written as null.
pub fn save_adapter(dir: &Path, decoder: &Decoder, cfg: &LoraConfig) -> Result<()> {
    save_adapter_with_base(dir, decoder, cfg, None)
}

/// [`save_adapter`] recording the base checkpoint (`base_model_name_or_path`), which PEFT's
/// `AutoPeftModelForCausalLM` uses to find the base.
pub fn save_adapter_with_base(
    dir: &Path,
    decoder: &Decoder,
    cfg: &LoraConfig,
    base_model: Option<&str>,
) -> Result<()> {
    save_adapter_dir(dir, decoder, cfg, base_model, &AdapterExtras::default())
}

/// What an adapter directory holds beyond the LoRA weights: PEFT's `task_type` (default
/// `CAUSAL_LM`) and `modules_to_save`, modules trained in full whose weights are saved beside the
/// adapters under PEFT's names (`base_model.model.score.weight` for a reward model's head).
#[derive(Clone, Debug, Default)]
pub struct AdapterExtras {
    pub task_type: Option<String>,
    pub modules_to_save: Vec<String>,
    /// (name without the `base_model.model.` prefix, tensor), e.g. (`score.weight`, W).
    pub tensors: Vec<(String, Tensor)>,
}

/// [`save_adapter_with_base`] with `extras` (a reward model's fully trained score head).
pub fn save_adapter_dir(
    dir: &Path,
    decoder: &Decoder,
    cfg: &LoraConfig,
    base_model: Option<&str>,
    extras: &AdapterExtras,
) -> Result<()> {
    cfg.validate()?;
    let mut any = false;
    for (p, name, l) in linears(decoder) {
        let Some(ad) = &l.lora else { continue };
        any = true;
        if !cfg.target_modules.iter().any(|t| t == name) {
            return Err(Error::config(
                "lora.target_modules",
                format!(
                    "`{p}` has an adapter but `{name}` is not in target_modules {:?}",
                    cfg.target_modules
                ),
            ));
        }
        if ad.rank() != cfg.r {
            return Err(Error::config(
                "lora.r",
                format!(
                    "is {} but the adapter on `{p}` has rank {}",
                    cfg.r,
                    ad.rank()
                ),
            ));
        }
        if (ad.scale - cfg.scale()).abs() > 1e-12 * cfg.scale().abs().max(1.0) {
            return Err(Error::config(
                "lora.lora_alpha",
                format!(
                    "gives scale {} but the adapter on `{p}` has scale {}",
                    cfg.scale(),
                    ad.scale
                ),
            ));
        }
    }
    if !any {
        return Err(Error::msg("the model has no LoRA adapters to save"));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut tensors: Vec<(String, Tensor)> = decoder
        .lora_params()
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().clone()))
        .collect();
    tensors.extend(
        extras
            .tensors
            .iter()
            .map(|(n, t)| (format!("{PEFT_PREFIX}{n}"), t.clone())),
    );
    write_safetensors(&dir.join(ADAPTER_WEIGHTS), &tensors, StoreDtype::F32)?;
    let modules_to_save =
        (!extras.modules_to_save.is_empty()).then(|| extras.modules_to_save.clone());
    let task_type = extras
        .task_type
        .clone()
        .unwrap_or_else(|| "CAUSAL_LM".into());
    let targets = canonical_order(&cfg.target_modules);
    // The fields PEFT 0.21 writes that matter for a plain LoRA; PEFT fills the rest with defaults.
    let json = json!({
        "alpha_pattern": {},
        "base_model_name_or_path": base_model,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "layers_pattern": null,
        "layers_to_transform": null,
        "lora_alpha": cfg.lora_alpha,
        "lora_bias": false,
        "lora_dropout": cfg.lora_dropout,
        "modules_to_save": modules_to_save,
        "peft_type": "LORA",
        "r": cfg.r,
        "rank_pattern": {},
        "revision": null,
        "target_modules": targets,
        "task_type": task_type,
        "use_dora": false,
        "use_rslora": cfg.use_rslora,
    });
    let text = serde_json::to_string_pretty(&json).map_err(|e| Error::msg(e.to_string()))?;
    write_atomic(&dir.join(ADAPTER_CONFIG), format!("{text}\n").as_bytes())
}

/// Reads a PEFT LoRA adapter's `adapter_config.json` into a [`LoraConfig`] (target modules in
/// [`LORA_MODULES`] order). Fields that change
/// what a LoRA computes and that gradus does not implement (DoRA, LoRA biases, per-module rank or
/// alpha patterns, `fan_in_fan_out`, `modules_to_save`) are rejected by name.
pub fn read_adapter_config(path: &Path) -> Result<LoraConfig> {
    read_adapter_config_with(path, &[])
}

/// [`read_adapter_config`] that accepts `modules_to_save` naming only modules in `allowed`
/// (e.g. `["score"]` for a reward model).
pub fn read_adapter_config_with(path: &Path, allowed: &[&str]) -> Result<LoraConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| Error::format(path, format!("invalid JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| Error::format(path, "expected a JSON object"))?;
    let field = |k: &str| obj.get(k).filter(|x| !x.is_null());
    let bad = |k: &str, msg: String| Error::format(path, format!("field `{k}`: {msg}"));
    match field("peft_type").and_then(|x| x.as_str()) {
        Some("LORA") => {}
        Some(other) => {
            return Err(bad(
                "peft_type",
                format!("is {other:?}; gradus reads LoRA adapters (\"LORA\")"),
            ))
        }
        None => {
            return Err(bad(
                "peft_type",
                "is missing (not a PEFT adapter config?)".into(),
            ))
        }
    }
    let flag = |k: &str| field(k).and_then(|x| x.as_bool()).unwrap_or(false);
    for k in ["use_dora", "lora_bias", "fan_in_fan_out", "use_qalora"] {
        if flag(k) {
            return Err(bad(k, "is true; gradus supports plain LoRA only".into()));
        }
    }
    if let Some(b) = field("bias").and_then(|x| x.as_str()) {
        if b != "none" {
            return Err(bad(
                "bias",
                format!("is {b:?}; gradus supports \"none\" only"),
            ));
        }
    }
    for k in ["rank_pattern", "alpha_pattern"] {
        if field(k)
            .and_then(|x| x.as_object())
            .is_some_and(|m| !m.is_empty())
        {
            return Err(bad(
                k,
                "is not empty; per-module ranks/alphas are not supported".into(),
            ));
        }
    }
    if field("modules_to_save")
        .and_then(|x| x.as_array())
        .is_some_and(|a| {
            a.iter()
                .any(|m| !m.as_str().is_some_and(|m| allowed.contains(&m)))
        })
    {
        return Err(bad(
            "modules_to_save",
            if allowed.is_empty() {
                "is not empty; only LoRA adapters are supported".into()
            } else {
                format!("names modules other than {allowed:?}, which gradus cannot restore here")
            },
        ));
    }
    let r = field("r")
        .and_then(|x| x.as_u64())
        .ok_or_else(|| bad("r", "missing or not a positive integer".into()))? as usize;
    let lora_alpha = match field("lora_alpha") {
        None => 8.0, // PEFT's default
        Some(x) => x
            .as_f64()
            .ok_or_else(|| bad("lora_alpha", "not a number".into()))?,
    };
    let lora_dropout = match field("lora_dropout") {
        None => 0.0,
        Some(x) => x
            .as_f64()
            .ok_or_else(|| bad("lora_dropout", "not a number".into()))?,
    };
    let target_modules = match field("target_modules") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(String::from)
                    .ok_or_else(|| bad("target_modules", "must hold strings".into()))
            })
            .collect::<Result<Vec<_>>>()?,
        Some(Value::String(s)) if s == "all-linear" => {
            LORA_MODULES.iter().map(|s| s.to_string()).collect()
        }
        Some(Value::String(s)) => {
            return Err(bad(
                "target_modules",
                format!("is the pattern {s:?}; gradus reads a list of module names"),
            ))
        }
        _ => {
            return Err(bad(
                "target_modules",
                "missing (expected a list of module names)".into(),
            ))
        }
    };
    let use_rslora = flag("use_rslora");
    let cfg = LoraConfig {
        r,
        lora_alpha,
        lora_dropout,
        target_modules,
        use_rslora,
    };
    cfg.validate()
        .map_err(|e| Error::format(path, e.to_string()))?;
    // PEFT writes the names in set order, which varies; keep the decoder's order.
    Ok(LoraConfig {
        target_modules: canonical_order(&cfg.target_modules),
        ..cfg
    })
}

/// Module names in [`LORA_MODULES`] order (names not in it last, as given).
fn canonical_order(names: &[String]) -> Vec<String> {
    let mut v = names.to_vec();
    v.sort_by_key(|n| {
        LORA_MODULES
            .iter()
            .position(|m| m == n)
            .unwrap_or(usize::MAX)
    });
    v
}

/// Loads a PEFT LoRA adapter directory onto `decoder` (which must have no adapters yet) and
/// returns its config. The adapted layers are those the file holds tensors for (each must be in
/// `target_modules`). Leaves dropout in eval mode, its mask stream seeded with
/// `Rng::derive(0, "lora-dropout")` (restore another with [`Decoder::set_lora_dropout_state`]).
/// Errors name the file and the tensor; on error the decoder is left without adapters.
pub fn load_adapter(dir: &Path, decoder: &mut Decoder) -> Result<LoraConfig> {
    Ok(load_adapter_with(dir, decoder, &[])?.0)
}

/// [`load_adapter`] for an adapter with `modules_to_save` among `extras` (e.g. `["score"]`):
/// returns the config and those modules' tensors, by name without the `base_model.model.`
/// prefix (`score.weight`).
pub fn load_adapter_with(
    dir: &Path,
    decoder: &mut Decoder,
    extras: &[&str],
) -> Result<(LoraConfig, Vec<(String, Tensor)>)> {
    if !dir.is_dir() {
        let what = if dir.exists() {
            "not a directory"
        } else {
            "no such directory"
        };
        return Err(Error::format(
            dir,
            format!(
                "{what} (expected a PEFT adapter directory: {ADAPTER_CONFIG} + {ADAPTER_WEIGHTS})"
            ),
        ));
    }
    let cfg_path = dir.join(ADAPTER_CONFIG);
    if !cfg_path.exists() {
        return Err(Error::format(
            dir,
            format!("no {ADAPTER_CONFIG} in this directory (not a PEFT adapter?)"),
        ));
    }
    let w_path = dir.join(ADAPTER_WEIGHTS);
    if !w_path.exists() {
        let hint = if dir.join("adapter_model.bin").exists() {
            " (adapter_model.bin is a pickle; re-save it with safe_serialization=True)"
        } else {
            ""
        };
        return Err(Error::format(
            dir,
            format!("no {ADAPTER_WEIGHTS} in this directory{hint}"),
        ));
    }
    let cfg = read_adapter_config_with(&cfg_path, extras)?;
    if decoder.has_lora() {
        return Err(Error::msg(
            "the model already has LoRA adapters (use without_adapters() first)",
        ));
    }
    let mut tensors: BTreeMap<String, Tensor> = BTreeMap::new();
    let mut extra_tensors = Vec::new();
    for l in read_safetensors(&w_path, decoder.device())? {
        let module = l
            .name
            .strip_prefix(PEFT_PREFIX)
            .and_then(|n| n.split('.').next())
            .unwrap_or("");
        if extras.contains(&module) {
            extra_tensors.push((l.name[PEFT_PREFIX.len()..].to_string(), l.tensor));
            continue;
        }
        tensors.insert(l.name, l.tensor);
    }
    let dims: Vec<(String, &'static str, usize, usize)> = linears(decoder)
        .into_iter()
        .map(|(p, n, l)| {
            let (o, i) = l.weight.as_tensor().dims2().unwrap_or((0, 0));
            (p, n, o, i)
        })
        .collect();
    let known: BTreeSet<String> = dims
        .iter()
        .flat_map(|(p, ..)| [peft_name(p, 'A'), peft_name(p, 'B')])
        .collect();
    if let Some(unknown) = tensors.keys().find(|k| !known.contains(*k)) {
        return Err(Error::format(
            &w_path,
            format!(
                "unexpected tensor `{unknown}`: not the lora_A/lora_B of a linear layer of this {}-layer decoder \
                 (expected names like `{}`)",
                decoder.cfg.num_hidden_layers,
                peft_name("model.layers.0.self_attn.q_proj", 'A')
            ),
        ));
    }
    let dropout = (cfg.lora_dropout > 0.0).then(|| {
        Arc::new(LoraDropout::new(
            cfg.lora_dropout,
            false,
            Rng::derive(0, "lora-dropout"),
        ))
    });
    let mut adapters = Vec::with_capacity(dims.len());
    for (p, name, out, inp) in &dims {
        let (na, nb) = (peft_name(p, 'A'), peft_name(p, 'B'));
        let (a, b) = match (tensors.remove(&na), tensors.remove(&nb)) {
            (None, None) => {
                adapters.push(None);
                continue;
            }
            (Some(a), Some(b)) => (a, b),
            (Some(_), None) => {
                return Err(Error::MissingTensor {
                    path: w_path.clone(),
                    name: nb,
                    hint: format!(" (`{na}` is present)"),
                })
            }
            (None, Some(_)) => {
                return Err(Error::MissingTensor {
                    path: w_path.clone(),
                    name: na,
                    hint: format!(" (`{nb}` is present)"),
                })
            }
        };
        if !cfg.target_modules.iter().any(|t| t == name) {
            return Err(Error::format(
                &w_path,
                format!("tensor `{na}` adapts `{name}`, which is not in target_modules {:?} of {ADAPTER_CONFIG}", cfg.target_modules),
            ));
        }
        for (n, t, want) in [(&na, &a, [cfg.r, *inp]), (&nb, &b, [*out, cfg.r])] {
            if t.dims() != want {
                return Err(Error::TensorShape {
                    name: n.clone(),
                    expected: want.to_vec(),
                    found: t.dims().to_vec(),
                    context: format!(" in {} (r = {} in {ADAPTER_CONFIG}; does the base model match the adapter?)", w_path.display(), cfg.r),
                });
            }
        }
        adapters.push(Some(LoraAdapter {
            a: Var::from_tensor(&a)?,
            b: Var::from_tensor(&b)?,
            scale: cfg.scale(),
            dropout: dropout.clone(),
        }));
    }
    if adapters.iter().all(|a| a.is_none()) {
        return Err(Error::format(&w_path, "holds no LoRA tensors"));
    }
    for ((_, _, l), ad) in linears_mut(decoder).into_iter().zip(adapters) {
        l.lora = ad;
    }
    Ok((cfg, extra_tensors))
}

/// Whether `dir` is a PEFT adapter directory (an `adapter_config.json` and no `config.json`).
pub fn is_adapter_dir(dir: &Path) -> bool {
    dir.join(ADAPTER_CONFIG).is_file() && !dir.join("config.json").is_file()
}

/// The base checkpoint an adapter directory names in `base_model_name_or_path`: that path as
/// written (relative to the working directory), else relative to the adapter directory. The base
/// is a model directory or itself an adapter directory (an adapter trained on an adapted model).
/// A hub name or a missing path is an error saying to download the base and point at it.
pub fn adapter_base(dir: &Path) -> Result<PathBuf> {
    let cfg_path = dir.join(ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::format(&cfg_path, e.to_string()))?;
    let base = match v.get("base_model_name_or_path") {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
        _ => {
            return Err(Error::format(
                &cfg_path,
                "base_model_name_or_path is not set, so the base model is unknown; merge the \
                 adapter with `gradus lora merge --base BASE --adapter DIR --out OUT`",
            ))
        }
    };
    let as_written = PathBuf::from(&base);
    for cand in [as_written.clone(), dir.join(&as_written)] {
        if cand.join("config.json").is_file() || is_adapter_dir(&cand) {
            return Ok(cand);
        }
    }
    Err(Error::format(
        &cfg_path,
        format!(
            "base_model_name_or_path {base:?} is not a model directory here (nor relative to the \
             adapter); if it is a hub name, download the model and set this field to its local path"
        ),
    ))
}

/// A model directory's decoder: a checkpoint (`config.json`) as it is, or a PEFT adapter
/// directory merged into the base it names ([`adapter_base`]; a base that is an adapter directory
/// is loaded the same way first, up to 8 deep).
pub fn load_model_dir(dir: &Path, device: &Device) -> Result<Decoder> {
    load_model_dir_depth(dir, device, 0)
}

fn load_model_dir_depth(dir: &Path, device: &Device, depth: usize) -> Result<Decoder> {
    if !is_adapter_dir(dir) {
        return crate::hf::load_decoder(dir, device);
    }
    if depth >= 8 {
        return Err(Error::format(
            dir,
            "more than 8 adapters stacked through base_model_name_or_path (a cycle?)",
        ));
    }
    let base = adapter_base(dir)?;
    let mut model = load_model_dir_depth(&base, device, depth + 1)?;
    load_adapter(dir, &mut model)?;
    model.merge_lora()
}

/// Where a model directory's tokenizer is: the directory itself, or for an adapter directory
/// without its own `tokenizer.json`, its base.
pub fn tokenizer_dir(dir: &Path) -> Result<PathBuf> {
    if is_adapter_dir(dir) && !dir.join("tokenizer.json").is_file() {
        return adapter_base(dir);
    }
    Ok(dir.to_path_buf())
}
