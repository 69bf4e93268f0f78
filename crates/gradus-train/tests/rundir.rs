//! Issue 10 ("nothing lost, nothing mixed"), the library side: each test reproduces one mistake a
//! user made and checks it no longer loses or mixes work. (The two-process cases — a second
//! trainer on a locked run, a stale lock of a killed trainer, SIGTERM — are in
//! `crates/gradus-cli/tests/safety.rs`, with real processes.)

use std::path::Path;

use gradus_train::checkpoint::{verify_checkpoint, CHECKSUMS_FILE};
use gradus_train::metrics::read_metrics;
use gradus_train::recipe::{Overflow, RecipeConfig};
use gradus_train::rundir::{lock_run, Start, CONFIG_FILE, LOCK_FILE};
use gradus_train::schedule::Schedule;

fn corpus(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("corpus.jsonl");
    let mut s = String::new();
    for i in 0..60 {
        let line = format!("the sum of {} and {} is {}.", i % 7, i % 5, i % 7 + i % 5);
        s.push_str(&serde_json::json!({ "text": line }).to_string());
        s.push('\n');
    }
    std::fs::write(&p, s).unwrap();
    p
}

fn tiny(dir: &Path, name: &str, data: &Path) -> RecipeConfig {
    let mut c = RecipeConfig::default();
    c.run.dir = dir.to_path_buf();
    c.run.name = name.into();
    c.run.seed = 1;
    c.model.config.hidden_size = 32;
    c.model.config.intermediate_size = 64;
    c.model.config.num_hidden_layers = 1;
    c.model.config.num_attention_heads = 4;
    c.model.config.num_key_value_heads = 2;
    c.tokenizer.train_vocab_size = 280;
    c.data.source = data.display().to_string();
    c.data.seq_len = 32;
    c.train.steps = 2;
    c.train.batch_size = 4;
    c.train.progress = false;
    c.schedule = Schedule::Constant { warmup_steps: 0 };
    c
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn a_new_run_over_an_old_one_is_refused_and_overwrite_moves_the_old_one_aside() {
    let d = tempfile::tempdir().unwrap();
    let data = corpus(d.path());
    let c = tiny(d.path(), "r", &data);
    gradus_train::pretrain::run(&c, false).unwrap();
    let run = d.path().join("r");
    let metrics_before = read(&run.join("metrics.jsonl"));
    let weights_before = read(&run.join("checkpoints/step-2/model.safetensors"));

    // The original failure: the same command again truncated metrics.jsonl and replaced the
    // checkpoints, exit 0. Now it is refused, offering --resume and --overwrite.
    let mut again = c.clone();
    again.run.seed = 2;
    let e = gradus_train::pretrain::run(&again, false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("already holds a run") && e.contains("--resume") && e.contains("--overwrite"),
        "{e}"
    );
    assert_eq!(
        read(&run.join("metrics.jsonl")),
        metrics_before,
        "refusal must not touch the old run"
    );
    assert_eq!(
        read(&run.join("checkpoints/step-2/model.safetensors")),
        weights_before
    );
    assert!(
        !run.join(LOCK_FILE).exists(),
        "the lock is released when the run ends"
    );

    // --overwrite: the old run survives, byte for byte, beside the new one.
    gradus_train::pretrain::run(&again, Start::Overwrite).unwrap();
    let aside: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("r.replaced-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(read(&aside[0].join("metrics.jsonl")), metrics_before);
    assert_eq!(
        read(&aside[0].join("checkpoints/step-2/model.safetensors")),
        weights_before
    );
    assert!(!aside[0].join(LOCK_FILE).exists());
    let new_cfg = std::fs::read_to_string(run.join(CONFIG_FILE)).unwrap();
    assert!(new_cfg.contains("seed = 2"), "{new_cfg}");
    assert_ne!(
        read(&run.join("checkpoints/step-2/model.safetensors")),
        weights_before,
        "seed 2 trained anew"
    );
}

#[test]
fn resume_with_a_changed_model_shape_names_the_setting_and_writes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let data = corpus(d.path());
    let mut c = tiny(d.path(), "shape", &data);
    c.train.steps = 4;
    c.train.stop_after = 2;
    gradus_train::pretrain::run(&c, false).unwrap();
    let run = d.path().join("shape");
    let cfg_before = read(&run.join(CONFIG_FILE));
    let metrics_before = read(&run.join("metrics.jsonl"));

    let mut wider = c.clone();
    wider.model.config.hidden_size = 64;
    let start = Start::Resume {
        explicit: vec!["model.config.hidden_size".into()],
    };
    let e = gradus_train::pretrain::run(&wider, start)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model.config.hidden_size") && e.contains("32 to 64") && e.contains(CONFIG_FILE),
        "{e}"
    );
    assert_eq!(
        read(&run.join(CONFIG_FILE)),
        cfg_before,
        "a failed resume rewrote config.resolved.toml"
    );
    assert_eq!(read(&run.join("metrics.jsonl")), metrics_before);

    // Without the recorded config (an old run, a hand-edited one), the checkpoint itself refuses,
    // naming the tensor, both shapes and the file, still before anything is written.
    std::fs::remove_file(run.join(CONFIG_FILE)).unwrap();
    let e = gradus_train::pretrain::run(&wider, true)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tensor `model.")
            && e.contains("64")
            && e.contains("32")
            && e.contains("step-2/model.safetensors"),
        "{e}"
    );
    assert!(
        !run.join(CONFIG_FILE).exists(),
        "a failed resume wrote config.resolved.toml"
    );
    assert_eq!(read(&run.join("metrics.jsonl")), metrics_before);
}

#[test]
fn resume_changes_the_schedule_only_when_told_and_records_it() {
    let d = tempfile::tempdir().unwrap();
    let data = corpus(d.path());
    let mut c = tiny(d.path(), "longer", &data);
    c.train.steps = 3;
    c.train.stop_after = 2;
    gradus_train::pretrain::run(&c, false).unwrap();
    let run = d.path().join("longer");

    let mut longer = c.clone();
    longer.train.steps = 5;
    longer.train.stop_after = 0; // free to change: it is per invocation
    let e = gradus_train::pretrain::run(&longer, true)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("train.steps") && e.contains("--set train.steps=5"),
        "{e}"
    );
    let e = gradus_train::pretrain::run(&longer, true)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("train.steps"),
        "refusing twice changes nothing: {e}"
    );

    let s = gradus_train::pretrain::run(
        &longer,
        Start::Resume {
            explicit: vec!["train.steps".into()],
        },
    )
    .unwrap();
    assert_eq!((s.start_step, s.steps), (2, 5));
    let text = std::fs::read_to_string(run.join(CONFIG_FILE)).unwrap();
    // The recorded config still parses as a recipe config and says what changed, when.
    let rec: RecipeConfig = toml::from_str(&text).unwrap();
    assert_eq!(rec.train.steps, 5);
    assert_eq!(rec.run.history.len(), 1, "{text}");
    let h = &rec.run.history[0];
    assert_eq!(
        (h.at_step, h.key.as_str(), h.from.as_str(), h.to.as_str()),
        (2, "train.steps", "3", "5")
    );
    let steps: Vec<u64> = read_metrics(&run.join("metrics.jsonl"))
        .unwrap()
        .iter()
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, vec![1, 2, 3, 4, 5]);

    // Resuming the now finished run says so and trains nothing (it printed "loss NaN → NaN").
    let metrics = read(&run.join("metrics.jsonl"));
    let mut same = longer.clone();
    same.run.history = rec.run.history.clone();
    let s = gradus_train::pretrain::run(&same, true).unwrap();
    assert!(
        s.already_complete && s.steps == 5 && s.first_loss.is_none(),
        "{s:?}"
    );
    assert_eq!(read(&run.join("metrics.jsonl")), metrics);
    let text2: RecipeConfig =
        toml::from_str(&std::fs::read_to_string(run.join(CONFIG_FILE)).unwrap()).unwrap();
    assert_eq!(
        text2.run.history.len(),
        1,
        "history is kept, not duplicated"
    );
}

#[test]
fn a_flipped_bit_in_a_checkpoint_is_an_error_naming_the_file() {
    let d = tempfile::tempdir().unwrap();
    let data = corpus(d.path());
    let mut c = tiny(d.path(), "bits", &data);
    c.train.steps = 3;
    c.train.stop_after = 2;
    gradus_train::pretrain::run(&c, false).unwrap();
    let ck = d.path().join("bits/checkpoints/step-2");
    assert!(ck.join(CHECKSUMS_FILE).exists());
    assert!(verify_checkpoint(&ck).unwrap());

    for file in ["model.safetensors", "optimizer.safetensors"] {
        let p = ck.join(file);
        let orig = read(&p);
        let mut bytes = orig.clone();
        let at = bytes.len() - 3; // inside the last tensor's data: still a valid safetensors file
        bytes[at] ^= 0x10;
        std::fs::write(&p, &bytes).unwrap();
        let e = gradus_train::pretrain::run(&c, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains(file) && e.contains("checksum"), "{file}: {e}");
        // The same checkpoint as a starting point is refused too.
        let mut sft = tiny(d.path(), "from-bits", &data);
        sft.model.init_from = Some(ck.clone());
        let e = gradus_train::sft::run(&sft, false).unwrap_err().to_string();
        assert!(e.contains(file), "{e}");
        std::fs::write(&p, &orig).unwrap();
    }
    // A truncated file is named as well.
    let p = ck.join("trainer_state.json");
    let orig = read(&p);
    std::fs::write(&p, &orig[..orig.len() / 2]).unwrap();
    let e = verify_checkpoint(&ck).unwrap_err().to_string();
    assert!(
        e.contains("trainer_state.json") && e.contains("bytes"),
        "{e}"
    );
    std::fs::write(&p, &orig).unwrap();
    // Restored: the resume goes through.
    assert_eq!(gradus_train::pretrain::run(&c, true).unwrap().steps, 3);
}

#[test]
fn run_names_cannot_escape_the_run_dir() {
    for bad in ["..", ".", "", "a/b", "a\\b"] {
        let mut c = RecipeConfig::default();
        c.run.name = bad.into();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("run.name"), "{bad:?}: {e}");
    }
    let mut c = RecipeConfig::default();
    c.run.name = "..hidden-but-fine".into();
    c.validate().unwrap();
}

#[test]
fn seq_len_beyond_the_context_and_ignored_model_overrides_are_errors() {
    // From scratch: the config's own context.
    let mut c = RecipeConfig::default();
    c.model.config.max_position_embeddings = 64;
    c.data.seq_len = 128;
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.contains("data.seq_len") && e.contains("max_position_embeddings = 64"),
        "{e}"
    );

    // From a checkpoint: its config.json's context, and model.config settings it would ignore.
    let d = tempfile::tempdir().unwrap();
    let data = corpus(d.path());
    let mut base = tiny(d.path(), "base", &data);
    base.model.config.max_position_embeddings = 48;
    gradus_train::pretrain::run(&base, false).unwrap();
    let ck = d.path().join("base/checkpoints/step-2");

    let mut long = tiny(d.path(), "long", &data);
    long.model.init_from = Some(ck.clone());
    long.model.config.max_position_embeddings = 48;
    long.data.seq_len = 64;
    let e = gradus_train::sft::run(&long, false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("data.seq_len") && e.contains("48") && e.contains("config.json"),
        "{e}"
    );

    let mut wide = tiny(d.path(), "wide", &data);
    wide.model.init_from = Some(ck.clone());
    wide.model.config.max_position_embeddings = 48;
    // The checkpoint has 32. (A value equal to the default, 64, cannot be told apart from "not set",
    // so the check names settings that differ from both the default and the checkpoint.)
    wide.model.config.hidden_size = 48;
    let e = gradus_train::sft::run(&wide, false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model.config.hidden_size") && e.contains("48") && e.contains("32"),
        "{e}"
    );

    // Settings equal to the checkpoint's (a config shared with the pretraining run) are fine.
    let mut same = tiny(d.path(), "same", &data);
    same.model.init_from = Some(ck);
    same.model.config.max_position_embeddings = 48;
    gradus_train::sft::run(&same, false).unwrap();
}

#[test]
fn an_sft_example_longer_than_the_context_is_skipped_and_named_not_trained_as_masked_rows() {
    let d = tempfile::tempdir().unwrap();
    let data = corpus(d.path());
    let base = tiny(d.path(), "base", &data);
    gradus_train::pretrain::run(&base, false).unwrap();
    let ck = d.path().join("base/checkpoints/step-2");
    let sft_data = d.path().join("sft.jsonl");
    let mut s = String::new();
    for i in 0..12 {
        // Line 4 (i = 3) has a prompt far longer than the context (the "50 MB prompt" in small).
        let prompt = if i == 3 {
            "the sum of 1 and 2 is 3. ".repeat(200)
        } else {
            format!("add {i} and 1: ")
        };
        s.push_str(
            &serde_json::json!({"prompt": prompt, "completion": format!("{}", i + 1)}).to_string(),
        );
        s.push('\n');
    }
    std::fs::write(&sft_data, s).unwrap();
    let mut c = tiny(d.path(), "sft", &sft_data);
    c.model.init_from = Some(ck);
    c.train.steps = 3;
    let out = gradus_train::sft::run(&c, false).unwrap();
    // Every step trained on real targets: with all-masked rows a whole batch could give loss 0.
    let rows = read_metrics(&out.run_dir.join("metrics.jsonl")).unwrap();
    assert!(rows.iter().all(|r| r["train/loss"].as_f64().unwrap() > 0.0));
    let html = std::fs::read_to_string(out.run_dir.join("report.html")).unwrap();
    assert!(
        html.contains("sft.jsonl:4"),
        "the report names the skipped example"
    );
    // The resolved config records the policy that applied.
    let rec: RecipeConfig =
        toml::from_str(&std::fs::read_to_string(out.run_dir.join(CONFIG_FILE)).unwrap()).unwrap();
    assert_eq!(rec.data.overflow, Some(Overflow::Skip));

    // overflow = "split": the long prompt's pieces hold no target; they are dropped, not trained on
    // as all-masked rows (dozens of them among 12 examples made whole batches of loss 0).
    let mut sp = c.clone();
    sp.run.name = "sft-split".into();
    sp.data.overflow = Some(Overflow::Split);
    let out = gradus_train::sft::run(&sp, false).unwrap();
    let rows = read_metrics(&out.run_dir.join("metrics.jsonl")).unwrap();
    assert!(rows.iter().all(|r| r["train/loss"].as_f64().unwrap() > 0.0));

    // overflow = "error" names the file and line.
    let mut e = c.clone();
    e.run.name = "sft-error".into();
    e.data.overflow = Some(Overflow::Error);
    let msg = gradus_train::sft::run(&e, false).unwrap_err().to_string();
    assert!(
        msg.contains("sft.jsonl:4") && msg.contains("data.overflow"),
        "{msg}"
    );
}

#[test]
fn the_lock_keeps_a_second_holder_out_and_a_dead_holders_lock_is_taken_over() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("run");
    let a = lock_run(&dir).unwrap();
    // A second open file description is a second holder for flock, even in the same process.
    let e = lock_run(&dir).unwrap_err().to_string();
    assert!(
        e.contains(&format!("process {}", std::process::id())) && e.contains("in use"),
        "{e}"
    );
    drop(a);
    assert!(!dir.join(LOCK_FILE).exists());
    // A lock file left behind by a process that died (nobody holds the flock): taken over.
    std::fs::write(
        dir.join(LOCK_FILE),
        "{\"pid\": 4194305, \"host\": \"gone\", \"since\": 1}\n",
    )
    .unwrap();
    let b = lock_run(&dir).unwrap();
    let old = b.took_over.clone().unwrap();
    assert_eq!((old.pid, old.host.as_str()), (4194305, "gone"));
    let now: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(LOCK_FILE)).unwrap()).unwrap();
    assert_eq!(now["pid"].as_u64(), Some(std::process::id() as u64));
}
