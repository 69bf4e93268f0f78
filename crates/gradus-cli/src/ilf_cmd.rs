//! `gradus lab ilf`: argument handling and config resolution; the work is in
//! `gradus_train::ilf`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use gradus_train::ilf::{run, IlfConfig, IlfSize};

use crate::config;

/// Scale of the ILF lab.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum IlfSizeArg {
    /// Seconds: checks the pipeline, learns nothing.
    Smoke,
    /// Minutes on 2 CPU cores (release build).
    Default,
}

/// `gradus lab ilf`.
#[derive(Args, Debug)]
pub struct IlfArgs {
    /// The base settings: precedence is --size < --config file < --set.
    #[arg(long, value_enum, default_value = "default")]
    pub size: IlfSizeArg,
    /// A TOML config (configs/ilf/default.toml); its fields override the size's.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override a config value: --set rounds.rounds=2 (value parsed as TOML). Repeatable.
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

/// The resolved config: the size's, then the file's fields, then `--set`.
pub fn resolve(a: &IlfArgs) -> Result<IlfConfig> {
    let size = match a.size {
        IlfSizeArg::Smoke => IlfSize::Smoke,
        IlfSizeArg::Default => IlfSize::Default,
    };
    let base = config::overlay_file(IlfConfig::sized(size), a.config.as_deref())?;
    config::resolve_from(base, &a.sets)
}

pub fn ilf(a: IlfArgs) -> Result<()> {
    let cfg = resolve(&a)?;
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
