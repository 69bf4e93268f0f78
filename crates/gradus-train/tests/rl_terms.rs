//! The entropy bonus and PPO's value term of a policy micro-step on the fast graph (tiny random
//! decoder): the step's gradient does not depend on how it is split into micro-batches (dapo and
//! grpo aggregation), a detached value head leaves the trunk alone while a shared one does not,
//! the value head regresses on the returns, and the entropy bonus raises the policy's entropy.

use gradus_model::decoder::Decoder;
use gradus_model::fast::{FastDecoder, FastOptions};
use gradus_model::DecoderConfig;
use gradus_objectives::rl::{ClipConfig, KlEstimator, LossAggregation, RatioLevel, StepTotals};
use gradus_tensor::rng::Rng;
use gradus_tensor::Device;
use gradus_train::rl::step::{policy_micro_step_ext, Extras, LossSettings, Sample, ValueTerm};
use gradus_train::value_head::ValueHead;

const D: usize = 16;

fn graph() -> FastDecoder {
    let cfg = DecoderConfig {
        vocab_size: 31,
        hidden_size: D,
        intermediate_size: 24,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        num_key_value_heads: 2,
        initializer_range: 0.2,
        ..Default::default()
    };
    let m = Decoder::new_random(&cfg, 5, &Device::Cpu).unwrap();
    FastDecoder::new(&m, FastOptions::default()).unwrap()
}

/// `n` samples with prompts of 3 tokens, completions of 2-5 tokens, one advantage each (×`adv`)
/// and random rollout values and returns.
fn samples(n: usize, adv: f32, seed: u64) -> Vec<Sample> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| {
            let len = 2 + rng.below(4);
            let tok = |rng: &mut Rng, k: usize| (0..k).map(|_| 1 + rng.below(30) as u32).collect();
            let prompt: Vec<u32> = tok(&mut rng, 3);
            let completion: Vec<u32> = tok(&mut rng, len);
            let values = (0..len).map(|_| rng.normal() as f32 * 0.5).collect();
            let returns = (0..len).map(|_| rng.normal() as f32).collect();
            Sample {
                group: i,
                prompt,
                completion,
                terminated: true,
                in_loss: true,
                advantages: vec![adv * rng.normal() as f32],
                old_logps: None,
                ref_logps: None,
                values: Some(vec![values]),
                returns: Some(vec![returns]),
            }
        })
        .collect()
}

fn settings(agg: LossAggregation) -> LossSettings {
    LossSettings {
        clip: ClipConfig {
            eps_low: 0.2,
            eps_high: 0.2,
            dual_clip: None,
            level: RatioLevel::Token,
        },
        beta: 0.0,
        kl: KlEstimator::K3,
        kl_correction: true,
        aggregation: agg,
    }
}

fn head(seed: u64) -> ValueHead {
    let mut h = ValueHead::new(D);
    let mut rng = Rng::new(seed);
    for w in h.w.iter_mut() {
        *w = rng.normal() as f32 * 0.3;
    }
    h.b = 0.1;
    h
}

/// The step's trunk and head gradients with the samples split into `micro` micro-batches.
fn step_grads(
    s: &[Sample],
    micro: usize,
    agg: LossAggregation,
    entropy: f64,
    detach: bool,
) -> (Vec<f32>, Vec<f32>) {
    let mut f = graph();
    f.set_entropy(true);
    f.zero_grads();
    let mut h = head(9);
    let tokens: usize = s.iter().map(|x| x.completion.len()).sum();
    let totals = StepTotals {
        sequences: s.len(),
        tokens: tokens as f64,
        micro_batches: micro,
        max_completion_len: 5,
    };
    for chunk in s.chunks(s.len() / micro) {
        let refs: Vec<&Sample> = chunk.iter().collect();
        let ex = Extras {
            entropy_coef: entropy,
            value: Some(ValueTerm {
                heads: std::slice::from_mut(&mut h),
                coefs: &[0.5],
                clip: 0.2,
                detach,
            }),
        };
        policy_micro_step_ext(&mut f, &refs, &settings(agg), &totals, 0, ex).unwrap();
    }
    (f.grads().to_vec(), h.grad.clone())
}

fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-12);
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
        / scale
}

#[test]
fn the_step_gradient_does_not_depend_on_the_micro_batch_split() {
    let s = samples(8, 1.0, 1);
    for agg in [LossAggregation::Dapo, LossAggregation::Grpo] {
        let (g1, h1) = step_grads(&s, 1, agg, 0.05, false);
        let (g4, h4) = step_grads(&s, 4, agg, 0.05, false);
        assert!(g1.iter().any(|&x| x != 0.0) && h1.iter().any(|&x| x != 0.0));
        let (dg, dh) = (max_rel_diff(&g4, &g1), max_rel_diff(&h4, &h1));
        assert!(
            dg < 1e-5,
            "{agg:?}: trunk gradients differ by {dg} (relative)"
        );
        assert!(
            dh < 1e-5,
            "{agg:?}: head gradients differ by {dh} (relative)"
        );
    }
}

#[test]
fn a_detached_value_head_leaves_the_trunk_alone() {
    // Zero advantages and no entropy bonus: the only loss term is the value loss.
    let s = samples(4, 0.0, 2);
    let (g, h) = step_grads(&s, 1, LossAggregation::Dapo, 0.0, true);
    assert!(
        g.iter().all(|&x| x == 0.0),
        "detached: the trunk got a gradient"
    );
    assert!(h.iter().any(|&x| x != 0.0), "the head got no gradient");
    let (g, _) = step_grads(&s, 1, LossAggregation::Dapo, 0.0, false);
    assert!(
        g.iter().any(|&x| x != 0.0),
        "shared: the trunk got no gradient"
    );
}

#[test]
fn the_value_head_regresses_on_the_returns() {
    // Fixed hidden states (detached head, zero advantages): Adam on the value loss brings the
    // predictions to the returns. Wide value clip, so the clipped branch never binds.
    let s = samples(4, 0.0, 3);
    let refs: Vec<&Sample> = s.iter().collect();
    let tokens: usize = s.iter().map(|x| x.completion.len()).sum();
    let totals = StepTotals {
        sequences: 4,
        tokens: tokens as f64,
        micro_batches: 1,
        max_completion_len: 5,
    };
    let mut f = graph();
    let mut h = ValueHead::new(D);
    let mut losses = Vec::new();
    for _ in 0..300 {
        let ex = Extras {
            entropy_coef: 0.0,
            value: Some(ValueTerm {
                heads: std::slice::from_mut(&mut h),
                coefs: &[1.0],
                clip: 1e6,
                detach: true,
            }),
        };
        let out = policy_micro_step_ext(
            &mut f,
            &refs,
            &settings(LossAggregation::Dapo),
            &totals,
            0,
            ex,
        )
        .unwrap();
        losses.push(out.value_loss_sum / tokens as f64);
        h.step(0.03);
    }
    // Returns are N(0, 1) (mean-square ≈ 1 → loss ≈ 0.5 at V = 0); a linear head on 16-wide
    // hidden states can fit 4-20 targets only in part, but must cut the loss well down.
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!(last < 0.5 * first, "value loss {first} → {last}");
}

#[test]
fn the_entropy_bonus_raises_the_policy_entropy() {
    let s = samples(4, 0.0, 4);
    let refs: Vec<&Sample> = s.iter().collect();
    let tokens: usize = s.iter().map(|x| x.completion.len()).sum();
    let totals = StepTotals {
        sequences: 4,
        tokens: tokens as f64,
        micro_batches: 1,
        max_completion_len: 5,
    };
    let mut f = graph();
    f.set_entropy(true);
    let mut ent = Vec::new();
    for _ in 0..5 {
        f.zero_grads();
        let out = policy_micro_step_ext(
            &mut f,
            &refs,
            &settings(LossAggregation::Dapo),
            &totals,
            0,
            Extras {
                entropy_coef: 1.0,
                value: None,
            },
        )
        .unwrap();
        ent.push(out.entropy_sum / tokens as f64);
        let (p, g) = f.params_and_grads();
        for (p, g) in p.iter_mut().zip(g.iter()) {
            *p -= 0.5 * g;
        }
    }
    assert!(
        ent.windows(2).all(|w| w[1] > w[0]),
        "entropy should rise under the bonus: {ent:?}"
    );
    // Without set_entropy the bonus is refused, naming why.
    let mut g = graph();
    let err = policy_micro_step_ext(
        &mut g,
        &refs,
        &settings(LossAggregation::Dapo),
        &totals,
        0,
        Extras {
            entropy_coef: 1.0,
            value: None,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("set_entropy"), "{err}");
}
