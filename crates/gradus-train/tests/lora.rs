//! `[lora]` in `train sft` and `train pretrain` end to end on a tiny random base: only the adapters
//! train (the base stays bit-identical), checkpoints are PEFT adapter directories that reproduce
//! the trained model when loaded on the base, an interrupted and resumed run equals an
//! uninterrupted one bit for bit (adapter dropout included), and the fast and reference engines
//! give the same losses.

mod common;
use common::{col, init_model};

use std::path::Path;

use gradus_data::pack::{Overflow, RowCursor};
use gradus_data::tokenizer::Tokenizer;
use gradus_model::{Decoder, ForwardInput, LoraConfig};
use gradus_tasks::Split;
use gradus_tensor::Device;
use gradus_train::recipe::{Engine, RecipeConfig};
use gradus_train::rundir::Start;
use gradus_train::schedule::Schedule;

fn lora(dropout: f64) -> LoraConfig {
    LoraConfig {
        r: 4,
        lora_alpha: 8.0,
        lora_dropout: dropout,
        target_modules: vec!["q_proj".into(), "v_proj".into(), "down_proj".into()],
        use_rslora: false,
    }
}

/// A tiny SFT run from `init` with adapters (dropout `p`).
fn sft_cfg(dir: &Path, init: &Path, name: &str, p: f64) -> RecipeConfig {
    let mut c = RecipeConfig::default();
    c.run.dir = dir.to_path_buf();
    c.run.name = name.into();
    c.run.seed = 3;
    c.model.init_from = Some(init.to_path_buf());
    c.data.source = "synthetic".into();
    c.data.synthetic_examples = 64;
    c.data.seq_len = 128;
    c.data.val_fraction = 0.1;
    c.train.steps = 6;
    c.train.batch_size = 4;
    c.train.grad_accum = 2;
    c.train.lr = 1e-2;
    c.train.eval_every = 3;
    c.train.progress = false;
    c.optimizer.weight_decay = 0.0;
    c.schedule = Schedule::Constant { warmup_steps: 0 };
    c.lora = Some(lora(p));
    c
}

fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Log-probs of a fixed sequence under `m` (adapter dropout off).
fn logps(m: &Decoder) -> Vec<f32> {
    m.set_lora_training(false);
    let ids: Vec<u32> = (3..40).collect();
    let tg: Vec<u32> = (4..41).collect();
    m.target_logprobs(&ForwardInput::new(&ids, 1, ids.len()), &tg)
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn sft_lora_freezes_the_base_and_its_adapter_reproduces_the_model() {
    let d = tempfile::tempdir().unwrap();
    let init = init_model(d.path(), false);
    let cfg = sft_cfg(d.path(), &init, "fit", 0.1);
    let tok = Tokenizer::from_dir(&init).unwrap();
    let mut model = gradus_model::hf::load_decoder(&init, &Device::Cpu).unwrap();
    let ex = gradus_train::sft::synthetic_examples(64, 3, Split::Train);
    let seqs = gradus_train::sft::sequences(&tok, &ex, true).unwrap();
    let pad = tok.pad_id().or(tok.eos_id()).unwrap_or(0);
    let rows = gradus_train::prep::rows_with(&cfg, &seqs, pad, Overflow::Skip).unwrap();
    let mut data = RowCursor::new(rows, 4, 3).unwrap();
    let mut run = gradus_train::prep::start_run(&cfg, &Start::New).unwrap();
    let s = gradus_train::trainer::fit_validated(&mut model, &tok, &mut data, &[], &cfg, &mut run)
        .unwrap();
    drop(run);

    // The base is bit-identical to the checkpoint it came from; the adapters moved off their init
    // (B was 0).
    let base = gradus_model::hf::load_decoder(&init, &Device::Cpu).unwrap();
    for ((n, a), (_, b)) in model.named_params().iter().zip(base.named_params()) {
        let (a, b): (Vec<f32>, Vec<f32>) = (
            a.as_tensor().flatten_all().unwrap().to_vec1().unwrap(),
            b.as_tensor().flatten_all().unwrap().to_vec1().unwrap(),
        );
        assert!(
            a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "base weight {n} changed"
        );
    }
    let lp = model.lora_params();
    assert_eq!(lp.len(), 2 * 3 * 2, "A and B of 3 modules in 2 layers");
    for (n, v) in lp.iter().filter(|(n, _)| n.contains("lora_B")) {
        let m = v.as_tensor().abs().unwrap().max_all().unwrap();
        assert!(m.to_scalar::<f32>().unwrap() > 0.0, "{n} never trained");
    }

    // The checkpoint is a PEFT adapter directory naming the base; loaded on it (merged), it gives
    // the trained model's log-probs. Tolerance: merging adds s·BA into W, which rounds differently
    // from the unmerged x Wᵀ + s·(x Aᵀ)Bᵀ (f32, a few ulps of O(1) logits).
    let ck = s.last_checkpoint.unwrap();
    assert!(
        ck.join("adapter_config.json").is_file() && ck.join("adapter_model.safetensors").is_file()
    );
    assert!(
        !ck.join("model.safetensors").exists(),
        "a LoRA checkpoint holds the adapter only"
    );
    assert!(ck.join("tokenizer.json").is_file() && ck.join("optimizer.safetensors").is_file());
    let ac: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ck.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(ac["base_model_name_or_path"], init.display().to_string());
    assert_eq!(ac["r"], 4);
    let loaded = gradus_model::lora::load_model_dir(&ck, &Device::Cpu).unwrap();
    let (a, b) = (logps(&model), logps(&loaded));
    let diff = gradus_tensor::tol::max_abs_diff(&a, &b);
    assert!(diff <= 1e-4, "adapter on base vs trained model: {diff}");
    // ... and the adapter matters: without it the log-probs are the base's.
    let diff_base = gradus_tensor::tol::max_abs_diff(&a, &logps(&base));
    assert!(
        diff_base > 1e-3,
        "the adapter changed nothing ({diff_base})"
    );
}

#[test]
fn sft_lora_resumes_bit_identically() {
    // Dropout 0.1: the mask stream is part of the checkpoint. Stopped after 3 of 6 steps and
    // resumed, the losses (and val/loss) equal the uninterrupted run's bit for bit.
    let d = tempfile::tempdir().unwrap();
    let init = init_model(d.path(), true);
    let full = sft_cfg(d.path(), &init, "full", 0.1);
    let s = gradus_train::sft::run(&full, false).unwrap();
    assert_eq!(s.steps, 6);
    let mut split = sft_cfg(d.path(), &init, "split", 0.1);
    split.train.stop_after = 3;
    gradus_train::sft::run(&split, false).unwrap();
    let ck3 = d.path().join("split/checkpoints/step-3");
    assert!(ck3.join("adapter_model.safetensors").is_file());
    let st: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ck3.join("trainer_state.json")).unwrap())
            .unwrap();
    assert!(
        st["data_cursor"]["lora_dropout"].is_object(),
        "the dropout stream is saved: {st}"
    );
    gradus_train::sft::run(&split, true).unwrap();
    for key in ["train/loss", "val/loss"] {
        let (a, b) = (
            col(&d.path().join("full"), key),
            col(&d.path().join("split"), key),
        );
        assert!(!a.is_empty(), "{key} logged");
        assert_eq!(bits(&a), bits(&b), "{key}: resumed run differs");
    }
    let loss = col(&d.path().join("full"), "train/loss");
    assert!(loss[5] < loss[0], "the adapters learn: {loss:?}");
}

#[test]
fn pretrain_lora_losses_agree_on_both_engines() {
    // The fast graph draws the reference path's dropout masks, so with dropout 0.1 both engines
    // see the same masks: losses agree to f32 rounding (relative 1e-4, as the full-model engine
    // test), step after step.
    let d = tempfile::tempdir().unwrap();
    let init = init_model(d.path(), false);
    let mk = |name: &str, engine: Engine| {
        let mut c = sft_cfg(d.path(), &init, name, 0.1);
        c.data.synthetic_examples = 200;
        c.data.seq_len = 48;
        c.train.engine = engine;
        c
    };
    gradus_train::pretrain::run(&mk("fast", Engine::Fast), false).unwrap();
    gradus_train::pretrain::run(&mk("ref", Engine::Reference), false).unwrap();
    let (a, b) = (
        col(&d.path().join("fast"), "train/loss"),
        col(&d.path().join("ref"), "train/loss"),
    );
    assert_eq!(a.len(), 6);
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-4 * y.abs(),
            "step {}: fast {x} vs reference {y}",
            i + 1
        );
    }
    assert!(a[5] < a[0], "the adapters learn: {a:?}");
    assert!(d
        .path()
        .join("fast/checkpoints/step-6/adapter_model.safetensors")
        .is_file());
}

#[test]
fn lora_settings_are_checked() {
    let d = tempfile::tempdir().unwrap();
    // From scratch: nothing to adapt.
    let mut c = sft_cfg(d.path(), d.path(), "x", 0.0);
    c.model.init_from = None;
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("lora") && e.contains("model.init_from"), "{e}");
    // A bad field is named.
    let mut c = sft_cfg(d.path(), d.path(), "x", 0.0);
    c.lora.as_mut().unwrap().target_modules = vec!["qkv".into()];
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.contains("lora.target_modules") && e.contains("qkv"),
        "{e}"
    );
    // [lora] is a shared section: parsed from TOML like every other.
    let t: RecipeConfig = toml::from_str("[lora]\nr = 2\ntarget_modules = [\"o_proj\"]\n").unwrap();
    assert_eq!(t.lora.unwrap().r, 2);
}

#[test]
fn an_adapter_checkpoint_can_be_the_base_of_the_next_run() {
    // SFT with LoRA, then a second LoRA run from that adapter checkpoint (e.g. SFT → DPO): the
    // first adapter is merged onto its base to make the second run's frozen base, and the second
    // checkpoint loads through the chain (adapter → adapter → model).
    let d = tempfile::tempdir().unwrap();
    let init = init_model(d.path(), false);
    let mut a = sft_cfg(d.path(), &init, "first", 0.0);
    a.train.steps = 2;
    let ck_a = gradus_train::sft::run(&a, false)
        .unwrap()
        .last_checkpoint
        .unwrap();
    let mut b = sft_cfg(d.path(), &ck_a, "second", 0.0);
    b.train.steps = 2;
    b.run.seed = 4;
    let ck_b = gradus_train::sft::run(&b, false)
        .unwrap()
        .last_checkpoint
        .unwrap();
    let ac: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ck_b.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(ac["base_model_name_or_path"], ck_a.display().to_string());
    let (ma, mb) = (
        gradus_model::lora::load_model_dir(&ck_a, &Device::Cpu).unwrap(),
        gradus_model::lora::load_model_dir(&ck_b, &Device::Cpu).unwrap(),
    );
    assert!(!mb.has_lora(), "merged");
    let diff = gradus_tensor::tol::max_abs_diff(&logps(&ma), &logps(&mb));
    assert!(diff > 1e-4, "the second adapter changed nothing ({diff})");
}

#[test]
fn weight_norms_of_a_lora_model_are_those_of_the_weights_it_computes_with() {
    // The frozen base never moves, so its norms say nothing about a LoRA run: the logged norms
    // are those of W + s·BA, and each layer's adapter update s·BA gets its own norm. Checked
    // against norms computed here from the parameters themselves (q_proj, v_proj and down_proj
    // of each layer are adapted; the embeddings, final norm and head are not).
    use gradus_model::config::DecoderConfig;
    use gradus_tensor::rng::Rng;
    let cfg = DecoderConfig {
        vocab_size: 40,
        hidden_size: 16,
        intermediate_size: 32,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        num_key_value_heads: 2,
        max_position_embeddings: 32,
        ..DecoderConfig::default()
    };
    let mut m = Decoder::new_random(&cfg, 1, &Device::Cpu).unwrap();
    let plain = gradus_train::trainer::weight_norms(&m).unwrap();
    assert!(plain.keys().all(|k| !k.contains("lora")), "{plain:?}");
    m.apply_lora(&lora(0.0), &mut Rng::new(2)).unwrap();
    // B starts at zero (PEFT): give every B a value so the update is not zero.
    for (name, v) in m.lora_params() {
        if name.contains("lora_B") {
            let t = v.as_tensor();
            let n = t.elem_count();
            let vals: Vec<f32> = (0..n).map(|i| ((i % 7) as f32 - 3.0) * 0.05).collect();
            v.set(&gradus_tensor::Tensor::from_vec(vals, t.shape(), &Device::Cpu).unwrap())
                .unwrap();
        }
    }
    let got = gradus_train::trainer::weight_norms(&m).unwrap();
    let f = |k: &str| got[k].as_f64().unwrap();
    let ss = |t: &gradus_tensor::Tensor| -> f64 {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|&x| x as f64 * x as f64)
            .sum()
    };
    let scale = 8.0 / 4.0; // lora_alpha / r
    let lp: std::collections::BTreeMap<String, gradus_tensor::Var> =
        m.lora_params().into_iter().collect();
    for layer in 0..2 {
        let (mut eff, mut delta) = (0.0, 0.0);
        for (name, v) in m.named_params() {
            if !name.starts_with(&format!("model.layers.{layer}.")) {
                continue;
            }
            let w = v.as_tensor().clone();
            let module = name.trim_end_matches(".weight");
            let a = lp.keys().find(|k| k.contains(&format!("{module}.lora_A")));
            let w = match a {
                Some(a) => {
                    let b = lp[&a.replace("lora_A", "lora_B")].as_tensor().clone();
                    let d = (b.matmul(lp[a].as_tensor()).unwrap() * scale).unwrap();
                    delta += ss(&d);
                    (w + d).unwrap()
                }
                None => w,
            };
            eff += ss(&w);
        }
        let g = |k: &str| format!("weights/layer.{layer}/{k}");
        assert!((f(&g("norm")) - eff.sqrt()).abs() < 1e-4, "{got:?}");
        assert!(
            (f(&g("lora_delta_norm")) - delta.sqrt()).abs() < 1e-4,
            "{got:?}"
        );
        assert!(delta > 0.0);
        // The base alone gives a different number (the old metric).
        assert!((plain[&g("norm")].as_f64().unwrap() - eff.sqrt()).abs() > 1e-3);
    }
    // Unadapted groups: the same norm as without adapters, and no delta.
    assert_eq!(got["weights/lm_head/norm"], plain["weights/lm_head/norm"]);
    assert!(!got.contains_key("weights/lm_head/lora_delta_norm"));
}
