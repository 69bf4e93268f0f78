//! gradus-train: the training side of gradus.
//!
//! Model-agnostic pieces a recipe strings together, each in its own module:
//! - [`optim`]: AdamW (PyTorch semantics, per-parameter groups, savable state) and SGD over named
//!   `Var`s;
//! - [`schedule`]: learning-rate schedules with warmup (Hugging Face semantics);
//! - [`clip`]: global gradient norm, clipping, scaling and accumulation of a `GradStore`;
//! - [`checkpoint`]: atomic `checkpoints/step-N/` directories, `trainer_state.json`, file helpers;
//! - [`metrics`]: `metrics.jsonl`, with truncation on resume;
//! - [`report`]: a self-contained `report.html` with hand-drawn SVG plots.
//!
//! The run directory these write is the contract with `gradus-eval` and `gradus-dynamics`:
//! ```text
//! runs/<name>/config.resolved.toml
//! runs/<name>/metrics.jsonl
//! runs/<name>/checkpoints/step-N/   model files, optimizer.safetensors, trainer_state.json
//! runs/<name>/report.html
//! ```

pub mod checkpoint;
pub mod clip;
pub mod metrics;
pub mod optim;
pub mod report;
pub mod schedule;

pub mod prep;
pub mod pretrain;
pub mod recipe;
pub mod sft;
pub mod trainer;
pub mod quickstart;
pub mod prefs;
pub mod dpo;
pub mod eval_hook;
pub mod reward;
pub mod lab_ranking;
