//! HumanEval-format problem files: one JSON object per line with `task_id`, `prompt`,
//! `canonical_solution`, `test` and `entry_point`; plain or gzip-compressed (by content).

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::CodeEvalError;

/// One problem.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    pub task_id: String,
    /// The function signature and docstring the model continues.
    pub prompt: String,
    /// The reference body (continues `prompt`).
    #[serde(default)]
    pub canonical_solution: String,
    /// Defines `check(candidate)`.
    pub test: String,
    /// The function `check` is called with.
    pub entry_point: String,
}

/// Opens a file, decompressing gzip when its first bytes say so.
pub(crate) fn open_maybe_gz(path: &Path) -> Result<Box<dyn BufRead>, CodeEvalError> {
    let io = |e| CodeEvalError::Io {
        file: path.display().to_string(),
        source: e,
    };
    let mut f = BufReader::new(std::fs::File::open(path).map_err(io)?);
    let head = f.fill_buf().map_err(io)?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(
            f,
        ))))
    } else {
        Ok(Box::new(f))
    }
}

/// Reads JSON lines into `T`, naming file:line on any error; blank lines are skipped.
pub(crate) fn read_jsonl<T: serde::de::DeserializeOwned>(
    path: &Path,
) -> Result<Vec<(usize, T)>, CodeEvalError> {
    let file = path.display().to_string();
    let mut text = String::new();
    open_maybe_gz(path)?
        .read_to_string(&mut text)
        .map_err(|e| CodeEvalError::Io {
            file: file.clone(),
            source: e,
        })?;
    let mut out = vec![];
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v = serde_json::from_str(line).map_err(|e| CodeEvalError::Row {
            file: file.clone(),
            line: i + 1,
            message: e.to_string(),
        })?;
        out.push((i + 1, v));
    }
    Ok(out)
}

/// Loads problems; task ids must be unique and the entry point an identifier.
pub fn load_problems(path: &Path) -> Result<Vec<Problem>, CodeEvalError> {
    let rows: Vec<(usize, Problem)> = read_jsonl(path)?;
    let mut seen = std::collections::HashSet::new();
    let file = path.display().to_string();
    for (line, p) in &rows {
        if !seen.insert(p.task_id.clone()) {
            return Err(CodeEvalError::Row {
                file,
                line: *line,
                message: format!("duplicate task_id {:?}", p.task_id),
            });
        }
        let ident = !p.entry_point.is_empty()
            && p.entry_point
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_')
            && !p.entry_point.starts_with(|c: char| c.is_ascii_digit());
        if !ident {
            return Err(CodeEvalError::Row {
                file,
                line: *line,
                message: format!("entry_point {:?} is not a Python identifier", p.entry_point),
            });
        }
    }
    if rows.is_empty() {
        return Err(CodeEvalError::Invalid(format!("{file}: no problems")));
    }
    Ok(rows.into_iter().map(|(_, p)| p).collect())
}
