//! `gradus lab evoprompting`: argument handling and config resolution; the work is in
//! `gradus_train::evoprompting`.
//!
//! Precedence: the `--size` preset < `--config` file (its keys laid over the preset) < `--set`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use gradus_train::evoprompting::{run, EvoConfig, EvoSize};

use crate::config;

/// Scale of the lab.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum EvoSizeArg {
    /// Seconds (smoke test): one seed, two tiny rounds, a tiny model.
    Smoke,
    /// Minutes on 2 CPU cores (configs/evoprompting/default.toml).
    Default,
}

/// `gradus lab evoprompting`.
#[derive(Args, Debug)]
pub struct EvopromptingArgs {
    /// A TOML config laid over the --size preset (configs/evoprompting/default.toml is the default).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The preset the config and --set start from.
    #[arg(long, value_enum, default_value = "default")]
    pub size: EvoSizeArg,
    /// Override a config value: --set budget.evaluations=400 (value parsed as TOML). Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Print the resolved config and exit.
    #[arg(long)]
    pub show_config: bool,
    /// Continue the lab: finished rounds are read back, interrupted training runs resume.
    #[arg(long, conflicts_with = "overwrite")]
    pub resume: bool,
    /// Move an earlier lab directory aside (never deleted) instead of refusing to start.
    #[arg(long)]
    pub overwrite: bool,
}

pub fn evoprompting(a: EvopromptingArgs) -> Result<()> {
    let size = match a.size {
        EvoSizeArg::Smoke => EvoSize::Smoke,
        EvoSizeArg::Default => EvoSize::Default,
    };
    let base = config::overlay_file(EvoConfig::preset(size), a.config.as_deref())?;
    let cfg: EvoConfig = config::resolve_from(base, &a.sets)?;
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
