//! Gaussian hidden Markov model: Baum–Welch, Viterbi, scores, AIC/BIC.
//!
//! The update rules are hmmlearn's `GaussianHMM` (0.3, `implementation="log"`), so a fit from the
//! same initialisation reproduces its log-likelihood trajectory and parameters (parity fixture:
//! `tests/fixtures/hmmlearn`). The forward–backward pass itself is Rabiner's scaled one, not the
//! log-space one: each time step's emission densities are divided by their largest (one `exp` per
//! state and step instead of one per pair of states), the forward variables are normalised every
//! step with the scale `s_t`, and log L = Σ_t (ln s_t + max_c log b_t(c)). The posteriors are the
//! same quantities (γ normalised per step, as hmmlearn's); sequences are processed in parallel and
//! their statistics added in sequence order, so results do not depend on the thread count. With posteriors γ_t(c) and summed pairwise posteriors ξ(i, j):
//! - start: π ∝ max(π_prior − 1 + γ_1, 0); rows of A ∝ max(A_prior − 1 + Σ_t ξ_t, 0) (Dirichlet MAP;
//!   a zero stays zero; priors default to 1, i.e. maximum likelihood);
//! - means: μ_c = Σ_t γ_t(c) x_t / Σ_t γ_t(c);
//! - diagonal covariances: (prior + Σγx² − 2μΣγx + μ²Σγ) / max(max(w − 1, 0) + Σγ, 1e-5);
//! - full covariances: (prior + Σγxxᵀ − (Σγx)μᵀ − μ(Σγx)ᵀ + μμᵀΣγ) / (max(w − d, 0) + Σγ), where the
//!   scalar prior (1e-2) is added to every entry, as hmmlearn does;
//! - `min_covar` is added to the diagonal of the data covariance that initialises every state.
//!
//! The reported log-likelihood of iteration i is that of the parameters before its M-step (hmmlearn's
//! `monitor_.history`); EM stops when the gain drops below `tol` or after `n_iter` iterations.
//! AIC = −2 log L + 2p and BIC = −2 log L + p ln N, with p counted as hmmlearn does and N the number
//! of observations.

#![allow(clippy::needless_range_loop)] // index arithmetic over k × d layouts reads clearer than zipped iterators

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use gradus_tensor::{Error, Result};

use crate::kmeans::kmeans;

/// Covariance structure of the emission Gaussians.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Covariance {
    /// One variance per state and feature.
    #[default]
    Diag,
    /// One full d × d covariance per state.
    Full,
}

impl std::str::FromStr for Covariance {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "diag" => Ok(Covariance::Diag),
            "full" => Ok(Covariance::Full),
            _ => Err(Error::config(
                "covariance",
                format!("`{s}`: expected `diag` or `full`"),
            )),
        }
    }
}

/// EM settings; the defaults are hmmlearn's except `n_iter` (hmmlearn: 10).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FitOptions {
    /// Maximum EM iterations.
    pub n_iter: usize,
    /// Stop when the log-likelihood gain is below this.
    pub tol: f64,
    /// Added to the diagonal of the initial covariance.
    pub min_covar: f64,
    /// Covariance prior (inverse gamma / inverse Wishart scale).
    pub covars_prior: f64,
    /// Covariance prior weight.
    pub covars_weight: f64,
    /// Dirichlet prior of the start probabilities.
    pub startprob_prior: f64,
    /// Dirichlet prior of each transition row.
    pub transmat_prior: f64,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self {
            n_iter: 100,
            tol: 1e-2,
            min_covar: 1e-3,
            covars_prior: 1e-2,
            covars_weight: 1.0,
            startprob_prior: 1.0,
            transmat_prior: 1.0,
        }
    }
}

/// Observation sequences of dimension `d`, each row-major (T × d).
#[derive(Clone, Debug)]
pub struct Sequences {
    pub d: usize,
    pub seqs: Vec<Vec<f64>>,
}

impl Sequences {
    /// Checks shapes and finiteness; `names` (one per sequence) appear in errors.
    pub fn new(d: usize, seqs: Vec<Vec<f64>>, names: &[String]) -> Result<Self> {
        if d == 0 {
            return Err(Error::msg("observations have no features"));
        }
        for (i, s) in seqs.iter().enumerate() {
            let name = names
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("sequence {i}"));
            if s.is_empty() || s.len() % d != 0 {
                return Err(Error::msg(format!(
                    "{name}: {} values is not a whole number (> 0) of {d}-feature rows",
                    s.len()
                )));
            }
            if let Some(p) = s.iter().position(|v| !v.is_finite()) {
                return Err(Error::msg(format!(
                    "{name}: non-finite value at row {}, column {}",
                    p / d,
                    p % d
                )));
            }
        }
        Ok(Self { d, seqs })
    }
    /// Total number of observations.
    pub fn n_obs(&self) -> usize {
        self.seqs.iter().map(|s| s.len() / self.d).sum()
    }
    fn all(&self) -> Vec<f64> {
        self.seqs.concat()
    }
}

/// A Gaussian HMM with `k` states over `d` features.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GaussianHmm {
    pub k: usize,
    pub d: usize,
    pub covariance: Covariance,
    /// k.
    pub startprob: Vec<f64>,
    /// k × k, row = from.
    pub transmat: Vec<f64>,
    /// k × d.
    pub means: Vec<f64>,
    /// Diag: k × d; full: k × d × d.
    pub covars: Vec<f64>,
}

/// What a fit did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FitReport {
    /// Log-likelihood per iteration (before that iteration's M-step).
    pub history: Vec<f64>,
    /// The gain dropped below `tol` (false: stopped at `n_iter`).
    pub converged: bool,
}

impl FitReport {
    /// The last log-likelihood (−∞ when none).
    pub fn last(&self) -> f64 {
        self.history.last().copied().unwrap_or(f64::NEG_INFINITY)
    }
}

fn ln(x: f64) -> f64 {
    if x > 0.0 {
        x.ln()
    } else {
        f64::NEG_INFINITY
    }
}

/// log Σ exp, −∞ for an empty or all −∞ input.
pub fn logsumexp(v: impl Iterator<Item = f64> + Clone) -> f64 {
    let m = v.clone().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + v.map(|x| (x - m).exp()).sum::<f64>().ln()
}

fn normalize(v: &mut [f64]) {
    let s: f64 = v.iter().sum();
    if s != 0.0 {
        v.iter_mut().for_each(|x| *x /= s);
    }
}

/// The inverse of a lower-triangular d × d matrix with a positive diagonal (lower-triangular too),
/// by forward substitution on the columns of the identity.
fn lower_inverse(l: &[f64], d: usize) -> Vec<f64> {
    let mut inv = vec![0.0; d * d];
    for col in 0..d {
        for i in col..d {
            let mut s = if i == col { 1.0 } else { 0.0 };
            for p in col..i {
                s -= l[i * d + p] * inv[p * d + col];
            }
            inv[i * d + col] = s / l[i * d + i];
        }
    }
    inv
}

/// Lower Cholesky factor of a d × d matrix, or None if not positive definite.
fn cholesky(a: &[f64], d: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            let s: f64 = a[i * d + j] - (0..j).map(|p| l[i * d + p] * l[j * d + p]).sum::<f64>();
            if i == j {
                if s <= 0.0 || !s.is_finite() {
                    return None;
                }
                l[i * d + i] = s.sqrt();
            } else {
                l[i * d + j] = s / l[j * d + j];
            }
        }
    }
    Some(l)
}

/// Sufficient statistics of one E-step.
struct Stats {
    start: Vec<f64>,
    trans: Vec<f64>,
    post: Vec<f64>,
    obs: Vec<f64>,
    /// Diag: k × d of Σγx²; full: k × d × d of Σγxxᵀ.
    obs2: Vec<f64>,
}

impl Stats {
    fn zeros(k: usize, d: usize, full: bool) -> Self {
        Stats {
            start: vec![0.0; k],
            trans: vec![0.0; k * k],
            post: vec![0.0; k],
            obs: vec![0.0; k * d],
            obs2: vec![0.0; if full { k * d * d } else { k * d }],
        }
    }

    fn add(&mut self, o: &Stats) {
        let pairs = [
            (&mut self.start, &o.start),
            (&mut self.trans, &o.trans),
            (&mut self.post, &o.post),
            (&mut self.obs, &o.obs),
            (&mut self.obs2, &o.obs2),
        ];
        for (a, b) in pairs {
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        }
    }
}

impl GaussianHmm {
    /// Number of free scalar parameters (hmmlearn's count for params "stmc").
    pub fn n_params(&self) -> usize {
        let (k, d) = (self.k, self.d);
        let cov = match self.covariance {
            Covariance::Diag => k * d,
            Covariance::Full => k * d * (d + 1) / 2,
        };
        (k - 1) + k * (k - 1) + k * d + cov
    }

    /// Checks shapes, probabilities summing to 1 and finite parameters.
    pub fn validate(&self) -> Result<()> {
        let (k, d) = (self.k, self.d);
        let cov_len = match self.covariance {
            Covariance::Diag => k * d,
            Covariance::Full => k * d * d,
        };
        if k == 0 || d == 0 {
            return Err(Error::msg(
                "an HMM needs at least one state and one feature",
            ));
        }
        if self.startprob.len() != k
            || self.transmat.len() != k * k
            || self.means.len() != k * d
            || self.covars.len() != cov_len
        {
            return Err(Error::msg(format!(
                "HMM parameter shapes do not match k = {k}, d = {d}"
            )));
        }
        let sums_to_one = |v: &[f64]| (v.iter().sum::<f64>() - 1.0).abs() < 1e-6;
        if !sums_to_one(&self.startprob)
            || !(0..k).all(|i| sums_to_one(&self.transmat[i * k..(i + 1) * k]))
        {
            return Err(Error::msg("HMM startprob and transmat rows must sum to 1"));
        }
        if self
            .means
            .iter()
            .chain(&self.covars)
            .any(|v| !v.is_finite())
        {
            return Err(Error::msg(
                "HMM means or covariances hold a non-finite value",
            ));
        }
        Ok(())
    }

    /// Emission log-densities (T × k) of one sequence.
    pub fn log_emissions(&self, x: &[f64]) -> Result<Vec<f64>> {
        let (k, d) = (self.k, self.d);
        let t_len = x.len() / d;
        let c0 = d as f64 * (2.0 * std::f64::consts::PI).ln();
        let mut out = vec![0.0; t_len * k];
        match self.covariance {
            Covariance::Diag => {
                for c in 0..k {
                    let cv: Vec<f64> = self.covars[c * d..(c + 1) * d]
                        .iter()
                        .map(|&v| v.max(f64::MIN_POSITIVE))
                        .collect();
                    let logdet: f64 = cv.iter().map(|v| v.ln()).sum();
                    let mu = &self.means[c * d..(c + 1) * d];
                    for t in 0..t_len {
                        let q: f64 = (0..d).map(|f| (x[t * d + f] - mu[f]).powi(2) / cv[f]).sum();
                        out[t * k + c] = -0.5 * (c0 + logdet + q);
                    }
                }
            }
            Covariance::Full => {
                for c in 0..k {
                    let cv = &self.covars[c * d * d..(c + 1) * d * d];
                    // hmmlearn retries a failed Cholesky with 1e-7 on the diagonal.
                    let l = cholesky(cv, d)
                        .or_else(|| {
                            let mut a = cv.to_vec();
                            (0..d).for_each(|i| a[i * d + i] += 1e-7);
                            cholesky(&a, d)
                        })
                        .ok_or_else(|| {
                            Error::msg(format!(
                                "state {c}: covariance is not symmetric positive definite"
                            ))
                        })?;
                    let logdet: f64 = 2.0 * (0..d).map(|i| l[i * d + i].ln()).sum::<f64>();
                    let mu = &self.means[c * d..(c + 1) * d];
                    // (x − μ)ᵀ Σ⁻¹ (x − μ) = |L⁻¹ (x − μ)|²: with L⁻¹ formed once per state, each
                    // step is d independent dot products instead of a substitution chain.
                    let li = lower_inverse(&l, d);
                    let mut z = vec![0.0; d];
                    for t in 0..t_len {
                        for (zi, (&xi, &m)) in
                            z.iter_mut().zip(x[t * d..(t + 1) * d].iter().zip(mu))
                        {
                            *zi = xi - m;
                        }
                        let q: f64 = (0..d)
                            .map(|i| {
                                let y: f64 = li[i * d..i * d + i + 1]
                                    .iter()
                                    .zip(&z[..=i])
                                    .map(|(a, b)| a * b)
                                    .sum();
                                y * y
                            })
                            .sum();
                        out[t * k + c] = -0.5 * (c0 + q + logdet);
                    }
                }
            }
        }
        Ok(out)
    }

    fn log_params(&self) -> (Vec<f64>, Vec<f64>) {
        (
            self.startprob.iter().map(|&p| ln(p)).collect(),
            self.transmat.iter().map(|&p| ln(p)).collect(),
        )
    }

    /// Emission densities scaled per step (T × k, each row's largest is 1) and each step's log
    /// scale (the row's largest log-density).
    fn scaled_emissions(&self, x: &[f64]) -> Result<(Vec<f64>, Vec<f64>)> {
        let k = self.k;
        let mut e = self.log_emissions(x)?;
        let t_len = e.len() / k;
        let mut m = vec![0.0; t_len];
        for t in 0..t_len {
            let row = &mut e[t * k..(t + 1) * k];
            let mx = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if !mx.is_finite() {
                return Err(Error::msg(format!(
                    "observation {t} has zero density under every HMM state"
                )));
            }
            row.iter_mut().for_each(|v| *v = (*v - mx).exp());
            m[t] = mx;
        }
        Ok((e, m))
    }

    /// Scaled forward pass: normalised forward variables α̂ (T × k), the scales s_t, and the
    /// sequence log-likelihood Σ_t (ln s_t + m_t). −∞ when the sequence is impossible.
    fn forward(&self, e: &[f64], m: &[f64]) -> (Vec<f64>, Vec<f64>, f64) {
        let k = self.k;
        let t_len = m.len();
        let mut a = vec![0.0; t_len * k];
        let mut scale = vec![0.0; t_len];
        let mut ll = 0.0;
        for t in 0..t_len {
            let (prev, cur) = a.split_at_mut(t * k);
            let cur = &mut cur[..k];
            if t == 0 {
                for j in 0..k {
                    cur[j] = self.startprob[j] * e[j];
                }
            } else {
                let p = &prev[(t - 1) * k..];
                for j in 0..k {
                    let mut v = 0.0;
                    for i in 0..k {
                        v += p[i] * self.transmat[i * k + j];
                    }
                    cur[j] = v * e[t * k + j];
                }
            }
            let st: f64 = cur.iter().sum();
            if st <= 0.0 {
                return (a, scale, f64::NEG_INFINITY);
            }
            cur.iter_mut().for_each(|v| *v /= st);
            scale[t] = st;
            ll += st.ln() + m[t];
        }
        (a, scale, ll)
    }

    /// Scaled backward pass: β̂ (T × k) with β̂_{T−1} = 1 and
    /// β̂_t(i) = Σ_j A(i, j) e_{t+1}(j) β̂_{t+1}(j) / s_{t+1}.
    fn backward(&self, e: &[f64], scale: &[f64]) -> Vec<f64> {
        let k = self.k;
        let t_len = scale.len();
        let mut b = vec![1.0; t_len * k];
        let mut w = vec![0.0; k];
        for t in (0..t_len.saturating_sub(1)).rev() {
            for j in 0..k {
                w[j] = e[(t + 1) * k + j] * b[(t + 1) * k + j] / scale[t + 1];
            }
            for i in 0..k {
                let mut v = 0.0;
                for j in 0..k {
                    v += self.transmat[i * k + j] * w[j];
                }
                b[t * k + i] = v;
            }
        }
        b
    }

    /// One sequence's sufficient statistics and log-likelihood.
    fn seq_stats(&self, x: &[f64]) -> Result<(Stats, f64)> {
        let (k, d) = (self.k, self.d);
        let full = self.covariance == Covariance::Full;
        let mut st = Stats::zeros(k, d, full);
        let (e, m) = self.scaled_emissions(x)?;
        let (a, scale, ll) = self.forward(&e, &m);
        if !ll.is_finite() {
            return Err(Error::msg(
                "a sequence has zero likelihood under the HMM (−∞ log-likelihood)",
            ));
        }
        let b = self.backward(&e, &scale);
        let t_len = m.len();
        let mut g = vec![0.0; k];
        // x_t x_tᵀ (full) or x_t² (diag), once per step, then added to every state's sums with
        // its weight: contiguous slices the compiler vectorises.
        let mut sq = vec![0.0; if full { d * d } else { d }];
        let w2 = sq.len();
        for t in 0..t_len {
            for c in 0..k {
                g[c] = a[t * k + c] * b[t * k + c];
            }
            normalize(&mut g);
            let xt = &x[t * d..(t + 1) * d];
            if full {
                for (i, &xi) in xt.iter().enumerate() {
                    for (o, &xj) in sq[i * d..(i + 1) * d].iter_mut().zip(xt) {
                        *o = xi * xj;
                    }
                }
            } else {
                for (o, &xi) in sq.iter_mut().zip(xt) {
                    *o = xi * xi;
                }
            }
            if t == 0 {
                st.start.iter_mut().zip(&g).for_each(|(s, gc)| *s += gc);
            }
            for c in 0..k {
                let gc = g[c];
                st.post[c] += gc;
                for (o, &xi) in st.obs[c * d..(c + 1) * d].iter_mut().zip(xt) {
                    *o += gc * xi;
                }
                for (o, &q) in st.obs2[c * w2..(c + 1) * w2].iter_mut().zip(&sq) {
                    *o += gc * q;
                }
            }
        }
        // ξ_t(i, j) = α̂_t(i) A(i, j) e_{t+1}(j) β̂_{t+1}(j) / s_{t+1}, summed over t.
        let mut w = vec![0.0; k];
        for t in 0..t_len.saturating_sub(1) {
            for j in 0..k {
                w[j] = e[(t + 1) * k + j] * b[(t + 1) * k + j] / scale[t + 1];
            }
            for i in 0..k {
                let ai = a[t * k + i];
                for j in 0..k {
                    st.trans[i * k + j] += ai * self.transmat[i * k + j] * w[j];
                }
            }
        }
        Ok((st, ll))
    }

    /// Total log-likelihood of the sequences.
    pub fn score(&self, data: &Sequences) -> Result<f64> {
        self.check_dim(data)?;
        let mut total = 0.0;
        for s in &data.seqs {
            let lls = match self.scaled_emissions(s) {
                Ok((e, m)) => self.forward(&e, &m).2,
                Err(_) => f64::NEG_INFINITY,
            };
            total += lls;
        }
        Ok(total)
    }

    /// Akaike information criterion on `data`.
    pub fn aic(&self, data: &Sequences) -> Result<f64> {
        Ok(-2.0 * self.score(data)? + 2.0 * self.n_params() as f64)
    }

    /// Bayesian information criterion on `data`.
    pub fn bic(&self, data: &Sequences) -> Result<f64> {
        Ok(-2.0 * self.score(data)? + self.n_params() as f64 * (data.n_obs() as f64).ln())
    }

    /// Most likely state path of one sequence (T × d) and its log-probability. Ties go to the
    /// lower state index.
    pub fn viterbi(&self, x: &[f64]) -> Result<(f64, Vec<usize>)> {
        let k = self.k;
        let lb = self.log_emissions(x)?;
        let (ls, la) = self.log_params();
        let t_len = lb.len() / k;
        if t_len == 0 {
            return Ok((0.0, Vec::new()));
        }
        let mut v = vec![0.0; t_len * k];
        for j in 0..k {
            v[j] = ls[j] + lb[j];
        }
        for t in 1..t_len {
            for j in 0..k {
                let m = (0..k)
                    .map(|i| v[(t - 1) * k + i] + la[i * k + j])
                    .fold(f64::NEG_INFINITY, f64::max);
                v[t * k + j] = m + lb[t * k + j];
            }
        }
        let argmax = |it: &mut dyn Iterator<Item = f64>| {
            let mut best = (0, f64::NEG_INFINITY);
            for (i, x) in it.enumerate() {
                if x > best.1 {
                    best = (i, x);
                }
            }
            best
        };
        let (last, lp) = argmax(&mut v[(t_len - 1) * k..].iter().copied());
        let mut path = vec![0; t_len];
        path[t_len - 1] = last;
        for t in (0..t_len - 1).rev() {
            let next = path[t + 1];
            path[t] = argmax(&mut (0..k).map(|i| v[t * k + i] + la[i * k + next])).0;
        }
        Ok((lp, path))
    }

    fn check_dim(&self, data: &Sequences) -> Result<()> {
        if data.d != self.d {
            return Err(Error::msg(format!(
                "the data has {} features, the HMM {}",
                data.d, self.d
            )));
        }
        Ok(())
    }

    fn estep(&self, data: &Sequences) -> Result<(Stats, f64)> {
        use rayon::prelude::*;
        let per_seq: Vec<(Stats, f64)> = data
            .seqs
            .par_iter()
            .map(|x| self.seq_stats(x))
            .collect::<Result<_>>()?;
        let full = self.covariance == Covariance::Full;
        let mut st = Stats::zeros(self.k, self.d, full);
        let mut total = 0.0;
        // Added in sequence order: the same sums whatever the thread count.
        for (s, ll) in &per_seq {
            st.add(s);
            total += ll;
        }
        Ok((st, total))
    }

    fn mstep(&mut self, st: &Stats, o: &FitOptions) {
        let (k, d) = (self.k, self.d);
        for c in 0..k {
            if self.startprob[c] != 0.0 {
                self.startprob[c] = (o.startprob_prior - 1.0 + st.start[c]).max(0.0);
            }
        }
        normalize(&mut self.startprob);
        for i in 0..k {
            for j in 0..k {
                if self.transmat[i * k + j] != 0.0 {
                    self.transmat[i * k + j] =
                        (o.transmat_prior - 1.0 + st.trans[i * k + j]).max(0.0);
                }
            }
            normalize(&mut self.transmat[i * k..(i + 1) * k]);
        }
        for c in 0..k {
            let post = st.post[c];
            if post <= 0.0 {
                tracing::warn!(
                    "HMM state {c} has no posterior mass; its mean and covariance are kept"
                );
                continue;
            }
            for f in 0..d {
                self.means[c * d + f] = st.obs[c * d + f] / post;
            }
            let mu = &self.means[c * d..(c + 1) * d];
            match self.covariance {
                Covariance::Diag => {
                    let den = ((o.covars_weight - 1.0).max(0.0) + post).max(1e-5);
                    for f in 0..d {
                        let cn = st.obs2[c * d + f] - 2.0 * mu[f] * st.obs[c * d + f]
                            + mu[f] * mu[f] * post;
                        self.covars[c * d + f] = (o.covars_prior + cn) / den;
                    }
                }
                Covariance::Full => {
                    let den = (o.covars_weight - d as f64).max(0.0) + post;
                    for i in 0..d {
                        for j in 0..d {
                            let cn = st.obs2[(c * d + i) * d + j]
                                - st.obs[c * d + i] * mu[j]
                                - mu[i] * st.obs[c * d + j]
                                + mu[i] * mu[j] * post;
                            self.covars[(c * d + i) * d + j] = (o.covars_prior + cn) / den;
                        }
                    }
                }
            }
        }
    }

    /// Baum–Welch from the current parameters (hmmlearn's `fit` with `init_params=""`).
    pub fn fit_from(&mut self, data: &Sequences, o: &FitOptions) -> Result<FitReport> {
        self.validate()?;
        self.check_dim(data)?;
        let mut rep = FitReport::default();
        for it in 0..o.n_iter {
            let (st, ll) = self.estep(data)?;
            self.mstep(&st, o);
            if let Some(&prev) = rep.history.last() {
                if ll - prev < -f64::EPSILON.sqrt() {
                    tracing::warn!(
                        "HMM EM: log-likelihood decreased at iteration {} ({prev} → {ll})",
                        it + 1
                    );
                }
            }
            rep.history.push(ll);
            let n = rep.history.len();
            if n >= 2 && rep.history[n - 1] - rep.history[n - 2] < o.tol {
                rep.converged = true;
                break;
            }
        }
        if self
            .means
            .iter()
            .chain(&self.covars)
            .any(|v| !v.is_finite())
        {
            return Err(Error::msg("HMM EM produced non-finite parameters"));
        }
        Ok(rep)
    }

    /// Initial parameters: k-means means (best of 10), the data covariance plus `min_covar` on the
    /// diagonal for every state, start and transition rows drawn from Dirichlet(1).
    pub fn init_kmeans(
        data: &Sequences,
        k: usize,
        covariance: Covariance,
        o: &FitOptions,
        seed: u64,
    ) -> Result<Self> {
        let d = data.d;
        let n = data.n_obs();
        if k == 0 {
            return Err(Error::msg("an HMM needs at least one state"));
        }
        if n < k {
            return Err(Error::msg(format!(
                "{n} observations cannot fit {k} states"
            )));
        }
        let x = data.all();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let means = kmeans(&x, d, k, 10, &mut rng);
        let mean: Vec<f64> = (0..d)
            .map(|f| (0..n).map(|t| x[t * d + f]).sum::<f64>() / n as f64)
            .collect();
        let denom = if n > 1 { (n - 1) as f64 } else { 1.0 };
        let mut cov = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..d {
                cov[i * d + j] = (0..n)
                    .map(|t| (x[t * d + i] - mean[i]) * (x[t * d + j] - mean[j]))
                    .sum::<f64>()
                    / denom;
            }
            cov[i * d + i] += o.min_covar;
        }
        let covars = match covariance {
            Covariance::Diag => (0..k)
                .flat_map(|_| (0..d).map(|i| cov[i * d + i]).collect::<Vec<_>>())
                .collect(),
            Covariance::Full => (0..k).flat_map(|_| cov.clone()).collect(),
        };
        let mut dirichlet = |len: usize| {
            let mut v: Vec<f64> = (0..len).map(|_| -(1.0 - rng.gen::<f64>()).ln()).collect();
            normalize(&mut v);
            v
        };
        let startprob = dirichlet(k);
        let transmat: Vec<f64> = (0..k).flat_map(|_| dirichlet(k)).collect();
        Ok(Self {
            k,
            d,
            covariance,
            startprob,
            transmat,
            means,
            covars,
        })
    }

    /// The best of `restarts` fits (k-means initialisations with seeds `seed, seed + 1, ...`, run in
    /// parallel) by final training log-likelihood. A restart whose EM fails is skipped with a
    /// warning; an error only if all fail. Non-convergence is reported in the returned report.
    pub fn fit_best(
        data: &Sequences,
        k: usize,
        covariance: Covariance,
        o: &FitOptions,
        restarts: usize,
        seed: u64,
    ) -> Result<(Self, FitReport)> {
        let fits: Vec<Result<(Self, FitReport)>> = (0..restarts.max(1) as u64)
            .into_par_iter()
            .map(|r| {
                let mut m = Self::init_kmeans(data, k, covariance, o, seed.wrapping_add(r))?;
                let rep = m.fit_from(data, o)?;
                Ok((m, rep))
            })
            .collect();
        let mut best: Option<(Self, FitReport)> = None;
        let mut last_err = None;
        for (r, f) in fits.into_iter().enumerate() {
            match f {
                Ok((m, rep)) => {
                    let ll = rep.last();
                    if best.as_ref().is_none_or(|b| ll > b.1.last()) {
                        best = Some((m, rep));
                    }
                }
                Err(e) => {
                    tracing::warn!("HMM with {k} states, restart {r}: {e}");
                    last_err = Some(e);
                }
            }
        }
        match best {
            Some(b) => {
                if !b.1.converged {
                    tracing::warn!(
                        "HMM with {k} states did not converge in {} iterations (tol {})",
                        o.n_iter,
                        o.tol
                    );
                }
                Ok(b)
            }
            None => Err(Error::msg(format!(
                "HMM with {k} states: every restart failed: {}",
                last_err.map(|e| e.to_string()).unwrap_or_default()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_state() -> GaussianHmm {
        GaussianHmm {
            k: 2,
            d: 1,
            covariance: Covariance::Diag,
            startprob: vec![1.0, 0.0],
            transmat: vec![0.9, 0.1, 0.0, 1.0],
            means: vec![0.0, 10.0],
            covars: vec![1.0, 1.0],
        }
    }

    /// The scaled forward pass against the log-space recursion (log α_t(j) = log b_t(j) +
    /// logsumexp_i(log α_{t−1}(i) + log A(i, j))), on observations hundreds of standard deviations
    /// from every mean, where unscaled densities underflow to 0.
    #[test]
    fn scaled_forward_equals_the_log_space_recursion_far_in_the_tails() {
        let mut h = two_state();
        h.transmat = vec![0.7, 0.3, 0.2, 0.8];
        h.startprob = vec![0.6, 0.4];
        let x = [0.3, 400.0, -250.0, 9.0, 11.0, 1e3];
        let lb = h.log_emissions(&x).unwrap();
        let (ls, la) = h.log_params();
        let k = 2;
        let mut f: Vec<f64> = (0..k).map(|j| ls[j] + lb[j]).collect();
        for t in 1..x.len() {
            f = (0..k)
                .map(|j| logsumexp((0..k).map(|i| f[i] + la[i * k + j])) + lb[t * k + j])
                .collect();
        }
        let want = logsumexp(f.iter().copied());
        assert!(want < -1e5, "the test must reach the tails: {want}");
        let (e, m) = h.scaled_emissions(&x).unwrap();
        let got = h.forward(&e, &m).2;
        assert!(((got - want) / want).abs() < 1e-12, "{got} vs {want}");
    }

    /// Sequences are processed in parallel; their statistics are added in order, so a fit is
    /// bit-identical on 1 and 2 threads.
    #[test]
    fn fit_does_not_depend_on_the_thread_count() {
        let mut rng = gradus_tensor::rng::Rng::new(3);
        let seqs: Vec<Vec<f64>> = (0..7)
            .map(|_| {
                (0..40)
                    .map(|t| (t / 10) as f64 + rng.normal() * 0.3)
                    .collect()
            })
            .collect();
        let data = Sequences::new(1, seqs, &["x".to_string()]).unwrap();
        let fit = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| {
                    let mut h = GaussianHmm {
                        k: 3,
                        d: 1,
                        covariance: Covariance::Diag,
                        startprob: vec![0.5, 0.3, 0.2],
                        transmat: vec![0.8, 0.1, 0.1, 0.1, 0.8, 0.1, 0.1, 0.1, 0.8],
                        means: vec![0.0, 1.5, 3.0],
                        covars: vec![1.0, 1.0, 1.0],
                    };
                    let r = h
                        .fit_from(
                            &data,
                            &FitOptions {
                                n_iter: 10,
                                ..Default::default()
                            },
                        )
                        .unwrap();
                    (r.history, h.means, h.transmat)
                })
        };
        assert_eq!(fit(1), fit(2));
    }

    #[test]
    fn lower_inverse_times_the_matrix_is_the_identity() {
        // L = [[2, 0, 0], [1, 3, 0], [-1, 0.5, 4]]; L⁻¹ by hand: row 0 = [1/2, 0, 0],
        // row 1 = [-1/6, 1/3, 0], row 2 = [(1/2 + 1/12)/4, -1/24, 1/4] = [7/48, -1/24, 1/4].
        let l = [2.0, 0.0, 0.0, 1.0, 3.0, 0.0, -1.0, 0.5, 4.0];
        let inv = lower_inverse(&l, 3);
        let want = [
            0.5,
            0.0,
            0.0,
            -1.0 / 6.0,
            1.0 / 3.0,
            0.0,
            7.0 / 48.0,
            -1.0 / 24.0,
            0.25,
        ];
        for (g, w) in inv.iter().zip(want) {
            assert!((g - w).abs() < 1e-15, "{inv:?}");
        }
    }

    #[test]
    fn single_observation_likelihood_by_hand() {
        // One observation x = 0 from state 0 (start prob 1): log N(0; 0, 1) = −½ ln 2π.
        let m = two_state();
        let data = Sequences::new(1, vec![vec![0.0]], &[]).unwrap();
        let ll = m.score(&data).unwrap();
        assert!((ll + 0.5 * (2.0 * std::f64::consts::PI).ln()).abs() < 1e-12);
    }

    #[test]
    fn viterbi_follows_the_obvious_path() {
        // Means 0 and 10, unit variance, left-right chain: observations near 0 then near 10 are decoded
        // 0 then 1 (any other path pays ≥ ½·10² per misassigned point).
        let m = two_state();
        let (_, path) = m.viterbi(&[0.1, -0.2, 0.3, 9.8, 10.1]).unwrap();
        assert_eq!(path, vec![0, 0, 0, 1, 1]);
    }

    #[test]
    fn full_and_diag_agree_on_a_diagonal_covariance() {
        let diag = GaussianHmm {
            k: 1,
            d: 2,
            covariance: Covariance::Diag,
            startprob: vec![1.0],
            transmat: vec![1.0],
            means: vec![1.0, -1.0],
            covars: vec![2.0, 0.5],
        };
        let full = GaussianHmm {
            covariance: Covariance::Full,
            covars: vec![2.0, 0.0, 0.0, 0.5],
            ..diag.clone()
        };
        let x = [0.3, 0.7, -2.0, 1.0];
        let a = diag.log_emissions(&x).unwrap();
        let b = full.log_emissions(&x).unwrap();
        // By hand for x = (0.3, 0.7): −½(2 ln 2π + ln(2·0.5) + 0.7²/2 + 1.7²/0.5).
        let want = -0.5 * (2.0 * (2.0 * std::f64::consts::PI).ln() + 0.0 + 0.49 / 2.0 + 2.89 / 0.5);
        assert!((a[0] - want).abs() < 1e-12 && (b[0] - want).abs() < 1e-12);
        assert!((a[1] - b[1]).abs() < 1e-12);
    }

    #[test]
    fn parameter_count_matches_hmmlearn() {
        // hmmlearn: s k−1, t k(k−1), m kd, c kd (diag) or k d(d+1)/2 (full). k = 3, d = 4:
        // 2 + 6 + 12 + 12 = 32 (diag), 2 + 6 + 12 + 30 = 50 (full).
        let mut m = GaussianHmm {
            k: 3,
            d: 4,
            covariance: Covariance::Diag,
            startprob: vec![],
            transmat: vec![],
            means: vec![],
            covars: vec![],
        };
        assert_eq!(m.n_params(), 32);
        m.covariance = Covariance::Full;
        assert_eq!(m.n_params(), 50);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(
            Sequences::new(2, vec![vec![1.0, 2.0, 3.0]], &["run-a".into()])
                .unwrap_err()
                .to_string()
                .contains("run-a")
        );
        let e = Sequences::new(1, vec![vec![1.0, f64::NAN]], &["run-b".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("run-b") && e.contains("row 1"), "{e}");
        let data = Sequences::new(1, vec![vec![1.0]], &[]).unwrap();
        assert!(
            GaussianHmm::init_kmeans(&data, 2, Covariance::Diag, &FitOptions::default(), 0)
                .is_err()
        );
    }
}
