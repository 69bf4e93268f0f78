//! Sparse parity: `n` random bits, the label is the parity (XOR) of `k` of them — a fixed,
//! seeded subset the learner must find (Barak et al. 2022; Hu, Chen, Saphra and Cho 2023, RESEARCH
//! §3.8, train an MLP with hidden size 1000 by SGD at lr 0.1 on 1,000 examples). Inputs are ±1
//! (bit 1 → +1.0, bit 0 → −1.0), the label is 1 when an odd number of the relevant bits are set.
//!
//! The relevant subset depends on `task_seed` only; the training and evaluation examples are drawn
//! from separate streams of `data_seed` (`eval` examples are fresh draws, so a few may repeat
//! training inputs when `n` is small, as in the paper's online-sampled test sets).

use gradus_tensor::rng::Rng;
use gradus_tensor::{Error, Result};
use serde::{Deserialize, Serialize};

/// `[data.parity]`: the sparse-parity task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ParityConfig {
    /// Input bits.
    pub n: usize,
    /// Relevant bits (1 ≤ k ≤ n).
    pub k: usize,
    /// Training examples (the paper: 1,000).
    pub train_examples: usize,
    /// Held-out examples for `eval/accuracy`.
    pub eval_examples: usize,
    /// Seeds the relevant subset.
    pub task_seed: u64,
    /// Seeds the examples.
    pub data_seed: u64,
    /// Convergence = first step with `eval/accuracy` ≥ this (paper: 0.9).
    pub threshold: f64,
}

impl Default for ParityConfig {
    fn default() -> Self {
        Self {
            n: 40,
            k: 3,
            train_examples: 1000,
            eval_examples: 1000,
            task_seed: 0,
            data_seed: 0,
            threshold: 0.9,
        }
    }
}

/// Examples: `x` row-major (`len × n`, entries ±1) and labels 0/1.
#[derive(Clone, Debug, PartialEq)]
pub struct ParitySet {
    pub n: usize,
    pub x: Vec<f32>,
    pub y: Vec<u32>,
}

impl ParitySet {
    pub fn len(&self) -> usize {
        self.y.len()
    }
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }
}

impl ParityConfig {
    /// Errors name the field (`data.parity.k`, ...).
    pub fn validate(&self) -> Result<()> {
        if self.n == 0 {
            return Err(Error::config("data.parity.n", "must be at least 1"));
        }
        if self.k == 0 || self.k > self.n {
            return Err(Error::config(
                "data.parity.k",
                format!("must be in 1..=n = {}, got {}", self.n, self.k),
            ));
        }
        if self.train_examples == 0 {
            return Err(Error::config(
                "data.parity.train_examples",
                "must be at least 1",
            ));
        }
        if !(self.threshold > 0.0 && self.threshold <= 1.0) {
            return Err(Error::config(
                "data.parity.threshold",
                format!("must be in (0, 1], got {}", self.threshold),
            ));
        }
        Ok(())
    }

    /// The relevant bit indices, sorted.
    pub fn relevant(&self) -> Result<Vec<usize>> {
        self.validate()?;
        let mut idx: Vec<usize> = (0..self.n).collect();
        Rng::derive(self.task_seed, "gradus-tasks/parity-subset").shuffle(&mut idx);
        let mut r = idx[..self.k].to_vec();
        r.sort_unstable();
        Ok(r)
    }

    /// `count` examples from the named stream.
    fn draw(&self, relevant: &[usize], count: usize, stream: &str) -> ParitySet {
        let mut rng = Rng::derive(self.data_seed, stream);
        let mut x = Vec::with_capacity(count * self.n);
        let mut y = Vec::with_capacity(count);
        for _ in 0..count {
            let bits: Vec<bool> = (0..self.n).map(|_| rng.next_u64() & 1 == 1).collect();
            y.push(label(&bits, relevant));
            x.extend(bits.iter().map(|&b| if b { 1.0f32 } else { -1.0 }));
        }
        ParitySet { n: self.n, x, y }
    }

    /// The training and evaluation sets.
    pub fn sets(&self) -> Result<(ParitySet, ParitySet)> {
        let r = self.relevant()?;
        Ok((
            self.draw(&r, self.train_examples, "gradus-tasks/parity-train"),
            self.draw(&r, self.eval_examples, "gradus-tasks/parity-eval"),
        ))
    }
}

/// 1 when an odd number of `bits[relevant]` are set.
pub fn label(bits: &[bool], relevant: &[usize]) -> u32 {
    relevant.iter().filter(|&&i| bits[i]).count() as u32 % 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_by_hand() {
        // Bits 1 and 3 relevant: (F,T,F,T) → 2 set → 0; (T,T,F,F) → 1 set → 1.
        assert_eq!(label(&[false, true, false, true], &[1, 3]), 0);
        assert_eq!(label(&[true, true, false, false], &[1, 3]), 1);
    }

    #[test]
    fn sets_follow_the_relevant_bits() {
        let c = ParityConfig {
            n: 10,
            k: 3,
            train_examples: 200,
            eval_examples: 50,
            ..Default::default()
        };
        let r = c.relevant().unwrap();
        assert_eq!(r.len(), 3);
        let (tr, ev) = c.sets().unwrap();
        assert_eq!((tr.len(), ev.len()), (200, 50));
        for (row, &y) in tr.x.chunks(10).zip(&tr.y) {
            let bits: Vec<bool> = row.iter().map(|&v| v > 0.0).collect();
            let ones = r.iter().filter(|&&i| bits[i]).count();
            assert_eq!(y as usize, ones % 2);
        }
        // Labels are balanced-ish and not constant.
        let pos = tr.y.iter().filter(|&&y| y == 1).count();
        assert!((60..140).contains(&pos), "{pos}");
        assert_eq!(c.sets().unwrap(), (tr.clone(), ev), "seeded");
        let other = ParityConfig {
            task_seed: 5,
            ..c.clone()
        };
        let _ = other.relevant().unwrap();
        assert_ne!(tr.x, ParityConfig { data_seed: 1, ..c }.sets().unwrap().0.x);
    }

    #[test]
    fn impossible_settings_name_the_field() {
        let e = ParityConfig {
            n: 4,
            k: 5,
            ..Default::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("data.parity.k"), "{e}");
        let e = ParityConfig {
            k: 0,
            ..Default::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("data.parity.k"), "{e}");
        let e = ParityConfig {
            n: 0,
            ..Default::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("data.parity.n"), "{e}");
    }
}
