//! A stop request (what SIGTERM/SIGINT raise, see `gradus_train::interrupt`) ends training after
//! the current step with a checkpoint and an error saying how to resume; the resumed run is
//! bit-identical to an uninterrupted one. Its own test binary: the request flag is process-wide.
//! (The real signal, sent to the real binary, is tested in `crates/gradus-cli/tests/safety.rs`.)

use std::path::Path;

use gradus_train::interrupt;
use gradus_train::metrics::read_metrics;
use gradus_train::recipe::RecipeConfig;
use gradus_train::schedule::Schedule;

fn tiny(dir: &Path, name: &str) -> RecipeConfig {
    let data = dir.join("corpus.jsonl");
    if !data.exists() {
        let s: String = (0..40)
            .map(|i| {
                format!(
                    "{}\n",
                    serde_json::json!({"text": format!("{i} plus {i} is {}", 2 * i)})
                )
            })
            .collect();
        std::fs::write(&data, s).unwrap();
    }
    let mut c = RecipeConfig::default();
    c.run.dir = dir.to_path_buf();
    c.run.name = name.into();
    c.model.config.hidden_size = 32;
    c.model.config.intermediate_size = 64;
    c.model.config.num_hidden_layers = 1;
    c.model.config.num_attention_heads = 4;
    c.model.config.num_key_value_heads = 2;
    c.tokenizer.train_vocab_size = 270;
    c.data.source = data.display().to_string();
    c.data.seq_len = 24;
    c.train.steps = 4;
    c.train.batch_size = 4;
    c.train.progress = false;
    c.schedule = Schedule::Constant { warmup_steps: 0 };
    c
}

fn loss_bits(run: &Path) -> Vec<u64> {
    read_metrics(&run.join("metrics.jsonl"))
        .unwrap()
        .iter()
        .map(|r| r["train/loss"].as_f64().unwrap().to_bits())
        .collect()
}

#[test]
fn a_stop_request_checkpoints_the_step_and_the_resume_is_exact() {
    let d = tempfile::tempdir().unwrap();
    gradus_train::pretrain::run(&tiny(d.path(), "whole"), false).unwrap();

    // Requested before the first step ends: the step finishes, is saved, and the run stops.
    let c = tiny(d.path(), "stopped");
    interrupt::request();
    let e = gradus_train::pretrain::run(&c, false)
        .unwrap_err()
        .to_string();
    interrupt::clear();
    assert!(
        e.starts_with(interrupt::INTERRUPTED)
            && e.contains("after step 1")
            && e.contains("--resume"),
        "{e}"
    );
    let run = d.path().join("stopped");
    assert!(
        run.join("checkpoints/step-1/model.safetensors").exists(),
        "no checkpoint of the finished step"
    );
    assert!(
        !run.join("run.lock").exists(),
        "the lock is released on the way out"
    );
    assert_eq!(loss_bits(&run).len(), 1);

    let s = gradus_train::pretrain::run(&c, true).unwrap();
    assert_eq!((s.start_step, s.steps), (1, 4));
    assert_eq!(
        loss_bits(&run),
        loss_bits(&d.path().join("whole")),
        "interrupted + resumed = uninterrupted"
    );
}
