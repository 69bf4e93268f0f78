//! `gradus lab rlvr`: reinforcement learning from verifiable rewards on top of the quickstart
//! (Tulu 3's RLVR, Lambert et al. 2024; RESEARCH §3.13). From the quickstart's SFT model (made
//! first when none is given), GRPO with the built-in task's own checker as the only reward, on
//! arithmetic and program-output prompts; the SFT and the RL model are then scored on the
//! quickstart's held-out problems with the evaluation harness (greedy decoding, exact match,
//! per-kind accuracy with Wilson 95% intervals). The GRPO settings are `configs/rl/tiny.toml`'s.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use gradus_data::tokenizer::Tokenizer;
use gradus_model::hf::load_decoder;
use gradus_tensor::{Device, Error, Result};

use crate::quickstart::{self, KindAccuracy, QuickstartOptions, QuickstartSize};
use crate::report::Section;
use crate::rl::RlConfig;

/// The GRPO run of the lab (its `init_from` is replaced by the SFT model).
pub const RL_CONFIG: &str = include_str!("../../../configs/rl/tiny.toml");

#[derive(Clone, Debug)]
pub struct RlvrOptions {
    /// Where the runs go (`quickstart-*` when the SFT model is made here, and `rlvr`).
    pub dir: PathBuf,
    /// An SFT checkpoint (or run directory) to start from; None: run the quickstart first.
    pub sft: Option<PathBuf>,
    /// GRPO optimiser steps.
    pub steps: u64,
    pub seed: u64,
    pub progress: bool,
    /// Move earlier runs in `dir` aside instead of refusing to start.
    pub overwrite: bool,
    /// The GRPO config to start from (None: [`RL_CONFIG`]); its run directory, seed, init and
    /// steps are the lab's.
    pub rl: Option<RlConfig>,
}

#[derive(Clone, Debug)]
pub struct RlvrOutcome {
    pub sft_checkpoint: PathBuf,
    pub rl_dir: PathBuf,
    /// Held-out accuracy per kind (the last entry is "all") of the SFT and the RL model.
    pub before: Vec<KindAccuracy>,
    pub after: Vec<KindAccuracy>,
    pub report: PathBuf,
    pub summary: String,
}

/// A checkpoint directory, or a run directory's latest checkpoint.
fn checkpoint_of(p: &Path) -> Result<PathBuf> {
    if p.join("config.json").is_file() {
        return Ok(p.to_path_buf());
    }
    crate::checkpoint::latest_checkpoint(p)?.ok_or_else(|| {
        Error::format(
            p,
            "neither a checkpoint (config.json) nor a run with checkpoints/step-N",
        )
    })
}

/// [`RL_CONFIG`] parsed.
pub fn default_rl_config() -> Result<RlConfig> {
    toml::from_str(RL_CONFIG).map_err(|e| Error::format("configs/rl/tiny.toml", e.to_string()))
}

/// The lab's GRPO config.
pub fn rl_config(o: &RlvrOptions, sft: &Path) -> Result<RlConfig> {
    let mut cfg = match &o.rl {
        Some(c) => c.clone(),
        None => default_rl_config()?,
    };
    cfg.run.dir = o.dir.clone();
    cfg.run.name = "rlvr".into();
    cfg.run.seed = o.seed;
    cfg.model.init_from = Some(sft.to_path_buf());
    cfg.train.steps = o.steps;
    cfg.train.save_every = o.steps;
    cfg.train.progress = o.progress;
    Ok(cfg)
}

pub fn run(o: &RlvrOptions) -> Result<RlvrOutcome> {
    let start = if o.overwrite {
        crate::rundir::Start::Overwrite
    } else {
        crate::rundir::Start::New
    };
    // 1. The SFT model.
    let sft = match &o.sft {
        Some(p) => checkpoint_of(p)?,
        None => {
            eprintln!("[lab rlvr] no --sft given: running the quickstart first");
            let q = quickstart::run(&QuickstartOptions {
                dir: o.dir.clone(),
                size: QuickstartSize::Full,
                seed: o.seed,
                progress: o.progress,
                overwrite: o.overwrite,
                overrides: vec![],
            })?;
            checkpoint_of(&q.sft_dir)?
        }
    };
    // 2. Held-out accuracy before RL (the quickstart's evaluation problems).
    let plan = quickstart::plan(QuickstartSize::Full);
    let tasks = quickstart::eval_tasks(&plan, o.seed + 1)?;
    let tok = Tokenizer::from_dir(&sft)?;
    eprintln!("[lab rlvr] evaluating the SFT model…");
    let (before, _) = quickstart::measure(&load_decoder(&sft, &Device::Cpu)?, &tok, &sft, &tasks)?;
    // 3. GRPO.
    eprintln!("[lab rlvr] GRPO for {} steps…", o.steps);
    let cfg = rl_config(o, &sft)?;
    let s = crate::rl::run(&cfg, start)?;
    let rl_ck = s
        .fit
        .last_checkpoint
        .clone()
        .or(crate::checkpoint::latest_checkpoint(&s.fit.run_dir)?)
        .ok_or_else(|| Error::msg("the RL run wrote no checkpoint"))?;
    // 4. After.
    eprintln!("[lab rlvr] evaluating the RL model…");
    let (after, samples) =
        quickstart::measure(&load_decoder(&rl_ck, &Device::Cpu)?, &tok, &rl_ck, &tasks)?;
    // 5. Report.
    let mut table = vec![(
        "held-out problems".to_string(),
        after.last().map_or(0, |k| k.n).to_string(),
    )];
    for (when, k) in [("SFT", &before), ("SFT + GRPO", &after)] {
        table.extend(
            quickstart::breakdown_lines(k)
                .into_iter()
                .map(|(kind, v)| (format!("{when}, {kind}"), v)),
        );
    }
    let sections = vec![
        Section::table("Held-out accuracy (greedy, exact match)", table),
        Section::plot(
            "Reward (task checker) per generation batch",
            &["reward/mean"],
        ),
        Section::plot("Completion length", &["completions/mean_length"]),
        Section::plot("Entropy of the sampling policy (nats)", &["entropy"]),
        Section::pre("Samples after RL", &quickstart::show(&samples, 12)),
        Section::table(
            "Runs",
            vec![
                ("SFT checkpoint".into(), sft.display().to_string()),
                ("RL run".into(), s.fit.run_dir.display().to_string()),
                ("GRPO steps".into(), s.fit.steps.to_string()),
            ],
        ),
    ];
    let rows = crate::metrics::read_metrics(&s.fit.run_dir.join(crate::metrics::METRICS_FILE))
        .unwrap_or_default();
    let html = crate::report::render_report("gradus lab rlvr: SFT → GRPO", &sections, &rows);
    let report = s.fit.run_dir.join("rlvr.html");
    gradus_tensor::io::write_atomic(&report, html.as_bytes())?;
    let json = serde_json::json!({
        "sft_checkpoint": sft, "rl_checkpoint": rl_ck, "steps": s.fit.steps,
        "before": before.iter().map(|k| serde_json::json!({"kind": k.kind, "correct": k.correct, "n": k.n, "ci95": [k.interval.0, k.interval.1]})).collect::<Vec<_>>(),
        "after": after.iter().map(|k| serde_json::json!({"kind": k.kind, "correct": k.correct, "n": k.n, "ci95": [k.interval.0, k.interval.1]})).collect::<Vec<_>>(),
    });
    gradus_tensor::io::write_atomic(
        &s.fit.run_dir.join("rlvr.json"),
        serde_json::to_string_pretty(&json)
            .map_err(|e| Error::msg(e.to_string()))?
            .as_bytes(),
    )?;
    let mut summary = String::from("held-out accuracy      SFT                      SFT + GRPO\n");
    for (b, a) in before.iter().zip(&after) {
        let _ = writeln!(
            summary,
            "{:<10} {:>5.1}% ({:>3}/{:<3}) [{:.1}, {:.1}]   {:>5.1}% ({:>3}/{:<3}) [{:.1}, {:.1}]",
            b.kind,
            100.0 * b.accuracy(),
            b.correct,
            b.n,
            100.0 * b.interval.0,
            100.0 * b.interval.1,
            100.0 * a.accuracy(),
            a.correct,
            a.n,
            100.0 * a.interval.0,
            100.0 * a.interval.1
        );
    }
    let _ = writeln!(summary, "report: {}", report.display());
    Ok(RlvrOutcome {
        sft_checkpoint: sft,
        rl_dir: s.fit.run_dir,
        before,
        after,
        report,
        summary,
    })
}
