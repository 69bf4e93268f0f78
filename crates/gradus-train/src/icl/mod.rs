//! In-context vs in-weights learning on bursty few-shot sequences: the shared trainer and
//! evaluators of `gradus lab icl-emergence` ([`emergence`]) and `gradus lab icl-transience`
//! ([`transience`]), and the [`Net`] that `gradus lab boolean-icl` ([`boolean`]) reuses.
//!
//! **Data** ([`gradus_tasks::bursty`]): N (item, label) context pairs and a query item; the target
//! is the query's label (Chan et al. 2022; Reddy 2024; Singh et al. 2023).
//!
//! **Model.** A Llama-style decoder trained on the fast graph
//! ([`gradus_model::fast::FastDecoder`]). The vocabulary is the L label tokens, one `ITEM`
//! marker (id L) and, for token items, the item vocabulary (ids L+1…). A Gaussian item enters as
//! the `ITEM` token's embedding plus `W_in x` (an [`InputProjection`], the `inputs_embeds` path);
//! a token item as its tokens. Positions: RoPE (relative), where Reddy uses one-hot absolute codes
//! with a random shift and Singh sinusoidal ones. A Gaussian sequence is
//! `ITEM ℓ₁ ITEM ℓ₂ … ITEM ℓ_N ITEM(query)`, T = 2N + 1; the loss is −log p(ℓ_q) at the last
//! position only (cross-entropy over the whole vocabulary, as in both papers' query-only loss).
//!
//! **Optimiser.** Adam(W) with a constant learning rate (Singh: Adam, lr 3e-4), decoupled weight
//! decay `train.weight_decay`, and a coupled L2 penalty `train.l2`: the gradient of
//! `(λ/2)·‖θ‖²` (λθ) is added to every parameter's gradient before the Adam update (Singh et al.'s
//! §5 regulariser that keeps ICL from fading).
//!
//! **Evaluators** (every `train.eval_every` steps on fixed held-out sequences, streams disjoint
//! from training):
//! - `eval/icl`: novel classes with per-sequence labels ([`SeqKind::IclNovel`]): only the context
//!   tells the answer; chance is 1/L.
//! - `eval/iwl`: the query's class absent from the context ([`SeqKind::Iwl`]): only memorised
//!   labels help.
//! - `eval/swap_icl` / `eval/swap_iwl`: training classes with labels swapped per sequence
//!   ([`SeqKind::IclSwap`]): the fraction of predictions that follow the context vs the class's
//!   memorised label (Singh's "flip" evaluation; the two strategies disagree on every query).
//! - [`IclLearner::icl_vs_shots`]: ICL accuracy when only the last n context pairs are kept.
//!
//! Predictions are the argmax over the L label logits at the query position.
//!
//! **Run directory.** Each run is an ordinary run directory (`config.resolved.toml`,
//! `metrics.jsonl`, `checkpoints/step-N/` with the decoder in HF layout, `input_proj.safetensors`,
//! the two optimiser states and `trainer_state.json`). Training sequence i of step s is sequence
//! `s·B + i` of the seeded stream, so a resumed run regenerates exactly the batches it would have
//! seen: resume is bit-identical (tested).

pub mod boolean;
pub mod emergence;
pub mod transience;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use gradus_model::decoder::{Decoder, ForwardInput};
use gradus_model::fast::{FastDecoder, FastOptions, InputProjection};
use gradus_model::hf::{load_decoder, save_decoder};
use gradus_model::{DecoderConfig, Family};
use gradus_tasks::bursty::{BurstyConfig, BurstyTask, ItemKind, Items, SeqKind, Sequence};
use gradus_tensor::rng::Rng;
use gradus_tensor::{Device, Error, Result, Tensor, Var};
use serde::{Deserialize, Serialize};

use gradus_tensor::io::{read_native, write_native};

use crate::checkpoint::{latest_checkpoint, save_checkpoint, TrainerState};
use crate::metrics::{read_metrics, series, MetricsSink, METRICS_FILE};
use crate::optim::{AdamW, AdamWConfig};
use crate::report::{escape, svg_line_plot, Axes, Series, COLORS};
use crate::rundir::{open_run, Start};

/// Where and who: `run.name` under `run.dir`, `run.seed` for data and initialisation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IclRunSection {
    pub dir: PathBuf,
    pub name: String,
    pub seed: u64,
}

impl Default for IclRunSection {
    fn default() -> Self {
        Self {
            dir: "runs".into(),
            name: "icl".into(),
            seed: 0,
        }
    }
}

/// The decoder's shape (Hugging Face names).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IclModelSection {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub initializer_range: f64,
}

impl IclModelSection {
    /// A shape: width, depth, heads, MLP width (initialiser std 0.02, as GPT-2 and the papers).
    pub fn new(hidden: usize, layers: usize, heads: usize, intermediate: usize) -> Self {
        Self {
            hidden_size: hidden,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            intermediate_size: intermediate,
            initializer_range: 0.02,
        }
    }
}

impl Default for IclModelSection {
    fn default() -> Self {
        Self::new(64, 2, 4, 128)
    }
}

/// The training loop's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IclTrainSection {
    pub steps: u64,
    pub batch_size: usize,
    pub lr: f64,
    /// Decoupled (AdamW) weight decay on matrices.
    pub weight_decay: f64,
    /// Coupled L2 penalty λ: λθ is added to every gradient (Singh et al. §5).
    pub l2: f64,
    pub eval_every: u64,
    /// Held-out sequences per evaluator.
    pub eval_sequences: usize,
    pub checkpoint_every: u64,
    pub keep_last: usize,
    pub progress: bool,
}

impl Default for IclTrainSection {
    fn default() -> Self {
        Self {
            steps: 2000,
            batch_size: 32,
            lr: 1e-3,
            weight_decay: 0.0,
            l2: 0.0,
            eval_every: 100,
            eval_sequences: 256,
            checkpoint_every: 500,
            keep_last: 1,
            progress: false,
        }
    }
}

/// One ICL training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct IclRunConfig {
    pub run: IclRunSection,
    pub data: BurstyConfig,
    pub model: IclModelSection,
    pub train: IclTrainSection,
}

impl IclRunConfig {
    /// Checks every section; errors name the field.
    pub fn validate(&self) -> Result<()> {
        self.data.validate("data.")?;
        let m = &self.model;
        for (v, n) in [
            (m.hidden_size, "model.hidden_size"),
            (m.num_hidden_layers, "model.num_hidden_layers"),
            (m.num_attention_heads, "model.num_attention_heads"),
            (m.intermediate_size, "model.intermediate_size"),
        ] {
            if v == 0 {
                return Err(Error::config(n, "must be at least 1"));
            }
        }
        if !m.hidden_size.is_multiple_of(m.num_attention_heads)
            || !(m.hidden_size / m.num_attention_heads).is_multiple_of(2)
        {
            return Err(Error::config(
                "model.num_attention_heads",
                format!(
                    "hidden_size {} must split into heads of even width",
                    m.hidden_size
                ),
            ));
        }
        let t = &self.train;
        if t.batch_size == 0 {
            return Err(Error::config("train.batch_size", "must be at least 1"));
        }
        if !(t.lr.is_finite() && t.lr > 0.0) {
            return Err(Error::config(
                "train.lr",
                format!("must be > 0, got {}", t.lr),
            ));
        }
        if !(t.l2.is_finite() && t.l2 >= 0.0) {
            return Err(Error::config(
                "train.l2",
                format!("must be >= 0, got {}", t.l2),
            ));
        }
        if t.eval_every == 0 {
            return Err(Error::config("train.eval_every", "must be at least 1"));
        }
        if t.eval_sequences == 0 {
            return Err(Error::config("train.eval_sequences", "must be at least 1"));
        }
        Ok(())
    }

    /// The run's directory, `run.dir/run.name`.
    pub fn run_dir(&self) -> PathBuf {
        self.run.dir.join(&self.run.name)
    }
}

/// Vocabulary size, sequence length and input width of the model for `data`.
pub fn shapes(data: &BurstyConfig) -> (usize, usize, usize) {
    let l = data.n_labels;
    let n = data.context;
    match data.item {
        ItemKind::Gaussian { dim } => (l + 1, 2 * n + 1, dim),
        ItemKind::Tokens { len, vocab } => (l + 1 + vocab, (len + 1) * n + len, 0),
    }
}

/// A batch laid out for the decoder.
#[derive(Clone, Debug, PartialEq)]
pub struct Encoded {
    pub b: usize,
    pub t: usize,
    pub ids: Vec<u32>,
    /// (B·T, D_in) item vectors (zero rows at label positions); None for token items.
    pub x: Option<Vec<f32>>,
    /// Row (b·T + t) of each sequence's query position.
    pub query_rows: Vec<usize>,
    /// Targets (B·T): the query's label at the query rows, 0 elsewhere (weight 0).
    pub targets: Vec<u32>,
    /// Each sequence's target label.
    pub labels: Vec<u32>,
}

/// Lays out `seqs` for the decoder, keeping only the last `keep` context pairs (None: all). The
/// sequences are right-aligned (shorter ones would be padded on the left; here all have the same
/// length).
pub fn encode(data: &BurstyConfig, seqs: &[Sequence], keep: Option<usize>) -> Encoded {
    let l = data.n_labels as u32;
    let item_id = l;
    let n = data.context;
    let keep = keep.unwrap_or(n).min(n);
    let first = n - keep;
    let (b, mut ids, mut xs) = (seqs.len(), Vec::new(), Vec::new());
    let mut query_rows = Vec::with_capacity(b);
    let mut labels = Vec::with_capacity(b);
    let mut t = 0;
    for s in seqs {
        let start = ids.len();
        let push_item =
            |j: usize, ids: &mut Vec<u32>, xs: &mut Vec<f32>| match (&s.items, data.item) {
                (Items::Vectors(v), ItemKind::Gaussian { dim }) => {
                    ids.push(item_id);
                    xs.extend_from_slice(&v[j * dim..(j + 1) * dim]);
                }
                (Items::Tokens(v), ItemKind::Tokens { len, .. }) => {
                    ids.extend(v[j * len..(j + 1) * len].iter().map(|&tk| l + 1 + tk));
                }
                _ => unreachable!("items match the config they were generated with"),
            };
        let dim = match data.item {
            ItemKind::Gaussian { dim } => dim,
            ItemKind::Tokens { .. } => 0,
        };
        for j in first..n {
            push_item(j, &mut ids, &mut xs);
            ids.push(s.labels[j]);
            xs.extend(std::iter::repeat_n(0.0, dim));
        }
        push_item(n, &mut ids, &mut xs);
        t = ids.len() - start;
        query_rows.push(ids.len() - 1);
        labels.push(s.target());
    }
    let mut targets = vec![0u32; ids.len()];
    for (&r, &y) in query_rows.iter().zip(&labels) {
        targets[r] = y;
    }
    Encoded {
        b,
        t,
        ids,
        x: matches!(data.item, ItemKind::Gaussian { .. }).then_some(xs),
        query_rows,
        targets,
        labels,
    }
}

/// Accuracy numbers of one evaluation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IclEval {
    pub icl: f64,
    pub iwl: f64,
    pub swap_icl: f64,
    pub swap_iwl: f64,
}

/// A decoder on the fast graph with an optional input projection and their Adam(W) optimisers:
/// forward with continuous inputs, a training update from ∂loss/∂logp (with the coupled L2
/// penalty), the query logits, and checkpoints. Shared by the bursty and Boolean labs.
pub struct Net {
    decoder: Decoder,
    fast: FastDecoder,
    proj: Option<InputProjection>,
    adam: AdamW,
    adam_proj: Option<AdamW>,
    lr: f64,
    l2: f32,
}

fn proj_var(p: &InputProjection) -> Result<Var> {
    Ok(Var::from_tensor(&Tensor::from_slice(
        &p.weight,
        (p.d_model, p.d_in),
        &Device::Cpu,
    )?)?)
}

impl Net {
    /// A fresh net: decoder of shape `m` over `vocab` tokens and `t` positions, an input
    /// projection from `d_in` features (none when 0), weights from `seed`.
    pub fn new(
        m: &IclModelSection,
        vocab: usize,
        t: usize,
        d_in: usize,
        train: &IclTrainSection,
        seed: u64,
    ) -> Result<Self> {
        let dcfg = DecoderConfig {
            family: Family::Llama,
            vocab_size: vocab,
            hidden_size: m.hidden_size,
            intermediate_size: m.intermediate_size,
            num_hidden_layers: m.num_hidden_layers,
            num_attention_heads: m.num_attention_heads,
            num_key_value_heads: m.num_attention_heads,
            max_position_embeddings: t.max(16),
            tie_word_embeddings: false,
            initializer_range: m.initializer_range,
            ..Default::default()
        };
        let decoder = Decoder::new_random(&dcfg, seed, &Device::Cpu)?;
        let fast = FastDecoder::new(&decoder, FastOptions::default())?;
        let adam_cfg = AdamWConfig {
            weight_decay: train.weight_decay,
            ..Default::default()
        };
        let adam = AdamW::new(decoder.named_params(), adam_cfg)?;
        let (proj, adam_proj) = if d_in > 0 {
            // N(0, 1/D_in) keeps ‖W_in x‖ ≈ ‖x‖ (items have unit expected norm).
            let p =
                InputProjection::new_random(d_in, m.hidden_size, 1.0 / (d_in as f64).sqrt(), seed);
            let a = AdamW::new(vec![("input_proj.weight".into(), proj_var(&p)?)], adam_cfg)?;
            (Some(p), Some(a))
        } else {
            (None, None)
        };
        Ok(Self {
            decoder,
            fast,
            proj,
            adam,
            adam_proj,
            lr: train.lr,
            l2: train.l2 as f32,
        })
    }

    /// Log-probs of `targets` (B·T) for ids (B·T) and item vectors `x` (B·T, D_in).
    pub fn forward(
        &mut self,
        ids: &[u32],
        b: usize,
        t: usize,
        x: Option<&[f32]>,
        targets: &[u32],
    ) -> Result<Vec<f32>> {
        let inp = ForwardInput::new(ids, b, t);
        let embeds = match (&self.proj, x) {
            (Some(p), Some(x)) => Some(p.forward(x, b * t)?),
            _ => None,
        };
        Ok(self
            .fast
            .forward_with_embeds(&inp, embeds.as_deref(), targets)?
            .to_vec())
    }

    /// Backward from `dlogp` of the last forward (with its `x`), then one optimiser update:
    /// gradients (+ λθ) into Adam(W) for the decoder and the projection.
    pub fn update(&mut self, dlogp: &[f32], x: Option<&[f32]>, rows: usize) -> Result<()> {
        self.fast.zero_grads();
        self.fast.backward(dlogp)?;
        if let (Some(p), Some(x)) = (&mut self.proj, x) {
            p.zero_grad();
            let g = self
                .fast
                .input_grad()
                .ok_or_else(|| Error::msg("icl: no input gradient after backward"))?
                .to_vec();
            p.backward(&g, x, rows)?;
        }
        let (lr, l2) = (self.lr, self.l2);
        {
            let (params, grads) = self.fast.params_and_grads();
            if l2 > 0.0 {
                for (g, &w) in grads.iter_mut().zip(params.iter()) {
                    *g += l2 * w;
                }
            }
            self.adam.step_flat(params, grads, lr)?;
        }
        if let (Some(p), Some(a)) = (&mut self.proj, &mut self.adam_proj) {
            if l2 > 0.0 {
                for (g, &w) in p.grad.iter_mut().zip(&p.weight) {
                    *g += l2 * w;
                }
            }
            a.step_flat(&mut p.weight, &p.grad, lr)?;
        }
        Ok(())
    }

    /// Argmax over tokens `0..n` of the logits at `row` of the last forward.
    pub fn argmax(&self, row: usize, n: usize) -> Result<u32> {
        let lg = self.fast.head_logits(row)?;
        let mut best = 0;
        for j in 1..n.min(lg.len()) {
            if lg[j] > lg[best] {
                best = j;
            }
        }
        Ok(best as u32)
    }

    /// Writes checkpoint `step-N` into `run_dir`.
    pub fn save(&self, run_dir: &Path, step: u64, keep_last: usize) -> Result<PathBuf> {
        self.fast.write_to(&self.decoder)?;
        let state = TrainerState::new(step, 0, Rng::new(0).state());
        save_checkpoint(
            run_dir,
            step,
            |d| {
                save_decoder(&self.decoder, d)?;
                self.adam
                    .save_state_file(&d.join("optimizer.safetensors"))?;
                if let (Some(p), Some(a)) = (&self.proj, &self.adam_proj) {
                    write_native(
                        &d.join("input_proj.safetensors"),
                        &[(
                            "input_proj.weight".into(),
                            Tensor::from_slice(&p.weight, (p.d_model, p.d_in), &Device::Cpu)?,
                        )],
                    )?;
                    a.save_state_file(&d.join("optimizer_input_proj.safetensors"))?;
                }
                state.save(d)
            },
            keep_last,
        )
    }

    /// Restores weights and optimiser moments from checkpoint directory `ck`; returns its step.
    pub fn load(&mut self, ck: &Path) -> Result<u64> {
        let m = load_decoder(ck, &Device::Cpu)?;
        if m.cfg.vocab_size != self.decoder.cfg.vocab_size
            || m.cfg.hidden_size != self.decoder.cfg.hidden_size
            || m.cfg.num_hidden_layers != self.decoder.cfg.num_hidden_layers
        {
            return Err(Error::format(
                ck,
                "the checkpoint's model shape differs from the run's config",
            ));
        }
        self.fast.read_from(&m)?;
        self.adam
            .load_state_file(&ck.join("optimizer.safetensors"))?;
        if let (Some(p), Some(a)) = (&mut self.proj, &mut self.adam_proj) {
            let path = ck.join("input_proj.safetensors");
            let ts = read_native(&path)?;
            let w = ts
                .iter()
                .find(|(n, _)| n == "input_proj.weight")
                .ok_or_else(|| Error::format(&path, "missing tensor input_proj.weight"))?;
            let v: Vec<f32> = w.1.flatten_all()?.to_vec1()?;
            if v.len() != p.weight.len() {
                return Err(Error::format(
                    &path,
                    format!(
                        "tensor input_proj.weight has {} values, the run's projection {}",
                        v.len(),
                        p.weight.len()
                    ),
                ));
            }
            p.weight = v;
            a.load_state_file(&ck.join("optimizer_input_proj.safetensors"))?;
        }
        Ok(TrainerState::load(ck)?.step)
    }
}

/// The bursty-sequence learner: a [`Net`], the task, and the step.
pub struct IclLearner {
    pub cfg: IclRunConfig,
    pub task: BurstyTask,
    net: Net,
    /// Optimiser steps taken.
    pub step: u64,
}

impl IclLearner {
    /// A freshly initialised learner (weights from `run.seed`).
    pub fn new(cfg: IclRunConfig) -> Result<Self> {
        cfg.validate()?;
        let task = BurstyTask::new(cfg.data.clone(), cfg.run.seed, "data.")?;
        let (vocab, t, d_in) = shapes(&cfg.data);
        let net = Net::new(&cfg.model, vocab, t, d_in, &cfg.train, cfg.run.seed)?;
        Ok(Self {
            cfg,
            task,
            net,
            step: 0,
        })
    }

    fn forward(&mut self, e: &Encoded) -> Result<Vec<f32>> {
        self.net
            .forward(&e.ids, e.b, e.t, e.x.as_deref(), &e.targets)
    }

    /// One optimiser step on training batch `self.step`; returns (loss, accuracy) on it.
    pub fn train_step(&mut self) -> Result<(f64, f64)> {
        let bs = self.cfg.train.batch_size;
        let seqs = self.task.batch(SeqKind::Train, self.step * bs as u64, bs);
        let e = encode(&self.cfg.data, &seqs, None);
        let lp = self.forward(&e)?;
        let preds = self.predict_rows(&e)?;
        let mut dlogp = vec![0f32; lp.len()];
        let mut loss = 0.0;
        for &r in &e.query_rows {
            loss -= lp[r] as f64;
            dlogp[r] = -1.0 / bs as f32;
        }
        loss /= bs as f64;
        if !loss.is_finite() {
            return Err(Error::msg(format!(
                "icl: the loss is {loss} at step {} (lower train.lr?)",
                self.step + 1
            )));
        }
        let acc = preds.iter().zip(&e.labels).filter(|(p, y)| p == y).count() as f64 / bs as f64;
        self.net.update(&dlogp, e.x.as_deref(), e.b * e.t)?;
        self.step += 1;
        Ok((loss, acc))
    }

    /// Argmax over the label logits at each query row of the last forward.
    fn predict_rows(&self, e: &Encoded) -> Result<Vec<u32>> {
        let l = self.cfg.data.n_labels;
        e.query_rows
            .iter()
            .map(|&r| self.net.argmax(r, l))
            .collect()
    }

    /// Predicted labels for `seqs` keeping the last `keep` context pairs.
    pub fn predict(&mut self, seqs: &[Sequence], keep: Option<usize>) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(seqs.len());
        for chunk in seqs.chunks(128) {
            let e = encode(&self.cfg.data, chunk, keep);
            self.forward(&e)?;
            out.extend(self.predict_rows(&e)?);
        }
        Ok(out)
    }

    fn eval_set(&self, kind: SeqKind) -> Vec<Sequence> {
        self.task.batch(kind, 0, self.cfg.train.eval_sequences)
    }

    /// Fraction of `seqs` whose prediction equals `want(seq)`.
    fn agree(
        &mut self,
        seqs: &[Sequence],
        keep: Option<usize>,
        want: impl Fn(&Sequence) -> u32,
    ) -> Result<f64> {
        let p = self.predict(seqs, keep)?;
        Ok(p.iter().zip(seqs).filter(|(p, s)| **p == want(s)).count() as f64 / seqs.len() as f64)
    }

    /// The four evaluators (see the module docs).
    pub fn evaluate(&mut self) -> Result<IclEval> {
        let l = self.cfg.data.n_labels;
        let k = self.cfg.data.n_classes;
        let novel = self.eval_set(SeqKind::IclNovel);
        let iwl = self.eval_set(SeqKind::Iwl);
        let swap = self.eval_set(SeqKind::IclSwap);
        let own = move |s: &Sequence| {
            let q = *s.classes.last().expect("query");
            (q.min(k - 1) % l) as u32
        };
        Ok(IclEval {
            icl: self.agree(&novel, None, Sequence::target)?,
            iwl: self.agree(&iwl, None, Sequence::target)?,
            swap_icl: self.agree(&swap, None, Sequence::target)?,
            swap_iwl: self.agree(&swap, None, own)?,
        })
    }

    /// ICL accuracy (novel classes) keeping only the last n context pairs, for each n in `ns`.
    pub fn icl_vs_shots(&mut self, ns: &[usize]) -> Result<Vec<(usize, f64)>> {
        let novel = self.eval_set(SeqKind::IclNovel);
        ns.iter()
            .map(|&n| Ok((n, self.agree(&novel, Some(n), Sequence::target)?)))
            .collect()
    }

    /// Writes checkpoint `step-N` into `run_dir`.
    pub fn save(&self, run_dir: &Path) -> Result<PathBuf> {
        self.net.save(run_dir, self.step, self.cfg.train.keep_last)
    }

    /// Restores weights, optimiser moments and the step from checkpoint directory `ck`.
    pub fn load(&mut self, ck: &Path) -> Result<()> {
        self.step = self.net.load(ck)?;
        Ok(())
    }
}

/// What a finished run showed, read back from its `metrics.jsonl`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct IclRunSummary {
    pub name: String,
    pub dir: PathBuf,
    pub steps: u64,
    pub final_eval: IclEval,
    /// Highest `eval/icl` and its step.
    pub peak_icl: (u64, f64),
    /// First evaluated step with `eval/icl` ≥ 0.5 (None: never).
    pub icl_onset: Option<u64>,
    /// ICL accuracy vs context pairs kept, at the end.
    pub icl_vs_shots: Vec<(usize, f64)>,
    pub final_loss: f64,
    /// (step, value) series: eval/icl, eval/iwl, eval/swap_icl, eval/swap_iwl, train/loss.
    pub curves: Vec<(String, Vec<(u64, f64)>)>,
}

/// Trains (or resumes) the run `cfg` to `train.steps`, logging evaluations, and summarises it.
pub fn train_run(cfg: &IclRunConfig, start: &Start) -> Result<IclRunSummary> {
    cfg.validate()?;
    let dir = cfg.run_dir();
    let mut rd = open_run(&dir, cfg, start)?;
    let mut learner = IclLearner::new(cfg.clone())?;
    let mut sink = if rd.resuming() {
        let ck = latest_checkpoint(&dir)?
            .ok_or_else(|| Error::format(&dir, "resuming but no checkpoint found"))?;
        learner.load(&ck)?;
        MetricsSink::resume(&dir, learner.step)?
    } else {
        MetricsSink::create(&dir)?
    };
    rd.write_config()?;
    let t = &cfg.train;
    let t0 = std::time::Instant::now();
    if learner.step == 0 {
        let ev = learner.evaluate()?;
        log_eval(&mut sink, 0, &ev, None)?;
    }
    let (mut loss_acc, mut acc_acc, mut n_acc) = (0.0, 0.0, 0u64);
    while learner.step < t.steps {
        let (loss, acc) = learner.train_step()?;
        loss_acc += loss;
        acc_acc += acc;
        n_acc += 1;
        let s = learner.step;
        if s % t.eval_every == 0 || s == t.steps {
            let ev = learner.evaluate()?;
            let tr = (loss_acc / n_acc as f64, acc_acc / n_acc as f64);
            log_eval(&mut sink, s, &ev, Some(tr))?;
            (loss_acc, acc_acc, n_acc) = (0.0, 0.0, 0);
            if t.progress {
                eprintln!(
                    "{} step {s}/{}  loss {:.4}  icl {:.3}  iwl {:.3}  swap icl/iwl {:.3}/{:.3}  {:.0}s",
                    cfg.run.name,
                    t.steps,
                    tr.0,
                    ev.icl,
                    ev.iwl,
                    ev.swap_icl,
                    ev.swap_iwl,
                    t0.elapsed().as_secs_f64()
                );
            }
        }
        if (t.checkpoint_every > 0 && s % t.checkpoint_every == 0) || s == t.steps {
            learner.save(&dir)?;
        }
    }
    let ns: Vec<usize> = (0..)
        .map(|i| 1usize << i)
        .take_while(|&n| n < cfg.data.context)
        .chain(std::iter::once(cfg.data.context))
        .collect();
    let shots = learner.icl_vs_shots(&ns)?;
    let summary = summarize(cfg, &dir, shots)?;
    crate::checkpoint::write_json_atomic(&dir.join("icl_summary.json"), &summary)?;
    write_run_report(&dir, cfg, &summary)?;
    Ok(summary)
}

fn log_eval(
    sink: &mut MetricsSink,
    step: u64,
    ev: &IclEval,
    train: Option<(f64, f64)>,
) -> Result<()> {
    let mut m: Vec<(&str, f64)> = vec![
        ("eval/icl", ev.icl),
        ("eval/iwl", ev.iwl),
        ("eval/swap_icl", ev.swap_icl),
        ("eval/swap_iwl", ev.swap_iwl),
    ];
    if let Some((l, a)) = train {
        m.push(("train/loss", l));
        m.push(("train/acc", a));
    }
    sink.log(step, &m)
}

/// The summary of a run from its metrics file.
pub fn summarize(
    cfg: &IclRunConfig,
    dir: &Path,
    shots: Vec<(usize, f64)>,
) -> Result<IclRunSummary> {
    let rows = read_metrics(&dir.join(METRICS_FILE))?;
    let keys = [
        "eval/icl",
        "eval/iwl",
        "eval/swap_icl",
        "eval/swap_iwl",
        "train/loss",
    ];
    let curves: Vec<(String, Vec<(u64, f64)>)> = keys
        .iter()
        .map(|k| (k.to_string(), series(&rows, k)))
        .collect();
    let last = |i: usize| curves[i].1.last().map_or(0.0, |p| p.1);
    let icl = &curves[0].1;
    let peak = icl.iter().fold(
        (0u64, f64::NEG_INFINITY),
        |a, &(s, v)| if v > a.1 { (s, v) } else { a },
    );
    Ok(IclRunSummary {
        name: cfg.run.name.clone(),
        dir: dir.to_path_buf(),
        steps: cfg.train.steps,
        final_eval: IclEval {
            icl: last(0),
            iwl: last(1),
            swap_icl: last(2),
            swap_iwl: last(3),
        },
        peak_icl: (peak.0, peak.1.max(0.0)),
        icl_onset: icl.iter().find(|p| p.1 >= 0.5).map(|p| p.0),
        icl_vs_shots: shots,
        final_loss: last(4),
        curves,
    })
}

fn write_run_report(dir: &Path, cfg: &IclRunConfig, s: &IclRunSummary) -> Result<()> {
    use crate::report::Section;
    let shots = s
        .icl_vs_shots
        .iter()
        .map(|(n, a)| (format!("{n} context pairs"), format!("{:.1}%", 100.0 * a)))
        .collect();
    let sections = vec![
        Section::plot(
            "ICL (novel classes) and IWL (query class absent) accuracy",
            &["eval/icl", "eval/iwl"],
        ),
        Section::plot(
            "Swapped labels: follows the context vs the memorised label",
            &["eval/swap_icl", "eval/swap_iwl"],
        ),
        Section::log_plot("Training loss", &["train/loss"]),
        Section::table(
            "ICL accuracy vs context pairs kept (end of training)",
            shots,
        ),
        Section::table_from_json(
            "Config",
            &serde_json::to_value(cfg).map_err(|e| Error::msg(e.to_string()))?,
        ),
    ];
    crate::report::write_report(dir, &format!("ICL run {}", cfg.run.name), &sections)?;
    Ok(())
}

/// An HTML figure: heading, inline SVG line plot of `series`, legend.
pub fn figure(title: &str, series: &[Series], x_label: &str, y_label: &str) -> String {
    let mut h = format!("<h2>{}</h2>\n", escape(title));
    let axes = Axes {
        log_y: false,
        x_label,
        y_label,
        smooth: false,
    };
    match svg_line_plot(series, &axes) {
        Some(svg) => {
            h.push_str("<figure>");
            h.push_str(&svg);
            h.push_str("<figcaption class=\"legend\">");
            for (i, s) in series.iter().enumerate() {
                let _ = write!(
                    h,
                    "<span><b style=\"background:{}\"></b>{}</span>",
                    COLORS[i % COLORS.len()],
                    escape(&s.name)
                );
            }
            h.push_str("</figcaption></figure>\n");
        }
        None => h.push_str("<p class=\"empty\">no data</p>\n"),
    }
    h
}

/// Writes `dir/report.html`: `sections` rendered as the run reports are, then `figures` (HTML).
pub fn write_lab_report(
    dir: &Path,
    title: &str,
    sections: &[crate::report::Section],
    figures: &[String],
) -> Result<PathBuf> {
    let html = crate::report::render_report(title, sections, &[]);
    let body: String = figures.concat();
    let html = html.replacen("</body>", &format!("{body}</body>"), 1);
    let path = dir.join(crate::report::REPORT_FILE);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    gradus_tensor::io::write_atomic(&path, html.as_bytes())?;
    Ok(path)
}

/// The name of a lab's findings file (Markdown, beside its `report.html`).
pub const RESULTS_FILE: &str = "results.md";

/// Writes `dir/results.md` atomically: `# title` and `body` (Markdown).
pub fn write_results_md(dir: &Path, title: &str, body: &str) -> Result<PathBuf> {
    let path = dir.join(RESULTS_FILE);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    gradus_tensor::io::write_atomic(&path, format!("# {title}\n\n{body}").as_bytes())?;
    Ok(path)
}

/// A curve of a run summary as a plot series.
pub fn curve(s: &IclRunSummary, key: &str, name: &str) -> Series {
    curve_of(&s.curves, key, name)
}

/// The curve `key` of a summary's `(key, [(step, value)])` list as a plot series (empty when absent);
/// the ICL and SAS labs' summaries share this layout.
pub fn curve_of(curves: &[(String, Vec<(u64, f64)>)], key: &str, name: &str) -> Series {
    Series {
        name: name.into(),
        points: curves
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, c)| c.iter().map(|&(x, y)| (x as f64, y)).collect())
            .unwrap_or_default(),
    }
}

/// How a lab run starts: refuse existing runs, resume them, or move them aside. A resumed run
/// accepts changes to the config fields in `explicit` (those the command line set: `--steps` is
/// `train.steps`, `--set k=v` is `k`) and refuses any other change.
pub fn lab_start(resume: bool, overwrite: bool, explicit: &[String]) -> Result<Start> {
    match (resume, overwrite) {
        (true, true) => Err(Error::msg("--resume and --overwrite exclude each other")),
        (true, false) => Ok(Start::Resume {
            explicit: explicit.to_vec(),
        }),
        (false, true) => Ok(Start::Overwrite),
        (false, false) => Ok(Start::New),
    }
}

/// The config fields a lab's command line set: `train.steps` when `steps` is given, then each
/// `--set` key.
pub fn explicit_fields(steps: Option<u64>, set_keys: &[String]) -> Vec<String> {
    steps
        .map(|_| "train.steps".to_string())
        .into_iter()
        .chain(set_keys.iter().cloned())
        .collect()
}

/// `12.3%`.
pub fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}
