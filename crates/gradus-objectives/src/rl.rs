//! Policy-gradient RL from verifiable rewards: advantages, the clipped surrogate, KL estimators
//! and loss aggregation (RESEARCH §3.13, §3.15; the anchors' exact formulas are in
//! `RL-EVAL-NOTES.md`).
//!
//! Four separate pieces, each a pure function:
//! 1. **Advantages** from per-completion rewards (plain f32, no gradient):
//!    [`group_advantages`] (GRPO, Shao et al. 2024 eq. 3 with TRL's `scale_rewards`:
//!    A = (r − mean_group r) / (std + 1e-4), std unbiased and NaN-aware, group | batch | none),
//!    [`rloo_advantages`] (Ahmadian et al. 2024 eq. 5: A_i = r_i − Σ_{j≠i} r_j / (G − 1)),
//!    [`reinforce_pp_advantages`] (Hu 2025: discounted returns of token rewards, whitened over the
//!    batch), [`remax_advantages`] (Li et al. 2023: A = r − r(greedy)). A completion none of whose
//!    rewards applies (every reward `None`) gets advantage 0 and stays out of the baselines.
//! 2. **Per-token policy loss** [`clipped_policy_loss`]: PPO's clipped surrogate (Schulman et al.
//!    2017 eq. 7) −min(ρA, clip(ρ, 1−ε_low, 1+ε_high)A) with DAPO's decoupled ε (Yu et al. 2025
//!    eq. 10), the dual clip for negative advantages (Ye et al. 2020: loss ≤ −c·A), and the ratio
//!    per token or per sequence (GSPO, Zheng et al. 2025: log w = mean_t(log π − log π_old); TRL's
//!    RLOO: log w = Σ_t(log π − log π_old)).
//! 3. **KL to a reference** [`kl_penalty`] by Schulman's estimators k1, k2, k3.
//! 4. **Aggregation** [`aggregate`] of the per-token losses into the step's loss: `grpo` (mean over
//!    sequences of per-sequence token means), `bnpo` (per micro-batch token mean), `dr_grpo`
//!    (÷ B·L_max, Liu et al. 2025) and `dapo` (÷ the completion tokens of the whole accumulated
//!    step). The normaliser's global parts (sequences, tokens, micro-batches of the optimiser step)
//!    are arguments, so a step split into micro-batches gets the gradient of the unsplit step in
//!    every mode but `bnpo` (which normalises each micro-batch by its own tokens, as TRL does).
//!
//! Shapes: B completions, T completion positions (right-padded), `mask` (B, T) is 1 on real
//! completion tokens. Log-probs are f32 tensors; gradients flow through `logp` only.

use gradus_tensor::{bail, Error, Result, Tensor};
use serde::{Deserialize, Serialize};

/// How GRPO divides the centred rewards (TRL `scale_rewards`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RewardScale {
    /// By the (unbiased) standard deviation of the completion's group, + 1e-4.
    #[default]
    Group,
    /// By the standard deviation of the whole batch, + 1e-4 (the mean stays per group).
    Batch,
    /// Not at all (Dr. GRPO).
    None,
}

/// The ε added to standard deviations before dividing (TRL's value).
pub const STD_EPS: f32 = 1e-4;

/// Weighted sum of several rewards per completion: r_i = Σ_k w_k r_ik over the rewards that apply
/// (TRL's `nansum`); `None` when none applies. `per_reward[k][i]` is reward k of completion i.
/// A non-finite reward is an error naming the reward and the completion.
pub fn combine_rewards(
    per_reward: &[Vec<Option<f32>>],
    weights: &[f32],
    names: &[String],
) -> Result<Vec<Option<f32>>> {
    if per_reward.len() != weights.len() || names.len() != weights.len() {
        bail!(
            "combine_rewards: {} rewards, {} weights, {} names",
            per_reward.len(),
            weights.len(),
            names.len()
        );
    }
    let n = per_reward.first().map_or(0, |r| r.len());
    let mut out = vec![None; n];
    for (k, rk) in per_reward.iter().enumerate() {
        if rk.len() != n {
            bail!(
                "combine_rewards: reward `{}` scored {} completions, expected {n}",
                names[k],
                rk.len()
            );
        }
        for (i, r) in rk.iter().enumerate() {
            if let Some(v) = *r {
                if !v.is_finite() {
                    return Err(Error::msg(format!(
                        "reward `{}` returned {v} for completion {i}: rewards must be finite numbers (return None when a reward does not apply)",
                        names[k]
                    )));
                }
                let acc: f32 = out[i].unwrap_or(0.0);
                out[i] = Some(acc + v * weights[k]);
            }
        }
    }
    Ok(out)
}

/// Mean and unbiased std of the present values, as torch's `nanmean` / TRL's `nanstd` compute
/// them in f32: mean = Σx / n; var = Σ(x − mean)² / n · n/(n − 1); std NaN when n < 2.
fn nan_mean_std(xs: &[Option<f32>]) -> (f32, f32, usize) {
    let vals: Vec<f32> = xs.iter().flatten().copied().collect();
    let n = vals.len();
    if n == 0 {
        return (f32::NAN, f32::NAN, 0);
    }
    let mean = (vals.iter().map(|&x| x as f64).sum::<f64>() as f32) / n as f32;
    let var = (vals
        .iter()
        .map(|&x| {
            let d = x - mean;
            (d * d) as f64
        })
        .sum::<f64>() as f32)
        / n as f32;
    if n < 2 {
        return (mean, f32::NAN, n);
    }
    let correction = (n as f64 / (n as f64 - 1.0)) as f32;
    (mean, (var * correction).sqrt(), n)
}

/// Advantages of B = P·G completions, rewards in prompt-major order (group g holds completions
/// g·G .. g·G + G − 1), with the diagnostics a run logs.
#[derive(Clone, Debug, PartialEq)]
pub struct Advantages {
    /// One per completion (0 for completions with no applicable reward).
    pub advantages: Vec<f32>,
    /// The std each completion's centred reward was (or, for scale `none`, would be) divided by.
    pub std: Vec<f32>,
    /// Whether that std is zero (the whole group got one reward: no learning signal).
    pub zero_std: Vec<bool>,
}

impl Advantages {
    /// Fraction of completions whose group's rewards were all equal (TRL `frac_reward_zero_std`).
    pub fn frac_zero_std(&self) -> f64 {
        if self.zero_std.is_empty() {
            return 0.0;
        }
        self.zero_std.iter().filter(|&&z| z).count() as f64 / self.zero_std.len() as f64
    }
}

fn check_groups(n: usize, group: usize, what: &str) -> Result<()> {
    if group < 2 {
        return Err(Error::config(
            "algorithm.num_generations",
            format!("{what} needs at least 2 completions per prompt (got {group}): with one, every advantage is 0"),
        ));
    }
    if !n.is_multiple_of(group) {
        bail!("{what}: {n} rewards are not a whole number of groups of {group}");
    }
    Ok(())
}

/// GRPO advantages (Shao et al. 2024 eq. 3; TRL's `sum_then_normalize`): A_i = r_i − mean_g(r),
/// divided by std + 1e-4 with the std of the group (`Group`) or of the batch (`Batch`), not at all
/// for `None`. Means and stds skip completions with no applicable reward (`None`), whose advantage
/// is 0; a group with a single scorable completion has NaN std, hence advantage 0 (TRL's
/// `nan_to_num`). `zero_std` is `isclose(std, 0)`.
pub fn group_advantages(
    rewards: &[Option<f32>],
    group: usize,
    scale: RewardScale,
) -> Result<Advantages> {
    let n = rewards.len();
    check_groups(n, group, "GRPO")?;
    let batch_std = nan_mean_std(rewards).1;
    let mut advantages = vec![0f32; n];
    let mut std = vec![0f32; n];
    let mut zero_std = vec![false; n];
    for (g, rs) in rewards.chunks(group).enumerate() {
        let (mean, gstd, _) = nan_mean_std(rs);
        let s = match scale {
            RewardScale::Group | RewardScale::None => gstd,
            RewardScale::Batch => batch_std,
        };
        for (j, r) in rs.iter().enumerate() {
            let i = g * group + j;
            std[i] = s;
            zero_std[i] = s.abs() <= 1e-8;
            let a = match r {
                None => f32::NAN,
                Some(r) => {
                    let c = r - mean;
                    match scale {
                        RewardScale::None => c,
                        _ => c / (s + STD_EPS),
                    }
                }
            };
            advantages[i] = if a.is_nan() { 0.0 } else { a };
        }
    }
    Ok(Advantages {
        advantages,
        std,
        zero_std,
    })
}

/// RLOO advantages (Ahmadian et al. 2024 eq. 5; TRL's `RLOOTrainer`): A_i = r_i − (Σ_j r_j − r_i) /
/// (n_g − 1) over the n_g scorable completions of the group; with `normalize`, the advantages are
/// then standardised over the batch: (A − mean) / (std + 1e-4). Unscorable completions and groups
/// with one scorable completion get 0. `std`/`zero_std` describe the group's rewards.
pub fn rloo_advantages(
    rewards: &[Option<f32>],
    group: usize,
    normalize: bool,
) -> Result<Advantages> {
    let n = rewards.len();
    check_groups(n, group, "RLOO")?;
    let mut adv: Vec<Option<f32>> = vec![None; n];
    let mut std = vec![0f32; n];
    let mut zero_std = vec![false; n];
    for (g, rs) in rewards.chunks(group).enumerate() {
        let (_, gstd, count) = nan_mean_std(rs);
        let sum = rs.iter().flatten().map(|&x| x as f64).sum::<f64>() as f32;
        for (j, r) in rs.iter().enumerate() {
            let i = g * group + j;
            std[i] = gstd;
            zero_std[i] = gstd.abs() <= 1e-8;
            if let Some(r) = *r {
                let baseline = (sum - r) / (count as f32 - 1.0);
                let a = r - baseline;
                adv[i] = (!a.is_nan()).then_some(a);
            }
        }
    }
    if normalize {
        let (mean, s, _) = nan_mean_std(&adv);
        for a in adv.iter_mut().flatten() {
            *a = (*a - mean) / (s + STD_EPS);
        }
    }
    Ok(Advantages {
        advantages: adv
            .into_iter()
            .map(|a| a.filter(|x| !x.is_nan()).unwrap_or(0.0))
            .collect(),
        std,
        zero_std,
    })
}

/// ReMax advantages (Li et al. 2023 eq. 5): A = r − r(greedy completion of the same prompt), the
/// greedy reward one per group. A completion, or a group whose greedy completion, has no
/// applicable reward gets 0.
pub fn remax_advantages(
    rewards: &[Option<f32>],
    group: usize,
    greedy: &[Option<f32>],
) -> Result<Vec<f32>> {
    if group == 0 || rewards.len() != group * greedy.len() {
        bail!(
            "ReMax: {} rewards for {} greedy baselines of groups of {group}",
            rewards.len(),
            greedy.len()
        );
    }
    Ok(rewards
        .chunks(group)
        .zip(greedy)
        .flat_map(|(rs, b)| {
            rs.iter().map(move |r| match (r, b) {
                (Some(r), Some(b)) => r - b,
                _ => 0.0,
            })
        })
        .collect())
}

/// REINFORCE++ advantages (Hu 2025, eqs. 4-6; verl `reinforce_plus_plus`): token rewards
/// r_t = −β·kl_t plus the outcome reward on the last token, discounted returns
/// G_t = r_t + γ G_{t+1}, then whitened over every token of the batch's scorable completions:
/// (G − mean) / √(var + 1e-8), var unbiased. `kl[i]` holds completion i's per-token KL (its
/// length is the completion's). Unscorable completions get 0 everywhere and stay out of the
/// statistics.
pub fn reinforce_pp_advantages(
    outcome: &[Option<f32>],
    kl: &[Vec<f32>],
    beta: f32,
    gamma: f32,
) -> Result<Vec<Vec<f32>>> {
    if outcome.len() != kl.len() {
        bail!(
            "REINFORCE++: {} rewards for {} completions",
            outcome.len(),
            kl.len()
        );
    }
    let mut returns: Vec<Vec<f32>> = Vec::with_capacity(kl.len());
    for (r, k) in outcome.iter().zip(kl) {
        let mut g = vec![0f32; k.len()];
        if let Some(r) = *r {
            let mut acc = 0f32;
            for t in (0..k.len()).rev() {
                let mut rt = -beta * k[t];
                if t + 1 == k.len() {
                    rt += r;
                }
                acc = rt + gamma * acc;
                g[t] = acc;
            }
        }
        returns.push(g);
    }
    let keep: Vec<bool> = outcome.iter().map(|r| r.is_some()).collect();
    Ok(whiten_tokens(returns, &keep))
}

/// Whitens per-token values over every token of the kept completions: (x − mean) / √(var + 1e-8),
/// var unbiased (verl's `masked_whiten`); dropped completions, and every completion when fewer
/// than 2 tokens are kept, get 0.
pub fn whiten_tokens(x: Vec<Vec<f32>>, keep: &[bool]) -> Vec<Vec<f32>> {
    let vals: Vec<f64> = x
        .iter()
        .zip(keep)
        .filter(|(_, &k)| k)
        .flat_map(|(g, _)| g.iter().map(|&x| x as f64))
        .collect();
    let n = vals.len();
    if n < 2 {
        return x.into_iter().map(|g| vec![0.0; g.len()]).collect();
    }
    let mean = vals.iter().sum::<f64>() / n as f64;
    let var = vals.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n as f64 - 1.0);
    let inv = 1.0 / (var + 1e-8).sqrt();
    x.into_iter()
        .zip(keep)
        .map(|(g, &k)| {
            if k {
                g.iter()
                    .map(|&x| ((x as f64 - mean) * inv) as f32)
                    .collect()
            } else {
                vec![0.0; g.len()]
            }
        })
        .collect()
}

/// Per-token values of a batch of completions (one row per completion, its own length).
pub type PerToken = Vec<Vec<f32>>;

/// Generalised advantage estimation (Schulman et al. 2016, eq. 16; verl `compute_gae_advantage_return`)
/// for PPO: per completion, token rewards `rewards[i]` (r_t, the outcome on the last token) and
/// the value head's predictions `values[i]` (V_t of the state before token t, V after the last
/// token = 0): δ_t = r_t + γ V_{t+1} − V_t, Â_t = δ_t + γλ Â_{t+1}, returns R_t = Â_t + V_t.
/// Returns (Â, R), unwhitened.
pub fn gae_advantages(
    rewards: &[Vec<f32>],
    values: &[Vec<f32>],
    gamma: f32,
    lam: f32,
) -> Result<(PerToken, PerToken)> {
    if rewards.len() != values.len() {
        bail!(
            "GAE: {} reward rows for {} value rows",
            rewards.len(),
            values.len()
        );
    }
    let mut adv = Vec::with_capacity(rewards.len());
    let mut ret = Vec::with_capacity(rewards.len());
    for (i, (r, v)) in rewards.iter().zip(values).enumerate() {
        if r.len() != v.len() {
            bail!(
                "GAE: completion {i} has {} token rewards and {} values",
                r.len(),
                v.len()
            );
        }
        let n = r.len();
        let mut a = vec![0f32; n];
        let mut acc = 0f32;
        for t in (0..n).rev() {
            let next = if t + 1 < n { v[t + 1] } else { 0.0 };
            let delta = r[t] + gamma * next - v[t];
            acc = delta + gamma * lam * acc;
            a[t] = acc;
        }
        ret.push(a.iter().zip(v).map(|(a, v)| a + v).collect());
        adv.push(a);
    }
    Ok((adv, ret))
}

/// PPO's clipped value loss per token (verl `compute_value_loss`, Schulman et al.'s baselines):
/// 0.5 · max((V − R)², (V_old + clip(V − V_old, −c, c) − R)²), all (B, T); the gradient flows
/// through `v` only.
pub fn clipped_value_loss(
    v: &Tensor,
    v_old: &Tensor,
    returns: &Tensor,
    clip: f64,
) -> Result<Tensor> {
    let d = (v - v_old)?.clamp(-clip, clip)?;
    let clipped = (v_old + d)?;
    let a = (v - returns)?.sqr()?;
    let b = (clipped - returns)?.sqr()?;
    (a.maximum(&b)? * 0.5).map_err(Into::into)
}

/// Where the importance ratio is taken (TRL `importance_sampling_level`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RatioLevel {
    /// ρ_t = π(y_t)/π_old(y_t) per token (PPO, GRPO).
    #[default]
    Token,
    /// One ratio per sequence, exp of the mean token log-ratio (GSPO).
    Sequence,
    /// One ratio per sequence, exp of the summed token log-ratio: π(y)/π_old(y) (TRL's RLOO).
    SequenceSum,
}

/// The clipped surrogate's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClipConfig {
    /// ρ is clipped below at 1 − eps_low.
    pub eps_low: f64,
    /// ρ is clipped above at 1 + eps_high (DAPO's clip-higher: eps_high > eps_low).
    pub eps_high: f64,
    /// Dual clip c > 1: for A < 0 the loss is at most −c·A (None: off).
    pub dual_clip: Option<f64>,
    pub level: RatioLevel,
}

/// The per-token loss and what a run logs about the clipping.
#[derive(Clone, Debug)]
pub struct PolicyLoss {
    /// ℓ (B, T), gradient through `logp`; positions off the mask hold values to be masked out.
    pub per_token: Tensor,
    /// ρ, (B, T) for token ratios or (B, 1) for sequence ratios (no gradient).
    pub ratio: Vec<Vec<f32>>,
    /// ρ broadcast to (B, T), with its gradient (for the KL's importance correction).
    pub ratio_t: Tensor,
    /// Per element of `ratio`: clipped low (ρ < 1 − ε_low, A < 0), high (ρ > 1 + ε_high, A > 0).
    pub low: Vec<Vec<bool>>,
    pub high: Vec<Vec<bool>>,
}

fn check_bt(t: &Tensor, b: usize, tt: usize, what: &str) -> Result<()> {
    let (b2, t2) = t.dims2()?;
    if (b2, t2) != (b, tt) {
        bail!("{what}: shape ({b2}, {t2}), expected ({b}, {tt})");
    }
    Ok(())
}

/// PPO's clipped surrogate per token (see the module docs): ℓ = −min(ρA, clip(ρ, 1−ε_low,
/// 1+ε_high)·A), and with a dual clip c, ℓ = min(ℓ, −c·A) where A < 0. Where a clip is active
/// the loss is a constant (no gradient), elsewhere it is −ρA with ∂ℓ/∂logp = −ρA. `logp`,
/// `old_logp`, `mask` (B, T); `adv` one per sequence (B) or, for token-level ratios, one per token
/// (B·T, row-major: REINFORCE++).
pub fn clipped_policy_loss(
    logp: &Tensor,
    old_logp: &Tensor,
    adv: &[f32],
    mask: &Tensor,
    cfg: &ClipConfig,
) -> Result<PolicyLoss> {
    let (b, t) = logp.dims2()?;
    check_bt(old_logp, b, t, "old_logp")?;
    check_bt(mask, b, t, "mask")?;
    let per_token_adv = adv.len() == b * t && adv.len() != b;
    if adv.len() != b && !per_token_adv {
        bail!(
            "clipped_policy_loss: {} advantages for {b} rows of {t} positions",
            adv.len()
        );
    }
    if per_token_adv && cfg.level != RatioLevel::Token {
        bail!("clipped_policy_loss: per-token advantages need token-level ratios");
    }
    let dev = logp.device();
    let log_ratio = (logp - old_logp.detach())?;
    let log_w = match cfg.level {
        RatioLevel::Token => log_ratio,
        RatioLevel::Sequence => {
            let m = mask.detach();
            let count = m.sum_keepdim(1)?.clamp(1f32, f32::MAX)?;
            (log_ratio * &m)?.sum_keepdim(1)?.broadcast_div(&count)?
        }
        RatioLevel::SequenceSum => (log_ratio * mask.detach())?.sum_keepdim(1)?,
    };
    let ratio = log_w.exp()?; // (B, T) or (B, 1)
    let rv: Vec<Vec<f32>> = ratio.to_vec2()?;
    let cols = rv.first().map_or(0, |r| r.len());
    let (lo, hi) = (1.0 - cfg.eps_low, 1.0 + cfg.eps_high);
    let mut active = Vec::with_capacity(b * cols);
    let mut constant = Vec::with_capacity(b * cols);
    let mut low = vec![vec![false; cols]; b];
    let mut high = vec![vec![false; cols]; b];
    for i in 0..b {
        for j in 0..cols {
            let a = if per_token_adv {
                adv[i * t + j]
            } else {
                adv[i]
            };
            let r = rv[i][j] as f64;
            // −min(ρA, clip(ρ)A): the clipped branch wins iff it is the smaller product.
            let clipped = r.clamp(lo, hi);
            let (mut act, mut c) = if (clipped * a as f64) < (r * a as f64) {
                (0f32, (-(clipped as f32) * a))
            } else {
                (1f32, 0f32)
            };
            low[i][j] = r < lo && a < 0.0;
            high[i][j] = r > hi && a > 0.0;
            if let Some(dc) = cfg.dual_clip {
                // For A < 0: min(max(−ρA, −clip(ρ)A), −cA); −ρA > −cA iff ρ > c.
                if a < 0.0 && r > dc {
                    act = 0.0;
                    c = -(dc as f32) * a;
                }
            }
            active.push(act);
            constant.push(c);
        }
    }
    let active = Tensor::from_vec(active, (b, cols), dev)?;
    let constant = Tensor::from_vec(constant, (b, cols), dev)?;
    let a = if per_token_adv {
        Tensor::from_slice(adv, (b, t), dev)?
    } else {
        Tensor::from_slice(adv, (b, 1), dev)?
    };
    let surrogate = ratio.broadcast_mul(&a)?.neg()?;
    let per = ((surrogate * &active)? + constant)?;
    let per_token = per.broadcast_as((b, t))?.contiguous()?;
    let ratio_t = ratio.broadcast_as((b, t))?.contiguous()?;
    Ok(PolicyLoss {
        per_token,
        ratio: rv,
        ratio_t,
        low,
        high,
    })
}

/// Schulman's estimators of KL(π ‖ π_ref) per token (http://joschu.net/blog/kl-approx.html).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KlEstimator {
    /// k1 = log π − log π_ref (unbiased, can be negative).
    K1,
    /// k2 = ½ (log π − log π_ref)².
    K2,
    /// k3 = π_ref/π − log(π_ref/π) − 1 (unbiased, ≥ 0; TRL GRPO, verl `low_var_kl`).
    #[default]
    K3,
}

/// Per-token KL estimate (B, T) with gradient through `logp` (the reference is a constant).
pub fn kl_penalty(logp: &Tensor, ref_logp: &Tensor, est: KlEstimator) -> Result<Tensor> {
    let d = (ref_logp.detach() - logp)?; // log π_ref − log π
    Ok(match est {
        KlEstimator::K1 => d.neg()?,
        KlEstimator::K2 => (d.sqr()? * 0.5)?,
        KlEstimator::K3 => ((d.exp()? - &d)? - 1.0)?,
    })
}

/// The KL term added to the per-token loss: β·KL, or with `correction` β·ρ·KL (DeepSeek-V3.2's
/// importance-corrected KL, TRL's `use_bias_correction_kl`, default there): ρ keeps its gradient.
pub fn kl_term(kl: &Tensor, ratio_t: &Tensor, beta: f64, correction: bool) -> Result<Tensor> {
    let k = if correction {
        (kl * ratio_t)?
    } else {
        kl.clone()
    };
    Ok((k * beta)?)
}

/// How per-token losses become the step's loss (TRL `loss_type`, verl `loss_agg_mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossAggregation {
    /// Mean over sequences of each sequence's token mean (original GRPO, verl
    /// `seq-mean-token-mean`).
    Grpo,
    /// Token mean within each micro-batch, averaged over the step's micro-batches (TRL `bnpo`):
    /// depends on how the step is split.
    Bnpo,
    /// Σ tokens / (sequences · L_max) (Dr. GRPO, verl `seq-mean-token-sum-norm`).
    DrGrpo,
    /// Σ tokens / tokens of the whole optimiser step (DAPO, verl `token-mean`).
    #[default]
    Dapo,
}

/// The global parts of the normaliser: totals over the whole optimiser step (all its micro-batches).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepTotals {
    /// Completions in the step.
    pub sequences: usize,
    /// Completion tokens (mask sum) in the step.
    pub tokens: f64,
    /// Micro-batches the step is split into.
    pub micro_batches: usize,
    /// L_max, the configured maximum completion length (Dr. GRPO's constant).
    pub max_completion_len: usize,
}

/// The micro-batch's share of the step's loss (summing it over the step's micro-batches gives the
/// step's loss): `per_token`, `mask` (B, T) → scalar. See [`LossAggregation`].
pub fn aggregate(
    per_token: &Tensor,
    mask: &Tensor,
    mode: LossAggregation,
    totals: &StepTotals,
) -> Result<Tensor> {
    let (b, t) = per_token.dims2()?;
    check_bt(mask, b, t, "mask")?;
    let m = mask.detach();
    let lm = (per_token * &m)?;
    let pos = |x: f64, what: &str| -> Result<f64> {
        if x > 0.0 {
            Ok(x)
        } else {
            bail!("aggregate: the step's {what} is {x}")
        }
    };
    Ok(match mode {
        LossAggregation::Grpo => {
            let count = m.sum(1)?.clamp(1f32, f32::MAX)?;
            ((lm.sum(1)? / count)?.sum_all()? / pos(totals.sequences as f64, "sequence count")?)?
        }
        LossAggregation::Bnpo => {
            let count = m.sum_all()?.clamp(1f32, f32::MAX)?;
            (lm.sum_all()?.div(&count)? / pos(totals.micro_batches as f64, "micro-batch count")?)?
        }
        LossAggregation::DrGrpo => {
            (lm.sum_all()?
                / pos(
                    (totals.sequences * totals.max_completion_len) as f64,
                    "sequences × max completion length",
                )?)?
        }
        LossAggregation::Dapo => (lm.sum_all()? / totals.tokens.max(1.0))?,
    })
}

/// Clip diagnostics of a batch (TRL's names): masked means of the low/high/region indicators,
/// the smallest per-sequence low-clip fraction and the largest per-sequence high-clip fraction.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ClipStats {
    pub low_mean: f64,
    pub low_min: f64,
    pub high_mean: f64,
    pub high_max: f64,
    pub region_mean: f64,
}

/// [`ClipStats`] of a [`PolicyLoss`] over `mask` (B, T) given as rows of 0/1.
pub fn clip_stats(loss: &PolicyLoss, mask: &[Vec<f32>]) -> ClipStats {
    let (mut low, mut high, mut region, mut count) = (0f64, 0f64, 0f64, 0f64);
    let (mut low_min, mut high_max) = (f64::INFINITY, f64::NEG_INFINITY);
    for (i, m) in mask.iter().enumerate() {
        let seq = loss.ratio[i].len() == 1;
        let (mut sl, mut sh, mut sc) = (0f64, 0f64, 0f64);
        for (j, &w) in m.iter().enumerate() {
            let jj = if seq { 0 } else { j };
            let w = w as f64;
            let (l, h) = (loss.low[i][jj], loss.high[i][jj]);
            sl += w * l as u8 as f64;
            sh += w * h as u8 as f64;
            sc += w;
            region += w * (l || h) as u8 as f64;
        }
        if seq {
            // One value per sequence (TRL: sequence-level ratios count once each).
            let (l, h) = (loss.low[i][0], loss.high[i][0]);
            low += l as u8 as f64;
            high += h as u8 as f64;
            count += 1.0;
            low_min = low_min.min(l as u8 as f64);
            high_max = high_max.max(h as u8 as f64);
            continue;
        }
        low += sl;
        high += sh;
        count += sc;
        if sc > 0.0 {
            low_min = low_min.min(sl / sc);
            high_max = high_max.max(sh / sc);
        }
    }
    if loss.ratio.first().is_some_and(|r| r.len() == 1) {
        region = (0..mask.len())
            .map(|i| (loss.low[i][0] || loss.high[i][0]) as u8 as f64)
            .sum();
    }
    let c = count.max(1.0);
    ClipStats {
        low_mean: low / c,
        low_min: if low_min.is_finite() { low_min } else { 0.0 },
        high_mean: high / c,
        high_max: if high_max.is_finite() { high_max } else { 0.0 },
        region_mean: region / c,
    }
}

/// Masked mean of a (B, T) tensor's values (metrics: KL, ratios), 0 for an empty mask.
pub fn masked_mean(x: &Tensor, mask: &Tensor) -> Result<f64> {
    let m = mask.detach();
    let n = m.sum_all()?.to_scalar::<f32>()? as f64;
    if n == 0.0 {
        return Ok(0.0);
    }
    Ok((x.detach() * &m)?.sum_all()?.to_scalar::<f32>()? as f64 / n)
}

/// Entropy (nats) of softmax(logits / temperature) of one row of logits.
pub fn entropy(logits: &[f32], temperature: f32) -> f64 {
    let t = if temperature > 0.0 { temperature } else { 1.0 } as f64;
    let m = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let z: f64 = logits.iter().map(|&x| ((x as f64 - m) / t).exp()).sum();
    let lz = z.ln();
    logits
        .iter()
        .map(|&x| {
            let lp = (x as f64 - m) / t - lz;
            -lp.exp() * lp
        })
        .sum()
}
