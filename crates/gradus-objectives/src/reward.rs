//! Reward-model losses (RESEARCH §3.16). Inputs are the head's scores: r_c, r_r (B,) for pairs, or
//! (B, K) predictions against K attribute targets for regression.

use gradus_tensor::{bail, Error, Result, Tensor};
use serde::{Deserialize, Serialize};

use crate::math::log_sigmoid;

/// `[objective]` of `gradus train reward`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RewardObjective {
    /// Bradley–Terry: −log σ(r_c − r_r).
    Bt {
        #[serde(default)]
        center_coef: f64,
    },
    /// BT with margin: −log σ(r_c − r_r − m), m from the data's `margin` field.
    BtMargin {
        #[serde(default)]
        center_coef: f64,
    },
    /// Scaled BT (HelpSteer2-Preference): −m · log σ(r_c − r_r), m the preference magnitude.
    ScaledBt {
        #[serde(default)]
        center_coef: f64,
    },
    /// Regression (SteerLM): mean squared error against per-attribute scores.
    Regression {},
}

impl Default for RewardObjective {
    fn default() -> Self {
        RewardObjective::Bt { center_coef: 0.0 }
    }
}

impl RewardObjective {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Bt { .. } => "bt",
            Self::BtMargin { .. } => "bt_margin",
            Self::ScaledBt { .. } => "scaled_bt",
            Self::Regression {} => "regression",
        }
    }

    pub fn center_coef(&self) -> f64 {
        match *self {
            Self::Bt { center_coef }
            | Self::BtMargin { center_coef }
            | Self::ScaledBt { center_coef } => center_coef,
            Self::Regression {} => 0.0,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let c = self.center_coef();
        if !(c >= 0.0 && c.is_finite()) {
            return Err(Error::config(
                "objective.center_coef",
                format!("must be ≥ 0, got {c}"),
            ));
        }
        Ok(())
    }
}

fn check_pair(rc: &Tensor, rr: &Tensor) -> Result<usize> {
    let n = rc.dims1()?;
    if rr.dims1()? != n {
        bail!(
            "reward loss: {n} chosen scores but {} rejected",
            rr.dims1()?
        );
    }
    Ok(n)
}

fn per_pair(values: &[f32], n: usize, what: &str, dev: &gradus_tensor::Device) -> Result<Tensor> {
    if values.len() != n {
        bail!("reward loss: {n} pairs but {} {what} values", values.len());
    }
    Ok(Tensor::from_slice(values, n, dev)?)
}

/// Bradley–Terry (Eq. 1 of Ouyang et al. 2022): −log σ(r_c − r_r), (B,).
pub fn bradley_terry(rc: &Tensor, rr: &Tensor) -> Result<Tensor> {
    check_pair(rc, rr)?;
    Ok(log_sigmoid(&(rc - rr)?)?.neg()?)
}

/// BT with margin (Llama 2, Eq. 2): −log σ(r_c − r_r − m).
pub fn bt_margin(rc: &Tensor, rr: &Tensor, margin: &[f32]) -> Result<Tensor> {
    let n = check_pair(rc, rr)?;
    let m = per_pair(margin, n, "margin", rc.device())?;
    Ok(log_sigmoid(&((rc - rr)? - m)?)?.neg()?)
}

/// Scaled BT (Wang et al. 2024, HelpSteer2-Preference): −m · log σ(r_c − r_r).
pub fn scaled_bt(rc: &Tensor, rr: &Tensor, magnitude: &[f32]) -> Result<Tensor> {
    let n = check_pair(rc, rr)?;
    let m = per_pair(magnitude, n, "magnitude", rc.device())?;
    Ok((log_sigmoid(&(rc - rr)?)?.neg()? * m)?)
}

/// Reward centering (Eisenstein et al. 2023, as TRL's `center_rewards_coefficient`):
/// coef · (r_c + r_r)², (B,).
pub fn centering(rc: &Tensor, rr: &Tensor, coef: f64) -> Result<Tensor> {
    check_pair(rc, rr)?;
    Ok(((rc + rr)?.sqr()? * coef)?)
}

/// Regression: mean over the K attributes of (pred − target)², (B,). `pred` is (B, K), `target`
/// row-major B·K.
pub fn regression(pred: &Tensor, target: &[f32]) -> Result<Tensor> {
    let (b, k) = pred.dims2()?;
    if target.len() != b * k {
        bail!(
            "regression loss: predictions are {b}×{k} but {} targets",
            target.len()
        );
    }
    let t = Tensor::from_slice(target, (b, k), pred.device())?;
    Ok((pred - t)?.sqr()?.mean(1)?)
}
