//! The objective of `gradus lab evoprompting` (`gradus_tasks::evo`): fitness on hand-derived
//! cases, the counting evaluator's budget, survival selection, and the GA's random operators
//! (every child is a well-scoped program of the genome shape).

use gradus_tasks::evo::*;
use gradus_tasks::lang;
use gradus_tensor::rng::Rng;

/// The target `print x * 2;` on x = 0..4: outputs 0, 2, 4, 6 (by hand).
fn double() -> (EvoTaskConfig, EvoTarget) {
    let cfg = EvoTaskConfig {
        num_inputs: 4,
        ..Default::default()
    };
    let t = EvoTarget {
        source: "print x * 2 ;".into(),
        inputs: vec![0, 1, 2, 3],
        outputs: vec![0, 2, 4, 6],
    };
    (cfg, t)
}

#[test]
fn fitness_on_hand_derived_cases() {
    let (cfg, t) = double();
    // size_penalty 0.001 (the default) per word.
    assert_eq!(cfg.size_penalty, 0.001);
    // `print x + x;` prints 0, 2, 4, 6: closeness 1, 4 matched, 5 words → 1 − 0.001·5 = 0.995.
    let f = t.score(&cfg, "print x + x;");
    assert_eq!(f.matched, 4);
    assert_eq!(f.size, 5);
    assert!((f.closeness - 1.0).abs() < 1e-12);
    assert!((f.fitness - 0.995).abs() < 1e-12, "{f:?}");
    assert!(f.solved(4));
    // `print x;` prints 0, 1, 2, 3: errors d = 0, 1, 2, 3 → closeness
    // (1 + 1/(1 + ln 2) + 1/(1 + ln 3) + 1/(1 + ln 4))/4 ≈ (1 + 0.5906 + 0.4765 + 0.4191)/4 ≈ 0.6216;
    // 1 matched, 3 words → closeness − 0.003.
    let want =
        (1.0 + 1.0 / (1.0 + 2f64.ln()) + 1.0 / (1.0 + 3f64.ln()) + 1.0 / (1.0 + 4f64.ln())) / 4.0;
    assert!((want - 0.6216).abs() < 1e-4);
    let f = t.score(&cfg, "print x;");
    assert_eq!((f.matched, f.size), (1, 3));
    assert!((f.closeness - want).abs() < 1e-12);
    assert!((f.fitness - (want - 0.003)).abs() < 1e-12);
    assert!(!f.solved(4));
    // A later print wins: `print 7; print x * 2;` is the target's behaviour (8 words).
    let f = t.score(&cfg, "print 7 ; print x * 2 ;");
    assert_eq!(f.matched, 4);
    assert!((f.fitness - (1.0 - 0.008)).abs() < 1e-12);
    // A size penalty larger than the closeness floors at 0, not below.
    let big = EvoTaskConfig {
        size_penalty: 0.09,
        ..cfg.clone()
    };
    let f = t.score(&big, "let a = 1 + 1 + 1 + 1 ; print x ;");
    assert_eq!(f.fitness, 0.0);
    assert!(f.error.is_none());
}

#[test]
fn every_failure_is_fitness_zero_with_a_reason() {
    let (cfg, t) = double();
    for (src, why) in [
        ("print x +", "parse"),
        ("print 10 / x ;", "division by zero"), // fails at x = 0
        ("let a = 1 ;", "prints nothing"),
        ("print y ;", "undefined variable"),
        ("print x * 9999999999 * 9999999999 ;", "overflow"),
        ("while 1 { x = x ; } print x ;", "step limit"),
        ("print x ; print", "parse"),
        ("", "prints nothing"),
    ] {
        let f = t.score(&cfg, src);
        assert_eq!(f.fitness, 0.0, "{src}");
        let e = f.error.unwrap_or_default();
        assert!(e.contains(why), "{src}: {e}");
    }
}

#[test]
fn the_evaluator_counts_every_call_and_stops_at_its_budget() {
    let (cfg, t) = double();
    let mut ev = Evaluator::new(&cfg, &t, 3);
    assert!(ev.evaluate("print x;").is_some()); // ≈ 0.6216 − 0.003 (above)
    assert!(ev.evaluate("print 1 / 0;").is_some()); // 0: no improvement
    assert!(ev.evaluate("print x * 2;").is_some()); // 1 − 0.005
    assert!(ev.exhausted());
    assert!(ev.evaluate("print x * 2;").is_none());
    assert_eq!(ev.calls(), 3);
    assert_eq!(ev.remaining(), 0);
    let tr = ev.trace().to_vec();
    assert_eq!(tr.len(), 2);
    assert_eq!(tr[0].0, 1);
    let first = t.score(&cfg, "print x;").fitness;
    assert!((tr[0].1 - first).abs() < 1e-12 && first > 0.6);
    assert_eq!(tr[1].0, 3);
    assert!((tr[1].1 - 0.995).abs() < 1e-12);
    assert_eq!(best_after(&tr, 0), 0.0);
    assert_eq!(best_after(&tr, 2), tr[0].1);
    assert_eq!(best_after(&tr, 99), tr[1].1);
    // Restored counters continue where they were.
    let mut ev2 = Evaluator::new(&cfg, &t, 4);
    ev2.restore(3, tr.clone());
    assert_eq!((ev2.calls(), ev2.remaining()), (3, 1));
    assert!((ev2.best() - 0.995).abs() < 1e-12);
}

fn m(s: &str, f: f64) -> Member {
    Member {
        source: s.into(),
        fitness: f,
    }
}

#[test]
fn survival_drops_children_below_the_threshold_and_keeps_the_top() {
    let pop = vec![m("print 1 ;", 0.5), m("print 2 ;", 0.2)];
    let kids = vec![
        m("print 3 ;", 0.9),
        m("print 4 ;", 0.05), // below the threshold 0.1: dropped even though room is left
        m("print 1 ;", 0.5),  // the same program as a member: once
        m("print x ;", 0.2),  // ties with `print 2 ;` (equal length): lexicographic, "2" < "x"
    ];
    let s = survive(&pop, &kids, 0.1, 3);
    let got: Vec<&str> = s.iter().map(|x| x.source.as_str()).collect();
    assert_eq!(got, ["print 3 ;", "print 1 ;", "print 2 ;"]);
    let all = survive(&pop, &kids, 0.1, 10);
    assert_eq!(all.len(), 4);
    assert!(!all.iter().any(|x| x.source == "print 4 ;"));
    // Members below the threshold are not dropped (only children are filtered).
    let s = survive(&[m("print 5 ;", 0.0)], &[], 0.1, 3);
    assert_eq!(s.len(), 1);
}

#[test]
fn spaced_and_render_give_one_word_per_token() {
    assert_eq!(
        spaced("let a=x*3;\nprint (a+1)%7;"),
        "let a = x * 3 ; print ( a + 1 ) % 7 ;"
    );
    assert_eq!(spaced("if a<=b&&c { }"), "if a <= b && c { }");
    let p = lang::parse("let a = x * 3;\nprint (a + 1) % 7;").unwrap();
    assert_eq!(render(&p), "let a = x * 3 ; print ( a + 1 ) % 7 ;");
}

/// Parses, re-renders to itself, has the genome shape and never reads an undeclared variable.
fn assert_genome(src: &str, cfg: &EvoTaskConfig) {
    let p = lang::parse(src).unwrap_or_else(|e| panic!("`{src}` does not parse: {e}"));
    assert_eq!(render(&p), src);
    let n = p.stmts.len();
    assert!(n >= 1);
    assert!(
        matches!(p.stmts[n - 1].kind, lang::StmtKind::Print(_)),
        "{src}"
    );
    let lets = p.stmts[..n - 1]
        .iter()
        .filter(|s| matches!(s.kind, lang::StmtKind::Let { .. }))
        .count();
    assert_eq!(lets, n - 1, "{src}");
    assert!(lets <= cfg.max_lets, "{src}");
    for w in src.split(' ') {
        assert!(cfg.program_words().iter().any(|v| v == w), "`{w}` in {src}");
    }
    // Runtime errors may remain (a divisor can become 0), but never an undeclared variable.
    for x in 0..4 {
        let mut full = format!("let x = {x}; ");
        full.push_str(src);
        if let Err(e) = lang::run(&full) {
            assert!(
                !matches!(e.kind, lang::ErrorKind::UndefinedVariable(_)),
                "{src}: {e}"
            );
        }
    }
}

#[test]
fn random_mutation_and_crossover_give_valid_genomes() {
    let cfg = EvoTaskConfig::default();
    let ga = EvoGaConfig::default();
    let mut rng = Rng::new(7);
    let mut changed = [0usize; MUTATIONS.len()];
    for i in 0..400 {
        let p = random_genome(&cfg, i % (cfg.max_lets + 1), &mut rng);
        assert_genome(&render(&p), &cfg);
        for (k, kind) in MUTATIONS.iter().enumerate() {
            let mut c = p.clone();
            if apply_mutation(&mut c, *kind, &cfg, &mut rng) {
                assert_genome(&render(&c), &cfg);
                changed[k] += (render(&c) != render(&p)) as usize;
            }
        }
        let q = random_genome(&cfg, rng.below(cfg.max_lets + 1), &mut rng);
        assert_genome(&render(&crossover(&p, &q, &cfg, &mut rng)), &cfg);
        assert_genome(&render(&mutate(&p, &cfg, &mut rng)), &cfg);
        let parents = [
            Member {
                source: render(&p),
                fitness: 0.0,
            },
            Member {
                source: render(&q),
                fitness: 0.0,
            },
        ];
        assert_genome(&ga_child(&parents, &cfg, &ga, &mut rng), &cfg);
    }
    // Every kind of mutation changes programs (none is a silent no-op).
    assert!(changed.iter().all(|&c| c > 50), "{changed:?}");
}

#[test]
fn crossover_takes_a_prefix_of_one_parent_and_the_rest_of_the_other() {
    let cfg = EvoTaskConfig::default();
    let a = lang::parse("let a = x + 1; let b = a * 2; print b;").unwrap();
    let b = lang::parse("let a = x * 3; let b = 7; print a - b;").unwrap();
    let mut seen = std::collections::HashSet::new();
    let mut rng = Rng::new(1);
    for _ in 0..200 {
        seen.insert(render(&crossover(&a, &b, &cfg, &mut rng)));
    }
    // i ∈ {0, 1, 2} lets of a, then b's lets from j ∈ {0, 1, 2}, then b's print; a variable
    // read out of scope becomes x. For example i = 0, j = 1: `let b = 7; print a - b;` with a → x.
    for want in [
        "let a = x * 3 ; let b = 7 ; print a - b ;", // i = 0, j = 0: b itself
        "let b = 7 ; print x - b ;",                 // i = 0, j = 1
        "print x - x ;",                             // i = 0, j = 2
        "let a = x + 1 ; let b = 7 ; print a - b ;", // i = 1, j = 1
        "let a = x + 1 ; let b = a * 2 ; print a - b ;", // i = 2, j = 2
    ] {
        assert!(seen.contains(want), "missing {want}: {seen:?}");
    }
    assert!(seen.len() <= 9);
}

#[test]
fn targets_are_seeded_and_their_outputs_are_the_interpreters() {
    let cfg = EvoTaskConfig::default();
    let a = EvoTarget::draw(&cfg, &mut Rng::new(3)).unwrap();
    let b = EvoTarget::draw(&cfg, &mut Rng::new(3)).unwrap();
    assert_eq!(a, b);
    assert_genome(&a.source, &cfg);
    for (&x, &y) in a.inputs.iter().zip(&a.outputs) {
        let out = lang::run(&format!("let x = {x}; {}", a.source)).unwrap();
        assert_eq!(out.lines().last().unwrap(), y.to_string());
    }
    assert!(
        a.outputs
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len()
            >= 3
    );
    // The target scores (nearly) 1 on itself.
    let f = a.score(&cfg, &a.source);
    assert!(f.solved(cfg.num_inputs));
}

#[test]
fn bad_task_settings_name_the_field() {
    let bad = [
        (
            EvoTaskConfig {
                target_lets: 5,
                max_lets: 4,
                ..Default::default()
            },
            "task.target_lets",
        ),
        (
            EvoTaskConfig {
                max_lets: 9,
                ..Default::default()
            },
            "task.max_lets",
        ),
        (
            EvoTaskConfig {
                num_inputs: 0,
                ..Default::default()
            },
            "task.num_inputs",
        ),
        (
            EvoTaskConfig {
                max_literal: 0,
                ..Default::default()
            },
            "task.max_literal",
        ),
    ];
    for (c, field) in bad {
        let e = c.validate_at("task").unwrap_err().to_string();
        assert!(e.contains(field), "{e}");
    }
    let e = EvoGaConfig {
        crossover_prob: 1.5,
        ..Default::default()
    }
    .validate_at("ga")
    .unwrap_err()
    .to_string();
    assert!(e.contains("ga.crossover_prob"), "{e}");
}
