//! Modular addition: `a b =` → `c` with `c = (a + b) mod p`, the grokking task of Power et al.
//! (2022) and Nanda et al. (2023) that Hu, Chen, Saphra and Cho (2023, RESEARCH §3.8) map with a
//! Gaussian HMM over training checkpoints.
//!
//! Every one of the p² pairs `(a, b)` is an example. A seeded shuffle puts the first
//! `round(train_fraction · p²)` of them (at least one) in the training split and **all the rest**
//! in the held-out evaluation split, so the two never overlap and together cover the table.
//! The split depends only on `(p, train_fraction, split_seed)`, not on the run's seed: runs of a
//! sweep differ in initialisation and data order, and are evaluated on the same held-out pairs.
//!
//! Tokens: the numbers `0..p` are tokens `0..p` (each number one token, written in decimal),
//! `=` is token `p`, then [`SPECIALS`]. An example is the four tokens `a b = c`; the model is
//! trained and scored only on `c` (the prediction after `=`).

use gradus_tensor::rng::Rng;
use gradus_tensor::{Error, Result};
use serde::{Deserialize, Serialize};

/// Special tokens after the numbers and `=`: end of text (also BOS) and padding.
pub const SPECIALS: [&str; 2] = ["<|endoftext|>", "<|pad|>"];

/// `[data.modular]`: the modular-addition task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModularConfig {
    /// The modulus (≥ 2). Hu et al. and Nanda et al.: 113.
    pub p: u32,
    /// Share of the p² pairs used for training, in (0, 1]; the rest is the held-out eval set.
    pub train_fraction: f64,
    /// Seeds the train/eval split (independent of `run.seed`).
    pub split_seed: u64,
    /// Convergence = first step where held-out accuracy (`eval/accuracy`) is ≥ this (Hu et al.:
    /// 0.5 for modular addition).
    pub threshold: f64,
}

impl Default for ModularConfig {
    fn default() -> Self {
        Self {
            p: 113,
            train_fraction: 0.3,
            split_seed: 0,
            threshold: 0.5,
        }
    }
}

impl ModularConfig {
    /// Errors name the field (`data.modular.p`, `data.modular.train_fraction`, ...).
    pub fn validate(&self) -> Result<()> {
        if self.p < 2 {
            return Err(Error::config(
                "data.modular.p",
                format!("must be at least 2, got {}", self.p),
            ));
        }
        if self.p > 4096 {
            return Err(Error::config(
                "data.modular.p",
                format!(
                    "{} is too large: the task enumerates all p² pairs (at most 4096)",
                    self.p
                ),
            ));
        }
        if !(self.train_fraction > 0.0 && self.train_fraction <= 1.0) {
            return Err(Error::config(
                "data.modular.train_fraction",
                format!("must be in (0, 1], got {}", self.train_fraction),
            ));
        }
        if !(self.threshold > 0.0 && self.threshold <= 1.0) {
            return Err(Error::config(
                "data.modular.threshold",
                format!("must be in (0, 1], got {}", self.threshold),
            ));
        }
        Ok(())
    }

    /// The id of `=`.
    pub fn eq_id(&self) -> u32 {
        self.p
    }

    /// The vocabulary in id order: `"0"`, …, `"p-1"`, `"="`, then [`SPECIALS`].
    pub fn vocab(&self) -> Vec<String> {
        let mut v: Vec<String> = (0..self.p).map(|n| n.to_string()).collect();
        v.push("=".into());
        v.extend(SPECIALS.iter().map(|s| s.to_string()));
        v
    }

    /// The four token ids of the example `a b = c`.
    pub fn example_ids(&self, a: u32, b: u32) -> [u32; 4] {
        [a, b, self.eq_id(), answer(a, b, self.p)]
    }

    /// The training and held-out pairs (see the module docs).
    pub fn split(&self) -> Result<ModularSplit> {
        self.validate()?;
        let p = self.p;
        let mut all: Vec<(u32, u32)> = (0..p).flat_map(|a| (0..p).map(move |b| (a, b))).collect();
        let n = all.len();
        let n_train = ((self.train_fraction * n as f64).round() as usize).clamp(1, n);
        Rng::derive(self.split_seed, "gradus-tasks/modular-split").shuffle(&mut all);
        let eval = all.split_off(n_train);
        Ok(ModularSplit { train: all, eval })
    }
}

/// `(a + b) mod p`.
pub fn answer(a: u32, b: u32, p: u32) -> u32 {
    ((a as u64 + b as u64) % p as u64) as u32
}

/// The two disjoint sets of pairs.
#[derive(Clone, Debug, PartialEq)]
pub struct ModularSplit {
    pub train: Vec<(u32, u32)>,
    pub eval: Vec<(u32, u32)>,
}

/// Share of `pairs` whose predicted answer is right (`predicted[i]` for `pairs[i]`); `None` when
/// there are no pairs.
pub fn accuracy(pairs: &[(u32, u32)], predicted: &[u32], p: u32) -> Option<f64> {
    if pairs.is_empty() {
        return None;
    }
    let right = pairs
        .iter()
        .zip(predicted)
        .filter(|((a, b), &c)| answer(*a, *b, p) == c)
        .count();
    Some(right as f64 / pairs.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_wrap_around() {
        // By hand: 100 + 20 = 120 = 113 + 7; 112 + 112 = 224 = 113 + 111.
        assert_eq!(answer(100, 20, 113), 7);
        assert_eq!(answer(112, 112, 113), 111);
        assert_eq!(answer(0, 0, 2), 0);
        assert_eq!(answer(1, 1, 2), 0);
    }

    #[test]
    fn split_is_disjoint_complete_and_seeded() {
        let c = ModularConfig {
            p: 7,
            train_fraction: 0.3,
            ..Default::default()
        };
        let s = c.split().unwrap();
        // round(0.3 · 49) = round(14.7) = 15 training pairs, 34 held out.
        assert_eq!(s.train.len(), 15);
        assert_eq!(s.eval.len(), 34);
        let mut all: Vec<_> = s.train.iter().chain(&s.eval).copied().collect();
        all.sort();
        all.dedup();
        assert_eq!(
            all.len(),
            49,
            "train ∪ eval covers the table without overlap"
        );
        assert_eq!(c.split().unwrap(), s, "same seed, same split");
        let other = ModularConfig {
            split_seed: 1,
            ..c.clone()
        };
        assert_ne!(other.split().unwrap().train, s.train);
        let full = ModularConfig {
            train_fraction: 1.0,
            ..c
        };
        assert!(full.split().unwrap().eval.is_empty());
    }

    #[test]
    fn vocab_and_example_ids() {
        let c = ModularConfig {
            p: 5,
            ..Default::default()
        };
        assert_eq!(
            c.vocab(),
            vec!["0", "1", "2", "3", "4", "=", "<|endoftext|>", "<|pad|>"]
        );
        // 3 + 4 = 7 = 5 + 2.
        assert_eq!(c.example_ids(3, 4), [3, 4, 5, 2]);
    }

    #[test]
    fn accuracy_counts_right_answers() {
        // (1,2)→0 right, (2,2)→1 right, (0,1)→0 wrong (answer 1), with p = 3.
        let acc = accuracy(&[(1, 2), (2, 2), (0, 1)], &[0, 1, 0], 3).unwrap();
        assert!((acc - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(accuracy(&[], &[], 3), None);
    }

    #[test]
    fn impossible_settings_name_the_field() {
        let bad = |c: ModularConfig| c.validate().unwrap_err().to_string();
        let e = bad(ModularConfig {
            p: 1,
            ..Default::default()
        });
        assert!(e.contains("data.modular.p"), "{e}");
        for f in [0.0, -0.1, 1.5, f64::NAN] {
            let e = bad(ModularConfig {
                train_fraction: f,
                ..Default::default()
            });
            assert!(e.contains("data.modular.train_fraction"), "{f}: {e}");
        }
        assert!(ModularConfig {
            train_fraction: 1.0,
            ..Default::default()
        }
        .validate()
        .is_ok());
    }
}
