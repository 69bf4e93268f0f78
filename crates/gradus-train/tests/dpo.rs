//! `train dpo` end to end on a tiny random model: learning happens, exact resume, precomputed =
//! online reference, every objective runs, bad pairs are reported.

mod common;
use common::{col, init_model};

use std::path::Path;

use gradus_data::preference::BadPairPolicy;
use gradus_objectives::{PairObjective, PreferenceObjective, SingleObjective};
use gradus_tensor::Device;
use gradus_train::dpo::{run, DpoConfig, ReferenceMode};
use gradus_train::schedule::Schedule;

fn cfg(dir: &Path, init: &Path, name: &str) -> DpoConfig {
    let mut c = DpoConfig::default();
    c.run.dir = dir.to_path_buf();
    c.run.name = name.into();
    c.run.seed = 5;
    c.model.init_from = Some(init.to_path_buf());
    c.data.source = "synthetic".into();
    c.data.seq_len = 256;
    c.prefs.synthetic_pairs = 32;
    c.prefs.eval_pairs = 16;
    c.prefs.eval_every = 4;
    c.train.steps = 12;
    c.train.batch_size = 8;
    c.train.lr = 1e-2;
    c.train.progress = false;
    c.optimizer.weight_decay = 0.0;
    c.schedule = Schedule::Constant { warmup_steps: 0 };
    c
}

#[test]
fn dpo_learns_and_logs_the_diagnostics() {
    let d = tempfile::tempdir().unwrap();
    let init = init_model(d.path(), true);
    let c = cfg(d.path(), &init, "dpo");
    let s = run(&c, false).unwrap();
    let loss = col(&s.fit.run_dir, "train/loss");
    assert_eq!(loss.len(), 12);
    // At step 1 the policy is the reference: every margin is 0 and the loss is ln 2.
    assert!((loss[0] - std::f64::consts::LN_2).abs() < 1e-4, "{loss:?}");
    // 32 pairs, 4 epochs: the loss on the training pairs falls and reward accuracy rises.
    let tail = loss[8..].iter().sum::<f64>() / 4.0;
    assert!(tail < 0.6, "{loss:?}");
    let acc = col(&s.fit.run_dir, "rewards/accuracies");
    assert!(acc[8..].iter().sum::<f64>() / 4.0 > 0.7, "{acc:?}");
    // Held-out ranking diagnostics were logged at steps 4, 8, 12 and written to ranking.json.
    assert_eq!(col(&s.fit.run_dir, "ranking/accuracy").len(), 3);
    assert_eq!(col(&s.fit.run_dir, "ranking/idealised@0.1").len(), 3);
    let before = s.before.unwrap();
    assert_eq!(
        before.reward_accuracy, 0.0,
        "margins are exactly 0 before training"
    );
    assert_eq!(before.ranking_accuracy, before.reference_ranking_accuracy);
    assert_eq!(
        s.after.unwrap().flip_consistency,
        1.0,
        "Thm 4.1 holds pair by pair"
    );
    assert!(s.fit.run_dir.join("ranking.json").exists());
    assert!(s.fit.run_dir.join("report.html").exists());
}

#[test]
fn resume_is_bit_identical_and_online_reference_matches_precomputed() {
    let d = tempfile::tempdir().unwrap();
    let init = init_model(d.path(), true);
    let mut a = cfg(d.path(), &init, "full");
    a.train.steps = 6;
    a.prefs.eval_every = 0;
    run(&a, false).unwrap();
    let mut b = a.clone();
    b.run.name = "split".into();
    b.train.stop_after = 3;
    run(&b, false).unwrap();
    run(&b, true).unwrap();
    let bits = |n: &str| {
        col(&d.path().join(n), "train/loss")
            .iter()
            .map(|x| x.to_bits())
            .collect::<Vec<_>>()
    };
    assert_eq!(bits("full"), bits("split"));

    let mut o = a.clone();
    o.run.name = "online".into();
    o.reference.mode = ReferenceMode::Online;
    run(&o, false).unwrap();
    let (x, y) = (
        col(&d.path().join("full"), "train/loss"),
        col(&d.path().join("online"), "train/loss"),
    );
    for (p, q) in x.iter().zip(&y) {
        assert!((p - q).abs() < 1e-5, "{x:?} vs {y:?}");
    }
}

#[test]
fn every_objective_runs() {
    let d = tempfile::tempdir().unwrap();
    let init = init_model(d.path(), true);
    let objectives = [
        PreferenceObjective::Pair(PairObjective::Ipo { beta: 0.1 }),
        PreferenceObjective::Pair(PairObjective::DpoNorm { beta: 5.0 }),
        PreferenceObjective::Pair(PairObjective::Simpo {
            beta: 2.0,
            gamma_beta_ratio: 0.5,
        }),
        PreferenceObjective::Pair(PairObjective::GammaDpo {
            beta: 0.1,
            gamma: 0.5,
        }),
        PreferenceObjective::Pair(PairObjective::Robust {
            beta: 0.1,
            label_smoothing: 0.1,
        }),
        PreferenceObjective::Pair(PairObjective::Hinge { beta: 0.1 }),
        PreferenceObjective::Single(SingleObjective::Kto {
            beta: 0.1,
            desirable_weight: 1.0,
            undesirable_weight: 1.0,
        }),
        PreferenceObjective::Single(SingleObjective::Marge {
            alpha: 1.0,
            beta: 0.1,
            self_normalize: true,
        }),
    ];
    for (i, obj) in objectives.into_iter().enumerate() {
        let mut c = cfg(d.path(), &init, &format!("obj{i}"));
        c.objective = obj.clone();
        c.train.steps = 3;
        c.prefs.eval_every = 0;
        let s = run(&c, false).unwrap_or_else(|e| panic!("{}: {e}", obj.name()));
        let loss = col(&s.fit.run_dir, "train/loss");
        assert!(
            loss.iter().all(|l| l.is_finite()),
            "{}: {loss:?}",
            obj.name()
        );
        assert_eq!(loss.len(), 3);
    }
}

#[test]
fn bad_pairs_error_or_skip() {
    let d = tempfile::tempdir().unwrap();
    let init = init_model(d.path(), true);
    let data = d.path().join("pairs.jsonl");
    std::fs::write(
        &data,
        "{\"prompt\": \"Question: 1+1?\\nAnswer: \", \"chosen\": \"2\", \"rejected\": \"3\"}\n{\"prompt\": \"Q\", \"chosen\": \"same\", \"rejected\": \"same\"}\n\
         {\"prompt\": \"Question: 2+2?\\nAnswer: \", \"chosen\": \"4\", \"rejected\": \"5\"}\n{\"prompt\": \"Question: 3+3?\\nAnswer: \", \"chosen\": \"6\", \"rejected\": \"7\"}\n",
    )
    .unwrap();
    let mut c = cfg(d.path(), &init, "bad");
    c.data.source = data.display().to_string();
    c.train.steps = 1;
    c.prefs.eval_pairs = 1;
    let e = run(&c, false).err().unwrap().to_string();
    assert!(e.contains("pair 1") && e.contains("identical"), "{e}");
    // The hint names the key that exists (issue 10: it said `data.on_bad_pair`).
    assert!(e.contains("prefs.on_bad_pair"), "{e}");
    c.prefs.on_bad_pair = BadPairPolicy::Skip;
    let s = run(&c, false).unwrap();
    // One bad pair in the file → counted once (it was counted twice when the held-out pairs were
    // a copy of the first training pairs); 3 usable pairs: 1 held out, 2 trained on.
    assert_eq!(s.skipped, 1);
    assert_eq!(s.after.as_ref().unwrap().pairs, 1);
}

#[test]
fn lora_dpo_trains_only_the_adapter_and_resumes_exactly() {
    let d = tempfile::tempdir().unwrap();
    let init = init_model(d.path(), true);
    let mut a = cfg(d.path(), &init, "lora-full");
    a.train.steps = 6;
    a.prefs.eval_every = 0;
    a.reference.mode = ReferenceMode::Online;
    a.lora = Some(gradus_model::LoraConfig {
        r: 4,
        lora_alpha: 8.0,
        lora_dropout: 0.1,
        target_modules: vec!["q_proj".into(), "v_proj".into()],
        use_rslora: false,
    });
    let s = run(&a, false).unwrap();
    let loss = col(&s.fit.run_dir, "train/loss");
    // B starts at 0, so the policy equals the reference at step 1: the loss is ln 2 even with dropout.
    assert!((loss[0] - std::f64::consts::LN_2).abs() < 1e-5, "{loss:?}");
    assert!(
        loss.iter()
            .any(|l| (l - std::f64::consts::LN_2).abs() > 1e-4),
        "the adapter learned: {loss:?}"
    );
    let ck = s.fit.last_checkpoint.unwrap();
    assert!(
        ck.join("adapter_config.json").exists() && ck.join("adapter_model.safetensors").exists()
    );
    assert!(
        !ck.join("model.safetensors").exists(),
        "a LoRA checkpoint holds the adapter only"
    );
    // The saved adapter is not the zero init: loaded onto the base it changes the logits. (That it is
    // exactly the trained policy is shown bit-exactly by the stopped-and-resumed run below, which
    // continues from such a save.)
    let base = gradus_model::hf::load_decoder(&init, &Device::Cpu).unwrap();
    let mut m = gradus_model::hf::load_decoder(&init, &Device::Cpu).unwrap();
    gradus_model::lora::load_adapter(&ck, &mut m).unwrap();
    assert!(m.has_lora());
    let ids: Vec<u32> = (1..9).collect();
    let inp = gradus_model::ForwardInput::new(&ids, 1, ids.len());
    let logits = |d: &gradus_model::Decoder| {
        d.forward(&inp, None)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let (lb, la) = (logits(&base), logits(&m));
    assert_eq!(lb.len(), la.len());
    let diff = lb
        .iter()
        .zip(&la)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(
        diff > 1e-5,
        "the adapter changes the logits (max |Δ| = {diff})"
    );

    let mut b = a.clone();
    b.run.name = "lora-split".into();
    b.train.stop_after = 3;
    run(&b, false).unwrap();
    run(&b, true).unwrap();
    let bits = |n: &str| {
        col(&d.path().join(n), "train/loss")
            .iter()
            .map(|x| x.to_bits())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        bits("lora-full"),
        bits("lora-split"),
        "dropout stream and adapter restored exactly"
    );
}

#[test]
fn kto_trains_on_unpaired_rows() {
    let d = tempfile::tempdir().unwrap();
    let init = init_model(d.path(), true);
    let data = d.path().join("kto.jsonl");
    let mut s = String::new();
    for i in 0..12 {
        let good = i % 3 != 0;
        let row = serde_json::json!({"prompt": format!("Question: Compute {i}+1.\nAnswer: "), "completion": if good { format!("{}", i + 1) } else { "I am not sure.".into() }, "label": good});
        s.push_str(&format!("{row}\n"));
    }
    std::fs::write(&data, s).unwrap();
    let mut c = cfg(d.path(), &init, "kto");
    c.data.source = data.display().to_string();
    c.prefs.unpaired = true;
    c.prefs.eval_source = Some("synthetic".into());
    c.prefs.eval_pairs = 8;
    c.prefs.eval_every = 0;
    c.train.steps = 4;
    c.train.batch_size = 4;
    c.objective = PreferenceObjective::Pair(PairObjective::Dpo {
        beta: 0.1,
        label_smoothing: 0.0,
    });
    let e = run(&c, false).err().unwrap().to_string();
    assert!(e.contains("prefs.unpaired") && e.contains("kto"), "{e}");
    c.objective = PreferenceObjective::Single(SingleObjective::Kto {
        beta: 0.1,
        desirable_weight: 1.0,
        undesirable_weight: 1.0,
    });
    let out = run(&c, false).unwrap();
    let loss = col(&out.fit.run_dir, "train/loss");
    // Step 1: r = 0 and z = 0, so every example's loss is 1 − σ(0) = 0.5.
    assert!((loss[0] - 0.5).abs() < 1e-5, "{loss:?}");
    assert_eq!(loss.len(), 4);
    assert_eq!(
        out.after.unwrap().pairs,
        8,
        "held-out pairs from eval_source"
    );
}

/// Issue 10: the "held-out" pairs of a file source were the first training pairs. Now they are
/// taken out of the training set; `prefs.held_out = "train_subset"` keeps them in and says so.
#[test]
fn held_out_pairs_are_disjoint_from_training_pairs_unless_asked() {
    let d = tempfile::tempdir().unwrap();
    let init = init_model(d.path(), true);
    let tok = gradus_data::tokenizer::Tokenizer::from_dir(&init).unwrap();
    let data = d.path().join("pairs.jsonl");
    let rows: String = (0..10)
        .map(|i| format!("{}\n", serde_json::json!({"prompt": format!("Question: {i}+1?\nAnswer: "), "chosen": format!("{}", i + 1), "rejected": format!("{}", i + 2)})))
        .collect();
    std::fs::write(&data, rows).unwrap();
    let src = data.display().to_string();
    let mut p = gradus_train::prefs::PrefsSection {
        eval_pairs: 3,
        ..Default::default()
    };
    let split = gradus_train::prefs::load_pairs(&src, &p, &tok, 256, 0).unwrap();
    assert_eq!((split.train.len(), split.eval.len()), (7, 3));
    assert!(!split.eval_is_train_subset);
    for e in &split.eval {
        assert!(
            split.train.iter().all(|t| t.prompt != e.prompt),
            "a held-out pair is also a training pair"
        );
    }
    p.held_out = gradus_train::prefs::HeldOut::TrainSubset;
    let sub = gradus_train::prefs::load_pairs(&src, &p, &tok, 256, 0).unwrap();
    assert_eq!((sub.train.len(), sub.eval.len()), (10, 3));
    assert!(sub.eval_is_train_subset);

    // A run with train_subset names its diagnostics so, never `ranking/*`.
    let mut c = cfg(d.path(), &init, "subset");
    c.data.source = src;
    c.prefs.eval_pairs = 3;
    c.prefs.eval_every = 2;
    c.prefs.held_out = gradus_train::prefs::HeldOut::TrainSubset;
    c.train.steps = 2;
    c.train.batch_size = 4;
    let s = run(&c, false).unwrap();
    assert_eq!(
        col(&s.fit.run_dir, "ranking_train_subset/accuracy").len(),
        1
    );
    assert!(col(&s.fit.run_dir, "ranking/accuracy").is_empty());
}

#[test]
fn fast_and_reference_engines_give_the_same_dpo_run() {
    // The fast graph (default) and the candle graph: same per-step losses and reward margins
    // within 1e-4 relative (f32 summation order only; see gradus-model's tests/fast.rs).
    use gradus_train::recipe::Engine;
    let d = tempfile::tempdir().unwrap();
    let init = init_model(d.path(), false);
    let mut a = cfg(d.path(), &init, "fast");
    a.train.steps = 6;
    a.prefs.eval_every = 0;
    a.train.engine = Engine::Fast;
    let mut b = a.clone();
    b.run.name = "reference".into();
    b.train.engine = Engine::Reference;
    run(&a, false).unwrap();
    run(&b, false).unwrap();
    for key in ["train/loss", "rewards/margins", "logps/chosen"] {
        let (x, y) = (
            col(&d.path().join("fast"), key),
            col(&d.path().join("reference"), key),
        );
        assert_eq!(x.len(), 6, "{key}");
        for (i, (p, q)) in x.iter().zip(&y).enumerate() {
            assert!(
                (p - q).abs() <= 1e-4 * q.abs().max(1e-2),
                "{key} step {}: fast {p} vs reference {q}",
                i + 1
            );
        }
    }
    let l = col(&d.path().join("fast"), "train/loss");
    assert!(l[5] < l[0], "the fast engine learns: {l:?}");
}
