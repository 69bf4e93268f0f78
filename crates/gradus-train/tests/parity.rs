//! Sparse parity as built-in pretraining data (`data.source = "sparse_parity"`): the MLP learns
//! it with SGD, accuracies and statistics are logged, the run resumes exactly, the summary
//! records the convergence step, and impossible settings name their field.

use std::path::Path;

use gradus_train::recipe::RecipeConfig;
use serde_json::Value;

fn cfg(dir: &Path, name: &str, steps: u64) -> RecipeConfig {
    let mut c = RecipeConfig::default();
    c.run.dir = dir.to_path_buf();
    c.run.name = name.into();
    c.run.seed = 1;
    c.model.mlp.hidden = 64;
    c.data.source = "sparse_parity".into();
    c.data.parity.n = 6;
    c.data.parity.k = 2;
    c.data.parity.train_examples = 200;
    c.data.parity.eval_examples = 100;
    c.optimizer.weight_decay = 0.0;
    c.train.steps = steps;
    c.train.batch_size = 32;
    c.train.lr = 0.5;
    c.train.max_grad_norm = 0.0;
    c.train.log_every = 5;
    c.train.eval_every = 20;
    c.train.progress = false;
    c.dynamics.every = 20;
    c
}

fn metrics(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn pick(rows: &[Value], k: &str) -> Vec<(u64, f64)> {
    rows.iter()
        .filter_map(|r| Some((r["step"].as_u64()?, r.get(k)?.as_f64()?)))
        .collect()
}

#[test]
fn the_mlp_learns_xor_of_two_bits_and_the_run_resumes_exactly() {
    // 6 bits, XOR of 2: 64 distinct inputs, 200 draws; an MLP of width 64 at lr 0.5 fits it
    // within 400 steps of batch 32 (chance is 1/2).
    let dir = tempfile::tempdir().unwrap();
    gradus_train::pretrain::run(&cfg(dir.path(), "full", 400), false).unwrap();
    let mut half = cfg(dir.path(), "half", 400);
    half.train.stop_after = 200;
    gradus_train::pretrain::run(&half, false).unwrap();
    half.train.stop_after = 0;
    gradus_train::pretrain::run(&half, true).unwrap();
    let (a, b) = (
        metrics(&dir.path().join("full")),
        metrics(&dir.path().join("half")),
    );
    for k in ["train/loss", "train/accuracy", "eval/accuracy"] {
        assert!(!pick(&a, k).is_empty(), "{k} logged");
        assert_eq!(pick(&a, k), pick(&b, k), "{k}: one go vs resumed");
    }
    let eval = pick(&a, "eval/accuracy");
    assert_eq!(eval.last().unwrap().1, 1.0, "{eval:?}");
    // Convergence = first logged step with eval/accuracy ≥ 0.9, read from metrics.jsonl here.
    let first = eval.iter().find(|(_, v)| *v >= 0.9).map(|(s, _)| *s);
    let s: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("full/summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(s["task"], "sparse_parity");
    assert_eq!(s["convergence"]["step"].as_u64(), first);
    assert_eq!(s["convergence"]["threshold"], 0.9);
    // Statistics at 0, 20, ..., 400 over the two weight matrices, and checkpoints the offline
    // reader understands.
    let dy = gradus_dynamics::run::read_dynamics(&dir.path().join("full/dynamics.jsonl")).unwrap();
    assert_eq!(dy.len(), 21);
    assert_eq!(
        dy[0].layers.keys().cloned().collect::<Vec<_>>(),
        vec!["fc1.weight".to_string(), "fc2.weight".to_string()]
    );
    let off = gradus_dynamics::run::stats_offline(
        &dir.path().join("full"),
        gradus_dynamics::stats::MatrixSelection::Blocks,
    )
    .unwrap();
    let last = off.last().unwrap();
    assert_eq!(last.step, 400);
    assert!((last.stats["l2"] - dy[20].stats["l2"]).abs() <= 1e-9 * last.stats["l2"]);
}

#[test]
fn impossible_settings_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path(), "bad", 10);
    c.data.parity.k = 7;
    let e = gradus_train::pretrain::run(&c, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("data.parity.k"), "{e}");
    c.data.parity.k = 2;
    c.model.mlp.hidden = 0;
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("mlp.hidden"), "{e}");
    assert!(!dir.path().join("bad").exists());
}
