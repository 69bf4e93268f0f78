//! `gradus lab training-maps`: Hu, Chen, Saphra and Cho (2023, RESEARCH §3.8) end to end — a
//! multi-seed sweep of modular addition for each normalisation setting (`--norm`), or of sparse
//! parity with the MLP (`--task sparse-parity`, one sweep), a Gaussian HMM
//! fitted over the runs' checkpoint statistics (model selection over 1–8 states by BIC, fitted on
//! 80% of the runs), the training map, and the detour states (states whose visit correlates with
//! a later convergence step, Pearson r and t-test p) — written into one lab directory:
//!
//! ```text
//! <dir>/<name>/runs/<task>-<norm>-seed<s>/   the sweep's run directories (resumable)
//! <dir>/<name>/<task>-<norm>.toml            the recipe config each seed ran
//! <dir>/<name>/maps/<norm|mlp>/report.html   the training map and state table (map.json too)
//! <dir>/<name>/report.md, summary.json       the comparison table across norms
//! ```
//!
//! Running the same command again skips finished seeds, continues interrupted ones, and refits
//! the maps. `--size default` is a few seeds of a smaller problem that runs in minutes on 2 cores;
//! `--size paper` is the paper's setting (p = 113, 30% of pairs, 40 seeds, 1-layer d 128
//! transformer, AdamW lr 1e-3, weight decay 1.0, batch 256) for a cluster or a long night.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;

use gradus_dynamics::map::StateKind;
use gradus_dynamics::pipeline::{map_runs, write_map, MapOptions, States};
use gradus_model::NormKind;
use gradus_train::recipe::RecipeConfig;

use crate::sweep_cmd::{self, SweepArgs};

/// The presets the lab starts from (also shipped as config files).
const PRESET: &str = include_str!("../../../configs/pretrain/modular-addition.toml");
const PRESET_PARITY: &str = include_str!("../../../configs/pretrain/sparse-parity.toml");

#[derive(Args, Debug, Clone)]
pub struct TrainingMapsArgs {
    /// `modular-addition` (the 1-layer transformer, one sweep per `--norm`) or `sparse-parity`
    /// (the MLP, one sweep; `--norm` does not apply).
    #[arg(long, default_value = "modular-addition")]
    pub task: String,
    /// Seeds per norm (default: 6 at --size default, 40 at --size paper).
    #[arg(long)]
    pub seeds: Option<u64>,
    /// Normalisation settings to compare, comma separated: none, rmsnorm, layernorm.
    #[arg(long, default_value = "layernorm,none")]
    pub norm: String,
    /// `default` (minutes on 2 cores) or `paper`.
    #[arg(long, default_value = "default")]
    pub size: String,
    /// Override the training steps of the size (the warm-up is then at most a tenth of them).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Parent directory of the lab directory.
    #[arg(long, default_value = "runs")]
    pub dir: PathBuf,
    /// The lab directory's name.
    #[arg(long, default_value = "lab-training-maps")]
    pub name: String,
    /// Runs at a time.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// HMM states, or `auto` (lowest BIC over 1..=8).
    #[arg(long, default_value = "auto")]
    pub states: String,
}

/// The settings a `--size` stands for.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LabSize {
    pub seeds: u64,
    /// The modulus p (modular addition) or the number of bits n (sparse parity).
    pub p: u32,
    pub train_fraction: f64,
    pub steps: u64,
    pub eval_every: u64,
    pub dynamics_every: u64,
}

/// Sparse parity at `default` (n 20, k 3, 2,000 steps) or `paper` (n 40, k 3, 40 seeds) size.
pub fn parity_size(size: &str) -> Result<LabSize> {
    match size {
        "default" => Ok(LabSize {
            seeds: 6,
            p: 20,
            train_fraction: 1.0,
            steps: 2000,
            eval_every: 50,
            dynamics_every: 50,
        }),
        "paper" => Ok(LabSize {
            seeds: 40,
            p: 40,
            train_fraction: 1.0,
            steps: 20000,
            eval_every: 100,
            dynamics_every: 200,
        }),
        other => bail!("--size `{other}`: expected `default` or `paper`"),
    }
}

/// The sparse-parity recipe config (`size.p` is the number of bits n; k = 3).
pub fn parity_config(lab_dir: &Path, size: &LabSize) -> Result<RecipeConfig> {
    let mut c: RecipeConfig =
        toml::from_str(PRESET_PARITY).context("the built-in sparse-parity preset")?;
    c.run.dir = lab_dir.join("runs");
    c.run.name = "sparse-parity-mlp".into();
    c.data.parity.n = size.p as usize;
    c.train.steps = size.steps;
    c.train.eval_every = size.eval_every;
    c.train.log_every = size.eval_every.clamp(1, 10);
    c.train.save_every = (size.steps / 4).max(1);
    // A short --steps keeps the preset's warm-up at most a tenth of the run.
    let warmup = c.schedule.warmup_steps().min(size.steps / 10);
    c.schedule.set_warmup_steps(warmup);
    c.dynamics.every = size.dynamics_every;
    c.validate()?;
    Ok(c)
}

/// `default`: p = 59 with half the pairs trained on, 1,500 steps, statistics every 50 — a scale
/// at which the 1-layer model can grok within the run on a laptop; `paper`: Hu et al.'s setting.
pub fn lab_size(size: &str) -> Result<LabSize> {
    match size {
        "default" => Ok(LabSize {
            seeds: 6,
            p: 59,
            train_fraction: 0.5,
            steps: 1500,
            eval_every: 50,
            dynamics_every: 50,
        }),
        "paper" => Ok(LabSize {
            seeds: 40,
            p: 113,
            train_fraction: 0.3,
            steps: 20000,
            eval_every: 100,
            dynamics_every: 200,
        }),
        other => bail!("--size `{other}`: expected `default` or `paper`"),
    }
}

/// Parses `--norm`: a non-empty comma list of distinct norm kinds.
pub fn parse_norms(s: &str) -> Result<Vec<NormKind>> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let k: NormKind = part
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("--norm: {e}"))?;
        if out.contains(&k) {
            bail!("--norm `{s}`: `{}` is listed twice", k.name());
        }
        out.push(k);
    }
    Ok(out)
}

/// The recipe config of one norm's sweep (run names are `<task>-<norm>-seed<s>` after the sweep).
pub fn lab_config(lab_dir: &Path, size: &LabSize, norm: NormKind) -> Result<RecipeConfig> {
    let mut c: RecipeConfig =
        toml::from_str(PRESET).context("the built-in modular-addition preset")?;
    c.run.dir = lab_dir.join("runs");
    c.run.name = format!("modular-addition-{}", norm.name());
    c.model.config.norm = norm;
    c.data.modular.p = size.p;
    c.data.modular.train_fraction = size.train_fraction;
    c.train.steps = size.steps;
    c.train.eval_every = size.eval_every;
    c.train.log_every = size.eval_every.clamp(1, 10);
    c.train.save_every = (size.steps / 4).max(1);
    // A short --steps keeps the preset's warm-up at most a tenth of the run.
    let warmup = c.schedule.warmup_steps().min(size.steps / 10);
    c.schedule.set_warmup_steps(warmup);
    c.dynamics.every = size.dynamics_every;
    c.validate()?;
    Ok(c)
}

/// One row of the comparison table.
#[derive(Clone, Debug, Serialize)]
pub struct NormRow {
    pub norm: String,
    pub runs: usize,
    pub converged: usize,
    pub mean_convergence: Option<f64>,
    pub states: usize,
    /// `S<k> (r, p)` of each detour state.
    pub detours: Vec<String>,
    pub obligatory: usize,
    /// The state most correlated with late convergence, with r and p (even if not significant).
    pub strongest: Option<String>,
    pub report: PathBuf,
}

pub fn run(a: TrainingMapsArgs) -> Result<()> {
    let parity = match a.task.as_str() {
        "modular-addition" => false,
        "sparse-parity" => true,
        other => bail!("--task `{other}`: expected modular-addition or sparse-parity"),
    };
    let mut size = if parity {
        parity_size(&a.size)?
    } else {
        lab_size(&a.size)?
    };
    if let Some(s) = a.seeds {
        if s < 2 {
            bail!("--seeds {s}: a training map needs at least 2 runs");
        }
        size.seeds = s;
    }
    if let Some(s) = a.steps {
        if s == 0 {
            bail!("--steps must be positive");
        }
        size.steps = s;
    }
    let norms = if parity {
        vec![None]
    } else {
        parse_norms(&a.norm)?.into_iter().map(Some).collect()
    };
    let states: States = a.states.parse()?;
    let lab_dir = a.dir.join(&a.name);
    std::fs::create_dir_all(&lab_dir).with_context(|| format!("creating {}", lab_dir.display()))?;
    let t0 = std::time::Instant::now();
    let mut rows = Vec::new();
    for &norm in &norms {
        let cfg = match norm {
            Some(n) => lab_config(&lab_dir, &size, n)?,
            None => parity_config(&lab_dir, &size)?,
        };
        let label = norm.map_or("mlp", |n| n.name());
        let threshold = if parity {
            cfg.data.parity.threshold
        } else {
            cfg.data.modular.threshold
        };
        let cfg_path = lab_dir.join(format!("{}.toml", cfg.run.name));
        gradus_tensor::io::write_atomic(&cfg_path, toml::to_string_pretty(&cfg)?.as_bytes())?;
        eprintln!(
            "== {} {label}: {} seeds × {} steps ==",
            a.task, size.seeds, size.steps
        );
        sweep_cmd::run(SweepArgs {
            config: cfg_path,
            recipe: "pretrain".into(),
            seeds: format!("0..{}", size.seeds),
            jobs: a.jobs,
            sets: Vec::new(),
            metric: Some("eval/accuracy".into()),
            threshold,
        })?;
        let runs: Vec<PathBuf> = (0..size.seeds)
            .map(|s| cfg.run.dir.join(format!("{}-seed{s}", cfg.run.name)))
            .collect();
        let o = MapOptions {
            states,
            metric: "eval/accuracy".into(),
            threshold,
            ..MapOptions::default()
        };
        let out = map_runs(&runs, &o).with_context(|| format!("training map, {label}"))?;
        let map_dir = lab_dir.join("maps").join(label);
        write_map(&map_dir, &out)?;
        let conv: Vec<u64> = out.map.runs.iter().filter_map(|r| r.convergence).collect();
        let converged = runs
            .iter()
            .filter(|r| {
                matches!(
                    gradus_dynamics::run::convergence(r, &o.metric, o.threshold),
                    Ok(gradus_dynamics::run::Convergence::At(_))
                )
            })
            .count();
        let fmt = |s: &gradus_dynamics::map::StateRow| {
            format!(
                "S{} (r {}, p {})",
                s.state,
                s.r.map_or("—".into(), |r| format!("{r:.2}")),
                s.p.map_or("—".into(), |p| format!("{p:.3}"))
            )
        };
        let strongest = out
            .map
            .states
            .iter()
            .filter(|s| s.r.is_some())
            .max_by(|x, y| {
                x.r.unwrap_or(f64::MIN)
                    .partial_cmp(&y.r.unwrap_or(f64::MIN))
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
            .map(fmt);
        rows.push(NormRow {
            norm: label.into(),
            runs: runs.len(),
            converged,
            mean_convergence: (!conv.is_empty())
                .then(|| conv.iter().sum::<u64>() as f64 / conv.len() as f64),
            states: out.hmm.k,
            detours: out
                .map
                .states
                .iter()
                .filter(|s| s.kind == StateKind::Detour)
                .map(fmt)
                .collect(),
            obligatory: out
                .map
                .states
                .iter()
                .filter(|s| s.kind == StateKind::Obligatory)
                .count(),
            strongest,
            report: map_dir.join("report.html"),
        });
    }
    let md = report_md(&size, &rows, &a, t0.elapsed().as_secs_f64());
    gradus_tensor::io::write_atomic(&lab_dir.join("report.md"), md.as_bytes())?;
    let summary = serde_json::json!({"size": size, "norms": rows});
    gradus_tensor::io::write_atomic(
        &lab_dir.join("summary.json"),
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )?;
    println!("{md}");
    println!("lab → {}", lab_dir.display());
    Ok(())
}

/// The paper's finding for sparse parity as this lab compares it.
pub const PAPER_FINDING_PARITY: &str = "Hu et al. (2023): sparse-parity runs vary widely in \
convergence time across seeds, and the map has detour states whose visit predicts slower \
convergence (convergence = first step with eval accuracy ≥ 0.9). [Recalled from the paper; not re-checked \
against its text in this session.]";

/// The paper's finding as this lab compares it (Hu et al. 2023, modular addition).
pub const PAPER_FINDING: &str = "Hu et al. (2023) report that without LayerNorm the modular-addition \
map gains detour states — visited by some seeds only, their visit correlated with later grokking — \
and that LayerNorm makes convergence more reliable across seeds (convergence = first step with eval \
accuracy ≥ 0.5). [Recalled from the paper; not re-checked against its text in this session.]";

/// The comparison table as Markdown.
pub fn report_md(size: &LabSize, rows: &[NormRow], a: &TrainingMapsArgs, seconds: f64) -> String {
    let mut s = String::new();
    let parity = a.task == "sparse-parity";
    s.push_str(&format!("# Training maps: {}\n\n", a.task));
    if parity {
        s.push_str(&format!(
            "`gradus lab training-maps --task {} --size {}` — {} seeds, n = {} bits, k = 3, {} steps, statistics every {} steps; {:.0} s.\n\n",
            a.task, a.size, size.seeds, size.p, size.steps, size.dynamics_every, seconds
        ));
        s.push_str(&format!("Paper: {PAPER_FINDING_PARITY}\n\n"));
    } else {
        s.push_str(&format!(
            "`gradus lab training-maps --task {} --size {} --norm {}` — {} seeds per norm, p = {}, train fraction {}, {} steps, statistics every {} steps; {:.0} s.\n\n",
            a.task, a.size, a.norm, size.seeds, size.p, size.train_fraction, size.steps, size.dynamics_every, seconds
        ));
        s.push_str(&format!("Paper: {PAPER_FINDING}\n\n"));
    }
    s.push_str("| norm | runs | converged | mean convergence step | HMM states (BIC) | obligatory | detour states (r, p) | most late-correlated state |\n");
    s.push_str("|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.norm,
            r.runs,
            r.converged,
            r.mean_convergence.map_or("—".into(), |m| format!("{m:.0}")),
            r.states,
            r.obligatory,
            if r.detours.is_empty() {
                "none".to_string()
            } else {
                r.detours.join(", ")
            },
            r.strongest.clone().unwrap_or_else(|| "—".into())
        ));
    }
    s.push_str(
        "\nRuns that never converge count with their last evaluated step (a lower bound). Maps: ",
    );
    s.push_str(
        &rows
            .iter()
            .map(|r| format!("{} → {}", r.norm, r.report.display()))
            .collect::<Vec<_>>()
            .join("; "),
    );
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_norms_and_configs() {
        assert_eq!(lab_size("paper").unwrap().seeds, 40);
        assert_eq!(lab_size("paper").unwrap().p, 113);
        assert!(lab_size("huge").unwrap_err().to_string().contains("--size"));
        assert_eq!(
            parse_norms("layernorm, none").unwrap(),
            vec![NormKind::LayerNorm, NormKind::None]
        );
        assert!(parse_norms("none,none").is_err());
        let e = parse_norms("batchnorm").unwrap_err().to_string();
        assert!(e.contains("--norm") && e.contains("batchnorm"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let c = lab_config(dir.path(), &lab_size("paper").unwrap(), NormKind::None).unwrap();
        // The paper's model and optimiser come from the preset.
        assert_eq!(c.model.config.hidden_size, 128);
        assert_eq!(c.model.config.num_hidden_layers, 1);
        assert_eq!(c.model.config.num_attention_heads, 4);
        assert_eq!(c.model.config.norm, NormKind::None);
        assert_eq!(c.train.batch_size, 256);
        assert_eq!(c.train.lr, 1e-3);
        assert_eq!(c.optimizer.weight_decay, 1.0);
        assert_eq!(c.data.modular.p, 113);
        assert_eq!(c.run.name, "modular-addition-none");
        let pc = parity_config(dir.path(), &parity_size("paper").unwrap()).unwrap();
        // The paper's sparse-parity MLP: hidden 1000, SGD lr 0.1, 1,000 examples, n 40, k 3.
        assert_eq!(pc.model.mlp.hidden, 1000);
        assert_eq!(pc.train.lr, 0.1);
        assert_eq!(pc.data.parity.train_examples, 1000);
        assert_eq!((pc.data.parity.n, pc.data.parity.k), (40, 3));
        assert_eq!(pc.data.source, "sparse_parity");
    }
}
