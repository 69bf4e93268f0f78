//! Hugging Face checkpoint directories: `config.json` + `model.safetensors` (or a sharded
//! `model.safetensors.index.json`), weights in f32/bf16/f16.
//!
//! Loading validates every tensor's name and shape against the config and names the tensor and
//! the file at fault. Saving writes the same layout, in the config's dtype, so
//! `AutoModelForCausalLM.from_pretrained(dir)` loads what gradus wrote.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use gradus_tensor::io::{read_safetensors, write_atomic, write_safetensors, StoreDtype};
use gradus_tensor::{Device, Error, Result, Tensor};

use crate::config::{DecoderConfig, WeightDtype};
use crate::decoder::{param_shapes, Decoder};

/// Tensors in a checkpoint that carry no weights of ours and are skipped silently.
fn ignorable(name: &str) -> bool {
    name.ends_with("rotary_emb.inv_freq")
}

pub(crate) fn store_dtype(d: WeightDtype) -> StoreDtype {
    match d {
        WeightDtype::F32 => StoreDtype::F32,
        WeightDtype::Bf16 => StoreDtype::Bf16,
        WeightDtype::F16 => StoreDtype::F16,
    }
}

/// The weight files of a checkpoint dir: one `model.safetensors`, or the shards an index lists.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    if single.exists() {
        return Ok(vec![single]);
    }
    if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::format(&index, format!("invalid JSON: {e}")))?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::format(&index, "missing object field `weight_map`"))?;
        let mut files: Vec<String> = map
            .values()
            .filter_map(|x| x.as_str().map(String::from))
            .collect();
        files.sort();
        files.dedup();
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    Err(Error::format(
        dir,
        "no model.safetensors or model.safetensors.index.json in this directory",
    ))
}

/// Named tensors with the file each came from.
pub type WeightsWithFiles = (Vec<(String, Tensor)>, HashMap<String, PathBuf>);

/// Reads all weights of a checkpoint dir (f32), with the file each came from.
pub fn read_weights(dir: &Path, device: &Device) -> Result<WeightsWithFiles> {
    let mut tensors = Vec::new();
    let mut origin = HashMap::new();
    for f in weight_files(dir)? {
        if !f.exists() {
            return Err(Error::format(
                &f,
                "shard listed in model.safetensors.index.json is missing",
            ));
        }
        for l in read_safetensors(&f, device)? {
            if ignorable(&l.name) {
                continue;
            }
            origin.insert(l.name.clone(), f.clone());
            tensors.push((l.name, l.tensor));
        }
    }
    Ok((tensors, origin))
}

/// Loads a decoder from a Hugging Face checkpoint directory.
pub fn load_decoder(dir: &Path, device: &Device) -> Result<Decoder> {
    if !dir.is_dir() {
        let what = if dir.exists() {
            "not a directory"
        } else {
            "no such directory"
        };
        return Err(Error::format(
            dir,
            format!("{what} (expected a Hugging Face checkpoint directory: config.json + model.safetensors)"),
        ));
    }
    let cfg = DecoderConfig::from_hf_file(&dir.join("config.json"))?;
    let (mut tensors, origin) = read_weights(dir, device)?;
    // A sequence-classification head (a gradus reward model in transformers' layout) is not
    // part of the decoder: skip it, as transformers' causal-LM class does.
    tensors.retain(|(n, _)| n != "score.weight");
    let expected: BTreeMap<String, Vec<usize>> = param_shapes(&cfg).into_iter().collect();
    for (name, t) in &tensors {
        let file = origin
            .get(name)
            .cloned()
            .unwrap_or_else(|| dir.to_path_buf());
        match expected.get(name) {
            Some(shape) if shape.as_slice() != t.dims() => {
                return Err(Error::TensorShape {
                    name: name.clone(),
                    expected: shape.clone(),
                    found: t.dims().to_vec(),
                    context: format!(" in {} (config.json says otherwise)", file.display()),
                })
            }
            Some(_) => {}
            None if name == "lm_head.weight" && cfg.tie_word_embeddings => {}
            None => {
                return Err(Error::format(
                    file,
                    format!(
                        "unexpected tensor `{name}` (not part of a {:?} decoder with this config)",
                        cfg.family
                    ),
                ))
            }
        }
    }
    let present: std::collections::HashSet<&str> =
        tensors.iter().map(|(n, _)| n.as_str()).collect();
    if let Some(missing) = expected.keys().find(|n| !present.contains(n.as_str())) {
        return Err(Error::MissingTensor {
            path: dir.to_path_buf(),
            name: missing.clone(),
            hint: " (the checkpoint does not match config.json)".into(),
        });
    }
    Decoder::from_named(&cfg, tensors, device, &dir.display().to_string())
}

/// Writes `config.json` and `model.safetensors` (in `cfg.dtype`) into `dir`, each atomically.
pub fn save_decoder(model: &Decoder, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tensors: Vec<(String, Tensor)> = model
        .named_params()
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().clone()))
        .collect();
    write_safetensors(
        &dir.join("model.safetensors"),
        &tensors,
        store_dtype(model.cfg.dtype),
    )?;
    let cfg = serde_json::to_string_pretty(&model.cfg.to_hf_json())
        .map_err(|e| Error::msg(e.to_string()))?;
    write_atomic(&dir.join("config.json"), cfg.as_bytes())?;
    Ok(())
}
