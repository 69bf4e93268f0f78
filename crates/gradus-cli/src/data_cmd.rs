//! `gradus data <step>`: curation steps over JSONL / Parquet shards (see `gradus_curate`).
//!
//! Every step takes the same input/output arguments ([`IoArgs`]) and prints its JSON summary.
//! Add a step: a variant of [`DataCmd`] and an arm in [`run`].

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use gradus_curate::decontam::{decontaminate, Decontaminator};
use gradus_curate::dedup::{self, DedupMethod, DedupOptions, KeepPolicy};
use gradus_curate::filter::{filter, FilterConfig};
use gradus_curate::minhash::MinHashParams;
use gradus_curate::stats;
use gradus_curate::{
    discover, from_files, Compression, InputOptions, OnReadError, OutputOptions, ShardSpec,
};

#[derive(Subcommand)]
pub enum DataCmd {
    /// embed, prune, corrupt, probe (embedding-space pruning; see embed_cmd.rs).
    #[command(flatten)]
    Embedding(crate::embed_cmd::EmbedDataCmd),
    /// Counts, length and language histograms. `--merge summary.*.json` adds up shard summaries.
    Stats {
        #[command(flatten)]
        io: IoArgs,
        /// Instead of reading data: add up these `stats` summary files (from --shard runs).
        #[arg(long, num_args = 1..)]
        merge: Vec<PathBuf>,
        /// Print the summary as JSON (as written to summary.json) instead of for people.
        #[arg(long)]
        json: bool,
    },
    /// Exact (normalised hash) or MinHash-LSH near-duplicate removal.
    Dedup(DedupArgs),
    /// Remove rows that share word n-grams with eval sets.
    Decontaminate(DecontamArgs),
    /// Quality heuristics for text or code (with a Python syntax check).
    Filter(FilterArgs),
    /// Turn a directory of files into JSONL rows {"id": path, "text": contents}.
    FromFiles {
        /// Directories to read.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Glob on the file name.
        #[arg(long, default_value = "*")]
        glob: String,
        /// Walk subdirectories too.
        #[arg(long)]
        recursive: bool,
        /// Leave out files and directories whose name matches this glob (repeatable).
        #[arg(long)]
        exclude: Vec<String>,
        /// Output JSONL file (`.gz` / `.zst` compress).
        #[arg(long)]
        out: PathBuf,
    },
    /// Write the built-in synthetic data as a JSONL file in the format a recipe reads: corpus
    /// (pretraining text), chats (SFT conversations), pairs (DPO / reward), prompts (RL),
    /// problems (HumanEval format, for `eval code`).
    Example {
        kind: ExampleArg,
        /// Rows to write.
        #[arg(long, default_value_t = 200)]
        n: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
    },
}

/// `gradus data example` kinds (see `gradus_train::examples`).
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ExampleArg {
    Corpus,
    Chats,
    Pairs,
    Prompts,
    Problems,
}

/// Inputs, outputs and sharding, shared by every step.
#[derive(Args, Clone)]
pub struct IoArgs {
    /// Input files, directories or globs (JSONL/NDJSON/Parquet; gzip and zstd detected).
    pub inputs: Vec<String>,
    /// The field that holds the text.
    #[arg(long, default_value = "text")]
    pub field: String,
    /// Output directory (kept*.jsonl, removed*.jsonl, summary*.json); default `curated/<step>`.
    /// Refused if it holds another step's outputs or lies inside an input directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Run on the files with index j where j % n == i (a task of a cluster job).
    #[arg(long, default_value = "0/1")]
    pub shard: String,
    /// Compression of kept/removed: none, gzip, zstd.
    #[arg(long, default_value = "none")]
    pub compress: String,
    /// A file that cannot be read on (corrupt gzip): fail, or skip (a `read_error` row in removed).
    #[arg(long, default_value = "fail")]
    pub on_read_error: String,
    /// Input bytes per batch (memory bound ≈ 3 batches).
    #[arg(long, default_value_t = 32 << 20)]
    pub batch_bytes: usize,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

impl IoArgs {
    /// The output directory: `--out`, else `curated/<step>` (each step its own).
    fn out_dir(&self, step: &str) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| PathBuf::from("curated").join(step))
    }

    fn resolve(
        &self,
        step: &str,
    ) -> Result<(Vec<PathBuf>, ShardSpec, InputOptions, OutputOptions)> {
        let out = self.out_dir(step);
        // An --out inside an input directory would be read back as input by the next run.
        let o = gradus_curate::shards::resolved_path(&out);
        for i in &self.inputs {
            let p = std::path::Path::new(i);
            if p.is_dir() && o.starts_with(gradus_curate::shards::resolved_path(p)) {
                bail!("--out {} lies inside the input directory {i}: its outputs would be read as inputs; choose an --out outside it", out.display());
            }
        }
        let files = discover(&self.inputs)?;
        let shard: ShardSpec = self.shard.parse()?;
        let on_read_error: OnReadError = self.on_read_error.parse()?;
        let compression: Compression = self.compress.parse()?;
        if self.batch_bytes == 0 {
            bail!("--batch-bytes must be positive");
        }
        let input = InputOptions {
            field: self.field.clone(),
            on_read_error,
            batch_bytes: self.batch_bytes,
            progress: !self.quiet,
        };
        Ok((
            files,
            shard,
            input,
            OutputOptions {
                dir: out,
                compression,
            },
        ))
    }
}

#[derive(Args)]
pub struct DedupArgs {
    #[command(flatten)]
    io: IoArgs,
    /// Near-duplicates by MinHash LSH (default: exact duplicates of the normalised text).
    #[arg(long)]
    minhash: bool,
    /// Exact: lowercase before hashing.
    #[arg(long)]
    lowercase: bool,
    /// Words per shingle.
    #[arg(long, default_value_t = 5)]
    ngram: usize,
    /// LSH bands (number of buckets).
    #[arg(long, default_value_t = 14)]
    bands: usize,
    /// Rows (hashes) per band; permutations = bands × rows.
    #[arg(long, default_value_t = 8)]
    rows: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Check each candidate pair's exact shingle Jaccard similarity against --threshold.
    #[arg(long)]
    verify: bool,
    /// Jaccard threshold for --verify.
    #[arg(long, default_value_t = 0.7)]
    threshold: f64,
    /// Which row of a cluster stays: first (input order) or longest.
    #[arg(long, default_value = "first")]
    keep: String,
    /// Sharded run: sign (per shard), merge (once, all shards' signatures), apply (per shard).
    /// Without --stage, one process does all three.
    #[arg(long)]
    stage: Option<String>,
    /// Work directory for the sharded stages (signatures, removals.jsonl).
    #[arg(long)]
    work: Option<PathBuf>,
}

#[derive(Args)]
pub struct DecontamArgs {
    #[command(flatten)]
    io: IoArgs,
    /// Eval set JSONL files (gzip allowed). Repeatable.
    #[arg(long = "eval", required = true)]
    evals: Vec<PathBuf>,
    /// Fields of an eval item whose text is indexed (those present are joined).
    #[arg(
        long = "eval-field",
        value_delimiter = ',',
        default_value = "prompt,canonical_solution,question,text"
    )]
    eval_fields: Vec<String>,
    /// Field naming an eval item in the report.
    #[arg(long, default_value = "task_id")]
    eval_id_field: String,
    /// Words per n-gram.
    #[arg(long, default_value_t = 13)]
    ngram: usize,
    /// Distinct shared n-grams with one item needed to remove a row.
    #[arg(long, default_value_t = 1)]
    min_matches: usize,
}

#[derive(Args)]
pub struct FilterArgs {
    #[command(flatten)]
    io: IoArgs,
    /// Rule set: text (Gopher) or code (StarCoder-style + Python syntax).
    #[arg(long, default_value = "text")]
    mode: String,
    /// Programming language of rows that do not say (code mode).
    #[arg(long)]
    lang: Option<String>,
    /// Check Python with python3's compile() (a pool of long-lived interpreters) instead of the
    /// built-in validator, which lets some grammar errors through (see its docs).
    #[arg(long)]
    python_compile: bool,
    /// No Python syntax check.
    #[arg(long)]
    no_syntax_check: bool,
    /// Override a rule limit: --set max_line_len=2000 (repeatable; names as in the summary's config).
    #[arg(long = "set", value_name = "RULE=VALUE")]
    sets: Vec<String>,
}

fn print_summary<T: serde::Serialize>(s: &T) -> Result<()> {
    print_line(&serde_json::to_string_pretty(s)?)
}

/// Prints a row-wise step's summary, then fails if no row had the text field (wrong --field).
fn finish(s: &gradus_curate::shards::StepSummary, field: &str) -> Result<()> {
    print_summary(s)?;
    Ok(s.check_field(field)?)
}

/// Print to stdout; a closed pipe (`| head`) is not an error.
fn print_line(text: &str) -> Result<()> {
    use std::io::Write;
    match writeln!(std::io::stdout().lock(), "{text}") {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Run a `gradus data` command.
pub fn run(cmd: DataCmd) -> Result<()> {
    match cmd {
        DataCmd::Embedding(c) => crate::embed_cmd::run(c),
        DataCmd::Stats { io, merge, json } => {
            let show = |s: &gradus_curate::shards::StepSummary| {
                if json {
                    print_summary(s)
                } else {
                    print_line(stats::stats_text(s).trim_end())
                }
            };
            if !merge.is_empty() {
                let s = stats::merge_summaries(&merge)?;
                let dir = io.out_dir("stats");
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                gradus_curate::shards::check_output_owner(&dir, "stats")?;
                let p = dir.join("summary.json");
                gradus_tensor::io::write_atomic(&p, serde_json::to_string_pretty(&s)?.as_bytes())
                    .with_context(|| format!("writing {}", p.display()))?;
                return show(&s);
            }
            let (files, shard, input, out) = io.resolve("stats")?;
            let s = stats::stats(&files, shard, &input, &out)?;
            show(&s)?;
            Ok(s.check_field(&io.field)?)
        }
        DataCmd::Dedup(a) => run_dedup(a),
        DataCmd::Decontaminate(a) => {
            let (files, shard, input, out) = a.io.resolve("decontaminate")?;
            let mut d = Decontaminator::new(a.ngram, a.min_matches)?;
            for e in &a.evals {
                d.add_eval_file(e, &a.eval_fields, &a.eval_id_field)?;
            }
            finish(
                &decontaminate(&files, shard, &input, &out, &d)?,
                &a.io.field,
            )
        }
        DataCmd::Filter(a) => {
            let (files, shard, input, out) = a.io.resolve("filter")?;
            let mut cfg = match a.mode.as_str() {
                "text" => FilterConfig::text(),
                "code" => FilterConfig::code(),
                m => bail!("--mode: expected text or code, got {m:?}"),
            };
            cfg.language = a.lang.map(|l| l.to_lowercase());
            cfg.python_compile = a.python_compile;
            if a.no_syntax_check {
                cfg.python_syntax = false;
                cfg.python_compile = false;
            }
            let cfg = apply_sets(cfg, &a.sets)?;
            finish(&filter(&files, shard, &input, &out, &cfg)?, &a.io.field)
        }
        DataCmd::FromFiles {
            dirs,
            glob,
            recursive,
            exclude,
            out,
        } => print_summary(&from_files(&dirs, &glob, recursive, &exclude, &out)?),
        DataCmd::Example { kind, n, seed, out } => {
            use gradus_train::examples::{example_rows, write_jsonl, ExampleKind};
            let kind = match kind {
                ExampleArg::Corpus => ExampleKind::Corpus,
                ExampleArg::Chats => ExampleKind::Chats,
                ExampleArg::Pairs => ExampleKind::Pairs,
                ExampleArg::Prompts => ExampleKind::Prompts,
                ExampleArg::Problems => ExampleKind::Problems,
            };
            let rows = example_rows(kind, n, seed)?;
            write_jsonl(&out, &rows)?;
            println!("wrote {} {kind:?} rows to {}", rows.len(), out.display());
            Ok(())
        }
    }
}

/// `--set rule=value` on a filter config, through its JSON form (so every field can be set).
fn apply_sets(cfg: FilterConfig, sets: &[String]) -> Result<FilterConfig> {
    let mut v = serde_json::to_value(&cfg)?;
    for s in sets {
        let (k, val) = s
            .split_once('=')
            .with_context(|| format!("--set {s:?}: expected RULE=VALUE"))?;
        let obj = v
            .as_object_mut()
            .context("filter config is not an object")?;
        if !obj.contains_key(k) {
            let names: Vec<&String> = obj.keys().collect();
            bail!("--set: unknown rule {k:?}; rules: {names:?}");
        }
        let parsed: serde_json::Value =
            serde_json::from_str(val).unwrap_or_else(|_| serde_json::Value::String(val.into()));
        obj.insert(k.to_string(), parsed);
    }
    serde_json::from_value(v).context("--set: a value has the wrong type")
}

fn run_dedup(a: DedupArgs) -> Result<()> {
    let (files, shard, input, out) = a.io.resolve("dedup")?;
    let method = if a.minhash {
        let p = MinHashParams {
            ngram: a.ngram,
            bands: a.bands,
            rows: a.rows,
            seed: a.seed,
        };
        p.validate()?;
        if !(0.0..=1.0).contains(&a.threshold) {
            bail!("--threshold must be in [0, 1]");
        }
        DedupMethod::minhash(&p, a.verify, a.threshold)
    } else {
        if a.verify {
            bail!("--verify needs --minhash");
        }
        DedupMethod::Exact {
            lowercase: a.lowercase,
        }
    };
    let opts = DedupOptions {
        method,
        keep: a.keep.parse::<KeepPolicy>()?,
    };
    let Some(stage) = a.stage.as_deref() else {
        if shard.count != 1 {
            bail!("--shard needs --stage sign|merge|apply and --work DIR (dedup joins rows across shards)");
        }
        return finish(&dedup::dedup(&files, &input, &out, &opts)?, &a.io.field);
    };
    let work = a.work.context("--stage needs --work DIR")?;
    match stage {
        "sign" => {
            let p = dedup::sign_to_dir(&files, shard, &input, &opts, &work)?;
            print_line(&serde_json::json!({"stage": "sign", "shard": shard.to_string(), "signatures": p.display().to_string()}).to_string())
        }
        "merge" => {
            let r = dedup::merge_dir(&files, shard.count, &input, &opts, &work)?;
            print_line(
                &serde_json::json!({"stage": "merge", "shards": shard.count, "clusters": r})
                    .to_string(),
            )
        }
        "apply" => finish(
            &dedup::apply_from_dir(&files, shard, &input, &out, &opts, &work)?,
            &a.io.field,
        ),
        s => bail!("--stage: expected sign, merge or apply, got {s:?}"),
    }
}
