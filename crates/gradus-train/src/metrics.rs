//! `metrics.jsonl`: one JSON object per logged step, `{"step": N, "train/loss": ..., ...}`.
//!
//! Keys are slash-namespaced (`train/loss`, `train/lr`, `eval/loss`, `rewards/chosen`); `step`
//! comes first, then the keys in the order logged. Each line is written with one `write` call and
//! nothing is buffered, so a crash loses at most the line being written. Non-finite values are
//! written as `null` (JSON has no NaN); readers see a missing value at that step.
//!
//! Every row also goes to a TensorBoard event file beside it ([`crate::tensorboard`]): numbers as
//! scalars, strings as text. A sink opened on resume starts a new event file (TensorBoard reads
//! every file of the directory).
//!
//! On resume from step `S`, [`MetricsSink::resume`] keeps the lines with `step <= S` (and drops a
//! torn last line), so after the resumed run the file is the same as an uninterrupted run's.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use gradus_tensor::{Error, Result};
use serde_json::{Map, Value};

use crate::tensorboard::{EventWriter, SummaryValue};

/// The metrics file's name inside a run directory.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// Appends metric rows to a run's `metrics.jsonl`.
pub struct MetricsSink {
    path: PathBuf,
    file: File,
    tb: EventWriter,
}

impl MetricsSink {
    /// A fresh `run_dir/metrics.jsonl` (an existing one is emptied).
    pub fn create(run_dir: &Path) -> Result<Self> {
        Self::open_path(&run_dir.join(METRICS_FILE), None)
    }

    /// Opens `run_dir/metrics.jsonl` to continue a run resumed at `step`: rows with a larger step
    /// (logged after that checkpoint by the interrupted run) are removed first.
    pub fn resume(run_dir: &Path, step: u64) -> Result<Self> {
        Self::open_path(&run_dir.join(METRICS_FILE), Some(step))
    }

    /// [`MetricsSink::create`] (`resume_step = None`) or [`MetricsSink::resume`] on any path.
    pub fn open_path(path: &Path, resume_step: Option<u64>) -> Result<Self> {
        match resume_step {
            None => {
                File::create(path).map_err(|e| Error::io(path, e))?;
            }
            Some(s) => truncate_after(path, s)?,
        }
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let tb = EventWriter::create(dir)?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            tb,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `{"step": step, k1: v1, ...}`. Keys must be non-empty, unique and not `step`.
    pub fn log(&mut self, step: u64, metrics: &[(&str, f64)]) -> Result<()> {
        let mut line = format!("{{\"step\":{step}");
        for (i, (k, v)) in metrics.iter().enumerate() {
            check_key(k)?;
            if metrics[..i].iter().any(|(k2, _)| k2 == k) {
                return Err(Error::msg(format!(
                    "metrics: key `{k}` logged twice at step {step}"
                )));
            }
            line.push(',');
            line.push_str(&Value::String((*k).to_string()).to_string());
            line.push(':');
            line.push_str(&Value::from(*v).to_string()); // NaN/inf -> null
        }
        line.push_str("}\n");
        self.write_line(&line)?;
        let values = metrics
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(k, v)| (k.to_string(), SummaryValue::Scalar(*v as f32)));
        self.tb.write_values(step, values.collect())
    }

    /// The TensorBoard event file this sink writes.
    pub fn event_file(&self) -> &Path {
        self.tb.path()
    }

    /// Appends a row of arbitrary JSON values (numbers, strings, ...), keys in the map's order.
    pub fn log_values(&mut self, step: u64, metrics: &Map<String, Value>) -> Result<()> {
        let mut line = format!("{{\"step\":{step}");
        for (k, v) in metrics {
            check_key(k)?;
            line.push(',');
            line.push_str(&Value::String(k.clone()).to_string());
            line.push(':');
            line.push_str(&v.to_string());
        }
        line.push_str("}\n");
        self.write_line(&line)?;
        let values = metrics.iter().filter_map(|(k, v)| {
            let v = match v {
                Value::Number(n) => SummaryValue::Scalar(n.as_f64()? as f32),
                Value::Bool(b) => SummaryValue::Scalar(*b as u8 as f32),
                Value::String(s) => SummaryValue::Text(s.clone()),
                _ => return None,
            };
            Some((k.clone(), v))
        });
        self.tb.write_values(step, values.collect())
    }

    fn write_line(&mut self, line: &str) -> Result<()> {
        self.file
            .write_all(line.as_bytes())
            .map_err(|e| Error::io(&self.path, e))?;
        self.file.flush().map_err(|e| Error::io(&self.path, e))
    }
}

fn check_key(k: &str) -> Result<()> {
    if k.is_empty() || k == "step" {
        return Err(Error::msg(format!(
            "metrics: invalid key `{k}` (empty, or the reserved `step`)"
        )));
    }
    Ok(())
}

/// Parses the lines of a metrics file. A last line without its newline that does not parse (a
/// write torn by a crash) is dropped; any other bad line is an error naming the line.
/// Returns the rows with the byte length of the text they span (for truncation).
fn parse_lines(path: &Path, text: &str) -> Result<Vec<(Map<String, Value>, usize)>> {
    let mut rows = Vec::new();
    let mut offset = 0;
    for (i, raw) in text.split_inclusive('\n').enumerate() {
        offset += raw.len();
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(m)) => rows.push((m, offset)),
            Ok(_) => {
                return Err(Error::Parse {
                    path: path.to_path_buf(),
                    line: i + 1,
                    msg: "expected a JSON object".into(),
                })
            }
            Err(_) if !raw.ends_with('\n') => break, // torn last line
            Err(e) => {
                return Err(Error::Parse {
                    path: path.to_path_buf(),
                    line: i + 1,
                    msg: e.to_string(),
                })
            }
        }
    }
    Ok(rows)
}

/// The `step` of a row, if it has an integer one.
pub fn row_step(row: &Map<String, Value>) -> Option<u64> {
    row.get("step").and_then(Value::as_u64)
}

/// Reads every row of a metrics file (see [`MetricsSink`]); errors name the file and line.
pub fn read_metrics(path: &Path) -> Result<Vec<Map<String, Value>>> {
    let text = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    Ok(parse_lines(path, &text)?
        .into_iter()
        .map(|(m, _)| m)
        .collect())
}

/// `(step, value)` of every row that has a finite number under `key`.
pub fn series(rows: &[Map<String, Value>], key: &str) -> Vec<(u64, f64)> {
    rows.iter()
        .filter_map(|r| {
            Some((
                row_step(r)?,
                r.get(key)?.as_f64().filter(|v| v.is_finite())?,
            ))
        })
        .collect()
}

/// Keeps the rows up to the first one with `step > resume_step`, rewriting the file atomically.
/// A missing file is created empty.
fn truncate_after(path: &Path, resume_step: u64) -> Result<()> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io(path, e)),
    };
    let rows = parse_lines(path, &text)?;
    let mut keep = 0;
    for (row, end) in &rows {
        match row_step(row) {
            Some(s) if s <= resume_step => keep = *end,
            Some(_) => break,
            None => {
                return Err(Error::format(
                    path,
                    "a row without an integer `step` (cannot resume this metrics file)",
                ))
            }
        }
    }
    if keep != text.len() {
        let mut kept = text[..keep].to_string();
        if !kept.is_empty() && !kept.ends_with('\n') {
            kept.push('\n');
        }
        crate::checkpoint::write_bytes_atomic(path, kept.as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_one_ordered_line_per_step() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = MetricsSink::create(dir.path()).unwrap();
        sink.log(1, &[("train/loss", 2.5), ("train/lr", 1e-3)])
            .unwrap();
        sink.log(2, &[("train/loss", f64::NAN)]).unwrap();
        let text = fs::read_to_string(dir.path().join(METRICS_FILE)).unwrap();
        assert_eq!(text, "{\"step\":1,\"train/loss\":2.5,\"train/lr\":0.001}\n{\"step\":2,\"train/loss\":null}\n");
        let rows = read_metrics(sink.path()).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(series(&rows, "train/loss"), vec![(1, 2.5)]);
        assert!(sink.log(3, &[("step", 1.0)]).is_err());
        assert!(sink.log(3, &[("a", 1.0), ("a", 2.0)]).is_err());
        // The same rows in the event file beside it (NaN is left out, as in the JSON).
        let evs = crate::tensorboard::read_events(sink.event_file()).unwrap();
        assert_eq!(sink.event_file().parent(), Some(dir.path()));
        let scalars: Vec<(i64, String, SummaryValue)> = evs
            .iter()
            .flat_map(|e| {
                e.values
                    .iter()
                    .map(move |(k, v)| (e.step, k.clone(), v.clone()))
            })
            .collect();
        assert_eq!(
            scalars,
            vec![
                (1, "train/loss".to_string(), SummaryValue::Scalar(2.5)),
                (1, "train/lr".to_string(), SummaryValue::Scalar(1e-3)),
            ]
        );
        let mut row = Map::new();
        row.insert("samples/after".into(), Value::String("2+2 → 4".into()));
        row.insert("eval/acc".into(), serde_json::json!(0.75));
        sink.log_values(9, &row).unwrap();
        let evs = crate::tensorboard::read_events(sink.event_file()).unwrap();
        let last = evs.last().unwrap();
        assert_eq!(last.step, 9);
        assert!(last
            .values
            .contains(&("samples/after".into(), SummaryValue::Text("2+2 → 4".into()))));
        assert!(last
            .values
            .contains(&("eval/acc".into(), SummaryValue::Scalar(0.75))));
    }

    #[test]
    fn resume_equals_uninterrupted() {
        let dir = tempfile::tempdir().unwrap();
        let log = |sink: &mut MetricsSink, s: u64| {
            sink.log(s, &[("train/loss", 1.0 / (s as f64 + 1.0))])
                .unwrap()
        };
        // Uninterrupted: steps 1..=6.
        let mut a = MetricsSink::create(dir.path()).unwrap();
        (1..=6).for_each(|s| log(&mut a, s));
        let want = fs::read_to_string(a.path()).unwrap();
        // Interrupted: steps 1..=5 logged, a torn write, checkpoint at 3, resume and log 4..=6.
        let mut b = MetricsSink::create(dir.path()).unwrap();
        (1..=5).for_each(|s| log(&mut b, s));
        b.write_line("{\"step\":6,\"tra").unwrap();
        drop(b);
        let mut c = MetricsSink::resume(dir.path(), 3).unwrap();
        assert_eq!(read_metrics(c.path()).unwrap().len(), 3);
        (4..=6).for_each(|s| log(&mut c, s));
        assert_eq!(fs::read_to_string(c.path()).unwrap(), want);
    }

    #[test]
    fn bad_lines_are_errors_with_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.jsonl");
        fs::write(&p, "{\"step\":1}\nnot json\n{\"step\":2}\n").unwrap();
        let e = read_metrics(&p).unwrap_err().to_string();
        assert!(e.contains("m.jsonl:2:"), "{e}");
        fs::write(&p, "{\"step\":1}\n{\"step\":2,\"x\":").unwrap(); // torn last line
        assert_eq!(read_metrics(&p).unwrap().len(), 1);
    }
}
