//! `decontaminate`: remove rows that share word n-grams with the items of one or more eval sets.
//!
//! Text is split into words (maximal runs of letters, digits and `_`, lowercased); an n-gram is
//! `n` consecutive words, hashed (xxh3-64 of the words' hashes). Every n-gram of every eval item
//! goes into one index; a row is removed when it holds at least `min_matches` distinct n-grams of
//! one item. The report lists, per eval item, how many rows matched it and the first of them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use gradus_tensor::{Error, Result};
use serde::Serialize;
use serde_json::{json, Value};
use twox_hash::XxHash3_64;

use super::shards::{
    open_decompressed, run_rowwise, source_of, Decision, DocId, InputOptions, OutputOptions,
    ShardSpec, StepSummary,
};

/// Lowercased words: maximal runs of alphanumeric characters and `_`.
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
}

/// Hashes of the distinct word `n`-grams of `text`.
pub fn ngram_hashes(text: &str, n: usize) -> HashSet<u64> {
    let wh: Vec<u64> = words(text)
        .map(|w| XxHash3_64::oneshot(w.as_bytes()))
        .collect();
    if wh.len() < n {
        return HashSet::new();
    }
    wh.windows(n)
        .map(|win| {
            let mut b = Vec::with_capacity(8 * n);
            for h in win {
                b.extend_from_slice(&h.to_le_bytes());
            }
            XxHash3_64::oneshot(&b)
        })
        .collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalItem {
    /// The eval set (its file name).
    pub set: String,
    pub id: String,
    pub ngrams: usize,
}

/// The n-gram index of all eval items.
pub struct Decontaminator {
    pub n: usize,
    pub min_matches: usize,
    pub items: Vec<EvalItem>,
    /// Items with fewer than `n` words (they cannot match).
    pub too_short: Vec<String>,
    index: HashMap<u64, Vec<u32>>,
}

impl Decontaminator {
    pub fn new(n: usize, min_matches: usize) -> Result<Self> {
        if n == 0 {
            return Err(Error::config("ngram", "must be at least 1"));
        }
        Ok(Decontaminator {
            n,
            min_matches: min_matches.max(1),
            items: Vec::new(),
            too_short: Vec::new(),
            index: HashMap::new(),
        })
    }

    pub fn add_item(&mut self, set: &str, id: &str, text: &str) {
        let grams = ngram_hashes(text, self.n);
        if grams.is_empty() {
            self.too_short.push(format!("{set}/{id}"));
            return;
        }
        let idx = self.items.len() as u32;
        for g in &grams {
            let v = self.index.entry(*g).or_default();
            if v.last() != Some(&idx) {
                v.push(idx);
            }
        }
        self.items.push(EvalItem {
            set: set.into(),
            id: id.into(),
            ngrams: grams.len(),
        });
    }

    /// Add the items of a JSONL eval file (gzip/zstd allowed). Each item's text is its `fields`
    /// that are present, joined by newlines (an item with none of them is an error); its id is
    /// `id_field` or its line number.
    pub fn add_eval_file(
        &mut self,
        path: &Path,
        fields: &[String],
        id_field: &str,
    ) -> Result<usize> {
        let set = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(|n| n.split('.').next().unwrap_or(n).to_string())
            .unwrap_or_else(|| "eval".into());
        let r = open_decompressed(path)?;
        let mut count = 0;
        for (i, line) in r.lines().enumerate() {
            let at = |msg: String| Error::Parse {
                path: path.to_path_buf(),
                line: i + 1,
                msg,
            };
            let line = line.map_err(|e| at(format!("read error: {e}")))?;
            if line.trim().is_empty() {
                continue;
            }
            let v: Value =
                serde_json::from_str(&line).map_err(|e| at(format!("invalid JSON: {e}")))?;
            let parts: Vec<&str> = fields
                .iter()
                .filter_map(|f| v.get(f).and_then(|x| x.as_str()))
                .collect();
            if parts.is_empty() {
                return Err(at(format!("none of the eval fields {fields:?} is a string here (choose with --eval-field)")));
            }
            let id = match v.get(id_field) {
                Some(Value::String(s)) => s.clone(),
                Some(other) if !other.is_null() => other.to_string(),
                _ => format!("line{}", i + 1),
            };
            self.add_item(&set, &id, &parts.join("\n"));
            count += 1;
        }
        if count == 0 {
            return Err(Error::format(path, "eval file holds no items"));
        }
        Ok(count)
    }

    /// Items that share at least `min_matches` distinct n-grams with `text`, with the counts.
    pub fn matches(&self, text: &str) -> Vec<(u32, usize)> {
        let mut hits: BTreeMap<u32, usize> = BTreeMap::new();
        for g in ngram_hashes(text, self.n) {
            if let Some(items) = self.index.get(&g) {
                for &i in items {
                    *hits.entry(i).or_default() += 1;
                }
            }
        }
        hits.into_iter()
            .filter(|(_, c)| *c >= self.min_matches)
            .collect()
    }
}

/// Remove the rows of one shard that match an eval item.
pub fn decontaminate(
    files: &[PathBuf],
    shard: ShardSpec,
    input: &InputOptions,
    out: &OutputOptions,
    d: &Decontaminator,
) -> Result<StepSummary> {
    // Per item: rows matched and the first few of them (by input position).
    let seen: Mutex<HashMap<u32, (u64, Vec<DocId>)>> = Mutex::new(HashMap::new());
    let (outputs, counts) = run_rowwise("decontaminate", files, shard, input, out, |doc, p| {
        let m = d.matches(&p.text);
        if m.is_empty() {
            return Decision::Keep;
        }
        if let Ok(mut s) = seen.lock() {
            for (i, _) in &m {
                let e = s.entry(*i).or_default();
                e.0 += 1;
                e.1.push(doc);
                e.1.sort();
                e.1.truncate(5);
            }
        }
        let detail: Vec<Value> = m
            .iter()
            .map(|(i, c)| {
                let it = &d.items[*i as usize];
                json!({"set": it.set, "id": it.id, "shared_ngrams": c, "item_ngrams": it.ngrams})
            })
            .collect();
        Decision::Remove {
            reason: "contaminated".into(),
            detail: json!({"ngram": d.n, "matches": detail}),
        }
    })?;
    let seen = seen.into_inner().unwrap_or_default();
    let mut matched: Vec<(u32, (u64, Vec<DocId>))> = seen.into_iter().collect();
    matched.sort_by_key(|(i, _)| *i);
    let report = json!({
        "ngram": d.n,
        "min_matches": d.min_matches,
        "eval_items": d.items.len(),
        "eval_items_too_short": d.too_short,
        "eval_items_matched": matched.len(),
        "matched": matched.iter().map(|(i, (n, docs))| {
            let it = &d.items[*i as usize];
            json!({"set": it.set, "id": it.id, "rows": n, "first_rows": docs.iter().map(|doc| source_of(files, *doc)).collect::<Vec<_>>()})
        }).collect::<Vec<_>>(),
    });
    outputs.finish(&counts, report)
}
