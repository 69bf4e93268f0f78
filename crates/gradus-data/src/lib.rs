//! gradus-data: everything between files on disk and token ids in a batch.
//!
//! - [`tokenizer`]: Hugging Face `tokenizer.json` loading and byte-level BPE training.
//! - [`dataset`]: JSONL / Parquet readers for the `text`, `prompt`/`completion` and chat `messages` shapes.
//! - [`chat`]: chat templates (minijinja) and assistant-only loss masks.
//! - [`pack`]: best-fit-decreasing packing into fixed rows with per-document positions and segments.
//! - [`prune`]: cosine k-means and embedding-space pruning (SCIP, SemDeDup, D4, random); the embeddings file.
//! - [`corrupt`]: seeded synthetic corruptions of code (Python and the built-in language) for the SCIP probe.
//! - [`synthetic`]: the built-in corpus and instruction task used by `gradus quickstart` and the tests.

pub mod chat;
pub mod corrupt;
pub mod dataset;
pub mod pack;
pub mod prune;
pub mod synthetic;
pub mod tokenizer;
