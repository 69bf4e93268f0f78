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
//!   violated constraint (mean r_i < θ_i) raises λ_i ([`Multipliers::update`]).
//! - **NM-PPO** (`search = "nelder_mead"`): one run that moves θ by Nelder–Mead (α 1, γ 2, ρ 0.5,
//!   σ 0.5; ≤ `search_iterations` iterations, stop when the simplex's values spread less than
//!   `search_tol`) to maximise an evaluation score (`eval`, weighted rewards), each evaluation being
//!   the mean score over `search_every` generation batches at the θ asked, after
//!   `search_burn_in` batches that let the policy respond to it ([`NelderMead`]).

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
    /// λ_i at the start (after the squash; "initialised near 0").
    pub initial: f64,
    /// Value-loss weight of each component's value head (the KL head uses `algorithm.vf_coef`).
    pub vf_coef: f64,
    pub search: ThresholdSearch,
    /// NM-PPO: generation batches per evaluation of a θ.
    pub search_every: usize,
    /// NM-PPO: generation batches at a newly asked θ before its evaluation starts (the policy
    /// needs time to respond to new thresholds; scoring them at once measures the old θ's policy).
    pub search_burn_in: usize,
    /// NM-PPO: most Nelder–Mead iterations; then θ stays at the best point found.
    pub search_iterations: usize,
    /// NM-PPO: stop when the simplex's evaluation scores spread less than this.
    pub search_tol: f64,
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
            initial: 0.01,
            vf_coef: 0.5,
            search: ThresholdSearch::Fixed,
            search_every: 4,
            search_burn_in: 0,
            search_iterations: 10,
            search_tol: 0.01,
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
        for (k, v) in [("lr", self.lr), ("vf_coef", self.vf_coef)] {
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
        }
        Ok(())
    }
}

/// The multipliers' raw parameters p_i and momentum buffers (λ_i = squash(p_i)).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Multipliers {
    pub raw: Vec<f64>,
    pub momentum: Vec<f64>,
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
        }
    }

    /// λ_i.
    pub fn lambdas(&self, kind: ConstraintKind) -> Vec<f64> {
        self.raw.iter().map(|&p| squash(kind, p)).collect()
    }

    /// One SGD step (with momentum) on Σ_i λ_i (mean_i − θ_i): g_i = squash'(p_i)(mean_i − θ_i).
    pub fn update(
        &mut self,
        kind: ConstraintKind,
        means: &[f64],
        thresholds: &[f64],
        lr: f64,
        m: f64,
    ) {
        for i in 0..self.raw.len() {
            let g = dsquash(kind, self.raw[i]) * (means[i] - thresholds[i]);
            self.momentum[i] = m * self.momentum[i] + g;
            self.raw[i] -= lr * self.momentum[i];
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
        }
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
        if self.iteration >= self.max_iterations || spread < self.tol {
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
            m.update(kind, &[0.2, 0.9], &[0.5, 0.5], 0.1, 0.1);
            let l1 = m.lambdas(kind);
            assert!(l1[0] > l0[0] && l1[1] < l0[1], "{kind:?}: {l0:?} → {l1:?}");
        }
        // By hand, inequality: p = logit(0.01), g = 0.01·0.99·(0.2 − 0.5) = −0.00297, buf = g,
        // p' = p + 0.1·0.00297; a second step: buf = 0.1·g + g' (momentum).
        let kind = ConstraintKind::Inequality;
        let mut m = Multipliers::new(kind, 1, 0.01);
        let p0 = m.raw[0];
        m.update(kind, &[0.2], &[0.5], 0.1, 0.1);
        let g0 = 0.01 * 0.99 * (0.2 - 0.5);
        assert!((m.raw[0] - (p0 - 0.1 * g0)).abs() < 1e-12);
        let s = squash(kind, m.raw[0]);
        let g1 = s * (1.0 - s) * (0.2 - 0.5);
        let p1 = m.raw[0];
        m.update(kind, &[0.2], &[0.5], 0.1, 0.1);
        assert!((m.raw[0] - (p1 - 0.1 * (0.1 * g0 + g1))).abs() < 1e-12);
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
