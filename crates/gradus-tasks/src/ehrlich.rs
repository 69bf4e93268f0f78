//! Ehrlich functions: closed-form test functions for biophysical sequence design (Stanton et al.
//! 2024, "Closed-Form Test Functions for Biophysical Sequence Design"; RESEARCH §3.6), with the
//! semantics of holo-bench's `holo.test_functions.closed_form.Ehrlich`.
//!
//! A function over sequences x ∈ {0..v−1}^L (v = `num_states`, L = `dim`) is built from:
//! - **Feasibility**: a discrete Markov process (DMP) with a banded, ergodic transition matrix A.
//!   Logits N(0,1)/0.5 are softmaxed per row; a 0/1 band of half-width ⌊0.4·v⌋ (wrapping around)
//!   with its rows randomly permuted, plus the diagonal (repeats are always allowed), zeroes the
//!   other entries; rows are renormalised. A is checked ergodic (all entries of A^m positive,
//!   m = (v−1)²+1, Perron–Frobenius; holo raises when this fails, gradus draws again).
//!   x is **feasible** iff every transition has A[x_t, x_{t+1}] > 0 (the initial distribution is
//!   uniform).
//! - **Motifs**: one DMP sample of length c·k from the stationary distribution, chunked into c
//!   motifs a⁽ⁱ⁾ of length k: jointly satisfiable by construction.
//! - **Spacings**: per motif, w ~ U(0,1)^{k−1} normalised, s = 1 + ⌊(⌊(L − c·k)/c⌋)·w⌋; offsets
//!   S = cumsum([0, s]).
//! - **Objective**: h_i(x) = max_l q(Σ_j 1[x_{l+S_j} = a⁽ⁱ⁾_j]) with the quantisation
//!   q(n) = ⌊n / ⌈k/q⌉⌋ / (k / ⌈k/q⌉), and
//!   **f(x) = Π_i g(h_i(x)) if x is feasible, else −∞** (holo returns −inf; the paper writes 0),
//!   g(h) = (ε·h·(h−1) + 1)·h (the identity when the epistasis factor ε = 0). f* = 1, reached by
//!   [`Ehrlich::optimal_solution`] (holo's construction: the spaced motifs one after the other,
//!   gaps filled by repeating the previous element, the tail by the last one).
//!
//! The objective is computed in f32 in holo's order of operations (torch float32), so a function
//! built from holo's parameters ([`Ehrlich::from_parts`]) gives bit-identical values
//! (`tests/ehrlich.rs` against the committed `tests/fixtures/ehrlich`). gradus' own generator
//! ([`Ehrlich::new`]) draws from gradus' seeded stream, not torch's: same structure, other values.

use gradus_tensor::rng::Rng;
use gradus_tensor::{Error, Result};
use serde::{Deserialize, Serialize};

/// The settings of an Ehrlich function (holo's constructor arguments).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EhrlichConfig {
    /// Vocabulary size v.
    pub num_states: usize,
    /// Sequence length L.
    pub dim: usize,
    /// Number of motifs c.
    pub num_motifs: usize,
    /// Motif length k.
    pub motif_length: usize,
    /// Quantisation levels q (default k); must divide k.
    pub quantization: Option<usize>,
    /// Epistasis factor ε of the response g(h) = (ε·h·(h−1) + 1)·h.
    pub epistasis_factor: f64,
    /// Seed of the function's random draws (transition matrix, motifs, spacings).
    pub seed: u64,
}

impl Default for EhrlichConfig {
    /// LLOME's f₂: v = 32, L = 32, c = 4, k = 4, q = 4.
    fn default() -> Self {
        Self {
            num_states: 32,
            dim: 32,
            num_motifs: 4,
            motif_length: 4,
            quantization: None,
            epistasis_factor: 0.0,
            seed: 0,
        }
    }
}

impl EhrlichConfig {
    /// Checks that a function with these settings exists; errors name the field (under `prefix`,
    /// e.g. `ehrlich`).
    pub fn validate_at(&self, prefix: &str) -> Result<()> {
        let f = |name: &str| {
            if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}.{name}")
            }
        };
        if self.num_states < 2 {
            return Err(Error::config(
                f("num_states"),
                format!("needs at least 2 states, got {}", self.num_states),
            ));
        }
        if self.dim == 0 {
            return Err(Error::config(f("dim"), "the sequence length must be ≥ 1"));
        }
        if self.num_motifs == 0 {
            return Err(Error::config(f("num_motifs"), "needs at least one motif"));
        }
        if self.motif_length == 0 {
            return Err(Error::config(f("motif_length"), "motifs need length ≥ 1"));
        }
        if self.motif_length > self.num_states {
            return Err(Error::config(
                f("motif_length"),
                format!(
                    "motif length {} is larger than the number of states {}",
                    self.motif_length, self.num_states
                ),
            ));
        }
        let ck = self.num_motifs.saturating_mul(self.motif_length);
        if ck > self.dim {
            return Err(Error::config(
                f("num_motifs"),
                format!(
                    "c·k = {}·{} = {ck} motif positions do not fit in a sequence of length dim = {}: no solution can satisfy every motif",
                    self.num_motifs, self.motif_length, self.dim
                ),
            ));
        }
        let q = self.quantization();
        if q == 0 || q > self.motif_length || !self.motif_length.is_multiple_of(q) {
            return Err(Error::config(
                f("quantization"),
                format!(
                    "must be between 1 and the motif length {} and divide it, got {q}",
                    self.motif_length
                ),
            ));
        }
        if !self.epistasis_factor.is_finite() {
            return Err(Error::config(f("epistasis_factor"), "must be finite"));
        }
        Ok(())
    }

    /// [`EhrlichConfig::validate_at`] with the field names alone.
    pub fn validate(&self) -> Result<()> {
        self.validate_at("")
    }

    /// q (k when unset).
    pub fn quantization(&self) -> usize {
        self.quantization.unwrap_or(self.motif_length)
    }
}

/// An Ehrlich function: its DMP, motifs and spacings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ehrlich {
    pub num_states: usize,
    pub dim: usize,
    pub quantization: usize,
    pub epistasis_factor: f64,
    /// Row-stochastic v×v transition matrix; zero entries are infeasible transitions.
    pub transition: Vec<Vec<f64>>,
    /// Its stationary distribution.
    pub stationary: Vec<f64>,
    /// c motifs of length k.
    pub motifs: Vec<Vec<usize>>,
    /// c spacings of length k−1 (each ≥ 1).
    pub spacings: Vec<Vec<usize>>,
}

/// A banded 0/1 mask: row i allows columns i−b..=i+b (mod n).
pub fn banded_mask(n: usize, bandwidth: usize) -> Vec<Vec<bool>> {
    let mut m = vec![vec![false; n]; n];
    for (i, row) in m.iter_mut().enumerate() {
        for d in 0..=2 * bandwidth {
            // j = i − b + d (mod n), without going negative.
            let j = (i + n * (bandwidth / n + 1) + d - bandwidth) % n;
            row[j] = true;
        }
    }
    m
}

/// Whether every entry of P^m is positive, m = (n−1)²+1 (Wielandt's bound: a primitive, i.e.
/// irreducible and aperiodic, matrix reaches positivity by then). Computed on the 0/1 pattern by
/// repeated squaring, so no underflow can hide a path.
pub fn is_ergodic(p: &[Vec<f64>]) -> bool {
    let n = p.len();
    let pat: Vec<Vec<bool>> = p
        .iter()
        .map(|r| r.iter().map(|&x| x > 0.0).collect())
        .collect();
    let mul = |a: &Vec<Vec<bool>>, b: &Vec<Vec<bool>>| -> Vec<Vec<bool>> {
        let mut c = vec![vec![false; n]; n];
        for i in 0..n {
            for k in 0..n {
                if a[i][k] {
                    for j in 0..n {
                        c[i][j] |= b[k][j];
                    }
                }
            }
        }
        c
    };
    let mut m = (n - 1) * (n - 1) + 1;
    let mut result: Option<Vec<Vec<bool>>> = None;
    let mut base = pat;
    while m > 0 {
        if m & 1 == 1 {
            result = Some(match &result {
                None => base.clone(),
                Some(r) => mul(r, &base),
            });
        }
        m >>= 1;
        if m > 0 {
            base = mul(&base, &base);
        }
    }
    result.is_some_and(|r| r.iter().all(|row| row.iter().all(|&x| x)))
}

/// The stationary distribution π = πP of an ergodic chain (power iteration to 1e-13).
pub fn stationary_dist(p: &[Vec<f64>]) -> Vec<f64> {
    let n = p.len();
    let mut pi = vec![1.0 / n as f64; n];
    for _ in 0..1_000_000 {
        let mut next = vec![0.0; n];
        for (i, row) in p.iter().enumerate() {
            for (j, &x) in row.iter().enumerate() {
                next[j] += pi[i] * x;
            }
        }
        let z: f64 = next.iter().sum();
        next.iter_mut().for_each(|x| *x /= z);
        let diff: f64 = next.iter().zip(&pi).map(|(a, b)| (a - b).abs()).sum();
        pi = next;
        if diff < 1e-13 {
            break;
        }
    }
    pi
}

/// Draws an index from the (unnormalised, non-negative) weights `w`.
fn categorical(w: &[f64], rng: &mut Rng) -> usize {
    let z: f64 = w.iter().sum();
    let u = rng.uniform() * z;
    let mut acc = 0.0;
    let mut last = 0;
    for (i, &x) in w.iter().enumerate() {
        if x > 0.0 {
            acc += x;
            last = i;
            if u < acc {
                return i;
            }
        }
    }
    last
}

/// One DMP sample of length `len`: x_0 ~ `initial`, x_{t+1} ~ A[x_t, ·].
pub fn sample_dmp(
    initial: &[f64],
    transition: &[Vec<f64>],
    len: usize,
    rng: &mut Rng,
) -> Vec<usize> {
    let mut x = Vec::with_capacity(len);
    if len == 0 {
        return x;
    }
    x.push(categorical(initial, rng));
    for t in 1..len {
        let prev = x[t - 1];
        x.push(categorical(&transition[prev], rng));
    }
    x
}

/// A sparse ergodic transition matrix as holo's `sample_sparse_ergodic_transition_matrix`
/// (softmax temperature 0.5, repeats always possible); `None` when the draw is not ergodic.
fn draw_transition(v: usize, rng: &mut Rng) -> Option<Vec<Vec<f64>>> {
    let bandwidth = (v as f64 * 0.4) as usize;
    let mut dense = vec![vec![0.0f64; v]; v];
    for row in dense.iter_mut() {
        for x in row.iter_mut() {
            *x = rng.normal() / 0.5;
        }
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        row.iter_mut().for_each(|x| *x = (*x - m).exp());
        let z: f64 = row.iter().sum();
        row.iter_mut().for_each(|x| *x /= z);
    }
    let band = banded_mask(v, bandwidth);
    let mut perm: Vec<usize> = (0..v).collect();
    rng.shuffle(&mut perm);
    let mut p = vec![vec![0.0f64; v]; v];
    for i in 0..v {
        for j in 0..v {
            if band[perm[i]][j] || i == j {
                p[i][j] = dense[i][j];
            }
        }
        let z: f64 = p[i].iter().sum();
        p[i].iter_mut().for_each(|x| *x /= z);
    }
    is_ergodic(&p).then_some(p)
}

impl Ehrlich {
    /// Draws a function from gradus' seeded stream with holo's procedure (module docs). A
    /// transition matrix that is not ergodic is drawn again (holo raises instead).
    pub fn new(cfg: &EhrlichConfig) -> Result<Self> {
        cfg.validate()?;
        let mut rng = Rng::derive(cfg.seed, "ehrlich");
        let v = cfg.num_states;
        let mut transition = None;
        for _ in 0..1000 {
            if let Some(p) = draw_transition(v, &mut rng) {
                transition = Some(p);
                break;
            }
        }
        let transition = transition.ok_or_else(|| {
            Error::config(
                "num_states",
                format!("no ergodic transition matrix found for {v} states in 1000 draws"),
            )
        })?;
        let stationary = stationary_dist(&transition);
        let (c, k, l) = (cfg.num_motifs, cfg.motif_length, cfg.dim);
        let all = sample_dmp(&stationary, &transition, c * k, &mut rng);
        let motifs: Vec<Vec<usize>> = all.chunks(k).map(|m| m.to_vec()).collect();
        let per_motif_slack = (l - c * k) / c;
        let spacings = (0..c)
            .map(|_| {
                let w: Vec<f64> = (0..k - 1).map(|_| rng.uniform()).collect();
                let z: f64 = w.iter().sum();
                w.iter()
                    .map(|&x| {
                        let frac = if z > 0.0 { x / z } else { 0.0 };
                        1 + (per_motif_slack as f64 * frac).floor() as usize
                    })
                    .collect()
            })
            .collect();
        Self::from_parts(cfg, transition, motifs, spacings)
    }

    /// A function from given parameters (e.g. holo's), checked for consistency: shapes, a
    /// row-stochastic matrix, states in range, spacings that fit in `dim`. Errors name the part.
    pub fn from_parts(
        cfg: &EhrlichConfig,
        transition: Vec<Vec<f64>>,
        motifs: Vec<Vec<usize>>,
        spacings: Vec<Vec<usize>>,
    ) -> Result<Self> {
        cfg.validate()?;
        let (v, c, k) = (cfg.num_states, cfg.num_motifs, cfg.motif_length);
        if transition.len() != v || transition.iter().any(|r| r.len() != v) {
            return Err(Error::config(
                "transition",
                format!("expected a {v}×{v} matrix"),
            ));
        }
        for (i, r) in transition.iter().enumerate() {
            let s: f64 = r.iter().sum();
            if r.iter().any(|&x| !(x >= 0.0) || !x.is_finite()) || (s - 1.0).abs() > 1e-4 {
                return Err(Error::config(
                    "transition",
                    format!("row {i} is not a probability distribution (sum {s})"),
                ));
            }
        }
        if motifs.len() != c || motifs.iter().any(|m| m.len() != k) {
            return Err(Error::config(
                "motifs",
                format!("expected {c} motifs of length {k}"),
            ));
        }
        if let Some((i, _)) = motifs
            .iter()
            .enumerate()
            .find(|(_, m)| m.iter().any(|&s| s >= v))
        {
            return Err(Error::config(
                "motifs",
                format!("motif {i} holds a state ≥ num_states = {v}"),
            ));
        }
        if spacings.len() != c || spacings.iter().any(|s| s.len() + 1 != k) {
            return Err(Error::config(
                "spacings",
                format!("expected {c} spacings of length {}", k - 1),
            ));
        }
        let span: usize = spacings.iter().map(|s| s.iter().sum::<usize>() + 1).sum();
        if spacings.iter().any(|s| s.contains(&0)) || span > cfg.dim {
            return Err(Error::config(
                "spacings",
                format!(
                    "spacings must be ≥ 1 and the spaced motifs ({span} positions) fit in dim = {}",
                    cfg.dim
                ),
            ));
        }
        let stationary = stationary_dist(&transition);
        Ok(Self {
            num_states: v,
            dim: cfg.dim,
            quantization: cfg.quantization(),
            epistasis_factor: cfg.epistasis_factor,
            transition,
            stationary,
            motifs,
            spacings,
        })
    }

    /// Motif length k.
    pub fn motif_length(&self) -> usize {
        self.motifs.first().map_or(0, |m| m.len())
    }

    /// Whether `x` has length `dim`, states in range, and only transitions of positive
    /// probability.
    pub fn is_feasible(&self, x: &[usize]) -> bool {
        x.len() == self.dim
            && x.iter().all(|&s| s < self.num_states)
            && x.windows(2).all(|w| self.transition[w[0]][w[1]] > 0.0)
    }

    /// The quantised presence h_i(x) of each motif (f32, holo's arithmetic).
    pub fn motif_presence(&self, x: &[usize]) -> Vec<f32> {
        let k = self.motif_length();
        let q = self.quantization.max(1);
        let qf1 = k.div_ceil(q);
        let qf2 = (k as f64 / qf1 as f64) as f32;
        self.motifs
            .iter()
            .zip(&self.spacings)
            .map(|(m, s)| {
                let mut offs = Vec::with_capacity(k);
                offs.push(0usize);
                for &d in s {
                    offs.push(offs[offs.len() - 1] + d);
                }
                let max_off = *offs.last().unwrap_or(&0);
                let mut best = 0.0f32;
                if x.len() > max_off {
                    for l in 0..x.len() - max_off {
                        let count = offs
                            .iter()
                            .zip(m)
                            .filter(|(o, a)| x[l + **o] == **a)
                            .count() as f32;
                        let h = (count / qf1 as f32).floor() / qf2;
                        best = best.max(h);
                    }
                }
                best
            })
            .collect()
    }

    /// f(x): Π_i g(h_i(x)) for a feasible x, −∞ otherwise (also for a wrong length or a state out
    /// of range). Computed in f32 as holo does.
    pub fn evaluate(&self, x: &[usize]) -> f64 {
        if !self.is_feasible(x) {
            return f64::NEG_INFINITY;
        }
        let eps = self.epistasis_factor as f32;
        let mut prod = 1.0f32;
        for h in self.motif_presence(x) {
            let coeff = eps * h * (h - 1.0) + 1.0;
            prod *= coeff * h;
        }
        prod as f64
    }

    /// holo's constructive optimum: each motif with its spacing, gaps filled by repeating the
    /// previous element, one motif after the other; the tail repeats the last state. f = 1.
    pub fn optimal_solution(&self) -> Vec<usize> {
        let mut x = Vec::with_capacity(self.dim);
        for (m, s) in self.motifs.iter().zip(&self.spacings) {
            let mut cur = m[0];
            let mut j = 0;
            let mut next_at = 0;
            let span = s.iter().sum::<usize>();
            for idx in 0..=span {
                if idx == next_at {
                    cur = m[j];
                    next_at += s.get(j).copied().unwrap_or(0);
                    j += 1;
                }
                x.push(cur);
            }
        }
        let last = *x.last().unwrap_or(&0);
        x.resize(self.dim, last);
        x
    }

    /// `n` DMP samples of length `dim` from the stationary distribution (feasible initial
    /// solutions, holo's `initial_solution`).
    pub fn initial_solutions(&self, n: usize, rng: &mut Rng) -> Vec<Vec<usize>> {
        (0..n)
            .map(|_| sample_dmp(&self.stationary, &self.transition, self.dim, rng))
            .collect()
    }

    /// `n` uniformly random sequences (mostly infeasible, holo's `random_solution`).
    pub fn random_solutions(&self, n: usize, rng: &mut Rng) -> Vec<Vec<usize>> {
        (0..n)
            .map(|_| (0..self.dim).map(|_| rng.below(self.num_states)).collect())
            .collect()
    }
}

/// The score of a sequence for ranking and rewards, with infeasible (−∞) counted as 0 (LLOME's
/// `get_ehrlich_rewards`).
pub fn score_or_zero(f: f64) -> f64 {
    if f.is_finite() {
        f
    } else {
        0.0
    }
}

/// Hamming distance of two sequences of equal length (positions that differ).
pub fn hamming(a: &[usize], b: &[usize]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x != y).count() + a.len().abs_diff(b.len())
}
