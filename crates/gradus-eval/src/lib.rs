//! gradus-eval: measuring models.
//!
//! It loads checkpoints (gradus run directories and Hugging Face model directories) and never imports
//! `gradus-train`: training recipes may call it, not the other way round. The run directory
//! (`config.resolved.toml`, `metrics.jsonl`, `checkpoints/step-N/`) is the contract between them.
//!
//! The lm-evaluation-harness-compatible harness, in dependency order:
//! - [`pyrandom`]: CPython's Mersenne Twister, for lm-eval's seeded few-shot draws.
//! - [`pyval`]: Python-style printing and literal parsing of template values.
//! - [`lm`]: the three request kinds (loglikelihood, loglikelihood_rolling, generate_until) on a decoder.
//! - [`task`]: YAML task files (lm-eval's format, local data only), documents and templates.
//! - [`filters`]: regex / take_first / majority_vote answer filters.
//! - [`metrics`]: per-sample metrics, aggregation, standard errors and confidence intervals.
//! - [`evaluator`]: prompts with few-shot examples, requests, scoring, per-sample logs and results.
//! - [`builtin`]: tasks on gradus' synthetic data (no download).
//! - [`run`]: `gradus eval run`: resolve task names, evaluate, write the outputs.
//!
//! Preference evaluation: [`pairwise`] (`gradus eval reward|ranking`: reward-model pairwise accuracy,
//! ranking accuracy and its idealised form; shared with the DPO and reward recipes' diagnostics).
//!
//! Code execution: [`code`] (HumanEval/evalplus problems and samples, unbiased pass@k, execution in
//! the `gradus-sandbox` boundary, sampling from checkpoints).

pub mod builtin;
pub mod code;
pub mod evaluator;
pub mod filters;
pub mod lm;
pub mod metrics;
pub mod pairwise;
pub mod pyrandom;
pub mod pyval;
pub mod run;
pub mod task;

pub use evaluator::{evaluate_task, BadRow, EvalOptions, LoadedTask, TaskResult};
pub use lm::EvalModel;

/// The model input of a packed batch (gradus-data) for a decoder (gradus-model): its ids,
/// positions and segments. The one conversion, shared by evaluation and the trainer
/// (`gradus_train::trainer::forward_input`); it lives here because gradus-model and gradus-data do
/// not depend on each other.
pub fn forward_input(b: &gradus_data::pack::Batch) -> gradus_model::ForwardInput<'_> {
    gradus_model::ForwardInput::packed(
        &b.input_ids,
        b.rows,
        b.seq_len,
        &b.position_ids,
        &b.segment_ids,
    )
}
