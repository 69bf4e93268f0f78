//! Fused ops against their `_ref` twins: forward values and gradients on random inputs, plus
//! hand-derivable cases, error paths and run-to-run bit reproducibility.
//!
//! Gradients are taken through `Var`s by back-propagating `(out ∘ R).sum_all()` with a random R
//! (a plain sum would hide errors that cancel across positions).
//!
//! Timing (not a test): `cargo test -p gradus-tensor --release --test ops_vs_ref -- --ignored
//! --nocapture timing` with RAYON_NUM_THREADS=1 or 2.

use gradus_tensor::ops::{
    attention, attention_ref, rms_norm, rms_norm_ref, rope, rope_ref, swiglu, swiglu_ref,
    token_logprobs, token_logprobs_ref,
};
use gradus_tensor::rng::Rng;
use gradus_tensor::tol::FUSED_VS_REF_F32;
use gradus_tensor::{DType, Device, Result, Tensor, Var};

const CPU: Device = Device::Cpu;

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// max|a − b| relative to the scale max(|b|) of the reference values.
fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let (a, b) = (flat(a), flat(b));
    assert!(
        a.iter().all(|x| x.is_finite()),
        "non-finite value in fused result"
    );
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-20);
    let diff = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    diff / scale
}

fn assert_close(what: &str, fused: &Tensor, reference: &Tensor) {
    let e = rel_err(fused, reference);
    assert!(
        e <= FUSED_VS_REF_F32,
        "{what}: relative error {e:e} > {FUSED_VS_REF_F32:e}"
    );
}

/// Runs `f` on the given leaves (built by `make` from Vars) for fused and ref, compares the outputs
/// and the gradients of `(out ∘ R).sum_all()` for every Var.
fn check_grads(
    what: &str,
    vars: &[Var],
    make_inputs: &dyn Fn(&[Var]) -> Vec<Tensor>,
    fused: &dyn Fn(&[Tensor]) -> Result<Tensor>,
    reference: &dyn Fn(&[Tensor]) -> Result<Tensor>,
    rng: &mut Rng,
) {
    let inputs = make_inputs(vars);
    let out_f = fused(&inputs).unwrap();
    let out_r = reference(&inputs).unwrap();
    assert_close(&format!("{what}: forward"), &out_f, &out_r);
    let r = rng.randn(out_r.dims(), 1.0, &CPU).unwrap();
    let gf = (&out_f * &r)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let gr = (&out_r * &r)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for (i, v) in vars.iter().enumerate() {
        let a = gf
            .get(v.as_tensor())
            .unwrap_or_else(|| panic!("{what}: fused gives no grad for input {i}"));
        let b = gr
            .get(v.as_tensor())
            .unwrap_or_else(|| panic!("{what}: ref gives no grad for input {i}"));
        assert_close(&format!("{what}: grad of input {i}"), a, b);
    }
}

/// Runs `f` on a rayon pool of `n` threads (to check results do not depend on the thread count).
fn in_pool<R: Send>(n: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .unwrap()
        .install(f)
}

fn var(rng: &mut Rng, shape: &[usize], std: f64) -> Var {
    Var::from_tensor(&rng.randn(shape, std, &CPU).unwrap()).unwrap()
}

// ---------------------------------------------------------------- rms_norm

fn rms_case(what: &str, n_shape: &[usize], d: usize, transposed: bool, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut xs: Vec<usize> = n_shape.to_vec();
    xs.push(d);
    let x = if transposed {
        // stored (D, N), used as (N, D): a non-contiguous view.
        var(&mut rng, &[d, xs[..xs.len() - 1].iter().product()], 1.3)
    } else {
        var(&mut rng, &xs, 1.3)
    };
    let w = Var::from_tensor(&(rng.randn(&[d], 0.2, &CPU).unwrap() + 1.0).unwrap()).unwrap();
    let make = move |v: &[Var]| {
        let x = if transposed {
            v[0].as_tensor().t().unwrap()
        } else {
            v[0].as_tensor().clone()
        };
        vec![x, v[1].as_tensor().clone()]
    };
    check_grads(
        what,
        &[x, w],
        &make,
        &|t| rms_norm(&t[0], &t[1], 1e-5),
        &|t| rms_norm_ref(&t[0], &t[1], 1e-5),
        &mut rng,
    );
}

#[test]
fn rms_norm_matches_ref() {
    rms_case("rms_norm odd D", &[3, 5], 37, false, 1);
    rms_case("rms_norm transposed x", &[15], 37, true, 2);
    // Many rows: several dw partials (fixed chunking) are summed.
    rms_case("rms_norm many rows", &[2000], 37, false, 3);
    rms_case("rms_norm wide", &[4, 3], 1031, false, 4);
}

#[test]
fn rms_norm_of_a_constant_row_is_the_weight_scaled() {
    // x = c·1 (D entries): mean(x²) = c², so y = c / sqrt(c² + eps) · w. With c = 3, eps = 1e-6:
    // y = w · 3 / sqrt(9.000001) = w · 0.99999994444...
    let d = 11;
    let x = Tensor::full(3f32, (2, d), &CPU).unwrap();
    let w = Tensor::arange(0u32, d as u32, &CPU)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .sin()
        .unwrap();
    let y = flat(&rms_norm(&x, &w, 1e-6).unwrap());
    let factor = 3.0f64 / (9.0f64 + 1e-6).sqrt();
    for (i, yi) in y.iter().enumerate() {
        let expected = ((i % d) as f64).sin() * factor;
        assert!(
            (*yi as f64 - expected).abs() < 1e-6,
            "y[{i}] = {yi}, expected {expected}"
        );
    }
}

#[test]
fn rms_norm_backward_is_bit_reproducible() {
    let mut rng = Rng::new(9);
    let x = var(&mut rng, &[3000, 64], 1.0);
    let w = var(&mut rng, &[64], 1.0);
    let r = rng.randn(&[3000, 64], 1.0, &CPU).unwrap();
    let run = || {
        let y = rms_norm(x.as_tensor(), w.as_tensor(), 1e-5).unwrap();
        let g = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        (
            flat(g.get(x.as_tensor()).unwrap()),
            flat(g.get(w.as_tensor()).unwrap()),
        )
    };
    let (a, b, c) = (run(), in_pool(1, run), in_pool(3, run));
    assert!(
        a == b && a == c,
        "backward runs differ (run to run or across thread counts)"
    );
}

// ---------------------------------------------------------------- swiglu

#[test]
fn swiglu_matches_ref() {
    for (what, shape, transposed, seed) in [
        ("swiglu odd", vec![4, 7, 53], false, 11u64),
        ("swiglu transposed", vec![29, 13], true, 12),
        ("swiglu many chunks", vec![70, 1001], false, 13),
    ] {
        let mut rng = Rng::new(seed);
        let g = var(&mut rng, &shape, 2.5);
        let u = var(&mut rng, &shape, 1.0);
        let make = move |v: &[Var]| {
            v.iter()
                .map(|v| {
                    if transposed {
                        v.as_tensor().t().unwrap()
                    } else {
                        v.as_tensor().clone()
                    }
                })
                .collect()
        };
        check_grads(
            what,
            &[g, u],
            &make,
            &|t| swiglu(&t[0], &t[1]),
            &|t| swiglu_ref(&t[0], &t[1]),
            &mut rng,
        );
    }
}

// ---------------------------------------------------------------- rope

fn cos_sin(rng: &mut Rng, b: usize, t: usize, half: usize) -> (Tensor, Tensor) {
    let theta = rng.rand_uniform(&[b, t, half], -3.0, 3.0, &CPU).unwrap();
    (theta.cos().unwrap(), theta.sin().unwrap())
}

#[test]
fn rope_matches_ref() {
    let mut rng = Rng::new(21);
    let (b, t, h, dh) = (2, 7, 3, 16);
    let (c, s) = cos_sin(&mut rng, b, t, dh / 2);
    let x = var(&mut rng, &[b, t, h, dh], 1.0);
    let (c2, s2) = (c.clone(), s.clone());
    check_grads(
        "rope",
        &[x],
        &|v| vec![v[0].as_tensor().clone()],
        &move |t| rope(&t[0], &c, &s),
        &move |t| rope_ref(&t[0], &c2, &s2),
        &mut rng,
    );

    // Non-contiguous x (a (B, H, T, Dh) buffer viewed as (B, T, H, Dh)) and a (1, T, Dh/2) table
    // broadcast over the batch (stride 0).
    let (b, t, h, dh) = (3, 9, 2, 10);
    let (c, s) = cos_sin(&mut rng, 1, t, dh / 2);
    let (c, s) = (
        c.broadcast_as((b, t, dh / 2)).unwrap(),
        s.broadcast_as((b, t, dh / 2)).unwrap(),
    );
    let x = var(&mut rng, &[b, h, t, dh], 1.0);
    let (c2, s2) = (c.clone(), s.clone());
    check_grads(
        "rope strided",
        &[x],
        &|v| vec![v[0].as_tensor().transpose(1, 2).unwrap()],
        &move |t| rope(&t[0], &c, &s),
        &move |t| rope_ref(&t[0], &c2, &s2),
        &mut rng,
    );
}

// ---------------------------------------------------------------- attention

struct AttnCase {
    what: &'static str,
    b: usize,
    tq: usize,
    tk: usize,
    hq: usize,
    hkv: usize,
    dh: usize,
    segments: Option<Vec<u32>>,
    transposed: bool,
}

fn attn_check(c: AttnCase, seed: u64) {
    let mut rng = Rng::new(seed);
    let scale = 1.0 / (c.dh as f64).sqrt();
    let shapes = |t: usize, h: usize| {
        if c.transposed {
            vec![c.b, h, t, c.dh]
        } else {
            vec![c.b, t, h, c.dh]
        }
    };
    let q = var(&mut rng, &shapes(c.tq, c.hq), 1.5);
    let k = var(&mut rng, &shapes(c.tk, c.hkv), 1.5);
    let v = var(&mut rng, &shapes(c.tk, c.hkv), 1.0);
    let seg = c
        .segments
        .map(|s| Tensor::from_vec(s, (c.b, c.tk), &CPU).unwrap());
    let seg2 = seg.clone();
    let transposed = c.transposed;
    let make = move |vs: &[Var]| {
        vs.iter()
            .map(|v| {
                if transposed {
                    v.as_tensor().transpose(1, 2).unwrap()
                } else {
                    v.as_tensor().clone()
                }
            })
            .collect()
    };
    check_grads(
        c.what,
        &[q, k, v],
        &make,
        &move |t| attention(&t[0], &t[1], &t[2], seg.as_ref(), scale),
        &move |t| attention_ref(&t[0], &t[1], &t[2], seg2.as_ref(), scale),
        &mut rng,
    );
}

/// Segment ids of one row from (id, length) runs.
fn runs(rs: &[(u32, usize)]) -> Vec<u32> {
    rs.iter()
        .flat_map(|&(id, n)| std::iter::repeat_n(id, n))
        .collect()
}

#[test]
fn attention_small_gqa_matches_ref() {
    let base = |what, hkv| AttnCase {
        what,
        b: 2,
        tq: 7,
        tk: 7,
        hq: 4,
        hkv,
        dh: 16,
        segments: None,
        transposed: false,
    };
    attn_check(base("attention T=7 MHA", 4), 31);
    attn_check(base("attention T=7 Hkv=2", 2), 32);
    attn_check(base("attention T=7 Hkv=1", 1), 33);
}

#[test]
fn attention_long_with_segments_matches_ref() {
    // T = 150 > the 64-wide tiles, not a multiple. Row 0: left padding then 3 documents of
    // different lengths; row 1: 3 documents with unordered ids then right padding; row 2: an id
    // that comes back after another document (equal ids attend each other wherever they are).
    let seg = [
        runs(&[(0, 10), (1, 50), (2, 37), (3, 53)]),
        runs(&[(5, 70), (2, 3), (7, 60), (0, 17)]),
        runs(&[(1, 40), (2, 45), (1, 65)]),
    ]
    .concat();
    attn_check(
        AttnCase {
            what: "attention T=150 segments Hkv=2",
            b: 3,
            tq: 150,
            tk: 150,
            hq: 4,
            hkv: 2,
            dh: 32,
            segments: Some(seg.clone()),
            transposed: false,
        },
        41,
    );
    attn_check(
        AttnCase {
            what: "attention T=150 segments Hkv=1 transposed",
            b: 3,
            tq: 150,
            tk: 150,
            hq: 4,
            hkv: 1,
            dh: 16,
            segments: Some(seg),
            transposed: true,
        },
        42,
    );
    attn_check(
        AttnCase {
            what: "attention T=130 no segments",
            b: 1,
            tq: 130,
            tk: 130,
            hq: 2,
            hkv: 2,
            dh: 24,
            segments: None,
            transposed: false,
        },
        43,
    );
}

#[test]
fn attention_with_query_offset_matches_ref() {
    // Tq < Tk: queries are the last Tq positions (a KV cache); also Tq = 1 (generation).
    let seg = [
        runs(&[(0, 3), (1, 90), (2, 47)]),
        runs(&[(4, 100), (6, 40)]),
    ]
    .concat();
    for (what, tq, segments) in [
        ("attention Tq=5 Tk=140 segments", 5, Some(seg.clone())),
        ("attention Tq=70 Tk=140", 70, None),
        ("attention Tq=1 Tk=140 segments", 1, Some(seg.clone())),
    ] {
        attn_check(
            AttnCase {
                what,
                b: 2,
                tq,
                tk: 140,
                hq: 4,
                hkv: 2,
                dh: 16,
                segments,
                transposed: false,
            },
            51,
        );
    }
}

#[test]
fn attention_with_identical_keys_returns_running_mean_of_v() {
    // Every key equal ⇒ every visible score in a row is equal ⇒ softmax is uniform over the
    // visible keys 0..=i ⇒ out[i] = (v[0] + … + v[i]) / (i + 1), whatever q is.
    let mut rng = Rng::new(61);
    let (t, dh) = (70, 8);
    let q = rng.randn(&[1, t, 2, dh], 1.0, &CPU).unwrap();
    let k = rng
        .randn(&[1, 1, 1, dh], 1.0, &CPU)
        .unwrap()
        .broadcast_as((1, t, 1, dh))
        .unwrap();
    let v = rng.randn(&[1, t, 1, dh], 1.0, &CPU).unwrap();
    let out = flat(&attention(&q, &k, &v, None, 0.3).unwrap()); // (1, T, 2, Dh)
    let vv = flat(&v);
    let mut run = vec![0f64; dh];
    for i in 0..t {
        for d in 0..dh {
            run[d] += vv[i * dh + d] as f64;
        }
        for h in 0..2 {
            for d in 0..dh {
                let expected = run[d] / (i + 1) as f64;
                let got = out[(i * 2 + h) * dh + d] as f64;
                assert!(
                    (got - expected).abs() < 1e-5,
                    "out[{i},{h},{d}] = {got}, expected {expected}"
                );
            }
        }
    }
    // A single key: softmax over one entry is 1 ⇒ out = v.
    let q1 = rng.randn(&[2, 1, 3, dh], 1.0, &CPU).unwrap();
    let k1 = rng.randn(&[2, 1, 1, dh], 1.0, &CPU).unwrap();
    let v1 = rng.randn(&[2, 1, 1, dh], 1.0, &CPU).unwrap();
    let o1 = attention(&q1, &k1, &v1, None, 0.5).unwrap();
    let expect = v1.broadcast_as((2, 1, 3, dh)).unwrap();
    assert!(rel_err(&o1, &expect) < 1e-6);
}

#[test]
fn attention_backward_is_bit_reproducible() {
    // (B, Hkv) = (2, 2) takes the one-pass backward, (1, 1) the two-pass one.
    for (b, hkv) in [(2, 2), (1, 1)] {
        let mut rng = Rng::new(71);
        let q = var(&mut rng, &[b, 100, 4, 16], 1.0);
        let k = var(&mut rng, &[b, 100, hkv, 16], 1.0);
        let v = var(&mut rng, &[b, 100, hkv, 16], 1.0);
        let r = rng.randn(&[b, 100, 4, 16], 1.0, &CPU).unwrap();
        let run = || {
            let o = attention(q.as_tensor(), k.as_tensor(), v.as_tensor(), None, 0.25).unwrap();
            let g = (o * &r).unwrap().sum_all().unwrap().backward().unwrap();
            [&q, &k, &v].map(|x| flat(g.get(x.as_tensor()).unwrap()))
        };
        let (x, y, z) = (run(), in_pool(1, run), in_pool(3, run));
        assert!(
            x == y && x == z,
            "backward runs differ across thread counts (B={b}, Hkv={hkv})"
        );
    }
}

// ---------------------------------------------------------------- token_logprobs

#[test]
fn token_logprobs_matches_ref() {
    for (what, n, v, transposed, seed) in [
        ("logprobs N=9 V=53", 9usize, 53usize, false, 81u64),
        ("logprobs transposed", 13, 53, true, 82),
        ("logprobs V=5003 many rows", 40, 5003, false, 83),
    ] {
        let mut rng = Rng::new(seed);
        let x = if transposed {
            var(&mut rng, &[v, n], 3.0)
        } else {
            var(&mut rng, &[n, v], 3.0)
        };
        let tg: Vec<u32> = (0..n).map(|_| rng.below(v) as u32).collect();
        let tg = Tensor::from_vec(tg, n, &CPU).unwrap();
        let tg2 = tg.clone();
        let make = move |vs: &[Var]| {
            vec![if transposed {
                vs[0].as_tensor().t().unwrap()
            } else {
                vs[0].as_tensor().clone()
            }]
        };
        check_grads(
            what,
            &[x],
            &make,
            &move |t| token_logprobs(&t[0], &tg),
            &move |t| token_logprobs_ref(&t[0], &tg2),
            &mut rng,
        );
    }
}

// ---------------------------------------------------------------- error paths

fn err_text(r: Result<Tensor>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn wrong_dtype_is_an_error_naming_op_and_dtype() {
    let mut rng = Rng::new(91);
    let x = rng.randn(&[2, 3, 2, 8], 1.0, &CPU).unwrap();
    let x64 = x.to_dtype(DType::F64).unwrap();
    let xbf = x.to_dtype(DType::BF16).unwrap();
    let w = rng.randn(&[8], 1.0, &CPU).unwrap();
    let cs = rng.randn(&[2, 3, 4], 1.0, &CPU).unwrap();
    let cases = [
        ("rms_norm", "F64", err_text(rms_norm(&x64, &w, 1e-5))),
        ("swiglu", "BF16", err_text(swiglu(&xbf, &xbf))),
        ("rope", "F64", err_text(rope(&x64, &cs, &cs))),
        (
            "attention",
            "BF16",
            err_text(attention(&x, &xbf, &x, None, 1.0)),
        ),
        (
            "token_logprobs",
            "F64",
            err_text(token_logprobs(
                &x64.reshape((6, 16)).unwrap(),
                &Tensor::zeros(6, DType::U32, &CPU).unwrap(),
            )),
        ),
    ];
    for (op, dt, msg) in cases {
        assert!(
            msg.contains(op) && msg.contains(dt),
            "error for {op} does not name it and {dt}: {msg}"
        );
    }
}

#[test]
fn bad_target_is_an_error_naming_row_and_value() {
    let mut rng = Rng::new(92);
    let x = rng.randn(&[4, 53], 1.0, &CPU).unwrap();
    let t = Tensor::new(&[0u32, 52, 7, 53], &CPU).unwrap();
    let msg = err_text(token_logprobs(&x, &t));
    assert!(msg.contains("row 3") && msg.contains("53"), "{msg}");
    let t = Tensor::new(&[0i64, -2, 7, 1], &CPU).unwrap();
    let msg = err_text(token_logprobs(&x, &t));
    assert!(msg.contains("row 1") && msg.contains("-2"), "{msg}");
}

#[test]
fn bad_attention_shapes_are_errors() {
    let mut rng = Rng::new(93);
    let q = rng.randn(&[1, 4, 3, 8], 1.0, &CPU).unwrap();
    let k = rng.randn(&[1, 4, 2, 8], 1.0, &CPU).unwrap();
    assert!(err_text(attention(&q, &k, &k, None, 1.0)).contains("multiple"));
    let q = rng.randn(&[1, 5, 2, 8], 1.0, &CPU).unwrap();
    assert!(err_text(attention(&q, &k, &k, None, 1.0)).contains("Tq"));
}

// ---------------------------------------------------------------- timing (not a test)

#[test]
#[ignore = "timing; run with --release --ignored --nocapture"]
fn timing_attention_fwd_bwd() {
    let mut rng = Rng::new(1);
    let (b, t, h, dh) = (8, 256, 4, 64);
    let q = var(&mut rng, &[b, t, h, dh], 1.0);
    let k = var(&mut rng, &[b, t, h, dh], 1.0);
    let v = var(&mut rng, &[b, t, h, dh], 1.0);
    let r = rng.randn(&[b, t, h, dh], 1.0, &CPU).unwrap();
    let scale = 1.0 / (dh as f64).sqrt();
    type F = fn(&Tensor, &Tensor, &Tensor, Option<&Tensor>, f64) -> Result<Tensor>;
    for (name, f) in [("fused", attention as F), ("ref", attention_ref as F)] {
        let mut best = (f64::MAX, f64::MAX);
        for _ in 0..5 {
            let t0 = std::time::Instant::now();
            let o = f(q.as_tensor(), k.as_tensor(), v.as_tensor(), None, scale).unwrap();
            let t1 = std::time::Instant::now();
            let g = (o * &r).unwrap().sum_all().unwrap().backward().unwrap();
            std::hint::black_box(g.get(q.as_tensor()).unwrap());
            let t2 = std::time::Instant::now();
            best.0 = best.0.min((t1 - t0).as_secs_f64() * 1e3);
            best.1 = best.1.min((t2 - t1).as_secs_f64() * 1e3);
        }
        println!(
            "attention {name}: fwd {:.2} ms, bwd {:.2} ms (best of 5)",
            best.0, best.1
        );
    }
}

#[test]
#[ignore = "profiling loop; run with --release --ignored --nocapture"]
fn timing_attention_fused_loop() {
    let mut rng = Rng::new(1);
    let (b, t, h, dh) = (8, 256, 4, 64);
    let q = var(&mut rng, &[b, t, h, dh], 1.0);
    let k = var(&mut rng, &[b, t, h, dh], 1.0);
    let v = var(&mut rng, &[b, t, h, dh], 1.0);
    let r = rng.randn(&[b, t, h, dh], 1.0, &CPU).unwrap();
    let t0 = std::time::Instant::now();
    for _ in 0..30 {
        let o = attention(q.as_tensor(), k.as_tensor(), v.as_tensor(), None, 0.125).unwrap();
        let g = (o * &r).unwrap().sum_all().unwrap().backward().unwrap();
        std::hint::black_box(g.get(q.as_tensor()).unwrap());
    }
    println!(
        "attention fused fwd+bwd: {:.2} ms per iteration",
        t0.elapsed().as_secs_f64() * 1e3 / 30.0
    );
}

/// Best-of-5 milliseconds of forward and of backward (of `(out ∘ R).sum_all()`) for `f`.
fn time_fwd_bwd(vars: &[&Var], f: &dyn Fn() -> Tensor) -> (f64, f64) {
    let mut rng = Rng::new(5);
    let r = rng.randn(f().dims(), 1.0, &CPU).unwrap();
    let mut best = (f64::MAX, f64::MAX);
    for _ in 0..5 {
        let t0 = std::time::Instant::now();
        let o = f();
        let t1 = std::time::Instant::now();
        let g = (o * &r).unwrap().sum_all().unwrap().backward().unwrap();
        std::hint::black_box(
            vars.iter()
                .filter(|v| g.get(v.as_tensor()).is_some())
                .count(),
        );
        let t2 = std::time::Instant::now();
        best.0 = best.0.min((t1 - t0).as_secs_f64() * 1e3);
        best.1 = best.1.min((t2 - t1).as_secs_f64() * 1e3);
    }
    best
}

#[test]
#[ignore = "timing; run with --release --ignored --nocapture"]
fn timing_elementwise_ops() {
    let mut rng = Rng::new(2);
    let (n, d, f, v) = (8 * 256, 512, 1408, 8192);
    let x = var(&mut rng, &[n, d], 1.0);
    let w = var(&mut rng, &[d], 1.0);
    let g = var(&mut rng, &[n, f], 1.0);
    let u = var(&mut rng, &[n, f], 1.0);
    let l = var(&mut rng, &[n, v], 2.0);
    let tg = Tensor::from_vec(
        (0..n).map(|i| (i * 7919 % v) as u32).collect::<Vec<_>>(),
        n,
        &CPU,
    )
    .unwrap();
    let report = |name: &str, a: (f64, f64), b: (f64, f64)| {
        println!(
            "{name}: fused fwd {:.2} ms bwd {:.2} ms | ref fwd {:.2} ms bwd {:.2} ms",
            a.0, a.1, b.0, b.1
        )
    };
    report(
        "rms_norm (2048, 512)",
        time_fwd_bwd(&[&x, &w], &|| {
            rms_norm(x.as_tensor(), w.as_tensor(), 1e-5).unwrap()
        }),
        time_fwd_bwd(&[&x, &w], &|| {
            rms_norm_ref(x.as_tensor(), w.as_tensor(), 1e-5).unwrap()
        }),
    );
    report(
        "swiglu (2048, 1408)",
        time_fwd_bwd(&[&g, &u], &|| swiglu(g.as_tensor(), u.as_tensor()).unwrap()),
        time_fwd_bwd(&[&g, &u], &|| {
            swiglu_ref(g.as_tensor(), u.as_tensor()).unwrap()
        }),
    );
    report(
        "token_logprobs (2048, 8192)",
        time_fwd_bwd(&[&l], &|| token_logprobs(l.as_tensor(), &tg).unwrap()),
        time_fwd_bwd(&[&l], &|| token_logprobs_ref(l.as_tensor(), &tg).unwrap()),
    );
    let mut rng = Rng::new(3);
    let (b, t, h, dh) = (8, 256, 4, 64);
    let xr = var(&mut rng, &[b, t, h, dh], 1.0);
    let th = rng.rand_uniform(&[b, t, dh / 2], -3.0, 3.0, &CPU).unwrap();
    let (c, s) = (th.cos().unwrap(), th.sin().unwrap());
    report(
        "rope (8, 256, 4, 64)",
        time_fwd_bwd(&[&xr], &|| rope(xr.as_tensor(), &c, &s).unwrap()),
        time_fwd_bwd(&[&xr], &|| rope_ref(xr.as_tensor(), &c, &s).unwrap()),
    );
}

#[test]
#[ignore = "timing; run with --release --ignored --nocapture"]
fn timing_attention_generation_step() {
    // One new query against a 1000-token KV cache (no backward).
    let mut rng = Rng::new(4);
    let (b, tk, hq, hkv, dh) = (1, 1000, 8, 2, 64);
    let q = rng.randn(&[b, 1, hq, dh], 1.0, &CPU).unwrap();
    let k = rng.randn(&[b, tk, hkv, dh], 1.0, &CPU).unwrap();
    let v = rng.randn(&[b, tk, hkv, dh], 1.0, &CPU).unwrap();
    type F = fn(&Tensor, &Tensor, &Tensor, Option<&Tensor>, f64) -> Result<Tensor>;
    for (name, f) in [("fused", attention as F), ("ref", attention_ref as F)] {
        let t0 = std::time::Instant::now();
        for _ in 0..1000 {
            std::hint::black_box(f(&q, &k, &v, None, 0.125).unwrap());
        }
        println!(
            "attention decode step {name}: {:.1} us",
            t0.elapsed().as_secs_f64() * 1e6 / 1000.0
        );
    }
}
