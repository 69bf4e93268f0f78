//! Flat parameter storage: every parameter of the decoder in one `Vec<f32>`, in the order of
//! [`Decoder::named_params`] followed by the LoRA adapters of [`Decoder::lora_params`] (PEFT's
//! names, A before B, modules in checkpoint order), so the optimiser's state, keyed by those
//! names, lines up segment by segment with either list; plus the gradient buffer of the trained
//! part of that layout.

use gradus_tensor::{Error, Result, Tensor};

use crate::decoder::Decoder;

/// One parameter's place in the flat buffers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Hugging Face name (`model.layers.0.self_attn.q_proj.weight`).
    pub name: String,
    pub shape: Vec<usize>,
    pub offset: usize,
    pub len: usize,
}

/// Names, shapes and offsets of every parameter in the flat buffers.
#[derive(Clone, Debug, Default)]
pub struct ParamLayout {
    pub entries: Vec<Entry>,
    pub total: usize,
    /// How many of `entries` are base weights (the rest are LoRA adapters).
    pub base_entries: usize,
    /// Elements of the base weights (the adapters start at this offset).
    pub base_total: usize,
}

/// The model's base parameters then its adapters: the flat order.
fn all_params(model: &Decoder) -> Vec<(String, gradus_tensor::Var)> {
    let mut v = model.named_params();
    v.extend(model.lora_params());
    v
}

impl ParamLayout {
    /// The layout of `model.named_params()` followed by `model.lora_params()`.
    pub fn of(model: &Decoder) -> Self {
        let mut entries = Vec::new();
        let mut offset = 0;
        let base_entries = model.named_params().len();
        let mut base_total = 0;
        for (i, (name, v)) in all_params(model).into_iter().enumerate() {
            if i == base_entries {
                base_total = offset;
            }
            let len = v.elem_count();
            entries.push(Entry {
                name,
                shape: v.dims().to_vec(),
                offset,
                len,
            });
            offset += len;
        }
        if entries.len() == base_entries {
            base_total = offset;
        }
        Self {
            entries,
            total: offset,
            base_entries,
            base_total,
        }
    }

    /// The index of the parameter called `name`.
    pub fn index(&self, name: &str) -> Result<usize> {
        self.entries
            .iter()
            .position(|e| e.name == name)
            .ok_or_else(|| Error::msg(format!("fast decoder: no parameter `{name}` in the model")))
    }

    /// The index of `name` if the model has it (biases).
    pub fn find(&self, name: &str) -> Option<usize> {
        self.entries.iter().position(|e| e.name == name)
    }

    /// The element range of entry `i`.
    pub fn range(&self, i: usize) -> std::ops::Range<usize> {
        let e = &self.entries[i];
        e.offset..e.offset + e.len
    }
}

/// Copies the model's parameters into `dst` (laid out by `layout`), checking names and shapes.
pub fn read_params(layout: &ParamLayout, model: &Decoder, dst: &mut [f32]) -> Result<()> {
    let params = all_params(model);
    if params.len() != layout.entries.len() {
        return Err(Error::msg(format!(
            "fast decoder: the model has {} parameters, the flat layout {}",
            params.len(),
            layout.entries.len()
        )));
    }
    for ((name, v), e) in params.iter().zip(&layout.entries) {
        if *name != e.name || v.dims() != e.shape.as_slice() {
            return Err(Error::TensorShape {
                name: name.clone(),
                expected: e.shape.clone(),
                found: v.dims().to_vec(),
                context: format!(" (fast decoder layout has `{}` here)", e.name),
            });
        }
        let data: Vec<f32> = v
            .as_tensor()
            .flatten_all()?
            .to_dtype(gradus_tensor::DType::F32)?
            .to_vec1()?;
        dst[e.offset..e.offset + e.len].copy_from_slice(&data);
    }
    Ok(())
}

/// Writes `src` (laid out by `layout`) into the model's Vars.
pub fn write_params(layout: &ParamLayout, src: &[f32], model: &Decoder) -> Result<()> {
    let params = all_params(model);
    if params.len() != layout.entries.len() {
        return Err(Error::msg(format!(
            "fast decoder: the model has {} parameters, the flat layout {}",
            params.len(),
            layout.entries.len()
        )));
    }
    for ((name, v), e) in params.iter().zip(&layout.entries) {
        if *name != e.name {
            return Err(Error::msg(format!(
                "fast decoder: parameter order differs (`{name}` vs `{}`)",
                e.name
            )));
        }
        let t = Tensor::from_slice(
            &src[e.offset..e.offset + e.len],
            e.shape.as_slice(),
            model.device(),
        )?;
        v.set(&t.to_dtype(v.dtype())?)?;
    }
    Ok(())
}
