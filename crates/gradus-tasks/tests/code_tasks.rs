//! Programming tasks with tests, the harness, feedback and bugs (`gradus_tasks::code_tasks`), and
//! the interpreter's per-line execution counts. Every expected value is derived by hand in a
//! comment, or (for random tasks) by an independent reading of the English description.

use gradus_tasks::code_tasks::{
    buggy_program, distinct_tasks, feedback, mutate, passes, run_tests, sample_task,
    split_of_description, CodeSplit, CodeTask, CodeTaskConfig, Family, Mutation, TestOutcome,
};
use gradus_tasks::lang;
use gradus_tensor::rng::Rng;

const LOOP_GOLD: &str =
    "let s = 2;\nlet i = 0;\nwhile i < x {\n    s = s + 3;\n    i = i + 1;\n}\nprint s;\n";
const BRANCH_GOLD: &str = "if x > 5 {\n    print x + 1;\n} else {\n    print 0;\n}\n";

fn affine() -> CodeTask {
    // x * 3 + 1: x = 3 → 10, x = 0 → 1.
    CodeTask::from_parts(
        Family::TwoStep,
        "multiply x by 3, then add 1",
        "let r = x * 3;\nr = r + 1;\nprint r;\n",
        &["x"],
        &[vec![3], vec![0]],
        1000,
    )
    .unwrap()
}

fn fb(task: &CodeTask, program: &str) -> Option<String> {
    feedback(task, program, &run_tests(task, program))
}

#[test]
fn line_counts_of_a_loop() {
    // Line 1 binds x = 3; lines 2, 3 run once; the loop (line 4) is tested for i = 0, 1, 2, 3
    // (4 times); its body (lines 5, 6) runs 3 times; `}` (line 7) is not a statement; print
    // (line 8) once. Steps = 1 + 1 + 1 + 4 + 3 + 3 + 1 = 14.
    let exec = lang::run_with(&format!("let x = 3;\n{LOOP_GOLD}"), &Default::default()).unwrap();
    let want: Vec<(usize, u64)> = vec![(1, 1), (2, 1), (3, 1), (4, 4), (5, 3), (6, 3), (8, 1)];
    assert_eq!(exec.line_counts.into_iter().collect::<Vec<_>>(), want);
    assert_eq!(exec.steps, 14);
    assert_eq!(exec.output, "11"); // 2 + 3·3
}

#[test]
fn expected_outputs_are_the_gold_programs() {
    let t = affine();
    assert_eq!(t.tests[0].expected, "10");
    assert_eq!(t.tests[1].expected, "1");
    assert_eq!(t.prompt(), "# task: multiply x by 3, then add 1\n");
    assert_eq!(
        t.refine_prompt("print x;", "for x = 3 expected 10 but got 3"),
        "# task: multiply x by 3, then add 1\nprint x;\n# feedback: for x = 3 expected 10 but got 3\n# fix:\n"
    );
    assert!(passes(&t, &t.gold));
    // Another program computing the same function passes too (the tests judge outputs).
    assert!(passes(&t, "print 1 + 3 * x;\n"));
}

#[test]
fn feedback_on_a_wrong_value() {
    // x * 3 without the + 1: for x = 3 it prints 9; both lines ran, so no note.
    let t = affine();
    let r = run_tests(&t, "let r = x * 3;\nprint r;\n");
    assert_eq!(r.passed(), 0); // x = 0 gives 0, not 1
    assert!(!r.all_passed());
    assert_eq!(
        fb(&t, "let r = x * 3;\nprint r;\n").unwrap(),
        "for x = 3 expected 10 but got 9"
    );
    // Two printed values are listed.
    assert_eq!(
        fb(&t, "print x;\nprint 1;\n").unwrap(),
        "for x = 3 expected 10 but got 3, 1"
    );
    // More than three values: the first three and the count (a loop cannot flood the message).
    assert_eq!(
        fb(
            &t,
            "let i = 0;\nwhile i < 12 {\n    print x;\n    i = i + 1;\n}\n"
        )
        .unwrap(),
        "for x = 3 expected 10 but got 3, 3, 3, … (12 values)"
    );
    assert_eq!(
        fb(&t, "let r = x;\n").unwrap(),
        "for x = 3 expected 10 but printed nothing"
    );
    // The first failing test is reported: x = 3 passes with `x * 3 + 1` written as 10 only when
    // x = 3, so the x = 0 test is the one named.
    assert_eq!(
        fb(&t, "print 10;\n").unwrap(),
        "for x = 0 expected 1 but got 10"
    );
    assert_eq!(fb(&t, &t.gold), None);
}

#[test]
fn feedback_on_errors() {
    let t = affine();
    // `q` is read on the candidate's line 2 (line 3 after the input header).
    let p = "let r = x * 3;\nr = q + 1;\nprint r;\n";
    let r = run_tests(&t, p);
    assert_eq!(
        r.outcomes[0],
        TestOutcome::Error {
            line: 2,
            message: "undefined variable `q`".into()
        }
    );
    assert_eq!(
        fb(&t, p).unwrap(),
        "for x = 3, line 2 failed: undefined variable `q`"
    );
    // A missing `;` on line 1 is found at the `print` starting line 2.
    let p = "let r = x * 3\nprint r;\n";
    let r = run_tests(&t, p);
    assert!(r.outcomes.is_empty() && r.syntax.is_some());
    assert_eq!(
        fb(&t, p).unwrap(),
        "line 2: syntax error: expected `;`, found `print`"
    );
    // Division by zero for x = 3: 3 / (x - 3).
    assert_eq!(
        fb(&t, "let r = 3;\nprint r / (x - 3);\n").unwrap(),
        "for x = 3, line 2 failed: division by zero"
    );
    // A loop that never ends: step 1 binds x, 2 enters the loop, then the body (odd steps) and
    // the loop test (even) alternate, so step 1001 is the body on the candidate's line 2.
    assert_eq!(
        fb(&t, "while 1 {\n    x = x;\n}\n").unwrap(),
        "for x = 3, line 2 failed: step limit of 1000 exceeded (infinite loop?)"
    );
}

#[test]
fn feedback_names_a_line_that_never_ran() {
    // Gold: x > 5 → x + 1, else 0; tests x = 7 (→ 8) and x = 2 (→ 0). The candidate's threshold 9
    // sends x = 7 to the else branch: it prints 0, and the then branch (line 2) ran 0 times.
    let t = CodeTask::from_parts(
        Family::Branch,
        "if x is greater than 5 print x plus 1, else print 0",
        BRANCH_GOLD,
        &["x"],
        &[vec![7], vec![2]],
        1000,
    )
    .unwrap();
    assert_eq!(t.tests[0].expected, "8");
    assert_eq!(t.tests[1].expected, "0");
    let p = BRANCH_GOLD.replace("x > 5", "x > 9");
    assert_eq!(
        fb(&t, &p).unwrap(),
        "for x = 7 expected 8 but got 0; line 2 ran 0 times"
    );
}

#[test]
fn feedback_compares_loop_counts_with_the_gold_program() {
    // Gold for x = 3: s = 2 + 3·3 = 11, the `while` line tested 4 times (i = 0, 1, 2, 3). With
    // `i <= x` it loops 4 times: s = 2 + 3·4 = 14, tested 5 times (i = 0..=4).
    let t = CodeTask::from_parts(
        Family::Loop,
        "start from 2 and add 3, x times",
        LOOP_GOLD,
        &["x"],
        &[vec![3]],
        1000,
    )
    .unwrap();
    assert_eq!(t.tests[0].expected, "11");
    let p = LOOP_GOLD.replace("i < x", "i <= x");
    match &run_tests(&t, &p).outcomes[0] {
        TestOutcome::Wrong { got, line_counts } => {
            assert_eq!(got, "14");
            assert_eq!(line_counts.get(&3), Some(&5)); // the candidate's line 3, header dropped
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(
        fb(&t, &p).unwrap(),
        "for x = 3 expected 11 but got 14; line 3 ran 5 times, expected 4"
    );
    // A wrong step inside the loop runs it the right number of times: no note.
    let p = LOOP_GOLD.replace("s + 3", "s + 4");
    assert_eq!(fb(&t, &p).unwrap(), "for x = 3 expected 11 but got 14");
}

/// Splits printed code into tokens (operators are space-separated by the printer; `;` is not).
fn tokens(p: &str) -> Vec<String> {
    p.replace(';', " ;")
        .split_whitespace()
        .map(String::from)
        .collect()
}

#[test]
fn mutations_change_exactly_one_token_of_their_kind() {
    let cfg = CodeTaskConfig::default();
    let mut kinds = std::collections::HashSet::new();
    for seed in 0..120 {
        let mut rng = Rng::new(seed);
        let t = sample_task(&mut rng, &cfg).unwrap();
        let (bug, kind) = buggy_program(&t, &mut rng).expect("every family has a failing bug");
        kinds.insert(kind);
        assert!(!passes(&t, &bug), "seed {seed}: the bug passes\n{bug}");
        let (a, b) = (tokens(&t.gold), tokens(&bug));
        assert_eq!(a.len(), b.len(), "seed {seed}: {bug}");
        let diff: Vec<(&String, &String)> = a.iter().zip(&b).filter(|(x, y)| x != y).collect();
        assert_eq!(diff.len(), 1, "seed {seed}: {bug}");
        let (x, y) = diff[0];
        match kind {
            Mutation::Constant => {
                let (x, y): (i64, i64) = (x.parse().unwrap(), y.parse().unwrap());
                assert_eq!((x - y).abs(), 1, "seed {seed}");
            }
            Mutation::Operator => {
                let arith = ["+", "-", "*"];
                let cmp = ["<", "<=", ">", ">="];
                assert!(
                    (arith.contains(&x.as_str()) && arith.contains(&y.as_str()))
                        || (cmp.contains(&x.as_str()) && cmp.contains(&y.as_str())),
                    "seed {seed}: {x} → {y}"
                );
            }
            Mutation::Variable => {
                assert!(
                    x.chars().all(|c| c.is_ascii_lowercase())
                        && y.chars().all(|c| c.is_ascii_lowercase()),
                    "seed {seed}: {x} → {y}"
                );
            }
        }
    }
    assert_eq!(kinds.len(), 3, "all three kinds of bug appear: {kinds:?}");
    // Nothing to mutate: no expression at all.
    assert_eq!(mutate("", &mut Rng::new(0)), None);
    assert_eq!(mutate("let = ;", &mut Rng::new(0)), None);
}

/// The value the English description asks for, read independently of the generator's templates.
fn from_description(d: &str, x: i64, y: i64) -> i64 {
    let num = |w: &str| w.trim_end_matches(',').parse::<i64>().unwrap();
    let w: Vec<&str> = d.split_whitespace().collect();
    let then = |v: i64, w: &[&str]| -> i64 {
        // "then add B" | "then subtract B" | "then multiply by B"
        match w[1] {
            "add" => v + num(w[2]),
            "subtract" => v - num(w[2]),
            "multiply" => v * num(w[3]),
            o => panic!("{o}"),
        }
    };
    match w[0] {
        "add" if w[1] == "x" => then(x + y, &w[4..]), // add x and y, then …
        "subtract" if w[1] == "y" => then(x - y, &w[4..]), // subtract y from x, then …
        "multiply" if w[1] == "x" && w[2] == "and" => then(x * y, &w[4..]),
        "add" => then(x + num(w[1]), &w[4..]), // add A to x, then …
        "subtract" => then(x - num(w[1]), &w[4..]), // subtract A from x, then …
        "multiply" => then(x * num(w[3]), &w[4..]), // multiply x by A, then …
        "if" => {
            // if x is greater|less than A print x plus|minus|times B, else print C
            let a = num(w[5]);
            let hit = if w[3] == "greater" { x > a } else { x < a };
            let (b, c) = (num(w[9]), num(w[12]));
            if hit {
                match w[8] {
                    "plus" => x + b,
                    "minus" => x - b,
                    _ => x * b,
                }
            } else {
                c
            }
        }
        "start" => {
            // start from B and add|subtract A, x times
            let (b, a) = (num(w[2]), num(w[5]));
            if w[4] == "add" {
                b + a * x
            } else {
                b - a * x
            }
        }
        o => panic!("unknown description start {o}"),
    }
}

#[test]
fn random_tasks_agree_with_their_descriptions() {
    let cfg = CodeTaskConfig::default();
    let mut families = std::collections::HashSet::new();
    for seed in 0..200 {
        let t = sample_task(&mut Rng::new(seed), &cfg).unwrap();
        families.insert(t.family);
        // Canonical layout: printing the parsed gold program gives it back.
        assert_eq!(lang::parse(&t.gold).unwrap().to_string(), t.gold);
        assert_eq!(t.tests.len(), cfg.tests);
        let mut inputs: Vec<&Vec<i64>> = t.tests.iter().map(|c| &c.inputs).collect();
        inputs.sort();
        inputs.dedup();
        assert_eq!(inputs.len(), cfg.tests, "distinct inputs");
        for c in &t.tests {
            assert!(c.inputs.iter().all(|v| (0..=cfg.max_input).contains(v)));
            let y = c.inputs.get(1).copied().unwrap_or(0);
            let want = from_description(&t.description, c.inputs[0], y);
            assert_eq!(c.expected, want.to_string(), "{}: {c:?}", t.description);
        }
        assert!(passes(&t, &t.gold));
    }
    assert_eq!(families.len(), 4);
    // Same seed, same task.
    assert_eq!(
        sample_task(&mut Rng::new(7), &cfg).unwrap(),
        sample_task(&mut Rng::new(7), &cfg).unwrap()
    );
}

#[test]
fn splits_are_by_a_hash_of_the_description() {
    // FNV-1a 64 test vectors: "" → 0xcbf29ce484222325 = 14695981039346656037 (mod 10 = 7),
    // "a" → 0xaf63dc4c8601ec8c = 12638187200555641996 (mod 10 = 6): both pretraining (4..=9).
    assert_eq!(split_of_description(""), CodeSplit::Pretrain);
    assert_eq!(split_of_description("a"), CodeSplit::Pretrain);
    let cfg = CodeTaskConfig::default();
    let mut rng = Rng::new(0);
    let held = distinct_tasks(&mut rng, &cfg, CodeSplit::HeldOut, 30, "tasks.heldout").unwrap();
    let train = distinct_tasks(&mut rng, &cfg, CodeSplit::Train, 30, "tasks.pool").unwrap();
    assert!(held
        .iter()
        .all(|t| split_of_description(&t.description) == CodeSplit::HeldOut));
    assert!(held
        .iter()
        .all(|h| train.iter().all(|t| t.description != h.description)));
    // Asking for more distinct tasks than one family has is an error naming the field: one
    // two-inputs family has 3 · 3 · 9 = 81 tasks, about a fifth held out.
    let small = CodeTaskConfig {
        families: vec![Family::TwoInputs],
        ..Default::default()
    };
    let e = distinct_tasks(&mut rng, &small, CodeSplit::HeldOut, 60, "tasks.heldout")
        .unwrap_err()
        .to_string();
    assert!(e.contains("tasks.heldout"), "{e}");
}

#[test]
fn bad_settings_name_the_field() {
    let err = |c: CodeTaskConfig| c.validate_at("tasks").unwrap_err().to_string();
    let e = err(CodeTaskConfig {
        tests: 0,
        ..Default::default()
    });
    assert!(e.contains("tasks.tests"), "{e}");
    let e = err(CodeTaskConfig {
        tests: 11,
        max_input: 9,
        ..Default::default()
    });
    assert!(e.contains("tasks.tests"), "{e}");
    let e = err(CodeTaskConfig {
        families: vec![],
        ..Default::default()
    });
    assert!(e.contains("tasks.families"), "{e}");
    let e = err(CodeTaskConfig {
        max_steps: 3,
        ..Default::default()
    });
    assert!(e.contains("tasks.max_steps"), "{e}");
    // A gold program that fails on an input is refused, naming the input.
    let e = CodeTask::from_parts(
        Family::TwoStep,
        "d",
        "print 1 / x;\n",
        &["x"],
        &[vec![0]],
        100,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("x = 0") && e.contains("division by zero"), "{e}");
}
