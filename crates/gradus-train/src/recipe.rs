//! Recipe configuration: [`RecipeConfig`] is `gradus train pretrain` / `gradus train sft`'s config
//! and the sections every recipe shares; the other recipes declare theirs with
//! [`recipe_config!`](crate::recipe_config) (the shared sections + their own, with `base()`).
//!
//! One serde tree, `#[serde(default, deny_unknown_fields)]` at every level, documented defaults,
//! and `validate()` at the boundary. Model fields keep Hugging Face names.

use std::path::PathBuf;

use gradus_model::DecoderConfig;
use gradus_tasks::parity::ParityConfig;
use gradus_tasks::{CorpusConfig, CorpusStyle, ModularConfig, TaskConfig};
use gradus_tensor::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::optim::AdamWConfig;
use crate::schedule::Schedule;
pub use gradus_data::pack::Overflow;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// Parent directory of runs.
    pub dir: PathBuf,
    /// The run's name: its directory is `<dir>/<name>`.
    pub name: String,
    /// Seeds weight init, data order and sampling.
    pub seed: u64,
    /// Settings changed by `--resume --set ...`, in order (written by gradus into
    /// `config.resolved.toml`; see [`crate::rundir`]). Empty for a run never changed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<crate::rundir::ConfigChange>,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("runs"),
            name: "run".into(),
            seed: 0,
            history: Vec::new(),
        }
    }
}

impl RunConfig {
    /// Checks `name` is a plain directory name (not empty, `.`, `..`, and without path separators),
    /// so that the run directory `<dir>/<name>` never escapes `run.dir`.
    pub fn validate(&self) -> Result<()> {
        let n = &self.name;
        if n.is_empty()
            || n == "."
            || n == ".."
            || n.contains('/')
            || n.contains('\\')
            || n.contains('\0')
        {
            return Err(Error::config(
                "run.name",
                format!("`{n}` must be a plain directory name (not empty, `.` or `..`, without `/` or `\\`): the run directory is <run.dir>/<run.name>"),
            ));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[derive(Default)]
pub struct ModelSection {
    /// A Hugging Face checkpoint directory to start from (its tokenizer too). Empty: from scratch.
    pub init_from: Option<PathBuf>,
    /// Architecture when training from scratch (`vocab_size` is taken from the tokenizer).
    pub config: DecoderConfig,
    /// The MLP of `data.source = "sparse_parity"` (see [`crate::parity`]).
    pub mlp: crate::parity::MlpSection,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenizerSection {
    /// A `tokenizer.json` (or a directory holding one). Empty: the model's, or train one.
    pub path: Option<PathBuf>,
    /// Vocabulary size of the byte-level BPE trained on the corpus when no tokenizer is given.
    pub train_vocab_size: usize,
    /// The trained BPE spells numbers digit by digit (each digit its own token, as Llama does).
    pub split_digits: bool,
}

impl Default for TokenizerSection {
    fn default() -> Self {
        Self {
            path: None,
            train_vocab_size: 512,
            split_digits: true,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataSection {
    /// `"synthetic"` for the built-in generator, `"modular_addition"` / `"sparse_parity"`
    /// (pretrain) for the tasks of `[data.modular]` / `[data.parity]`, or a JSONL/Parquet file or
    /// directory.
    pub source: String,
    /// Documents (pretrain) or instructions (sft) to generate when `source = "synthetic"`.
    pub synthetic_examples: usize,
    /// Tokens per row.
    pub seq_len: usize,
    /// Pack several documents per row (best-fit decreasing) instead of one per row.
    pub pack: bool,
    /// A document longer than `seq_len`: `skip` (counted, with a warning naming `file:line`),
    /// `split`, `truncate` or `error`. Unset: the recipe's default (`split` for pretraining, `skip`
    /// for SFT); the resolved value is recorded in `config.resolved.toml`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overflow: Option<Overflow>,
    /// SFT: loss only on completion / assistant tokens.
    pub completion_only: bool,
    /// Fraction of documents / examples held out for `val/loss` (0: no validation). At least one
    /// is held out when the fraction is positive and there are two or more.
    pub val_fraction: f64,
    /// Documents of the built-in pretraining corpus (`source = "synthetic"`).
    pub corpus: CorpusStyle,
    /// The built-in instruction task (SFT with `source = "synthetic"`, and quickstart's evaluation).
    pub task: TaskConfig,
    /// The modular-addition task (`source = "modular_addition"`; see [`crate::modular`]).
    pub modular: ModularConfig,
    /// The sparse-parity task (`source = "sparse_parity"`; see [`crate::parity`]).
    pub parity: ParityConfig,
    /// Field names in the data files.
    pub text_field: String,
    pub prompt_field: String,
    pub completion_field: String,
    pub messages_field: String,
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            source: "synthetic".into(),
            synthetic_examples: 4000,
            seq_len: 128,
            pack: true,
            overflow: None,
            completion_only: true,
            val_fraction: 0.05,
            corpus: CorpusStyle::default(),
            task: TaskConfig::default(),
            modular: ModularConfig::default(),
            parity: ParityConfig::default(),
            text_field: "text".into(),
            prompt_field: "prompt".into(),
            completion_field: "completion".into(),
            messages_field: "messages".into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainSection {
    /// Optimiser steps.
    pub steps: u64,
    /// Rows per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimiser step. The loss is normalised by the number of target tokens of
    /// the whole step, so batch 8 × accumulation 1 equals batch 2 × accumulation 4.
    pub grad_accum: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Max global gradient norm (0 disables clipping).
    pub max_grad_norm: f64,
    pub log_every: u64,
    /// `val/loss` on the held-out split (`data.val_fraction`) every N steps, on logged steps, and
    /// at the last step (0: only at the last step).
    pub eval_every: u64,
    /// Per-layer weight norms every N steps (0 disables).
    pub weight_norms_every: u64,
    /// Checkpoint every N steps (0: only at the end).
    pub save_every: u64,
    /// Complete checkpoints kept on disk.
    pub keep_last: usize,
    /// Show progress: a bar when stdout is a terminal, else plain lines (see `progress_every_s`).
    pub progress: bool,
    /// When stdout is not a terminal (Slurm logs, pipes): a plain progress line (step, loss,
    /// tokens/s, ETA) at most every this many seconds, and one at the end (0: every step).
    pub progress_every_s: f64,
    /// Stop this invocation after this many steps (0: run to `steps`), saving a checkpoint; a
    /// later `--resume` continues exactly. For time-sliced or preemptible cluster jobs.
    pub stop_after: u64,
    /// Which training graph runs the steps (see [`Engine`]).
    pub engine: Engine,
}

/// The training graph: `auto` (default) runs the hand-written fast graph
/// (`gradus_model::fast`) when it covers the model and recipe and falls back to the candle
/// reference graph with a one-line notice otherwise; `reference` always runs the candle graph;
/// `fast` requires the fast graph (an error names what it does not cover).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    #[default]
    Auto,
    Fast,
    Reference,
}

impl Default for TrainSection {
    fn default() -> Self {
        Self {
            steps: 200,
            batch_size: 16,
            grad_accum: 1,
            lr: 3e-3,
            max_grad_norm: 1.0,
            log_every: 1,
            eval_every: 50,
            weight_norms_every: 50,
            save_every: 0,
            keep_last: 2,
            progress: true,
            progress_every_s: 30.0,
            stop_after: 0,
            engine: Engine::Auto,
        }
    }
}

/// `[dynamics]`: the weight statistics of Hu et al. 2023 recorded while training (gradus-dynamics),
/// one line of `dynamics.jsonl` in the run directory per recorded step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct DynamicsSection {
    /// Record at step 0 and every N steps (0: off).
    pub every: u64,
}

/// Declares a recipe's config: the sections every recipe shares (those of [`RecipeConfig`]: `run`,
/// `model`, `tokenizer`, `data`, `optimizer`, `schedule`, `train`, `eval`, `dynamics`) followed by
/// the recipe's own, with `base()` giving the shared part as a [`RecipeConfig`] for the loop and
/// the report. A macro rather than `#[serde(flatten)]`, because serde cannot combine `flatten`
/// with `deny_unknown_fields`, and every config keeps the latter so that a typo is an error naming
/// the key.
///
/// A recipe whose `[data]` is not [`DataSection`] (RL reads prompts, not documents) names its own
/// type and how `base()` sees it, on a first line `data: Type = fn(&Type) -> DataSection;`.
#[macro_export]
macro_rules! recipe_config {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            data: $dty:ty = $to_base:expr;
            $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, Default)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name {
            pub run: $crate::recipe::RunConfig,
            pub model: $crate::recipe::ModelSection,
            pub tokenizer: $crate::recipe::TokenizerSection,
            pub data: $dty,
            pub optimizer: $crate::optim::AdamWConfig,
            pub schedule: $crate::schedule::Schedule,
            pub train: $crate::recipe::TrainSection,
            /// lm-eval-compatible tasks during training (`eval/<task>/<metric>` in metrics.jsonl).
            pub eval: $crate::eval_hook::EvalSection,
            /// Weight statistics recorded while training (`[dynamics] every = N`).
            pub dynamics: $crate::recipe::DynamicsSection,
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl $name {
            /// The shared sections, as the loop and the report read them.
            pub fn base(&self) -> $crate::recipe::RecipeConfig {
                let to_base: fn(&$dty) -> $crate::recipe::DataSection = $to_base;
                $crate::recipe::RecipeConfig {
                    run: self.run.clone(),
                    model: self.model.clone(),
                    tokenizer: self.tokenizer.clone(),
                    data: to_base(&self.data),
                    optimizer: self.optimizer,
                    schedule: self.schedule,
                    train: self.train.clone(),
                    eval: self.eval.clone(),
                    dynamics: self.dynamics.clone(),
                    phf: None,
                }
            }
        }
    };
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty, )*
        }
    ) => {
        $crate::recipe_config! {
            $(#[$meta])*
            pub struct $name {
                data: $crate::recipe::DataSection = ::std::clone::Clone::clone;
                $( $(#[$fmeta])* pub $field: $ty, )*
            }
        }
    };
}

/// The whole recipe config (`configs/pretrain/*.toml`, `configs/sft/*.toml`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RecipeConfig {
    pub run: RunConfig,
    pub model: ModelSection,
    pub tokenizer: TokenizerSection,
    pub data: DataSection,
    pub optimizer: AdamWConfig,
    pub schedule: Schedule,
    pub train: TrainSection,
    /// lm-eval-compatible tasks during training (`eval/<task>/<metric>` in metrics.jsonl).
    pub eval: crate::eval_hook::EvalSection,
    pub dynamics: DynamicsSection,
    /// Pretraining with human feedback (`train pretrain` only; see [`crate::phf`]). Absent: plain
    /// pretraining.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phf: Option<crate::phf::PhfSection>,
}

impl RecipeConfig {
    pub fn validate(&self) -> Result<()> {
        let t = &self.train;
        if t.steps == 0 {
            return Err(Error::config("train.steps", "must be positive"));
        }
        if t.batch_size == 0 {
            return Err(Error::config("train.batch_size", "must be positive"));
        }
        if t.grad_accum == 0 {
            return Err(Error::config("train.grad_accum", "must be positive"));
        }
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            return Err(Error::config(
                "train.lr",
                format!("must be positive, got {}", t.lr),
            ));
        }
        if !(t.max_grad_norm >= 0.0) {
            return Err(Error::config("train.max_grad_norm", "must be ≥ 0"));
        }
        if !(t.progress_every_s >= 0.0 && t.progress_every_s.is_finite()) {
            return Err(Error::config(
                "train.progress_every_s",
                format!("must be finite and ≥ 0, got {}", t.progress_every_s),
            ));
        }
        if t.keep_last == 0 {
            return Err(Error::config(
                "train.keep_last",
                "must keep at least one checkpoint",
            ));
        }
        if !(0.0..1.0).contains(&self.data.val_fraction) {
            return Err(Error::config(
                "data.val_fraction",
                format!("must be in [0, 1), got {}", self.data.val_fraction),
            ));
        }
        if self.data.seq_len < 2 {
            return Err(Error::config("data.seq_len", "must be at least 2"));
        }
        self.run.validate()?;
        if self.data.source == "synthetic" {
            CorpusConfig::styled(1, 0, &self.data.corpus).validate()?;
            self.data.task.validate()?;
        } else if self.data.source == crate::modular::SOURCE {
            self.data.modular.validate()?;
        } else if self.data.source == crate::parity::SOURCE {
            self.data.parity.validate()?;
            crate::parity::mlp_config(self).validate()?;
        }
        self.optimizer.validate()?;
        self.schedule.validate(t.steps)?;
        self.eval.validate()?;
        if let Some(p) = &self.phf {
            p.validate()?;
        }
        if self.model.init_from.is_none() {
            let mut c = self.model.config.clone();
            c.vocab_size = c.vocab_size.max(1);
            c.validate()?;
            check_context(self.data.seq_len, c.max_position_embeddings, "model.config")?;
        }
        Ok(())
    }

    pub fn run_dir(&self) -> PathBuf {
        self.run.dir.join(&self.run.name)
    }
}

/// `data.seq_len` must fit the model's context (`max_position_embeddings`, from `origin`).
pub fn check_context(seq_len: usize, max_positions: usize, origin: &str) -> Result<()> {
    if seq_len > max_positions {
        return Err(Error::config(
            "data.seq_len",
            format!("{seq_len} is longer than the model's context, max_position_embeddings = {max_positions} ({origin}); lower data.seq_len"),
        ));
    }
    Ok(())
}
