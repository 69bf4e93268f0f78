//! Shard discovery, the streaming reader (bounded batches, parsed on all cores), the writer of
//! `kept` / `removed` / `summary`, and `from_files` (a directory of source files → JSONL rows).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use gradus_tensor::{Error, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A row's place in the input: the index of its file in the sorted list of all input files (the
/// same in every shard task) and its 1-based line (JSONL) or row (Parquet) number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DocId {
    pub file: u32,
    pub row: u32,
}

/// `i/n`: this task handles the input files whose index `j` has `j % n == i`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardSpec {
    pub index: usize,
    pub count: usize,
}

impl ShardSpec {
    pub const ALL: ShardSpec = ShardSpec { index: 0, count: 1 };

    /// `""` for the whole input, `.i-of-n` for a shard (used in output file names).
    pub fn suffix(&self) -> String {
        if self.count == 1 {
            String::new()
        } else {
            format!(".{}-of-{}", self.index, self.count)
        }
    }

    /// This shard's files with their global indices.
    pub fn select(&self, files: &[PathBuf]) -> Vec<(u32, PathBuf)> {
        files
            .iter()
            .enumerate()
            .filter(|(j, _)| j % self.count == self.index)
            .map(|(j, p)| (j as u32, p.clone()))
            .collect()
    }
}

impl FromStr for ShardSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::config(
                "shard",
                format!("expected i/n with 0 <= i < n (e.g. 3/16), got {s:?}"),
            )
        };
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(ShardSpec { index, count })
    }
}

impl std::fmt::Display for ShardSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

fn strip_compression(name: &str) -> &str {
    for ext in [".gz", ".zst", ".zstd"] {
        if let Some(s) = name.strip_suffix(ext) {
            return s;
        }
    }
    name
}

/// A file that a directory walk picks up: `.jsonl`, `.ndjson`, `.json` (JSON lines), `.parquet`,
/// the text ones optionally `.gz` / `.zst`.
pub fn is_data_file(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let name = name.to_ascii_lowercase();
    if name.ends_with(".parquet") {
        return true;
    }
    let base = strip_compression(&name);
    base.ends_with(".jsonl") || base.ends_with(".ndjson") || base.ends_with(".json")
}

fn is_parquet(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.to_ascii_lowercase().ends_with(".parquet"))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))? {
            let entry = entry.map_err(|e| Error::io(&d, e))?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if is_data_file(&p) {
                out.push(p);
            }
        }
    }
    Ok(())
}

/// The input files that `inputs` stand for, sorted and without repeats: a file is taken as is, a
/// directory is walked (hidden entries skipped, data files only, see [`is_data_file`]), anything
/// else is a glob pattern. Every shard task calls this with the same arguments and gets the same
/// list, so a file's index names it across tasks.
pub fn discover(inputs: &[String]) -> Result<Vec<PathBuf>> {
    if inputs.is_empty() {
        return Err(Error::msg("no input given"));
    }
    let mut out = Vec::new();
    for inp in inputs {
        let p = Path::new(inp);
        if p.is_dir() {
            let before = out.len();
            walk(p, &mut out)?;
            if out.len() == before {
                return Err(Error::format(
                    p,
                    "directory holds no .jsonl, .ndjson, .json or .parquet files",
                ));
            }
        } else if p.exists() {
            out.push(p.to_path_buf());
        } else if inp.contains(['*', '?', '[']) {
            let opts = glob::MatchOptions {
                require_literal_leading_dot: true,
                ..Default::default()
            };
            let paths = glob::glob_with(inp, opts)
                .map_err(|e| Error::config("input", format!("bad glob {inp:?}: {e}")))?;
            let before = out.len();
            for entry in paths {
                let entry = entry.map_err(|e| Error::msg(format!("glob {inp:?}: {e}")))?;
                if entry.is_dir() {
                    walk(&entry, &mut out)?;
                } else {
                    out.push(entry);
                }
            }
            if out.len() == before {
                return Err(Error::msg(format!("glob {inp:?} matches no file")));
            }
        } else {
            return Err(Error::io(
                p,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
            ));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

// ---------------------------------------------------------------- reading

/// What to do when a file cannot be read on (a corrupt gzip member, a broken Parquet page).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnReadError {
    /// Stop with an error that names the file and line (the default).
    #[default]
    Fail,
    /// Record a `read_error` line in `removed` (the rest of that file is unreadable) and go on.
    Skip,
}

impl FromStr for OnReadError {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fail" => Ok(Self::Fail),
            "skip" => Ok(Self::Skip),
            _ => Err(Error::config(
                "on-read-error",
                format!("expected fail or skip, got {s:?}"),
            )),
        }
    }
}

#[derive(Clone, Debug)]
pub struct InputOptions {
    /// The JSON field that holds the text (`text`, `content`, ...).
    pub field: String,
    pub on_read_error: OnReadError,
    /// Bytes of input per batch (the memory bound is a few batches).
    pub batch_bytes: usize,
    /// Draw a progress bar on stderr (hidden when stderr is not a terminal).
    pub progress: bool,
}

impl Default for InputOptions {
    fn default() -> Self {
        InputOptions {
            field: "text".into(),
            on_read_error: OnReadError::Fail,
            batch_bytes: 32 << 20,
            progress: false,
        }
    }
}

/// A row that parsed: its JSON text as read (the original line for JSONL), the text field, and the
/// other fields.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub raw: String,
    pub text: String,
    pub obj: Map<String, Value>,
}

#[derive(Debug, Clone)]
pub enum RowOutcome {
    Ok(Parsed),
    /// A row that cannot be used: `reason` is one of `invalid_utf8`, `invalid_json`,
    /// `not_an_object`, `missing_field`, `field_not_text`, `read_error`; `raw` is its lossy text.
    Bad {
        reason: &'static str,
        error: String,
        raw: String,
    },
}

#[derive(Debug, Clone)]
pub struct Record {
    pub doc: DocId,
    pub outcome: RowOutcome,
}

enum RawItem {
    Line {
        doc: DocId,
        bytes: Vec<u8>,
    },
    Object {
        doc: DocId,
        obj: Map<String, Value>,
    },
    ReadError {
        doc: DocId,
        msg: String,
    },
    /// `raw`: the row's JSON text when it is valid JSON (embedded as is in `removed`), else empty.
    BadRow {
        doc: DocId,
        reason: &'static str,
        msg: String,
        raw: String,
    },
}

/// Counts of one streaming pass.
#[derive(Debug, Default, Clone)]
pub struct StreamCounts {
    pub files: usize,
    pub empty_files: usize,
    pub input_bytes: u64,
    pub blank_lines: u64,
}

struct Counting<R> {
    inner: R,
    bar: ProgressBar,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

/// Open a file, decompressing gzip (all members) or zstd when its first bytes say so.
pub fn open_decompressed(path: &Path) -> Result<Box<dyn BufRead + Send>> {
    open_counted(path, ProgressBar::hidden())
}

fn open_counted(path: &Path, bar: ProgressBar) -> Result<Box<dyn BufRead + Send>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut r = BufReader::with_capacity(1 << 20, Counting { inner: file, bar });
    let head = r.fill_buf().map_err(|e| Error::io(path, e))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(BufReader::with_capacity(
            1 << 20,
            flate2::read::MultiGzDecoder::new(r),
        )))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let d = zstd::stream::read::Decoder::with_buffer(r).map_err(|e| Error::io(path, e))?;
        Ok(Box::new(BufReader::with_capacity(1 << 20, d)))
    } else {
        Ok(Box::new(r))
    }
}

fn read_error(path: &Path, doc: DocId, msg: &str) -> Error {
    Error::Parse {
        path: path.to_path_buf(),
        line: doc.row as usize,
        msg: format!(
            "read error: {msg} (pass --on-read-error skip to record it in `removed` and go on)"
        ),
    }
}

/// Read `files` in order and send batches of about `batch_bytes` to `tx`. Stops at the first error
/// when `on_read_error` is `Fail`.
fn read_files(
    files: &[(u32, PathBuf)],
    opts: &InputOptions,
    bar: &ProgressBar,
    counts: &mut StreamCounts,
    tx: &std::sync::mpsc::SyncSender<Result<Vec<RawItem>>>,
) {
    let mut batch = Vec::new();
    let mut bytes = 0usize;
    macro_rules! push {
        ($item:expr, $n:expr) => {{
            batch.push($item);
            bytes += $n;
            if bytes >= opts.batch_bytes || batch.len() >= 1 << 20 {
                if tx.send(Ok(std::mem::take(&mut batch))).is_err() {
                    return;
                }
                bytes = 0;
            }
        }};
    }
    macro_rules! fail_or_skip {
        ($path:expr, $doc:expr, $msg:expr) => {{
            let msg: String = $msg;
            if opts.on_read_error == OnReadError::Fail {
                let _ = tx.send(Err(read_error($path, $doc, &msg)));
                return;
            }
            push!(RawItem::ReadError { doc: $doc, msg }, 64);
        }};
    }
    for (fi, path) in files {
        counts.files += 1;
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        counts.input_bytes += size;
        if size == 0 {
            counts.empty_files += 1;
            continue;
        }
        let mut n_rows = 0u64;
        if is_parquet(path) {
            bar.inc(size);
            let opened = File::open(path).map_err(|e| e.to_string()).and_then(|f| {
                parquet::file::reader::SerializedFileReader::new(f).map_err(|e| e.to_string())
            });
            let reader = match opened {
                Ok(r) => r,
                Err(e) => {
                    fail_or_skip!(
                        path,
                        DocId { file: *fi, row: 0 },
                        format!("not a readable Parquet file: {e}")
                    );
                    continue;
                }
            };
            let rows = parquet::record::reader::RowIter::from_file_into(Box::new(reader));
            for (i, row) in rows.enumerate() {
                let doc = DocId {
                    file: *fi,
                    row: i as u32 + 1,
                };
                n_rows += 1;
                match row {
                    Ok(row) => match gradus_data::dataset::row_to_object(&row) {
                        Ok(obj) => push!(RawItem::Object { doc, obj }, 256),
                        Err(e) => push!(
                            RawItem::BadRow {
                                doc,
                                reason: "invalid_utf8",
                                msg: e,
                                raw: String::new()
                            },
                            64
                        ),
                    },
                    Err(e) => {
                        fail_or_skip!(path, doc, format!("cannot decode Parquet row: {e}"));
                        break;
                    }
                }
            }
        } else {
            let mut r = match open_counted(path, bar.clone()) {
                Ok(r) => r,
                Err(e) => {
                    fail_or_skip!(path, DocId { file: *fi, row: 0 }, e.to_string());
                    continue;
                }
            };
            // A `.json` file that holds one JSON array: its elements are the rows (`file:N` is
            // element N, from 1), as the training readers take them.
            if is_json_array(path, &mut r) {
                let mut text = String::new();
                if let Err(e) = r.read_to_string(&mut text) {
                    fail_or_skip!(path, DocId { file: *fi, row: 0 }, e.to_string());
                    continue;
                }
                let items = match serde_json::from_str::<Value>(text.trim_start_matches('\u{feff}'))
                {
                    Ok(Value::Array(items)) => items,
                    Ok(_) | Err(_) => {
                        let msg =
                            serde_json::from_str::<Value>(text.trim_start_matches('\u{feff}'))
                                .err()
                                .map(|e| format!("invalid JSON array: {e}"))
                                .unwrap_or_else(|| "expected one JSON array".into());
                        fail_or_skip!(path, DocId { file: *fi, row: 0 }, msg);
                        continue;
                    }
                };
                for (i, item) in items.into_iter().enumerate() {
                    let doc = DocId {
                        file: *fi,
                        row: i as u32 + 1,
                    };
                    n_rows += 1;
                    match item {
                        Value::Object(obj) => push!(RawItem::Object { doc, obj }, 256),
                        other => {
                            let msg = format!(
                                "array element {}: expected a JSON object, found {}",
                                i + 1,
                                gradus_data::tokenizer::json_type(&other)
                            );
                            push!(
                                RawItem::BadRow {
                                    doc,
                                    reason: "not_an_object",
                                    msg,
                                    raw: other.to_string()
                                },
                                64
                            )
                        }
                    }
                }
                if n_rows == 0 {
                    counts.empty_files += 1;
                }
                continue;
            }
            let mut line = 0u32;
            loop {
                line += 1;
                let doc = DocId {
                    file: *fi,
                    row: line,
                };
                let mut buf = Vec::new();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => {
                        fail_or_skip!(path, doc, e.to_string());
                        break;
                    }
                }
                let mut s: &[u8] = &buf;
                if line == 1 && s.starts_with("\u{feff}".as_bytes()) {
                    s = &s[3..];
                }
                if s.iter().all(|b| b.is_ascii_whitespace()) {
                    counts.blank_lines += 1;
                    continue;
                }
                n_rows += 1;
                let n = buf.len();
                if line == 1 && s.len() != buf.len() {
                    buf.drain(..3);
                }
                while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    buf.pop();
                }
                push!(RawItem::Line { doc, bytes: buf }, n);
            }
        }
        if n_rows == 0 {
            counts.empty_files += 1;
        }
    }
    if !batch.is_empty() {
        let _ = tx.send(Ok(batch));
    }
}

/// Whether a `.json` file (possibly compressed) starts with `[` (after a BOM and whitespace),
/// peeking without consuming.
fn is_json_array(path: &Path, r: &mut Box<dyn BufRead + Send>) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let lower = name.to_ascii_lowercase();
    if !strip_compression(&lower).ends_with(".json") {
        return false;
    }
    match r.fill_buf() {
        Ok(buf) => {
            let buf = buf.strip_prefix("\u{feff}".as_bytes()).unwrap_or(buf);
            buf.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[')
        }
        Err(_) => false,
    }
}

fn parse_item(item: RawItem, field: &str) -> Record {
    let bad = |doc, reason, error: String, raw: String| Record {
        doc,
        outcome: RowOutcome::Bad { reason, error, raw },
    };
    match item {
        RawItem::ReadError { doc, msg } => bad(
            doc,
            "read_error",
            format!("{msg}; the rest of this file is unreadable"),
            String::new(),
        ),
        RawItem::BadRow {
            doc,
            reason,
            msg,
            raw,
        } => bad(doc, reason, msg, raw),
        RawItem::Line { doc, bytes } => {
            let line = match String::from_utf8(bytes) {
                Ok(s) => s,
                Err(e) => {
                    let msg = format!("invalid UTF-8: {}", e.utf8_error());
                    return bad(
                        doc,
                        "invalid_utf8",
                        msg,
                        String::from_utf8_lossy(e.as_bytes()).into_owned(),
                    );
                }
            };
            match serde_json::from_str::<Value>(&line) {
                Ok(Value::Object(obj)) => object_record(doc, obj, line, field),
                Ok(other) => bad(
                    doc,
                    "not_an_object",
                    format!(
                        "expected a JSON object, found {}",
                        gradus_data::tokenizer::json_type(&other)
                    ),
                    line,
                ),
                Err(e) => bad(doc, "invalid_json", format!("invalid JSON: {e}"), line),
            }
        }
        RawItem::Object { doc, obj } => {
            let raw = Value::Object(obj).to_string();
            match serde_json::from_str::<Value>(&raw) {
                Ok(Value::Object(obj)) => object_record(doc, obj, raw, field),
                _ => bad(
                    doc,
                    "invalid_json",
                    "cannot re-read the row as JSON".into(),
                    raw,
                ),
            }
        }
    }
}

fn object_record(doc: DocId, mut obj: Map<String, Value>, raw: String, field: &str) -> Record {
    let outcome = match obj.remove(field) {
        Some(Value::String(text)) => RowOutcome::Ok(Parsed { raw, text, obj }),
        Some(other) => RowOutcome::Bad {
            reason: "field_not_text",
            error: format!(
                "field \"{field}\" is {}, expected a string",
                gradus_data::tokenizer::json_type(&other)
            ),
            raw,
        },
        None => {
            let mut keys: Vec<&str> = obj.keys().map(|k| k.as_str()).collect();
            keys.truncate(8);
            RowOutcome::Bad {
                reason: "missing_field",
                error: format!(
                    "no field \"{field}\" (fields: {}); choose one with --field",
                    keys.join(", ")
                ),
                raw,
            }
        }
    };
    Record { doc, outcome }
}

/// Stream `files` (with their global indices) in batches: a reader thread decompresses and splits
/// lines while this thread parses each batch on all cores and hands it to `consume`, in input
/// order. Memory stays at about three batches.
pub fn stream(
    files: &[(u32, PathBuf)],
    opts: &InputOptions,
    label: &str,
    mut consume: impl FnMut(Vec<Record>) -> Result<()>,
) -> Result<StreamCounts> {
    let total: u64 = files
        .iter()
        .map(|(_, p)| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    let bar = if opts.progress {
        let b = ProgressBar::new(total);
        if let Ok(style) = ProgressStyle::with_template(
            "{msg} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            b.set_style(style);
        }
        b.set_message(label.to_string());
        b
    } else {
        ProgressBar::hidden()
    };
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Vec<RawItem>>>(2);
    let field = opts.field.as_str();
    let counts = std::thread::scope(|s| -> Result<StreamCounts> {
        let reader = s.spawn(|| {
            let mut counts = StreamCounts::default();
            read_files(files, opts, &bar, &mut counts, &tx);
            drop(tx);
            counts
        });
        let mut result = Ok(());
        for batch in rx.iter() {
            let batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            let records: Vec<Record> = batch
                .into_par_iter()
                .map(|it| parse_item(it, field))
                .collect();
            if let Err(e) = consume(records) {
                result = Err(e);
                break;
            }
        }
        drop(rx); // a reader blocked on a full channel sees the hang-up and stops
        let counts = reader
            .join()
            .map_err(|_| Error::msg("the reader thread panicked"))?;
        result.map(|_| counts)
    })?;
    bar.finish_and_clear();
    Ok(counts)
}

// ---------------------------------------------------------------- writing

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn extension(&self) -> &'static str {
        match self {
            Compression::None => "jsonl",
            Compression::Gzip => "jsonl.gz",
            Compression::Zstd => "jsonl.zst",
        }
    }
}

impl FromStr for Compression {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Self::None),
            "gzip" | "gz" => Ok(Self::Gzip),
            "zstd" | "zst" => Ok(Self::Zstd),
            _ => Err(Error::config(
                "compress",
                format!("expected none, gzip or zstd, got {s:?}"),
            )),
        }
    }
}

enum Sink {
    Plain(BufWriter<File>),
    Gz(flate2::write::GzEncoder<BufWriter<File>>),
    Zstd(zstd::stream::write::Encoder<'static, BufWriter<File>>),
}

/// A JSONL file written under a unique temporary name (`.<name>.tmp-<pid>-<n>`, so two jobs writing
/// the same output never share one) and renamed into place by [`JsonlWriter::finish`].
pub struct JsonlWriter {
    path: PathBuf,
    tmp: PathBuf,
    sink: Sink,
    pub lines: u64,
}

impl JsonlWriter {
    pub fn create(path: PathBuf, compression: Compression) -> Result<Self> {
        let tmp = gradus_tensor::io::unique_temp_path(&path)?;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::io(&tmp, e))?;
        let f = BufWriter::with_capacity(1 << 20, file);
        let sink = match compression {
            Compression::None => Sink::Plain(f),
            Compression::Gzip => Sink::Gz(flate2::write::GzEncoder::new(
                f,
                flate2::Compression::default(),
            )),
            Compression::Zstd => {
                Sink::Zstd(zstd::stream::write::Encoder::new(f, 3).map_err(|e| Error::io(&tmp, e))?)
            }
        };
        Ok(JsonlWriter {
            path,
            tmp,
            sink,
            lines: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write one line (`line` must not hold a newline).
    pub fn write_line(&mut self, line: &str) -> Result<()> {
        let w: &mut dyn Write = match &mut self.sink {
            Sink::Plain(w) => w,
            Sink::Gz(w) => w,
            Sink::Zstd(w) => w,
        };
        w.write_all(line.as_bytes())
            .and_then(|_| w.write_all(b"\n"))
            .map_err(|e| Error::io(&self.tmp, e))?;
        self.lines += 1;
        Ok(())
    }

    pub fn finish(self) -> Result<PathBuf> {
        let tmp = self.tmp.clone();
        let mut f = match self.sink {
            Sink::Plain(w) => w,
            Sink::Gz(w) => w.finish().map_err(|e| Error::io(&tmp, e))?,
            Sink::Zstd(w) => w.finish().map_err(|e| Error::io(&tmp, e))?,
        };
        f.flush().map_err(|e| Error::io(&tmp, e))?;
        drop(f);
        std::fs::rename(&tmp, &self.path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(&self.path, e)
        })?;
        Ok(self.path)
    }
}

/// The summary every step writes (`summary[.i-of-n].json`) and prints.
///
/// [`StepSummary::check_field`] turns "no row has the field" into an error.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StepSummary {
    pub step: String,
    pub shard: String,
    pub files: usize,
    pub empty_files: usize,
    pub input_bytes: u64,
    pub blank_lines: u64,
    /// Non-blank lines / Parquet rows read (each one is kept or removed).
    pub rows: u64,
    pub kept: u64,
    pub removed: u64,
    pub removed_by_reason: BTreeMap<String, u64>,
    /// The first `missing_field` error (it lists the fields that row has).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_field: Option<String>,
    /// Bytes of the text field over rows that parsed.
    pub text_bytes: u64,
    pub seconds: f64,
    /// Input MB (10^6 bytes, as stored) per second.
    pub mb_per_s: f64,
    pub outputs: BTreeMap<String, String>,
    /// The step's own report (histograms, matches, clusters, ...).
    pub report: Value,
}

impl StepSummary {
    /// An error when rows were read but not one had the text field (a wrong `--field`): it names
    /// the field and the fields the first row had. The outputs are written either way.
    pub fn check_field(&self, field: &str) -> Result<()> {
        let missing = self
            .removed_by_reason
            .get("missing_field")
            .copied()
            .unwrap_or(0);
        if self.rows > 0 && missing == self.rows {
            return Err(Error::config(
                "--field",
                format!(
                    "not one of the {} rows has the field \"{field}\": {}",
                    self.rows,
                    self.missing_field.as_deref().unwrap_or("")
                ),
            ));
        }
        Ok(())
    }
}

/// Where a step writes: `dir/kept{suffix}.jsonl`, `dir/removed{suffix}.jsonl`, `dir/summary{suffix}.json`.
#[derive(Clone, Debug)]
pub struct OutputOptions {
    pub dir: PathBuf,
    pub compression: Compression,
}

/// Refuses an output directory that holds another step's outputs: a `summary*.json` whose `step`
/// differs from `step` (every step's summary names its step). Re-running the same step, or
/// another shard of it, into its own directory is fine.
pub fn check_output_owner(dir: &Path, step: &str) -> Result<()> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("summary") && name.ends_with(".json")) {
            continue;
        }
        let p = entry.path();
        let other = std::fs::read_to_string(&p)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| v.get("step").and_then(Value::as_str).map(String::from))
            .unwrap_or_else(|| "another command".into());
        if other != step {
            return Err(Error::format(
                dir,
                format!(
                    "--out holds the outputs of `gradus data {other}` ({name}); `{step}` would mix its kept/removed rows \
                     with them. Give each step its own --out (the default is curated/<step>)"
                ),
            ));
        }
    }
    Ok(())
}

/// The open `kept` and `removed` files of one step run and the counts that go in its summary.
/// Holds `dir/.gradus-data<suffix>.lock` while open: a second job writing the same shard of the
/// same directory is refused (naming the holder) instead of mixing its rows into these files.
pub struct Outputs {
    _lock: gradus_tensor::lock::DirLock,
    dir: PathBuf,
    suffix: String,
    kept: Option<JsonlWriter>,
    removed: JsonlWriter,
    pub summary: StepSummary,
    files: Vec<PathBuf>,
    started: Instant,
}

impl Outputs {
    /// `with_kept = false` for steps that only report (stats): bad rows still go to `removed`.
    pub fn create(
        step: &str,
        out: &OutputOptions,
        shard: ShardSpec,
        files: &[PathBuf],
        with_kept: bool,
    ) -> Result<Self> {
        std::fs::create_dir_all(&out.dir).map_err(|e| Error::io(&out.dir, e))?;
        let suffix = shard.suffix();
        let lock = gradus_tensor::lock::DirLock::acquire(
            &out.dir,
            &format!(".gradus-data{suffix}.lock"),
            "the output directory",
        )?;
        check_output_owner(&out.dir, step)?;
        check_not_an_input(&out.dir, files)?;
        let ext = out.compression.extension();
        let kept = if with_kept {
            Some(JsonlWriter::create(
                out.dir.join(format!("kept{suffix}.{ext}")),
                out.compression,
            )?)
        } else {
            None
        };
        let removed = JsonlWriter::create(
            out.dir.join(format!("removed{suffix}.{ext}")),
            out.compression,
        )?;
        Ok(Outputs {
            _lock: lock,
            dir: out.dir.clone(),
            suffix,
            kept,
            removed,
            summary: StepSummary {
                step: step.into(),
                shard: shard.to_string(),
                ..Default::default()
            },
            files: files.to_vec(),
            started: Instant::now(),
        })
    }

    /// `path:line` of a row.
    pub fn source(&self, doc: DocId) -> String {
        source_of(&self.files, doc)
    }

    pub fn keep(&mut self, p: &Parsed) -> Result<()> {
        self.summary.rows += 1;
        self.summary.kept += 1;
        self.summary.text_bytes += p.text.len() as u64;
        if let Some(k) = &mut self.kept {
            k.write_line(&p.raw)?;
        }
        Ok(())
    }

    /// Record a removed row. A row that parsed keeps its JSON; a bad one gets its error and lossy text.
    pub fn remove(&mut self, rec: &Record, reason: &str, detail: &Value) -> Result<()> {
        self.summary.rows += 1;
        self.summary.removed += 1;
        *self
            .summary
            .removed_by_reason
            .entry(reason.to_string())
            .or_default() += 1;
        let source = Value::String(self.source(rec.doc));
        let line = match &rec.outcome {
            RowOutcome::Ok(p) => {
                self.summary.text_bytes += p.text.len() as u64;
                format!(
                    "{{\"reason\":{},\"source\":{},\"detail\":{},\"row\":{}}}",
                    Value::String(reason.into()),
                    source,
                    detail,
                    p.raw
                )
            }
            // A JSON value that lacks a usable text field: embed it as is.
            RowOutcome::Bad {
                reason: r @ ("missing_field" | "field_not_text" | "not_an_object"),
                error,
                raw,
            } => {
                if *r == "missing_field" && self.summary.missing_field.is_none() {
                    self.summary.missing_field = Some(error.clone());
                }
                format!(
                    "{{\"reason\":{},\"source\":{},\"detail\":{},\"row\":{}}}",
                    Value::String(reason.into()),
                    source,
                    serde_json::json!({"error": error}),
                    raw
                )
            }
            RowOutcome::Bad { error, raw, .. } => serde_json::json!({
                "reason": reason, "source": source, "detail": {"error": error}, "raw": raw
            })
            .to_string(),
        };
        self.removed.write_line(&line)
    }

    /// Remove a bad row with its own reason; `Ok(Some(parsed))` for a good one.
    pub fn triage<'a>(&mut self, rec: &'a Record) -> Result<Option<&'a Parsed>> {
        match &rec.outcome {
            RowOutcome::Ok(p) => Ok(Some(p)),
            RowOutcome::Bad { reason, .. } => {
                self.remove(rec, reason, &Value::Null)?;
                Ok(None)
            }
        }
    }

    /// Close the files, fill in counts and timing, write `summary{suffix}.json`.
    pub fn finish(mut self, counts: &StreamCounts, report: Value) -> Result<StepSummary> {
        let mut s = std::mem::take(&mut self.summary);
        s.files = counts.files;
        s.empty_files = counts.empty_files;
        s.input_bytes = counts.input_bytes;
        s.blank_lines = counts.blank_lines;
        s.seconds = self.started.elapsed().as_secs_f64();
        s.mb_per_s = counts.input_bytes as f64 / 1e6 / s.seconds.max(1e-9);
        s.report = report;
        if let Some(k) = self.kept.take() {
            s.outputs
                .insert("kept".into(), k.finish()?.display().to_string());
        }
        s.outputs.insert(
            "removed".into(),
            self.removed.finish()?.display().to_string(),
        );
        let sp = self.dir.join(format!("summary{}.json", self.suffix));
        s.outputs.insert("summary".into(), sp.display().to_string());
        let text = serde_json::to_string_pretty(&s).map_err(|e| Error::msg(e.to_string()))?;
        gradus_tensor::io::write_atomic(&sp, text.as_bytes())?;
        Ok(s)
    }
}

/// A path made absolute with symlinks and `..` resolved as far as it exists.
pub fn resolved_path(p: &Path) -> PathBuf {
    if let Ok(c) = p.canonicalize() {
        return c;
    }
    match (p.parent(), p.file_name()) {
        (Some(parent), Some(name)) if !parent.as_os_str().is_empty() => {
            resolved_path(parent).join(name)
        }
        _ => std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf()),
    }
}

/// Refuses an output directory that an input file lies in (a later run over the inputs would read
/// this step's outputs back as data).
pub fn check_not_an_input(out: &Path, files: &[PathBuf]) -> Result<()> {
    let o = resolved_path(out);
    for f in files {
        if resolved_path(f).starts_with(&o) {
            return Err(Error::format(out, format!("--out holds the input file {}: outputs would be read back as inputs; choose another --out", f.display())));
        }
    }
    Ok(())
}

/// `path:line` of a row, given the list of all input files.
pub fn source_of(files: &[PathBuf], doc: DocId) -> String {
    match files.get(doc.file as usize) {
        Some(p) => format!("{}:{}", p.display(), doc.row),
        None => format!("file#{}:{}", doc.file, doc.row),
    }
}

/// What a row-wise step decides for a row that parsed.
pub enum Decision {
    Keep,
    Remove { reason: String, detail: Value },
}

/// Run a row-wise step over one shard: stream, decide on all cores, write in input order.
/// `report` builds the step's report at the end from the decisions it saw (via its own state).
pub fn run_rowwise<F>(
    step: &str,
    files: &[PathBuf],
    shard: ShardSpec,
    input: &InputOptions,
    out: &OutputOptions,
    decide: F,
) -> Result<(Outputs, StreamCounts)>
where
    F: Fn(DocId, &Parsed) -> Decision + Sync,
{
    let mut outputs = Outputs::create(step, out, shard, files, true)?;
    let mine = shard.select(files);
    let counts = stream(&mine, input, step, |records| {
        let decisions: Vec<Option<Decision>> = records
            .par_iter()
            .map(|r| match &r.outcome {
                RowOutcome::Ok(p) => Some(decide(r.doc, p)),
                RowOutcome::Bad { .. } => None,
            })
            .collect();
        for (r, d) in records.iter().zip(decisions) {
            match (d, &r.outcome) {
                (Some(Decision::Keep), RowOutcome::Ok(p)) => outputs.keep(p)?,
                (Some(Decision::Remove { reason, detail }), _) => {
                    outputs.remove(r, &reason, &detail)?
                }
                _ => {
                    outputs.triage(r)?;
                }
            }
        }
        Ok(())
    })?;
    Ok((outputs, counts))
}

// ---------------------------------------------------------------- from files

/// What [`from_files`] did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FromFilesSummary {
    pub rows: u64,
    pub bytes: u64,
    /// Files that matched but are not UTF-8 (left out, listed here).
    pub skipped_not_utf8: Vec<String>,
    pub out: String,
}

/// Turn the files under `dirs` whose name matches `pattern` (a glob on the file name, e.g. `*.py`)
/// into JSONL rows `{"id": path, "text": contents}` written to `out` (compressed by its extension:
/// `.gz`, `.zst`). Files are taken in sorted path order; `recursive` walks subdirectories too
/// (hidden ones skipped); a file or directory whose name matches one of `exclude` is left out.
pub fn from_files(
    dirs: &[PathBuf],
    pattern: &str,
    recursive: bool,
    exclude: &[String],
    out: &Path,
) -> Result<FromFilesSummary> {
    let pat = glob::Pattern::new(pattern)
        .map_err(|e| Error::config("glob", format!("bad pattern {pattern:?}: {e}")))?;
    let excl = exclude
        .iter()
        .map(|x| {
            glob::Pattern::new(x)
                .map_err(|e| Error::config("exclude", format!("bad pattern {x:?}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut paths = Vec::new();
    for d in dirs {
        let mut stack = vec![d.clone()];
        if !d.is_dir() {
            return Err(Error::format(d, "not a directory"));
        }
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
                let entry = entry.map_err(|e| Error::io(&dir, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let p = entry.path();
                let ft = entry.file_type().map_err(|e| Error::io(&p, e))?;
                if excl.iter().any(|x| x.matches(&name)) {
                    continue;
                }
                if ft.is_dir() {
                    if recursive && !name.starts_with('.') {
                        stack.push(p);
                    }
                } else if pat.matches(&name) && p.is_file() {
                    paths.push(p);
                }
            }
        }
    }
    paths.sort();
    let name = out.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let compression = if name.ends_with(".gz") {
        Compression::Gzip
    } else if name.ends_with(".zst") {
        Compression::Zstd
    } else {
        Compression::None
    };
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let mut w = JsonlWriter::create(out.to_path_buf(), compression)?;
    let mut s = FromFilesSummary {
        out: out.display().to_string(),
        ..Default::default()
    };
    for chunk in paths.chunks(256) {
        let texts: Vec<Result<std::result::Result<String, ()>>> = chunk
            .par_iter()
            .map(|p| {
                let bytes = std::fs::read(p).map_err(|e| Error::io(p, e))?;
                Ok(String::from_utf8(bytes).map_err(|_| ()))
            })
            .collect();
        for (p, t) in chunk.iter().zip(texts) {
            match t? {
                Ok(text) => {
                    s.rows += 1;
                    s.bytes += text.len() as u64;
                    let row = serde_json::json!({"id": p.display().to_string(), "text": text});
                    w.write_line(&row.to_string())?;
                }
                Err(()) => s.skipped_not_utf8.push(p.display().to_string()),
            }
        }
    }
    w.finish()?;
    Ok(s)
}
