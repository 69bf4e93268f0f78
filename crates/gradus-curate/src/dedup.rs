//! Exact and MinHash-LSH deduplication, in three stages so a cluster can run it:
//!
//! 1. **sign** (per shard, parallel): each row → its keys: one xxh3-128 hash of the normalised text
//!    (exact), or one key per LSH band (MinHash). Written to `sigs.i-of-n.bin` in the work dir.
//! 2. **merge** (one task): rows sharing a key are candidates; candidates are joined (optionally
//!    only when their exact shingle Jaccard similarity reaches the threshold) into connected
//!    components with union-find; in each component of two or more rows one row is kept (the first
//!    in input order, or the longest) and the others go to `removals.jsonl`.
//! 3. **apply** (per shard, parallel): rows named in `removals.jsonl` go to `removed`, the rest to
//!    `kept`.
//!
//! The single-process run ([`dedup`]) is the same three stages in memory, so `--shard` runs
//! give the same rows (tested). Components are the connected components of the candidate graph,
//! and the kept row is chosen by a total order, so the result does not depend on sharding or on
//! thread scheduling.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use gradus_tensor::{Error, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use twox_hash::XxHash3_128;

use super::minhash::{jaccard, shingle_set, MinHashParams, MinHasher};
use super::shards::{
    run_rowwise, source_of, stream, Decision, DocId, InputOptions, OutputOptions, RowOutcome,
    ShardSpec, StepSummary,
};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum DedupMethod {
    /// Rows whose text is equal after trimming and collapsing whitespace (and lowercasing).
    Exact { lowercase: bool },
    /// Near-duplicates by MinHash LSH; with `verify`, a candidate pair is joined only when the
    /// exact Jaccard similarity of its shingle sets is at least `threshold`.
    Minhash {
        ngram: usize,
        bands: usize,
        rows: usize,
        seed: u64,
        verify: bool,
        threshold: f64,
    },
}

impl DedupMethod {
    pub fn minhash(p: &MinHashParams, verify: bool, threshold: f64) -> Self {
        DedupMethod::Minhash {
            ngram: p.ngram,
            bands: p.bands,
            rows: p.rows,
            seed: p.seed,
            verify,
            threshold,
        }
    }

    fn params(&self) -> Option<MinHashParams> {
        match self {
            DedupMethod::Minhash {
                ngram,
                bands,
                rows,
                seed,
                ..
            } => Some(MinHashParams {
                ngram: *ngram,
                bands: *bands,
                rows: *rows,
                seed: *seed,
            }),
            DedupMethod::Exact { .. } => None,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            DedupMethod::Exact { .. } => "exact_duplicate",
            DedupMethod::Minhash { .. } => "near_duplicate",
        }
    }

    fn verify_threshold(&self) -> Option<f64> {
        match self {
            DedupMethod::Minhash {
                verify: true,
                threshold,
                ..
            } => Some(*threshold),
            _ => None,
        }
    }
}

/// Which row of a duplicate cluster stays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum KeepPolicy {
    /// The first in input order (file order, then line).
    #[default]
    First,
    /// The one with the longest text (ties: the first).
    Longest,
}

impl FromStr for KeepPolicy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "first" => Ok(Self::First),
            "longest" => Ok(Self::Longest),
            _ => Err(Error::config(
                "keep",
                format!("expected first or longest, got {s:?}"),
            )),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DedupOptions {
    pub method: DedupMethod,
    pub keep: KeepPolicy,
}

/// The keys of one row.
#[derive(Clone, Debug, PartialEq)]
pub struct DocSig {
    pub doc: DocId,
    /// Bytes of text (for [`KeepPolicy::Longest`]).
    pub len: u64,
    pub keys: Vec<u128>,
}

/// The exact-dedup key: xxh3-128 of the text with whitespace runs collapsed to one space and
/// the ends trimmed (and lowercased if asked).
pub fn exact_key(text: &str, lowercase: bool) -> u128 {
    let mut norm = String::with_capacity(text.len());
    for w in text.split_whitespace() {
        if !norm.is_empty() {
            norm.push(' ');
        }
        if lowercase {
            norm.extend(w.chars().flat_map(|c| c.to_lowercase()));
        } else {
            norm.push_str(w);
        }
    }
    XxHash3_128::oneshot(norm.as_bytes())
}

struct Keyer {
    method: DedupMethod,
    hasher: Option<MinHasher>,
}

impl Keyer {
    fn new(method: &DedupMethod) -> Result<Self> {
        let hasher = match method.params() {
            Some(p) => Some(MinHasher::new(p)?),
            None => None,
        };
        Ok(Keyer {
            method: method.clone(),
            hasher,
        })
    }
    fn keys(&self, text: &str) -> Vec<u128> {
        match (&self.method, &self.hasher) {
            (DedupMethod::Exact { lowercase }, _) => vec![exact_key(text, *lowercase)],
            (_, Some(h)) => h.text_keys(text),
            _ => Vec::new(),
        }
    }
}

/// Stage 1: the keys of every row of this shard that parsed (bad rows are handled in apply).
pub fn sign(
    files: &[PathBuf],
    shard: ShardSpec,
    input: &InputOptions,
    method: &DedupMethod,
) -> Result<Vec<DocSig>> {
    let keyer = Keyer::new(method)?;
    let mut sigs = Vec::new();
    stream(&shard.select(files), input, "dedup: sign", |records| {
        let part: Vec<DocSig> = records
            .par_iter()
            .filter_map(|r| match &r.outcome {
                RowOutcome::Ok(p) => Some(DocSig {
                    doc: r.doc,
                    len: p.text.len() as u64,
                    keys: keyer.keys(&p.text),
                }),
                RowOutcome::Bad { .. } => None,
            })
            .collect();
        sigs.extend(part);
        Ok(())
    })?;
    Ok(sigs)
}

/// One removed row of a duplicate cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Removal {
    pub doc: DocId,
    /// The row kept for this cluster.
    pub kept: DocId,
    pub cluster_size: u32,
    /// Exact Jaccard similarity to the kept row (when verifying).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub jaccard: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterReport {
    pub docs: u64,
    /// Components of two or more rows.
    pub clusters: u64,
    pub docs_in_clusters: u64,
    pub largest_cluster: u64,
    /// Distinct candidate pairs that were checked (verify only).
    pub pairs_checked: u64,
    /// Checked pairs below the threshold (verify only).
    pub pairs_rejected: u64,
}

struct UnionFind {
    parent: Vec<u32>,
}

impl UnionFind {
    fn new(n: usize) -> Self {
        UnionFind {
            parent: (0..n as u32).collect(),
        }
    }
    fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let p = self.parent[x as usize];
            self.parent[x as usize] = self.parent[p as usize];
            x = p;
        }
        x
    }
    fn union(&mut self, a: u32, b: u32) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            // The smaller index becomes the root: deterministic.
            let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
            self.parent[hi as usize] = lo;
        }
    }
}

/// Shingle sets of the given rows (for verification); see [`shingle_sets_from_files`].
pub type FetchSets<'a> = dyn Fn(&HashSet<DocId>) -> Result<HashMap<DocId, Vec<u64>>> + 'a;

/// Stage 2: connected components of the rows that share a key, and the rows to remove.
/// `fetch` gives the shingle sets of candidate rows when the method verifies.
pub fn cluster(
    mut sigs: Vec<DocSig>,
    opts: &DedupOptions,
    fetch: Option<&FetchSets<'_>>,
) -> Result<(Vec<Removal>, ClusterReport)> {
    sigs.par_sort_unstable_by_key(|s| s.doc);
    if let Some(w) = sigs.windows(2).find(|w| w[0].doc == w[1].doc) {
        return Err(Error::msg(format!(
            "row {:?} signed twice: were the sig files made by overlapping shard runs?",
            w[0].doc
        )));
    }
    let n = sigs.len();
    if n > u32::MAX as usize {
        return Err(Error::msg("more than 2^32 rows in one dedup run"));
    }
    let mut uf = UnionFind::new(n);
    let nbands = sigs.iter().map(|s| s.keys.len()).max().unwrap_or(0);
    let threshold = opts.method.verify_threshold();
    let mut groups: Vec<Vec<u32>> = Vec::new();
    for band in 0..nbands {
        let mut pairs: Vec<(u128, u32)> = sigs
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.keys.get(band).map(|k| (*k, i as u32)))
            .collect();
        pairs.par_sort_unstable();
        let mut start = 0;
        while start < pairs.len() {
            let mut end = start + 1;
            while end < pairs.len() && pairs[end].0 == pairs[start].0 {
                end += 1;
            }
            if end - start >= 2 {
                if threshold.is_some() {
                    groups.push(pairs[start..end].iter().map(|p| p.1).collect());
                } else {
                    for p in &pairs[start + 1..end] {
                        uf.union(pairs[start].1, p.1);
                    }
                }
            }
            start = end;
        }
    }
    let mut report = ClusterReport {
        docs: n as u64,
        ..Default::default()
    };
    let mut sets: HashMap<DocId, Vec<u64>> = HashMap::new();
    if let Some(thr) = threshold {
        let fetch = fetch.ok_or_else(|| Error::msg("verification needs the input files"))?;
        let wanted: HashSet<DocId> = groups
            .iter()
            .flatten()
            .map(|&i| sigs[i as usize].doc)
            .collect();
        sets = fetch(&wanted)?;
        let empty = Vec::new();
        let mut checked: HashSet<(u32, u32)> = HashSet::new();
        for g in &groups {
            for i in 1..g.len() {
                for j in 0..i {
                    let (a, b) = (g[j].min(g[i]), g[j].max(g[i]));
                    if uf.find(a) == uf.find(b) || !checked.insert((a, b)) {
                        continue;
                    }
                    report.pairs_checked += 1;
                    let sa = sets.get(&sigs[a as usize].doc).unwrap_or(&empty);
                    let sb = sets.get(&sigs[b as usize].doc).unwrap_or(&empty);
                    if jaccard(sa, sb) >= thr {
                        uf.union(a, b);
                    } else {
                        report.pairs_rejected += 1;
                    }
                }
            }
        }
    }
    // Components and their kept rows.
    let roots: Vec<u32> = (0..n as u32).map(|i| uf.find(i)).collect();
    let mut size = vec![0u32; n];
    for &r in &roots {
        size[r as usize] += 1;
    }
    let mut members: HashMap<u32, Vec<u32>> = HashMap::new();
    for (i, &r) in roots.iter().enumerate() {
        if size[r as usize] >= 2 {
            members.entry(r).or_default().push(i as u32);
        }
    }
    let mut removals = Vec::new();
    let mut roots: Vec<u32> = members.keys().copied().collect();
    roots.sort_unstable();
    for r in roots {
        let m = &members[&r];
        report.clusters += 1;
        report.docs_in_clusters += m.len() as u64;
        report.largest_cluster = report.largest_cluster.max(m.len() as u64);
        let best = match opts.keep {
            KeepPolicy::First => m[0], // members are in index order = input order
            KeepPolicy::Longest => *m
                .iter()
                .max_by(|&&a, &&b| {
                    sigs[a as usize]
                        .len
                        .cmp(&sigs[b as usize].len)
                        .then(b.cmp(&a))
                })
                .unwrap_or(&m[0]),
        };
        let kept = sigs[best as usize].doc;
        for &i in m {
            if i == best {
                continue;
            }
            let doc = sigs[i as usize].doc;
            let jac = threshold.map(|_| match (sets.get(&doc), sets.get(&kept)) {
                (Some(a), Some(b)) => (jaccard(a, b) * 1e4).round() / 1e4,
                _ => f64::NAN,
            });
            removals.push(Removal {
                doc,
                kept,
                cluster_size: m.len() as u32,
                jaccard: jac.filter(|j| j.is_finite()),
            });
        }
    }
    removals.sort_by_key(|r| r.doc);
    Ok((removals, report))
}

/// Shingle sets of the rows in `wanted`, read again from the files that hold them.
pub fn shingle_sets_from_files(
    files: &[PathBuf],
    input: &InputOptions,
    ngram: usize,
    wanted: &HashSet<DocId>,
) -> Result<HashMap<DocId, Vec<u64>>> {
    let needed: HashSet<u32> = wanted.iter().map(|d| d.file).collect();
    let sel: Vec<(u32, PathBuf)> = files
        .iter()
        .enumerate()
        .filter(|(i, _)| needed.contains(&(*i as u32)))
        .map(|(i, p)| (i as u32, p.clone()))
        .collect();
    let mut out = HashMap::new();
    let quiet = InputOptions {
        progress: false,
        ..input.clone()
    };
    stream(&sel, &quiet, "dedup: verify", |records| {
        let part: Vec<(DocId, Vec<u64>)> = records
            .par_iter()
            .filter(|r| wanted.contains(&r.doc))
            .filter_map(|r| match &r.outcome {
                RowOutcome::Ok(p) => Some((r.doc, shingle_set(&p.text, ngram))),
                RowOutcome::Bad { .. } => None,
            })
            .collect();
        out.extend(part);
        Ok(())
    })?;
    Ok(out)
}

/// Stage 3: write this shard's rows to kept / removed.
pub fn apply(
    files: &[PathBuf],
    shard: ShardSpec,
    input: &InputOptions,
    out: &OutputOptions,
    opts: &DedupOptions,
    removals: &[Removal],
    report: Value,
) -> Result<StepSummary> {
    let by_doc: HashMap<DocId, &Removal> = removals.iter().map(|r| (r.doc, r)).collect();
    let reason = opts.method.reason();
    let (outputs, counts) = run_rowwise("dedup", files, shard, input, out, |doc, _| match by_doc
        .get(&doc)
    {
        None => Decision::Keep,
        Some(r) => {
            let mut detail =
                json!({"kept": source_of(files, r.kept), "cluster_size": r.cluster_size});
            if let Some(j) = r.jaccard {
                detail["jaccard"] = json!(j);
            }
            Decision::Remove {
                reason: reason.into(),
                detail,
            }
        }
    })?;
    outputs.finish(&counts, report)
}

fn fetcher<'a>(
    files: &'a [PathBuf],
    input: &'a InputOptions,
    method: &DedupMethod,
) -> Option<Box<FetchSets<'a>>> {
    let ngram = method.params()?.ngram;
    Some(Box::new(move |wanted: &HashSet<DocId>| {
        shingle_sets_from_files(files, input, ngram, wanted)
    }))
}

fn report_json(opts: &DedupOptions, r: &ClusterReport) -> Value {
    let mut v = json!({"options": opts, "clusters": r});
    if let Some(p) = opts.method.params() {
        let curve: Vec<Value> = [0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
            .iter()
            .map(|&s| json!({"jaccard": s, "candidate_probability": (p.candidate_probability(s) * 1e4).round() / 1e4}))
            .collect();
        v["s_curve"] = Value::Array(curve);
    }
    v
}

/// Single-process dedup of all `files`: sign, merge and apply in memory.
pub fn dedup(
    files: &[PathBuf],
    input: &InputOptions,
    out: &OutputOptions,
    opts: &DedupOptions,
) -> Result<StepSummary> {
    let t0 = std::time::Instant::now();
    let sigs = sign(files, ShardSpec::ALL, input, &opts.method)?;
    let fetch = fetcher(files, input, &opts.method);
    let (removals, report) = cluster(sigs, opts, fetch.as_deref())?;
    let mut s = apply(
        files,
        ShardSpec::ALL,
        input,
        out,
        opts,
        &removals,
        report_json(opts, &report),
    )?;
    // Throughput over the whole run (the input is read two or three times).
    s.seconds = t0.elapsed().as_secs_f64();
    s.mb_per_s = s.input_bytes as f64 / 1e6 / s.seconds.max(1e-9);
    let sp = out.dir.join("summary.json");
    let text = serde_json::to_string_pretty(&s).map_err(|e| Error::msg(e.to_string()))?;
    gradus_tensor::io::write_atomic(&sp, text.as_bytes())?;
    Ok(s)
}

// ---------------------------------------------------------------- sharded stages on disk

const SIG_MAGIC: &str = "gradus-dedup-sigs v1";

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct SigHeader {
    format: String,
    method: DedupMethod,
    shard: String,
    files: Vec<String>,
    count: u64,
    /// [`fingerprint`] of the inputs and options the signatures were made from.
    #[serde(default)]
    fingerprint: String,
}

fn file_names(files: &[PathBuf]) -> Vec<String> {
    files.iter().map(|p| p.display().to_string()).collect()
}

/// What the three sharded stages must agree on, hashed (XXH3-128, hex): every input file's path,
/// size and modification time, the text field, the dedup method and its parameters, the keep
/// policy and the number of shards. `sign` records it in each signature file, `merge` checks them
/// and records it in `merge.json`, `apply` checks that; a stage run on changed inputs or options
/// is refused instead of silently combining two different dedups.
pub fn fingerprint(
    files: &[PathBuf],
    input: &InputOptions,
    opts: &DedupOptions,
    shards: usize,
) -> Result<String> {
    let mut items = Vec::with_capacity(files.len());
    for f in files {
        let m = std::fs::metadata(f).map_err(|e| Error::io(f, e))?;
        let mtime = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        items.push(json!([f.display().to_string(), m.len(), mtime.to_string()]));
    }
    let v = json!({"files": items, "field": input.field, "method": opts.method, "keep": opts.keep, "shards": shards});
    Ok(format!(
        "{:032x}",
        XxHash3_128::oneshot(v.to_string().as_bytes())
    ))
}

fn fingerprint_mismatch(path: &Path, theirs: &str, ours: &str) -> Error {
    Error::format(
        path,
        format!(
            "made from other inputs or options (fingerprint {theirs}; this stage's is {ours}): an input file, its size or \
             modification time, --field, the dedup options, --keep or the shard count changed since that stage ran. \
             Refusing to combine them: run sign, merge and apply again with a fresh --work"
        ),
    )
}

/// Stage 1 on disk: write `work/sigs.i-of-n.bin`.
pub fn sign_to_dir(
    files: &[PathBuf],
    shard: ShardSpec,
    input: &InputOptions,
    opts: &DedupOptions,
    work: &Path,
) -> Result<PathBuf> {
    let method = &opts.method;
    let fp = fingerprint(files, input, opts, shard.count)?;
    let sigs = sign(files, shard, input, method)?;
    std::fs::create_dir_all(work).map_err(|e| Error::io(work, e))?;
    let path = work.join(format!("sigs.{}-of-{}.bin", shard.index, shard.count));
    let tmp = gradus_tensor::io::unique_temp_path(&path)?;
    let header = SigHeader {
        format: SIG_MAGIC.into(),
        method: method.clone(),
        shard: shard.to_string(),
        files: file_names(files),
        count: sigs.len() as u64,
        fingerprint: fp,
    };
    let mut w = BufWriter::new(
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::io(&tmp, e))?,
    );
    let io = |e| Error::io(&tmp, e);
    let head = serde_json::to_string(&header).map_err(|e| Error::msg(e.to_string()))?;
    w.write_all(head.as_bytes())
        .and_then(|_| w.write_all(b"\n"))
        .map_err(io)?;
    for s in &sigs {
        w.write_all(&s.doc.file.to_le_bytes()).map_err(io)?;
        w.write_all(&s.doc.row.to_le_bytes()).map_err(io)?;
        w.write_all(&s.len.to_le_bytes()).map_err(io)?;
        w.write_all(&(s.keys.len() as u32).to_le_bytes())
            .map_err(io)?;
        for k in &s.keys {
            w.write_all(&k.to_le_bytes()).map_err(io)?;
        }
    }
    w.flush().map_err(io)?;
    drop(w);
    std::fs::rename(&tmp, &path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(&path, e)
    })?;
    Ok(path)
}

fn read_sigs(path: &Path) -> Result<(SigHeader, Vec<DocSig>)> {
    let mut r = BufReader::new(File::open(path).map_err(|e| Error::io(path, e))?);
    let mut head = String::new();
    r.read_line(&mut head).map_err(|e| Error::io(path, e))?;
    let header: SigHeader = serde_json::from_str(&head)
        .map_err(|e| Error::format(path, format!("not a gradus dedup signature file: {e}")))?;
    if header.format != SIG_MAGIC {
        return Err(Error::format(
            path,
            format!("unknown format {:?}", header.format),
        ));
    }
    let trunc = |_| Error::format(path, "truncated signature file (was its sign task killed?)");
    let mut sigs = Vec::with_capacity(header.count as usize);
    for _ in 0..header.count {
        let mut b = [0u8; 20];
        r.read_exact(&mut b).map_err(trunc)?;
        let doc = DocId {
            file: u32::from_le_bytes(b[0..4].try_into().unwrap_or_default()),
            row: u32::from_le_bytes(b[4..8].try_into().unwrap_or_default()),
        };
        let len = u64::from_le_bytes(b[8..16].try_into().unwrap_or_default());
        let nk = u32::from_le_bytes(b[16..20].try_into().unwrap_or_default()) as usize;
        if nk > 4096 {
            return Err(Error::format(
                path,
                "corrupt signature file (bad key count)",
            ));
        }
        let mut keys = Vec::with_capacity(nk);
        for _ in 0..nk {
            let mut k = [0u8; 16];
            r.read_exact(&mut k).map_err(trunc)?;
            keys.push(u128::from_le_bytes(k));
        }
        sigs.push(DocSig { doc, len, keys });
    }
    Ok((header, sigs))
}

/// Stage 2 on disk: read `sigs.i-of-n.bin` for every `i < n`, cluster, write `removals.jsonl` and
/// `merge.json` to `work`. Returns the report.
pub fn merge_dir(
    files: &[PathBuf],
    n: usize,
    input: &InputOptions,
    opts: &DedupOptions,
    work: &Path,
) -> Result<ClusterReport> {
    let mut all = Vec::new();
    let names = file_names(files);
    let fp = fingerprint(files, input, opts, n)?;
    for i in 0..n {
        let p = work.join(format!("sigs.{i}-of-{n}.bin"));
        if !p.exists() {
            return Err(Error::format(
                &p,
                format!("missing: run the sign stage for shard {i}/{n} first"),
            ));
        }
        let (h, sigs) = read_sigs(&p)?;
        if h.method != opts.method {
            return Err(Error::format(
                &p,
                format!("made with other dedup parameters: {:?}", h.method),
            ));
        }
        if h.files != names {
            return Err(Error::format(
                &p,
                "made from another list of input files (give every stage the same inputs)",
            ));
        }
        if h.fingerprint != fp {
            return Err(fingerprint_mismatch(&p, &h.fingerprint, &fp));
        }
        all.extend(sigs);
    }
    let fetch = fetcher(files, input, &opts.method);
    let (removals, report) = cluster(all, opts, fetch.as_deref())?;
    let mut w =
        super::shards::JsonlWriter::create(work.join("removals.jsonl"), super::Compression::None)?;
    for r in &removals {
        w.write_line(&serde_json::to_string(r).map_err(|e| Error::msg(e.to_string()))?)?;
    }
    w.finish()?;
    let mut merged = report_json(opts, &report);
    merged["fingerprint"] = json!(fp);
    let text = serde_json::to_string_pretty(&merged).map_err(|e| Error::msg(e.to_string()))?;
    gradus_tensor::io::write_atomic(&work.join("merge.json"), text.as_bytes())?;
    Ok(report)
}

/// Stage 3 on disk: apply `work/removals.jsonl` to this shard.
pub fn apply_from_dir(
    files: &[PathBuf],
    shard: ShardSpec,
    input: &InputOptions,
    out: &OutputOptions,
    opts: &DedupOptions,
    work: &Path,
) -> Result<StepSummary> {
    // The merge this shard applies must come from the same inputs and options.
    let mp = work.join("merge.json");
    let text = std::fs::read_to_string(&mp).map_err(|e| Error::io(&mp, e))?;
    let mut report: Value = serde_json::from_str(&text).map_err(|e| Error::Parse {
        path: mp.clone(),
        line: e.line(),
        msg: e.to_string(),
    })?;
    let theirs = report
        .get("fingerprint")
        .and_then(Value::as_str)
        .unwrap_or("(none)")
        .to_string();
    let ours = fingerprint(files, input, opts, shard.count)?;
    if theirs != ours {
        return Err(fingerprint_mismatch(&mp, &theirs, &ours));
    }
    if let Some(o) = report.as_object_mut() {
        o.remove("fingerprint");
    }
    let p = work.join("removals.jsonl");
    let f = File::open(&p).map_err(|e| Error::io(&p, e))?;
    let mut removals = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| Error::io(&p, e))?;
        let r: Removal = serde_json::from_str(&line).map_err(|e| Error::Parse {
            path: p.clone(),
            line: i + 1,
            msg: e.to_string(),
        })?;
        removals.push(r);
    }
    apply(files, shard, input, out, opts, &removals, report)
}
