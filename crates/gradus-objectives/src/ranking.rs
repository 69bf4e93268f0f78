//! Ranking accuracy and the alignment gap (Chen, Malladi et al. 2024; RESEARCH §3.7), as plain f64
//! arithmetic over per-pair sequence log-probs.

use serde::Serialize;

use crate::math::log_sigmoid_f64;

/// The β grid of the paper's idealised ranking accuracy.
pub const BETAS: [f64; 5] = [0.01, 0.1, 1.0, 5.0, 10.0];
/// α when the rater agreement is unknown: 1 − ε.
pub const DEFAULT_EPS: f64 = 1e-3;

/// One pair's summed completion log-probs under the policy and the reference, the completion
/// lengths, and the fraction of raters preferring y_w (None: unknown).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct PairScores {
    pub policy_chosen: f64,
    pub policy_rejected: f64,
    pub ref_chosen: f64,
    pub ref_rejected: f64,
    pub chosen_len: f64,
    pub rejected_len: f64,
    pub agreement: Option<f64>,
}

impl PairScores {
    /// R = 1[π(y_w|x) > π(y_l|x)].
    pub fn ranked(&self) -> bool {
        self.policy_chosen > self.policy_rejected
    }
    /// R̃ with per-token average log-likelihoods.
    pub fn ranked_normalized(&self) -> bool {
        self.policy_chosen / self.chosen_len > self.policy_rejected / self.rejected_len
    }
    /// The reference's own ranking.
    pub fn ref_ranked(&self) -> bool {
        self.ref_chosen > self.ref_rejected
    }
    /// DPO margin h = [log π(y_w) − log π_ref(y_w)] − [log π(y_l) − log π_ref(y_l)].
    pub fn margin(&self) -> f64 {
        (self.policy_chosen - self.ref_chosen) - (self.policy_rejected - self.ref_rejected)
    }
    /// Reward accuracy: 1[h > 0].
    pub fn reward_correct(&self) -> bool {
        self.margin() > 0.0
    }
    /// The DPO loss −log σ(β h).
    pub fn dpo_loss(&self, beta: f64) -> f64 {
        -log_sigmoid_f64(beta * self.margin())
    }
    /// Flip difficulty (Thm 4.1): with c = log π_ref(y_l) − log π_ref(y_w), the pair is ranked
    /// correctly iff L_DPO ≤ −log σ(β c). Returns that threshold.
    pub fn flip_threshold(&self, beta: f64) -> f64 {
        -log_sigmoid_f64(beta * (self.ref_rejected - self.ref_chosen))
    }
    /// Idealised ranking (Cor. 3.3): 1[(π_ref(y_w)/π_ref(y_l)) · (α/(1−α))^{1/β} > 1], in logs.
    pub fn ideal_ranked(&self, beta: f64, eps: f64) -> bool {
        let a = self.agreement.unwrap_or(1.0 - eps).clamp(eps, 1.0 - eps);
        (self.ref_chosen - self.ref_rejected) + (a / (1.0 - a)).ln() / beta > 0.0
    }
}

/// Per-pair diagnostics of a run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PairDiagnostics {
    pub ranked: bool,
    pub ranked_normalized: bool,
    pub reward_correct: bool,
    pub dpo_loss: f64,
    pub flip_threshold: f64,
}

/// The dataset-level report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RankingReport {
    pub pairs: usize,
    /// β used for the DPO loss, reward accuracy and flip thresholds.
    pub beta: f64,
    pub ranking_accuracy: f64,
    pub ranking_accuracy_normalized: f64,
    pub reference_ranking_accuracy: f64,
    pub reward_accuracy: f64,
    pub mean_margin: f64,
    /// (β, R*) over [`BETAS`].
    pub idealised: Vec<(f64, f64)>,
    /// (β, R* − R).
    pub alignment_gap: Vec<(f64, f64)>,
    pub mean_dpo_loss: f64,
    pub mean_flip_threshold: f64,
    /// Fraction of pairs where [L_DPO ≤ threshold] agrees with R (Thm 4.1 says: all of them).
    pub flip_consistency: f64,
    pub per_pair: Vec<PairDiagnostics>,
}

fn frac(n: usize, f: impl Fn(usize) -> bool) -> f64 {
    if n == 0 {
        return 0.0;
    }
    (0..n).filter(|&i| f(i)).count() as f64 / n as f64
}

/// Every §3.7 metric for a set of pairs.
pub fn ranking_report(pairs: &[PairScores], beta: f64, eps: f64) -> RankingReport {
    let n = pairs.len();
    let ranking_accuracy = frac(n, |i| pairs[i].ranked());
    let idealised: Vec<(f64, f64)> = BETAS
        .iter()
        .map(|&b| (b, frac(n, |i| pairs[i].ideal_ranked(b, eps))))
        .collect();
    let per_pair: Vec<PairDiagnostics> = pairs
        .iter()
        .map(|p| PairDiagnostics {
            ranked: p.ranked(),
            ranked_normalized: p.ranked_normalized(),
            reward_correct: p.reward_correct(),
            dpo_loss: p.dpo_loss(beta),
            flip_threshold: p.flip_threshold(beta),
        })
        .collect();
    let mean = |f: &dyn Fn(&PairDiagnostics) -> f64| {
        if n == 0 {
            0.0
        } else {
            per_pair.iter().map(f).sum::<f64>() / n as f64
        }
    };
    RankingReport {
        pairs: n,
        beta,
        ranking_accuracy,
        ranking_accuracy_normalized: frac(n, |i| pairs[i].ranked_normalized()),
        reference_ranking_accuracy: frac(n, |i| pairs[i].ref_ranked()),
        reward_accuracy: frac(n, |i| pairs[i].reward_correct()),
        mean_margin: if n == 0 {
            0.0
        } else {
            pairs.iter().map(|p| p.margin()).sum::<f64>() / n as f64
        },
        alignment_gap: idealised
            .iter()
            .map(|&(b, r)| (b, r - ranking_accuracy))
            .collect(),
        idealised,
        mean_dpo_loss: mean(&|d| d.dpo_loss),
        mean_flip_threshold: mean(&|d| d.flip_threshold),
        flip_consistency: frac(n, |i| {
            (per_pair[i].dpo_loss <= per_pair[i].flip_threshold) == per_pair[i].ranked
        }),
        per_pair,
    }
}
