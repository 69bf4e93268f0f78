//! The ICL trainer and labs: the sequence layout (by hand), bit-identical resume, the evaluators'
//! chance levels on an untrained model, config errors, and the labs end to end at smoke size.

use gradus_tasks::bursty::{BurstyConfig, ItemKind, Items, LabelMode, Sequence};
use gradus_train::icl::boolean::{self, BooleanOptions};
use gradus_train::icl::emergence::{self, EmergenceOptions, LabSize};
use gradus_train::icl::transience::{self, TransienceOptions};
use gradus_train::icl::{encode, train_run, IclEval, IclLearner, IclRunConfig, IclRunSummary};
use gradus_train::rundir::Start;

fn data(item: ItemKind) -> BurstyConfig {
    BurstyConfig {
        n_classes: 8,
        n_labels: 4,
        n_novel_classes: 8,
        item,
        zipf_alpha: 0.0,
        eps: 0.1,
        burstiness: 1,
        p_bursty: 1.0,
        context: 2,
        labels: LabelMode::Fixed,
        eval_burstiness: None,
    }
}

#[test]
fn sequences_are_laid_out_item_label_item_label_query() {
    // L = 4 labels → ids 0..3, ITEM marker = 4. N = 2, D = 2:
    // ids [ITEM, ℓ₁, ITEM, ℓ₂, ITEM], x rows [x₁, 0, x₂, 0, x_q], query row 4.
    let d = data(ItemKind::Gaussian { dim: 2 });
    let s = Sequence {
        items: Items::Vectors(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
        classes: vec![1, 2, 1],
        labels: vec![1, 2, 1],
        bursty: true,
    };
    let e = encode(&d, std::slice::from_ref(&s), None);
    assert_eq!((e.b, e.t), (1, 5));
    assert_eq!(e.ids, vec![4, 1, 4, 2, 4]);
    assert_eq!(
        e.x.as_deref().unwrap(),
        &[1.0, 2.0, 0.0, 0.0, 3.0, 4.0, 0.0, 0.0, 5.0, 6.0]
    );
    assert_eq!(e.query_rows, vec![4]);
    assert_eq!(e.targets, vec![0, 0, 0, 0, 1]);
    // Keeping the last context pair only: [ITEM, ℓ₂, ITEM(query)].
    let e = encode(&d, &[s.clone(), s], Some(1));
    assert_eq!(e.t, 3);
    assert_eq!(e.ids, vec![4, 2, 4, 4, 2, 4]);
    assert_eq!(e.query_rows, vec![2, 5]);
    // Token items: item token j becomes id L + 1 + j = 5 + j.
    let d = data(ItemKind::Tokens { len: 2, vocab: 10 });
    let s = Sequence {
        items: Items::Tokens(vec![0, 1, 2, 3, 9, 9]),
        classes: vec![0, 1, 0],
        labels: vec![0, 1, 0],
        bursty: true,
    };
    let e = encode(&d, &[s], None);
    assert_eq!(e.ids, vec![5, 6, 0, 7, 8, 1, 14, 14]);
    assert!(e.x.is_none());
    assert_eq!(e.query_rows, vec![7]);
}

fn smoke_cfg(dir: &std::path::Path, name: &str, steps: u64) -> IclRunConfig {
    let mut c = IclRunConfig::default();
    c.run.dir = dir.to_path_buf();
    c.run.name = name.into();
    c.data = BurstyConfig {
        n_classes: 16,
        n_labels: 4,
        n_novel_classes: 16,
        item: ItemKind::Gaussian { dim: 6 },
        burstiness: 2,
        context: 4,
        ..Default::default()
    };
    c.model.hidden_size = 16;
    c.model.num_attention_heads = 2;
    c.model.intermediate_size = 24;
    c.train.steps = steps;
    c.train.batch_size = 4;
    c.train.eval_every = 2;
    c.train.eval_sequences = 8;
    c.train.checkpoint_every = 3;
    c.train.l2 = 1e-3;
    c
}

#[test]
fn resumed_runs_equal_uninterrupted_ones() {
    let d = tempfile::tempdir().unwrap();
    let full = smoke_cfg(d.path(), "full", 6);
    let a = train_run(&full, &Start::New).unwrap();
    // Same run stopped after 4 steps (an evaluation step, so both log the same rows), then
    // resumed to 6 from its step-4 checkpoint.
    let half = smoke_cfg(d.path(), "half", 4);
    train_run(&half, &Start::New).unwrap();
    let rest = smoke_cfg(d.path(), "half", 6);
    let b = train_run(
        &rest,
        &Start::Resume {
            explicit: vec!["train.steps".into()],
        },
    )
    .unwrap();
    let read = |name: &str, f: &str| {
        std::fs::read(d.path().join(name).join("checkpoints/step-6").join(f)).unwrap()
    };
    for f in [
        "model.safetensors",
        "input_proj.safetensors",
        "optimizer.safetensors",
        "optimizer_input_proj.safetensors",
    ] {
        assert!(
            read("full", f) == read("half", f),
            "{f} differs after resume"
        );
    }
    assert_eq!(a.curves, b.curves);
    // And training moved the weights away from the initialisation.
    let l0 = IclLearner::new(smoke_cfg(d.path(), "x", 6)).unwrap();
    let fresh = tempfile::tempdir().unwrap();
    l0.save(fresh.path()).unwrap();
    let w0 = std::fs::read(fresh.path().join("checkpoints/step-0/model.safetensors")).unwrap();
    assert!(w0 != read("full", "model.safetensors"));
    // A second fresh start in the same directory is refused.
    let e = train_run(&full, &Start::New).unwrap_err().to_string();
    assert!(e.contains("--resume"), "{e}");
}

#[test]
fn an_untrained_model_is_near_chance() {
    // With 4 labels, chance is 1/4; an untrained (init std 0.02) model predicts nearly the same
    // label everywhere, so over 64 sequences no evaluator can exceed ~0.6 by luck (a binomial(64,
    // 1/4) exceeds 0.45 with probability < 1e-3, and a constant predictor is right for 1/4 of the
    // balanced labels up to sampling noise).
    let d = tempfile::tempdir().unwrap();
    let mut c = smoke_cfg(d.path(), "u", 1);
    c.train.eval_sequences = 64;
    let mut l = IclLearner::new(c).unwrap();
    let ev = l.evaluate().unwrap();
    for (name, v) in [("icl", ev.icl), ("iwl", ev.iwl), ("swap_icl", ev.swap_icl)] {
        assert!(v < 0.6, "{name} = {v}");
    }
    // On swapped sequences the context label and the memorised one always differ, so the two
    // fractions add up to at most 1.
    assert!(ev.swap_icl + ev.swap_iwl <= 1.0 + 1e-12);
    let shots = l.icl_vs_shots(&[1, 4]).unwrap();
    assert_eq!(shots.iter().map(|s| s.0).collect::<Vec<_>>(), vec![1, 4]);
}

#[test]
fn bad_settings_name_the_field() {
    let d = tempfile::tempdir().unwrap();
    let mut c = smoke_cfg(d.path(), "bad", 2);
    c.data.burstiness = 9;
    let e = IclLearner::new(c).err().unwrap().to_string();
    assert!(e.contains("data.burstiness"), "{e}");
    let mut c = smoke_cfg(d.path(), "bad", 2);
    c.model.num_attention_heads = 3;
    let e = IclLearner::new(c).err().unwrap().to_string();
    assert!(e.contains("model.num_attention_heads"), "{e}");
}

#[test]
fn labs_run_end_to_end_at_smoke_size() {
    let d = tempfile::tempdir().unwrap();
    let o = EmergenceOptions::new(d.path().to_path_buf(), LabSize::Smoke);
    let out = emergence::run(&o).unwrap();
    // Smoke grid: B ∈ {0, 4} × α ∈ {0}: two runs, two table rows after the header.
    assert_eq!(out.points.len(), 2);
    assert_eq!(out.table.lines().count(), 3);
    let html = std::fs::read_to_string(&out.report).unwrap();
    assert!(html.contains("<svg") && html.contains("Trade-off"));
    assert!(d
        .path()
        .join("icl-emergence/B4-alpha0/report.html")
        .exists());
    let md = std::fs::read_to_string(d.path().join("icl-emergence/results.md")).unwrap();
    assert!(
        md.contains("Final ICL accuracy") && md.contains("| 4 |"),
        "{md}"
    );
    // Again without --resume: refused; with it: the finished runs are only summarised.
    assert!(emergence::run(&o).is_err());
    let mut r = o.clone();
    r.resume = true;
    let again = emergence::run(&r).unwrap();
    assert_eq!(again.table, out.table);

    let t = TransienceOptions::new(d.path().to_path_buf(), LabSize::Smoke);
    let out = transience::run(&t).unwrap();
    assert_eq!(out.runs.len(), 2);
    assert_eq!(out.runs[0].name, "no-l2");
    assert!(out.runs[1].name.starts_with("l2-"));
    assert!(std::fs::read_to_string(&out.report)
        .unwrap()
        .contains("<svg"));
    let md = std::fs::read_to_string(d.path().join("icl-transience/results.md")).unwrap();
    assert!(
        md.contains("- no-l2: ICL peak") && md.contains("## Per run"),
        "{md}"
    );

    // Boolean lab: conjunction and sparse parity at smoke size; both have an optimal learner, so
    // each run reports the transformer and three baselines.
    let b = BooleanOptions::new(d.path().to_path_buf(), LabSize::Smoke);
    let out = boolean::run(&b).unwrap();
    assert_eq!(out.runs.len(), 2);
    for r in &out.runs {
        let names: Vec<&str> = r.curves.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "transformer",
                "optimal learner",
                "nearest neighbour",
                "averaging"
            ]
        );
        // One accuracy per prompt position (8 points at smoke size).
        assert!(r.curves.iter().all(|c| c.1.len() == 8));
    }
    assert!(std::fs::read_to_string(&out.report)
        .unwrap()
        .contains("<svg"));
    // The table has k = 0, 1, 2, 4, 7 columns and one row per (class, learner): 2 × 4 + header.
    assert!(out.table.lines().next().unwrap().contains("k=7"));
    assert_eq!(out.table.lines().count(), 9);
    let md = std::fs::read_to_string(d.path().join("boolean-icl/results.md")).unwrap();
    assert!(
        md.contains("- conjunction: transformer") && md.contains("k=4"),
        "{md}"
    );
}

#[test]
fn the_emergence_grid_scores_every_point_on_one_icl_task() {
    // Every grid point (B = 0, 1, 2, 4) evaluates ICL with the same B_eval = 4 of N = 8, so a
    // model copying a random context label scores 4/8 = 50% at every point; the training B is
    // the grid's (B = 0 means i.i.d. contexts: p_bursty = 0).
    let o = EmergenceOptions::new("runs".into(), LabSize::Default);
    assert_eq!(o.burstiness, vec![0, 1, 2, 4]);
    for &b in &o.burstiness {
        let c = emergence::run_config(&o, b, 0.0);
        assert_eq!(c.data.eval_b(), 4, "B = {b}");
        assert_eq!(c.data.context, 8);
        assert_eq!(c.data.burstiness, b.max(1));
        assert_eq!(c.data.p_bursty, if b == 0 { 0.0 } else { 1.0 });
        // Many rare classes (the measured K = 256 is memorised before ICL can appear): with
        // α = 0 a class is a given sequence's query with probability 1/K ≤ 1/2048.
        assert!(c.data.n_classes >= 2048);
        c.validate().unwrap();
    }
}

fn summary(name: &str, icl: &[(u64, f64)], iwl: f64) -> IclRunSummary {
    let peak = icl
        .iter()
        .fold((0, f64::MIN), |a, &p| if p.1 > a.1 { p } else { a });
    IclRunSummary {
        name: name.into(),
        steps: icl.last().unwrap().0,
        final_eval: IclEval {
            icl: icl.last().unwrap().1,
            iwl,
            swap_icl: 0.0,
            swap_iwl: 0.0,
        },
        peak_icl: peak,
        curves: vec![
            ("eval/icl".into(), icl.to_vec()),
            ("eval/iwl".into(), vec![(0, 0.0), (100, iwl)]),
        ],
        ..Default::default()
    }
}

#[test]
fn transience_is_judged_against_the_copy_level() {
    // Copy level 0.5. Peak 0.9 (gain 0.4), final 0.6: kept gain 0.1 < 0.2 → transient.
    let a = summary("a", &[(0, 0.5), (50, 0.9), (100, 0.6)], 0.95);
    assert!(transience::is_transient(&a, 0.5));
    // Final 0.75 keeps 0.25 ≥ 0.2 of the gain → persists.
    let b = summary("b", &[(0, 0.5), (50, 0.9), (100, 0.75)], 0.95);
    assert!(!transience::is_transient(&b, 0.5));
    // A peak only 0.05 above the copy level is no ICL at all, so it cannot be transient.
    let c = summary("c", &[(0, 0.5), (50, 0.55), (100, 0.3)], 0.95);
    assert!(!transience::is_transient(&c, 0.5));
    let f = transience::findings(&[a, b, c], 0.5);
    assert!(f.contains("- a: ICL peak 90.0% at step 50, final 60.0% at step 100 (transient)"));
    assert!(
        f.contains("(persists)") && f.contains("(ICL never emerged)"),
        "{f}"
    );
    // IWL reaches 90% at the second evaluation (step 100).
    assert!(f.contains("≥ 90% from step 100"), "{f}");
}

#[test]
fn boolean_tables_report_accuracy_after_k_examples() {
    // m = 30 points: k = 0, then the powers of two below 30, then the last position k = 29.
    assert_eq!(boolean::shot_points(30), vec![0, 1, 2, 4, 8, 16, 29]);
    assert_eq!(boolean::shot_points(8), vec![0, 1, 2, 4, 7]);
    // Curves over m = 4 positions; k = 3 is the last one.
    let r = boolean::BoolRunSummary {
        class: "conjunction".into(),
        curves: vec![
            ("transformer".into(), vec![0.5, 0.7, 0.9, 0.97]),
            ("optimal learner".into(), vec![0.5, 0.8, 0.95, 1.0]),
            ("nearest neighbour".into(), vec![0.5, 0.6, 0.7, 0.8]),
        ],
        mean: vec![],
        train_curve: vec![],
    };
    let p = boolean::BoolRunSummary {
        class: "sparse_parity_2".into(),
        curves: vec![
            ("transformer".into(), vec![0.5, 0.5, 0.52, 0.55]),
            ("optimal learner".into(), vec![0.5, 0.5, 0.6, 0.7]),
        ],
        mean: vec![],
        train_curve: vec![],
    };
    let ks = boolean::shot_points(4);
    assert_eq!(ks, vec![0, 1, 2, 3]);
    let t = boolean::shots_table(&[r.clone(), p.clone()], &ks);
    // The transformer's row: 50.0 70.0 90.0 97.0, mean (0.5+0.7+0.9+0.97)/4 = 76.75 → 76.8.
    let row = t.lines().nth(1).unwrap();
    assert!(row.starts_with("conjunction       transformer"), "{row}");
    assert!(row.contains("50.0   70.0   90.0   97.0   76.8"), "{row}");
    let f = boolean::findings(&[r, p], &ks);
    // 97% ≥ 100% − 5 points: near the optimal learner; 55% < 60%: near chance.
    assert!(f.contains("- conjunction: transformer 97.0% after 3 examples (near the optimal learner; best baseline optimal learner 100.0%)"), "{f}");
    assert!(
        f.contains("- sparse_parity_2: transformer 55.0% after 3 examples (near chance"),
        "{f}"
    );
}

#[test]
fn transience_presets_keep_their_stated_layouts() {
    // Paper: Singh's layout (query ×3 + distractor ×3 of N = 8, every sequence bursty, one label
    // per class over 1,600 classes). Default: the CPU setting the README reports (2,048 classes
    // over 32 labels, B = 4, 2% i.i.d. sequences). Both score ICL on Singh's "fsl" task: two novel
    // classes of 4 exemplars each (copy level 4/8 = 50%). Both arms differ in L2 only.
    let p = TransienceOptions::new("runs".into(), LabSize::Paper);
    let c = transience::run_config(&p, 0.0);
    assert_eq!(
        (c.data.burstiness, c.data.context, c.data.p_bursty),
        (3, 8, 1.0)
    );
    assert_eq!((c.data.n_classes, c.data.n_labels), (1600, 1600));
    assert_eq!(c.data.eval_b(), 4);
    let o = TransienceOptions::new("runs".into(), LabSize::Default);
    let (a, b) = (
        transience::run_config(&o, 0.0),
        transience::run_config(&o, 1e-4),
    );
    assert_eq!((a.data.n_classes, a.data.n_labels), (2048, 32));
    assert_eq!((a.data.burstiness, a.data.eval_b()), (4, 4));
    assert!(a.data.p_bursty > 0.0 && a.data.p_bursty < 1.0);
    assert_eq!(a.data, b.data);
    assert_eq!(a.model, b.model);
    assert_eq!((a.train.l2, b.train.l2), (0.0, 1e-4));
    a.validate().unwrap();
}

#[test]
fn lab_overrides_apply_to_every_run_but_keep_the_grid() {
    // `--set` reaches every run through `run_with`, but a grid point stays the grid's: an
    // override of B, α or the run name is undone; other fields (here ε) go through.
    let d = tempfile::tempdir().unwrap();
    let o = EmergenceOptions::new(d.path().to_path_buf(), LabSize::Smoke);
    let out = emergence::run_with(&o, &|mut c| {
        c.data.eps = 0.25;
        c.data.burstiness = 2;
        c.data.zipf_alpha = 3.0;
        c.run.name = "same".into();
        Ok(c)
    })
    .unwrap();
    assert_eq!(out.points.len(), 2);
    for (b, name) in [(1, "B0-alpha0"), (4, "B4-alpha0")] {
        let text = std::fs::read_to_string(
            d.path()
                .join("icl-emergence")
                .join(name)
                .join("config.resolved.toml"),
        )
        .unwrap();
        let c: IclRunConfig = toml::from_str(&text).unwrap();
        assert_eq!(
            (c.data.eps, c.data.burstiness, c.data.zipf_alpha),
            (0.25, b, 0.0)
        );
        assert_eq!(c.data.p_bursty, if b == 1 { 0.0 } else { 1.0 });
    }
    // An override that fails is an error of the lab, not a panic.
    let o2 = EmergenceOptions::new(d.path().join("x"), LabSize::Smoke);
    let e = emergence::run_with(&o2, &|_| Err(gradus_tensor::Error::msg("bad --set")))
        .err()
        .unwrap();
    assert!(e.to_string().contains("bad --set"), "{e}");
}

#[test]
fn a_resumed_lab_accepts_more_steps_from_the_command_line() {
    // `--resume --steps 9` on a finished 6-step lab continues each run to step 9 (train.steps is
    // set on the command line, so the change is accepted); any other change is still refused.
    let d = tempfile::tempdir().unwrap();
    let t = TransienceOptions::new(d.path().to_path_buf(), LabSize::Smoke);
    transience::run(&t).unwrap();
    let mut r = t.clone();
    r.resume = true;
    r.steps = Some(9);
    let out = transience::run(&r).unwrap();
    for s in &out.runs {
        assert_eq!(s.steps, 9);
        assert_eq!(s.curves[0].1.last().unwrap().0, 9, "{}", s.name);
    }
    let mut bad = r.clone();
    bad.steps = Some(12);
    let e = transience::run_with(&bad, &|mut c| {
        c.train.lr = 5e-4;
        Ok(c)
    })
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("train.lr"), "{e}");
    // Declared as a --set key, the same change is accepted.
    bad.set_keys = vec!["train.lr".into()];
    transience::run_with(&bad, &|mut c| {
        c.train.lr = 5e-4;
        Ok(c)
    })
    .unwrap();
}
