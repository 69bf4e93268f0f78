//! Continuous inputs in the fast training graph: `forward_with_embeds` + `input_grad` + the
//! [`InputProjection`] against the candle reference twin (`Decoder::hidden_states_with_embeds`
//! with the projection as a candle `Var`, autograd for every gradient), plus a central finite
//! difference of the projection weight through the whole fast graph, `head_logits` against the
//! log-probs, and input errors.
//!
//! Tolerances as in `tests/fast.rs`: log-probs within `FUSED_VS_REF_F32`, gradients within
//! 1e-3 · (max |reference|) + 1e-6 per tensor.

use gradus_model::decoder::{Decoder, ForwardInput};
use gradus_model::fast::{FastDecoder, FastOptions, InputProjection};
use gradus_model::{DecoderConfig, Family};
use gradus_tensor::rng::Rng;
use gradus_tensor::tol::{max_abs_diff, FUSED_VS_REF_F32};
use gradus_tensor::{Device, Tensor, Var};

const DIN: usize = 5;

fn cfg() -> DecoderConfig {
    DecoderConfig {
        family: Family::Llama,
        vocab_size: 11,
        hidden_size: 16,
        intermediate_size: 24,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        num_key_value_heads: 2,
        tie_word_embeddings: false,
        initializer_range: 0.3,
        ..Default::default()
    }
}

struct Case {
    b: usize,
    t: usize,
    ids: Vec<u32>,
    targets: Vec<u32>,
    /// (B·T, DIN): every other row zero (a "token" row), the others random (an "item" row).
    x: Vec<f32>,
    coef: Vec<f32>,
}

fn case(seed: u64) -> Case {
    let (b, t) = (2, 9);
    let mut rng = Rng::new(seed);
    let ids = (0..b * t).map(|_| rng.below(11) as u32).collect();
    let targets = (0..b * t).map(|_| rng.below(11) as u32).collect();
    let mut x = vec![0f32; b * t * DIN];
    for r in (0..b * t).step_by(2) {
        for v in &mut x[r * DIN..(r + 1) * DIN] {
            *v = rng.normal() as f32;
        }
    }
    let coef = (0..b * t).map(|_| (rng.normal() * 0.5) as f32).collect();
    Case {
        b,
        t,
        ids,
        targets,
        x,
        coef,
    }
}

fn fast_loss(f: &mut FastDecoder, p: &InputProjection, c: &Case) -> f64 {
    let e = p.forward(&c.x, c.b * c.t).unwrap();
    let inp = ForwardInput::new(&c.ids, c.b, c.t);
    let lp = f.forward_with_embeds(&inp, Some(&e), &c.targets).unwrap();
    lp.iter().zip(&c.coef).map(|(&a, &b)| (a * b) as f64).sum()
}

#[test]
fn embeds_and_projection_match_the_candle_twin() {
    let c = cfg();
    let m = Decoder::new_random(&c, 3, &Device::Cpu).unwrap();
    let k = case(4);
    let n = k.b * k.t;
    let proj = InputProjection::new_random(DIN, c.hidden_size, 0.5, 9);

    // Reference: embeds = x Wᵀ with W a Var, logp from the candle decoder, loss = Σ c·logp.
    let w = Var::from_tensor(
        &Tensor::from_slice(&proj.weight, (c.hidden_size, DIN), &Device::Cpu).unwrap(),
    )
    .unwrap();
    let xt = Tensor::from_slice(&k.x, (n, DIN), &Device::Cpu).unwrap();
    let emb = xt
        .matmul(&w.as_tensor().t().unwrap())
        .unwrap()
        .reshape((k.b, k.t, c.hidden_size))
        .unwrap();
    let inp = ForwardInput::new(&k.ids, k.b, k.t);
    let h = m.hidden_states_with_embeds(&inp, &emb).unwrap();
    let logits = m
        .logits_from_hidden(&h)
        .unwrap()
        .reshape((n, c.vocab_size))
        .unwrap();
    let tg = Tensor::from_slice(&k.targets, n, &Device::Cpu).unwrap();
    let lp_ref = gradus_tensor::ops::token_logprobs(&logits, &tg).unwrap();
    let coef = Tensor::from_slice(&k.coef, n, &Device::Cpu).unwrap();
    let grads = (&lp_ref * coef)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let lp_ref: Vec<f32> = lp_ref.to_vec1().unwrap();
    let gw_ref: Vec<f32> = grads
        .get(w.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    // candle keeps gradients of Vars only: a second pass with the embeds as a Var gives ∂L/∂embeds.
    let emb_var = Var::from_tensor(&emb.detach()).unwrap();
    let h2 = m
        .hidden_states_with_embeds(&inp, emb_var.as_tensor())
        .unwrap();
    let l2 = m
        .logits_from_hidden(&h2)
        .unwrap()
        .reshape((n, c.vocab_size))
        .unwrap();
    let lp2 = gradus_tensor::ops::token_logprobs(&l2, &tg).unwrap();
    let coef2 = Tensor::from_slice(&k.coef, n, &Device::Cpu).unwrap();
    let g2 = (&lp2 * coef2)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let gemb_ref: Vec<f32> = g2
        .get(emb_var.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();

    // Fast graph.
    let mut f = FastDecoder::new(&m, FastOptions::default()).unwrap();
    let mut p = proj.clone();
    let e = p.forward(&k.x, n).unwrap();
    f.zero_grads();
    assert!(f.input_grad().is_none());
    let lp = f
        .forward_with_embeds(&inp, Some(&e), &k.targets)
        .unwrap()
        .to_vec();
    let d = max_abs_diff(&lp, &lp_ref);
    assert!(d <= FUSED_VS_REF_F32, "log-probs differ by {d}");
    // The embeds change the result (a zero projection would pass the rest trivially).
    let lp0 = f.forward(&inp, &k.targets).unwrap().to_vec();
    assert!(max_abs_diff(&lp0, &lp) > 1e-3);
    f.forward_with_embeds(&inp, Some(&e), &k.targets).unwrap();
    f.backward(&k.coef).unwrap();
    let gin = f.input_grad().unwrap().to_vec();
    p.backward(&gin, &k.x, n).unwrap();

    let close = |got: &[f32], want: &[f32], what: &str| {
        let scale = want.iter().fold(0f32, |a, &x| a.max(x.abs()));
        assert!(scale > 0.0, "{what}: reference gradient is zero");
        let d = max_abs_diff(got, want);
        assert!(
            d <= 1e-3 * scale + 1e-6,
            "{what}: differs by {d} (scale {scale})"
        );
    };
    close(&gin, &gemb_ref, "d inputs_embeds");
    close(&p.grad, &gw_ref, "d input projection");
    // Every decoder parameter's gradient too (the embeds path must not disturb them).
    let g = f.grads().to_vec();
    for ((name, v), e) in m.named_params().iter().zip(&f.layout().entries) {
        let gr: Vec<f32> = grads
            .get(v.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        close(&g[e.offset..e.offset + e.len], &gr, name);
    }
}

#[test]
fn projection_gradient_matches_finite_differences() {
    // Central differences of L(W) = Σ c·logp in f32 with h = 1e-2: truncation O(h²·L''') and
    // rounding O(1e-7·|L|/h) are both ≪ 3% of the largest gradient entry for this tiny model.
    let c = cfg();
    let m = Decoder::new_random(&c, 5, &Device::Cpu).unwrap();
    let k = case(6);
    let n = k.b * k.t;
    let mut f = FastDecoder::new(&m, FastOptions::default()).unwrap();
    let mut p = InputProjection::new_random(DIN, c.hidden_size, 0.5, 1);
    let e = p.forward(&k.x, n).unwrap();
    f.zero_grads();
    f.forward_with_embeds(&ForwardInput::new(&k.ids, k.b, k.t), Some(&e), &k.targets)
        .unwrap();
    f.backward(&k.coef).unwrap();
    let gin = f.input_grad().unwrap().to_vec();
    p.backward(&gin, &k.x, n).unwrap();
    let analytic = p.grad.clone();
    let scale = analytic.iter().fold(0f32, |a, &x| a.max(x.abs())) as f64;
    assert!(scale > 1e-4);
    let h = 1e-2f32;
    for &i in &[0usize, 7, 23, 41, 63, 79] {
        let mut q = p.clone();
        q.weight[i] += h;
        let lp = fast_loss(&mut f, &q, &k);
        q.weight[i] -= 2.0 * h;
        let lm = fast_loss(&mut f, &q, &k);
        let num = (lp - lm) / (2.0 * h as f64);
        assert!(
            (num - analytic[i] as f64).abs() <= 0.03 * scale,
            "W[{i}]: finite difference {num} vs analytic {}",
            analytic[i]
        );
    }
}

#[test]
fn head_logits_agree_with_the_log_probs() {
    // log_softmax(head_logits(r))[target_r] is the forward's logp[r].
    let c = cfg();
    let m = Decoder::new_random(&c, 8, &Device::Cpu).unwrap();
    let k = case(2);
    let mut f = FastDecoder::new(&m, FastOptions::default()).unwrap();
    let lp = f
        .forward(&ForwardInput::new(&k.ids, k.b, k.t), &k.targets)
        .unwrap()
        .to_vec();
    for r in [0, 5, 17] {
        let l = f.head_logits(r).unwrap();
        let mx = l.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let lse = mx + l.iter().map(|&v| (v - mx).exp()).sum::<f32>().ln();
        let want = l[k.targets[r] as usize] - lse;
        assert!((want - lp[r]).abs() < 1e-5, "row {r}: {want} vs {}", lp[r]);
    }
    assert!(f.head_logits(18).is_err());
}

#[test]
fn bad_embeds_are_errors() {
    let c = cfg();
    let m = Decoder::new_random(&c, 1, &Device::Cpu).unwrap();
    let k = case(1);
    let mut f = FastDecoder::new(&m, FastOptions::default()).unwrap();
    let inp = ForwardInput::new(&k.ids, k.b, k.t);
    let e = f
        .forward_with_embeds(&inp, Some(&[0.0; 5]), &k.targets)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("inputs_embeds") && e.contains("hidden_size"),
        "{e}"
    );
    let mut bad = vec![0f32; k.b * k.t * c.hidden_size];
    bad[3] = f32::NAN;
    let e = f
        .forward_with_embeds(&inp, Some(&bad), &k.targets)
        .unwrap_err()
        .to_string();
    assert!(e.contains("inputs_embeds[3]"), "{e}");
    let p = InputProjection::new_random(DIN, c.hidden_size, 0.1, 0);
    assert!(p.forward(&[0.0; 4], 1).is_err());
}
