//! The hand-written training graph (`gradus_model::fast`) against its reference twin, the candle
//! decoder: per-token log-probs and every parameter's gradient of `L = Σ_n c_n · logp_n` (random
//! c, so every token's gradient path is exercised with a different weight) on random weights and
//! inputs, over GQA/MHA, tied/untied heads, q/k/v and MLP biases, packed segments with restarting
//! positions, and a chunked LM head; plus thread-count determinism and input errors. LoRA: the
//! log-probs and every adapter's gradient (and, when the base trains too, every base gradient)
//! against the candle path's LoRA, for several target sets, nonzero B, and dropout with the same
//! mask stream.
//!
//! Tolerances: both sides compute in f32 with different summation orders (blocked GEMMs vs
//! candle's, fused vs composed norms), so values agree to a few f32 ulps of the largest
//! intermediate. Log-probs: |Δ| ≤ 1e-4 (`tol::FUSED_VS_REF_F32`, the tolerance of the fused ops
//! themselves). Gradients: per parameter, max |Δ| ≤ 1e-3 · max |reference| + 1e-6 (relative to
//! the parameter's gradient scale; a wrong term, e.g. a missing residual or bias gradient, is off
//! by O(1) of that scale, far outside the tolerance).

use gradus_model::decoder::{Decoder, ForwardInput};
use gradus_model::fast::{FastDecoder, FastOptions};
use gradus_model::{DecoderConfig, Family, LoraConfig, NormKind};
use gradus_tensor::rng::Rng;
use gradus_tensor::tol::{max_abs_diff, FUSED_VS_REF_F32};
use gradus_tensor::Var;
use gradus_tensor::{Device, Tensor};

fn cfg(family: Family, tied: bool, kv: usize, mlp_bias: bool) -> DecoderConfig {
    DecoderConfig {
        family,
        vocab_size: 97,
        hidden_size: 32,
        intermediate_size: 48,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: kv,
        tie_word_embeddings: tied,
        attention_bias: family == Family::Qwen2,
        mlp_bias,
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

/// A packed batch: B rows of T tokens, each row cut into 1-3 documents (segment ids 1, 2, 3, with
/// positions restarting at 0 in each), plus targets and per-token loss coefficients.
struct Inputs {
    b: usize,
    t: usize,
    ids: Vec<u32>,
    targets: Vec<u32>,
    pos: Vec<u32>,
    segs: Vec<u32>,
    coef: Vec<f32>,
}

fn inputs(seed: u64, b: usize, t: usize, vocab: usize) -> Inputs {
    let mut rng = Rng::new(seed);
    let ids: Vec<u32> = (0..b * t).map(|_| rng.below(vocab) as u32).collect();
    let targets: Vec<u32> = (0..b * t).map(|_| rng.below(vocab) as u32).collect();
    let (mut pos, mut segs) = (Vec::new(), Vec::new());
    for _ in 0..b {
        let cut1 = 1 + rng.below(t - 1);
        let cut2 = cut1 + rng.below(t - cut1);
        for i in 0..t {
            let (s, start) = if i < cut1 {
                (1, 0)
            } else if i < cut2 {
                (2, cut1)
            } else {
                (3, cut2)
            };
            segs.push(s);
            pos.push((i - start) as u32);
        }
    }
    let coef: Vec<f32> = (0..b * t).map(|_| (rng.normal() * 0.5) as f32).collect();
    Inputs {
        b,
        t,
        ids,
        targets,
        pos,
        segs,
        coef,
    }
}

impl Inputs {
    fn fwd(&self, segments: bool) -> ForwardInput<'_> {
        ForwardInput {
            input_ids: &self.ids,
            batch: self.b,
            seq_len: self.t,
            position_ids: Some(&self.pos),
            segment_ids: segments.then_some(self.segs.as_slice()),
        }
    }
}

/// Reference log-probs and named gradients of Σ c·logp from the candle graph.
fn reference(m: &Decoder, inp: &Inputs, segments: bool) -> (Vec<f32>, Vec<(String, Vec<f32>)>) {
    reference_of(m, m.named_params(), inp, segments)
}

/// [`reference`] with the gradients of `params` (e.g. the LoRA adapters).
fn reference_of(
    m: &Decoder,
    params: Vec<(String, Var)>,
    inp: &Inputs,
    segments: bool,
) -> (Vec<f32>, Vec<(String, Vec<f32>)>) {
    let lp = m.target_logprobs(&inp.fwd(segments), &inp.targets).unwrap();
    let c = Tensor::from_slice(&inp.coef, inp.coef.len(), &Device::Cpu).unwrap();
    let loss = (&lp * c).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let named = params
        .into_iter()
        .map(|(n, v)| {
            let g = grads
                .get(v.as_tensor())
                .unwrap_or_else(|| panic!("reference: no gradient for {n}"));
            (n, g.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        })
        .collect();
    (lp.to_vec1().unwrap(), named)
}

fn fast_run(f: &mut FastDecoder, inp: &Inputs, segments: bool) -> (Vec<f32>, Vec<f32>) {
    f.zero_grads();
    let lp = f
        .forward(&inp.fwd(segments), &inp.targets)
        .unwrap()
        .to_vec();
    f.backward(&inp.coef).unwrap();
    (lp, f.grads().to_vec())
}

fn compare(m: &Decoder, opts: FastOptions, inp: &Inputs, segments: bool, what: &str) {
    let (lp_ref, g_ref) = reference(m, inp, segments);
    let mut f = FastDecoder::new(m, opts).unwrap();
    let (lp, g) = fast_run(&mut f, inp, segments);
    let d = max_abs_diff(&lp, &lp_ref);
    assert!(d <= FUSED_VS_REF_F32, "{what}: log-probs differ by {d}");
    assert_eq!(
        g_ref.len(),
        f.layout().entries.len(),
        "{what}: parameter count"
    );
    for ((name, gr), e) in g_ref.iter().zip(&f.layout().entries) {
        assert_eq!(name, &e.name, "{what}: layout order");
        let gf = &g[e.offset..e.offset + e.len];
        let scale = gr.iter().fold(0f32, |a, &x| a.max(x.abs()));
        assert!(scale > 0.0, "{what}: reference gradient of {name} is zero");
        let d = max_abs_diff(gf, gr);
        assert!(
            d <= 1e-3 * scale + 1e-6,
            "{what}: gradient of {name} differs by {d} (scale {scale})"
        );
    }
}

#[test]
fn llama_gqa_untied_packed_matches_the_twin() {
    let c = cfg(Family::Llama, false, 2, false);
    let m = model(&c, 1);
    compare(
        &m,
        FastOptions::default(),
        &inputs(7, 3, 37, c.vocab_size),
        true,
        "llama gqa untied packed",
    );
}

#[test]
fn qwen2_biases_tied_matches_the_twin() {
    // q/k/v biases (Qwen2) and MLP biases, tied head (the embedding gets both gradients).
    let c = cfg(Family::Qwen2, true, 1, true);
    let m = model(&c, 2);
    compare(
        &m,
        FastOptions::default(),
        &inputs(8, 2, 70, c.vocab_size),
        true,
        "qwen2 biases tied packed",
    );
}

#[test]
fn mha_without_segments_and_a_chunked_head_match_the_twin() {
    // A logits budget of 5 rows × V forces the blocked head (recomputed in the backward) with a
    // ragged last block (2·33 = 66 rows = 13 blocks of 5 + 1).
    let c = cfg(Family::Llama, false, 4, false);
    let m = model(&c, 3);
    let opts = FastOptions {
        logits_budget: 5 * c.vocab_size,
    };
    compare(
        &m,
        opts,
        &inputs(9, 2, 33, c.vocab_size),
        false,
        "mha chunked head",
    );
    let ct = cfg(Family::Llama, true, 2, false);
    let mt = model(&ct, 4);
    compare(
        &mt,
        FastOptions {
            logits_budget: 7 * ct.vocab_size,
        },
        &inputs(10, 2, 33, ct.vocab_size),
        true,
        "tied chunked head",
    );
}

#[test]
fn every_norm_kind_matches_the_twin() {
    // `norm = none | rmsnorm | layernorm`: the fast graph's norms (identity with the residual's
    // gradient passed through, the RMSNorm kernel, the hand-written LayerNorm) against candle's
    // autograd of the composed reference. LayerNorm weights and biases are perturbed by `model`,
    // so their gradients are both exercised; a chunked head too.
    for (k, kind) in [NormKind::None, NormKind::RmsNorm, NormKind::LayerNorm]
        .into_iter()
        .enumerate()
    {
        for tied in [false, true] {
            let c = DecoderConfig {
                norm: kind,
                ..cfg(Family::Llama, tied, 2, true)
            };
            let m = model(&c, 20 + k as u64);
            let names: Vec<String> = m.named_params().into_iter().map(|(n, _)| n).collect();
            let norm_params = names.iter().filter(|n| n.contains("norm")).count();
            // 2 layers × 2 norms + the final one = 5 layers: 0, 5 or 10 parameters.
            assert_eq!(norm_params, 5 * k, "{kind:?}: {names:?}");
            compare(
                &m,
                FastOptions {
                    logits_budget: 9 * c.vocab_size,
                },
                &inputs(30 + k as u64, 2, 29, c.vocab_size),
                true,
                &format!("norm {kind:?} tied {tied}"),
            );
        }
    }
}

#[test]
fn long_rows_cross_attention_blocks() {
    // T = 150 > the attention kernel's 64-row blocks: masked, partial and full blocks all occur.
    let c = cfg(Family::Llama, false, 2, false);
    let m = model(&c, 5);
    compare(
        &m,
        FastOptions::default(),
        &inputs(11, 1, 150, c.vocab_size),
        true,
        "long rows",
    );
}

#[test]
fn gradients_accumulate_and_buffers_are_reused_across_shapes() {
    // Two backward passes without zeroing add up (beta = 1 in the weight-gradient GEMMs), and a
    // smaller batch after a larger one reuses the buffers with the same results as a fresh graph.
    let c = cfg(Family::Qwen2, false, 2, true);
    let m = model(&c, 6);
    let big = inputs(12, 3, 40, c.vocab_size);
    let small = inputs(13, 2, 17, c.vocab_size);
    let mut f = FastDecoder::new(&m, FastOptions::default()).unwrap();
    fast_run(&mut f, &big, true);
    let (lp_small, g_small) = fast_run(&mut f, &small, true);
    let mut fresh = FastDecoder::new(&m, FastOptions::default()).unwrap();
    let (lp_fresh, g_fresh) = fast_run(&mut fresh, &small, true);
    assert_eq!(lp_small, lp_fresh);
    assert_eq!(g_small, g_fresh);
    // Accumulation: grads(big) + grads(small) without zeroing in between.
    let (_, g_big) = fast_run(&mut f, &big, true);
    f.forward(&small.fwd(true), &small.targets).unwrap();
    f.backward(&small.coef).unwrap();
    let acc = f.grads();
    let d = acc
        .iter()
        .zip(g_big.iter().zip(&g_small))
        .map(|(a, (x, y))| (a - (x + y)).abs())
        .fold(0f32, f32::max);
    let scale = g_big.iter().fold(0f32, |a, &x| a.max(x.abs()));
    assert!(
        d <= 1e-5 * scale,
        "accumulated gradients differ from the sum by {d}"
    );
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let c = cfg(Family::Qwen2, false, 2, true);
    let m = model(&c, 7);
    let inp = inputs(14, 4, 90, c.vocab_size);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut f = FastDecoder::new(&m, FastOptions::default()).unwrap();
            fast_run(&mut f, &inp, true)
        })
    };
    let (lp1, g1) = run(1);
    let (lp3, g3) = run(3);
    assert_eq!(
        lp1.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        lp3.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
    assert!(
        g1.iter().zip(&g3).all(|(a, b)| a.to_bits() == b.to_bits()),
        "gradients differ between 1 and 3 threads"
    );
}

#[test]
fn weights_round_trip_and_bad_inputs_are_errors() {
    let c = cfg(Family::Llama, false, 2, false);
    let m = model(&c, 8);
    let mut f = FastDecoder::new(&m, FastOptions::default()).unwrap();
    // write_to then read_from is the identity on the flat buffer; the model sees the flat values.
    let before = f.params().to_vec();
    let other = model(&c, 9);
    f.write_to(&other).unwrap();
    f.read_from(&other).unwrap();
    assert_eq!(f.params(), before.as_slice());
    let inp = inputs(15, 1, 8, c.vocab_size);
    // Backward before any forward.
    assert!(f
        .backward(&inp.coef)
        .unwrap_err()
        .to_string()
        .contains("without a forward"));
    let mut bad = inp.ids.clone();
    bad[3] = 500;
    let e = f
        .forward(&ForwardInput::new(&bad, 1, 8), &inp.targets)
        .unwrap_err()
        .to_string();
    assert!(e.contains("500") && e.contains("position 3"), "{e}");
    let mut bt = inp.targets.clone();
    bt[5] = 97;
    let e = f
        .forward(&ForwardInput::new(&inp.ids, 1, 8), &bt)
        .unwrap_err()
        .to_string();
    assert!(e.contains("target 97") && e.contains("position 5"), "{e}");
    f.forward(&ForwardInput::new(&inp.ids, 1, 8), &inp.targets)
        .unwrap();
    let e = f.backward(&[0.0; 3]).unwrap_err().to_string();
    assert!(e.contains("3") && e.contains("8"), "{e}");
    let e = f.backward(&[f32::NAN; 8]).unwrap_err().to_string();
    assert!(e.contains("not finite"), "{e}");
}

/// `m` with fresh adapters on `targets` (rank 4, alpha 8, dropout `p`), then A and B replaced by
/// random values (B nonzero, so A's gradient is nonzero and the update changes the output).
fn with_lora(m: &Decoder, targets: &[&str], p: f64, seed: u64) -> Decoder {
    let mut m = m.clone();
    let lc = LoraConfig {
        r: 4,
        lora_alpha: 8.0,
        lora_dropout: p,
        target_modules: targets.iter().map(|s| s.to_string()).collect(),
        use_rslora: false,
    };
    let mut rng = Rng::new(seed);
    m.apply_lora(&lc, &mut rng).unwrap();
    for (_, v) in m.lora_params() {
        let t = rng.randn(v.dims(), 0.3, &Device::Cpu).unwrap();
        v.set(&t).unwrap();
    }
    m
}

/// Compares the fast graph's log-probs and gradients with the candle path's on a LoRA model:
/// only the adapters' (base frozen, the default) or every parameter's (`train_base`).
fn compare_lora(m: &Decoder, inp: &Inputs, train_base: bool, what: &str) {
    let mut f = FastDecoder::new(m, FastOptions::default()).unwrap();
    f.set_train_base(train_base);
    let mut params = if train_base {
        m.named_params()
    } else {
        Vec::new()
    };
    params.extend(m.lora_params());
    let (lp_ref, g_ref) = reference_of(m, params, inp, true);
    let (lp, g) = fast_run(&mut f, inp, true);
    let d = max_abs_diff(&lp, &lp_ref);
    assert!(d <= FUSED_VS_REF_F32, "{what}: log-probs differ by {d}");
    let entries = f.trainable();
    assert_eq!(
        g_ref.len(),
        entries.len(),
        "{what}: trained parameter count"
    );
    assert_eq!(
        g.len(),
        entries.iter().map(|e| e.len).sum::<usize>(),
        "{what}: the gradient buffer covers exactly the trained parameters"
    );
    let base = entries[0].offset;
    for ((name, gr), e) in g_ref.iter().zip(entries) {
        assert_eq!(name, &e.name, "{what}: layout order");
        let gf = &g[e.offset - base..e.offset - base + e.len];
        let scale = gr.iter().fold(0f32, |a, &x| a.max(x.abs()));
        assert!(scale > 0.0, "{what}: reference gradient of {name} is zero");
        let d = max_abs_diff(gf, gr);
        assert!(
            d <= 1e-3 * scale + 1e-6,
            "{what}: gradient of {name} differs by {d} (scale {scale})"
        );
    }
}

#[test]
fn lora_adapters_match_the_twin_for_every_target_set() {
    // Base frozen (only adapter gradients), GQA / MHA, tied / untied, Qwen2 biases, packed rows;
    // target sets covering every module, alone and together.
    let all = [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ];
    let cases: [(&str, DecoderConfig, &[&str]); 4] = [
        (
            "llama gqa untied q,v",
            cfg(Family::Llama, false, 2, false),
            &["q_proj", "v_proj"],
        ),
        (
            "qwen2 tied all-linear",
            cfg(Family::Qwen2, true, 1, true),
            &all,
        ),
        (
            "llama mha tied o,down",
            cfg(Family::Llama, true, 4, false),
            &["o_proj", "down_proj"],
        ),
        (
            "qwen2 gqa untied k,gate,up",
            cfg(Family::Qwen2, false, 2, true),
            &["k_proj", "gate_proj", "up_proj"],
        ),
    ];
    for (k, (what, c, targets)) in cases.iter().enumerate() {
        let m = with_lora(&model(c, 40 + k as u64), targets, 0.0, 50 + k as u64);
        let inp = inputs(60 + k as u64, 2, 31, c.vocab_size);
        compare_lora(&m, &inp, false, what);
        // The frozen base gets no gradient buffer: only the adapters' 2 per target per layer.
        let f = FastDecoder::new(&m, FastOptions::default()).unwrap();
        assert_eq!(f.trainable().len(), 2 * targets.len() * c.num_hidden_layers);
        assert!(f.trainable().iter().all(|e| e.name.contains(".lora_")));
    }
}

#[test]
fn lora_with_the_base_training_too_matches_the_twin() {
    // Every base weight's gradient (with the adapters' contribution to the input gradients) and
    // every adapter's, in named_params-then-lora_params order.
    let c = cfg(Family::Qwen2, false, 2, true);
    let m = with_lora(
        &model(&c, 70),
        &[
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
        0.0,
        71,
    );
    compare_lora(
        &m,
        &inputs(72, 2, 23, c.vocab_size),
        true,
        "base + adapters",
    );
}

#[test]
fn lora_dropout_draws_the_candle_paths_masks() {
    // Dropout 0.3 on every module: the fast graph starts from the model's mask-stream state, so
    // both graphs drop the same entries; after one forward each, both streams have advanced by
    // the same number of draws. Without the same masks the log-probs would differ by O(1).
    let c = cfg(Family::Llama, false, 2, false);
    let m = with_lora(
        &model(&c, 80),
        &[
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
        0.3,
        81,
    );
    m.set_lora_training(true);
    let inp = inputs(82, 2, 19, c.vocab_size);
    let f = FastDecoder::new(&m, FastOptions::default()).unwrap();
    let start = m.lora_dropout_state().unwrap();
    assert_eq!(f.lora_dropout_state(), Some(start));
    drop(f);
    compare_lora(&m, &inp, false, "dropout 0.3");
    // compare_lora built its graph before the reference pass (same start state); one more pair of
    // passes from a common state ends at a common state.
    let mut f = FastDecoder::new(&m, FastOptions::default()).unwrap();
    let before = m.lora_dropout_state().unwrap();
    fast_run(&mut f, &inp, true);
    m.target_logprobs(&inp.fwd(true), &inp.targets).unwrap();
    assert_ne!(m.lora_dropout_state().unwrap(), before);
    assert_eq!(f.lora_dropout_state(), m.lora_dropout_state());
    // In eval mode no masks are drawn: the stream stays put and the output is deterministic.
    f.set_lora_training(false);
    let st = f.lora_dropout_state();
    let (a, _) = fast_run(&mut f, &inp, true);
    let (b, _) = fast_run(&mut f, &inp, true);
    assert_eq!(a, b);
    assert_eq!(f.lora_dropout_state(), st);
    // write_to carries the stream state into the model (for checkpoints).
    f.set_lora_dropout_state(start).unwrap();
    f.write_to(&m).unwrap();
    assert_eq!(m.lora_dropout_state(), Some(start));
}

#[test]
fn lora_trains_only_the_adapters_and_round_trips() {
    // params_and_grads exposes the adapters only: stepping them leaves the base untouched, and
    // write_to puts the stepped adapters into the model's lora_params.
    let c = cfg(Family::Llama, false, 2, false);
    let m = with_lora(&model(&c, 90), &["q_proj", "down_proj"], 0.0, 91);
    let mut f = FastDecoder::new(&m, FastOptions::default()).unwrap();
    let base_len = f.layout().base_total;
    let before = f.params().to_vec();
    let inp = inputs(92, 2, 11, c.vocab_size);
    fast_run(&mut f, &inp, true);
    {
        let (p, g) = f.params_and_grads();
        assert_eq!(p.len(), g.len());
        for (p, g) in p.iter_mut().zip(g.iter()) {
            *p -= 0.1 * g;
        }
    }
    assert_eq!(&f.params()[..base_len], &before[..base_len]);
    assert_ne!(&f.params()[base_len..], &before[base_len..]);
    f.write_to(&m).unwrap();
    let mut fresh = FastDecoder::new(&m, FastOptions::default()).unwrap();
    assert_eq!(fresh.params(), f.params());
    fresh.read_from(&m).unwrap();
    assert_eq!(fresh.params(), f.params());
}

#[test]
fn disabled_adapters_compute_the_base_model() {
    // With the adapters off, the graph's log-probs are the base model's bit for bit (the same
    // kernels run on the same weights), no dropout mask is drawn, and a backward leaves the
    // adapter gradients at zero; switched back on, the adapted model returns.
    let c = cfg(Family::Qwen2, false, 2, true);
    let base = model(&c, 100);
    let m = with_lora(&base, &["q_proj", "o_proj", "up_proj"], 0.2, 101);
    m.set_lora_training(true);
    let inp = inputs(102, 2, 17, c.vocab_size);
    let mut f = FastDecoder::new(&m, FastOptions::default()).unwrap();
    let mut fb = FastDecoder::new(&base, FastOptions::default()).unwrap();
    let (lp_base, _) = fast_run(&mut fb, &inp, true);
    f.set_adapters_enabled(false);
    let st = f.lora_dropout_state();
    let (lp_off, g_off) = fast_run(&mut f, &inp, true);
    assert_eq!(
        lp_off.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        lp_base.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
    assert_eq!(f.lora_dropout_state(), st, "no masks drawn");
    assert!(g_off.iter().all(|&g| g == 0.0));
    f.set_adapters_enabled(true);
    let (lp_on, g_on) = fast_run(&mut f, &inp, true);
    assert!(max_abs_diff(&lp_on, &lp_base) > 1e-3);
    assert!(g_on.iter().any(|&g| g != 0.0));
}

/// The entropy bonus and a hidden-state gradient (a value head on the trunk): the gradient of
/// `L = Σ c·logp + Σ e·H + Σ w⊙h` (H the softmax entropy of each row, h the final hidden states)
/// against the candle graph, with a chunked head (logits recomputed in the backward) and without.
#[test]
fn entropy_and_hidden_gradients_match_the_twin() {
    let c = cfg(Family::Llama, false, 2, false);
    let m = model(&c, 11);
    let inp = inputs(12, 2, 23, c.vocab_size);
    let n = inp.b * inp.t;
    let d = c.hidden_size;
    let mut rng = Rng::new(13);
    let e: Vec<f32> = (0..n).map(|_| (rng.normal() * 0.5) as f32).collect();
    let w: Vec<f32> = (0..n * d).map(|_| (rng.normal() * 0.1) as f32).collect();

    // Reference: H = −Σ softmax · log_softmax over the vocabulary, h = the final norm's output.
    let fwd = inp.fwd(true);
    let lp = m.target_logprobs(&fwd, &inp.targets).unwrap();
    let h = m.hidden_states(&fwd, None).unwrap();
    let logits = m.logits_from_hidden(&h).unwrap();
    let mx = logits.max_keepdim(2).unwrap();
    let shifted = logits.broadcast_sub(&mx).unwrap();
    let lse = shifted
        .exp()
        .unwrap()
        .sum_keepdim(2)
        .unwrap()
        .log()
        .unwrap();
    let lsm = shifted.broadcast_sub(&lse).unwrap();
    let ent = (lsm.exp().unwrap() * &lsm)
        .unwrap()
        .sum(2)
        .unwrap()
        .neg()
        .unwrap()
        .flatten_all()
        .unwrap();
    let t = |v: &[f32]| Tensor::from_slice(v, v.len(), &Device::Cpu).unwrap();
    let loss = ((&lp * t(&inp.coef)).unwrap().sum_all().unwrap()
        + (&ent * t(&e)).unwrap().sum_all().unwrap())
    .unwrap();
    let loss = (loss
        + (h.flatten_all().unwrap() * t(&w))
            .unwrap()
            .sum_all()
            .unwrap())
    .unwrap();
    let grads = loss.backward().unwrap();
    let ent_ref: Vec<f32> = ent.to_vec1().unwrap();

    for budget in [usize::MAX, 5 * c.vocab_size] {
        let mut f = FastDecoder::new(
            &m,
            FastOptions {
                logits_budget: budget,
            },
        )
        .unwrap();
        // Entropies are refused until asked for.
        f.forward(&fwd, &inp.targets).unwrap();
        assert!(f.entropies().is_err());
        assert!(f.backward_ext(&inp.coef, Some(&e), None).is_err());
        f.set_entropy(true);
        f.zero_grads();
        f.forward(&fwd, &inp.targets).unwrap();
        let dent = max_abs_diff(f.entropies().unwrap(), &ent_ref);
        assert!(
            dent <= FUSED_VS_REF_F32,
            "budget {budget}: entropies differ by {dent}"
        );
        f.backward_ext(&inp.coef, Some(&e), Some(&w)).unwrap();
        for ((name, v), entry) in m.named_params().iter().zip(&f.layout().entries) {
            assert_eq!(name, &entry.name);
            let gr: Vec<f32> = grads
                .get(v.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let gf = &f.grads()[entry.offset..entry.offset + entry.len];
            let scale = gr.iter().fold(0f32, |a, &x| a.max(x.abs()));
            let diff = max_abs_diff(gf, &gr);
            assert!(
                diff <= 1e-3 * scale + 1e-6,
                "budget {budget}: gradient of {name} differs by {diff} (scale {scale})"
            );
        }
        // Wrong lengths and non-finite values are errors naming the input.
        f.forward(&fwd, &inp.targets).unwrap();
        let err = f
            .backward_ext(&inp.coef, Some(&e[1..]), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("dentropy"), "{err}");
        let mut bad = w.clone();
        bad[3] = f32::NAN;
        let err = f
            .backward_ext(&inp.coef, None, Some(&bad))
            .unwrap_err()
            .to_string();
        assert!(err.contains("dhidden[3]"), "{err}");
    }
}
