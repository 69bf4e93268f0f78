//! Hand-derived values for every objective; the derivation is in each comment.

use gradus_objectives::math::{log_sigmoid, log_sigmoid_f64, values};
use gradus_objectives::preference::*;
use gradus_objectives::ranking::{ranking_report, PairScores};
use gradus_objectives::reward::*;
use gradus_tensor::{Device, Tensor, Var};

const TOL: f32 = 1e-5;

fn t(v: &[f32]) -> Tensor {
    Tensor::from_slice(v, v.len(), &Device::Cpu).unwrap()
}

fn seq(logps: &[f32], lens: &[f32]) -> SeqLogps {
    SeqLogps::new(t(logps), lens.to_vec()).unwrap()
}

fn pair(c: f32, r: f32, lc: f32, lr: f32) -> PairLogps {
    PairLogps::new(seq(&[c], &[lc]), seq(&[r], &[lr])).unwrap()
}

fn close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < TOL, "got {got:?}, want {want:?}");
    }
}

#[test]
fn log_sigmoid_is_stable() {
    // log σ(0) = −ln 2; log σ(−100) = −100 − log(1 + e^{−100}) ≈ −100; log σ(100) ≈ −e^{−100} ≈ 0.
    let v = values(&log_sigmoid(&t(&[0.0, -100.0, 100.0])).unwrap()).unwrap();
    close(&v, &[-std::f32::consts::LN_2, -100.0, 0.0]);
    assert!((log_sigmoid_f64(0.0) + std::f64::consts::LN_2).abs() < 1e-12);
}

// Shared pair: policy log π(y_w) = −4 (|y_w| = 2), log π(y_l) = −6 (|y_l| = 4);
// reference −5 and −5. Log-ratios: chosen +1, rejected −1, so h = 2.
fn policy() -> PairLogps {
    pair(-4.0, -6.0, 2.0, 4.0)
}
fn reference() -> PairLogps {
    pair(-5.0, -5.0, 2.0, 4.0)
}

#[test]
fn log_sigmoid_gradient_is_sigma_minus_x_even_at_zero() {
    // d/dx log σ(x) = σ(−x): 0.5 at 0 (where DPO starts: every margin is 0), σ(2) = 0.8807971 at −2,
    // σ(−3) = 0.0474259 at 3, 1 at −100 and ≈ 0 at 100.
    let x = Var::from_tensor(&t(&[0.0, -2.0, 3.0, -100.0, 100.0])).unwrap();
    let g = log_sigmoid(x.as_tensor())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    close(
        &values(g.get(x.as_tensor()).unwrap()).unwrap(),
        &[0.5, 0.8807971, 0.0474259, 1.0, 0.0],
    );
}

#[test]
fn dpo_sigmoid_and_cdpo() {
    // β = 0.5: βh = 1, L = −log σ(1) = ln(1 + e^{−1}) = 0.3132617; rewards β·(±1) = ±0.5.
    let l = dpo(&policy(), &reference(), 0.5, 0.0).unwrap();
    close(&values(&l.losses).unwrap(), &[0.3132617]);
    close(&l.chosen_rewards, &[0.5]);
    close(&l.rejected_rewards, &[-0.5]);
    // ε = 0.2: 0.8·0.3132617 + 0.2·(−log σ(−1) = 1.3132617) = 0.5132617.
    let l = dpo(&policy(), &reference(), 0.5, 0.2).unwrap();
    close(&values(&l.losses).unwrap(), &[0.5132617]);
}

#[test]
fn dpo_gradient_is_minus_beta_sigma_minus_beta_h() {
    // dL/d log π(y_w) = −β σ(−βh) = −0.5 · σ(−1) = −0.5 · 0.2689414 = −0.1344707; rejected: +0.1344707.
    let c = Var::from_tensor(&t(&[-4.0])).unwrap();
    let r = Var::from_tensor(&t(&[-6.0])).unwrap();
    let pol = PairLogps::new(
        SeqLogps::new(c.as_tensor().clone(), vec![2.0]).unwrap(),
        SeqLogps::new(r.as_tensor().clone(), vec![4.0]).unwrap(),
    )
    .unwrap();
    let l = dpo(&pol, &reference(), 0.5, 0.0).unwrap();
    let g = l.losses.sum_all().unwrap().backward().unwrap();
    close(
        &values(g.get(c.as_tensor()).unwrap()).unwrap(),
        &[-0.1344707],
    );
    close(
        &values(g.get(r.as_tensor()).unwrap()).unwrap(),
        &[0.1344707],
    );
}

#[test]
fn robust_dpo_value() {
    // [0.8·0.3132617 + 0.2·log σ(−1)] / (1 − 0.4) = [0.2506094 − 0.2626523] / 0.6 = −0.0200716.
    let l = robust_dpo(&policy(), &reference(), 0.5, 0.2).unwrap();
    close(&values(&l.losses).unwrap(), &[-0.0200716]);
}

#[test]
fn ipo_uses_per_token_log_ratios() {
    // Per token: policy −2, −1.5; reference −2.5, −1.25. h = 0.5 − (−0.25) = 0.75.
    // β = 0.5: (0.75 − 1/(2·0.5))² = 0.0625.
    let obj = PairObjective::Ipo { beta: 0.5 };
    let l = obj.loss(&policy(), Some(&reference())).unwrap();
    close(&values(&l.losses).unwrap(), &[0.0625]);
    // Rewards are β times the summed log-ratios (TRL logs them so): 0.5·(+1), 0.5·(−1).
    close(&l.chosen_rewards, &[0.5]);
    close(&l.rejected_rewards, &[-0.5]);
}

#[test]
fn dpo_norm_value() {
    // Per-token h = 0.75 (as above); β = 2: βh = 1.5, −log σ(1.5) = ln(1 + e^{−1.5}) = 0.2014133.
    let obj = PairObjective::DpoNorm { beta: 2.0 };
    close(
        &values(&obj.loss(&policy(), Some(&reference())).unwrap().losses).unwrap(),
        &[0.2014133],
    );
}

#[test]
fn simpo_value() {
    // avg log π: −2 and −1.5. β = 2, γ = 2·0.5 = 1: z = 2·(−0.5) − 1 = −2; −log σ(−2) = ln(1 + e²) = 2.1269280.
    let l = simpo(&policy(), 2.0, 0.5).unwrap();
    close(&values(&l.losses).unwrap(), &[2.126_928]);
    close(&l.chosen_rewards, &[-4.0]);
}

#[test]
fn gamma_dpo_interpolates() {
    // Reference −5 (y_w), −7 (y_l). Policy margin log π(y_w)/π(y_l) = 2, reference margin 2.
    // γ = 1: z = 0.5·(2 − 2) = 0 → ln 2 (= DPO). γ = 0: z = 0.5·2 = 1 → 0.3132617.
    let refp = pair(-5.0, -7.0, 2.0, 4.0);
    let g1 = gamma_dpo(&policy(), &refp, 0.5, 1.0).unwrap();
    let d = dpo(&policy(), &refp, 0.5, 0.0).unwrap();
    close(&values(&g1.losses).unwrap(), &[std::f32::consts::LN_2]);
    close(&values(&d.losses).unwrap(), &[std::f32::consts::LN_2]);
    let g0 = gamma_dpo(&policy(), &refp, 0.5, 0.0).unwrap();
    close(&values(&g0.losses).unwrap(), &[0.3132617]);
}

#[test]
fn hinge_value() {
    // h = 2: β = 0.5 → max(0, 1 − 1) = 0; β = 0.25 → 0.5.
    close(
        &values(&hinge(&policy(), &reference(), 0.5).unwrap().losses).unwrap(),
        &[0.0],
    );
    close(
        &values(&hinge(&policy(), &reference(), 0.25).unwrap().losses).unwrap(),
        &[0.5],
    );
}

#[test]
fn kto_value() {
    // r = −4 − (−5) = 1, z = 0.5, β = 1. Desirable: 1 − σ(0.5) = 0.3775407.
    // Undesirable (weight 2): 2·(1 − σ(−0.5)) = 2·0.6224593 = 1.2449187.
    let p = seq(&[-4.0, -4.0], &[2.0, 2.0]);
    let r = seq(&[-5.0, -5.0], &[2.0, 2.0]);
    let l = kto(&p, &r, &[true, false], 0.5, 1.0, 1.0, 2.0).unwrap();
    close(&values(&l.losses).unwrap(), &[0.3775407, 1.2449187]);
    // A negative KL estimate is clamped to 0: desirable 1 − σ(1) = 0.2689414.
    let l = kto(
        &seq(&[-4.0], &[2.0]),
        &seq(&[-5.0], &[2.0]),
        &[true],
        -3.0,
        1.0,
        1.0,
        1.0,
    )
    .unwrap();
    close(&values(&l.losses).unwrap(), &[0.2689414]);
}

#[test]
fn marge_value() {
    // log π = −4 over 2 tokens (avg −2), log π_ref = −4.5: w = e^{0.5} = 1.6487213; r = 1.
    // α = 1, β = 0.1: 1.6487213·(−2 − 1) + 0.1·2 = −4.7461638. Self-normalised (one sample): w = 1 → −2.8.
    let l = marge(
        &seq(&[-4.0], &[2.0]),
        &seq(&[-4.5], &[2.0]),
        &[1.0],
        1.0,
        0.1,
        false,
    )
    .unwrap();
    close(&values(&l.losses).unwrap(), &[-4.746_164]);
    let l = marge(
        &seq(&[-4.0], &[2.0]),
        &seq(&[-4.5], &[2.0]),
        &[1.0],
        1.0,
        0.1,
        true,
    )
    .unwrap();
    close(&values(&l.losses).unwrap(), &[-2.8]);
}

#[test]
fn reward_losses() {
    // r_c = 1, r_r = 0: BT = ln(1 + e^{−1}) = 0.3132617; margin 1 → ln 2; scaled m = 3 → 0.9397851;
    // centering 0.5·(1 + 0)² = 0.5; regression [1, 2] vs [0, 4]: (1 + 4)/2 = 2.5.
    let (rc, rr) = (t(&[1.0]), t(&[0.0]));
    close(
        &values(&bradley_terry(&rc, &rr).unwrap()).unwrap(),
        &[0.3132617],
    );
    close(
        &values(&bt_margin(&rc, &rr, &[1.0]).unwrap()).unwrap(),
        &[std::f32::consts::LN_2],
    );
    close(
        &values(&scaled_bt(&rc, &rr, &[3.0]).unwrap()).unwrap(),
        &[0.9397851],
    );
    close(&values(&centering(&rc, &rr, 0.5).unwrap()).unwrap(), &[0.5]);
    let pred = Tensor::from_slice(&[1.0f32, 2.0], (1, 2), &Device::Cpu).unwrap();
    close(
        &values(&regression(&pred, &[0.0, 4.0]).unwrap()).unwrap(),
        &[2.5],
    );
    assert!(regression(&pred, &[0.0]).is_err());
    assert!(bt_margin(&rc, &rr, &[]).is_err());
}

#[test]
fn empty_completion_is_an_error() {
    let e = SeqLogps::new(t(&[-1.0]), vec![0.0])
        .unwrap_err()
        .to_string();
    assert!(e.contains("empty completion"), "{e}");
}

#[test]
fn objective_config_parses_with_defaults_and_rejects_unknown_keys() {
    #[derive(serde::Deserialize)]
    struct W {
        objective: PreferenceObjective,
    }
    let w: W = toml::from_str("[objective]\nkind = \"ipo\"\n").unwrap();
    assert_eq!(
        w.objective,
        PreferenceObjective::Pair(PairObjective::Ipo { beta: 0.1 })
    );
    let w: W = toml::from_str("[objective]\nkind = \"simpo\"\nbeta = 2.5\n").unwrap();
    assert_eq!(
        w.objective,
        PreferenceObjective::Pair(PairObjective::Simpo {
            beta: 2.5,
            gamma_beta_ratio: 0.5
        })
    );
    let e = toml::from_str::<W>("[objective]\nkind = \"dpo\"\nbetta = 1.0\n")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("betta"), "{e}");
    assert!(PreferenceObjective::Pair(PairObjective::Dpo {
        beta: -1.0,
        label_smoothing: 0.0
    })
    .validate()
    .is_err());
}

#[test]
fn ranking_report_by_hand() {
    // A: π −4 vs −6 (lens 2, 4), ref −5 vs −5, α = 0.8. Ranked; per token −2 < −1.5 so not R̃;
    //    reference ties (not ranked); h = 2 > 0. Ideal: 0 + ln(0.8/0.2)/β > 0 for every β.
    // B: π −7 vs −6, ref −3 vs −6, α unknown (1 − 1e-3). Not ranked; R̃: −7/3 < −6/3 → no;
    //    reference ranked; h = (−7 + 3) − (−6 + 6) = −4. Ideal: 3 + ln(999)/β > 0 for every β.
    let a = PairScores {
        policy_chosen: -4.0,
        policy_rejected: -6.0,
        ref_chosen: -5.0,
        ref_rejected: -5.0,
        chosen_len: 2.0,
        rejected_len: 4.0,
        agreement: Some(0.8),
    };
    let b = PairScores {
        policy_chosen: -7.0,
        policy_rejected: -6.0,
        ref_chosen: -3.0,
        ref_rejected: -6.0,
        chosen_len: 3.0,
        rejected_len: 3.0,
        agreement: None,
    };
    let r = ranking_report(&[a, b], 1.0, 1e-3);
    assert_eq!(r.ranking_accuracy, 0.5);
    assert_eq!(r.ranking_accuracy_normalized, 0.0);
    assert_eq!(r.reference_ranking_accuracy, 0.5);
    assert_eq!(r.reward_accuracy, 0.5);
    assert!(r.idealised.iter().all(|&(_, v)| v == 1.0));
    assert!(r.alignment_gap.iter().all(|&(_, g)| g == 0.5));
    // B at β = 1: c = −6 − (−3) = −3, threshold −log σ(−3) = 3.0485874; L_DPO = −log σ(−4) = 4.0181499
    // > threshold, and B is not ranked: consistent with Thm 4.1. A: c = 0 → ln 2; L = −log σ(2) = 0.1269280 ≤ ln 2, ranked.
    assert!((r.per_pair[1].flip_threshold - 3.0485874).abs() < 1e-6);
    assert!((r.per_pair[1].dpo_loss - 4.0181499).abs() < 1e-6);
    assert!((r.per_pair[0].flip_threshold - std::f64::consts::LN_2).abs() < 1e-9);
    assert_eq!(r.flip_consistency, 1.0);
    // A pair with α slightly above ½ and a strongly wrong reference is not ideally ranked at large β:
    // ref margin −3 + ln(0.55/0.45)/10 = −3 + 0.0200671 < 0.
    let c = PairScores {
        agreement: Some(0.55),
        ref_chosen: -6.0,
        ref_rejected: -3.0,
        ..a
    };
    assert!(!c.ideal_ranked(10.0, 1e-3));
    assert!(c.ideal_ranked(0.01, 1e-3)); // −3 + 20.07 > 0
}
