//! Token-level objectives of pretraining with human feedback (Korbak et al. 2023, "Pretraining
//! Language Models with Human Preferences", arXiv 2302.08582, §2 "Objectives").
//!
//! Every function takes per-token log-probs `logp` (N) of the targets, the loss weights `weight`
//! (N; 1 on a target, 0 on padding) and per-token segment information, and returns the loss
//! **divided by `norm`** (the step's number of target tokens, as the training loop normalises)
//! with its gradient `dlogp = ∂loss/∂logp` (N), which the training graph back-propagates. Plain
//! f64 arithmetic over slices: the fast graph hands over `&[f32]`.
//!
//! - MLE: `L = −Σ w_t log p_t / norm`.
//! - Filtering and conditional training are MLE on changed data (the recipe drops documents or
//!   inserts control tokens); they need nothing here.
//! - [`unlikelihood`] (Welleck et al. 2020, as PHF uses it): tokens of misaligned segments get
//!   `−α log(1 − p_t)` instead of `−log p_t`: `L = Σ w_t [good_t (−log p_t) + bad_t α (−log(1 −
//!   p_t))] / norm`. `1 − p` is clamped below at [`UL_MIN_ONE_MINUS_P`] (gradient 0 there).
//!   `∂/∂log p (−log(1 − p)) = p / (1 − p)`.
//! - [`rwr`] reward-weighted regression (Peters & Schaal 2007): `L = −Σ w_t c_t log p_t / norm`,
//!   `c_t = min(exp(r_t / β), clip)`, `r_t = −score` of the token's segment.
//! - [`awr`] advantage-weighted regression (Peng et al. 2019): `c_t = min(exp((r_t − V_t) / β),
//!   clip)` with `V_t` a learned value (treated as a constant in the LM term) and
//!   `L = α · (−Σ w_t c_t log p_t) / norm + (1 − α) · Σ w_t (V_t − r_t)² / norm`; the paper's α = 0.5,
//!   β = 10, clip 1000 (RWR is the α = 1 case with V = 0).

use gradus_tensor::{Error, Result};

/// Lower clamp of `1 − p` in the unlikelihood term (keeps `−log(1 − p)` finite as p → 1).
pub const UL_MIN_ONE_MINUS_P: f64 = 1e-5;

/// A token-level loss and its gradient.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLoss {
    /// The loss divided by `norm`.
    pub loss: f64,
    /// ∂loss/∂logp (N).
    pub dlogp: Vec<f32>,
    /// The MLE part (−Σ w log p / norm, over every target), for comparison across objectives.
    pub nll: f64,
    /// Mean of the per-token multipliers over weighted tokens (RWR/AWR: c_t; UL: fraction of
    /// tokens under the unlikelihood term).
    pub mean_coef: f64,
}

fn check(n: usize, name: &str, len: usize) -> Result<()> {
    if len != n {
        return Err(Error::msg(format!(
            "phf objective: {name} has {len} entries, logp has {n}"
        )));
    }
    Ok(())
}

fn nll_of(logp: &[f32], weight: &[f32], norm: f64) -> f64 {
    -logp
        .iter()
        .zip(weight)
        .map(|(&l, &w)| l as f64 * w as f64)
        .sum::<f64>()
        / norm
}

/// Maximum likelihood: `−Σ w_t log p_t / norm`, `dlogp_t = −w_t / norm`.
pub fn mle(logp: &[f32], weight: &[f32], norm: f64) -> Result<TokenLoss> {
    check(logp.len(), "weight", weight.len())?;
    let norm = norm.max(1.0);
    let nll = nll_of(logp, weight, norm);
    Ok(TokenLoss {
        loss: nll,
        dlogp: weight
            .iter()
            .map(|&w| (-(w as f64) / norm) as f32)
            .collect(),
        nll,
        mean_coef: 1.0,
    })
}

/// Unlikelihood on misaligned tokens (`bad`), MLE on the others; `alpha` scales the
/// unlikelihood term (the paper: 1). See the module docs.
pub fn unlikelihood(
    logp: &[f32],
    weight: &[f32],
    bad: &[bool],
    alpha: f64,
    norm: f64,
) -> Result<TokenLoss> {
    let n = logp.len();
    check(n, "weight", weight.len())?;
    check(n, "bad", bad.len())?;
    let norm = norm.max(1.0);
    let (mut loss, mut n_bad, mut n_w) = (0f64, 0f64, 0f64);
    let mut dlogp = vec![0f32; n];
    for t in 0..n {
        let w = weight[t] as f64;
        if w == 0.0 {
            continue;
        }
        n_w += w;
        let l = logp[t] as f64;
        if bad[t] {
            n_bad += w;
            let p = l.exp();
            let q = 1.0 - p;
            if q > UL_MIN_ONE_MINUS_P {
                loss += -alpha * w * q.ln();
                dlogp[t] = (alpha * w * p / q / norm) as f32;
            } else {
                loss += -alpha * w * UL_MIN_ONE_MINUS_P.ln();
            }
        } else {
            loss += -w * l;
            dlogp[t] = (-w / norm) as f32;
        }
    }
    Ok(TokenLoss {
        loss: loss / norm,
        dlogp,
        nll: nll_of(logp, weight, norm),
        mean_coef: if n_w > 0.0 { n_bad / n_w } else { 0.0 },
    })
}

/// Reward-weighted regression: token NLL times `min(exp(reward_t / beta), clip)`.
pub fn rwr(
    logp: &[f32],
    weight: &[f32],
    reward: &[f32],
    beta: f64,
    clip: f64,
    norm: f64,
) -> Result<TokenLoss> {
    let zeros = vec![0f32; logp.len()];
    let a = awr(logp, weight, reward, &zeros, beta, 1.0, clip, norm)?;
    Ok(a.lm)
}

/// What [`awr`] returns: the LM part (with `loss` the whole objective), and the value part.
#[derive(Clone, Debug, PartialEq)]
pub struct AwrLoss {
    /// `lm.loss` is the whole objective `α · LM + (1 − α) · value`; `lm.dlogp` its gradient in
    /// logp; `lm.mean_coef` the mean weight c_t.
    pub lm: TokenLoss,
    /// `Σ w (V − r)² / norm` (before the (1 − α) factor).
    pub value_loss: f64,
    /// ∂loss/∂V_t (N) = (1 − α) · 2 w_t (V_t − r_t) / norm.
    pub dvalue: Vec<f32>,
}

/// Advantage-weighted regression (see the module docs). `value` (N) holds `V_t`.
#[allow(clippy::too_many_arguments)]
pub fn awr(
    logp: &[f32],
    weight: &[f32],
    reward: &[f32],
    value: &[f32],
    beta: f64,
    alpha: f64,
    clip: f64,
    norm: f64,
) -> Result<AwrLoss> {
    let n = logp.len();
    check(n, "weight", weight.len())?;
    check(n, "reward", reward.len())?;
    check(n, "value", value.len())?;
    if !(beta > 0.0) {
        return Err(Error::config(
            "phf.beta",
            format!("must be > 0, got {beta}"),
        ));
    }
    let norm = norm.max(1.0);
    let (mut lm, mut vl, mut coef_sum, mut n_w) = (0f64, 0f64, 0f64, 0f64);
    let mut dlogp = vec![0f32; n];
    let mut dvalue = vec![0f32; n];
    for t in 0..n {
        let w = weight[t] as f64;
        if w == 0.0 {
            continue;
        }
        let (r, v) = (reward[t] as f64, value[t] as f64);
        let c = ((r - v) / beta).exp().min(clip);
        lm += -w * c * logp[t] as f64;
        dlogp[t] = (-alpha * w * c / norm) as f32;
        vl += w * (v - r) * (v - r);
        dvalue[t] = ((1.0 - alpha) * 2.0 * w * (v - r) / norm) as f32;
        coef_sum += w * c;
        n_w += w;
    }
    let (lm, vl) = (lm / norm, vl / norm);
    Ok(AwrLoss {
        lm: TokenLoss {
            loss: alpha * lm + (1.0 - alpha) * vl,
            dlogp,
            nll: nll_of(logp, weight, norm),
            mean_coef: if n_w > 0.0 { coef_sum / n_w } else { 0.0 },
        },
        value_loss: vl,
        dvalue,
    })
}
