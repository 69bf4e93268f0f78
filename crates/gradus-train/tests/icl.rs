//! The ICL trainer and labs: the sequence layout (by hand), bit-identical resume, the evaluators'
//! chance levels on an untrained model, config errors, and the labs end to end at smoke size.

use gradus_tasks::bursty::{BurstyConfig, ItemKind, Items, LabelMode, Sequence};
use gradus_train::icl::boolean::{self, BooleanOptions};
use gradus_train::icl::emergence::{self, EmergenceOptions, LabSize};
use gradus_train::icl::transience::{self, TransienceOptions};
use gradus_train::icl::{encode, train_run, IclLearner, IclRunConfig};
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
}
