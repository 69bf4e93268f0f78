//! Modular addition as built-in data of `gradus train pretrain` (`data.source =
//! "modular_addition"`, settings in `[data.modular]`): the grokking task that Hu, Chen, Saphra and
//! Cho (2023, RESEARCH §3.8) map with a Gaussian HMM over checkpoints.
//!
//! Each training row is `a b =` with one target, `c = (a + b) mod p`, predicted after `=`
//! (gradus-tasks [`gradus_tasks::modular`]: one token per number, a seeded split of the p² pairs,
//! the held-out set = every pair not trained on). The loop is the shared one ([`fit_learner`]):
//! fast graph, AdamW, checkpoints, exact resume, `[dynamics]` statistics. Every `train.eval_every`
//! steps (on logged steps) and at the last step it logs the greedy accuracy of the answer (argmax
//! over the p number tokens) on the training pairs (`train/accuracy`) and on the held-out pairs
//! (`eval/accuracy`), so grokking — held-out accuracy jumping long after training accuracy — shows
//! in `metrics.jsonl` and the report. At the end `summary.json` records the convergence step: the
//! first logged step with `eval/accuracy ≥ data.modular.threshold` (paper: 0.5).
//!
//! Preset: `configs/pretrain/modular-addition.toml` (1 layer, d 128, 4 heads, AdamW lr 1e-3,
//! weight decay 1.0, batch 256). The decoder is gradus' Llama block (RoPE, SwiGLU MLP), not the
//! paper's learned positions and ReLU MLP.

use std::path::Path;

use gradus_data::pack::{Batch, Piece, Row, RowCursor};
use gradus_data::tokenizer::Tokenizer;
use gradus_model::decoder::{Decoder, ForwardInput};
use gradus_model::fast::FastDecoder;
use gradus_model::WeightDtype;
use gradus_tasks::modular::{accuracy, ModularConfig, SPECIALS};
use gradus_tensor::{Error, Result, Tensor, Var};
use serde_json::{json, Map, Value};

use crate::prep::{model_for, start_run};
use crate::recipe::RecipeConfig;
use crate::report::Section;
use crate::rundir::Start;
use crate::trainer::{
    fast_engine_for, fit_learner, write_run_report, FitSummary, Learner, LmLearner,
};

/// `data.source` value that selects this task.
pub const SOURCE: &str = "modular_addition";

/// The run's summary file (convergence step and final accuracies).
pub const SUMMARY_FILE: &str = "summary.json";

/// The task's word-level tokenizer: `0`…`p-1`, `=`, `<|endoftext|>` (BOS/EOS), `<|pad|>`.
pub fn tokenizer(m: &ModularConfig) -> Result<Tokenizer> {
    let mut tok = Tokenizer::word_level(&m.vocab(), &SPECIALS, SPECIALS[1])?;
    tok.set_bos(Some(SPECIALS[0]))?;
    tok.set_eos(Some(SPECIALS[0]))?;
    tok.set_pad(Some(SPECIALS[1]))?;
    Ok(tok)
}

/// The training row of `a b = c`: inputs `a b =`, one target `c` after `=`.
pub fn row(m: &ModularConfig, a: u32, b: u32) -> Row {
    let [a, b, eq, c] = m.example_ids(a, b);
    Row {
        input_ids: vec![a, b, eq],
        targets: vec![b, eq, c],
        loss_weight: vec![0.0, 0.0, 1.0],
        position_ids: vec![0, 1, 2],
        segment_ids: vec![1, 1, 1],
        pieces: vec![Piece {
            doc: 0,
            start: 0,
            len: 3,
            offset: 0,
            continues: true,
        }],
    }
}

/// The model's greedy answers to `a b =` for each pair: argmax over the p number tokens of the
/// logits after `=`, computed in chunks of 2048 pairs.
pub fn predict(model: &Decoder, m: &ModularConfig, pairs: &[(u32, u32)]) -> Result<Vec<u32>> {
    let mut out = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(2048) {
        let ids: Vec<u32> = chunk.iter().flat_map(|&(a, b)| [a, b, m.eq_id()]).collect();
        let inp = ForwardInput::new(&ids, chunk.len(), 3);
        let h = model.hidden_states(&inp, None)?.narrow(1, 2, 1)?;
        let logits = model
            .logits_from_hidden(&h)?
            .reshape((chunk.len(), model.cfg.vocab_size))?
            .narrow(1, 0, m.p as usize)?;
        out.extend(logits.argmax(1)?.to_vec1::<u32>()?);
    }
    Ok(out)
}

/// [`LmLearner`] on the task's rows, adding `train/accuracy` and `eval/accuracy` at evaluation steps.
pub struct ModularLearner<'a> {
    pub lm: LmLearner<'a>,
    pub task: ModularConfig,
    pub train_pairs: Vec<(u32, u32)>,
    pub eval_pairs: Vec<(u32, u32)>,
    /// Accuracies every this many steps (on logged steps) and at `last_step`.
    pub eval_every: u64,
    pub last_step: u64,
}

impl ModularLearner<'_> {
    /// `train/accuracy` and `eval/accuracy` of the current weights.
    pub fn accuracies(&self) -> Result<Map<String, Value>> {
        self.lm.sync_weights()?;
        let mut m = Map::new();
        for (key, pairs) in [
            ("train/accuracy", &self.train_pairs),
            ("eval/accuracy", &self.eval_pairs),
        ] {
            let pred = predict(self.lm.model, &self.task, pairs)?;
            if let Some(a) = accuracy(pairs, &pred, self.task.p) {
                m.insert(key.into(), json!(a));
            }
        }
        Ok(m)
    }
}

impl Learner for ModularLearner<'_> {
    type Micro = Batch;
    fn params(&self) -> Vec<(String, Var)> {
        self.lm.params()
    }
    fn next_micro(&mut self) -> Result<Batch> {
        self.lm.next_micro()
    }
    fn weight(&self, b: &Batch) -> f64 {
        self.lm.weight(b)
    }
    fn tokens(&self, b: &Batch) -> u64 {
        self.lm.tokens(b)
    }
    fn loss(&mut self, b: &Batch, norm: f64) -> Result<(Tensor, Vec<(String, f64)>)> {
        self.lm.loss(b, norm)
    }
    fn save(&self, dir: &Path) -> Result<()> {
        self.lm.save(dir)
    }
    fn load(&mut self, dir: &Path) -> Result<()> {
        self.lm.load(dir)
    }
    fn cursor(&self) -> Value {
        self.lm.cursor()
    }
    fn restore_cursor(&mut self, cursor: &Value) -> Result<()> {
        self.lm.restore_cursor(cursor)
    }
    fn eval_model(&self) -> Option<(&Decoder, &Tokenizer)> {
        self.lm.eval_model()
    }
    fn sync_weights(&self) -> Result<()> {
        self.lm.sync_weights()
    }
    fn fast(&mut self) -> Option<&mut FastDecoder> {
        self.lm.fast()
    }
    fn fast_loss(&mut self, b: &Batch, norm: f64) -> Result<(f64, Vec<(String, f64)>)> {
        self.lm.fast_loss(b, norm)
    }
    fn step_metrics(&mut self, step: u64) -> Result<Map<String, Value>> {
        let mut m = self.lm.step_metrics(step)?;
        let due =
            (self.eval_every > 0 && step.is_multiple_of(self.eval_every)) || step == self.last_step;
        if due {
            m.extend(self.accuracies()?);
        }
        Ok(m)
    }
}

/// Trains on modular addition (see the module docs); called by [`crate::pretrain::run`] when
/// `data.source = "modular_addition"`.
pub fn run(cfg: &RecipeConfig, start: Start) -> Result<FitSummary> {
    cfg.validate()?;
    if cfg.data.source != SOURCE {
        return Err(Error::config(
            "data.source",
            format!("expected `{SOURCE}`, got `{}`", cfg.data.source),
        ));
    }
    if cfg.tokenizer.path.is_some() {
        return Err(Error::config(
            "tokenizer.path",
            "modular addition brings its own word-level tokenizer (one token per number); remove tokenizer.path",
        ));
    }
    let task = cfg.data.modular.clone();
    let split = task.split()?;
    let mut run = start_run(cfg, &start)?;

    let tok = tokenizer(&task)?;
    let mut model = model_for(cfg, &tok)?;
    model.cfg.dtype = WeightDtype::F32;
    let rows: Vec<Row> = split.train.iter().map(|&(a, b)| row(&task, a, b)).collect();
    let mut data = RowCursor::new(rows, cfg.train.batch_size, cfg.run.seed)?;
    let fast = fast_engine_for(&model, cfg.train.engine, None)?;
    let mut learner = ModularLearner {
        lm: LmLearner {
            model: &mut model,
            tok: &tok,
            data: &mut data,
            weight_norms_every: cfg.train.weight_norms_every,
            val: &[],
            eval_every: cfg.train.eval_every,
            last_step: cfg.train.steps,
            fast,
            lora: None,
        },
        task: task.clone(),
        train_pairs: split.train,
        eval_pairs: split.eval,
        eval_every: cfg.train.eval_every,
        last_step: cfg.train.steps,
    };
    let summary = fit_learner(&mut learner, cfg, &mut run)?;
    let final_acc = learner.accuracies()?;
    write_summary(&summary.run_dir, &task, cfg.train.steps, &final_acc)?;
    write_run_report(
        &summary.run_dir,
        "gradus pretrain: modular addition",
        cfg,
        &[Section::plot(
            "Accuracy (train pairs and held-out pairs)",
            &["train/accuracy", "eval/accuracy"],
        )],
    )?;
    Ok(summary)
}

/// Writes `summary.json` for modular addition (see [`write_task_summary`]).
pub fn write_summary(
    run_dir: &Path,
    task: &ModularConfig,
    steps: u64,
    final_acc: &Map<String, Value>,
) -> Result<()> {
    let settings = json!({
        "p": task.p,
        "train_fraction": task.train_fraction,
        "split_seed": task.split_seed,
    });
    write_task_summary(run_dir, SOURCE, settings, task.threshold, steps, final_acc)
}

/// Writes a built-in task's `summary.json`: the task and its settings, the convergence step
/// (first logged step with `eval/accuracy ≥ threshold`, or `null` with `converged = false` and the
/// last evaluated step, a lower bound) and the accuracies of the final weights.
pub fn write_task_summary(
    run_dir: &Path,
    task: &str,
    settings: Value,
    threshold: f64,
    steps: u64,
    final_acc: &Map<String, Value>,
) -> Result<()> {
    use gradus_dynamics::run::{convergence, Convergence};
    let metric = "eval/accuracy";
    let conv = convergence(run_dir, metric, threshold)?;
    let (step, converged, last) = match conv {
        Convergence::At(s) => (Some(s), true, None),
        Convergence::Never { last_step } => (None, false, Some(last_step)),
        Convergence::NoMetric => (None, false, None),
    };
    let v = json!({
        "task": task,
        "settings": settings,
        "steps": steps,
        "convergence": {
            "metric": metric,
            "threshold": threshold,
            "step": step,
            "converged": converged,
            "last_evaluated_step": last,
        },
        "final": final_acc,
    });
    let text = serde_json::to_string_pretty(&v)
        .map_err(|e| Error::msg(format!("serialising summary.json: {e}")))?;
    gradus_tensor::io::write_atomic(&run_dir.join(SUMMARY_FILE), text.as_bytes())
}
