//! Plain progress lines for logs: when stdout is not a terminal (a Slurm log, a pipe) a progress
//! bar is invisible, so the loop prints a line such as
//! `step 120/500 (24.0%)  loss 2.3456  tokens/s 41.2k  elapsed 0:42  ETA 2:13`
//! at most every N seconds, and one for the last step.

use std::time::{Duration, Instant};

/// Decides when to print a progress line and formats it.
#[derive(Debug)]
pub struct ProgressLines {
    every: Duration,
    total: u64,
    started: Instant,
    first_step: u64,
    first_tokens: Option<u64>,
    last_print: Instant,
}

/// `m:ss` or `h:mm:ss`.
pub fn clock(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

impl ProgressLines {
    /// Lines every `every_s` seconds (0: every step) for a run of `total` steps resumed at
    /// `start_step`.
    pub fn new(every_s: f64, start_step: u64, total: u64) -> Self {
        let now = Instant::now();
        Self {
            every: Duration::from_secs_f64(every_s.max(0.0)),
            total,
            started: now,
            first_step: start_step,
            first_tokens: None,
            last_print: now,
        }
    }

    /// The line to print after `step` (None when it is not yet time). `tokens_seen` counts from
    /// the start of the run; `last` forces a line.
    pub fn update(&mut self, step: u64, loss: f64, tokens_seen: u64, last: bool) -> Option<String> {
        let now = Instant::now();
        let first_tokens = *self.first_tokens.get_or_insert(tokens_seen);
        if !last && now.duration_since(self.last_print) < self.every {
            return None;
        }
        self.last_print = now;
        let elapsed = now.duration_since(self.started).as_secs_f64();
        Some(self.format(
            step,
            loss,
            tokens_seen.saturating_sub(first_tokens),
            elapsed,
        ))
    }

    /// The line for `step` after `elapsed` seconds in which `tokens` were trained on.
    pub fn format(&self, step: u64, loss: f64, tokens: u64, elapsed: f64) -> String {
        let done = step.saturating_sub(self.first_step);
        let left = self.total.saturating_sub(step);
        let eta = if done > 0 {
            elapsed / done as f64 * left as f64
        } else {
            f64::NAN
        };
        let tps = tokens as f64 / elapsed.max(1e-9);
        let tps = if tps >= 1e3 {
            format!("{:.1}k", tps / 1e3)
        } else {
            format!("{tps:.0}")
        };
        format!(
            "step {step}/{} ({:.1}%)  loss {loss:.4}  tokens/s {tps}  elapsed {}  ETA {}",
            self.total,
            100.0 * step as f64 / self.total.max(1) as f64,
            clock(elapsed),
            if eta.is_finite() {
                clock(eta)
            } else {
                "?".into()
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_format_and_eta() {
        // 100 of 500 steps done from step 0 in 40 s: 0.4 s/step, 400 left -> 160 s = 2:40.
        // 80,000 tokens in 40 s = 2000/s = "2.0k".
        let p = ProgressLines::new(30.0, 0, 500);
        assert_eq!(
            p.format(100, 2.345_67, 80_000, 40.0),
            "step 100/500 (20.0%)  loss 2.3457  tokens/s 2.0k  elapsed 0:40  ETA 2:40"
        );
        // Resumed at 400: 50 steps in 10 s, 50 left -> 10 s.
        let p = ProgressLines::new(30.0, 400, 500);
        assert!(p
            .format(450, 1.0, 500, 10.0)
            .ends_with("tokens/s 50  elapsed 0:10  ETA 0:10"));
        assert_eq!(clock(3725.0), "1:02:05");
    }

    #[test]
    fn prints_only_when_due_or_last() {
        let mut p = ProgressLines::new(3600.0, 0, 10);
        assert_eq!(p.update(1, 1.0, 10, false), None);
        assert!(p
            .update(10, 1.0, 100, true)
            .unwrap()
            .starts_with("step 10/10 (100.0%)"));
        let mut every = ProgressLines::new(0.0, 0, 10);
        assert!(every.update(1, 1.0, 10, false).is_some());
    }
}
