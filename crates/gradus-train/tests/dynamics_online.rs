//! `[dynamics] every = N`: statistics recorded while training land in `dynamics.jsonl` and equal
//! the offline statistics of the saved checkpoint (`gradus dynamics stats`).

use std::path::Path;

use gradus_dynamics::run::{read_dynamics, stats_offline, DYNAMICS_FILE};
use gradus_dynamics::stats::MatrixSelection;
use gradus_train::recipe::RecipeConfig;

fn corpus(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("corpus.jsonl");
    let s: String = (0..60)
        .map(|i| {
            serde_json::json!({ "text": format!("the sum of {i} and {} is {}.", i % 7, i + i % 7) })
                .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(&p, s).unwrap();
    p
}

#[test]
fn online_statistics_match_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let mut c = RecipeConfig::default();
    c.run.dir = dir.path().to_path_buf();
    c.run.name = "dyn".into();
    c.model.config.hidden_size = 32;
    c.model.config.intermediate_size = 64;
    c.model.config.num_hidden_layers = 1;
    c.model.config.num_attention_heads = 4;
    c.model.config.num_key_value_heads = 2;
    c.tokenizer.train_vocab_size = 280;
    c.data.source = data.display().to_string();
    c.data.seq_len = 16;
    c.train.steps = 6;
    c.train.batch_size = 2;
    c.train.progress = false;
    c.dynamics.every = 3;
    c.validate().unwrap();
    gradus_train::pretrain::run(&c, false).unwrap();
    let run = dir.path().join("dyn");
    let online = read_dynamics(&run.join(DYNAMICS_FILE)).unwrap();
    assert_eq!(
        online.iter().map(|r| r.step).collect::<Vec<_>>(),
        vec![0, 3, 6]
    );
    // Training moved the weights: the statistics at step 0 and step 6 differ.
    assert_ne!(online[0].stats["l2"], online[2].stats["l2"]);
    // The final checkpoint (step 6) read back from disk gives the same per-matrix statistics.
    let offline = stats_offline(&run, MatrixSelection::Blocks).unwrap();
    let last = offline.last().unwrap();
    assert_eq!(last.step, 6);
    assert_eq!(
        last.layers.keys().collect::<Vec<_>>(),
        online[2].layers.keys().collect::<Vec<_>>()
    );
    for c in [
        "l1",
        "l2",
        "trace",
        "spectral",
        "code_sparsity",
        "computational_sparsity",
        "mean_lambda",
        "variance_lambda",
    ] {
        let (a, b) = (online[2].stats[c], last.stats[c]);
        assert!(
            (a - b).abs() <= 1e-9 * b.abs().max(1.0),
            "{c}: online {a} vs checkpoint {b}"
        );
    }
}
