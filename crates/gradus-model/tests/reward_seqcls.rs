//! Reward models in transformers' sequence-classification layout
//! (`LlamaForSequenceClassification` / `Qwen2ForSequenceClassification`, `score.weight`): the
//! files gradus writes are the ones `tests/fixtures/reward_seqcls/gen.py` loaded with
//! `AutoModelForSequenceClassification` (no missing weights), and gradus' scores equal
//! transformers' logits on the same inputs, one row at a time and as a right-padded batch.
//!
//! Regenerate: `cargo test -p gradus-model --test reward_seqcls -- --ignored` (writes the gradus
//! files), then `python tests/fixtures/reward_seqcls/gen.py` with torch + transformers.

use std::path::{Path, PathBuf};

use gradus_model::decoder::{Decoder, ForwardInput};
use gradus_model::reward::RewardModel;
use gradus_model::{DecoderConfig, Family};
use gradus_tensor::Device;

const CASES: [&str; 2] = ["llama_untied", "qwen2_tied"];

fn case_dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/reward_seqcls")
        .join(case)
}

/// The case's reward model, the same every time (seeded).
fn make(case: &str) -> RewardModel {
    let qwen = case.starts_with("qwen2");
    let cfg = DecoderConfig {
        family: if qwen { Family::Qwen2 } else { Family::Llama },
        vocab_size: 64,
        hidden_size: 16,
        intermediate_size: 32,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        tie_word_embeddings: qwen,
        attention_bias: qwen,
        max_position_embeddings: 64,
        eos_token_id: Some(1),
        ..DecoderConfig::default()
    };
    let dec = Decoder::new_random(&cfg, 11, &Device::Cpu).unwrap();
    RewardModel::new(dec, vec!["helpful".into(), "harmless".into()], 12).unwrap()
}

/// Writes each case's reward model into the fixture (for gen.py to check with transformers).
#[test]
#[ignore]
fn record_reward_models_for_transformers() {
    for case in CASES {
        let d = case_dir(case);
        std::fs::create_dir_all(&d).unwrap();
        make(case).save(&d).unwrap();
    }
}

/// Today's save writes exactly the files transformers loaded: configs key for key, weights and
/// label file byte for byte.
#[test]
fn reward_model_files_are_what_transformers_loaded() {
    for case in CASES {
        let out = tempfile::tempdir().unwrap();
        make(case).save(out.path()).unwrap();
        let want = case_dir(case);
        let json = |p: &Path| -> serde_json::Value {
            serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
        };
        assert_eq!(
            json(&out.path().join("config.json")),
            json(&want.join("config.json")),
            "{case}: config.json differs from what transformers loaded (re-record, rerun gen.py)"
        );
        for f in ["model.safetensors", "reward_head.json"] {
            assert!(
                std::fs::read(out.path().join(f)).unwrap() == std::fs::read(want.join(f)).unwrap(),
                "{case}: {f} differs from what transformers loaded (re-record, rerun gen.py)"
            );
        }
        let e = json(&want.join("expected.json"));
        assert_eq!(e["missing_keys"], serde_json::json!([]), "{case}: {e}");
        let arch = if case.starts_with("qwen2") {
            "Qwen2ForSequenceClassification"
        } else {
            "LlamaForSequenceClassification"
        };
        assert_eq!(e["class"], arch, "{case}");
    }
}

/// gradus' scores of the recorded inputs equal transformers' logits (1e-5), for each row alone and
/// for the right-padded batch transformers scored with its pad_token_id.
#[test]
fn scores_match_transformers_logits() {
    for case in CASES {
        let d = case_dir(case);
        let rm = RewardModel::load(&d).unwrap();
        assert_eq!(rm.labels, vec!["helpful", "harmless"]);
        let e: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("expected.json")).unwrap())
                .unwrap();
        let inputs: Vec<Vec<u32>> = serde_json::from_value(e["inputs"].clone()).unwrap();
        for (key, rows) in [
            ("logits", &e["logits"]),
            ("batch_logits", &e["batch_logits"]),
        ] {
            let want: Vec<Vec<f32>> = serde_json::from_value(rows.clone()).unwrap();
            assert_eq!(want.len(), inputs.len(), "{case} {key}");
            for (ids, w) in inputs.iter().zip(&want) {
                let inp = ForwardInput {
                    input_ids: ids,
                    batch: 1,
                    seq_len: ids.len(),
                    position_ids: None,
                    segment_ids: None,
                };
                let got = rm
                    .scores(&inp, &[ids.len() - 1])
                    .unwrap()
                    .to_vec2::<f32>()
                    .unwrap();
                for (g, w) in got[0].iter().zip(w) {
                    assert!((g - w).abs() < 1e-5, "{case} {key}: {:?} vs {w:?}", got[0]);
                }
            }
        }
    }
}
