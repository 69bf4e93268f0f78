//! Sampling: temperature, top-k and top-p against hand-computed distributions, seeds, and the
//! end-of-row rules (EOS, stop callback, length).

use gradus_model::decoder::Decoder;
use gradus_model::generate::{entropy, generate, sample, Finish, SamplingConfig};
use gradus_model::{DecoderConfig, Family};
use gradus_tensor::rng::Rng;
use gradus_tensor::Device;

/// Frequencies of each token over `n` draws.
fn freqs(logits: &[f32], cfg: &SamplingConfig, n: usize) -> Vec<f64> {
    let mut rng = Rng::new(7);
    let mut c = vec![0usize; logits.len()];
    for _ in 0..n {
        c[sample(logits, cfg, &mut rng) as usize] += 1;
    }
    c.iter().map(|&x| x as f64 / n as f64).collect()
}

fn cfg(temperature: f64, top_k: usize, top_p: f64) -> SamplingConfig {
    SamplingConfig {
        temperature,
        top_k,
        top_p,
        ..Default::default()
    }
}

/// logits = ln p for p = (0.5, 0.3, 0.15, 0.05): at temperature 1 the draws follow p.
fn logits() -> Vec<f32> {
    [0.5f64, 0.3, 0.15, 0.05]
        .iter()
        .map(|p| p.ln() as f32)
        .collect()
}

// With 40,000 draws the standard error of a frequency is at most 0.0025: 0.012 is ~5 of them.
const N: usize = 40_000;
const TOL: f64 = 0.012;

fn close(got: &[f64], want: &[f64]) {
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < TOL, "got {got:?}, want {want:?}");
    }
}

#[test]
fn temperature_one_follows_the_softmax() {
    close(
        &freqs(&logits(), &cfg(1.0, 0, 1.0), N),
        &[0.5, 0.3, 0.15, 0.05],
    );
}

#[test]
fn temperature_half_squares_the_probabilities() {
    // softmax(2 ln p) = p² / Σ p² = (0.25, 0.09, 0.0225, 0.0025) / 0.365.
    let z = 0.365;
    close(
        &freqs(&logits(), &cfg(0.5, 0, 1.0), N),
        &[0.25 / z, 0.09 / z, 0.0225 / z, 0.0025 / z],
    );
}

#[test]
fn greedy_and_top_k_one_take_the_argmax() {
    let l = [0.1f32, 2.0, -1.0, 1.9];
    assert_eq!(sample(&l, &cfg(0.0, 0, 1.0), &mut Rng::new(0)), 1);
    assert_eq!(freqs(&l, &cfg(5.0, 1, 1.0), 1000)[1], 1.0);
}

#[test]
fn top_k_renormalises_over_the_k_best() {
    // Top 2 of (0.5, 0.3, 0.15, 0.05): (0.5, 0.3) / 0.8 = (0.625, 0.375).
    close(
        &freqs(&logits(), &cfg(1.0, 2, 1.0), N),
        &[0.625, 0.375, 0.0, 0.0],
    );
}

/// The k best are selected wherever they sit (logits out of order), and −∞ (a banned token) is never
/// drawn by the untruncated path: (0.05, 0.3, 0.5, 0.15) shuffled, top 2 → (0, 0.375, 0.625, 0); with
/// the 0.5 token banned, the rest renormalise to (0.1, 0.6, 0, 0.3).
#[test]
fn top_k_finds_the_best_out_of_order_and_banned_tokens_never_come() {
    let l: Vec<f32> = [0.05f64, 0.3, 0.5, 0.15]
        .iter()
        .map(|p| p.ln() as f32)
        .collect();
    close(&freqs(&l, &cfg(1.0, 2, 1.0), N), &[0.0, 0.375, 0.625, 0.0]);
    let mut banned = l.clone();
    banned[2] = f32::NEG_INFINITY;
    let f = freqs(&banned, &cfg(1.0, 0, 1.0), N);
    assert_eq!(f[2], 0.0, "a banned token was drawn: {f:?}");
    close(&f, &[0.1, 0.6, 0.0, 0.3]);
}

#[test]
fn top_p_keeps_the_smallest_prefix_reaching_p() {
    // Cumulative 0.5, 0.8, 0.95, 1.0: p = 0.7 keeps two tokens, p = 0.9 three.
    close(
        &freqs(&logits(), &cfg(1.0, 0, 0.7), N),
        &[0.625, 0.375, 0.0, 0.0],
    );
    close(
        &freqs(&logits(), &cfg(1.0, 0, 0.9), N),
        &[0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0],
    );
}

fn model() -> Decoder {
    let c = DecoderConfig {
        family: Family::Llama,
        vocab_size: 50,
        hidden_size: 32,
        intermediate_size: 48,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        initializer_range: 0.5,
        ..Default::default()
    };
    Decoder::new_random(&c, 3, &Device::Cpu).unwrap()
}

fn run(
    m: &Decoder,
    seed: u64,
    eos: &[u32],
    stop: &mut dyn FnMut(usize, &[u32]) -> bool,
) -> Vec<(Vec<u32>, Finish)> {
    let prompts = vec![vec![1, 2, 3], vec![4, 5]];
    let c = SamplingConfig {
        max_new_tokens: 12,
        temperature: 1.0,
        seed,
        ..Default::default()
    };
    generate(m, &prompts, &c, eos, stop)
        .unwrap()
        .into_iter()
        .map(|g| (g.tokens, g.finish))
        .collect()
}

#[test]
fn the_seed_decides_the_samples() {
    let m = model();
    let a = run(&m, 0, &[], &mut |_, _| false);
    assert_eq!(
        a,
        run(&m, 0, &[], &mut |_, _| false),
        "same seed, same samples"
    );
    assert_ne!(
        a,
        run(&m, 1, &[], &mut |_, _| false),
        "another seed, other samples"
    );
    assert!(a.iter().all(|(t, f)| t.len() == 12 && *f == Finish::Length));
}

#[test]
fn eos_and_stop_end_a_row_where_they_fire() {
    let m = model();
    let free = run(&m, 0, &[], &mut |_, _| false);
    // EOS = the 4th token row 0 sampled freely: row 0 ends there, with the EOS token included.
    let eos = free[0].0[3];
    let first = free[0].0.iter().position(|&t| t == eos).unwrap();
    let with_eos = run(&m, 0, &[eos], &mut |_, _| false);
    assert_eq!(with_eos[0], (free[0].0[..=first].to_vec(), Finish::Eos));
    // A stop rule that fires once row 1 has 5 tokens: row 1 stops there (its first 5 samples are the
    // free run's); row 0 runs to the length.
    let stopped = run(&m, 0, &[], &mut |r, toks| r == 1 && toks.len() == 5);
    assert_eq!(stopped[1], (free[1].0[..5].to_vec(), Finish::Stop));
    assert_eq!((stopped[0].0.len(), stopped[0].1), (12, Finish::Length));
}

/// Entropy by hand: equal logits over 4 tokens → ln 4; logits ln(1), ln(3) → p = (1/4, 3/4),
/// H = −(¼ ln ¼ + ¾ ln ¾) = 0.5623351; temperature 2 on logits (0, 2 ln 3) gives the same
/// distribution; greedy (0) counts as temperature 1; a huge logit gap → 0 without overflow.
#[test]
fn entropy_by_hand() {
    assert!((entropy(&[0.5; 4], 1.0) - 4f32.ln()).abs() < 1e-6);
    let h = -(0.25f64 * 0.25f64.ln() + 0.75 * 0.75f64.ln()) as f32;
    assert!((entropy(&[0.0, 3f32.ln()], 1.0) - h).abs() < 1e-6);
    assert!((entropy(&[0.0, 2.0 * 3f32.ln()], 2.0) - h).abs() < 1e-6);
    assert!((entropy(&[0.0, 3f32.ln()], 0.0) - h).abs() < 1e-6);
    assert!(entropy(&[0.0, 1e4, -1e4], 1.0).abs() < 1e-6);
}
