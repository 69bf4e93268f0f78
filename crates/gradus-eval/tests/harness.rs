//! The harness end to end on the parity fixture's tiny model: bad input is named (file, field,
//! file:line), bad rows are counted or stop the run, unscorable requests say so, run directories
//! resolve to their latest checkpoint, chat templates render few-shot examples as turns, and the
//! outputs (results.json, samples_<task>.jsonl) are written.

use std::path::{Path, PathBuf};

use gradus_eval::lm::resolve_model_dir;
use gradus_eval::{evaluate_task, BadRow, EvalModel, EvalOptions, LoadedTask};

fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lm_eval/model")
}

fn model() -> EvalModel {
    EvalModel::load(&model_dir()).unwrap()
}

/// Writes `task.yaml` and `data.jsonl` into a temp dir.
fn task_dir(yaml: &str, rows: &[&str]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("task.yaml"), yaml).unwrap();
    std::fs::write(d.path().join("data.jsonl"), rows.join("\n") + "\n").unwrap();
    d
}

const MC: &str = "task: t\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: data.jsonl\ntest_split: test\noutput_type: multiple_choice\ndoc_to_text: \"Q: {{q}}\"\ndoc_to_target: label\ndoc_to_choice: choices\n";

#[test]
fn unknown_key_names_file_and_key() {
    let d = task_dir(&format!("{MC}doc_to_txet: oops\n"), &[]);
    let e = format!(
        "{:#}",
        LoadedTask::from_yaml(&d.path().join("task.yaml")).unwrap_err()
    );
    assert!(e.contains("task.yaml") && e.contains("doc_to_txet"), "{e}");
}

#[test]
fn python_hooks_are_refused_by_name() {
    let d = task_dir(&format!("{MC}process_docs: !function utils.process\n"), &[]);
    let e = format!(
        "{:#}",
        LoadedTask::from_yaml(&d.path().join("task.yaml")).unwrap_err()
    );
    assert!(e.contains("task.yaml:11") && e.contains("!function"), "{e}");
}

#[test]
fn hub_dataset_says_to_download_first() {
    let d = task_dir("task: t\ndataset_path: openai/gsm8k\ndataset_name: main\ntest_split: test\ndoc_to_text: q\ndoc_to_target: a\n", &[]);
    let e = format!(
        "{:#}",
        LoadedTask::from_yaml(&d.path().join("task.yaml")).unwrap_err()
    );
    assert!(
        e.contains("openai/gsm8k")
            && e.contains("download")
            && e.contains("dataset_path: data/gsm8k"),
        "{e}"
    );
}

#[test]
fn bad_row_stops_the_run_or_is_counted() {
    // Line 2's choices are not a list; line 3's label is not a choice index. (A missing column would
    // not do: `datasets` fills it with None, which templates print as "None", and so do we.)
    let rows = [
        r#"{"q": "a?", "choices": ["x", "y"], "label": 0}"#,
        r#"{"q": "b?", "choices": "xy", "label": 1}"#,
        r#"{"q": "c?", "choices": ["x", "y"], "label": 7}"#,
        r#"{"q": "d?", "choices": ["x", "y"], "label": 1}"#,
    ];
    let d = task_dir(MC, &rows);
    let t = LoadedTask::from_yaml(&d.path().join("task.yaml")).unwrap();
    let m = model();
    let e = format!(
        "{:#}",
        evaluate_task(&m, &t, &EvalOptions::default()).unwrap_err()
    );
    assert!(
        e.contains("data.jsonl:2")
            && e.contains("doc_to_choice")
            && e.contains("--on-bad-row skip"),
        "{e}"
    );

    let r = evaluate_task(
        &m,
        &t,
        &EvalOptions {
            on_bad_row: BadRow::Skip,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(r.n_samples, 2);
    let locs: Vec<&str> = r.skipped.iter().map(|s| s.loc.as_str()).collect();
    assert!(
        locs[0].ends_with("data.jsonl:2") && locs[1].ends_with("data.jsonl:3"),
        "{locs:?}"
    );
    assert!(
        r.skipped[1].reason.contains("not one of the 2 choices"),
        "{}",
        r.skipped[1].reason
    );
}

#[test]
fn continuation_longer_than_the_window_cannot_be_scored() {
    // The fixture model's window is 64 tokens; a 300-character choice of rare bytes is far longer.
    let long = "~`".repeat(150);
    let row = format!(r#"{{"q": "a?", "choices": ["x", "{long}"], "label": 0}}"#);
    let d = task_dir(MC, &[&row]);
    let t = LoadedTask::from_yaml(&d.path().join("task.yaml")).unwrap();
    let e = format!(
        "{:#}",
        evaluate_task(&model(), &t, &EvalOptions::default()).unwrap_err()
    );
    assert!(
        e.contains("data.jsonl:1")
            && e.contains("context window is 64 tokens")
            && e.contains("cannot score"),
        "{e}"
    );
}

#[test]
fn run_directory_resolves_to_latest_checkpoint() {
    let d = tempfile::tempdir().unwrap();
    for step in ["step-5", "step-12", "step-9"] {
        let s = d.path().join("checkpoints").join(step);
        std::fs::create_dir_all(&s).unwrap();
        for f in [
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
        ] {
            std::fs::copy(model_dir().join(f), s.join(f)).unwrap();
        }
    }
    // step-12 is the highest number (not the last in lexical order: step-9).
    assert_eq!(
        resolve_model_dir(d.path()).unwrap(),
        d.path().join("checkpoints/step-12")
    );
    assert!(EvalModel::load(d.path()).is_ok());
    let e = format!(
        "{:#}",
        resolve_model_dir(&d.path().join("nope")).unwrap_err()
    );
    assert!(e.contains("no such directory"), "{e}");
}

#[test]
fn chat_template_renders_fewshot_as_turns() {
    let rows = [
        r#"{"q": "a?", "choices": ["x", "y"], "label": 1}"#,
        r#"{"q": "b?", "choices": ["x", "y"], "label": 0}"#,
    ];
    let yaml = format!(
        "{MC}description: Be brief.\nnum_fewshot: 1\nfewshot_config:\n  sampler: first_n\n"
    );
    let d = task_dir(&yaml, &rows);
    let t = LoadedTask::from_yaml(&d.path().join("task.yaml")).unwrap();
    let opts = EvalOptions {
        apply_chat_template: true,
        ..Default::default()
    };
    let r = evaluate_task(&model(), &t, &opts).unwrap();
    // The fixture tokenizer has no chat_template: ChatML. For document 1 ("b?"), first_n takes
    // document 0 (the pool is the test split and, with no fewshot_split, the document is not
    // removed — lm-eval's rule), answered with its gold choice "y" (label 1). By hand:
    let expected = "<|im_start|>system\nBe brief.<|im_end|>\n\
                    <|im_start|>user\nQ: a?<|im_end|>\n<|im_start|>assistant\ny<|im_end|>\n\
                    <|im_start|>user\nQ: b?<|im_end|>\n<|im_start|>assistant\n";
    let s = r.samples.iter().find(|s| s["doc_id"] == 1).unwrap();
    assert_eq!(s["prompt"].as_str().unwrap(), expected);
}

#[test]
fn outputs_are_written() {
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lm_eval");
    let out = tempfile::tempdir().unwrap();
    let tasks = format!(
        "{},{}",
        fx.join("mc_firstn.yaml").display(),
        fx.join("rolling.yaml").display()
    );
    let opts = EvalOptions {
        limit: Some(3),
        ..Default::default()
    };
    let (res, path) = gradus_eval::run::run(&model_dir(), &tasks, out.path(), &opts, None).unwrap();
    assert_eq!(res.len(), 2);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let t = &v["results"]["mc_firstn"];
    assert_eq!(t["version"], 2); // metadata.version of mc_firstn.yaml
    assert_eq!(t["n_samples"], 3);
    assert_eq!(t["config_hash"].as_str().unwrap().len(), 32);
    let acc = &t["metrics"]["acc,none"];
    let (v0, se) = (
        acc["value"].as_f64().unwrap(),
        acc["stderr"].as_f64().unwrap(),
    );
    assert!(se > 0.0 || v0 == 0.0 || v0 == 1.0);
    // acc is a proportion of 3 documents: the 95% interval is Wilson's for round(3·acc) of 3.
    let [lo, hi] = gradus_eval::metrics::wilson95(3, (3.0 * v0).round() as usize);
    assert!((acc["ci95"][0].as_f64().unwrap() - lo).abs() < 1e-12);
    assert!((acc["ci95"][1].as_f64().unwrap() - hi).abs() < 1e-12);
    let samples = std::fs::read_to_string(out.path().join("samples_mc_firstn.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = samples
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3);
    for r in &rows {
        assert_eq!(r["loglikelihoods"].as_array().unwrap().len(), 2);
        assert!(
            r["prompt"].is_string()
                && r["metrics"]["acc"].is_number()
                && r["loc"].as_str().unwrap().contains("firstn_test.jsonl:")
        );
    }
    // Rolling metrics are bootstrapped: a stderr and an interval around the value.
    let b = &v["results"]["rolling"]["metrics"]["bits_per_byte,none"];
    assert_eq!(b["stderr_method"], "bootstrap");
    assert!(b["ci95"][0].as_f64().unwrap() <= b["value"].as_f64().unwrap());
}
