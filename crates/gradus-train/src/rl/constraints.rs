//! Constrained RL over composite rewards (Moskovitz et al. 2024, "Confronting reward model
//! overoptimization with constrained RLHF"; RESEARCH §3.5): `[constraints]` of `train rl` with
//! `[algorithm] kind = "ppo"`.
//!
//! The KL to the reference is the objective and each `[[rewards]]` component r_i a constraint
//! with threshold θ_i (its "proxy point"): max_π min_λ E[−β·KL] + Σ_i λ_i (E[r_i] − θ_i).
//! - **μ-PPO** (`kind = "inequality"`): E[r_i] ≥ θ_i, λ_i = sigmoid(p_i) ∈ (0, 1).
//! - **ξ-PPO** (`kind = "equality"`): E[r_i] = θ_i, λ_i = tanh(p_i) ∈ (−1, 1).
//! - Each component and the KL has its own value head; their GAE advantages are whitened and
//!   mixed: Â = (N − Σ_i λ_i)·Â_KL + Σ_i λ_i Â_i ([`mix_advantages`]).
//! - The multipliers minimise Σ_i λ_i (mean r_i − θ_i) by SGD with momentum (PyTorch's:
//!   buf ← m·buf + g, p ← p − lr·buf; lr 0.1, momentum 0.1), once per generation batch, so a
//!   violated constraint (mean r_i < θ_i) raises λ_i ([`Multipliers::update`]). `proportional`
//!   K_p > 0 adds the last batch's error inside the squash (a PI Lagrangian, Stooke, Achiam &
//!   Abbeel 2020, "Responsive Safety in RL by PID Lagrangian Methods"), which damps the cycling.
//! - **NM-PPO** (`search = "nelder_mead"`): one run that moves θ by Nelder–Mead (α 1, γ 2, ρ 0.5,
//!   σ 0.5; ≤ `search_iterations` iterations, stop when the simplex's values spread less than
//!   `search_tol`) to maximise an evaluation score (`eval`, weighted rewards), each evaluation being
//!   the mean score over `search_every` generation batches at the θ asked, after
//!   `search_burn_in` batches that let the policy respond to it, or (with `search_reach_tol`) once
//!   the policy has reached θ, an unreached θ scoring the worst value ([`NelderMead`],
//!   [`ConstraintState::search_after_batch`]).

use gradus_tensor::{Error, Result};
use serde::{Deserialize, Serialize};

use super::rewards::RewardSpec;

/// Which constraints (none: plain PPO on the weighted reward sum).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConstraintKind {
    #[default]
    None,
    /// μ-PPO: E[r_i] ≥ θ_i.
    Inequality,
    /// ξ-PPO: E[r_i] = θ_i.
    Equality,
}

/// How the thresholds move during the run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdSearch {
    /// θ as configured.
    #[default]
    Fixed,
    /// NM-PPO: Nelder–Mead over θ against the `eval` score.
    NelderMead,
}

/// `[constraints]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConstraintsSection {
    pub kind: ConstraintKind,
    /// θ_i, one per `[[rewards]]` entry (the starting point of the search under NM-PPO).
    pub thresholds: Vec<f64>,
    /// SGD learning rate and momentum of the multipliers.
    pub lr: f64,
    pub momentum: f64,
    /// Proportional gain K_p of a PI Lagrangian (Stooke, Achiam & Abbeel 2020): λ_i =
    /// squash(p_i + K_p·(θ_i − mean_i)), the error of the last batch added to the integral p_i.
    /// It damps the cycling of policy and multipliers. 0 (default): the paper's pure SGD update.
    pub proportional: f64,
    /// λ_i at the start (after the squash; "initialised near 0").
    pub initial: f64,
    /// Value-loss weight of each component's value head (the KL head uses `algorithm.vf_coef`).
    pub vf_coef: f64,
    pub search: ThresholdSearch,
    /// NM-PPO: generation batches per evaluation of a θ.
    pub search_every: usize,
    /// NM-PPO: generation batches at a newly asked θ before its evaluation starts (the policy
    /// needs time to respond to new thresholds; scoring them at once measures the old θ's policy).
    /// With `search_reach_tol` > 0 this is the most it waits for θ to be reached; a θ not
    /// reached by then scores the worst value.
    pub search_burn_in: usize,
    /// NM-PPO: θ counts as reached when every component's mean over the last
    /// `search_reach_window` batches is within this fraction of its threshold (equality:
    /// |mean − θ_i| ≤ tol·|θ_i|; inequality: mean ≥ θ_i − tol·|θ_i|), as the paper's
    /// implementation tests before it scores a θ (±5%). 0: off (wait exactly `search_burn_in`
    /// batches, score whatever the policy does).
    pub search_reach_tol: f64,
    /// NM-PPO: the batches whose mean component values the reach test reads (one batch's mean
    /// is noisy enough to look reached by chance).
    pub search_reach_window: usize,
    /// NM-PPO: most Nelder–Mead iterations; then θ stays at the best point found.
    pub search_iterations: usize,
    /// NM-PPO: stop when the simplex's evaluation scores spread less than this (and, with
    /// `search_xtol` > 0, its vertices lie within `search_xtol` of the best).
    pub search_tol: f64,
    /// NM-PPO: the simplex size also required to stop early (scipy's `xatol`); 0: not required.
    pub search_xtol: f64,
    /// NM-PPO: the initial simplex's step along each θ_i.
    pub search_step: f64,
    /// The evaluation score (Σ weight · reward; logged as `eval_score` whenever given; NM-PPO
    /// maximises it). Never part of the training reward.
    pub eval: Vec<RewardSpec>,
}

impl Default for ConstraintsSection {
    fn default() -> Self {
        Self {
            kind: ConstraintKind::None,
            thresholds: Vec::new(),
            lr: 0.1,
            momentum: 0.1,
            proportional: 0.0,
            initial: 0.01,
            vf_coef: 0.5,
            search: ThresholdSearch::Fixed,
            search_every: 4,
            search_burn_in: 0,
            search_reach_tol: 0.0,
            search_reach_window: 4,
            search_iterations: 10,
            search_tol: 0.01,
            search_xtol: 0.0,
            search_step: 0.1,
            eval: Vec::new(),
        }
    }
}

impl ConstraintsSection {
    pub fn active(&self) -> bool {
        self.kind != ConstraintKind::None
    }

    /// Errors name `constraints.<field>`; `components` is the number of `[[rewards]]`.
    pub fn validate(&self, components: usize, ppo: bool) -> Result<()> {
        let f = |k: &str| format!("constraints.{k}");
        for (i, e) in self.eval.iter().enumerate() {
            e.validate(i)
                .map_err(|err| Error::config(f(&format!("eval[{i}]")), err.to_string()))?;
        }
        if !self.active() {
            if self.search != ThresholdSearch::Fixed {
                return Err(Error::config(
                    f("search"),
                    "a threshold search needs constraints (kind = \"inequality\" or \"equality\")",
                ));
            }
            return Ok(());
        }
        if !ppo {
            return Err(Error::config(
                f("kind"),
                "constraints need per-component value heads: set algorithm.kind = \"ppo\"",
            ));
        }
        if self.thresholds.len() != components {
            return Err(Error::config(
                f("thresholds"),
                format!(
                    "{} thresholds for {components} [[rewards]] components (one each)",
                    self.thresholds.len()
                ),
            ));
        }
        if let Some(t) = self.thresholds.iter().find(|t| !t.is_finite()) {
            return Err(Error::config(f("thresholds"), format!("{t} is not finite")));
        }
        for (k, v) in [
            ("lr", self.lr),
            ("vf_coef", self.vf_coef),
            ("proportional", self.proportional),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(Error::config(f(k), format!("must be ≥ 0, got {v}")));
            }
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(Error::config(f("momentum"), "must be in [0, 1)"));
        }
        let lim = match self.kind {
            ConstraintKind::Inequality => 0.0..1.0,
            _ => -1.0..1.0,
        };
        if !(lim.contains(&self.initial) && self.initial != lim.start) {
            return Err(Error::config(
                f("initial"),
                format!(
                    "λ starts at {}: must be inside ({}, {}) for {:?} constraints",
                    self.initial, lim.start, lim.end, self.kind
                ),
            ));
        }
        if self.search == ThresholdSearch::NelderMead {
            if self.eval.is_empty() {
                return Err(Error::config(
                    f("eval"),
                    "NM-PPO maximises an evaluation score: give at least one eval reward",
                ));
            }
            if self.search_every == 0 {
                return Err(Error::config(f("search_every"), "must be ≥ 1"));
            }
            if !(self.search_step > 0.0 && self.search_step.is_finite()) {
                return Err(Error::config(f("search_step"), "must be > 0"));
            }
            for (k, v) in [
                ("search_reach_tol", self.search_reach_tol),
                ("search_xtol", self.search_xtol),
            ] {
                if !(v >= 0.0 && v.is_finite()) {
                    return Err(Error::config(f(k), format!("must be ≥ 0, got {v}")));
                }
            }
        }
        Ok(())
    }
}

/// Where the constraints stand (part of every checkpoint).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConstraintState {
    pub multipliers: Multipliers,
    /// θ in use (moved by NM-PPO).
    pub thresholds: Vec<f64>,
    /// NM-PPO's search and the evaluation-score sum over the batches at the θ asked.
    pub search: Option<NelderMead>,
    pub search_sum: f64,
    pub search_batches: usize,
    /// Batches spent at the current θ before its evaluation (`search_burn_in`).
    #[serde(default)]
    pub search_waited: usize,
    /// The component means of the last batches at the current θ (`search_reach_window`).
    #[serde(default)]
    pub search_recent: Vec<Vec<f64>>,
}

impl ConstraintState {
    /// NM-PPO after one generation batch made at θ = `self.thresholds`, whose component means
    /// are `means` and evaluation score `eval`. Without `search_reach_tol`: wait
    /// `search_burn_in` batches, then add `search_every` batches to θ's evaluation. With it:
    /// wait until the mean of the last `search_reach_window` batches has reached θ, then
    /// evaluate; a θ not reached within `search_burn_in` batches scores the worst value (an
    /// extreme barrier: the eval score there measures a policy that is elsewhere). Each value
    /// told to Nelder–Mead is the negated mean score (it minimises); θ then moves to the next
    /// point it asks (its best once done).
    pub fn search_after_batch(&mut self, cons: &ConstraintsSection, means: &[f64], eval: f64) {
        let Some(nm) = self.search.as_ref() else {
            return;
        };
        if nm.done() {
            return;
        }
        if self.search_batches == 0 {
            if cons.search_reach_tol > 0.0 {
                self.search_recent.push(means.to_vec());
                let w = cons.search_reach_window.max(1);
                if self.search_recent.len() > w {
                    self.search_recent.remove(0);
                }
                let avg: Vec<f64> = (0..means.len())
                    .map(|i| {
                        self.search_recent.iter().map(|m| m[i]).sum::<f64>()
                            / self.search_recent.len() as f64
                    })
                    .collect();
                let tol = cons.search_reach_tol;
                let reached = self.search_recent.len() == w
                    && avg
                        .iter()
                        .zip(&self.thresholds)
                        .all(|(&m, &t)| match cons.kind {
                            ConstraintKind::Inequality => m >= t - tol * t.abs(),
                            _ => (m - t).abs() <= tol * t.abs(),
                        });
                if !reached {
                    if self.search_waited >= cons.search_burn_in {
                        self.tell_search(f64::INFINITY);
                    } else {
                        self.search_waited += 1;
                    }
                    return;
                }
            } else if self.search_waited < cons.search_burn_in {
                self.search_waited += 1;
                return;
            }
        }
        self.search_sum += eval;
        self.search_batches += 1;
        if self.search_batches >= cons.search_every {
            self.tell_search(-self.search_sum / self.search_batches as f64);
        }
    }

    /// Tells the search θ's value and moves θ to the next point asked (the best once done).
    fn tell_search(&mut self, f: f64) {
        let Some(nm) = self.search.as_mut() else {
            return;
        };
        nm.tell(f);
        self.search_sum = 0.0;
        self.search_batches = 0;
        self.search_waited = 0;
        self.search_recent.clear();
        if let Some(x) = nm.ask().or_else(|| nm.best().map(|b| b.0)) {
            self.thresholds = x.to_vec();
        }
    }
}

/// The multipliers' raw parameters p_i, momentum buffers and proportional terms
/// (λ_i = squash(p_i + q_i), q_i = K_p·(θ_i − mean_i) of the last batch; q = 0 without
/// `constraints.proportional`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Multipliers {
    pub raw: Vec<f64>,
    pub momentum: Vec<f64>,
    #[serde(default)]
    pub proportional: Vec<f64>,
}

impl Multipliers {
    /// `n` multipliers at λ = `initial`.
    pub fn new(kind: ConstraintKind, n: usize, initial: f64) -> Self {
        let p = match kind {
            ConstraintKind::Inequality => (initial / (1.0 - initial)).ln(),
            _ => initial.atanh(),
        };
        Self {
            raw: vec![p; n],
            momentum: vec![0.0; n],
            proportional: vec![0.0; n],
        }
    }

    /// λ_i = squash(p_i + q_i).
    pub fn lambdas(&self, kind: ConstraintKind) -> Vec<f64> {
        self.raw
            .iter()
            .enumerate()
            .map(|(i, &p)| squash(kind, p + self.proportional.get(i).copied().unwrap_or(0.0)))
            .collect()
    }

    /// One SGD step (with momentum) on Σ_i λ_i (mean_i − θ_i): g_i = squash'(p_i)(mean_i − θ_i);
    /// then the proportional term q_i = `kp`·(θ_i − mean_i) (PID Lagrangian's P, Stooke et al.
    /// 2020: the integral alone lets the policy overshoot and cycle; `kp` = 0 is the paper's
    /// update).
    pub fn update(
        &mut self,
        kind: ConstraintKind,
        means: &[f64],
        thresholds: &[f64],
        lr: f64,
        m: f64,
        kp: f64,
    ) {
        self.proportional.resize(self.raw.len(), 0.0);
        for i in 0..self.raw.len() {
            let g = dsquash(kind, self.raw[i]) * (means[i] - thresholds[i]);
            self.momentum[i] = m * self.momentum[i] + g;
            self.raw[i] -= lr * self.momentum[i];
            self.proportional[i] = kp * (thresholds[i] - means[i]);
        }
    }
}

/// sigmoid (inequality) or tanh (equality).
pub fn squash(kind: ConstraintKind, p: f64) -> f64 {
    match kind {
        ConstraintKind::Inequality => 1.0 / (1.0 + (-p).exp()),
        _ => p.tanh(),
    }
}

fn dsquash(kind: ConstraintKind, p: f64) -> f64 {
    let s = squash(kind, p);
    match kind {
        ConstraintKind::Inequality => s * (1.0 - s),
        _ => 1.0 - s * s,
    }
}

/// Â = (N − Σ_i λ_i)·Â_KL + Σ_i λ_i Â_i per token, N = the number of components; `comps[i]` is
/// component i's (whitened) per-token advantages, all shaped as `kl`.
pub fn mix_advantages(kl: &[Vec<f32>], comps: &[Vec<Vec<f32>>], lambdas: &[f64]) -> Vec<Vec<f32>> {
    let n = lambdas.len() as f64;
    let w_kl = n - lambdas.iter().sum::<f64>();
    kl.iter()
        .enumerate()
        .map(|(s, row)| {
            row.iter()
                .enumerate()
                .map(|(t, &a)| {
                    let mut x = w_kl * a as f64;
                    for (c, &l) in comps.iter().zip(lambdas) {
                        x += l * c[s][t] as f64;
                    }
                    x as f32
                })
                .collect()
        })
        .collect()
}

/// Where a Nelder–Mead iteration stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Phase {
    /// Evaluating initial vertex i.
    Init(usize),
    Reflect,
    Expand {
        xr: Vec<f64>,
        fr: f64,
    },
    Contract {
        xr: Vec<f64>,
        fr: f64,
        inside: bool,
    },
    /// Re-evaluating vertex i after a shrink.
    Shrink(usize),
    Done,
}

/// Nelder–Mead minimisation as ask/tell (Nelder & Mead 1965 with the standard coefficients
/// α 1, γ 2, ρ 0.5, σ 0.5): [`NelderMead::ask`] gives the point to evaluate, [`NelderMead::tell`]
/// its value. Serializable, so a run's search resumes exactly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NelderMead {
    simplex: Vec<Vec<f64>>,
    /// None: not evaluated yet (JSON has no NaN).
    values: Vec<Option<f64>>,
    phase: Phase,
    pending: Vec<f64>,
    iteration: usize,
    max_iterations: usize,
    tol: f64,
    /// Also required to stop early: every vertex within `xtol` of the best in each coordinate
    /// (scipy's `xatol`); 0: not required.
    #[serde(default)]
    xtol: f64,
}

impl NelderMead {
    /// Simplex x0, x0 + step·e_1, …, x0 + step·e_n.
    pub fn new(x0: &[f64], step: f64, max_iterations: usize, tol: f64) -> Self {
        let mut simplex = vec![x0.to_vec()];
        for i in 0..x0.len() {
            let mut x = x0.to_vec();
            x[i] += step;
            simplex.push(x);
        }
        Self {
            pending: x0.to_vec(),
            values: vec![None; simplex.len()],
            simplex,
            phase: Phase::Init(0),
            iteration: 0,
            max_iterations,
            tol,
            xtol: 0.0,
        }
    }

    /// Stops early only when, besides the values' spread, the simplex is this small (scipy's
    /// `xatol`: every vertex within `xtol` of the best in each coordinate). With noisy
    /// evaluations a spread below `tol` alone can happen by chance on a wide simplex.
    pub fn with_xtol(mut self, xtol: f64) -> Self {
        self.xtol = xtol;
        self
    }

    /// The point whose value [`NelderMead::tell`] expects; None once the search has ended.
    pub fn ask(&self) -> Option<&[f64]> {
        (self.phase != Phase::Done).then_some(self.pending.as_slice())
    }

    pub fn done(&self) -> bool {
        self.phase == Phase::Done
    }

    pub fn iterations(&self) -> usize {
        self.iteration
    }

    /// The best vertex evaluated so far and its value.
    pub fn best(&self) -> Option<(&[f64], f64)> {
        self.simplex
            .iter()
            .zip(&self.values)
            .filter_map(|(x, v)| Some((x, (*v)?)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(x, v)| (x.as_slice(), v))
    }

    fn sort(&mut self) {
        let mut idx: Vec<usize> = (0..self.simplex.len()).collect();
        idx.sort_by(|&a, &b| self.v(a).total_cmp(&self.v(b)));
        self.simplex = idx.iter().map(|&i| self.simplex[i].clone()).collect();
        self.values = idx.iter().map(|&i| self.values[i]).collect();
    }

    /// Vertex i's value (only asked of evaluated vertices).
    fn v(&self, i: usize) -> f64 {
        self.values[i].unwrap_or(f64::MAX)
    }

    fn centroid(&self) -> Vec<f64> {
        let n = self.simplex.len() - 1;
        let mut c = vec![0.0; n];
        for x in &self.simplex[..n] {
            for (ci, xi) in c.iter_mut().zip(x) {
                *ci += xi / n as f64;
            }
        }
        c
    }

    /// c + t·(x − c).
    fn along(c: &[f64], x: &[f64], t: f64) -> Vec<f64> {
        c.iter().zip(x).map(|(c, x)| c + t * (x - c)).collect()
    }

    fn start_iteration(&mut self) {
        self.sort();
        let spread = self.v(self.values.len() - 1) - self.v(0);
        let small = self.xtol <= 0.0
            || self.simplex[1..].iter().all(|x| {
                x.iter()
                    .zip(&self.simplex[0])
                    .all(|(a, b)| (a - b).abs() <= self.xtol)
            });
        if self.iteration >= self.max_iterations || (spread < self.tol && small) {
            self.phase = Phase::Done;
            return;
        }
        let c = self.centroid();
        self.pending = Self::along(&c, &self.simplex[self.simplex.len() - 1], -1.0);
        self.phase = Phase::Reflect;
    }

    fn accept(&mut self, x: Vec<f64>, f: f64) {
        let w = self.simplex.len() - 1;
        self.simplex[w] = x;
        self.values[w] = Some(f);
        self.iteration += 1;
        self.start_iteration();
    }

    /// Records the value of the point [`NelderMead::ask`] gave (non-finite values count as the
    /// largest f64).
    pub fn tell(&mut self, f: f64) {
        let f = if f.is_finite() { f } else { f64::MAX };
        let n = self.simplex.len() - 1;
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Done => {}
            Phase::Init(i) => {
                self.values[i] = Some(f);
                if i < n {
                    self.phase = Phase::Init(i + 1);
                    self.pending = self.simplex[i + 1].clone();
                } else {
                    self.start_iteration();
                }
            }
            Phase::Reflect => {
                let xr = self.pending.clone();
                let c = self.centroid();
                if f < self.v(0) {
                    self.pending = Self::along(&c, &xr, 2.0);
                    self.phase = Phase::Expand { xr, fr: f };
                } else if f < self.v(n - 1) {
                    self.accept(xr, f);
                } else {
                    let inside = f >= self.v(n);
                    self.pending = if inside {
                        Self::along(&c, &self.simplex[n], 0.5)
                    } else {
                        Self::along(&c, &xr, 0.5)
                    };
                    self.phase = Phase::Contract { xr, fr: f, inside };
                }
            }
            Phase::Expand { xr, fr } => {
                if f < fr {
                    let xe = self.pending.clone();
                    self.accept(xe, f);
                } else {
                    self.accept(xr, fr);
                }
            }
            Phase::Contract { fr, inside, .. } => {
                let ok = if inside { f < self.v(n) } else { f <= fr };
                if ok {
                    let xc = self.pending.clone();
                    self.accept(xc, f);
                } else {
                    let best = self.simplex[0].clone();
                    for i in 1..=n {
                        self.simplex[i] = Self::along(&best, &self.simplex[i], 0.5);
                        self.values[i] = None;
                    }
                    self.pending = self.simplex[1].clone();
                    self.phase = Phase::Shrink(1);
                }
            }
            Phase::Shrink(i) => {
                self.values[i] = Some(f);
                if i < n {
                    self.pending = self.simplex[i + 1].clone();
                    self.phase = Phase::Shrink(i + 1);
                } else {
                    self.iteration += 1;
                    self.start_iteration();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(x: &[f64]) -> f64 {
        (x[0] - 1.0).powi(2) + (x[1] + 0.5).powi(2)
    }

    #[test]
    fn nelder_mead_steps_by_hand_then_converges() {
        // Simplex (0,0), (0.5,0), (0,0.5): f = 1.25, 0.5, 2. Worst (0,0.5); centroid of the others
        // (0.25, 0); reflection (0.5, −0.5), f 0.25 < best 0.5 → expansion c + 2(xr − c) =
        // (0.75, −1), f 0.3125 ≥ 0.25 → keep the reflection.
        let mut nm = NelderMead::new(&[0.0, 0.0], 0.5, 200, 1e-12);
        let mut asked = Vec::new();
        for _ in 0..5 {
            let x = nm.ask().unwrap().to_vec();
            nm.tell(f(&x));
            asked.push(x);
        }
        assert_eq!(
            asked,
            vec![
                vec![0.0, 0.0],
                vec![0.5, 0.0],
                vec![0.0, 0.5],
                vec![0.5, -0.5],
                vec![0.75, -1.0]
            ]
        );
        assert_eq!(nm.iterations(), 1);
        assert_eq!(nm.best().unwrap().0, &[0.5, -0.5]);
        while let Some(x) = nm.ask().map(<[f64]>::to_vec) {
            nm.tell(f(&x));
        }
        let (x, v) = nm.best().unwrap();
        assert!(
            (x[0] - 1.0).abs() < 1e-4 && (x[1] + 0.5).abs() < 1e-4,
            "{x:?}"
        );
        assert!(v < 1e-8);
        // The state survives JSON mid-search (unevaluated vertices included) and goes on the same.
        let mut a = NelderMead::new(&[0.0, 0.0], 0.5, 50, 0.0);
        a.tell(1.0);
        let mut b: NelderMead = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(a, b);
        for _ in 0..20 {
            let (xa, xb) = (a.ask().unwrap().to_vec(), b.ask().unwrap().to_vec());
            assert_eq!(xa, xb);
            a.tell(f(&xa));
            b.tell(f(&xb));
        }
        // The iteration cap ends the search.
        let mut nm = NelderMead::new(&[0.0, 0.0], 0.5, 3, 0.0);
        while let Some(x) = nm.ask().map(<[f64]>::to_vec) {
            nm.tell(f(&x));
        }
        assert_eq!(nm.iterations(), 3);
    }

    #[test]
    fn a_violated_constraint_raises_its_multiplier() {
        for kind in [ConstraintKind::Inequality, ConstraintKind::Equality] {
            let mut m = Multipliers::new(kind, 2, 0.01);
            let l0 = m.lambdas(kind);
            assert!((l0[0] - 0.01).abs() < 1e-12, "{l0:?}");
            // Component 0 below its threshold, component 1 above.
            m.update(kind, &[0.2, 0.9], &[0.5, 0.5], 0.1, 0.1, 0.0);
            let l1 = m.lambdas(kind);
            assert!(l1[0] > l0[0] && l1[1] < l0[1], "{kind:?}: {l0:?} → {l1:?}");
        }
        // By hand, inequality: p = logit(0.01), g = 0.01·0.99·(0.2 − 0.5) = −0.00297, buf = g,
        // p' = p + 0.1·0.00297; a second step: buf = 0.1·g + g' (momentum).
        let kind = ConstraintKind::Inequality;
        let mut m = Multipliers::new(kind, 1, 0.01);
        let p0 = m.raw[0];
        m.update(kind, &[0.2], &[0.5], 0.1, 0.1, 0.0);
        let g0 = 0.01 * 0.99 * (0.2 - 0.5);
        assert!((m.raw[0] - (p0 - 0.1 * g0)).abs() < 1e-12);
        let s = squash(kind, m.raw[0]);
        let g1 = s * (1.0 - s) * (0.2 - 0.5);
        let p1 = m.raw[0];
        m.update(kind, &[0.2], &[0.5], 0.1, 0.1, 0.0);
        assert!((m.raw[0] - (p1 - 0.1 * (0.1 * g0 + g1))).abs() < 1e-12);
    }

    #[test]
    fn the_proportional_term_adds_the_last_error_inside_the_squash() {
        // Inequality, λ0 = 0.5 (p = 0), mean 0.2 below θ 0.5, lr 0.1, momentum 0.1, K_p 2:
        // g = 0.5·0.5·(0.2 − 0.5) = −0.075, p = 0 + 0.1·0.075 = 0.0075, q = 2·(0.5 − 0.2) = 0.6,
        // λ = sigmoid(0.6075) = 1/(1 + e^−0.6075) = 0.647370 (by calculator).
        let kind = ConstraintKind::Inequality;
        let mut m = Multipliers::new(kind, 1, 0.5);
        m.update(kind, &[0.2], &[0.5], 0.1, 0.1, 2.0);
        assert!((m.raw[0] - 0.0075).abs() < 1e-12, "{m:?}");
        assert!((m.lambdas(kind)[0] - 0.647370).abs() < 1e-6, "{m:?}");
        // K_p = 0 is the pure SGD update: λ = sigmoid(0.0075).
        let mut z = Multipliers::new(kind, 1, 0.5);
        z.update(kind, &[0.2], &[0.5], 0.1, 0.1, 0.0);
        assert!((z.lambdas(kind)[0] - squash(kind, 0.0075)).abs() < 1e-15);
        // Equality: a component above θ gets a negative proportional push (tanh(p − K_p·0.3)).
        let kind = ConstraintKind::Equality;
        let mut e = Multipliers::new(kind, 1, 0.0);
        e.update(kind, &[0.8], &[0.5], 0.0, 0.0, 1.0);
        assert!(
            (e.lambdas(kind)[0] - (-0.3f64).tanh()).abs() < 1e-12,
            "{e:?}"
        );
    }

    #[test]
    fn nelder_mead_with_xtol_does_not_stop_on_a_wide_simplex() {
        // A flat function: every spread is 0 < tol, so without xtol the search ends after the
        // initial simplex; with xtol it goes on (contracting and shrinking) until every vertex is
        // within xtol of the best, but not onto a single point.
        let flat = |_: &[f64]| 1.0;
        let mut a = NelderMead::new(&[0.0, 0.0], 0.5, 100, 0.01);
        while let Some(x) = a.ask().map(<[f64]>::to_vec) {
            a.tell(flat(&x));
        }
        assert_eq!(a.iterations(), 0);
        let mut b = NelderMead::new(&[0.0, 0.0], 0.5, 100, 0.01).with_xtol(0.01);
        while let Some(x) = b.ask().map(<[f64]>::to_vec) {
            b.tell(flat(&x));
        }
        assert!(b.iterations() > 0);
        let best = b.best().unwrap().0.to_vec();
        for v in &b.simplex {
            for (x, y) in v.iter().zip(&best) {
                assert!((x - y).abs() <= 0.01, "{:?}", b.simplex);
            }
        }
        assert!(b.simplex.iter().any(|v| v != &best));
    }

    fn search_state(cons: &ConstraintsSection) -> ConstraintState {
        ConstraintState {
            multipliers: Multipliers::new(cons.kind, 2, 0.1),
            thresholds: cons.thresholds.clone(),
            search: Some(NelderMead::new(&cons.thresholds, 0.1, 10, 0.0)),
            ..Default::default()
        }
    }

    #[test]
    fn nm_ppo_scores_a_theta_once_reached_and_an_unreached_one_worst() {
        let cons = ConstraintsSection {
            kind: ConstraintKind::Equality,
            thresholds: vec![0.5, 0.5],
            search: ThresholdSearch::NelderMead,
            search_every: 2,
            search_burn_in: 3,
            search_reach_tol: 0.1,
            search_reach_window: 2,
            ..Default::default()
        };
        let mut st = search_state(&cons);
        // θ0 = (0.5, 0.5), reached means ±0.05. The components stay at (0.3, 0.5): three batches
        // of waiting (burn-in 3), then the fourth finds it still unreached: worst value, and θ
        // moves to the second vertex (0.6, 0.5).
        for _ in 0..3 {
            st.search_after_batch(&cons, &[0.3, 0.5], 0.9);
            assert_eq!(st.thresholds, vec![0.5, 0.5]);
        }
        st.search_after_batch(&cons, &[0.3, 0.5], 0.9);
        assert_eq!(st.thresholds, vec![0.6, 0.5]);
        assert!(st.search_recent.is_empty() && st.search_waited == 0);
        // At (0.6, 0.5): a first batch at (0.62, 0.5) is one of a 2-batch window, not enough;
        // the second, (0.58, 0.46), makes the window mean (0.60, 0.48) within ±(0.06, 0.05):
        // reached, and that batch is the first of two evaluation batches.
        st.search_after_batch(&cons, &[0.62, 0.5], 0.7);
        st.search_after_batch(&cons, &[0.58, 0.46], 0.8);
        assert_eq!((st.search_batches, st.search_sum), (1, 0.8));
        // A resumed state carries on the same way (the window and sums are serialised).
        let mut resumed: ConstraintState =
            serde_json::from_str(&serde_json::to_string(&st).unwrap()).unwrap();
        for s in [&mut st, &mut resumed] {
            s.search_after_batch(&cons, &[0.9, 0.9], 0.6);
            // Scored −(0.8 + 0.6)/2 = −0.7; θ moves to the third vertex (0.5, 0.6).
            assert_eq!(s.thresholds, vec![0.5, 0.6]);
        }
        assert_eq!(st, resumed);
        let nm = st.search.as_ref().unwrap();
        let (best, v) = nm.best().unwrap();
        assert_eq!((best.to_vec(), v), (vec![0.6, 0.5], -0.7));
        assert_eq!(nm.values[0], Some(f64::MAX));
        // Without a reach test the burn-in is waited out whatever the components do.
        let plain = ConstraintsSection {
            search_reach_tol: 0.0,
            search_every: 1,
            ..cons.clone()
        };
        let mut p = search_state(&plain);
        for _ in 0..3 {
            p.search_after_batch(&plain, &[0.0, 0.0], 0.5);
        }
        assert_eq!(p.search_waited, 3);
        p.search_after_batch(&plain, &[0.0, 0.0], 0.5);
        assert_eq!(p.thresholds, vec![0.6, 0.5]);
        assert_eq!(p.search.as_ref().unwrap().values[0], Some(-0.5));
    }

    #[test]
    fn advantages_mix_by_the_multipliers() {
        // N = 2, λ = (0.25, 0.5): Â = 1.25·Â_KL + 0.25·Â_1 + 0.5·Â_2.
        let kl = vec![vec![1.0f32, -2.0]];
        let comps = vec![vec![vec![4.0f32, 0.0]], vec![vec![0.0f32, 2.0]]];
        let a = mix_advantages(&kl, &comps, &[0.25, 0.5]);
        assert_eq!(a, vec![vec![1.25 + 1.0, -2.5 + 1.0]]);
    }
}
