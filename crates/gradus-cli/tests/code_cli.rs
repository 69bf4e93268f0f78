//! `gradus eval code` end to end: scoring a samples file (pass@k worked by hand), sampling from a
//! tiny checkpoint, and bad input naming the file and line. Needs Linux with user namespaces
//! (CI runs as root).

use std::path::Path;
use std::process::{Command, Output};

use gradus_model::{hf::save_decoder, Decoder, DecoderConfig};
use gradus_tensor::Device;
use serde_json::Value;

fn gradus(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gradus"))
        .args(args)
        .env_remove("GRADUS_LOG")
        .output()
        .expect("running the gradus binary")
}

fn ok(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "status {:?}; stderr:\n{err}", o.status);
    assert!(!err.contains("panicked"), "{err}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

const PROBLEMS: &str = r#"{"task_id": "t/0", "prompt": "def add(a, b):\n", "canonical_solution": "    return a + b\n", "test": "def check(f):\n    assert f(2, 3) == 5\n", "entry_point": "add"}
{"task_id": "t/1", "prompt": "def neg(x):\n", "canonical_solution": "    return -x\n", "test": "def check(f):\n    assert f(4) == -4\n", "entry_point": "neg"}
"#;

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// t/0: 2 of 3 samples right; t/1: 1 of 2. pass@1 = c/n per problem → (2/3 + 1/2)/2 = 7/12.
/// pass@2 = 1 for both (n - c = 1 < 2). k = 3 exceeds t/1's n = 2, so it is not reported.
#[test]
fn samples_file_scored_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("problems.jsonl");
    std::fs::write(&data, PROBLEMS).unwrap();
    let samples = dir.path().join("samples.jsonl");
    std::fs::write(
        &samples,
        [
            r#"{"task_id": "t/0", "completion": "    return a + b\n"}"#,
            r#"{"task_id": "t/1", "completion": "    return x\n"}"#,
            r#"{"task_id": "t/0", "solution": "def add(a, b):\n    return b + a\n"}"#,
            r#"{"task_id": "t/0", "completion": "    return a - b\n"}"#,
            r#"{"task_id": "t/1", "completion": "    return -x\n"}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = gradus(&[
        "eval",
        "code",
        "--samples",
        p(&samples),
        "--data",
        p(&data),
        "--k",
        "1,2,3",
        "--out",
        p(&out),
        "--json",
    ]);
    let v: Value = serde_json::from_str(ok(&o).trim()).unwrap();
    assert!(
        (v["pass_at_k"]["pass@1"]["mean"].as_f64().unwrap() - 7.0 / 12.0).abs() < 1e-12,
        "{v}"
    );
    assert_eq!(v["pass_at_k"]["pass@2"]["mean"].as_f64(), Some(1.0));
    assert_eq!(v["skipped_k"], serde_json::json!([3]));
    assert_eq!(v["outcomes"], serde_json::json!({"passed": 3, "failed": 2}));
    let summary: Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["per_problem"][0]["correct"], 2);
    let results: Vec<Value> = std::fs::read_to_string(out.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 5);
    // The wrong t/0 sample (4th line, t/0's 3rd sample) failed on the test's assertion.
    assert_eq!(
        (
            results[3]["task_id"].as_str(),
            results[3]["sample"].as_u64()
        ),
        (Some("t/0"), Some(2))
    );
    assert_eq!(results[3]["outcome"]["status"], "failed");
    assert_eq!(results[3]["outcome"]["source"], "assert f(2, 3) == 5");

    // Bad input: an unknown task is named with its line; exit status 1, no panic.
    std::fs::write(&samples, "{\"task_id\": \"t/0\", \"completion\": \"x\"}\n{\"task_id\": \"t/9\", \"completion\": \"x\"}\n").unwrap();
    let o = gradus(&[
        "eval",
        "code",
        "--samples",
        p(&samples),
        "--data",
        p(&data),
        "--out",
        p(&out),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("samples.jsonl:2") && err.contains("t/9") && !err.contains("panicked"),
        "{err}"
    );
}

/// Sampling from a tiny random checkpoint: n completions per problem, cut at the stop strings,
/// the same with the same seed; a random model solves nothing (its vocabulary is English words).
#[test]
fn sampling_from_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    let texts: Vec<String> = [
        "def add(a, b):",
        "    return a + b",
        "the cat sat on the mat",
        "\ndef f(x):\n    return -x\n# done",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let tok = gradus_train::prep::train_tokenizer(&texts, 300).unwrap();
    let cfg = DecoderConfig {
        vocab_size: tok.vocab_size(),
        hidden_size: 16,
        intermediate_size: 32,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        num_key_value_heads: 1,
        max_position_embeddings: 64,
        ..Default::default()
    };
    save_decoder(&Decoder::new_random(&cfg, 0, &Device::Cpu).unwrap(), &ck).unwrap();
    tok.save(&ck).unwrap();
    let data = dir.path().join("problems.jsonl");
    std::fs::write(&data, PROBLEMS).unwrap();
    let run = |out: &Path| {
        let o = gradus(&[
            "eval",
            "code",
            "--model",
            p(&ck),
            "--data",
            p(&data),
            "--n",
            "3",
            "--k",
            "1",
            "--temperature",
            "1.0",
            "--max-new-tokens",
            "16",
            "--seed",
            "7",
            "--out",
            p(out),
            "--json",
        ]);
        let v: Value = serde_json::from_str(ok(&o).trim()).unwrap();
        (
            v,
            std::fs::read_to_string(out.join("samples.jsonl")).unwrap(),
        )
    };
    let (v, s1) = run(&dir.path().join("a"));
    let (_, s2) = run(&dir.path().join("b"));
    assert_eq!(s1, s2, "same seed, same samples");
    let rows: Vec<Value> = s1
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 6);
    assert_eq!(rows.iter().filter(|r| r["task_id"] == "t/1").count(), 3);
    for r in &rows {
        let c = r["completion"].as_str().unwrap();
        for stop in ["\ndef", "\nclass", "\nif", "\nprint", "\n#"] {
            assert!(!c.contains(stop), "{c:?} contains {stop:?}");
        }
    }
    assert_eq!(v["samples"], 6);
    assert_eq!(v["pass_at_k"]["pass@1"]["mean"].as_f64(), Some(0.0));

    // A prompt plus new tokens beyond the window (64) is refused, naming the problem.
    let o = gradus(&[
        "eval",
        "code",
        "--model",
        p(&ck),
        "--data",
        p(&data),
        "--n",
        "1",
        "--max-new-tokens",
        "100",
        "--out",
        p(&dir.path().join("c")),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("t/0") && err.contains("window"), "{err}");
}
