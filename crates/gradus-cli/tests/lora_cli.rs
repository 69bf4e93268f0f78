//! `gradus lora merge` end to end on the PEFT fixture of gradus-model
//! (`crates/gradus-model/tests/fixtures/peft_lora`, written by its gen.py with PEFT from PyPI):
//! the merged checkpoint holds PEFT's merged weights and gives PEFT's logits; bad input exits with
//! status 1, no panic, and names the thing at fault. And `gradus train sft` with the shipped
//! `configs/sft/lora.toml` writes adapter checkpoints that `gradus generate` accepts.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gradus_model::hf::load_decoder;
use gradus_model::ForwardInput;
use gradus_tensor::io::read_safetensors;
use gradus_tensor::tol::{max_abs_diff, HF_LOGITS_PARITY};
use gradus_tensor::{DType, Device};

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../gradus-model/tests/fixtures/peft_lora")
        .join(case)
}

fn gradus(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gradus"))
        .args(args)
        .env_remove("GRADUS_LOG")
        .output()
        .expect("running gradus")
}

fn fails_naming(o: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(1),
        "expected exit status 1; stderr:\n{err}"
    );
    assert!(!err.contains("panicked"), "panic on user input:\n{err}");
    assert!(err.starts_with("error: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "stderr should name {n:?}:\n{err}");
    }
}

/// The fixture's base checkpoint copied into `dir`, plus a tokenizer file to be carried over.
fn base_copy(case: &str, dir: &Path) -> PathBuf {
    let b = dir.join("base");
    std::fs::create_dir_all(&b).unwrap();
    for e in std::fs::read_dir(fixture(case).join("base")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), b.join(e.file_name())).unwrap();
    }
    std::fs::write(
        b.join("tokenizer_config.json"),
        "{\"eos_token\": \"<|endoftext|>\"}\n",
    )
    .unwrap();
    b
}

#[test]
fn merge_writes_peft_merged_weights_and_logits() {
    for (case, n_layers) in [("llama_qv", 4), ("qwen2_mlp_rslora", 10)] {
        let t = tempfile::tempdir().unwrap();
        let base = base_copy(case, t.path());
        let out = t.path().join("merged");
        let adapter = fixture(case).join("adapter");
        let o = gradus(&[
            "lora",
            "merge",
            "--base",
            base.to_str().unwrap(),
            "--adapter",
            adapter.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        let so = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{case}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            so.contains(&format!("merged {n_layers} LoRA layers")),
            "{so}"
        );
        for f in ["tokenizer_config.json", "generation_config.json"] {
            assert_eq!(
                std::fs::read(base.join(f)).unwrap(),
                std::fs::read(out.join(f)).unwrap(),
                "{case}: {f}"
            );
        }
        assert!(!out.join("adapter_config.json").exists());

        let m = load_decoder(&out, &Device::Cpu).unwrap();
        let params: std::collections::HashMap<_, _> = m.named_params().into_iter().collect();
        for w in read_safetensors(&fixture(case).join("merged.safetensors"), &Device::Cpu).unwrap()
        {
            let got = params[&w.name]
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let want = w.tensor.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let d = max_abs_diff(&got, &want);
            assert!(
                d <= 1e-5,
                "{case}: merged {} differs from PEFT's merge_and_unload() by {d}",
                w.name
            );
        }
        let exp = gradus_tensor::candle::safetensors::load(
            fixture(case).join("expected.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        let ids_t = exp["input_ids"].to_dtype(DType::U32).unwrap();
        let (b, tl) = ids_t.dims2().unwrap();
        let ids = ids_t.flatten_all().unwrap().to_vec1::<u32>().unwrap();
        let got = m
            .forward(&ForwardInput::new(&ids, b, tl), None)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let want = exp["logits"]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let d = max_abs_diff(&got, &want);
        assert!(
            d <= HF_LOGITS_PARITY,
            "{case}: merged logits differ from PEFT by {d}"
        );
    }
}

#[test]
fn merge_rejects_bad_input_naming_it() {
    let t = tempfile::tempdir().unwrap();
    let base = base_copy("llama_qv", t.path());
    let out = t.path().join("merged");
    let run = |adapter: &Path, out: &Path| {
        gradus(&[
            "lora",
            "merge",
            "--base",
            base.to_str().unwrap(),
            "--adapter",
            adapter.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
    };
    // No such adapter directory.
    let missing = t.path().join("nope");
    fails_naming(
        &run(&missing, &out),
        &["nope", "no such directory", "PEFT adapter"],
    );
    // A directory without the weights file.
    let empty = t.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::copy(
        fixture("llama_qv").join("adapter/adapter_config.json"),
        empty.join("adapter_config.json"),
    )
    .unwrap();
    fails_naming(&run(&empty, &out), &["empty", "adapter_model.safetensors"]);
    // An adapter made for another model: names the tensor and both shapes.
    fails_naming(
        &run(&fixture("qwen2_mlp_rslora").join("adapter"), &out),
        &[
            "base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight",
            "expected shape [2, 32], found [2, 24]",
        ],
    );
    // The base checkpoint itself as the adapter dir.
    fails_naming(&run(&base, &out), &["adapter_config.json"]);
    assert!(!out.exists(), "a failed merge wrote output");
    // --out onto the base.
    fails_naming(
        &run(&fixture("llama_qv").join("adapter"), &base),
        &["--out", "base checkpoint directory"],
    );
}

/// transformers loads the merged checkpoint and gives PEFT's logits (base + adapter). Needs
/// python3 with torch and transformers; run with
/// `cargo test -p gradus-cli --test lora_cli -- --ignored`.
#[test]
#[ignore]
fn transformers_loads_the_merged_checkpoint() {
    for case in ["llama_qv", "qwen2_mlp_rslora"] {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("merged");
        let (base, adapter) = (fixture(case).join("base"), fixture(case).join("adapter"));
        let o = gradus(&[
            "lora",
            "merge",
            "--base",
            base.to_str().unwrap(),
            "--adapter",
            adapter.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(
            o.status.success(),
            "{case}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let status = Command::new("python3")
            .arg(fixture("../hf_parity/check_saved.py"))
            .arg(&out)
            .arg(fixture(case).join("expected.safetensors"))
            .status()
            .unwrap();
        assert!(
            status.success(),
            "{case}: check_saved.py failed on the merged checkpoint"
        );
    }
}

#[test]
fn sft_with_the_shipped_lora_config_writes_an_adapter_that_generate_loads() {
    // A tiny random base with a byte-level tokenizer, then 2 SFT steps with configs/sft/lora.toml.
    let d = tempfile::tempdir().unwrap();
    let base = d.path().join("base");
    let texts: Vec<String> = (0..200)
        .map(|i| format!("Question: Compute {i}+{}.\nAnswer: {}", i % 7, i + i % 7))
        .collect();
    let tok = gradus_train::prep::train_tokenizer(&texts, 300).unwrap();
    let cfg = gradus_model::DecoderConfig {
        vocab_size: tok.vocab_size(),
        hidden_size: 32,
        intermediate_size: 64,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        max_position_embeddings: 256,
        bos_token_id: tok.bos_id(),
        eos_token_id: tok.eos_id(),
        ..Default::default()
    };
    let m = gradus_model::Decoder::new_random(&cfg, 1, &Device::Cpu).unwrap();
    gradus_model::hf::save_decoder(&m, &base).unwrap();
    tok.save(&base).unwrap();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/sft/lora.toml");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_gradus"))
            .args(args)
            .current_dir(d.path())
            .env_remove("GRADUS_LOG")
            .output()
            .expect("running gradus")
    };
    let ok = |o: &Output| {
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(
            o.status.success() && !err.contains("panicked"),
            "stderr:\n{err}"
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    ok(&run(&[
        "train",
        "sft",
        "--config",
        config.to_str().unwrap(),
        "--set",
        "model.init_from=\"base\"",
        "--set",
        "train.steps=2",
        "--set",
        "schedule.warmup_steps=0",
        "--set",
        "train.batch_size=4",
        "--set",
        "data.synthetic_examples=40",
        "--set",
        "train.progress=false",
    ]));
    let ck = d.path().join("runs/sft-lora/checkpoints/step-2");
    assert!(
        ck.join("adapter_config.json").is_file(),
        "an adapter directory"
    );
    assert!(!ck.join("model.safetensors").exists());
    let out = ok(&run(&[
        "generate",
        "--model",
        "runs/sft-lora/checkpoints/step-2",
        "--prompt",
        "Question: Compute 2+3.\nAnswer: ",
        "--max-new-tokens",
        "4",
    ]));
    assert!(!out.trim().is_empty(), "generate printed nothing");
}
