//! Hand-derived values for the RL objectives (advantages, clipped surrogate, KL, aggregation) and
//! the gradient-accumulation invariance of each aggregation mode. Each derivation is in a comment.

use gradus_objectives::rl::*;
use gradus_tensor::{Device, Tensor, Var};

const TOL: f64 = 1e-6;

fn close(got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!(
            (*g as f64 - w).abs() < TOL * (1.0 + w.abs()),
            "got {got:?}, want {want:?}"
        );
    }
}

fn mat(rows: &[&[f32]]) -> Tensor {
    let t = rows[0].len();
    let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_vec(flat, (rows.len(), t), &Device::Cpu).unwrap()
}

#[test]
fn grpo_group_advantages() {
    // Group 1 [1, 0, 0, 1]: mean 0.5, Σ(x − m)² = 1, unbiased var 1/3 → A = ±0.5 / (√(1/3) + 1e-4).
    // Group 2 [2, 2, 2, 2]: std 0 → A = 0, zero_std.
    // Group 3 [1, None, 0, 2]: scorable {1, 0, 2}, mean 1, var (0 + 1 + 1)/2 = 1 →
    //   A = [0, 0 (unscorable), −1/1.0001, 1/1.0001].
    let r = [
        Some(1.0),
        Some(0.0),
        Some(0.0),
        Some(1.0),
        Some(2.0),
        Some(2.0),
        Some(2.0),
        Some(2.0),
        Some(1.0),
        None,
        Some(0.0),
        Some(2.0),
    ];
    let a = group_advantages(&r, 4, RewardScale::Group).unwrap();
    let h = 0.5 / ((1.0f64 / 3.0).sqrt() + 1e-4);
    close(
        &a.advantages,
        &[
            h,
            -h,
            -h,
            h,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            -1.0 / 1.0001,
            1.0 / 1.0001,
        ],
    );
    assert_eq!(a.zero_std, [[false; 4], [true; 4], [false; 4]].concat());
    assert!((a.frac_zero_std() - 1.0 / 3.0).abs() < 1e-12);

    // scale none: A = r − mean_group.
    let a = group_advantages(&r, 4, RewardScale::None).unwrap();
    close(
        &a.advantages,
        &[
            0.5, -0.5, -0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0, 1.0,
        ],
    );

    // scale batch: group means, one std over the 11 scorable rewards
    // {1,0,0,1,2,2,2,2,1,0,2}: mean 13/11, Σx² = 23 → Σ(x − m)² = 23 − 169/11 = 84/11, var 8.4/10.
    let a = group_advantages(&r, 4, RewardScale::Batch).unwrap();
    let s = (84.0f64 / 11.0 / 10.0).sqrt() + 1e-4;
    close(
        &a.advantages,
        &[
            0.5 / s,
            -0.5 / s,
            -0.5 / s,
            0.5 / s,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            -1.0 / s,
            1.0 / s,
        ],
    );
    // A group whose only scorable completion has NaN std: advantage 0 (TRL nan_to_num).
    let a = group_advantages(&[Some(3.0), None], 2, RewardScale::Group).unwrap();
    close(&a.advantages, &[0.0, 0.0]);
}

#[test]
fn grpo_rejects_groups_of_one_and_ragged_batches() {
    let e = group_advantages(&[Some(1.0), Some(0.0)], 1, RewardScale::Group).unwrap_err();
    assert!(e.to_string().contains("num_generations"), "{e}");
    assert!(group_advantages(&[Some(1.0); 3], 2, RewardScale::Group).is_err());
    assert!(rloo_advantages(&[Some(1.0); 2], 1, false).is_err());
}

#[test]
fn combined_rewards_skip_inapplicable_and_reject_nan() {
    // r = 2·r0 + 0.5·r1 over the rewards that apply: [2·1 + 0.5·4, 2·3, 0.5·2, None].
    let names = vec!["a".to_string(), "b".to_string()];
    let per = vec![
        vec![Some(1.0), Some(3.0), None, None],
        vec![Some(4.0), None, Some(2.0), None],
    ];
    let r = combine_rewards(&per, &[2.0, 0.5], &names).unwrap();
    assert_eq!(r, vec![Some(4.0), Some(6.0), Some(1.0), None]);
    let bad = vec![vec![Some(1.0), Some(f32::NAN)], vec![None, None]];
    let e = combine_rewards(&bad, &[1.0, 1.0], &names).unwrap_err();
    assert!(
        e.to_string().contains("`a`") && e.to_string().contains("completion 1"),
        "{e}"
    );
}

#[test]
fn rloo_leave_one_out() {
    // [1, 0, 0, 1]: baseline_i = (2 − r_i)/3 → A(1) = 1 − 1/3 = 2/3, A(0) = 0 − 2/3 = −2/3.
    // [1, None, 0, 2]: Σ = 3 over 3 scorable → A(1) = 1 − 2/2 = 0, A(0) = 0 − 3/2, A(2) = 2 − 1/2.
    let r = [
        Some(1.0),
        Some(0.0),
        Some(0.0),
        Some(1.0),
        Some(1.0),
        None,
        Some(0.0),
        Some(2.0),
    ];
    let a = rloo_advantages(&r, 4, false).unwrap();
    let t = 2.0 / 3.0;
    close(&a.advantages, &[t, -t, -t, t, 0.0, 0.0, -1.5, 1.5]);
    // normalised over the 7 scorable advantages {t,−t,−t,t,0,−1.5,1.5}: mean 0,
    // Σ² = 4·4/9 + 2·2.25 = 16/9 + 4.5, var = Σ²/6.
    let a = rloo_advantages(&r, 4, true).unwrap();
    let s = ((16.0f64 / 9.0 + 4.5) / 6.0).sqrt() + 1e-4;
    close(
        &a.advantages,
        &[t / s, -t / s, -t / s, t / s, 0.0, 0.0, -1.5 / s, 1.5 / s],
    );
}

#[test]
fn remax_subtracts_the_greedy_reward() {
    // Groups of 2 with greedy rewards 0.5 and None: [1 − .5, 0 − .5, 0, 0].
    let a = remax_advantages(
        &[Some(1.0), Some(0.0), Some(1.0), Some(1.0)],
        2,
        &[Some(0.5), None],
    )
    .unwrap();
    close(&a, &[0.5, -0.5, 0.0, 0.0]);
    assert!(remax_advantages(&[Some(1.0)], 2, &[Some(0.0)]).is_err());
}

#[test]
fn reinforce_pp_whitened_returns() {
    // β 0.5, γ 1. Completion 0: kl [0.1, 0.2], outcome 1 → r = [−0.05, −0.1 + 1] →
    // returns [0.85, 0.9]. Completion 1: kl [0], outcome 0 → [0]. Completion 2 unscorable.
    // Whitening over {0.85, 0.9, 0}: mean 1.75/3, var unbiased.
    let kl = vec![vec![0.1, 0.2], vec![0.0], vec![0.3]];
    let a = reinforce_pp_advantages(&[Some(1.0), Some(0.0), None], &kl, 0.5, 1.0).unwrap();
    let m = 1.75f64 / 3.0;
    let var = ((0.85 - m).powi(2) + (0.9 - m).powi(2) + m * m) / 2.0;
    let s = (var + 1e-8).sqrt();
    close(&a[0], &[(0.85 - m) / s, (0.9 - m) / s]);
    close(&a[1], &[(0.0 - m) / s]);
    close(&a[2], &[0.0]);
    // γ = 0.5: returns [−0.05 + 0.5·0.9, 0.9] = [0.4, 0.9].
    let a = reinforce_pp_advantages(&[Some(1.0), Some(0.0)], &kl[..2], 0.5, 0.5).unwrap();
    let m = 1.3f64 / 3.0;
    let var = ((0.4 - m).powi(2) + (0.9 - m).powi(2) + m * m) / 2.0;
    let s = (var + 1e-8).sqrt();
    close(&a[0], &[(0.4 - m) / s, (0.9 - m) / s]);
}

fn loss_and_grad(logp: &[f32], adv: f32, cfg: &ClipConfig) -> (Vec<f32>, Vec<f32>, PolicyLoss) {
    // old log-probs 0, so ρ = exp(logp).
    let n = logp.len();
    let v = Var::from_slice(logp, (1, n), &Device::Cpu).unwrap();
    let old = Tensor::zeros((1, n), gradus_tensor::DType::F32, &Device::Cpu).unwrap();
    let mask = Tensor::ones((1, n), gradus_tensor::DType::F32, &Device::Cpu).unwrap();
    let pl = clipped_policy_loss(v.as_tensor(), &old, &[adv], &mask, cfg).unwrap();
    let vals = pl
        .per_token
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let g = pl.per_token.sum_all().unwrap().backward().unwrap();
    let grad = g
        .get(v.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    (vals, grad, pl)
}

#[test]
fn clipped_surrogate_token_level() {
    // ρ = [1.5, 0.5, 1.1], ε_low 0.2, ε_high 0.28 (clip range [0.8, 1.28]).
    let logp = [1.5f32.ln(), 0.5f32.ln(), 1.1f32.ln()];
    let cfg = ClipConfig {
        eps_low: 0.2,
        eps_high: 0.28,
        dual_clip: None,
        level: RatioLevel::Token,
    };
    // A = +1: −min(ρ, clip ρ) = [−1.28 (clipped high, no gradient), −0.5, −1.1];
    // ∂(−ρA)/∂logp = −ρA where unclipped.
    let (l, g, pl) = loss_and_grad(&logp, 1.0, &cfg);
    close(&l, &[-1.28, -0.5, -1.1]);
    close(&g, &[0.0, -0.5, -1.1]);
    assert_eq!(pl.high[0], vec![true, false, false]);
    assert_eq!(pl.low[0], vec![false, false, false]);
    // A = −1: −min(−ρ, −clip ρ) = max(ρ, clip ρ) = [1.5, 0.8 (clipped low), 1.1]; gradient ρ.
    let (l, g, pl) = loss_and_grad(&logp, -1.0, &cfg);
    close(&l, &[1.5, 0.8, 1.1]);
    close(&g, &[1.5, 0.0, 1.1]);
    assert_eq!(pl.low[0], vec![false, true, false]);
    // Dual clip c = 1.4, A = −1: the 1.5 token's loss is capped at −cA = 1.4, no gradient.
    let dual = ClipConfig {
        dual_clip: Some(1.4),
        ..cfg
    };
    let (l, g, _) = loss_and_grad(&logp, -1.0, &dual);
    close(&l, &[1.4, 0.8, 1.1]);
    close(&g, &[0.0, 0.0, 1.1]);
    // Clip stats over the A = −1 case: one low-clipped token of 3.
    let (_, _, pl) = loss_and_grad(&logp, -1.0, &cfg);
    let st = clip_stats(&pl, &[vec![1.0, 1.0, 1.0]]);
    assert!((st.low_mean - 1.0 / 3.0).abs() < 1e-12 && st.high_mean == 0.0);
    assert!((st.region_mean - 1.0 / 3.0).abs() < 1e-12);
}

#[test]
fn clipped_surrogate_sequence_level() {
    // GSPO: log w = mean_t (logp − old) over the mask = (ln 1.5 + ln 0.5 + ln 1.1)/3 (old 0),
    // w = (0.825)^(1/3); A = 1, unclipped (w ≈ 0.938 ∈ [0.8, 1.28]) → ℓ_t = −w for every token,
    // Σ_t ℓ_t = −3w and ∂/∂logp_t = −w · (1/3) · 3 = −w.
    let logp = [1.5f32.ln(), 0.5f32.ln(), 1.1f32.ln()];
    let cfg = ClipConfig {
        eps_low: 0.2,
        eps_high: 0.28,
        dual_clip: None,
        level: RatioLevel::Sequence,
    };
    let (l, g, pl) = loss_and_grad(&logp, 1.0, &cfg);
    let w = (1.5f64 * 0.5 * 1.1).powf(1.0 / 3.0);
    close(&l, &[-w, -w, -w]);
    close(&g, &[-w, -w, -w]);
    assert_eq!(pl.ratio[0].len(), 1);
}

#[test]
fn kl_estimators() {
    // log π = ln ½, log π_ref = ln ¼: d = log π_ref − log π = −ln 2.
    // k1 = ln 2 (∂ = 1); k2 = ½ ln² 2 (∂ = ln 2); k3 = e^d − d − 1 = ½ + ln 2 − 1 (∂ = 1 − e^d = ½).
    let v = Var::from_slice(&[0.5f32.ln()], (1, 1), &Device::Cpu).unwrap();
    let r = mat(&[&[0.25f32.ln()]]);
    let l2 = std::f64::consts::LN_2;
    for (est, val, grad) in [
        (KlEstimator::K1, l2, 1.0),
        (KlEstimator::K2, 0.5 * l2 * l2, l2),
        (KlEstimator::K3, l2 - 0.5, 0.5),
    ] {
        let k = kl_penalty(v.as_tensor(), &r, est).unwrap();
        close(&k.flatten_all().unwrap().to_vec1::<f32>().unwrap(), &[val]);
        let g = k.sum_all().unwrap().backward().unwrap();
        let gv = g.get(v.as_tensor()).unwrap().flatten_all().unwrap();
        close(&gv.to_vec1::<f32>().unwrap(), &[grad]);
    }
}

#[test]
fn aggregation_modes() {
    // ℓ = [[1, 2, 3], [4, 0, 0]], mask [[1, 1, 0], [1, 0, 0]]: Σℓm = 7 over 3 tokens.
    // grpo: (1.5 + 4)/2 = 2.75; bnpo: 7/3 (one micro-batch); dr_grpo: 7/(2·4) with L_max 4;
    // dapo: 7/3.
    let l = mat(&[&[1.0, 2.0, 3.0], &[4.0, 0.0, 0.0]]);
    let m = mat(&[&[1.0, 1.0, 0.0], &[1.0, 0.0, 0.0]]);
    let totals = StepTotals {
        sequences: 2,
        tokens: 3.0,
        micro_batches: 1,
        max_completion_len: 4,
    };
    for (mode, want) in [
        (LossAggregation::Grpo, 2.75),
        (LossAggregation::Bnpo, 7.0 / 3.0),
        (LossAggregation::DrGrpo, 0.875),
        (LossAggregation::Dapo, 7.0 / 3.0),
    ] {
        let v = aggregate(&l, &m, mode, &totals)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        close(&[v], &[want]);
    }
    assert!((masked_mean(&l, &m).unwrap() - 7.0 / 3.0).abs() < 1e-6);
    // Entropy of a uniform distribution over 4 tokens is ln 4 at any temperature.
    assert!((entropy(&[0.3; 4], 0.7) - 4f64.ln()).abs() < 1e-12);
}

/// Deterministic inputs of 8 completions × T = 5: log-probs sin-based, old log-probs shifted so
/// that some tokens clip, ragged masks (lengths 5, 1, 3, 5, 2, 4, 5, 1), advantages ±.
/// log-probs, old log-probs, reference log-probs, mask (each B·T, row-major) and advantages (B).
type Values = Vec<f32>;

fn step_inputs() -> (Values, Values, Values, Values, Values) {
    let (b, t) = (8, 5);
    let lens = [5, 1, 3, 5, 2, 4, 5, 1];
    let logp: Vec<f32> = (0..b * t)
        .map(|i| -1.0 - 0.5 * (i as f32 * 0.7).sin())
        .collect();
    let old: Vec<f32> = logp
        .iter()
        .enumerate()
        .map(|(i, x)| x + 0.4 * (i as f32 * 1.3).cos())
        .collect();
    let refl: Vec<f32> = logp
        .iter()
        .enumerate()
        .map(|(i, x)| x - 0.3 * (i as f32 * 0.9).sin())
        .collect();
    let mask: Vec<f32> = (0..b * t)
        .map(|i| ((i % t) < lens[i / t]) as u8 as f32)
        .collect();
    let adv: Vec<f32> = (0..b).map(|i| (i as f32 * 1.1).sin()).collect();
    (logp, old, refl, mask, adv)
}

/// The gradient w.r.t. every completion's log-probs of one optimiser step whose 8 completions
/// come in `micro` micro-batches (accumulated: gradients of the micro-batches' losses added).
fn step_gradient(mode: LossAggregation, level: RatioLevel, micro: usize) -> Vec<f32> {
    let (b, t) = (8, 5);
    let (logp, old, refl, mask, adv) = step_inputs();
    let cfg = ClipConfig {
        eps_low: 0.2,
        eps_high: 0.28,
        dual_clip: Some(3.0),
        level,
    };
    let totals = StepTotals {
        sequences: b,
        tokens: mask.iter().sum::<f32>() as f64,
        micro_batches: micro,
        max_completion_len: t,
    };
    let rows = b / micro;
    let mut grad = Vec::with_capacity(b * t);
    for k in 0..micro {
        let r = k * rows * t..(k + 1) * rows * t;
        let dev = &Device::Cpu;
        let v = Var::from_slice(&logp[r.clone()], (rows, t), dev).unwrap();
        let o = Tensor::from_slice(&old[r.clone()], (rows, t), dev).unwrap();
        let rf = Tensor::from_slice(&refl[r.clone()], (rows, t), dev).unwrap();
        let m = Tensor::from_slice(&mask[r.clone()], (rows, t), dev).unwrap();
        let a = &adv[k * rows..(k + 1) * rows];
        let pl = clipped_policy_loss(v.as_tensor(), &o, a, &m, &cfg).unwrap();
        let kl = kl_penalty(v.as_tensor(), &rf, KlEstimator::K3).unwrap();
        let per = (pl.per_token + (kl * 0.04).unwrap()).unwrap();
        let loss = aggregate(&per, &m, mode, &totals).unwrap();
        let g = loss.backward().unwrap();
        grad.extend(
            g.get(v.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
        );
    }
    grad
}

#[test]
fn gradient_is_the_same_for_8x1_and_2x4_except_bnpo() {
    // grpo (÷ the step's sequences), dr_grpo (÷ sequences·L_max) and dapo (÷ the step's tokens)
    // normalise by step totals, so splitting the step into micro-batches changes nothing: each
    // token's gradient is the same product of the same numbers.
    for level in [RatioLevel::Token, RatioLevel::Sequence] {
        for mode in [
            LossAggregation::Grpo,
            LossAggregation::DrGrpo,
            LossAggregation::Dapo,
        ] {
            let full = step_gradient(mode, level, 1);
            let split = step_gradient(mode, level, 4);
            assert!(
                full.iter().any(|&g| g.abs() > 1e-3),
                "{mode:?}: zero gradient"
            );
            let d = full
                .iter()
                .zip(&split)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(d <= 1e-7, "{mode:?} {level:?}: 8x1 vs 2x4 differ by {d}");
        }
    }
    // bnpo divides each micro-batch by its own token count (TRL's definition), so with ragged
    // completions the split step is a different weighting: completion 1 (1 token) sits in a
    // micro-batch of 6 tokens (÷ 6·4 = 24) instead of the step's 26.
    let full = step_gradient(LossAggregation::Bnpo, RatioLevel::Token, 1);
    let split = step_gradient(LossAggregation::Bnpo, RatioLevel::Token, 4);
    let i = 5; // completion 1 (row 1 of 5 positions), token 0
    assert!(
        (full[i] * 26.0 - split[i] * 24.0).abs() < 1e-5 * full[i].abs().max(1e-3),
        "bnpo: full {} split {}",
        full[i],
        split[i]
    );
    assert!((full[i] - split[i]).abs() > 1e-4 * full[i].abs());
}

#[test]
fn gae_by_hand() {
    // rewards (0, 1), values (0.5, 0.25), γ 0.9, λ 0.8:
    // δ₁ = 1 + 0.9·0 − 0.25 = 0.75, Â₁ = 0.75; δ₀ = 0 + 0.9·0.25 − 0.5 = −0.275,
    // Â₀ = −0.275 + 0.9·0.8·0.75 = 0.265; R = Â + V = (0.765, 1.0).
    let (a, r) = gae_advantages(&[vec![0.0, 1.0]], &[vec![0.5, 0.25]], 0.9, 0.8).unwrap();
    close(&a[0], &[0.265, 0.75]);
    close(&r[0], &[0.765, 1.0]);
    // γ = λ = 1 (verl's default): Â_t = Σ_{s≥t} r_s − V_t and R_t the Monte Carlo return.
    let (a, r) = gae_advantages(
        &[vec![0.5, 0.0, 2.0], vec![1.0]],
        &[vec![1.0, 2.0, 3.0], vec![-1.0]],
        1.0,
        1.0,
    )
    .unwrap();
    close(&a[0], &[1.5, 0.0, -1.0]);
    close(&r[0], &[2.5, 2.0, 2.0]);
    close(&a[1], &[2.0]);
    close(&r[1], &[1.0]);
    assert!(gae_advantages(&[vec![0.0]], &[vec![0.0, 1.0]], 1.0, 1.0).is_err());
    assert!(gae_advantages(&[vec![0.0]], &[], 1.0, 1.0).is_err());
}

#[test]
fn whitening_over_kept_tokens() {
    // Kept tokens 1, 2, 3 (mean 2, unbiased var 1); the dropped row gets zeros.
    let w = whiten_tokens(
        vec![vec![1.0, 2.0], vec![3.0], vec![100.0]],
        &[true, true, false],
    );
    let s = 1.0 / (1.0f64 + 1e-8).sqrt();
    close(&w[0], &[-s, 0.0]);
    close(&w[1], &[s]);
    close(&w[2], &[0.0]);
    // Fewer than two kept tokens: all zero.
    let w = whiten_tokens(vec![vec![5.0], vec![7.0]], &[true, false]);
    close(&w[0], &[0.0]);
}

#[test]
fn clipped_value_loss_by_hand() {
    // Row 0: V 1.0, V_old 0, R 2, c 0.5: unclipped (1−2)² = 1, clipped (0.5−2)² = 2.25, loss
    // 0.5·2.25 = 1.125 and no gradient (the clipped branch is flat in V).
    // Row 1: V 0.2, V_old 0, R 1: both branches (−0.8)², loss 0.32, ∂/∂V = V − R = −0.8.
    // Row 2: V −0.1, V_old 0.4, R 0: unclipped 0.01, clipped (−0.1)² too (|Δ| = 0.5 ≤ c): 0.005, ∂ = −0.1.
    let v = Var::from_vec(vec![1.0f32, 0.2, -0.1], (3, 1), &Device::Cpu).unwrap();
    let v_old = mat(&[&[0.0], &[0.0], &[0.4]]);
    let r = mat(&[&[2.0], &[1.0], &[0.0]]);
    let l = clipped_value_loss(v.as_tensor(), &v_old, &r, 0.5).unwrap();
    let got: Vec<f32> = l.flatten_all().unwrap().to_vec1().unwrap();
    close(&got, &[1.125, 0.32, 0.005]);
    let g = l.sum_all().unwrap().backward().unwrap();
    let gv: Vec<f32> = g
        .get(v.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    close(&gv, &[0.0, -0.8, -0.1]);
}
