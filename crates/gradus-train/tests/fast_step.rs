//! Training steps on the fast graph (`gradus_model::fast` + `AdamW::step_flat`) against the
//! reference path (candle autograd + `AdamW::step`), and whole recipes on both engines.
//!
//! Tolerances. One step: gradients agree to ~1e-6 relative (see gradus-model's tests/fast.rs),
//! but AdamW divides m by sqrt(v): an element whose gradient is ~1e-6 of the largest can move by
//! up to ~lr differently. So per step we require: max |Δ param| ≤ 2·lr (no update is wild), and
//! ≥ 99.9% of the elements within 1e-3·lr of the reference (the bulk of the update identical).
//! A wrong gradient (sign, missing term) moves most elements of a tensor by ~lr and fails the
//! second check. Recipes: logged losses agree to 1e-4 relative over 6 steps.

use gradus_data::pack::Batch;
use gradus_model::decoder::Decoder;
use gradus_model::fast::{FastDecoder, FastOptions};
use gradus_model::{DecoderConfig, Family};
use gradus_tensor::rng::Rng;
use gradus_tensor::Device;
use gradus_train::clip::{clip_flat_grad_norm, clip_grad_norm};
use gradus_train::optim::{AdamW, AdamWConfig};
use gradus_train::trainer::{batch_loss, fast_batch_loss};

fn tiny() -> DecoderConfig {
    DecoderConfig {
        family: Family::Qwen2,
        vocab_size: 80,
        hidden_size: 32,
        intermediate_size: 64,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        attention_bias: true,
        initializer_range: 0.1,
        ..Default::default()
    }
}

/// A packed batch of 3 rows × 24 tokens with two documents per row and a partial loss mask.
fn batch(seed: u64, vocab: usize) -> Batch {
    let (b, t) = (3, 24);
    let mut rng = Rng::new(seed);
    let input_ids: Vec<u32> = (0..b * t).map(|_| rng.below(vocab) as u32).collect();
    let targets: Vec<u32> = (0..b * t).map(|_| rng.below(vocab) as u32).collect();
    let mut position_ids = Vec::new();
    let mut segment_ids = Vec::new();
    for r in 0..b {
        let cut = 5 + 3 * r;
        for i in 0..t {
            position_ids.push(if i < cut { i } else { i - cut } as u32);
            segment_ids.push(if i < cut { 1 } else { 2 });
        }
    }
    let loss_weight = (0..b * t)
        .map(|i| if i % 7 == 0 { 0.0 } else { 1.0 })
        .collect();
    Batch {
        rows: b,
        seq_len: t,
        input_ids,
        targets,
        loss_weight,
        position_ids,
        segment_ids,
    }
}

fn flat(m: &Decoder) -> Vec<f32> {
    m.named_params()
        .iter()
        .flat_map(|(_, v)| v.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        .collect()
}

#[test]
fn adamw_steps_on_the_fast_graph_match_the_reference_steps() {
    let cfg = tiny();
    let reference = Decoder::new_random(&cfg, 11, &Device::Cpu).unwrap();
    let mut fast = FastDecoder::new(&reference, FastOptions::default()).unwrap();
    let params = reference.named_params();
    let lens: Vec<usize> = params.iter().map(|(_, v)| v.elem_count()).collect();
    let acfg = AdamWConfig {
        betas: (0.9, 0.95),
        eps: 1e-8,
        weight_decay: 0.1,
    };
    let mut opt_ref = AdamW::new(params.clone(), acfg).unwrap();
    let mut opt_fast = AdamW::new(params.clone(), acfg).unwrap();
    let lr = 1e-3;
    for step in 0..3 {
        // Two micro-batches per step (accumulation), clipping at a norm that bites.
        let micro = [
            batch(100 + 2 * step, cfg.vocab_size),
            batch(101 + 2 * step, cfg.vocab_size),
        ];
        let norm: f64 = micro.iter().map(|b| b.num_target_tokens() as f64).sum();
        let mut grads: Option<candle_core::backprop::GradStore> = None;
        let mut loss_ref = 0.0;
        for b in &micro {
            let l = batch_loss(&reference, b, norm).unwrap();
            loss_ref += l.to_scalar::<f32>().unwrap() as f64;
            let g = l.backward().unwrap();
            match grads.as_mut() {
                None => grads = Some(g),
                Some(acc) => gradus_train::clip::accumulate_grads(acc, &g, &params).unwrap(),
            }
        }
        let mut grads = grads.unwrap();
        let n_ref = clip_grad_norm(&mut grads, &params, 0.5).unwrap();
        opt_ref.step(&grads, lr).unwrap();

        fast.zero_grads();
        let mut loss_fast = 0.0;
        for b in &micro {
            loss_fast += fast_batch_loss(&mut fast, b, norm).unwrap();
        }
        let (p, g) = fast.params_and_grads();
        let n_fast = clip_flat_grad_norm(g, &lens, 0.5).unwrap();
        opt_fast.step_flat(p, g, lr).unwrap();

        assert!(
            (loss_ref - loss_fast).abs() <= 1e-5 * loss_ref.abs(),
            "step {step}: loss {loss_ref} vs {loss_fast}"
        );
        assert!(
            (n_ref - n_fast).abs() <= 1e-4 * n_ref,
            "step {step}: grad norm {n_ref} vs {n_fast}"
        );
        assert!(
            n_ref > 0.5,
            "the clip must bite for the test to cover it ({n_ref})"
        );
        let want = flat(&reference);
        let got = fast.params();
        let diffs: Vec<f32> = want.iter().zip(got).map(|(a, b)| (a - b).abs()).collect();
        let max = diffs.iter().cloned().fold(0f32, f32::max);
        let close = diffs.iter().filter(|&&d| d <= 1e-3 * lr as f32).count();
        assert!(
            max <= 2.0 * lr as f32,
            "step {step}: a parameter moved {max} away from the reference"
        );
        assert!(
            close as f64 >= 0.999 * diffs.len() as f64,
            "step {step}: only {close}/{} elements match",
            diffs.len()
        );
    }
    // write_to puts the trained weights into the model the checkpoint writer reads.
    let out = Decoder::new_random(&cfg, 99, &Device::Cpu).unwrap();
    fast.write_to(&out).unwrap();
    assert_eq!(flat(&out), fast.params());
}

mod recipes {
    use std::path::Path;

    use gradus_train::metrics::read_metrics;
    use gradus_train::recipe::{Engine, RecipeConfig};
    use gradus_train::schedule::Schedule;

    fn cfg(dir: &Path, name: &str, engine: Engine) -> RecipeConfig {
        let mut c = RecipeConfig::default();
        c.run.dir = dir.to_path_buf();
        c.run.name = name.into();
        c.run.seed = 4;
        c.model.config.hidden_size = 32;
        c.model.config.intermediate_size = 64;
        c.model.config.num_hidden_layers = 2;
        c.model.config.num_attention_heads = 4;
        c.model.config.num_key_value_heads = 2;
        c.tokenizer.train_vocab_size = 300;
        c.data.synthetic_examples = 200;
        c.data.seq_len = 48;
        c.train.steps = 6;
        c.train.batch_size = 4;
        c.train.grad_accum = 2;
        c.train.lr = 3e-3;
        c.train.progress = false;
        c.train.engine = engine;
        c.schedule = Schedule::Constant { warmup_steps: 0 };
        c
    }

    fn losses(dir: &Path) -> Vec<f64> {
        read_metrics(&dir.join("metrics.jsonl"))
            .unwrap()
            .iter()
            .map(|r| r["train/loss"].as_f64().unwrap())
            .collect()
    }

    #[test]
    fn pretrain_losses_agree_on_both_engines() {
        let d = tempfile::tempdir().unwrap();
        gradus_train::pretrain::run(&cfg(d.path(), "fast", Engine::Fast), false).unwrap();
        gradus_train::pretrain::run(&cfg(d.path(), "ref", Engine::Reference), false).unwrap();
        let (a, b) = (
            losses(&d.path().join("fast")),
            losses(&d.path().join("ref")),
        );
        assert_eq!(a.len(), 6);
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-4 * y.abs(),
                "step {}: fast {x} vs reference {y}",
                i + 1
            );
        }
        assert!(a[5] < a[0], "the fast engine learns: {a:?}");
    }
}
