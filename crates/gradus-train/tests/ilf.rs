//! `gradus lab ilf` (`gradus_train::ilf`): ILF's selection keeps only refinements that pass,
//! every arm trains on the same number of examples, the corpus never shows a held-out or pool
//! task, bad settings name their field, and a smoke run writes its report and resumes.

use gradus_tasks::code_tasks::{passes, split_of_description, CodeSplit, CodeTask, Family};
use gradus_tensor::rng::Rng;
use gradus_train::ilf::{
    cut_at_comment, equal_data, ilf_examples, pretrain_documents, run, sample_examples, Arm,
    IlfConfig, IlfSize,
};
use gradus_train::rundir::Start;

/// x * 3 + 1 on x = 3 (10) and x = 0 (1).
fn task(d: &str) -> CodeTask {
    CodeTask::from_parts(
        Family::TwoStep,
        d,
        "let r = x * 3;\nr = r + 1;\nprint r;\n",
        &["x"],
        &[vec![3], vec![0]],
        1000,
    )
    .unwrap()
}

const RIGHT: &str = "print x * 3 + 1;\n";
const RIGHT2: &str = "let r = 1 + x * 3;\nprint r;\n";
const WRONG: &str = "print x * 3;\n"; // 9 for x = 3
const BROKEN: &str = "print x * ;\n";

#[test]
fn ilf_keeps_only_the_first_passing_refinement_of_failing_programs() {
    let tasks = vec![task("a"), task("b"), task("c"), task("d")];
    // a: the initial program passes (not refined, even though a refinement is given);
    // b: fails; refinements wrong, right, right2 → right (the first that passes);
    // c: fails; no refinement passes → nothing kept;
    // d: does not parse; right2 passes.
    let initial = vec![RIGHT.into(), WRONG.into(), WRONG.into(), BROKEN.into()];
    let refinements = vec![
        vec![RIGHT2.to_string()],
        vec![WRONG.into(), RIGHT.into(), RIGHT2.into()],
        vec![WRONG.into(), BROKEN.into()],
        vec![RIGHT2.into()],
    ];
    let s = ilf_examples(&tasks, &initial, &refinements);
    assert_eq!(
        s.kept,
        vec![(1, RIGHT.to_string()), (3, RIGHT2.to_string())]
    );
    assert_eq!(s.initial_passed, 1);
    assert_eq!(s.refined, 3);
    assert_eq!(s.refinements, 3 + 2 + 1); // task a's refinement is never looked at
    assert_eq!(s.refinements_passed, 2 + 1);
    for (i, p) in &s.kept {
        assert!(passes(&tasks[*i], p));
    }
    // The samples baseline: the first passing sample per task, tasks with none left out.
    let samples = vec![
        vec![WRONG.to_string(), RIGHT2.into(), RIGHT.into()],
        vec![BROKEN.into()],
        vec![RIGHT.into()],
        vec![],
    ];
    assert_eq!(
        sample_examples(&tasks, &samples),
        vec![(0, RIGHT2.to_string()), (2, RIGHT.to_string())]
    );
}

#[test]
fn programs_stop_at_the_first_comment_line() {
    // A policy that goes on as in a refinement document: the program is what comes before.
    let g = "let r = x;\nprint r;\n# feedback: for x = 1 expected 2 but got 1\n# fix:\nprint 2;\n";
    assert_eq!(cut_at_comment(g), "let r = x;\nprint r;\n");
    assert_eq!(cut_at_comment("# task: x\nprint x;\n"), "");
    assert_eq!(cut_at_comment("print x;\n"), "print x;\n");
    assert_eq!(cut_at_comment("print x;"), "print x;");
}

#[test]
fn every_arm_gets_the_same_number_of_examples() {
    let tasks: Vec<CodeTask> = (0..6).map(|i| task(&format!("t{i}"))).collect();
    let ilf: Vec<(usize, String)> = [1, 2, 4].iter().map(|&i| (i, RIGHT.to_string())).collect();
    let own: Vec<(usize, String)> = [0, 1, 2, 3, 5]
        .iter()
        .map(|&i| (i, RIGHT2.to_string()))
        .collect();
    // 3 ILF examples, 5 own samples: n = 3; ILF keeps all its three, the samples arm 3 of 5.
    let d = equal_data(&tasks, &ilf, Some(&own), &mut Rng::new(0));
    assert_eq!(d.n, 3);
    assert_eq!((d.ilf.len(), d.gold.len(), d.samples.len()), (3, 3, 3));
    assert_eq!(d.ilf, ilf);
    // Gold: the gold programs of ILF's tasks.
    let gold_tasks: Vec<usize> = d.gold.iter().map(|g| g.0).collect();
    assert_eq!(gold_tasks, vec![1, 2, 4]);
    assert!(d.gold.iter().all(|(i, p)| *p == tasks[*i].gold));
    // The samples arm's are distinct members of its own, in task order.
    assert!(d.samples.iter().all(|s| own.contains(s)));
    assert!(d.samples.windows(2).all(|w| w[0].0 < w[1].0));
    // Fewer own samples than refinements: n follows them and ILF is subsampled.
    let d = equal_data(&tasks, &own, Some(&ilf[..2]), &mut Rng::new(1));
    assert_eq!(d.n, 2);
    assert_eq!((d.ilf.len(), d.gold.len(), d.samples.len()), (2, 2, 2));
    assert!(d.ilf.iter().all(|s| own.contains(s)));
    // Without the samples arm every refinement is used.
    let d = equal_data(&tasks, &ilf, None, &mut Rng::new(0));
    assert_eq!(
        (d.n, d.ilf.len(), d.gold.len(), d.samples.len()),
        (3, 3, 3, 0)
    );
    // No refinement passed: nothing to train on.
    let d = equal_data(&tasks, &[], Some(&own), &mut Rng::new(0));
    assert_eq!((d.n, d.ilf.len(), d.samples.len()), (0, 0, 0));
}

#[test]
fn the_corpus_holds_pretraining_tasks_only() {
    let mut cfg = IlfConfig::default();
    cfg.data.pretrain_docs = 400;
    let docs = pretrain_documents(&cfg).unwrap();
    assert_eq!(docs.len(), 400);
    let mut refine = 0;
    for d in &docs {
        let desc = d
            .strip_prefix("# task: ")
            .and_then(|r| r.split('\n').next())
            .unwrap();
        assert_eq!(split_of_description(desc), CodeSplit::Pretrain, "{d}");
        // Every document is itself a valid program (the headers are comments).
        assert!(gradus_tasks::lang::parse(d).is_ok(), "{d}");
        if d.contains("# feedback: ") {
            refine += 1;
            assert!(d.contains("\n# fix:\n"), "{d}");
        }
    }
    // refine_share = 0.5: 400 draws, binomial sd 10; [150, 250] is 5 sd wide each way.
    assert!(
        (150..=250).contains(&refine),
        "{refine} refinement documents"
    );
}

#[test]
fn bad_settings_name_the_field() {
    let err = |f: &dyn Fn(&mut IlfConfig)| {
        let mut c = IlfConfig::default();
        f(&mut c);
        c.validate().unwrap_err().to_string()
    };
    for (field, e) in [
        ("rounds.refinements", err(&|c| c.rounds.refinements = 0)),
        ("rounds.samples", err(&|c| c.rounds.samples = 0)),
        ("rounds.rounds", err(&|c| c.rounds.rounds = 0)),
        ("rounds.temperature", err(&|c| c.rounds.temperature = 0.0)),
        (
            "rounds.max_new_tokens",
            err(&|c| c.rounds.max_new_tokens = 500),
        ),
        ("tasks.tests", err(&|c| c.tasks.tests = 0)),
        ("data.pool", err(&|c| c.data.pool = 0)),
        ("data.heldout", err(&|c| c.data.heldout = 0)),
        ("data.refine_share", err(&|c| c.data.refine_share = 1.5)),
        ("train.epochs", err(&|c| c.train.epochs = 0)),
        ("arms", err(&|c| c.arms = vec![Arm::Gold])),
        ("model.hidden_size", err(&|c| c.model.hidden_size = 90)),
    ] {
        assert!(e.contains(field), "{field}: {e}");
    }
    assert!(IlfConfig::default().validate().is_ok());
    assert!(IlfConfig::sized(IlfSize::Smoke).validate().is_ok());
}

#[test]
fn smoke_run_writes_its_report_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = IlfConfig::sized(IlfSize::Smoke);
    cfg.run.dir = tmp.path().to_path_buf();
    let out = run(&cfg, Start::New).unwrap();
    let lab = tmp.path().join("lab-ilf-smoke");
    for f in [
        "config.resolved.toml",
        "tasks.json",
        "pretrain.jsonl",
        "r0-eval.json",
        "r1/round.json",
        "r1/ilf.jsonl",
        "r1/gold.jsonl",
        "r1/samples.jsonl",
        "r1/eval-ilf.json",
        "metrics.jsonl",
        "results.md",
        "results.json",
        "report.html",
    ] {
        assert!(lab.join(f).exists(), "{f} missing");
    }
    assert!(lab.join("pretrain/checkpoints").is_dir());
    // One metrics row per round (0 = pretrained) with every arm's pass@1.
    let metrics = std::fs::read_to_string(lab.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 2);
    for arm in ["ilf", "gold", "samples"] {
        assert!(metrics.contains(&format!("\"pass1/{arm}\"")), "{metrics}");
    }
    assert_eq!(out.pass1.len(), 3);
    // Starting again where a lab is is refused; --resume reads every stage back.
    assert!(run(&cfg, Start::New).is_err());
    let again = run(
        &cfg,
        Start::Resume {
            explicit: Vec::new(),
        },
    )
    .unwrap();
    assert_eq!(again.table, out.table);
    assert_eq!(again.pass1, out.pass1);
}
