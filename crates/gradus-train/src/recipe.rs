//! Recipe configuration shared by `gradus train pretrain` and `gradus train sft`.
//!
//! One serde tree, `#[serde(default, deny_unknown_fields)]` at every level, documented defaults,
//! and `validate()` at the boundary. Model fields keep Hugging Face names.

use std::path::PathBuf;

use gradus_model::DecoderConfig;
use gradus_tensor::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::optim::AdamWConfig;
use crate::schedule::Schedule;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// Parent directory of runs.
    pub dir: PathBuf,
    /// The run's name: its directory is `<dir>/<name>`.
    pub name: String,
    /// Seeds weight init, data order and sampling.
    pub seed: u64,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self { dir: PathBuf::from("runs"), name: "run".into(), seed: 0 }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSection {
    /// A Hugging Face checkpoint directory to start from (its tokenizer too). Empty: from scratch.
    pub init_from: Option<PathBuf>,
    /// Architecture when training from scratch (`vocab_size` is taken from the tokenizer).
    pub config: DecoderConfig,
}

impl Default for ModelSection {
    fn default() -> Self {
        Self { init_from: None, config: DecoderConfig::default() }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenizerSection {
    /// A `tokenizer.json` (or a directory holding one). Empty: the model's, or train one.
    pub path: Option<PathBuf>,
    /// Vocabulary size of the byte-level BPE trained on the corpus when no tokenizer is given.
    pub train_vocab_size: usize,
}

impl Default for TokenizerSection {
    fn default() -> Self {
        Self { path: None, train_vocab_size: 512 }
    }
}

/// What to do with a document longer than `seq_len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OverflowPolicy {
    Split,
    Truncate,
    Error,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataSection {
    /// `"synthetic"` for the built-in generator, or a JSONL/Parquet file or directory.
    pub source: String,
    /// Documents (pretrain) or instructions (sft) to generate when `source = "synthetic"`.
    pub synthetic_examples: usize,
    /// Tokens per row.
    pub seq_len: usize,
    /// Pack several documents per row (best-fit decreasing) instead of one per row.
    pub pack: bool,
    pub overflow: OverflowPolicy,
    /// SFT: loss only on completion / assistant tokens.
    pub completion_only: bool,
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
            overflow: OverflowPolicy::Split,
            completion_only: true,
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
    /// Per-layer weight norms every N steps (0 disables).
    pub weight_norms_every: u64,
    /// Checkpoint every N steps (0: only at the end).
    pub save_every: u64,
    /// Complete checkpoints kept on disk.
    pub keep_last: usize,
    /// Show a progress bar.
    pub progress: bool,
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
            weight_norms_every: 50,
            save_every: 0,
            keep_last: 2,
            progress: true,
            stop_after: 0,
            engine: Engine::Auto,
        }
    }
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
            return Err(Error::config("train.lr", format!("must be positive, got {}", t.lr)));
        }
        if !(t.max_grad_norm >= 0.0) {
            return Err(Error::config("train.max_grad_norm", "must be ≥ 0"));
        }
        if t.keep_last == 0 {
            return Err(Error::config("train.keep_last", "must keep at least one checkpoint"));
        }
        if self.data.seq_len < 2 {
            return Err(Error::config("data.seq_len", "must be at least 2"));
        }
        if self.run.name.is_empty() || self.run.name.contains('/') {
            return Err(Error::config("run.name", "must be a non-empty name without `/`"));
        }
        self.optimizer.validate()?;
        self.schedule.validate(t.steps)?;
        if self.model.init_from.is_none() {
            let mut c = self.model.config.clone();
            c.vocab_size = c.vocab_size.max(1);
            c.validate()?;
        }
        Ok(())
    }

    pub fn run_dir(&self) -> PathBuf {
        self.run.dir.join(&self.run.name)
    }
}
