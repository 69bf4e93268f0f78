//! The DPO family, KTO and MargE over sequence log-probs.
//!
//! Inputs are summed completion log-probs `log π(y|x)` (B,) with completion lengths |y| in tokens;
//! the reference's are constants (no gradient). Every function returns per-example losses (B,) and
//! the implicit rewards a run logs. Notation: h = [log π(y_w) − log π_ref(y_w)] − [log π(y_l) −
//! log π_ref(y_l)], the DPO margin of log-ratios.

use gradus_tensor::{bail, Error, Result, Tensor};
use serde::{Deserialize, Serialize};

use crate::math::{log_sigmoid, sigmoid, values};

/// Summed completion log-probs of B sequences, (B,), and each completion's length in tokens.
#[derive(Clone, Debug)]
pub struct SeqLogps {
    pub logps: Tensor,
    pub lengths: Vec<f32>,
}

impl SeqLogps {
    pub fn new(logps: Tensor, lengths: Vec<f32>) -> Result<Self> {
        let n = logps.dims1()?;
        if n != lengths.len() {
            bail!("SeqLogps: {n} log-probs but {} lengths", lengths.len());
        }
        if let Some(i) = lengths.iter().position(|&l| !(l > 0.0)) {
            bail!(
                "SeqLogps: sequence {i} has an empty completion (length {})",
                lengths[i]
            );
        }
        Ok(Self { logps, lengths })
    }

    /// Per-token average log-prob `log π(y|x) / |y|`.
    pub fn mean_per_token(&self) -> Result<Tensor> {
        let len = Tensor::from_slice(&self.lengths, self.lengths.len(), self.logps.device())?;
        Ok((&self.logps / len)?)
    }

    /// The same sequences with log-probs divided by their lengths.
    pub fn length_normalized(&self) -> Result<Self> {
        Ok(Self {
            logps: self.mean_per_token()?,
            lengths: self.lengths.clone(),
        })
    }

    /// No gradient flows through the result.
    pub fn detach(&self) -> Self {
        Self {
            logps: self.logps.detach(),
            lengths: self.lengths.clone(),
        }
    }

    pub fn len(&self) -> usize {
        self.lengths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lengths.is_empty()
    }
}

/// Chosen (y_w) and rejected (y_l) sequences of B pairs.
#[derive(Clone, Debug)]
pub struct PairLogps {
    pub chosen: SeqLogps,
    pub rejected: SeqLogps,
}

impl PairLogps {
    pub fn new(chosen: SeqLogps, rejected: SeqLogps) -> Result<Self> {
        if chosen.len() != rejected.len() {
            bail!(
                "PairLogps: {} chosen but {} rejected sequences",
                chosen.len(),
                rejected.len()
            );
        }
        Ok(Self { chosen, rejected })
    }

    pub fn length_normalized(&self) -> Result<Self> {
        Ok(Self {
            chosen: self.chosen.length_normalized()?,
            rejected: self.rejected.length_normalized()?,
        })
    }

    pub fn detach(&self) -> Self {
        Self {
            chosen: self.chosen.detach(),
            rejected: self.rejected.detach(),
        }
    }

    pub fn len(&self) -> usize {
        self.chosen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chosen.is_empty()
    }
}

/// Per-pair losses (B,) and implicit rewards (detached values).
#[derive(Clone, Debug)]
pub struct PairLoss {
    pub losses: Tensor,
    pub chosen_rewards: Vec<f32>,
    pub rejected_rewards: Vec<f32>,
}

/// `[objective]` of `gradus train dpo`: `kind` picks the loss, the other keys are its settings.
/// It is either a loss on preference pairs ([`PairObjective`]) or on single completions with a
/// label or a reward ([`SingleObjective`]); the two are separate types, so a pair loss can never be
/// asked of KTO or MargE.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "ObjectiveSpec", into = "ObjectiveSpec")]
pub enum PreferenceObjective {
    Pair(PairObjective),
    Single(SingleObjective),
}

/// Losses on (chosen, rejected) pairs.
#[derive(Clone, Debug, PartialEq)]
pub enum PairObjective {
    /// DPO (sigmoid); `label_smoothing` ε > 0 gives conservative DPO (cDPO).
    Dpo { beta: f64, label_smoothing: f64 },
    /// Robust DPO (Chowdhury et al. 2024): unbiased under label-flip rate ε.
    Robust { beta: f64, label_smoothing: f64 },
    /// IPO: (h − 1/(2β))² on per-token average log-ratios (TRL's semantics).
    Ipo { beta: f64 },
    /// Length-normalised DPO (Tulu 3 `dpo_norm`): DPO on log-ratios divided by |y|.
    DpoNorm { beta: f64 },
    /// SimPO: reference-free, −log σ(β·avg log π(y_w) − β·avg log π(y_l) − γ), γ = β·ratio.
    Simpo { beta: f64, gamma_beta_ratio: f64 },
    /// γ-scaled DPO (Chen et al. 2024, §3.7): −log σ(β[log π(y_w)/π(y_l) + γ log π_ref(y_l)/π_ref(y_w)]).
    GammaDpo { beta: f64, gamma: f64 },
    /// Hinge (SLiC): max(0, 1 − β h).
    Hinge { beta: f64 },
}

/// Losses on single completions.
#[derive(Clone, Debug, PartialEq)]
pub enum SingleObjective {
    /// KTO on unpaired desirable/undesirable completions.
    Kto {
        beta: f64,
        desirable_weight: f64,
        undesirable_weight: f64,
    },
    /// MargE (RESEARCH §3.6): reward-weighted, importance-sampled; applied to each completion with
    /// its scalar reward.
    Marge {
        alpha: f64,
        beta: f64,
        self_normalize: bool,
    },
}

/// The `[objective]` table as written: one flat `kind`-tagged table (the user's view).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum ObjectiveSpec {
    Dpo {
        #[serde(default = "beta_default")]
        beta: f64,
        #[serde(default)]
        label_smoothing: f64,
    },
    Robust {
        #[serde(default = "beta_default")]
        beta: f64,
        #[serde(default = "eps_default")]
        label_smoothing: f64,
    },
    Ipo {
        #[serde(default = "beta_default")]
        beta: f64,
    },
    DpoNorm {
        #[serde(default = "beta_norm_default")]
        beta: f64,
    },
    Simpo {
        #[serde(default = "beta_simpo_default")]
        beta: f64,
        #[serde(default = "gamma_ratio_default")]
        gamma_beta_ratio: f64,
    },
    GammaDpo {
        #[serde(default = "beta_default")]
        beta: f64,
        #[serde(default = "one")]
        gamma: f64,
    },
    Hinge {
        #[serde(default = "beta_default")]
        beta: f64,
    },
    Kto {
        #[serde(default = "beta_default")]
        beta: f64,
        #[serde(default = "one")]
        desirable_weight: f64,
        #[serde(default = "one")]
        undesirable_weight: f64,
    },
    Marge {
        #[serde(default = "one")]
        alpha: f64,
        #[serde(default = "beta_default")]
        beta: f64,
        #[serde(default)]
        self_normalize: bool,
    },
}

impl From<ObjectiveSpec> for PreferenceObjective {
    fn from(s: ObjectiveSpec) -> Self {
        use ObjectiveSpec as S;
        use PairObjective as P;
        use SingleObjective as Q;
        match s {
            S::Dpo {
                beta,
                label_smoothing,
            } => P::Dpo {
                beta,
                label_smoothing,
            }
            .into(),
            S::Robust {
                beta,
                label_smoothing,
            } => P::Robust {
                beta,
                label_smoothing,
            }
            .into(),
            S::Ipo { beta } => P::Ipo { beta }.into(),
            S::DpoNorm { beta } => P::DpoNorm { beta }.into(),
            S::Simpo {
                beta,
                gamma_beta_ratio,
            } => P::Simpo {
                beta,
                gamma_beta_ratio,
            }
            .into(),
            S::GammaDpo { beta, gamma } => P::GammaDpo { beta, gamma }.into(),
            S::Hinge { beta } => P::Hinge { beta }.into(),
            S::Kto {
                beta,
                desirable_weight,
                undesirable_weight,
            } => Q::Kto {
                beta,
                desirable_weight,
                undesirable_weight,
            }
            .into(),
            S::Marge {
                alpha,
                beta,
                self_normalize,
            } => Q::Marge {
                alpha,
                beta,
                self_normalize,
            }
            .into(),
        }
    }
}

impl From<PreferenceObjective> for ObjectiveSpec {
    fn from(o: PreferenceObjective) -> Self {
        use ObjectiveSpec as S;
        use PairObjective as P;
        use SingleObjective as Q;
        match o {
            PreferenceObjective::Pair(p) => match p {
                P::Dpo {
                    beta,
                    label_smoothing,
                } => S::Dpo {
                    beta,
                    label_smoothing,
                },
                P::Robust {
                    beta,
                    label_smoothing,
                } => S::Robust {
                    beta,
                    label_smoothing,
                },
                P::Ipo { beta } => S::Ipo { beta },
                P::DpoNorm { beta } => S::DpoNorm { beta },
                P::Simpo {
                    beta,
                    gamma_beta_ratio,
                } => S::Simpo {
                    beta,
                    gamma_beta_ratio,
                },
                P::GammaDpo { beta, gamma } => S::GammaDpo { beta, gamma },
                P::Hinge { beta } => S::Hinge { beta },
            },
            PreferenceObjective::Single(q) => match q {
                Q::Kto {
                    beta,
                    desirable_weight,
                    undesirable_weight,
                } => S::Kto {
                    beta,
                    desirable_weight,
                    undesirable_weight,
                },
                Q::Marge {
                    alpha,
                    beta,
                    self_normalize,
                } => S::Marge {
                    alpha,
                    beta,
                    self_normalize,
                },
            },
        }
    }
}

impl From<PairObjective> for PreferenceObjective {
    fn from(p: PairObjective) -> Self {
        PreferenceObjective::Pair(p)
    }
}

impl From<SingleObjective> for PreferenceObjective {
    fn from(q: SingleObjective) -> Self {
        PreferenceObjective::Single(q)
    }
}

fn beta_default() -> f64 {
    0.1
}
fn beta_norm_default() -> f64 {
    5.0
}
fn beta_simpo_default() -> f64 {
    2.0
}
fn gamma_ratio_default() -> f64 {
    0.5
}
fn eps_default() -> f64 {
    0.1
}
fn one() -> f64 {
    1.0
}

impl Default for PreferenceObjective {
    fn default() -> Self {
        PairObjective::Dpo {
            beta: 0.1,
            label_smoothing: 0.0,
        }
        .into()
    }
}

impl PreferenceObjective {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Pair(p) => p.name(),
            Self::Single(q) => q.name(),
        }
    }

    /// β of the objective (the implicit-reward scale used in metrics).
    pub fn beta(&self) -> f64 {
        match self {
            Self::Pair(p) => p.beta(),
            Self::Single(q) => q.beta(),
        }
    }

    /// Whether the objective needs reference log-probs (SimPO does not: no reference is loaded
    /// or computed for it).
    pub fn needs_reference(&self) -> bool {
        !matches!(self, Self::Pair(PairObjective::Simpo { .. }))
    }

    pub fn validate(&self) -> Result<()> {
        let beta = self.beta();
        if !(beta > 0.0 && beta.is_finite()) {
            return Err(Error::config(
                "objective.beta",
                format!("must be positive, got {beta}"),
            ));
        }
        match *self {
            Self::Pair(PairObjective::Dpo {
                label_smoothing: e, ..
            })
            | Self::Pair(PairObjective::Robust {
                label_smoothing: e, ..
            }) if !(0.0..0.5).contains(&e) => Err(Error::config(
                "objective.label_smoothing",
                format!("must be in [0, 0.5), got {e}"),
            )),
            Self::Pair(PairObjective::GammaDpo { gamma, .. }) if !gamma.is_finite() => {
                Err(Error::config("objective.gamma", "must be finite"))
            }
            Self::Single(SingleObjective::Kto {
                desirable_weight: d,
                undesirable_weight: u,
                ..
            }) if !(d > 0.0 && u > 0.0) => Err(Error::config(
                "objective.desirable_weight",
                "KTO weights must be positive",
            )),
            Self::Single(SingleObjective::Marge { alpha, .. }) if !(alpha >= 0.0) => {
                Err(Error::config("objective.alpha", "must be ≥ 0"))
            }
            _ => Ok(()),
        }
    }
}

impl PairObjective {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Dpo { .. } => "dpo",
            Self::Robust { .. } => "robust",
            Self::Ipo { .. } => "ipo",
            Self::DpoNorm { .. } => "dpo_norm",
            Self::Simpo { .. } => "simpo",
            Self::GammaDpo { .. } => "gamma_dpo",
            Self::Hinge { .. } => "hinge",
        }
    }

    pub fn beta(&self) -> f64 {
        match *self {
            Self::Dpo { beta, .. }
            | Self::Robust { beta, .. }
            | Self::Ipo { beta }
            | Self::DpoNorm { beta }
            | Self::Simpo { beta, .. }
            | Self::GammaDpo { beta, .. }
            | Self::Hinge { beta } => beta,
        }
    }

    /// The per-pair losses. `reference` may be `None` only for SimPO (reference-free); the
    /// others need it.
    pub fn loss(&self, policy: &PairLogps, reference: Option<&PairLogps>) -> Result<PairLoss> {
        let need = || {
            reference.ok_or_else(|| {
                Error::msg(format!(
                    "objective `{}` needs reference log-probs",
                    self.name()
                ))
            })
        };
        match *self {
            Self::Dpo {
                beta,
                label_smoothing,
            } => dpo(policy, need()?, beta, label_smoothing),
            Self::Robust {
                beta,
                label_smoothing,
            } => robust_dpo(policy, need()?, beta, label_smoothing),
            Self::Ipo { beta } => ipo(policy, need()?, beta),
            Self::DpoNorm { beta } => dpo(
                &policy.length_normalized()?,
                &need()?.length_normalized()?,
                beta,
                0.0,
            ),
            Self::Simpo {
                beta,
                gamma_beta_ratio,
            } => simpo(policy, beta, gamma_beta_ratio),
            Self::GammaDpo { beta, gamma } => gamma_dpo(policy, need()?, beta, gamma),
            Self::Hinge { beta } => hinge(policy, need()?, beta),
        }
    }
}

impl SingleObjective {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Kto { .. } => "kto",
            Self::Marge { .. } => "marge",
        }
    }

    pub fn beta(&self) -> f64 {
        match *self {
            Self::Kto { beta, .. } | Self::Marge { beta, .. } => beta,
        }
    }
}

/// Log-ratios log π(y) − log π_ref(y) of chosen and rejected: (B,) each.
fn log_ratios(policy: &PairLogps, reference: &PairLogps) -> Result<(Tensor, Tensor)> {
    if policy.len() != reference.len() {
        bail!(
            "policy has {} pairs, reference {}",
            policy.len(),
            reference.len()
        );
    }
    let c = (&policy.chosen.logps - reference.chosen.logps.detach())?;
    let r = (&policy.rejected.logps - reference.rejected.logps.detach())?;
    Ok((c, r))
}

fn rewards(beta: f64, c: &Tensor, r: &Tensor) -> Result<(Vec<f32>, Vec<f32>)> {
    Ok((
        values(&(c.detach() * beta)?)?,
        values(&(r.detach() * beta)?)?,
    ))
}

/// DPO (Rafailov et al. 2023, Eq. 7), with conservative label smoothing ε (cDPO):
/// L = −(1 − ε) log σ(β h) − ε log σ(−β h). Rewards β·(log π − log π_ref).
pub fn dpo(
    policy: &PairLogps,
    reference: &PairLogps,
    beta: f64,
    label_smoothing: f64,
) -> Result<PairLoss> {
    let (c, r) = log_ratios(policy, reference)?;
    let bh = ((&c - &r)? * beta)?;
    let mut losses = (log_sigmoid(&bh)?.neg()? * (1.0 - label_smoothing))?;
    if label_smoothing > 0.0 {
        losses = (losses - (log_sigmoid(&bh.neg()?)? * label_smoothing)?)?;
    }
    let (chosen_rewards, rejected_rewards) = rewards(beta, &c, &r)?;
    Ok(PairLoss {
        losses,
        chosen_rewards,
        rejected_rewards,
    })
}

/// Robust DPO (Chowdhury et al. 2024, Eq. 7): [−(1 − ε) log σ(β h) + ε log σ(−β h)] / (1 − 2ε).
pub fn robust_dpo(
    policy: &PairLogps,
    reference: &PairLogps,
    beta: f64,
    eps: f64,
) -> Result<PairLoss> {
    let (c, r) = log_ratios(policy, reference)?;
    let bh = ((&c - &r)? * beta)?;
    let a = (log_sigmoid(&bh)?.neg()? * (1.0 - eps))?;
    let b = (log_sigmoid(&bh.neg()?)? * eps)?;
    let losses = ((a + b)? / (1.0 - 2.0 * eps))?;
    let (chosen_rewards, rejected_rewards) = rewards(beta, &c, &r)?;
    Ok(PairLoss {
        losses,
        chosen_rewards,
        rejected_rewards,
    })
}

/// IPO (Azar et al. 2023, Eq. 17) with TRL's semantics: (h̄ − 1/(2β))², h̄ the margin of
/// per-token average log-ratios; the logged rewards are β·(summed) log-ratios, as for DPO.
pub fn ipo(policy: &PairLogps, reference: &PairLogps, beta: f64) -> Result<PairLoss> {
    let (cn, rn) = log_ratios(
        &policy.length_normalized()?,
        &reference.length_normalized()?,
    )?;
    let losses = ((&cn - &rn)? - 1.0 / (2.0 * beta))?.sqr()?;
    let (c, r) = log_ratios(policy, reference)?;
    let (chosen_rewards, rejected_rewards) = rewards(beta, &c, &r)?;
    Ok(PairLoss {
        losses,
        chosen_rewards,
        rejected_rewards,
    })
}

/// SimPO (Meng et al. 2024, Eq. 6): −log σ(β/|y_w| log π(y_w) − β/|y_l| log π(y_l) − γ), with
/// γ = β·`gamma_beta_ratio`. Rewards β·avg log π(y).
pub fn simpo(policy: &PairLogps, beta: f64, gamma_beta_ratio: f64) -> Result<PairLoss> {
    let c = policy.chosen.mean_per_token()?;
    let r = policy.rejected.mean_per_token()?;
    let z = (((&c - &r)? * beta)? - beta * gamma_beta_ratio)?;
    let losses = log_sigmoid(&z)?.neg()?;
    let (chosen_rewards, rejected_rewards) = rewards(beta, &c, &r)?;
    Ok(PairLoss {
        losses,
        chosen_rewards,
        rejected_rewards,
    })
}

/// γ-scaled DPO (Chen et al. 2024, §3.7): −log σ(β[(log π(y_w) − log π(y_l)) + γ(log π_ref(y_l) −
/// log π_ref(y_w))]); γ = 1 is DPO, γ = 0 ignores the reference. Rewards as DPO.
pub fn gamma_dpo(
    policy: &PairLogps,
    reference: &PairLogps,
    beta: f64,
    gamma: f64,
) -> Result<PairLoss> {
    let pol = (&policy.chosen.logps - &policy.rejected.logps)?;
    let refm = (reference.rejected.logps.detach() - reference.chosen.logps.detach())?;
    let z = ((pol + (refm * gamma)?)? * beta)?;
    let losses = log_sigmoid(&z)?.neg()?;
    let (c, r) = log_ratios(policy, reference)?;
    let (chosen_rewards, rejected_rewards) = rewards(beta, &c, &r)?;
    Ok(PairLoss {
        losses,
        chosen_rewards,
        rejected_rewards,
    })
}

/// Hinge / SLiC (Zhao et al. 2023): max(0, 1 − β h).
pub fn hinge(policy: &PairLogps, reference: &PairLogps, beta: f64) -> Result<PairLoss> {
    let (c, r) = log_ratios(policy, reference)?;
    let losses = (((&c - &r)? * (-beta))? + 1.0)?.relu()?;
    let (chosen_rewards, rejected_rewards) = rewards(beta, &c, &r)?;
    Ok(PairLoss {
        losses,
        chosen_rewards,
        rejected_rewards,
    })
}

/// Per-completion losses (B,) and implicit rewards of an unpaired objective.
#[derive(Clone, Debug)]
pub struct SeqLoss {
    pub losses: Tensor,
    pub rewards: Vec<f32>,
}

/// KTO (Ethayarajh et al. 2024, Eq. 8), TRL's form: with r = log π(y) − log π_ref(y) and the
/// detached KL estimate z ≥ 0, desirable: λ_D (1 − σ(β(r − z))), undesirable: λ_U (1 − σ(β(z − r))).
pub fn kto(
    policy: &SeqLogps,
    reference: &SeqLogps,
    desirable: &[bool],
    kl: f64,
    beta: f64,
    desirable_weight: f64,
    undesirable_weight: f64,
) -> Result<SeqLoss> {
    if policy.len() != reference.len() || policy.len() != desirable.len() {
        bail!(
            "kto: {} policy, {} reference, {} labels",
            policy.len(),
            reference.len(),
            desirable.len()
        );
    }
    let z = kl.max(0.0);
    let r = (&policy.logps - reference.logps.detach())?;
    let sign: Vec<f32> = desirable
        .iter()
        .map(|&d| if d { 1.0 } else { -1.0 })
        .collect();
    let weight: Vec<f32> = desirable
        .iter()
        .map(|&d| {
            if d {
                desirable_weight as f32
            } else {
                undesirable_weight as f32
            }
        })
        .collect();
    let dev = r.device();
    let sign = Tensor::from_slice(&sign, sign.len(), dev)?;
    let weight = Tensor::from_slice(&weight, weight.len(), dev)?;
    // desirable: β(r − z); undesirable: β(z − r) = −β(r − z).
    let arg = (((&r - z)? * beta)? * &sign)?;
    let losses = ((sigmoid(&arg)?.neg()? + 1.0)? * weight)?;
    Ok(SeqLoss {
        losses,
        rewards: values(&(r.detach() * beta)?)?,
    })
}

/// MargE (Chen, Stanton et al. 2024; RESEARCH §3.6) for completions y with rewards r:
/// L = α · w(y) · (log π(y)/|y| − r) + β · (−log π(y)/|y|), w = π(y)/π_ref(y) = exp(log π − log π_ref),
/// not detached; with `self_normalize`, w is divided by its batch mean.
pub fn marge(
    policy: &SeqLogps,
    reference: &SeqLogps,
    rewards: &[f32],
    alpha: f64,
    beta: f64,
    self_normalize: bool,
) -> Result<SeqLoss> {
    if policy.len() != reference.len() || policy.len() != rewards.len() {
        bail!(
            "marge: {} policy, {} reference, {} rewards",
            policy.len(),
            reference.len(),
            rewards.len()
        );
    }
    let lr = (&policy.logps - reference.logps.detach())?;
    let mut w = lr.exp()?;
    if self_normalize {
        let mean = w.mean_all()?;
        w = w.broadcast_div(&mean)?;
    }
    let avg = policy.mean_per_token()?;
    let r = Tensor::from_slice(rewards, rewards.len(), avg.device())?;
    let is = ((w * (&avg - r)?)? * alpha)?;
    let kl = (avg.neg()? * beta)?;
    let losses = (is + kl)?;
    Ok(SeqLoss {
        losses,
        rewards: values(&lr.detach())?,
    })
}
