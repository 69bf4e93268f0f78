//! Synthetic preference data with known rater agreement, for the embedded default and the tests.
//!
//! Each prompt is an instruction-task question ([`super::instructions`]). Candidate responses vary
//! in three latent attributes: **correctness** (the right answer or a plausible wrong one),
//! **concision** (bare answer vs a wordy sentence) and **confidence** (hedged or not). A response's
//! utility is `u = w · attributes`. Each pair is two different candidates judged by `raters` noisy
//! Bradley–Terry raters (each prefers A with probability σ((u_A − u_B)/temperature)); the majority
//! is `chosen` and the vote share its `chosen_fraction`. Per-attribute Likert scores (0-4) with
//! rater noise and the preference magnitude (1-3, from |Δu|) are recorded for regression and
//! scaled-BT reward models; `*_reward` is the utility.

use gradus_tensor::rng::Rng;
use serde::{Deserialize, Serialize};

use super::instruct::{instructions, task_prompt, Instruction, Split, TaskKind};
use gradus_data::preference::{PreferencePair, Turns};

/// Settings of [`preference_pairs`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyntheticPairsConfig {
    /// Weights of (correctness, concision, confidence) in the utility.
    pub weights: [f64; 3],
    /// Raters per pair.
    pub raters: usize,
    /// Rater noise: larger means more disagreement.
    pub temperature: f64,
    /// Likert noise (standard deviation, in points).
    pub score_noise: f64,
}

impl Default for SyntheticPairsConfig {
    fn default() -> Self {
        Self {
            weights: [3.0, 1.0, 0.5],
            raters: 5,
            temperature: 1.0,
            score_noise: 0.5,
        }
    }
}

/// Attribute names, in the order of `chosen_scores` / `rejected_scores`.
pub const ATTRIBUTES: [&str; 3] = ["correctness", "concision", "confidence"];

/// One candidate response with its latent attributes.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub text: String,
    pub attributes: [f64; 3],
}

fn wrong_answer(it: &Instruction, rng: &mut Rng, others: &[Instruction]) -> String {
    let a = it.answer.trim();
    match (it.kind, a.parse::<i64>()) {
        (TaskKind::Arith | TaskKind::Program, Ok(v)) => {
            let d = 1 + rng.below(9) as i64;
            (if rng.below(2) == 0 { v + d } else { v - d }).to_string()
        }
        _ => {
            // Another answer of the same kind (a plausible confusion), else a fixed non-answer.
            let same: Vec<&Instruction> = others
                .iter()
                .filter(|o| o.kind == it.kind && o.answer != it.answer)
                .collect();
            if same.is_empty() {
                "unknown".to_string()
            } else {
                same[rng.below(same.len())].answer.clone()
            }
        }
    }
}

/// The candidates of one instruction: {right, wrong} × {bare, wordy} × {confident, hedged}.
pub fn candidates(it: &Instruction, rng: &mut Rng, others: &[Instruction]) -> Vec<Candidate> {
    let wrong = wrong_answer(it, rng, others);
    let mut out = Vec::with_capacity(8);
    for (ans, correct) in [(it.answer.trim().to_string(), 1.0), (wrong, 0.0)] {
        for (wordy, concise) in [(false, 1.0), (true, 0.0)] {
            for (hedged, confident) in [(false, 1.0), (true, 0.0)] {
                let body = if wordy {
                    format!("The answer to this question is {ans}.")
                } else {
                    ans.clone()
                };
                let text = if hedged {
                    format!("{body}\nI am not sure.")
                } else {
                    body
                };
                out.push(Candidate {
                    text,
                    attributes: [correct, concise, confident],
                });
            }
        }
    }
    out
}

fn utility(c: &Candidate, w: &[f64; 3]) -> f64 {
    c.attributes.iter().zip(w).map(|(a, w)| a * w).sum()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn likert(rng: &mut Rng, attr: f64, noise: f64) -> f64 {
    (4.0 * attr + noise * rng.normal()).round().clamp(0.0, 4.0)
}

/// `n` pairs over instructions of `split`, deterministic in `seed`.
pub fn preference_pairs(
    n: usize,
    seed: u64,
    split: Split,
    cfg: &SyntheticPairsConfig,
) -> Vec<PreferencePair> {
    let items = instructions(n, seed, split);
    // The stream's label predates the module's name; it is kept so that the pairs (and every
    // result built on them) stay the same.
    let mut rng = Rng::derive(seed, "gradus-data/prefs");
    let raters = cfg.raters.max(1);
    items
        .iter()
        .map(|it| {
            let cands = candidates(it, &mut rng, &items);
            let i = rng.below(cands.len());
            let mut j = rng.below(cands.len() - 1);
            if j >= i {
                j += 1;
            }
            let (a, b) = (&cands[i], &cands[j]);
            let (ua, ub) = (utility(a, &cfg.weights), utility(b, &cfg.weights));
            let p = sigmoid((ua - ub) / cfg.temperature.max(1e-9));
            let votes_a = (0..raters).filter(|_| rng.uniform() < p).count();
            // Majority wins; a tie goes to the higher utility.
            let a_wins = 2 * votes_a > raters || (2 * votes_a == raters && ua >= ub);
            let (w, l, uw, ul, votes) = if a_wins {
                (a, b, ua, ub, votes_a)
            } else {
                (b, a, ub, ua, raters - votes_a)
            };
            let d = (uw - ul).abs();
            let scores = |rng: &mut Rng, c: &Candidate| {
                c.attributes
                    .iter()
                    .map(|&x| likert(rng, x, cfg.score_noise))
                    .collect::<Vec<_>>()
            };
            PreferencePair {
                prompt: Turns::Text(task_prompt(&it.prompt)),
                chosen: Turns::Text(w.text.clone()),
                rejected: Turns::Text(l.text.clone()),
                chosen_fraction: Some(votes as f64 / raters as f64),
                margin: Some(if d < 1.0 {
                    1.0
                } else if d < 2.5 {
                    2.0
                } else {
                    3.0
                }),
                chosen_reward: Some(uw),
                rejected_reward: Some(ul),
                chosen_scores: Some(scores(&mut rng, w)),
                rejected_scores: Some(scores(&mut rng, l)),
                category: Some(format!("{:?}", it.kind).to_lowercase()),
            }
        })
        .collect()
}
