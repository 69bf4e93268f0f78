//! Dataset readers: JSONL (optionally gzipped), JSON arrays and Parquet, into three example shapes.
//!
//! | shape              | fields (names configurable with [`Fields`])             |
//! |--------------------|---------------------------------------------------------|
//! | `text`             | `text`: string                                          |
//! | `prompt/completion`| `prompt`, `completion`: strings                          |
//! | `chat`             | `messages`: list of `{role, content}`                    |
//!
//! [`Shape::Auto`] picks per row: `messages` ⇒ chat, else `prompt` ⇒ prompt/completion, else `text`.
//! Extra fields are ignored. Errors name the place: `file:line` for JSONL, `file: row N` for
//! Parquet, `file: element N` for JSON arrays, then the field (and the message index for chats).
//!
//! A message's `content` may also be a list of parts `[{"type": "text", "text": ...}]` (OpenAI style):
//! the text parts are concatenated. A `messages` value that is a string holding JSON (a common way to
//! store chats in a Parquet string column) is parsed.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gradus_tensor::{Error, Result};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::{Field, Row};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::tokenizer::json_type;

/// One chat turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// One training example.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Example {
    /// Plain text (pretraining, or SFT on the whole text).
    Text { text: String },
    /// A prompt and its completion; the loss usually covers the completion only.
    PromptCompletion { prompt: String, completion: String },
    /// A conversation; the loss usually covers the assistant turns only.
    Chat { messages: Vec<Message> },
}

impl Example {
    /// The example as one plain document: the text, prompt + completion, or the messages'
    /// contents joined by newlines (tokenizer training, embedding, pretraining on chat data).
    pub fn into_text(self) -> String {
        match self {
            Example::Text { text } => text,
            Example::PromptCompletion { prompt, completion } => format!("{prompt}{completion}"),
            Example::Chat { messages } => messages
                .iter()
                .map(|m| m.content.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// Which shape to read rows as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// Decide per row from the fields present (see the module docs).
    #[default]
    Auto,
    Text,
    PromptCompletion,
    Chat,
}

impl Shape {
    fn label(self) -> &'static str {
        match self {
            Shape::Auto => "auto",
            Shape::Text => "text",
            Shape::PromptCompletion => "prompt/completion",
            Shape::Chat => "chat",
        }
    }
}

/// Names of the columns / JSON keys holding each part of an example.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Fields {
    /// default `"text"`
    pub text: String,
    /// default `"prompt"`
    pub prompt: String,
    /// default `"completion"`
    pub completion: String,
    /// default `"messages"`
    pub messages: String,
}

impl Default for Fields {
    fn default() -> Self {
        Fields {
            text: "text".into(),
            prompt: "prompt".into(),
            completion: "completion".into(),
            messages: "messages".into(),
        }
    }
}

impl Fields {
    fn all(&self) -> [&str; 4] {
        [&self.text, &self.prompt, &self.completion, &self.messages]
    }
}

// ---------------------------------------------------------------- one row -> Example

/// Build an example from one JSON object. The error says what is wrong; the caller adds where.
pub fn example_from_object(
    obj: &Map<String, Value>,
    shape: Shape,
    fields: &Fields,
) -> std::result::Result<Example, String> {
    let shape = match shape {
        Shape::Auto if present(obj, &fields.messages) => Shape::Chat,
        Shape::Auto if present(obj, &fields.prompt) => Shape::PromptCompletion,
        Shape::Auto if present(obj, &fields.text) => Shape::Text,
        Shape::Auto => {
            let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
            keys.sort_unstable();
            return Err(format!(
                "none of the fields \"{}\", \"{}\"/\"{}\" or \"{}\" is present (shape auto); found: {}",
                fields.messages,
                fields.prompt,
                fields.completion,
                fields.text,
                if keys.is_empty() {
                    "no fields".to_string()
                } else {
                    keys.join(", ")
                }
            ));
        }
        s => s,
    };
    let label = shape.label();
    match shape {
        Shape::Text => Ok(Example::Text {
            text: string_field(obj, &fields.text, label)?,
        }),
        Shape::PromptCompletion => Ok(Example::PromptCompletion {
            prompt: string_field(obj, &fields.prompt, label)?,
            completion: string_field(obj, &fields.completion, label)?,
        }),
        Shape::Chat => {
            let name = &fields.messages;
            let v = obj
                .get(name)
                .filter(|v| !v.is_null())
                .ok_or_else(|| missing(name, label))?;
            Ok(Example::Chat {
                messages: messages_from_value(v, name)?,
            })
        }
        Shape::Auto => unreachable!("resolved above"),
    }
}

fn present(obj: &Map<String, Value>, name: &str) -> bool {
    obj.get(name).is_some_and(|v| !v.is_null())
}

fn missing(name: &str, label: &str) -> String {
    format!("missing field \"{name}\" (shape {label})")
}

fn string_field(
    obj: &Map<String, Value>,
    name: &str,
    label: &str,
) -> std::result::Result<String, String> {
    match obj.get(name) {
        None | Some(Value::Null) => Err(missing(name, label)),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) => Err(format!(
            "field \"{name}\": expected a string, found {}",
            json_type(v)
        )),
    }
}

fn messages_from_value(v: &Value, name: &str) -> std::result::Result<Vec<Message>, String> {
    let parsed;
    let v = match v {
        Value::String(s) => {
            parsed = serde_json::from_str::<Value>(s).map_err(|e| {
                format!("field \"{name}\": a string that is not a JSON list of messages: {e}")
            })?;
            &parsed
        }
        v => v,
    };
    let Value::Array(items) = v else {
        return Err(format!(
            "field \"{name}\": expected a list of messages, found {}",
            json_type(v)
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let Value::Object(m) = m else {
                return Err(format!(
                    "field \"{name}\": message {i}: expected an object, found {}",
                    json_type(m)
                ));
            };
            let role = match m.get("role") {
                Some(Value::String(s)) => s.clone(),
                None | Some(Value::Null) => {
                    return Err(format!("field \"{name}\": message {i}: missing \"role\""))
                }
                Some(v) => {
                    return Err(format!(
                        "field \"{name}\": message {i}: \"role\" should be a string, found {}",
                        json_type(v)
                    ))
                }
            };
            let content = match m.get("content") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => content_parts(parts).ok_or_else(|| {
                    format!(
                        "field \"{name}\": message {i}: \"content\" is a list without text parts"
                    )
                })?,
                None | Some(Value::Null) => {
                    return Err(format!(
                        "field \"{name}\": message {i}: missing \"content\""
                    ))
                }
                Some(v) => {
                    return Err(format!(
                        "field \"{name}\": message {i}: \"content\" should be a string, found {}",
                        json_type(v)
                    ))
                }
            };
            Ok(Message { role, content })
        })
        .collect()
}

/// `[{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]` → `"ab"`; None if no text part.
fn content_parts(parts: &[Value]) -> Option<String> {
    let texts: Vec<&str> = parts
        .iter()
        .filter(|p| matches!(p.get("type").and_then(Value::as_str), None | Some("text")))
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect();
    (!texts.is_empty()).then(|| texts.concat())
}

// ---------------------------------------------------------------- JSONL

/// Open a file, decompressing gzip transparently (detected by its magic bytes, so `.gz` or not).
fn open_maybe_gz(path: &Path) -> Result<Box<dyn BufRead + Send>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut r = BufReader::new(file);
    let head = r.fill_buf().map_err(|e| Error::io(path, e))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(
            r,
        ))))
    } else {
        Ok(Box::new(r))
    }
}

/// Turns one JSON object (a JSONL line, a JSON array element, a Parquet row) into a record; the
/// error says what is wrong, the reader adds where.
pub type RowParser<T> =
    Arc<dyn Fn(&Map<String, Value>) -> std::result::Result<T, String> + Send + Sync>;

/// The parser of [`Example`]s of `shape`.
pub fn example_parser(shape: Shape, fields: &Fields) -> RowParser<Example> {
    let fields = fields.clone();
    Arc::new(move |obj| example_from_object(obj, shape, &fields))
}

/// Streaming reader of a JSON-lines file: one record per non-blank line ([`Example`] by default).
pub struct JsonlIter<T = Example> {
    path: PathBuf,
    reader: Box<dyn BufRead + Send>,
    line_no: usize,
    buf: Vec<u8>,
    parse: RowParser<T>,
    done: bool,
}

impl JsonlIter<Example> {
    pub fn open(path: impl AsRef<Path>, shape: Shape, fields: &Fields) -> Result<Self> {
        Self::with_parser(path, example_parser(shape, fields))
    }
}

impl<T> JsonlIter<T> {
    pub fn with_parser(path: impl AsRef<Path>, parse: RowParser<T>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let reader = open_maybe_gz(&path)?;
        Ok(JsonlIter {
            path,
            reader,
            line_no: 0,
            buf: Vec::new(),
            parse,
            done: false,
        })
    }

    fn err(&self, msg: impl Into<String>) -> Error {
        Error::Parse {
            path: self.path.clone(),
            line: self.line_no,
            msg: msg.into(),
        }
    }
}

impl<T> Iterator for JsonlIter<T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        while !self.done {
            self.buf.clear();
            self.line_no += 1;
            match self.reader.read_until(b'\n', &mut self.buf) {
                Ok(0) => self.done = true,
                Ok(_) => {}
                Err(e) => {
                    self.done = true;
                    return Some(Err(self.err(format!("read error: {e}"))));
                }
            }
            let line = match std::str::from_utf8(&self.buf) {
                Ok(s) => s,
                Err(e) => return Some(Err(self.err(format!("invalid UTF-8: {e}")))),
            };
            let line = if self.line_no == 1 {
                line.trim_start_matches('\u{feff}')
            } else {
                line
            };
            if line.trim().is_empty() {
                continue;
            }
            let v: Value = match serde_json::from_str(line) {
                Ok(v) => v,
                Err(e) => return Some(Err(self.err(format!("invalid JSON: {e}")))),
            };
            let Value::Object(obj) = v else {
                return Some(Err(
                    self.err(format!("expected a JSON object, found {}", json_type(&v)))
                ));
            };
            return Some((self.parse)(&obj).map_err(|m| self.err(m)));
        }
        None
    }
}

/// Read a whole JSON-lines file (gzip allowed). Blank lines are skipped.
pub fn read_jsonl(path: impl AsRef<Path>, shape: Shape, fields: &Fields) -> Result<Vec<Example>> {
    JsonlIter::open(path, shape, fields)?.collect()
}

/// Read a `.json` file holding one array of objects (gzip allowed).
pub fn read_json_array(
    path: impl AsRef<Path>,
    shape: Shape,
    fields: &Fields,
) -> Result<Vec<Example>> {
    read_json_array_with(path.as_ref(), &example_parser(shape, fields))
}

fn read_json_array_with<T>(path: &Path, parse: &RowParser<T>) -> Result<Vec<T>> {
    let mut text = String::new();
    open_maybe_gz(path)?
        .read_to_string(&mut text)
        .map_err(|e| Error::io(path, e))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| Error::Parse {
        path: path.into(),
        line: e.line(),
        msg: format!("invalid JSON: {e}"),
    })?;
    let Value::Array(items) = v else {
        return Err(Error::format(
            path,
            format!("expected a JSON array of objects, found {}", json_type(&v)),
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let Value::Object(obj) = item else {
                return Err(Error::format(
                    path,
                    format!("element {i}: expected an object, found {}", json_type(item)),
                ));
            };
            parse(obj).map_err(|m| Error::format(path, format!("element {i}: {m}")))
        })
        .collect()
}

// ---------------------------------------------------------------- Parquet

/// Streaming reader of a Parquet file's rows, through parquet's record API (no arrow). Only the
/// columns named in [`Fields`] (or the given column list) are decoded.
pub struct ParquetIter<T = Example> {
    path: PathBuf,
    rows: parquet::record::reader::RowIter<'static>,
    row: usize,
    parse: RowParser<T>,
}

impl ParquetIter<Example> {
    pub fn open(path: impl AsRef<Path>, shape: Shape, fields: &Fields) -> Result<Self> {
        let cols: Vec<String> = fields.all().iter().map(|s| s.to_string()).collect();
        Self::with_parser(path, &cols, example_parser(shape, fields))
    }
}

impl<T> ParquetIter<T> {
    /// Reads the columns named in `columns` (those present; `"*"` stands for all of them) and
    /// parses each row with `parse`.
    pub fn with_parser(
        path: impl AsRef<Path>,
        columns: &[String],
        parse: RowParser<T>,
    ) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let reader = SerializedFileReader::new(file)
            .map_err(|e| Error::format(&path, format!("not a readable Parquet file: {e}")))?;
        let root = reader.metadata().file_metadata().schema().clone();
        let wanted: Vec<_> = root
            .get_fields()
            .iter()
            .filter(|f| columns.iter().any(|c| c == "*" || c == f.name()))
            .cloned()
            .collect();
        if wanted.is_empty() {
            let cols: Vec<&str> = root.get_fields().iter().map(|f| f.name()).collect();
            return Err(Error::format(
                &path,
                format!(
                    "no column named {}; columns: {}",
                    columns
                        .iter()
                        .map(|c| format!("\"{c}\""))
                        .collect::<Vec<_>>()
                        .join(", "),
                    cols.join(", ")
                ),
            ));
        }
        let proj = parquet::schema::types::Type::group_type_builder(root.name())
            .with_fields(wanted)
            .build()
            .map_err(|e| Error::format(&path, format!("cannot select columns: {e}")))?;
        let rows = parquet::record::reader::RowIter::from_file_into(Box::new(reader))
            .project(Some(proj))
            .map_err(|e| Error::format(&path, format!("cannot select columns: {e}")))?;
        Ok(ParquetIter {
            path,
            rows,
            row: 0,
            parse,
        })
    }
}

impl<T> Iterator for ParquetIter<T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        let row = self.rows.next()?;
        let i = self.row;
        self.row += 1;
        let at = |m: String| Error::format(&self.path, format!("row {i}: {m}"));
        let row = match row {
            Ok(r) => r,
            Err(e) => return Some(Err(at(format!("cannot decode: {e}")))),
        };
        Some(
            row_to_object(&row)
                .map_err(at)
                .and_then(|obj| (self.parse)(&obj).map_err(at)),
        )
    }
}

/// Read all rows of a Parquet file. String columns hold text; `messages` is a list of structs
/// `{role, content}` or a string column of JSON.
pub fn read_parquet(path: impl AsRef<Path>, shape: Shape, fields: &Fields) -> Result<Vec<Example>> {
    ParquetIter::open(path, shape, fields)?.collect()
}

/// A Parquet row as a JSON object (the shape every reader hands on), or why it is not one.
pub fn row_to_object(row: &Row) -> std::result::Result<Map<String, Value>, String> {
    row.get_column_iter()
        .map(|(name, f)| {
            Ok((
                name.clone(),
                field_to_json(f).map_err(|m| format!("column \"{name}\": {m}"))?,
            ))
        })
        .collect()
}

fn field_to_json(f: &Field) -> std::result::Result<Value, String> {
    Ok(match f {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::Bool(*b),
        Field::Str(s) => Value::String(s.clone()),
        Field::Bytes(b) => Value::String(
            String::from_utf8(b.data().to_vec())
                .map_err(|_| "binary value that is not UTF-8 text".to_string())?,
        ),
        Field::Byte(x) => (*x).into(),
        Field::Short(x) => (*x).into(),
        Field::Int(x) => (*x).into(),
        Field::Long(x) => (*x).into(),
        Field::UByte(x) => (*x).into(),
        Field::UShort(x) => (*x).into(),
        Field::UInt(x) => (*x).into(),
        Field::ULong(x) => (*x).into(),
        Field::Float(x) => (*x as f64).into(),
        Field::Double(x) => (*x).into(),
        Field::Group(r) => Value::Object(row_to_object(r)?),
        Field::ListInternal(l) => Value::Array(
            l.elements()
                .iter()
                .map(field_to_json)
                .collect::<std::result::Result<_, _>>()?,
        ),
        Field::MapInternal(m) => Value::Object(
            m.entries()
                .iter()
                .map(|(k, v)| {
                    let k = match field_to_json(k)? {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    Ok((k, field_to_json(v)?))
                })
                .collect::<std::result::Result<_, String>>()?,
        ),
        // Dates, decimals, timestamps: never text; keep their printed form so a type error can show it.
        other => Value::String(other.to_string()),
    })
}

// ---------------------------------------------------------------- dispatch

/// The formats [`read_dataset`] knows, by file name.
fn format_of(path: &Path) -> Option<&'static str> {
    let name = path.file_name()?.to_str()?.to_ascii_lowercase();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    if name.ends_with(".jsonl") || name.ends_with(".ndjson") {
        Some("jsonl")
    } else if name.ends_with(".json") {
        Some("json")
    } else if name.ends_with(".parquet") {
        Some("parquet")
    } else {
        None
    }
}

/// Stream the examples of one file or a directory (files in sorted path order, recursively; hidden
/// files skipped). `.jsonl`/`.ndjson` (+`.gz`) are JSON lines; `.json` (+`.gz`) is JSON lines, or one
/// array of objects if its first character is `[`; `.parquet` is Parquet.
pub fn iter_dataset(
    path: impl AsRef<Path>,
    shape: Shape,
    fields: &Fields,
) -> Result<Box<dyn Iterator<Item = Result<Example>>>> {
    let cols: Vec<String> = fields.all().iter().map(|s| s.to_string()).collect();
    iter_records(path, &cols, example_parser(shape, fields))
}

/// Stream records of any shape from one file or a directory (as [`iter_dataset`]): each JSON
/// object / Parquet row (only `columns` decoded; `"*"`: every column) goes through `parse`; errors
/// name file:line.
pub fn iter_records<T: 'static>(
    path: impl AsRef<Path>,
    columns: &[String],
    parse: RowParser<T>,
) -> Result<Box<dyn Iterator<Item = Result<T>>>> {
    let files = dataset_files(path.as_ref())?;
    let columns = columns.to_vec();
    // Open lazily, one file at a time; an open error is yielded in place of that file's rows.
    let iter = files
        .into_iter()
        .map(move |f| open_one(&f, &columns, parse.clone()))
        .flat_map(|r| match r {
            Ok(it) => it,
            Err(e) => Box::new(std::iter::once(Err(e))) as Box<dyn Iterator<Item = Result<T>>>,
        });
    Ok(Box::new(iter))
}

/// [`read_dataset`], each example with where it came from: `file:line` (JSON lines), `file:[i]`
/// (element `i` of a JSON array), `file:row i` (Parquet; rows from 0), so that a step that skips
/// an example can name it.
pub fn read_dataset_sourced(
    path: impl AsRef<Path>,
    shape: Shape,
    fields: &Fields,
) -> Result<Vec<(Example, String)>> {
    let mut out = Vec::new();
    let cols: Vec<String> = fields.all().iter().map(|s| s.to_string()).collect();
    for f in dataset_files(path.as_ref())? {
        let shown = f.display().to_string();
        match format_of(&f) {
            Some("parquet") => {
                for (i, r) in
                    ParquetIter::with_parser(&f, &cols, example_parser(shape, fields))?.enumerate()
                {
                    out.push((r?, format!("{shown}:row {i}")));
                }
            }
            Some("json") if starts_with_bracket(&f)? => {
                for (i, e) in read_json_array(&f, shape, fields)?.into_iter().enumerate() {
                    out.push((e, format!("{shown}:[{i}]")));
                }
            }
            _ => {
                let mut it = JsonlIter::open(&f, shape, fields)?;
                while let Some(r) = it.next() {
                    out.push((r?, format!("{shown}:{}", it.line_no)));
                }
            }
        }
    }
    Ok(out)
}

/// Read one file or a directory of files; see [`iter_dataset`].
pub fn read_dataset(path: impl AsRef<Path>, shape: Shape, fields: &Fields) -> Result<Vec<Example>> {
    iter_dataset(path, shape, fields)?.collect()
}

/// The documents of `path` as plain strings, in order: a `.txt` file gives one per non-empty line;
/// a dataset file or directory gives each row read as `shape` with `fields` ([`read_dataset`]),
/// made one document by [`Example::into_text`]. With `Shape::Text` every row must have the
/// `fields.text` field (the row is named otherwise).
pub fn read_texts(path: &Path, shape: Shape, fields: &Fields) -> Result<Vec<String>> {
    if path.extension().is_some_and(|e| e == "txt") {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        return Ok(text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(String::from)
            .collect());
    }
    Ok(read_dataset(path, shape, fields)?
        .into_iter()
        .map(Example::into_text)
        .collect())
}

/// The data files `path` stands for: itself, or the known files under it in sorted order.
pub fn dataset_files(path: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_dir() {
        if format_of(path).is_none() {
            return Err(Error::format(
                path,
                "unknown dataset format: expected .jsonl, .ndjson, .json, .parquet (or .jsonl.gz, .json.gz)",
            ));
        }
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let p = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if format_of(&p).is_some() {
                out.push(p);
            }
        }
    }
    out.sort();
    if out.is_empty() {
        return Err(Error::format(
            path,
            "directory holds no .jsonl, .json or .parquet files",
        ));
    }
    Ok(out)
}

fn open_one<T: 'static>(
    path: &Path,
    columns: &[String],
    parse: RowParser<T>,
) -> Result<Box<dyn Iterator<Item = Result<T>>>> {
    match format_of(path) {
        Some("parquet") => Ok(Box::new(ParquetIter::with_parser(path, columns, parse)?)),
        Some("json") if starts_with_bracket(path)? => Ok(Box::new(
            read_json_array_with(path, &parse)?.into_iter().map(Ok),
        )),
        _ => Ok(Box::new(JsonlIter::with_parser(path, parse)?)),
    }
}

fn starts_with_bracket(path: &Path) -> Result<bool> {
    let mut r = open_maybe_gz(path)?;
    loop {
        let buf = r.fill_buf().map_err(|e| Error::io(path, e))?;
        if buf.is_empty() {
            return Ok(false);
        }
        let skip = buf.iter().take_while(|b| b.is_ascii_whitespace()).count();
        if skip < buf.len() {
            return Ok(buf[skip] == b'[');
        }
        r.consume(skip);
    }
}
