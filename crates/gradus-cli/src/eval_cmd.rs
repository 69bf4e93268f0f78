//! `gradus eval run`: argument parsing only; the harness is `gradus_eval::run`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use gradus_eval::{BadRow, EvalOptions};

/// `gradus eval run`.
#[derive(Args, Debug)]
pub struct EvalRunArgs {
    /// A Hugging Face model directory, or a gradus run directory (its latest checkpoints/step-N).
    #[arg(long)]
    pub model: PathBuf,
    /// Comma-separated tasks: built-in names (arith, programs, world_facts, prefs), lm-eval YAML
    /// task files, or directories of them.
    #[arg(long)]
    pub tasks: String,
    /// Few-shot examples (overrides the tasks' num_fewshot, except tasks that pin it to 0).
    #[arg(long)]
    pub num_fewshot: Option<usize>,
    /// Evaluate only the first N documents of each task.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Rows per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Output directory: results.json and samples_<task>.jsonl.
    #[arg(long)]
    pub out: PathBuf,
    /// Render prompts with the model's chat template (few-shot examples as multi-turn).
    #[arg(long)]
    pub apply_chat_template: bool,
    /// A row that breaks a template or cannot be scored: `error` stops the run naming it, `skip`
    /// skips it and counts it in the results.
    #[arg(long, default_value = "error")]
    pub on_bad_row: BadRow,
    /// Seed of the few-shot sampler (lm-eval's fewshot_random_seed).
    #[arg(long, default_value_t = 1234)]
    pub fewshot_seed: u64,
    /// Override the model's context window (tokens).
    #[arg(long)]
    pub max_length: Option<usize>,
    /// Bootstrap replicates for the standard errors of non-mean metrics.
    #[arg(long, default_value_t = 1000)]
    pub bootstrap_iters: usize,
}

/// Runs `gradus eval run` and prints a table of the results.
pub fn run(a: EvalRunArgs) -> Result<()> {
    let opts = EvalOptions {
        num_fewshot: a.num_fewshot,
        limit: a.limit,
        batch_size: a.batch_size.max(1),
        apply_chat_template: a.apply_chat_template,
        on_bad_row: a.on_bad_row,
        fewshot_seed: a.fewshot_seed,
        bootstrap_iters: a.bootstrap_iters,
    };
    let (results, path) = gradus_eval::run::run(&a.model, &a.tasks, &a.out, &opts, a.max_length)?;
    println!(
        "{:<16} {:>7} {:>5} {:<24} {:>10} {:>9}  95% CI",
        "task", "version", "shots", "metric", "value", "stderr"
    );
    for r in &results {
        for (k, m) in &r.metrics {
            let se = m.stderr.map_or("N/A".to_string(), |s| format!("{s:.4}"));
            let ci = m
                .ci95
                .map_or(String::new(), |(lo, hi)| format!("[{lo:.4}, {hi:.4}]"));
            println!(
                "{:<16} {:>7} {:>5} {:<24} {:>10.4} {:>9}  {ci}",
                r.task,
                crate_version(&r.version),
                r.num_fewshot,
                k,
                m.value,
                se
            );
        }
        if !r.skipped.is_empty() {
            println!(
                "{:<16} skipped {} bad rows (first: {}: {})",
                r.task,
                r.skipped.len(),
                r.skipped[0].loc,
                r.skipped[0].reason
            );
        }
        if r.truncated > 0 {
            println!(
                "{:<16} {} requests had their context left-truncated to the model's window",
                r.task, r.truncated
            );
        }
    }
    println!("results: {}", path.display());
    Ok(())
}

fn crate_version(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
