//! Hand-derived values of the PHF token objectives (unlikelihood, RWR, AWR), and their gradients
//! against central finite differences of the returned loss.

use gradus_objectives::phf::{awr, mle, rwr, unlikelihood, UL_MIN_ONE_MINUS_P};

fn close(a: f64, b: f64, tol: f64) {
    assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{a} vs {b}");
}

#[test]
fn mle_is_mean_nll() {
    // logp = ln(0.5), ln(0.25), padding; weights 1, 1, 0; norm 2:
    // L = (ln 2 + ln 4) / 2 = 1.5 ln 2; dlogp = [−1/2, −1/2, 0].
    let lp = [0.5f32.ln(), 0.25f32.ln(), -3.0];
    let l = mle(&lp, &[1.0, 1.0, 0.0], 2.0).unwrap();
    close(l.loss, 1.5 * 2f64.ln(), 1e-6);
    assert_eq!(l.dlogp, vec![-0.5, -0.5, 0.0]);
}

#[test]
fn unlikelihood_by_hand() {
    // Tokens: good p = 0.5, bad p = 0.75, bad p = 0.2, padding (bad, weight 0). α = 1, norm 3.
    // L = [−ln 0.5 − ln(1 − 0.75) − ln(1 − 0.2)] / 3 = [ln 2 + ln 4 − ln 0.8] / 3.
    // dlogp: good −1/3; bad p/(1−p)/3: 0.75/0.25/3 = 1, 0.2/0.8/3 = 1/12; padding 0.
    let lp = [0.5f32.ln(), 0.75f32.ln(), 0.2f32.ln(), -0.1];
    let w = [1.0, 1.0, 1.0, 0.0];
    let bad = [false, true, true, true];
    let l = unlikelihood(&lp, &w, &bad, 1.0, 3.0).unwrap();
    close(l.loss, (2f64.ln() + 4f64.ln() - 0.8f64.ln()) / 3.0, 1e-6);
    close(l.dlogp[0] as f64, -1.0 / 3.0, 1e-6);
    close(l.dlogp[1] as f64, 1.0, 1e-5);
    close(l.dlogp[2] as f64, 1.0 / 12.0, 1e-5);
    assert_eq!(l.dlogp[3], 0.0);
    // 2 of the 3 weighted tokens are under the unlikelihood term.
    close(l.mean_coef, 2.0 / 3.0, 1e-12);
    // α = 0.5 halves the bad part only: [ln 2 + 0.5 (ln 4 − ln 0.8)] / 3.
    let l = unlikelihood(&lp, &w, &bad, 0.5, 3.0).unwrap();
    close(
        l.loss,
        (2f64.ln() + 0.5 * (4f64.ln() - 0.8f64.ln())) / 3.0,
        1e-6,
    );
    // p = 1 (logp 0): 1 − p clamps at 1e-5, loss −ln 1e-5, gradient 0.
    let l = unlikelihood(&[0.0], &[1.0], &[true], 1.0, 1.0).unwrap();
    close(l.loss, -UL_MIN_ONE_MINUS_P.ln(), 1e-9);
    assert_eq!(l.dlogp, vec![0.0]);
}

#[test]
fn rwr_by_hand() {
    // rewards 0 and −10 with β = 10: weights e⁰ = 1 and e⁻¹; logp −1 and −2; norm 2.
    // L = (1·1 + e⁻¹·2) / 2; dlogp = [−1/2, −e⁻¹/2].
    let l = rwr(&[-1.0, -2.0], &[1.0, 1.0], &[0.0, -10.0], 10.0, 1000.0, 2.0).unwrap();
    let e1 = (-1f64).exp();
    close(l.loss, (1.0 + 2.0 * e1) / 2.0, 1e-6);
    close(l.dlogp[0] as f64, -0.5, 1e-6);
    close(l.dlogp[1] as f64, -e1 / 2.0, 1e-6);
    close(l.mean_coef, (1.0 + e1) / 2.0, 1e-6);
    // The clip: reward +100, β = 10 → e¹⁰ ≈ 22026 clipped at 1000.
    let l = rwr(&[-1.0], &[1.0], &[100.0], 10.0, 1000.0, 1.0).unwrap();
    close(l.loss, 1000.0, 1e-9);
}

#[test]
fn awr_by_hand() {
    // One token: logp −2, reward −1, value −3, β = 10 → A = 2, c = e^0.2; α = 0.5, norm 1.
    // LM = 2 e^0.2; value loss (V − r)² = 4; L = 0.5·2e^0.2 + 0.5·4 = e^0.2 + 2.
    // dlogp = −0.5 e^0.2; dV = 0.5 · 2 (V − r) = −2.
    let a = awr(&[-2.0], &[1.0], &[-1.0], &[-3.0], 10.0, 0.5, 1000.0, 1.0).unwrap();
    let c = 0.2f64.exp();
    close(a.lm.loss, c + 2.0, 1e-6);
    close(a.value_loss, 4.0, 1e-9);
    close(a.lm.dlogp[0] as f64, -0.5 * c, 1e-6);
    close(a.dvalue[0] as f64, -2.0, 1e-6);
    // Padding contributes nothing.
    let a = awr(
        &[-2.0, -5.0],
        &[1.0, 0.0],
        &[-1.0, 7.0],
        &[-3.0, 1.0],
        10.0,
        0.5,
        1000.0,
        1.0,
    )
    .unwrap();
    close(a.lm.loss, c + 2.0, 1e-6);
    assert_eq!((a.lm.dlogp[1], a.dvalue[1]), (0.0, 0.0));
    assert!(awr(&[0.0], &[1.0], &[0.0], &[0.0], 0.0, 0.5, 1.0, 1.0).is_err());
    assert!(awr(&[0.0], &[1.0], &[0.0, 1.0], &[0.0], 1.0, 0.5, 1.0, 1.0).is_err());
}

#[test]
fn gradients_match_finite_differences() {
    // The UL and AWR losses as functions of logp (and V): central differences with h = 1e-3.
    let lp = [-0.3f32, -1.2, -2.5, -0.05];
    let w = [1.0f32, 1.0, 0.5, 1.0];
    let bad = [true, false, true, true];
    let rew = [-0.4f32, 0.0, -2.0, -0.1];
    let val = [0.1f32, -0.2, -1.0, 0.3];
    let h = 1e-3f32;
    for t in 0..4 {
        let (mut up, mut dn) = (lp, lp);
        up[t] += h;
        dn[t] -= h;
        let f = |x: &[f32]| unlikelihood(x, &w, &bad, 1.0, 3.5).unwrap().loss;
        let g = unlikelihood(&lp, &w, &bad, 1.0, 3.5).unwrap().dlogp[t] as f64;
        close(g, (f(&up) - f(&dn)) / (2.0 * h as f64), 2e-3);
        let f = |x: &[f32]| {
            awr(x, &w, &rew, &val, 2.0, 0.5, 1000.0, 3.5)
                .unwrap()
                .lm
                .loss
        };
        let g = awr(&lp, &w, &rew, &val, 2.0, 0.5, 1000.0, 3.5)
            .unwrap()
            .lm
            .dlogp[t] as f64;
        close(g, (f(&up) - f(&dn)) / (2.0 * h as f64), 2e-3);
        let (mut vu, mut vd) = (val, val);
        vu[t] += h;
        vd[t] -= h;
        // V moves both the advantage (c_t) and the value loss, but the LM term treats c_t as a
        // constant (stop-gradient), so compare against the value part's difference only.
        let f = |v: &[f32]| {
            0.5 * awr(&lp, &w, &rew, v, 2.0, 0.5, 1000.0, 3.5)
                .unwrap()
                .value_loss
        };
        let g = awr(&lp, &w, &rew, &val, 2.0, 0.5, 1000.0, 3.5)
            .unwrap()
            .dvalue[t] as f64;
        close(g, (f(&vu) - f(&vd)) / (2.0 * h as f64), 2e-3);
    }
}
