//! `[eval]` in every recipe: lm-eval-compatible tasks (gradus-eval) run on the model being
//! trained every `every` steps, logged to metrics.jsonl as `eval/<task>/<metric>` (filters other
//! than `none` append `_<filter>` to the metric). Tasks are resolved when the run starts, so a
//! typo fails before the first step. gradus-train calls gradus-eval, never the reverse.
//!
//! `samples`: prompts greedily continued at the same steps (up to `sample_tokens` tokens, or EOS),
//! logged as `samples/<i>` = prompt + continuation (text in TensorBoard, a table of samples over
//! steps in report.html).

use std::path::Path;

use gradus_data::tokenizer::Tokenizer;
use gradus_eval::{evaluate_task, EvalModel, EvalOptions, LoadedTask};
use gradus_model::generate::{generate, SamplingConfig};
use gradus_model::Decoder;
use gradus_tensor::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// The `[eval]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct EvalSection {
    /// Built-in task names or YAML task files (as `gradus eval run --tasks`). Empty: no evaluation.
    pub tasks: Vec<String>,
    /// Evaluate every this many optimiser steps (and at the last step).
    pub every: u64,
    /// Only the first N documents of each task.
    pub limit: Option<usize>,
    /// Few-shot examples (default: each task's own).
    pub num_fewshot: Option<usize>,
    /// Rows per forward pass (0 = 8).
    pub batch_size: usize,
    /// Prompts to continue greedily at every evaluation step (`samples/<i>` in metrics.jsonl).
    pub samples: Vec<String>,
    /// Most tokens generated per sample (0 = 32).
    pub sample_tokens: usize,
}

impl EvalSection {
    /// Checks the section.
    pub fn validate(&self) -> Result<()> {
        if (!self.tasks.is_empty() || !self.samples.is_empty()) && self.every == 0 {
            return Err(Error::config(
                "eval.every",
                "must be positive when eval.tasks or eval.samples is set",
            ));
        }
        Ok(())
    }
}

/// Resolved tasks, ready to run during training.
pub struct EvalHook {
    tasks: Vec<LoadedTask>,
    opts: EvalOptions,
    every: u64,
    samples: Vec<String>,
    sample_tokens: usize,
}

impl EvalHook {
    /// Resolves the section's tasks; `None` when there is nothing to evaluate.
    pub fn new(sec: &EvalSection) -> Result<Option<Self>> {
        sec.validate()?;
        if sec.tasks.is_empty() && sec.samples.is_empty() {
            return Ok(None);
        }
        let tasks = if sec.tasks.is_empty() {
            Vec::new()
        } else {
            gradus_eval::run::resolve_tasks(&sec.tasks.join(","))
                .map_err(|e| Error::msg(format!("eval.tasks: {e:#}")))?
        };
        let opts = EvalOptions {
            num_fewshot: sec.num_fewshot,
            limit: sec.limit,
            batch_size: if sec.batch_size == 0 {
                8
            } else {
                sec.batch_size
            },
            bootstrap_iters: 200,
            ..Default::default()
        };
        Ok(Some(Self {
            tasks,
            opts,
            every: sec.every,
            samples: sec.samples.clone(),
            sample_tokens: if sec.sample_tokens == 0 {
                32
            } else {
                sec.sample_tokens
            },
        }))
    }

    /// Whether `step` (of `total`) is an evaluation step.
    pub fn due(&self, step: u64, total: u64) -> bool {
        step.is_multiple_of(self.every) || step == total
    }

    /// Evaluates `model` on every task: `eval/<task>/<metric>` → value.
    pub fn run(&self, model: &Decoder, tok: &Tokenizer, dir: &Path) -> Result<Map<String, Value>> {
        let m = EvalModel::from_parts(model.clone(), tok.clone(), dir.to_path_buf());
        let mut out = Map::new();
        for t in &self.tasks {
            let r = evaluate_task(&m, t, &self.opts)
                .map_err(|e| Error::msg(format!("eval during training: {e:#}")))?;
            for (k, v) in &r.metrics {
                let (metric, filter) = k.split_once(',').unwrap_or((k, "none"));
                let name = if filter == "none" {
                    metric.to_string()
                } else {
                    format!("{metric}_{filter}")
                };
                out.insert(format!("eval/{}/{name}", r.task), json!(v.value));
            }
        }
        if !self.samples.is_empty() {
            let prompts = self
                .samples
                .iter()
                .map(|p| tok.encode(p, true))
                .collect::<Result<Vec<_>>>()?;
            let cfg = SamplingConfig {
                max_new_tokens: self.sample_tokens,
                ..Default::default()
            };
            let eos: Vec<u32> = tok.eos_id().into_iter().collect();
            let outs = generate(model, &prompts, &cfg, &eos, &mut |_, _| false)?;
            for (i, (p, o)) in self.samples.iter().zip(outs).enumerate() {
                let text = tok.decode(&o.tokens, true)?;
                out.insert(format!("samples/{i}"), json!(format!("{p}{text}")));
            }
        }
        Ok(out)
    }
}
