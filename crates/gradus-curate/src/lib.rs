//! gradus-curate: data curation.
//!
//! Streaming passes over JSONL / Parquet shards that keep or remove rows.
//!
//! Every step reads one or more inputs (a file, a directory, a glob; gzip and zstd are detected by
//! their magic bytes), streams them in bounded batches parsed on all cores (rayon), and writes
//!
//! - `kept[.i-of-n].jsonl`: the rows it keeps, byte for byte as read (Parquet rows as JSON objects);
//! - `removed[.i-of-n].jsonl`: one line per dropped row, `{"reason", "source": "path:line", "detail",
//!   "row"}` (or `"raw"`, the lossy text of a line that is not a JSON object), so no row is lost;
//! - `summary[.i-of-n].json`: counts, removal reasons, throughput and the step's own report.
//!
//! Steps: [`stats`], [`dedup`] (exact or MinHash LSH, see [`minhash`]), [`decontam`] (n-gram overlap
//! against eval sets), [`filter`] (text and code heuristics, a Python syntax check). Each runs on a
//! subset of the input **files** (`--shard i/n`); dedup has sign / merge / apply stages for that.
//!
//! Embedding space: [`embed`] (the pipeline of `gradus data embed | prune | corrupt | probe`: text
//! encoders and decoder embeddings, merging embedding shards, prune outputs, the corruption probe;
//! it splits work by **rows**, `--row-shard i/n`), [`prune`] (cosine k-means, SCIP, SemDeDup, D4,
//! random; the embeddings file), [`corrupt`] (seeded corruptions of code for the SCIP probe) and
//! [`probe`] (the probe's movement statistics).

pub mod corrupt;
pub mod decontam;
pub mod dedup;
pub mod embed;
pub mod filter;
pub mod minhash;
pub mod probe;
pub mod prune;
pub mod shards;
pub mod stats;

pub use shards::{
    discover, from_files, Compression, DocId, InputOptions, OnReadError, OutputOptions, Outputs,
    Parsed, Record, RowOutcome, ShardSpec, StepSummary,
};
