//! Sparse parity as built-in data of `gradus train pretrain` (`data.source = "sparse_parity"`,
//! task in `[data.parity]`, model width in `[model.mlp]`): the MLP experiment of Hu, Chen, Saphra
//! and Cho (2023, RESEARCH §3.8) — n ±1 bits, the label is the XOR of k of them, an MLP with a
//! hidden layer of 1000 trained by SGD (lr 0.1) on 1,000 examples.
//!
//! The model is [`gradus_model::mlp::MlpClassifier`] (hand-written forward/backward on flat
//! buffers), the optimiser plain SGD: `p ← p − lr · (g + wd · p)` with `wd =
//! optimizer.weight_decay` on the two weight matrices only (biases exempt, as the default
//! no-decay rule), the learning rate from `[schedule]`, gradients clipped at
//! `train.max_grad_norm` (0: off). The run directory is the recipes' own: `rundir` safety and
//! lock, `checkpoints/step-N/` (`model.safetensors` with `fc1.weight`…, `mlp_config.json`,
//! `trainer_state.json` with the data cursor) written atomically, `metrics.jsonl` with
//! `train/loss`, `train/accuracy` and `eval/accuracy` (every `train.eval_every` steps on logged
//! steps and at the end), `[dynamics]` statistics, `summary.json` with the convergence step (first
//! `eval/accuracy ≥ data.parity.threshold`, paper 0.9) and `report.html`. SGD without momentum has
//! no state, so a resumed run continues exactly (tested).

use std::path::Path;
use std::time::Instant;

use gradus_data::pack::{CursorState, IndexCursor};
use gradus_dynamics::stats::NamedTensor;
use gradus_model::mlp::{MlpClassifier, MlpConfig};
use gradus_tasks::parity::ParitySet;
use gradus_tensor::{Device, Error, Result, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::checkpoint::{latest_checkpoint, save_checkpoint, write_json_atomic, TrainerState};
use crate::metrics::MetricsSink;
use crate::prep::start_run;
use crate::recipe::RecipeConfig;
use crate::report::Section;
use crate::rundir::Start;
use crate::trainer::{write_run_report, FitSummary};
use gradus_tensor::io::{read_native, write_native};

/// `data.source` value that selects this task.
pub const SOURCE: &str = "sparse_parity";

/// `[model.mlp]`: the MLP of the sparse-parity task (inputs = `data.parity.n`, 2 classes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MlpSection {
    /// Hidden width (the paper: 1000).
    pub hidden: usize,
}

impl Default for MlpSection {
    fn default() -> Self {
        Self { hidden: 1000 }
    }
}

/// The MLP configuration of a recipe.
pub fn mlp_config(cfg: &RecipeConfig) -> MlpConfig {
    MlpConfig {
        inputs: cfg.data.parity.n,
        hidden: cfg.model.mlp.hidden,
        classes: 2,
    }
}

/// Rows `idx` of a set: inputs (row-major) and labels.
fn gather(set: &ParitySet, idx: &[usize]) -> (Vec<f32>, Vec<u32>) {
    let n = set.n;
    let mut x = Vec::with_capacity(idx.len() * n);
    let mut y = Vec::with_capacity(idx.len());
    for &i in idx {
        x.extend_from_slice(&set.x[i * n..(i + 1) * n]);
        y.push(set.y[i]);
    }
    (x, y)
}

/// Greedy accuracy on a whole set (in chunks of 4096 rows); `None` when empty.
pub fn accuracy(model: &mut MlpClassifier, set: &ParitySet) -> Result<Option<f64>> {
    if set.is_empty() {
        return Ok(None);
    }
    let mut right = 0usize;
    let all: Vec<usize> = (0..set.len()).collect();
    for chunk in all.chunks(4096) {
        let (x, y) = gather(set, chunk);
        let pred = model.predict(&x, chunk.len())?;
        right += pred.iter().zip(&y).filter(|(a, b)| a == b).count();
    }
    Ok(Some(right as f64 / set.len() as f64))
}

fn named(model: &MlpClassifier) -> Vec<NamedTensor> {
    model
        .named_tensors()
        .into_iter()
        .map(|(name, shape, values)| NamedTensor {
            name,
            shape,
            values,
        })
        .collect()
}

fn save_model(model: &MlpClassifier, dir: &Path) -> Result<()> {
    let tensors = model
        .named_tensors()
        .into_iter()
        .map(|(n, s, v)| Ok((n, Tensor::from_vec(v, s.as_slice(), &Device::Cpu)?)))
        .collect::<Result<Vec<_>>>()?;
    write_native(&dir.join("model.safetensors"), &tensors)?;
    write_json_atomic(&dir.join("mlp_config.json"), &model.cfg)
}

fn load_model(model: &mut MlpClassifier, dir: &Path) -> Result<()> {
    let path = dir.join("model.safetensors");
    let saved = read_native(&path)?;
    let named = saved
        .into_iter()
        .map(|(n, t)| Ok((n, t.flatten_all()?.to_vec1::<f32>()?)))
        .collect::<Result<Vec<_>>>()?;
    model.set_named(&named, &path.display().to_string())
}

/// One SGD step over the flat buffers: clip (when `max_norm > 0`), decay the weight matrices,
/// update. Returns the gradient norm before clipping.
fn sgd_step(model: &mut MlpClassifier, lr: f64, wd: f64, max_norm: f64) -> f64 {
    let decayed: Vec<std::ops::Range<usize>> = {
        let mut off = 0;
        model
            .cfg
            .param_shapes()
            .into_iter()
            .filter_map(|(_, s)| {
                let len: usize = s.iter().product();
                let r = off..off + len;
                off += len;
                (s.len() == 2).then_some(r)
            })
            .collect()
    };
    let (p, g) = model.params_and_grads();
    let norm = g
        .iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt();
    let clip = if max_norm > 0.0 && norm > max_norm {
        (max_norm / (norm + 1e-6)) as f32
    } else {
        1.0
    };
    let (lr, wd) = (lr as f32, wd as f32);
    for (i, (p, g)) in p.iter_mut().zip(g.iter()).enumerate() {
        let mut d = g * clip;
        if wd != 0.0 && decayed.iter().any(|r| r.contains(&i)) {
            d += wd * *p;
        }
        *p -= lr * d;
    }
    norm
}

/// Trains the MLP on sparse parity (see the module docs); called by [`crate::pretrain::run`] when
/// `data.source = "sparse_parity"`.
pub fn run(cfg: &RecipeConfig, start: Start) -> Result<FitSummary> {
    cfg.validate()?;
    let t = &cfg.train;
    if t.grad_accum != 1 {
        return Err(Error::config(
            "train.grad_accum",
            "sparse parity trains with whole batches (set 1)",
        ));
    }
    let task = cfg.data.parity.clone();
    let (train, eval) = task.sets()?;
    let mut model = MlpClassifier::new_random(&mlp_config(cfg), cfg.run.seed)?;
    let mut run = start_run(cfg, &start)?;
    let run_dir = run.path().to_path_buf();
    let mut cursor = IndexCursor::new(train.len(), t.batch_size, cfg.run.seed)?;
    let mut state = TrainerState::new(0, 0, gradus_tensor::rng::Rng::new(cfg.run.seed).state());
    if run.resuming() {
        let ck = latest_checkpoint(&run_dir)?
            .ok_or_else(|| Error::format(&run_dir, "the checkpoint to resume from disappeared"))?;
        load_model(&mut model, &ck)?;
        state = TrainerState::load(&ck)?;
        let cs: CursorState = serde_json::from_value(state.data_cursor.clone()).map_err(|e| {
            Error::format(
                ck.join("trainer_state.json"),
                format!("bad data_cursor: {e}"),
            )
        })?;
        cursor.restore(cs)?;
    }
    let start_step = state.step;
    run.write_config()?;
    let last_ck = |run_dir: &Path| latest_checkpoint(run_dir);
    if run.resuming() && state.step >= t.steps {
        return Ok(FitSummary {
            run_dir: run_dir.clone(),
            steps: state.step,
            start_step,
            already_complete: true,
            first_loss: None,
            last_loss: None,
            tokens_seen: state.tokens_seen,
            seconds: 0.0,
            last_checkpoint: last_ck(&run_dir)?,
        });
    }
    let mut metrics = MetricsSink::open_path(&run_dir.join("metrics.jsonl"), Some(state.step))?;
    let mut dynamics = crate::trainer::open_dynamics(cfg.dynamics.every, &run_dir, state.step)?;
    if let (Some(rec), 0) = (dynamics.as_mut(), state.step) {
        rec.record(0, &named(&model))?;
    }
    let started = Instant::now();
    let (mut first_loss, mut last_loss, mut last_saved) = (None, None, None);
    let stop_at = if t.stop_after > 0 {
        (state.step + t.stop_after).min(t.steps)
    } else {
        t.steps
    };
    while state.step < stop_at {
        let lr = cfg.schedule.lr_at(state.step, t.steps, t.lr);
        let idx = cursor
            .next_indices()
            .ok_or_else(|| Error::msg("sparse parity: no training examples"))?
            .to_vec();
        let (x, y) = gather(&train, &idx);
        model.zero_grads();
        model.forward(&x, idx.len())?;
        let loss = model.backward(&y, 1.0)?;
        let grad_norm = sgd_step(&mut model, lr, cfg.optimizer.weight_decay, t.max_grad_norm);
        state.step += 1;
        state.tokens_seen += idx.len() as u64;
        if !loss.is_finite() {
            return Err(Error::msg(format!(
                "loss became {loss} at step {}: lower train.lr",
                state.step
            )));
        }
        first_loss.get_or_insert(loss);
        last_loss = Some(loss);
        let is_last = state.step == t.steps;
        if state.step.is_multiple_of(t.log_every.max(1)) || is_last {
            let mut m = Map::new();
            m.insert("train/loss".into(), json!(loss));
            m.insert("train/lr".into(), json!(lr));
            m.insert("train/grad_norm".into(), json!(grad_norm));
            if (t.eval_every > 0 && state.step.is_multiple_of(t.eval_every)) || is_last {
                if let Some(a) = accuracy(&mut model, &train)? {
                    m.insert("train/accuracy".into(), json!(a));
                }
                if let Some(a) = accuracy(&mut model, &eval)? {
                    m.insert("eval/accuracy".into(), json!(a));
                }
            }
            metrics.log_values(state.step, &m)?;
        }
        if let Some(rec) = dynamics
            .as_mut()
            .filter(|_| state.step.is_multiple_of(cfg.dynamics.every))
        {
            rec.record(state.step, &named(&model))?;
        }
        let stop = crate::interrupt::requested();
        if state.step == stop_at
            || (t.save_every > 0 && state.step.is_multiple_of(t.save_every))
            || stop
        {
            let mut st = state.clone();
            st.data_cursor = serde_json::to_value(cursor.state()).unwrap_or(Value::Null);
            let m = &model;
            last_saved = Some(save_checkpoint(
                &run_dir,
                st.step,
                |dir| {
                    save_model(m, dir)?;
                    st.save(dir)
                },
                t.keep_last,
            )?);
        }
        if stop {
            let ck = last_saved.clone().unwrap_or_default();
            return Err(crate::interrupt::interrupted_error(state.step, &ck));
        }
    }
    let summary = FitSummary {
        run_dir: run_dir.clone(),
        steps: state.step,
        start_step,
        already_complete: false,
        first_loss,
        last_loss,
        tokens_seen: state.tokens_seen,
        seconds: started.elapsed().as_secs_f64(),
        last_checkpoint: last_saved,
    };
    let mut fin = Map::new();
    if let Some(a) = accuracy(&mut model, &train)? {
        fin.insert("train/accuracy".into(), json!(a));
    }
    if let Some(a) = accuracy(&mut model, &eval)? {
        fin.insert("eval/accuracy".into(), json!(a));
    }
    let extra = json!({"n": task.n, "k": task.k, "train_examples": task.train_examples,
        "eval_examples": task.eval_examples, "hidden": cfg.model.mlp.hidden});
    crate::modular::write_task_summary(&run_dir, SOURCE, extra, task.threshold, t.steps, &fin)?;
    write_run_report(
        &run_dir,
        "gradus pretrain: sparse parity (MLP, SGD)",
        cfg,
        &[Section::plot(
            "Accuracy (training examples and held-out examples)",
            &["train/accuracy", "eval/accuracy"],
        )],
    )?;
    Ok(summary)
}
