//! The `gradus` binary end to end: bad input exits with status 1, prints no panic, and names the
//! thing at fault (DESIGN.md §4); `score` and `generate` work on a tiny checkpoint built here.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;

use gradus_model::{hf::save_decoder, Decoder, DecoderConfig};
use gradus_tensor::Device;
use serde_json::Value;

fn gradus(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gradus"))
        .args(args)
        .current_dir(cwd)
        .env_remove("GRADUS_LOG")
        .output()
        .expect("running the gradus binary")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts exit status 1, no panic, and that stderr contains every one of `needles`; returns stderr.
fn fails_naming(o: &Output, needles: &[&str]) -> String {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "expected exit status 1; stderr:\n{err}\nstdout:\n{}",
        stdout(o)
    );
    assert!(!err.contains("panicked"), "panic on user input:\n{err}");
    assert!(
        err.starts_with("error: "),
        "error output should start with `error: `:\n{err}"
    );
    for n in needles {
        assert!(err.contains(n), "stderr should name {n:?}:\n{err}");
    }
    err
}

fn succeeds(o: &Output) -> String {
    assert!(
        o.status.success(),
        "status {:?}; stderr:\n{}",
        o.status,
        stderr(o)
    );
    assert!(!stderr(o).contains("panicked"), "{}", stderr(o));
    stdout(o)
}

const TEXTS: [&str; 6] = [
    "the cat sat on the mat",
    "a dog and a cat",
    "hello world, hello gradus",
    "abba baab bb aa ab ba",
    "the quick brown fox jumps over the lazy dog",
    "one two three four five six seven",
];

fn tiny_model_config(vocab_size: usize) -> DecoderConfig {
    DecoderConfig {
        vocab_size,
        hidden_size: 16,
        intermediate_size: 32,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        num_key_value_heads: 1,
        max_position_embeddings: 64,
        ..Default::default()
    }
}

/// Writes a tiny checkpoint (config.json, model.safetensors, tokenizer.json) with the given model
/// vocab size (None: the tokenizer's), returning the tokenizer's vocab size.
fn write_checkpoint(dir: &Path, model_vocab: Option<usize>) -> usize {
    let texts: Vec<String> = TEXTS.iter().map(|s| s.to_string()).collect();
    let tok = gradus_train::prep::train_tokenizer(&texts, 280).expect("training the tokenizer");
    let v = tok.vocab_size();
    let model = Decoder::new_random(
        &tiny_model_config(model_vocab.unwrap_or(v)),
        0,
        &Device::Cpu,
    )
    .unwrap();
    save_decoder(&model, dir).unwrap();
    tok.save(dir).unwrap();
    v
}

/// One valid checkpoint shared by the read-only tests.
fn checkpoint() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        write_checkpoint(d.path(), None);
        d
    })
    .path()
}

fn arg(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

fn json(out: &str) -> Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

// ---------------------------------------------------------------- bad input

#[test]
fn malformed_jsonl_names_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("rows.jsonl");
    std::fs::write(
        &data,
        "{\"prompt\": \"a\", \"completion\": \"b\"}\n\n{\"prompt\": \"c\"}\n",
    )
    .unwrap();
    let o = gradus(
        &[
            "train",
            "sft",
            "--set",
            &format!("data.source={}", arg(&data)),
            "--set",
            "run.dir=runs",
        ],
        dir.path(),
    );
    // Line 3: the blank line 2 still counts.
    fails_naming(&o, &["rows.jsonl:3", "\"completion\""]);

    std::fs::write(&data, "{\"text\": \"ok\"}\n{\"text\": \"unterminated\n").unwrap();
    let o = gradus(
        &[
            "train",
            "sft",
            "--set",
            &format!("data.source={}", arg(&data)),
        ],
        dir.path(),
    );
    fails_naming(&o, &["rows.jsonl:2", "invalid JSON"]);
}

#[test]
fn unknown_config_key_is_named_with_a_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("recipe.toml");
    std::fs::write(&cfg, "[train]\nsteps = 3\nbatch_sise = 2\n").unwrap();
    let o = gradus(&["train", "sft", "--config", arg(&cfg)], dir.path());
    fails_naming(
        &o,
        &[
            "recipe.toml",
            "line 3",
            "`batch_sise`",
            "did you mean `batch_size`?",
        ],
    );

    let o = gradus(&["train", "pretrain", "--set", "train.stepz=3"], dir.path());
    fails_naming(&o, &["train.stepz=3", "`stepz`", "did you mean `steps`?"]);
}

#[test]
fn truncated_safetensors_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(checkpoint().join(f), dir.path().join(f)).unwrap();
    }
    let st = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() / 2]).unwrap();
    let o = gradus(
        &["score", "--model", arg(dir.path()), "--ids", "1,2,3"],
        dir.path(),
    );
    fails_naming(&o, &[arg(&st), "truncated"]);

    // Cut inside the 8-byte header length too.
    std::fs::write(&st, &bytes[..5]).unwrap();
    let o = gradus(
        &["score", "--model", arg(dir.path()), "--ids", "1,2,3"],
        dir.path(),
    );
    fails_naming(&o, &[arg(&st)]);
}

#[test]
fn tokenizer_beyond_model_vocab_names_both_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let model_vocab = 260;
    let tok_vocab = write_checkpoint(dir.path(), Some(model_vocab));
    assert!(
        tok_vocab > model_vocab,
        "the test needs a tokenizer larger than {model_vocab}, got {tok_vocab}"
    );
    let o = gradus(
        &["score", "--model", arg(dir.path()), "--ids", "1,2,3"],
        dir.path(),
    );
    fails_naming(
        &o,
        &[
            "vocab_size",
            &tok_vocab.to_string(),
            &model_vocab.to_string(),
        ],
    );
    let o = gradus(
        &["generate", "--model", arg(dir.path()), "--prompt", "a"],
        dir.path(),
    );
    fails_naming(&o, &[&tok_vocab.to_string(), &model_vocab.to_string()]);
}

#[test]
fn missing_model_dir_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-checkpoint");
    let o = gradus(
        &["score", "--model", arg(&missing), "--ids", "1,2,3"],
        dir.path(),
    );
    fails_naming(&o, &["no-such-checkpoint", "no such directory"]);
    let o = gradus(
        &["generate", "--model", arg(&missing), "--prompt", "a"],
        dir.path(),
    );
    fails_naming(&o, &["no-such-checkpoint", "no such directory"]);
}

#[test]
fn score_rejects_ids_outside_the_vocab_and_too_few_tokens() {
    let ck = checkpoint();
    let o = gradus(&["score", "--model", arg(ck), "--ids", "1,99999"], ck);
    fails_naming(&o, &["99999"]);
    let o = gradus(&["score", "--model", arg(ck), "--ids", "1"], ck);
    fails_naming(&o, &["at least 2 tokens"]);
}

// ---------------------------------------------------------------- score

#[test]
fn score_ids_json_is_consistent() {
    let ck = checkpoint();
    let out = succeeds(&gradus(
        &["score", "--model", arg(ck), "--ids", "1,2,3", "--json"],
        ck,
    ));
    let v = json(&out);
    let toks = v["tokens"].as_array().expect("tokens list");
    assert_eq!(toks.len(), 2, "{v}");
    assert_eq!(v["first_token"], 1);
    assert_eq!(toks[0]["id"], 2);
    assert_eq!(toks[1]["id"], 3);
    let lps: Vec<f64> = toks
        .iter()
        .map(|t| t["logprob"].as_f64().expect("logprob number"))
        .collect();
    for lp in &lps {
        assert!(
            lp.is_finite() && *lp <= 0.0,
            "log-prob {lp} should be finite and ≤ 0: {v}"
        );
    }
    let total = v["total_logprob"].as_f64().unwrap();
    let loss = v["loss"].as_f64().unwrap();
    let ppl = v["perplexity"].as_f64().unwrap();
    assert!(
        total.is_finite() && loss.is_finite() && ppl.is_finite(),
        "{v}"
    );
    // logprobs are f32 in the JSON; the total is summed in f64 from those same f32 values.
    assert!(
        (lps.iter().sum::<f64>() - total).abs() < 1e-5,
        "sum of per-token log-probs ≠ total: {v}"
    );
    assert!(
        (loss - (-total / 2.0)).abs() < 1e-9,
        "loss should be -total/2: {v}"
    );
    assert!(
        (ppl - loss.exp()).abs() < 1e-6 * ppl,
        "perplexity should be exp(loss): {v}"
    );
    // A random tiny model is near uniform over V tokens: loss ≈ ln V, far from 0 and far from huge.
    assert!(loss > 1.0 && loss < 20.0, "{v}");

    // Scoring is deterministic.
    let again = succeeds(&gradus(
        &["score", "--model", arg(ck), "--ids", "1,2,3", "--json"],
        ck,
    ));
    assert_eq!(out, again);
}

#[test]
fn score_text_works_with_and_without_json() {
    let ck = checkpoint();
    let v = json(&succeeds(&gradus(
        &[
            "score",
            "--model",
            arg(ck),
            "--text",
            "the cat sat",
            "--json",
        ],
        ck,
    )));
    let n = v["tokens"].as_array().unwrap().len();
    assert!(n >= 1, "{v}");
    let total = v["total_logprob"].as_f64().unwrap();
    assert!(
        (v["loss"].as_f64().unwrap() + total / n as f64).abs() < 1e-9,
        "{v}"
    );

    let v2 = json(&succeeds(&gradus(
        &[
            "score",
            "--model",
            arg(ck),
            "--text",
            "the cat sat",
            "--bos",
            "--json",
        ],
        ck,
    )));
    assert_eq!(
        v2["tokens"].as_array().unwrap().len(),
        n + 1,
        "--bos adds one scored token: {v2}"
    );

    let table = succeeds(&gradus(
        &["score", "--model", arg(ck), "--text", "the cat sat"],
        ck,
    ));
    assert!(
        table.contains("total log-prob") && table.contains("perplexity"),
        "{table}"
    );
}

// ---------------------------------------------------------------- generate

fn generate(ck: &Path, extra: &[&str]) -> Value {
    let mut args = vec![
        "generate",
        "--model",
        arg(ck),
        "--prompt",
        "a",
        "--prompt",
        "bb",
        "--max-new-tokens",
        "5",
        "--json",
    ];
    args.extend_from_slice(extra);
    json(&succeeds(&gradus(&args, ck)))
}

#[test]
fn generate_greedy_batch_is_deterministic() {
    let ck = checkpoint();
    let a = generate(ck, &[]);
    let gens = a["generations"].as_array().expect("generations list");
    assert_eq!(gens.len(), 2, "{a}");
    assert_eq!(gens[0]["prompt"], "a");
    assert_eq!(gens[1]["prompt"], "bb");
    for g in gens {
        assert!(g["completion"].is_string(), "{a}");
        assert!(g["finish"].is_string() || g["finish"].is_object(), "{a}");
    }
    let n = a["new_tokens"].as_u64().unwrap();
    assert!(n <= 10, "at most 5 new tokens per prompt: {a}");
    let b = generate(ck, &[]);
    assert_eq!(
        a["generations"], b["generations"],
        "greedy decoding must be deterministic"
    );
}

#[test]
fn generate_sampling_with_different_seeds_runs() {
    let ck = checkpoint();
    let s1 = generate(ck, &["--temperature", "1", "--seed", "1"]);
    let s2 = generate(ck, &["--temperature", "1", "--seed", "2"]);
    assert_eq!(s1["generations"].as_array().unwrap().len(), 2);
    assert_eq!(s2["generations"].as_array().unwrap().len(), 2);
    // Same seed, same samples.
    let s1b = generate(ck, &["--temperature", "1", "--seed", "1"]);
    assert_eq!(s1["generations"], s1b["generations"]);
}

// ---------------------------------------------------------------- progress in logs

/// With stdout a pipe (as in a Slurm log), training prints plain progress lines: with
/// `progress_every_s = 0` one per step, each with step, loss, tokens/s and ETA; also validation
/// loss and a TensorBoard event file land in the run directory.
#[test]
fn non_tty_training_prints_progress_lines() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("docs.jsonl");
    let rows: String = (0..40)
        .map(|i| {
            format!(
                "{{\"text\": \"{} the cat sat on the mat {i}\"}}\n",
                TEXTS[i % 6]
            )
        })
        .collect();
    std::fs::write(&data, rows).unwrap();
    let sets = [
        format!("data.source={}", arg(&data)),
        "run.dir=runs".into(),
        "run.name=logs".into(),
        "train.steps=3".into(),
        "train.batch_size=2".into(),
        "train.progress_every_s=0".into(),
        "train.eval_every=2".into(),
        "data.seq_len=16".into(),
        "tokenizer.train_vocab_size=300".into(),
        "model.config.hidden_size=16".into(),
        "model.config.intermediate_size=32".into(),
        "model.config.num_hidden_layers=1".into(),
        "model.config.num_attention_heads=2".into(),
        "model.config.num_key_value_heads=1".into(),
    ];
    let mut args = vec!["train", "pretrain"];
    for s in &sets {
        args.extend(["--set", s.as_str()]);
    }
    let out = succeeds(&gradus(&args, dir.path()));
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("step ")).collect();
    assert_eq!(lines.len(), 3, "one line per step expected:\n{out}");
    for (i, l) in lines.iter().enumerate() {
        assert!(l.starts_with(&format!("step {}/3 ", i + 1)), "{l}");
        for part in ["loss ", "tokens/s ", "elapsed ", "ETA "] {
            assert!(l.contains(part), "{l} lacks {part:?}");
        }
    }
    assert!(lines[2].contains("ETA 0:00"), "{}", lines[2]);
    let run = dir.path().join("runs/logs");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let val_steps: Vec<u64> = metrics
        .lines()
        .map(json)
        .filter(|r| r.get("val/loss").is_some_and(Value::is_number))
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(
        val_steps,
        vec![2, 3],
        "val/loss every 2 steps and at the last:\n{metrics}"
    );
    let events: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("events.out.tfevents.")
        })
        .collect();
    assert_eq!(events.len(), 1, "one TensorBoard event file expected");
}

// ---------------------------------------------------------------- chat and adapters

/// `generate --chat` renders each prompt as a user turn with the model's chat template (the
/// checkpoint's tokenizer has none, so ChatML), generation prompt added; `--messages` takes whole
/// conversations. The expected text is ChatML written out by hand.
#[test]
fn generate_chat_renders_the_chat_template() {
    let ck = checkpoint();
    let v = json(&succeeds(&gradus(
        &[
            "generate",
            "--model",
            arg(ck),
            "--chat",
            "--system",
            "be brief",
            "--prompt",
            "hi",
            "--max-new-tokens",
            "3",
            "--json",
        ],
        ck,
    )));
    let g = &v["generations"][0];
    assert_eq!(g["prompt"], "hi");
    assert_eq!(
        g["rendered_prompt"],
        "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("convs.json");
    std::fs::write(
        &m,
        r#"[[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}], [{"role": "user", "content": "d"}]]"#,
    )
    .unwrap();
    let v = json(&succeeds(&gradus(
        &[
            "generate",
            "--model",
            arg(ck),
            "--messages",
            arg(&m),
            "--max-new-tokens",
            "2",
            "--json",
        ],
        ck,
    )));
    let gens = v["generations"].as_array().unwrap();
    assert_eq!(gens.len(), 2, "{v}");
    assert_eq!(gens[0]["prompt"], "c");
    assert_eq!(
        gens[0]["rendered_prompt"],
        "<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\nb<|im_end|>\n<|im_start|>user\nc<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(
        gens[1]["rendered_prompt"],
        "<|im_start|>user\nd<|im_end|>\n<|im_start|>assistant\n"
    );
    // A file that is not a list of messages is named.
    std::fs::write(&m, r#"{"role": "user"}"#).unwrap();
    let o = gradus(&["generate", "--model", arg(ck), "--messages", arg(&m)], ck);
    fails_naming(&o, &[arg(&m), "messages"]);
}

/// A PEFT adapter directory works wherever a model does: `score` and `generate` load the base
/// its `base_model_name_or_path` names, merge the adapter, and use the base's tokenizer when
/// the adapter has none — the same numbers as the checkpoint `lora merge` writes, and not the
/// base's. A hub name as base is an error that says what to do.
#[test]
fn adapter_directories_load_as_their_merged_model() {
    use gradus_model::lora::{save_adapter_with_base, LoraConfig};
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    write_checkpoint(&base, None);
    let mut m = gradus_model::hf::load_decoder(&base, &Device::Cpu).unwrap();
    let cfg = LoraConfig::default();
    let mut rng = gradus_tensor::rng::Rng::derive(5, "test-lora");
    m.apply_lora(&cfg, &mut rng).unwrap();
    // B starts at zero (the adapter would change nothing): give every B random values.
    for (name, var) in m.lora_params() {
        if name.contains("lora_B") {
            let shape = var.as_tensor().dims().to_vec();
            var.set(&rng.randn(&shape, 0.05, &Device::Cpu).unwrap())
                .unwrap();
        }
    }
    let adapter = dir.path().join("adapter");
    save_adapter_with_base(&adapter, &m, &cfg, Some(arg(&base))).unwrap();
    let merged = dir.path().join("merged");
    succeeds(&gradus(
        &[
            "lora",
            "merge",
            "--base",
            arg(&base),
            "--adapter",
            arg(&adapter),
            "--out",
            arg(&merged),
        ],
        dir.path(),
    ));
    let score = |model: &Path| {
        json(&succeeds(&gradus(
            &[
                "score",
                "--model",
                arg(model),
                "--text",
                "the cat sat on the mat",
                "--json",
            ],
            dir.path(),
        )))["total_logprob"]
            .as_f64()
            .unwrap()
    };
    let (a, mg, b) = (score(&adapter), score(&merged), score(&base));
    assert!((a - mg).abs() < 1e-4, "adapter {a} vs merged {mg}");
    assert!(
        (a - b).abs() > 1e-3,
        "the adapter changes the model: {a} vs base {b}"
    );
    let gen = |model: &Path| {
        json(&succeeds(&gradus(
            &[
                "generate",
                "--model",
                arg(model),
                "--prompt",
                "the",
                "--max-new-tokens",
                "6",
                "--json",
            ],
            dir.path(),
        )))["generations"]
            .clone()
    };
    assert_eq!(gen(&adapter), gen(&merged));

    // A base that is a hub name (or gone) is named, with the fix.
    let cfg_path = adapter.join("adapter_config.json");
    let text = std::fs::read_to_string(&cfg_path).unwrap();
    std::fs::write(&cfg_path, text.replace(arg(&base), "some-org/some-model")).unwrap();
    let o = gradus(
        &["score", "--model", arg(&adapter), "--text", "a"],
        dir.path(),
    );
    fails_naming(
        &o,
        &[
            "base_model_name_or_path",
            "some-org/some-model",
            "local path",
        ],
    );
}
