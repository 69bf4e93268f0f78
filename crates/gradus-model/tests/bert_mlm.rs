//! The trainable BERT masked LM: its forward equals the inference `Encoder`'s hidden states on the
//! same weights (saved in the HF `BertForMaskedLM` layout and read back by `Encoder::load`, which
//! is itself checked against transformers in `tests/encoder.rs`), attention probabilities are
//! distributions that ignore padding, the MLM head gives normalised log-probs, a save/load round
//! trip is exact, and every parameter receives a finite, non-zero gradient.

use gradus_model::bert_mlm::BertMlm;
use gradus_model::encoder::{Encoder, EncoderConfig};
use gradus_tensor::rng::Rng;
use gradus_tensor::{DType, Device};

fn cfg() -> EncoderConfig {
    EncoderConfig {
        vocab_size: 23,
        hidden_size: 16,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 24,
        hidden_act: "gelu".into(),
        max_position_embeddings: 12,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
        pad_token_id: Some(0),
        position_embedding_type: "absolute".into(),
        model_type: Some("bert".into()),
    }
}

/// A model whose every parameter (layer-norm weights and biases included) is random, so that a
/// mix-up of any two tensors changes the output.
fn random_model(seed: u64) -> BertMlm {
    let m = BertMlm::new_random(&cfg(), 0.02, seed, DType::F32).unwrap();
    let mut rng = Rng::new(seed + 100);
    for (name, v) in m.named_params() {
        let t = rng.randn(v.dims(), 0.4, &Device::Cpu).unwrap();
        let t = if name.ends_with("LayerNorm.weight") {
            (t + 1.0).unwrap()
        } else {
            t
        };
        v.set(&t).unwrap();
    }
    m
}

/// Largest difference the f32 twins may show: the inference encoder approximates erf to 1.5e-7
/// and sums in another order; after two post-LN layers of unit-scale activations the rows agree
/// to a few 1e-6 (measured 2e-6); 1e-4 leaves room without hiding a wrong tensor (those differ
/// by O(1)).
const TWIN_TOL: f32 = 1e-4;

#[test]
fn training_forward_equals_the_inference_encoder() {
    let m = random_model(1);
    let dir = tempfile::tempdir().unwrap();
    m.save(dir.path()).unwrap();
    let enc = Encoder::load(dir.path()).unwrap();
    let seqs: Vec<Vec<u32>> = vec![vec![1, 5, 7, 9, 22, 2], vec![1, 3, 4, 2]];
    let refs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
    let want = enc.hidden_states(&refs).unwrap();
    // The padded batch: the second sequence right-padded with id 0 to T = 6.
    let (b, t) = (2, 6);
    let mut ids = seqs[0].clone();
    ids.extend([1, 3, 4, 2, 0, 0]);
    let out = m.forward(&ids, b, t, &[6, 4]).unwrap();
    let h: Vec<Vec<Vec<f32>>> = out.hidden.to_vec3().unwrap();
    let d = 16;
    let mut row = 0;
    let mut worst = 0f32;
    for (bi, s) in seqs.iter().enumerate() {
        for p in 0..s.len() {
            for k in 0..d {
                worst = worst.max((h[bi][p][k] - want[row * d + k]).abs());
            }
            row += 1;
        }
    }
    eprintln!("max |Δ| = {worst}");
    assert!(worst < TWIN_TOL, "max |Δ| = {worst}");
    // And the rows are not trivially equal (non-constant hidden states).
    assert!(want.iter().any(|v| v.abs() > 0.1));

    // Attention: (B, H, T, T) per layer, rows sum to 1, padded keys of sequence 1 get weight 0.
    assert_eq!(out.attentions.len(), 2);
    for a in &out.attentions {
        assert_eq!(a.dims(), &[2, 4, 6, 6]);
        let flat: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
        for (r, row) in flat.chunks_exact(6).enumerate() {
            let s: f32 = row.iter().sum();
            assert!((s - 1.0).abs() < 1e-5);
            // Rows 0..24 belong to sequence 0 (4 heads × 6 queries), 24..48 to sequence 1.
            if r >= 24 {
                assert!(row[4] == 0.0 && row[5] == 0.0, "padded keys: {row:?}");
            }
        }
    }
}

#[test]
fn mlm_head_is_normalised_and_save_load_is_exact() {
    let m = random_model(2);
    let ids = [1u32, 5, 3, 9, 2, 0];
    let out = m.forward(&ids, 1, 6, &[5]).unwrap();
    let lp = m.mlm_logprobs(&out.hidden, &[1, 2]).unwrap();
    assert_eq!(lp.dims(), &[2, 23]);
    let rows: Vec<Vec<f32>> = lp.to_vec2().unwrap();
    for r in rows {
        let z: f32 = r.iter().map(|x| x.exp()).sum();
        assert!((z - 1.0).abs() < 1e-5, "{z}");
    }
    let dir = tempfile::tempdir().unwrap();
    m.save(dir.path()).unwrap();
    let cfg_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg_json["architectures"][0], "BertForMaskedLM");
    let mut m2 = BertMlm::new_random(&cfg(), 0.02, 9, DType::F32).unwrap();
    m2.load_weights(dir.path()).unwrap();
    let a: Vec<f32> = out.hidden.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = m2
        .forward(&ids, 1, 6, &[5])
        .unwrap()
        .hidden
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(a, b);
    // A checkpoint of another shape is refused, naming the tensor.
    let mut c = cfg();
    c.hidden_size = 8;
    c.num_attention_heads = 2;
    let mut small = BertMlm::new_random(&c, 0.02, 0, DType::F32).unwrap();
    let e = small.load_weights(dir.path()).unwrap_err().to_string();
    assert!(e.contains("embeddings.word_embeddings.weight"), "{e}");
}

#[test]
fn every_parameter_gets_a_finite_nonzero_gradient() {
    let m = random_model(3);
    let ids = [1u32, 5, 3, 9, 2, 1, 7, 3, 2, 0];
    let out = m.forward(&ids, 2, 5, &[5, 4]).unwrap();
    let loss = m.mlm_loss(&out.hidden, &[2, 7], &[6, 8]).unwrap();
    let grads = loss.backward().unwrap();
    for (name, v) in m.named_params() {
        let g = grads
            .get(v.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let g: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
        assert!(g.iter().all(|x| x.is_finite()), "{name}");
        assert!(g.iter().any(|x| *x != 0.0), "{name} has a zero gradient");
    }
    // Bad input is an error, not a panic.
    assert!(m.forward(&[1, 99], 1, 2, &[2]).is_err());
    assert!(m.forward(&[1, 2], 1, 2, &[3]).is_err());
}

/// f32 forward vs transformers' f64 reference: both sides' rounding plus the erf in candle's
/// GELU; the log-probs are O(1–10) so 1e-4 absolute is ~1e-5 relative (a misread tensor moves
/// them by O(1)). Measured: 3.3e-6.
const HF_TOL: f32 = 1e-4;

#[test]
fn matches_transformers_bert_for_masked_lm() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_bert_mlm");
    let m = BertMlm::load(&dir, DType::F32).unwrap();
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let ids: Vec<u32> = r["ids"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
        })
        .collect();
    let lens: Vec<usize> = r["lens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    let out = m.forward(&ids, 2, 6, &lens).unwrap();
    let rows: Vec<u32> = (0..2u32)
        .flat_map(|b| (0..lens[b as usize] as u32).map(move |t| b * 6 + t))
        .collect();
    let lp: Vec<Vec<f32>> = m
        .mlm_logprobs(&out.hidden, &rows)
        .unwrap()
        .to_vec2()
        .unwrap();
    let want: Vec<Vec<f32>> = r["logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|seq| seq.as_array().unwrap().iter())
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect();
    assert_eq!(lp.len(), want.len());
    let mut worst = 0f32;
    for (a, b) in lp.iter().zip(&want) {
        for (x, y) in a.iter().zip(b) {
            worst = worst.max((x - y).abs());
        }
    }
    eprintln!("max |Δ log p| = {worst}");
    assert!(worst < HF_TOL, "max |Δ log p| = {worst}");
    // Layer-0 attention probabilities, (B, H, T, T), padded keys included (weight 0 there).
    let a: Vec<f32> = out.attentions[0].flatten_all().unwrap().to_vec1().unwrap();
    let want: Vec<f32> = r["attn_layer0"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b.as_array().unwrap().iter())
        .flat_map(|h| h.as_array().unwrap().iter())
        .flat_map(|t| t.as_array().unwrap().iter())
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(a.len(), want.len());
    let worst = a
        .iter()
        .zip(&want)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-5, "attention max |Δ| = {worst}");
}
