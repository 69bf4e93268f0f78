//! `gradus data embed | prune | corrupt | probe`: argument parsing for embedding-space curation;
//! the pipeline is `gradus_curate::embed` (RESEARCH.md §3.1).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Subcommand, ValueEnum};
use gradus_curate::corrupt::Lang;
use gradus_curate::embed::{
    self, Embedder, EncoderOptions, Method, MethodOptions, ProbeOptions, ProbeSource, PruneOptions,
    RowShard,
};
use gradus_curate::prune::kmeans::KMeansConfig;

#[derive(Subcommand)]
pub enum EmbedDataCmd {
    /// Embed text rows with a BERT-family encoder (HF checkpoint dir with tokenizer.json).
    Embed(EmbedArgs),
    /// Prune rows by their embeddings: SCIP, SemDeDup, D4 or random.
    Prune(PruneArgs),
    /// Apply seeded synthetic corruptions to code rows.
    Corrupt(CorruptArgs),
    /// Corruption probe: how corruptions move rows in embedding space, and how well each pruning
    /// method finds them.
    Probe(ProbeArgs),
}

#[derive(Args, Clone)]
pub struct InputArgs {
    /// Dataset file or directory (.jsonl, .json, .parquet).
    #[arg(long)]
    pub input: PathBuf,
    /// The text field of each row.
    #[arg(long, default_value = "text")]
    pub field: String,
}

#[derive(Args, Clone)]
pub struct ModelArgs {
    /// BERT checkpoint directory: config.json, model.safetensors, tokenizer.json.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Truncate to this many tokens (default: sentence_bert_config.json's max_seq_length, else
    /// max_position_embeddings).
    #[arg(long)]
    pub max_len: Option<usize>,
    /// Tokens per forward batch (sequences are sorted by length and not padded).
    #[arg(long, default_value_t = 8192)]
    pub batch_tokens: usize,
}

#[derive(Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Embed with a gradus/HF decoder checkpoint (or run directory) instead of a BERT encoder: mean-pooled final hidden
    /// states (BOS + text, truncated to --max-len or the model's context), L2-normalised.
    #[arg(long, conflicts_with = "model")]
    pub decoder: Option<PathBuf>,
    /// Output safetensors file.
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the (N, D) matrix as a .npy file.
    #[arg(long)]
    pub npy: Option<PathBuf>,
    /// Embed only the rows with index mod n == i (`i/n`; row ids stay global); `prune` takes every
    /// shard's file and clusters their union, which equals the single-process run. (Rows, not
    /// files: the `gradus data` text steps' `--shard` splits files.)
    #[arg(long, value_parser = RowShard::parse)]
    pub row_shard: Option<RowShard>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MethodArg {
    Scip,
    Semdedup,
    D4,
    Random,
}

impl From<MethodArg> for Method {
    fn from(m: MethodArg) -> Self {
        match m {
            MethodArg::Scip => Method::Scip,
            MethodArg::Semdedup => Method::Semdedup,
            MethodArg::D4 => Method::D4,
            MethodArg::Random => Method::Random,
        }
    }
}

#[derive(Args, Clone)]
pub struct ClusterArgs {
    /// k-means clusters (SCIP: 100).
    #[arg(long, default_value_t = 100)]
    pub k: usize,
    #[arg(long, default_value_t = 50)]
    pub iters: usize,
    /// Mini-batch k-means with this batch size (default: full batch).
    #[arg(long)]
    pub minibatch: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl ClusterArgs {
    pub fn config(&self) -> KMeansConfig {
        KMeansConfig {
            k: self.k,
            max_iters: self.iters,
            batch_size: self.minibatch,
            seed: self.seed,
        }
    }
}

#[derive(Args, Clone)]
pub struct MethodArgs {
    /// Fraction of rows to remove, p.
    #[arg(long, default_value_t = 0.2)]
    pub fraction: f64,
    /// SCIP: share of p removed by smallest cluster size (the rest by distance).
    #[arg(long, default_value_t = 0.8)]
    pub alpha: f64,
    /// D4: share of p removed by SemDeDup before the prototype step.
    #[arg(long, default_value_t = 0.5)]
    pub dedup_share: f64,
}

#[derive(Args)]
pub struct PruneArgs {
    /// The embeddings file(s) from `gradus data embed` (repeat, or list them, for shards: their
    /// union is clustered once — the merge step — so the result equals the single-process run).
    #[arg(long, required = true, num_args = 1..)]
    pub embeddings: Vec<PathBuf>,
    /// Write only the kept/removed rows of this share (`i/n`: row id mod n == i), as
    /// `kept.i-of-n.jsonl` / `removed.i-of-n.jsonl`; the clustering is global.
    #[arg(long, value_parser = RowShard::parse)]
    pub row_shard: Option<RowShard>,
    /// The dataset the embeddings were made from (rows are copied to kept.jsonl / removed.jsonl).
    #[arg(long)]
    pub input: Option<PathBuf>,
    #[arg(long, default_value = "text")]
    pub field: String,
    #[arg(long, value_enum)]
    pub method: MethodArg,
    #[command(flatten)]
    pub m: MethodArgs,
    /// SemDeDup: remove rows whose cosine to an earlier row of their cluster exceeds this,
    /// instead of a fraction.
    #[arg(long)]
    pub threshold: Option<f32>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct CorruptArgs {
    #[command(flatten)]
    pub input: InputArgs,
    #[arg(long, default_value = "python")]
    pub lang: String,
    /// Comma-separated corruption kinds (default: every kind of the language).
    #[arg(long, value_delimiter = ',')]
    pub kinds: Vec<String>,
    /// Share of rows to corrupt (the others are written unchanged, with `corruption: null`).
    #[arg(long, default_value_t = 1.0)]
    pub fraction: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output JSONL.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct ProbeArgs {
    /// Dataset of code rows (or use --py-dir).
    #[arg(long, conflicts_with = "py_dir")]
    pub input: Option<PathBuf>,
    #[arg(long, default_value = "text")]
    pub field: String,
    /// A directory of Python files (not recursive), split into function-level chunks.
    #[arg(long)]
    pub py_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 5)]
    pub min_lines: usize,
    #[arg(long, default_value_t = 60)]
    pub max_lines: usize,
    /// Use at most this many rows (a seeded sample).
    #[arg(long)]
    pub max_rows: Option<usize>,
    #[arg(long, default_value = "python")]
    pub lang: String,
    #[arg(long, value_delimiter = ',')]
    pub kinds: Vec<String>,
    /// Share of rows replaced by a corrupted version.
    #[arg(long, default_value_t = 0.1)]
    pub corrupt_fraction: f64,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Embed with a gradus/HF decoder checkpoint instead of a BERT encoder (mean-pooled final
    /// hidden states, as `embed --decoder`): e.g. a decoder pretrained on code.
    #[arg(long, conflicts_with = "model")]
    pub decoder: Option<PathBuf>,
    #[command(flatten)]
    pub m: MethodArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Write the full report (JSON) here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(cmd: EmbedDataCmd) -> Result<()> {
    let line = match cmd {
        EmbedDataCmd::Embed(a) => {
            let embedder = match &a.decoder {
                Some(dir) => Embedder::Decoder {
                    dir: gradus_eval::lm::resolve_model_dir(dir)?,
                    max_len: a.model.max_len,
                },
                None => Embedder::Encoder(a.model.options()),
            };
            embed::embed_rows(
                &a.input.input,
                &a.input.field,
                &embedder,
                a.row_shard,
                &a.out,
                a.npy.as_deref(),
            )?
        }
        EmbedDataCmd::Prune(a) => embed::prune(&PruneOptions {
            embeddings: a.embeddings,
            shard: a.row_shard,
            input: a.input,
            field: a.field,
            method: a.method.into(),
            m: a.m.options(),
            threshold: a.threshold,
            cluster: a.cluster.config(),
            out: a.out,
        })?,
        EmbedDataCmd::Corrupt(a) => {
            let lang = Lang::parse(&a.lang)?;
            let kinds = embed::parse_kinds(lang, &a.kinds)?;
            embed::corrupt_file(
                &a.input.input,
                &a.input.field,
                lang,
                &kinds,
                a.fraction,
                a.seed,
                &a.out,
            )?
        }
        EmbedDataCmd::Probe(a) => {
            let lang = Lang::parse(&a.lang)?;
            let source = match (a.input, a.py_dir) {
                (Some(input), None) => ProbeSource::Rows {
                    input,
                    field: a.field,
                },
                (None, Some(dir)) => ProbeSource::PyDir {
                    dir,
                    min_lines: a.min_lines,
                    max_lines: a.max_lines,
                },
                _ => bail!("give --input or --py-dir"),
            };
            let report = embed::probe(&ProbeOptions {
                source,
                max_rows: a.max_rows,
                lang,
                kinds: embed::parse_kinds(lang, &a.kinds)?,
                corrupt_fraction: a.corrupt_fraction,
                embedder: match &a.decoder {
                    Some(dir) => Embedder::Decoder {
                        dir: gradus_eval::lm::resolve_model_dir(dir)?,
                        max_len: a.model.max_len,
                    },
                    None => Embedder::Encoder(a.model.options()),
                },
                m: a.m.options(),
                cluster: a.cluster.config(),
            })?;
            if let Some(p) = &a.out {
                gradus_tensor::io::write_atomic(
                    p,
                    serde_json::to_string_pretty(&report)?.as_bytes(),
                )?;
            }
            print!("{}", embed::probe_table(&report)?);
            return Ok(());
        }
    };
    println!("{line}");
    Ok(())
}

impl ModelArgs {
    fn options(&self) -> EncoderOptions {
        EncoderOptions {
            model: self.model.clone(),
            max_len: self.max_len,
            batch_tokens: self.batch_tokens,
        }
    }
}

impl MethodArgs {
    fn options(&self) -> MethodOptions {
        MethodOptions {
            fraction: self.fraction,
            alpha: self.alpha,
            dedup_share: self.dedup_share,
        }
    }
}
