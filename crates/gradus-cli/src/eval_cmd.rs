//! `gradus eval run|reward|ranking|code`: argument parsing only. The harness is `gradus_eval::run`,
//! pairwise (reward-model and ranking) accuracy `gradus_eval::pairwise`, code pass@k `code_cmd`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use gradus_data::tokenizer::Tokenizer;
use gradus_eval::pairwise::{
    evaluate_ranking, evaluate_reward, load_eval_pairs, pad_id, ranking_text, reward_text,
    EvalPairs,
};
use gradus_eval::{BadRow, EvalOptions};
use gradus_model::lora::load_model_dir;
use gradus_model::reward::RewardModel;
use gradus_objectives::ranking::DEFAULT_EPS;
use gradus_tensor::Device;

#[derive(Subcommand)]
pub enum EvalCmd {
    /// lm-evaluation-harness-compatible tasks (built-in or YAML task files) on a model.
    Run(EvalRunArgs),
    /// Pairwise accuracy of a reward model (overall and per category); writes every pair's scores.
    Reward(EvalRewardArgs),
    /// Ranking accuracy, idealised ranking accuracy, alignment gap and flip difficulty of a policy
    /// against a reference on preference pairs (Chen et al. 2024).
    Ranking(EvalRankingArgs),
    /// Code pass@k: sample completions from a checkpoint (or read a samples file), run them with
    /// the problems' tests in the sandbox, report unbiased pass@k with confidence intervals.
    Code(crate::code_cmd::EvalCodeArgs),
}

#[derive(Args)]
pub struct EvalData {
    /// Preference pairs (JSONL/Parquet file or directory), or `synthetic` for the built-in
    /// generator's held-out split.
    #[arg(long, default_value = "synthetic")]
    pub data: String,
    /// Pairs to generate with `--data synthetic`.
    #[arg(long, default_value_t = 200)]
    pub pairs: usize,
    /// Longest prompt + completion in tokens; longer pairs are skipped and counted.
    #[arg(long, default_value_t = 1024)]
    pub max_len: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct EvalRewardArgs {
    /// A reward model directory (written by `gradus train reward`), or its run directory.
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub data: EvalData,
    /// Write one JSON line per pair with its scores.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args)]
pub struct EvalRankingArgs {
    /// The policy checkpoint.
    #[arg(long)]
    pub model: PathBuf,
    /// The reference checkpoint (e.g. the SFT model DPO started from).
    #[arg(long)]
    pub reference: PathBuf,
    #[command(flatten)]
    pub data: EvalData,
    /// β for the DPO loss, reward accuracy and flip thresholds.
    #[arg(long, default_value_t = 0.1)]
    pub beta: f64,
}

fn pairs_for(dir: &Path, d: &EvalData) -> Result<(Tokenizer, EvalPairs)> {
    let tok = Tokenizer::from_dir(dir)
        .with_context(|| format!("{}: needs a tokenizer.json", dir.display()))?;
    let pairs = load_eval_pairs(&d.data, &tok, d.max_len, d.pairs, d.seed)?;
    Ok((tok, pairs))
}

pub fn eval(cmd: EvalCmd) -> Result<()> {
    match cmd {
        EvalCmd::Code(a) => crate::code_cmd::run(a),
        EvalCmd::Run(a) => run(a),
        EvalCmd::Reward(a) => {
            let model = gradus_eval::lm::resolve_model_dir(&a.model)?;
            let rm = RewardModel::load(&model)?;
            let (tok, data) = pairs_for(&model, &a.data)?;
            let e = evaluate_reward(&rm, &data.pairs, pad_id(&tok))?;
            if let Some(out) = &a.out {
                let lines: String = e
                    .scores
                    .iter()
                    .map(|(c, r)| format!("{}\n", serde_json::json!({"chosen": c, "rejected": r})))
                    .collect();
                gradus_tensor::io::write_atomic(out, lines.as_bytes())?;
            }
            if a.data.json {
                println!(
                    "{}",
                    serde_json::json!({"pairs": e.pairs, "accuracy": e.accuracy, "per_category": e.per_category, "skipped": data.skipped})
                );
            } else {
                println!("{}", reward_text(&e, data.skipped.total()));
            }
            Ok(())
        }
        EvalCmd::Ranking(a) => {
            let model = gradus_eval::lm::resolve_model_dir(&a.model)?;
            let policy = load_model_dir(&model, &Device::Cpu)?;
            let reference = load_model_dir(
                &gradus_eval::lm::resolve_model_dir(&a.reference)?,
                &Device::Cpu,
            )?;
            let (tok, data) = pairs_for(&model, &a.data)?;
            let r = evaluate_ranking(
                &policy,
                &reference,
                &data.pairs,
                pad_id(&tok),
                a.beta,
                DEFAULT_EPS,
            )?;
            if a.data.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!("{}", ranking_text(&r, a.beta, data.skipped.total()));
            }
            Ok(())
        }
    }
}

/// `gradus eval run`.
#[derive(Args, Debug)]
pub struct EvalRunArgs {
    /// A Hugging Face model directory, or a gradus run directory (its latest checkpoints/step-N).
    #[arg(long)]
    pub model: PathBuf,
    /// Comma-separated tasks: built-in names (arith, programs, world_facts, synthetic_pairs), lm-eval YAML
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
