//! Decoder invariants that need no reference implementation: gradients reach every parameter,
//! cached decoding equals a full forward pass, padding and packing are invisible, and checkpoints
//! round-trip bit-exactly.

use gradus_model::decoder::{Decoder, ForwardInput, KvCache};
use gradus_model::hf::{load_decoder, save_decoder};
use gradus_model::{DecoderConfig, Family, WeightDtype};
use gradus_tensor::rng::Rng;
use gradus_tensor::{Device, Tensor};

fn tiny(family: Family, tied: bool, kv: usize) -> DecoderConfig {
    DecoderConfig {
        family,
        vocab_size: 61,
        hidden_size: 32,
        intermediate_size: 48,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: kv,
        tie_word_embeddings: tied,
        attention_bias: family == Family::Qwen2,
        initializer_range: 0.2,
        ..Default::default()
    }
}

/// A random model whose norms and biases are perturbed too, so no parameter is trivially 1 or 0.
fn model(cfg: &DecoderConfig, seed: u64) -> Decoder {
    let m = Decoder::new_random(cfg, seed, &Device::Cpu).unwrap();
    let mut rng = Rng::new(seed + 100);
    for (name, v) in m.named_params() {
        if name.contains("norm") || name.ends_with(".bias") {
            let noise = rng.randn(v.dims(), 0.3, &Device::Cpu).unwrap();
            v.set(&(v.as_tensor() + noise).unwrap()).unwrap();
        }
    }
    m
}

fn ids(rng: &mut Rng, n: usize, v: usize) -> Vec<u32> {
    (0..n).map(|_| rng.below(v) as u32).collect()
}

#[test]
fn every_parameter_gets_a_finite_nonzero_gradient() {
    for (fam, tied, kv) in [(Family::Llama, false, 4), (Family::Qwen2, true, 2)] {
        let cfg = tiny(fam, tied, kv);
        let m = model(&cfg, 1);
        let mut rng = Rng::new(2);
        let (b, t) = (2, 9);
        let x = ids(&mut rng, b * t, cfg.vocab_size);
        let y = ids(&mut rng, b * t, cfg.vocab_size);
        let lp = m.target_logprobs(&ForwardInput::new(&x, b, t), &y).unwrap();
        let loss = lp.mean_all().unwrap().neg().unwrap();
        let grads = loss.backward().unwrap();
        for (name, v) in m.named_params() {
            let g = grads
                .get(v.as_tensor())
                .unwrap_or_else(|| panic!("{name}: no gradient"));
            let g: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
            assert!(
                g.iter().all(|x| x.is_finite()),
                "{name}: non-finite gradient"
            );
            let n2: f32 = g.iter().map(|x| x * x).sum();
            assert!(n2 > 0.0, "{name}: zero gradient");
        }
    }
}

fn last_logits(m: &Decoder, inp: &ForwardInput) -> Vec<Vec<f32>> {
    let l = m.forward(inp, None).unwrap();
    let (b, t, v) = l.dims3().unwrap();
    let l = l.to_vec3::<f32>().unwrap();
    let _ = (b, v);
    l.into_iter().map(|row| row[t - 1].clone()).collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn cached_decoding_matches_full_forward() {
    let cfg = tiny(Family::Qwen2, true, 2);
    let m = model(&cfg, 3);
    let mut rng = Rng::new(4);
    let seq = ids(&mut rng, 12, cfg.vocab_size);
    // Feed 5 tokens, then one at a time; compare each step's logits with a full pass over the prefix.
    let mut cache = KvCache::new(cfg.num_hidden_layers);
    let first = m
        .forward(&ForwardInput::new(&seq[..5], 1, 5), Some(&mut cache))
        .unwrap();
    let full = m
        .forward(&ForwardInput::new(&seq[..5], 1, 5), None)
        .unwrap();
    let d = (first - full)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(d < 1e-5, "prefill differs by {d}");
    for n in 6..=12 {
        let step = m
            .forward(&ForwardInput::new(&seq[n - 1..n], 1, 1), Some(&mut cache))
            .unwrap();
        let step: Vec<f32> = step.flatten_all().unwrap().to_vec1().unwrap();
        let full = last_logits(&m, &ForwardInput::new(&seq[..n], 1, n));
        let d = max_diff(&step, &full[0]);
        assert!(
            d < 1e-4,
            "step {n}: cached logits differ from a full pass by {d}"
        );
    }
    assert_eq!(cache.len(), 12);
}

#[test]
fn left_padding_with_segments_is_invisible() {
    let cfg = tiny(Family::Llama, false, 2);
    let m = model(&cfg, 5);
    let mut rng = Rng::new(6);
    let a = ids(&mut rng, 7, cfg.vocab_size);
    let alone = last_logits(&m, &ForwardInput::new(&a, 1, 7));
    // Same row after 4 pad tokens (segment 0) with positions starting at its first real token.
    let mut x = vec![0u32; 4];
    x.extend(&a);
    let pos: Vec<u32> = [0u32; 4].iter().copied().chain(0..7).collect();
    let seg: Vec<u32> = [0u32; 4].iter().copied().chain([1u32; 7]).collect();
    let inp = ForwardInput {
        input_ids: &x,
        batch: 1,
        seq_len: 11,
        position_ids: Some(&pos),
        segment_ids: Some(&seg),
    };
    let padded = last_logits(&m, &inp);
    let d = max_diff(&alone[0], &padded[0]);
    assert!(d < 1e-4, "left padding changed the logits by {d}");
}

#[test]
fn packed_documents_do_not_see_each_other() {
    let cfg = tiny(Family::Llama, false, 4);
    let m = model(&cfg, 7);
    let mut rng = Rng::new(8);
    let a = ids(&mut rng, 5, cfg.vocab_size);
    let b = ids(&mut rng, 6, cfg.vocab_size);
    let la = m
        .forward(&ForwardInput::new(&a, 1, 5), None)
        .unwrap()
        .to_vec3::<f32>()
        .unwrap();
    let lb = m
        .forward(&ForwardInput::new(&b, 1, 6), None)
        .unwrap()
        .to_vec3::<f32>()
        .unwrap();
    let x: Vec<u32> = a.iter().chain(&b).copied().collect();
    let pos: Vec<u32> = (0..5).chain(0..6).collect();
    let seg: Vec<u32> = [1u32; 5].iter().copied().chain([2u32; 6]).collect();
    let inp = ForwardInput {
        input_ids: &x,
        batch: 1,
        seq_len: 11,
        position_ids: Some(&pos),
        segment_ids: Some(&seg),
    };
    let lp = m.forward(&inp, None).unwrap().to_vec3::<f32>().unwrap();
    for i in 0..5 {
        assert!(max_diff(&lp[0][i], &la[0][i]) < 1e-4, "doc a position {i}");
    }
    for i in 0..6 {
        assert!(
            max_diff(&lp[0][5 + i], &lb[0][i]) < 1e-4,
            "doc b position {i}"
        );
    }
}

fn params_bits(m: &Decoder) -> Vec<(String, Vec<u32>)> {
    m.named_params()
        .into_iter()
        .map(|(n, v)| {
            (
                n,
                v.flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
                    .iter()
                    .map(|x| x.to_bits())
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn save_and_load_round_trip_bit_exactly() {
    for (dtype, tied) in [
        (WeightDtype::F32, false),
        (WeightDtype::F32, true),
        (WeightDtype::Bf16, false),
    ] {
        let mut cfg = tiny(Family::Qwen2, tied, 2);
        cfg.dtype = dtype;
        let m = model(&cfg, 9);
        let dir = tempfile::tempdir().unwrap();
        save_decoder(&m, dir.path()).unwrap();
        let m2 = load_decoder(dir.path(), &Device::Cpu).unwrap();
        assert_eq!(m2.cfg, cfg);
        if dtype == WeightDtype::F32 {
            assert_eq!(params_bits(&m), params_bits(&m2));
        } else {
            // bf16 storage rounds once; saving the loaded model again must give identical bits.
            let dir2 = tempfile::tempdir().unwrap();
            save_decoder(&m2, dir2.path()).unwrap();
            let a = std::fs::read(dir.path().join("model.safetensors")).unwrap();
            let b = std::fs::read(dir2.path().join("model.safetensors")).unwrap();
            assert_eq!(a, b, "bf16 checkpoint did not round-trip byte-exactly");
        }
    }
}

#[test]
fn shape_mismatch_names_the_tensor() {
    let cfg = tiny(Family::Llama, false, 4);
    let m = model(&cfg, 10);
    let dir = tempfile::tempdir().unwrap();
    save_decoder(&m, dir.path()).unwrap();
    // Claim a bigger intermediate size than the weights have.
    let p = dir.path().join("config.json");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("\"intermediate_size\": 48", "\"intermediate_size\": 50");
    std::fs::write(&p, text).unwrap();
    let err = load_decoder(dir.path(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    // The first mismatching tensor in file order is down_proj (32, 48) where the config implies (32, 50).
    assert!(err.contains("model.layers.0.mlp.down_proj.weight"), "{err}");
    assert!(
        err.contains("[32, 50]") && err.contains("[32, 48]") && err.contains("model.safetensors"),
        "{err}"
    );
}

#[test]
fn truncated_safetensors_is_a_clear_error() {
    let cfg = tiny(Family::Llama, false, 4);
    let m = model(&cfg, 11);
    let dir = tempfile::tempdir().unwrap();
    save_decoder(&m, dir.path()).unwrap();
    let p = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
    let err = load_decoder(dir.path(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model.safetensors") && err.contains("truncated"),
        "{err}"
    );
    // A header that is garbage.
    std::fs::write(&p, b"\xff\xff\xff\xff\xff\xff\xff\x7fgarbage").unwrap();
    let err = load_decoder(dir.path(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.safetensors"), "{err}");
}

#[test]
fn out_of_range_token_is_an_error_not_a_panic() {
    let cfg = tiny(Family::Llama, false, 4);
    let m = model(&cfg, 12);
    let x = vec![1u32, 2, 999];
    let err = m
        .forward(&ForwardInput::new(&x, 1, 3), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("999") && err.contains("61"), "{err}");
    let _ = Tensor::zeros(1, gradus_tensor::DType::F32, &Device::Cpu);
}

#[test]
fn layernorm_and_no_norm_by_hand() {
    use gradus_model::decoder::Norm;
    use gradus_model::NormKind;
    use gradus_tensor::Var;
    let x = Tensor::from_slice(&[1f32, 2.0, 3.0, 4.0], (1, 4), &Device::Cpu).unwrap();
    let ln = Norm {
        kind: NormKind::LayerNorm,
        weight: Some(Var::from_slice(&[2f32; 4], 4, &Device::Cpu).unwrap()),
        bias: Some(Var::from_slice(&[0.5f32; 4], 4, &Device::Cpu).unwrap()),
        eps: 0.0,
    };
    // By hand: mean 2.5, biased variance (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25, so
    // x̂ = (−1.5, −0.5, 0.5, 1.5) / √1.25 and y = 2·x̂ + 0.5.
    let s = 1.25f32.sqrt();
    let want: Vec<f32> = [-1.5f32, -0.5, 0.5, 1.5]
        .iter()
        .map(|v| 2.0 * v / s + 0.5)
        .collect();
    for y in [ln.forward(&x).unwrap(), ln.forward_inference(&x).unwrap()] {
        let y: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        assert!(max_diff(&y, &want) < 1e-6, "{y:?} vs {want:?}");
    }
    let id = Norm {
        kind: NormKind::None,
        weight: None,
        bias: None,
        eps: 1e-5,
    };
    let y: Vec<f32> = id
        .forward(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(y, vec![1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn other_norms_decode_with_a_cache_and_round_trip_but_not_as_hf_llama() {
    use gradus_model::NormKind;
    for (kind, n_norm_params) in [(NormKind::None, 0), (NormKind::LayerNorm, 10)] {
        let cfg = DecoderConfig {
            norm: kind,
            ..tiny(Family::Llama, false, 2)
        };
        let m = model(&cfg, 21);
        let count = m
            .named_params()
            .iter()
            .filter(|(n, _)| n.contains("norm"))
            .count();
        // Two norms per layer × 2 layers + the final norm, each with weight and bias (layernorm).
        assert_eq!(count, n_norm_params, "{kind:?}");
        let mut rng = Rng::new(5);
        let seq = ids(&mut rng, 9, cfg.vocab_size);
        let mut cache = KvCache::new(cfg.num_hidden_layers);
        m.forward(&ForwardInput::new(&seq[..8], 1, 8), Some(&mut cache))
            .unwrap();
        let step: Vec<f32> = m
            .forward(&ForwardInput::new(&seq[8..9], 1, 1), Some(&mut cache))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let full = last_logits(&m, &ForwardInput::new(&seq, 1, 9));
        assert!(
            max_diff(&step, &full[0]) < 1e-4,
            "{kind:?}: cached decoding"
        );

        let dir = tempfile::tempdir().unwrap();
        save_decoder(&m, dir.path()).unwrap();
        let j: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
                .unwrap();
        // Hugging Face Llama has only RMSNorm: the checkpoint must not claim to be one.
        assert_eq!(j["model_type"], "gradus_llama", "{kind:?}");
        assert_ne!(j["architectures"][0], "LlamaForCausalLM");
        let m2 = load_decoder(dir.path(), &Device::Cpu).unwrap();
        assert_eq!(m2.cfg, cfg);
        assert_eq!(params_bits(&m), params_bits(&m2));
    }
    // The default stays an ordinary Llama.
    let m = model(&tiny(Family::Llama, false, 2), 22);
    let dir = tempfile::tempdir().unwrap();
    save_decoder(&m, dir.path()).unwrap();
    let text = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
    assert!(text.contains("\"model_type\": \"llama\"") && !text.contains("gradus_norm"));
}
