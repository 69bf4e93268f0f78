//! The `gradus` command line: config resolution (defaults < `--config` < `--set`) is here so it can
//! be tested; `main.rs` parses arguments and calls the library crates.

pub mod config;
pub mod embed_cmd;
