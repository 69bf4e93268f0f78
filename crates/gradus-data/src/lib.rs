//! gradus-data: everything between files on disk and token ids in a batch.
//!
//! - [`tokenizer`]: Hugging Face `tokenizer.json` loading and byte-level BPE training.
//! - [`dataset`]: JSONL / Parquet readers for the `text`, `prompt`/`completion` and chat `messages` shapes.
//! - [`chat`]: chat templates (minijinja) and assistant-only loss masks.
//! - [`preference`]: preference pairs / unpaired examples, TRL-style tokenization, pair batches.
//! - [`pack`]: best-fit-decreasing packing into fixed rows with per-document positions and segments.
//! - [`curate`]: streaming curation steps over JSONL/Parquet shards (stats, exact and MinHash dedup,
//!   decontamination, quality filters) that write kept rows, removed rows with reasons, and a summary.
//! - [`prune`]: cosine k-means and embedding-space pruning (SCIP, SemDeDup, D4, random); the embeddings file.
//! - [`corrupt`]: seeded synthetic corruptions of code (Python and the built-in language) for the SCIP probe.
//! - [`synthetic`]: the built-in corpus and instruction task used by `gradus quickstart` and the tests.

pub mod chat;
pub mod corrupt;
pub mod curate;
pub mod dataset;
pub mod pack;
pub mod preference;
pub mod prune;
pub mod synthetic;
pub mod tokenizer;
