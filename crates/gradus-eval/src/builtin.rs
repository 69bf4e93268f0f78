//! Built-in tasks on gradus' synthetic data: nothing to download, the same documents every time.
//!
//! | name          | output type     | documents                                                           | metrics |
//! |---------------|-----------------|---------------------------------------------------------------------|---------|
//! | `arith`       | generate_until  | eval-split arithmetic instructions (`Compute 37+45.`)                | exact_match (first integer of the answer) |
//! | `programs`    | generate_until  | eval-split "what does this program print?" (the tiny language)       | exact_match |
//! | `world_facts` | multiple_choice | every (country, relation) fact of the invented world; the 3 other choices are the same relation's answers for other countries | acc, acc_norm |
//! | `prefs`       | multiple_choice | eval-split synthetic preference pairs: choices (chosen, rejected), gold chosen | acc = ranking accuracy by log-likelihood, acc_norm |
//!
//! Prompts use the instruction task's format (`Question: …\nAnswer: `), so a model trained by the
//! quickstart's SFT recipe is evaluated in the format it learned. Each task is an ordinary
//! [`LoadedTask`]: its configuration is what a YAML file with the same fields would give.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;
use gradus_data::preference::Turns;
use gradus_tasks::instruct::{instructions, task_prompt, Split, TaskKind};
use gradus_tasks::text::{Relation, World};
use serde_json::{json, Map, Value};

use crate::evaluator::LoadedTask;
use crate::task::{Doc, TaskConfig};

/// Documents per generated task.
pub const N_DOCS: usize = 200;
/// Seed of the generated documents.
pub const SEED: u64 = 20_250_101;

/// Names of the built-in tasks.
pub fn names() -> &'static [&'static str] {
    &["arith", "programs", "world_facts", "prefs"]
}

fn docs(name: &str, rows: Vec<Map<String, Value>>) -> BTreeMap<String, Vec<Doc>> {
    let docs = rows
        .into_iter()
        .enumerate()
        .map(|(i, data)| Doc {
            data,
            loc: format!("builtin:{name}: document {i}"),
        })
        .collect();
    BTreeMap::from([("test".to_string(), docs)])
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn config(v: Value) -> Result<TaskConfig> {
    TaskConfig::from_map(obj(v), &PathBuf::from("builtin"))
}

fn generation_task(name: &str, kind: TaskKind, filter_regex: Option<&str>) -> Result<LoadedTask> {
    let rows: Vec<Map<String, Value>> = instructions(N_DOCS * 4, SEED, Split::Eval)
        .into_iter()
        .filter(|i| i.kind == kind)
        .take(N_DOCS)
        .map(|i| obj(json!({"question": i.prompt, "answer": i.answer.trim()})))
        .collect();
    let mut filters = vec![json!({"name": "none", "filter": [{"function": "take_first"}]})];
    if let Some(re) = filter_regex {
        filters.insert(0, json!({"name": "strict", "filter": [{"function": "regex", "regex_pattern": re}, {"function": "take_first"}]}));
    }
    let cfg = config(json!({
        "task": name,
        "dataset_path": "builtin",
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_text": task_prompt("{{question}}"),
        "doc_to_target": "{{answer}}",
        "target_delimiter": "",
        "fewshot_delimiter": "\n\n",
        "generation_kwargs": {"until": ["\n"], "max_gen_toks": 24, "do_sample": false},
        "filter_list": filters,
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": true}],
        "metadata": {"version": 1},
    }))?;
    Ok(LoadedTask {
        cfg,
        origin: PathBuf::from(format!("builtin:{name}")),
        splits: docs(name, rows),
    })
}

fn world_facts() -> Result<LoadedTask> {
    let w = World::get();
    let mut rows = Vec::new();
    for (ci, c) in w.countries.iter().enumerate() {
        for rel in Relation::ALL {
            let fact = w
                .facts()
                .into_iter()
                .find(|f| f.country.name == c.name && f.relation == rel);
            let Some(fact) = fact else { continue };
            let answer_of = |k: usize| -> String {
                let o = &w.countries[k];
                match rel {
                    Relation::Capital => o.capital.clone(),
                    Relation::Language => o.language.clone(),
                    Relation::River => o.name.clone(),
                    Relation::Export => o.export.clone(),
                }
            };
            let n = w.countries.len();
            // Distractors: the same relation's answers for the following countries (deterministic, distinct).
            let mut choices: Vec<String> = Vec::new();
            for d in 1..n {
                let a = answer_of((ci + d) % n);
                if a != fact.answer() && !choices.contains(&a) && choices.len() < 3 {
                    choices.push(a);
                }
            }
            // The gold answer's position rotates so that position bias cannot score.
            let gold = (ci + rel as usize) % (choices.len() + 1);
            choices.insert(gold, fact.answer());
            rows.push(obj(
                json!({"question": fact.question(), "choices": choices, "label": gold}),
            ));
        }
    }
    let cfg = config(json!({
        "task": "world_facts",
        "dataset_path": "builtin",
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "Question: {{question}}\nAnswer:",
        "doc_to_target": "label",
        "doc_to_choice": "choices",
        "metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}],
        "metadata": {"version": 1},
    }))?;
    Ok(LoadedTask {
        cfg,
        origin: PathBuf::from("builtin:world_facts"),
        splits: docs("world_facts", rows),
    })
}

fn text_of(t: &Turns) -> String {
    match t {
        Turns::Text(s) => s.clone(),
        Turns::Chat(m) => m
            .iter()
            .map(|x| x.content.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

fn prefs() -> Result<LoadedTask> {
    let pairs =
        gradus_tasks::prefs::preference_pairs(N_DOCS, SEED, Split::Eval, &Default::default());
    let rows = pairs
        .iter()
        .map(|p| obj(json!({"prompt": text_of(&p.prompt), "choices": [text_of(&p.chosen), text_of(&p.rejected)], "label": 0})))
        .collect();
    let cfg = config(json!({
        "task": "prefs",
        "dataset_path": "builtin",
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "{{prompt}}",
        "doc_to_target": "label",
        "doc_to_choice": "choices",
        "target_delimiter": "",
        "metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}],
        "metadata": {"version": 1},
    }))?;
    Ok(LoadedTask {
        cfg,
        origin: PathBuf::from("builtin:prefs"),
        splits: docs("prefs", rows),
    })
}

/// The built-in task `name`, if there is one.
pub fn load(name: &str) -> Option<Result<LoadedTask>> {
    Some(match name {
        "arith" => generation_task("arith", TaskKind::Arith, Some(r"(-?[0-9]+)")),
        "programs" => generation_task("programs", TaskKind::Program, None),
        "world_facts" => world_facts(),
        "prefs" => prefs(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_load_with_valid_golds() {
        for n in names() {
            let t = load(n).unwrap().unwrap();
            let docs = &t.splits["test"];
            assert!(docs.len() >= 20, "{n}: {} documents", docs.len());
            if t.cfg.output_type == crate::task::OutputType::MultipleChoice {
                for d in docs {
                    let c = d.data["choices"].as_array().unwrap();
                    let g = d.data["label"].as_u64().unwrap() as usize;
                    assert!(g < c.len(), "{n}: gold out of range");
                    // Choices are distinct: the gold is identifiable.
                    let mut s: Vec<&str> = c.iter().map(|x| x.as_str().unwrap()).collect();
                    s.sort();
                    s.dedup();
                    assert_eq!(s.len(), c.len(), "{n}: duplicate choices in {:?}", d.data);
                }
            }
        }
        assert!(load("nope").is_none());
    }
}
