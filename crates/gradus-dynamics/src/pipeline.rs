//! `gradus dynamics map` end to end: load each run's statistics, z-score them within the run, fit
//! the HMM on 80% of the runs (a given number of states, or model selection over 1..=max), decode
//! every run and build the map, then write `report.html` and `map.json`.

use std::path::{Path, PathBuf};

use serde::Serialize;

use gradus_tensor::{Error, Result};

use crate::hmm::{Covariance, FitOptions, GaussianHmm, Sequences};
use crate::map::{build_map, RunInput, TrainingMap};
use crate::run::{convergence, load_stats, run_name, Convergence};
use crate::select::{select_states, split_runs, zscore, SelectOptions, SelectionRow};
use crate::stats::{MatrixSelection, COLUMNS};

/// How many states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum States {
    /// Exactly this many.
    Fixed(usize),
    /// The lowest BIC over 1..=max.
    Auto { max: usize },
}

impl std::str::FromStr for States {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        if s == "auto" {
            return Ok(States::Auto { max: 8 });
        }
        match s.parse::<usize>() {
            Ok(k) if k >= 1 => Ok(States::Fixed(k)),
            _ => Err(Error::config(
                "states",
                format!("`{s}`: expected a number of states ≥ 1 or `auto`"),
            )),
        }
    }
}

/// Settings of [`map_runs`].
#[derive(Clone, Debug)]
pub struct MapOptions {
    pub states: States,
    pub covariance: Covariance,
    pub fit: FitOptions,
    pub restarts: usize,
    pub seed: u64,
    /// Share of runs the HMM is fitted on (the rest score it).
    pub train_frac: f64,
    /// Metric and threshold that define the convergence step.
    pub metric: String,
    pub threshold: f64,
    /// Detour significance level.
    pub alpha: f64,
    /// Metrics listed per transition.
    pub top: usize,
    pub matrices: MatrixSelection,
}

impl Default for MapOptions {
    fn default() -> Self {
        Self {
            states: States::Auto { max: 8 },
            covariance: Covariance::Diag,
            fit: FitOptions::default(),
            restarts: 5,
            seed: 0,
            train_frac: 0.8,
            metric: "eval/accuracy".into(),
            threshold: 0.5,
            alpha: 0.05,
            top: 3,
            matrices: MatrixSelection::Blocks,
        }
    }
}

/// Everything `map` produces.
#[derive(Clone, Debug, Serialize)]
pub struct MapOutput {
    pub map: TrainingMap,
    pub selection: Vec<SelectionRow>,
    pub hmm: GaussianHmm,
    pub train_runs: Vec<String>,
    pub heldout_runs: Vec<String>,
    pub notes: Vec<String>,
}

/// Runs the whole analysis over run directories.
pub fn map_runs(runs: &[PathBuf], o: &MapOptions) -> Result<MapOutput> {
    if runs.is_empty() {
        return Err(Error::msg("no run directories given"));
    }
    let d = COLUMNS.len();
    let columns: Vec<String> = COLUMNS.iter().map(|c| c.to_string()).collect();
    let mut inputs = Vec::with_capacity(runs.len());
    let mut notes = Vec::new();
    let mut never = 0;
    for dir in runs {
        let name = run_name(dir);
        let rows =
            load_stats(dir, o.matrices).map_err(|e| Error::msg(format!("run {name}: {e}")))?;
        if rows.len() < 2 {
            return Err(Error::msg(format!("run {name}: {} checkpoint(s) with statistics; a training map needs at least 2 per run", rows.len())));
        }
        let raw: Vec<f64> = rows.iter().flat_map(|r| r.row()).collect();
        let conv = convergence(dir, &o.metric, o.threshold)
            .map_err(|e| Error::msg(format!("run {name}: {e}")))?;
        match conv {
            Convergence::Never { .. } => never += 1,
            Convergence::NoMetric => notes.push(format!(
                "run {name}: no `{}` in metrics.jsonl; left out of the correlations",
                o.metric
            )),
            Convergence::At(_) => {}
        }
        inputs.push(RunInput {
            name,
            steps: rows.iter().map(|r| r.step).collect(),
            z: zscore(&raw, d),
            convergence: conv.step(),
        });
    }
    if never > 0 {
        notes.push(format!("{never} run(s) never reached {} ≥ {}; their last logged step is used as convergence step (a lower bound)", o.metric, o.threshold));
    }
    let names: Vec<String> = inputs.iter().map(|r| r.name.clone()).collect();
    let (train_idx, held_idx) = split_runs(inputs.len(), o.train_frac, o.seed);
    let pick = |idx: &[usize]| -> Result<Sequences> {
        let nm: Vec<String> = idx.iter().map(|&i| names[i].clone()).collect();
        Sequences::new(d, idx.iter().map(|&i| inputs[i].z.clone()).collect(), &nm)
    };
    let train = pick(&train_idx)?;
    let held = if inputs.len() >= 2 {
        Some(pick(&held_idx)?)
    } else {
        None
    };
    let sel = SelectOptions {
        covariance: o.covariance,
        fit: o.fit.clone(),
        restarts: o.restarts,
        seed: o.seed,
    };
    let (selection, hmm) = match o.states {
        States::Auto { max } => select_states(&train, held.as_ref(), max, &sel)?,
        States::Fixed(k) => {
            if train.n_obs() < k {
                return Err(Error::msg(format!(
                    "{k} states asked but the training runs hold only {} checkpoints",
                    train.n_obs()
                )));
            }
            let (m, rep) =
                GaussianHmm::fit_best(&train, k, o.covariance, &o.fit, o.restarts, o.seed)?;
            if !rep.converged {
                notes.push(format!(
                    "the HMM did not converge in {} EM iterations (tol {})",
                    o.fit.n_iter, o.fit.tol
                ));
            }
            (Vec::new(), m)
        }
    };
    notes.push(format!(
        "{} runs: HMM ({:?} covariance, {} states, best of {} restarts) fitted on {} runs, scored on {}; convergence = first step with {} ≥ {}",
        inputs.len(),
        o.covariance,
        hmm.k,
        o.restarts,
        train_idx.len(),
        if held.is_some() { held_idx.len() } else { 0 },
        o.metric,
        o.threshold
    ));
    let map = build_map(&hmm, &inputs, &columns, o.alpha, o.top)?;
    Ok(MapOutput {
        map,
        selection,
        hmm,
        train_runs: train_idx.iter().map(|&i| names[i].clone()).collect(),
        heldout_runs: if held.is_some() {
            held_idx.iter().map(|&i| names[i].clone()).collect()
        } else {
            Vec::new()
        },
        notes,
    })
}

/// Writes `report.html` and `map.json` into `out` (atomically).
pub fn write_map(out: &Path, m: &MapOutput) -> Result<()> {
    let html = crate::report::html(&m.map, &m.selection, m.hmm.k, &m.notes);
    gradus_tensor::io::write_atomic(&out.join("report.html"), html.as_bytes())?;
    let json = serde_json::to_string_pretty(m)
        .map_err(|e| Error::msg(format!("serialising the map: {e}")))?;
    gradus_tensor::io::write_atomic(&out.join("map.json"), json.as_bytes())
}
