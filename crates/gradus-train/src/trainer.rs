//! The training loop both recipes share: micro-batches → token-normalised loss → accumulated
//! gradients → clip → AdamW → log → atomic checkpoint. It reads top to bottom in [`fit`].
//!
//! Exact resume: a checkpoint holds the f32 weights, the optimiser moments and step, the data
//! cursor and the metrics position; `fit(.., resume = true)` restores all of them, so 10 steps +
//! resume + 10 steps writes the same losses as 20 steps in one go (tested).

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::backprop::GradStore;
use gradus_data::pack::{Batch, CursorState, RowCursor};
use gradus_data::tokenizer::Tokenizer;
use gradus_model::decoder::{Decoder, ForwardInput};
use gradus_model::hf::{load_decoder, save_decoder};
use gradus_model::WeightDtype;
use gradus_tensor::{Error, Result, Tensor};
use serde_json::{json, Map, Value};

use crate::checkpoint::{latest_checkpoint, save_checkpoint, TrainerState};
use crate::clip::{accumulate_grads, clip_grad_norm, global_grad_norm};
use crate::metrics::MetricsSink;
use crate::optim::AdamW;
use crate::recipe::RecipeConfig;
use crate::report::{write_report, Section};

/// Where training batches come from; the cursor is saved in checkpoints.
pub trait BatchSource {
    /// The next micro-batch.
    fn next_batch(&mut self) -> Result<Batch>;
    fn cursor(&self) -> Value;
    fn restore(&mut self, cursor: &Value) -> Result<()>;
}

impl BatchSource for RowCursor {
    fn next_batch(&mut self) -> Result<Batch> {
        RowCursor::next_batch(self).ok_or_else(|| Error::msg("the training data produced no rows (empty dataset?)"))
    }
    fn cursor(&self) -> Value {
        serde_json::to_value(self.state()).unwrap_or(Value::Null)
    }
    fn restore(&mut self, cursor: &Value) -> Result<()> {
        let st: CursorState = serde_json::from_value(cursor.clone())
            .map_err(|e| Error::msg(format!("trainer_state.json: bad data_cursor {cursor}: {e}")))?;
        RowCursor::restore(self, st)
    }
}

/// What a finished (or resumed-and-finished) run reports.
#[derive(Clone, Debug)]
pub struct FitSummary {
    pub run_dir: PathBuf,
    pub steps: u64,
    pub first_loss: Option<f64>,
    pub last_loss: Option<f64>,
    pub tokens_seen: u64,
    pub seconds: f64,
    pub last_checkpoint: Option<PathBuf>,
}

/// Token-weighted negative log-likelihood of one micro-batch, divided by `norm` (the number of
/// target tokens in the whole optimiser step). Returns a scalar tensor.
pub fn batch_loss(model: &Decoder, b: &Batch, norm: f64) -> Result<Tensor> {
    let inp = ForwardInput {
        input_ids: &b.input_ids,
        batch: b.rows,
        seq_len: b.seq_len,
        position_ids: Some(&b.position_ids),
        segment_ids: Some(&b.segment_ids),
    };
    let lp = model.target_logprobs(&inp, &b.targets)?;
    let w = Tensor::from_slice(&b.loss_weight, b.loss_weight.len(), model.device())?;
    Ok(((lp * w)?.sum_all()?.neg()? / norm.max(1.0))?)
}

/// Frobenius norm of each layer's weights (and of the embeddings, final norm and head):
/// `weights/<group>/norm` keys for metrics.jsonl.
pub fn weight_norms(model: &Decoder) -> Result<Map<String, Value>> {
    let mut groups: std::collections::BTreeMap<String, f64> = Default::default();
    for (name, v) in model.named_params() {
        let g = if let Some(rest) = name.strip_prefix("model.layers.") {
            format!("layer.{}", rest.split('.').next().unwrap_or("?"))
        } else {
            name.trim_start_matches("model.").trim_end_matches(".weight").to_string()
        };
        let ss = v.as_tensor().sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        *groups.entry(g).or_default() += ss;
    }
    Ok(groups.into_iter().map(|(k, ss)| (format!("weights/{k}/norm"), json!(ss.sqrt()))).collect())
}

fn save_model_files(model: &Decoder, tok: &Tokenizer, dir: &Path) -> Result<()> {
    save_decoder(model, dir)?;
    tok.save(dir)
}

/// Trains `model` in place with the recipe's optimiser, schedule and loop settings.
pub fn fit(
    model: &mut Decoder,
    tok: &Tokenizer,
    data: &mut dyn BatchSource,
    cfg: &RecipeConfig,
    resume: bool,
) -> Result<FitSummary> {
    let run_dir = cfg.run_dir();
    std::fs::create_dir_all(&run_dir).map_err(|e| Error::io(&run_dir, e))?;
    let t = &cfg.train;
    // Checkpoints keep f32 master weights so a resumed run continues bit-exactly.
    model.cfg.dtype = WeightDtype::F32;
    let params = model.named_params();
    let mut opt = AdamW::new(params.clone(), cfg.optimizer)?;
    let mut state = TrainerState::new(0, 0, gradus_tensor::rng::Rng::new(cfg.run.seed).state());

    // 1. Resume: weights, optimiser, data cursor, metrics position.
    if resume {
        if let Some(ck) = latest_checkpoint(&run_dir)? {
            let saved = load_decoder(&ck, model.device())?;
            for ((n, v), (n2, s)) in params.iter().zip(saved.named_params()) {
                if *n != n2 {
                    return Err(Error::msg(format!("{}: parameter order differs ({n} vs {n2})", ck.display())));
                }
                v.set(s.as_tensor())?;
            }
            opt.load_state_file(&ck.join("optimizer.safetensors"))?;
            state = TrainerState::load(&ck)?;
            data.restore(&state.data_cursor)?;
            tracing::info!("resumed from {} at step {}", ck.display(), state.step);
        }
    }
    let mut metrics = MetricsSink::open_path(&run_dir.join("metrics.jsonl"), Some(state.step))?;
    let bar = if t.progress {
        indicatif::ProgressBar::new(t.steps)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta}]")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_position(state.step);
    let started = Instant::now();
    let mut first_loss = None;
    let mut last_loss = None;
    let mut last_ck = None;

    // 2. The loop.
    let stop_at = if t.stop_after > 0 { (state.step + t.stop_after).min(t.steps) } else { t.steps };
    while state.step < stop_at {
        let step_start = Instant::now();
        let micro: Vec<Batch> = (0..t.grad_accum).map(|_| data.next_batch()).collect::<Result<_>>()?;
        let norm: f64 = micro.iter().map(|b| b.num_target_tokens() as f64).sum();
        let mut grads: Option<GradStore> = None;
        let mut loss = 0.0f64;
        let mut tokens = 0u64;
        for b in &micro {
            let l = batch_loss(model, b, norm)?;
            loss += l.to_scalar::<f32>()? as f64;
            tokens += b.segment_ids.iter().filter(|&&s| s != 0).count() as u64;
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
        let lr = cfg.schedule.lr_at(state.step, t.steps, t.lr);
        opt.step(&grads, lr)?;
        state.step += 1;
        state.tokens_seen += tokens;
        if !loss.is_finite() {
            return Err(Error::msg(format!("loss became {loss} at step {}: lower train.lr or check the data", state.step)));
        }
        first_loss.get_or_insert(loss);
        last_loss = Some(loss);
        let dt = step_start.elapsed().as_secs_f64();

        if state.step % t.log_every.max(1) == 0 || state.step == t.steps {
            let mut m = Map::new();
            m.insert("train/loss".into(), json!(loss));
            m.insert("train/lr".into(), json!(lr));
            m.insert("train/grad_norm".into(), json!(grad_norm));
            m.insert("train/tokens_per_s".into(), json!(tokens as f64 / dt.max(1e-9)));
            m.insert("train/tokens_seen".into(), json!(state.tokens_seen));
            if t.weight_norms_every > 0 && state.step % t.weight_norms_every == 0 {
                m.extend(weight_norms(model)?);
            }
            metrics.log_values(state.step, &m)?;
        }
        bar.set_position(state.step);
        bar.set_message(format!("loss {loss:.4}"));

        let save_now = state.step == stop_at || (t.save_every > 0 && state.step % t.save_every == 0);
        if save_now {
            state.data_cursor = data.cursor();
            let st = state.clone();
            let m: &Decoder = model;
            let o = &opt;
            last_ck = Some(save_checkpoint(
                &run_dir,
                state.step,
                |dir| {
                    save_model_files(m, tok, dir)?;
                    o.save_state_file(&dir.join("optimizer.safetensors"))?;
                    st.save(dir)
                },
                t.keep_last,
            )?);
        }
    }
    bar.finish_and_clear();
    Ok(FitSummary {
        run_dir,
        steps: state.step,
        first_loss,
        last_loss,
        tokens_seen: state.tokens_seen,
        seconds: started.elapsed().as_secs_f64(),
        last_checkpoint: last_ck,
    })
}

/// Writes the run's `report.html`: loss, learning rate, gradient norm and per-layer weight norms
/// from metrics.jsonl, the resolved config, and any recipe-specific sections after them.
pub fn write_run_report(run_dir: &Path, title: &str, cfg: &RecipeConfig, extra: &[Section]) -> Result<PathBuf> {
    let rows = crate::metrics::read_metrics(&run_dir.join("metrics.jsonl")).unwrap_or_default();
    let mut norm_keys: Vec<String> = rows
        .iter()
        .flat_map(|r| r.keys().filter(|k| k.starts_with("weights/")).cloned().collect::<Vec<_>>())
        .collect();
    norm_keys.sort();
    norm_keys.dedup();
    let mut sections = vec![
        Section::log_plot("Training loss", &["train/loss"]),
        Section::plot("Learning rate", &["train/lr"]),
        Section::log_plot("Gradient norm (before clipping)", &["train/grad_norm"]),
    ];
    if !norm_keys.is_empty() {
        let keys: Vec<&str> = norm_keys.iter().map(|s| s.as_str()).collect();
        sections.push(Section::plot("Weight norms per layer", &keys));
    }
    sections.extend(extra.iter().cloned());
    sections.push(Section::final_metrics("Final metrics", &rows));
    let cfg_toml = toml::to_string_pretty(cfg).unwrap_or_default();
    sections.push(Section::pre("Resolved config", &cfg_toml));
    write_report(run_dir, title, &sections)
}
