//! Reading run directories: checkpoints, `dynamics.jsonl` (the statistics, recorded online by
//! training or offline by `gradus dynamics stats`), `metrics.jsonl` and the convergence step.
//!
//! `dynamics.jsonl` holds one [`CheckpointStats`] per line:
//! `{"step": N, "stats": {"l1": …, … 14 columns}, "layers": {"<tensor>": {"l1": …, …}}}`.

use std::path::{Path, PathBuf};

use gradus_tensor::{Error, Result};
use serde_json::Value;

use crate::stats::{
    checkpoint_stats, safetensors_stats, CheckpointStats, MatrixSelection, NamedTensor, COLUMNS,
};

/// The statistics file's name inside a run directory.
pub const DYNAMICS_FILE: &str = "dynamics.jsonl";

/// A run's display name: its directory's last component.
pub fn run_name(run: &Path) -> String {
    run.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| run.display().to_string())
}

/// `checkpoints/step-N/model.safetensors` of a run, sorted by step.
pub fn list_checkpoints(run: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let dir = run.join("checkpoints");
    let rd = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(&dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(step) = name
            .strip_prefix("step-")
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        let model = entry.path().join("model.safetensors");
        if model.is_file() {
            out.push((step, model));
        }
    }
    out.sort();
    Ok(out)
}

/// Statistics of every saved checkpoint of a run (offline), in step order.
pub fn stats_offline(run: &Path, sel: MatrixSelection) -> Result<Vec<CheckpointStats>> {
    let cks = list_checkpoints(run)?;
    if cks.is_empty() {
        return Err(Error::format(
            run,
            "no checkpoints/step-N/model.safetensors in this run directory",
        ));
    }
    cks.iter()
        .map(|(step, p)| safetensors_stats(*step, p, sel))
        .collect()
}

/// Serialises statistics rows as JSON lines.
pub fn to_jsonl(rows: &[CheckpointStats]) -> Result<String> {
    let mut s = String::new();
    for r in rows {
        s.push_str(
            &serde_json::to_string(r)
                .map_err(|e| Error::msg(format!("serialising statistics: {e}")))?,
        );
        s.push('\n');
    }
    Ok(s)
}

/// Writes `rows` to `path` atomically.
pub fn write_dynamics(path: &Path, rows: &[CheckpointStats]) -> Result<()> {
    gradus_tensor::io::write_atomic(path, to_jsonl(rows)?.as_bytes())
}

/// Reads a `dynamics.jsonl` file; errors name the line. Rows are sorted by step, and each must
/// hold all 14 columns as finite numbers.
pub fn read_dynamics(path: &Path) -> Result<Vec<CheckpointStats>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let r: CheckpointStats = serde_json::from_str(line).map_err(|e| Error::Parse {
            path: path.into(),
            line: i + 1,
            msg: e.to_string(),
        })?;
        for c in COLUMNS {
            match r.stats.get(c) {
                Some(v) if v.is_finite() => {}
                Some(_) => {
                    return Err(Error::Parse {
                        path: path.into(),
                        line: i + 1,
                        msg: format!("column `{c}` is not finite"),
                    })
                }
                None => {
                    return Err(Error::Parse {
                        path: path.into(),
                        line: i + 1,
                        msg: format!("column `{c}` is missing"),
                    })
                }
            }
        }
        rows.push(r);
    }
    rows.sort_by_key(|r| r.step);
    Ok(rows)
}

/// Appends statistics to a run's `dynamics.jsonl` while training (`[dynamics] every = N`): one
/// line per recorded step, each written with a single `write` call so a crash loses at most the
/// line being written.
pub struct StatsRecorder {
    path: PathBuf,
    file: std::fs::File,
    selection: MatrixSelection,
}

impl StatsRecorder {
    /// Opens `run_dir/dynamics.jsonl`: emptied for a fresh run; for a run resumed at `step`, the lines
    /// with a larger step (written after that checkpoint by the interrupted run) are dropped.
    pub fn open(
        run_dir: &Path,
        resume_step: Option<u64>,
        selection: MatrixSelection,
    ) -> Result<Self> {
        let path = run_dir.join(DYNAMICS_FILE);
        let kept = match resume_step {
            Some(s) if path.is_file() => {
                let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
                text.lines()
                    .filter(|l| {
                        serde_json::from_str::<Value>(l)
                            .ok()
                            .and_then(|v| v.get("step").and_then(Value::as_u64))
                            .is_some_and(|st| st <= s)
                    })
                    .map(|l| format!("{l}\n"))
                    .collect::<String>()
            }
            _ => String::new(),
        };
        gradus_tensor::io::write_atomic(&path, kept.as_bytes())?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(Self {
            path,
            file,
            selection,
        })
    }

    /// Computes and appends the statistics of `tensors` at `step`.
    pub fn record(&mut self, step: u64, tensors: &[NamedTensor]) -> Result<CheckpointStats> {
        use std::io::Write;
        let st = checkpoint_stats(step, tensors, self.selection)?;
        let mut line = serde_json::to_string(&st)
            .map_err(|e| Error::msg(format!("serialising statistics: {e}")))?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .map_err(|e| Error::io(&self.path, e))?;
        Ok(st)
    }
}

/// A run's statistics: `dynamics.jsonl` when present, else computed from its checkpoints.
pub fn load_stats(run: &Path, sel: MatrixSelection) -> Result<Vec<CheckpointStats>> {
    let p = run.join(DYNAMICS_FILE);
    if p.is_file() {
        read_dynamics(&p)
    } else {
        stats_offline(run, sel)
    }
}

/// When a run reached its convergence threshold.
#[derive(Clone, Debug, PartialEq)]
pub enum Convergence {
    /// The first logged step at which the metric was ≥ the threshold.
    At(u64),
    /// Never reached; the last step at which the metric was logged (a lower bound).
    Never { last_step: u64 },
    /// The metric was never logged.
    NoMetric,
}

impl Convergence {
    /// The step used for correlations: the convergence step, or the censored lower bound.
    pub fn step(&self) -> Option<u64> {
        match self {
            Convergence::At(s) => Some(*s),
            Convergence::Never { last_step } => Some(*last_step),
            Convergence::NoMetric => None,
        }
    }
}

/// The convergence step of a run: the first row of `metrics.jsonl` whose `metric` is ≥ `threshold`
/// (Hu et al.: eval accuracy 0.5 for modular addition, 0.9 for sparse parity).
pub fn convergence(run: &Path, metric: &str, threshold: f64) -> Result<Convergence> {
    let path = run.join("metrics.jsonl");
    if !path.is_file() {
        return Ok(Convergence::NoMetric);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let mut last = None;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line).map_err(|e| Error::Parse {
            path: path.clone(),
            line: i + 1,
            msg: e.to_string(),
        })?;
        let Some(x) = v.get(metric).and_then(Value::as_f64) else {
            continue;
        };
        let step = v
            .get("step")
            .and_then(Value::as_u64)
            .ok_or_else(|| Error::Parse {
                path: path.clone(),
                line: i + 1,
                msg: "no integer `step`".into(),
            })?;
        if x >= threshold {
            return Ok(Convergence::At(step));
        }
        last = Some(step);
    }
    Ok(match last {
        Some(last_step) => Convergence::Never { last_step },
        None => Convergence::NoMetric,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn convergence_from_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path();
        std::fs::write(
            run.join("metrics.jsonl"),
            "{\"step\":1,\"train/loss\":2.0}\n{\"step\":10,\"eval/accuracy\":0.2}\n{\"step\":20,\"eval/accuracy\":0.55}\n{\"step\":30,\"eval/accuracy\":0.9}\n",
        )
        .unwrap();
        assert_eq!(
            convergence(run, "eval/accuracy", 0.5).unwrap(),
            Convergence::At(20)
        );
        assert_eq!(
            convergence(run, "eval/accuracy", 0.95).unwrap(),
            Convergence::Never { last_step: 30 }
        );
        assert_eq!(
            convergence(run, "eval/other", 0.5).unwrap(),
            Convergence::NoMetric
        );
        std::fs::write(run.join("metrics.jsonl"), "{\"step\":1}\nnot json\n").unwrap();
        let e = convergence(run, "eval/accuracy", 0.5)
            .unwrap_err()
            .to_string();
        assert!(e.contains("metrics.jsonl:2"), "{e}");
    }

    #[test]
    fn recorder_appends_and_truncates_on_resume() {
        let dir = tempfile::tempdir().unwrap();
        let t = |v: f32| {
            vec![NamedTensor {
                name: "fc.weight".into(),
                shape: vec![1, 1],
                values: vec![v],
            }]
        };
        let mut r = StatsRecorder::open(dir.path(), None, MatrixSelection::All).unwrap();
        for step in [0, 10, 20] {
            r.record(step, &t(step as f32 + 1.0)).unwrap();
        }
        drop(r);
        // Resumed at step 10: the row of step 20 goes, new rows append after step 10.
        let mut r = StatsRecorder::open(dir.path(), Some(10), MatrixSelection::All).unwrap();
        r.record(20, &t(-3.0)).unwrap();
        let rows = read_dynamics(&dir.path().join(DYNAMICS_FILE)).unwrap();
        assert_eq!(
            rows.iter().map(|r| r.step).collect::<Vec<_>>(),
            vec![0, 10, 20]
        );
        // A 1×1 matrix [w]: l1 = |w|, spectral = |w|, trace = w, mean_w = w.
        assert_eq!(rows[1].stats["l1"], 11.0);
        assert_eq!(rows[2].stats["trace"], -3.0);
        assert_eq!(rows[2].stats["spectral"], 3.0);
    }

    #[test]
    fn dynamics_file_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(DYNAMICS_FILE);
        std::fs::write(&p, "{\"step\":1,\"stats\":{\"l1\":1.0},\"layers\":{}}\n").unwrap();
        let e = read_dynamics(&p).unwrap_err().to_string();
        assert!(
            e.contains("dynamics.jsonl:1") && e.contains("`l2` is missing"),
            "{e}"
        );
    }
}
