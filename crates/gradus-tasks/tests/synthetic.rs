//! The synthetic corpus, the tiny language and the instruction task.

use std::collections::HashSet;

use gradus_tasks::lang::{self, BinOp, ErrorKind, Expr, Limits, Pos};
use gradus_tasks::text::{self, Relation};
use gradus_tasks::*;
use gradus_tensor::rng::Rng;
use proptest::prelude::*;

fn out(src: &str) -> String {
    match run(src) {
        Ok(s) => s,
        Err(e) => panic!("{src:?} failed: {e}"),
    }
}

fn err(src: &str) -> ProgramError {
    match run(src) {
        Ok(s) => panic!("{src:?} should fail, printed {s:?}"),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------------------------------------
// The interpreter on hand-written programs (expected values worked out in the comments).

#[test]
fn precedence_and_associativity() {
    assert_eq!(out("print 2 + 3 * 4;"), "14"); // 3*4 first
    assert_eq!(out("print (2 + 3) * 4;"), "20");
    assert_eq!(out("print 10 - 4 - 3;"), "3"); // (10-4)-3, not 10-(4-3)=9
    assert_eq!(out("print 100 / 10 / 5;"), "2"); // (100/10)/5
    assert_eq!(out("print 7 % 4 * 2;"), "6"); // (7%4)*2 = 3*2
    assert_eq!(out("print 2 * 3 % 4;"), "2"); // (2*3)%4 = 6%4
    assert_eq!(out("print -2 * 3;"), "-6");
    assert_eq!(out("print 2 - -3;"), "5");
    assert_eq!(out("print -(2 + 3);"), "-5");
    assert_eq!(out("print -7 / 2;"), "-3"); // truncates toward zero
    assert_eq!(out("print -7 % 3;"), "-1"); // sign of the dividend
    assert_eq!(out("print 1 + 2 < 4;"), "1"); // (1+2) < 4
    assert_eq!(out("print 1 < 2 && 3 > 4 || 5 == 5;"), "1"); // (1 && 0) || 1
    assert_eq!(out("print 1 || 0 && 0;"), "1"); // 1 || (0 && 0): && binds tighter
    assert_eq!(out("print !0 + 1;"), "2"); // (!0) + 1
    assert_eq!(out("print !(3 - 3) * 7;"), "7");
    assert_eq!(
        out("print 3 != 3;\nprint 3 <= 3;\nprint 4 >= 5;"),
        "0\n1\n0"
    );
}

#[test]
fn variables_blocks_and_loops() {
    assert_eq!(out("let a = 3;\nlet b = a * 4 + 1;\nprint b;"), "13");
    // Sum 1..=5 = 15.
    let sum = "let i = 1;\nlet s = 0;\nwhile i <= 5 {\n    s = s + i;\n    i = i + 1;\n}\nprint s;";
    assert_eq!(out(sum), "15");
    // Evens in 0..10: 0 2 4 6 8 -> 5.
    let evens =
        "let i = 0; let n = 0;\nwhile i < 10 { if i % 2 == 0 { n = n + 1; } i = i + 1; }\nprint n;";
    assert_eq!(out(evens), "5");
    // Nested loops: sum over i<3, j<4 of i*j = (0+1+2)*(0+1+2+3) = 18.
    let nested = "let t = 0; let i = 0;\nwhile i < 3 {\n  let j = 0;\n  while j < 4 { t = t + i * j; j = j + 1; }\n  i = i + 1;\n}\nprint t;";
    assert_eq!(out(nested), "18");
    // else-if chain: 15 -> first branch, 10 -> second, 7 -> last.
    let fizz = |x: i64| {
        format!("let x = {x};\nif x % 15 == 0 {{ print 15; }} else if x % 5 == 0 {{ print 5; }} else {{ print x; }}")
    };
    assert_eq!(out(&fizz(15)), "15");
    assert_eq!(out(&fizz(10)), "5");
    assert_eq!(out(&fizz(7)), "7");
    // Shadowing inside a block; assignment reaches the outer variable.
    assert_eq!(
        out("let a = 1;\nif 1 { let a = 2; print a; }\nprint a;"),
        "2\n1"
    );
    assert_eq!(out("let a = 1;\nif 1 { a = 5; }\nprint a;"), "5");
    assert_eq!(out("let a = 1;\nlet a = a + 1;\nprint a;"), "2");
    // A false `if` without `else` does nothing; an empty program prints nothing.
    assert_eq!(out("if 0 { print 1; }\nprint 2;"), "2");
    assert_eq!(out(""), "");
    // Comments (as in corpus documents).
    assert_eq!(out("let a = 3;\nprint a * 2; # six\n# output: 6"), "6");
}

#[test]
fn short_circuit_skips_errors() {
    // The right side would divide by zero; it is never evaluated.
    assert_eq!(out("print 0 && 1 / 0;"), "0");
    assert_eq!(out("print 1 || 1 / 0;"), "1");
}

#[test]
fn runtime_errors_name_line_and_column() {
    // "print a / (a - 1);": `/` is column 9 of line 2.
    let e = err("let a = 1;\nprint a / (a - 1);");
    assert_eq!(e.kind, ErrorKind::DivisionByZero);
    assert_eq!((e.line(), e.col()), (2, 9));
    assert_eq!(e.to_string(), "line 2, column 9: division by zero");
    assert_eq!(err("print 5 % 0;").kind, ErrorKind::DivisionByZero);
    // Undefined variable `b` at line 2, column 7.
    let e = err("let a = 1;\nprint b;");
    assert_eq!(
        (e.kind.clone(), e.line(), e.col()),
        (ErrorKind::UndefinedVariable("b".into()), 2, 7)
    );
    // Assigning an undeclared variable: the statement start, line 1 column 1.
    let e = err("z = 1;");
    assert_eq!(
        (e.kind.clone(), e.pos),
        (
            ErrorKind::UndefinedVariable("z".into()),
            Pos { line: 1, col: 1 }
        )
    );
    // A block's `let` does not outlive the block: line 2 column 7.
    let e = err("if 1 { let z = 1; }\nprint z;");
    assert_eq!(
        (e.kind.clone(), e.line(), e.col()),
        (ErrorKind::UndefinedVariable("z".into()), 2, 7)
    );
    // Overflow.
    assert_eq!(
        err("print 9223372036854775807 + 1;").kind,
        ErrorKind::Overflow
    );
    assert_eq!(
        err("let m = 0 - 9223372036854775807 - 1;\nprint m / -1;").kind,
        ErrorKind::Overflow
    );
    // Step limit: a loop that never ends.
    let e = err("let i = 0;\nwhile i < 10 {\n    i = i - 1;\n}");
    assert_eq!(e.kind, ErrorKind::StepLimit(10_000));
    assert!(e.line() >= 2, "{e}");
    // A custom limit: `while i < 3` takes 1 (let) + 1 (while) + 3 * (1 body + 1 test) = 8 steps.
    let src = "let i = 0;\nwhile i < 3 { i = i + 1; }";
    assert_eq!(
        lang::run_with(src, &Limits { max_steps: 8 }).unwrap().steps,
        8
    );
    assert_eq!(
        lang::run_with(src, &Limits { max_steps: 7 })
            .unwrap_err()
            .kind,
        ErrorKind::StepLimit(7)
    );
}

#[test]
fn syntax_errors_name_line_and_column() {
    let e = err("let a = ;");
    assert!(e.is_syntax());
    assert_eq!(e.pos, Pos { line: 1, col: 9 });
    assert_eq!(
        e.to_string(),
        "line 1, column 9: expected an expression, found `;`"
    );
    let e = err("let a = 1");
    assert_eq!(
        e.to_string(),
        "line 1, column 10: expected `;`, found end of input"
    );
    // "print 1 < 2 < 3;": the second `<` is column 13.
    let e = err("print 1 < 2 < 3;");
    assert_eq!(
        (e.kind.clone(), e.col()),
        (ErrorKind::ChainedComparison, 13)
    );
    assert_eq!(out("print (1 < 2) < 3;"), "1");
    // "let a = 1 $ 2;": `$` is column 11.
    let e = err("let a = 1 $ 2;");
    assert_eq!(
        (e.kind.clone(), e.col()),
        (ErrorKind::UnexpectedChar('$'), 11)
    );
    assert!(matches!(
        err("print 99999999999999999999;").kind,
        ErrorKind::IntegerTooLarge(_)
    ));
    let e = err("if 1 { print 1;\n");
    assert_eq!((e.line(), e.col()), (2, 1));
    assert!(e.to_string().contains("expected `}`"), "{e}");
    assert!(err("print 1;\n}").is_syntax());
    assert!(err("let 3 = 4;")
        .to_string()
        .contains("expected a variable name"));
    assert!(err("while 1 print 1;").to_string().contains("expected `{`"));
    assert!(err("else { }").is_syntax());
}

#[test]
fn hostile_nesting_is_refused_without_overflowing_the_stack() {
    let deep_parens = format!("print {}1{};", "(".repeat(100_000), ")".repeat(100_000));
    assert_eq!(err(&deep_parens).kind, ErrorKind::TooDeep);
    let long_chain = format!("print 1{};", " + 1".repeat(100_000));
    assert_eq!(err(&long_chain).kind, ErrorKind::TooDeep);
    let negations = format!("print {}1;", "-".repeat(100_000));
    assert_eq!(err(&negations).kind, ErrorKind::TooDeep);
    let blocks = format!("{}{}", "if 1 { ".repeat(10_000), "}".repeat(10_000));
    assert_eq!(err(&blocks).kind, ErrorKind::TooDeep);
    let else_ifs = format!("if 0 {{ }}{}", " else if 0 { }".repeat(10_000));
    assert_eq!(err(&else_ifs).kind, ErrorKind::TooDeep);
    // Within the limits it works: 150 terms, 50 parentheses.
    assert_eq!(out(&format!("print 1{};", " + 1".repeat(149))), "150");
    assert_eq!(
        out(&format!("print {}7{};", "(".repeat(50), ")".repeat(50))),
        "7"
    );
}

#[test]
fn printer_inserts_needed_parentheses() {
    let (a, b, c) = (Expr::var("a"), Expr::var("b"), Expr::var("c"));
    let sub = Expr::binary(
        BinOp::Sub,
        a.clone(),
        Expr::binary(BinOp::Sub, b.clone(), c.clone()),
    );
    assert_eq!(sub.to_string(), "a - (b - c)");
    let left = Expr::binary(
        BinOp::Sub,
        Expr::binary(BinOp::Sub, a.clone(), b.clone()),
        c.clone(),
    );
    assert_eq!(left.to_string(), "a - b - c");
    let mul = Expr::binary(
        BinOp::Mul,
        Expr::binary(BinOp::Add, a.clone(), b.clone()),
        c.clone(),
    );
    assert_eq!(mul.to_string(), "(a + b) * c");
    let add = Expr::binary(
        BinOp::Add,
        a.clone(),
        Expr::binary(BinOp::Mul, b.clone(), c.clone()),
    );
    assert_eq!(add.to_string(), "a + b * c");
    let cmp = Expr::binary(BinOp::Lt, Expr::binary(BinOp::Lt, a.clone(), b), c);
    assert_eq!(cmp.to_string(), "(a < b) < c");
    let neg = Expr::unary(lang::UnOp::Neg, Expr::int(-3));
    assert_eq!(neg.to_string(), "-(-3)");
    // Parsing and printing again is a fixed point.
    let src = "let a = 1;\nif a < 2 {\n    a = (a + 1) * 3;\n} else if a == 2 {\n    print a;\n} else {\n    a = 0;\n}\nwhile a > 0 {\n    a = a - 1;\n}\nprint -(a - 2) % 5;\n";
    let p = lang::parse(src).unwrap();
    assert_eq!(p.to_string(), src);
}

// ---------------------------------------------------------------------------------------------
// Generated programs

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn generated_programs_run_and_record_their_output(seed in any::<u64>(), single in any::<bool>()) {
        let cfg = ProgramConfig { single_print: single, ..ProgramConfig::default() };
        let g = programs::generate(&mut Rng::new(seed), &cfg);
        prop_assert_eq!(&run(&g.source).unwrap(), &g.output);
        prop_assert!(!g.output.is_empty());
        if single {
            prop_assert_eq!(g.output.lines().count(), 1);
        }
        for v in g.output.lines() {
            let v: i64 = v.parse().unwrap();
            prop_assert!(v.abs() <= cfg.max_abs_value);
        }
        // The printed source parses back to itself.
        prop_assert_eq!(lang::parse(&g.source).unwrap().to_string(), g.source.clone());
        // The document is a valid program with the same output, ending with the recorded lines.
        let doc = g.document();
        prop_assert_eq!(run(&doc).unwrap(), g.output.clone());
        let recorded: Vec<&str> = doc.lines().filter_map(|l| l.strip_prefix("# output: ")).collect();
        prop_assert_eq!(recorded.join("\n"), g.output.clone());
        prop_assert!(doc.starts_with("let "));
    }
}

#[test]
fn generated_programs_use_the_language() {
    // Over 300 programs every construct shows up.
    let mut rng = Rng::new(5);
    let all: String = (0..300)
        .map(|_| programs::generate(&mut rng, &ProgramConfig::default()).source)
        .collect();
    for needle in [
        "while ", "if ", "} else {", "print ", " * ", " + ", " - ", " / ", " % ", " < ",
    ] {
        assert!(all.contains(needle), "no {needle:?} in 300 programs");
    }
    // Without loops and branches, none.
    let flat = ProgramConfig {
        loops: false,
        branches: false,
        ..ProgramConfig::default()
    };
    let all: String = (0..100)
        .map(|_| programs::generate(&mut rng, &flat).source)
        .collect();
    assert!(!all.contains("while") && !all.contains("if "));
}

// ---------------------------------------------------------------------------------------------
// Arithmetic, text and the corpus

#[test]
fn arithmetic_documents_are_right() {
    let cfg = ArithConfig {
        min_digits: 2,
        max_digits: 3,
        mul_max_digits: 1,
        ..ArithConfig::default()
    };
    let mut rng = Rng::new(11);
    let mut ops = HashSet::new();
    for _ in 0..2000 {
        let p = arith::sample(&mut rng, &cfg);
        let doc = p.document();
        // Parse "a?b=c" back and recompute independently.
        let (lhs, c) = doc.split_once('=').unwrap();
        let op_at = lhs.find(['+', '-', '*']).unwrap();
        let (a, b): (i64, i64) = (
            lhs[..op_at].parse().unwrap(),
            lhs[op_at + 1..].parse().unwrap(),
        );
        let c: i64 = c.parse().unwrap();
        let op = lhs.as_bytes()[op_at];
        ops.insert(op);
        let want = match op {
            b'+' => a + b,
            b'-' => a - b,
            _ => a * b,
        };
        assert_eq!(c, want, "{doc}");
        assert!(c >= 0, "{doc}");
        assert!((10..1000).contains(&a), "{doc}"); // 2 or 3 digits
        if op == b'*' {
            assert!(b < 10, "{doc}"); // one-digit factor (mul_max_digits 1 clamps to 1)
        } else if op == b'+' {
            assert!((10..1000).contains(&b), "{doc}");
        }
    }
    assert_eq!(ops.len(), 3);
    // "37+45=82" by hand.
    assert_eq!(
        ArithProblem {
            a: 37,
            op: ArithOp::Add,
            b: 45
        }
        .document(),
        "37+45=82"
    );
    assert_eq!(
        ArithProblem {
            a: 90,
            op: ArithOp::Sub,
            b: 17
        }
        .document(),
        "90-17=73"
    );
    assert_eq!(
        ArithProblem {
            a: 12,
            op: ArithOp::Mul,
            b: 3
        }
        .document(),
        "12*3=36"
    );
    assert!(ArithConfig {
        min_digits: 3,
        max_digits: 2,
        ..ArithConfig::default()
    }
    .validate()
    .is_err());
    assert!(ArithConfig {
        max_digits: 10,
        ..ArithConfig::default()
    }
    .validate()
    .is_err());
    assert!(ArithConfig {
        ops: vec![],
        ..ArithConfig::default()
    }
    .validate()
    .is_err());
}

#[test]
fn the_world_is_fixed_and_unambiguous() {
    let w = World::get();
    assert_eq!(
        w,
        &text::World::generate(text::WORLD_SEED, text::N_COUNTRIES)
    );
    assert_eq!(w.countries.len(), text::N_COUNTRIES);
    let mut names = HashSet::new();
    for c in &w.countries {
        for n in [&c.name, &c.capital, &c.language, &c.river] {
            assert!(names.insert(n.clone()), "name {n} used twice");
            assert!(n.chars().next().unwrap().is_uppercase());
        }
    }
    // Another seed gives another world.
    assert_ne!(w, &text::World::generate(1, text::N_COUNTRIES));
    // Facts state and ask about the same thing.
    let facts = w.facts();
    assert_eq!(facts.len(), 4 * text::N_COUNTRIES);
    for f in &facts {
        assert!(f.statement(0).contains(&f.answer()), "{}", f.statement(0));
        assert!(f.statement(1).contains(&f.answer()), "{}", f.statement(1));
        assert!(f.question().ends_with('?'));
    }
    let c = &w.countries[0];
    let f = facts
        .iter()
        .find(|f| f.relation == Relation::Capital)
        .unwrap();
    assert_eq!(
        f.statement(0),
        format!("The capital of {} is {}.", c.name, c.capital)
    );
    assert_eq!(f.question(), format!("What is the capital of {}?", c.name));
}

#[test]
fn text_reads_like_sentences() {
    let mut rng = Rng::new(3);
    for _ in 0..500 {
        let s = text::sentence(&mut rng);
        assert!(
            s.ends_with('.') && s.chars().next().unwrap().is_uppercase(),
            "{s}"
        );
        assert!(
            !s.contains(" a a") && !s.contains(" a o") && !s.contains(" an q"),
            "{s}"
        );
    }
    let p = text::paragraph(&mut rng);
    assert!(p.matches(". ").count() >= 1, "{p}");
}

#[test]
fn corpus_is_deterministic_mixed_and_prefix_stable() {
    let cfg = CorpusConfig {
        n_docs: 600,
        seed: 9,
        ..CorpusConfig::default()
    };
    let a = corpus(&cfg).unwrap();
    assert_eq!(a.len(), 600);
    assert_eq!(a, corpus(&cfg).unwrap());
    let b = corpus(&CorpusConfig {
        seed: 10,
        ..cfg.clone()
    })
    .unwrap();
    assert_ne!(a, b);
    let short = corpus(&CorpusConfig {
        n_docs: 100,
        ..cfg.clone()
    })
    .unwrap();
    assert_eq!(short[..], a[..100]);
    // All three kinds with equal weights: each about 200 of 600; demand at least 120.
    let kinds: Vec<DocKind> = (0..600).map(|i| document(&cfg, i).0).collect();
    for k in [DocKind::Arith, DocKind::Program, DocKind::Text] {
        let n = kinds.iter().filter(|&&x| x == k).count();
        assert!(n >= 120, "{k:?}: {n}");
    }
    // Programs in the corpus run and print what they record.
    for (i, d) in a
        .iter()
        .enumerate()
        .filter(|(i, _)| kinds[*i] == DocKind::Program)
    {
        let recorded: Vec<&str> = d
            .lines()
            .filter_map(|l| l.strip_prefix("# output: "))
            .collect();
        assert_eq!(run(d).unwrap(), recorded.join("\n"), "doc {i}");
    }
}

#[test]
fn corpus_mix_and_config_errors() {
    let only = |mix: Mix| {
        corpus(&CorpusConfig {
            n_docs: 200,
            seed: 1,
            mix,
            ..CorpusConfig::default()
        })
        .unwrap()
    };
    let is_arith = |d: &str| {
        let (lhs, rhs) = d.split_once('=').unwrap_or(("", "x"));
        !lhs.is_empty()
            && lhs.chars().all(|c| c.is_ascii_digit() || "+-*".contains(c))
            && rhs.chars().all(|c| c.is_ascii_digit())
    };
    assert!(only(Mix {
        arith: 1.0,
        program: 0.0,
        text: 0.0
    })
    .iter()
    .all(|d| is_arith(d)));
    assert!(only(Mix {
        arith: 0.0,
        program: 2.0,
        text: 0.0
    })
    .iter()
    .all(|d| run(d).is_ok() && d.contains("# output: ")));
    assert!(only(Mix {
        arith: 0.0,
        program: 0.0,
        text: 0.5
    })
    .iter()
    .all(|d| d.ends_with('.') && !is_arith(d)));
    for mix in [
        Mix {
            arith: -1.0,
            program: 1.0,
            text: 1.0,
        },
        Mix {
            arith: 0.0,
            program: 0.0,
            text: 0.0,
        },
        Mix {
            arith: f64::NAN,
            program: 1.0,
            text: 1.0,
        },
    ] {
        assert!(
            corpus(&CorpusConfig {
                mix,
                ..CorpusConfig::default()
            })
            .is_err(),
            "{mix:?}"
        );
    }
    // Config files: partial is fine, unknown fields are refused.
    let c: CorpusConfig = serde_json::from_str(r#"{"n_docs": 5, "mix": {"text": 0}}"#).unwrap();
    assert_eq!((c.n_docs, c.mix.text, c.mix.arith), (5, 0.0, 1.0));
    assert!(serde_json::from_str::<CorpusConfig>(r#"{"n_docs": 5, "bogus": 1}"#).is_err());
}

#[test]
fn ten_thousand_documents_are_generated_in_full() {
    // Speed lives in the benchmarks (`gradus-bench corpus`), not here.
    let docs = corpus(&CorpusConfig {
        n_docs: 10_000,
        seed: 2,
        ..CorpusConfig::default()
    })
    .unwrap();
    assert_eq!(docs.len(), 10_000);
    assert!(docs.iter().all(|d| !d.trim().is_empty()));
    // Short arithmetic documents repeat by chance (two-digit operands); the rest do not: seed 2 gives
    // 8,652 distinct documents, and a generator stuck on a few documents would give far fewer.
    let distinct: HashSet<&String> = docs.iter().collect();
    assert!(
        distinct.len() > 8_000,
        "{} distinct of 10,000",
        distinct.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Instructions

fn program_of(prompt: &str) -> &str {
    prompt.split_once('\n').unwrap().1
}

#[test]
fn instructions_are_right_deterministic_and_split() {
    let train = instructions(1500, 4, Split::Train);
    let eval = instructions(500, 4, Split::Eval);
    assert_eq!((train.len(), eval.len()), (1500, 500));
    assert_eq!(train, instructions(1500, 4, Split::Train));
    assert_eq!(instructions(100, 4, Split::Train)[..], train[..100]);
    assert_ne!(instructions(100, 5, Split::Train), train[..100]);
    // Disjoint, including across seeds.
    let train_prompts: HashSet<&str> = train.iter().map(|i| i.prompt.as_str()).collect();
    let other_eval = instructions(500, 77, Split::Eval);
    for i in eval.iter().chain(&other_eval) {
        assert!(
            !train_prompts.contains(i.prompt.as_str()),
            "{} in both splits",
            i.prompt
        );
        assert_eq!(split_of(&i.prompt), Split::Eval);
    }
    for i in &train {
        assert_eq!(split_of(&i.prompt), Split::Train);
    }
    // Every kind in both splits, and every answer right.
    for set in [&train, &eval] {
        for k in [TaskKind::Arith, TaskKind::Program, TaskKind::Fact] {
            assert!(set.iter().any(|i| i.kind == k), "{k:?} missing");
        }
        for i in set.iter() {
            match i.kind {
                TaskKind::Arith => {
                    let e = i
                        .prompt
                        .strip_prefix("Compute ")
                        .unwrap()
                        .strip_suffix('.')
                        .unwrap();
                    // The language evaluates these the same way (non-negative operands).
                    assert_eq!(out(&format!("print {e};")), i.answer, "{}", i.prompt);
                }
                TaskKind::Program => {
                    assert!(i.prompt.starts_with("What does this program print?\n"));
                    assert_eq!(out(program_of(&i.prompt)), i.answer);
                    assert_eq!(i.answer.lines().count(), 1);
                }
                TaskKind::Fact => {
                    let fact = World::get()
                        .facts()
                        .into_iter()
                        .find(|f| f.question() == i.prompt)
                        .unwrap();
                    assert_eq!(fact.answer(), i.answer);
                }
            }
            assert!(is_correct(i, &i.answer));
            assert!(is_correct(i, &format!("  {}  \n", i.answer)));
        }
    }
    // About one in five prompts is eval: over 2000 train+eval draws it is not lopsided.
    let n_eval = (0..4000u64)
        .filter(|x| split_of(&format!("Compute {x}+1.")) == Split::Eval)
        .count();
    assert!((600..1000).contains(&n_eval), "{n_eval}");
}

#[test]
fn the_corpus_leaves_out_eval_problems() {
    let cfg = CorpusConfig {
        n_docs: 3000,
        seed: 8,
        mix: Mix {
            arith: 1.0,
            program: 1.0,
            text: 0.0,
        },
        ..CorpusConfig::default()
    };
    let docs = corpus(&cfg).unwrap();
    let mut arith = 0;
    for d in &docs {
        if let Some((lhs, _)) = d.split_once('=').filter(|_| !d.contains('\n')) {
            arith += 1;
            assert_eq!(split_of(&format!("Compute {lhs}.")), Split::Train, "{d}");
        } else {
            let source: String = d
                .lines()
                .filter(|l| !l.starts_with('#'))
                .map(|l| format!("{l}\n"))
                .collect();
            assert_eq!(
                split_of(&format!(
                    "What does this program print?\n{}",
                    source.trim_end()
                )),
                Split::Train
            );
        }
    }
    assert!(arith > 1000, "{arith}");
    // With exclusion off, about a fifth of the arithmetic documents are eval problems.
    let leaky = corpus(&CorpusConfig {
        exclude_eval: false,
        mix: Mix {
            arith: 1.0,
            program: 0.0,
            text: 0.0,
        },
        ..cfg
    })
    .unwrap();
    let n = leaky
        .iter()
        .filter(|d| split_of(&format!("Compute {}.", d.split_once('=').unwrap().0)) == Split::Eval)
        .count();
    assert!(n > 300, "{n}");
}

#[test]
fn is_correct_by_hand() {
    let arith = Instruction {
        prompt: "Compute 37+45.".into(),
        answer: "82".into(),
        kind: TaskKind::Arith,
    };
    for good in [
        "82",
        "  82  \n",
        "82.",
        "The answer is 82",
        "37+45=82",
        "\n\n82\nmore text",
        "082",
    ] {
        assert!(is_correct(&arith, good), "{good:?} should be accepted");
    }
    for bad in [
        "83",
        "820",
        "8 2",
        "-82",
        "",
        "eighty-two",
        "81\n82",
        "37+45 = 83",
        "x82",
    ] {
        assert!(!is_correct(&arith, bad), "{bad:?} should be rejected");
    }
    let neg = Instruction {
        prompt: "What does this program print?\nprint 0 - 3;".into(),
        answer: "-3".into(),
        kind: TaskKind::Program,
    };
    assert!(
        is_correct(&neg, "-3") && is_correct(&neg, " -3\n") && is_correct(&neg, "It prints -3.")
    );
    assert!(!is_correct(&neg, "3") && !is_correct(&neg, "a-3"));
    let two = Instruction {
        prompt: "p".into(),
        answer: "1\n2".into(),
        kind: TaskKind::Program,
    };
    assert!(is_correct(&two, "1\n2") && is_correct(&two, "1\n\n2\n"));
    assert!(!is_correct(&two, "1\n3") && !is_correct(&two, "1"));
    let fact = Instruction {
        prompt: "What is the capital of Zorland?".into(),
        answer: "Quib".into(),
        kind: TaskKind::Fact,
    };
    for good in ["Quib", "quib", " Quib.\n", "\"Quib\"", "QUIB!\nThe end."] {
        assert!(is_correct(&fact, good), "{good:?} should be accepted");
    }
    for bad in ["Quibx", "The capital is Quib", "", "Qu ib", "\n"] {
        assert!(!is_correct(&fact, bad), "{bad:?} should be rejected");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Arbitrary text never panics the lexer, parser or interpreter.
    #[test]
    fn arbitrary_source_never_panics(src in "\\PC{0,200}") {
        let _ = run(&src);
    }

    /// Token soup (mostly near-valid programs) never panics either, and a failure always has a
    /// position inside the text.
    #[test]
    fn token_soup_never_panics(toks in prop::collection::vec(prop::sample::select(vec![
        "let ", "a", "b", " = ", ";", "\n", "print ", "if ", "else ", "while ", "{", "}", "(", ")", "+", "-", "*",
        "/", "%", "<", "==", "!", "&&", "||", "0", "1", "7", "9223372036854775807", " ",
    ]), 0..60)) {
        let src: String = toks.concat();
        if let Err(e) = run(&src) {
            let lines = src.split('\n').count();
            prop_assert!(e.line() >= 1 && e.line() <= lines, "{e} in {src:?}");
            prop_assert!(e.col() >= 1, "{e}");
        }
    }
}

#[test]
fn task_config_default_is_the_default_task_and_the_mix_is_obeyed() {
    use gradus_tasks::{instructions_with, TaskConfig, TaskKind, TaskMix};
    let d = TaskConfig::default();
    assert_eq!(
        instructions_with(300, 3, Split::Train, &d),
        instructions(300, 3, Split::Train)
    );
    // Only arithmetic, one-digit operands: every answer is at most 9*9 = 81 and at least 0.
    let only_arith = TaskConfig {
        mix: TaskMix {
            arith: 1.0,
            program: 0.0,
            fact: 0.0,
        },
        arith: gradus_tasks::ArithConfig {
            max_digits: 1,
            ..Default::default()
        },
        ..TaskConfig::default()
    };
    let items = instructions_with(200, 3, Split::Eval, &only_arith);
    assert_eq!(items.len(), 200);
    for it in &items {
        assert_eq!(it.kind, TaskKind::Arith);
        let v: i64 = it.answer.parse().unwrap();
        assert!((0..=81).contains(&v), "{it:?}");
        assert_eq!(gradus_tasks::split_of(&it.prompt), Split::Eval);
    }
    let bad = TaskConfig {
        mix: TaskMix {
            arith: 0.0,
            program: 0.0,
            fact: 0.0,
        },
        ..TaskConfig::default()
    };
    assert!(bad.validate().unwrap_err().to_string().contains("task.mix"));
}

#[test]
fn fact_share_controls_the_facts_in_text_documents() {
    use gradus_tasks::{Mix, World};
    let world = World::get();
    let mentions_a_country = |d: &str| world.countries.iter().any(|c| d.contains(&c.name));
    let text_only = |fact_share: f64| {
        corpus(&CorpusConfig {
            n_docs: 200,
            mix: Mix {
                arith: 0.0,
                program: 0.0,
                text: 1.0,
            },
            fact_share,
            ..CorpusConfig::default()
        })
        .unwrap()
    };
    // Every sentence of a fact statement names its country (see text::Fact::statement).
    assert!(text_only(1.0).iter().all(|d| mentions_a_country(d)));
    assert!(!text_only(0.0).iter().any(|d| mentions_a_country(d)));
    let bad = CorpusConfig {
        fact_share: 1.5,
        ..CorpusConfig::default()
    };
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .contains("fact_share"));
}

/// `ArithAnswer::Equation` restates the problem (`37+45=82`, the corpus document) and draws the same
/// problems as the default; the checker reads the value after the last `=` on both sides.
#[test]
fn equation_answers_restate_the_problem() {
    use gradus_tasks::{is_correct, stated_value, ArithAnswer, TaskConfig, TaskKind, TaskMix};
    let cfg = TaskConfig {
        mix: TaskMix {
            arith: 1.0,
            program: 0.0,
            fact: 0.0,
        },
        ..TaskConfig::default()
    };
    let eq = TaskConfig {
        arith_answer: ArithAnswer::Equation,
        ..cfg.clone()
    };
    let plain = instructions_with(50, 9, Split::Train, &cfg);
    let items = instructions_with(50, 9, Split::Train, &eq);
    for (p, e) in plain.iter().zip(&items) {
        assert_eq!(p.prompt, e.prompt);
        assert_eq!(e.kind, TaskKind::Arith);
        // "Compute 37+45." → "37+45=82": the expression of the prompt, `=`, the plain answer.
        let expr = p
            .prompt
            .trim_start_matches("Compute ")
            .trim_end_matches('.');
        assert_eq!(e.answer, format!("{expr}={}", p.answer));
        assert_eq!(stated_value(&e.answer), Some(p.answer.parse().unwrap()));
        assert!(is_correct(e, &e.answer) && is_correct(e, &p.answer));
        assert!(is_correct(p, &e.answer));
        let wrong = format!("{expr}={}", p.answer.parse::<i64>().unwrap() + 1);
        assert!(!is_correct(e, &wrong));
    }
}

/// The trace of a straight-line program, derived by hand: operands' values written in, truncating
/// division and a remainder with the dividend's sign (the interpreter's), the printed value last.
#[test]
fn program_traces_by_hand_and_their_last_value_is_the_output() {
    use gradus_tasks::programs::trace;
    let p = "let a = 5;\nlet b = a * 3;\nprint b - 2;\n";
    assert_eq!(trace(p).unwrap(), "a=5, b=5*3=15, print 15-2=13");
    // a = 7 - 9 = -2; c = -2 / 2 = -1; -1 % 3 = -1 (sign of the dividend); d = c = -1.
    let q = "let a = 7;\na = a - 9;\nlet c = a / 2;\nlet d = c;\nprint c % 3;\nprint d;\n";
    assert_eq!(
        trace(q).unwrap(),
        "a=7, a=7-9=-2, c=-2/2=-1, d=-1, print -1%3=-1, print d=-1"
    );
    assert_eq!(lang::run(q).unwrap(), "-1\n-1");
    // Loops, branches and nested expressions have none.
    assert!(trace("let i = 0;\nwhile i < 2 {\ni = i + 1;\n}\nprint i;\n").is_none());
    assert!(trace("let a = 1;\nif a < 2 {\na = 2;\n}\nprint a;\n").is_none());
    assert!(trace("let a = 1;\nprint a + 2 * 3;\n").is_none());
    // Generated flat programs: every one has a trace whose last value is what the interpreter prints,
    // the traced document holds it, and the instruction answers are traces.
    let cfg = ProgramConfig {
        max_stmts: 3,
        max_expr_depth: 1,
        max_literal: 9,
        loops: false,
        branches: false,
        max_abs_value: 99,
        single_print: true,
        trace: true,
        ..ProgramConfig::default()
    };
    let mut rng = Rng::new(5);
    for _ in 0..200 {
        let g = programs::generate(&mut rng, &cfg);
        let t = trace(&g.source).unwrap();
        assert_eq!(
            stated_value(&t),
            Some(g.output.parse::<i128>().unwrap()),
            "{g:?} {t}"
        );
        assert!(g
            .traced_document()
            .contains(&format!("# trace: {t}\n# output: ")));
    }
    let task = TaskConfig {
        mix: TaskMix {
            arith: 0.0,
            program: 1.0,
            fact: 0.0,
        },
        program: cfg,
        ..TaskConfig::default()
    };
    for it in instructions_with(50, 2, Split::Eval, &task) {
        assert_eq!(
            trace(it.prompt.split_once('\n').unwrap().1).unwrap(),
            it.answer
        );
        assert!(is_correct(&it, &it.answer));
    }
}
