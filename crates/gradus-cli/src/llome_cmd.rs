//! `gradus lab llome`: argument handling and config resolution; the work is in
//! `gradus_train::llome`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use gradus_train::llome::{run, LlomeConfig};

use crate::config;

/// `gradus lab llome`.
#[derive(Args, Debug)]
pub struct LlomeArgs {
    /// A TOML config (configs/lab/llome.toml is the default; llome-paper.toml the paper's scale).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override a config value: --set budget.per_round=100 (value parsed as TOML). Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Print the resolved config and exit.
    #[arg(long)]
    pub show_config: bool,
    /// Continue the lab: finished stages are read back, interrupted training runs resume.
    #[arg(long, conflicts_with = "overwrite")]
    pub resume: bool,
    /// Move an earlier lab directory aside (never deleted) instead of refusing to start.
    #[arg(long)]
    pub overwrite: bool,
}

pub fn llome(a: LlomeArgs) -> Result<()> {
    let cfg: LlomeConfig = config::resolve(a.config.as_deref(), &a.sets)?;
    if a.show_config {
        print!("{}", config::to_toml(&cfg)?);
        return Ok(());
    }
    cfg.validate()?;
    let start = config::start(a.resume, a.overwrite, &a.sets);
    let out = run(&cfg, start)?;
    print!("{}", out.table);
    println!("report: {}", out.report.display());
    Ok(())
}
