//! `gradus data ...` end to end: every step on a small corpus, the sharded dedup stages against
//! the single run, and bad input (exit 1, no panic, the file named).

use std::path::Path;

mod common;
use common::{fails_naming, gradus, ok, ok_json};

fn write_rows(path: &Path, texts: &[&str]) {
    let s: String = texts
        .iter()
        .map(|t| serde_json::json!({"content": t, "meta": 1}).to_string() + "\n")
        .collect();
    std::fs::write(path, s).unwrap();
}

fn sorted_lines(paths: &[std::path::PathBuf]) -> Vec<String> {
    let mut v: Vec<String> = paths
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect();
    v.sort();
    v
}

/// A corpus of 3 files in which each of two long texts appears (with one word changed) in every file.
fn corpus(dir: &Path) {
    let a: Vec<String> = (0..80)
        .map(|i| format!("alpha{}", (b'a' + (i % 26) as u8) as char).repeat(1 + i / 26))
        .collect();
    let b: Vec<String> = (0..80)
        .map(|i| format!("beta{}", (b'a' + (i % 26) as u8) as char).repeat(1 + i / 26))
        .collect();
    std::fs::create_dir_all(dir).unwrap();
    for f in 0..3 {
        let mut va = a.clone();
        va[f * 5] = "changed".into();
        let mut vb = b.clone();
        vb[f * 7 + 1] = "other".into();
        let unique = format!(
            "unique text number {} with several words in it",
            ["one", "two", "three"][f]
        );
        write_rows(
            &dir.join(format!("part{f}.jsonl")),
            &[&va.join(" "), &unique, &vb.join(" ")],
        );
    }
}

#[test]
fn dedup_minhash_sharded_stages_equal_the_single_run() {
    let d = tempfile::tempdir().unwrap();
    let c = d.path().join("corpus");
    corpus(&c);
    let cs = c.to_str().unwrap();
    let common = ["--field", "content", "--minhash", "--quiet", "--ngram", "3"];
    let mut args = vec!["data", "dedup", cs, "--out", "single"];
    args.extend(common);
    let s = ok_json(&gradus(&args, d.path()));
    // 9 rows: two clusters of 3 (one kept each), 3 unique -> kept 5, removed 4.
    assert_eq!(
        (
            s["rows"].as_u64(),
            s["kept"].as_u64(),
            s["removed"].as_u64()
        ),
        (Some(9), Some(5), Some(4))
    );
    assert_eq!(s["report"]["clusters"]["clusters"], 2);
    let n = 2;
    for stage in ["sign", "merge", "apply"] {
        let shards: Vec<usize> = if stage == "merge" {
            vec![0]
        } else {
            (0..n).collect()
        };
        for i in shards {
            let sh = format!("{i}/{n}");
            let mut args = vec![
                "data", "dedup", cs, "--out", "sharded", "--stage", stage, "--work", "work",
                "--shard", &sh,
            ];
            args.extend(common);
            let o = gradus(&args, d.path());
            ok_json(&o);
        }
    }
    let single = sorted_lines(&[d.path().join("single/kept.jsonl")]);
    let sharded = sorted_lines(&[
        d.path().join("sharded/kept.0-of-2.jsonl"),
        d.path().join("sharded/kept.1-of-2.jsonl"),
    ]);
    assert_eq!(single.len(), 5);
    assert_eq!(single, sharded);
    // Kept rows keep their other fields.
    assert!(single.iter().all(|l| l.contains("\"meta\":1")));
    // stats per shard, then --merge, gives the single run's stats.
    let single = ok_json(&gradus(
        &[
            "data", "stats", cs, "--field", "content", "--out", "st", "--quiet", "--json",
        ],
        d.path(),
    ));
    for i in 0..2 {
        let sh = format!("{i}/2");
        ok_json(&gradus(
            &[
                "data", "stats", cs, "--field", "content", "--out", "stp", "--shard", &sh,
                "--quiet", "--json",
            ],
            d.path(),
        ));
    }
    let merged = ok_json(&gradus(
        &[
            "data",
            "stats",
            "--merge",
            "stp/summary.0-of-2.json",
            "stp/summary.1-of-2.json",
            "--out",
            "stm",
            "--json",
        ],
        d.path(),
    ));
    assert_eq!(merged["report"]["stats"], single["report"]["stats"]);
    assert_eq!(merged["rows"], 9);
    // --shard without --stage is refused.
    let o = gradus(
        &["data", "dedup", cs, "--shard", "0/2", "--field", "content"],
        d.path(),
    );
    fails_naming(&o, &["--stage"]);
}

#[test]
fn stats_filter_decontaminate_and_from_files() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("good.py"), "def f(x):\n    return x + 1\n").unwrap();
    std::fs::write(src.join("bad.py"), "def f(x:\n    return x\n").unwrap();
    std::fs::write(
        src.join("add.py"),
        "def add(a, b):\n    \"\"\"Return the sum of a and b.\"\"\"\n    return a + b\n",
    )
    .unwrap();
    let s = ok_json(&gradus(
        &[
            "data",
            "from-files",
            "src",
            "--glob",
            "*.py",
            "--out",
            "rows.jsonl",
        ],
        d.path(),
    ));
    assert_eq!(s["rows"], 3);

    let s = ok_json(&gradus(
        &[
            "data",
            "stats",
            "rows.jsonl",
            "--out",
            "st",
            "--quiet",
            "--json",
        ],
        d.path(),
    ));
    assert_eq!(s["report"]["stats"]["rows"], 3);
    assert_eq!(s["report"]["stats"]["languages"]["python"], 3);
    // For people (the default): rows, languages with shares, a histogram line per used bucket;
    // the JSON is the summary file.
    let text = ok(&gradus(
        &["data", "stats", "rows.jsonl", "--out", "st2", "--quiet"],
        d.path(),
    ));
    assert!(text.starts_with("3 rows in 1 file ("), "{text}");
    assert!(text.contains("languages: python 3 (100.0%)"), "{text}");
    assert!(text.contains("characters: "), "{text}");
    let bars = text
        .lines()
        .filter(|l| l.trim_start().starts_with('['))
        .count();
    assert!(bars >= 1, "{text}");
    assert!(d.path().join("st2/summary.json").exists());
    // A field no row has: the outputs are written, the exit status says so, naming the field and
    // the fields the rows do have.
    for step in ["stats", "filter"] {
        let o = gradus(
            &[
                "data",
                step,
                "rows.jsonl",
                "--field",
                "content",
                "--out",
                &format!("nf-{step}"),
                "--quiet",
            ],
            d.path(),
        );
        fails_naming(&o, &["--field", "\"content\"", "id", "text"]);
    }

    let s = ok_json(&gradus(
        &[
            "data",
            "filter",
            "rows.jsonl",
            "--mode",
            "code",
            "--out",
            "fl",
            "--quiet",
        ],
        d.path(),
    ));
    assert_eq!(
        (s["kept"].as_u64(), s["removed"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(s["removed_by_reason"]["filter:python_syntax"], 1);
    let removed = std::fs::read_to_string(d.path().join("fl/removed.jsonl")).unwrap();
    assert!(
        removed.contains("bad.py") && removed.contains("line 1: '(' was never closed"),
        "{removed}"
    );
    let o = gradus(
        &[
            "data",
            "filter",
            "rows.jsonl",
            "--mode",
            "code",
            "--set",
            "nope=1",
        ],
        d.path(),
    );
    fails_naming(&o, &["unknown rule \"nope\""]);

    let eval = d.path().join("eval.jsonl");
    std::fs::write(
        &eval,
        serde_json::json!({"task_id": "E/0", "prompt": "def add(a, b):\n    \"\"\"Return the sum of a and b.\"\"\"\n", "canonical_solution": "    return a + b\n"}).to_string() + "\n",
    )
    .unwrap();
    let s = ok_json(&gradus(
        &[
            "data",
            "decontaminate",
            "rows.jsonl",
            "--eval",
            "eval.jsonl",
            "--out",
            "dc",
            "--quiet",
        ],
        d.path(),
    ));
    assert_eq!(s["removed"], 1);
    assert_eq!(s["report"]["matched"][0]["id"], "E/0");
}

#[test]
fn bad_input_exits_1_naming_the_file() {
    let d = tempfile::tempdir().unwrap();
    let o = gradus(&["data", "stats", "missing.jsonl"], d.path());
    fails_naming(&o, &["missing.jsonl"]);
    std::fs::write(
        d.path().join("x.jsonl.gz"),
        b"\x1f\x8b\x08\x00garbage-not-deflate",
    )
    .unwrap();
    let o = gradus(&["data", "stats", "x.jsonl.gz", "--quiet"], d.path());
    fails_naming(&o, &["x.jsonl.gz", "read error"]);
    let s = ok_json(&gradus(
        &[
            "data",
            "stats",
            "x.jsonl.gz",
            "--quiet",
            "--on-read-error",
            "skip",
            "--json",
        ],
        d.path(),
    ));
    assert_eq!(s["removed_by_reason"]["read_error"], 1);
    let o = gradus(&["data", "stats", "x.jsonl.gz", "--shard", "2/2"], d.path());
    fails_naming(&o, &["shard"]);
    let o = gradus(&["data", "dedup", "x.jsonl.gz", "--verify"], d.path());
    fails_naming(&o, &["--verify needs --minhash"]);
    std::fs::write(d.path().join("e.jsonl"), "").unwrap();
    let s = ok_json(&gradus(&["data", "dedup", "e.jsonl", "--quiet"], d.path()));
    assert_eq!(
        (s["rows"].as_u64(), s["empty_files"].as_u64()),
        (Some(0), Some(1))
    );
}
