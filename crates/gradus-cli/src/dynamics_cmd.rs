//! `gradus dynamics`: checkpoint statistics over saved runs and training maps (gradus-dynamics).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use gradus_dynamics::hmm::{Covariance, FitOptions};
use gradus_dynamics::pipeline::{map_runs, write_map, MapOptions, States};
use gradus_dynamics::run::{run_name, stats_offline, write_dynamics, DYNAMICS_FILE};
use gradus_dynamics::stats::MatrixSelection;
use gradus_dynamics::COLUMNS;

#[derive(Subcommand)]
pub enum DynamicsCmd {
    /// The 14 weight statistics of Hu et al. (plus per-matrix values) for every saved checkpoint
    /// of each run, written as `dynamics.jsonl` (into the run directory, or OUT/<run>/).
    Stats(StatsArgs),
    /// Fit a Gaussian HMM over runs' statistics, decode every run and write the training map
    /// (report.html with the state graph, map.json) with detour and obligatory states.
    Map(MapArgs),
}

#[derive(Args)]
pub struct StatsArgs {
    /// Run directories (runs/<name>, holding checkpoints/step-N/model.safetensors).
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Write OUT/<run>/dynamics.jsonl instead of <run>/dynamics.jsonl.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Average the matrix statistics over every 2-D tensor, embeddings and LM head included.
    #[arg(long)]
    all_matrices: bool,
}

#[derive(Args)]
pub struct MapArgs {
    /// Run directories (with dynamics.jsonl, or checkpoints to compute it from, and metrics.jsonl).
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Number of states, or `auto` (lowest BIC over 1..=8).
    #[arg(long, default_value = "auto")]
    states: String,
    /// Output directory for report.html and map.json.
    #[arg(long)]
    out: PathBuf,
    /// `diag` or `full`.
    #[arg(long, default_value = "diag")]
    covariance: String,
    /// EM restarts per state count (best by likelihood).
    #[arg(long, default_value_t = 5)]
    restarts: usize,
    /// Maximum EM iterations.
    #[arg(long, default_value_t = 100)]
    n_iter: usize,
    /// EM stops when the log-likelihood gain is below this.
    #[arg(long, default_value_t = 1e-2)]
    tol: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Share of runs the HMM is fitted on.
    #[arg(long, default_value_t = 0.8)]
    train_frac: f64,
    /// Metric in metrics.jsonl that defines convergence.
    #[arg(long, default_value = "eval/accuracy")]
    metric: String,
    /// Convergence = first step with metric ≥ this (paper: 0.5 modular addition, 0.9 sparse parity).
    #[arg(long, default_value_t = 0.5)]
    threshold: f64,
    /// Significance level of a detour.
    #[arg(long, default_value_t = 0.05)]
    alpha: f64,
    /// Average the matrix statistics over every 2-D tensor (when computing from checkpoints).
    #[arg(long)]
    all_matrices: bool,
}

pub fn run(c: DynamicsCmd) -> Result<()> {
    match c {
        DynamicsCmd::Stats(a) => stats(a),
        DynamicsCmd::Map(a) => map(a),
    }
}

fn selection(all: bool) -> MatrixSelection {
    if all {
        MatrixSelection::All
    } else {
        MatrixSelection::Blocks
    }
}

fn stats(a: StatsArgs) -> Result<()> {
    for run in &a.runs {
        let t0 = std::time::Instant::now();
        let rows = stats_offline(run, selection(a.all_matrices))
            .with_context(|| format!("run {}", run.display()))?;
        let path = match &a.out {
            Some(o) => o.join(run_name(run)).join(DYNAMICS_FILE),
            None => run.join(DYNAMICS_FILE),
        };
        write_dynamics(&path, &rows)?;
        println!(
            "{}: {} checkpoints in {:.2}s → {}",
            run.display(),
            rows.len(),
            t0.elapsed().as_secs_f64(),
            path.display()
        );
        if let Some(last) = rows.last() {
            let cols: Vec<String> = COLUMNS
                .iter()
                .map(|c| format!("{c} {:.4}", last.stats[*c]))
                .collect();
            println!("  step {}: {}", last.step, cols.join(", "));
        }
    }
    Ok(())
}

fn map(a: MapArgs) -> Result<()> {
    let states: States = a.states.parse()?;
    let covariance: Covariance = a.covariance.parse()?;
    if !(0.0..1.0).contains(&a.train_frac) || a.train_frac <= 0.0 {
        anyhow::bail!("--train-frac must be in (0, 1), got {}", a.train_frac);
    }
    let o = MapOptions {
        states,
        covariance,
        fit: FitOptions {
            n_iter: a.n_iter,
            tol: a.tol,
            ..FitOptions::default()
        },
        restarts: a.restarts,
        seed: a.seed,
        train_frac: a.train_frac,
        metric: a.metric,
        threshold: a.threshold,
        alpha: a.alpha,
        top: 3,
        matrices: selection(a.all_matrices),
    };
    let out = map_runs(&a.runs, &o)?;
    write_map(&a.out, &out)?;
    for n in &out.notes {
        println!("{n}");
    }
    println!(
        "{:>5} {:>11} {:>9} {:>6} {:>8} {:>8} {:>8}",
        "state", "kind", "occupancy", "runs", "dwell", "r", "p"
    );
    for s in &out.map.states {
        println!(
            "{:>5} {:>11} {:>8.1}% {:>6} {:>8.1} {:>8} {:>8}",
            format!("S{}", s.state),
            format!("{:?}", s.kind),
            100.0 * s.occupancy,
            s.runs_visiting,
            s.dwell_checkpoints,
            s.r.map_or("—".into(), |r| format!("{r:.3}")),
            s.p.map_or("—".into(), |p| format!("{p:.4}"))
        );
    }
    println!(
        "{} transitions; report {}",
        out.map.transitions.len(),
        a.out.join("report.html").display()
    );
    Ok(())
}
