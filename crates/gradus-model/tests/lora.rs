//! LoRA: parity with PEFT on the committed fixtures (`tests/fixtures/peft_lora/gen.py`, PEFT and
//! transformers from PyPI; regenerate deliberately only), the PEFT file layout, merging, the
//! adapter-free reference model, dropout, and which parameters receive gradients.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use gradus_model::decoder::ForwardInput;
use gradus_model::hf::load_decoder;
use gradus_model::lora::{
    load_adapter, read_adapter_config, save_adapter, LoraConfig, LORA_MODULES,
};
use gradus_model::{Decoder, DecoderConfig, Family};
use gradus_tensor::io::read_safetensors;
use gradus_tensor::rng::Rng;
use gradus_tensor::tol::{max_abs_diff, HF_LOGITS_PARITY};
use gradus_tensor::{DType, Device, Tensor};
use safetensors::tensor::{Dtype, SafeTensors};

const CASES: [&str; 2] = ["llama_qv", "qwen2_mlp_rslora"];
/// Merged weights vs PEFT's `merge_and_unload()` (both f32 `W + s·B·A`; only rounding differs).
const MERGED_WEIGHTS_TOL: f32 = 1e-5;

fn case_dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/peft_lora")
        .join(case)
}

struct Expected {
    rows: usize,
    t: usize,
    ids: Vec<u32>,
    logits: Vec<f32>,
    base_logits: Vec<f32>,
}

fn f32s(st: &SafeTensors, name: &str) -> Vec<f32> {
    let v = st.tensor(name).unwrap();
    assert_eq!(v.dtype(), Dtype::F32, "{name}");
    v.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn expected(case: &str) -> Expected {
    let bytes = std::fs::read(case_dir(case).join("expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let ids = st.tensor("input_ids").unwrap();
    assert_eq!(ids.dtype(), Dtype::I64);
    let (rows, t) = (ids.shape()[0], ids.shape()[1]);
    let ids = ids
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
        .collect();
    Expected {
        rows,
        t,
        ids,
        logits: f32s(&st, "logits"),
        base_logits: f32s(&st, "base_logits"),
    }
}

fn logits(m: &Decoder, e: &Expected) -> Vec<f32> {
    m.forward(&ForwardInput::new(&e.ids, e.rows, e.t), None)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Base + PEFT adapter of a fixture case.
fn load_case(case: &str) -> (Decoder, LoraConfig) {
    let mut m = load_decoder(&case_dir(case).join("base"), &Device::Cpu).unwrap();
    let cfg = load_adapter(&case_dir(case).join("adapter"), &mut m)
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    (m, cfg)
}

#[test]
fn adapter_config_is_read_as_peft_wrote_it() {
    let (_, a) = load_case("llama_qv");
    assert_eq!(
        (a.r, a.lora_alpha, a.lora_dropout, a.use_rslora),
        (4, 8.0, 0.1, false)
    );
    assert_eq!(a.target_modules, ["q_proj", "v_proj"]);
    assert_eq!(a.scale(), 2.0); // 8 / 4
    let (m, b) = load_case("qwen2_mlp_rslora");
    assert_eq!((b.r, b.lora_alpha, b.use_rslora), (2, 5.0, true));
    assert!((b.scale() - 5.0 / 2f64.sqrt()).abs() < 1e-12); // rsLoRA: alpha / sqrt(r)
                                                            // 2 layers × {k, o, gate, up, down} × {A, B}
    assert_eq!(m.lora_params().len(), 20);
}

#[test]
fn logits_match_peft() {
    for case in CASES {
        let (m, _) = load_case(case);
        let e = expected(case);
        let got = logits(&m, &e);
        let d = max_abs_diff(&got, &e.logits);
        assert!(
            d <= HF_LOGITS_PARITY,
            "{case}: logits with the adapter differ from PEFT by {d}"
        );
        // The adapter must matter far beyond the tolerance, or the check above proves nothing.
        assert!(
            max_abs_diff(&e.logits, &e.base_logits) > 0.1,
            "{case}: fixture adapter has no effect"
        );
    }
}

#[test]
fn without_adapters_is_the_base_model_sharing_its_weights() {
    for case in CASES {
        let (m, _) = load_case(case);
        let r = m.without_adapters();
        assert!(!r.has_lora() && m.has_lora(), "{case}");
        let e = expected(case);
        let d = max_abs_diff(&logits(&r, &e), &e.base_logits);
        assert!(
            d <= HF_LOGITS_PARITY,
            "{case}: adapter-free logits differ from PEFT's disable_adapter() by {d}"
        );
        // Exactly the plain base checkpoint's logits.
        let base = load_decoder(&case_dir(case).join("base"), &Device::Cpu).unwrap();
        assert_eq!(logits(&r, &e), logits(&base, &e), "{case}");
        // No second copy: the very same tensors.
        for ((n, a), (_, b)) in m.named_params().iter().zip(r.named_params()) {
            assert_eq!(
                a.as_tensor().id(),
                b.as_tensor().id(),
                "{case}: {n} was copied"
            );
        }
    }
}

#[test]
fn merged_weights_match_peft() {
    for case in CASES {
        let (m, _) = load_case(case);
        let merged = m.merge_lora().unwrap();
        assert!(!merged.has_lora());
        let want =
            read_safetensors(&case_dir(case).join("merged.safetensors"), &Device::Cpu).unwrap();
        let params: std::collections::HashMap<String, Tensor> = merged
            .named_params()
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().clone()))
            .collect();
        let base: std::collections::HashMap<String, Tensor> = m
            .named_params()
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().clone()))
            .collect();
        let mut changed = HashSet::new();
        for w in &want {
            let got = params
                .get(&w.name)
                .unwrap_or_else(|| panic!("{case}: no {}", w.name));
            let d = max_abs_diff(&values(got), &values(&w.tensor));
            assert!(
                d <= MERGED_WEIGHTS_TOL,
                "{case}: merged {} differs from PEFT by {d}",
                w.name
            );
            assert!(
                max_abs_diff(&values(&base[&w.name]), &values(&w.tensor)) > 1e-3,
                "{case}: {} unchanged by merge",
                w.name
            );
            changed.insert(w.name.clone());
        }
        // Everything else is the base weight, bit for bit, in fresh storage.
        for (n, t) in &params {
            assert_ne!(
                t.id(),
                base[n].id(),
                "{case}: merged {n} shares storage with the base"
            );
            if !changed.contains(n) {
                assert_eq!(values(t), values(&base[n]), "{case}: {n} changed by merge");
            }
        }
        let e = expected(case);
        let d = max_abs_diff(&logits(&merged, &e), &e.logits);
        assert!(
            d <= HF_LOGITS_PARITY,
            "{case}: merged model's logits differ from PEFT by {d}"
        );
        // The adapted model is untouched.
        assert!(max_abs_diff(&logits(&m, &e), &e.logits) <= HF_LOGITS_PARITY);
    }
}

/// (name, dtype, bytes) of every tensor of a safetensors file, sorted by name.
fn raw(path: &Path) -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.dtype(), t.shape().to_vec(), t.data().to_vec()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn adapter_round_trips_byte_exactly() {
    for case in CASES {
        let (m, cfg) = load_case(case);
        let out = tempfile::tempdir().unwrap();
        save_adapter(out.path(), &m, &cfg).unwrap();
        // Same tensor names, dtypes, shapes and bytes as the file PEFT wrote.
        let peft = raw(&case_dir(case).join("adapter/adapter_model.safetensors"));
        let ours = raw(&out.path().join("adapter_model.safetensors"));
        assert_eq!(peft.len(), ours.len(), "{case}");
        for (a, b) in peft.iter().zip(&ours) {
            assert!(a == b, "{case}: tensor {} differs after load + save", a.0);
        }
        // The config reads back the same; a second save writes identical files.
        assert_eq!(
            read_adapter_config(&out.path().join("adapter_config.json")).unwrap(),
            cfg
        );
        let mut m2 = load_decoder(&case_dir(case).join("base"), &Device::Cpu).unwrap();
        assert_eq!(load_adapter(out.path(), &mut m2).unwrap(), cfg);
        let out2 = tempfile::tempdir().unwrap();
        save_adapter(out2.path(), &m2, &cfg).unwrap();
        for f in ["adapter_model.safetensors", "adapter_config.json"] {
            assert!(
                std::fs::read(out.path().join(f)).unwrap()
                    == std::fs::read(out2.path().join(f)).unwrap(),
                "{case}: {f}"
            );
        }
    }
}

fn tiny(family: Family) -> DecoderConfig {
    DecoderConfig {
        family,
        vocab_size: 37,
        hidden_size: 16,
        intermediate_size: 24,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        attention_bias: family == Family::Qwen2,
        initializer_range: 0.2,
        ..Default::default()
    }
}

fn all_modules(r: usize, alpha: f64) -> LoraConfig {
    LoraConfig {
        r,
        lora_alpha: alpha,
        target_modules: LORA_MODULES.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[test]
fn fresh_adapter_leaves_the_logits_exactly_unchanged() {
    let cfg = tiny(Family::Qwen2);
    let base = Decoder::new_random(&cfg, 3, &Device::Cpu).unwrap();
    let mut m = base.clone();
    m.apply_lora(&all_modules(4, 8.0), &mut Rng::new(5))
        .unwrap();
    assert_eq!(m.lora_params().len(), 2 * 7 * 2);
    let ids: Vec<u32> = (0..14).map(|i| (i * 7 % 37) as u32).collect();
    let inp = ForwardInput::new(&ids, 2, 7);
    let f = |d: &Decoder| values(&d.forward(&inp, None).unwrap());
    // B = 0, so s·x·Aᵀ·Bᵀ is exactly 0 and y + 0 = y.
    assert_eq!(f(&m), f(&base));
    for (n, v) in m.lora_params() {
        let x = values(v.as_tensor());
        if n.ends_with("lora_B.weight") {
            assert!(x.iter().all(|&b| b == 0.0), "{n} is not zero");
        } else {
            // kaiming_uniform_(a=√5): gain √(2/(1+5)) = 1/√3, bound = √3·gain/√fan_in = 1/√in;
            // in = 16 (hidden) or 24 (down_proj). U(-b, b) has std b/√3.
            let fan_in = if n.contains("down_proj") {
                24.0f32
            } else {
                16.0
            };
            let bound = 1.0 / fan_in.sqrt();
            assert!(x.iter().all(|a| a.abs() <= bound), "{n} exceeds ±{bound}");
            let sd = (x.iter().map(|a| a * a).sum::<f32>() / x.len() as f32).sqrt();
            assert!(
                (sd / (bound / 3f32.sqrt()) - 1.0).abs() < 0.3,
                "{n}: std {sd}"
            );
        }
    }
    // Default targets are the attention projections: 2 layers × 4 × {A, B}.
    let mut d = base.clone();
    d.apply_lora(&LoraConfig::default(), &mut Rng::new(5))
        .unwrap();
    assert_eq!(d.lora_params().len(), 16);
    assert!(
        d.apply_lora(&LoraConfig::default(), &mut Rng::new(5))
            .is_err(),
        "applied twice"
    );
}

#[test]
fn only_lora_params_are_trainable_and_all_get_gradients() {
    let cfg = tiny(Family::Llama);
    let mut m = Decoder::new_random(&cfg, 11, &Device::Cpu).unwrap();
    m.apply_lora(&all_modules(2, 4.0), &mut Rng::new(1))
        .unwrap();
    let mut rng = Rng::new(2);
    for (n, v) in m.lora_params() {
        if n.ends_with("lora_B.weight") {
            v.set(&rng.randn(v.as_tensor().dims(), 0.3, &Device::Cpu).unwrap())
                .unwrap();
        }
    }
    let reference = m.without_adapters();
    let ids: Vec<u32> = (0..16).map(|i| (i * 5 % 37) as u32).collect();
    let inp = ForwardInput::new(&ids[..14], 2, 7);
    let targets: Vec<u32> = ids[2..].to_vec();
    let f = |d: &Decoder| values(&d.forward(&inp, None).unwrap());
    let ref_before = f(&reference);

    let base_ids: HashSet<_> = m
        .named_params()
        .iter()
        .map(|(_, v)| v.as_tensor().id())
        .collect();
    let lora = m.lora_params();
    assert!(
        lora.iter()
            .all(|(_, v)| !base_ids.contains(&v.as_tensor().id())),
        "a base weight is in lora_params"
    );
    let loss = m
        .target_logprobs(&inp, &targets)
        .unwrap()
        .sum_all()
        .unwrap()
        .neg()
        .unwrap();
    let grads = loss.backward().unwrap();
    for (n, v) in &lora {
        let g = grads
            .get(v.as_tensor())
            .unwrap_or_else(|| panic!("{n}: no gradient"));
        let g = values(g);
        assert!(g.iter().all(|x| x.is_finite()), "{n}: non-finite gradient");
        assert!(g.iter().any(|&x| x != 0.0), "{n}: zero gradient");
    }
    // One SGD step on the LoRA parameters only: base weights stay bit-identical, the output moves,
    // and the adapter-free reference still gives the base logits.
    let base_before: Vec<Vec<f32>> = m
        .named_params()
        .iter()
        .map(|(_, v)| values(v.as_tensor()))
        .collect();
    let before = f(&m);
    for (_, v) in &lora {
        let g = grads.get(v.as_tensor()).unwrap();
        v.set(&(v.as_tensor() - (g * 0.1).unwrap()).unwrap())
            .unwrap();
    }
    let base_after: Vec<Vec<f32>> = m
        .named_params()
        .iter()
        .map(|(_, v)| values(v.as_tensor()))
        .collect();
    assert_eq!(base_before, base_after);
    assert!(max_abs_diff(&before, &f(&m)) > 1e-3);
    assert_eq!(f(&reference), ref_before);
}

#[test]
fn dropout_masks_the_adapter_input_in_training_mode_only() {
    // r = in = out = 16 with A = B = I and alpha = r (scale 1): the adapter adds dropout(x), so
    // (adapted − base) is x with each entry either 0 or x / (1 − p) = 2x for p = 0.5.
    let cfg = tiny(Family::Llama);
    let mut m = Decoder::new_random(&cfg, 4, &Device::Cpu).unwrap();
    let lc = LoraConfig {
        r: 16,
        lora_alpha: 16.0,
        lora_dropout: 0.5,
        target_modules: vec!["q_proj".into()],
        ..Default::default()
    };
    m.apply_lora(&lc, &mut Rng::new(9)).unwrap();
    let eye = Tensor::eye(16, DType::F32, &Device::Cpu).unwrap();
    let q = m.layers[0].self_attn.q_proj.clone();
    let ad = q.lora.clone().unwrap();
    ad.a.set(&eye).unwrap();
    ad.b.set(&eye).unwrap();
    let mut plain = q.clone();
    plain.lora = None;
    let x = Rng::new(3).randn(&[64, 16], 1.0, &Device::Cpu).unwrap();
    let xs = values(&x);
    let diff = |l: &gradus_model::decoder::Linear| {
        values(&(l.forward(&x).unwrap() - plain.forward(&x).unwrap()).unwrap())
    };
    let state = m.lora_dropout_state().unwrap();
    let d = diff(&q); // training mode after apply_lora
    let mut zeros = 0;
    for (g, x) in d.iter().zip(&xs) {
        if g.abs() < 1e-5 {
            zeros += 1;
        } else {
            assert!((g - 2.0 * x).abs() < 1e-4, "kept entry {g} is not 2·{x}");
        }
    }
    // 1024 Bernoulli(0.5) draws: 512 ± 16 (1 sd); allow 5 sd.
    assert!((432..=592).contains(&zeros), "{zeros} of 1024 dropped");
    // Restoring the stream reproduces the mask; the next call draws a new one.
    m.set_lora_dropout_state(state).unwrap();
    assert_eq!(diff(&q), d);
    assert_ne!(diff(&q), d);
    // Eval mode: no dropout, the adapter adds x itself.
    m.set_lora_training(false);
    assert!(max_abs_diff(&diff(&q), &xs) < 1e-5);
    // The loaded fixture (lora_dropout 0.1) is in eval mode: deterministic, matching PEFT (checked
    // in logits_match_peft).
    let (f, _) = load_case("llama_qv");
    assert!(f.lora_dropout_state().is_some());
}

#[test]
fn config_defaults_and_validation_name_the_field() {
    let d = LoraConfig::default();
    assert_eq!(
        (d.r, d.lora_alpha, d.lora_dropout, d.use_rslora),
        (8, 16.0, 0.0, false)
    );
    assert_eq!(d.target_modules, ["q_proj", "k_proj", "v_proj", "o_proj"]);
    d.validate().unwrap();
    let parsed: LoraConfig =
        toml::from_str("r = 4\nalpha = 8\ntarget_modules = [\"q_proj\"]").unwrap();
    assert_eq!((parsed.r, parsed.lora_alpha), (4, 8.0));
    let e = toml::from_str::<LoraConfig>("rank = 4")
        .unwrap_err()
        .to_string();
    assert!(e.contains("rank"), "{e}");
    let bad = |c: LoraConfig, field: &str, word: &str| {
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains(field) && e.contains(word), "{e}");
    };
    bad(LoraConfig { r: 0, ..d.clone() }, "lora.r", "at least 1");
    bad(
        LoraConfig {
            lora_alpha: f64::NAN,
            ..d.clone()
        },
        "lora.lora_alpha",
        "positive",
    );
    bad(
        LoraConfig {
            lora_dropout: 1.0,
            ..d.clone()
        },
        "lora.lora_dropout",
        "[0, 1)",
    );
    bad(
        LoraConfig {
            target_modules: vec![],
            ..d.clone()
        },
        "lora.target_modules",
        "empty",
    );
    bad(
        LoraConfig {
            target_modules: vec!["qkv_proj".into()],
            ..d.clone()
        },
        "lora.target_modules",
        "qkv_proj",
    );
    bad(
        LoraConfig {
            target_modules: vec!["q_proj".into(), "q_proj".into()],
            ..d.clone()
        },
        "lora.target_modules",
        "twice",
    );
}

/// Copies a fixture adapter dir into a temp dir, to break it.
fn adapter_copy(case: &str) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(case_dir(case).join("adapter").join(f), t.path().join(f)).unwrap();
    }
    t
}

fn load_err(case: &str, dir: &Path) -> String {
    let mut m = load_decoder(&case_dir(case).join("base"), &Device::Cpu).unwrap();
    let e = load_adapter(dir, &mut m).unwrap_err().to_string();
    assert!(!m.has_lora(), "a failed load left adapters behind");
    e
}

#[test]
fn bad_adapters_give_errors_that_name_the_problem() {
    let e = load_err("llama_qv", Path::new("/nonexistent/adapter"));
    assert!(e.contains("no such directory"), "{e}");
    let t = adapter_copy("llama_qv");
    std::fs::remove_file(t.path().join("adapter_model.safetensors")).unwrap();
    let e = load_err("llama_qv", t.path());
    assert!(e.contains("adapter_model.safetensors"), "{e}");
    let t = adapter_copy("llama_qv");
    std::fs::remove_file(t.path().join("adapter_config.json")).unwrap();
    assert!(load_err("llama_qv", t.path()).contains("adapter_config.json"));

    // The Qwen2 adapter on the Llama base: k_proj is (16, 32) there but (12, 24) in Qwen2.
    let e = load_err("llama_qv", &case_dir("qwen2_mlp_rslora").join("adapter"));
    assert!(
        e.contains("base_model.model.model.layers.0.") && e.contains("expected shape"),
        "{e}"
    );

    // A rank that disagrees with the tensors names the tensor.
    let t = adapter_copy("llama_qv");
    let p = t.path().join("adapter_config.json");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("\"r\": 4", "\"r\": 3");
    std::fs::write(&p, text).unwrap();
    let e = load_err("llama_qv", t.path());
    assert!(
        e.contains("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight")
            && e.contains("[3, 32]"),
        "{e}"
    );

    // Unsupported PEFT options are named.
    for (from, to, field) in [
        ("\"use_dora\": false", "\"use_dora\": true", "use_dora"),
        (
            "\"peft_type\": \"LORA\"",
            "\"peft_type\": \"IA3\"",
            "peft_type",
        ),
        ("\"bias\": \"none\"", "\"bias\": \"all\"", "bias"),
        ("\"v_proj\"\n", "\"w_proj\"\n", "w_proj"),
    ] {
        let t = adapter_copy("llama_qv");
        let p = t.path().join("adapter_config.json");
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "{from}");
        std::fs::write(&p, text.replace(from, to)).unwrap();
        let e = load_err("llama_qv", t.path());
        assert!(
            e.contains(field) && e.contains("adapter_config.json"),
            "{field}: {e}"
        );
    }

    // Tensors for a module target_modules does not list.
    let t = adapter_copy("llama_qv");
    let p = t.path().join("adapter_config.json");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("\"v_proj\"\n", "\"k_proj\"\n");
    std::fs::write(&p, text).unwrap();
    let e = load_err("llama_qv", t.path());
    assert!(e.contains("v_proj") && e.contains("target_modules"), "{e}");

    // Unknown tensor names and a missing B.
    let (m, _) = load_case("llama_qv");
    let mut ts: Vec<(String, Tensor)> = m
        .lora_params()
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().clone()))
        .collect();
    let t = adapter_copy("llama_qv");
    let w = t.path().join("adapter_model.safetensors");
    let mut extra = ts.clone();
    extra.push((
        "base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight".into(),
        ts[0].1.clone(),
    ));
    gradus_tensor::io::write_safetensors(&w, &extra, gradus_tensor::io::StoreDtype::F32).unwrap();
    let e = load_err("llama_qv", t.path());
    assert!(
        e.contains(
            "unexpected tensor `base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight`"
        ),
        "{e}"
    );
    ts.retain(|(n, _)| n != "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight");
    gradus_tensor::io::write_safetensors(&w, &ts, gradus_tensor::io::StoreDtype::F32).unwrap();
    let e = load_err("llama_qv", t.path());
    assert!(
        e.contains("layers.1.self_attn.v_proj.lora_B.weight") && e.contains("missing"),
        "{e}"
    );

    // Loading onto a model that already has adapters.
    let (mut m, _) = load_case("llama_qv");
    assert!(load_adapter(&case_dir("llama_qv").join("adapter"), &mut m)
        .unwrap_err()
        .to_string()
        .contains("already"));
}

#[test]
fn save_adapter_checks_the_config_against_the_model() {
    let (m, cfg) = load_case("llama_qv");
    let out = tempfile::tempdir().unwrap();
    let e = save_adapter(
        out.path(),
        &m,
        &LoraConfig {
            r: 8,
            ..cfg.clone()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("lora.r"), "{e}");
    let e = save_adapter(
        out.path(),
        &m,
        &LoraConfig {
            target_modules: vec!["q_proj".into()],
            ..cfg.clone()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("v_proj"), "{e}");
    let e = save_adapter(
        out.path(),
        &m,
        &LoraConfig {
            lora_alpha: 4.0,
            ..cfg.clone()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("lora_alpha"), "{e}");
    let e = save_adapter(out.path(), &m.without_adapters(), &cfg)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no LoRA adapters"), "{e}");
    assert!(!out.path().join("adapter_model.safetensors").exists());
}

fn write_expected(path: &Path, e: &Expected, logits: &[f32]) {
    let ids: Vec<i64> = e.ids.iter().map(|&x| x as i64).collect();
    let ids_t = Tensor::from_vec(ids, (e.rows, e.t), &Device::Cpu).unwrap();
    let v = logits.len() / (e.rows * e.t);
    let lg = Tensor::from_vec(logits.to_vec(), (e.rows, e.t, v), &Device::Cpu).unwrap();
    let map: std::collections::HashMap<String, Tensor> =
        [("input_ids".to_string(), ids_t), ("logits".to_string(), lg)].into();
    candle_core::safetensors::save(&map, path).unwrap();
}

/// What gradus writes for each fixture adapter after a load + save, as PEFT checked it:
/// `saved_by_gradus/<case>/` holds the non-weight files (adapter_config.json) and `check.json`,
/// `check_saved.py`'s verdict (PEFT loaded it onto the base and gave the fixture's logits).
fn saved_dir(case: &str) -> PathBuf {
    case_dir("saved_by_gradus").join(case)
}

/// Writes `saved_by_gradus/` and has PEFT check it. Needs python with torch, transformers and peft
/// (`PYTHON`, default python3); run with
/// `cargo test -p gradus-model --test lora record_what_gradus_saves -- --ignored` after changing
/// how adapters are saved, and commit the result.
#[test]
#[ignore]
fn record_what_gradus_saves() {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    for case in CASES {
        let (m, cfg) = load_case(case);
        let dir = saved_dir(case);
        let _ = std::fs::remove_dir_all(&dir);
        save_adapter(&dir, &m, &cfg).unwrap();
        let out = std::process::Command::new(&python)
            .arg(case_dir("").join("check_saved.py"))
            .arg(case_dir(case).join("base"))
            .arg(&dir)
            .arg(case_dir(case).join("expected.safetensors"))
            .output()
            .unwrap();
        let verdict = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(out.status.success(), "{case}: check_saved.py: {verdict}");
        std::fs::write(dir.join("check.json"), format!("{verdict}\n")).unwrap();
        std::fs::remove_file(dir.join("adapter_model.safetensors")).unwrap();
    }
}

/// In CI, without Python: a fixture adapter loaded and saved by gradus has the same tensors, bit
/// for bit, as PEFT's file, and the same adapter_config.json that PEFT accepted when
/// `record_what_gradus_saves` ran (whose verdict was ok): so the adapter gradus writes today is one
/// PEFT loads with the expected logits.
#[test]
fn gradus_writes_what_peft_accepted() {
    let tensors = |p: &Path| -> Vec<(String, Vec<usize>, Vec<u8>)> {
        let bytes = std::fs::read(p).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let mut v: Vec<_> = st
            .tensors()
            .into_iter()
            .map(|(n, t)| (n, t.shape().to_vec(), t.data().to_vec()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let json = |p: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    for case in CASES {
        let check = json(&saved_dir(case).join("check.json"));
        assert_eq!(check["ok"], true, "{case}: {check}");
        let (m, cfg) = load_case(case);
        let out = tempfile::tempdir().unwrap();
        save_adapter(out.path(), &m, &cfg).unwrap();
        let (a, b) = (
            tensors(&case_dir(case).join("adapter/adapter_model.safetensors")),
            tensors(&out.path().join("adapter_model.safetensors")),
        );
        assert_eq!(a.len(), b.len(), "{case}: tensor count");
        for (x, y) in a.iter().zip(&b) {
            assert_eq!((&x.0, &x.1), (&y.0, &y.1), "{case}");
            assert!(x.2 == y.2, "{case}: {} bytes differ", x.0);
        }
        assert_eq!(
            json(&out.path().join("adapter_config.json")),
            json(&saved_dir(case).join("adapter_config.json")),
            "{case}: adapter_config.json differs from what PEFT accepted: run record_what_gradus_saves"
        );
    }
}

/// PEFT loads adapters gradus wrote and gets gradus' logits: the fixture adapters after a load +
/// save, and a fresh gradus adapter with random B. Needs python3 with torch, transformers and
/// peft; run with `cargo test -p gradus-model --test lora -- --ignored`.
#[test]
#[ignore]
fn peft_loads_what_gradus_saves() {
    let script = case_dir("").join("check_saved.py");
    let run = |base: &Path, adapter: &Path, expected: &Path| {
        let status = std::process::Command::new("python3")
            .arg(&script)
            .arg(base)
            .arg(adapter)
            .arg(expected)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "check_saved.py failed for {}",
            adapter.display()
        );
    };
    for case in CASES {
        let (m, cfg) = load_case(case);
        let out = tempfile::tempdir().unwrap();
        save_adapter(out.path(), &m, &cfg).unwrap();
        run(
            &case_dir(case).join("base"),
            out.path(),
            &case_dir(case).join("expected.safetensors"),
        );

        // A gradus-made adapter on other modules, with dropout and rsLoRA in its config.
        let mut g = m.without_adapters();
        let lc = LoraConfig {
            r: 3,
            lora_alpha: 7.0,
            lora_dropout: 0.05,
            use_rslora: true,
            target_modules: vec!["k_proj".into(), "up_proj".into(), "o_proj".into()],
        };
        g.apply_lora(&lc, &mut Rng::new(17)).unwrap();
        let mut rng = Rng::new(18);
        for (n, v) in g.lora_params() {
            if n.ends_with("lora_B.weight") {
                v.set(&rng.randn(v.as_tensor().dims(), 0.3, &Device::Cpu).unwrap())
                    .unwrap();
            }
        }
        g.set_lora_training(false);
        let e = expected(case);
        let want = logits(&g, &e);
        assert!(max_abs_diff(&want, &e.base_logits) > 0.1);
        let out = tempfile::tempdir().unwrap();
        save_adapter(out.path(), &g, &lc).unwrap();
        let exp = out.path().join("expected.safetensors");
        write_expected(&exp, &e, &want);
        run(&case_dir(case).join("base"), out.path(), &exp);
    }
}

#[test]
fn kv_cache_decoding_and_generation_see_the_adapter() {
    use gradus_model::generate::{generate, SamplingConfig};
    use gradus_model::KvCache;
    let (m, _) = load_case("llama_qv");
    let e = expected("llama_qv");
    let v = m.cfg.vocab_size;
    // Row 0 fed as a 5-token prefix, then token by token through the KV cache: each step's logits
    // equal PEFT's full-sequence logits at that position.
    let row = &e.ids[..e.t];
    let mut cache = KvCache::new(m.cfg.num_hidden_layers);
    let first = values(
        &m.forward(&ForwardInput::new(&row[..5], 1, 5), Some(&mut cache))
            .unwrap(),
    );
    assert!(max_abs_diff(&first, &e.logits[..5 * v]) <= HF_LOGITS_PARITY);
    for p in 5..e.t {
        let step = values(
            &m.forward(&ForwardInput::new(&row[p..p + 1], 1, 1), Some(&mut cache))
                .unwrap(),
        );
        let d = max_abs_diff(&step, &e.logits[p * v..(p + 1) * v]);
        assert!(
            d <= HF_LOGITS_PARITY,
            "cached step {p} differs from PEFT by {d}"
        );
    }
    // Greedy generation with the adapter = with the merged model, and differs from the base.
    let cfg = SamplingConfig {
        max_new_tokens: 12,
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
        seed: 0,
    };
    let prompts = vec![row[..4].to_vec(), e.ids[e.t..e.t + 6].to_vec()];
    let run = |d: &Decoder| -> Vec<Vec<u32>> {
        generate(d, &prompts, &cfg, &[], &mut |_, _| false)
            .unwrap()
            .into_iter()
            .map(|g| g.tokens)
            .collect()
    };
    let adapted = run(&m);
    assert_eq!(adapted, run(&m.merge_lora().unwrap()));
    assert_ne!(adapted, run(&m.without_adapters()));
}

/// Cost of a LoRA forward + backward next to full fine-tuning's, on a small model (d 256, 4 layers,
/// V 2048, batch 4 × 128 tokens), interleaved runs, median of 7. Prints, asserts nothing; run with
/// `RAYON_NUM_THREADS=2 cargo test -p gradus-model --test lora -- --ignored lora_step_cost --nocapture`.
#[test]
#[ignore]
fn lora_step_cost() {
    let cfg = DecoderConfig {
        vocab_size: 2048,
        hidden_size: 256,
        intermediate_size: 688,
        num_hidden_layers: 4,
        num_attention_heads: 8,
        num_key_value_heads: 8,
        ..Default::default()
    };
    let full = Decoder::new_random(&cfg, 1, &Device::Cpu).unwrap();
    let mut lora_qv = full.clone();
    lora_qv
        .apply_lora(
            &LoraConfig {
                target_modules: vec!["q_proj".into(), "v_proj".into()],
                ..Default::default()
            },
            &mut Rng::new(1),
        )
        .unwrap();
    let mut lora_all = full.clone();
    lora_all
        .apply_lora(&all_modules(8, 16.0), &mut Rng::new(1))
        .unwrap();
    let (b, t) = (4, 128);
    let ids: Vec<u32> = (0..b * (t + 1)).map(|i| (i * 7919 % 2048) as u32).collect();
    let inp: Vec<u32> = ids.chunks(t + 1).flat_map(|r| r[..t].to_vec()).collect();
    let tg: Vec<u32> = ids.chunks(t + 1).flat_map(|r| r[1..].to_vec()).collect();
    let step = |m: &Decoder| {
        let t0 = std::time::Instant::now();
        let loss = m
            .target_logprobs(&ForwardInput::new(&inp, b, t), &tg)
            .unwrap()
            .mean_all()
            .unwrap()
            .neg()
            .unwrap();
        let g = loss.backward().unwrap();
        std::hint::black_box(g);
        t0.elapsed().as_secs_f64()
    };
    let models = [
        ("full fine-tuning", &full),
        ("LoRA q,v r 8", &lora_qv),
        ("LoRA all linear r 8", &lora_all),
    ];
    for (_, m) in models {
        step(m);
    }
    let mut times = vec![vec![]; models.len()];
    for _ in 0..7 {
        for (i, (_, m)) in models.iter().enumerate() {
            times[i].push(step(m));
        }
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let meds: Vec<f64> = times.iter_mut().map(med).collect();
    for ((name, _), m) in models.iter().zip(&meds) {
        println!(
            "{name}: forward + backward {:.1} ms (median of 7), {:.2}x full fine-tuning",
            m * 1e3,
            m / meds[0]
        );
    }
}
