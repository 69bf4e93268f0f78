//! `gradus eval run`: resolve the task list, load the model, evaluate, write the outputs.
//!
//! A task item is a YAML file, a directory of YAML files, or the name of a built-in task
//! ([`crate::builtin`]); items are separated by commas.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::evaluator::{evaluate_task, write_outputs, EvalOptions, LoadedTask, TaskResult};
use crate::lm::EvalModel;

/// Resolves `a,b,path.yaml,dir/` into loaded tasks.
pub fn resolve_tasks(spec: &str) -> Result<Vec<LoadedTask>> {
    let mut out = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let p = Path::new(item);
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            files.sort();
            if files.is_empty() {
                bail!("{}: no .yaml task files in this directory", p.display());
            }
            for f in files {
                out.push(LoadedTask::from_yaml(&f)?);
            }
        } else if p.is_file() || item.ends_with(".yaml") || item.ends_with(".yml") {
            out.push(LoadedTask::from_yaml(p)?);
        } else if let Some(t) = crate::builtin::load(item) {
            out.push(t?);
        } else {
            bail!(
                "task `{item}` is neither a task file nor a built-in task (built-in: {})",
                crate::builtin::names().join(", ")
            );
        }
    }
    if out.is_empty() {
        bail!("--tasks: no task given");
    }
    Ok(out)
}

/// Evaluates `tasks` on the model in `model_dir` and writes the outputs into `out`.
pub fn run(
    model_dir: &Path,
    tasks: &str,
    out: &Path,
    opts: &EvalOptions,
    max_length: Option<usize>,
) -> Result<(Vec<TaskResult>, PathBuf)> {
    let tasks = resolve_tasks(tasks)?;
    let mut model = EvalModel::load(model_dir)?;
    if let Some(l) = max_length {
        model.max_length = l;
    }
    let mut results = Vec::new();
    for t in &tasks {
        results.push(evaluate_task(&model, t, opts)?);
    }
    let p = write_outputs(out, &model.dir, opts, &results)?;
    Ok((results, p))
}
