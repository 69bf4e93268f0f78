//! `gradus data example KIND`: the built-in synthetic data written out as the files the recipes
//! read with `data.source = FILE`, so a user sees every format and can edit a real file (and the
//! README's commands run on built-in data, without downloads). With the same `n` and seed, the
//! rows are the ones the recipe generates for `data.source = "synthetic"`:
//!
//! | kind      | rows                                                      | read by |
//! |-----------|-----------------------------------------------------------|---------|
//! | `corpus`  | `{"text"}`: pretraining documents (`data.synthetic_examples`, seed `run.seed`) | `train pretrain`, `tokenizer train`, `gradus data …` |
//! | `chats`   | `{"messages": [user, assistant]}`: the instruction task as conversations | `train sft --config configs/sft/jsonl-chat.toml` |
//! | `pairs`   | `{"prompt", "chosen", "rejected", "chosen_fraction"}`: synthetic preference pairs (`prefs.synthetic_pairs`) | `train dpo`, `train reward`, `eval reward\|ranking --data` |
//! | `prompts` | `{"prompt", "answer", "kind"}`: RL prompts with the columns the rewards read (`data.synthetic_prompts`) | `train rl --set data.source=…` |
//! | `problems` | HumanEval's format (`task_id`, `prompt`, `canonical_solution`, `test`, `entry_point`): the arithmetic task as Python functions | `eval code --data`, `data decontaminate --eval` |
//!
//! `chats` is the one kind with no synthetic twin row for row: the built-in SFT data is in the
//! `Question: …\nAnswer: ` format, the chat file holds the same questions and answers as turns.

use std::path::Path;

use gradus_data::preference::PreferencePair;
use gradus_tasks::{
    corpus, instructions_with, preference_pairs, task_prompt, CorpusConfig, Split, TaskConfig,
};
use gradus_tensor::{Error, Result};
use serde_json::{json, Value};

/// What to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExampleKind {
    Corpus,
    Chats,
    Pairs,
    Prompts,
    Problems,
}

/// The rows of `kind`: `n` of them, generated with `seed` (see the module docs).
pub fn example_rows(kind: ExampleKind, n: usize, seed: u64) -> Result<Vec<Value>> {
    Ok(match kind {
        ExampleKind::Corpus => corpus(&CorpusConfig::styled(n, seed, &Default::default()))?
            .into_iter()
            .map(|t| json!({ "text": t }))
            .collect(),
        ExampleKind::Chats => instructions_with(n, seed, Split::Train, &TaskConfig::default())
            .into_iter()
            .map(|i| {
                json!({"messages": [
                    {"role": "user", "content": i.prompt},
                    {"role": "assistant", "content": i.answer},
                ]})
            })
            .collect(),
        ExampleKind::Pairs => preference_pairs(n, seed, Split::Train, &Default::default())
            .iter()
            .map(pair_row)
            .collect::<Result<_>>()?,
        ExampleKind::Prompts => instructions_with(n, seed, Split::Train, &TaskConfig::default())
            .into_iter()
            .map(|i| json!({"prompt": task_prompt(&i.prompt), "answer": i.answer, "kind": i.kind}))
            .collect(),
        ExampleKind::Problems => arith_problems(n, seed),
    })
}

/// `n` arithmetic instructions as HumanEval problems: `def solve():` with the question as its
/// docstring, returning the answer; the test checks the returned value.
fn arith_problems(n: usize, seed: u64) -> Vec<Value> {
    let task = TaskConfig {
        mix: gradus_tasks::TaskMix {
            arith: 1.0,
            program: 0.0,
            fact: 0.0,
        },
        ..TaskConfig::default()
    };
    instructions_with(n, seed, Split::Train, &task)
        .into_iter()
        .enumerate()
        .filter_map(|(i, ins)| {
            let value = gradus_tasks::stated_value(&ins.answer)?;
            Some(json!({
                "task_id": format!("gradus-arith/{i}"),
                "prompt": format!("def solve():\n    \"\"\"{}\"\"\"\n", ins.prompt),
                "canonical_solution": format!("    return {value}\n"),
                "test": format!("def check(candidate):\n    assert candidate() == {value}\n"),
                "entry_point": "solve",
            }))
        })
        .collect()
}

fn pair_row(p: &PreferencePair) -> Result<Value> {
    let mut v = serde_json::to_value(p).map_err(|e| Error::msg(format!("pair: {e}")))?;
    if let Some(o) = v.as_object_mut() {
        o.retain(|_, x| !x.is_null());
    }
    Ok(v)
}

/// Writes `rows` as JSONL to `out` (atomically).
pub fn write_jsonl(out: &Path, rows: &[Value]) -> Result<()> {
    let mut s = String::new();
    for r in rows {
        s.push_str(&r.to_string());
        s.push('\n');
    }
    gradus_tensor::io::write_atomic(out, s.as_bytes())
}
