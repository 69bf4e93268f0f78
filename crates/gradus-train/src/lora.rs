//! `[lora]` in the recipes (Hu et al. 2021): train low-rank adapters on a frozen base instead of
//! the full model. Shared by `train sft`, `train pretrain` and `train dpo`:
//! - [`LoraRun::apply`] attaches fresh adapters (`gradus_model::lora`, PEFT's initialisation,
//!   A drawn from `Rng::derive(run.seed, "lora")`) to the model loaded from `model.init_from`;
//!   the learner then hands the optimiser `lora_params()` only, and the fast graph
//!   (`gradus_model::fast`) computes no base weight gradients;
//! - checkpoints are PEFT adapter directories ([`LoraRun::save`]: `adapter_config.json` with
//!   `base_model_name_or_path` = `model.init_from`, `adapter_model.safetensors`, the tokenizer)
//!   beside gradus' resume state, so `gradus generate/score/eval --model <checkpoint>` and
//!   PEFT's `AutoPeftModelForCausalLM` load them on the base;
//! - the adapter dropout's mask stream is part of the data cursor ([`cursor_with_dropout`]), so a
//!   resumed run draws the masks an uninterrupted one would.

use std::path::Path;

use gradus_data::tokenizer::Tokenizer;
use gradus_model::decoder::Decoder;
use gradus_model::fast::FastDecoder;
use gradus_model::lora::{save_adapter_with_base, ADAPTER_WEIGHTS};
use gradus_model::LoraConfig;
use gradus_tensor::rng::{Rng, RngState};
use gradus_tensor::{Error, Result, Tensor};
use serde_json::{json, Value};

use crate::checkpoint::SavedRng;
use crate::recipe::RecipeConfig;

/// A run that trains LoRA adapters: their config and the base checkpoint they adapt.
#[derive(Clone, Debug)]
pub struct LoraRun {
    pub cfg: LoraConfig,
    /// `base_model_name_or_path` of the saved adapters (`model.init_from` as written).
    pub base: Option<String>,
}

impl LoraRun {
    /// Attaches fresh adapters for `lora` (None: a full fine-tuning run, nothing to do), in
    /// training mode. Errors if the recipe starts from scratch: an adapter adapts a trained base.
    pub fn apply(
        lora: Option<&LoraConfig>,
        recipe: &RecipeConfig,
        model: &mut Decoder,
    ) -> Result<Option<Self>> {
        let Some(l) = lora else {
            return Ok(None);
        };
        l.validate()?;
        if recipe.model.init_from.is_none() {
            return Err(Error::config(
                "lora",
                "LoRA adapts a trained model: set model.init_from (the base the adapter is saved against)",
            ));
        }
        model.apply_lora(l, &mut Rng::derive(recipe.run.seed, "lora"))?;
        model.set_lora_training(true);
        Ok(Some(Self {
            cfg: l.clone(),
            base: recipe
                .model
                .init_from
                .as_ref()
                .map(|p| p.display().to_string()),
        }))
    }

    /// Writes the adapter directory (PEFT layout) and the tokenizer into `dir`. The model must
    /// hold the current adapter weights (sync the fast graph first).
    pub fn save(&self, model: &Decoder, tok: &Tokenizer, dir: &Path) -> Result<()> {
        save_adapter_with_base(dir, model, &self.cfg, self.base.as_deref())?;
        tok.save(dir)
    }

    /// Sets the model's adapter weights from a checkpoint written by [`LoraRun::save`] (errors
    /// name the missing tensor or the shape that differs, and the file).
    pub fn load(model: &Decoder, dir: &Path) -> Result<()> {
        let f = dir.join(ADAPTER_WEIGHTS);
        let t: Vec<(String, Tensor)> = gradus_tensor::io::read_safetensors(&f, model.device())?
            .into_iter()
            .map(|l| (l.name, l.tensor))
            .collect();
        crate::trainer::set_params(&model.lora_params(), &t, &f)
    }
}

/// The live adapter-dropout stream: the fast graph's when it trains, else the model's.
pub fn dropout_state(model: &Decoder, fast: Option<&FastDecoder>) -> Option<RngState> {
    match fast {
        Some(f) => f.lora_dropout_state(),
        None => model.lora_dropout_state(),
    }
}

/// Restores the adapter-dropout stream into the model and the fast graph.
pub fn restore_dropout(
    model: &Decoder,
    fast: Option<&mut FastDecoder>,
    saved: &Value,
) -> Result<()> {
    let st: SavedRng = serde_json::from_value(saved.clone())
        .map_err(|e| Error::msg(format!("trainer_state.json: bad lora_dropout {saved}: {e}")))?;
    let st = st.to_state()?;
    model.set_lora_dropout_state(st)?;
    if let Some(f) = fast {
        f.set_lora_dropout_state(st)?;
    }
    Ok(())
}

/// A learner's data cursor with the adapter-dropout stream beside it: `cursor` unchanged when
/// there is no dropout (checkpoints of full fine-tuning keep their format), else
/// `{"data": cursor, "lora_dropout": state}`.
pub fn cursor_with_dropout(cursor: Value, state: Option<RngState>) -> Value {
    match state {
        None => cursor,
        Some(s) => json!({"data": cursor, "lora_dropout": SavedRng::from(s)}),
    }
}

/// Splits a cursor written by [`cursor_with_dropout`] into the data cursor and the saved
/// dropout stream (None when it has none).
pub fn split_cursor(cursor: &Value) -> (&Value, Option<&Value>) {
    match (cursor.get("data"), cursor.get("lora_dropout")) {
        (Some(d), Some(l)) if cursor.as_object().is_some_and(|o| o.len() == 2) => (d, Some(l)),
        _ => (cursor, None),
    }
}

/// Runs `f` with the adapter dropout off (evaluation, validation, references), restoring the
/// mode after.
pub fn without_dropout<T>(model: &Decoder, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let was = model.lora_dropout_settings().map(|(_, t)| t);
    model.set_lora_training(false);
    let r = f();
    if let Some(t) = was {
        model.set_lora_training(t);
    }
    r
}
