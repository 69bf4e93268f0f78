//! `gradus train dpo`: preference optimisation with `[objective] kind = dpo | robust | ipo |
//! dpo_norm | simpo | gamma_dpo | hinge | kto | marge`, from a trained (SFT) model.
//!
//! 1. Pairs (JSONL/Parquet or the synthetic generator) are tokenized with TRL's semantics.
//! 2. Reference log-probs are computed once from the initial policy (`reference.mode =
//!    "precompute"`, no second copy of the weights) or each step by a frozen copy (`"online"`).
//! 3. The shared loop ([`crate::trainer::fit_learner`]) minimises the objective, logging reward
//!    accuracy and margins, chosen/rejected log-probs and in-batch ranking accuracy every step.
//! 4. Every `prefs.eval_every` steps and at the end: ranking accuracy (raw and length-normalised),
//!    the reference's, the idealised ranking accuracy over a β grid, the alignment gap and
//!    per-pair flip difficulty on held-out pairs (Chen et al. 2024), into metrics.jsonl,
//!    `ranking.json` and the report.

use std::path::Path;

use gradus_data::pack::Batch;
use gradus_data::pack::{CursorState, IndexCursor};
use gradus_data::preference::{
    completion_batch, completion_sequence, pair_batch, read_unpaired, tokenize, BadPairPolicy,
    TokenizedPair,
};
use gradus_data::tokenizer::Tokenizer;
use gradus_model::decoder::Decoder;
use gradus_model::fast::FastDecoder;
use gradus_model::hf::load_decoder;
use gradus_model::WeightDtype;
use gradus_objectives::math::values;
use gradus_objectives::preference::{kto, marge, SeqLoss};
use gradus_objectives::ranking::{ranking_report, RankingReport, BETAS};
use gradus_objectives::{PairLogps, PreferenceObjective, SeqLogps, SingleObjective};
use gradus_tensor::{Error, Result, Tensor, Var};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::lora::{dropout_state, restore_dropout, LoraRun};
use crate::prefs::{
    constant_logps, load_pairs, pad_id, pair_logps, pair_logps_all, pair_scores, PairData,
    PrefsSection,
};
use crate::report::Section;
use crate::trainer::{
    fast_engine_for, fit_learner, save_model_files, set_params, write_run_report, FitSummary,
    Learner,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReferenceMode {
    /// Reference log-probs of every pair computed once, before the first step.
    #[default]
    Precompute,
    /// A frozen copy of the initial model scores each batch.
    Online,
}

#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReferenceSection {
    pub mode: ReferenceMode,
}

crate::recipe_config! {
    /// The `gradus train dpo` config: the shared recipe sections (with `[lora]`) plus
    /// `[objective]`, `[reference]`, `[prefs]`. `data.seq_len` is the longest prompt + completion
    /// allowed. With `[lora]` the reference is the base model with the adapters disabled (no
    /// second copy of the weights); checkpoints hold the adapter in the PEFT layout.
    pub struct DpoConfig {
        pub objective: PreferenceObjective,
        pub reference: ReferenceSection,
        pub prefs: PrefsSection,
    }
}

impl DpoConfig {
    pub fn validate(&self) -> Result<()> {
        self.base().validate()?;
        self.objective.validate()?;
        if let Some(l) = &self.lora {
            l.validate()?;
        }
        if self.model.init_from.is_none() {
            return Err(Error::config(
                "model.init_from",
                "preference optimisation starts from a trained model (an SFT checkpoint)",
            ));
        }
        Ok(())
    }
}

/// One completion for the unpaired objectives (KTO, MargE).
#[derive(Clone, Debug)]
struct Single {
    prompt: Vec<u32>,
    completion: Vec<u32>,
    desirable: bool,
    reward: f32,
}

/// Pairs as single completions: chosen desirable (reward `chosen_reward`, else 1), rejected
/// undesirable (`rejected_reward`, else 0).
fn singles(pairs: &[TokenizedPair]) -> Vec<Single> {
    pairs
        .iter()
        .flat_map(|p| {
            [
                Single {
                    prompt: p.prompt.clone(),
                    completion: p.chosen.clone(),
                    desirable: true,
                    reward: p.chosen_reward.unwrap_or(1.0) as f32,
                },
                Single {
                    prompt: p.prompt.clone(),
                    completion: p.rejected.clone(),
                    desirable: false,
                    reward: p.rejected_reward.unwrap_or(0.0) as f32,
                },
            ]
        })
        .collect()
}

/// Unpaired rows (prompt/completion/label) tokenized as singles; MargE's reward is the row's
/// `reward` field when it has one, else the label (1/0).
fn unpaired_singles(
    source: &str,
    p: &PrefsSection,
    tok: &Tokenizer,
    max_len: usize,
) -> Result<Vec<Single>> {
    let rows = read_unpaired(Path::new(source), &p.fields)?;
    let tpl = gradus_data::chat::ChatTemplate::for_tokenizer(tok)?;
    let mut out = Vec::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        let bad = if r.completion.is_empty() {
            Some("empty completion")
        } else {
            None
        };
        let t = tokenize(tok, &tpl, &r.prompt, &[&r.completion])?;
        let bad = bad.or((t.prompt.len() + t.completions[0].len() > max_len)
            .then_some("prompt + completion is longer than the context"));
        if let Some(why) = bad {
            match p.on_bad_pair {
                BadPairPolicy::Error => {
                    return Err(Error::msg(format!("{source}: example {i}: {why}")))
                }
                BadPairPolicy::Skip => continue,
            }
        }
        let mut c = t.completions;
        out.push(Single {
            prompt: t.prompt,
            completion: c.pop().unwrap_or_default(),
            desirable: r.label,
            reward: r
                .reward
                .map_or(if r.label { 1.0 } else { 0.0 }, |x| x as f32),
        });
    }
    if out.is_empty() {
        return Err(Error::config(
            "data.source",
            format!("`{source}` holds no usable examples"),
        ));
    }
    Ok(out)
}

/// The batch of singles' prompt + completion sequences; `shift` pairs prompt i with the completion
/// of item (i + 1) mod N (KTO's mismatched KL estimate).
fn singles_batch(
    items: &[&Single],
    shift: Option<&[Single]>,
    idx: &[usize],
    pad: u32,
) -> Result<Batch> {
    let seqs: Vec<_> = items
        .iter()
        .zip(idx)
        .map(|(s, &i)| match shift {
            Some(all) => completion_sequence(&s.prompt, &all[(i + 1) % all.len()].completion),
            None => completion_sequence(&s.prompt, &s.completion),
        })
        .collect();
    completion_batch(&seqs, pad)
}

/// log π(completion | prompt) of singles: (B,) with lengths. `shift` pairs prompt i with the
/// completion of item (i + 1) mod N (KTO's mismatched KL estimate).
fn single_logps(
    model: &Decoder,
    items: &[&Single],
    shift: Option<&[Single]>,
    idx: &[usize],
    pad: u32,
) -> Result<SeqLogps> {
    let b = singles_batch(items, shift, idx, pad)?;
    let inp = crate::trainer::forward_input(&b);
    let lp = model.row_logps(&inp, &b.targets, &b.loss_weight)?;
    let lens = (0..b.rows)
        .map(|r| {
            b.loss_weight[r * b.seq_len..(r + 1) * b.seq_len]
                .iter()
                .sum()
        })
        .collect();
    SeqLogps::new(lp, lens)
}

enum Items {
    Pairs(Vec<TokenizedPair>),
    Singles(Vec<Single>),
}

impl Items {
    fn len(&self) -> usize {
        match self {
            Items::Pairs(p) => p.len(),
            Items::Singles(s) => s.len(),
        }
    }
}

/// Reference log-probs: cached per item ([c, r, |c|, |r|] for pairs; [lp, mismatched lp, len, 0]
/// for singles) or a frozen model.
enum Reference {
    Cached(Vec<[f64; 4]>),
    Online(Box<Decoder>),
    /// A reference-free objective (SimPO): no reference is loaded or scored.
    None,
}

struct DpoLearner<'a> {
    model: &'a mut Decoder,
    lora: Option<LoraRun>,
    tok: &'a Tokenizer,
    objective: PreferenceObjective,
    items: Items,
    reference: Reference,
    cursor: IndexCursor,
    pad: u32,
    eval: Vec<TokenizedPair>,
    eval_ref: Vec<[f64; 4]>,
    eval_every: u64,
    eps: f64,
    last_report: Option<RankingReport>,
    /// The evaluation pairs are training pairs (`prefs.held_out = "train_subset"`).
    eval_is_train_subset: bool,
    /// The fast training graph holding the live policy weights, or None for the candle graph.
    fast: Option<FastDecoder>,
    /// On the fast graph: the leaf holding the last policy pass's per-row log-probs (the
    /// objective's input), with that batch's token weights and row length, to turn the
    /// objective's gradient w.r.t. the rows into `dlogp` per token.
    leaf: Option<(Var, Vec<f32>, usize)>,
}

/// Σ_t logp[r, t]·w[r, t] per row (rows of `t`).
fn weighted_rows(lp: &[f32], w: &[f32], t: usize) -> Vec<f32> {
    lp.chunks(t.max(1))
        .zip(w.chunks(t.max(1)))
        .map(|(l, w)| l.iter().zip(w).map(|(a, b)| a * b).sum())
        .collect()
}

/// Completion lengths (Σ weights) of each row.
fn row_lengths(b: &Batch) -> Vec<f32> {
    (0..b.rows)
        .map(|r| {
            b.loss_weight[r * b.seq_len..(r + 1) * b.seq_len]
                .iter()
                .sum()
        })
        .collect()
}

/// A metric's batch mean; 0 for an empty batch.
fn mean(v: &[f32]) -> f64 {
    gradus_tensor::num::mean(v.iter().map(|&x| x as f64)).unwrap_or(0.0)
}

impl DpoLearner<'_> {
    /// Writes the fast graph's weights back into the model (no-op on the candle graph).
    fn sync_model(&self) -> Result<()> {
        match &self.fast {
            Some(f) => f.write_to(self.model),
            None => Ok(()),
        }
    }

    /// Row log-probs of `b` under the policy: the candle graph, or on the fast graph a leaf Var
    /// (recorded for [`Learner::fast_loss`] when `grad`; detached otherwise).
    fn policy_rows(&mut self, b: &Batch, grad: bool) -> Result<Tensor> {
        match &mut self.fast {
            None => {
                let lp = self.model.row_logps(
                    &crate::trainer::forward_input(b),
                    &b.targets,
                    &b.loss_weight,
                )?;
                Ok(if grad { lp } else { lp.detach() })
            }
            Some(f) => {
                let lp = f.forward(&crate::trainer::forward_input(b), &b.targets)?;
                let rows = weighted_rows(lp, &b.loss_weight, b.seq_len);
                let leaf = Var::from_slice(&rows, rows.len(), self.model.device())?;
                if grad {
                    self.leaf = Some((leaf.clone(), b.loss_weight.clone(), b.seq_len));
                    Ok(leaf.as_tensor().clone())
                } else {
                    Ok(leaf.as_tensor().detach())
                }
            }
        }
    }

    /// The policy's pair log-probs ([`pair_logps`] on either graph).
    fn policy_pairs(&mut self, pairs: &[&TokenizedPair]) -> Result<PairLogps> {
        let b = pair_batch(pairs, self.pad)?;
        let lp = self.policy_rows(&b, true)?;
        let (n, lens) = (pairs.len(), row_lengths(&b));
        PairLogps::new(
            SeqLogps::new(lp.narrow(0, 0, n)?, lens[..n].to_vec())?,
            SeqLogps::new(lp.narrow(0, n, n)?, lens[n..].to_vec())?,
        )
    }

    /// The policy's single-completion log-probs ([`single_logps`] on either graph).
    fn policy_singles(
        &mut self,
        items: &[&Single],
        shift: Option<&[Single]>,
        idx: &[usize],
        grad: bool,
    ) -> Result<SeqLogps> {
        let b = singles_batch(items, shift, idx, self.pad)?;
        let lp = self.policy_rows(&b, grad)?;
        SeqLogps::new(lp, row_lengths(&b))
    }

    /// The micro-batch's objective (divided by `norm`) and its metrics, the policy pass on
    /// either graph.
    fn objective_loss(
        &mut self,
        items: &Items,
        idx: &[usize],
        norm: f64,
    ) -> Result<(Tensor, Vec<(String, f64)>)> {
        let scale = idx.len() as f64 / norm;
        let mut metrics: Vec<(String, f64)> = Vec::new();
        let mut put = |k: &str, v: f64| metrics.push((k.to_string(), v * scale));
        let objective = self.objective.clone();
        let losses = match (items, &objective) {
            (Items::Pairs(all), PreferenceObjective::Pair(objective)) => {
                let pairs: Vec<&TokenizedPair> = idx.iter().map(|&i| &all[i]).collect();
                let policy = self.policy_pairs(&pairs)?;
                let reference = self.reference_pairs(idx, &pairs)?;
                let pl = objective.loss(&policy, reference.as_ref())?;
                let (lc, lr) = (
                    values(&policy.chosen.logps)?,
                    values(&policy.rejected.logps)?,
                );
                let acc: Vec<f32> = pl
                    .chosen_rewards
                    .iter()
                    .zip(&pl.rejected_rewards)
                    .map(|(c, r)| (c > r) as u8 as f32)
                    .collect();
                let margins: Vec<f32> = pl
                    .chosen_rewards
                    .iter()
                    .zip(&pl.rejected_rewards)
                    .map(|(c, r)| c - r)
                    .collect();
                let ranked: Vec<f32> = lc
                    .iter()
                    .zip(&lr)
                    .map(|(c, r)| (c > r) as u8 as f32)
                    .collect();
                put("rewards/chosen", mean(&pl.chosen_rewards));
                put("rewards/rejected", mean(&pl.rejected_rewards));
                put("rewards/accuracies", mean(&acc));
                put("rewards/margins", mean(&margins));
                put("logps/chosen", mean(&lc));
                put("logps/rejected", mean(&lr));
                put("ranking/train_accuracy", mean(&ranked));
                pl.losses
            }
            (Items::Singles(all), PreferenceObjective::Single(objective)) => {
                let items: Vec<&Single> = idx.iter().map(|&i| &all[i]).collect();
                // KTO's mismatched pass (no gradient). On the fast graph it runs first: the graph
                // keeps only the last forward for its backward, which must be the policy's. On the
                // candle graph it runs after the policy, as it always has (the LoRA dropout
                // stream is drawn in that order).
                let is_kto = matches!(objective, SingleObjective::Kto { .. });
                let mut shifted = None;
                if is_kto && self.fast.is_some() {
                    shifted = Some(self.policy_singles(&items, Some(all), idx, false)?.detach());
                }
                let policy = self.policy_singles(&items, None, idx, true)?;
                if is_kto && shifted.is_none() {
                    shifted = Some(self.policy_singles(&items, Some(all), idx, false)?.detach());
                }
                let (reference, ref_shift) = self.reference_singles(idx, &items, all)?;
                let SeqLoss { losses, rewards } = match *objective {
                    SingleObjective::Kto {
                        beta,
                        desirable_weight,
                        undesirable_weight,
                    } => {
                        let shifted =
                            shifted.ok_or_else(|| Error::msg("kto: no mismatched pass"))?;
                        let kl = mean(&values(&(shifted.logps - ref_shift.logps)?)?);
                        put("kto/kl", kl);
                        let labels: Vec<bool> = items.iter().map(|s| s.desirable).collect();
                        kto(
                            &policy,
                            &reference,
                            &labels,
                            kl,
                            beta,
                            desirable_weight,
                            undesirable_weight,
                        )?
                    }
                    SingleObjective::Marge {
                        alpha,
                        beta,
                        self_normalize,
                    } => {
                        let r: Vec<f32> = items.iter().map(|s| s.reward).collect();
                        marge(&policy, &reference, &r, alpha, beta, self_normalize)?
                    }
                };
                let (good, bad): (Vec<f32>, Vec<f32>) = {
                    let mut g = Vec::new();
                    let mut b = Vec::new();
                    for (s, r) in items.iter().zip(&rewards) {
                        if s.desirable {
                            g.push(*r)
                        } else {
                            b.push(*r)
                        }
                    }
                    (g, b)
                };
                put("rewards/chosen", mean(&good));
                put("rewards/rejected", mean(&bad));
                put("logps/mean", mean(&values(&policy.logps)?));
                losses
            }
            // `run` builds pairs for a pair objective and single completions for KTO/MargE.
            _ => {
                return Err(Error::msg(
                    "internal: the training items (pairs or single completions) do not fit the objective",
                ))
            }
        };
        Ok(((losses.sum_all()? / norm)?, metrics))
    }

    fn reference_pairs(
        &self,
        idx: &[usize],
        pairs: &[&TokenizedPair],
    ) -> Result<Option<PairLogps>> {
        match &self.reference {
            Reference::Cached(c) => {
                let pick = |k: usize| idx.iter().map(|&i| c[i][k]).collect::<Vec<f64>>();
                let dev = self.model.device();
                Ok(Some(PairLogps::new(
                    constant_logps(&pick(0), &pick(2), dev)?,
                    constant_logps(&pick(1), &pick(3), dev)?,
                )?))
            }
            Reference::Online(m) => Ok(Some(pair_logps(m, pairs, self.pad)?.detach())),
            Reference::None => Ok(None),
        }
    }

    fn reference_singles(
        &self,
        idx: &[usize],
        items: &[&Single],
        all: &[Single],
    ) -> Result<(SeqLogps, SeqLogps)> {
        match &self.reference {
            Reference::Cached(c) => {
                let pick = |k: usize| idx.iter().map(|&i| c[i][k]).collect::<Vec<f64>>();
                let dev = self.model.device();
                let lens = pick(2);
                let shifted_lens: Vec<f64> = idx
                    .iter()
                    .map(|&i| all[(i + 1) % all.len()].completion.len() as f64)
                    .collect();
                Ok((
                    constant_logps(&pick(0), &lens, dev)?,
                    constant_logps(&pick(1), &shifted_lens, dev)?,
                ))
            }
            Reference::Online(m) => Ok((
                single_logps(m, items, None, idx, self.pad)?.detach(),
                single_logps(m, items, Some(all), idx, self.pad)?.detach(),
            )),
            Reference::None => Err(Error::msg(
                "KTO and MargE need reference log-probs, and none was prepared",
            )),
        }
    }

    /// Ranking diagnostics of the current policy on the held-out pairs (adapter dropout off).
    fn ranking(&self) -> Result<RankingReport> {
        self.sync_model()?;
        self.model.set_lora_training(false);
        let pol = pair_logps_all(self.model, &self.eval, self.pad, 16);
        self.model.set_lora_training(true);
        Ok(ranking_report(
            &pair_scores(&self.eval, &pol?, &self.eval_ref),
            self.objective.beta(),
            self.eps,
        ))
    }
}

/// The metrics of a ranking report, `ranking/*` keys.
pub fn ranking_metrics(r: &RankingReport) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("ranking/accuracy".into(), json!(r.ranking_accuracy));
    m.insert(
        "ranking/accuracy_normalized".into(),
        json!(r.ranking_accuracy_normalized),
    );
    m.insert(
        "ranking/reference_accuracy".into(),
        json!(r.reference_ranking_accuracy),
    );
    m.insert("ranking/reward_accuracy".into(), json!(r.reward_accuracy));
    m.insert("ranking/mean_dpo_loss".into(), json!(r.mean_dpo_loss));
    m.insert(
        "ranking/mean_flip_threshold".into(),
        json!(r.mean_flip_threshold),
    );
    m.insert("ranking/flip_consistency".into(), json!(r.flip_consistency));
    for ((b, ideal), (_, gap)) in r.idealised.iter().zip(&r.alignment_gap) {
        m.insert(format!("ranking/idealised@{b}"), json!(ideal));
        m.insert(format!("ranking/alignment_gap@{b}"), json!(gap));
    }
    m
}

impl Learner for DpoLearner<'_> {
    type Micro = Vec<usize>;

    fn params(&self) -> Vec<(String, Var)> {
        if self.lora.is_some() {
            self.model.lora_params()
        } else {
            self.model.named_params()
        }
    }
    fn next_micro(&mut self) -> Result<Vec<usize>> {
        Ok(self
            .cursor
            .next_indices()
            .ok_or_else(|| Error::msg("no preference data"))?
            .to_vec())
    }
    fn weight(&self, m: &Vec<usize>) -> f64 {
        m.len() as f64
    }
    fn tokens(&self, m: &Vec<usize>) -> u64 {
        match &self.items {
            Items::Pairs(p) => m
                .iter()
                .map(|&i| (2 * p[i].prompt.len() + p[i].chosen.len() + p[i].rejected.len()) as u64)
                .sum(),
            Items::Singles(s) => m
                .iter()
                .map(|&i| (s[i].prompt.len() + s[i].completion.len()) as u64)
                .sum(),
        }
    }

    fn loss(&mut self, idx: &Vec<usize>, norm: f64) -> Result<(Tensor, Vec<(String, f64)>)> {
        // The items are lent out for the pass (the policy pass borrows the learner mutably).
        let items = std::mem::replace(&mut self.items, Items::Pairs(Vec::new()));
        let r = self.objective_loss(&items, idx, norm);
        self.items = items;
        r
    }
    fn fast(&mut self) -> Option<&mut FastDecoder> {
        self.fast.as_mut()
    }
    fn fast_loss(&mut self, idx: &Vec<usize>, norm: f64) -> Result<(f64, Vec<(String, f64)>)> {
        // The objective runs on candle tensors over a leaf holding the policy's row log-probs;
        // its gradient w.r.t. the rows, spread over each row's tokens by their weights, is dlogp.
        self.leaf = None;
        let (loss, metrics) = self.loss(idx, norm)?;
        let (leaf, w, t) = self
            .leaf
            .take()
            .ok_or_else(|| Error::msg("dpo: the fast policy pass recorded no leaf"))?;
        let grads = loss.backward()?;
        let drow: Vec<f32> = match grads.get(leaf.as_tensor()) {
            Some(g) => g.to_vec1()?,
            None => vec![0.0; leaf.elem_count()],
        };
        let dlogp: Vec<f32> = w
            .iter()
            .enumerate()
            .map(|(i, &wi)| drow[i / t.max(1)] * wi)
            .collect();
        let f = self
            .fast
            .as_mut()
            .ok_or_else(|| Error::msg("dpo: no fast graph"))?;
        f.backward(&dlogp)?;
        Ok((loss.to_scalar::<f32>()? as f64, metrics))
    }

    fn eval_model(&self) -> Option<(&Decoder, &Tokenizer)> {
        Some((self.model, self.tok))
    }
    fn sync_weights(&self) -> Result<()> {
        self.sync_model()
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
        } else {
            let saved = load_decoder(dir, self.model.device())?;
            let t: Vec<(String, Tensor)> = saved
                .named_params()
                .into_iter()
                .map(|(n, v)| (n, v.as_tensor().clone()))
                .collect();
            set_params(&self.params(), &t, dir)?;
        }
        if let Some(f) = &mut self.fast {
            f.read_from(self.model)?;
        }
        Ok(())
    }
    fn cursor(&self) -> Value {
        let dropout =
            dropout_state(self.model, self.fast.as_ref()).map(crate::checkpoint::SavedRng::from);
        json!({"pairs": self.cursor.state(), "lora_dropout": dropout})
    }
    fn restore_cursor(&mut self, cursor: &Value) -> Result<()> {
        let bad = |e: serde_json::Error| {
            Error::msg(format!("trainer_state.json: bad data_cursor {cursor}: {e}"))
        };
        let st: CursorState = serde_json::from_value(cursor["pairs"].clone()).map_err(bad)?;
        if let Some(d) = cursor.get("lora_dropout").filter(|v| !v.is_null()) {
            restore_dropout(self.model, self.fast.as_mut(), d)?;
        }
        self.cursor.restore(st)
    }
    fn step_metrics(&mut self, step: u64) -> Result<Map<String, Value>> {
        if self.eval.is_empty() || self.eval_every == 0 || !step.is_multiple_of(self.eval_every) {
            return Ok(Map::new());
        }
        let r = self.ranking()?;
        let mut m = ranking_metrics(&r);
        if self.eval_is_train_subset {
            m = m
                .into_iter()
                .map(|(k, v)| (k.replacen("ranking/", "ranking_train_subset/", 1), v))
                .collect();
        }
        self.last_report = Some(r);
        Ok(m)
    }
}

/// What `train dpo` reports.
pub struct DpoSummary {
    pub fit: FitSummary,
    pub before: Option<RankingReport>,
    pub after: Option<RankingReport>,
    pub skipped: usize,
}

/// Runs the recipe (`start` as in [`crate::pretrain::run`]).
pub fn run(cfg: &DpoConfig, start: impl Into<crate::rundir::Start>) -> Result<DpoSummary> {
    cfg.validate()?;
    let base = cfg.base();
    let mut run = crate::prep::start_run_with(&cfg.run_dir(), cfg, &start.into())?;
    let run_dir = run.path().to_path_buf();
    let resume = run.resuming();

    // 1. Tokenizer, policy, pairs.
    let tok = crate::prep::tokenizer_for(&base, &[], resume)?;
    let mut model = crate::prep::model_for(&base, &tok)?;
    model.cfg.dtype = WeightDtype::F32;
    let lora = LoraRun::apply(cfg.lora.as_ref(), &base, &mut model)?;
    // References and evaluations run without adapter dropout.
    model.set_lora_training(false);
    let (data, unpaired) = if cfg.prefs.unpaired {
        if let PreferenceObjective::Pair(_) = cfg.objective {
            return Err(Error::config(
                "prefs.unpaired",
                format!(
                    "unpaired data needs `kto` or `marge`, not `{}`",
                    cfg.objective.name()
                ),
            ));
        }
        let (eval, skipped) = match &cfg.prefs.eval_source {
            Some(e) => {
                // The eval source is held out as a whole: nothing of it is split off.
                let mut pe = cfg.prefs.clone();
                pe.eval_source = None;
                if e != "synthetic" {
                    pe.eval_pairs = 0;
                }
                let d = load_pairs(e, &pe, &tok, cfg.data.seq_len, cfg.run.seed)?;
                (if e == "synthetic" { d.eval } else { d.train }, d.skipped)
            }
            None => (Vec::new(), Default::default()),
        };
        let singles = unpaired_singles(&cfg.data.source, &cfg.prefs, &tok, cfg.data.seq_len)?;
        (
            PairData {
                train: Vec::new(),
                eval,
                skipped,
                eval_is_train_subset: false,
            },
            Some(singles),
        )
    } else {
        (
            load_pairs(
                &cfg.data.source,
                &cfg.prefs,
                &tok,
                cfg.data.seq_len,
                cfg.run.seed,
            )?,
            None,
        )
    };
    let pad = pad_id(&tok);

    // 2. Reference log-probs (the initial policy), cached or a frozen copy.
    let eval_ref = pair_logps_all(&model, &data.eval, pad, 16)?;
    let items = match unpaired {
        Some(s) => Items::Singles(s),
        None if matches!(cfg.objective, PreferenceObjective::Pair(_)) => {
            Items::Pairs(data.train.clone())
        }
        None => Items::Singles(singles(&data.train)),
    };
    let reference = match cfg.reference.mode {
        _ if !cfg.objective.needs_reference() => Reference::None,
        // With LoRA the reference is the base with adapters disabled: the same Vars, no copy.
        ReferenceMode::Online if cfg.lora.is_some() => {
            Reference::Online(Box::new(model.without_adapters()))
        }
        ReferenceMode::Online => Reference::Online(Box::new(gradus_model::lora::load_model_dir(
            &crate::prefs::model_dir(&cfg.model.init_from, "dpo")?,
            model.device(),
        )?)),
        ReferenceMode::Precompute => Reference::Cached(match &items {
            Items::Pairs(p) => pair_logps_all(&model, p, pad, 16)?,
            Items::Singles(s) => {
                let mut out = Vec::with_capacity(s.len());
                for (c, chunk) in s.chunks(16).enumerate() {
                    let idx: Vec<usize> = (c * 16..c * 16 + chunk.len()).collect();
                    let refs: Vec<&Single> = chunk.iter().collect();
                    let a = values(&single_logps(&model, &refs, None, &idx, pad)?.logps)?;
                    let b = values(&single_logps(&model, &refs, Some(s), &idx, pad)?.logps)?;
                    for (k, it) in chunk.iter().enumerate() {
                        out.push([a[k] as f64, b[k] as f64, it.completion.len() as f64, 0.0]);
                    }
                }
                out
            }
        }),
    };
    let n = items.len();
    model.set_lora_training(true);
    let fast = fast_engine_for(&model, cfg.train.engine, None)?;
    let mut learner = DpoLearner {
        model: &mut model,
        lora,
        tok: &tok,
        objective: cfg.objective.clone(),
        items,
        reference,
        cursor: IndexCursor::new(n, cfg.train.batch_size, cfg.run.seed)?
            .with_shuffle(cfg.prefs.shuffle),
        pad,
        eval: data.eval.clone(),
        eval_ref,
        eval_every: cfg.prefs.eval_every,
        eps: cfg.prefs.agreement_eps,
        last_report: None,
        eval_is_train_subset: data.eval_is_train_subset,
        fast,
        leaf: None,
    };
    let before = if learner.eval.is_empty() {
        None
    } else {
        Some(learner.ranking()?)
    };

    // 3. Train.
    let fit = fit_learner(&mut learner, &base, &mut run)?;

    // 4. Final diagnostics, ranking.json, report.
    let after = if learner.eval.is_empty() {
        None
    } else {
        Some(learner.ranking()?)
    };
    if let Some(r) = &after {
        let text = serde_json::to_string_pretty(&json!({"before": before, "after": r, "skipped": data.skipped, "eval_pairs": if data.eval_is_train_subset { "train_subset" } else { "held_out" }})).unwrap_or_default();
        gradus_tensor::io::write_atomic(&run_dir.join("ranking.json"), text.as_bytes())?;
    }
    let mut extra = vec![
        Section::plot("Reward accuracy (train batches)", &["rewards/accuracies"]),
        Section::plot(
            "Implicit rewards",
            &["rewards/chosen", "rewards/rejected", "rewards/margins"],
        ),
        Section::plot("Sequence log-probs", &["logps/chosen", "logps/rejected"]),
    ];
    let (ns, what) = if data.eval_is_train_subset {
        ("ranking_train_subset", "train-subset pairs, NOT held out")
    } else {
        ("ranking", "held-out pairs")
    };
    let ideal_keys: Vec<String> = BETAS
        .iter()
        .map(|b| format!("{ns}/idealised@{b}"))
        .collect();
    let mut rank_keys = vec![
        format!("{ns}/accuracy"),
        format!("{ns}/reference_accuracy"),
        format!("{ns}/reward_accuracy"),
    ];
    rank_keys.extend(ideal_keys);
    let rk: Vec<&str> = rank_keys.iter().map(|s| s.as_str()).collect();
    extra.push(Section::plot(
        &format!("Ranking accuracy ({what}) vs reward accuracy and the idealised ranking accuracy"),
        &rk,
    ));
    if let (Some(b), Some(a)) = (&before, &after) {
        extra.push(Section::table(
            &format!("Ranking diagnostics ({what}), before → after"),
            ranking_table(b, a),
        ));
    }
    extra.push(Section::table(
        "Data",
        vec![
            ("training items".into(), n.to_string()),
            (
                if data.eval_is_train_subset {
                    "evaluation pairs (train_subset: also trained on)".into()
                } else {
                    "held-out pairs (disjoint from training)".into()
                },
                data.eval.len().to_string(),
            ),
            (
                "skipped pairs".into(),
                serde_json::to_string(&data.skipped).unwrap_or_default(),
            ),
        ],
    ));
    write_run_report(
        &run_dir,
        &format!("gradus train dpo ({})", cfg.objective.name()),
        &base,
        &extra,
    )?;
    Ok(DpoSummary {
        fit,
        before,
        after,
        skipped: data.skipped.total(),
    })
}

/// Rows "metric: before → after" of two ranking reports.
pub fn ranking_table(b: &RankingReport, a: &RankingReport) -> Vec<(String, String)> {
    let pct = |x: f64| format!("{:.1}%", 100.0 * x);
    let mut rows = vec![
        (
            "ranking accuracy".to_string(),
            format!("{} → {}", pct(b.ranking_accuracy), pct(a.ranking_accuracy)),
        ),
        (
            "ranking accuracy (length-normalised)".to_string(),
            format!(
                "{} → {}",
                pct(b.ranking_accuracy_normalized),
                pct(a.ranking_accuracy_normalized)
            ),
        ),
        (
            "reward accuracy".to_string(),
            format!("{} → {}", pct(b.reward_accuracy), pct(a.reward_accuracy)),
        ),
        (
            "reference ranking accuracy".to_string(),
            pct(a.reference_ranking_accuracy),
        ),
        (
            "mean DPO loss".to_string(),
            format!("{:.4} → {:.4}", b.mean_dpo_loss, a.mean_dpo_loss),
        ),
        (
            "Thm 4.1 consistency (L ≤ threshold ⇔ ranked)".to_string(),
            pct(a.flip_consistency),
        ),
    ];
    for ((beta, ideal), (_, gap)) in a.idealised.iter().zip(&a.alignment_gap) {
        rows.push((
            format!("idealised ranking accuracy, β = {beta}"),
            format!("{} (alignment gap {})", pct(*ideal), pct(*gap)),
        ));
    }
    rows
}

impl DpoConfig {
    pub fn run_dir(&self) -> std::path::PathBuf {
        self.run.dir.join(&self.run.name)
    }
}
