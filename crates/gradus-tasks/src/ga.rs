//! The genetic-algorithm baseline of holo-bench (`holo.optim.DiscreteEvolution`; RESEARCH §3.6)
//! on Ehrlich functions, and the counting [`Oracle`] every optimiser in gradus spends its budget
//! through.
//!
//! One GA step, as holo's (maximising f, i.e. minimising holo's loss −f):
//! 1. score every particle (one oracle call each);
//! 2. survivors: loss ≤ the `survival_quantile` quantile of the losses (linear interpolation, as
//!    `torch.quantile`; when that quantile is not finite, e.g. most particles infeasible, all
//!    survive);
//! 3. every other particle is replaced by a **uniform crossover** of two survivors drawn with
//!    replacement (position from parent 1 with probability `recombine_prob`, else parent 2);
//! 4. **mutation**: every position of every particle becomes a uniformly random state with
//!    probability `mutation_prob`;
//! 5. best-so-far is tracked per oracle call by the [`Oracle`].
//!
//! All particles start as copies of one initial solution (holo copies the parameter). Presets:
//! [`GaConfig::llome_seed`] (LLOME's seed-data generation: 1,000 particles, mutation 0.005,
//! recombination 1.1/L, survival 0.1, 10 steps) and [`GaConfig::holo_benchmark`] (holo's
//! benchmark: 10⁶ particles, mutation 1.5·10⁻⁴, recombination 0.0882, survival 10⁻⁴).

use gradus_tensor::rng::Rng;
use gradus_tensor::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::ehrlich::Ehrlich;

/// The GA's settings (holo's `DiscreteEvolution` arguments plus the number of steps).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GaConfig {
    pub num_particles: usize,
    /// Per-position mutation probability, in (0, 1).
    pub mutation_prob: f64,
    /// Probability of taking a position from the first parent, in [0, 1); `None` = 1.1 / L (as
    /// LLOME's data generation sets it).
    pub recombine_prob: Option<f64>,
    /// Fraction of particles that survive a step, in (0, 1).
    pub survival_quantile: f64,
    /// Steps (each scores every particle once).
    pub steps: usize,
}

impl Default for GaConfig {
    fn default() -> Self {
        Self::llome_seed()
    }
}

impl GaConfig {
    /// LLOME's seed-data GA (`evol_dataset_gen` in the f₂ pipelines).
    pub fn llome_seed() -> Self {
        Self {
            num_particles: 1000,
            mutation_prob: 0.005,
            recombine_prob: None,
            survival_quantile: 0.1,
            steps: 10,
        }
    }

    /// holo-bench's benchmark setting (`config/optimizer/discrete_evolution.yaml` of LLOME).
    pub fn holo_benchmark() -> Self {
        Self {
            num_particles: 1_000_000,
            mutation_prob: 0.00015,
            recombine_prob: Some(0.0882),
            survival_quantile: 0.0001,
            steps: 512,
        }
    }

    /// The recombination probability for sequences of length `dim`.
    pub fn recombine_prob_for(&self, dim: usize) -> f64 {
        self.recombine_prob.unwrap_or(1.1 / dim.max(1) as f64)
    }

    /// holo's checks; errors name the field under `prefix` (e.g. `ga`).
    pub fn validate_at(&self, prefix: &str) -> Result<()> {
        let f = |n: &str| format!("{prefix}.{n}");
        if !(self.mutation_prob > 0.0 && self.mutation_prob < 1.0) {
            return Err(Error::config(f("mutation_prob"), "must be in (0, 1)"));
        }
        if let Some(r) = self.recombine_prob {
            if !(0.0..1.0).contains(&r) {
                return Err(Error::config(f("recombine_prob"), "must be in [0, 1)"));
            }
        }
        if self.num_particles < 1 {
            return Err(Error::config(f("num_particles"), "must be positive"));
        }
        if !(self.survival_quantile > 0.0 && self.survival_quantile < 1.0) {
            return Err(Error::config(f("survival_quantile"), "must be in (0, 1)"));
        }
        if self.survival_quantile * (self.num_particles as f64) < 2.0 {
            return Err(Error::config(
                f("survival_quantile"),
                format!(
                    "survival_quantile · num_particles = {} keeps fewer than two particles",
                    self.survival_quantile * self.num_particles as f64
                ),
            ));
        }
        Ok(())
    }
}

/// Counts oracle calls, enforces a budget, and records the best value found after each call that
/// improved it.
#[derive(Clone, Debug)]
pub struct Oracle<'a> {
    f: &'a Ehrlich,
    calls: u64,
    budget: Option<u64>,
    best: f64,
    best_x: Option<Vec<usize>>,
    /// (calls so far, best f so far) each time the best improved.
    trace: Vec<(u64, f64)>,
}

impl<'a> Oracle<'a> {
    /// An oracle over `f` that answers at most `budget` calls (None: unlimited).
    pub fn new(f: &'a Ehrlich, budget: Option<u64>) -> Self {
        Self {
            f,
            calls: 0,
            budget,
            best: f64::NEG_INFINITY,
            best_x: None,
            trace: Vec::new(),
        }
    }

    /// The function behind the oracle.
    pub fn function(&self) -> &'a Ehrlich {
        self.f
    }

    /// f(x), counting one call; None once the budget is spent.
    pub fn call(&mut self, x: &[usize]) -> Option<f64> {
        if self.exhausted() {
            return None;
        }
        self.calls += 1;
        let y = self.f.evaluate(x);
        if y > self.best {
            self.best = y;
            self.best_x = Some(x.to_vec());
            self.trace.push((self.calls, y));
        }
        Some(y)
    }

    /// Whether the budget is spent.
    pub fn exhausted(&self) -> bool {
        self.budget.is_some_and(|b| self.calls >= b)
    }

    /// Calls made so far.
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// Calls left (None: unlimited).
    pub fn remaining(&self) -> Option<u64> {
        self.budget.map(|b| b.saturating_sub(self.calls))
    }

    /// Best f so far (−∞ before any feasible call).
    pub fn best(&self) -> f64 {
        self.best
    }

    /// The sequence that reached [`Oracle::best`].
    pub fn best_x(&self) -> Option<&[usize]> {
        self.best_x.as_deref()
    }

    /// (calls, best so far) at every improvement.
    pub fn trace(&self) -> &[(u64, f64)] {
        &self.trace
    }
}

/// Best f found within the first `calls` oracle calls of a trace (−∞ if none yet).
pub fn best_at(trace: &[(u64, f64)], calls: u64) -> f64 {
    trace
        .iter()
        .take_while(|(c, _)| *c <= calls)
        .last()
        .map_or(f64::NEG_INFINITY, |t| t.1)
}

/// Regret 1 − max(best, 0): infeasible-only counts as f = 0 (regret 1).
pub fn regret(best: f64) -> f64 {
    1.0 - crate::ehrlich::score_or_zero(best).max(0.0)
}

/// What a GA run saw.
#[derive(Clone, Debug, Default)]
pub struct GaOutcome {
    /// Every distinct particle the oracle scored, with its f, in first-scored order.
    pub scored: Vec<(Vec<usize>, f64)>,
    /// Steps begun (a budget can end the last one part-way).
    pub steps: usize,
}

/// torch.quantile(x, q) with linear interpolation (x unsorted); NaN when interpolating between
/// two infinities.
pub fn quantile(x: &[f64], q: f64) -> f64 {
    let mut s = x.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let pos = q * (s.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    if lo == hi {
        return s[lo];
    }
    s[lo] + (pos - lo as f64) * (s[hi] - s[lo])
}

/// Runs the GA from `init` (every particle a copy) for `cfg.steps` steps or until `oracle`'s
/// budget is spent. Deterministic given `rng`'s state.
pub fn run_ga(
    cfg: &GaConfig,
    init: &[usize],
    oracle: &mut Oracle,
    rng: &mut Rng,
) -> Result<GaOutcome> {
    cfg.validate_at("ga")?;
    let f = oracle.function();
    if init.len() != f.dim {
        return Err(Error::config(
            "init",
            format!(
                "initial solution has length {}, expected {}",
                init.len(),
                f.dim
            ),
        ));
    }
    let n = cfg.num_particles;
    let v = f.num_states;
    let recombine = cfg.recombine_prob_for(f.dim);
    let mut particles: Vec<Vec<usize>> = vec![init.to_vec(); n];
    let mut seen = std::collections::HashSet::new();
    let mut out = GaOutcome::default();
    for _ in 0..cfg.steps {
        if oracle.exhausted() {
            break;
        }
        out.steps += 1;
        // 1. Score (loss = −f).
        let mut loss = Vec::with_capacity(n);
        for p in &particles {
            let Some(y) = oracle.call(p) else {
                return Ok(out);
            };
            if seen.insert(p.clone()) {
                out.scored.push((p.clone(), y));
            }
            loss.push(-y);
        }
        // 2. Survivors.
        let t = quantile(&loss, cfg.survival_quantile);
        let surviving: Vec<bool> = if t < f64::INFINITY {
            loss.iter().map(|&l| l <= t).collect()
        } else {
            vec![true; n]
        };
        let survivors: Vec<Vec<usize>> = particles
            .iter()
            .zip(&surviving)
            .filter(|(_, s)| **s)
            .map(|(p, _)| p.clone())
            .collect();
        // 3. Refill by uniform crossover of two random survivors.
        let ns = survivors.len();
        for (i, &s) in surviving.iter().enumerate() {
            if s {
                continue;
            }
            let a = &survivors[rng.below(ns)];
            let b = &survivors[rng.below(ns)];
            particles[i] = (0..f.dim)
                .map(|j| {
                    if rng.uniform() < recombine {
                        a[j]
                    } else {
                        b[j]
                    }
                })
                .collect();
        }
        // 4. Mutate every particle.
        for p in particles.iter_mut() {
            for x in p.iter_mut() {
                if rng.uniform() < cfg.mutation_prob {
                    *x = rng.below(v);
                }
            }
        }
    }
    Ok(out)
}
