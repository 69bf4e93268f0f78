//! The `gradus` command line: config resolution (defaults < `--config` < `--set`) is here so it can
//! be tested; `main.rs` parses arguments and calls the library crates.

pub mod code_cmd;
pub mod config;
pub mod data_cmd;
pub mod dynamics_cmd;
pub mod embed_cmd;
pub mod eval_cmd;
pub mod evoprompting_cmd;
pub mod icl_cmd;
pub mod ilf_cmd;
pub mod lab_cmd;
pub mod llome_cmd;
pub mod phf_cmd;
pub mod sweep_cmd;
pub mod training_maps_cmd;
