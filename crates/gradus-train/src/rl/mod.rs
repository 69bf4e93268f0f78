//! `gradus train rl`: RL from verifiable rewards, `[algorithm] kind = grpo | rloo | reinforce_pp |
//! remax | ppo` (RESEARCH §3.13, §3.15; TRL/verl semantics in `RL-EVAL-NOTES.md`), from a trained
//! model. PPO adds a value head ([`crate::value_head`]) on the policy's final hidden states (GAE,
//! clipped value loss); any kind can add an entropy bonus (`entropy_coef`).
//!
//! One optimiser step of the shared loop ([`crate::trainer::fit_learner`]) takes `train.grad_accum`
//! micro-batches of `train.batch_size` completions. A **generation batch** holds
//! `batch_size · grad_accum · steps_per_generation` completions: `G = num_generations` per prompt.
//! When the previous one is used up (after `steps_per_generation` optimiser steps, repeated
//! `num_iterations` = μ times), the learner:
//! 1. copies the trained weights into the decoder and samples G completions per prompt with the
//!    KV-cache sampler (`gradus_model::generate`), seeded by `(run.seed, generation index)`;
//! 2. scores them with every `[[rewards]]` entry and combines Σ w_k r_k (None where none applies);
//! 3. computes the old policy's log-probs (only when the batch is reused: `steps_per_generation`
//!    or μ > 1; otherwise ρ = 1 exactly) and the reference's (β > 0; β = 0 loads no reference);
//! 4. computes advantages (`gradus_objectives::rl`: group-normalised, leave-one-out, REINFORCE++,
//!    ReMax with a greedy completion per prompt, PPO's GAE over the value head's V_old, which
//!    step 3 then always computes) and shuffles the batch (seeded).
//!
//! Each micro-batch then runs [`step::policy_micro_step`] on the fast graph. The generation batch
//! (completions, old/reference log-probs, advantages) is part of every checkpoint's data cursor, so
//! a resumed run continues on the very same batch and is bit-identical to an uninterrupted one.
//!
//! Semantics that differ from TRL: `steps_per_generation` counts optimiser steps (TRL counts
//! micro-batches; TRL's default, = grad accum, is our 1); log-probs are those of the model's own
//! distribution (TRL divides the logits by the sampling temperature first); `dapo` divides by the
//! tokens of each optimiser step (TRL by the generation batch's tokens × GA / steps_per_generation,
//! the same number when steps_per_generation = 1).
//!
//! `[lora]` ([`crate::lora`]): only the policy's adapters train; the reference is the same fast
//! graph with its adapters switched off (no second copy of the weights), and checkpoints are PEFT
//! adapter directories. Adapter dropout must be 0 here: with dropout the old, reference and
//! current log-probs of one completion would differ by their masks, not by the policy.

pub mod constraints;
pub mod rewards;
pub mod step;

use std::path::Path;

use gradus_data::pack::{CursorState, IndexCursor};
use gradus_data::tokenizer::Tokenizer;
use gradus_model::decoder::Decoder;
use gradus_model::fast::{FastDecoder, FastOptions};
use gradus_model::generate::{generate, Finish, SamplingConfig};
use gradus_model::hf::load_decoder;
use gradus_model::WeightDtype;
use gradus_objectives::rl::{
    combine_rewards, gae_advantages, group_advantages, reinforce_pp_advantages, remax_advantages,
    rloo_advantages, whiten_tokens, ClipConfig, KlEstimator, LossAggregation, RatioLevel,
    RewardScale, StepTotals,
};
use gradus_tasks::{instructions_with, task_prompt, Split, TaskConfig};
use gradus_tensor::rng::Rng;
use gradus_tensor::{Error, Result, Tensor, Var};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::phf::VALUE_HEAD_FILE;
use crate::recipe::DataSection;
use crate::report::Section;
use crate::trainer::{
    fit_learner, save_model_files, set_params, write_run_report, FitSummary, Learner,
};
use crate::value_head::ValueHead;
pub use constraints::ConstraintState;
use constraints::{mix_advantages, ConstraintsSection, Multipliers, NelderMead, ThresholdSearch};
use gradus_objectives::rl::PerToken;
use rewards::{build_rewards, Reward, RewardInput, RewardSpec};
use step::{
    completion_logps, completion_logps_values, policy_micro_step_ext, Extras, LossSettings, Sample,
    ValueTerm,
};

/// `[data]`: where prompts come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RlDataSection {
    /// `synthetic` (the built-in instruction task's train split, columns `answer` and `kind`) or a
    /// JSONL/Parquet file or directory: one prompt per row, every other column passed to rewards.
    pub source: String,
    /// The column holding the prompt text.
    pub prompt_field: String,
    /// Prompts drawn from the synthetic task.
    pub synthetic_prompts: usize,
    /// The synthetic task (kinds and sizes).
    pub task: TaskConfig,
    /// Reshuffle the prompts every epoch.
    pub shuffle: bool,
}

impl Default for RlDataSection {
    fn default() -> Self {
        Self {
            source: "synthetic".into(),
            prompt_field: "prompt".into(),
            synthetic_prompts: 2000,
            task: TaskConfig::default(),
            shuffle: true,
        }
    }
}

/// `[generation]`: the sampler of the rollouts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerationSection {
    /// Maximum completion length in tokens (TRL `max_completion_length`; Dr. GRPO's L_max).
    pub max_new_tokens: usize,
    pub temperature: f64,
    /// 0 disables.
    pub top_k: usize,
    /// 1 disables.
    pub top_p: f64,
    /// A completion ends when its text contains one of these (rewards see the text before it).
    pub stop: Vec<String>,
}

impl Default for GenerationSection {
    fn default() -> Self {
        Self {
            max_new_tokens: 32,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            stop: Vec::new(),
        }
    }
}

/// The advantage estimator (and its defaults for the rest of `[algorithm]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlgorithmKind {
    /// Group-normalised advantages (Shao et al. 2024), KL in the loss.
    #[default]
    Grpo,
    /// Leave-one-out baseline (Ahmadian et al. 2024), sequence ratio, KL (k1) in the reward.
    Rloo,
    /// Whitened discounted returns of token rewards (Hu 2025), KL (k1) per token in the reward.
    ReinforcePp,
    /// Greedy-completion baseline (Li et al. 2023).
    Remax,
    /// PPO (Schulman et al. 2017) with a value head on the policy's final hidden states: GAE(γ, λ)
    /// advantages whitened over the batch, the clipped value loss, KL (k1) per token in the reward.
    Ppo,
}

/// Where the KL to the reference goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KlPlacement {
    /// The algorithm's own: the loss for grpo/remax, the reward for rloo/reinforce_pp.
    #[default]
    Auto,
    Loss,
    Reward,
}

/// `[algorithm]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlgorithmSection {
    pub kind: AlgorithmKind,
    /// G, completions per prompt.
    pub num_generations: usize,
    /// GRPO's divisor of the centred rewards.
    pub scale_rewards: RewardScale,
    /// Loss aggregation; default per kind: dapo (grpo, reinforce_pp, remax), grpo (rloo).
    pub loss_type: Option<LossAggregation>,
    /// Importance ratio level; default per kind: token, sequence_sum (rloo).
    pub importance_sampling_level: Option<RatioLevel>,
    /// ε_low of the clip.
    pub epsilon: f64,
    /// ε_high (clip-higher); default ε_low.
    pub epsilon_high: Option<f64>,
    /// Dual clip c > 1 for negative advantages; off by default.
    pub dual_clip: Option<f64>,
    /// KL coefficient β; 0 loads no reference model.
    pub beta: f64,
    /// Default k3 in the loss, k1 in the reward.
    pub kl_estimator: Option<KlEstimator>,
    pub kl_in: KlPlacement,
    /// Multiply the loss's KL by the importance ratio (TRL's `use_bias_correction_kl`, default on).
    pub kl_correction: bool,
    /// μ: passes over each generation batch.
    pub num_iterations: usize,
    /// Optimiser steps each generation batch is split into.
    pub steps_per_generation: usize,
    /// Completions cut at `max_new_tokens` take no part in the loss.
    pub mask_truncated_completions: bool,
    /// RLOO: standardise the advantages over the batch.
    pub normalize_advantages: bool,
    /// Discount γ (REINFORCE++ returns, PPO's GAE).
    pub gamma: f64,
    /// Entropy bonus: `− entropy_coef · H` per completion token in the loss (0: off).
    pub entropy_coef: f64,
    /// PPO: GAE's λ (1: Monte Carlo returns minus the value baseline, verl's default).
    pub lam: f64,
    /// PPO: weight of the value loss in the policy's loss.
    pub vf_coef: f64,
    /// PPO: the value prediction's clip around its rollout value (verl's 0.5).
    pub cliprange_value: f64,
    /// PPO: Adam learning rate of the value head.
    pub value_lr: f64,
    /// PPO: true trains only the value head on the value loss (the trunk sees the policy loss
    /// alone); false (default, as TRL's shared-trunk value head) lets it shape the trunk too.
    pub value_detach: bool,
}

impl Default for AlgorithmSection {
    fn default() -> Self {
        Self {
            kind: AlgorithmKind::Grpo,
            num_generations: 8,
            scale_rewards: RewardScale::Group,
            loss_type: None,
            importance_sampling_level: None,
            epsilon: 0.2,
            epsilon_high: None,
            dual_clip: None,
            beta: 0.0,
            kl_estimator: None,
            kl_in: KlPlacement::Auto,
            kl_correction: true,
            num_iterations: 1,
            steps_per_generation: 1,
            mask_truncated_completions: false,
            normalize_advantages: false,
            gamma: 1.0,
            entropy_coef: 0.0,
            lam: 1.0,
            vf_coef: 0.1,
            cliprange_value: 0.5,
            value_lr: 1e-3,
            value_detach: false,
        }
    }
}

impl AlgorithmSection {
    /// Whether the KL goes into the reward (else the loss).
    pub fn kl_in_reward(&self) -> bool {
        match self.kl_in {
            KlPlacement::Loss => false,
            KlPlacement::Reward => true,
            KlPlacement::Auto => {
                matches!(
                    self.kind,
                    AlgorithmKind::Rloo | AlgorithmKind::ReinforcePp | AlgorithmKind::Ppo
                )
            }
        }
    }

    /// The loss settings this section resolves to.
    pub fn loss_settings(&self) -> LossSettings {
        let in_reward = self.kl_in_reward();
        LossSettings {
            clip: ClipConfig {
                eps_low: self.epsilon,
                eps_high: self.epsilon_high.unwrap_or(self.epsilon),
                dual_clip: self.dual_clip,
                level: self.importance_sampling_level.unwrap_or(match self.kind {
                    AlgorithmKind::Rloo => RatioLevel::SequenceSum,
                    _ => RatioLevel::Token,
                }),
            },
            beta: if in_reward { 0.0 } else { self.beta },
            kl: self.kl_estimator.unwrap_or(if in_reward {
                KlEstimator::K1
            } else {
                KlEstimator::K3
            }),
            kl_correction: self.kl_correction,
            aggregation: self.loss_type.unwrap_or(match self.kind {
                AlgorithmKind::Rloo => LossAggregation::Grpo,
                _ => LossAggregation::Dapo,
            }),
        }
    }

    /// Errors name `algorithm.<field>`.
    pub fn validate(&self) -> Result<()> {
        let f = |k: &str| format!("algorithm.{k}");
        if self.num_generations < 2 && self.kind != AlgorithmKind::Ppo {
            return Err(Error::config(
                f("num_generations"),
                format!(
                    "{} completion(s) per prompt: group baselines need at least 2 (with 1 every advantage is 0)",
                    self.num_generations
                ),
            ));
        }
        for (k, v) in [
            ("epsilon", Some(self.epsilon)),
            ("epsilon_high", self.epsilon_high),
        ] {
            if let Some(v) = v {
                if !(v >= 0.0 && v.is_finite()) {
                    return Err(Error::config(f(k), format!("must be ≥ 0, got {v}")));
                }
            }
        }
        if self.epsilon >= 1.0 {
            return Err(Error::config(
                f("epsilon"),
                "must be < 1 (the ratio is clipped at 1 − ε)",
            ));
        }
        if let Some(c) = self.dual_clip {
            if !(c > 1.0) {
                return Err(Error::config(
                    f("dual_clip"),
                    format!("must be > 1, got {c}"),
                ));
            }
        }
        if !(self.beta >= 0.0 && self.beta.is_finite()) {
            return Err(Error::config(f("beta"), "must be ≥ 0"));
        }
        if self.num_iterations == 0 {
            return Err(Error::config(f("num_iterations"), "must be ≥ 1"));
        }
        if self.steps_per_generation == 0 {
            return Err(Error::config(f("steps_per_generation"), "must be ≥ 1"));
        }
        if self.num_generations == 0 {
            return Err(Error::config(f("num_generations"), "must be ≥ 1"));
        }
        if !(self.gamma > 0.0 && self.gamma <= 1.0) {
            return Err(Error::config(f("gamma"), "must be in (0, 1]"));
        }
        if !(self.lam >= 0.0 && self.lam <= 1.0) {
            return Err(Error::config(f("lam"), "must be in [0, 1]"));
        }
        for (k, v) in [
            ("entropy_coef", self.entropy_coef),
            ("vf_coef", self.vf_coef),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(Error::config(f(k), format!("must be ≥ 0, got {v}")));
            }
        }
        for (k, v) in [
            ("cliprange_value", self.cliprange_value),
            ("value_lr", self.value_lr),
        ] {
            if !(v > 0.0 && v.is_finite()) {
                return Err(Error::config(f(k), format!("must be > 0, got {v}")));
            }
        }
        if self.kind == AlgorithmKind::Ppo && s_level_is_sequence(self) {
            return Err(Error::config(
                f("importance_sampling_level"),
                "ppo has per-token advantages: use `token`",
            ));
        }
        let s = self.loss_settings();
        if self.kind == AlgorithmKind::ReinforcePp && s.clip.level != RatioLevel::Token {
            return Err(Error::config(
                f("importance_sampling_level"),
                "reinforce_pp has per-token advantages: use `token`",
            ));
        }
        Ok(())
    }
}

fn s_level_is_sequence(a: &AlgorithmSection) -> bool {
    a.loss_settings().clip.level != RatioLevel::Token
}

/// `[log]`: the completions table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RlLogSection {
    /// Completions written to `completions.jsonl` per logged generation batch (0: none).
    pub completions: usize,
}

impl Default for RlLogSection {
    fn default() -> Self {
        Self { completions: 64 }
    }
}

crate::recipe_config! {
    /// The `gradus train rl` config: the shared sections (`[data]` is [`RlDataSection`]; the
    /// loop sees it through [`rl_data_base`]; `train.batch_size` = completions per micro-batch),
    /// then `[generation]`, `[algorithm]`, `[[rewards]]` and `[log]`.
    pub struct RlConfig {
        data: RlDataSection = rl_data_base;
        pub generation: GenerationSection,
        pub algorithm: AlgorithmSection,
        pub rewards: Vec<RewardSpec>,
        pub log: RlLogSection,
        pub constraints: ConstraintsSection,
    }
}

/// `[data]` as the shared loop and the report read it. Context checks are per prompt here (prompt +
/// max_new_tokens), so no document length applies.
fn rl_data_base(d: &RlDataSection) -> DataSection {
    DataSection {
        seq_len: 2,
        task: d.task.clone(),
        ..DataSection::default()
    }
}

impl RlConfig {
    /// Completions per generation batch.
    pub fn generation_batch(&self) -> usize {
        self.train.batch_size * self.train.grad_accum * self.algorithm.steps_per_generation
    }

    pub fn validate(&self) -> Result<()> {
        self.base().validate()?;
        self.algorithm.validate()?;
        if let Some(l) = &self.lora {
            if l.lora_dropout != 0.0 {
                return Err(Error::config(
                    "lora.lora_dropout",
                    format!(
                        "is {}; train rl needs 0 (dropout masks would make the old, reference and current log-probs of a completion differ)",
                        l.lora_dropout
                    ),
                ));
            }
        }
        if self.model.init_from.is_none() {
            return Err(Error::config(
                "model.init_from",
                "RL starts from a trained model (an SFT checkpoint or a Hugging Face model directory)",
            ));
        }
        let g = self.algorithm.num_generations;
        if !self.generation_batch().is_multiple_of(g) {
            return Err(Error::config(
                "train.batch_size",
                format!(
                    "the generation batch (batch_size {} × grad_accum {} × steps_per_generation {} = {}) must be a multiple of num_generations {g}",
                    self.train.batch_size,
                    self.train.grad_accum,
                    self.algorithm.steps_per_generation,
                    self.generation_batch()
                ),
            ));
        }
        if self.generation.max_new_tokens == 0 {
            return Err(Error::config(
                "generation.max_new_tokens",
                "must be positive",
            ));
        }
        SamplingConfig {
            temperature: self.generation.temperature,
            top_p: self.generation.top_p,
            ..Default::default()
        }
        .validate()
        .map_err(|e| Error::config("generation", e.to_string()))?;
        if self.rewards.is_empty() {
            return Err(Error::config(
                "rewards",
                "no reward: add at least one [[rewards]] entry (kind = exact | numeric | regex | task | command)",
            ));
        }
        for (i, r) in self.rewards.iter().enumerate() {
            r.validate(i)?;
        }
        self.constraints.validate(
            self.rewards.len(),
            self.algorithm.kind == AlgorithmKind::Ppo,
        )?;
        let mut names: Vec<String> = self.rewards.iter().map(|r| r.display_name()).collect();
        names.sort();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::config(
                "rewards",
                format!(
                    "two rewards are named `{}`: give them distinct `name`s",
                    w[0]
                ),
            ));
        }
        Ok(())
    }

    pub fn run_dir(&self) -> std::path::PathBuf {
        self.run.dir.join(&self.run.name)
    }
}

/// One prompt: its text, ids and the columns rewards see.
#[derive(Clone, Debug)]
pub struct PromptRow {
    pub text: String,
    pub ids: Vec<u32>,
    pub columns: Map<String, Value>,
    /// Where it came from (`file row i` or `synthetic i`), for errors.
    pub origin: String,
}

/// Reads and tokenizes the prompts; a prompt that leaves no room for `max_new_tokens` in the
/// model's context is an error naming it.
pub fn load_prompts(cfg: &RlConfig, tok: &Tokenizer, context: usize) -> Result<Vec<PromptRow>> {
    let d = &cfg.data;
    let raw: Vec<(String, Map<String, Value>, String)> = if d.source == "synthetic" {
        instructions_with(d.synthetic_prompts, cfg.run.seed, Split::Train, &d.task)
            .into_iter()
            .enumerate()
            .map(|(i, ins)| {
                let mut cols = Map::new();
                cols.insert("answer".into(), json!(ins.answer));
                cols.insert("kind".into(), json!(ins.kind));
                (
                    task_prompt(&ins.prompt),
                    cols,
                    format!("synthetic prompt {i}"),
                )
            })
            .collect()
    } else {
        let mut columns = vec![d.prompt_field.clone()];
        for r in &cfg.rewards {
            match &r.kind {
                rewards::RewardKind::Exact { field }
                | rewards::RewardKind::Numeric { field, .. } => columns.push(field.clone()),
                rewards::RewardKind::Task {} => {
                    columns.extend(["answer".to_string(), "kind".to_string()])
                }
                _ => {}
            }
        }
        let parse: gradus_data::dataset::RowParser<Map<String, Value>> =
            std::sync::Arc::new(|o: &Map<String, Value>| Ok(o.clone()));
        let mut out = Vec::new();
        for (i, row) in gradus_data::dataset::iter_records(&d.source, &columns, parse)?.enumerate()
        {
            let mut row = row?;
            let origin = format!("{} row {}", d.source, i + 1);
            let text = match row.remove(&d.prompt_field) {
                Some(Value::String(s)) => s,
                Some(other) => {
                    return Err(Error::msg(format!(
                        "{origin}: field `{}` must be a string, found {other}",
                        d.prompt_field
                    )))
                }
                None => {
                    return Err(Error::msg(format!(
                        "{origin}: no `{}` field (set data.prompt_field)",
                        d.prompt_field
                    )))
                }
            };
            out.push((text, row, origin));
        }
        out
    };
    if raw.is_empty() {
        return Err(Error::config(
            "data.source",
            format!("`{}` holds no prompts", d.source),
        ));
    }
    let mut rows = Vec::with_capacity(raw.len());
    for (text, columns, origin) in raw {
        let mut ids: Vec<u32> = tok.bos_id().into_iter().collect();
        ids.extend(tok.encode(&text, false)?);
        if ids.is_empty() {
            return Err(Error::msg(format!(
                "{origin}: the prompt is empty and the tokenizer has no BOS token"
            )));
        }
        if ids.len() + cfg.generation.max_new_tokens > context {
            return Err(Error::msg(format!(
                "{origin}: the prompt is {} tokens; with generation.max_new_tokens = {} that is longer than the model's context ({context} positions): shorten the prompt or lower max_new_tokens",
                ids.len(),
                cfg.generation.max_new_tokens
            )));
        }
        rows.push(PromptRow {
            text,
            ids,
            columns,
            origin,
        });
    }
    Ok(rows)
}

/// A sample's text and scores, for `completions.jsonl` and the metrics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    pub prompt: usize,
    pub completion: String,
    pub rewards: Vec<Option<f32>>,
    pub reward: Option<f32>,
}

/// The generation batch in use: kept in checkpoints (the data cursor).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GenState {
    /// Generation batches made so far.
    pub generations: u64,
    /// Micro-batches of the current batch already handed out.
    pub next_micro: usize,
    pub samples: Vec<Sample>,
    pub scored: Vec<Scored>,
    /// Prompt rows (indices into the prompts) of the batch's groups.
    pub prompt_rows: Vec<usize>,
    /// The order micro-batches take the samples in.
    pub order: Vec<usize>,
    /// Generation statistics logged with the steps that use the batch.
    pub stats: Map<String, Value>,
    /// The generation batch last written to completions.jsonl.
    pub logged_generation: u64,
    /// `[constraints]`: the multipliers, the thresholds in use and the NM-PPO search.
    #[serde(default)]
    pub constraint: ConstraintState,
}

/// Step-level sums of the micro-batches' diagnostics.
#[derive(Clone, Debug, Default)]
struct StepAcc {
    micro: usize,
    kl: f64,
    tokens: f64,
    clip_low: f64,
    clip_high: f64,
    clip_region: f64,
    clip_count: f64,
    clip_low_min: f64,
    clip_high_max: f64,
    entropy: f64,
    value_loss: f64,
    value_sum: f64,
}

/// The reference policy of the KL term.
enum Reference {
    /// β = 0: none is loaded.
    None,
    /// A frozen copy of the initial model.
    Model(Box<FastDecoder>),
    /// `[lora]`: the policy's own graph with its adapters switched off (the base).
    Base,
}

struct RlLearner<'a> {
    model: &'a Decoder,
    tok: &'a Tokenizer,
    cfg: RlConfig,
    settings: LossSettings,
    fast: FastDecoder,
    reference: Reference,
    lora: Option<crate::lora::LoraRun>,
    prompts: Vec<PromptRow>,
    cursor: IndexCursor,
    rewards: Vec<Box<dyn Reward>>,
    names: Vec<String>,
    weights: Vec<f32>,
    pad: u32,
    eos: Vec<u32>,
    gen: GenState,
    acc: StepAcc,
    run_dir: std::path::PathBuf,
    /// PPO's value heads (none for the other algorithms; constrained PPO: the KL's, then one per
    /// component), their value-loss weights and the micro-batches since their last step.
    value: Vec<ValueHead>,
    value_coefs: Vec<f64>,
    value_micro: usize,
    /// `constraints.eval`: the evaluation score's rewards and weights.
    eval_rewards: Vec<Box<dyn Reward>>,
    eval_weights: Vec<f32>,
}

fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let m = xs.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return (m, 0.0);
    }
    let v = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n as f64 - 1.0);
    (m, v.sqrt())
}

impl RlLearner<'_> {
    fn micro_per_generation(&self) -> usize {
        self.cfg.train.grad_accum * self.cfg.algorithm.steps_per_generation
    }

    /// Text of a completion as rewards see it: special tokens dropped, cut before a stop string.
    fn completion_text(&self, tokens: &[u32]) -> Result<String> {
        let mut text = self.tok.decode(tokens, true)?;
        if let Some(cut) = self
            .cfg
            .generation
            .stop
            .iter()
            .filter_map(|s| text.find(s.as_str()))
            .min()
        {
            text.truncate(cut);
        }
        Ok(text)
    }

    fn sample_batch(
        &self,
        prompts: &[Vec<u32>],
        sampling: &SamplingConfig,
    ) -> Result<Vec<gradus_model::generate::Generation>> {
        let stops = self.cfg.generation.stop.clone();
        let tok = self.tok;
        let mut stop = |_: usize, toks: &[u32]| -> bool {
            if stops.is_empty() {
                return false;
            }
            let t = tok.decode(toks, true).unwrap_or_default();
            stops.iter().any(|s| t.contains(s.as_str()))
        };
        generate(self.model, prompts, sampling, &self.eos, &mut stop)
    }

    fn score(
        &mut self,
        prompt_rows: &[usize],
        texts: &[String],
        group: usize,
    ) -> Result<Vec<Vec<Option<f32>>>> {
        let inputs: Vec<RewardInput> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let p = &self.prompts[prompt_rows[i / group]];
                RewardInput {
                    prompt: &p.text,
                    completion: t,
                    columns: &p.columns,
                }
            })
            .collect();
        let mut per = Vec::with_capacity(self.rewards.len());
        for r in self.rewards.iter_mut() {
            let s = r.score(&inputs)?;
            if let Some((i, v)) = s
                .iter()
                .enumerate()
                .find(|(_, v)| v.is_some_and(|x| !x.is_finite()))
            {
                let p = &self.prompts[prompt_rows[i / group]];
                return Err(Error::msg(format!(
                    "reward `{}` returned {} for completion {i} of the generation batch ({}, completion {:?}): rewards must be finite (None when not applicable)",
                    r.name(),
                    v.unwrap_or(f32::NAN),
                    p.origin,
                    texts[i]
                )));
            }
            per.push(s);
        }
        Ok(per)
    }

    /// Makes the next generation batch (module docs, steps 1-4).
    fn new_generation(&mut self) -> Result<()> {
        let a = self.cfg.algorithm.clone();
        let g = a.num_generations;
        let n_prompts = self.cfg.generation_batch() / g;
        let mut stats = Map::new();
        let cons = self.cfg.constraints.clone();
        if cons.active() && self.gen.constraint.thresholds.is_empty() {
            self.gen.constraint = ConstraintState {
                multipliers: Multipliers::new(cons.kind, cons.thresholds.len(), cons.initial),
                thresholds: cons.thresholds.clone(),
                search: (cons.search == ThresholdSearch::NelderMead).then(|| {
                    NelderMead::new(
                        &cons.thresholds,
                        cons.search_step,
                        cons.search_iterations,
                        cons.search_tol,
                    )
                    .with_xtol(cons.search_xtol)
                }),
                search_sum: 0.0,
                search_batches: 0,
                search_waited: 0,
                search_recent: Vec::new(),
            };
        }
        // 1. Rollouts with the current weights.
        self.fast.write_to(self.model)?;
        let prompt_rows: Vec<usize> = self
            .cursor
            .next_indices()
            .ok_or_else(|| Error::msg("rl: no prompts"))?
            .to_vec();
        debug_assert_eq!(prompt_rows.len(), n_prompts);
        let gen_index = self.gen.generations;
        let seed = Rng::derive(self.cfg.run.seed, &format!("rl/rollout/{gen_index}")).next_u64();
        let sampling = SamplingConfig {
            max_new_tokens: self.cfg.generation.max_new_tokens,
            temperature: self.cfg.generation.temperature,
            top_k: self.cfg.generation.top_k,
            top_p: self.cfg.generation.top_p,
            seed,
        };
        let prompt_ids: Vec<Vec<u32>> = prompt_rows
            .iter()
            .flat_map(|&p| std::iter::repeat_n(self.prompts[p].ids.clone(), g))
            .collect();
        let t_gen = std::time::Instant::now();
        let gens = self.sample_batch(&prompt_ids, &sampling)?;
        // Where a step's time goes (verl's timing_s/*): rollouts, rewards, the extra forwards.
        stats.insert(
            "time/generation_s".into(),
            json!(t_gen.elapsed().as_secs_f64()),
        );
        let texts: Vec<String> = gens
            .iter()
            .map(|x| self.completion_text(&x.tokens))
            .collect::<Result<_>>()?;
        // 2. Rewards.
        let t_rew = std::time::Instant::now();
        let per = self.score(&prompt_rows, &texts, g)?;
        stats.insert(
            "time/rewards_s".into(),
            json!(t_rew.elapsed().as_secs_f64()),
        );
        // The evaluation score (never part of the training reward).
        let eval_mean = if self.eval_rewards.is_empty() {
            None
        } else {
            std::mem::swap(&mut self.rewards, &mut self.eval_rewards);
            let ev = self.score(&prompt_rows, &texts, g);
            std::mem::swap(&mut self.rewards, &mut self.eval_rewards);
            let ev = ev?;
            let names: Vec<String> = (0..ev.len()).map(|i| format!("eval[{i}]")).collect();
            let comb = combine_rewards(&ev, &self.eval_weights, &names)?;
            let v: Vec<f64> = comb.iter().flatten().map(|&x| x as f64).collect();
            let m = mean_std(&v).0;
            stats.insert("eval_score".into(), json!(m));
            Some(m)
        };
        let mut combined = combine_rewards(&per, &self.weights, &self.names)?;
        // 3. Old and reference log-probs.
        let rows: Vec<(&[u32], &[u32])> = prompt_ids
            .iter()
            .zip(&gens)
            .map(|(p, x)| (p.as_slice(), x.tokens.as_slice()))
            .collect();
        let chunk = self.cfg.train.batch_size.max(1);
        let reuse = a.steps_per_generation > 1 || a.num_iterations > 1;
        let ppo = a.kind == AlgorithmKind::Ppo;
        let needs_policy_now = reuse || (a.kl_in_reward() && a.beta > 0.0) || ppo;
        let mut old: Option<Vec<Vec<f32>>> = None;
        // PPO: the value heads' predictions at the rollout (V_old), from the same forward.
        let mut values: Option<Vec<PerToken>> = None;
        if needs_policy_now {
            let mut v = Vec::with_capacity(rows.len());
            let mut vals = Vec::with_capacity(rows.len());
            for c in rows.chunks(chunk) {
                if ppo {
                    let (lp, vs) =
                        completion_logps_values(&mut self.fast, c, self.pad, &self.value)?;
                    v.extend(lp);
                    vals.extend(vs);
                } else {
                    v.extend(completion_logps(&mut self.fast, c, self.pad)?);
                }
            }
            old = Some(v);
            if ppo {
                values = Some(vals);
            }
        }
        let mut refl: Option<Vec<Vec<f32>>> = None;
        let base_is_reference = matches!(self.reference, Reference::Base);
        let r = match &mut self.reference {
            Reference::Model(r) => Some(&mut **r),
            Reference::Base => Some(&mut self.fast),
            Reference::None => None,
        };
        if let Some(r) = r {
            // The base reference: the policy graph with its adapters switched off.
            r.set_adapters_enabled(!base_is_reference);
            let mut v = Vec::with_capacity(rows.len());
            let mut res = Ok(());
            for c in rows.chunks(chunk) {
                match completion_logps(r, c, self.pad) {
                    Ok(lp) => v.extend(lp),
                    Err(e) => {
                        res = Err(e);
                        break;
                    }
                }
            }
            r.set_adapters_enabled(true);
            res?;
            refl = Some(v);
        }
        // KL in the reward: per-token k-estimates of the sampling policy against the reference.
        let kl_tokens: Option<Vec<Vec<f32>>> = match (&old, &refl) {
            (Some(o), Some(r)) if a.kl_in_reward() && a.beta > 0.0 => {
                let est = self.settings.kl;
                Some(
                    o.iter()
                        .zip(r)
                        .map(|(o, r)| {
                            o.iter()
                                .zip(r)
                                .map(|(&lp, &rf)| {
                                    let d = (rf - lp) as f64;
                                    (match est {
                                        KlEstimator::K1 => -d,
                                        KlEstimator::K2 => 0.5 * d * d,
                                        KlEstimator::K3 => d.exp() - d - 1.0,
                                    }) as f32
                                })
                                .collect()
                        })
                        .collect(),
                )
            }
            _ => None,
        };
        if let Some(k) = &kl_tokens {
            // The KL that goes into the reward, per token of the sampling policy.
            let v: Vec<f64> = k.iter().flatten().map(|&x| x as f64).collect();
            stats.insert("kl".into(), json!(mean_std(&v).0));
        }
        // 4. Advantages.
        let beta = a.beta as f32;
        let mut returns: Option<Vec<PerToken>> = None;
        let advantages: Vec<Vec<f32>> = match a.kind {
            AlgorithmKind::Ppo => {
                let vals = values
                    .as_ref()
                    .ok_or_else(|| Error::msg("rl: ppo without value predictions"))?;
                let kl_rewards: Vec<Vec<f32>> = gens
                    .iter()
                    .enumerate()
                    .map(|(i, x)| match &kl_tokens {
                        Some(k) => k[i].iter().map(|&k| -beta * k).collect(),
                        None => vec![0.0; x.tokens.len()],
                    })
                    .collect();
                // Token rewards of each value head: plain PPO, one head on −β·KL per token plus
                // the combined outcome on the last token; constrained PPO, the KL head on
                // −β·KL alone and one head per component on its outcome.
                let outcome = |scores: &[Option<f32>], base: &[Vec<f32>]| -> Vec<Vec<f32>> {
                    base.iter()
                        .zip(scores)
                        .map(|(b, sc)| {
                            let mut r = b.clone();
                            if let (Some(last), Some(x)) = (r.last_mut(), sc) {
                                *last += x;
                            }
                            r
                        })
                        .collect()
                };
                let zeros: Vec<Vec<f32>> = kl_rewards.iter().map(|r| vec![0.0; r.len()]).collect();
                let head_rewards: Vec<(Vec<Vec<f32>>, Vec<bool>)> = if self.cfg.constraints.active()
                {
                    let mut h = vec![(kl_rewards.clone(), vec![true; gens.len()])];
                    for comp in &per {
                        h.push((
                            outcome(comp, &zeros),
                            comp.iter().map(|x| x.is_some()).collect(),
                        ));
                    }
                    h
                } else {
                    vec![(
                        outcome(&combined, &kl_rewards),
                        combined.iter().map(|r| r.is_some()).collect(),
                    )]
                };
                let mut rets: Vec<PerToken> = vec![Vec::new(); gens.len()];
                let mut advs = Vec::new();
                for (k, (rw, keep)) in head_rewards.iter().enumerate() {
                    let vk: Vec<Vec<f32>> = vals.iter().map(|v| v[k].clone()).collect();
                    let (adv, mut ret) = gae_advantages(rw, &vk, a.gamma as f32, a.lam as f32)?;
                    // An unscorable completion teaches neither the policy nor the value head.
                    for (i, kept) in keep.iter().enumerate() {
                        if !kept {
                            ret[i] = vk[i].clone();
                        }
                    }
                    for (i, r) in ret.into_iter().enumerate() {
                        rets[i].push(r);
                    }
                    advs.push(whiten_tokens(adv, keep));
                }
                returns = Some(rets);
                if self.cfg.constraints.active() {
                    let kind = self.cfg.constraints.kind;
                    let lambdas = self.gen.constraint.multipliers.lambdas(kind);
                    let kl_adv = advs.remove(0);
                    mix_advantages(&kl_adv, &advs, &lambdas)
                } else {
                    advs.remove(0)
                }
            }
            AlgorithmKind::Grpo | AlgorithmKind::Rloo => {
                if let (Some(k), AlgorithmKind::Rloo) = (&kl_tokens, a.kind) {
                    for (r, k) in combined.iter_mut().zip(k) {
                        if let Some(r) = r.as_mut() {
                            *r -= beta * k.iter().sum::<f32>();
                        }
                    }
                }
                let adv = if a.kind == AlgorithmKind::Grpo {
                    group_advantages(&combined, g, a.scale_rewards)?
                } else {
                    rloo_advantages(&combined, g, a.normalize_advantages)?
                };
                stats.insert("frac_reward_zero_std".into(), json!(adv.frac_zero_std()));
                adv.advantages.iter().map(|&x| vec![x]).collect()
            }
            AlgorithmKind::ReinforcePp => {
                let kl: Vec<Vec<f32>> = match &kl_tokens {
                    Some(k) => k.clone(),
                    None => gens.iter().map(|x| vec![0.0; x.tokens.len()]).collect(),
                };
                reinforce_pp_advantages(&combined, &kl, beta, a.gamma as f32)?
            }
            AlgorithmKind::Remax => {
                let greedy_cfg = SamplingConfig {
                    temperature: 0.0,
                    ..sampling.clone()
                };
                let gp: Vec<Vec<u32>> = prompt_rows
                    .iter()
                    .map(|&p| self.prompts[p].ids.clone())
                    .collect();
                let greedy = self.sample_batch(&gp, &greedy_cfg)?;
                let gt: Vec<String> = greedy
                    .iter()
                    .map(|x| self.completion_text(&x.tokens))
                    .collect::<Result<_>>()?;
                let gper = self.score(&prompt_rows, &gt, 1)?;
                let gcomb = combine_rewards(&gper, &self.weights, &self.names)?;
                stats.insert(
                    "remax/greedy_reward".into(),
                    json!(
                        mean_std(
                            &gcomb
                                .iter()
                                .flatten()
                                .map(|&x| x as f64)
                                .collect::<Vec<_>>()
                        )
                        .0
                    ),
                );
                remax_advantages(&combined, g, &gcomb)?
                    .into_iter()
                    .map(|x| vec![x])
                    .collect()
            }
        };
        // The batch, its statistics and its order.
        let keep_old = reuse;
        let samples: Vec<Sample> = gens
            .iter()
            .enumerate()
            .map(|(i, x)| {
                let terminated = x.finish != Finish::Length;
                let mut adv = advantages[i].clone();
                if adv.is_empty() {
                    adv = vec![0.0]; // an empty completion (cannot happen: generation yields ≥ 1 token)
                }
                Sample {
                    group: i / g,
                    prompt: prompt_ids[i].clone(),
                    completion: x.tokens.clone(),
                    terminated,
                    in_loss: !a.mask_truncated_completions || terminated,
                    advantages: adv,
                    old_logps: if keep_old {
                        old.as_ref().map(|o| o[i].clone())
                    } else {
                        None
                    },
                    ref_logps: if self.settings.beta != 0.0 {
                        refl.as_ref().map(|r| r[i].clone())
                    } else {
                        None
                    },
                    values: values.as_ref().map(|v| v[i].clone()),
                    returns: returns.as_ref().map(|r| r[i].clone()),
                }
            })
            .collect();
        let rewards_f: Vec<f64> = combined.iter().flatten().map(|&x| x as f64).collect();
        let (rm, rs) = mean_std(&rewards_f);
        stats.insert("reward/mean".into(), json!(rm));
        stats.insert("reward/std".into(), json!(rs));
        for (k, name) in self.names.iter().enumerate() {
            let v: Vec<f64> = per[k].iter().flatten().map(|&x| x as f64).collect();
            let (m, s) = mean_std(&v);
            stats.insert(format!("rewards/{name}/mean"), json!(m));
            stats.insert(format!("rewards/{name}/std"), json!(s));
            stats.insert(
                format!("rewards/{name}/applicable"),
                json!(v.len() as f64 / per[k].len().max(1) as f64),
            );
        }
        let lens: Vec<f64> = gens.iter().map(|x| x.tokens.len() as f64).collect();
        let term: Vec<f64> = gens
            .iter()
            .filter(|x| x.finish != Finish::Length)
            .map(|x| x.tokens.len() as f64)
            .collect();
        let fmin = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        let fmax = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        stats.insert("completions/mean_length".into(), json!(mean_std(&lens).0));
        stats.insert("completions/min_length".into(), json!(fmin(&lens)));
        stats.insert("completions/max_length".into(), json!(fmax(&lens)));
        stats.insert(
            "completions/clipped_ratio".into(),
            json!(1.0 - term.len() as f64 / lens.len().max(1) as f64),
        );
        if !term.is_empty() {
            stats.insert(
                "completions/mean_terminated_length".into(),
                json!(mean_std(&term).0),
            );
            stats.insert(
                "completions/min_terminated_length".into(),
                json!(fmin(&term)),
            );
            stats.insert(
                "completions/max_terminated_length".into(),
                json!(fmax(&term)),
            );
        }
        // TRL's entropy metric: the token mean over the batch's completions. Taken from the
        // sampler (the policy that generated them, i.e. the old policy), not from the loss pass.
        let ents: Vec<f64> = gens
            .iter()
            .flat_map(|x| x.entropies.iter().map(|&e| e as f64))
            .collect();
        if !ents.is_empty() {
            stats.insert("entropy".into(), json!(mean_std(&ents).0));
        }
        let adv_first: Vec<f64> = samples.iter().map(|s| s.advantages[0] as f64).collect();
        stats.insert("advantages/mean".into(), json!(mean_std(&adv_first).0));
        stats.insert("advantages/std".into(), json!(mean_std(&adv_first).1));
        let scored: Vec<Scored> = texts
            .into_iter()
            .enumerate()
            .map(|(i, t)| Scored {
                prompt: prompt_rows[i / g],
                completion: t,
                rewards: per.iter().map(|r| r[i]).collect(),
                reward: combined[i],
            })
            .collect();
        let mut order: Vec<usize> = (0..samples.len()).collect();
        let mut rng = Rng::derive(self.cfg.run.seed, &format!("rl/order/{gen_index}"));
        for i in (1..order.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        // The multipliers step on this batch's component means; NM-PPO moves θ.
        let mut constraint = std::mem::take(&mut self.gen.constraint);
        if cons.active() {
            let lambdas = constraint.multipliers.lambdas(cons.kind);
            let means: Vec<f64> = per
                .iter()
                .map(|c| {
                    let v: Vec<f64> = c.iter().flatten().map(|&x| x as f64).collect();
                    if v.is_empty() {
                        0.0
                    } else {
                        mean_std(&v).0
                    }
                })
                .collect();
            for (k, name) in self.names.iter().enumerate() {
                stats.insert(format!("constraints/{name}/lambda"), json!(lambdas[k]));
                stats.insert(
                    format!("constraints/{name}/threshold"),
                    json!(constraint.thresholds[k]),
                );
            }
            let th = constraint.thresholds.clone();
            constraint.multipliers.update(
                cons.kind,
                &means,
                &th,
                cons.lr,
                cons.momentum,
                cons.proportional,
            );
            if let Some(ev) = eval_mean {
                constraint.search_after_batch(&cons, &means, ev);
            }
            if let Some(nm) = &constraint.search {
                stats.insert("search/iteration".into(), json!(nm.iterations()));
            }
        }
        self.gen = GenState {
            generations: gen_index + 1,
            next_micro: 0,
            samples,
            scored,
            prompt_rows,
            order,
            stats,
            logged_generation: self.gen.logged_generation,
            constraint,
        };
        Ok(())
    }

    /// Appends the current generation batch's completions table (once per batch).
    fn log_completions(&mut self, step: u64) -> Result<()> {
        if self.cfg.log.completions == 0 || self.gen.logged_generation == self.gen.generations {
            return Ok(());
        }
        self.gen.logged_generation = self.gen.generations;
        let path = self.run_dir.join("completions.jsonl");
        let mut text = String::new();
        for (i, (s, sc)) in self
            .gen
            .samples
            .iter()
            .zip(&self.gen.scored)
            .enumerate()
            .take(self.cfg.log.completions)
        {
            let mut rewards = Map::new();
            for (k, name) in self.names.iter().enumerate() {
                rewards.insert(name.clone(), json!(sc.rewards[k]));
            }
            let row = json!({
                "step": step,
                "generation": self.gen.generations,
                "index": i,
                "prompt": self.prompts[sc.prompt].text,
                "completion": sc.completion,
                "rewards": rewards,
                "reward": sc.reward,
                "advantage": s.advantages.iter().map(|&x| x as f64).sum::<f64>() / s.advantages.len() as f64,
                "terminated": s.terminated,
                "tokens": s.completion.len(),
            });
            text.push_str(&row.to_string());
            text.push('\n');
        }
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        f.write_all(text.as_bytes())
            .map_err(|e| Error::io(&path, e))?;
        Ok(())
    }
}

/// The file of value head `k` in a checkpoint (`value_head.json`, `value_head_1.json`, ...).
fn value_head_file(k: usize) -> String {
    if k == 0 {
        VALUE_HEAD_FILE.to_string()
    } else {
        format!("value_head_{k}.json")
    }
}

/// Keeps the rows of `completions.jsonl` up to `step` (a resumed run rewrites what follows).
fn truncate_completions(run_dir: &Path, step: u64) -> Result<()> {
    let path = run_dir.join("completions.jsonl");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    gradus_tensor::io::write_atomic(&path, kept.as_bytes())
}

impl Learner for RlLearner<'_> {
    type Micro = Vec<usize>;

    fn params(&self) -> Vec<(String, Var)> {
        match self.lora {
            Some(_) => self.model.lora_params(),
            None => self.model.named_params(),
        }
    }
    fn next_micro(&mut self) -> Result<Vec<usize>> {
        let per_pass = self.micro_per_generation();
        let total = per_pass * self.cfg.algorithm.num_iterations;
        if self.gen.samples.is_empty() || self.gen.next_micro >= total {
            self.new_generation()?;
        }
        let k = self.gen.next_micro % per_pass;
        self.gen.next_micro += 1;
        let bs = self.cfg.train.batch_size;
        Ok(self.gen.order[k * bs..(k + 1) * bs].to_vec())
    }
    fn weight(&self, m: &Vec<usize>) -> f64 {
        match self.settings.aggregation {
            LossAggregation::Dapo => m
                .iter()
                .map(|&i| &self.gen.samples[i])
                .filter(|s| s.in_loss)
                .map(|s| s.completion.len() as f64)
                .sum(),
            LossAggregation::Grpo | LossAggregation::DrGrpo => m.len() as f64,
            LossAggregation::Bnpo => 1.0,
        }
    }
    fn tokens(&self, m: &Vec<usize>) -> u64 {
        m.iter()
            .map(|&i| {
                let s = &self.gen.samples[i];
                (s.prompt.len() + s.completion.len()) as u64
            })
            .sum()
    }
    fn loss(&mut self, _m: &Vec<usize>, _norm: f64) -> Result<(Tensor, Vec<(String, f64)>)> {
        Err(Error::msg("train rl runs on the fast training graph only"))
    }
    fn fast(&mut self) -> Option<&mut FastDecoder> {
        Some(&mut self.fast)
    }
    fn fast_loss(&mut self, m: &Vec<usize>, norm: f64) -> Result<(f64, Vec<(String, f64)>)> {
        let totals = StepTotals {
            sequences: norm.round() as usize,
            tokens: norm,
            micro_batches: norm.round() as usize,
            max_completion_len: self.cfg.generation.max_new_tokens,
        };
        let samples: Vec<&Sample> = m.iter().map(|&i| &self.gen.samples[i]).collect();
        let a = &self.cfg.algorithm;
        let ex = Extras {
            entropy_coef: a.entropy_coef,
            value: (!self.value.is_empty()).then(|| ValueTerm {
                heads: &mut self.value,
                coefs: &self.value_coefs,
                clip: a.cliprange_value,
                detach: a.value_detach,
            }),
        };
        let out = policy_micro_step_ext(
            &mut self.fast,
            &samples,
            &self.settings,
            &totals,
            self.pad,
            ex,
        )?;
        if !self.value.is_empty() {
            self.value_micro += 1;
            if self.value_micro == self.cfg.train.grad_accum {
                self.value_micro = 0;
                for head in &mut self.value {
                    head.step(self.cfg.algorithm.value_lr);
                }
            }
        }
        if self.acc.micro.is_multiple_of(self.cfg.train.grad_accum) {
            self.acc = StepAcc {
                clip_low_min: f64::INFINITY,
                clip_high_max: f64::NEG_INFINITY,
                ..Default::default()
            };
        }
        let a = &mut self.acc;
        a.micro += 1;
        a.kl += out.kl_sum;
        a.tokens += out.tokens;
        a.clip_low += out.clip_low;
        a.clip_high += out.clip_high;
        a.clip_region += out.clip_region;
        a.clip_count += out.clip_count;
        a.clip_low_min = a.clip_low_min.min(out.clip_low_min);
        a.clip_high_max = a.clip_high_max.max(out.clip_high_max);
        a.entropy += out.entropy_sum;
        a.value_loss += out.value_loss_sum;
        a.value_sum += out.value_sum;
        Ok((out.loss, vec![]))
    }
    fn save(&self, dir: &Path) -> Result<()> {
        self.fast.write_to(self.model)?;
        for (k, v) in self.value.iter().enumerate() {
            v.save(&dir.join(value_head_file(k)))?;
        }
        match &self.lora {
            Some(l) => l.save(self.model, self.tok, dir),
            None => save_model_files(self.model, self.tok, dir),
        }
    }
    fn load(&mut self, dir: &Path) -> Result<()> {
        for k in 0..self.value.len() {
            self.value[k] =
                ValueHead::load(&dir.join(value_head_file(k)), self.model.cfg.hidden_size)?;
        }
        self.value_micro = 0;
        if self.lora.is_some() {
            crate::lora::LoraRun::load(self.model, dir)?;
            return self.fast.read_from(self.model);
        }
        let saved = load_decoder(dir, self.model.device())?;
        let t: Vec<(String, Tensor)> = saved
            .named_params()
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().clone()))
            .collect();
        set_params(&self.params(), &t, dir)?;
        self.fast.read_from(self.model)
    }
    fn cursor(&self) -> Value {
        json!({"prompts": self.cursor.state(), "generation": self.gen})
    }
    fn restore_cursor(&mut self, cursor: &Value) -> Result<()> {
        let bad = |e: serde_json::Error| {
            Error::msg(format!(
                "trainer_state.json: bad data_cursor for train rl: {e}"
            ))
        };
        let st: CursorState = serde_json::from_value(cursor["prompts"].clone()).map_err(bad)?;
        self.gen = serde_json::from_value(cursor["generation"].clone()).map_err(bad)?;
        self.cursor.restore(st)
    }
    fn eval_model(&self) -> Option<(&Decoder, &Tokenizer)> {
        Some((self.model, self.tok))
    }
    fn sync_weights(&self) -> Result<()> {
        self.fast.write_to(self.model)
    }
    fn step_metrics(&mut self, step: u64) -> Result<Map<String, Value>> {
        let mut m = self.gen.stats.clone();
        let a = &self.acc;
        if self.settings.beta != 0.0 && a.tokens > 0.0 {
            m.insert("kl".into(), json!(a.kl / a.tokens));
        }
        let c = a.clip_count.max(1.0);
        m.insert("clip_ratio/low_mean".into(), json!(a.clip_low / c));
        m.insert("clip_ratio/high_mean".into(), json!(a.clip_high / c));
        m.insert("clip_ratio/region_mean".into(), json!(a.clip_region / c));
        if a.clip_low_min.is_finite() {
            m.insert("clip_ratio/low_min".into(), json!(a.clip_low_min));
            m.insert("clip_ratio/high_max".into(), json!(a.clip_high_max));
        }
        if a.tokens > 0.0 {
            if self.cfg.algorithm.entropy_coef > 0.0 {
                m.insert("entropy/policy".into(), json!(a.entropy / a.tokens));
            }
            if !self.value.is_empty() {
                m.insert("value/loss".into(), json!(a.value_loss / a.tokens));
                m.insert("value/mean".into(), json!(a.value_sum / a.tokens));
            }
        }
        m.insert("generation".into(), json!(self.gen.generations));
        self.log_completions(step)?;
        Ok(m)
    }
}

/// What `train rl` reports.
pub struct RlSummary {
    pub fit: FitSummary,
}

/// Runs the recipe (`start`: fresh, `--resume` or `--overwrite`, as the other recipes).
pub fn run(cfg: &RlConfig, start: impl Into<crate::rundir::Start>) -> Result<RlSummary> {
    cfg.validate()?;
    let base = cfg.base();
    let mut run = crate::prep::start_run_with(&cfg.run_dir(), cfg, &start.into())?;
    let run_dir = run.path().to_path_buf();
    let resume = run.resuming();

    let tok = crate::prep::tokenizer_for(&base, &[], resume)?;
    let mut model = crate::prep::model_for(&base, &tok)?;
    model.cfg.dtype = WeightDtype::F32;
    if let Some(why) = FastDecoder::unsupported(&model) {
        return Err(Error::config(
            "model",
            format!(
                "train rl runs on the fast training graph, which does not cover this model: {why}"
            ),
        ));
    }
    let lora = crate::lora::LoraRun::apply(cfg.lora.as_ref(), &base, &mut model)?;
    let mut fast = FastDecoder::new(&model, FastOptions::default())?;
    let a = &cfg.algorithm;
    fast.set_entropy(a.entropy_coef > 0.0);
    let reference = if a.beta <= 0.0 {
        Reference::None
    } else if lora.is_some() {
        Reference::Base
    } else {
        let dir = crate::prefs::model_dir(&cfg.model.init_from, "rl")?;
        let r = gradus_model::lora::load_model_dir(&dir, model.device())?;
        Reference::Model(Box::new(FastDecoder::new(&r, FastOptions::default())?))
    };
    let prompts = load_prompts(cfg, &tok, model.cfg.max_position_embeddings)?;
    let n_prompts = cfg.generation_batch() / a.num_generations;
    if prompts.len() < n_prompts {
        return Err(Error::config(
            "data.source",
            format!(
                "{} prompts, but one generation batch takes {n_prompts} (generation batch / num_generations)",
                prompts.len()
            ),
        ));
    }
    let rewards = build_rewards(&cfg.rewards)?;
    // PPO's value heads: one, or under constraints the KL's and one per component.
    let (heads, value_coefs) = match (a.kind, cfg.constraints.active()) {
        (AlgorithmKind::Ppo, false) => (1, vec![a.vf_coef]),
        (AlgorithmKind::Ppo, true) => {
            let mut c = vec![a.vf_coef];
            c.extend(std::iter::repeat_n(
                cfg.constraints.vf_coef,
                cfg.rewards.len(),
            ));
            (c.len(), c)
        }
        _ => (0, Vec::new()),
    };
    let mut eos: Vec<u32> = tok.eos_id().into_iter().collect();
    if let Some(e) = model.cfg.eos_token_id {
        if !eos.contains(&e) {
            eos.push(e);
        }
    }
    let cursor = IndexCursor::new(prompts.len(), n_prompts, cfg.run.seed)?
        .with_shuffle(cfg.data.shuffle)
        .with_drop_last(true);
    if resume {
        // The completions table follows the checkpoint (as metrics.jsonl does).
        if let Some(ck) = crate::checkpoint::latest_checkpoint(&run_dir)? {
            let st = crate::checkpoint::TrainerState::load(&ck)?;
            truncate_completions(&run_dir, st.step)?;
        }
    } else {
        let _ = std::fs::remove_file(run_dir.join("completions.jsonl"));
    }
    let mut learner = RlLearner {
        model: &model,
        tok: &tok,
        cfg: cfg.clone(),
        settings: a.loss_settings(),
        fast,
        reference,
        lora,
        prompts,
        cursor,
        names: cfg.rewards.iter().map(|r| r.display_name()).collect(),
        weights: cfg.rewards.iter().map(|r| r.weight).collect(),
        rewards,
        pad: gradus_eval::pairwise::pad_id(&tok),
        eos,
        gen: GenState::default(),
        acc: StepAcc::default(),
        run_dir: run_dir.clone(),
        value: vec![ValueHead::new(model.cfg.hidden_size); heads],
        value_coefs,
        value_micro: 0,
        eval_rewards: build_rewards(&cfg.constraints.eval)?,
        eval_weights: cfg.constraints.eval.iter().map(|r| r.weight).collect(),
    };
    let fit = fit_learner(&mut learner, &base, &mut run)?;
    learner.sync_weights()?;
    let mut extra = vec![
        Section::plot("Reward", &["reward/mean"]),
        Section::plot("Completion length", &["completions/mean_length"]),
        Section::plot("Clip ratio", &["clip_ratio/region_mean"]),
        Section::plot("Entropy of the sampling policy (nats)", &["entropy"]),
    ];
    if a.beta > 0.0 {
        extra.push(Section::plot("KL to the reference", &["kl"]));
    }
    if a.kind == AlgorithmKind::Ppo {
        extra.push(Section::plot("Value loss", &["value/loss"]));
    }
    if a.entropy_coef > 0.0 {
        extra.push(Section::plot(
            "Entropy of the policy on its completions (nats)",
            &["entropy/policy"],
        ));
    }
    if let Ok(text) = std::fs::read_to_string(run_dir.join("completions.jsonl")) {
        let last: Vec<&str> = text.lines().rev().take(8).collect();
        let body = last
            .iter()
            .rev()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|v| {
                format!(
                    "step {} | reward {} | advantage {:.3}\nprompt: {}\ncompletion: {}\n",
                    v["step"],
                    v["reward"],
                    v["advantage"].as_f64().unwrap_or(f64::NAN),
                    v["prompt"].as_str().unwrap_or(""),
                    v["completion"].as_str().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        extra.push(Section::pre("Completions (last logged)", &body));
    }
    write_run_report(
        &run_dir,
        &format!("gradus train rl ({:?})", a.kind).to_lowercase(),
        &base,
        &extra,
    )?;
    Ok(RlSummary { fit })
}
