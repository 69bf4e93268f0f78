//! gradus-data: the input pipeline, everything between files on disk and token ids in a batch.
//! Synthetic generators live in `gradus-tasks`, curation in `gradus-curate`.
//!
//! - [`tokenizer`]: Hugging Face `tokenizer.json` loading and byte-level BPE training.
//! - [`dataset`]: JSONL / Parquet readers for the `text`, `prompt`/`completion` and chat `messages` shapes.
//! - [`chat`]: chat templates (minijinja) and assistant-only loss masks.
//! - [`preference`]: preference pairs / unpaired examples, TRL-style tokenization, pair batches.
//! - [`pack`]: best-fit-decreasing packing into fixed rows with per-document positions and segments.

pub mod chat;
pub mod dataset;
pub mod pack;
pub mod preference;
pub mod tokenizer;
