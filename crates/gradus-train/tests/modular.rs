//! Modular addition as built-in pretraining data (`data.source = "modular_addition"`): the model
//! learns the table, train and held-out accuracy are logged, the run resumes exactly, the summary
//! records the convergence step, and impossible settings name their field.

use std::path::Path;

use gradus_train::recipe::RecipeConfig;
use serde_json::Value;

fn cfg(dir: &Path, name: &str, p: u32, frac: f64, steps: u64) -> RecipeConfig {
    let mut c = RecipeConfig::default();
    c.run.dir = dir.to_path_buf();
    c.run.name = name.into();
    c.run.seed = 3;
    c.model.config.hidden_size = 32;
    c.model.config.intermediate_size = 64;
    c.model.config.num_hidden_layers = 1;
    c.model.config.num_attention_heads = 4;
    c.model.config.num_key_value_heads = 4;
    c.model.config.max_position_embeddings = 8;
    c.model.config.initializer_range = 0.1;
    c.data.source = "modular_addition".into();
    c.data.seq_len = 3;
    c.data.val_fraction = 0.0;
    c.data.modular.p = p;
    c.data.modular.train_fraction = frac;
    c.optimizer.weight_decay = 0.0;
    c.train.steps = steps;
    c.train.batch_size = 16;
    c.train.lr = 1e-2;
    c.train.max_grad_norm = 0.0;
    c.train.log_every = 5;
    c.train.eval_every = 10;
    c.train.weight_norms_every = 0;
    c.train.progress = false;
    c
}

fn metrics(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn learns_the_table_and_logs_both_accuracies() {
    // p = 5, every pair trained on: 25 rows, one target each. A 1-layer model at lr 1e-2 fits
    // 25 facts in a few hundred steps; chance is 1/5.
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path(), "fit", 5, 1.0, 300);
    gradus_train::pretrain::run(&c, false).unwrap();
    let run = dir.path().join("fit");
    let rows = metrics(&run);
    let acc: Vec<(u64, f64)> = rows
        .iter()
        .filter_map(|r| Some((r["step"].as_u64()?, r.get("train/accuracy")?.as_f64()?)))
        .collect();
    // Evaluated every 10 steps (on logged steps, every 5): 10, 20, ..., 300.
    assert_eq!(
        acc.iter().map(|a| a.0).collect::<Vec<_>>(),
        (1..=30).map(|i| i * 10).collect::<Vec<u64>>()
    );
    assert_eq!(acc.last().unwrap().1, 1.0, "train accuracy {acc:?}");
    // train_fraction = 1: no held-out pairs, so no eval/accuracy, and no convergence.
    assert!(rows.iter().all(|r| r.get("eval/accuracy").is_none()));
    let s: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["convergence"]["converged"], false);
    assert_eq!(s["final"]["train/accuracy"], 1.0);
    assert!(run.join("report.html").is_file());
    // The word-level tokenizer travels with the checkpoint: 0..4, =, <|endoftext|>, <|pad|>.
    let ck = run.join("checkpoints/step-300");
    let tok = gradus_data::tokenizer::Tokenizer::from_dir(&ck).unwrap();
    assert_eq!(tok.vocab_size(), 8);
    assert_eq!(tok.encode("3 4 =", false).unwrap(), vec![3, 4, 5]);
}

#[test]
fn held_out_accuracy_resume_and_convergence_step() {
    // p = 7 with 60% of the 49 pairs trained on: 29 train, 20 held out.
    let dir = tempfile::tempdir().unwrap();
    let full = cfg(dir.path(), "full", 7, 0.6, 40);
    gradus_train::pretrain::run(&full, false).unwrap();
    // The same run in two invocations: 20 steps (checkpoint), then --resume to 40.
    let mut half = cfg(dir.path(), "half", 7, 0.6, 40);
    half.train.stop_after = 20;
    gradus_train::pretrain::run(&half, false).unwrap();
    half.train.stop_after = 0;
    gradus_train::pretrain::run(&half, true).unwrap();
    let (a, b) = (
        metrics(&dir.path().join("full")),
        metrics(&dir.path().join("half")),
    );
    let pick = |rows: &[Value], k: &str| -> Vec<(u64, f64)> {
        rows.iter()
            .filter_map(|r| Some((r["step"].as_u64()?, r.get(k)?.as_f64()?)))
            .collect()
    };
    for k in ["train/loss", "train/accuracy", "eval/accuracy"] {
        let (x, y) = (pick(&a, k), pick(&b, k));
        assert!(!x.is_empty(), "{k} logged");
        assert_eq!(x, y, "{k}: one go vs resumed");
    }
    // Held-out accuracy is a share of 20 pairs: a multiple of 1/20.
    for (_, v) in pick(&a, "eval/accuracy") {
        assert!((v * 20.0 - (v * 20.0).round()).abs() < 1e-9, "{v}");
    }
    // The summary's convergence step is the first logged step with eval/accuracy ≥ 0.5, read
    // here from metrics.jsonl independently.
    let first = pick(&a, "eval/accuracy")
        .into_iter()
        .find(|&(_, v)| v >= 0.5)
        .map(|(s, _)| s);
    let s: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("full/summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(s["convergence"]["step"].as_u64(), first);
    assert_eq!(s["convergence"]["converged"], first.is_some());
    assert_eq!(s["convergence"]["threshold"], 0.5);
}

#[test]
fn impossible_settings_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path(), "bad", 1, 0.5, 10);
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("data.modular.p"), "{e}");
    c.data.modular.p = 7;
    c.data.modular.train_fraction = 1.5;
    let e = gradus_train::pretrain::run(&c, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("data.modular.train_fraction"), "{e}");
    assert!(!dir.path().join("bad").exists(), "nothing written");
}
