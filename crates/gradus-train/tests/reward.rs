//! `train reward` end to end: BT fits the pairs and saves a head that loads back with the same
//! scores; regression → BT initialisation; missing signals are named.

mod common;
use common::{col, init_model};

use std::path::Path;

use gradus_model::reward::RewardModel;
use gradus_objectives::reward::RewardObjective;
use gradus_train::reward::{run, RewardConfig};
use gradus_train::schedule::Schedule;

fn cfg(dir: &Path, init: &Path, name: &str) -> RewardConfig {
    let mut c = RewardConfig::default();
    c.run.dir = dir.to_path_buf();
    c.run.name = name.into();
    c.model.init_from = Some(init.to_path_buf());
    c.data.source = "synthetic".into();
    c.data.seq_len = 256;
    c.prefs.synthetic_pairs = 32;
    c.prefs.eval_pairs = 16;
    c.train.steps = 16;
    c.train.batch_size = 8;
    c.train.lr = 1e-2;
    c.train.progress = false;
    c.schedule = Schedule::Constant { warmup_steps: 0 };
    c
}

#[test]
fn bradley_terry_fits_and_the_head_loads_back() {
    let d = tempfile::tempdir().unwrap();
    let init = init_model(d.path(), false);
    let mut c = cfg(d.path(), &init, "bt");
    c.train.steps = 40;
    c.train.lr = 1e-3;
    let s = run(&c, false).unwrap();
    let loss = col(&s.fit.run_dir, "train/loss");
    // Step 1: a random head gives scores near 0, so the BT loss is near ln 2.
    assert!((loss[0] - std::f64::consts::LN_2).abs() < 0.1, "{loss:?}");
    let acc = col(&s.fit.run_dir, "rewards/accuracy");
    // Over the last 12 steps (≈ 3 epochs of 32 pairs in) the model separates the training pairs.
    assert!(acc[28..].iter().sum::<f64>() / 12.0 > 0.7, "{acc:?}");
    assert!(loss[28..].iter().sum::<f64>() / 12.0 < 0.6, "{loss:?}");
    // The checkpoint is a reward model whose scores equal the in-memory evaluation.
    let ck = s.fit.last_checkpoint.unwrap();
    let rm = RewardModel::load(&ck).unwrap();
    assert_eq!(rm.labels, vec!["reward".to_string()]);
    let tok = gradus_data::tokenizer::Tokenizer::from_dir(&ck).unwrap();
    let c = cfg(d.path(), &init, "bt");
    let data =
        gradus_train::prefs::load_pairs("synthetic", &c.prefs, &tok, 256, c.run.seed).unwrap();
    let e = gradus_eval::pairwise::evaluate_reward(
        &rm,
        &data.eval,
        gradus_eval::pairwise::pad_id(&tok),
    )
    .unwrap();
    assert_eq!(e.scores, s.eval.scores);
    assert_eq!(e.per_category.values().map(|v| v.1).sum::<usize>(), 16);
    assert!(s.fit.run_dir.join("reward_eval.json").exists());
    // Its model card says how transformers loads a reward model.
    let card = std::fs::read_to_string(ck.join("README.md")).unwrap();
    assert!(
        card.contains("model = AutoModelForSequenceClassification.from_pretrained"),
        "{card}"
    );
}

#[test]
fn regression_then_bt_from_one_of_its_outputs() {
    let d = tempfile::tempdir().unwrap();
    let init = init_model(d.path(), false);
    let mut r = cfg(d.path(), &init, "reg");
    r.objective = RewardObjective::Regression {};
    r.train.steps = 4;
    let s = run(&r, false).unwrap();
    let ck = s.fit.last_checkpoint.unwrap();
    assert_eq!(RewardModel::load(&ck).unwrap().labels.len(), 3);
    // BT from the regression model without picking an output: a clear error.
    let mut b = cfg(d.path(), &ck, "bt-from-reg");
    b.objective = RewardObjective::ScaledBt { center_coef: 0.01 };
    b.train.steps = 2;
    let e = run(&b, false).err().unwrap().to_string();
    assert!(e.contains("head.init_label"), "{e}");
    b.head.init_label = Some("correctness".into());
    let s = run(&b, false).unwrap();
    assert_eq!(
        RewardModel::load(&s.fit.last_checkpoint.unwrap())
            .unwrap()
            .labels,
        vec!["correctness".to_string()]
    );
}

#[test]
fn missing_margin_is_named() {
    let d = tempfile::tempdir().unwrap();
    let init = init_model(d.path(), false);
    let data = d.path().join("p.jsonl");
    std::fs::write(
        &data,
        "{\"prompt\": \"Question: 1+1?\\nAnswer: \", \"chosen\": \"2\", \"rejected\": \"3\"}\n",
    )
    .unwrap();
    let mut c = cfg(d.path(), &init, "m");
    c.data.source = data.display().to_string();
    c.objective = RewardObjective::BtMargin { center_coef: 0.0 };
    c.prefs.eval_pairs = 0; // one pair: none to hold out
    let e = run(&c, false).err().unwrap().to_string();
    assert!(e.contains("margin") && e.contains("pair 0"), "{e}");
}
