//! `gradus lab evoprompting`: the shipped preset, bad settings naming their field, the prompt
//! format, the tuning data on a hand-made history, the pretraining documents, and a tiny
//! end-to-end lab (every arm spends exactly the same evaluations, resume reproduces the results,
//! a second start is refused).

use gradus_tasks::evo::Member;
use gradus_tasks::lang;
use gradus_train::evoprompting::{
    bucket, pretrain_document, prompt_text, run, tokenizer, tuning_rows, ChildRecord, EvoConfig,
    EvoSize, PromptRecord, RoundRecord,
};
use gradus_train::rundir::Start;
use serde_json::Value;

#[test]
fn the_shipped_config_is_the_default_preset() {
    let p = format!(
        "{}/../../configs/evoprompting/default.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let c: EvoConfig = toml::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    assert_eq!(c, EvoConfig::default());
    c.validate().unwrap();
    EvoConfig::preset(EvoSize::Smoke).validate().unwrap();
    // 16 initial + 10 rounds of 8 × 8 = 656.
    assert_eq!(c.rounds(), 10);
}

fn err(f: impl FnOnce(&mut EvoConfig)) -> String {
    let mut c = EvoConfig::default();
    f(&mut c);
    c.validate().unwrap_err().to_string()
}

#[test]
fn bad_settings_name_the_field() {
    // A budget smaller than the initial population plus one round (16 + 8 × 8 = 80).
    let e = err(|c| c.budget.evaluations = 79);
    assert!(e.contains("budget.evaluations") && e.contains("80"), "{e}");
    // 80 is exactly one round: allowed.
    let mut c = EvoConfig::default();
    c.budget.evaluations = 80;
    c.validate().unwrap();
    assert_eq!(c.rounds(), 1);
    // 81 leaves a last round of 1 evaluation.
    c.budget.evaluations = 81;
    assert_eq!(c.rounds(), 2);
    for (f, field) in [
        (
            Box::new(|c: &mut EvoConfig| c.search.parents = 17) as Box<dyn FnOnce(&mut EvoConfig)>,
            "search.parents",
        ),
        (
            Box::new(|c: &mut EvoConfig| c.search.children = 0),
            "search.children",
        ),
        (
            Box::new(|c: &mut EvoConfig| c.search.threshold = 1.5),
            "search.threshold",
        ),
        (
            Box::new(|c: &mut EvoConfig| c.run.seeds.clear()),
            "run.seeds",
        ),
        (Box::new(|c: &mut EvoConfig| c.arms.clear()), "arms"),
        (
            Box::new(|c: &mut EvoConfig| c.model.seq_len = 100),
            "model.seq_len",
        ),
        (
            Box::new(|c: &mut EvoConfig| c.tune.lora.r = 0),
            "tune.lora.r",
        ),
        (
            Box::new(|c: &mut EvoConfig| c.task.target_lets = 9),
            "task.",
        ),
        (
            Box::new(|c: &mut EvoConfig| c.generation.temperature = 0.0),
            "generation.temperature",
        ),
        (
            Box::new(|c: &mut EvoConfig| c.pretrain.steps = 0),
            "pretrain.steps",
        ),
    ] {
        let e = err(f);
        assert!(e.contains(field), "{field}: {e}");
    }
}

#[test]
fn prompts_annotate_parents_and_the_target_with_fitness_buckets() {
    // round(20 · f): 0.33 → 6.6 → f7; 0.024 → 0.48 → f0; 1.2 is capped at f20.
    assert_eq!(bucket(0.33), "f7");
    assert_eq!(bucket(0.024), "f0");
    assert_eq!(bucket(1.2), "f20");
    assert_eq!(bucket(-1.0), "f0");
    let parents = [
        Member {
            source: "print x ;".into(),
            fitness: 0.1,
        },
        Member {
            source: "let a = x ; print a + 1 ;".into(),
            fitness: 0.5,
        },
    ];
    assert_eq!(
        prompt_text(&parents, 0.6),
        "parent f2 : print x ; parent f10 : let a = x ; print a + 1 ; target f12 :"
    );
    // Every word of it is in the lab's vocabulary (no unknown token).
    let cfg = EvoConfig::default();
    let tok = tokenizer(&cfg.task).unwrap();
    let ids = tok.encode(&prompt_text(&parents, 0.6), false).unwrap();
    // 6 words for the first parent, 13 for the second, 3 for the target.
    assert_eq!(ids.len(), 22);
    assert!(!ids.contains(&2), "{ids:?}"); // <|unk|>
}

fn child(prompt: usize, source: &str, fitness: f64, parsed: bool) -> ChildRecord {
    ChildRecord {
        prompt,
        source: source.into(),
        fitness,
        matched: 0,
        parsed,
        error: None,
    }
}

#[test]
fn tuning_rows_are_the_fittest_distinct_children_with_their_own_fitness_as_target() {
    let mut cfg = EvoConfig::default();
    cfg.tune.examples = 3;
    let p = |s: &str, f: f64| Member {
        source: s.into(),
        fitness: f,
    };
    let r0 = RoundRecord {
        round: 0,
        tuned_on: 0,
        prompts: vec![],
        // The initial population has no prompt: never a tuning example, however fit.
        children: vec![child(0, "print 99 ;", 0.9, true)],
        population: vec![],
        calls: 1,
        trace: vec![],
        solved: false,
    };
    let r1 = RoundRecord {
        round: 1,
        prompts: vec![
            PromptRecord {
                parents: vec![p("print x ;", 0.1)],
                target: 0.2,
            },
            PromptRecord {
                parents: vec![p("print 1 ;", 0.05)],
                target: 0.15,
            },
        ],
        children: vec![
            child(0, "print x + 1 ;", 0.4, true),
            child(1, "print x + 1 ;", 0.4, true), // the same program again: once
            child(1, "print 2 ;", 0.3, true),
            child(0, "print", 0.0, false),         // unparsed: never
            child(0, "print 3 ;", 0.04, true),     // below the threshold 0.05: never
            child(1, "print x * 2 ;", 0.25, true), // fourth fittest: cut by tune.examples = 3
        ],
        ..r0.clone()
    };
    let r2 = RoundRecord {
        round: 2,
        prompts: vec![PromptRecord {
            parents: vec![p("print x + 1 ;", 0.4)],
            target: 0.5,
        }],
        children: vec![child(0, "print x + 2 ;", 0.6, true)],
        ..r0.clone()
    };
    let rows = tuning_rows(&cfg, &[r0, r1, r2]);
    let got: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["prompt"].as_str().unwrap().to_string(),
                r["completion"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            // 0.6 → f12 (hindsight: the child's own fitness, not the prompt's target 0.5 → f10).
            (
                "parent f8 : print x + 1 ; target f12 :".to_string(),
                "print x + 2 ;".to_string()
            ),
            // 0.4 → f8; the first of the equal children (prompt 0, parent 0.1 → f2).
            (
                "parent f2 : print x ; target f8 :".to_string(),
                "print x + 1 ;".to_string()
            ),
            // 0.3 → f6; parent 0.05 → f1.
            (
                "parent f1 : print 1 ; target f6 :".to_string(),
                "print 2 ;".to_string()
            ),
        ]
    );
}

#[test]
fn pretraining_documents_are_in_the_vocabulary_and_their_children_parse() {
    let cfg = EvoConfig::default();
    let tok = tokenizer(&cfg.task).unwrap();
    for i in 0..40 {
        let d = pretrain_document(&cfg, i).unwrap();
        let (p, c) = (
            d["prompt"].as_str().unwrap(),
            d["completion"].as_str().unwrap(),
        );
        assert_eq!(p.matches("parent f").count(), cfg.search.parents, "{p}");
        assert!(p.ends_with(':') && p.contains("target f"), "{p}");
        lang::parse(c).unwrap_or_else(|e| panic!("{c}: {e}"));
        let ids = tok.encode(&format!("{p} {c}"), false).unwrap();
        assert!(!ids.contains(&2), "unknown word in {p} {c}");
        assert!(ids.len() + 2 <= cfg.model.seq_len);
        // Seeded: the same document again.
        assert_eq!(pretrain_document(&cfg, i).unwrap(), d);
    }
}

fn read(p: &std::path::Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The smoke preset (1 seed, 4 initial + 2 rounds of 2 × 3, a 1-layer 32-wide LM) in seconds.
#[test]
fn a_tiny_lab_spends_equal_evaluations_per_arm_and_resumes_exactly() {
    let d = tempfile::tempdir().unwrap();
    let mut cfg = EvoConfig::preset(EvoSize::Smoke);
    cfg.run.dir = d.path().to_path_buf();
    // Enough pretraining that some children parse, so EvoPrompting tunes before round 2.
    cfg.pretrain.steps = 40;
    cfg.pretrain.lr = 5e-3;
    cfg.search.threshold = 0.0;
    let out = run(&cfg, Start::New).unwrap();
    let lab = out.lab_dir.clone();
    for f in [
        "results.md",
        "results.json",
        "examples.md",
        "report.html",
        "metrics.jsonl",
        "config.resolved.toml",
        "seed-0/target.json",
    ] {
        assert!(lab.join(f).is_file(), "{f} missing");
    }
    let results: Value = serde_json::from_str(&read(&lab.join("results.json"))).unwrap();
    let arms = results["seeds"]["0"]["arms"].as_object().unwrap();
    assert_eq!(arms.len(), 3);
    for (name, a) in arms {
        // Equal evaluations: 4 + 2 × 2 × 3 = 16 each.
        assert_eq!(a["calls"], 16, "{name}");
    }
    // The per-round checkpoints: 4, 10, 16 evaluations.
    assert_eq!(results["checkpoints"], serde_json::json!([4, 10, 16]));
    assert!(out.table.contains("EvoPrompting") && out.table.contains("GA"));
    // The round records: each round spent prompts × children evaluations.
    let r1: RoundRecord =
        serde_json::from_str(&read(&lab.join("seed-0/evoprompting/r1.json"))).unwrap();
    assert_eq!((r1.children.len(), r1.prompts.len(), r1.calls), (6, 2, 10));
    let r2: RoundRecord =
        serde_json::from_str(&read(&lab.join("seed-0/evoprompting/r2.json"))).unwrap();
    // Round 2 was generated by the LoRA-tuned LM, itself an ordinary run directory.
    assert!(
        r2.tuned_on > 0,
        "no child of round 1 parsed: {:?}",
        r1.children
    );
    assert!(lab
        .join("seed-0/evoprompting/tune-r2/config.resolved.toml")
        .is_file());
    assert!(lab.join("pretrain/config.resolved.toml").is_file());

    // A second start is refused; resume after losing the last rounds and the results gives
    // the same results, bit for bit.
    let e = run(&cfg, Start::New).err().expect("refused").to_string();
    assert!(e.contains("--resume"), "{e}");
    let before = read(&lab.join("results.json"));
    for f in [
        "seed-0/evoprompting/r2.json",
        "seed-0/no_tuning/r2.json",
        "seed-0/ga/r1.json",
        "seed-0/ga/r2.json",
        "results.json",
    ] {
        std::fs::remove_file(lab.join(f)).unwrap();
    }
    run(
        &cfg,
        Start::Resume {
            explicit: Vec::new(),
        },
    )
    .unwrap();
    assert_eq!(read(&lab.join("results.json")), before);
}
