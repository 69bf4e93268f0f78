//! Preprocessing and model selection (Hu et al. §3): z-score every column within each run, fit
//! HMMs with 1–8 states on 80% of the runs (best of several restarts), and compare training
//! log-likelihood, held-out log-likelihood on the other 20%, AIC and BIC.
//!
//! The chosen number of states is the one with the lowest BIC on the training runs; the table keeps
//! every criterion so a reader can disagree.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use gradus_tensor::{Error, Result};

use crate::hmm::{Covariance, FitOptions, GaussianHmm, Sequences};

/// Z-scores each column of a row-major (T × d) matrix: (x − mean) / std with the population std;
/// a constant column becomes 0.
pub fn zscore(x: &[f64], d: usize) -> Vec<f64> {
    let t = x.len() / d;
    let mut out = x.to_vec();
    if t == 0 {
        return out;
    }
    for f in 0..d {
        let mean = (0..t).map(|i| x[i * d + f]).sum::<f64>() / t as f64;
        let var = (0..t).map(|i| (x[i * d + f] - mean).powi(2)).sum::<f64>() / t as f64;
        let sd = var.sqrt();
        for i in 0..t {
            out[i * d + f] = if sd > 0.0 && sd.is_finite() {
                (x[i * d + f] - mean) / sd
            } else {
                0.0
            };
        }
    }
    out
}

/// Splits run indices 0..n into (train, held-out) with `frac` of them (rounded, at least 1) for
/// training, shuffled by `seed`; with a single run both sets hold it.
pub fn split_runs(n: usize, frac: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..n).collect();
    if n < 2 {
        return (idx.clone(), idx);
    }
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let n_train = ((n as f64 * frac).round() as usize).clamp(1, n - 1);
    let mut train = idx[..n_train].to_vec();
    let mut held = idx[n_train..].to_vec();
    train.sort();
    held.sort();
    (train, held)
}

/// One row of the model-selection table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SelectionRow {
    pub states: usize,
    pub n_params: usize,
    pub train_loglik: f64,
    /// Log-likelihood of the held-out runs (None without held-out runs).
    pub heldout_loglik: Option<f64>,
    pub aic: f64,
    pub bic: f64,
    /// EM stopped on `tol`, not on `n_iter`.
    pub converged: bool,
}

/// Settings of [`select_states`].
#[derive(Clone, Debug)]
pub struct SelectOptions {
    pub covariance: Covariance,
    pub fit: FitOptions,
    pub restarts: usize,
    pub seed: u64,
}

/// Fits 1..=max_states on `train` and scores `held`; returns the table and the lowest-BIC model.
/// A state count the data cannot support (fewer observations than states) is skipped with a warning.
pub fn select_states(
    train: &Sequences,
    held: Option<&Sequences>,
    max_states: usize,
    o: &SelectOptions,
) -> Result<(Vec<SelectionRow>, GaussianHmm)> {
    let mut rows = Vec::new();
    let mut best: Option<(f64, GaussianHmm)> = None;
    for k in 1..=max_states {
        if train.n_obs() < k {
            tracing::warn!(
                "model selection: {} training observations cannot fit {k} states; stopping at {}",
                train.n_obs(),
                k - 1
            );
            break;
        }
        let (m, rep) = GaussianHmm::fit_best(train, k, o.covariance, &o.fit, o.restarts, o.seed)?;
        if m.n_params() > train.n_obs() * train.d {
            tracing::warn!("model selection: {k} states have {} free parameters for {} training values (degenerate fit)", m.n_params(), train.n_obs() * train.d);
        }
        let ll = m.score(train)?;
        let row = SelectionRow {
            states: k,
            n_params: m.n_params(),
            train_loglik: ll,
            heldout_loglik: held.map(|h| m.score(h)).transpose()?,
            aic: -2.0 * ll + 2.0 * m.n_params() as f64,
            bic: -2.0 * ll + m.n_params() as f64 * (train.n_obs() as f64).ln(),
            converged: rep.converged,
        };
        if best.as_ref().is_none_or(|b| row.bic < b.0) {
            best = Some((row.bic, m));
        }
        rows.push(row);
    }
    let best = best.ok_or_else(|| Error::msg("model selection: no state count could be fitted"))?;
    Ok((rows, best.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zscore_by_hand() {
        // Column 0: 1 2 3 → mean 2, population std √(2/3); column 1 constant → 0.
        let z = zscore(&[1.0, 5.0, 2.0, 5.0, 3.0, 5.0], 2);
        let s = (2.0f64 / 3.0).sqrt();
        let want = [-1.0 / s, 0.0, 0.0, 0.0, 1.0 / s, 0.0];
        for (a, b) in z.iter().zip(want) {
            assert!((a - b).abs() < 1e-12);
        }
    }

    #[test]
    fn split_is_80_20_and_disjoint() {
        let (tr, he) = split_runs(10, 0.8, 3);
        assert_eq!((tr.len(), he.len()), (8, 2));
        assert!(tr.iter().all(|i| !he.contains(i)));
        assert_eq!(split_runs(1, 0.8, 0), (vec![0], vec![0]));
    }
}
