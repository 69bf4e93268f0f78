//! Task files: the subset of lm-evaluation-harness' YAML task format that local-data tasks use.
//!
//! Supported keys (lm-eval 0.4.x `TaskConfig` names and defaults): `task`, `task_alias`, `tag`,
//! `include` (another YAML file, merged under this one), `dataset_path`, `dataset_name`,
//! `dataset_kwargs.data_files`, `training_split`, `validation_split`, `test_split`,
//! `fewshot_split`, `doc_to_text`, `doc_to_target`, `doc_to_choice`, `description`,
//! `target_delimiter` (`" "`), `fewshot_delimiter` (`"\n\n"`), `num_fewshot`, `fewshot_config`
//! (`sampler: default|first_n`, `split`, `samples`, `fewshot_indices` and per-shot overrides of
//! the `doc_to_*` fields and delimiters), `output_type`, `generation_kwargs`, `repeats`,
//! `filter_list`, `metric_list`, `gen_prefix`, `should_decontaminate`,
//! `doc_to_decontamination_query`, `metadata`. Any other key is an error naming the file and the
//! key; Python hooks (`process_docs`, `process_results`, `!function`) are refused by name.
//!
//! Data never comes from the hub: `dataset_path` is `json`/`parquet` with
//! `dataset_kwargs.data_files` (a file, a list, or a map split → files), a local file, or a local
//! directory whose files are matched to splits by name (`test.jsonl`, `test-00000-of-00001.parquet`,
//! under `dataset_name/` when that subdirectory exists), as Hugging Face `datasets` does. Relative
//! paths are taken from the task file's directory first, then from the working directory.
//!
//! `doc_to_*` fields follow lm-eval: a column name selects the column; otherwise the text is a
//! Jinja template (rendered with minijinja, undefined variables are errors, values print as
//! Python prints them), and a rendered target or text made only of digits becomes an index when
//! the task has choices; `doc_to_choice` templates are read back as a Python literal list.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::pyval;

/// The four request shapes of a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputType {
    /// One (context, target) log-likelihood per document.
    Loglikelihood,
    /// The rolling log-likelihood of the target text.
    LoglikelihoodRolling,
    /// One log-likelihood per choice.
    MultipleChoice,
    /// Free generation.
    GenerateUntil,
}

/// One step of a filter pipeline.
#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FilterStep {
    /// `regex`, `take_first`, `majority_vote`, `lowercase`, `uppercase`.
    pub function: String,
    /// `regex`: the pattern (default lm-eval's `#### (\-?[0-9\.\,]+)`).
    pub regex_pattern: Option<String>,
    /// `regex`: which match (Python indexing: negative counts from the end).
    pub group_select: Option<i64>,
    /// `regex`: the answer when nothing matches (default `[invalid]`).
    pub fallback: Option<String>,
}

/// A named filter pipeline (`filter_list` entry).
#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    /// The filter's name (the `,name` suffix of metric keys).
    pub name: String,
    /// Its steps, in order.
    pub filter: Vec<FilterStep>,
}

/// A `metric_list` entry.
#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq)]
pub struct MetricSpec {
    /// The metric's name.
    pub metric: String,
    /// The aggregation (`mean`, `weighted_perplexity`, `bits_per_byte`, `perplexity`, `median`).
    pub aggregation: Option<String>,
    /// Whether a higher value is better.
    pub higher_is_better: Option<bool>,
    /// exact_match: compare case-insensitively.
    #[serde(default)]
    pub ignore_case: bool,
    /// exact_match: drop ASCII punctuation first.
    #[serde(default)]
    pub ignore_punctuation: bool,
    /// exact_match: drop digits first.
    #[serde(default)]
    pub ignore_numbers: bool,
    /// exact_match: regexes removed from both sides first.
    pub regexes_to_ignore: Option<Vec<String>>,
    /// lm-eval's HF-evaluate switch (refused: no Python).
    pub hf_evaluate: Option<bool>,
}

/// `fewshot_config`.
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FewshotConfig {
    /// `default` (seeded random draws) or `first_n`.
    pub sampler: Option<String>,
    /// The split few-shot examples come from (overrides `fewshot_split`).
    pub split: Option<String>,
    /// Literal few-shot documents.
    pub samples: Option<Vec<Map<String, Value>>>,
    /// Restrict the pool to these indices.
    pub fewshot_indices: Option<Vec<usize>>,
    /// Per-shot override of `doc_to_text`.
    pub doc_to_text: Option<Value>,
    /// Per-shot override of `doc_to_choice`.
    pub doc_to_choice: Option<Value>,
    /// Per-shot override of `doc_to_target`.
    pub doc_to_target: Option<Value>,
    /// Per-shot override of `gen_prefix`.
    pub gen_prefix: Option<String>,
    /// Per-shot override of `fewshot_delimiter`.
    pub fewshot_delimiter: Option<String>,
    /// Per-shot override of `target_delimiter`.
    pub target_delimiter: Option<String>,
}

fn d_target_delim() -> String {
    " ".into()
}
fn d_fewshot_delim() -> String {
    "\n\n".into()
}
fn d_output() -> OutputType {
    OutputType::GenerateUntil
}
fn d_repeats() -> usize {
    1
}

/// A task file, as written (after `include` merging).
#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    /// The task's name.
    pub task: String,
    /// Display name.
    pub task_alias: Option<String>,
    /// Tags (informational).
    pub tag: Option<Value>,
    /// `json`, `parquet`, a local file or a local directory.
    pub dataset_path: Option<String>,
    /// Subdirectory (configuration) of a local dataset directory.
    pub dataset_name: Option<String>,
    /// Only `data_files` is used.
    pub dataset_kwargs: Option<Map<String, Value>>,
    /// Training split name.
    pub training_split: Option<String>,
    /// Validation split name.
    pub validation_split: Option<String>,
    /// Test split name.
    pub test_split: Option<String>,
    /// Few-shot split name.
    pub fewshot_split: Option<String>,
    /// Prompt: column name or Jinja template.
    pub doc_to_text: Option<Value>,
    /// Target: column name, Jinja template, or index.
    pub doc_to_target: Option<Value>,
    /// Choices: column name, Jinja template of a list, a list or a map.
    pub doc_to_choice: Option<Value>,
    /// Text before the few-shot examples (a template).
    #[serde(default)]
    pub description: String,
    /// Between a question and its answer.
    #[serde(default = "d_target_delim")]
    pub target_delimiter: String,
    /// After each few-shot example.
    #[serde(default = "d_fewshot_delim")]
    pub fewshot_delimiter: String,
    /// Few-shot settings.
    pub fewshot_config: Option<FewshotConfig>,
    /// Default number of few-shot examples.
    pub num_fewshot: Option<usize>,
    /// Metrics (default per output type).
    pub metric_list: Option<Vec<MetricSpec>>,
    /// Request shape.
    #[serde(default = "d_output")]
    pub output_type: OutputType,
    /// `until`, `max_gen_toks` (and aliases), `do_sample`, `temperature`.
    pub generation_kwargs: Option<Map<String, Value>>,
    /// Generations per document.
    #[serde(default = "d_repeats")]
    pub repeats: usize,
    /// Filter pipelines (default: `none` = take_first).
    pub filter_list: Option<Vec<FilterSpec>>,
    /// Informational.
    #[serde(default)]
    pub should_decontaminate: bool,
    /// Informational.
    pub doc_to_decontamination_query: Option<String>,
    /// Prefix of the answer (a template).
    pub gen_prefix: Option<String>,
    /// `version` is reported with the results.
    pub metadata: Option<Map<String, Value>>,
}

/// Keys lm-eval accepts that need Python code; refused with a reason.
const PYTHON_KEYS: &[&str] = &[
    "process_docs",
    "process_results",
    "custom_dataset",
    "use_prompt",
    "doc_to_image",
    "doc_to_audio",
    "unsafe_code",
];

/// Converts a YAML node into JSON (YAML 1.2 core schema).
fn yaml_to_json(y: &yaml_rust2::Yaml, path: &Path) -> Result<Value> {
    use yaml_rust2::Yaml;
    Ok(match y {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::Real(s) => {
            let f: f64 = s
                .parse()
                .map_err(|_| anyhow!("{}: bad number {s}", path.display()))?;
            serde_json::Number::from_f64(f)
                .map(Value::Number)
                .unwrap_or(Value::Null)
        }
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Array(a) => Value::Array(
            a.iter()
                .map(|x| yaml_to_json(x, path))
                .collect::<Result<_>>()?,
        ),
        Yaml::Hash(h) => {
            let mut m = Map::new();
            for (k, v) in h {
                let key = match k {
                    Yaml::String(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Boolean(b) => b.to_string(),
                    other => bail!("{}: unsupported mapping key {other:?}", path.display()),
                };
                m.insert(key, yaml_to_json(v, path)?);
            }
            Value::Object(m)
        }
        Yaml::Alias(_) | Yaml::BadValue => bail!(
            "{}: unsupported YAML node (alias or bad value)",
            path.display()
        ),
    })
}

/// Reads a YAML file into a JSON map, following `include`.
fn read_yaml_map(path: &Path, depth: usize) -> Result<Map<String, Value>> {
    if depth > 8 {
        bail!(
            "{}: `include` nests more than 8 levels (a cycle?)",
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading task file {}", path.display()))?;
    for (i, line) in text.lines().enumerate() {
        if line.contains("!function") {
            bail!(
                "{}:{}: `!function` (a Python hook) is not supported by gradus; express the field as a Jinja template or a column name",
                path.display(),
                i + 1
            );
        }
    }
    let docs = yaml_rust2::YamlLoader::load_from_str(&text)
        .map_err(|e| anyhow!("{}: invalid YAML: {e}", path.display()))?;
    let Some(doc) = docs.first() else {
        bail!("{}: empty task file", path.display())
    };
    let Value::Object(mut m) = yaml_to_json(doc, path)? else {
        bail!("{}: a task file must be a mapping of keys", path.display())
    };
    if let Some(inc) = m.remove("include") {
        let Value::String(inc) = inc else {
            bail!("{}: field `include` must be a file name", path.display())
        };
        let base_path = path.parent().unwrap_or(Path::new(".")).join(&inc);
        let mut base = read_yaml_map(&base_path, depth + 1)
            .with_context(|| format!("{}: field `include`", path.display()))?;
        for (k, v) in m {
            base.insert(k, v);
        }
        m = base;
    }
    Ok(m)
}

impl TaskConfig {
    /// Parses a task file. Errors name the file and the field.
    pub fn from_file(path: &Path) -> Result<Self> {
        let m = read_yaml_map(path, 0)?;
        Self::from_map(m, path)
    }

    /// Parses a task from a JSON map (`origin` names it in errors).
    pub fn from_map(m: Map<String, Value>, origin: &Path) -> Result<Self> {
        for k in m.keys() {
            if PYTHON_KEYS.contains(&k.as_str()) {
                bail!("{}: field `{k}` needs Python code, which gradus does not run; remove it (preprocess the data file instead)", origin.display());
            }
            if k == "group" {
                bail!(
                    "{}: field `group`: task groups are not supported; list the tasks instead",
                    origin.display()
                );
            }
        }
        let cfg: TaskConfig = serde_json::from_value(Value::Object(m))
            .map_err(|e| anyhow!("{}: {e}", origin.display()))?;
        cfg.validate(origin)?;
        Ok(cfg)
    }

    fn validate(&self, origin: &Path) -> Result<()> {
        let o = origin.display();
        if let Some(fc) = &self.fewshot_config {
            if let Some(s) = &fc.sampler {
                if s != "default" && s != "first_n" {
                    bail!("{o}: field `fewshot_config.sampler`: `{s}` is not supported (default, first_n)");
                }
            }
        }
        if let Some(ms) = &self.metric_list {
            for m in ms {
                if m.hf_evaluate == Some(true) {
                    bail!("{o}: field `metric_list`: metric `{}` asks for HF evaluate (Python), not supported", m.metric);
                }
                crate::metrics::check_metric(&m.metric, self.output_type)
                    .map_err(|e| anyhow!("{o}: field `metric_list`: {e}"))?;
                if let Some(a) = &m.aggregation {
                    crate::metrics::Aggregation::parse(a)
                        .map_err(|e| anyhow!("{o}: field `metric_list.aggregation`: {e}"))?;
                }
            }
        }
        if let Some(fl) = &self.filter_list {
            for f in fl {
                for s in &f.filter {
                    crate::filters::check_step(s)
                        .map_err(|e| anyhow!("{o}: field `filter_list` ({}): {e}", f.name))?;
                }
            }
        }
        if self.output_type == OutputType::MultipleChoice && self.doc_to_choice.is_none() {
            bail!("{o}: field `doc_to_choice` is required for output_type multiple_choice");
        }
        if self.repeats == 0 {
            bail!("{o}: field `repeats` must be ≥ 1");
        }
        if let Some(g) = &self.generation_kwargs {
            for k in g.keys() {
                if ![
                    "until",
                    "max_gen_toks",
                    "max_new_tokens",
                    "max_tokens",
                    "max_completion_tokens",
                    "do_sample",
                    "temperature",
                    "top_p",
                    "top_k",
                    "seed",
                ]
                .contains(&k.as_str())
                {
                    bail!("{o}: field `generation_kwargs.{k}` is not supported (until, max_gen_toks, do_sample, temperature, top_p, top_k)");
                }
            }
        }
        Ok(())
    }

    /// The metadata version (lm-eval's `VERSION`).
    pub fn version(&self) -> Value {
        self.metadata
            .as_ref()
            .and_then(|m| m.get("version").cloned())
            .unwrap_or(Value::String("Yaml".into()))
    }

    /// Effective few-shot settings (`fewshot_config` over the task's own fields).
    pub fn fewshot(&self) -> EffectiveFewshot {
        let fc = self.fewshot_config.clone().unwrap_or_default();
        EffectiveFewshot {
            sampler: fc.sampler.clone().unwrap_or_else(|| "default".into()),
            split: fc.split.clone().or_else(|| self.fewshot_split.clone()),
            samples: fc.samples.clone(),
            fewshot_indices: fc.fewshot_indices.clone(),
            doc_to_text: fc.doc_to_text.clone().or_else(|| self.doc_to_text.clone()),
            doc_to_choice: fc
                .doc_to_choice
                .clone()
                .or_else(|| self.doc_to_choice.clone()),
            doc_to_target: fc
                .doc_to_target
                .clone()
                .or_else(|| self.doc_to_target.clone()),
            gen_prefix: fc.gen_prefix.clone().or_else(|| self.gen_prefix.clone()),
            fewshot_delimiter: fc
                .fewshot_delimiter
                .clone()
                .unwrap_or_else(|| self.fewshot_delimiter.clone()),
            target_delimiter: fc
                .target_delimiter
                .clone()
                .unwrap_or_else(|| self.target_delimiter.clone()),
        }
    }
}

/// `fewshot_config` with the task-level defaults filled in (lm-eval's `FewshotConfig.from_dict`).
#[derive(Clone, Debug)]
pub struct EffectiveFewshot {
    /// `default` or `first_n`.
    pub sampler: String,
    /// Source split.
    pub split: Option<String>,
    /// Literal documents.
    pub samples: Option<Vec<Map<String, Value>>>,
    /// Pool restriction.
    pub fewshot_indices: Option<Vec<usize>>,
    /// Prompt field for shots.
    pub doc_to_text: Option<Value>,
    /// Choices field for shots.
    pub doc_to_choice: Option<Value>,
    /// Target field for shots.
    pub doc_to_target: Option<Value>,
    /// Answer prefix for shots.
    pub gen_prefix: Option<String>,
    /// After each shot.
    pub fewshot_delimiter: String,
    /// Between a shot's question and answer.
    pub target_delimiter: String,
}

// ------------------------------------------------------------------------------------------ data

/// One document and where it came from (`file:line` or `file: row N`).
#[derive(Clone, Debug, PartialEq)]
pub struct Doc {
    /// The row.
    pub data: Map<String, Value>,
    /// Its location, for error messages.
    pub loc: String,
}

fn resolve_rel(p: &str, base: &Path) -> PathBuf {
    let pb = PathBuf::from(p);
    if pb.is_absolute() {
        return pb;
    }
    let near = base.join(&pb);
    if near.exists() {
        near
    } else {
        pb
    }
}

fn hub_error(task: &str, path: &str, origin: &Path) -> anyhow::Error {
    anyhow!(
        "{}: task `{task}`: dataset_path `{path}` is not a local file or directory. gradus never downloads datasets: \
         download it first (e.g. `huggingface-cli download --repo-type dataset {path} --local-dir data/{name}`), then set \
         `dataset_path: data/{name}` (with `dataset_name` naming a subdirectory if the dataset has configurations), or \
         `dataset_path: json` with `dataset_kwargs: {{data_files: {{test: path/to/test.jsonl}}}}`",
        origin.display(),
        name = path.rsplit('/').next().unwrap_or(path)
    )
}

/// The files of each split of a task's dataset.
pub fn split_files(cfg: &TaskConfig, origin: &Path) -> Result<BTreeMap<String, Vec<PathBuf>>> {
    let base = origin.parent().unwrap_or(Path::new(".")).to_path_buf();
    let o = origin.display();
    let dp = cfg
        .dataset_path
        .as_deref()
        .ok_or_else(|| anyhow!("{o}: field `dataset_path` is required"))?;
    let mut out: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    let data_files = cfg
        .dataset_kwargs
        .as_ref()
        .and_then(|k| k.get("data_files"));
    if let Some(kw) = &cfg.dataset_kwargs {
        for k in kw.keys() {
            if k != "data_files" && k != "trust_remote_code" {
                bail!("{o}: field `dataset_kwargs.{k}` is not supported (only data_files)");
            }
        }
    }
    let as_list = |v: &Value, field: &str| -> Result<Vec<PathBuf>> {
        match v {
            Value::String(s) => Ok(vec![resolve_rel(s, &base)]),
            Value::Array(a) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(|s| resolve_rel(s, &base))
                        .ok_or_else(|| anyhow!("{o}: field `{field}`: expected file names"))
                })
                .collect(),
            _ => bail!("{o}: field `{field}`: expected a file name or a list of them"),
        }
    };
    if let Some(df) = data_files {
        match df {
            Value::Object(m) => {
                for (split, v) in m {
                    out.insert(
                        split.clone(),
                        as_list(v, &format!("dataset_kwargs.data_files.{split}"))?,
                    );
                }
            }
            other => {
                out.insert("train".into(), as_list(other, "dataset_kwargs.data_files")?);
            }
        }
        for (split, files) in &out {
            for f in files {
                if !f.exists() {
                    bail!(
                        "{o}: field `dataset_kwargs.data_files.{split}`: {} does not exist",
                        f.display()
                    );
                }
            }
        }
        return Ok(out);
    }
    if matches!(dp, "json" | "parquet" | "csv" | "text") {
        bail!("{o}: dataset_path `{dp}` needs `dataset_kwargs.data_files`");
    }
    let p = resolve_rel(dp, &base);
    if p.is_file() {
        for s in [
            &cfg.training_split,
            &cfg.validation_split,
            &cfg.test_split,
            &cfg.fewshot_split,
        ]
        .into_iter()
        .flatten()
        {
            out.insert(s.clone(), vec![p.clone()]);
        }
        if out.is_empty() {
            out.insert("train".into(), vec![p]);
        }
        return Ok(out);
    }
    if p.is_dir() {
        let root = match &cfg.dataset_name {
            Some(n) if p.join(n).is_dir() => p.join(n),
            Some(n) => bail!(
                "{o}: field `dataset_name`: {} has no subdirectory `{n}`",
                p.display()
            ),
            None => p.clone(),
        };
        let files = gradus_data::dataset::dataset_files(&root)
            .with_context(|| format!("{o}: field `dataset_path`"))?;
        for f in files {
            let name = f
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            // HF datasets' split patterns: the file name starts with the split, then `-`, `_`, `.` or a digit.
            for s in [
                &cfg.training_split,
                &cfg.validation_split,
                &cfg.test_split,
                &cfg.fewshot_split,
            ]
            .into_iter()
            .flatten()
            {
                if let Some(rest) = name.strip_prefix(s.as_str()) {
                    if rest.starts_with(['-', '_', '.'])
                        || rest.starts_with(|c: char| c.is_ascii_digit())
                    {
                        out.entry(s.clone()).or_default().push(f.clone());
                    }
                }
            }
        }
        if out.is_empty() {
            bail!("{o}: no file under {} is named after a split of the task (e.g. test.jsonl, validation-00000-of-00001.parquet)", root.display());
        }
        return Ok(out);
    }
    Err(hub_error(&cfg.task, dp, origin))
}

/// Reads the documents of one file, each with its location.
pub fn read_docs(path: &Path) -> Result<Vec<Doc>> {
    let name = path.to_string_lossy().to_string();
    if name.ends_with(".parquet") {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let reader = parquet::file::reader::SerializedFileReader::new(file)
            .map_err(|e| anyhow!("{}: not a readable Parquet file: {e}", path.display()))?;
        use parquet::file::reader::FileReader;
        let cols: Vec<String> = reader
            .metadata()
            .file_metadata()
            .schema()
            .get_fields()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        let it = gradus_data::dataset::iter_records(
            path,
            &cols,
            std::sync::Arc::new(|m: &Map<String, Value>| Ok(m.clone())),
        )?;
        let mut out = Vec::new();
        for (i, r) in it.enumerate() {
            out.push(Doc {
                data: r?,
                loc: format!("{}: row {i}", path.display()),
            });
        }
        return Ok(out);
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let text = if name.ends_with(".gz") {
        use std::io::Read;
        let mut s = String::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_string(&mut s)
            .with_context(|| format!("{}: not valid gzip/UTF-8", path.display()))?;
        s
    } else {
        String::from_utf8(bytes).map_err(|e| anyhow!("{}: invalid UTF-8: {e}", path.display()))?
    };
    let text = text.trim_start_matches('\u{feff}');
    let mut out = Vec::new();
    if text.trim_start().starts_with('[') {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| anyhow!("{}: invalid JSON: {e}", path.display()))?;
        for (i, x) in v.as_array().into_iter().flatten().enumerate() {
            let Value::Object(m) = x else {
                bail!("{}: element {i}: expected a JSON object", path.display())
            };
            out.push(Doc {
                data: m.clone(),
                loc: format!("{}: element {i}", path.display()),
            });
        }
        return Ok(out);
    }
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let loc = format!("{}:{}", path.display(), i + 1);
        let v: Value =
            serde_json::from_str(line).map_err(|e| anyhow!("{loc}: invalid JSON: {e}"))?;
        let Value::Object(m) = v else {
            bail!("{loc}: expected a JSON object")
        };
        out.push(Doc { data: m, loc });
    }
    Ok(out)
}

/// Documents of each split, missing columns filled with null (as `datasets` unifies a split's schema).
pub fn load_splits(cfg: &TaskConfig, origin: &Path) -> Result<BTreeMap<String, Vec<Doc>>> {
    let mut out = BTreeMap::new();
    for (split, files) in split_files(cfg, origin)? {
        let mut docs = Vec::new();
        for f in files {
            docs.extend(read_docs(&f)?);
        }
        let mut cols: Vec<String> = Vec::new();
        for d in &docs {
            for k in d.data.keys() {
                if !cols.contains(k) {
                    cols.push(k.clone());
                }
            }
        }
        for d in &mut docs {
            for c in &cols {
                if !d.data.contains_key(c) {
                    d.data.insert(c.clone(), Value::Null);
                }
            }
        }
        out.insert(split, docs);
    }
    Ok(out)
}

// ------------------------------------------------------------------------------------ templates

/// Renders Jinja templates as lm-eval's `apply_template` does (strict undefined, trailing newline
/// kept, `regex_replace` filter, Python-style printing of values).
pub struct Templates {
    env: minijinja::Environment<'static>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Templates")
    }
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

fn regex_replace(
    s: String,
    pattern: String,
    repl: String,
    count: Option<usize>,
) -> Result<String, minijinja::Error> {
    let re = regex::Regex::new(&pattern).map_err(|e| {
        minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("regex_replace: bad pattern: {e}"),
        )
    })?;
    // Python's `\1` group references → `${1}`.
    let repl = regex::Regex::new(r"\\(\d+)")
        .map(|r| r.replace_all(&repl, "$${$1}").to_string())
        .unwrap_or(repl);
    Ok(match count {
        Some(n) if n > 0 => re.replacen(&s, n, repl.as_str()).to_string(),
        _ => re.replace_all(&s, repl.as_str()).to_string(),
    })
}

impl Templates {
    /// A fresh environment.
    pub fn new() -> Self {
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        env.add_filter("regex_replace", regex_replace);
        env.set_formatter(|out, _state, value| {
            // Print as Python's str(): None, True, ['a', 'b'].
            let s = if value.is_undefined() {
                String::new()
            } else if let Some(s) = value.as_str() {
                s.to_string()
            } else {
                match serde_json::to_value(value) {
                    Ok(v) => pyval::py_str(&v),
                    Err(_) => value.to_string(),
                }
            };
            out.write_str(&s).map_err(|_| {
                minijinja::Error::new(minijinja::ErrorKind::WriteFailure, "write failed")
            })
        });
        Templates { env }
    }

    /// Renders `template` with the document's fields as variables.
    pub fn render(&self, template: &str, doc: &Map<String, Value>) -> Result<String, String> {
        let ctx = minijinja::Value::from_serialize(doc);
        self.env.render_str(template, ctx).map_err(|e| {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            msg
        })
    }
}

/// What `doc_to_target` (or a digit-only `doc_to_text`) gives: lm-eval's `int | str | list`.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// An index into the choices.
    Index(i64),
    /// A text.
    Text(String),
    /// Several acceptable targets.
    List(Vec<Value>),
}

impl Target {
    fn from_value(v: &Value) -> Target {
        match v {
            Value::Number(n) if n.is_i64() => Target::Index(n.as_i64().unwrap_or(0)),
            Value::String(s) => Target::Text(s.clone()),
            Value::Array(a) => Target::List(a.clone()),
            other => Target::Text(pyval::py_str(other)),
        }
    }

    /// The text shown for this target (Python `str()`).
    pub fn to_text(&self) -> String {
        match self {
            Target::Index(i) => i.to_string(),
            Target::Text(s) => s.clone(),
            Target::List(a) => pyval::py_str(&Value::Array(a.clone())),
        }
    }
}

/// A task's prompt builder: the `doc_to_*` fields of lm-eval's `ConfigurableTask` over one
/// dataset (its column names are the `features`).
#[derive(Debug)]
pub struct DocFns<'a> {
    /// Renders templates.
    pub tpl: &'a Templates,
    /// Column names of the evaluation split.
    pub features: Vec<String>,
    /// Whether the task has `doc_to_choice` (digits become indices).
    pub has_choices: bool,
}

impl DocFns<'_> {
    fn err(&self, doc: &Doc, field: &str, msg: impl std::fmt::Display) -> anyhow::Error {
        anyhow!("{}: field `{field}`: {msg}", doc.loc)
    }

    /// `doc_to_text`: a string, or an index for multiple-input tasks.
    pub fn text(&self, doc: &Doc, f: Option<&Value>, field: &str) -> Result<Target> {
        let Some(f) = f else {
            return Err(self.err(doc, field, "not set in the task"));
        };
        match f {
            Value::Number(n) if n.is_i64() => Ok(Target::Index(n.as_i64().unwrap_or(0))),
            Value::String(s) => {
                if self.features.iter().any(|c| c == s) {
                    return Ok(Target::from_value(doc.data.get(s).unwrap_or(&Value::Null)));
                }
                let t = self
                    .tpl
                    .render(s, &doc.data)
                    .map_err(|e| self.err(doc, field, e))?;
                if is_py_digits(&t) && self.has_choices {
                    return Ok(Target::Index(t.parse().map_err(|_| {
                        self.err(doc, field, format!("index {t} too large"))
                    })?));
                }
                Ok(Target::Text(t))
            }
            other => Err(self.err(
                doc,
                field,
                format!("expected a column name or a template, found {other}"),
            )),
        }
    }

    /// `doc_to_target`.
    pub fn target(&self, doc: &Doc, f: Option<&Value>, field: &str) -> Result<Target> {
        let Some(f) = f else {
            return Err(self.err(doc, field, "not set in the task"));
        };
        match f {
            Value::Number(n) if n.is_i64() => Ok(Target::Index(n.as_i64().unwrap_or(0))),
            Value::Array(a) => Ok(Target::List(a.clone())),
            Value::String(s) => {
                if self.features.iter().any(|c| c == s) {
                    return Ok(Target::from_value(doc.data.get(s).unwrap_or(&Value::Null)));
                }
                let t = self
                    .tpl
                    .render(s, &doc.data)
                    .map_err(|e| self.err(doc, field, e))?;
                if is_py_digits(&t) && self.has_choices {
                    return Ok(Target::Index(t.parse().map_err(|_| {
                        self.err(doc, field, format!("index {t} too large"))
                    })?));
                }
                if t.len() >= 2 && t.starts_with('[') && t.ends_with(']') {
                    if let Ok(v) = pyval::literal_eval(&t) {
                        return Ok(Target::from_value(&v));
                    }
                }
                Ok(Target::Text(t))
            }
            other => Err(self.err(
                doc,
                field,
                format!("expected a column name, a template or a list, found {other}"),
            )),
        }
    }

    /// `doc_to_choice`: the list of choices (strings).
    pub fn choices(&self, doc: &Doc, f: Option<&Value>, field: &str) -> Result<Vec<String>> {
        let Some(f) = f else {
            return Err(self.err(doc, field, "not set in the task"));
        };
        let v = match f {
            Value::String(s) if self.features.iter().any(|c| c == s) => {
                doc.data.get(s).cloned().unwrap_or(Value::Null)
            }
            Value::String(s) => {
                let t = self
                    .tpl
                    .render(s, &doc.data)
                    .map_err(|e| self.err(doc, field, e))?;
                pyval::literal_eval(&t).map_err(|e| self.err(doc, field, e))?
            }
            Value::Array(_) => f.clone(),
            Value::Object(m) => Value::Array(m.values().cloned().collect()),
            other => {
                return Err(self.err(
                    doc,
                    field,
                    format!("expected a column name, a template, a list or a map, found {other}"),
                ))
            }
        };
        let Value::Array(a) = v else {
            return Err(self.err(
                doc,
                field,
                format!("must give a list, gave {}", pyval::py_str(&v)),
            ));
        };
        a.iter()
            .map(|x| match x {
                Value::String(s) => Ok(s.clone()),
                other => Err(self.err(
                    doc,
                    field,
                    format!("choice {} is not a string", pyval::py_repr(other)),
                )),
            })
            .collect()
    }

    /// A template-or-column field that must give text (`description`, `gen_prefix`).
    pub fn resolve_field(&self, doc: &Doc, f: Option<&str>, field: &str) -> Result<Option<String>> {
        let Some(f) = f.filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        if let Some(v) = doc.data.get(f) {
            return Ok(Some(pyval::py_str(v)));
        }
        Ok(Some(
            self.tpl
                .render(f, &doc.data)
                .map_err(|e| self.err(doc, field, e))?,
        ))
    }
}

/// Python's `str.isdigit()` for the texts templates produce (Unicode decimal digits; non-empty).
fn is_py_digits(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_digit())
}
