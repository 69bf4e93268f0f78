//! Masked-LM training of a BERT encoder on a synthetic dependency grammar, with the syntactic
//! attention structure (SAS) metric and regulariser of Chen, Shwartz-Ziv, Cho, Leavitt & Saphra,
//! "Sudden drops in the loss: syntax acquisition, phase transitions, and simplicity bias in
//! MLMs" (arXiv 2309.07311, ICLR'24; RESEARCH §3.9). `gradus lab sas` ([`lab`]) composes it.
//!
//! **Data**: [`gradus_tasks::depgrammar`], one token per word, `[CLS] w₁ … w_n [SEP]`.
//!
//! **Masking** (BERT, Devlin et al. 2019 §3.1; [`mask_sentence`]): each word position is selected
//! with probability `mask_prob` (0.15); a selected position becomes `[MASK]` with probability 0.8,
//! a uniformly drawn word with 0.1, and stays with 0.1; the loss is the mean cross-entropy of the
//! original words at the selected positions. `[CLS]`/`[SEP]` are never selected. The draws of
//! sentence i come from a stream derived from (seed, i), so a resumed run masks identically.
//!
//! **Model**: [`gradus_model::bert_mlm::BertMlm`] (post-LN BERT, tied MLM head), Adam(W) with
//! linear warmup then a constant learning rate.
//!
//! **SAS regulariser** (Chen et al. §2.3, `reg_type=max`; [`sas_penalty`]): for every gold arc
//! (i, head(i)) of a sentence, the largest attention weight over all layers and heads in both
//! directions, `m_i = max_{l,h} max(A^{l,h}[i, head(i)], A^{l,h}[head(i), i])`; the penalty is
//! `R = (1/B) Σ_sentences Σ_arcs m_i` and the loss `L = L_MLM + λ(step)·R`: λ > 0 suppresses SAS,
//! λ < 0 promotes it. [`SasSchedule`]: λ applies at steps < `sas_until_step` (all steps when
//! unset). The authors sum over a batch of 64 × 512-token sequences with λ = 0.001; per sentence
//! of ~7 arcs our λ must be larger for the same pressure (the lab's default is 0.01, see its
//! module docs).
//!
//! **Evaluation** every `train.eval_every` steps on fixed held-out data:
//! - `eval/mlm_loss`: MLM loss on `eval_sentences` held-out sentences with fixed masks;
//! - `sas/<rel>`, `sas/all`: SAS (argmax UAS of the best head) on the unmasked held-out sentences
//!   ([`uas`]); `sas_soft/*` the soft variant;
//! - `blimp/simple`, `blimp/attractor`, `blimp/all`: minimal-pair accuracy: the verb position is
//!   masked and the pair counts as right when the grammatical verb form gets the higher MLM
//!   probability (the MLM form of BLiMP's comparison; the two sentences differ only there).
//!
//! **Run directory**: `config.resolved.toml`, `metrics.jsonl`, `checkpoints/step-N/` with the
//! model in the HF `BertForMaskedLM` layout (read by `Encoder::load` / `gradus embed`),
//! `optimizer.safetensors` and `trainer_state.json`. Training sentence i of step s is sentence
//! s·B + i of the seeded stream: resume is bit-identical (tested).

pub mod lab;
pub mod uas;

use std::path::{Path, PathBuf};

use gradus_model::bert_mlm::BertMlm;
use gradus_model::encoder::EncoderConfig;
use gradus_tasks::depgrammar::{
    DepGrammar, DepGrammarConfig, PairKind, Rel, Sentence, Split, MASK, N_SPECIAL, PAD,
};
use gradus_tensor::rng::Rng;
use gradus_tensor::{DType, Device, Error, Result, Tensor};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{latest_checkpoint, save_checkpoint, TrainerState};
use crate::metrics::{read_metrics, series, MetricsSink, METRICS_FILE};
use crate::optim::{AdamW, AdamWConfig};
use crate::rundir::{open_run, Start};
use uas::{GoldArc, UasAccumulator, UasScores};

/// Where and who: `run.name` under `run.dir`, `run.seed` for data, masks and initialisation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SasRunSection {
    pub dir: PathBuf,
    pub name: String,
    pub seed: u64,
}

impl Default for SasRunSection {
    fn default() -> Self {
        Self {
            dir: "runs".into(),
            name: "sas".into(),
            seed: 0,
        }
    }
}

/// The encoder's shape (Hugging Face `BertConfig` names).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SasModelSection {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub initializer_range: f64,
}

impl Default for SasModelSection {
    fn default() -> Self {
        Self {
            hidden_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            intermediate_size: 128,
            initializer_range: 0.02,
        }
    }
}

/// The training loop's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SasTrainSection {
    pub steps: u64,
    pub batch_size: usize,
    pub lr: f64,
    /// Linear warmup steps (then constant).
    pub warmup_steps: u64,
    pub weight_decay: f64,
    /// Fraction of word positions selected for the MLM loss.
    pub mask_prob: f64,
    /// λ of the SAS regulariser (> 0 suppresses, < 0 promotes, 0 off).
    pub sas_lambda: f64,
    /// λ applies at steps < this (unset: the whole run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sas_until_step: Option<u64>,
    pub eval_every: u64,
    /// Held-out sentences for the loss and UAS, and minimal pairs per kind.
    pub eval_sentences: usize,
    pub checkpoint_every: u64,
    pub keep_last: usize,
    pub progress: bool,
}

impl Default for SasTrainSection {
    fn default() -> Self {
        Self {
            steps: 1000,
            batch_size: 32,
            lr: 1e-3,
            warmup_steps: 50,
            weight_decay: 0.01,
            mask_prob: 0.15,
            sas_lambda: 0.0,
            sas_until_step: None,
            eval_every: 50,
            eval_sentences: 256,
            checkpoint_every: 500,
            keep_last: 1,
            progress: false,
        }
    }
}

/// One masked-LM run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct SasRunConfig {
    pub run: SasRunSection,
    pub data: DepGrammarConfig,
    pub model: SasModelSection,
    pub train: SasTrainSection,
}

impl SasRunConfig {
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
        if !m.hidden_size.is_multiple_of(m.num_attention_heads) {
            return Err(Error::config(
                "model.num_attention_heads",
                format!(
                    "must divide hidden_size = {}, got {}",
                    m.hidden_size, m.num_attention_heads
                ),
            ));
        }
        if !(m.initializer_range.is_finite() && m.initializer_range > 0.0) {
            return Err(Error::config("model.initializer_range", "must be > 0"));
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
        if !(t.weight_decay.is_finite() && t.weight_decay >= 0.0) {
            return Err(Error::config("train.weight_decay", "must be >= 0"));
        }
        if !(t.mask_prob > 0.0 && t.mask_prob <= 1.0) {
            return Err(Error::config(
                "train.mask_prob",
                format!("must be in (0, 1], got {}", t.mask_prob),
            ));
        }
        if !t.sas_lambda.is_finite() {
            return Err(Error::config("train.sas_lambda", "must be finite"));
        }
        if t.eval_every == 0 {
            return Err(Error::config("train.eval_every", "must be at least 1"));
        }
        if t.eval_sentences == 0 {
            return Err(Error::config("train.eval_sentences", "must be at least 1"));
        }
        Ok(())
    }

    /// The run's directory, `run.dir/run.name`.
    pub fn run_dir(&self) -> PathBuf {
        self.run.dir.join(&self.run.name)
    }

    /// The encoder config of `vocab` tokens and sentences of the grammar.
    pub fn encoder_config(&self, vocab: usize) -> EncoderConfig {
        let m = &self.model;
        EncoderConfig {
            vocab_size: vocab,
            hidden_size: m.hidden_size,
            num_hidden_layers: m.num_hidden_layers,
            num_attention_heads: m.num_attention_heads,
            intermediate_size: m.intermediate_size,
            hidden_act: "gelu".into(),
            max_position_embeddings: self.data.max_words() + 2,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            pad_token_id: Some(PAD),
            position_embedding_type: "absolute".into(),
            model_type: Some("bert".into()),
        }
    }
}

/// λ by step: `lambda` at steps < `until_step` (every step when None), 0 after.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SasSchedule {
    pub lambda: f64,
    pub until_step: Option<u64>,
}

impl SasSchedule {
    /// λ for the update that takes the model from `step` to `step + 1`.
    pub fn lambda_at(&self, step: u64) -> f64 {
        match self.until_step {
            Some(u) if step >= u => 0.0,
            _ => self.lambda,
        }
    }
}

/// A masked sentence: the model input and the (position, original token) pairs of the loss.
#[derive(Clone, Debug, PartialEq)]
pub struct Masked {
    pub input: Vec<u32>,
    pub targets: Vec<(usize, u32)>,
}

/// BERT's masking of an encoded sentence (`[CLS] words [SEP]`): each word position selected with
/// probability `p`; selected → `[MASK]` (0.8), a uniform word id in `N_SPECIAL..vocab` (0.1), or
/// unchanged (0.1).
pub fn mask_sentence(encoded: &[u32], vocab: usize, p: f64, rng: &mut Rng) -> Masked {
    let mut input = encoded.to_vec();
    let mut targets = Vec::new();
    let n_words = vocab.saturating_sub(N_SPECIAL as usize).max(1);
    for (pos, x) in input
        .iter_mut()
        .enumerate()
        .take(encoded.len().saturating_sub(1))
        .skip(1)
    {
        if rng.uniform() >= p {
            continue;
        }
        targets.push((pos, *x));
        let u = rng.uniform();
        if u < 0.8 {
            *x = MASK;
        } else if u < 0.9 {
            *x = N_SPECIAL + rng.below(n_words) as u32;
        }
    }
    Masked { input, targets }
}

/// The SAS penalty R of a batch (see the module docs): `attentions` are the layers' (B, H, T, T)
/// probabilities, `arcs` the (sentence, dependent position, head position) of every gold arc.
/// A scalar tensor, differentiable through the attention (the gradient of a max goes to its
/// argmax).
pub fn sas_penalty(attentions: &[Tensor], arcs: &[(usize, usize, usize)]) -> Result<Tensor> {
    let first = attentions
        .first()
        .ok_or_else(|| Error::msg("sas_penalty: no attention layers"))?;
    let (b, h, t, t2) = first.dims4()?;
    if t != t2 {
        return Err(Error::msg(format!(
            "sas_penalty: attention of shape ({b}, {h}, {t}, {t2}) is not square"
        )));
    }
    if arcs.is_empty() {
        return Ok(Tensor::zeros((), first.dtype(), first.device())?);
    }
    if let Some(a) = arcs.iter().find(|a| a.0 >= b || a.1 >= t || a.2 >= t) {
        return Err(Error::msg(format!(
            "sas_penalty: arc {a:?} outside a ({b}, {t}) batch"
        )));
    }
    let fwd: Vec<u32> = arcs
        .iter()
        .map(|&(s, i, j)| (s * t * t + i * t + j) as u32)
        .collect();
    let bwd: Vec<u32> = arcs
        .iter()
        .map(|&(s, i, j)| (s * t * t + j * t + i) as u32)
        .collect();
    let dev = first.device();
    let fwd = Tensor::from_slice(&fwd, fwd.len(), dev)?;
    let bwd = Tensor::from_slice(&bwd, bwd.len(), dev)?;
    let mut cols = Vec::with_capacity(2 * attentions.len());
    for a in attentions {
        // (B, H, T, T) → (B, T, T, H) → (B·T·T, H): row s·T·T + i·T + j holds A[s, :, i, j].
        let rows = a
            .permute((0, 2, 3, 1))?
            .contiguous()?
            .reshape((b * t * t, h))?;
        cols.push(rows.index_select(&fwd, 0)?);
        cols.push(rows.index_select(&bwd, 0)?);
    }
    let all = Tensor::cat(&cols, 1)?; // (arcs, 2·L·H)
    Ok((all.max(1)?.sum_all()? / b as f64)?)
}

/// The relations scored by UAS (every one but the root, which has no head word).
pub fn scored_rels() -> Vec<Rel> {
    Rel::ALL.into_iter().filter(|&r| r != Rel::Root).collect()
}

/// A padded batch of encoded sentences.
struct Batch {
    ids: Vec<u32>,
    b: usize,
    t: usize,
    lens: Vec<usize>,
}

fn pad(seqs: &[Vec<u32>]) -> Batch {
    let t = seqs.iter().map(|s| s.len()).max().unwrap_or(1);
    let mut ids = Vec::with_capacity(seqs.len() * t);
    for s in seqs {
        ids.extend_from_slice(s);
        ids.extend(std::iter::repeat_n(PAD, t - s.len()));
    }
    Batch {
        ids,
        b: seqs.len(),
        t,
        lens: seqs.iter().map(|s| s.len()).collect(),
    }
}

/// One evaluation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SasEval {
    pub mlm_loss: f64,
    /// SAS (argmax) of "all" and of each scored relation, in [`scored_rels`] order.
    pub sas_all: f64,
    pub sas_rel: Vec<f64>,
    pub soft_all: f64,
    pub blimp_simple: f64,
    pub blimp_attractor: f64,
}

/// The learner: grammar, model, optimiser and step.
pub struct SasLearner {
    pub cfg: SasRunConfig,
    pub grammar: DepGrammar,
    pub model: BertMlm,
    adam: AdamW,
    /// Optimiser steps taken.
    pub step: u64,
}

impl SasLearner {
    /// A freshly initialised learner (weights from `run.seed`).
    pub fn new(cfg: SasRunConfig) -> Result<Self> {
        cfg.validate()?;
        let grammar = DepGrammar::new(cfg.data.clone(), cfg.run.seed, "data.")?;
        let ecfg = cfg.encoder_config(grammar.vocab_size());
        let model =
            BertMlm::new_random(&ecfg, cfg.model.initializer_range, cfg.run.seed, DType::F32)?;
        let adam = AdamW::new(
            model.named_params(),
            AdamWConfig {
                weight_decay: cfg.train.weight_decay,
                ..Default::default()
            },
        )?;
        Ok(Self {
            cfg,
            grammar,
            model,
            adam,
            step: 0,
        })
    }

    /// The schedule of the regulariser.
    pub fn schedule(&self) -> SasSchedule {
        SasSchedule {
            lambda: self.cfg.train.sas_lambda,
            until_step: self.cfg.train.sas_until_step,
        }
    }

    fn lr_at(&self, step: u64) -> f64 {
        let w = self.cfg.train.warmup_steps;
        if w == 0 {
            self.cfg.train.lr
        } else {
            self.cfg.train.lr * ((step + 1) as f64 / w as f64).min(1.0)
        }
    }

    fn mask_rng(&self, label: &str, i: u64) -> Rng {
        Rng::derive(
            self.cfg.run.seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            label,
        )
    }

    /// Masks `sents` (sentence k drawing from stream (`label`, first + k)) into a padded batch
    /// with its loss rows and targets.
    fn masked_batch(
        &self,
        sents: &[Sentence],
        label: &str,
        first: u64,
    ) -> (Batch, Vec<u32>, Vec<u32>) {
        let v = self.grammar.vocab_size();
        let masked: Vec<Masked> = sents
            .iter()
            .enumerate()
            .map(|(k, s)| {
                let mut rng = self.mask_rng(label, first + k as u64);
                mask_sentence(&s.encoded(), v, self.cfg.train.mask_prob, &mut rng)
            })
            .collect();
        let inputs: Vec<Vec<u32>> = masked.iter().map(|m| m.input.clone()).collect();
        let batch = pad(&inputs);
        let (mut rows, mut targets) = (Vec::new(), Vec::new());
        for (k, m) in masked.iter().enumerate() {
            for &(p, y) in &m.targets {
                rows.push((k * batch.t + p) as u32);
                targets.push(y);
            }
        }
        (batch, rows, targets)
    }

    /// One optimiser step on training batch `self.step`; returns (total loss, MLM loss, SAS
    /// penalty R, λ used).
    pub fn train_step(&mut self) -> Result<(f64, f64, f64, f64)> {
        let bs = self.cfg.train.batch_size;
        let first = self.step * bs as u64;
        let sents = self.grammar.batch(Split::Train, first, bs);
        let (batch, rows, targets) = self.masked_batch(&sents, "sas/mask-train", first);
        let out = self
            .model
            .forward(&batch.ids, batch.b, batch.t, &batch.lens)?;
        let mlm = if rows.is_empty() {
            Tensor::zeros((), DType::F32, &Device::Cpu)?
        } else {
            self.model.mlm_loss(&out.hidden, &rows, &targets)?
        };
        let arcs: Vec<(usize, usize, usize)> = sents
            .iter()
            .enumerate()
            .flat_map(|(k, s)| s.arcs().into_iter().map(move |(i, j, _)| (k, i, j)))
            .collect();
        let reg = sas_penalty(&out.attentions, &arcs)?;
        let lambda = self.schedule().lambda_at(self.step);
        let loss = if lambda != 0.0 {
            (&mlm + (&reg * lambda)?)?
        } else {
            mlm.clone()
        };
        let scalar =
            |t: &Tensor| -> Result<f64> { Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?) };
        let (l, m, r) = (scalar(&loss)?, scalar(&mlm)?, scalar(&reg)?);
        if !l.is_finite() {
            return Err(Error::msg(format!(
                "sas: the loss is {l} at step {} (lower train.lr?)",
                self.step + 1
            )));
        }
        let grads = loss.backward()?;
        let lr = self.lr_at(self.step);
        self.adam.step(&grads, lr)?;
        self.step += 1;
        Ok((l, m, r, lambda))
    }

    /// The held-out evaluation (see the module docs).
    pub fn evaluate(&self) -> Result<(SasEval, UasScores)> {
        let n = self.cfg.train.eval_sentences;
        let sents = self.grammar.batch(Split::Eval, 0, n);
        let rels = scored_rels();
        let c = &self.model.cfg;
        let mut acc = UasAccumulator::new(
            c.num_hidden_layers,
            c.num_attention_heads,
            rels.iter().map(|r| r.name().to_string()).collect(),
        );
        let (mut loss_sum, mut loss_n) = (0.0, 0usize);
        for (ci, chunk) in sents.chunks(128).enumerate() {
            let first = (ci * 128) as u64;
            // Loss on masked inputs.
            let (batch, rows, targets) = self.masked_batch(chunk, "sas/mask-eval", first);
            if !rows.is_empty() {
                let out = self
                    .model
                    .forward(&batch.ids, batch.b, batch.t, &batch.lens)?;
                let l = self
                    .model
                    .mlm_loss(&out.hidden, &rows, &targets)?
                    .to_scalar::<f32>()? as f64;
                loss_sum += l * rows.len() as f64;
                loss_n += rows.len();
            }
            // UAS on the unmasked sentences.
            let enc: Vec<Vec<u32>> = chunk.iter().map(|s| s.encoded()).collect();
            let batch = pad(&enc);
            let out = self
                .model
                .forward(&batch.ids, batch.b, batch.t, &batch.lens)?;
            let t = batch.t;
            let layers: Vec<Vec<f32>> = out
                .attentions
                .iter()
                .map(|a| Ok(a.flatten_all()?.to_vec1::<f32>()?))
                .collect::<Result<_>>()?;
            let h = c.num_attention_heads;
            for (k, s) in chunk.iter().enumerate() {
                let arcs: Vec<GoldArc> = s
                    .arcs()
                    .into_iter()
                    .map(|(dep, head, r)| GoldArc {
                        dep,
                        head,
                        rel: rels.iter().position(|&x| x == r).unwrap_or(0),
                    })
                    .collect();
                acc.count(&arcs);
                let words = 1..s.words.len() + 1;
                for (l, a) in layers.iter().enumerate() {
                    for hh in 0..h {
                        let off = ((k * h) + hh) * t * t;
                        acc.add(l, hh, &a[off..off + t * t], t, words.clone(), &arcs);
                    }
                }
            }
        }
        let scores = acc.scores();
        let all = scores.all();
        let ev = SasEval {
            mlm_loss: if loss_n > 0 {
                loss_sum / loss_n as f64
            } else {
                0.0
            },
            sas_all: scores.sas(all).score,
            sas_rel: (0..rels.len()).map(|r| scores.sas(r).score).collect(),
            soft_all: scores.soft_sas(all).score,
            blimp_simple: self.blimp(PairKind::Simple, n)?,
            blimp_attractor: self.blimp(PairKind::Attractor, n)?,
        };
        Ok((ev, scores))
    }

    /// Minimal-pair accuracy over `n` pairs of `kind`.
    pub fn blimp(&self, kind: PairKind, n: usize) -> Result<f64> {
        let pairs: Vec<_> = (0..n as u64)
            .map(|i| self.grammar.minimal_pair(kind, i))
            .collect();
        let mut right = 0usize;
        for chunk in pairs.chunks(128) {
            let enc: Vec<Vec<u32>> = chunk
                .iter()
                .map(|p| {
                    let mut e = p.good.encoded();
                    e[p.good.verb + 1] = MASK;
                    e
                })
                .collect();
            let batch = pad(&enc);
            let out = self
                .model
                .forward(&batch.ids, batch.b, batch.t, &batch.lens)?;
            let rows: Vec<u32> = chunk
                .iter()
                .enumerate()
                .map(|(k, p)| (k * batch.t + p.good.verb + 1) as u32)
                .collect();
            let lp: Vec<Vec<f32>> = self.model.mlm_logprobs(&out.hidden, &rows)?.to_vec2()?;
            for (p, row) in chunk.iter().zip(&lp) {
                let good = row[p.good.words[p.good.verb] as usize];
                let bad = row[p.bad_verb as usize];
                right += (good > bad) as usize;
            }
        }
        Ok(right as f64 / n.max(1) as f64)
    }

    /// Writes checkpoint `step-N` into `run_dir`.
    pub fn save(&self, run_dir: &Path) -> Result<PathBuf> {
        let state = TrainerState::new(self.step, 0, Rng::new(0).state());
        save_checkpoint(
            run_dir,
            self.step,
            |d| {
                self.model.save(d)?;
                self.adam
                    .save_state_file(&d.join("optimizer.safetensors"))?;
                state.save(d)
            },
            self.cfg.train.keep_last,
        )
    }

    /// Restores weights, optimiser moments and the step from checkpoint directory `ck`.
    pub fn load(&mut self, ck: &Path) -> Result<()> {
        self.model.load_weights(ck)?;
        self.adam
            .load_state_file(&ck.join("optimizer.safetensors"))?;
        self.step = TrainerState::load(ck)?.step;
        Ok(())
    }
}

/// What a finished run showed, read back from its `metrics.jsonl`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SasRunSummary {
    pub name: String,
    pub dir: PathBuf,
    pub steps: u64,
    pub final_eval: SasEval,
    /// Step ending the eval interval of the steepest fall of `eval/mlm_loss` (the first
    /// interval, the trivial unigram fall from ln V, excluded).
    pub loss_drop: Option<u64>,
    /// Step ending the interval of the steepest rise of `sas/all` (structure onset).
    pub structure_onset: Option<u64>,
    /// First evaluated step with `blimp/attractor` ≥ [`CAPABILITY_LEVEL`] (capability onset; None:
    /// agreement never left chance).
    pub capability_onset: Option<u64>,
    /// Highest `sas/all` and its step.
    pub peak_sas: (u64, f64),
    /// (step, value) series of the logged metrics.
    pub curves: Vec<(String, Vec<(u64, f64)>)>,
}

/// Minimal-pair accuracy that counts as capability: chance is 0.5, and over the default 256 pairs a
/// chance-level model reaches 0.75 with probability < 1e-15 (binomial tail), so crossing it is a
/// real onset, not noise.
pub const CAPABILITY_LEVEL: f64 = 0.75;

/// The step ending the interval of steepest change of `c` in direction `sign` (+1 rise, −1 fall),
/// skipping the first `skip` intervals.
pub fn steepest(c: &[(u64, f64)], sign: f64, skip: usize) -> Option<u64> {
    let mut best: Option<(u64, f64)> = None;
    for w in c.windows(2).skip(skip) {
        let ds = w[1].0.saturating_sub(w[0].0).max(1) as f64;
        let rate = sign * (w[1].1 - w[0].1) / ds;
        if rate > 0.0 && best.is_none_or(|b| rate > b.1) {
            best = Some((w[1].0, rate));
        }
    }
    best.map(|b| b.0)
}

/// Keys of the metrics plotted and summarised.
pub fn metric_keys() -> Vec<String> {
    let mut k: Vec<String> = [
        "eval/mlm_loss",
        "sas/all",
        "sas_soft/all",
        "blimp/simple",
        "blimp/attractor",
        "train/mlm_loss",
        "train/sas_penalty",
        "train/lambda",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    k.extend(scored_rels().iter().map(|r| format!("sas/{}", r.name())));
    k
}

fn log_eval(
    sink: &mut MetricsSink,
    step: u64,
    ev: &SasEval,
    train: Option<(f64, f64, f64, f64)>,
) -> Result<()> {
    let mut m: Vec<(String, f64)> = vec![
        ("eval/mlm_loss".into(), ev.mlm_loss),
        ("sas/all".into(), ev.sas_all),
        ("sas_soft/all".into(), ev.soft_all),
        ("blimp/simple".into(), ev.blimp_simple),
        ("blimp/attractor".into(), ev.blimp_attractor),
        (
            "blimp/all".into(),
            0.5 * (ev.blimp_simple + ev.blimp_attractor),
        ),
    ];
    for (r, v) in scored_rels().iter().zip(&ev.sas_rel) {
        m.push((format!("sas/{}", r.name()), *v));
    }
    if let Some((l, mlm, reg, lambda)) = train {
        m.push(("train/loss".into(), l));
        m.push(("train/mlm_loss".into(), mlm));
        m.push(("train/sas_penalty".into(), reg));
        m.push(("train/lambda".into(), lambda));
    }
    let refs: Vec<(&str, f64)> = m.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    sink.log(step, &refs)
}

/// Trains (or resumes) the run `cfg` to `train.steps`, logging evaluations, and summarises it.
pub fn train_run(cfg: &SasRunConfig, start: &Start) -> Result<SasRunSummary> {
    cfg.validate()?;
    let dir = cfg.run_dir();
    let mut rd = open_run(&dir, cfg, start)?;
    let mut learner = SasLearner::new(cfg.clone())?;
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
        let (ev, _) = learner.evaluate()?;
        log_eval(&mut sink, 0, &ev, None)?;
    }
    let mut acc = (0.0, 0.0, 0.0, 0.0);
    let mut n_acc = 0u64;
    while learner.step < t.steps {
        let (l, m, r, lam) = learner.train_step()?;
        acc = (acc.0 + l, acc.1 + m, acc.2 + r, lam);
        n_acc += 1;
        let s = learner.step;
        if s % t.eval_every == 0 || s == t.steps {
            let (ev, _) = learner.evaluate()?;
            let k = n_acc as f64;
            let tr = (acc.0 / k, acc.1 / k, acc.2 / k, acc.3);
            log_eval(&mut sink, s, &ev, Some(tr))?;
            acc = (0.0, 0.0, 0.0, 0.0);
            n_acc = 0;
            if t.progress {
                eprintln!(
                    "{} step {s}/{}  mlm {:.4}  eval {:.4}  SAS {:.3} (soft {:.3})  blimp {:.3}/{:.3}  λ {}  {:.0}s",
                    cfg.run.name,
                    t.steps,
                    tr.1,
                    ev.mlm_loss,
                    ev.sas_all,
                    ev.soft_all,
                    ev.blimp_simple,
                    ev.blimp_attractor,
                    tr.3,
                    t0.elapsed().as_secs_f64()
                );
            }
        }
        if (t.checkpoint_every > 0 && s % t.checkpoint_every == 0) || s == t.steps {
            learner.save(&dir)?;
        }
    }
    let summary = summarize(cfg, &dir)?;
    crate::checkpoint::write_json_atomic(&dir.join("sas_summary.json"), &summary)?;
    write_run_report(&dir, cfg)?;
    Ok(summary)
}

/// The summary of a run from its metrics file.
pub fn summarize(cfg: &SasRunConfig, dir: &Path) -> Result<SasRunSummary> {
    let rows = read_metrics(&dir.join(METRICS_FILE))?;
    let curves: Vec<(String, Vec<(u64, f64)>)> = metric_keys()
        .into_iter()
        .map(|k| {
            let s = series(&rows, &k);
            (k, s)
        })
        .collect();
    let get = |k: &str| -> &[(u64, f64)] {
        curves
            .iter()
            .find(|c| c.0 == k)
            .map_or(&[][..], |c| c.1.as_slice())
    };
    let last = |k: &str| get(k).last().map_or(0.0, |p| p.1);
    let sas = get("sas/all");
    let peak = sas.iter().fold(
        (0u64, f64::NEG_INFINITY),
        |a, &(s, v)| if v > a.1 { (s, v) } else { a },
    );
    Ok(SasRunSummary {
        name: cfg.run.name.clone(),
        dir: dir.to_path_buf(),
        steps: cfg.train.steps,
        final_eval: SasEval {
            mlm_loss: last("eval/mlm_loss"),
            sas_all: last("sas/all"),
            sas_rel: scored_rels()
                .iter()
                .map(|r| last(&format!("sas/{}", r.name())))
                .collect(),
            soft_all: last("sas_soft/all"),
            blimp_simple: last("blimp/simple"),
            blimp_attractor: last("blimp/attractor"),
        },
        loss_drop: steepest(get("eval/mlm_loss"), -1.0, 1),
        structure_onset: steepest(sas, 1.0, 0),
        capability_onset: get("blimp/attractor")
            .iter()
            .find(|p| p.1 >= CAPABILITY_LEVEL)
            .map(|p| p.0),
        peak_sas: (peak.0, peak.1.max(0.0)),
        curves,
    })
}

fn write_run_report(dir: &Path, cfg: &SasRunConfig) -> Result<()> {
    use crate::report::Section;
    let rels: Vec<String> = scored_rels()
        .iter()
        .map(|r| format!("sas/{}", r.name()))
        .collect();
    let rel_refs: Vec<&str> = rels.iter().map(|s| s.as_str()).collect();
    let sections = vec![
        Section::plot("MLM loss (held out)", &["eval/mlm_loss"]),
        Section::plot(
            "SAS: best head's UAS, argmax and soft",
            &["sas/all", "sas_soft/all"],
        ),
        Section::plot("SAS per relation", &rel_refs),
        Section::plot(
            "Minimal pairs (subject-verb agreement)",
            &["blimp/simple", "blimp/attractor"],
        ),
        Section::plot(
            "SAS penalty R and λ",
            &["train/sas_penalty", "train/lambda"],
        ),
        Section::table_from_json(
            "Config",
            &serde_json::to_value(cfg).map_err(|e| Error::msg(e.to_string()))?,
        ),
    ];
    crate::report::write_report(dir, &format!("SAS run {}", cfg.run.name), &sections)?;
    Ok(())
}
