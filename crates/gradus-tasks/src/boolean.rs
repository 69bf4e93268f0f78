//! Boolean function classes as in-context learning prompts (Bhattamishra, Patel, Blunsom, Kanade
//! 2024, "Understanding In-Context Learning in Transformers and LLMs by Learning to Learn Discrete
//! Functions", arXiv 2310.03016; author code `satwik77/incontext-bool`), with the paper's
//! baselines.
//!
//! Inputs are x ∈ {±1}ⁿ (stored as `i8`). A prompt is `(x₁, f(x₁), …, x_m, f(x_m))` with f drawn
//! per prompt from a class; the learner predicts f(x_i) from the i − 1 pairs before it.
//!
//! Classes and their input distributions (the paper's §3 / appendix):
//! - **Conjunction**: each variable enters as a positive literal with p = 0.15, as a negative one
//!   with p = 0.15; inputs uniform except that 30 % of the points are *forced positive* (the
//!   relevant bits set to satisfy every literal, the others uniform) so labels are balanced.
//! - **Disjunction**: the same literal law; 30 % of points forced *negative* (every literal false).
//! - **DNF** (3 terms): each term holds each variable as a positive or a negative literal with
//!   p = 0.1 each; 35 % of points forced positive (one random term satisfied).
//! - **Sparse parity** (k relevant bits): f(x) = Π_{i∈S} x_i, |S| = k, uniform inputs.
//! - **Majority**: each variable relevant with p = 0.5 (at least one); f = +1 iff strictly more
//!   than half of the relevant bits are +1; uniform inputs.
//! - **Integer halfspace** (linear threshold function): w ∈ {−3..3}ⁿ uniform, f = sign(w·x − 0.5);
//!   uniform inputs.
//!
//! Baselines ([`baseline_predictions`]): nearest neighbour (the label of the closest earlier
//! point in Hamming distance, the most recent on ties; +1 with no data), averaging
//! (ŵ = Σ_j y_j x_j, predict sign(ŵ·x), ties → +1), and the optimal learner where the paper names
//! one: the elimination algorithm for conjunctions (keep the literals every positive example
//! satisfies; predict + iff x satisfies them all), its dual for disjunctions, and Gaussian
//! elimination over GF(2) for parities (predict with a parity consistent with the data; exact
//! whenever x lies in the span of the data).

use gradus_tensor::rng::Rng;
use gradus_tensor::{Error, Result};
use serde::{Deserialize, Serialize};

/// A class of Boolean functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "class", rename_all = "snake_case", deny_unknown_fields)]
pub enum BoolClass {
    Conjunction,
    Disjunction,
    /// A DNF of `terms` terms.
    Dnf {
        terms: usize,
    },
    /// Parity of `k` relevant bits.
    SparseParity {
        k: usize,
    },
    Majority,
    /// sign(w·x − 0.5), w ∈ {−3..3}ⁿ.
    IntHalfspace,
}

impl BoolClass {
    /// A short name (`conjunction`, `sparse_parity_2`, ...).
    pub fn name(&self) -> String {
        match self {
            BoolClass::Conjunction => "conjunction".into(),
            BoolClass::Disjunction => "disjunction".into(),
            BoolClass::Dnf { terms } => format!("dnf_{terms}"),
            BoolClass::SparseParity { k } => format!("sparse_parity_{k}"),
            BoolClass::Majority => "majority".into(),
            BoolClass::IntHalfspace => "int_halfspace".into(),
        }
    }

    /// Checks the class against n input bits; errors name the field (`prefix.k`, ...).
    pub fn validate(&self, n_bits: usize, prefix: &str) -> Result<()> {
        if n_bits == 0 {
            return Err(Error::config(
                format!("{prefix}n_bits"),
                "must be at least 1",
            ));
        }
        match *self {
            BoolClass::SparseParity { k } if k == 0 || k > n_bits => Err(Error::config(
                format!("{prefix}k"),
                format!("relevant bits must be in 1..=n_bits ({n_bits}), got {k}"),
            )),
            BoolClass::Dnf { terms: 0 } => Err(Error::config(
                format!("{prefix}terms"),
                "must be at least 1",
            )),
            _ => Ok(()),
        }
    }
}

/// A literal: variable index and sign (+1: x_i = +1 satisfies it).
pub type Literal = (usize, i8);

/// One function drawn from a class.
#[derive(Clone, Debug, PartialEq)]
pub enum BoolFn {
    /// AND of literals (empty: constant +1).
    Conjunction(Vec<Literal>),
    /// OR of literals (empty: constant −1).
    Disjunction(Vec<Literal>),
    /// OR of ANDs.
    Dnf(Vec<Vec<Literal>>),
    /// Product of the bits at these indices.
    Parity(Vec<usize>),
    /// Strict majority of the bits at these indices.
    Majority(Vec<usize>),
    /// sign(w·x − 0.5).
    Halfspace(Vec<i32>),
}

fn lit_true(x: &[i8], &(i, s): &Literal) -> bool {
    x[i] == s
}

impl BoolFn {
    /// f(x) ∈ {−1, +1}.
    pub fn eval(&self, x: &[i8]) -> i8 {
        let b = match self {
            BoolFn::Conjunction(ls) => ls.iter().all(|l| lit_true(x, l)),
            BoolFn::Disjunction(ls) => ls.iter().any(|l| lit_true(x, l)),
            BoolFn::Dnf(ts) => ts.iter().any(|t| t.iter().all(|l| lit_true(x, l))),
            BoolFn::Parity(s) => s.iter().map(|&i| x[i] as i32).product::<i32>() > 0,
            BoolFn::Majority(s) => {
                let pos = s.iter().filter(|&&i| x[i] > 0).count();
                2 * pos > s.len()
            }
            BoolFn::Halfspace(w) => {
                let dot: i32 = w.iter().zip(x).map(|(&a, &b)| a * b as i32).sum();
                dot as f64 - 0.5 > 0.0
            }
        };
        if b {
            1
        } else {
            -1
        }
    }
}

fn literals(n: usize, p: f64, rng: &mut Rng) -> Vec<Literal> {
    let mut out = Vec::new();
    for i in 0..n {
        let u = rng.uniform();
        if u < p {
            out.push((i, 1));
        } else if u < 2.0 * p {
            out.push((i, -1));
        }
    }
    out
}

fn uniform_x(n: usize, rng: &mut Rng) -> Vec<i8> {
    (0..n)
        .map(|_| if rng.below(2) == 0 { -1 } else { 1 })
        .collect()
}

/// Draws a function of `class` over `n` bits.
pub fn sample_fn(class: BoolClass, n: usize, rng: &mut Rng) -> BoolFn {
    match class {
        BoolClass::Conjunction => BoolFn::Conjunction(literals(n, 0.15, rng)),
        BoolClass::Disjunction => BoolFn::Disjunction(literals(n, 0.15, rng)),
        BoolClass::Dnf { terms } => {
            BoolFn::Dnf((0..terms).map(|_| literals(n, 0.1, rng)).collect())
        }
        BoolClass::SparseParity { k } => {
            let mut idx: Vec<usize> = (0..n).collect();
            rng.shuffle(&mut idx);
            let mut s = idx[..k.min(n)].to_vec();
            s.sort_unstable();
            BoolFn::Parity(s)
        }
        BoolClass::Majority => {
            let mut s: Vec<usize> = (0..n).filter(|_| rng.below(2) == 0).collect();
            if s.is_empty() {
                s.push(rng.below(n));
            }
            BoolFn::Majority(s)
        }
        BoolClass::IntHalfspace => {
            BoolFn::Halfspace((0..n).map(|_| rng.below(7) as i32 - 3).collect())
        }
    }
}

/// Draws an input for `f` from the class's input distribution (see the module docs).
pub fn sample_x(f: &BoolFn, n: usize, rng: &mut Rng) -> Vec<i8> {
    let mut x = uniform_x(n, rng);
    match f {
        BoolFn::Conjunction(ls) if rng.uniform() < 0.3 => {
            for &(i, s) in ls {
                x[i] = s;
            }
        }
        BoolFn::Disjunction(ls) if rng.uniform() < 0.3 => {
            for &(i, s) in ls {
                x[i] = -s;
            }
        }
        BoolFn::Dnf(ts) if rng.uniform() < 0.35 && !ts.is_empty() => {
            let t = &ts[rng.below(ts.len())];
            for &(i, s) in t {
                x[i] = s;
            }
        }
        _ => {}
    }
    x
}

/// One prompt: m points (row-major m × n, ±1) and their labels.
#[derive(Clone, Debug, PartialEq)]
pub struct BoolPrompt {
    pub f: BoolFn,
    pub n_bits: usize,
    pub xs: Vec<i8>,
    pub ys: Vec<i8>,
}

impl BoolPrompt {
    /// Point j (n bits).
    pub fn x(&self, j: usize) -> &[i8] {
        &self.xs[j * self.n_bits..(j + 1) * self.n_bits]
    }
}

/// Prompt `index` of `class` over `n_bits` with `points` pairs: a pure function of
/// `(seed, class, index)`.
pub fn prompt(
    class: BoolClass,
    n_bits: usize,
    points: usize,
    seed: u64,
    index: u64,
) -> Result<BoolPrompt> {
    class.validate(n_bits, "")?;
    let mut rng = Rng::derive(
        seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        &format!("boolean/{}", class.name()),
    );
    let f = sample_fn(class, n_bits, &mut rng);
    let mut xs = Vec::with_capacity(points * n_bits);
    let mut ys = Vec::with_capacity(points);
    for _ in 0..points {
        let x = sample_x(&f, n_bits, &mut rng);
        ys.push(f.eval(&x));
        xs.extend_from_slice(&x);
    }
    Ok(BoolPrompt { f, n_bits, xs, ys })
}

/// A baseline learner of the paper.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Baseline {
    NearestNeighbour,
    Averaging,
    /// Elimination (conjunction/disjunction) or GF(2) elimination (parity); None elsewhere.
    Optimal,
}

/// Whether `class` has an optimal learner here.
pub fn has_optimal(class: BoolClass) -> bool {
    matches!(
        class,
        BoolClass::Conjunction | BoolClass::Disjunction | BoolClass::SparseParity { .. }
    )
}

/// Predictions of `baseline` at every position of `p` (each from the earlier pairs only); None
/// when the baseline does not exist for `class`.
pub fn baseline_predictions(
    p: &BoolPrompt,
    class: BoolClass,
    baseline: Baseline,
) -> Option<Vec<i8>> {
    let m = p.ys.len();
    let n = p.n_bits;
    match baseline {
        Baseline::NearestNeighbour => Some(
            (0..m)
                .map(|i| {
                    let mut best: Option<(usize, i8)> = None;
                    for j in 0..i {
                        let d = p.x(j).iter().zip(p.x(i)).filter(|(a, b)| a != b).count();
                        // `<=`: the most recent point wins ties.
                        if best.is_none_or(|(bd, _)| d <= bd) {
                            best = Some((d, p.ys[j]));
                        }
                    }
                    best.map_or(1, |(_, y)| y)
                })
                .collect(),
        ),
        Baseline::Averaging => {
            let mut w = vec![0i64; n];
            let mut out = Vec::with_capacity(m);
            for i in 0..m {
                let dot: i64 = w.iter().zip(p.x(i)).map(|(&a, &b)| a * b as i64).sum();
                out.push(if dot >= 0 { 1 } else { -1 });
                for (a, &b) in w.iter_mut().zip(p.x(i)) {
                    *a += (p.ys[i] as i64) * b as i64;
                }
            }
            Some(out)
        }
        Baseline::Optimal => match class {
            BoolClass::Conjunction => Some(elimination(p, true)),
            BoolClass::Disjunction => Some(elimination(p, false)),
            BoolClass::SparseParity { .. } => Some(gf2_parity(p)),
            _ => None,
        },
    }
}

/// The elimination algorithm: for conjunctions keep the literals every positive example satisfies
/// and predict + iff all kept literals hold; for disjunctions (`conj = false`) drop the literals a
/// negative example satisfies and predict + iff some kept literal holds.
fn elimination(p: &BoolPrompt, conj: bool) -> Vec<i8> {
    let n = p.n_bits;
    // kept[2i] = literal x_i, kept[2i+1] = literal ¬x_i.
    let mut kept = vec![true; 2 * n];
    let holds = |x: &[i8], l: usize| {
        if l.is_multiple_of(2) {
            x[l / 2] > 0
        } else {
            x[l / 2] < 0
        }
    };
    let mut out = Vec::with_capacity(p.ys.len());
    for i in 0..p.ys.len() {
        let x = p.x(i);
        let pred = if conj {
            (0..2 * n).filter(|&l| kept[l]).all(|l| holds(x, l))
        } else {
            (0..2 * n).filter(|&l| kept[l]).any(|l| holds(x, l))
        };
        out.push(if pred { 1 } else { -1 });
        let learn = if conj { p.ys[i] > 0 } else { p.ys[i] < 0 };
        if learn {
            for l in 0..2 * n {
                if conj && !holds(x, l) {
                    kept[l] = false;
                }
                if !conj && holds(x, l) {
                    kept[l] = false;
                }
            }
        }
    }
    out
}

/// Parity learning by Gaussian elimination over GF(2): bit b_i = (x_i = −1), label bit
/// (y = −1); a parity S with Σ_{i∈S} b_i = label bit (mod 2) is kept consistent with the data,
/// free variables set to 0.
fn gf2_parity(p: &BoolPrompt) -> Vec<i8> {
    let n = p.n_bits;
    // Reduced rows: (pivot column, coefficients over n bits, rhs).
    let mut rows: Vec<(usize, Vec<u8>, u8)> = Vec::new();
    let bits = |x: &[i8]| -> Vec<u8> { x.iter().map(|&v| (v < 0) as u8).collect() };
    let mut out = Vec::with_capacity(p.ys.len());
    for i in 0..p.ys.len() {
        // Solution: free variables 0, back-substitute (rows are kept fully reduced).
        let mut s = vec![0u8; n];
        for (piv, _, rhs) in &rows {
            s[*piv] = *rhs;
        }
        let x = bits(p.x(i));
        let parity: u8 = x.iter().zip(&s).map(|(a, b)| a & b).fold(0, |a, b| a ^ b);
        out.push(if parity == 0 { 1 } else { -1 });
        // Insert the new equation.
        let mut r = x;
        let mut rhs = (p.ys[i] < 0) as u8;
        for (piv, row, rr) in &rows {
            if r[*piv] == 1 {
                for (a, b) in r.iter_mut().zip(row) {
                    *a ^= b;
                }
                rhs ^= rr;
            }
        }
        if let Some(piv) = r.iter().position(|&v| v == 1) {
            // Eliminate the new pivot from the other rows (full reduction).
            for (_, row, rr) in rows.iter_mut() {
                if row[piv] == 1 {
                    for (a, b) in row.iter_mut().zip(&r) {
                        *a ^= b;
                    }
                    *rr ^= rhs;
                }
            }
            rows.push((piv, r, rhs));
        }
    }
    out
}
