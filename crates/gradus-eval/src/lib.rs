//! gradus-eval: measuring models.
//!
//! It loads checkpoints (gradus run directories and Hugging Face model directories) and never imports
//! `gradus-train`: training recipes may call it, not the other way round. The run directory
//! (`config.resolved.toml`, `metrics.jsonl`, `checkpoints/step-N/`) is the contract between them.

pub mod code;
