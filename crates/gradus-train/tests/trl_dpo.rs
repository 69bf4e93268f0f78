//! Parity with TRL 1.16's DPOTrainer (fixture: tests/fixtures/trl_dpo/gen.py, see its README):
//! the same tiny Llama, tokenizer and 8 pairs in file order, batch 2, 4 AdamW steps, for the
//! sigmoid (DPO) and IPO losses. gradus must reproduce TRL's token ids, initial log-probs and
//! every logged per-step metric within 1e-4.

use std::path::{Path, PathBuf};

use gradus_data::chat::ChatTemplate;
use gradus_data::preference::{read_pairs, tokenize_pairs, BadPairPolicy, PreferenceFields};
use gradus_data::tokenizer::Tokenizer;
use gradus_objectives::{PairObjective, PreferenceObjective};
use gradus_train::dpo::{run, DpoConfig};
use gradus_train::metrics::read_metrics;
use gradus_train::schedule::Schedule;
use serde_json::Value;

const TOL: f64 = 1e-4;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/trl_dpo")
}

fn expected(loss: &str) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(fixture().join(format!("expected_{loss}.json"))).unwrap(),
    )
    .unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn tokenization_matches_trl() {
    let f = fixture();
    let tok = Tokenizer::from_dir(&f).unwrap();
    let pairs = read_pairs(&f.join("data.jsonl"), &PreferenceFields::default()).unwrap();
    let (tp, _) = tokenize_pairs(
        &tok,
        &ChatTemplate::chatml(),
        &pairs,
        1024,
        BadPairPolicy::Error,
    )
    .unwrap();
    let e = expected("sigmoid");
    let want = e["tokenized"].as_array().unwrap();
    assert_eq!(tp.len(), want.len());
    for (i, (g, w)) in tp.iter().zip(want).enumerate() {
        assert_eq!(g.prompt, ids(&w["prompt_ids"]), "pair {i} prompt");
        assert_eq!(g.chosen, ids(&w["chosen_ids"]), "pair {i} chosen");
        assert_eq!(g.rejected, ids(&w["rejected_ids"]), "pair {i} rejected");
    }
}

fn check(loss: &str, objective: PreferenceObjective) {
    let e = expected(loss);
    let s = &e["settings"];
    let f = fixture();
    let d = tempfile::tempdir().unwrap();
    let mut c = DpoConfig::default();
    c.run.dir = d.path().to_path_buf();
    c.run.name = loss.into();
    c.model.init_from = Some(f.join("model"));
    c.tokenizer.path = Some(f.clone());
    c.data.source = f.join("data.jsonl").display().to_string();
    // TRL's max_length (1024) only truncates; the fixture's sequences are far shorter than the
    // model's 128 positions, and gradus refuses a seq_len above max_position_embeddings.
    c.data.seq_len = (s["max_length"].as_u64().unwrap() as usize).min(128);
    c.objective = objective;
    c.prefs.shuffle = false;
    c.prefs.eval_pairs = 0;
    c.train.steps = s["steps"].as_u64().unwrap();
    c.train.batch_size = s["per_device_train_batch_size"].as_u64().unwrap() as usize;
    c.train.lr = s["learning_rate"].as_f64().unwrap();
    c.train.max_grad_norm = s["max_grad_norm"].as_f64().unwrap();
    c.train.progress = false;
    c.optimizer.betas = (
        s["adam_beta1"].as_f64().unwrap(),
        s["adam_beta2"].as_f64().unwrap(),
    );
    c.optimizer.eps = s["adam_epsilon"].as_f64().unwrap();
    c.optimizer.weight_decay = s["weight_decay"].as_f64().unwrap();
    c.schedule = Schedule::Constant { warmup_steps: 0 };
    let out = run(&c, false).unwrap();
    let rows = read_metrics(&out.fit.run_dir.join("metrics.jsonl")).unwrap();
    let want = e["steps"].as_array().unwrap();
    assert_eq!(rows.len(), want.len());
    for (step, (g, w)) in rows.iter().zip(want).enumerate() {
        for (ours, theirs) in [
            ("train/loss", "loss"),
            ("train/grad_norm", "grad_norm"),
            ("rewards/chosen", "rewards/chosen"),
            ("rewards/rejected", "rewards/rejected"),
            ("rewards/margins", "rewards/margins"),
            ("rewards/accuracies", "rewards/accuracies"),
            ("logps/chosen", "logps/chosen"),
            ("logps/rejected", "logps/rejected"),
        ] {
            let (a, b) = (g[ours].as_f64().unwrap(), w[theirs].as_f64().unwrap());
            let tol = TOL * b.abs().max(1.0);
            assert!(
                (a - b).abs() <= tol,
                "{loss} step {}: {ours} = {a}, TRL {theirs} = {b}",
                step + 1
            );
        }
    }
}

#[test]
fn sigmoid_steps_match_trl() {
    check(
        "sigmoid",
        PreferenceObjective::Pair(PairObjective::Dpo {
            beta: 0.1,
            label_smoothing: 0.0,
        }),
    );
}

#[test]
fn ipo_steps_match_trl() {
    check(
        "ipo",
        PreferenceObjective::Pair(PairObjective::Ipo { beta: 0.1 }),
    );
}
