//! `gradus data embed | prune | corrupt | probe`: embedding-space curation (RESEARCH.md §3.1).
//!
//! - `embed`: text rows → mean-pooled, L2-normalised BERT embeddings (safetensors `embeddings`
//!   (N, D) + `row_ids`; optional `.npy`).
//! - `prune`: cosine k-means on an embeddings file, then SCIP / SemDeDup / D4 / random; writes
//!   `kept.jsonl`, `removed.jsonl` (one row each with the reason) and `summary.json`.
//! - `corrupt`: seeded synthetic corruptions of code rows (Python or the built-in language); each
//!   output row records its corruption (kind, class, line, col, before, after).
//! - `probe`: embed clean and corrupted versions of a corpus, report how corruptions move rows in
//!   cluster size and centroid distance, and each pruning method's precision/recall at finding the
//!   corrupted rows.
//!
//! Rows are read with `gradus_data::dataset` (JSONL / JSON / Parquet, one text field, `--field`);
//! a row's id is its 0-based index in the input.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use gradus_curate::corrupt::chunk::python_chunks;
use gradus_curate::corrupt::{corrupt_any, Class, Corruption, Kind, Lang};
use gradus_curate::probe::{mean, movement, Paired};
use gradus_curate::prune::kmeans::{assign_to, kmeans, KMeans, KMeansConfig};
use gradus_curate::prune::store::{read_embeddings, write_embeddings, write_npy, Embeddings};
use gradus_curate::prune::{self, Removal};
use gradus_data::dataset::{read_dataset, Example, Fields, Shape};
use gradus_data::tokenizer::Tokenizer;
use gradus_model::encoder::Encoder;
use gradus_tensor::io::write_atomic;
use gradus_tensor::rng::Rng;
use serde_json::{json, Value};

/// `i/n`: this task's share of the rows (row index mod n == i).
fn parse_shard(v: &str) -> std::result::Result<(usize, usize), String> {
    let (i, n) = v
        .split_once('/')
        .ok_or_else(|| format!("`{v}`: expected i/n, e.g. 0/8"))?;
    let i: usize = i
        .trim()
        .parse()
        .map_err(|_| format!("`{v}`: i is not a number"))?;
    let n: usize = n
        .trim()
        .parse()
        .map_err(|_| format!("`{v}`: n is not a number"))?;
    if n == 0 || i >= n {
        return Err(format!("`{v}`: need 0 ≤ i < n"));
    }
    Ok((i, n))
}

fn shard_suffix(shard: Option<(usize, usize)>) -> String {
    shard
        .map(|(i, n)| format!(".{i}-of-{n}"))
        .unwrap_or_default()
}

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
    /// Embed with a gradus/HF decoder checkpoint instead of a BERT encoder: mean-pooled final hidden
    /// states (BOS + text, truncated to --max-len or the model's context), L2-normalised.
    #[arg(long, conflicts_with = "model")]
    pub decoder: Option<PathBuf>,
    /// Output safetensors file.
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the (N, D) matrix as a .npy file.
    #[arg(long)]
    pub npy: Option<PathBuf>,
    /// Embed only rows with index mod n == i (row ids stay global); `prune` takes every shard's
    /// file and clusters their union, which equals the single-process run.
    #[arg(long, value_parser = parse_shard)]
    pub shard: Option<(usize, usize)>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Method {
    Scip,
    Semdedup,
    D4,
    Random,
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
    fn config(&self) -> KMeansConfig {
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
    /// Write only the kept/removed rows of this share (row id mod n == i), as
    /// `kept.i-of-n.jsonl` / `removed.i-of-n.jsonl`; the clustering is global.
    #[arg(long, value_parser = parse_shard)]
    pub shard: Option<(usize, usize)>,
    /// The dataset the embeddings were made from (rows are copied to kept.jsonl / removed.jsonl).
    #[arg(long)]
    pub input: Option<PathBuf>,
    #[arg(long, default_value = "text")]
    pub field: String,
    #[arg(long, value_enum)]
    pub method: Method,
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
    #[command(flatten)]
    pub m: MethodArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Write the full report (JSON) here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(cmd: EmbedDataCmd) -> Result<()> {
    match cmd {
        EmbedDataCmd::Embed(a) => embed(a),
        EmbedDataCmd::Prune(a) => prune_cmd(a),
        EmbedDataCmd::Corrupt(a) => corrupt_cmd(a),
        EmbedDataCmd::Probe(a) => probe(a),
    }
}

// ------------------------------------------------------------------------------------- helpers

/// The text of every row, in order.
pub fn read_texts(path: &Path, field: &str) -> Result<Vec<String>> {
    let fields = Fields {
        text: field.to_string(),
        ..Fields::default()
    };
    let rows = read_dataset(path, Shape::Text, &fields)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(rows
        .into_iter()
        .map(|e| match e {
            Example::Text { text } => text,
            _ => unreachable!("Shape::Text gives text rows"),
        })
        .collect())
}

/// An encoder with its tokenizer set up as sentence-transformers does (truncation, no padding).
pub struct TextEncoder {
    pub encoder: Encoder,
    pub tokenizer: Tokenizer,
    pub batch_tokens: usize,
}

impl TextEncoder {
    pub fn load(a: &ModelArgs) -> Result<Self> {
        let dir = a
            .model
            .as_ref()
            .ok_or_else(|| anyhow!("give --model (a BERT-family checkpoint directory)"))?;
        let encoder = Encoder::load(dir)?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))?;
        let st_cfg = dir.join("sentence_bert_config.json");
        let st_max = if st_cfg.exists() {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&st_cfg)?)
                .with_context(|| format!("{}: invalid JSON", st_cfg.display()))?;
            v.get("max_seq_length")
                .and_then(Value::as_u64)
                .map(|x| x as usize)
        } else {
            None
        };
        let max_len = a
            .max_len
            .or(st_max)
            .unwrap_or(encoder.max_len())
            .min(encoder.max_len());
        if max_len < 2 {
            bail!("--max-len must be at least 2");
        }
        tokenizer.set_encoder_mode(max_len)?;
        tokenizer.check_fits(encoder.cfg.vocab_size)?;
        if a.batch_tokens == 0 {
            bail!("--batch-tokens must be positive");
        }
        Ok(Self {
            encoder,
            tokenizer,
            batch_tokens: a.batch_tokens,
        })
    }

    pub fn dim(&self) -> usize {
        self.encoder.cfg.hidden_size
    }

    /// (len(texts), D) embeddings.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<f32>> {
        let ids = self.tokenizer.encode_batch(texts, true)?;
        Ok(self.encoder.embed(&ids, self.batch_tokens)?)
    }
}

fn write_jsonl(path: &Path, rows: impl IntoIterator<Item = Value>) -> Result<()> {
    let mut buf = Vec::new();
    for r in rows {
        serde_json::to_writer(&mut buf, &r)?;
        buf.push(b'\n');
    }
    write_atomic(path, &buf)?;
    Ok(())
}

fn parse_kinds(lang: Lang, names: &[String]) -> Result<Vec<Kind>> {
    if names.is_empty() {
        return Ok(Kind::for_lang(lang));
    }
    let allowed = Kind::for_lang(lang);
    names
        .iter()
        .map(|n| {
            let k = Kind::parse(n.trim())?;
            if !allowed.contains(&k) {
                bail!("--kinds: `{n}` does not apply to this language");
            }
            Ok(k)
        })
        .collect()
}

// ------------------------------------------------------------------------------------- embed

/// Mean-pooled, L2-normalised final hidden states of a decoder, one text at a time: (N, D).
fn decoder_embed(
    dir: &Path,
    texts: &[String],
    max_len: Option<usize>,
) -> Result<(Vec<f32>, usize)> {
    let model = gradus_model::hf::load_decoder(dir, &gradus_tensor::Device::Cpu)?;
    let tok = Tokenizer::from_dir(dir)?;
    tok.check_fits(model.cfg.vocab_size)?;
    let limit = max_len.unwrap_or(model.cfg.max_position_embeddings).max(1);
    let d = model.cfg.hidden_size;
    let mut out = Vec::with_capacity(texts.len() * d);
    for t in texts {
        let mut ids: Vec<u32> = tok.bos_id().into_iter().collect();
        ids.extend(tok.encode(t, false)?);
        ids.truncate(limit);
        if ids.is_empty() {
            ids.push(tok.eos_id().unwrap_or(0));
        }
        let h = model.hidden_states(&gradus_model::ForwardInput::new(&ids, 1, ids.len()), None)?;
        let mean: Vec<f32> = h.squeeze(0)?.mean(0)?.to_vec1::<f32>()?;
        let norm = mean.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        out.extend(mean.iter().map(|x| x / norm));
    }
    Ok((out, d))
}

fn embed(a: EmbedArgs) -> Result<()> {
    let all = read_texts(&a.input.input, &a.input.field)?;
    let ids: Vec<u64> = (0..all.len() as u64)
        .filter(|i| a.shard.is_none_or(|(s, n)| *i as usize % n == s))
        .collect();
    let texts: Vec<String> = ids.iter().map(|&i| all[i as usize].clone()).collect();
    let t0 = Instant::now();
    let (values, dim, source) = match &a.decoder {
        Some(dir) => {
            let (v, d) = decoder_embed(dir, &texts, a.model.max_len)?;
            (v, d, format!("decoder {}", dir.display()))
        }
        None => {
            let enc = TextEncoder::load(&a.model)?;
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let v = enc.embed(&refs)?;
            (
                v,
                enc.dim(),
                a.model
                    .model
                    .as_ref()
                    .map(|m| m.display().to_string())
                    .unwrap_or_default(),
            )
        }
    };
    let secs = t0.elapsed().as_secs_f64();
    let n = texts.len();
    let meta: HashMap<String, String> = [
        ("model".to_string(), source),
        ("input".to_string(), a.input.input.display().to_string()),
        ("field".to_string(), a.input.field.clone()),
        ("pooling".to_string(), "mean, l2-normalised".to_string()),
    ]
    .into();
    let e = Embeddings {
        dim,
        values,
        row_ids: ids,
        metadata: meta,
    };
    write_embeddings(&a.out, &e)?;
    if let Some(p) = &a.npy {
        write_npy(p, &e.values, n, e.dim)?;
    }
    println!(
        "{}",
        json!({"rows": n, "dim": e.dim, "seconds": secs, "rows_per_second": n as f64 / secs.max(1e-9), "out": a.out})
    );
    Ok(())
}

// ------------------------------------------------------------------------------------- prune

/// The union of embedding files (shards), ordered by row id; ids must not repeat.
fn merge_embeddings(paths: &[PathBuf]) -> Result<Embeddings> {
    let mut parts = Vec::with_capacity(paths.len());
    for p in paths {
        parts.push(read_embeddings(p)?);
    }
    let dim = parts.first().map_or(0, |e| e.dim);
    if let Some((p, e)) = paths.iter().zip(&parts).find(|(_, e)| e.dim != dim) {
        bail!(
            "{}: dimension {} differs from {}'s {dim}",
            p.display(),
            e.dim,
            paths[0].display()
        );
    }
    let mut rows: Vec<(u64, &[f32])> = parts
        .iter()
        .flat_map(|e| {
            e.row_ids
                .iter()
                .copied()
                .zip(e.values.chunks_exact(dim.max(1)))
        })
        .collect();
    rows.sort_by_key(|r| r.0);
    if let Some(w) = rows.windows(2).find(|w| w[0].0 == w[1].0) {
        bail!("row id {} appears in more than one embeddings file", w[0].0);
    }
    let metadata = parts
        .first()
        .map(|e| e.metadata.clone())
        .unwrap_or_default();
    Ok(Embeddings {
        dim,
        row_ids: rows.iter().map(|r| r.0).collect(),
        values: rows.iter().flat_map(|r| r.1.iter().copied()).collect(),
        metadata,
    })
}

/// Rows to remove by `method` on embeddings `x` (N × d), given a clustering.
fn prune_rows(
    method: Method,
    x: &[f32],
    d: usize,
    km: &KMeans,
    cfg: &KMeansConfig,
    m: &MethodArgs,
    threshold: Option<f32>,
) -> Result<Vec<Removal>> {
    let n = km.assign.len();
    Ok(match method {
        Method::Scip => prune::scip::scip(km, m.fraction, m.alpha)?,
        Method::Semdedup => match threshold {
            Some(t) => prune::semdedup::semdedup_threshold(x, d, km, t)?,
            None => prune::semdedup::semdedup_fraction(x, d, km, m.fraction)?,
        },
        Method::D4 => prune::d4::d4(x, d, km, cfg, m.fraction, m.dedup_share)?,
        Method::Random => prune::random(n, m.fraction, cfg.seed)?,
    })
}

fn method_name(m: Method) -> &'static str {
    match m {
        Method::Scip => "scip",
        Method::Semdedup => "semdedup",
        Method::D4 => "d4",
        Method::Random => "random",
    }
}

fn prune_cmd(a: PruneArgs) -> Result<()> {
    let names = a
        .embeddings
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let e = merge_embeddings(&a.embeddings)?;
    if e.is_empty() {
        bail!("{names}: no rows");
    }
    // The input's rows as JSON objects: kept.jsonl holds them unchanged (every field), removed.jsonl
    // holds them with the reason and the clustering.
    let originals: Option<Vec<serde_json::Map<String, Value>>> = match &a.input {
        Some(p) => {
            let parse: gradus_data::dataset::RowParser<serde_json::Map<String, Value>> =
                std::sync::Arc::new(|o| Ok(o.clone()));
            let rows: Vec<_> =
                gradus_data::dataset::iter_records(p, std::slice::from_ref(&a.field), parse)?
                    .collect::<gradus_tensor::Result<_>>()?;
            if let Some(bad) = e.row_ids.iter().find(|&&r| r as usize >= rows.len()) {
                bail!(
                    "{}: row id {bad} is beyond the {} rows of {} (were the embeddings made from this input?)",
                    names,
                    rows.len(),
                    p.display()
                );
            }
            Some(rows)
        }
        None => None,
    };
    let cfg = a.cluster.config();
    let t0 = Instant::now();
    let km = kmeans(&e.values, e.dim, &cfg)?;
    let removed = prune_rows(a.method, &e.values, e.dim, &km, &cfg, &a.m, a.threshold)?;
    let secs = t0.elapsed().as_secs_f64();
    let gone: HashSet<usize> = removed.iter().map(|r| r.row).collect();
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    // One step per output directory (issue 10): refuse another step's outputs.
    gradus_curate::shards::check_output_owner(&a.out, "prune")?;
    let row_value = |i: usize| -> Value {
        let id = e.row_ids[i];
        let mut v = json!({"row": id, "cluster": km.assign[i], "cluster_size": km.sizes[km.assign[i]], "distance": km.distance[i]});
        if let (Some(rows), Some(o)) = (&originals, v.as_object_mut()) {
            for (k, x) in &rows[id as usize] {
                o.entry(k.clone()).or_insert_with(|| x.clone());
            }
        }
        v
    };
    let kept_value = |i: usize| -> Value {
        match &originals {
            Some(rows) => Value::Object(rows[e.row_ids[i] as usize].clone()),
            None => row_value(i),
        }
    };
    let sfx = shard_suffix(a.shard);
    let mine = |i: &usize| a.shard.is_none_or(|(s, n)| e.row_ids[*i] as usize % n == s);
    write_jsonl(
        &a.out.join(format!("kept{sfx}.jsonl")),
        (0..e.len())
            .filter(|i| !gone.contains(i) && mine(i))
            .map(kept_value),
    )?;
    let mut rm_sorted = removed.clone();
    rm_sorted.sort_by_key(|r| r.row);
    write_jsonl(
        &a.out.join(format!("removed{sfx}.jsonl")),
        rm_sorted.iter().filter(|r| mine(&r.row)).map(|r| {
            let mut v = row_value(r.row);
            let reason = serde_json::to_value(&r.reason).unwrap_or(Value::Null);
            if let (Some(o), Some(ro)) = (v.as_object_mut(), reason.as_object()) {
                for (k, x) in ro {
                    let key = if k == "cluster" || k == "distance" {
                        format!("reason_{k}")
                    } else {
                        k.clone()
                    };
                    o.insert(key, x.clone());
                }
            }
            v
        }),
    )?;
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for r in &removed {
        let v = serde_json::to_value(&r.reason)?;
        *reasons
            .entry(v["reason"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
    }
    let summary = json!({
        "step": "prune",
        "method": method_name(a.method),
        "rows": e.len(),
        "removed": removed.len(),
        "kept": e.len() - removed.len(),
        "fraction": a.m.fraction,
        "alpha": a.m.alpha,
        "dedup_share": a.m.dedup_share,
        "threshold": a.threshold,
        "k": km.k,
        "kmeans_iters": km.iters,
        "seed": cfg.seed,
        "minibatch": cfg.batch_size,
        "reasons": reasons,
        "cluster_sizes": km.sizes,
        "seconds": secs,
    });
    write_atomic(
        &a.out.join(format!("summary{sfx}.json")),
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )?;
    println!(
        "{}",
        json!({"removed": removed.len(), "kept": e.len() - removed.len(), "out": a.out})
    );
    Ok(())
}

// ------------------------------------------------------------------------------------- corrupt

/// Corrupts a seeded share of `texts`: returns, per row, its corruption (if any) and new text.
fn corrupt_rows(
    texts: &[String],
    lang: Lang,
    kinds: &[Kind],
    fraction: f64,
    seed: u64,
) -> Result<Vec<Option<(String, Corruption)>>> {
    prune::check_fraction("fraction", fraction)?;
    let mut pick = Rng::derive(seed, "corrupt/pick");
    let mut idx: Vec<usize> = (0..texts.len()).collect();
    pick.shuffle(&mut idx);
    let chosen: HashSet<usize> = idx[..prune::count_for(fraction, texts.len())]
        .iter()
        .copied()
        .collect();
    Ok(texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if !chosen.contains(&i) {
                return None;
            }
            let mut rng = Rng::derive(
                seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                "corrupt/row",
            );
            corrupt_any(t, lang, kinds, &mut rng)
        })
        .collect())
}

fn corrupt_cmd(a: CorruptArgs) -> Result<()> {
    let lang = Lang::parse(&a.lang)?;
    let kinds = parse_kinds(lang, &a.kinds)?;
    let texts = read_texts(&a.input.input, &a.input.field)?;
    let rows = corrupt_rows(&texts, lang, &kinds, a.fraction, a.seed)?;
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    let out = rows.iter().enumerate().map(|(i, r)| match r {
        Some((t, c)) => {
            *by_kind.entry(c.kind.name()).or_default() += 1;
            json!({"row": i, "text": t, "corruption": c})
        }
        None => json!({"row": i, "text": texts[i], "corruption": Value::Null}),
    });
    let out: Vec<Value> = out.collect();
    let no_site = rows.iter().filter(|r| r.is_none()).count();
    write_jsonl(&a.out, out)?;
    println!(
        "{}",
        json!({"rows": texts.len(), "corrupted": texts.len() - no_site, "unchanged": no_site, "by_kind": by_kind, "out": a.out})
    );
    Ok(())
}

// ------------------------------------------------------------------------------------- probe

fn probe_rows(a: &ProbeArgs) -> Result<Vec<String>> {
    let mut rows = match (&a.input, &a.py_dir) {
        (Some(p), None) => read_texts(p, &a.field)?,
        (None, Some(dir)) => {
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                .with_context(|| format!("reading {}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "py"))
                .collect();
            files.sort();
            let mut rows = Vec::new();
            for f in files {
                let Ok(src) = std::fs::read_to_string(&f) else {
                    continue;
                }; // non-UTF-8 test data files
                rows.extend(
                    python_chunks(&src, a.min_lines, a.max_lines)
                        .into_iter()
                        .map(|c| c.text),
                );
            }
            rows
        }
        _ => bail!("give --input or --py-dir"),
    };
    if let Some(m) = a.max_rows {
        if rows.len() > m {
            let mut idx: Vec<usize> = (0..rows.len()).collect();
            Rng::derive(a.cluster.seed, "probe/sample").shuffle(&mut idx);
            let mut keep: Vec<usize> = idx[..m].to_vec();
            keep.sort();
            rows = keep
                .into_iter()
                .map(|i| std::mem::take(&mut rows[i]))
                .collect();
        }
    }
    if rows.is_empty() {
        bail!("no rows to probe");
    }
    Ok(rows)
}

fn probe(a: ProbeArgs) -> Result<()> {
    let lang = Lang::parse(&a.lang)?;
    let kinds = parse_kinds(lang, &a.kinds)?;
    let rows = probe_rows(&a)?;
    let n = rows.len();
    let enc = TextEncoder::load(&a.model)?;
    let d = enc.dim();
    let corr = corrupt_rows(&rows, lang, &kinds, a.corrupt_fraction, a.cluster.seed)?;
    let bad: Vec<usize> = (0..n).filter(|&i| corr[i].is_some()).collect();
    eprintln!("probe: {n} rows, {} corrupted; embedding ...", bad.len());
    let t0 = Instant::now();
    let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
    let clean = enc.embed(&refs)?;
    let crefs: Vec<&str> = bad
        .iter()
        .map(|&i| corr[i].as_ref().map(|(t, _)| t.as_str()).unwrap_or(""))
        .collect();
    let cemb = enc.embed(&crefs)?;
    let embed_secs = t0.elapsed().as_secs_f64();
    // Mixed corpus: corrupted rows replace their clean versions.
    let mut mixed = clean.clone();
    for (j, &i) in bad.iter().enumerate() {
        mixed[i * d..(i + 1) * d].copy_from_slice(&cemb[j * d..(j + 1) * d]);
    }
    let cfg = a.cluster.config();
    let km = kmeans(&mixed, d, &cfg)?;
    // How each corrupted row moved, paired within the clustering of the mixed corpus: the size of
    // the cluster the corrupted row sits in and its distance to that centroid, minus the same for
    // its clean version placed in the same clustering (nearest centroid).
    let clean_bad: Vec<f32> = bad
        .iter()
        .flat_map(|&i| clean[i * d..(i + 1) * d].iter().copied())
        .collect();
    let (clean_assign, clean_dist) = assign_to(&km, &clean_bad)?;
    let paired: Vec<Paired> = bad
        .iter()
        .enumerate()
        .map(|(j, &i)| Paired {
            row: i,
            clean_cluster: clean_assign[j],
            clean_distance: clean_dist[j],
            cos_to_clean: clean[i * d..(i + 1) * d]
                .iter()
                .zip(&cemb[j * d..(j + 1) * d])
                .map(|(x, y)| (*x * *y) as f64)
                .sum(),
            corruption: &corr[i].as_ref().expect("bad rows are corrupted").1,
        })
        .collect();
    let moves = movement(&km, &paired);
    let clean_rows: Vec<usize> = (0..n).filter(|i| corr[*i].is_none()).collect();
    let baseline = json!({
        "mean_cluster_size_clean_rows": mean(clean_rows.iter().map(|&i| km.sizes[km.assign[i]] as f64)),
        "mean_cluster_size_corrupted_rows": mean(bad.iter().map(|&i| km.sizes[km.assign[i]] as f64)),
        "mean_distance_clean_rows": mean(clean_rows.iter().map(|&i| km.distance[i] as f64)),
        "mean_distance_corrupted_rows": mean(bad.iter().map(|&i| km.distance[i] as f64)),
    });
    let movement: BTreeMap<String, Value> = moves
        .iter()
        .map(|(k, m)| {
            (
                k.clone(),
                json!({
                    "rows": m.rows,
                    "mean_delta_cluster_size": mean(m.delta_size.iter().copied()),
                    "mean_delta_distance": mean(m.delta_distance.iter().copied()),
                    "share_other_cluster": m.other_cluster as f64 / m.rows as f64,
                    "share_smaller_cluster": m.smaller_cluster as f64 / m.rows as f64,
                    "share_farther": m.farther as f64 / m.rows as f64,
                    "mean_cosine_to_clean_version": mean(m.cos_to_clean.iter().copied()),
                }),
            )
        })
        .collect();
    // Precision / recall of each method at finding corrupted rows.
    let is_bad: HashSet<usize> = bad.iter().copied().collect();
    let mut methods: Vec<(String, Vec<Removal>)> = Vec::new();
    for m in [Method::Scip, Method::Semdedup, Method::D4, Method::Random] {
        methods.push((
            method_name(m).to_string(),
            prune_rows(m, &mixed, d, &km, &cfg, &a.m, None)?,
        ));
    }
    methods.push((
        "scip_size_only (alpha=1)".into(),
        prune::scip::scip(&km, a.m.fraction, 1.0)?,
    ));
    methods.push((
        "scip_distance_only (alpha=0)".into(),
        prune::scip::scip(&km, a.m.fraction, 0.0)?,
    ));
    let mut pr = BTreeMap::new();
    for (name, rm) in &methods {
        let hit = rm.iter().filter(|r| is_bad.contains(&r.row)).count();
        let by_class = |cls: Class| {
            let total = bad
                .iter()
                .filter(|&&i| corr[i].as_ref().is_some_and(|(_, c)| c.class == cls))
                .count();
            let found = rm
                .iter()
                .filter(|r| corr[r.row].as_ref().is_some_and(|(_, c)| c.class == cls))
                .count();
            if total == 0 {
                f64::NAN
            } else {
                found as f64 / total as f64
            }
        };
        pr.insert(
            name.clone(),
            json!({
                "removed": rm.len(),
                "corrupted_removed": hit,
                "precision": hit as f64 / rm.len().max(1) as f64,
                "recall": hit as f64 / bad.len().max(1) as f64,
                "recall_syntax": by_class(Class::Syntax),
                "recall_content": by_class(Class::Content),
            }),
        );
    }
    let report = json!({
        "rows": n,
        "corrupted": bad.len(),
        "corrupt_fraction": a.corrupt_fraction,
        "lang": a.lang,
        "model": a.model.model.as_ref().map(|m| m.display().to_string()),
        "k": km.k,
        "fraction": a.m.fraction,
        "alpha": a.m.alpha,
        "dedup_share": a.m.dedup_share,
        "seed": cfg.seed,
        "embed_seconds": embed_secs,
        "baseline": baseline,
        "movement": movement,
        "pruning": pr,
    });
    if let Some(p) = &a.out {
        write_atomic(p, serde_json::to_string_pretty(&report)?.as_bytes())?;
    }
    print_probe(&report)?;
    Ok(())
}

fn print_probe(r: &Value) -> Result<()> {
    let mut o = std::io::stdout().lock();
    let f = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.3}"));
    writeln!(
        o,
        "rows {}  corrupted {}  k {}  p {}  alpha {}",
        r["rows"], r["corrupted"], r["k"], r["fraction"], r["alpha"]
    )?;
    writeln!(o, "\n| corruption | rows | Δ cluster size | Δ distance | → other cluster | → smaller cluster | → farther | cos(clean, corrupted) |")?;
    writeln!(o, "|---|---|---|---|---|---|---|---|")?;
    for (k, m) in r["movement"].as_object().ok_or_else(|| anyhow!("report"))? {
        writeln!(
            o,
            "| {k} | {} | {} | {} | {} | {} | {} | {} |",
            m["rows"],
            f(&m["mean_delta_cluster_size"]),
            f(&m["mean_delta_distance"]),
            f(&m["share_other_cluster"]),
            f(&m["share_smaller_cluster"]),
            f(&m["share_farther"]),
            f(&m["mean_cosine_to_clean_version"])
        )?;
    }
    writeln!(
        o,
        "\n| method | removed | precision | recall | recall (syntax) | recall (content) |"
    )?;
    writeln!(o, "|---|---|---|---|---|---|")?;
    for (k, m) in r["pruning"].as_object().ok_or_else(|| anyhow!("report"))? {
        writeln!(
            o,
            "| {k} | {} | {} | {} | {} | {} |",
            m["removed"],
            f(&m["precision"]),
            f(&m["recall"]),
            f(&m["recall_syntax"]),
            f(&m["recall_content"])
        )?;
    }
    Ok(())
}
