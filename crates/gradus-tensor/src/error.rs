//! The error type shared by every gradus library crate.
//!
//! Each variant names what is at fault (a file and line, a config field, a tensor) so the CLI can
//! print a message a user can act on. User input must never cause a panic: return one of these.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error raised inside candle (shape mismatch in an op, dtype error, ...).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// The OS error is shown in the message (not also as a `source`, which would print it twice).
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },

    /// Bad content in a user file at a known line (JSONL row, config line).
    #[error("{path}:{line}: {msg}")]
    Parse {
        path: PathBuf,
        line: usize,
        msg: String,
    },

    /// A configuration value that is missing, unknown or out of range.
    #[error("config field `{field}`: {msg}")]
    Config { field: String, msg: String },

    /// A tensor whose shape or dtype does not match what the model expects.
    #[error("tensor `{name}`: expected shape {expected:?}, found {found:?}{context}")]
    TensorShape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
        context: String,
    },

    /// A tensor that is required but missing from a checkpoint.
    #[error("{path}: tensor `{name}` is missing{hint}")]
    MissingTensor {
        path: PathBuf,
        name: String,
        hint: String,
    },

    /// A checkpoint or data file whose format is invalid (truncated safetensors, bad JSON, ...).
    #[error("{path}: {msg}")]
    Format { path: PathBuf, msg: String },

    /// Anything else, with a message that says what and where.
    #[error("{0}")]
    Msg(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn msg(m: impl Into<String>) -> Self {
        Error::Msg(m.into())
    }
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            err: source,
        }
    }
    pub fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            msg: msg.into(),
        }
    }
    pub fn config(field: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Config {
            field: field.into(),
            msg: msg.into(),
        }
    }
}

/// `bail!("...")`: return early with an [`Error::Msg`].
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => { return Err($crate::Error::Msg(format!($($arg)*))) };
}
