//! Embedding-space curation (RESEARCH.md §3.1): the pipeline behind `gradus data embed | prune |
//! corrupt | probe`, which parse arguments only.
//!
//! - [`embed_rows`]: text rows → mean-pooled, L2-normalised embeddings from a BERT-family encoder
//!   ([`TextEncoder`], as sentence-transformers) or a gradus/HF decoder ([`decoder_embed`]).
//! - [`prune`]: cosine k-means over the union of embedding files ([`merge_embeddings`]), then SCIP /
//!   SemDeDup / D4 / random ([`prune_rows`]); writes `kept.jsonl`, `removed.jsonl` (each row with its
//!   reason) and `summary.json`.
//! - [`corrupt_file`]: seeded synthetic corruptions of code rows ([`corrupt_rows`]).
//! - [`probe`]: embed clean and corrupted versions of a corpus, report how corruptions move rows in
//!   cluster size and centroid distance ([`crate::probe::movement`]), and each pruning method's
//!   precision/recall at finding the corrupted rows.
//!
//! Rows are read with [`gradus_data::dataset::read_texts`] (JSONL / JSON / Parquet, one text
//! field); a row's id is its 0-based index in the input. Sharding here is by **rows**
//! ([`RowShard`]: row id mod n == i), unlike the `gradus data` text steps, which shard by files.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use gradus_data::dataset::{Fields, Shape};
use gradus_data::tokenizer::Tokenizer;
use gradus_model::encoder::Encoder;
use gradus_tensor::io::write_atomic;
use gradus_tensor::rng::Rng;
use serde_json::{json, Value};

use crate::corrupt::chunk::python_chunks;
use crate::corrupt::{corrupt_any, Class, Corruption, Kind, Lang};
use crate::probe::{mean, movement, Paired};
use crate::prune::kmeans::{assign_to, kmeans, KMeans, KMeansConfig};
use crate::prune::store::{read_embeddings, write_embeddings, write_npy, Embeddings};
use crate::prune::{self, Removal};

/// This process's share of the rows: row id mod `n` == `i`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowShard {
    pub i: usize,
    pub n: usize,
}

impl RowShard {
    /// Parses `i/n` (0 ≤ i < n).
    pub fn parse(v: &str) -> std::result::Result<Self, String> {
        let (i, n) = v
            .split_once('/')
            .ok_or_else(|| format!("`{v}`: expected i/n, e.g. 0/8"))?;
        let num = |s: &str, what: &str| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| format!("`{v}`: {what} is not a number"))
        };
        let (i, n) = (num(i, "i")?, num(n, "n")?);
        if n == 0 || i >= n {
            return Err(format!("`{v}`: need 0 ≤ i < n"));
        }
        Ok(Self { i, n })
    }

    /// Whether row `id` belongs to this shard.
    pub fn owns(&self, id: u64) -> bool {
        id as usize % self.n == self.i
    }

    /// The output-file suffix of a shard: `.i-of-n`, or nothing without one.
    pub fn suffix(s: Option<Self>) -> String {
        s.map(|s| format!(".{}-of-{}", s.i, s.n))
            .unwrap_or_default()
    }
}

/// The text of every row of `path` (field `field`, which every row must have), in order.
pub fn read_rows(path: &Path, field: &str) -> Result<Vec<String>> {
    let fields = Fields {
        text: field.to_string(),
        ..Fields::default()
    };
    gradus_data::dataset::read_texts(path, Shape::Text, &fields)
        .with_context(|| format!("reading {}", path.display()))
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

// ------------------------------------------------------------------------------------- embed

/// Which BERT-family encoder to embed with, and how.
#[derive(Clone, Debug)]
pub struct EncoderOptions {
    /// Checkpoint directory: config.json, model.safetensors, tokenizer.json.
    pub model: Option<PathBuf>,
    /// Truncate to this many tokens (default: sentence_bert_config.json's max_seq_length, else
    /// max_position_embeddings).
    pub max_len: Option<usize>,
    /// Tokens per forward batch (sequences are sorted by length and not padded).
    pub batch_tokens: usize,
}

/// An encoder with its tokenizer set up as sentence-transformers does (truncation, no padding).
pub struct TextEncoder {
    pub encoder: Encoder,
    pub tokenizer: Tokenizer,
    pub batch_tokens: usize,
}

impl TextEncoder {
    pub fn load(a: &EncoderOptions) -> Result<Self> {
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

/// Mean-pooled, L2-normalised final hidden states of a decoder (BOS + text, truncated to
/// `max_len` or the model's context), one text at a time: (N, D) values and D.
pub fn decoder_embed(
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

/// What to embed with.
#[derive(Clone, Debug)]
pub enum Embedder {
    Encoder(EncoderOptions),
    /// A gradus/HF decoder checkpoint, truncating to `max_len` tokens.
    Decoder {
        dir: PathBuf,
        max_len: Option<usize>,
    },
}

impl Embedder {
    /// (len(texts), D) L2-normalised embeddings, D, and a description of the model.
    pub fn embed(&self, texts: &[String]) -> Result<(Vec<f32>, usize, String)> {
        match self {
            Embedder::Decoder { dir, max_len } => {
                let (v, d) = decoder_embed(dir, texts, *max_len)?;
                Ok((v, d, format!("decoder {}", dir.display())))
            }
            Embedder::Encoder(o) => {
                let enc = TextEncoder::load(o)?;
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                let name = o
                    .model
                    .as_ref()
                    .map(|m| m.display().to_string())
                    .unwrap_or_default();
                Ok((enc.embed(&refs)?, enc.dim(), name))
            }
        }
    }
}

/// `gradus data embed`: embeds the rows of `input` (this shard's only; row ids stay global) and
/// writes the embeddings file (and a `.npy` copy). Returns the summary line's JSON.
pub fn embed_rows(
    input: &Path,
    field: &str,
    embedder: &Embedder,
    shard: Option<RowShard>,
    out: &Path,
    npy: Option<&Path>,
) -> Result<Value> {
    let all = read_rows(input, field)?;
    let ids: Vec<u64> = (0..all.len() as u64)
        .filter(|&i| shard.is_none_or(|s| s.owns(i)))
        .collect();
    let texts: Vec<String> = ids.iter().map(|&i| all[i as usize].clone()).collect();
    let t0 = Instant::now();
    let (values, dim, source) = embedder.embed(&texts)?;
    let secs = t0.elapsed().as_secs_f64();
    let n = texts.len();
    let meta: HashMap<String, String> = [
        ("model".to_string(), source),
        ("input".to_string(), input.display().to_string()),
        ("field".to_string(), field.to_string()),
        ("pooling".to_string(), "mean, l2-normalised".to_string()),
    ]
    .into();
    let e = Embeddings {
        dim,
        values,
        row_ids: ids,
        metadata: meta,
    };
    write_embeddings(out, &e)?;
    if let Some(p) = npy {
        write_npy(p, &e.values, n, e.dim)?;
    }
    Ok(
        json!({"rows": n, "dim": e.dim, "seconds": secs, "rows_per_second": n as f64 / secs.max(1e-9), "out": out}),
    )
}

// ------------------------------------------------------------------------------------- prune

/// The union of embedding files (shards), ordered by row id; ids must not repeat.
pub fn merge_embeddings(paths: &[PathBuf]) -> Result<Embeddings> {
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

/// A pruning method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Scip,
    Semdedup,
    D4,
    Random,
}

impl Method {
    pub const ALL: [Method; 4] = [Method::Scip, Method::Semdedup, Method::D4, Method::Random];

    pub fn name(self) -> &'static str {
        match self {
            Method::Scip => "scip",
            Method::Semdedup => "semdedup",
            Method::D4 => "d4",
            Method::Random => "random",
        }
    }
}

/// The pruning methods' shares.
#[derive(Clone, Copy, Debug)]
pub struct MethodOptions {
    /// Fraction of rows to remove, p.
    pub fraction: f64,
    /// SCIP: share of p removed by smallest cluster size (the rest by distance).
    pub alpha: f64,
    /// D4: share of p removed by SemDeDup before the prototype step.
    pub dedup_share: f64,
}

/// Rows to remove by `method` on embeddings `x` (N × d), given a clustering. With `threshold`,
/// SemDeDup removes rows whose cosine to an earlier row of their cluster exceeds it instead of a
/// fraction.
pub fn prune_rows(
    method: Method,
    x: &[f32],
    d: usize,
    km: &KMeans,
    cfg: &KMeansConfig,
    m: &MethodOptions,
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

/// `gradus data prune`.
#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// Embedding files (shards); their union is clustered once.
    pub embeddings: Vec<PathBuf>,
    /// Write only this share's kept/removed rows (the clustering is global).
    pub shard: Option<RowShard>,
    /// The dataset the embeddings were made from (its rows are copied to the outputs).
    pub input: Option<PathBuf>,
    pub field: String,
    pub method: Method,
    pub m: MethodOptions,
    pub threshold: Option<f32>,
    pub cluster: KMeansConfig,
    pub out: PathBuf,
}

/// Clusters, prunes and writes `kept*.jsonl`, `removed*.jsonl` and `summary*.json` into
/// `o.out`. Returns the summary line's JSON.
pub fn prune(o: &PruneOptions) -> Result<Value> {
    let names = o
        .embeddings
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let e = merge_embeddings(&o.embeddings)?;
    if e.is_empty() {
        bail!("{names}: no rows");
    }
    // The input's rows as JSON objects: kept.jsonl holds them unchanged (every field), removed.jsonl
    // holds them with the reason and the clustering.
    let originals: Option<Vec<serde_json::Map<String, Value>>> = match &o.input {
        Some(p) => {
            let parse: gradus_data::dataset::RowParser<serde_json::Map<String, Value>> =
                std::sync::Arc::new(|o| Ok(o.clone()));
            let rows: Vec<_> =
                gradus_data::dataset::iter_records(p, std::slice::from_ref(&o.field), parse)?
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
    let cfg = &o.cluster;
    let t0 = Instant::now();
    let km = kmeans(&e.values, e.dim, cfg)?;
    let removed = prune_rows(o.method, &e.values, e.dim, &km, cfg, &o.m, o.threshold)?;
    let secs = t0.elapsed().as_secs_f64();
    let gone: HashSet<usize> = removed.iter().map(|r| r.row).collect();
    std::fs::create_dir_all(&o.out).with_context(|| format!("creating {}", o.out.display()))?;
    // One step per output directory (issue 10): refuse another step's outputs.
    crate::shards::check_output_owner(&o.out, "prune")?;
    let row_value = |i: usize| -> Value {
        let id = e.row_ids[i];
        let mut v = json!({"row": id, "cluster": km.assign[i], "cluster_size": km.sizes[km.assign[i]], "distance": km.distance[i]});
        if let (Some(rows), Some(obj)) = (&originals, v.as_object_mut()) {
            for (k, x) in &rows[id as usize] {
                obj.entry(k.clone()).or_insert_with(|| x.clone());
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
    let sfx = RowShard::suffix(o.shard);
    let mine = |i: &usize| o.shard.is_none_or(|s| s.owns(e.row_ids[*i]));
    write_jsonl(
        &o.out.join(format!("kept{sfx}.jsonl")),
        (0..e.len())
            .filter(|i| !gone.contains(i) && mine(i))
            .map(kept_value),
    )?;
    let mut rm_sorted = removed.clone();
    rm_sorted.sort_by_key(|r| r.row);
    write_jsonl(
        &o.out.join(format!("removed{sfx}.jsonl")),
        rm_sorted.iter().filter(|r| mine(&r.row)).map(|r| {
            let mut v = row_value(r.row);
            let reason = serde_json::to_value(&r.reason).unwrap_or(Value::Null);
            if let (Some(obj), Some(ro)) = (v.as_object_mut(), reason.as_object()) {
                for (k, x) in ro {
                    let key = if k == "cluster" || k == "distance" {
                        format!("reason_{k}")
                    } else {
                        k.clone()
                    };
                    obj.insert(key, x.clone());
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
        "method": o.method.name(),
        "rows": e.len(),
        "removed": removed.len(),
        "kept": e.len() - removed.len(),
        "fraction": o.m.fraction,
        "alpha": o.m.alpha,
        "dedup_share": o.m.dedup_share,
        "threshold": o.threshold,
        "k": km.k,
        "kmeans_iters": km.iters,
        "seed": cfg.seed,
        "minibatch": cfg.batch_size,
        "reasons": reasons,
        "cluster_sizes": km.sizes,
        "seconds": secs,
    });
    write_atomic(
        &o.out.join(format!("summary{sfx}.json")),
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )?;
    Ok(json!({"removed": removed.len(), "kept": e.len() - removed.len(), "out": o.out}))
}

// ------------------------------------------------------------------------------------- corrupt

/// The corruption kinds named (all of the language's when none are), each checked to apply to it.
pub fn parse_kinds(lang: Lang, names: &[String]) -> Result<Vec<Kind>> {
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

/// Corrupts a seeded share of `texts`: returns, per row, its corruption (if any) and new text.
pub fn corrupt_rows(
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

/// Every row of `path` as (its text in `field`, the whole object); a `.txt` file's lines become
/// `{field: line}`.
fn read_objects(path: &Path, field: &str) -> Result<Vec<(String, serde_json::Map<String, Value>)>> {
    if path.extension().is_some_and(|e| e == "txt") {
        return Ok(read_rows(path, field)?
            .into_iter()
            .map(|t| {
                let mut m = serde_json::Map::new();
                m.insert(field.to_string(), json!(t));
                (t, m)
            })
            .collect());
    }
    let f = field.to_string();
    let parse: gradus_data::dataset::RowParser<(String, serde_json::Map<String, Value>)> =
        std::sync::Arc::new(move |o| match o.get(&f) {
            Some(Value::String(t)) => Ok((t.clone(), o.clone())),
            Some(_) => Err(format!("field \"{f}\" is not a string")),
            None => Err(format!(
                "no field \"{f}\" (fields: {}); choose one with --field",
                o.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
            )),
        });
    gradus_data::dataset::iter_records(path, &["*".to_string()], parse)
        .and_then(|it| it.collect::<gradus_tensor::Result<Vec<_>>>())
        .with_context(|| format!("reading {}", path.display()))
}

/// `gradus data corrupt`: corrupts a seeded share of the rows of `input` and writes every row to
/// `out`: the row's own fields (`id`, ...) with `field` replaced by the corrupted text, plus `row`
/// (its index) and `corruption` (what was done, or null). Returns the summary line's JSON.
pub fn corrupt_file(
    input: &Path,
    field: &str,
    lang: Lang,
    kinds: &[Kind],
    fraction: f64,
    seed: u64,
    out: &Path,
) -> Result<Value> {
    let objects = read_objects(input, field)?;
    let texts: Vec<String> = objects.iter().map(|(t, _)| t.clone()).collect();
    let rows = corrupt_rows(&texts, lang, kinds, fraction, seed)?;
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    let lines: Vec<Value> = rows
        .iter()
        .zip(objects)
        .enumerate()
        .map(|(i, (r, (text, mut obj)))| {
            let corruption = match r {
                Some((t, c)) => {
                    *by_kind.entry(c.kind.name()).or_default() += 1;
                    obj.insert(field.to_string(), json!(t));
                    json!(c)
                }
                None => {
                    obj.insert(field.to_string(), json!(text));
                    Value::Null
                }
            };
            obj.insert("row".into(), json!(i));
            obj.insert("corruption".into(), corruption);
            Value::Object(obj)
        })
        .collect();
    let no_site = rows.iter().filter(|r| r.is_none()).count();
    write_jsonl(out, lines)?;
    Ok(
        json!({"rows": texts.len(), "corrupted": texts.len() - no_site, "unchanged": no_site, "by_kind": by_kind, "out": out}),
    )
}

// ------------------------------------------------------------------------------------- probe

/// Where the probe's rows come from.
#[derive(Clone, Debug)]
pub enum ProbeSource {
    /// A dataset's text field.
    Rows { input: PathBuf, field: String },
    /// The `.py` files of a directory (not recursive), split into function-level chunks of
    /// `min_lines..=max_lines` lines.
    PyDir {
        dir: PathBuf,
        min_lines: usize,
        max_lines: usize,
    },
}

/// `gradus data probe`.
#[derive(Clone, Debug)]
pub struct ProbeOptions {
    pub source: ProbeSource,
    /// Use at most this many rows (a seeded sample).
    pub max_rows: Option<usize>,
    pub lang: Lang,
    pub kinds: Vec<Kind>,
    /// Share of rows replaced by a corrupted version.
    pub corrupt_fraction: f64,
    /// A BERT-family encoder, or a gradus/HF decoder (mean-pooled hidden states).
    pub embedder: Embedder,
    pub m: MethodOptions,
    pub cluster: KMeansConfig,
}

fn probe_rows(o: &ProbeOptions) -> Result<Vec<String>> {
    let mut rows = match &o.source {
        ProbeSource::Rows { input, field } => read_rows(input, field)?,
        ProbeSource::PyDir {
            dir,
            min_lines,
            max_lines,
        } => {
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
                    python_chunks(&src, *min_lines, *max_lines)
                        .into_iter()
                        .map(|c| c.text),
                );
            }
            rows
        }
    };
    if let Some(m) = o.max_rows {
        if rows.len() > m {
            let mut idx: Vec<usize> = (0..rows.len()).collect();
            Rng::derive(o.cluster.seed, "probe/sample").shuffle(&mut idx);
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

/// The corruption probe: returns the full report (JSON; [`probe_table`] renders it).
pub fn probe(o: &ProbeOptions) -> Result<Value> {
    let rows = probe_rows(o)?;
    let n = rows.len();
    let corr = corrupt_rows(&rows, o.lang, &o.kinds, o.corrupt_fraction, o.cluster.seed)?;
    let bad: Vec<usize> = (0..n).filter(|&i| corr[i].is_some()).collect();
    eprintln!("probe: {n} rows, {} corrupted; embedding ...", bad.len());
    let t0 = Instant::now();
    let (clean, d, model) = o.embedder.embed(&rows)?;
    let corrupted: Vec<String> = bad
        .iter()
        .map(|&i| corr[i].as_ref().map(|(t, _)| t.clone()).unwrap_or_default())
        .collect();
    let (cemb, _, _) = o.embedder.embed(&corrupted)?;
    let embed_secs = t0.elapsed().as_secs_f64();
    // Mixed corpus: corrupted rows replace their clean versions.
    let mut mixed = clean.clone();
    for (j, &i) in bad.iter().enumerate() {
        mixed[i * d..(i + 1) * d].copy_from_slice(&cemb[j * d..(j + 1) * d]);
    }
    let cfg = &o.cluster;
    let km = kmeans(&mixed, d, cfg)?;
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
    for m in Method::ALL {
        methods.push((
            m.name().to_string(),
            prune_rows(m, &mixed, d, &km, cfg, &o.m, None)?,
        ));
    }
    methods.push((
        "scip_size_only (alpha=1)".into(),
        prune::scip::scip(&km, o.m.fraction, 1.0)?,
    ));
    methods.push((
        "scip_distance_only (alpha=0)".into(),
        prune::scip::scip(&km, o.m.fraction, 0.0)?,
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
    Ok(json!({
        "rows": n,
        "corrupted": bad.len(),
        "corrupt_fraction": o.corrupt_fraction,
        "lang": o.lang,
        "model": model,
        "k": km.k,
        "fraction": o.m.fraction,
        "alpha": o.m.alpha,
        "dedup_share": o.m.dedup_share,
        "seed": cfg.seed,
        "embed_seconds": embed_secs,
        "baseline": baseline,
        "movement": movement,
        "pruning": pr,
    }))
}

/// A probe report as two Markdown tables (movement per corruption, pruning precision/recall).
pub fn probe_table(r: &Value) -> Result<String> {
    let mut o = String::new();
    let f = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.3}"));
    writeln!(
        o,
        "rows {}  corrupted {}  k {}  p {}  alpha {}",
        r["rows"], r["corrupted"], r["k"], r["fraction"], r["alpha"]
    )?;
    writeln!(o, "\n| corruption | rows | Δ cluster size | Δ distance | → other cluster | → smaller cluster | → farther | cos(clean, corrupted) |")?;
    writeln!(o, "|---|---|---|---|---|---|---|---|")?;
    for (k, m) in r["movement"]
        .as_object()
        .ok_or_else(|| anyhow!("report has no movement"))?
    {
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
    for (k, m) in r["pruning"]
        .as_object()
        .ok_or_else(|| anyhow!("report has no pruning"))?
    {
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
    Ok(o)
}
