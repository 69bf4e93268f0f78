//! Parity with TRL 1.16's GRPOTrainer and RLOOTrainer: advantages, loss and gradient norm of one
//! update on a tiny random Llama, from `tests/fixtures/trl_grpo/` (written by its `gen.py`; see the
//! README there for what TRL was asked to do).

use std::path::PathBuf;

use gradus_model::fast::{FastDecoder, FastOptions};
use gradus_model::hf::load_decoder;
use gradus_objectives::rl::{
    combine_rewards, group_advantages, rloo_advantages, ClipConfig, KlEstimator, LossAggregation,
    RatioLevel, RewardScale, StepTotals,
};
use gradus_tensor::Device;
use gradus_train::clip::flat_grad_norm;
use gradus_train::rl::step::{completion_logps, policy_micro_step, LossSettings, Sample};
use serde_json::Value;

/// Loss and gradient norm: the bar (f32 on both sides, different summation orders).
const TOL: f64 = 1e-5;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/trl_grpo")
}

fn expected(name: &str) -> Value {
    let p = fixture().join(format!("expected_{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// Prompt ids and completion ids (the padding cut off by the mask) of the fixture's 12 rows.
fn rows(e: &Value) -> Vec<(Vec<u32>, Vec<u32>)> {
    let inp = &e["inputs"];
    let prompts = inp["prompt_ids"].as_array().unwrap();
    let comps = inp["completion_ids"].as_array().unwrap();
    let masks = inp["completion_mask"].as_array().unwrap();
    prompts
        .iter()
        .zip(comps)
        .zip(masks)
        .map(|((p, c), m)| {
            let n = u32s(m).iter().filter(|&&x| x == 1).count();
            (u32s(p), u32s(c)[..n].to_vec())
        })
        .collect()
}

/// The two reward functions' values as the fixture lists them (null = not applicable).
fn rewards(e: &Value) -> Vec<Option<f32>> {
    let per: Vec<Vec<Option<f32>>> = ["acc", "fmt"]
        .iter()
        .map(|k| {
            e["rewards"][k]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|g| {
                    g.as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_f64().map(|v| v as f32))
                })
                .collect()
        })
        .collect();
    let w = f32s(&e["settings"]["reward_weights"]);
    combine_rewards(&per, &w, &["acc".into(), "fmt".into()]).unwrap()
}

fn fast(dir: &str) -> FastDecoder {
    let m = load_decoder(&fixture().join(dir), &Device::Cpu).unwrap();
    FastDecoder::new(&m, FastOptions::default()).unwrap()
}

fn close(what: &str, got: f64, want: f64, tol: f64) {
    assert!(
        (got - want).abs() <= tol * (1.0 + want.abs()),
        "{what}: gradus {got}, TRL {want} (diff {:e})",
        (got - want).abs()
    );
}

fn grad_norm(f: &FastDecoder) -> f64 {
    let lens: Vec<usize> = f.layout().entries.iter().map(|e| e.len).collect();
    flat_grad_norm(f.grads(), &lens)
}

#[test]
fn grpo_advantages_match_trl() {
    // TRL computes them in f32 from the same rewards: nanmean, unbiased nanstd, + 1e-4; gradus'
    // values are bit-identical.
    let e = expected("grpo");
    let r = rewards(&e);
    for (scale, key) in [
        (RewardScale::Group, "group"),
        (RewardScale::Batch, "batch"),
        (RewardScale::None, "none"),
    ] {
        let a = group_advantages(&r, 4, scale).unwrap();
        let want = f32s(&e["advantages"][key]);
        for (i, (g, w)) in a.advantages.iter().zip(&want).enumerate() {
            assert_eq!(
                g.to_bits(),
                w.to_bits(),
                "{key}: advantage {i}: gradus {g}, TRL {w}"
            );
        }
    }
}

#[test]
fn grpo_loss_and_grad_norm_match_trl() {
    let e = expected("grpo");
    let rows = rows(&e);
    let s = &e["settings"];
    let pad = 0;
    // The reference model's log-probs, computed here (TRL's are the check).
    let mut reference = fast("ref");
    let pairs: Vec<(&[u32], &[u32])> = rows
        .iter()
        .map(|(p, c)| (p.as_slice(), c.as_slice()))
        .collect();
    let ref_lp = completion_logps(&mut reference, &pairs, pad).unwrap();
    let trl_ref = e["inputs"]["ref_per_token_logps"].as_array().unwrap();
    let mut policy = fast("model");
    let pol_lp = completion_logps(&mut policy, &pairs, pad).unwrap();
    let trl_pol = e["inputs"]["policy_logps"].as_array().unwrap();
    for i in 0..rows.len() {
        for (j, (&r, &p)) in ref_lp[i].iter().zip(&pol_lp[i]).enumerate() {
            close("ref logp", r as f64, f32s(&trl_ref[i])[j] as f64, TOL);
            close("policy logp", p as f64, f32s(&trl_pol[i])[j] as f64, TOL);
        }
    }
    let adv = group_advantages(&rewards(&e), 4, RewardScale::Group)
        .unwrap()
        .advantages;
    let old = e["inputs"]["old_per_token_logps"].as_array().unwrap();
    let samples: Vec<Sample> = rows
        .iter()
        .enumerate()
        .map(|(i, (p, c))| Sample {
            group: i / 4,
            prompt: p.clone(),
            completion: c.clone(),
            terminated: true,
            in_loss: true,
            advantages: vec![adv[i]],
            old_logps: Some(f32s(&old[i])[..c.len()].to_vec()),
            ref_logps: Some(ref_lp[i].clone()),
            values: None,
            returns: None,
        })
        .collect();
    let refs: Vec<&Sample> = samples.iter().collect();
    let tokens: usize = rows.iter().map(|(_, c)| c.len()).sum();
    assert_eq!(
        tokens as u64,
        e["inputs"]["num_items_in_batch"].as_u64().unwrap()
    );
    let totals = StepTotals {
        sequences: rows.len(),
        tokens: tokens as f64,
        micro_batches: 1,
        max_completion_len: s["max_completion_length"].as_u64().unwrap() as usize,
    };
    let cases = e["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 8);
    for c in cases {
        let aggregation = match c["loss_type"].as_str().unwrap() {
            "grpo" => LossAggregation::Grpo,
            "bnpo" => LossAggregation::Bnpo,
            "dr_grpo" => LossAggregation::DrGrpo,
            "dapo" => LossAggregation::Dapo,
            x => panic!("loss type {x}"),
        };
        let level = match c["importance_sampling_level"].as_str().unwrap() {
            "token" => RatioLevel::Token,
            _ => RatioLevel::Sequence,
        };
        let settings = LossSettings {
            clip: ClipConfig {
                eps_low: s["epsilon"].as_f64().unwrap(),
                eps_high: s["epsilon_high"].as_f64().unwrap(),
                dual_clip: None,
                level,
            },
            beta: s["beta"].as_f64().unwrap(),
            kl: KlEstimator::K3,
            kl_correction: c["use_bias_correction_kl"].as_bool().unwrap(),
            aggregation,
        };
        policy.zero_grads();
        let out = policy_micro_step(&mut policy, &refs, &settings, &totals, pad).unwrap();
        let what = format!("{c}");
        close(
            &format!("loss {what}"),
            out.loss,
            c["loss"].as_f64().unwrap(),
            TOL,
        );
        close(
            &format!("grad norm {what}"),
            grad_norm(&policy),
            c["grad_norm"].as_f64().unwrap(),
            TOL,
        );
        let m = &c["metrics"];
        close(
            "kl",
            out.kl_sum / out.tokens,
            m["kl"].as_f64().unwrap(),
            TOL,
        );
        close(
            "clip_ratio/low_mean",
            out.clip_low / out.clip_count,
            m["clip_ratio/low_mean"].as_f64().unwrap(),
            1e-6,
        );
        close(
            "clip_ratio/region_mean",
            out.clip_region / out.clip_count,
            m["clip_ratio/region_mean"].as_f64().unwrap(),
            1e-6,
        );
    }
}

#[test]
fn rloo_advantages_loss_and_grad_norm_match_trl() {
    let e = expected("rloo");
    let rows = rows(&e);
    let s = &e["settings"];
    let beta = s["beta"].as_f64().unwrap() as f32;
    let pad = 0;
    let pairs: Vec<(&[u32], &[u32])> = rows
        .iter()
        .map(|(p, c)| (p.as_slice(), c.as_slice()))
        .collect();
    let mut policy = fast("model");
    let mut reference = fast("ref");
    let old_lp = completion_logps(&mut policy, &pairs, pad).unwrap();
    let ref_lp = completion_logps(&mut reference, &pairs, pad).unwrap();
    // TRL's RLOO: r − β Σ_t (log π_old − log π_ref) (k1 summed), then leave-one-out.
    let r: Vec<Option<f32>> = rewards(&e)
        .iter()
        .enumerate()
        .map(|(i, r)| {
            r.map(|r| {
                let kl: f32 = old_lp[i].iter().zip(&ref_lp[i]).map(|(o, f)| o - f).sum();
                r - beta * kl
            })
        })
        .collect();
    for (norm, key) in [(false, "plain"), (true, "normalized")] {
        let a = rloo_advantages(&r, 4, norm).unwrap();
        for (i, (g, w)) in a
            .advantages
            .iter()
            .zip(f32s(&e["advantages"][key]))
            .enumerate()
        {
            close(&format!("{key} advantage {i}"), *g as f64, w as f64, TOL);
        }
    }
    let adv = rloo_advantages(&r, 4, false).unwrap().advantages;
    // TRL's loss: ρ = exp(Σ_t log π − old_logps) per sequence (old_logps the perturbed sums the
    // fixture fed it), −min(ρA, clip(ρ)A), mean over sequences. The summed old log-prob is put on
    // the first token (the ratio only sees the sum).
    let old_sums = f32s(&e["inputs"]["old_logps"]);
    let samples: Vec<Sample> = rows
        .iter()
        .enumerate()
        .map(|(i, (p, c))| {
            let mut old = vec![0f32; c.len()];
            old[0] = old_sums[i];
            Sample {
                group: i / 4,
                prompt: p.clone(),
                completion: c.clone(),
                terminated: true,
                in_loss: true,
                advantages: vec![adv[i]],
                old_logps: Some(old),
                ref_logps: None,
                values: None,
                returns: None,
            }
        })
        .collect();
    let refs: Vec<&Sample> = samples.iter().collect();
    let totals = StepTotals {
        sequences: rows.len(),
        tokens: rows.iter().map(|(_, c)| c.len()).sum::<usize>() as f64,
        micro_batches: 1,
        max_completion_len: 6,
    };
    let settings = LossSettings {
        clip: ClipConfig {
            eps_low: s["epsilon"].as_f64().unwrap(),
            eps_high: s["epsilon_high"].as_f64().unwrap(),
            dual_clip: None,
            level: RatioLevel::SequenceSum,
        },
        beta: 0.0,
        kl: KlEstimator::K1,
        kl_correction: false,
        aggregation: LossAggregation::Grpo,
    };
    policy.zero_grads();
    let out = policy_micro_step(&mut policy, &refs, &settings, &totals, pad).unwrap();
    let c = &e["cases"][0];
    close("rloo loss", out.loss, c["loss"].as_f64().unwrap(), TOL);
    close(
        "rloo grad norm",
        grad_norm(&policy),
        c["grad_norm"].as_f64().unwrap(),
        TOL,
    );
    close(
        "rloo clip region",
        out.clip_region / out.clip_count,
        c["metrics"]["clip_ratio/region_mean"].as_f64().unwrap(),
        1e-6,
    );
}
