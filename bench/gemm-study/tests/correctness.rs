//! Every candidate against the f64 reference ([`gemm_study::reference`]): odd sizes around the
//! tile edges with tiny blocks (every loop edge of our kernel), then every GEMM shape and layout of
//! both presets' training steps and the square peak shape.
//!
//! Tolerance: max |c − r| ≤ 1e-4 · √K·σ_A·σ_B ([`reference::scaled_error`] < 1e-4). A correct
//! f32 kernel is near 6e-8·√K (≤ 4e-6 at K = 4096); one dropped or doubled product term moves an
//! entry by |a·b|, up to σ_Aσ_B·3 for uniform inputs, i.e. ≥ 1/(√K) · … ≈ 5e-2 of the scale at
//! K = 4096: far above the bound, so off-by-one kernels fail.

use gemm_study::candidates as cand;
use gemm_study::own::{self, Blocking, Isa, PackedB};
use gemm_study::reference::{matmul_f64, scaled_error};
use gemm_study::shapes::{all_gemms, Layout};

const TOL: f64 = 1e-4;

/// Deterministic uniform values in [-1, 1) (xorshift64*), no dependency.
fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let v = s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40; // 24 bits
            (v as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect()
}

fn isas() -> Vec<Isa> {
    [Isa::Avx512, Isa::Avx2, Isa::Scalar]
        .into_iter()
        .filter(|i| i.available())
        .collect()
}

type Cand = (
    String,
    Box<dyn Fn(usize, usize, usize, &[f32], &[f32], &mut [f32], Layout, bool, usize)>,
);

/// Every candidate callable on this CPU.
fn candidates() -> Vec<Cand> {
    let mut v: Vec<Cand> = vec![
        ("gemm".into(), Box::new(cand::gemm_crate)),
        ("faer".into(), Box::new(cand::faer_matmul)),
    ];
    #[cfg(target_arch = "x86_64")]
    for (avx512, isa) in [(true, Isa::Avx512), (false, Isa::Avx2)] {
        if isa.available() {
            v.push((
                format!("faer-kernel-{}", isa.name()),
                Box::new(
                    move |m, n, k, a: &[f32], b: &[f32], c: &mut [f32], l, acc, t| {
                        cand::faer_kernel(avx512, m, n, k, a, b, c, l, acc, t)
                    },
                ),
            ));
        }
    }
    for isa in isas() {
        v.push((
            format!("own-{}", isa.name()),
            Box::new(
                move |m, n, k, a: &[f32], b: &[f32], c: &mut [f32], l, acc, t| {
                    cand::own(isa, m, n, k, a, b, c, l, acc, t)
                },
            ),
        ));
        v.push((
            format!("own-prepacked-{}", isa.name()),
            Box::new(
                move |m, n, k, a: &[f32], b: &[f32], c: &mut [f32], l, acc, t| {
                    let pb = cand::pack_b(isa, n, k, b, l);
                    cand::own_prepacked(m, a, &pb, c, l, acc, t)
                },
            ),
        ));
    }
    v
}

/// One product into C by the candidate under test.
type RunFn<'a> = &'a dyn Fn(&[f32], &[f32], &mut [f32]);

#[allow(clippy::too_many_arguments)]
fn check_one(
    name: &str,
    m: usize,
    n: usize,
    k: usize,
    layout: Layout,
    accumulate: bool,
    threads: usize,
    run: RunFn<'_>,
) {
    let a = random(m * k, (m * 31 + k) as u64);
    let b = random(k * n, (n * 17 + k * 3) as u64);
    let c0 = random(m * n, 7 + m as u64);
    let r = matmul_f64(m, n, k, &a, &b, accumulate.then_some(&c0[..]), layout);
    // NaN-filled output: a "replace" kernel must overwrite every entry.
    let mut c = if accumulate {
        c0.clone()
    } else {
        vec![f32::NAN; m * n]
    };
    run(&a, &b, &mut c);
    let e = scaled_error(&c, &r, &a, &b, k);
    assert!(
        e < TOL,
        "{name}: {m}×{n}×{k} {} acc={accumulate} threads={threads}: scaled error {e:.3e} ≥ {TOL:e}",
        layout.name()
    );
}

/// Sizes straddling the tiles (MR 12/6/4, NR 32/16/8) and tiny blocks (KC 5, MC 2 tiles, NC 2
/// tiles), so the jc, pc, ic, ir and jr loops all take partial last steps.
#[test]
fn odd_sizes_every_candidate_and_blocking() {
    let sizes = [
        (1, 1, 1),
        (5, 3, 7),
        (13, 33, 17),
        (25, 65, 11),
        (37, 70, 64),
        (12, 32, 1),
    ];
    let layouts = [Layout::NN, Layout::NT, Layout::TN, Layout::TT];
    for (name, f) in candidates() {
        for &(m, n, k) in &sizes {
            for &layout in &layouts {
                for accumulate in [false, true] {
                    for threads in [1, 2] {
                        check_one(&name, m, n, k, layout, accumulate, threads, &|a, b, c| {
                            f(m, n, k, a, b, c, layout, accumulate, threads)
                        });
                    }
                }
            }
        }
    }
    for isa in isas() {
        let blk = Blocking {
            kc: 5,
            mc: 1,
            nc: 1,
        };
        for &(m, n, k) in &sizes {
            for &layout in &layouts {
                for accumulate in [false, true] {
                    let name = format!("own-{} tiny blocks", isa.name());
                    check_one(&name, m, n, k, layout, accumulate, 2, &|a, b, c| {
                        let (ars, acs) = layout.a_strides(m, k);
                        let (brs, bcs) = layout.b_strides(n, k);
                        unsafe {
                            own::sgemm_blocked(
                                isa,
                                blk,
                                m,
                                n,
                                k,
                                a.as_ptr(),
                                ars,
                                acs,
                                b.as_ptr(),
                                brs,
                                bcs,
                                c.as_mut_ptr(),
                                n,
                                accumulate,
                                2,
                            )
                        }
                    });
                    let name = format!("own-prepacked-{} tiny blocks", isa.name());
                    check_one(&name, m, n, k, layout, accumulate, 2, &|a, b, c| {
                        let (brs, bcs) = layout.b_strides(n, k);
                        let pb = PackedB::with_blocking(isa, blk, b, k, n, brs, bcs);
                        cand::own_prepacked(m, a, &pb, c, layout, accumulate, 2)
                    });
                }
            }
        }
    }
}

/// k = 0 writes zeros (or leaves C) and m = 0 / n = 0 touch nothing.
#[test]
fn empty_dimensions() {
    for (name, f) in candidates() {
        let mut c = vec![3.0f32; 6];
        f(2, 3, 0, &[], &[], &mut c, Layout::NN, true, 2);
        assert_eq!(
            c,
            vec![3.0; 6],
            "{name}: k = 0 with accumulate must leave C"
        );
        if !name.starts_with("faer-kernel") {
            f(2, 3, 0, &[], &[], &mut c, Layout::NN, false, 2);
            assert_eq!(c, vec![0.0; 6], "{name}: k = 0 must zero C");
        }
        f(0, 3, 4, &[], &[0.0; 12], &mut c, Layout::NN, false, 2);
    }
}

/// Every shape and layout of the study (both presets' training steps, the square peak), with
/// the accumulate flag the engine uses for that layout (dW accumulates, forward replaces).
#[test]
fn every_engine_shape() {
    let cands = candidates();
    // 2048³ is left out: its f64 reference alone is 8.6·10⁹ multiply-adds (1024³ has the layout).
    for g in all_gemms()
        .into_iter()
        .filter(|g| g.m * g.n * g.k <= 1 << 30)
    {
        let (m, n, k, layout) = (g.m, g.n, g.k, g.layout);
        let accumulate = layout == Layout::TN;
        let a = random(m * k, (m * 31 + k) as u64);
        let b = random(k * n, (n * 17 + k * 3) as u64);
        let c0 = random(m * n, 7 + m as u64);
        let r = matmul_f64(m, n, k, &a, &b, accumulate.then_some(&c0[..]), layout);
        for (name, f) in &cands {
            let mut c = if accumulate {
                c0.clone()
            } else {
                vec![f32::NAN; m * n]
            };
            f(m, n, k, &a, &b, &mut c, layout, accumulate, 2);
            let e = scaled_error(&c, &r, &a, &b, k);
            assert!(
                e < TOL,
                "{name}: {}: scaled error {e:.3e} ≥ {TOL:e}",
                g.id()
            );
        }
    }
}

/// The error measure catches a dropped product term at the largest K of the study (the
/// bound is not so loose that an off-by-one in k would pass).
#[test]
fn tolerance_detects_a_dropped_term() {
    let (m, n, k) = (64, 64, 4096);
    let a = random(m * k, 1);
    let b = random(k * n, 2);
    let r = matmul_f64(m, n, k, &a, &b, None, Layout::NN);
    // Drop the last k term: the f32 result of a correct sum minus a[i][k-1]·b[k-1][j].
    let c: Vec<f32> = (0..m * n)
        .map(|ij| (r[ij] - a[(ij / n) * k + k - 1] as f64 * b[(k - 1) * n + ij % n] as f64) as f32)
        .collect();
    let e = scaled_error(&c, &r, &a, &b, k);
    assert!(e > 100.0 * TOL, "dropped term gave only {e:.3e}");
}
