//! The decoder's configuration, with Hugging Face field names so `config.json` maps one to one.
//!
//! Accepts both key styles transformers has written: the older top-level `rope_theta` /
//! `torch_dtype`, and the newer `rope_parameters: {rope_type, rope_theta}` / `dtype`. Writes the
//! newer style plus `torch_dtype`, which both old and new transformers read.

use std::path::Path;

use gradus_tensor::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Which architecture family: they differ only in defaults (Qwen2 always has q/k/v biases).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Llama,
    Qwen2,
}

/// Storage dtype of the weights on disk. Compute is always f32 on the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightDtype {
    #[serde(alias = "float32")]
    F32,
    #[serde(alias = "bfloat16")]
    Bf16,
    #[serde(alias = "float16")]
    F16,
}

impl WeightDtype {
    pub fn hf_name(self) -> &'static str {
        match self {
            WeightDtype::F32 => "float32",
            WeightDtype::Bf16 => "bfloat16",
            WeightDtype::F16 => "float16",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "float32" | "f32" | "fp32" => Some(Self::F32),
            "bfloat16" | "bf16" => Some(Self::Bf16),
            "float16" | "f16" | "fp16" | "half" => Some(Self::F16),
            _ => None,
        }
    }
}

/// The normalisation layer before attention, before the MLP and before the LM head (`norm` in
/// `model.config`). Hu, Chen, Saphra and Cho (2023) compare training maps with and without one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NormKind {
    /// No normalisation: the sub-layer reads the residual stream as it is (no parameters).
    None,
    /// RMSNorm with a weight (Llama, Qwen2): `x / sqrt(mean(x²) + eps) · w`. The default.
    #[default]
    RmsNorm,
    /// LayerNorm with weight and bias: `(x − mean(x)) / sqrt(var(x) + eps) · w + b` (biased
    /// variance, as `torch.nn.LayerNorm`). `rms_norm_eps` is its epsilon.
    LayerNorm,
}

impl NormKind {
    /// The name in configs (`none`, `rmsnorm`, `layernorm`).
    pub fn name(self) -> &'static str {
        match self {
            NormKind::None => "none",
            NormKind::RmsNorm => "rmsnorm",
            NormKind::LayerNorm => "layernorm",
        }
    }
}

impl std::str::FromStr for NormKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(NormKind::None),
            "rmsnorm" => Ok(NormKind::RmsNorm),
            "layernorm" => Ok(NormKind::LayerNorm),
            other => Err(Error::config(
                "norm",
                format!("`{other}`: expected none, rmsnorm or layernorm"),
            )),
        }
    }
}

/// `model_type` written into `config.json` for a decoder whose normalisation Hugging Face's Llama
/// and Qwen2 cannot express (`norm = none | layernorm`): transformers refuses the unknown type
/// instead of silently loading a different model; gradus reads it back.
pub const GRADUS_MODEL_TYPE: &str = "gradus_llama";

/// A Llama/Qwen2-family decoder. B batch, T time, D = hidden_size, H heads, V vocab.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecoderConfig {
    pub family: Family,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    /// Defaults to hidden_size / num_attention_heads.
    pub head_dim: Option<usize>,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// q/k/v projections carry biases (always true for Qwen2; `attention_bias` for Llama).
    pub attention_bias: bool,
    /// Output projection and MLP biases (Llama's `mlp_bias`; rarely used).
    pub mlp_bias: bool,
    pub initializer_range: f64,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub pad_token_id: Option<u32>,
    pub dtype: WeightDtype,
    /// The normalisation layers (default RMSNorm, which is what Llama/Qwen2 checkpoints have).
    pub norm: NormKind,
}

impl Default for DecoderConfig {
    /// A tiny Llama (about 0.2M parameters) that trains in seconds on a CPU.
    fn default() -> Self {
        Self {
            family: Family::Llama,
            vocab_size: 512,
            hidden_size: 64,
            intermediate_size: 256,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 4,
            head_dim: None,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            max_position_embeddings: 1024,
            tie_word_embeddings: false,
            attention_bias: false,
            mlp_bias: false,
            initializer_range: 0.02,
            bos_token_id: None,
            eos_token_id: None,
            pad_token_id: None,
            dtype: WeightDtype::F32,
            norm: NormKind::RmsNorm,
        }
    }
}

fn get_usize(v: &Value, key: &str, path: &Path) -> Result<Option<usize>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x.as_u64().map(|n| Some(n as usize)).ok_or_else(|| {
            Error::format(
                path,
                format!("field `{key}` must be a non-negative integer, found {x}"),
            )
        }),
    }
}
fn get_f64(v: &Value, key: &str, path: &Path) -> Result<Option<f64>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x.as_f64().map(Some).ok_or_else(|| {
            Error::format(path, format!("field `{key}` must be a number, found {x}"))
        }),
    }
}
fn get_bool(v: &Value, key: &str, path: &Path) -> Result<Option<bool>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x.as_bool().map(Some).ok_or_else(|| {
            Error::format(
                path,
                format!("field `{key}` must be true or false, found {x}"),
            )
        }),
    }
}
/// `eos_token_id` may be an int or a list of ints: we keep the first.
fn get_token_id(v: &Value, key: &str) -> Option<u32> {
    match v.get(key)? {
        Value::Number(n) => n.as_u64().map(|x| x as u32),
        Value::Array(a) => a.first().and_then(|x| x.as_u64()).map(|x| x as u32),
        _ => None,
    }
}

impl DecoderConfig {
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Checks the numbers fit together; errors name the field.
    pub fn validate(&self) -> Result<()> {
        let pos = |name: &str, x: usize| {
            if x == 0 {
                Err(Error::config(name, "must be positive"))
            } else {
                Ok(())
            }
        };
        pos("vocab_size", self.vocab_size)?;
        pos("hidden_size", self.hidden_size)?;
        pos("intermediate_size", self.intermediate_size)?;
        pos("num_hidden_layers", self.num_hidden_layers)?;
        pos("num_attention_heads", self.num_attention_heads)?;
        pos("num_key_value_heads", self.num_key_value_heads)?;
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return Err(Error::config(
                "num_key_value_heads",
                format!(
                    "{} does not divide num_attention_heads = {}",
                    self.num_key_value_heads, self.num_attention_heads
                ),
            ));
        }
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(Error::config(
                "hidden_size",
                format!(
                    "{} is not a multiple of num_attention_heads = {}",
                    self.hidden_size, self.num_attention_heads
                ),
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(Error::config(
                "head_dim",
                format!("{} must be even for rotary embeddings", self.head_dim()),
            ));
        }
        if !(self.rms_norm_eps > 0.0) {
            return Err(Error::config("rms_norm_eps", "must be positive"));
        }
        if !(self.rope_theta > 0.0) {
            return Err(Error::config("rope_theta", "must be positive"));
        }
        Ok(())
    }

    /// Parses a Hugging Face `config.json` (Llama or Qwen2 model_type).
    pub fn from_hf_json(text: &str, path: &Path) -> Result<Self> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::format(path, format!("invalid JSON: {e}")))?;
        let model_type = v
            .get("model_type")
            .and_then(|x| x.as_str())
            .unwrap_or("llama");
        let family = match model_type {
            "llama" | "mistral" | GRADUS_MODEL_TYPE => Family::Llama,
            "qwen2" => Family::Qwen2,
            other => {
                return Err(Error::format(
                    path,
                    format!("model_type `{other}` is not supported (gradus loads llama, mistral and qwen2 decoders)"),
                ))
            }
        };
        let need = |key: &str| -> Result<usize> {
            get_usize(&v, key, path)?
                .ok_or_else(|| Error::format(path, format!("missing required field `{key}`")))
        };
        let num_attention_heads = need("num_attention_heads")?;
        let rope_theta = match get_f64(&v, "rope_theta", path)? {
            Some(t) => t,
            None => match v.get("rope_parameters") {
                Some(rp) if rp.is_object() => {
                    if let Some(kind) = rp.get("rope_type").and_then(|x| x.as_str()) {
                        if kind != "default" {
                            return Err(Error::format(
                                path,
                                format!("rope_parameters.rope_type `{kind}` is not supported (only `default`)"),
                            ));
                        }
                    }
                    get_f64(rp, "rope_theta", path)?.unwrap_or(10000.0)
                }
                _ => 10000.0,
            },
        };
        if let Some(rs) = v.get("rope_scaling") {
            if !rs.is_null() {
                return Err(Error::format(
                    path,
                    "rope_scaling is not supported yet (field `rope_scaling`)",
                ));
            }
        }
        let dtype_str = v
            .get("dtype")
            .and_then(|x| x.as_str())
            .or_else(|| v.get("torch_dtype").and_then(|x| x.as_str()))
            .unwrap_or("float32");
        let dtype = WeightDtype::parse(dtype_str).ok_or_else(|| {
            Error::format(
                path,
                format!("field `dtype`: unsupported weight dtype `{dtype_str}`"),
            )
        })?;
        let cfg = Self {
            family,
            vocab_size: need("vocab_size")?,
            hidden_size: need("hidden_size")?,
            intermediate_size: need("intermediate_size")?,
            num_hidden_layers: need("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads: get_usize(&v, "num_key_value_heads", path)?
                .unwrap_or(num_attention_heads),
            head_dim: get_usize(&v, "head_dim", path)?,
            rms_norm_eps: get_f64(&v, "rms_norm_eps", path)?.unwrap_or(1e-6),
            rope_theta,
            max_position_embeddings: get_usize(&v, "max_position_embeddings", path)?
                .unwrap_or(2048),
            tie_word_embeddings: get_bool(&v, "tie_word_embeddings", path)?.unwrap_or(false),
            attention_bias: family == Family::Qwen2
                || get_bool(&v, "attention_bias", path)?.unwrap_or(false),
            mlp_bias: get_bool(&v, "mlp_bias", path)?.unwrap_or(false),
            initializer_range: get_f64(&v, "initializer_range", path)?.unwrap_or(0.02),
            bos_token_id: get_token_id(&v, "bos_token_id"),
            eos_token_id: get_token_id(&v, "eos_token_id"),
            pad_token_id: get_token_id(&v, "pad_token_id"),
            dtype,
            norm: match (model_type, v.get("gradus_norm").and_then(|x| x.as_str())) {
                (GRADUS_MODEL_TYPE, Some(n)) => n
                    .parse()
                    .map_err(|e: Error| Error::format(path, format!("field `gradus_norm`: {e}")))?,
                (GRADUS_MODEL_TYPE, None) => {
                    return Err(Error::format(
                        path,
                        format!("model_type `{GRADUS_MODEL_TYPE}` needs a `gradus_norm` field (none or layernorm)"),
                    ))
                }
                _ => NormKind::RmsNorm,
            },
        };
        let mut cfg = cfg;
        if cfg.head_dim == Some(cfg.hidden_size / cfg.num_attention_heads.max(1)) {
            cfg.head_dim = None; // the default, written explicitly
        }
        cfg.validate()
            .map_err(|e| Error::format(path, e.to_string()))?;
        Ok(cfg)
    }

    pub fn from_hf_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_hf_json(&text, path)
    }

    /// The `config.json` Hugging Face transformers reads.
    pub fn to_hf_json(&self) -> Value {
        let (arch, model_type) = match self.family {
            Family::Llama => ("LlamaForCausalLM", "llama"),
            Family::Qwen2 => ("Qwen2ForCausalLM", "qwen2"),
        };
        let mut v = json!({
            "architectures": [arch],
            "model_type": model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim(),
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta},
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "initializer_range": self.initializer_range,
            "dtype": self.dtype.hf_name(),
            "torch_dtype": self.dtype.hf_name(),
            "use_cache": true,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
        });
        if self.norm != NormKind::RmsNorm {
            // Not expressible as a transformers Llama/Qwen2: an unknown model_type makes
            // `from_pretrained` refuse rather than load RMSNorm weights that are not there.
            v["architectures"] = json!(["GradusLlamaForCausalLM"]);
            v["model_type"] = json!(GRADUS_MODEL_TYPE);
            v["gradus_norm"] = json!(self.norm.name());
            v["gradus_note"] = json!(format!(
                "norm = {}: a gradus decoder that Hugging Face Llama/Qwen2 cannot express (they only have RMSNorm); load it with gradus",
                self.norm.name()
            ));
        }
        if self.family == Family::Llama {
            v["attention_bias"] = json!(self.attention_bias);
            v["mlp_bias"] = json!(self.mlp_bias);
            v["attention_dropout"] = json!(0.0);
        } else {
            v["use_sliding_window"] = json!(false);
            v["attention_dropout"] = json!(0.0);
        }
        v
    }

    /// Parameters in the decoder (embeddings included, tied head counted once).
    pub fn num_params(&self) -> usize {
        let d = self.hidden_size;
        let hd = self.head_dim();
        let q = self.num_attention_heads * hd;
        let kv = self.num_key_value_heads * hd;
        let norm = self.norm_params();
        let mut per_layer = d * q + 2 * d * kv + q * d + 3 * d * self.intermediate_size + 2 * norm;
        if self.attention_bias {
            per_layer += q + 2 * kv;
        }
        let head = if self.tie_word_embeddings {
            0
        } else {
            self.vocab_size * d
        };
        self.vocab_size * d + self.num_hidden_layers * per_layer + norm + head
    }

    /// Parameters of one normalisation layer: 0 (none), D (rmsnorm), 2·D (layernorm).
    pub fn norm_params(&self) -> usize {
        match self.norm {
            NormKind::None => 0,
            NormKind::RmsNorm => self.hidden_size,
            NormKind::LayerNorm => 2 * self.hidden_size,
        }
    }
}
