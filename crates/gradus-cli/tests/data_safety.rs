//! Issue 10, the data side, with the real binary: two jobs into one `--out`, an `--out` holding
//! another step's outputs or lying inside the inputs, per-step default `--out`, JSON arrays.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{fails_naming, gradus, ok_json};

fn rows(texts: &[String]) -> String {
    texts
        .iter()
        .map(|t| serde_json::json!({"text": t}).to_string() + "\n")
        .collect()
}

#[test]
fn a_second_job_into_the_same_out_is_refused_while_the_first_runs() {
    let d = tempfile::tempdir().unwrap();
    // Big enough that the first job is still running when the second starts (it is read,
    // hashed and written row by row); every row distinct, so all are kept.
    let big: Vec<String> = (0..300_000)
        .map(|i| {
            format!(
                "row {i} of the first job, with some words to hash {}",
                i as u64 * 7919
            )
        })
        .collect();
    std::fs::write(d.path().join("big.jsonl"), rows(&big)).unwrap();
    std::fs::write(
        d.path().join("small.jsonl"),
        rows(&["other".into(), "rows".into()]),
    )
    .unwrap();
    let first = Command::new(env!("CARGO_BIN_EXE_gradus"))
        .args(["data", "dedup", "big.jsonl", "--out", "shared", "--quiet"])
        .current_dir(d.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lock = d.path().join("shared/.gradus-data.lock");
    let t0 = Instant::now();
    while !lock.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the first job never took its lock"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // The original failure: both jobs wrote `kept.jsonl.tmp`; the survivor's summary said
    // success while kept.jsonl held the other job's rows.
    let o = gradus(
        &["data", "dedup", "small.jsonl", "--out", "shared", "--quiet"],
        d.path(),
    );
    fails_naming(
        &o,
        &["shared", &format!("in use by process {}", first.id())],
    );
    let out = first.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kept = std::fs::read_to_string(d.path().join("shared/kept.jsonl")).unwrap();
    assert_eq!(
        kept.lines().count(),
        big.len(),
        "kept.jsonl holds exactly the first job's rows"
    );
    assert!(!kept.contains("\"other\""));
    assert!(!lock.exists());
}

#[test]
fn out_dirs_of_other_steps_and_inside_the_inputs_are_refused_and_defaults_differ() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("corpus")).unwrap();
    let texts: Vec<String> = ["a b c", "a b c", "d e f"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    std::fs::write(d.path().join("corpus/part.jsonl"), rows(&texts)).unwrap();

    ok_json(&gradus(
        &[
            "data", "stats", "corpus", "--out", "st", "--quiet", "--json",
        ],
        d.path(),
    ));
    // Was: dedup's kept/removed went beside stats' summary (and the stats summary was replaced).
    let o = gradus(
        &["data", "dedup", "corpus", "--out", "st", "--quiet"],
        d.path(),
    );
    fails_naming(&o, &["gradus data stats", "summary.json", "own --out"]);
    let s: Value =
        serde_json::from_str(&std::fs::read_to_string(d.path().join("st/summary.json")).unwrap())
            .unwrap();
    assert_eq!(s["step"], "stats", "the other step's outputs are untouched");
    // The same step again into its own directory is fine.
    ok_json(&gradus(
        &[
            "data", "stats", "corpus", "--out", "st", "--quiet", "--json",
        ],
        d.path(),
    ));

    // Was: the outputs landed among the inputs and the next run over `corpus` read them back.
    let o = gradus(
        &["data", "dedup", "corpus", "--out", "corpus/dd", "--quiet"],
        d.path(),
    );
    fails_naming(&o, &["inside the input directory"]);
    assert!(!d.path().join("corpus/dd").exists());

    // Each step's default --out is its own (was `curated` for all of them).
    let a = ok_json(&gradus(&["data", "dedup", "corpus", "--quiet"], d.path()));
    let b = ok_json(&gradus(&["data", "filter", "corpus", "--quiet"], d.path()));
    assert_eq!(
        (a["kept"].as_u64(), a["removed"].as_u64()),
        (Some(2), Some(1))
    );
    assert!(
        a["outputs"]["kept"]
            .as_str()
            .unwrap()
            .contains("curated/dedup"),
        "{a}"
    );
    assert!(
        b["outputs"]["kept"]
            .as_str()
            .unwrap()
            .contains("curated/filter"),
        "{b}"
    );
    assert_eq!(
        std::fs::read_to_string(d.path().join("curated/dedup/kept.jsonl"))
            .unwrap()
            .lines()
            .count(),
        2
    );
}

#[test]
fn a_json_array_file_is_read_element_by_element() {
    let d = tempfile::tempdir().unwrap();
    // Pretty-printed, as json.dump(indent=2) writes it; one element is not an object.
    let arr = serde_json::json!([{"text": "x y"}, {"text": "x y"}, 7, {"text": "z"}]);
    std::fs::write(
        d.path().join("rows.json"),
        serde_json::to_string_pretty(&arr).unwrap(),
    )
    .unwrap();
    // Was: one row per line, all `invalid_json` / `not_an_object`.
    let s = ok_json(&gradus(
        &["data", "dedup", "rows.json", "--out", "dd", "--quiet"],
        d.path(),
    ));
    assert_eq!(
        (
            s["rows"].as_u64(),
            s["kept"].as_u64(),
            s["removed"].as_u64()
        ),
        (Some(4), Some(2), Some(2)),
        "{s}"
    );
    assert_eq!(
        s["removed_by_reason"]["not_an_object"].as_u64(),
        Some(1),
        "{s}"
    );
    let removed: Vec<Value> = std::fs::read_to_string(d.path().join("dd/removed.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let sources: Vec<&str> = removed
        .iter()
        .map(|r| r["source"].as_str().unwrap())
        .collect();
    assert!(
        sources.iter().any(|s| s.ends_with("rows.json:2"))
            && sources.iter().any(|s| s.ends_with("rows.json:3")),
        "{sources:?}"
    );
}
