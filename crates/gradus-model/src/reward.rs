//! A reward model: the decoder with a scalar (or K-attribute) head on the last non-pad token's
//! hidden state, r = W h_last, W (K, D) named `score.weight` as in transformers'
//! `LlamaForSequenceClassification` (no bias).
//!
//! Saved in transformers' `LlamaForSequenceClassification` / `Qwen2ForSequenceClassification`
//! layout: `model.safetensors` holds the decoder (`model.*`, and `lm_head.weight` when untied, which
//! transformers ignores and the decoder loader keeps, so `gradus score` still reads it) plus
//! `score.weight`; `config.json` names the `...ForSequenceClassification` architecture with
//! `num_labels`, `id2label`/`label2id` and a `pad_token_id` (transformers finds each row's last
//! token with it); `reward_head.json` keeps the label names for gradus. Checkpoints of earlier
//! versions, with the head in `reward_head.safetensors`, still load.
//!
//! A LoRA reward model ([`RewardModel::save_adapter`]) is a PEFT adapter directory with
//! `task_type: SEQ_CLS` and `modules_to_save: ["score"]` (the head trains in full, saved as
//! `base_model.model.score.weight`), plus `reward_head.json`; [`RewardModel::load`] reads it onto
//! the base its `base_model_name_or_path` names, adapters merged.

use std::path::Path;

use gradus_tensor::io::{read_safetensors, write_atomic, write_safetensors};
use gradus_tensor::rng::Rng;
use gradus_tensor::{Error, Result, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::decoder::{Decoder, ForwardInput};
use crate::hf::load_decoder;

pub const HEAD_FILE: &str = "reward_head.safetensors";
pub const HEAD_META: &str = "reward_head.json";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadMeta {
    /// One name per output (e.g. `["reward"]` or attribute names).
    pub labels: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct RewardModel {
    pub decoder: Decoder,
    /// (K, D).
    pub score: Var,
    pub labels: Vec<String>,
}

impl RewardModel {
    /// A fresh head (N(0, initializer_range²), as transformers initialises `score`) on `decoder`.
    pub fn new(decoder: Decoder, labels: Vec<String>, seed: u64) -> Result<Self> {
        if labels.is_empty() {
            return Err(Error::config(
                "head.labels",
                "a reward head needs at least one output",
            ));
        }
        let mut rng = Rng::derive(seed, "reward-head");
        let d = decoder.cfg.hidden_size;
        let w = rng.randn(
            &[labels.len(), d],
            decoder.cfg.initializer_range,
            decoder.device(),
        )?;
        Ok(Self {
            score: Var::from_tensor(&w)?,
            decoder,
            labels,
        })
    }

    /// Scores (B, K) of each row's token at `last[b]` (the last non-pad position).
    pub fn scores(&self, inp: &ForwardInput, last: &[usize]) -> Result<Tensor> {
        let (b, t) = (inp.batch, inp.seq_len);
        if last.len() != b {
            return Err(Error::msg(format!(
                "reward scores: {} last positions for {b} rows",
                last.len()
            )));
        }
        if let Some(&bad) = last.iter().find(|&&i| i >= t) {
            return Err(Error::msg(format!(
                "reward scores: last position {bad} ≥ seq_len {t}"
            )));
        }
        let h = self.decoder.hidden_states(inp, None)?;
        let d = h.dim(2)?;
        let idx: Vec<u32> = last
            .iter()
            .enumerate()
            .map(|(r, &i)| (r * t + i) as u32)
            .collect();
        let idx = Tensor::from_slice(&idx, b, self.decoder.device())?;
        let picked = h.reshape((b * t, d))?.index_select(&idx, 0)?;
        Ok(picked.matmul(&self.score.as_tensor().t()?)?)
    }

    /// The trainable parameters: the decoder's without the LM head, then `score.weight`.
    pub fn params(&self) -> Vec<(String, Var)> {
        let mut v: Vec<(String, Var)> = self
            .decoder
            .named_params()
            .into_iter()
            .filter(|(n, _)| n != "lm_head.weight")
            .collect();
        v.push(("score.weight".into(), self.score.clone()));
        v
    }

    /// Keeps only output `k` of the head (e.g. initialise a scalar BT head from a regression model's
    /// helpfulness output).
    pub fn select_output(&self, k: usize) -> Result<Self> {
        if k >= self.labels.len() {
            return Err(Error::config(
                "head.init_label",
                format!("output {k} does not exist (labels {:?})", self.labels),
            ));
        }
        let row = self.score.as_tensor().narrow(0, k, 1)?.contiguous()?;
        Ok(Self {
            decoder: self.decoder.clone(),
            score: Var::from_tensor(&row)?,
            labels: vec![self.labels[k].clone()],
        })
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut tensors: Vec<(String, Tensor)> = self
            .decoder
            .named_params()
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().clone()))
            .collect();
        tensors.push(("score.weight".into(), self.score.as_tensor().clone()));
        write_safetensors(
            &dir.join("model.safetensors"),
            &tensors,
            crate::hf::store_dtype(self.decoder.cfg.dtype),
        )?;
        let cfg = &self.decoder.cfg;
        let mut v = cfg.to_hf_json();
        if let Some(a) = v["architectures"][0].as_str() {
            v["architectures"] =
                serde_json::json!([a.replace("ForCausalLM", "ForSequenceClassification")]);
        }
        v["num_labels"] = serde_json::json!(self.labels.len());
        let id2label: serde_json::Map<String, serde_json::Value> = self
            .labels
            .iter()
            .enumerate()
            .map(|(i, l)| (i.to_string(), serde_json::json!(l)))
            .collect();
        let label2id: serde_json::Map<String, serde_json::Value> = self
            .labels
            .iter()
            .enumerate()
            .map(|(i, l)| (l.clone(), serde_json::json!(i)))
            .collect();
        v["id2label"] = serde_json::Value::Object(id2label);
        v["label2id"] = serde_json::Value::Object(label2id);
        if v["pad_token_id"].is_null() {
            v["pad_token_id"] = serde_json::json!(cfg.eos_token_id);
        }
        let text = serde_json::to_string_pretty(&v).map_err(|e| Error::msg(e.to_string()))?;
        write_atomic(&dir.join("config.json"), text.as_bytes())?;
        let meta = serde_json::to_string_pretty(&HeadMeta {
            labels: self.labels.clone(),
        })
        .map_err(|e| Error::msg(e.to_string()))?;
        write_atomic(&dir.join(HEAD_META), meta.as_bytes())
    }

    /// Writes the decoder's LoRA adapters with the score head as a module saved in full (PEFT's
    /// `modules_to_save`), `reward_head.json` with the labels, into `dir`.
    pub fn save_adapter(
        &self,
        dir: &Path,
        cfg: &crate::lora::LoraConfig,
        base_model: Option<&str>,
    ) -> Result<()> {
        let extras = crate::lora::AdapterExtras {
            task_type: Some("SEQ_CLS".into()),
            modules_to_save: vec!["score".into()],
            tensors: vec![("score.weight".into(), self.score.as_tensor().clone())],
        };
        crate::lora::save_adapter_dir(dir, &self.decoder, cfg, base_model, &extras)?;
        let meta = serde_json::to_string_pretty(&HeadMeta {
            labels: self.labels.clone(),
        })
        .map_err(|e| Error::msg(e.to_string()))?;
        write_atomic(&dir.join(HEAD_META), meta.as_bytes())
    }

    /// The labels in `dir/reward_head.json`.
    fn read_meta(dir: &Path) -> Result<HeadMeta> {
        let meta_path = dir.join(HEAD_META);
        let text = std::fs::read_to_string(&meta_path).map_err(|e| {
            Error::format(
                &meta_path,
                format!("not a reward model (no readable {HEAD_META}: {e})"),
            )
        })?;
        serde_json::from_str(&text).map_err(|e| Error::format(&meta_path, e.to_string()))
    }

    /// A LoRA reward model written by [`RewardModel::save_adapter`]: the base (a causal LM or a
    /// reward model directory) with the adapters merged and the saved head.
    pub fn load_adapter_dir(dir: &Path) -> Result<Self> {
        let meta = Self::read_meta(dir)?;
        let base = crate::lora::adapter_base(dir)?;
        let mut decoder = load_decoder(&base, &gradus_tensor::Device::Cpu)?;
        let (_, extras) = crate::lora::load_adapter_with(dir, &mut decoder, &["score"])?;
        let path = dir.join(crate::lora::ADAPTER_WEIGHTS);
        let w = extras
            .into_iter()
            .find(|(n, _)| n == "score.weight")
            .ok_or_else(|| Error::MissingTensor {
                path: path.clone(),
                name: format!("{}score.weight", crate::lora::PEFT_PREFIX),
                hint: " (a reward adapter saves its head: modules_to_save = [\"score\"])".into(),
            })?
            .1;
        Self::from_parts(decoder.merge_lora()?, &w, meta.labels, &path)
    }

    /// The model from its decoder and head; the head's shape (labels × hidden) is checked, errors
    /// name `file`.
    fn from_parts(decoder: Decoder, w: &Tensor, labels: Vec<String>, file: &Path) -> Result<Self> {
        let want = [labels.len(), decoder.cfg.hidden_size];
        if w.dims() != want {
            return Err(Error::TensorShape {
                name: "score.weight".into(),
                expected: want.to_vec(),
                found: w.dims().to_vec(),
                context: format!(" in {}", file.display()),
            });
        }
        Ok(Self {
            decoder,
            score: Var::from_tensor(&w.to_dtype(gradus_tensor::DType::F32)?)?,
            labels,
        })
    }

    /// Loads a saved reward model (a full checkpoint, or a LoRA adapter directory on its base);
    /// errors name the missing file or the mismatched tensor.
    pub fn load(dir: &Path) -> Result<Self> {
        if crate::lora::is_adapter_dir(dir) {
            return Self::load_adapter_dir(dir);
        }
        let decoder = load_decoder(dir, &gradus_tensor::Device::Cpu)?;
        let meta = Self::read_meta(dir)?;
        // The head is in model.safetensors (transformers' layout), or in reward_head.safetensors
        // (checkpoints of earlier versions).
        let main = dir.join("model.safetensors");
        let in_main = if main.exists() {
            read_safetensors(&main, decoder.device())?
                .into_iter()
                .find(|l| l.name == "score.weight")
        } else {
            None
        };
        let (w, head_path) = match in_main {
            Some(l) => (l.tensor, main),
            None => {
                let head_path = dir.join(HEAD_FILE);
                if !head_path.exists() {
                    return Err(Error::MissingTensor {
                        path: main,
                        name: "score.weight".into(),
                        hint: format!(" (nor is there a {HEAD_FILE}: not a reward model?)"),
                    });
                }
                let w = read_safetensors(&head_path, decoder.device())?
                    .into_iter()
                    .find(|l| l.name == "score.weight")
                    .ok_or_else(|| Error::MissingTensor {
                        path: head_path.clone(),
                        name: "score.weight".into(),
                        hint: String::new(),
                    })?
                    .tensor;
                (w, head_path)
            }
        };
        Self::from_parts(decoder, &w, meta.labels, &head_path)
    }
}
