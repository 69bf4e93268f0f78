//! Curation: shards and bad input, stats, exact and MinHash dedup (single vs sharded runs),
//! decontamination, filters and the Python syntax check. Expected values are derived by hand in
//! the comments.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gradus_curate::decontam::{decontaminate, ngram_hashes, Decontaminator};
use gradus_curate::dedup::{self, exact_key, DedupMethod, DedupOptions, KeepPolicy};
use gradus_curate::filter::{dup_line_frac, filter, python_compile, python_syntax, FilterConfig};
use gradus_curate::minhash::{estimate, jaccard, normalize, shingles, MinHashParams, MinHasher};
use gradus_curate::stats::{self, bucket, Stats};
use gradus_curate::{
    discover, from_files, Compression, InputOptions, OnReadError, OutputOptions, ShardSpec,
};
use serde_json::Value;

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn rows(texts: &[&str]) -> String {
    texts
        .iter()
        .map(|t| serde_json::json!({ "text": t }).to_string() + "\n")
        .collect()
}

fn lines(path: &Path) -> Vec<String> {
    if !path.exists() {
        return Vec::new();
    }
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn json_lines(path: &Path) -> Vec<Value> {
    lines(path)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn out(dir: &Path) -> OutputOptions {
    OutputOptions {
        dir: dir.to_path_buf(),
        compression: Compression::None,
    }
}

fn input() -> InputOptions {
    InputOptions {
        batch_bytes: 64,
        ..Default::default()
    } // tiny batches: many batch boundaries
}

// ---------------------------------------------------------------- shards, bad input

#[test]
fn shard_spec_parses_and_selects_by_index_mod_n() {
    let s: ShardSpec = "1/3".parse().unwrap();
    assert_eq!((s.index, s.count), (1, 3));
    assert_eq!(s.suffix(), ".1-of-3");
    let files: Vec<PathBuf> = (0..7).map(|i| PathBuf::from(format!("f{i}"))).collect();
    // indices 1, 4 (7 files: 0..6; j % 3 == 1)
    let sel: Vec<u32> = s.select(&files).iter().map(|(i, _)| *i).collect();
    assert_eq!(sel, vec![1, 4]);
    for bad in ["3/3", "1", "a/2", "0/0", "-1/2"] {
        let e = bad.parse::<ShardSpec>().unwrap_err().to_string();
        assert!(e.contains("shard"), "{bad}: {e}");
    }
}

#[test]
fn discover_takes_files_dirs_and_globs_sorted() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("sub")).unwrap();
    write(&d.path().join("b.jsonl"), "");
    write(&d.path().join("sub/a.jsonl.gz"), "");
    write(&d.path().join("notes.txt"), "");
    write(&d.path().join(".hidden.jsonl"), "");
    let got = discover(&[d.path().display().to_string()]).unwrap();
    assert_eq!(
        got,
        vec![d.path().join("b.jsonl"), d.path().join("sub/a.jsonl.gz")]
    );
    let g = discover(&[format!("{}/*.jsonl", d.path().display())]).unwrap();
    assert_eq!(g, vec![d.path().join("b.jsonl")]);
    let e = discover(&[d.path().join("missing.jsonl").display().to_string()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.jsonl"), "{e}");
    let e = discover(&[format!("{}/*.parquet", d.path().display())])
        .unwrap_err()
        .to_string();
    assert!(e.contains("matches no file"), "{e}");
}

#[test]
fn bad_rows_are_counted_in_removed_never_lost() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("bad.jsonl");
    let mut bytes = Vec::new();
    bytes.extend_from_slice(b"{\"text\": \"good one\"}\n"); // line 1: kept
    bytes.extend_from_slice(b"{\"text\": \"bad \xff utf8\"}\n"); // line 2: invalid_utf8
    bytes.extend_from_slice(b"{\"content\": \"no text field\"}\n"); // 3: missing_field
    bytes.extend_from_slice(b"\n   \n"); // 4, 5: blank (not rows)
    bytes.extend_from_slice(b"[1, 2]\n"); // 6: not_an_object
    bytes.extend_from_slice(b"{\"text\": 5}\n"); // 7: field_not_text
    bytes.extend_from_slice(b"{\"text\": \"unterminated\n"); // 8: invalid_json
    bytes.extend_from_slice(b"{\"text\": \"good two\", \"extra\": [1, {\"k\": null}]}"); // 9: kept, no final newline
    std::fs::write(&p, &bytes).unwrap();
    write(&d.path().join("empty.jsonl"), "");
    let files = discover(&[d.path().display().to_string()]).unwrap();
    let cfg = FilterConfig {
        min_words: 0,
        min_mean_word_len: 0.0,
        ..FilterConfig::text()
    };
    let o = d.path().join("out");
    let s = filter(&files, ShardSpec::ALL, &input(), &out(&o), &cfg).unwrap();
    assert_eq!(
        (
            s.files,
            s.empty_files,
            s.rows,
            s.kept,
            s.removed,
            s.blank_lines
        ),
        (2, 1, 7, 2, 5, 2)
    );
    for r in [
        "invalid_utf8",
        "missing_field",
        "not_an_object",
        "field_not_text",
        "invalid_json",
    ] {
        assert_eq!(
            s.removed_by_reason.get(r),
            Some(&1),
            "{r}: {:?}",
            s.removed_by_reason
        );
    }
    // Kept rows are written byte for byte, all fields kept.
    assert_eq!(
        lines(&o.join("kept.jsonl")),
        vec![
            "{\"text\": \"good one\"}",
            "{\"text\": \"good two\", \"extra\": [1, {\"k\": null}]}"
        ]
    );
    let removed = json_lines(&o.join("removed.jsonl"));
    let sources: Vec<&str> = removed
        .iter()
        .map(|r| r["source"].as_str().unwrap())
        .collect();
    let want: Vec<String> = [2, 3, 6, 7, 8]
        .iter()
        .map(|l| format!("{}:{l}", p.display()))
        .collect();
    assert_eq!(sources, want);
    assert_eq!(removed[1]["row"]["content"], "no text field"); // a parsed row keeps its JSON
    assert!(removed[0]["raw"]
        .as_str()
        .unwrap()
        .contains("bad \u{fffd} utf8"));
    assert!(removed[0]["detail"]["error"]
        .as_str()
        .unwrap()
        .contains("invalid UTF-8"));
    // The summary on disk says the same.
    let on_disk: Value =
        serde_json::from_str(&std::fs::read_to_string(o.join("summary.json")).unwrap()).unwrap();
    assert_eq!(on_disk["removed"], 5);
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn gzip_zstd_inputs_and_a_corrupt_gzip_member() {
    let d = tempfile::tempdir().unwrap();
    // Two gzip members (concatenated) and one zstd file.
    let mut two = gzip(rows(&["alpha"]).as_bytes());
    two.extend(gzip(rows(&["beta"]).as_bytes()));
    std::fs::write(d.path().join("a.jsonl.gz"), &two).unwrap();
    std::fs::write(
        d.path().join("b.jsonl.zst"),
        zstd::encode_all(rows(&["gamma"]).as_bytes(), 3).unwrap(),
    )
    .unwrap();
    let files = discover(&[d.path().display().to_string()]).unwrap();
    let o = d.path().join("o1");
    let s = stats::stats(&files, ShardSpec::ALL, &input(), &out(&o)).unwrap();
    assert_eq!((s.rows, s.kept), (3, 3));

    // A corrupt second member: the first member's row is read, then the error.
    let mut bad = gzip(rows(&["one", "two"]).as_bytes());
    let mut m2 = gzip(rows(&["three"]).as_bytes());
    let n = m2.len();
    for b in &mut m2[12..n - 8] {
        *b ^= 0x5a;
    }
    bad.extend(m2);
    let bp = d.path().join("c.jsonl.gz");
    std::fs::write(&bp, &bad).unwrap();
    let files = vec![bp.clone()];
    let e = stats::stats(&files, ShardSpec::ALL, &input(), &out(&d.path().join("o2")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("c.jsonl.gz:3: read error"), "{e}");
    assert!(e.contains("--on-read-error skip"), "{e}");
    let skip = InputOptions {
        on_read_error: OnReadError::Skip,
        ..input()
    };
    let o3 = d.path().join("o3");
    let s = stats::stats(&files, ShardSpec::ALL, &skip, &out(&o3)).unwrap();
    assert_eq!((s.kept, s.removed), (2, 1));
    assert_eq!(s.removed_by_reason.get("read_error"), Some(&1));
    let r = json_lines(&o3.join("removed.jsonl"));
    assert_eq!(r[0]["source"], format!("{}:3", bp.display()));
}

#[test]
fn parquet_rows_keep_all_columns() {
    use parquet::data_type::{ByteArray, ByteArrayType, Int32Type};
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("t.parquet");
    let schema = Arc::new(
        parquet::schema::parser::parse_message_type(
            "message s { OPTIONAL BYTE_ARRAY content (UTF8); REQUIRED INT32 n; }",
        )
        .unwrap(),
    );
    let props = Arc::new(parquet::file::properties::WriterProperties::builder().build());
    let mut w = parquet::file::writer::SerializedFileWriter::new(
        std::fs::File::create(&p).unwrap(),
        schema,
        props,
    )
    .unwrap();
    let mut rg = w.next_row_group().unwrap();
    let mut c = rg.next_column().unwrap().unwrap();
    c.typed::<ByteArrayType>()
        .write_batch(
            &[ByteArray::from("same text"), ByteArray::from("same text")],
            Some(&[1, 0, 1]),
            None,
        )
        .unwrap();
    c.close().unwrap();
    let mut c = rg.next_column().unwrap().unwrap();
    c.typed::<Int32Type>()
        .write_batch(&[1, 2, 3], None, None)
        .unwrap();
    c.close().unwrap();
    rg.close().unwrap();
    w.close().unwrap();
    let o = d.path().join("o");
    let inp = InputOptions {
        field: "content".into(),
        ..input()
    };
    let opts = DedupOptions {
        method: DedupMethod::Exact { lowercase: false },
        keep: KeepPolicy::First,
    };
    let s = dedup::dedup(std::slice::from_ref(&p), &inp, &out(&o), &opts).unwrap();
    // row 1 kept, row 2 has a null content (field_not_text), row 3 duplicates row 1.
    assert_eq!((s.rows, s.kept, s.removed), (3, 1, 2));
    let kept: Vec<Value> = json_lines(&o.join("kept.jsonl"));
    assert_eq!(kept[0], serde_json::json!({"content": "same text", "n": 1}));
    let r = json_lines(&o.join("removed.jsonl"));
    assert_eq!(r[0]["reason"], "field_not_text");
    assert_eq!(r[1]["reason"], "exact_duplicate");
    assert_eq!(r[1]["detail"]["kept"], format!("{}:1", p.display()));
}

// ---------------------------------------------------------------- stats

#[test]
fn stats_counts_and_histograms_by_hand() {
    // "ab": 2 chars, 1 word, 1 line -> bucket [2,4); "hello world\nbye": 15 chars, 3 words,
    // 2 lines -> bucket [8,16); "": 0 chars -> bucket 0.
    assert_eq!(
        (
            bucket(0),
            bucket(1),
            bucket(2),
            bucket(3),
            bucket(15),
            bucket(16)
        ),
        (0, 1, 2, 2, 4, 5)
    );
    let mut s = Stats::default();
    for t in ["ab", "hello world\nbye", ""] {
        s.add(t, &stats::detect_text_language(t));
    }
    assert_eq!((s.rows, s.chars, s.words, s.lines), (3, 17, 4, 3));
    assert_eq!((s.min_chars, s.max_chars), (Some(0), Some(15)));
    let hist: Vec<(u64, u64)> = s
        .length_histogram
        .iter()
        .filter(|b| b[2] > 0)
        .map(|b| (b[0], b[2]))
        .collect();
    assert_eq!(hist, vec![(0, 1), (2, 1), (8, 1)]);
    assert_eq!(
        stats::detect_text_language("The cat and the dog went to the park with this ball"),
        "en"
    );
    assert_eq!(
        stats::detect_text_language("Der Hund und die Katze ist nicht mit den Kindern"),
        "de"
    );
    assert_eq!(stats::detect_text_language("Привет, как дела"), "cyrillic");
    assert_eq!(stats::detect_text_language("123 456"), "unknown");
}

#[test]
fn stats_shard_summaries_merge_to_the_single_run() {
    let d = tempfile::tempdir().unwrap();
    for i in 0..5 {
        let texts: Vec<String> = (0..i + 1).map(|k| "word ".repeat(k * 7 + i)).collect();
        let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
        write(&d.path().join(format!("s{i}.jsonl")), &rows(&refs));
    }
    let files = discover(&[d.path().display().to_string()]).unwrap();
    let single = stats::stats(
        &files,
        ShardSpec::ALL,
        &input(),
        &out(&d.path().join("all")),
    )
    .unwrap();
    let mut parts = Vec::new();
    for i in 0..3 {
        let sh = ShardSpec { index: i, count: 3 };
        let s = stats::stats(&files, sh, &input(), &out(&d.path().join("parts"))).unwrap();
        parts.push(PathBuf::from(&s.outputs["summary"]));
    }
    let merged = stats::merge_summaries(&parts).unwrap();
    assert_eq!(merged.rows, 15);
    assert_eq!(merged.report["stats"], single.report["stats"]);
    assert_eq!((merged.files, merged.kept), (single.files, single.kept));
}

// ---------------------------------------------------------------- MinHash

#[test]
fn normalize_and_shingles_by_hand() {
    assert_eq!(
        normalize("  Hello, World!  3.14 and 42\n\tfoo_bar() "),
        "hello world 0 and 0 foo bar"
    );
    // 4 words, n = 2 -> 3 shingles; n = 5 > 4 words -> none.
    assert_eq!(shingles("a b c d", 2).len(), 3);
    assert_eq!(shingles("a b c d", 4).len(), 1);
    assert_eq!(shingles("a b c d", 5).len(), 0);
    assert_eq!(shingles(" ... ", 5).len(), 0);
    // Same words after normalisation -> same shingles.
    assert_eq!(shingles("A, b; C", 2), shingles("a b c", 2));
    assert_eq!(jaccard(&[1, 2, 3], &[2, 3, 4]), 0.5); // |{2,3}| / |{1,2,3,4}|
    assert_eq!(jaccard(&[], &[]), 1.0);
}

#[test]
fn lsh_candidate_probability_matches_the_s_curve() {
    let p = MinHashParams::default(); // 14 bands x 8 rows
                                      // 1 - (1 - 0.8^8)^14: 0.8^8 = 0.16777, (0.83223)^14 = 0.07605 -> 0.924 (datatrove's docstring)
    assert!((p.candidate_probability(0.8) - 0.924).abs() < 1e-3);
    assert!(p.candidate_probability(0.3) < 0.002);
}

/// `k` words from a private vocabulary `tag` (so sets from different tags do not overlap). Words
/// are spelled with letters (digit runs all normalise to `0`).
fn words(tag: &str, k: usize) -> Vec<String> {
    (0..k).map(|i| format!("{tag}{}", letters(i))).collect()
}

fn letters(mut i: usize) -> String {
    let mut s = String::new();
    loop {
        s.push((b'a' + (i % 26) as u8) as char);
        i /= 26;
        if i == 0 {
            return s;
        }
    }
}

#[test]
fn near_duplicates_cluster_and_keep_policy() {
    // With ngram = 1 the shingle sets are the word sets, so Jaccard is set arithmetic:
    // doc0 = w0..w99, doc1 = w0..w94 + x0..x4 -> |∩| = 95, |∪| = 105, J = 0.905;
    // doc2 = w0..w99 + y0..y9 (longest) -> J(doc0, doc2) = 100/110 = 0.909; doc3 unrelated.
    let base = words("w", 100);
    let doc0 = base.join(" ");
    let doc1 = [&base[..95], &words("x", 5)[..]].concat().join(" ");
    let doc2 = [&base[..], &words("y", 10)[..]].concat().join(" ");
    let doc3 = words("z", 100).join(" ");
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("c.jsonl");
    write(&p, &rows(&[&doc0, &doc1, &doc2, &doc3]));
    let params = MinHashParams {
        ngram: 1,
        bands: 20,
        rows: 5,
        seed: 7,
    };
    for (keep, kept_line) in [(KeepPolicy::First, 1), (KeepPolicy::Longest, 3)] {
        let o = d.path().join(format!("o{kept_line}"));
        let opts = DedupOptions {
            method: DedupMethod::minhash(&params, true, 0.8),
            keep,
        };
        let s = dedup::dedup(std::slice::from_ref(&p), &input(), &out(&o), &opts).unwrap();
        assert_eq!((s.kept, s.removed), (2, 2), "{keep:?}");
        let r = json_lines(&o.join("removed.jsonl"));
        for x in &r {
            assert_eq!(x["reason"], "near_duplicate");
            assert_eq!(x["detail"]["kept"], format!("{}:{kept_line}", p.display()));
            assert_eq!(x["detail"]["cluster_size"], 3);
        }
        assert_eq!(s.report["clusters"]["clusters"], 1);
    }
    // J(doc1, doc2) = 95/115 = 0.826: with threshold 0.95 verification rejects every pair.
    let o = d.path().join("strict");
    let opts = DedupOptions {
        method: DedupMethod::minhash(&params, true, 0.95),
        keep: KeepPolicy::First,
    };
    let s = dedup::dedup(std::slice::from_ref(&p), &input(), &out(&o), &opts).unwrap();
    assert_eq!(s.removed, 0);
    assert!(s.report["clusters"]["pairs_rejected"].as_u64().unwrap() >= 1);
}

#[test]
fn exact_dedup_normalises_whitespace_only() {
    assert_eq!(exact_key("a  b\n", false), exact_key(" a b", false));
    assert_ne!(exact_key("A b", false), exact_key("a b", false));
    assert_eq!(exact_key("A b", true), exact_key("a b", true));
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("e.jsonl");
    write(&p, &rows(&["x y", "x  y ", "X y", "z"]));
    let o = d.path().join("o");
    let opts = DedupOptions {
        method: DedupMethod::Exact { lowercase: false },
        keep: KeepPolicy::First,
    };
    let s = dedup::dedup(std::slice::from_ref(&p), &input(), &out(&o), &opts).unwrap();
    assert_eq!((s.kept, s.removed), (3, 1));
    assert_eq!(
        json_lines(&o.join("removed.jsonl"))[0]["source"],
        format!("{}:2", p.display())
    );
}

/// Run dedup sharded (sign per shard, merge, apply per shard) and return sorted kept and removed
/// (source + reason + kept) lines.
fn sharded(
    files: &[PathBuf],
    n: usize,
    opts: &DedupOptions,
    root: &Path,
) -> (Vec<String>, Vec<String>) {
    let work = root.join(format!("work{n}"));
    let o = root.join(format!("out{n}"));
    for i in 0..n {
        dedup::sign_to_dir(
            files,
            ShardSpec { index: i, count: n },
            &input(),
            opts,
            &work,
        )
        .unwrap();
    }
    dedup::merge_dir(files, n, &input(), opts, &work).unwrap();
    let (mut kept, mut removed) = (Vec::new(), Vec::new());
    for i in 0..n {
        let sh = ShardSpec { index: i, count: n };
        dedup::apply_from_dir(files, sh, &input(), &out(&o), opts, &work).unwrap();
        kept.extend(lines(&o.join(format!("kept{}.jsonl", sh.suffix()))));
        removed.extend(
            json_lines(&o.join(format!("removed{}.jsonl", sh.suffix())))
                .iter()
                .map(|r| format!("{} {} {}", r["source"], r["reason"], r["detail"]["kept"])),
        );
    }
    kept.sort();
    removed.sort();
    (kept, removed)
}

fn single(files: &[PathBuf], opts: &DedupOptions, root: &Path) -> (Vec<String>, Vec<String>) {
    let o = root.join("single");
    dedup::dedup(files, &input(), &out(&o), opts).unwrap();
    let mut kept = lines(&o.join("kept.jsonl"));
    let mut removed: Vec<String> = json_lines(&o.join("removed.jsonl"))
        .iter()
        .map(|r| format!("{} {} {}", r["source"], r["reason"], r["detail"]["kept"]))
        .collect();
    kept.sort();
    removed.sort();
    (kept, removed)
}

#[test]
fn sharded_minhash_equals_single_process() {
    let d = tempfile::tempdir().unwrap();
    let base = words("w", 60);
    for f in 0..5 {
        let mut texts = Vec::new();
        for k in 0..4 {
            // Variants of the base text differing in 2 words (near-duplicates across files),
            // plus unique texts; and one bad row per file.
            let mut v = base.clone();
            v[(f * 4 + k) % 60] = format!("c{}", letters(f * 4 + k));
            v[(f * 7 + k * 3) % 60] = format!("d{}", letters(f * 4 + k));
            texts.push(v.join(" "));
            texts.push(words(&format!("u{}q", letters(f * 4 + k)), 40).join(" "));
        }
        let mut s = rows(&texts.iter().map(|s| s.as_str()).collect::<Vec<_>>());
        s.push_str("not json\n");
        write(&d.path().join(format!("part{f}.jsonl")), &s);
    }
    let files = discover(&[d.path().display().to_string()]).unwrap();
    let params = MinHashParams {
        ngram: 3,
        bands: 16,
        rows: 4,
        seed: 3,
    };
    for verify in [false, true] {
        let opts = DedupOptions {
            method: DedupMethod::minhash(&params, verify, 0.5),
            keep: KeepPolicy::Longest,
        };
        let one = single(&files, &opts, d.path());
        assert!(
            one.1.len() > 10,
            "expected near-duplicates to be removed: {:?}",
            one.1.len()
        );
        for n in [1, 2, 3, 7] {
            assert_eq!(
                sharded(&files, n, &opts, d.path()),
                one,
                "n = {n}, verify = {verify}"
            );
        }
    }
}

#[test]
fn merge_refuses_mismatched_or_missing_signatures() {
    let d = tempfile::tempdir().unwrap();
    write(&d.path().join("a.jsonl"), &rows(&["one two three"]));
    write(&d.path().join("b.jsonl"), &rows(&["one two three"]));
    let files = discover(&[d.path().display().to_string()]).unwrap();
    let opts = DedupOptions {
        method: DedupMethod::Exact { lowercase: false },
        keep: KeepPolicy::First,
    };
    let work = d.path().join("w");
    dedup::sign_to_dir(
        &files,
        ShardSpec { index: 0, count: 2 },
        &input(),
        &opts,
        &work,
    )
    .unwrap();
    let e = dedup::merge_dir(&files, 2, &input(), &opts, &work)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sigs.1-of-2.bin") && e.contains("sign stage"),
        "{e}"
    );
    dedup::sign_to_dir(
        &files,
        ShardSpec { index: 1, count: 2 },
        &input(),
        &opts,
        &work,
    )
    .unwrap();
    let other = DedupOptions {
        method: DedupMethod::Exact { lowercase: true },
        keep: KeepPolicy::First,
    };
    let e = dedup::merge_dir(&files, 2, &input(), &other, &work)
        .unwrap_err()
        .to_string();
    assert!(e.contains("other dedup parameters"), "{e}");
    let r = dedup::merge_dir(&files, 2, &input(), &opts, &work).unwrap();
    assert_eq!((r.clusters, r.docs_in_clusters), (1, 2));
}

/// Issue 10: `--stage apply` used to apply a merge made from other inputs or options without
/// noticing. Every stage now checks the fingerprint the previous stage recorded.
#[test]
fn stages_refuse_to_combine_when_inputs_or_options_changed() {
    let d = tempfile::tempdir().unwrap();
    write(
        &d.path().join("a.jsonl"),
        &rows(&["one two three", "four five"]),
    );
    write(&d.path().join("b.jsonl"), &rows(&["one two three"]));
    let files = discover(&[
        d.path().join("a.jsonl").display().to_string(),
        d.path().join("b.jsonl").display().to_string(),
    ])
    .unwrap();
    let opts = DedupOptions {
        method: DedupMethod::Exact { lowercase: false },
        keep: KeepPolicy::First,
    };
    let work = d.path().join("w");
    let o = d.path().join("o");
    for i in 0..2 {
        dedup::sign_to_dir(
            &files,
            ShardSpec { index: i, count: 2 },
            &input(),
            &opts,
            &work,
        )
        .unwrap();
    }
    // Another keep policy at merge time than the signatures were made for.
    let longest = DedupOptions {
        keep: KeepPolicy::Longest,
        ..opts.clone()
    };
    let e = dedup::merge_dir(&files, 2, &input(), &longest, &work)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("fingerprint") && e.contains("sigs.0-of-2.bin"),
        "{e}"
    );
    dedup::merge_dir(&files, 2, &input(), &opts, &work).unwrap();
    let sh = ShardSpec { index: 0, count: 2 };
    dedup::apply_from_dir(&files, sh, &input(), &out(&o), &opts, &work).unwrap();
    // Another --field at apply time.
    let mut other_field = input();
    other_field.field = "content".into();
    let e = dedup::apply_from_dir(&files, sh, &other_field, &out(&o), &opts, &work)
        .unwrap_err()
        .to_string();
    assert!(e.contains("fingerprint") && e.contains("merge.json"), "{e}");
    // An input file rewritten since the merge (same name, other rows; the size changes).
    write(&d.path().join("b.jsonl"), &rows(&["one two three", "six"]));
    let e = dedup::apply_from_dir(
        &files,
        ShardSpec { index: 1, count: 2 },
        &input(),
        &out(&o),
        &opts,
        &work,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("fingerprint") && e.contains("merge.json"), "{e}");
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// MinHash with 256 permutations estimates Jaccard within 0.15 (the estimator's standard
        /// deviation is sqrt(J(1-J)/256) <= 0.031, so this is about 5 sigma).
        #[test]
        fn minhash_estimate_is_close_to_exact(shared in 1usize..200, only_a in 0usize..200, only_b in 0usize..200, seed in 0u64..1000) {
            let a: Vec<u64> = (0..shared + only_a).map(|i| (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)).collect();
            let b: Vec<u64> = (0..shared).chain(shared + only_a..shared + only_a + only_b).map(|i| (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)).collect();
            let mut sa = a.clone(); sa.sort_unstable();
            let mut sb = b.clone(); sb.sort_unstable();
            let exact = jaccard(&sa, &sb);
            prop_assert!((exact - shared as f64 / (shared + only_a + only_b) as f64).abs() < 1e-12);
            let h = MinHasher::new(MinHashParams { ngram: 1, bands: 32, rows: 8, seed }).unwrap();
            let est = estimate(&h.signature(&a).unwrap(), &h.signature(&b).unwrap());
            prop_assert!((est - exact).abs() < 0.15, "estimate {} exact {}", est, exact);
        }

        /// No bias: over 40 random pairs at Jaccard 1/3 (100 shared of 300), the mean estimate
        /// with 128 permutations is within 0.03 of 1/3 (standard error 0.042 / sqrt(40) = 0.0067).
        #[test]
        fn minhash_estimate_is_unbiased(seed in 0u64..1_000_000) {
            let mut rng = gradus_tensor::rng::Rng::new(seed);
            let h = MinHasher::new(MinHashParams { ngram: 1, bands: 16, rows: 8, seed }).unwrap();
            let mut sum = 0.0;
            for _ in 0..40 {
                let v: Vec<u64> = (0..300).map(|_| rng.next_u64()).collect();
                let a: Vec<u64> = v[..200].to_vec();
                let b: Vec<u64> = v[..100].iter().chain(&v[200..]).copied().collect();
                sum += estimate(&h.signature(&a).unwrap(), &h.signature(&b).unwrap());
            }
            prop_assert!((sum / 40.0 - 1.0 / 3.0).abs() < 0.03, "mean estimate {}", sum / 40.0);
        }

        /// Exact dedup over random files with repeats: every shard count gives the single run's rows.
        #[test]
        fn sharded_exact_dedup_equals_single(docs in proptest::collection::vec((0usize..4, 0u8..6), 1..30), n in 1usize..5) {
            let d = tempfile::tempdir().unwrap();
            let mut per_file: Vec<Vec<String>> = vec![Vec::new(); 4];
            for (f, v) in &docs {
                per_file[*f].push(format!("doc number {v}"));
            }
            for (f, texts) in per_file.iter().enumerate() {
                let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
                write(&d.path().join(format!("f{f}.jsonl")), &rows(&refs));
            }
            let files = discover(&[d.path().display().to_string()]).unwrap();
            let opts = DedupOptions { method: DedupMethod::Exact { lowercase: false }, keep: KeepPolicy::First };
            let one = single(&files, &opts, d.path());
            // Distinct values are kept once each.
            let distinct: std::collections::BTreeSet<u8> = docs.iter().map(|(_, v)| *v).collect();
            prop_assert_eq!(one.0.len(), distinct.len());
            prop_assert_eq!(one.0.len() + one.1.len(), docs.len());
            prop_assert_eq!(sharded(&files, n, &opts, d.path()), one);
        }
    }
}

// ---------------------------------------------------------------- decontamination

#[test]
fn decontamination_removes_rows_sharing_an_ngram() {
    let d = tempfile::tempdir().unwrap();
    let eval = d.path().join("evalset.jsonl");
    write(
        &eval,
        &[
            serde_json::json!({"task_id": "T/0", "prompt": "def add(a, b):\n    \"\"\"Return the sum of a and b.\"\"\"\n", "canonical_solution": "    return a + b\n"}),
            serde_json::json!({"task_id": "T/1", "prompt": "short"}),
        ]
        .iter()
        .map(|v| v.to_string() + "\n")
        .collect::<String>(),
    );
    // Item T/0's words: def add a b return the sum of a and b return a b (14 words) -> with n = 13
    // two 13-grams. T/1 has 1 word < 13: too short.
    let mut dc = Decontaminator::new(13, 1).unwrap();
    let fields = vec!["prompt".to_string(), "canonical_solution".to_string()];
    assert_eq!(dc.add_eval_file(&eval, &fields, "task_id").unwrap(), 2);
    assert_eq!(dc.items.len(), 1);
    assert_eq!(dc.items[0].ngrams, 2);
    assert_eq!(dc.too_short, vec!["evalset/T/1".to_string()]);
    assert_eq!(ngram_hashes("a b c", 2).len(), 2);
    let data = d.path().join("train.jsonl");
    write(
        &data,
        &rows(&[
            "# copied\ndef add(a, b):\n    \"\"\"Return the sum of a and b.\"\"\"\n    return a + b\n", // both 13-grams
            "def add(a, b):\n    return a + b  # no docstring: fewer than 13 words in common",
            "DEF ADD(A, B): RETURN THE SUM OF A AND B RETURN A", // case-insensitive: first 13-gram
        ]),
    );
    let o = d.path().join("o");
    let s = decontaminate(
        std::slice::from_ref(&data),
        ShardSpec::ALL,
        &input(),
        &out(&o),
        &dc,
    )
    .unwrap();
    assert_eq!((s.kept, s.removed), (1, 2));
    let r = json_lines(&o.join("removed.jsonl"));
    assert_eq!(r[0]["detail"]["matches"][0]["id"], "T/0");
    assert_eq!(r[0]["detail"]["matches"][0]["shared_ngrams"], 2);
    assert_eq!(r[1]["detail"]["matches"][0]["shared_ngrams"], 1);
    assert_eq!(s.report["eval_items_matched"], 1);
    assert_eq!(s.report["matched"][0]["rows"], 2);
    // An eval file with none of the fields is an error naming file and line.
    let bad = d.path().join("bad.jsonl");
    write(&bad, "{\"question_text\": \"x\"}\n");
    let e = dc
        .add_eval_file(&bad, &fields, "task_id")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bad.jsonl:1") && e.contains("--eval-field"),
        "{e}"
    );
}

/// HumanEval (read at run time, never committed): a row holding a HumanEval prompt is found.
/// Run: cargo test -p gradus-data --test curate -- --ignored humaneval
#[test]
#[ignore]
fn humaneval_prompt_is_detected() {
    let he = Path::new("/work/shared/datasets/humaneval/HumanEval.jsonl.gz");
    let mut dc = Decontaminator::new(13, 1).unwrap();
    let n = dc
        .add_eval_file(
            he,
            &["prompt".into(), "canonical_solution".into()],
            "task_id",
        )
        .unwrap();
    assert_eq!(n, 164);
    let first: Value = {
        use std::io::BufRead;
        let r = gradus_curate::shards::open_decompressed(he).unwrap();
        serde_json::from_str(&r.lines().next().unwrap().unwrap()).unwrap()
    };
    let m = dc.matches(first["prompt"].as_str().unwrap());
    assert!(m
        .iter()
        .any(|(i, _)| dc.items[*i as usize].id == "HumanEval/0"));
    assert!(dc.matches("print('hello world')").is_empty());
}

// ---------------------------------------------------------------- filters, Python check

#[test]
fn text_and_code_rules_by_hand() {
    // 4 non-blank lines, "a" twice, "b" twice -> 4/4 = 1.0; "a","b","c" distinct -> 0.
    assert_eq!(dup_line_frac("a\nb\na\n\nb"), 1.0);
    assert_eq!(dup_line_frac("a\nb\nc"), 0.0);
    let text = FilterConfig::text();
    let short = "only five words here now";
    assert_eq!(text.check(short, None).unwrap().rule, "min_words");
    let good = "The quick brown fox jumps over the lazy dog near the river bank today. "
        .to_string()
        + &(0..60)
            .map(|i| format!("word{i}"))
            .collect::<Vec<_>>()
            .join(" ");
    assert_eq!(text.check(&good, None), None);
    // 60 repeats of "spam spam": the top 2-gram covers all characters.
    let rep = "spam eggs ".repeat(60);
    assert_eq!(text.check(&rep, None).unwrap().rule, "max_top_2gram_frac");
    let code = FilterConfig::code();
    let long = format!("x = '{}'\n", "a".repeat(1200));
    let f = code.check(&long, Some("python")).unwrap();
    assert_eq!(
        (f.rule, f.value.clone()),
        ("max_line_len", Value::from(1206))
    ); // 5 + 1200 + 1 chars
       // "=+-" symbols only: alnum fraction 0 / 3 non-space.
    assert_eq!(code.check("=+-\n", None).unwrap().rule, "min_alnum_frac");
    // 3 of 4 non-blank lines are comments = 0.75 <= 0.8; 5 of 6 = 0.833 > 0.8.
    assert_eq!(code.check("# a\n# b\n# c\nx = 1\n", Some("python")), None);
    assert_eq!(
        code.check("# a\n# b\n# c\n# d\n# e\nx = 1\n", Some("python"))
            .unwrap()
            .rule,
        "max_comment_frac"
    );
    assert_eq!(
        code.check("def f(:\n    pass\n", Some("python"))
            .unwrap()
            .rule,
        "python_syntax"
    );
    // Not python: no syntax check.
    assert_eq!(code.check("def f(:\n    pass\n", Some("rust")), None);
}

#[test]
fn python_syntax_accepts_valid_code() {
    let ok = [
        "x = 1\n",
        "",
        "# only a comment",
        "def f(a, b=(1, 2)):\n    \"\"\"doc\n    string: with colon\"\"\"\n    return {'a': [a,\n        b]}\n",
        "if x:\n    pass\nelif y:  # comment\n\n    # indented comment\n    z = 1\nelse:\n  w = 2\n",
        "s = r'\\d+' + b\"x\" + f'{a!r:>{width}} {{}} {d[\"k\"]}' + rb'\\''\n",
        "class A: pass\nlambda: 0\nx = y[1:]\n",
        "x = 1 + \\\n    2\n",
        "def g():\n\treturn 1\n",
        "t = '''a\n'b'\n\"\"\"\n'''\n",
        "π = 3.14\nnombre_é = π\n",
        "x = f'''\n{ # a comment in a field, with a quote it's\n3}'''\n", // 3.12 (test_fstring.py)
        "x\u{e0100} = 1\n",
        "a = fr'\\{{\\}}' + fr'\\{{{1+1}'\n", // braces after a backslash (test_fstring.py)
        "s = f'{id(self):#x} {x:'^10} {y:{w}.{p}f} {d[\"k\"]!r:>4}'\n", // `#` and quotes in a format spec // a variation selector continues an identifier (test_unicode_identifiers.py)
        "match x:\n    case [a, b]:\n        pass\n",
        "x = (1,  # comment with ) paren\n     2)\n",
    ];
    for src in ok {
        assert_eq!(python_syntax(src), Ok(()), "{src:?}");
    }
}

#[test]
fn python_syntax_rejects_errors_with_line_numbers() {
    let bad = [
        ("def f(:\n    pass\n", "line 1: '(' was never closed"),
        (
            "x = [1, 2)\n",
            "line 1: closing parenthesis ')' does not match opening parenthesis '['",
        ),
        ("x = 1)\n", "line 1: unmatched ')'"),
        (
            "if x:\npass\n",
            "line 2: expected an indented block after line 1",
        ),
        ("def f():\n", "expected an indented block after line 1"),
        ("x = 1\n    y = 2\n", "line 2: unexpected indent"),
        (
            "if x:\n    a = 1\n  b = 2\n",
            "line 3: unindent does not match any outer indentation level",
        ),
        ("s = 'abc\n", "line 1: unterminated string literal"),
        (
            "s = '''abc\n\nx\n",
            "line 1: unterminated triple-quoted string literal",
        ),
        (
            "x = 1 \\ 2\n",
            "line 1: unexpected character after line continuation character",
        ),
        ("a = 1\nb = $x\n", "line 2: invalid character '$'"),
        ("a = 1 → 2\n", "invalid character '→'"),
        ("print(f'{x')\n", "line 1: unterminated string literal"), // the quote opens a nested string (3.12)
        ("x = 1\0\n", "null bytes"),
    ];
    for (src, want) in bad {
        let e = python_syntax(src).unwrap_err();
        assert!(e.contains(want), "{src:?}: got {e:?}, want {want:?}");
    }
}

#[test]
fn from_files_makes_rows_with_path_ids() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("pkg")).unwrap();
    write(&d.path().join("a.py"), "x = 1\n");
    write(&d.path().join("b.txt"), "no");
    write(&d.path().join("pkg/c.py"), "y = 2\n");
    std::fs::write(d.path().join("bin.py"), b"\xff\xfe").unwrap();
    let o = d.path().join("rows.jsonl");
    let s = from_files(&[d.path().to_path_buf()], "*.py", false, &[], &o).unwrap();
    assert_eq!(s.rows, 1);
    assert_eq!(
        s.skipped_not_utf8,
        vec![d.path().join("bin.py").display().to_string()]
    );
    let r = json_lines(&o);
    assert_eq!(r[0]["id"], d.path().join("a.py").display().to_string());
    assert_eq!(r[0]["text"], "x = 1\n");
    let s = from_files(&[d.path().to_path_buf()], "*.py", true, &[], &o).unwrap();
    assert_eq!(s.rows, 2);
    let s = from_files(
        &[d.path().to_path_buf()],
        "*.py",
        true,
        &["pkg".to_string()],
        &o,
    )
    .unwrap();
    assert_eq!(s.rows, 1);
}

/// `python_compile` (a pool of long-lived interpreters) gives CPython's own verdicts: the cases
/// the built-in check lets through (`print "x"`, `1 = x`, a stray `else:`, `return` outside a
/// function) and the ones it catches, from many threads at once, a NUL byte (Python refuses it
/// with a ValueError), and a second round on the warm pool. Skipped only without python3.
#[test]
fn python_compile_pool_gives_cpythons_verdicts() {
    if std::process::Command::new("python3")
        .arg("-c")
        .arg("1")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: no python3 on the PATH");
        return;
    }
    let cases: Vec<(&str, Option<&str>)> = vec![
        ("x = 1\n", None),
        ("def f(a):\n    return a\n", None),
        ("print \"x\"\n", Some("line 1: ")),
        ("1 = x\n", Some("line 1: ")),
        ("x = 1\nelse:\n    pass\n", Some("line 2: ")),
        ("return 1\n", Some("line 1: ")),
        ("def f(:\n    pass\n", Some("line 1: ")),
        ("a\0b\n", Some("null bytes")),
    ];
    for round in 0..2 {
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for (src, want) in &cases {
                        let got = python_compile(src);
                        match want {
                            None => assert_eq!(got, Ok(()), "round {round}: {src:?}"),
                            Some(w) => {
                                let e = got.expect_err(src);
                                assert!(e.contains(w), "round {round}: {src:?}: {e}");
                            }
                        }
                    }
                });
            }
        });
    }
}

/// Statement-level checks of the built-in Python check, each case written out by hand against
/// CPython 3.11's verdict: Python 2 `print`/`exec` statements (a value right after the word) and
/// `from __future__` imports (only after the docstring and other future imports; known features
/// only), and the look-alikes that are valid Python.
#[test]
fn python_syntax_catches_print_statements_and_future_imports() {
    let bad = [
        ("print \"x\"\n", "Missing parentheses in call to 'print'"),
        ("print x, y\n", "Missing parentheses in call to 'print'"),
        (
            "if a:\n    print 1\n",
            "line 2: Missing parentheses in call to 'print'",
        ),
        ("print None\n", "Missing parentheses in call to 'print'"),
        ("print r'x'\n", "Missing parentheses in call to 'print'"),
        ("exec \"code\"\n", "Missing parentheses in call to 'exec'"),
        (
            "import os\nfrom __future__ import annotations\n",
            "line 2: from __future__ imports must occur at the beginning of the file",
        ),
        (
            "\"doc\"\n\"not a docstring\"\nfrom __future__ import division\n",
            "line 3: from __future__ imports must occur",
        ),
        (
            "from __future__ import annotations\n\"s\"\nfrom __future__ import division\n",
            "line 3: from __future__ imports must occur",
        ),
        (
            "from __future__ import division; import os; from __future__ import annotations\n",
            "line 1: from __future__ imports must occur",
        ),
        ("from __future__ import braces\n", "not a chance"),
        (
            "from __future__ import rested_snopes\n",
            "future feature rested_snopes is not defined",
        ),
        (
            "from __future__ import *\n",
            "future feature * is not defined",
        ),
    ];
    for (src, want) in bad {
        let e = python_syntax(src).expect_err(src);
        assert!(e.contains(want), "{src:?}: {e}");
    }
    let good = [
        "print('x')\n",
        "print\n",
        "print = 3\n",
        "print, x = 1, 2\n",
        "print.x\n",
        "print >> f, x\n",
        "print -1\n",
        "print if a else b\n",
        "print in xs\n",
        "exec(code)\n",
        "x = 'print \"x\"'\n",
        "\"\"\"Docstring.\"\"\"\n# comment\n\nfrom __future__ import annotations\nfrom __future__ import (division,\n    print_function)\nimport os\n",
        "from __future__ import nested_scopes; import site\n",
        "from __future__ import annotations as a\n",
        "r'''doc'''\nfrom __future__ import generator_stop\n",
        "def f():\n    from __future__x import y\n",
    ];
    for src in good {
        assert_eq!(python_syntax(src), Ok(()), "{src:?}");
    }
}

/// On the standard library of the python3 on the PATH (every .py file, the test suite's
/// deliberately broken ones included), the built-in check gives CPython's own verdict for every
/// file but those with an encoding-declaration problem (which it does not read). Skipped without
/// python3.
#[test]
fn python_syntax_agrees_with_cpython_on_its_standard_library() {
    let Ok(o) = std::process::Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['stdlib'])",
        ])
        .output()
    else {
        eprintln!("SKIPPED: no python3 on the PATH");
        return;
    };
    let root = std::path::PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    let mut stack = vec![root.clone()];
    let mut files = vec![];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.file_name().is_some_and(|n| n == "site-packages") {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "py") {
                files.push(p);
            }
        }
    }
    assert!(
        files.len() > 500,
        "{}: {} files",
        root.display(),
        files.len()
    );
    let mut disagree = vec![];
    let mut rejected = 0;
    for f in &files {
        let Ok(src) = std::fs::read_to_string(f) else {
            continue;
        };
        let cpy = python_compile(&src);
        rejected += cpy.is_err() as usize;
        let ours = python_syntax(&src);
        if cpy.is_ok() != ours.is_ok() {
            disagree.push(format!(
                "{}: CPython {cpy:?}, built-in {ours:?}",
                f.display()
            ));
        }
    }
    assert!(
        rejected >= 3,
        "the stdlib's test suite has files CPython rejects: {rejected}"
    );
    disagree.retain(|d| !d.contains("encoding"));
    assert!(disagree.is_empty(), "{disagree:#?}");
}
