//! The unbiased pass@k estimator (Chen et al. 2021, eq. 1) and confidence intervals.
//!
//! pass@k = E_problems[1 - C(n-c, k) / C(n, k)] with n samples of which c pass. The ratio of
//! binomials is computed as the product Π_{i=n-c+1}^{n} (1 - k/i) (the paper's numerically stable
//! form); it is 1 when n - c < k (every k-subset holds a passing sample).

use serde::Serialize;

/// Unbiased pass@k for one problem; `None` when k > n (undefined).
pub fn pass_at_k(n: usize, c: usize, k: usize) -> Option<f64> {
    assert!(c <= n, "c ({c}) > n ({n})");
    if k == 0 || k > n {
        return None;
    }
    if n - c < k {
        return Some(1.0);
    }
    let prod: f64 = ((n - c + 1)..=n)
        .map(|i| 1.0 - k as f64 / i as f64)
        .product();
    Some(1.0 - prod)
}

/// A mean with its standard error (sample std / √m, closed form) and a 95% normal interval
/// clamped to [0, 1].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MeanCi {
    pub mean: f64,
    pub stderr: f64,
    pub ci95: [f64; 2],
    /// Number of values averaged.
    pub count: usize,
}

impl MeanCi {
    pub fn of(values: &[f64]) -> MeanCi {
        let m = values.len();
        if m == 0 {
            return MeanCi {
                mean: f64::NAN,
                stderr: f64::NAN,
                ci95: [f64::NAN, f64::NAN],
                count: 0,
            };
        }
        let mean = values.iter().sum::<f64>() / m as f64;
        let stderr = if m > 1 {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (m - 1) as f64).sqrt()
                / (m as f64).sqrt()
        } else {
            0.0
        };
        MeanCi {
            mean,
            stderr,
            ci95: [
                (mean - 1.96 * stderr).max(0.0),
                (mean + 1.96 * stderr).min(1.0),
            ],
            count: m,
        }
    }
}

/// Wilson score 95% interval for c successes out of n (per-problem uncertainty of pass@1).
pub use crate::metrics::wilson95;

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    /// Expected values from the binomial form 1 - C(n-c,k)/C(n,k), worked by hand.
    #[test]
    fn hand_derived_values() {
        close(pass_at_k(5, 0, 1).unwrap(), 0.0);
        close(pass_at_k(5, 5, 3).unwrap(), 1.0);
        close(pass_at_k(10, 3, 1).unwrap(), 0.3); // k = 1: c/n
        close(pass_at_k(4, 1, 2).unwrap(), 0.5); // 1 - C(3,2)/C(4,2) = 1 - 3/6
        close(pass_at_k(5, 2, 2).unwrap(), 0.7); // 1 - C(3,2)/C(5,2) = 1 - 3/10
        close(pass_at_k(6, 2, 3).unwrap(), 0.8); // 1 - C(4,3)/C(6,3) = 1 - 4/20
        close(pass_at_k(10, 3, 10).unwrap(), 1.0); // n - c = 7 < k
        close(pass_at_k(10, 3, 8).unwrap(), 1.0); // n - c = 7 < 8
                                                  // Large n, where C(200,100) ≈ 9e58 would lose precision as a ratio of factorials:
                                                  // C(199,100)/C(200,100) = 100/200, so pass@100 = 0.5 exactly.
        close(pass_at_k(200, 1, 100).unwrap(), 0.5);
        assert_eq!(pass_at_k(3, 1, 4), None);
        assert_eq!(pass_at_k(3, 1, 0), None);
    }

    #[test]
    fn mean_and_interval() {
        // values 0, 1, 1, 0: mean 0.5, sample var = 4·0.25/3 = 1/3, se = √(1/3)/2.
        let m = MeanCi::of(&[0.0, 1.0, 1.0, 0.0]);
        close(m.mean, 0.5);
        close(m.stderr, (1.0f64 / 3.0).sqrt() / 2.0);
        // 0.5 ∓ 1.96·0.2887 = −0.066 / 1.066: clamped to [0, 1].
        assert_eq!(m.ci95, [0.0, 1.0]);
        // 0.25, 0.5, 0.75, 0.5: var = 0.125/3, se = √(0.125/3)/2 ≈ 0.1021, CI ≈ [0.300, 0.700].
        let m = MeanCi::of(&[0.25, 0.5, 0.75, 0.5]);
        close(m.stderr, (0.125f64 / 3.0).sqrt() / 2.0);
        close(m.ci95[0], 0.5 - 1.96 * (0.125f64 / 3.0).sqrt() / 2.0);
        close(m.ci95[1], 0.5 + 1.96 * (0.125f64 / 3.0).sqrt() / 2.0);
        assert_eq!(MeanCi::of(&[1.0]).ci95, [1.0, 1.0]);
        // Wilson for 0/10: centre z²/(2n)/(1+z²/n), half-width the same → lower bound 0.
        let w = wilson95(10, 0);
        assert!(w[0].abs() < 1e-12 && (w[1] - 0.2775).abs() < 1e-3, "{w:?}"); // 3.8416/13.8416
    }
}
