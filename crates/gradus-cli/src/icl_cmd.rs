//! `gradus lab icl-emergence`, `icl-transience`, `boolean-icl` and `sas`: argument handling; the
//! work is in `gradus_train::icl` and `gradus_train::sas`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use gradus_train::icl::emergence::{self, EmergenceOptions, LabSize};
use gradus_train::icl::transience::{self, TransienceOptions};

/// Scale of an ICL lab.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SizeArg {
    /// Seconds (smoke test).
    Smoke,
    /// Minutes on 2 CPU cores.
    Default,
    /// The papers' scale (hours on a CPU; meant for a bigger machine).
    Paper,
}

impl From<SizeArg> for LabSize {
    fn from(s: SizeArg) -> Self {
        match s {
            SizeArg::Smoke => LabSize::Smoke,
            SizeArg::Default => LabSize::Default,
            SizeArg::Paper => LabSize::Paper,
        }
    }
}

/// Shared options of the ICL labs.
#[derive(Args, Debug)]
pub struct IclCommon {
    /// The lab's runs go under DIR/<lab>/.
    #[arg(long, default_value = "runs")]
    pub dir: PathBuf,
    #[arg(long, value_enum, default_value = "default")]
    pub size: SizeArg,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Training steps per run (default: the size's).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Continue the lab's runs from their latest checkpoints (finished runs are only summarised).
    #[arg(long)]
    pub resume: bool,
    /// Move earlier runs aside (never deleted) instead of refusing to start.
    #[arg(long)]
    pub overwrite: bool,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
    /// Override a field of every run's config after the size preset (`--set data.n_classes=1024`,
    /// `--set train.lr=3e-4`), as the recipes' `--set`; repeatable. The lab keeps its own run
    /// names and the grid's values (B and α; a Boolean run's class; a transience arm's L2).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

/// The keys of `--set key=value` overrides.
fn set_keys(sets: &[String]) -> Vec<String> {
    sets.iter()
        .filter_map(|s| s.split_once('=').map(|(k, _)| k.trim().to_string()))
        .collect()
}

/// `--set` overrides as the labs' config hook (errors carry the overrides).
fn adjuster<T: serde::Serialize + serde::de::DeserializeOwned>(
    sets: Vec<String>,
) -> impl Fn(T) -> gradus_tensor::Result<T> {
    move |c| {
        crate::config::resolve_from(c, &sets)
            .map_err(|e| gradus_tensor::Error::msg(format!("{e:#}")))
    }
}

/// `gradus lab icl-emergence`.
#[derive(Args, Debug)]
pub struct IclEmergenceArgs {
    #[command(flatten)]
    pub common: IclCommon,
    /// Burstiness values of the grid (0 = i.i.d. contexts), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub burstiness: Option<Vec<usize>>,
    /// Zipf exponents of the grid, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub alphas: Option<Vec<f64>>,
}

/// `gradus lab icl-transience`.
#[derive(Args, Debug)]
pub struct IclTransienceArgs {
    #[command(flatten)]
    pub common: IclCommon,
    /// L2 penalty λ of the regularised run (the other has none).
    #[arg(long, default_value_t = 1e-4)]
    pub l2: f64,
}

pub fn emergence(a: IclEmergenceArgs) -> Result<()> {
    let c = a.common;
    let mut o = EmergenceOptions::new(c.dir, c.size.into());
    o.seed = c.seed;
    o.steps = c.steps;
    o.resume = c.resume;
    o.overwrite = c.overwrite;
    o.progress = !c.quiet;
    o.set_keys = set_keys(&c.sets);
    if let Some(b) = a.burstiness {
        o.burstiness = b;
    }
    if let Some(al) = a.alphas {
        o.alphas = al;
    }
    let out = emergence::run_with(&o, &adjuster(c.sets))?;
    print!("{}", out.table);
    println!("report: {}", out.report.display());
    Ok(())
}

pub fn transience(a: IclTransienceArgs) -> Result<()> {
    let c = a.common;
    if !(a.l2.is_finite() && a.l2 > 0.0) {
        anyhow::bail!("--l2 must be > 0, got {}", a.l2);
    }
    let mut o = TransienceOptions::new(c.dir, c.size.into());
    o.seed = c.seed;
    o.steps = c.steps;
    o.resume = c.resume;
    o.overwrite = c.overwrite;
    o.progress = !c.quiet;
    o.set_keys = set_keys(&c.sets);
    o.l2 = a.l2;
    let out = transience::run_with(&o, &adjuster(c.sets))?;
    print!("{}", out.table);
    println!("report: {}", out.report.display());
    Ok(())
}

/// `gradus lab boolean-icl`.
#[derive(Args, Debug)]
pub struct BooleanIclArgs {
    #[command(flatten)]
    pub common: IclCommon,
    /// Function classes, comma-separated: conjunction, disjunction, majority, int_halfspace,
    /// dnf_<terms>, sparse_parity_<k> (default: all six of the size).
    #[arg(long, value_delimiter = ',')]
    pub classes: Option<Vec<String>>,
}

fn parse_class(s: &str) -> Result<gradus_tasks::boolean::BoolClass> {
    use gradus_tasks::boolean::BoolClass;
    let num = |p: &str| -> Result<usize> {
        s[p.len()..]
            .parse()
            .map_err(|_| anyhow::anyhow!("--classes: `{s}`: expected {p}<number>"))
    };
    Ok(match s {
        "conjunction" => BoolClass::Conjunction,
        "disjunction" => BoolClass::Disjunction,
        "majority" => BoolClass::Majority,
        "int_halfspace" => BoolClass::IntHalfspace,
        _ if s.starts_with("dnf_") => BoolClass::Dnf { terms: num("dnf_")? },
        _ if s.starts_with("sparse_parity_") => BoolClass::SparseParity {
            k: num("sparse_parity_")?,
        },
        _ => anyhow::bail!(
            "--classes: unknown class `{s}` (conjunction, disjunction, majority, int_halfspace, dnf_<terms>, sparse_parity_<k>)"
        ),
    })
}

pub fn boolean(a: BooleanIclArgs) -> Result<()> {
    use gradus_train::icl::boolean::{run_with, BooleanOptions};
    let c = a.common;
    let mut o = BooleanOptions::new(c.dir, c.size.into());
    o.seed = c.seed;
    o.steps = c.steps;
    o.resume = c.resume;
    o.overwrite = c.overwrite;
    o.progress = !c.quiet;
    o.set_keys = set_keys(&c.sets);
    if let Some(cl) = a.classes {
        o.classes = cl
            .iter()
            .map(|s| parse_class(s.trim()))
            .collect::<Result<_>>()?;
    }
    let out = run_with(&o, &adjuster(c.sets))?;
    print!("{}", out.table);
    println!("report: {}", out.report.display());
    Ok(())
}

/// `gradus lab sas`.
#[derive(Args, Debug)]
pub struct SasArgs {
    #[command(flatten)]
    pub common: IclCommon,
    /// λ of the SAS regulariser in the suppressed arms (> 0 suppresses, < 0 promotes).
    #[arg(long, default_value_t = 0.01, allow_hyphen_values = true)]
    pub sas_lambda: f64,
    /// Step at which the suppress-then-release arm stops suppressing (default: a fifth of the run).
    #[arg(long)]
    pub release_step: Option<u64>,
}

pub fn sas(a: SasArgs) -> Result<()> {
    use gradus_train::sas::lab::{run, SasLabOptions};
    let c = a.common;
    if !c.sets.is_empty() {
        anyhow::bail!(
            "lab sas: --set is not supported (use --sas-lambda, --release-step, --steps, --size)"
        );
    }
    let mut o = SasLabOptions::new(c.dir, c.size.into());
    o.seed = c.seed;
    o.steps = c.steps;
    o.resume = c.resume;
    o.overwrite = c.overwrite;
    o.progress = !c.quiet;
    o.sas_lambda = a.sas_lambda;
    o.release_step = a.release_step;
    let out = run(&o)?;
    print!("{}", out.table);
    println!("results: {}", out.results.display());
    println!("report: {}", out.report.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gradus_train::icl::IclRunConfig;

    #[test]
    fn set_overrides_reach_a_lab_run_config() {
        let f =
            adjuster::<IclRunConfig>(vec!["data.n_classes=1024".into(), "train.lr=3e-4".into()]);
        let c = f(IclRunConfig::default()).unwrap();
        assert_eq!((c.data.n_classes, c.train.lr), (1024, 3e-4));
        // Everything else is the default's.
        assert_eq!(c.model, IclRunConfig::default().model);
        // A mistyped key is an error naming it, with a suggestion.
        let e = adjuster::<IclRunConfig>(vec!["data.n_clases=8".into()])(IclRunConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("n_clases") && e.contains("n_classes"), "{e}");
    }
}
