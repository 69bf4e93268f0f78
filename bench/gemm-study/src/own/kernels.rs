//! Register-blocked microkernels: `C (MR×NR) [+]= Ã (MR×kc) B̃ (kc×NR)` over packed panels.
//!
//! Ã is packed k-major (for each p, the MR values of column p of the row panel: broadcast one at a
//! time), B̃ is packed k-major (for each p, NR contiguous values: loaded as NR/lanes vectors). The
//! accumulators (MR × NR/lanes vector registers) stay in registers for the whole kc loop; each step
//! issues NR/lanes loads, MR broadcasts and MR·NR/lanes FMAs (the outer-product formulation of
//! BLIS, Van Zee & van de Geijn 2015, "BLIS: A Framework for Rapidly Instantiating BLAS
//! Functionality", §3; Goto & van de Geijn 2008 for the blocking).
//!
//! - AVX-512: MR = 12, NR = 32 → 24 zmm accumulators + 2 B vectors + 1 broadcast (of 32).
//! - AVX2+FMA: MR = 6, NR = 16 → 12 ymm accumulators + 2 B vectors + 1 broadcast (of 16).

#[cfg(target_arch = "x86_64")]
use core::arch::x86_64::*;

/// Rows of the AVX-512 tile.
pub const MR512: usize = 12;
/// Columns of the AVX-512 tile.
pub const NR512: usize = 32;
/// Rows of the AVX2 tile.
pub const MR256: usize = 6;
/// Columns of the AVX2 tile.
pub const NR256: usize = 16;

/// AVX-512 microkernel: `c[i*ldc + j] (= or +=) Σ_p a[p*MR+i] · b[p*NR+j]`, i < 12, j < 32.
///
/// # Safety
/// The CPU has AVX-512F; `a` holds kc·12 and `b` kc·32 floats; `c` addresses a 12×32 tile with
/// row stride `ldc`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
pub unsafe fn micro_avx512(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    const MR: usize = MR512;
    let mut c0 = [_mm512_setzero_ps(); MR];
    let mut c1 = [_mm512_setzero_ps(); MR];
    let mut ap = a;
    let mut bp = b;
    for _ in 0..kc {
        let b0 = _mm512_loadu_ps(bp);
        let b1 = _mm512_loadu_ps(bp.add(16));
        for i in 0..MR {
            let ai = _mm512_set1_ps(*ap.add(i));
            c0[i] = _mm512_fmadd_ps(ai, b0, c0[i]);
            c1[i] = _mm512_fmadd_ps(ai, b1, c1[i]);
        }
        ap = ap.add(MR);
        bp = bp.add(NR512);
    }
    for i in 0..MR {
        let row = c.add(i * ldc);
        if accumulate {
            _mm512_storeu_ps(row, _mm512_add_ps(_mm512_loadu_ps(row), c0[i]));
            _mm512_storeu_ps(
                row.add(16),
                _mm512_add_ps(_mm512_loadu_ps(row.add(16)), c1[i]),
            );
        } else {
            _mm512_storeu_ps(row, c0[i]);
            _mm512_storeu_ps(row.add(16), c1[i]);
        }
    }
}

/// AVX2+FMA microkernel: `c[i*ldc + j] (= or +=) Σ_p a[p*MR+i] · b[p*NR+j]`, i < 6, j < 16.
///
/// # Safety
/// The CPU has AVX2 and FMA; `a` holds kc·6 and `b` kc·16 floats; `c` addresses a 6×16 tile with
/// row stride `ldc`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn micro_avx2(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    const MR: usize = MR256;
    let mut c0 = [_mm256_setzero_ps(); MR];
    let mut c1 = [_mm256_setzero_ps(); MR];
    let mut ap = a;
    let mut bp = b;
    for _ in 0..kc {
        let b0 = _mm256_loadu_ps(bp);
        let b1 = _mm256_loadu_ps(bp.add(8));
        for i in 0..MR {
            let ai = _mm256_broadcast_ss(&*ap.add(i));
            c0[i] = _mm256_fmadd_ps(ai, b0, c0[i]);
            c1[i] = _mm256_fmadd_ps(ai, b1, c1[i]);
        }
        ap = ap.add(MR);
        bp = bp.add(NR256);
    }
    for i in 0..MR {
        let row = c.add(i * ldc);
        if accumulate {
            _mm256_storeu_ps(row, _mm256_add_ps(_mm256_loadu_ps(row), c0[i]));
            _mm256_storeu_ps(
                row.add(8),
                _mm256_add_ps(_mm256_loadu_ps(row.add(8)), c1[i]),
            );
        } else {
            _mm256_storeu_ps(row, c0[i]);
            _mm256_storeu_ps(row.add(8), c1[i]);
        }
    }
}

/// Portable microkernel for any (MR, NR) (non-x86 targets and the tests' cross-check).
///
/// # Safety
/// `a` holds kc·mr and `b` kc·nr floats; `c` addresses an mr×nr tile with row stride `ldc`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn micro_scalar(
    mr: usize,
    nr: usize,
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    let mut acc = vec![0f32; mr * nr];
    for p in 0..kc {
        for i in 0..mr {
            let ai = *a.add(p * mr + i);
            for j in 0..nr {
                acc[i * nr + j] += ai * *b.add(p * nr + j);
            }
        }
    }
    for i in 0..mr {
        for j in 0..nr {
            let d = c.add(i * ldc + j);
            *d = if accumulate {
                *d + acc[i * nr + j]
            } else {
                acc[i * nr + j]
            };
        }
    }
}
