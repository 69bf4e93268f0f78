//! Pearson correlation and the two-sided t-test of r = 0 (Student's t with n − 2 degrees of
//! freedom, t = r √((n − 2) / (1 − r²))), used to call a state a detour (Hu et al. §4: "visited"
//! correlated with convergence time).
//!
//! The t tail is the regularised incomplete beta function, p = I_{ν/(ν+t²)}(ν/2, ½), evaluated by its
//! continued fraction (modified Lentz); the log-gamma values it needs are at half-integers, computed
//! exactly from Γ(½) = √π, Γ(1) = 1 and Γ(x + 1) = x Γ(x).

/// Pearson correlation of two equally long samples; None when n < 2 or either is constant.
pub fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len();
    if n < 2 || y.len() != n {
        return None;
    }
    let mx = x.iter().sum::<f64>() / n as f64;
    let my = y.iter().sum::<f64>() / n as f64;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    if sxx == 0.0 || syy == 0.0 {
        return None;
    }
    Some((sxy / (sxx * syy).sqrt()).clamp(-1.0, 1.0))
}

/// Two-sided p value of the correlation r over n pairs (None when n < 3).
pub fn pearson_p(r: f64, n: usize) -> Option<f64> {
    if n < 3 || !r.is_finite() {
        return None;
    }
    let df = (n - 2) as f64;
    if r.abs() >= 1.0 {
        return Some(0.0);
    }
    let t = r * (df / (1.0 - r * r)).sqrt();
    Some(student_t_two_sided(t, n - 2))
}

/// P(|T| ≥ |t|) for Student's t with `df` degrees of freedom.
pub fn student_t_two_sided(t: f64, df: usize) -> f64 {
    let nu = df as f64;
    let x = nu / (nu + t * t);
    betainc_half(df, x)
}

/// ln Γ(m / 2) for a positive integer m, exactly by the recursion.
fn ln_gamma_half(m: usize) -> f64 {
    let (mut x, mut acc) = if m.is_multiple_of(2) {
        (1.0, 0.0)
    } else {
        (0.5, 0.5 * std::f64::consts::PI.ln())
    };
    while x < m as f64 / 2.0 - 0.25 {
        acc += x.ln();
        x += 1.0;
    }
    acc
}

/// I_x(df/2, 1/2): the regularised incomplete beta at a = df/2, b = 1/2.
fn betainc_half(df: usize, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let (a, b) = (df as f64 / 2.0, 0.5);
    let ln_beta = ln_gamma_half(df) + ln_gamma_half(1) - ln_gamma_half(df + 1);
    let front = (a * x.ln() + b * (1.0 - x).ln() - ln_beta).exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_cf(a, b, x) / a
    } else {
        1.0 - front * beta_cf(b, a, 1.0 - x) / b
    }
}

/// The continued fraction of the incomplete beta function (modified Lentz): coefficients
/// d_{2m+1} = −(a+m)(a+b+m)x / ((a+2m)(a+2m+1)), d_{2m} = m(b−m)x / ((a+2m−1)(a+2m)).
fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let fix = |v: f64| if v.abs() < TINY { TINY } else { v };
    let mut c = 1.0;
    let mut d = 1.0 / fix(1.0 - (a + b) * x / (a + 1.0));
    let mut h = d;
    for m in 1..10_000 {
        let m = m as f64;
        let even = m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m));
        d = 1.0 / fix(1.0 + even * d);
        c = fix(1.0 + even / c);
        h *= d * c;
        let odd = -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0));
        d = 1.0 / fix(1.0 + odd * d);
        c = fix(1.0 + odd / c);
        let step = d * c;
        h *= step;
        if (step - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_tails_in_closed_form() {
        // df = 1 is the Cauchy distribution: P(|T| ≥ t) = 1 − (2/π) atan t.
        for t in [0.3f64, 1.0, 4.0] {
            let want = 1.0 - 2.0 / std::f64::consts::PI * f64::atan(t);
            assert!((student_t_two_sided(t, 1) - want).abs() < 1e-12, "t {t}");
        }
        // df = 2: P(|T| ≥ t) = 1 − t / √(2 + t²).
        for t in [0.5f64, 2.0, 10.0] {
            let want = 1.0 - t / (2.0 + t * t).sqrt();
            assert!((student_t_two_sided(t, 2) - want).abs() < 1e-12, "t {t}");
        }
        // df = 10: the tabulated two-sided 5% critical value is 2.228139 (to 6 decimals).
        assert!((student_t_two_sided(2.228139, 10) - 0.05).abs() < 1e-6);
    }

    #[test]
    fn pearson_by_hand() {
        // y = 2x + 1 exactly: r = 1 and p = 0; y = −x: r = −1.
        let x = [1.0, 2.0, 3.0, 4.0];
        assert!((pearson(&x, &[3.0, 5.0, 7.0, 9.0]).unwrap() - 1.0).abs() < 1e-15);
        assert!((pearson(&x, &[-1.0, -2.0, -3.0, -4.0]).unwrap() + 1.0).abs() < 1e-15);
        // x = (0, 0, 1, 1), y = (1, 2, 2, 3): means ½ and 2; Sxy = 1, Sxx = 1, Syy = 2 → r = 1/√2.
        let r = pearson(&[0.0, 0.0, 1.0, 1.0], &[1.0, 2.0, 2.0, 3.0]).unwrap();
        assert!((r - 0.5f64.sqrt()).abs() < 1e-15);
        // n = 4, r = 1/√2: t = r √(2 / (1 − ½)) = √2 with 2 df → p = 1 − √2/√(2 + 2) = 1 − 1/√2.
        assert!((pearson_p(r, 4).unwrap() - (1.0 - 0.5f64.sqrt())).abs() < 1e-12);
        assert_eq!(pearson(&[1.0, 1.0], &[1.0, 2.0]), None);
        assert_eq!(pearson_p(0.3, 2), None);
    }
}
