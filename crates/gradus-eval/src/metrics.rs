//! Per-sample metrics, their aggregation, standard errors and 95% confidence intervals.
//!
//! Per sample (lm-eval's `process_results`):
//! - multiple_choice: `acc` (argmax of the choices' log-likelihoods is the gold one), `acc_norm`
//!   (argmax of log-likelihood / choice length in characters), `acc_bytes` (… / length in UTF-8
//!   bytes), `exact_match` (the gold choice is the greedy continuation). `np.argmax` keeps the first
//!   of equal maxima, and so do we.
//! - loglikelihood: `perplexity` (the log-likelihood), `acc` (is_greedy).
//! - loglikelihood_rolling: `word_perplexity` (ll, words), `byte_perplexity` and `bits_per_byte`
//!   (ll, UTF-8 bytes); words are the pieces of Python's `re.split(r"\s+", text)`.
//! - generate_until: `exact_match` after the options of HF evaluate's metric (`regexes_to_ignore`,
//!   `ignore_case`, `ignore_punctuation`, `ignore_numbers`).
//!
//! Aggregations: `mean`; `perplexity` = exp(−mean ll); `weighted_perplexity` = exp(−Σll / Σn);
//! `bits_per_byte` = −Σll / Σbytes / ln 2. Standard errors: the closed form s/√n for means (s the
//! sample standard deviation, n − 1 in the denominator, as lm-eval's `mean_stderr`); a seeded
//! bootstrap (resampling documents with replacement) for the other aggregations, whose standard
//! error is the sample standard deviation of the bootstrap replicates. 95% intervals: for a mean of
//! 0/1 values (an accuracy or exact match) the Wilson score interval, which stays inside [0, 1] and
//! does not collapse to a point at 0% or 100% as mean ± 1.96·se does; mean ± 1.96·se for other
//! means; the 2.5th and 97.5th percentiles of the replicates otherwise. (lm-eval reports only the
//! standard error, which is the closed form above in every case.)

use anyhow::{bail, Result};
use serde::Serialize;

use crate::task::OutputType;

/// One sample's contribution to a metric.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum SampleValue {
    /// A number (0/1 for accuracies).
    Scalar(f64),
    /// (log-likelihood, weight) for the weighted aggregations.
    Pair(f64, f64),
}

/// How samples are combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregation {
    /// Arithmetic mean.
    Mean,
    /// exp(−mean).
    Perplexity,
    /// exp(−Σa/Σb).
    WeightedPerplexity,
    /// −Σa/Σb/ln 2.
    BitsPerByte,
    /// Median.
    Median,
}

impl Aggregation {
    /// Parses an lm-eval aggregation name.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "mean" => Self::Mean,
            "perplexity" => Self::Perplexity,
            "weighted_perplexity" => Self::WeightedPerplexity,
            "bits_per_byte" => Self::BitsPerByte,
            "median" => Self::Median,
            other => bail!("aggregation `{other}` is not supported (mean, perplexity, weighted_perplexity, bits_per_byte, median)"),
        })
    }

    /// lm-eval's default aggregation of a metric.
    pub fn default_for(metric: &str) -> Self {
        match metric {
            "perplexity" => Self::Perplexity,
            "word_perplexity" | "byte_perplexity" => Self::WeightedPerplexity,
            "bits_per_byte" => Self::BitsPerByte,
            _ => Self::Mean,
        }
    }

    /// Combines samples.
    pub fn apply(self, xs: &[SampleValue]) -> f64 {
        let scalars = || {
            xs.iter().map(|x| match x {
                SampleValue::Scalar(v) => *v,
                SampleValue::Pair(a, _) => *a,
            })
        };
        let sums = || {
            xs.iter().fold((0.0, 0.0), |(sa, sb), x| match x {
                SampleValue::Pair(a, b) => (sa + a, sb + b),
                SampleValue::Scalar(a) => (sa + a, sb + 1.0),
            })
        };
        match self {
            Self::Mean => scalars().sum::<f64>() / xs.len() as f64,
            Self::Perplexity => (-(scalars().sum::<f64>() / xs.len() as f64)).exp(),
            Self::WeightedPerplexity => {
                let (a, b) = sums();
                (-(a / b)).exp()
            }
            Self::BitsPerByte => {
                let (a, b) = sums();
                -(a / b) / std::f64::consts::LN_2
            }
            Self::Median => {
                let mut v: Vec<f64> = scalars().collect();
                v.sort_by(|a, b| a.total_cmp(b));
                let n = v.len();
                if n == 0 {
                    f64::NAN
                } else if n % 2 == 1 {
                    v[n / 2]
                } else {
                    (v[n / 2 - 1] + v[n / 2]) / 2.0
                }
            }
        }
    }
}

/// The metrics lm-eval computes when a task has no `metric_list`.
pub fn default_metrics(t: OutputType) -> &'static [&'static str] {
    match t {
        OutputType::Loglikelihood => &["perplexity", "acc"],
        OutputType::LoglikelihoodRolling => {
            &["word_perplexity", "byte_perplexity", "bits_per_byte"]
        }
        OutputType::MultipleChoice => &["acc", "acc_norm"],
        OutputType::GenerateUntil => &["exact_match"],
    }
}

/// Whether `metric` can be computed for `t`.
pub fn check_metric(metric: &str, t: OutputType) -> Result<()> {
    let ok: &[&str] = match t {
        OutputType::Loglikelihood => &["perplexity", "acc"],
        OutputType::LoglikelihoodRolling => {
            &["word_perplexity", "byte_perplexity", "bits_per_byte"]
        }
        OutputType::MultipleChoice => &["acc", "acc_norm", "acc_bytes", "exact_match"],
        OutputType::GenerateUntil => &["exact_match"],
    };
    if !ok.contains(&metric) {
        bail!(
            "metric `{metric}` is not supported for output_type {t:?} (supported: {})",
            ok.join(", ")
        );
    }
    Ok(())
}

/// First index of the maximum (`np.argmax`).
pub fn argmax(xs: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best
}

/// Per-choice scores of one multiple-choice document: (acc, acc_norm, acc_bytes, exact_match).
/// `gold` are the acceptable indices (out-of-range golds were mapped to none).
pub fn multiple_choice(
    lls: &[f64],
    is_greedy: &[bool],
    choices: &[String],
    gold: &[usize],
) -> [f64; 4] {
    let by_chars: Vec<f64> = lls
        .iter()
        .zip(choices)
        .map(|(l, c)| l / c.chars().count() as f64)
        .collect();
    let by_bytes: Vec<f64> = lls
        .iter()
        .zip(choices)
        .map(|(l, c)| l / c.len() as f64)
        .collect();
    let hit = |p: usize| if gold.contains(&p) { 1.0 } else { 0.0 };
    let em = if gold
        .iter()
        .any(|&g| is_greedy.get(g).copied().unwrap_or(false))
    {
        1.0
    } else {
        0.0
    };
    [
        hit(argmax(lls)),
        hit(argmax(&by_chars)),
        hit(argmax(&by_bytes)),
        em,
    ]
}

/// Number of pieces of Python's `re.split(r"\s+", text)` (lm-eval's `count_words`).
pub fn count_words(text: &str) -> usize {
    // Python's `\s` on str: Unicode whitespace plus the separators \x1c-\x1f.
    let is_ws = |c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c);
    let mut pieces = 1;
    let mut in_ws = false;
    for c in text.chars() {
        if is_ws(c) {
            if !in_ws {
                pieces += 1;
            }
            in_ws = true;
        } else {
            in_ws = false;
        }
    }
    pieces
}

/// Options of `exact_match`.
#[derive(Clone, Debug, Default)]
pub struct ExactMatchOpts {
    /// Lowercase both sides.
    pub ignore_case: bool,
    /// Remove ASCII punctuation (`string.punctuation`).
    pub ignore_punctuation: bool,
    /// Remove ASCII digits.
    pub ignore_numbers: bool,
    /// Patterns removed from both sides, first.
    pub regexes_to_ignore: Vec<regex::Regex>,
}

/// HF evaluate's `exact_match` for one (prediction, reference): 1.0 or 0.0.
pub fn exact_match(pred: &str, reference: &str, o: &ExactMatchOpts) -> f64 {
    let norm = |s: &str| -> String {
        let mut s = s.to_string();
        for re in &o.regexes_to_ignore {
            s = re.replace_all(&s, "").to_string();
        }
        if o.ignore_case {
            s = s.to_lowercase();
        }
        if o.ignore_punctuation {
            s.retain(|c| !c.is_ascii_punctuation());
        }
        if o.ignore_numbers {
            s.retain(|c| !c.is_ascii_digit());
        }
        s
    };
    if norm(pred) == norm(reference) {
        1.0
    } else {
        0.0
    }
}

/// An aggregated metric with its uncertainty.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MetricResult {
    /// The aggregate.
    pub value: f64,
    /// Standard error (None with fewer than two samples).
    pub stderr: Option<f64>,
    /// 95% confidence interval.
    pub ci95: Option<(f64, f64)>,
    /// `closed_form` or `bootstrap`.
    pub stderr_method: &'static str,
}

/// Wilson score 95% interval for `c` successes out of `n` ([0, 1] when `n` = 0).
pub fn wilson95(n: usize, c: usize) -> [f64; 2] {
    if n == 0 {
        return [0.0, 1.0];
    }
    let z = 1.96f64;
    let (n, p) = (n as f64, c as f64 / n as f64);
    let denom = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / denom;
    let half = z * ((p * (1.0 - p) + z * z / (4.0 * n)) / n).sqrt() / denom;
    [(centre - half).max(0.0), (centre + half).min(1.0)]
}

fn sample_std(xs: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let mu = xs.iter().sum::<f64>() / n;
    (xs.iter().map(|x| (x - mu).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
}

/// Aggregates `xs` and estimates its uncertainty (`iters` bootstrap replicates, seeded by `seed`).
pub fn summarize(agg: Aggregation, xs: &[SampleValue], iters: usize, seed: u64) -> MetricResult {
    let value = agg.apply(xs);
    if xs.len() < 2 {
        return MetricResult {
            value,
            stderr: None,
            ci95: None,
            stderr_method: "none",
        };
    }
    if agg == Aggregation::Mean {
        let v: Vec<f64> = xs
            .iter()
            .map(|x| match x {
                SampleValue::Scalar(v) => *v,
                SampleValue::Pair(a, _) => *a,
            })
            .collect();
        let se = sample_std(&v) / (v.len() as f64).sqrt();
        let ci95 = if v.iter().all(|&x| x == 0.0 || x == 1.0) {
            let [lo, hi] = wilson95(v.len(), v.iter().filter(|&&x| x == 1.0).count());
            (lo, hi)
        } else {
            (value - 1.96 * se, value + 1.96 * se)
        };
        return MetricResult {
            value,
            stderr: Some(se),
            ci95: Some(ci95),
            stderr_method: "closed_form",
        };
    }
    if iters < 2 {
        return MetricResult {
            value,
            stderr: None,
            ci95: None,
            stderr_method: "none",
        };
    }
    let mut rng = gradus_tensor::rng::Rng::derive(seed, "eval-bootstrap");
    let n = xs.len();
    let mut reps = Vec::with_capacity(iters);
    let mut buf = Vec::with_capacity(n);
    for _ in 0..iters {
        buf.clear();
        for _ in 0..n {
            let j = ((rng.uniform() * n as f64) as usize).min(n - 1);
            buf.push(xs[j]);
        }
        reps.push(agg.apply(&buf));
    }
    let se = sample_std(&reps);
    reps.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| reps[((p * (iters - 1) as f64).round() as usize).min(iters - 1)];
    MetricResult {
        value,
        stderr: Some(se),
        ci95: Some((q(0.025), q(0.975))),
        stderr_method: "bootstrap",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acc_norm_uses_characters_and_bytes_differ() {
        // lls -6, -8; choices "ab" (2 chars, 2 bytes) and "üüüü" (4 chars, 8 bytes).
        // acc: argmax(-6, -8) = 0. acc_norm: (-3, -2) → 1. acc_bytes: (-3, -1) → 1.
        let ch = vec!["ab".to_string(), "üüüü".to_string()];
        assert_eq!(
            multiple_choice(&[-6.0, -8.0], &[false, true], &ch, &[1]),
            [0.0, 1.0, 1.0, 1.0]
        );
        // lls -6, -13: acc_norm (-3, -3.25) → 0; acc_bytes (-3, -1.625) → 1.
        assert_eq!(
            multiple_choice(&[-6.0, -13.0], &[true, false], &ch, &[1]),
            [0.0, 0.0, 1.0, 0.0]
        );
        // Ties keep the first index (np.argmax).
        assert_eq!(argmax(&[1.0, 1.0]), 0);
    }

    #[test]
    fn words_like_python_re_split() {
        // re.split(r"\s+", s) piece counts, by hand: "a b" → 2; "  a  b " → ['', 'a', 'b', ''] = 4; "" → 1.
        assert_eq!(count_words("a b"), 2);
        assert_eq!(count_words("  a  b "), 4);
        assert_eq!(count_words(""), 1);
        assert_eq!(count_words("a\n\tb"), 2);
    }

    #[test]
    fn aggregations_by_hand() {
        let p = [SampleValue::Pair(-2.0, 1.0), SampleValue::Pair(-4.0, 3.0)];
        // Σll = -6, Σn = 4: weighted perplexity e^{1.5}; bits per byte 1.5 / ln 2.
        assert!((Aggregation::WeightedPerplexity.apply(&p) - 1.5f64.exp()).abs() < 1e-12);
        assert!((Aggregation::BitsPerByte.apply(&p) - 1.5 / std::f64::consts::LN_2).abs() < 1e-12);
        // mean of 1,0,0,1 = 0.5; sample sd = sqrt(4·0.25/3) = 0.57735; se = 0.57735/2.
        let xs: Vec<SampleValue> = [1.0, 0.0, 0.0, 1.0]
            .iter()
            .map(|&x| SampleValue::Scalar(x))
            .collect();
        let r = summarize(Aggregation::Mean, &xs, 0, 0);
        assert_eq!(r.value, 0.5);
        assert!((r.stderr.unwrap() - (1.0f64 / 3.0).sqrt() / 2.0).abs() < 1e-12);
        // 0/1 values: the Wilson interval for 2 of 4, centre (0.5 + 1.96²/8)/(1 + 1.96²/4) = 0.5,
        // half-width 1.96·sqrt(0.25/4 + 1.96²/64)/(1 + 1.96²/4) = 1.96·0.350035/1.9604 = 0.349964.
        let (lo, hi) = r.ci95.unwrap();
        assert!(
            (lo - 0.150036).abs() < 1e-5 && (hi - 0.849964).abs() < 1e-5,
            "{lo} {hi}"
        );
        // 1 of 4 right: mean ± 1.96·se would reach below 0; Wilson stays inside [0, 1].
        let xs: Vec<SampleValue> = [1.0, 0.0, 0.0, 0.0]
            .iter()
            .map(|&x| SampleValue::Scalar(x))
            .collect();
        let (lo, hi) = summarize(Aggregation::Mean, &xs, 0, 0).ci95.unwrap();
        assert!(lo > 0.0 && hi < 1.0, "{lo} {hi}");
        // Other means: mean ± 1.96·se.
        let xs: Vec<SampleValue> = [0.5, 1.5, 2.0]
            .iter()
            .map(|&x| SampleValue::Scalar(x))
            .collect();
        let r = summarize(Aggregation::Mean, &xs, 0, 0);
        let (lo, hi) = r.ci95.unwrap();
        assert!((hi - lo - 2.0 * 1.96 * r.stderr.unwrap()).abs() < 1e-12);
    }

    #[test]
    fn bootstrap_brackets_the_value() {
        let xs: Vec<SampleValue> = (0..20)
            .map(|i| SampleValue::Pair(-(i as f64), 2.0))
            .collect();
        let r = summarize(Aggregation::WeightedPerplexity, &xs, 500, 7);
        let (lo, hi) = r.ci95.unwrap();
        assert!(lo < r.value && r.value < hi, "{lo} {} {hi}", r.value);
        assert!(r.stderr.unwrap() > 0.0);
        assert_eq!(r.stderr_method, "bootstrap");
    }

    #[test]
    fn exact_match_options() {
        let o = ExactMatchOpts {
            ignore_case: true,
            ..Default::default()
        };
        assert_eq!(exact_match("ABC", "abc", &o), 1.0);
        assert_eq!(exact_match("ABC", "abc", &ExactMatchOpts::default()), 0.0);
        let o = ExactMatchOpts {
            ignore_punctuation: true,
            regexes_to_ignore: vec![regex::Regex::new("^The ").unwrap()],
            ..Default::default()
        };
        assert_eq!(exact_match("The 4.", "4", &o), 1.0);
    }
}
