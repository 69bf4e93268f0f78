//! The small file helpers every lab shares: JSON and JSONL written atomically (parent folders
//! made), JSON read with errors that name the file, and [`cached`] stages, so that a rerun reads
//! back what a finished stage wrote instead of computing it again.

use std::path::Path;

use gradus_tensor::io::write_atomic;
use gradus_tensor::{Error, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

fn make_parent(path: &Path) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    Ok(())
}

/// Reads `path` as JSON into `T`; errors name the file.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::format(path, e.to_string()))
}

/// Writes `v` as one line of JSON, atomically.
pub fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    make_parent(path)?;
    let text = serde_json::to_string(v).map_err(|e| Error::msg(e.to_string()))?;
    write_atomic(path, (text + "\n").as_bytes())
}

/// Writes `v` as indented JSON (files meant for people), atomically.
pub fn write_json_pretty<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    make_parent(path)?;
    let text = serde_json::to_string_pretty(v).map_err(|e| Error::msg(e.to_string()))?;
    write_atomic(path, (text + "\n").as_bytes())
}

/// Writes one JSON value per line, atomically.
pub fn write_jsonl(path: &Path, rows: &[Value]) -> Result<()> {
    make_parent(path)?;
    let mut s = String::new();
    for r in rows {
        s.push_str(&r.to_string());
        s.push('\n');
    }
    write_atomic(path, s.as_bytes())
}

/// Reads `path` if a previous run finished that stage, else computes and writes it.
pub fn cached<T: Serialize + DeserializeOwned>(
    path: &Path,
    make: impl FnOnce() -> Result<T>,
) -> Result<T> {
    if path.exists() {
        return read_json(path);
    }
    let v = make()?;
    write_json(path, &v)?;
    Ok(v)
}
