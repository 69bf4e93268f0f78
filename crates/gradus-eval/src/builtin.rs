//! Built-in tasks on gradus' synthetic data: nothing to download, the same documents every time.
//!
//! | name          | output type     | documents                                                           | metrics |
//! |---------------|-----------------|---------------------------------------------------------------------|---------|
//! | `arith`       | generate_until  | eval-split arithmetic instructions (`Compute 37+45.`)                | exact_match (`strict`: last integer of the answer line, so `82` and `37+45=82` both count) |
//! | `programs`    | generate_until  | eval-split "what does this program print?" (the tiny language)       | exact_match (`strict`: last integer of the answer line; `none`: the whole line) |
//! | `world_facts` | multiple_choice | every (country, relation) fact of the invented world; the 3 other choices are the same relation's answers for other countries | acc, acc_norm |
//! | `synthetic_pairs` | multiple_choice | eval-split synthetic preference pairs: choices (chosen, rejected), gold chosen | acc = ranking accuracy by log-likelihood, acc_norm |
//!
//! Prompts use the instruction task's format (`Question: …\nAnswer: `), so a model trained by the
//! quickstart's SFT recipe is evaluated in the format it learned. Each task is an ordinary
//! [`LoadedTask`]: its configuration is what a YAML file with the same fields would give.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;
use gradus_data::preference::Turns;
use gradus_tasks::instruct::{
    instructions_with, stated_value, task_prompt, Split, TaskConfig as InstructTask, TaskKind,
};
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
    &["arith", "programs", "world_facts", "synthetic_pairs"]
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

/// A `generate_until` task of `n` eval-split instructions of `kind`, drawn from `task` with `seed`
/// (the built-in `arith` and `programs` are this with the default task, [`N_DOCS`] and [`SEED`];
/// `gradus quickstart` measures its own task's distribution through the same definition). The
/// target is the value the answer states ([`stated_value`]: `82` for `37+45=82`); the `strict`
/// filter reads the generation's last integer, so both the bare value and the restated equation
/// (`37+45=82`, the format [`ArithAnswer::Equation`] teaches) or a program's trace
/// (`a=5, b=5*3=15, print 15-2=13`, [`gradus_tasks::programs::trace`]) are scored; the `none`
/// filter asks for the bare value.
///
/// [`ArithAnswer::Equation`]: gradus_tasks::ArithAnswer::Equation
pub fn generation_task_with(
    name: &str,
    kind: TaskKind,
    task: &InstructTask,
    n: usize,
    seed: u64,
) -> Result<LoadedTask> {
    let rows: Vec<Map<String, Value>> = instructions_with(n * 4 + 100, seed, Split::Eval, task)
        .into_iter()
        .filter(|i| i.kind == kind)
        .take(n)
        .map(|i| {
            let one_line = !i.answer.trim().contains('\n');
            let target = match (kind, stated_value(&i.answer)) {
                (TaskKind::Arith | TaskKind::Program, Some(v)) if one_line => v.to_string(),
                _ => i.answer.trim().to_string(),
            };
            obj(json!({"question": i.prompt, "answer": target}))
        })
        .collect();
    let mut filters = vec![json!({"name": "none", "filter": [{"function": "take_first"}]})];
    if kind != TaskKind::Fact {
        // The last integer of the line: `82` of `82`, of `37+45=82` and of a program's trace
        // `a=5, b=5*3=15, print 15-2=13`.
        filters.insert(0, json!({"name": "strict", "filter": [{"function": "regex", "regex_pattern": r"(-?[0-9]+)", "group_select": -1}, {"function": "take_first"}]}));
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
        "generation_kwargs": {"until": ["\n"], "max_gen_toks": 64, "do_sample": false},
        "filter_list": filters,
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": true}],
        "metadata": {"version": 2},
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

fn synthetic_pairs() -> Result<LoadedTask> {
    let pairs = gradus_tasks::synthetic_pairs::preference_pairs(
        N_DOCS,
        SEED,
        Split::Eval,
        &Default::default(),
    );
    let rows = pairs
        .iter()
        .map(|p| obj(json!({"prompt": text_of(&p.prompt), "choices": [text_of(&p.chosen), text_of(&p.rejected)], "label": 0})))
        .collect();
    let cfg = config(json!({
        "task": "synthetic_pairs",
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
        origin: PathBuf::from("builtin:synthetic_pairs"),
        splits: docs("synthetic_pairs", rows),
    })
}

/// The built-in task `name`, if there is one.
pub fn load(name: &str) -> Option<Result<LoadedTask>> {
    Some(match name {
        "arith" => generation_task_with(
            "arith",
            TaskKind::Arith,
            &InstructTask::default(),
            N_DOCS,
            SEED,
        ),
        "programs" => generation_task_with(
            "programs",
            TaskKind::Program,
            &InstructTask::default(),
            N_DOCS,
            SEED,
        ),
        "world_facts" => world_facts(),
        "synthetic_pairs" => synthetic_pairs(),
        // The task's name until 2026-11: "prefs" now names only the `[prefs]` recipe section.
        "prefs" => Err(anyhow::anyhow!(
            "the built-in task `prefs` is now called `synthetic_pairs`"
        )),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_old_name_prefs_says_the_new_one() {
        let e = load("prefs").unwrap().unwrap_err().to_string();
        assert!(e.contains("synthetic_pairs"), "{e}");
        assert!(names().contains(&"synthetic_pairs") && !names().contains(&"prefs"));
    }

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

    /// `arith`'s `strict` filter reads the last integer of the answer line, so the bare value and
    /// the restated problem (`ArithAnswer::Equation`, the quickstart's format) both score, and a
    /// wrong value does not; targets are the value alone, also for a task drawn in equation form.
    #[test]
    fn arith_scores_bare_values_and_equations() {
        let t = load("arith").unwrap().unwrap();
        let filters = t.cfg.filter_list.as_ref().unwrap();
        let strict = &filters.iter().find(|f| f.name == "strict").unwrap().filter;
        let got = |r: &str| crate::filters::apply(strict, &[r.to_string()]).unwrap();
        assert_eq!(got("82"), vec!["82"]);
        assert_eq!(got("37+45=82"), vec!["82"]);
        assert_eq!(got("90-17=73"), vec!["73"]);
        assert_eq!(got("37+45=83"), vec!["83"]);
        let eq = InstructTask {
            arith_answer: gradus_tasks::ArithAnswer::Equation,
            ..Default::default()
        };
        let e = generation_task_with("arith", TaskKind::Arith, &eq, 30, SEED).unwrap();
        let plain = &t.splits["test"][..30];
        for (a, b) in e.splits["test"].iter().zip(plain) {
            // Same problems as the default task's (the answer format draws nothing), value targets.
            assert_eq!(a.data, b.data);
            let q = a.data["question"].as_str().unwrap();
            let expr = q.trim_start_matches("Compute ").trim_end_matches('.');
            let (x, rest) = expr.split_at(expr.find(['+', '-', '*']).unwrap());
            let (x, y): (i64, i64) = (x.parse().unwrap(), rest[1..].parse().unwrap());
            let want = match &rest[..1] {
                "+" => x + y,
                "-" => x - y,
                _ => x * y,
            };
            assert_eq!(a.data["answer"].as_str().unwrap(), want.to_string());
        }
    }
}
