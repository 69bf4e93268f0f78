//! The training map (Hu et al. §3–4): Viterbi-decode every run, keep the transitions that were
//! observed, and describe the states.
//!
//! - Transition i → j (i ≠ j) has a count (how often it was taken over all runs) and its most
//!   important metrics: the largest |μ_j − μ_i| of the HMM's means, which live in z-scored units.
//! - Per state: occupancy (share of all checkpoints), visit frequency (share of runs that visit it),
//!   mean dwell time (length of a stay, in checkpoints and in training steps), and the Pearson
//!   correlation of "the run visited it" (0/1) with the run's convergence step, with its t-test p.
//! - A state every run visits is **obligatory** (r undefined); a state whose visit correlates
//!   positively and significantly (p < α) with a later convergence is a **detour**.

use serde::{Deserialize, Serialize};

use gradus_tensor::{Error, Result};

use crate::hmm::GaussianHmm;
use crate::stattest::{pearson, pearson_p};

/// One run's input to the map: its checkpoint steps, z-scored statistics and convergence step.
#[derive(Clone, Debug)]
pub struct RunInput {
    pub name: String,
    pub steps: Vec<u64>,
    /// T × d, z-scored within the run.
    pub z: Vec<f64>,
    /// Convergence step (None: unknown, the run is left out of correlations).
    pub convergence: Option<u64>,
}

/// How a state reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateKind {
    /// Visited by every run.
    Obligatory,
    /// Visiting it correlates positively and significantly with slower convergence.
    Detour,
    /// Visited by some runs, no significant slowdown.
    Optional,
    /// Visited by no run.
    Unvisited,
}

/// One row of the per-state table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateRow {
    pub state: usize,
    pub kind: StateKind,
    /// Share of all decoded checkpoints in this state.
    pub occupancy: f64,
    /// Share of runs that visit it.
    pub visit_frequency: f64,
    pub runs_visiting: usize,
    /// Mean length of a stay, in checkpoints.
    pub dwell_checkpoints: f64,
    /// Mean length of a stay, in training steps (checkpoint spacing summed; a stay at the last
    /// checkpoint counts the spacing before it).
    pub dwell_steps: f64,
    /// Mean position of its checkpoints in the runs, 0 = first checkpoint, 1 = last.
    pub mean_position: f64,
    /// Pearson r of visited (0/1) with convergence step.
    pub r: Option<f64>,
    /// Two-sided p value of r.
    pub p: Option<f64>,
    /// Mean convergence step of runs that visit / skip it.
    pub mean_convergence_visited: Option<f64>,
    pub mean_convergence_skipped: Option<f64>,
}

/// An observed transition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub from: usize,
    pub to: usize,
    /// Times taken over all runs.
    pub count: usize,
    /// Runs that take it at least once.
    pub runs: usize,
    /// The metrics whose z-scored means shift most, (name, μ_to − μ_from), largest |shift| first.
    pub top_shifts: Vec<(String, f64)>,
}

/// A decoded run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecodedRun {
    pub name: String,
    pub steps: Vec<u64>,
    pub states: Vec<usize>,
    pub convergence: Option<u64>,
}

/// The whole map.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingMap {
    pub columns: Vec<String>,
    pub alpha: f64,
    pub runs: Vec<DecodedRun>,
    pub states: Vec<StateRow>,
    pub transitions: Vec<Transition>,
}

/// Decodes the runs with `hmm` and builds the map. `top` metrics are kept per transition; `alpha`
/// is the detour significance level.
pub fn build_map(
    hmm: &GaussianHmm,
    runs: &[RunInput],
    columns: &[String],
    alpha: f64,
    top: usize,
) -> Result<TrainingMap> {
    if columns.len() != hmm.d {
        return Err(Error::msg(format!(
            "{} column names for an HMM over {} features",
            columns.len(),
            hmm.d
        )));
    }
    let mut decoded = Vec::with_capacity(runs.len());
    for r in runs {
        if r.z.len() != r.steps.len() * hmm.d {
            return Err(Error::msg(format!(
                "run {}: {} steps but {} values for {} features",
                r.name,
                r.steps.len(),
                r.z.len(),
                hmm.d
            )));
        }
        let (_, states) = hmm
            .viterbi(&r.z)
            .map_err(|e| Error::msg(format!("run {}: {e}", r.name)))?;
        decoded.push(DecodedRun {
            name: r.name.clone(),
            steps: r.steps.clone(),
            states,
            convergence: r.convergence,
        });
    }
    Ok(describe(&decoded, hmm, columns, alpha, top))
}

/// Builds the tables from already decoded runs (the part of [`build_map`] after Viterbi).
pub fn describe(
    decoded: &[DecodedRun],
    hmm: &GaussianHmm,
    columns: &[String],
    alpha: f64,
    top: usize,
) -> TrainingMap {
    let k = hmm.k;
    let d = hmm.d;
    let mut counts = vec![0usize; k * k];
    let mut run_counts = vec![0usize; k * k];
    let mut occupancy = vec![0usize; k];
    let mut position = vec![0.0f64; k];
    let mut stays: Vec<Vec<(usize, f64)>> = vec![Vec::new(); k];
    let mut visited = vec![vec![false; decoded.len()]; k];
    let total: usize = decoded.iter().map(|r| r.states.len()).sum();
    for (ri, r) in decoded.iter().enumerate() {
        let t_len = r.states.len();
        let mut seen = vec![false; k * k];
        let spacing = |t: usize| -> f64 {
            if t + 1 < t_len {
                (r.steps[t + 1] - r.steps[t]) as f64
            } else if t > 0 {
                (r.steps[t] - r.steps[t - 1]) as f64
            } else {
                0.0
            }
        };
        let mut t = 0;
        while t < t_len {
            let s = r.states[t];
            let start = t;
            let mut steps = 0.0;
            while t < t_len && r.states[t] == s {
                occupancy[s] += 1;
                position[s] += if t_len > 1 {
                    t as f64 / (t_len - 1) as f64
                } else {
                    0.0
                };
                steps += spacing(t);
                t += 1;
            }
            stays[s].push((t - start, steps));
            visited[s][ri] = true;
            if t < t_len {
                let nx = r.states[t];
                counts[s * k + nx] += 1;
                if !seen[s * k + nx] {
                    seen[s * k + nx] = true;
                    run_counts[s * k + nx] += 1;
                }
            }
        }
    }
    // Correlations use the runs with a known convergence step.
    let with_conv: Vec<usize> = (0..decoded.len())
        .filter(|&i| decoded[i].convergence.is_some())
        .collect();
    let conv: Vec<f64> = with_conv
        .iter()
        .map(|&i| decoded[i].convergence.unwrap_or(0) as f64)
        .collect();
    let mut states = Vec::with_capacity(k);
    for s in 0..k {
        let runs_visiting = visited[s].iter().filter(|&&v| v).count();
        let x: Vec<f64> = with_conv
            .iter()
            .map(|&i| if visited[s][i] { 1.0 } else { 0.0 })
            .collect();
        let r = pearson(&x, &conv);
        let p = r.and_then(|r| pearson_p(r, x.len()));
        let mean_of = |want: f64| {
            let v: Vec<f64> = x
                .iter()
                .zip(&conv)
                .filter(|(a, _)| **a == want)
                .map(|(_, c)| *c)
                .collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        };
        let kind = if runs_visiting == 0 {
            StateKind::Unvisited
        } else if runs_visiting == decoded.len() {
            StateKind::Obligatory
        } else if matches!((r, p), (Some(r), Some(p)) if r > 0.0 && p < alpha) {
            StateKind::Detour
        } else {
            StateKind::Optional
        };
        let n_stays = stays[s].len().max(1) as f64;
        states.push(StateRow {
            state: s,
            kind,
            occupancy: if total > 0 {
                occupancy[s] as f64 / total as f64
            } else {
                0.0
            },
            visit_frequency: if decoded.is_empty() {
                0.0
            } else {
                runs_visiting as f64 / decoded.len() as f64
            },
            runs_visiting,
            dwell_checkpoints: stays[s].iter().map(|x| x.0 as f64).sum::<f64>() / n_stays,
            dwell_steps: stays[s].iter().map(|x| x.1).sum::<f64>() / n_stays,
            mean_position: if occupancy[s] > 0 {
                position[s] / occupancy[s] as f64
            } else {
                0.0
            },
            r,
            p,
            mean_convergence_visited: mean_of(1.0),
            mean_convergence_skipped: mean_of(0.0),
        });
    }
    let mut transitions = Vec::new();
    for i in 0..k {
        for j in 0..k {
            if i == j || counts[i * k + j] == 0 {
                continue;
            }
            let mut shifts: Vec<(String, f64)> = (0..d)
                .map(|f| {
                    (
                        columns[f].clone(),
                        hmm.means[j * d + f] - hmm.means[i * d + f],
                    )
                })
                .collect();
            shifts.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
            shifts.truncate(top);
            transitions.push(Transition {
                from: i,
                to: j,
                count: counts[i * k + j],
                runs: run_counts[i * k + j],
                top_shifts: shifts,
            });
        }
    }
    transitions.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then(a.from.cmp(&b.from))
            .then(a.to.cmp(&b.to))
    });
    TrainingMap {
        columns: columns.to_vec(),
        alpha,
        runs: decoded.to_vec(),
        states,
        transitions,
    }
}
