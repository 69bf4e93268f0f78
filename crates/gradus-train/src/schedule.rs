//! Learning-rate schedules with linear warmup, matching Hugging Face `transformers`:
//! `get_constant_schedule_with_warmup`, `get_linear_schedule_with_warmup`,
//! `get_cosine_schedule_with_warmup` (num_cycles 0.5) and, for `min_lr_ratio > 0`,
//! `get_cosine_with_min_lr_schedule_with_warmup` (`min_lr_rate`).
//!
//! `step` counts the optimizer updates already taken: the update with index `step` (0-based) uses
//! `lr_at(step, ..)`, which is what HF's `LambdaLR` gives when `scheduler.step()` follows
//! `optimizer.step()`. With `warmup_steps = W > 0`:
//! ```text
//! warmup (step < W):  lr = base * step / W          -> step 0 has lr 0 (as in HF), step W-1 has base (W-1)/W
//! constant:           lr = base
//! linear:             lr = base * max(0, (N - step) / max(1, N - W))
//! cosine:             p = (step - W) / max(1, N - W)
//!                     lr = base * (r + (1 - r) * 0.5 (1 + cos(pi p)))      r = min_lr_ratio
//! ```
//! with `N = total_steps`. One deliberate difference from HF: for `step > N` the cosine progress is
//! clamped to 1 (HF's cosine would rise again), so the rate stays at `base * r`.
//!
//! TOML (`kind` tags the variant; unknown fields are errors):
//! ```toml
//! [schedule]
//! kind = "cosine"
//! warmup_steps = 100
//! min_lr_ratio = 0.1
//! ```

use gradus_tensor::{Error, Result};
use serde::{Deserialize, Serialize};

/// A learning-rate schedule; see the module docs for the formulas.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    /// Linear warmup, then `base_lr`.
    Constant {
        #[serde(default)]
        warmup_steps: u64,
    },
    /// Linear warmup, then linear decay to 0 at `total_steps`.
    Linear {
        #[serde(default)]
        warmup_steps: u64,
    },
    /// Linear warmup, then half a cosine from `base_lr` down to `base_lr * min_lr_ratio` at
    /// `total_steps`.
    Cosine {
        #[serde(default)]
        warmup_steps: u64,
        #[serde(default)]
        min_lr_ratio: f64,
    },
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule::Constant { warmup_steps: 0 }
    }
}

impl Schedule {
    pub fn warmup_steps(&self) -> u64 {
        match *self {
            Schedule::Constant { warmup_steps }
            | Schedule::Linear { warmup_steps }
            | Schedule::Cosine { warmup_steps, .. } => warmup_steps,
        }
    }

    /// Sets the warm-up length, whatever the kind.
    pub fn set_warmup_steps(&mut self, w: u64) {
        match self {
            Schedule::Constant { warmup_steps }
            | Schedule::Linear { warmup_steps }
            | Schedule::Cosine { warmup_steps, .. } => *warmup_steps = w,
        }
    }

    /// Checks the settings against the run length; errors name the field (`schedule.min_lr_ratio`).
    pub fn validate(&self, total_steps: u64) -> Result<()> {
        if let Schedule::Cosine { min_lr_ratio, .. } = *self {
            if !(0.0..=1.0).contains(&min_lr_ratio) {
                return Err(Error::config(
                    "schedule.min_lr_ratio",
                    format!("must be in [0, 1], got {min_lr_ratio}"),
                ));
            }
        }
        if self.warmup_steps() > total_steps {
            return Err(Error::config(
                "schedule.warmup_steps",
                format!(
                    "{} is more than the {total_steps} total steps",
                    self.warmup_steps()
                ),
            ));
        }
        Ok(())
    }

    /// The multiplier of `base_lr` for update `step` of `total_steps` (HF's `lr_lambda`).
    pub fn factor(&self, step: u64, total_steps: u64) -> f64 {
        let w = self.warmup_steps();
        if step < w {
            return step as f64 / w.max(1) as f64;
        }
        match *self {
            Schedule::Constant { .. } => 1.0,
            Schedule::Linear { .. } => {
                let left = total_steps.saturating_sub(step) as f64;
                (left / total_steps.saturating_sub(w).max(1) as f64).max(0.0)
            }
            Schedule::Cosine { min_lr_ratio, .. } => {
                let progress =
                    ((step - w) as f64 / total_steps.saturating_sub(w).max(1) as f64).min(1.0);
                let cos = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                (cos * (1.0 - min_lr_ratio) + min_lr_ratio).max(0.0)
            }
        }
    }

    /// The learning rate of update `step` (0-based) in a run of `total_steps` updates.
    pub fn lr_at(&self, step: u64, total_steps: u64, base_lr: f64) -> f64 {
        base_lr * self.factor(step, total_steps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn warmup_starts_at_zero_like_hf() {
        // W = 4: factors 0, 1/4, 2/4, 3/4, then the schedule proper (1 for constant).
        let s = Schedule::Constant { warmup_steps: 4 };
        let got: Vec<f64> = (0..6).map(|k| s.lr_at(k, 10, 2.0)).collect();
        assert_eq!(got, vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.0]);
        // No warmup: the base rate from step 0.
        assert_eq!(
            Schedule::Constant { warmup_steps: 0 }.lr_at(0, 10, 2.0),
            2.0
        );
    }

    #[test]
    fn linear_decays_to_zero_at_total() {
        // W = 2, N = 6: after warmup (6 - k) / 4 -> k=2: 1, k=3: 0.75, k=4: 0.5, k=5: 0.25, k=6: 0.
        let s = Schedule::Linear { warmup_steps: 2 };
        let got: Vec<f64> = (0..8).map(|k| s.factor(k, 6)).collect();
        assert_eq!(got, vec![0.0, 0.5, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0]);
    }

    #[test]
    fn cosine_hits_half_at_midpoint_and_min_at_end() {
        // W = 2, N = 10: progress p = (k - 2) / 8; k = 6 -> p = 1/2 -> 0.5 (1 + cos(pi/2)) = 0.5;
        // k = 4 -> p = 1/4 -> 0.5 (1 + sqrt(2)/2) ~ 0.853553; k = 10 -> 0.
        let s = Schedule::Cosine {
            warmup_steps: 2,
            min_lr_ratio: 0.0,
        };
        close(s.factor(1, 10), 0.5);
        close(s.factor(2, 10), 1.0);
        close(s.factor(4, 10), 0.5 * (1.0 + 0.5f64.sqrt()));
        close(s.factor(6, 10), 0.5);
        close(s.factor(10, 10), 0.0);
        close(s.factor(14, 10), 0.0); // clamped past the end
                                      // min_lr_ratio r = 0.1: r + (1 - r) * cosine -> midpoint 0.1 + 0.9 * 0.5 = 0.55, end 0.1.
        let s = Schedule::Cosine {
            warmup_steps: 2,
            min_lr_ratio: 0.1,
        };
        close(s.lr_at(6, 10, 1e-3), 0.55e-3);
        close(s.lr_at(10, 10, 1e-3), 0.1e-3);
        close(s.lr_at(20, 10, 1e-3), 0.1e-3);
        // Warmup is not affected by the floor.
        close(s.lr_at(0, 10, 1e-3), 0.0);
    }

    #[test]
    fn degenerate_lengths_do_not_divide_by_zero() {
        let s = Schedule::Cosine {
            warmup_steps: 5,
            min_lr_ratio: 0.0,
        };
        // N = W = 5: max(1, N - W) = 1, p = (5 - 5) / 1 = 0 -> 1.
        close(s.factor(5, 5), 1.0);
        close(Schedule::Linear { warmup_steps: 0 }.factor(0, 0), 0.0);
    }

    #[test]
    fn deserialises_tagged_and_rejects_unknown_fields() {
        let s: Schedule =
            toml::from_str("kind = \"cosine\"\nwarmup_steps = 3\nmin_lr_ratio = 0.1\n").unwrap();
        assert_eq!(
            s,
            Schedule::Cosine {
                warmup_steps: 3,
                min_lr_ratio: 0.1
            }
        );
        let s: Schedule = toml::from_str("kind = \"linear\"").unwrap();
        assert_eq!(s, Schedule::Linear { warmup_steps: 0 });
        let s: Schedule = serde_json::from_str(r#"{"kind":"constant","warmup_steps":7}"#).unwrap();
        assert_eq!(s, Schedule::Constant { warmup_steps: 7 });
        assert!(toml::from_str::<Schedule>("kind = \"linear\"\nmin_lr_ratio = 0.1").is_err());
        assert!(toml::from_str::<Schedule>("kind = \"cosine\"\nwarmup = 3").is_err());
        assert!(toml::from_str::<Schedule>("kind = \"step\"").is_err());
    }

    #[test]
    fn validate_names_the_field() {
        let e = Schedule::Cosine {
            warmup_steps: 0,
            min_lr_ratio: 1.5,
        }
        .validate(10)
        .unwrap_err();
        assert!(e.to_string().contains("schedule.min_lr_ratio"), "{e}");
        let e = Schedule::Linear { warmup_steps: 11 }
            .validate(10)
            .unwrap_err();
        assert!(e.to_string().contains("schedule.warmup_steps"), "{e}");
        assert!(Schedule::Linear { warmup_steps: 10 }.validate(10).is_ok());
    }
}
