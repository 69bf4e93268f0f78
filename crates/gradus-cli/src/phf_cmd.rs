//! `gradus lab phf`: the six pretraining-with-human-feedback objectives on a synthetic code corpus
//! (Korbak et al. 2023; see `gradus_train::lab_phf`).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use gradus_train::lab_phf::{run, PhfLabOptions};
use gradus_train::phf::PhfKind;

/// `gradus lab phf`.
#[derive(Args, Debug)]
pub struct PhfLabArgs {
    /// Parent directory: the lab writes `<dir>/lab-phf/` (one run per objective, report.html,
    /// results.json).
    #[arg(long, default_value = "runs")]
    pub dir: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// A few steps and samples only (smoke test).
    #[arg(long)]
    pub fast: bool,
    /// Optimiser steps per objective (default 300).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Unconditional samples per objective (default 128).
    #[arg(long)]
    pub samples: Option<usize>,
    /// Training documents (default 3000).
    #[arg(long)]
    pub docs: Option<usize>,
    /// Sampling temperature (the paper's 0.7; top-p 0.9).
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f64,
    /// Objectives, comma-separated (default: mle,filtering,conditional,unlikelihood,rwr,awr).
    #[arg(long, value_delimiter = ',')]
    pub kinds: Option<Vec<String>>,
    /// Move earlier lab runs aside (never deleted) instead of refusing to start.
    #[arg(long)]
    pub overwrite: bool,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

pub fn lab(a: PhfLabArgs) -> Result<()> {
    let kinds = match a.kinds {
        None => PhfKind::ALL.to_vec(),
        Some(ks) => ks
            .iter()
            .map(|k| {
                PhfKind::ALL
                    .into_iter()
                    .find(|x| x.name() == k.trim())
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "--kinds: unknown objective `{k}` (mle, filtering, conditional, unlikelihood, rwr, awr)"
                        )
                    })
            })
            .collect::<Result<Vec<_>>>()?,
    };
    let out = run(&PhfLabOptions {
        dir: a.dir,
        seed: a.seed,
        fast: a.fast,
        steps: a.steps,
        samples: a.samples,
        docs: a.docs,
        temperature: a.temperature,
        kinds,
        progress: !a.quiet,
        overwrite: a.overwrite,
    })?;
    println!("{}", out.summary);
    Ok(())
}
