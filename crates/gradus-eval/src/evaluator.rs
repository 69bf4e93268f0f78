//! Running a task on a model: documents → prompts (few-shot, lm-eval's order of random draws) →
//! requests → per-sample metrics → aggregates, per-sample logs and a results JSON.
//!
//! Prompts follow lm-eval 0.4.13's `fewshot_context`: the description (a template) as a system
//! message, then for each few-shot document a user turn `doc_to_text` + `target_delimiter` and an
//! assistant turn `answer` + `fewshot_delimiter`, then the document's own `doc_to_text`. As plain
//! text the turns are concatenated; with `apply_chat_template` they are rendered by the model's
//! chat template as a multi-turn conversation (few-shot as multi-turn) with a generation prompt,
//! and multiple-choice continuations drop the target delimiter, as lm-eval does.
//!
//! Few-shot documents come from `fewshot_config.split` / `fewshot_split`, else literal `samples`,
//! else the training, validation or test split, in that order of preference. The `default`
//! sampler draws `Random(seed).sample(pool, n)` with one generator per task, documents in order
//! (lm-eval's `fewshot_random_seed`, 1234); when the few-shot split is the evaluation split it draws
//! n + 1 and drops the document itself. `first_n` takes the first n.
//!
//! Bad rows: a document whose template fails (or whose target is not a valid choice) stops the run
//! with its `file:line`, or, with [`BadRow::Skip`], is counted and listed in the results. A
//! continuation longer than the model's window cannot be scored and is treated the same way;
//! contexts that do not fit are left-truncated as lm-eval does, and counted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::filters;
use crate::lm::{EvalModel, GenRequest};
use crate::metrics::{self, Aggregation, ExactMatchOpts, MetricResult, SampleValue};
use crate::pyrandom::PyRandom;
use crate::task::{load_splits, Doc, DocFns, OutputType, Target, TaskConfig, Templates};

/// What to do with a row that breaks a template or cannot be scored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BadRow {
    /// Stop the run, naming the row.
    #[default]
    Error,
    /// Skip it, count it and list it in the results.
    Skip,
}

impl std::str::FromStr for BadRow {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "error" => Ok(Self::Error),
            "skip" => Ok(Self::Skip),
            o => bail!("--on-bad-row: expected `error` or `skip`, got `{o}`"),
        }
    }
}

/// Settings of one evaluation.
#[derive(Clone, Debug, Serialize)]
pub struct EvalOptions {
    /// Overrides the tasks' `num_fewshot` (except tasks that pin it to 0, as lm-eval).
    pub num_fewshot: Option<usize>,
    /// Only the first N documents.
    pub limit: Option<usize>,
    /// Rows per forward pass.
    pub batch_size: usize,
    /// Render prompts with the model's chat template (few-shot as multi-turn).
    pub apply_chat_template: bool,
    /// Bad-row policy.
    pub on_bad_row: BadRow,
    /// Seed of the few-shot sampler (lm-eval's `fewshot_random_seed`).
    pub fewshot_seed: u64,
    /// Bootstrap replicates for the standard errors of non-mean metrics.
    pub bootstrap_iters: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            num_fewshot: None,
            limit: None,
            batch_size: 8,
            apply_chat_template: false,
            on_bad_row: BadRow::Error,
            fewshot_seed: 1234,
            bootstrap_iters: 1000,
        }
    }
}

/// A task with its documents.
#[derive(Clone, Debug)]
pub struct LoadedTask {
    /// The configuration.
    pub cfg: TaskConfig,
    /// Where it was defined (a YAML file, or `builtin:<name>`).
    pub origin: PathBuf,
    /// Documents per split.
    pub splits: BTreeMap<String, Vec<Doc>>,
}

impl LoadedTask {
    /// Reads a YAML task and its data.
    pub fn from_yaml(path: &Path) -> Result<Self> {
        let cfg = TaskConfig::from_file(path)?;
        let splits = load_splits(&cfg, path)?;
        Ok(Self {
            cfg,
            origin: path.to_path_buf(),
            splits,
        })
    }

    /// A stable hash of the configuration (hex xxh3-128 of its canonical JSON).
    pub fn config_hash(&self, opts: &EvalOptions, num_fewshot: usize) -> String {
        let v = json!({"task": self.cfg, "num_fewshot": num_fewshot, "chat": opts.apply_chat_template, "seed": opts.fewshot_seed, "limit": opts.limit});
        let h = twox_hash::XxHash3_128::oneshot(v.to_string().as_bytes());
        format!("{h:032x}")
    }
}

/// A skipped row.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Skipped {
    /// `file:line`.
    pub loc: String,
    /// Why.
    pub reason: String,
}

/// Outcome of one task.
#[derive(Clone, Debug, Serialize)]
pub struct TaskResult {
    /// Task name.
    pub task: String,
    /// `metadata.version`.
    pub version: Value,
    /// See [`LoadedTask::config_hash`].
    pub config_hash: String,
    /// Shots used.
    pub num_fewshot: usize,
    /// Documents scored.
    pub n_samples: usize,
    /// Requests whose context was cut to fit the window.
    pub truncated: usize,
    /// Rows skipped under `--on-bad-row skip`.
    pub skipped: Vec<Skipped>,
    /// `metric,filter` → result.
    pub metrics: BTreeMap<String, MetricResult>,
    /// Per-sample log rows (one per document and filter).
    #[serde(skip)]
    pub samples: Vec<Value>,
}

/// One prompt part (lm-eval's `Message`): role, content, and the delimiter appended as text.
#[derive(Clone, Debug)]
struct Msg {
    role: &'static str,
    content: String,
    delim: String,
}

fn maybe_delimit(prefix: Option<&str>, suffix: &str, delim: &str) -> String {
    match prefix {
        None | Some("") => suffix.to_string(),
        Some(p) if suffix.is_empty() => p.to_string(),
        Some(p) => {
            let ws = p.chars().last().is_some_and(char::is_whitespace)
                || suffix.chars().next().is_some_and(char::is_whitespace);
            if ws {
                format!("{p}{suffix}")
            } else {
                format!("{p}{delim}{suffix}")
            }
        }
    }
}

fn requires_delimiter(prefix: &str, suffix: &str) -> bool {
    !(prefix.is_empty()
        || prefix.chars().last().is_some_and(char::is_whitespace)
        || suffix.chars().next().is_some_and(char::is_whitespace))
}

/// lm-eval's `build_qa_turn`.
fn qa_turn(
    q: &str,
    choices: Option<&[String]>,
    a: Option<&Target>,
    gen_prefix: Option<&str>,
    tgt_delim: &str,
    few_delim: &str,
    loc: &str,
) -> Result<Vec<Msg>> {
    let has_answer = match a {
        None => false,
        Some(Target::Text(s)) => !s.is_empty(),
        Some(_) => true,
    };
    let gp = gen_prefix.filter(|s| !s.is_empty());
    let user_delim = if (has_answer && gp.is_none()) || gp.is_some_and(|g| requires_delimiter(q, g))
    {
        tgt_delim.to_string()
    } else {
        String::new()
    };
    let mut out = vec![Msg {
        role: "user",
        content: q.to_string(),
        delim: user_delim,
    }];
    if has_answer {
        let text = match (a, choices) {
            (Some(Target::Index(i)), Some(c)) if !c.is_empty() => c
                .get(usize::try_from(*i).map_err(|_| anyhow!("{loc}: target index {i} is negative"))?)
                .cloned()
                .ok_or_else(|| anyhow!("{loc}: target index {i} is out of range for {} choices", c.len()))?,
            (Some(Target::List(l)), _) => match l.first() {
                Some(Value::String(s)) => s.clone(),
                other => bail!("{loc}: the first target of a list must be a string, got {other:?}"),
            },
            (Some(Target::Text(s)), _) => s.clone(),
            (Some(Target::Index(i)), _) => bail!("{loc}: target {i} is a number but the task has no choices (lm-eval needs a string answer here)"),
            (None, _) => unreachable!("has_answer"),
        };
        out.push(Msg {
            role: "assistant",
            content: maybe_delimit(gp, &text, " "),
            delim: few_delim.to_string(),
        });
    } else if let Some(g) = gp {
        out.push(Msg {
            role: "assistant",
            content: g.to_string(),
            delim: String::new(),
        });
    }
    Ok(out)
}

/// The few-shot sampler of one task run.
struct Sampler {
    pool: Vec<Doc>,
    first_n: bool,
    rnd: PyRandom,
}

impl Sampler {
    fn sample(&mut self, n: usize, eval_doc: Option<&Doc>) -> Result<Vec<Doc>> {
        if n == 0 {
            return Ok(vec![]);
        }
        let same = |a: &Doc, b: &Doc| a.data == b.data;
        if self.first_n {
            let pool: Vec<&Doc> = match eval_doc {
                Some(e) => self.pool.iter().filter(|x| !same(x, e)).collect(),
                None => self.pool.iter().collect(),
            };
            if n > pool.len() {
                bail!(
                    "{n} few-shot examples requested but the first_n pool holds {}",
                    pool.len()
                );
            }
            return Ok(pool[..n].iter().map(|d| (*d).clone()).collect());
        }
        let draw = |rnd: &mut PyRandom, pool: &[&Doc], k: usize| -> Result<Vec<Doc>> {
            if k > pool.len() {
                bail!(
                    "{k} few-shot draws requested from a pool of {} documents",
                    pool.len()
                );
            }
            Ok(rnd
                .sample_indices(pool.len(), k)
                .into_iter()
                .map(|i| pool[i].clone())
                .collect())
        };
        let all: Vec<&Doc> = self.pool.iter().collect();
        match eval_doc.filter(|e| !e.data.is_empty()) {
            None => draw(&mut self.rnd, &all, n),
            Some(e) => {
                let got: Vec<Doc> = draw(&mut self.rnd, &all, n + 1)?
                    .into_iter()
                    .filter(|x| !same(x, e))
                    .take(n)
                    .collect();
                if got.len() < n {
                    let pool: Vec<&Doc> = self.pool.iter().filter(|x| !same(x, e)).collect();
                    return draw(&mut self.rnd, &pool, n);
                }
                Ok(got)
            }
        }
    }
}

/// One document's prepared requests.
struct Prepared {
    doc_id: usize,
    doc: Doc,
    context: String,
    target: Target,
    choices: Vec<String>,
    gold: Vec<usize>,
    /// Rolling: the text.
    text: String,
}

fn render_messages(model: &EvalModel, msgs: &[Msg], chat: bool) -> Result<String> {
    if !chat {
        return Ok(msgs
            .iter()
            .map(|m| format!("{}{}", m.content, m.delim))
            .collect());
    }
    let tpl = gradus_data::chat::ChatTemplate::for_tokenizer(&model.tokenizer)?;
    let conv: Vec<gradus_data::dataset::Message> = msgs
        .iter()
        .map(|m| gradus_data::dataset::Message::new(m.role, m.content.clone()))
        .collect();
    Ok(tpl.render(&conv, true)?)
}

/// Runs one task.
pub fn evaluate_task(
    model: &EvalModel,
    task: &LoadedTask,
    opts: &EvalOptions,
) -> Result<TaskResult> {
    let cfg = &task.cfg;
    let o = task.origin.display().to_string();
    let eval_split = cfg
        .test_split
        .clone()
        .or_else(|| cfg.validation_split.clone())
        .ok_or_else(|| {
            anyhow!(
                "{o}: task `{}` names neither `test_split` nor `validation_split`",
                cfg.task
            )
        })?;
    let split_docs = |s: &str, field: &str| -> Result<&Vec<Doc>> {
        task.splits.get(s).ok_or_else(|| {
            anyhow!(
                "{o}: field `{field}`: split `{s}` has no data (splits found: {})",
                task.splits.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
    };
    let mut eval_docs: Vec<Doc> = split_docs(
        &eval_split,
        if cfg.test_split.is_some() {
            "test_split"
        } else {
            "validation_split"
        },
    )?
    .clone();
    if let Some(l) = opts.limit {
        eval_docs.truncate(l);
    }
    if eval_docs.is_empty() {
        bail!(
            "{o}: task `{}`: the evaluation split `{eval_split}` has no documents",
            cfg.task
        );
    }
    let num_fewshot = match (opts.num_fewshot, cfg.num_fewshot) {
        (Some(_), Some(0)) => 0,
        (Some(n), _) => n,
        (None, n) => n.unwrap_or(0),
    };
    let fs = cfg.fewshot();
    let features: Vec<String> = eval_docs[0].data.keys().cloned().collect();
    let tpl = Templates::new();
    let fns = DocFns {
        tpl: &tpl,
        features,
        has_choices: cfg.doc_to_choice.is_some(),
    };

    // The few-shot pool, chosen as lm-eval's `fewshot_docs`.
    let mut sampler = if num_fewshot > 0 {
        let pool: Vec<Doc> = if let Some(s) = &fs.split {
            split_docs(s, "fewshot_split")?.clone()
        } else if let Some(samples) = &fs.samples {
            samples
                .iter()
                .enumerate()
                .map(|(i, m)| Doc {
                    data: m.clone(),
                    loc: format!("{o}: fewshot_config.samples[{i}]"),
                })
                .collect()
        } else if let Some(s) = &cfg.training_split {
            split_docs(s, "training_split")?.clone()
        } else if let Some(s) = &cfg.validation_split {
            split_docs(s, "validation_split")?.clone()
        } else {
            split_docs(&eval_split, "test_split")?.clone()
        };
        let pool = match &fs.fewshot_indices {
            Some(ix) => ix
                .iter()
                .map(|&i| {
                    pool.get(i).cloned().ok_or_else(|| {
                        anyhow!("{o}: field `fewshot_config.fewshot_indices`: {i} is out of range")
                    })
                })
                .collect::<Result<_>>()?,
            None => pool,
        };
        Some(Sampler {
            pool,
            first_n: fs.sampler == "first_n",
            rnd: PyRandom::new(opts.fewshot_seed),
        })
    } else {
        None
    };
    let exclude_self = fs.split == cfg.test_split;

    let mut skipped = Vec::new();
    let mut prepared = Vec::new();
    for (doc_id, doc) in eval_docs.iter().enumerate() {
        let r = (|| -> Result<Prepared> {
            let mut msgs: Vec<Msg> = Vec::new();
            if let Some(d) = fns.resolve_field(doc, Some(&cfg.description), "description")? {
                msgs.push(Msg {
                    role: "system",
                    content: d,
                    delim: String::new(),
                });
            }
            if let Some(s) = sampler.as_mut() {
                for shot in s
                    .sample(num_fewshot, exclude_self.then_some(doc))
                    .with_context(|| format!("{}: few-shot sampling", doc.loc))?
                {
                    let q = match fns.text(&shot, fs.doc_to_text.as_ref(), "doc_to_text")? {
                        Target::Text(t) => t,
                        other => bail!("{}: field `doc_to_text` gave {other:?}: multiple-input tasks are not supported", shot.loc),
                    };
                    let c = match &fs.doc_to_choice {
                        Some(f) => Some(fns.choices(&shot, Some(f), "doc_to_choice")?),
                        None => None,
                    };
                    let a = fns.target(&shot, fs.doc_to_target.as_ref(), "doc_to_target")?;
                    let gp = fns.resolve_field(&shot, fs.gen_prefix.as_deref(), "gen_prefix")?;
                    msgs.extend(qa_turn(
                        &q,
                        c.as_deref(),
                        Some(&a),
                        gp.as_deref(),
                        &fs.target_delimiter,
                        &fs.fewshot_delimiter,
                        &shot.loc,
                    )?);
                }
            }
            let q = match cfg.output_type {
                OutputType::LoglikelihoodRolling => String::new(),
                _ => match fns.text(doc, cfg.doc_to_text.as_ref(), "doc_to_text")? {
                    Target::Text(t) => t,
                    other => bail!("{}: field `doc_to_text` gave {other:?}: multiple-input tasks are not supported", doc.loc),
                },
            };
            let choices = match &cfg.doc_to_choice {
                Some(f) => fns.choices(doc, Some(f), "doc_to_choice")?,
                None => vec![],
            };
            let target = fns.target(doc, cfg.doc_to_target.as_ref(), "doc_to_target")?;
            let gp = fns.resolve_field(doc, cfg.gen_prefix.as_deref(), "gen_prefix")?;
            if opts.apply_chat_template && gp.is_some() {
                bail!(
                    "{}: `gen_prefix` with --apply-chat-template is not supported",
                    doc.loc
                );
            }
            msgs.extend(qa_turn(
                &q,
                Some(&choices),
                None,
                gp.as_deref(),
                &cfg.target_delimiter,
                "",
                &doc.loc,
            )?);
            let context = render_messages(model, &msgs, opts.apply_chat_template)
                .with_context(|| format!("{}: rendering the prompt", doc.loc))?;
            let mut gold = vec![];
            if cfg.output_type == OutputType::MultipleChoice {
                let idx = |t: &Value| -> Option<usize> {
                    match t {
                        Value::Number(n) => n
                            .as_u64()
                            .map(|u| u as usize)
                            .filter(|&u| u < choices.len()),
                        Value::String(s) => choices.iter().position(|c| c == s),
                        _ => None,
                    }
                };
                gold = match &target {
                    Target::Index(i) => usize::try_from(*i)
                        .ok()
                        .filter(|&u| u < choices.len())
                        .into_iter()
                        .collect(),
                    Target::Text(s) => choices.iter().position(|c| c == s).into_iter().collect(),
                    Target::List(l) => l.iter().filter_map(idx).collect(),
                };
                if gold.is_empty() {
                    bail!(
                        "{}: field `doc_to_target`: {} is not one of the {} choices {:?}",
                        doc.loc,
                        target.to_text(),
                        choices.len(),
                        choices
                    );
                }
            }
            let text = if cfg.output_type == OutputType::LoglikelihoodRolling {
                target.to_text()
            } else {
                String::new()
            };
            Ok(Prepared {
                doc_id,
                doc: doc.clone(),
                context,
                target,
                choices,
                gold,
                text,
            })
        })();
        match r {
            Ok(p) => prepared.push(p),
            Err(e) if opts.on_bad_row == BadRow::Skip => skipped.push(Skipped {
                loc: doc.loc.clone(),
                reason: format!("{e:#}"),
            }),
            Err(e) => {
                return Err(e.context(format!(
                    "task `{}` (use --on-bad-row skip to skip and count such rows)",
                    cfg.task
                )))
            }
        }
    }

    let metric_specs: Vec<crate::task::MetricSpec> = match &cfg.metric_list {
        Some(l) => l.clone(),
        None => metrics::default_metrics(cfg.output_type)
            .iter()
            .map(|m| crate::task::MetricSpec {
                metric: m.to_string(),
                aggregation: None,
                higher_is_better: None,
                ignore_case: false,
                ignore_punctuation: false,
                ignore_numbers: false,
                regexes_to_ignore: None,
                hf_evaluate: None,
            })
            .collect(),
    };
    let mut truncated = 0usize;
    // filter name → per-doc (metric → value), plus the log rows.
    let mut per_metric: BTreeMap<String, Vec<SampleValue>> = BTreeMap::new();
    let mut samples: Vec<Value> = Vec::new();
    let l = model.max_length;

    // Check scorability per document first (bad rows are skipped before any batching).
    let mut keep = Vec::new();
    let mut toks: Vec<Vec<(Vec<u32>, Vec<u32>)>> = Vec::new();
    for p in prepared {
        let r = (|| -> Result<Vec<(Vec<u32>, Vec<u32>)>> {
            let pairs: Vec<(Vec<u32>, Vec<u32>)> = match cfg.output_type {
                OutputType::MultipleChoice => {
                    let delim = if opts.apply_chat_template {
                        ""
                    } else {
                        cfg.target_delimiter.as_str()
                    };
                    p.choices
                        .iter()
                        .map(|c| model.encode_pair(&p.context, &format!("{delim}{c}")))
                        .collect::<Result<_>>()?
                }
                OutputType::Loglikelihood => {
                    vec![model.encode_pair(&p.context, &p.target.to_text())?]
                }
                OutputType::LoglikelihoodRolling => {
                    let prefix = model.prefix_token_id()?;
                    crate::lm::rolling_windows(&model.encode(&p.text)?, prefix, l)
                }
                OutputType::GenerateUntil => vec![],
            };
            for (_, cont) in &pairs {
                if cont.len() > l {
                    bail!(
                        "{}: the continuation has {} tokens but the model's context window is {l} tokens: this model cannot score the task",
                        p.doc.loc,
                        cont.len()
                    );
                }
            }
            Ok(pairs)
        })();
        match r {
            Ok(t) => {
                toks.push(t);
                keep.push(p);
            }
            Err(e) if opts.on_bad_row == BadRow::Skip => skipped.push(Skipped {
                loc: p.doc.loc.clone(),
                reason: format!("{e:#}"),
            }),
            Err(e) => return Err(e.context(format!("task `{}`", cfg.task))),
        }
    }

    match cfg.output_type {
        OutputType::MultipleChoice
        | OutputType::Loglikelihood
        | OutputType::LoglikelihoodRolling => {
            let flat: Vec<(Vec<u32>, Vec<u32>)> = toks.iter().flatten().cloned().collect();
            let res = model
                .loglikelihood_tokens(&flat, opts.batch_size)
                .with_context(|| format!("task `{}`", cfg.task))?;
            truncated += res.iter().filter(|r| r.truncated).count();
            let mut k = 0;
            for (p, t) in keep.iter().zip(&toks) {
                let r = &res[k..k + t.len()];
                k += t.len();
                let mut row = Map::new();
                let mut vals: Vec<(String, SampleValue)> = Vec::new();
                match cfg.output_type {
                    OutputType::MultipleChoice => {
                        let lls: Vec<f64> = r.iter().map(|x| x.logprob).collect();
                        let greedy: Vec<bool> = r.iter().map(|x| x.is_greedy).collect();
                        let [acc, acc_norm, acc_bytes, em] =
                            metrics::multiple_choice(&lls, &greedy, &p.choices, &p.gold);
                        for m in &metric_specs {
                            let v = match m.metric.as_str() {
                                "acc" => acc,
                                "acc_norm" => acc_norm,
                                "acc_bytes" => acc_bytes,
                                _ => em,
                            };
                            vals.push((m.metric.clone(), SampleValue::Scalar(v)));
                        }
                        row.insert("loglikelihoods".into(), json!(lls));
                        row.insert("is_greedy".into(), json!(greedy));
                        row.insert("choices".into(), json!(p.choices));
                        row.insert("gold".into(), json!(p.gold));
                    }
                    OutputType::Loglikelihood => {
                        for m in &metric_specs {
                            let v = if m.metric == "perplexity" {
                                r[0].logprob
                            } else {
                                f64::from(u8::from(r[0].is_greedy))
                            };
                            vals.push((m.metric.clone(), SampleValue::Scalar(v)));
                        }
                        row.insert("loglikelihood".into(), json!(r[0].logprob));
                        row.insert("is_greedy".into(), json!(r[0].is_greedy));
                    }
                    _ => {
                        let ll: f64 = r.iter().map(|x| x.logprob).sum();
                        let words = metrics::count_words(&p.text) as f64;
                        let bytes = p.text.len() as f64;
                        for m in &metric_specs {
                            let w = if m.metric == "word_perplexity" {
                                words
                            } else {
                                bytes
                            };
                            vals.push((m.metric.clone(), SampleValue::Pair(ll, w)));
                        }
                        row.insert("loglikelihood".into(), json!(ll));
                        row.insert("words".into(), json!(words));
                        row.insert("bytes".into(), json!(bytes));
                        row.insert("windows".into(), json!(t.len()));
                    }
                }
                row.insert("truncated".into(), json!(r.iter().any(|x| x.truncated)));
                push_row(&mut samples, &mut per_metric, p, row, "none", vals);
            }
        }
        OutputType::GenerateUntil => {
            let g = cfg.generation_kwargs.clone().unwrap_or_else(|| {
                let mut m = Map::new();
                m.insert("until".into(), json!([cfg.fewshot_delimiter]));
                m
            });
            let until: Vec<String> = match g.get("until") {
                None => vec![cfg.fewshot_delimiter.clone()],
                Some(Value::String(s)) => vec![s.clone()],
                Some(Value::Array(a)) => a.iter().map(|x| x.as_str().map(String::from).ok_or_else(|| anyhow!("{o}: field `generation_kwargs.until`: expected strings"))).collect::<Result<_>>()?,
                Some(Value::Null) => vec![],
                Some(other) => bail!("{o}: field `generation_kwargs.until`: expected a string or a list, got {other}"),
            };
            let max_gen_toks = [
                "max_gen_toks",
                "max_new_tokens",
                "max_tokens",
                "max_completion_tokens",
            ]
            .iter()
            .find_map(|k| g.get(*k).and_then(|v| v.as_u64()))
            .unwrap_or(256) as usize;
            let do_sample = g
                .get("do_sample")
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            let temperature = if do_sample {
                g.get("temperature").and_then(|v| v.as_f64()).unwrap_or(1.0)
            } else {
                0.0
            };
            let seed = g.get("seed").and_then(|v| v.as_u64()).unwrap_or(0);
            let mut reqs = Vec::new();
            for p in &keep {
                for rep in 0..cfg.repeats {
                    reqs.push(GenRequest {
                        context: p.context.clone(),
                        until: until.clone(),
                        max_gen_toks,
                        temperature,
                        seed: seed + rep as u64,
                    });
                }
                let n = model.encode(&p.context)?.len();
                if n + max_gen_toks > l {
                    truncated += 1;
                }
            }
            let outs = model
                .generate_until(&reqs, opts.batch_size)
                .with_context(|| format!("task `{}`", cfg.task))?;
            let filters: Vec<crate::task::FilterSpec> =
                cfg.filter_list.clone().unwrap_or_else(|| {
                    vec![crate::task::FilterSpec {
                        name: "none".into(),
                        filter: vec![crate::task::FilterStep {
                            function: "take_first".into(),
                            regex_pattern: None,
                            group_select: None,
                            fallback: None,
                        }],
                    }]
                });
            let em_opts: Vec<(String, ExactMatchOpts)> = metric_specs
                .iter()
                .map(|m| -> Result<_> {
                    let regexes = m
                        .regexes_to_ignore
                        .iter()
                        .flatten()
                        .map(|r| {
                            regex::Regex::new(r).map_err(|e| {
                                anyhow!("{o}: field `metric_list.regexes_to_ignore`: {r:?}: {e}")
                            })
                        })
                        .collect::<Result<_>>()?;
                    Ok((
                        m.metric.clone(),
                        ExactMatchOpts {
                            ignore_case: m.ignore_case,
                            ignore_punctuation: m.ignore_punctuation,
                            ignore_numbers: m.ignore_numbers,
                            regexes_to_ignore: regexes,
                        },
                    ))
                })
                .collect::<Result<_>>()?;
            for f in &filters {
                for (i, p) in keep.iter().enumerate() {
                    let resps = &outs[i * cfg.repeats..(i + 1) * cfg.repeats];
                    let filtered = filters::apply(&f.filter, resps)?;
                    let answer = filtered.first().cloned().unwrap_or_default();
                    let gold = if cfg.doc_to_choice.is_some() {
                        match &p.target {
                            Target::Index(ix) => {
                                p.choices.get(*ix as usize).cloned().ok_or_else(|| {
                                    anyhow!("{}: target index {ix} out of range", p.doc.loc)
                                })?
                            }
                            t => t.to_text(),
                        }
                    } else {
                        p.target.to_text()
                    };
                    let golds: Vec<String> = match &p.target {
                        Target::List(l) if cfg.doc_to_choice.is_none() => {
                            l.iter().map(crate::pyval::py_str).collect()
                        }
                        _ => vec![gold.clone()],
                    };
                    let vals: Vec<(String, SampleValue)> = em_opts
                        .iter()
                        .map(|(name, eo)| {
                            let v = if golds
                                .iter()
                                .any(|gd| metrics::exact_match(&answer, gd, eo) > 0.0)
                            {
                                1.0
                            } else {
                                0.0
                            };
                            (name.clone(), SampleValue::Scalar(v))
                        })
                        .collect();
                    let mut row = Map::new();
                    row.insert("resps".into(), json!(resps));
                    row.insert("filtered_resps".into(), json!(filtered));
                    row.insert("answer".into(), json!(answer));
                    push_row(&mut samples, &mut per_metric, p, row, &f.name, vals);
                }
            }
        }
    }

    let mut out_metrics = BTreeMap::new();
    for (key, xs) in &per_metric {
        let metric = key.split(',').next().unwrap_or(key);
        let spec = metric_specs.iter().find(|m| m.metric == metric);
        let agg = match spec.and_then(|s| s.aggregation.as_deref()) {
            Some(a) => Aggregation::parse(a)?,
            None => Aggregation::default_for(metric),
        };
        out_metrics.insert(
            key.clone(),
            metrics::summarize(agg, xs, opts.bootstrap_iters, opts.fewshot_seed),
        );
    }
    let n_samples = keep.len();
    if n_samples == 0 {
        bail!(
            "{o}: task `{}`: every document was skipped ({} bad rows; first: {:?})",
            cfg.task,
            skipped.len(),
            skipped.first()
        );
    }
    Ok(TaskResult {
        task: cfg.task.clone(),
        version: cfg.version(),
        config_hash: task.config_hash(opts, num_fewshot),
        num_fewshot,
        n_samples,
        truncated,
        skipped,
        metrics: out_metrics,
        samples,
    })
}

fn push_row(
    samples: &mut Vec<Value>,
    per_metric: &mut BTreeMap<String, Vec<SampleValue>>,
    p: &Prepared,
    extra: Map<String, Value>,
    filter: &str,
    vals: Vec<(String, SampleValue)>,
) {
    let mut row = Map::new();
    row.insert("doc_id".into(), json!(p.doc_id));
    row.insert("loc".into(), json!(p.doc.loc));
    row.insert("doc".into(), Value::Object(p.doc.data.clone()));
    row.insert("prompt".into(), json!(p.context));
    row.insert(
        "target".into(),
        match &p.target {
            Target::Index(i) => json!(i),
            Target::Text(s) => json!(s),
            Target::List(l) => json!(l),
        },
    );
    row.insert("filter".into(), json!(filter));
    for (k, v) in extra {
        row.insert(k, v);
    }
    let mut m = Map::new();
    for (name, v) in vals {
        m.insert(name.clone(), serde_json::to_value(v).unwrap_or(Value::Null));
        per_metric
            .entry(format!("{name},{filter}"))
            .or_default()
            .push(v);
    }
    row.insert("metrics".into(), Value::Object(m));
    samples.push(Value::Object(row));
}

/// Writes `samples_<task>.jsonl` for each task and `results.json` into `out`, each atomically.
pub fn write_outputs(
    out: &Path,
    model_dir: &Path,
    opts: &EvalOptions,
    results: &[TaskResult],
) -> Result<PathBuf> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut tasks = Map::new();
    for r in results {
        let mut s = String::new();
        for row in &r.samples {
            s.push_str(&row.to_string());
            s.push('\n');
        }
        let p = out.join(format!("samples_{}.jsonl", r.task));
        gradus_tensor::io::write_atomic(&p, s.as_bytes())?;
        let mut flat = Map::new();
        for (k, m) in &r.metrics {
            let (name, filter) = k.split_once(',').unwrap_or((k, "none"));
            flat.insert(k.clone(), json!(m.value));
            flat.insert(
                format!("{name}_stderr,{filter}"),
                m.stderr.map_or(json!("N/A"), |x| json!(x)),
            );
        }
        let mut v = serde_json::to_value(r)?;
        if let Value::Object(o) = &mut v {
            o.insert("flat".into(), Value::Object(flat));
            o.insert(
                "samples_file".into(),
                json!(p.file_name().map(|x| x.to_string_lossy().to_string())),
            );
        }
        tasks.insert(r.task.clone(), v);
    }
    let doc = json!({
        "model": model_dir.display().to_string(),
        "options": opts,
        "results": tasks,
        "gradus_version": env!("CARGO_PKG_VERSION"),
    });
    let p = out.join("results.json");
    gradus_tensor::io::write_atomic(&p, serde_json::to_string_pretty(&doc)?.as_bytes())?;
    Ok(p)
}
