//! `gradus sweep`: N seeds of a recipe as N run directories, `--jobs` at a time, resumable.
//!
//! Seed s runs `gradus train <recipe> --config X --set run.seed=s --set run.name=<name>-seed<s>` as
//! a child process (each with `RAYON_NUM_THREADS` = cores / jobs unless set). A seed whose final
//! checkpoint (`checkpoints/step-<train.steps>`) exists is skipped; one with an earlier checkpoint
//! continues with `--resume`. The summary table (and `<dir>/<name>-sweep.json`) lists every seed's
//! status, steps, last training loss and, with `--metric`, its convergence step.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde::Serialize;

use gradus_dynamics::run::{convergence, Convergence};
use gradus_train::recipe::RecipeConfig;

/// `gradus sweep` arguments (also built by the labs).
#[derive(Args)]
pub struct SweepArgs {
    /// The recipe's TOML config.
    #[arg(long)]
    pub config: PathBuf,
    /// Recipe: pretrain or sft.
    #[arg(long, default_value = "pretrain")]
    pub recipe: String,
    /// Seeds as a half-open range `A..B` or a comma list.
    #[arg(long, default_value = "0..4")]
    pub seeds: String,
    /// Runs at a time.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Extra overrides passed to every run (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Record the convergence step: first step with this metric ≥ --threshold.
    #[arg(long)]
    pub metric: Option<String>,
    /// Convergence threshold on --metric.
    #[arg(long, default_value_t = 0.5)]
    pub threshold: f64,
}

/// Parses `A..B` (B excluded) or `a,b,c`.
pub fn parse_seeds(s: &str) -> Result<Vec<u64>> {
    if let Some((a, b)) = s.split_once("..") {
        let a: u64 = a
            .trim()
            .parse()
            .with_context(|| format!("--seeds `{s}`: bad start"))?;
        let b: u64 = b
            .trim()
            .parse()
            .with_context(|| format!("--seeds `{s}`: bad end"))?;
        if b <= a {
            bail!("--seeds `{s}`: empty range");
        }
        return Ok((a..b).collect());
    }
    s.split(',')
        .map(|x| {
            x.trim()
                .parse::<u64>()
                .with_context(|| format!("--seeds `{s}`: `{x}` is not a seed"))
        })
        .collect()
}

/// One seed's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct SeedRow {
    pub seed: u64,
    pub run_dir: PathBuf,
    /// done (already finished), ran, failed.
    pub status: String,
    pub steps: Option<u64>,
    pub last_loss: Option<f64>,
    pub convergence_step: Option<u64>,
    pub converged: bool,
    pub seconds: f64,
}

fn finished(run_dir: &Path, steps: u64) -> bool {
    run_dir
        .join("checkpoints")
        .join(format!("step-{steps}"))
        .join("trainer_state.json")
        .is_file()
}

fn last_metrics(run_dir: &Path) -> (Option<u64>, Option<f64>) {
    let Ok(text) = std::fs::read_to_string(run_dir.join("metrics.jsonl")) else {
        return (None, None);
    };
    let mut out = (None, None);
    for line in text.lines() {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
            if let Some(l) = v.get("train/loss").and_then(|x| x.as_f64()) {
                out = (v.get("step").and_then(|x| x.as_u64()), Some(l));
            }
        }
    }
    out
}

pub fn run(a: SweepArgs) -> Result<()> {
    if !matches!(a.recipe.as_str(), "pretrain" | "sft") {
        bail!("--recipe `{}`: sweeps run `pretrain` or `sft`", a.recipe);
    }
    let seeds = parse_seeds(&a.seeds)?;
    let base: RecipeConfig = crate::config::resolve(Some(&a.config), &a.sets)?;
    base.validate()?;
    let jobs = a.jobs.max(1);
    let exe = std::env::current_exe().context("locating the gradus binary")?;
    let threads = std::env::var("RAYON_NUM_THREADS").ok().unwrap_or_else(|| {
        (std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            / jobs)
            .max(1)
            .to_string()
    });
    let next = AtomicUsize::new(0);
    let rows: Mutex<Vec<SeedRow>> = Mutex::new(Vec::new());
    std::thread::scope(|sc| {
        for _ in 0..jobs {
            sc.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(&seed) = seeds.get(i) else { break };
                let name = format!("{}-seed{seed}", base.run.name);
                let run_dir = base.run.dir.join(&name);
                let t0 = std::time::Instant::now();
                let status = if finished(&run_dir, base.train.steps) {
                    "done".to_string()
                } else {
                    let mut cmd = Command::new(&exe);
                    cmd.arg("train")
                        .arg(&a.recipe)
                        .arg("--config")
                        .arg(&a.config);
                    for s in &a.sets {
                        cmd.arg("--set").arg(s);
                    }
                    cmd.arg("--set")
                        .arg(format!("run.seed={seed}"))
                        .arg("--set")
                        .arg(format!("run.name=\"{name}\""))
                        .arg("--set")
                        .arg("train.progress=false");
                    if run_dir.join("checkpoints").is_dir() {
                        cmd.arg("--resume");
                    }
                    cmd.env("RAYON_NUM_THREADS", &threads);
                    match cmd.output() {
                        Ok(o) if o.status.success() => "ran".to_string(),
                        Ok(o) => {
                            let err = String::from_utf8_lossy(&o.stderr);
                            eprintln!("seed {seed} failed:\n{err}");
                            "failed".to_string()
                        }
                        Err(e) => {
                            eprintln!("seed {seed}: could not start {}: {e}", exe.display());
                            "failed".to_string()
                        }
                    }
                };
                let (steps, last_loss) = last_metrics(&run_dir);
                let conv = a.metric.as_deref().map(|m| {
                    convergence(&run_dir, m, a.threshold).unwrap_or(Convergence::NoMetric)
                });
                let row = SeedRow {
                    seed,
                    run_dir: run_dir.clone(),
                    status,
                    steps,
                    last_loss,
                    convergence_step: conv.as_ref().and_then(|c| c.step()),
                    converged: matches!(conv, Some(Convergence::At(_))),
                    seconds: t0.elapsed().as_secs_f64(),
                };
                eprintln!("seed {seed}: {} in {:.1}s", row.status, row.seconds);
                if let Ok(mut r) = rows.lock() {
                    r.push(row);
                }
            });
        }
    });
    let mut rows = rows
        .into_inner()
        .map_err(|_| anyhow!("a sweep worker panicked"))?;
    rows.sort_by_key(|r| r.seed);
    println!(
        "{:>6} {:>8} {:>8} {:>10} {:>12} {:>9}  run",
        "seed", "status", "steps", "last loss", "convergence", "seconds"
    );
    for r in &rows {
        let conv = match (r.convergence_step, r.converged) {
            (Some(s), true) => s.to_string(),
            (Some(s), false) => format!(">{s}"),
            _ => "—".into(),
        };
        println!(
            "{:>6} {:>8} {:>8} {:>10} {:>12} {:>9.1}  {}",
            r.seed,
            r.status,
            r.steps.map_or("—".into(), |s| s.to_string()),
            r.last_loss.map_or("—".into(), |l| format!("{l:.4}")),
            conv,
            r.seconds,
            r.run_dir.display()
        );
    }
    let out = base.run.dir.join(format!("{}-sweep.json", base.run.name));
    let json = serde_json::to_string_pretty(&rows)?;
    gradus_tensor::io::write_atomic(&out, json.as_bytes())?;
    println!("summary → {}", out.display());
    let failed = rows.iter().filter(|r| r.status == "failed").count();
    if failed > 0 {
        bail!("{failed} of {} seeds failed (rerun the same command to retry them; finished seeds are skipped)", rows.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse() {
        assert_eq!(parse_seeds("0..4").unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(parse_seeds("3, 7").unwrap(), vec![3, 7]);
        assert!(parse_seeds("4..4").is_err());
        assert!(parse_seeds("a").unwrap_err().to_string().contains("`a`"));
    }
}
