//! `stats`: row, byte, character, word and line counts, a length histogram (powers of two) and a
//! language histogram. Shard summaries add up ([`Stats::merge`], `gradus data stats --merge`).
//!
//! The language of a row is, in order: its `lang` / `language` field; the programming language of
//! its `id` / `path` file extension (`.py` → `python`, ...); for natural text the best of a small
//! stop-word vote between English, German, French, Spanish, Italian, Portuguese and Dutch when the
//! text is mostly Latin letters; otherwise the dominant Unicode script (`cyrillic`, `greek`,
//! `arabic`, `hebrew`, `devanagari`, `hangul`, `japanese` (kana), `han`), or `unknown`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use gradus_tensor::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::shards::{
    stream, InputOptions, OutputOptions, Outputs, RowOutcome, ShardSpec, StepSummary,
};

/// Number of length buckets: bucket 0 holds length 0, bucket k ≥ 1 holds [2^(k-1), 2^k).
pub const BUCKETS: usize = 41;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    pub rows: u64,
    pub bytes: u64,
    pub chars: u64,
    pub words: u64,
    pub lines: u64,
    pub min_chars: Option<u64>,
    pub max_chars: Option<u64>,
    /// `[lo, hi, count]`: rows with `lo <= chars < hi` (trailing empty buckets left out).
    pub length_histogram: Vec<[u64; 3]>,
    pub languages: BTreeMap<String, u64>,
}

/// The histogram bucket of a length.
pub fn bucket(len: u64) -> usize {
    if len == 0 {
        0
    } else {
        (64 - len.leading_zeros() as usize).min(BUCKETS - 1)
    }
}

fn bucket_bounds(k: usize) -> (u64, u64) {
    if k == 0 {
        (0, 1)
    } else {
        (1 << (k - 1), 1 << k)
    }
}

impl Stats {
    pub fn add(&mut self, text: &str, lang: &str) {
        let chars = text.chars().count() as u64;
        self.rows += 1;
        self.bytes += text.len() as u64;
        self.chars += chars;
        self.words += text.split_whitespace().count() as u64;
        self.lines += if text.is_empty() {
            0
        } else {
            text.lines().count() as u64
        };
        self.min_chars = Some(self.min_chars.map_or(chars, |m| m.min(chars)));
        self.max_chars = Some(self.max_chars.map_or(chars, |m| m.max(chars)));
        let k = bucket(chars);
        self.bump(k, 1);
        *self.languages.entry(lang.to_string()).or_default() += 1;
    }

    fn bump(&mut self, k: usize, by: u64) {
        while self.length_histogram.len() <= k {
            let (lo, hi) = bucket_bounds(self.length_histogram.len());
            self.length_histogram.push([lo, hi, 0]);
        }
        self.length_histogram[k][2] += by;
    }

    /// Add another shard's stats.
    pub fn merge(&mut self, o: &Stats) {
        self.rows += o.rows;
        self.bytes += o.bytes;
        self.chars += o.chars;
        self.words += o.words;
        self.lines += o.lines;
        self.min_chars = match (self.min_chars, o.min_chars) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.max_chars = match (self.max_chars, o.max_chars) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        for (k, b) in o.length_histogram.iter().enumerate() {
            if b[2] > 0 {
                self.bump(k, b[2]);
            }
        }
        for (l, c) in &o.languages {
            *self.languages.entry(l.clone()).or_default() += c;
        }
    }

    /// Approximate quantile of the character length (the upper bound of the bucket it falls in).
    pub fn length_quantile(&self, q: f64) -> u64 {
        let target = (q * self.rows as f64).ceil().max(1.0) as u64;
        let mut acc = 0;
        for b in &self.length_histogram {
            acc += b[2];
            if acc >= target {
                return b[1].saturating_sub(1);
            }
        }
        self.max_chars.unwrap_or(0)
    }
}

fn ext_language(path: &str) -> Option<&'static str> {
    let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "py" | "pyi" => "python",
        "rs" => "rust",
        "c" | "h" => "c",
        "cc" | "cpp" | "cxx" | "hpp" | "hh" => "cpp",
        "js" | "mjs" | "cjs" => "javascript",
        "ts" | "tsx" => "typescript",
        "java" => "java",
        "go" => "go",
        "rb" => "ruby",
        "sh" | "bash" => "shell",
        "md" | "rst" | "txt" => return None,
        "json" => "json",
        "toml" => "toml",
        "yaml" | "yml" => "yaml",
        "html" | "htm" => "html",
        "css" => "css",
        "sql" => "sql",
        _ => return None,
    })
}

const STOPWORDS: &[(&str, &[&str])] = &[
    (
        "en",
        &[
            "the", "and", "of", "to", "is", "in", "that", "it", "with", "for", "was", "this",
        ],
    ),
    (
        "de",
        &[
            "der", "die", "und", "das", "ist", "nicht", "ein", "ich", "zu", "mit", "sie", "den",
        ],
    ),
    (
        "fr",
        &[
            "le", "la", "les", "et", "est", "des", "une", "que", "dans", "pour", "pas", "qui",
        ],
    ),
    (
        "es",
        &[
            "el", "los", "las", "y", "que", "es", "una", "por", "con", "para", "del", "como",
        ],
    ),
    (
        "it",
        &[
            "il", "che", "di", "e", "non", "della", "una", "per", "sono", "gli", "con", "anche",
        ],
    ),
    (
        "pt",
        &[
            "o", "os", "que", "não", "uma", "com", "para", "do", "da", "em", "mais", "por",
        ],
    ),
    (
        "nl",
        &[
            "de", "het", "een", "en", "van", "ik", "niet", "dat", "op", "zijn", "voor", "met",
        ],
    ),
];

/// The script / language guess of a text with no `lang` field (see the module doc).
pub fn detect_text_language(text: &str) -> String {
    let mut latin = 0usize;
    let mut other: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut kana = 0usize;
    for c in text.chars().take(20_000) {
        if !c.is_alphabetic() {
            continue;
        }
        let u = c as u32;
        let script = match u {
            0x41..=0x24F | 0x1E00..=0x1EFF => {
                latin += 1;
                continue;
            }
            0x370..=0x3FF => "greek",
            0x400..=0x52F => "cyrillic",
            0x590..=0x5FF => "hebrew",
            0x600..=0x6FF | 0x750..=0x77F => "arabic",
            0x900..=0x97F => "devanagari",
            0x3040..=0x30FF => {
                kana += 1;
                "japanese"
            }
            0x4E00..=0x9FFF | 0x3400..=0x4DBF => "han",
            0xAC00..=0xD7AF | 0x1100..=0x11FF => "hangul",
            _ => "other",
        };
        *other.entry(script).or_default() += 1;
    }
    let (best_other, n_other) = other
        .iter()
        .max_by_key(|(_, &n)| n)
        .map(|(s, n)| (*s, *n))
        .unwrap_or(("unknown", 0));
    if latin == 0 && n_other == 0 {
        return "unknown".into();
    }
    if n_other > latin {
        if best_other == "han" && kana > 0 {
            return "japanese".into();
        }
        return best_other.into();
    }
    let mut votes = [0usize; 7];
    for w in text.split(|c: char| !c.is_alphabetic()).take(5000) {
        if w.is_empty() || w.len() > 8 {
            continue;
        }
        let w = w.to_lowercase();
        for (i, (_, words)) in STOPWORDS.iter().enumerate() {
            if words.contains(&w.as_str()) {
                votes[i] += 1;
            }
        }
    }
    let (i, &v) = votes
        .iter()
        .enumerate()
        .max_by_key(|(i, &v)| (v, std::cmp::Reverse(*i)))
        .unwrap_or((0, &0));
    if v >= 2 {
        STOPWORDS[i].0.into()
    } else {
        "latin".into()
    }
}

/// The language of a row (see the module doc).
pub fn row_language(text: &str, obj: &Map<String, Value>) -> String {
    for f in ["lang", "language"] {
        if let Some(Value::String(s)) = obj.get(f) {
            return s.to_lowercase();
        }
    }
    for f in ["path", "id", "filename"] {
        if let Some(Value::String(s)) = obj.get(f) {
            if let Some(l) = ext_language(s) {
                return l.into();
            }
        }
    }
    detect_text_language(text)
}

/// `stats` over one shard: writes `removed` (bad rows) and `summary` (with `report.stats`).
pub fn stats(
    files: &[PathBuf],
    shard: ShardSpec,
    input: &InputOptions,
    out: &OutputOptions,
) -> Result<StepSummary> {
    use rayon::prelude::*;
    let mut outputs = Outputs::create("stats", out, shard, files, false)?;
    let mut total = Stats::default();
    let counts = stream(&shard.select(files), input, "stats", |records| {
        let part = records
            .par_iter()
            .fold(Stats::default, |mut s, r| {
                if let RowOutcome::Ok(p) = &r.outcome {
                    s.add(&p.text, &row_language(&p.text, &p.obj));
                }
                s
            })
            .reduce(Stats::default, |mut a, b| {
                a.merge(&b);
                a
            });
        total.merge(&part);
        for r in &records {
            if let Some(p) = outputs.triage(r)? {
                outputs.keep(p)?;
            }
        }
        Ok(())
    })?;
    let report = stats_report(&total);
    outputs.finish(&counts, report)
}

fn stats_report(s: &Stats) -> Value {
    serde_json::json!({
        "stats": s,
        "mean_chars": if s.rows > 0 { s.chars as f64 / s.rows as f64 } else { 0.0 },
        "p50_chars_at_most": s.length_quantile(0.5),
        "p90_chars_at_most": s.length_quantile(0.9),
        "p99_chars_at_most": s.length_quantile(0.99),
    })
}

/// A `stats` summary for people: rows, removals, lengths (mean, quantiles, range), words, lines,
/// languages with shares, and the length histogram as bars. (The JSON is in `summary.json`.)
pub fn stats_text(s: &StepSummary) -> String {
    use std::fmt::Write as _;
    let st: Stats = serde_json::from_value(s.report["stats"].clone()).unwrap_or_default();
    let r = &s.report;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{} rows in {} file{} ({} bytes), {} kept, {} removed",
        s.rows,
        s.files,
        if s.files == 1 { "" } else { "s" },
        s.input_bytes,
        s.kept,
        s.removed
    );
    for (why, n) in &s.removed_by_reason {
        let _ = writeln!(t, "  removed: {n} {why}");
    }
    if st.rows == 0 {
        return t;
    }
    let num = |k: &str| r[k].as_f64().unwrap_or(0.0);
    // Quantiles are histogram bucket bounds: never past the longest row.
    let q = |k: &str| num(k).min(st.max_chars.unwrap_or(0) as f64);
    let _ = writeln!(
        t,
        "characters: {} total, mean {:.1} per row, min {}, max {}; half the rows ≤ {}, 90% ≤ {}, 99% ≤ {}",
        st.chars,
        num("mean_chars"),
        st.min_chars.unwrap_or(0),
        st.max_chars.unwrap_or(0),
        q("p50_chars_at_most"),
        q("p90_chars_at_most"),
        q("p99_chars_at_most"),
    );
    let _ = writeln!(
        t,
        "words: {}, lines: {}, bytes: {}",
        st.words, st.lines, st.bytes
    );
    let mut langs: Vec<(&String, &u64)> = st.languages.iter().collect();
    langs.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let shares: Vec<String> = langs
        .iter()
        .map(|(l, n)| format!("{l} {n} ({:.1}%)", **n as f64 * 100.0 / st.rows as f64))
        .collect();
    let _ = writeln!(t, "languages: {}", shares.join(", "));
    let _ = writeln!(t, "length in characters:");
    let most = st
        .length_histogram
        .iter()
        .map(|b| b[2])
        .max()
        .unwrap_or(1)
        .max(1);
    for [lo, hi, n] in &st.length_histogram {
        if *n == 0 {
            continue;
        }
        let bar = "#".repeat(((*n as f64 / most as f64) * 40.0).ceil() as usize);
        let _ = writeln!(t, "  [{lo:>7}, {hi:>7})  {n:>8}  {bar}");
    }
    t
}

/// Add up the `summary*.json` files of `stats` shard runs into one summary.
pub fn merge_summaries(paths: &[PathBuf]) -> Result<StepSummary> {
    let mut out = StepSummary {
        step: "stats".into(),
        shard: "merged".into(),
        ..Default::default()
    };
    let mut total = Stats::default();
    for p in paths {
        let text = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
        let s: StepSummary = serde_json::from_str(&text)
            .map_err(|e| Error::format(p, format!("not a summary: {e}")))?;
        if s.step != "stats" {
            return Err(Error::format(
                p,
                format!("a summary of `{}`, not of `stats`", s.step),
            ));
        }
        let st: Stats = serde_json::from_value(s.report["stats"].clone())
            .map_err(|e| Error::format(p, format!("no stats in the report: {e}")))?;
        total.merge(&st);
        out.files += s.files;
        out.empty_files += s.empty_files;
        out.input_bytes += s.input_bytes;
        out.blank_lines += s.blank_lines;
        out.rows += s.rows;
        out.kept += s.kept;
        out.removed += s.removed;
        out.text_bytes += s.text_bytes;
        out.seconds = out.seconds.max(s.seconds);
        for (k, v) in s.removed_by_reason {
            *out.removed_by_reason.entry(k).or_default() += v;
        }
    }
    out.mb_per_s = out.input_bytes as f64 / 1e6 / out.seconds.max(1e-9);
    out.report = stats_report(&total);
    Ok(out)
}
