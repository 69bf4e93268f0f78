//! The training loop every recipe shares (pretrain, SFT, DPO and its family, reward models):
//! micro-batches → loss normalised by the step's total weight → accumulated gradients → clip →
//! AdamW → log (metrics, evaluation, weight statistics) → atomic checkpoint. It reads top to bottom
//! in [`fit_learner`]; what differs between recipes (parameters, micro-batches, loss, saving) is a
//! [`Learner`]: [`LmLearner`] for pretrain and SFT (through [`fit`]), `DpoLearner` in
//! [`crate::dpo`], `RewardLearner` in [`crate::reward`]. Each recipe's own file (`pretrain.rs`,
//! `sft.rs`, `dpo.rs`, `reward.rs`) reads in order: prepare data → model → learner → loop → report.
//!
//! Exact resume: a checkpoint holds the f32 weights, the optimiser moments and step, the data
//! cursor and the metrics position; `fit(.., resume = true)` restores all of them, so 10 steps +
//! resume + 10 steps writes the same losses as 20 steps in one go (tested).

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::backprop::GradStore;
use gradus_data::pack::{Batch, CursorState, RowCursor};
use gradus_data::tokenizer::Tokenizer;
use gradus_dynamics::run::StatsRecorder;
use gradus_dynamics::stats::{MatrixSelection, NamedTensor};
use gradus_model::decoder::Decoder;
use gradus_model::fast::{FastDecoder, FastOptions};
use gradus_model::hf::{load_decoder, save_decoder};
use gradus_model::WeightDtype;
use gradus_tensor::{Error, Result, Tensor, Var};
use serde_json::{json, Map, Value};

use crate::checkpoint::{latest_checkpoint, save_checkpoint, TrainerState};
use crate::clip::{
    accumulate_grads, clip_flat_grad_norm, clip_grad_norm, flat_grad_norm, global_grad_norm,
};
use crate::interrupt;
use crate::lora::{cursor_with_dropout, dropout_state, restore_dropout, split_cursor, LoraRun};
use crate::metrics::MetricsSink;
use crate::optim::AdamW;
use crate::recipe::{Engine, RecipeConfig};
use crate::report::{write_report, Section};
use crate::rundir::RunDir;

/// Where training batches come from; the cursor is saved in checkpoints.
pub trait BatchSource {
    /// The next micro-batch.
    fn next_batch(&mut self) -> Result<Batch>;
    fn cursor(&self) -> Value;
    fn restore(&mut self, cursor: &Value) -> Result<()>;
}

impl BatchSource for RowCursor {
    fn next_batch(&mut self) -> Result<Batch> {
        RowCursor::next_batch(self)
            .ok_or_else(|| Error::msg("the training data produced no rows (empty dataset?)"))
    }
    fn cursor(&self) -> Value {
        serde_json::to_value(self.state()).unwrap_or(Value::Null)
    }
    fn restore(&mut self, cursor: &Value) -> Result<()> {
        let st: CursorState = serde_json::from_value(cursor.clone()).map_err(|e| {
            Error::msg(format!("trainer_state.json: bad data_cursor {cursor}: {e}"))
        })?;
        RowCursor::restore(self, st)
    }
}

/// What a finished (or resumed-and-finished) run reports.
#[derive(Clone, Debug)]
pub struct FitSummary {
    pub run_dir: PathBuf,
    /// The run's step count at the end of this invocation.
    pub steps: u64,
    /// The step this invocation started at (the resumed checkpoint's, else 0).
    pub start_step: u64,
    /// A resume found the run already at `train.steps`: nothing was trained.
    pub already_complete: bool,
    pub first_loss: Option<f64>,
    pub last_loss: Option<f64>,
    pub tokens_seen: u64,
    pub seconds: f64,
    pub last_checkpoint: Option<PathBuf>,
}

/// The model input of a batch (one definition, shared with evaluation).
pub use gradus_eval::forward_input;

/// Token-weighted negative log-likelihood of one micro-batch, divided by `norm` (the number of
/// target tokens in the whole optimiser step). Returns a scalar tensor.
pub fn batch_loss(model: &Decoder, b: &Batch, norm: f64) -> Result<Tensor> {
    let inp = forward_input(b);
    let lp = model.target_logprobs(&inp, &b.targets)?;
    let w = Tensor::from_slice(&b.loss_weight, b.loss_weight.len(), model.device())?;
    Ok(((lp * w)?.sum_all()?.neg()? / norm.max(1.0))?)
}

/// The metrics group of a parameter: `layer.<i>` for a decoder layer's, else its name without
/// `model.` and `.weight` (`embed_tokens`, `norm`, `lm_head`).
fn weight_group(name: &str) -> String {
    if let Some(rest) = name.strip_prefix("model.layers.") {
        format!("layer.{}", rest.split('.').next().unwrap_or("?"))
    } else {
        name.trim_start_matches("model.")
            .trim_end_matches(".weight")
            .to_string()
    }
}

/// Frobenius norm of each layer's weights (and of the embeddings, final norm and head):
/// `weights/<group>/norm` keys for metrics.jsonl. With LoRA adapters these are the norms of the
/// weights the model computes with, W + s·BA (the frozen base alone never moves), and
/// `weights/<group>/lora_delta_norm` is the norm of the adapters' update s·BA of that group.
pub fn weight_norms(model: &Decoder) -> Result<Map<String, Value>> {
    let ss = |t: &Tensor| -> Result<f64> { Ok(t.sqr()?.sum_all()?.to_scalar::<f32>()? as f64) };
    let mut groups: std::collections::BTreeMap<String, f64> = Default::default();
    let mut deltas: std::collections::BTreeMap<String, f64> = Default::default();
    if model.has_lora() {
        let base: std::collections::BTreeMap<String, Var> =
            model.named_params().into_iter().collect();
        for (name, v) in model.merge_lora()?.named_params() {
            let g = weight_group(&name);
            let w = v.as_tensor();
            *groups.entry(g.clone()).or_default() += ss(w)?;
            if let Some(b) = base.get(&name) {
                let d = ss(&(w - b.as_tensor())?)?;
                if d > 0.0 {
                    *deltas.entry(g).or_default() += d;
                }
            }
        }
    } else {
        for (name, v) in model.named_params() {
            *groups.entry(weight_group(&name)).or_default() += ss(v.as_tensor())?;
        }
    }
    let mut m: Map<String, Value> = groups
        .into_iter()
        .map(|(k, ss)| (format!("weights/{k}/norm"), json!(ss.sqrt())))
        .collect();
    for (k, ss) in deltas {
        m.insert(format!("weights/{k}/lora_delta_norm"), json!(ss.sqrt()));
    }
    Ok(m)
}

pub fn save_model_files(model: &Decoder, tok: &Tokenizer, dir: &Path) -> Result<()> {
    save_decoder(model, dir)?;
    tok.save(dir)?;
    write_generation_config(tok, dir)
}

/// `generation_config.json` as transformers reads it: the token ids generation starts with, stops
/// at and pads with (those the tokenizer has), so `model.generate` stops where gradus does.
pub fn write_generation_config(tok: &Tokenizer, dir: &Path) -> Result<()> {
    let mut g = Map::new();
    g.insert("_from_model_config".into(), Value::Bool(true));
    for (k, id) in [
        ("bos_token_id", tok.bos_id()),
        ("eos_token_id", tok.eos_id()),
        ("pad_token_id", tok.pad_id()),
    ] {
        if let Some(id) = id {
            g.insert(k.into(), Value::from(id));
        }
    }
    let text =
        serde_json::to_string_pretty(&Value::Object(g)).map_err(|e| Error::msg(e.to_string()))?;
    gradus_tensor::io::write_atomic(
        &dir.join("generation_config.json"),
        (text + "\n").as_bytes(),
    )
}

/// What a recipe plugs into the shared loop ([`fit_learner`]): its parameters, micro-batches, loss,
/// and how its model is saved and restored. Pretrain and SFT use [`LmLearner`]; reward models and
/// preference optimisation bring their own.
pub trait Learner {
    type Micro;
    /// The trainable parameters, in a fixed order (the optimiser state is keyed by their names).
    fn params(&self) -> Vec<(String, Var)>;
    fn next_micro(&mut self) -> Result<Self::Micro>;
    /// How much a micro-batch counts in the step's normaliser (target tokens, pairs, ...).
    fn weight(&self, m: &Self::Micro) -> f64;
    /// Tokens the micro-batch holds, for throughput.
    fn tokens(&self, m: &Self::Micro) -> u64;
    /// The micro-batch's loss divided by `norm` (the step's total weight), and its metrics already
    /// scaled the same way, so that summing over a step's micro-batches gives step means.
    fn loss(&mut self, m: &Self::Micro, norm: f64) -> Result<(Tensor, Vec<(String, f64)>)>;
    /// Writes the model files of a checkpoint.
    fn save(&self, dir: &Path) -> Result<()>;
    /// Restores the trainable weights from a checkpoint written by [`Learner::save`].
    fn load(&mut self, dir: &Path) -> Result<()>;
    fn cursor(&self) -> Value;
    fn restore_cursor(&mut self, cursor: &Value) -> Result<()>;
    /// The language model being trained and its tokenizer, for `[eval]` tasks; default none (the
    /// recipe cannot be evaluated as a language model, e.g. a reward model).
    fn eval_model(&self) -> Option<(&Decoder, &Tokenizer)> {
        None
    }
    /// Brings the model that [`Learner::eval_model`] and [`Learner::params`] expose up to date
    /// with the weights being trained (the fast graph holds them while training); default no-op.
    fn sync_weights(&self) -> Result<()> {
        Ok(())
    }
    /// Extra metrics at a logged step (e.g. weight norms); default none.
    fn step_metrics(&mut self, _step: u64) -> Result<Map<String, Value>> {
        Ok(Map::new())
    }
    /// The hand-written training graph this learner runs on, if any (`gradus_model::fast`). When
    /// it returns one, the loop calls [`Learner::fast_loss`] instead of [`Learner::loss`] and
    /// steps the graph's flat trainable parameters; [`Learner::params`] must list the same
    /// parameters in the graph's order (`FastDecoder::trainable`: all, or the LoRA adapters),
    /// so the optimiser state stays interchangeable with the reference path.
    fn fast(&mut self) -> Option<&mut FastDecoder> {
        None
    }
    /// Forward, objective and backward of a micro-batch on the fast graph: adds the gradient of
    /// (loss / `norm`) into the graph's gradients and returns that scaled loss and its metrics,
    /// as [`Learner::loss`] does.
    fn fast_loss(&mut self, _m: &Self::Micro, _norm: f64) -> Result<(f64, Vec<(String, f64)>)> {
        Err(Error::msg("this learner has no fast training graph"))
    }
}

/// Whether the fast graph trains `model` under `engine`: Ok(None) to use the reference graph
/// (with a one-line notice when `auto` falls back), an error when `fast` is required but the
/// model is not covered (`why_not` adds recipe-level reasons).
pub fn fast_engine_for(
    model: &Decoder,
    engine: Engine,
    why_not: Option<String>,
) -> Result<Option<FastDecoder>> {
    if engine == Engine::Reference {
        return Ok(None);
    }
    match why_not.or_else(|| FastDecoder::unsupported(model)) {
        None => Ok(Some(FastDecoder::new(model, FastOptions::default())?)),
        Some(why) if engine == Engine::Fast => Err(Error::config(
            "train.engine",
            format!("`fast` does not cover this run: {why}"),
        )),
        Some(why) => {
            eprintln!("gradus: the fast training graph does not cover this run ({why}); using the reference graph");
            Ok(None)
        }
    }
}

/// Sets `params` from tensors of the same names (a checkpoint's), naming the first missing tensor
/// or the first whose shape differs (with both shapes and the file), before changing any.
pub fn set_params(
    params: &[(String, Var)],
    saved: &[(String, Tensor)],
    origin: &Path,
) -> Result<()> {
    let map: std::collections::HashMap<&str, &Tensor> =
        saved.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut pairs = Vec::with_capacity(params.len());
    for (n, v) in params {
        let t = map.get(n.as_str()).ok_or_else(|| Error::MissingTensor {
            path: origin.to_path_buf(),
            name: n.clone(),
            hint: " (checkpoint written by a different recipe or model?)".into(),
        })?;
        if t.dims() != v.dims() {
            return Err(Error::TensorShape {
                name: n.clone(),
                expected: v.dims().to_vec(),
                found: t.dims().to_vec(),
                context: format!(
                    " in {} (the model now configured differs from the checkpoint's: check model.config)",
                    origin.display()
                ),
            });
        }
        pairs.push((v, *t));
    }
    for (v, t) in pairs {
        v.set(t)?;
    }
    Ok(())
}

/// Token-weighted mean NLL of `batches` (a held-out split), no gradients kept: `val/loss`.
pub fn validation_loss(model: &Decoder, batches: &[Batch]) -> Result<f64> {
    let (mut sum, mut weight) = (0.0f64, 0.0f64);
    for b in batches {
        sum += batch_loss(model, b, 1.0)?.to_scalar::<f32>()? as f64;
        weight += b.num_target_tokens() as f64;
    }
    Ok(if weight > 0.0 { sum / weight } else { f64::NAN })
}

/// Language modelling on packed rows (pretrain, SFT): token-normalised NLL.
pub struct LmLearner<'a> {
    pub model: &'a mut Decoder,
    pub tok: &'a Tokenizer,
    pub data: &'a mut dyn BatchSource,
    pub weight_norms_every: u64,
    /// Held-out batches: `val/loss` every `eval_every` steps and at `last_step` (none when empty).
    pub val: &'a [Batch],
    pub eval_every: u64,
    pub last_step: u64,
    /// The fast training graph (holding the live weights while training) or None for the
    /// candle reference graph.
    pub fast: Option<FastDecoder>,
    /// `[lora]`: only the model's adapters train, and checkpoints are adapter directories.
    pub lora: Option<LoraRun>,
}

impl LmLearner<'_> {
    /// Writes the fast graph's weights back into the model (no-op on the reference graph).
    fn sync_model(&self) -> Result<()> {
        match &self.fast {
            Some(f) => f.write_to(self.model),
            None => Ok(()),
        }
    }
}

/// On the fast graph: the token-weighted NLL of one micro-batch divided by `norm`, with its
/// gradient added into the graph. `∂loss/∂logp[n] = −weight[n] / norm`.
pub fn fast_batch_loss(fast: &mut FastDecoder, b: &Batch, norm: f64) -> Result<f64> {
    let lp = fast.forward(&forward_input(b), &b.targets)?;
    let norm = norm.max(1.0);
    let loss: f64 = -lp
        .iter()
        .zip(&b.loss_weight)
        .map(|(&l, &w)| l as f64 * w as f64)
        .sum::<f64>()
        / norm;
    let dlogp: Vec<f32> = b
        .loss_weight
        .iter()
        .map(|&w| (-(w as f64) / norm) as f32)
        .collect();
    fast.backward(&dlogp)?;
    Ok(loss)
}

impl Learner for LmLearner<'_> {
    type Micro = Batch;
    fn params(&self) -> Vec<(String, Var)> {
        match self.lora {
            Some(_) => self.model.lora_params(),
            None => self.model.named_params(),
        }
    }
    fn next_micro(&mut self) -> Result<Batch> {
        self.data.next_batch()
    }
    fn weight(&self, b: &Batch) -> f64 {
        b.num_target_tokens() as f64
    }
    fn tokens(&self, b: &Batch) -> u64 {
        b.segment_ids.iter().filter(|&&s| s != 0).count() as u64
    }
    fn loss(&mut self, b: &Batch, norm: f64) -> Result<(Tensor, Vec<(String, f64)>)> {
        Ok((batch_loss(self.model, b, norm)?, Vec::new()))
    }
    fn fast(&mut self) -> Option<&mut FastDecoder> {
        self.fast.as_mut()
    }
    fn fast_loss(&mut self, b: &Batch, norm: f64) -> Result<(f64, Vec<(String, f64)>)> {
        let fast = self
            .fast
            .as_mut()
            .ok_or_else(|| Error::msg("LmLearner: no fast graph"))?;
        Ok((fast_batch_loss(fast, b, norm)?, Vec::new()))
    }
    fn save(&self, dir: &Path) -> Result<()> {
        self.sync_model()?;
        match &self.lora {
            Some(l) => l.save(self.model, self.tok, dir),
            None => save_model_files(self.model, self.tok, dir),
        }
    }
    fn load(&mut self, dir: &Path) -> Result<()> {
        if self.lora.is_some() {
            LoraRun::load(self.model, dir)?;
            if let Some(f) = &mut self.fast {
                f.read_from(self.model)?;
            }
            return Ok(());
        }
        let saved = load_decoder(dir, self.model.device())?;
        let tensors: Vec<(String, Tensor)> = saved
            .named_params()
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().clone()))
            .collect();
        set_params(
            &self.model.named_params(),
            &tensors,
            &dir.join("model.safetensors"),
        )?;
        if let Some(f) = &mut self.fast {
            f.read_from(self.model)?;
        }
        Ok(())
    }
    fn cursor(&self) -> Value {
        cursor_with_dropout(
            self.data.cursor(),
            dropout_state(self.model, self.fast.as_ref()),
        )
    }
    fn restore_cursor(&mut self, cursor: &Value) -> Result<()> {
        let (data, dropout) = split_cursor(cursor);
        if let Some(d) = dropout {
            restore_dropout(self.model, self.fast.as_mut(), d)?;
        }
        self.data.restore(data)
    }
    fn eval_model(&self) -> Option<(&Decoder, &Tokenizer)> {
        Some((self.model, self.tok))
    }
    fn sync_weights(&self) -> Result<()> {
        self.sync_model()
    }
    fn step_metrics(&mut self, step: u64) -> Result<Map<String, Value>> {
        let norms_due = self.weight_norms_every > 0 && step.is_multiple_of(self.weight_norms_every);
        let val_due = !self.val.is_empty()
            && ((self.eval_every > 0 && step.is_multiple_of(self.eval_every))
                || step == self.last_step);
        if norms_due || val_due {
            self.sync_model()?;
        }
        let mut m = if norms_due {
            weight_norms(self.model)?
        } else {
            Map::new()
        };
        if val_due {
            let model = &*self.model;
            let loss = crate::lora::without_dropout(model, || validation_loss(model, self.val))?;
            m.insert("val/loss".into(), json!(loss));
        }
        Ok(m)
    }
}

/// Trains `model` in place with the recipe's optimiser, schedule and loop settings.
pub fn fit(
    model: &mut Decoder,
    tok: &Tokenizer,
    data: &mut dyn BatchSource,
    cfg: &RecipeConfig,
    run: &mut RunDir,
) -> Result<FitSummary> {
    fit_validated(model, tok, data, &[], cfg, run)
}

/// [`fit`] that also logs `val/loss` on the held-out `val` batches every `train.eval_every` steps
/// (on logged steps) and at the last step.
pub fn fit_validated(
    model: &mut Decoder,
    tok: &Tokenizer,
    data: &mut dyn BatchSource,
    val: &[Batch],
    cfg: &RecipeConfig,
    run: &mut RunDir,
) -> Result<FitSummary> {
    // Checkpoints keep f32 master weights so a resumed run continues bit-exactly.
    model.cfg.dtype = WeightDtype::F32;
    let lora = LoraRun::apply(cfg.lora.as_ref(), cfg, model)?;
    let fast = fast_engine_for(model, cfg.train.engine, None)?;
    let mut learner = LmLearner {
        model,
        tok,
        data,
        weight_norms_every: cfg.train.weight_norms_every,
        val,
        eval_every: cfg.train.eval_every,
        last_step: cfg.train.steps,
        fast,
        lora,
    };
    let summary = fit_learner(&mut learner, cfg, run)?;
    learner.sync_model()?;
    Ok(summary)
}

/// A Hugging Face model card (`README.md`) in checkpoint `dir`: what the model is, where it
/// started, its data, the metrics last logged in `run_dir/metrics.jsonl` and the whole resolved
/// config, plus how to load it with transformers.
pub fn write_model_card(
    dir: &Path,
    cfg: &RecipeConfig,
    config_text: &str,
    step: u64,
    run_dir: &Path,
) -> Result<()> {
    use std::fmt::Write as _;
    // Every line of the latest step logged (train, eval and statistics lines merged).
    let text =
        std::fs::read_to_string(run_dir.join(crate::metrics::METRICS_FILE)).unwrap_or_default();
    let rows: Vec<Map<String, Value>> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Map<String, Value>>(l).ok())
        .collect();
    let latest = rows.iter().filter_map(|r| r.get("step")?.as_u64()).max();
    let last: Option<Map<String, Value>> = latest.map(|at| {
        let mut m = Map::new();
        for r in rows
            .iter()
            .filter(|r| r.get("step").and_then(Value::as_u64) == Some(at))
        {
            m.extend(r.clone());
        }
        m
    });
    let base = cfg
        .model
        .init_from
        .as_ref()
        .map(|p| p.display().to_string());
    let mut s = String::from("---\nlibrary_name: transformers\ntags:\n- gradus\n");
    if let Some(b) = &base {
        let _ = writeln!(
            s,
            "base_model: {}",
            serde_json::to_string(b).unwrap_or_default()
        );
    }
    s.push_str("---\n\n");
    let _ = writeln!(s, "# {} (step {step})\n", cfg.run.name);
    let _ = writeln!(
        s,
        "Trained with gradus for {step} of {} optimiser steps (seed {}).\n",
        cfg.train.steps, cfg.run.seed
    );
    let _ = writeln!(
        s,
        "- Started from: {}",
        base.as_deref()
            .map(|b| format!("`{b}`"))
            .unwrap_or_else(|| "random initialisation".into())
    );
    let _ = writeln!(s, "- Data: `{}`", cfg.data.source);
    let _ = writeln!(
        s,
        "- Batch: {} × {} accumulation, {} tokens per row; AdamW, peak learning rate {}\n",
        cfg.train.batch_size, cfg.train.grad_accum, cfg.data.seq_len, cfg.train.lr
    );
    if let Some(m) = &last {
        s.push_str("## Metrics last logged\n\n| metric | value |\n|---|---|\n");
        for (k, v) in m {
            if let Some(x) = v.as_f64() {
                let _ = writeln!(s, "| {k} | {x} |");
            }
        }
        s.push('\n');
    }
    // What the checkpoint is decides how to load it: a reward model (sequence classification), a
    // PEFT adapter, or a causal LM.
    let arch = std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v["architectures"][0].as_str().map(str::to_string))
        .unwrap_or_default();
    let (import, class) = if arch.ends_with("ForSequenceClassification") {
        (
            "from transformers import",
            "AutoModelForSequenceClassification",
        )
    } else if gradus_model::lora::is_adapter_dir(dir)
        && dir.join(gradus_model::reward::HEAD_META).exists()
    {
        ("from peft import", "AutoPeftModelForSequenceClassification")
    } else if gradus_model::lora::is_adapter_dir(dir) {
        ("from peft import", "AutoPeftModelForCausalLM")
    } else {
        ("from transformers import", "AutoModelForCausalLM")
    };
    let _ = write!(
        s,
        "## Use\n\n```python\n{import} {class}\nfrom transformers import AutoTokenizer\nmodel = {class}.from_pretrained(\"PATH\")\ntokenizer = AutoTokenizer.from_pretrained(\"PATH\")\n```\n\n"
    );
    s.push_str("## Configuration (`config.resolved.toml`)\n\n```toml\n");
    s.push_str(config_text.trim_end());
    s.push_str("\n```\n");
    gradus_tensor::io::write_atomic(&dir.join("README.md"), s.as_bytes())
}

/// The checkpoint-statistics recorder of a run (`[dynamics] every > 0`), continuing at `step`.
pub(crate) fn open_dynamics(
    every: u64,
    run_dir: &Path,
    step: u64,
) -> Result<Option<StatsRecorder>> {
    match every {
        0 => Ok(None),
        _ => Ok(Some(StatsRecorder::open(
            run_dir,
            Some(step),
            MatrixSelection::Blocks,
        )?)),
    }
}

/// Writes a checkpoint of the learner, optimizer and trainer state at `state.step`, with `card`
/// (the model card) inside it, all in one atomic checkpoint.
fn save_state<L: Learner>(
    learner: &L,
    opt: &AdamW,
    state: &TrainerState,
    run_dir: &Path,
    keep_last: usize,
    card: &dyn Fn(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let mut st = state.clone();
    st.data_cursor = learner.cursor();
    save_checkpoint(
        run_dir,
        st.step,
        |dir| {
            learner.save(dir)?;
            card(dir)?;
            opt.save_state_file(&dir.join("optimizer.safetensors"))?;
            st.save(dir)
        },
        keep_last,
    )
}

/// The shared loop: micro-batches → normalised loss → accumulated gradients → clip → AdamW → log →
/// atomic checkpoint, with exact resume. `run` (from [`crate::rundir::open_run`]) holds the run
/// directory's lock; its `config.resolved.toml` is written once a resumed checkpoint has loaded,
/// so a resume that fails leaves the run as it was. A SIGTERM/SIGINT ([`crate::interrupt`]) ends
/// the loop after the current step with a checkpoint and an error saying how to resume.
pub fn fit_learner<L: Learner>(
    learner: &mut L,
    cfg: &RecipeConfig,
    run: &mut RunDir,
) -> Result<FitSummary> {
    let run_dir = run.path().to_path_buf();
    let t = &cfg.train;
    let params = learner.params();
    let mut opt = AdamW::new(params.clone(), cfg.optimizer)?;
    let mut state = TrainerState::new(0, 0, gradus_tensor::rng::Rng::new(cfg.run.seed).state());

    // 1. Resume: weights, optimiser, data cursor, metrics position. Nothing is written before
    //    the checkpoint has loaded (errors name the tensor and the file).
    if run.resuming() {
        let ck = latest_checkpoint(&run_dir)?
            .ok_or_else(|| Error::format(&run_dir, "the checkpoint to resume from disappeared"))?;
        learner.load(&ck)?;
        opt.load_state_file(&ck.join("optimizer.safetensors"))?;
        state = TrainerState::load(&ck)?;
        learner.restore_cursor(&state.data_cursor)?;
        tracing::info!("resumed from {} at step {}", ck.display(), state.step);
    }
    let start_step = state.step;
    run.write_config()?;
    if run.resuming() && state.step >= t.steps {
        return Ok(FitSummary {
            run_dir,
            steps: state.step,
            start_step,
            already_complete: true,
            first_loss: None,
            last_loss: None,
            tokens_seen: state.tokens_seen,
            seconds: 0.0,
            last_checkpoint: latest_checkpoint(run.path())?,
        });
    }
    let mut metrics = MetricsSink::open_path(&run_dir.join("metrics.jsonl"), Some(state.step))?;
    let eval_hook = crate::eval_hook::EvalHook::new(&cfg.eval)?;
    if eval_hook.is_some() && learner.eval_model().is_none() {
        return Err(Error::config("eval.tasks", "this recipe does not train a language model; evaluate it with `gradus eval reward` instead"));
    }
    let mut dynamics = open_dynamics(cfg.dynamics.every, &run_dir, state.step)?;
    if let (Some(rec), 0) = (dynamics.as_mut(), state.step) {
        record_dynamics(rec, 0, &params)?;
    }
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let bar = if t.progress && tty {
        indicatif::ProgressBar::new(t.steps)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut lines = (t.progress && !tty)
        .then(|| crate::progress::ProgressLines::new(t.progress_every_s, state.step, t.steps));
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_position(state.step);
    let started = Instant::now();
    let mut first_loss = None;
    let mut last_loss = None;
    let mut last_ck = None;

    // 2. The loop.
    let stop_at = if t.stop_after > 0 {
        (state.step + t.stop_after).min(t.steps)
    } else {
        t.steps
    };
    while state.step < stop_at {
        let step_start = Instant::now();
        let micro: Vec<L::Micro> = (0..t.grad_accum)
            .map(|_| learner.next_micro())
            .collect::<Result<_>>()?;
        let norm: f64 = micro.iter().map(|b| learner.weight(b)).sum();
        let mut loss = 0.0f64;
        let mut tokens = 0u64;
        let mut extra: Vec<(String, f64)> = Vec::new();
        let mut add_metrics = |m: Vec<(String, f64)>| {
            for (k, v) in m {
                match extra.iter_mut().find(|(k2, _)| *k2 == k) {
                    Some((_, acc)) => *acc += v,
                    None => extra.push((k, v)),
                }
            }
        };
        let lr = cfg.schedule.lr_at(state.step, t.steps, t.lr);
        let grad_norm = if learner.fast().is_some() {
            // The fast graph: gradients accumulate in place in its flat buffer.
            if let Some(f) = learner.fast() {
                f.zero_grads();
            }
            for b in &micro {
                let (l, m) = learner.fast_loss(b, norm)?;
                loss += l;
                tokens += learner.tokens(b);
                add_metrics(m);
            }
            let f = learner
                .fast()
                .ok_or_else(|| Error::msg("the fast graph went away"))?;
            let lens: Vec<usize> = f.trainable().iter().map(|e| e.len).collect();
            let (p, g) = f.params_and_grads();
            let grad_norm = if t.max_grad_norm > 0.0 {
                clip_flat_grad_norm(g, &lens, t.max_grad_norm)?
            } else {
                flat_grad_norm(g, &lens)
            };
            opt.step_flat(p, g, lr)?;
            grad_norm
        } else {
            let mut grads: Option<GradStore> = None;
            for b in &micro {
                let (l, m) = learner.loss(b, norm)?;
                loss += l.to_scalar::<f32>()? as f64;
                tokens += learner.tokens(b);
                add_metrics(m);
                let g = l.backward()?;
                match grads.as_mut() {
                    None => grads = Some(g),
                    Some(acc) => accumulate_grads(acc, &g, &params)?,
                }
            }
            let mut grads = grads.ok_or_else(|| Error::msg("no micro-batches"))?;
            let grad_norm = if t.max_grad_norm > 0.0 {
                clip_grad_norm(&mut grads, &params, t.max_grad_norm)?
            } else {
                global_grad_norm(&grads, &params)?
            };
            opt.step(&grads, lr)?;
            grad_norm
        };
        state.step += 1;
        state.tokens_seen += tokens;
        if !loss.is_finite() {
            return Err(Error::msg(format!(
                "loss became {loss} at step {}: lower train.lr or check the data",
                state.step
            )));
        }
        first_loss.get_or_insert(loss);
        last_loss = Some(loss);
        let dt = step_start.elapsed().as_secs_f64();

        let eval_due = eval_hook
            .as_ref()
            .is_some_and(|h| h.due(state.step, t.steps));
        let dynamics_due = dynamics.is_some() && state.step.is_multiple_of(cfg.dynamics.every);
        if eval_due || dynamics_due {
            learner.sync_weights()?;
        }
        let mut eval_m = match (&eval_hook, learner.eval_model()) {
            (Some(h), Some((model, tok))) if h.due(state.step, t.steps) => {
                Some(crate::lora::without_dropout(model, || {
                    h.run(model, tok, &run_dir)
                })?)
            }
            _ => None,
        };
        if state.step.is_multiple_of(t.log_every.max(1)) || state.step == t.steps {
            let mut m = Map::new();
            m.insert("train/loss".into(), json!(loss));
            m.insert("train/lr".into(), json!(lr));
            m.insert("train/grad_norm".into(), json!(grad_norm));
            m.insert(
                "train/tokens_per_s".into(),
                json!(tokens as f64 / dt.max(1e-9)),
            );
            m.insert("train/steps_per_s".into(), json!(1.0 / dt.max(1e-9)));
            m.insert("train/tokens_seen".into(), json!(state.tokens_seen));
            for (k, v) in extra {
                m.insert(k, json!(v));
            }
            m.extend(learner.step_metrics(state.step)?);
            if let Some(e) = eval_m.take() {
                m.extend(e);
            }
            metrics.log_values(state.step, &m)?;
        }
        if let Some(e) = eval_m {
            metrics.log_values(state.step, &e)?; // an evaluation step that is not a logging step
        }
        if let Some(rec) = dynamics.as_mut().filter(|_| dynamics_due) {
            record_dynamics(rec, state.step, &params)?;
        }
        bar.set_position(state.step);
        bar.set_message(format!("loss {loss:.4}"));
        if let Some(p) = lines.as_mut() {
            if let Some(line) = p.update(state.step, loss, state.tokens_seen, state.step == stop_at)
            {
                println!("{line}");
            }
        }

        let save_now =
            state.step == stop_at || (t.save_every > 0 && state.step.is_multiple_of(t.save_every));
        let stop = interrupt::requested();
        if save_now || stop {
            let card =
                |dir: &Path| write_model_card(dir, cfg, run.config_text(), state.step, &run_dir);
            last_ck = Some(save_state(
                learner,
                &opt,
                &state,
                &run_dir,
                t.keep_last,
                &card,
            )?);
        }
        if stop {
            bar.finish_and_clear();
            let ck = last_ck.unwrap_or_default();
            return Err(interrupt::interrupted_error(state.step, &ck));
        }
    }
    bar.finish_and_clear();
    Ok(FitSummary {
        run_dir,
        steps: state.step,
        start_step,
        already_complete: false,
        first_loss,
        last_loss,
        tokens_seen: state.tokens_seen,
        seconds: started.elapsed().as_secs_f64(),
        last_checkpoint: last_ck,
    })
}

/// Appends the weight statistics of the trainable parameters at `step` to `dynamics.jsonl`.
fn record_dynamics(rec: &mut StatsRecorder, step: u64, params: &[(String, Var)]) -> Result<()> {
    let tensors = params
        .iter()
        .map(|(name, v)| {
            Ok(NamedTensor {
                name: name.clone(),
                shape: v.dims().to_vec(),
                values: v.as_tensor().flatten_all()?.to_vec1::<f32>()?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    rec.record(step, &tensors)?;
    Ok(())
}

/// Writes the run's `report.html`: loss, learning rate, gradient norm and per-layer weight norms
/// from metrics.jsonl, the resolved config, and any recipe-specific sections after them.
/// One plot per `[eval]` task: its `eval/<task>/<metric>` series over steps (standard errors are
/// left to the final-metrics table).
pub fn eval_plots(rows: &[serde_json::Map<String, serde_json::Value>]) -> Vec<Section> {
    let mut by_task: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for k in rows.iter().flat_map(|r| r.keys()) {
        let Some(rest) = k.strip_prefix("eval/") else {
            continue;
        };
        let Some((task, metric)) = rest.split_once('/') else {
            continue;
        };
        if metric.contains("stderr") {
            continue;
        }
        let keys = by_task.entry(task).or_default();
        if !keys.contains(&k.as_str()) {
            keys.push(k.as_str());
        }
    }
    by_task
        .into_iter()
        .map(|(task, mut keys)| {
            keys.sort();
            Section::plot(&format!("Evaluation during training: {task}"), &keys)
        })
        .collect()
}

pub fn write_run_report(
    run_dir: &Path,
    title: &str,
    cfg: &RecipeConfig,
    extra: &[Section],
) -> Result<PathBuf> {
    let rows = crate::metrics::read_metrics(&run_dir.join("metrics.jsonl")).unwrap_or_default();
    let mut norm_keys: Vec<String> = rows
        .iter()
        .flat_map(|r| {
            r.keys()
                .filter(|k| k.starts_with("weights/"))
                .cloned()
                .collect::<Vec<_>>()
        })
        .collect();
    norm_keys.sort();
    norm_keys.dedup();
    let has_val = rows.iter().any(|r| r.contains_key("val/loss"));
    let loss_keys: &[&str] = if has_val {
        &["train/loss", "val/loss"]
    } else {
        &["train/loss"]
    };
    let mut sections = vec![
        Section::Subtitle(key_settings(cfg)),
        Section::training_plot(
            if has_val {
                "Training and validation loss"
            } else {
                "Training loss"
            },
            loss_keys,
        ),
        Section::plot("Learning rate", &["train/lr"]),
        Section::training_plot("Gradient norm (before clipping)", &["train/grad_norm"]),
    ];
    if !norm_keys.is_empty() {
        let keys: Vec<&str> = norm_keys.iter().map(|s| s.as_str()).collect();
        sections.push(Section::plot("Weight norms per layer", &keys));
    }
    sections.extend(eval_plots(&rows));
    sections.push(Section::Samples {
        title: "Samples during training (greedy, [eval] samples)".into(),
    });
    sections.extend(extra.iter().cloned());
    sections.push(Section::final_metrics("Final metrics", &rows));
    let cfg_toml = toml::to_string_pretty(cfg).unwrap_or_default();
    sections.push(Section::pre("Resolved config", &cfg_toml));
    write_report(run_dir, &format!("{title}: {}", cfg.run.name), &sections)
}

/// One line of a run's key settings for its report: model, start, data, steps and batch,
/// learning rate and schedule.
pub fn key_settings(cfg: &RecipeConfig) -> String {
    let m = &cfg.model.config;
    // A model that starts from a checkpoint has that checkpoint's shape, not `[model.config]`'s.
    let start = match &cfg.model.init_from {
        Some(p) => format!("from {}", p.display()),
        None => format!(
            "{:?} {} layers × {} wide, from scratch",
            m.family, m.num_hidden_layers, m.hidden_size
        ),
    };
    let t = &cfg.train;
    let schedule = serde_json::to_value(cfg.schedule)
        .ok()
        .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_string))
        .unwrap_or_default();
    format!(
        "{start} · data {} (seq {}) · {} steps × batch {}{} · lr {} {schedule}",
        cfg.data.source,
        cfg.data.seq_len,
        t.steps,
        t.batch_size,
        if t.grad_accum > 1 {
            format!(" × {} accumulated", t.grad_accum)
        } else {
            String::new()
        },
        t.lr,
    )
}
