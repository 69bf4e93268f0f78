//! `gradus data embed | prune | corrupt | probe` end to end, on the tiny random BERT fixture of
//! gradus-model (crates/gradus-model/tests/fixtures/tiny_bert, made by its gen.py).

use std::path::{Path, PathBuf};

use gradus_curate::corrupt::Class;
use gradus_curate::prune::store::{read_embeddings, write_embeddings, Embeddings};
use gradus_tasks::lang;
use gradus_tasks::programs::{generate, ProgramConfig};
use gradus_tensor::rng::Rng;
use serde_json::Value;

mod common;
use common::{fails_naming, gradus, ok};

fn tiny_bert() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../gradus-model/tests/fixtures/tiny_bert")
}

fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn write_texts(path: &Path, field: &str, texts: &[String]) {
    let s: String = texts
        .iter()
        .map(|t| format!("{}\n", serde_json::json!({ field: t })))
        .collect();
    std::fs::write(path, s).unwrap();
}

#[test]
fn embed_matches_the_transformers_reference() {
    let dir = tempfile::tempdir().unwrap();
    let refj: Value =
        serde_json::from_str(&std::fs::read_to_string(tiny_bert().join("reference.json")).unwrap())
            .unwrap();
    let cases = refj["cases"].as_array().unwrap();
    let texts: Vec<String> = cases
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_string())
        .collect();
    write_texts(&dir.path().join("in.jsonl"), "content", &texts);
    let model = tiny_bert();
    let out = ok(&gradus(
        &[
            "data",
            "embed",
            "--input",
            "in.jsonl",
            "--field",
            "content",
            "--model",
            model.to_str().unwrap(),
            "--out",
            "e.safetensors",
            "--npy",
            "e.npy",
        ],
        dir.path(),
    ));
    assert!(out.contains("\"rows\":8"), "{out}");
    let e = read_embeddings(&dir.path().join("e.safetensors")).unwrap();
    assert_eq!((e.len(), e.dim), (8, 16));
    assert_eq!(e.row_ids, (0..8).collect::<Vec<u64>>());
    for (i, c) in cases.iter().enumerate() {
        for (a, b) in e.values[i * 16..(i + 1) * 16]
            .iter()
            .zip(c["embedding"].as_array().unwrap())
        {
            assert!((a - b.as_f64().unwrap() as f32).abs() < 1e-5);
        }
    }
    assert_eq!(
        std::fs::metadata(dir.path().join("e.npy")).unwrap().len(),
        128 + 8 * 16 * 4
    );
    // A missing field names the file, line and field.
    let o = gradus(
        &[
            "data",
            "embed",
            "--input",
            "in.jsonl",
            "--model",
            model.to_str().unwrap(),
            "--out",
            "x.safetensors",
        ],
        dir.path(),
    );
    fails_naming(&o, &["in.jsonl:1", "text"]);
}

/// The three groups of crates/gradus-data/tests/prune.rs (derivation there): with k = 3,
/// p = 4/17 and α = 0.5 SCIP removes C (rows 15, 16), then rows 9 and 14.
#[test]
fn prune_scip_writes_kept_removed_and_summary() {
    let dir = tempfile::tempdir().unwrap();
    let mut x: Vec<f32> = Vec::new();
    for _ in 0..9 {
        x.extend([1.0, 0.0, 0.0]);
    }
    x.extend([1.0, 0.3, 0.0]);
    for _ in 0..4 {
        x.extend([0.0, 1.0, 0.0]);
    }
    x.extend([0.0, 1.0, 0.2, 0.0, 0.0, 1.0, 0.15, 0.0, 1.0]);
    let e = Embeddings {
        dim: 3,
        values: x,
        row_ids: (0..17).collect(),
        metadata: Default::default(),
    };
    write_embeddings(&dir.path().join("e.safetensors"), &e).unwrap();
    let rows: String = (0..17)
        .map(|i| {
            format!(
                "{}\n",
                serde_json::json!({"text": format!("row {i}"), "id": format!("doc-{i}")})
            )
        })
        .collect();
    std::fs::write(dir.path().join("in.jsonl"), rows).unwrap();
    let frac = format!("{}", 4.0 / 17.0);
    ok(&gradus(
        &[
            "data",
            "prune",
            "--embeddings",
            "e.safetensors",
            "--input",
            "in.jsonl",
            "--method",
            "scip",
            "--fraction",
            &frac,
            "--alpha",
            "0.5",
            "--k",
            "3",
            "--out",
            "out",
        ],
        dir.path(),
    ));
    let removed = jsonl(&dir.path().join("out/removed.jsonl"));
    let rows: Vec<u64> = removed.iter().map(|r| r["row"].as_u64().unwrap()).collect();
    assert_eq!(rows, vec![9, 14, 15, 16]);
    assert_eq!(removed[2]["reason"], "small_cluster");
    assert_eq!(removed[0]["reason"], "far_from_centroid");
    assert_eq!(removed[0]["text"], "row 9");
    assert_eq!(
        removed[0]["id"], "doc-9",
        "removed rows carry the original fields"
    );
    let kept = jsonl(&dir.path().join("out/kept.jsonl"));
    assert_eq!(kept.len(), 13);
    // Kept rows are the input rows unchanged: every field, nothing added.
    assert_eq!(kept[0], serde_json::json!({"text": "row 0", "id": "doc-0"}));
    let summary: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("out/summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["removed"], 4);
    assert_eq!(summary["reasons"]["small_cluster"], 2);
    // Random and SemDeDup run too; SemDeDup by threshold removes the 11 exact copies.
    ok(&gradus(
        &[
            "data",
            "prune",
            "--embeddings",
            "e.safetensors",
            "--method",
            "semdedup",
            "--threshold",
            "0.999",
            "--k",
            "3",
            "--out",
            "sd",
        ],
        dir.path(),
    ));
    assert_eq!(jsonl(&dir.path().join("sd/removed.jsonl")).len(), 11);
    ok(&gradus(
        &[
            "data",
            "prune",
            "--embeddings",
            "e.safetensors",
            "--method",
            "d4",
            "--fraction",
            "0.5",
            "--k",
            "3",
            "--out",
            "d4",
        ],
        dir.path(),
    ));
    assert_eq!(jsonl(&dir.path().join("d4/removed.jsonl")).len(), 9); // round(8.5) = 9
                                                                      // Bad input: a fraction out of range, a file that is not an embeddings file.
    let o = gradus(
        &[
            "data",
            "prune",
            "--embeddings",
            "e.safetensors",
            "--method",
            "random",
            "--fraction",
            "1.5",
            "--out",
            "r",
        ],
        dir.path(),
    );
    fails_naming(&o, &["fraction"]);
    let o = gradus(
        &[
            "data",
            "prune",
            "--embeddings",
            "in.jsonl",
            "--method",
            "scip",
            "--out",
            "r",
        ],
        dir.path(),
    );
    fails_naming(&o, &["in.jsonl"]);
}

fn tiny_programs(n: usize) -> Vec<String> {
    let mut rng = Rng::new(3);
    let cfg = ProgramConfig {
        max_stmts: 6,
        ..Default::default()
    };
    (0..n).map(|_| generate(&mut rng, &cfg).source).collect()
}

#[test]
fn corrupt_records_each_corruption_and_the_tiny_parser_agrees() {
    let dir = tempfile::tempdir().unwrap();
    write_texts(&dir.path().join("p.jsonl"), "text", &tiny_programs(30));
    ok(&gradus(
        &[
            "data", "corrupt", "--input", "p.jsonl", "--lang", "tiny", "--seed", "4", "--out",
            "c.jsonl",
        ],
        dir.path(),
    ));
    let rows = jsonl(&dir.path().join("c.jsonl"));
    assert_eq!(rows.len(), 30);
    // The row's other fields stay (here an `id` and a `meta` object), and the text keeps its field
    // name.
    let progs = tiny_programs(4);
    let with_ids: String = progs
        .iter()
        .enumerate()
        .map(|(i, t)| {
            format!(
                "{}\n",
                serde_json::json!({"id": format!("p{i}"), "code": t, "meta": {"k": i}})
            )
        })
        .collect();
    std::fs::write(dir.path().join("ids.jsonl"), with_ids).unwrap();
    ok(&gradus(
        &[
            "data",
            "corrupt",
            "--input",
            "ids.jsonl",
            "--field",
            "code",
            "--lang",
            "tiny",
            "--fraction",
            "0.5",
            "--out",
            "ids-c.jsonl",
        ],
        dir.path(),
    ));
    let out = jsonl(&dir.path().join("ids-c.jsonl"));
    assert_eq!(out.len(), 4);
    for (i, r) in out.iter().enumerate() {
        assert_eq!(r["id"], format!("p{i}"), "{r}");
        assert_eq!(r["meta"]["k"], i, "{r}");
        assert_eq!(r["row"], i, "{r}");
        assert!(r["code"].is_string() && r.get("text").is_none(), "{r}");
        if r["corruption"].is_null() {
            assert_eq!(r["code"], progs[i], "{r}");
        } else {
            assert_ne!(r["code"], progs[i], "{r}");
        }
    }
    let mut n = 0;
    for r in &rows {
        let c = &r["corruption"];
        if c.is_null() {
            continue;
        }
        n += 1;
        let class: Class = serde_json::from_value(c["class"].clone()).unwrap();
        assert!(c["line"].as_u64().unwrap() >= 1 && c["kind"].is_string());
        let parsed = lang::parse(r["text"].as_str().unwrap());
        assert_eq!(parsed.is_err(), class == Class::Syntax, "{r}");
    }
    assert!(n >= 28, "{n}");
    // Same seed, same output.
    ok(&gradus(
        &[
            "data", "corrupt", "--input", "p.jsonl", "--lang", "tiny", "--seed", "4", "--out",
            "c2.jsonl",
        ],
        dir.path(),
    ));
    assert_eq!(
        std::fs::read(dir.path().join("c.jsonl")).unwrap(),
        std::fs::read(dir.path().join("c2.jsonl")).unwrap()
    );
    let o = gradus(
        &[
            "data",
            "corrupt",
            "--input",
            "p.jsonl",
            "--lang",
            "tiny",
            "--kinds",
            "drop_colon",
            "--out",
            "x.jsonl",
        ],
        dir.path(),
    );
    fails_naming(&o, &["drop_colon"]);
}

#[test]
fn probe_reports_movement_and_precision_recall() {
    let dir = tempfile::tempdir().unwrap();
    write_texts(&dir.path().join("p.jsonl"), "text", &tiny_programs(60));
    let model = tiny_bert();
    let out = ok(&gradus(
        &[
            "data",
            "probe",
            "--input",
            "p.jsonl",
            "--lang",
            "tiny",
            "--model",
            model.to_str().unwrap(),
            "--k",
            "4",
            "--corrupt-fraction",
            "0.25",
            "--fraction",
            "0.25",
            "--out",
            "probe.json",
        ],
        dir.path(),
    ));
    assert!(out.contains("| scip |"), "{out}");
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("probe.json")).unwrap())
            .unwrap();
    assert_eq!(r["rows"], 60);
    assert_eq!(r["corrupted"], 15);
    for m in ["scip", "semdedup", "d4", "random"] {
        let p = &r["pruning"][m];
        assert_eq!(p["removed"], 15, "{m}");
        let (prec, rec) = (
            p["precision"].as_f64().unwrap(),
            p["recall"].as_f64().unwrap(),
        );
        // removed = corrupted = 15, so precision = recall = hits / 15.
        assert!((prec - rec).abs() < 1e-12 && (0.0..=1.0).contains(&prec));
    }
    assert_eq!(r["movement"]["all"]["rows"], 15);
}

/// `--decoder`: mean-pooled, L2-normalised hidden states of a gradus decoder.
#[test]
fn embed_with_a_decoder() {
    use gradus_model::{hf::save_decoder, Decoder, DecoderConfig};
    let dir = tempfile::tempdir().unwrap();
    let texts: Vec<String> = ["the cat sat", "the cat sat", "a dog ran far away", "x"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut tok =
        gradus_data::tokenizer::Tokenizer::train_bpe(texts.iter(), 280, &["<|endoftext|>"], 1)
            .unwrap();
    tok.set_bos(Some("<|endoftext|>")).unwrap();
    let cfg = DecoderConfig {
        vocab_size: tok.vocab_size(),
        hidden_size: 16,
        intermediate_size: 32,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        num_key_value_heads: 2,
        ..Default::default()
    };
    let m = dir.path().join("dec");
    save_decoder(
        &Decoder::new_random(&cfg, 0, &gradus_tensor::Device::Cpu).unwrap(),
        &m,
    )
    .unwrap();
    tok.save(&m).unwrap();
    write_texts(&dir.path().join("in.jsonl"), "text", &texts);
    ok(&gradus(
        &[
            "data",
            "embed",
            "--input",
            "in.jsonl",
            "--decoder",
            m.to_str().unwrap(),
            "--out",
            "e.safetensors",
        ],
        dir.path(),
    ));
    let e = read_embeddings(&dir.path().join("e.safetensors")).unwrap();
    assert_eq!((e.len(), e.dim), (4, 16));
    let row = |i: usize| &e.values[i * 16..(i + 1) * 16];
    for i in 0..4 {
        let n: f32 = row(i).iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-5, "row {i} has norm {n}");
    }
    assert_eq!(row(0), row(1), "the same text gives the same embedding");
    assert_ne!(row(0), row(2));
    // --model and --decoder together: refused by the parser, no panic.
    let o = gradus(
        &[
            "data",
            "embed",
            "--input",
            "in.jsonl",
            "--decoder",
            "dec",
            "--model",
            "dec",
            "--out",
            "x",
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(2));

    // The probe embeds with a decoder too (the code-aware probe of RESEARCH §3.1): the same
    // report, the decoder named as the model, unit-norm rows so cos(clean, corrupted) ≤ 1.
    write_texts(&dir.path().join("p.jsonl"), "text", &tiny_programs(24));
    ok(&gradus(
        &[
            "data",
            "probe",
            "--input",
            "p.jsonl",
            "--lang",
            "tiny",
            "--decoder",
            m.to_str().unwrap(),
            "--k",
            "3",
            "--corrupt-fraction",
            "0.25",
            "--fraction",
            "0.25",
            "--out",
            "probe.json",
        ],
        dir.path(),
    ));
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("probe.json")).unwrap())
            .unwrap();
    assert_eq!(
        (r["rows"].as_u64(), r["corrupted"].as_u64()),
        (Some(24), Some(6))
    );
    assert!(
        r["model"].as_str().unwrap().starts_with("decoder "),
        "{}",
        r["model"]
    );
    let cos = r["movement"]["all"]["mean_cosine_to_clean_version"]
        .as_f64()
        .unwrap();
    assert!(cos <= 1.0 + 1e-6 && cos > -1.0, "{cos}");
    assert_eq!(r["pruning"]["scip"]["removed"], 6);
}

/// Scale-out: `embed --row-shard i/n` per task, then `prune` over every shard's file (the merge
/// step: one clustering of the union) equals the single-process run, and `prune --row-shard` splits
/// the output.
#[test]
fn sharded_embed_and_prune_equal_the_single_run() {
    let dir = tempfile::tempdir().unwrap();
    let texts: Vec<String> = (0..30)
        .map(|i| format!("the {} cat number {} sat on the mat {}", i % 4, i, i % 7))
        .collect();
    write_texts(&dir.path().join("in.jsonl"), "text", &texts);
    let m = tiny_bert();
    let m = m.to_str().unwrap();
    ok(&gradus(
        &[
            "data",
            "embed",
            "--input",
            "in.jsonl",
            "--model",
            m,
            "--out",
            "all.safetensors",
        ],
        dir.path(),
    ));
    for s in ["0/3", "1/3", "2/3"] {
        let out = format!("e{}.safetensors", &s[..1]);
        ok(&gradus(
            &[
                "data",
                "embed",
                "--input",
                "in.jsonl",
                "--model",
                m,
                "--row-shard",
                s,
                "--out",
                &out,
            ],
            dir.path(),
        ));
    }
    let prune = |emb: &[&str], out: &str, extra: &[&str]| {
        let mut args = vec![
            "data",
            "prune",
            "--input",
            "in.jsonl",
            "--method",
            "scip",
            "--fraction",
            "0.3",
            "--k",
            "4",
            "--out",
            out,
            "--embeddings",
        ];
        args.extend_from_slice(emb);
        args.extend_from_slice(extra);
        ok(&gradus(&args, dir.path()));
    };
    prune(&["all.safetensors"], "single", &[]);
    prune(
        &["e0.safetensors", "e1.safetensors", "e2.safetensors"],
        "merged",
        &[],
    );
    let single = jsonl(&dir.path().join("single/kept.jsonl"));
    assert_eq!(single.len(), 21, "30 rows, 30% pruned");
    assert_eq!(single, jsonl(&dir.path().join("merged/kept.jsonl")));
    let mut parts = Vec::new();
    for s in ["0/2", "1/2"] {
        prune(
            &["e0.safetensors", "e1.safetensors", "e2.safetensors"],
            "split",
            &["--row-shard", s],
        );
        parts.extend(jsonl(
            &dir.path()
                .join(format!("split/kept.{}-of-2.jsonl", &s[..1])),
        ));
    }
    let key = |v: &Value| v["text"].as_str().unwrap().to_string();
    let mut a: Vec<String> = single.iter().map(key).collect();
    let mut b: Vec<String> = parts.iter().map(key).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
    // The same row in two shard files is an error naming it.
    let o = gradus(
        &[
            "data",
            "prune",
            "--embeddings",
            "e0.safetensors",
            "all.safetensors",
            "--method",
            "random",
            "--out",
            "x",
        ],
        dir.path(),
    );
    fails_naming(&o, &["row id 0"]);
}
