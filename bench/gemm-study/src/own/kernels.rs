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

/// Prefetches the C tile (rows × lines of 64 bytes) into L1 while the k loop runs, so the final
/// read-modify-write does not wait on L2/L3 (C is re-read once per KC block).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn prefetch_c(c: *const f32, ldc: usize, rows: usize, lines: usize) {
    for i in 0..rows {
        for l in 0..lines {
            _mm_prefetch::<_MM_HINT_T0>(c.add(i * ldc + l * 16) as *const i8);
        }
    }
}

/// Rows of the AVX-512 tile.
pub const MR512: usize = 12;
/// Columns of the AVX-512 tile.
pub const NR512: usize = 32;
/// Rows of the AVX2 tile.
pub const MR256: usize = 6;
/// Columns of the AVX2 tile.
pub const NR256: usize = 16;

/// AVX-512 microkernel: `c[i*ldc + j] (= or +=) Σ_p a[p*a_ps + i] · b[p*b_ps + j]`, i < 12,
/// j < 32. Packed panels have a_ps = 12, b_ps = 32; operands already laid out k-major (A stored
/// (k×m), B stored (k×n)) are read in place with a_ps = m, b_ps = n.
///
/// # Safety
/// The CPU has AVX-512F; `a[p*a_ps + i]` (i < 12) and `b[p*b_ps + j]` (j < 32) are readable for
/// p < kc; `c` addresses a 12×32 tile with row stride `ldc`.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn micro_avx512(
    kc: usize,
    a: *const f32,
    a_ps: usize,
    b: *const f32,
    b_ps: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    micro_avx512_rows::<MR512, 2>(kc, a, a_ps, b, b_ps, c, ldc, accumulate)
}

/// [`micro_avx512`] for the first `MR` ≤ 12 rows and `NV` ≤ 2 vectors (16·NV columns) only: edge
/// panels of 1-4 or 5-8 rows, or of ≤ 16 columns (the lab preset's Dh = 16 attention tiles), do
/// not compute the full 12×32 tile and drop the rest.
///
/// # Safety
/// As [`micro_avx512`] with MR rows and 16·NV columns.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn micro_avx512_rows<const MR: usize, const NV: usize>(
    kc: usize,
    a: *const f32,
    a_ps: usize,
    b: *const f32,
    b_ps: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    prefetch_c(c, ldc, MR, NV);
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    let mut ap = a;
    let mut bp = b;
    for _ in 0..kc {
        let mut bv = [_mm512_setzero_ps(); NV];
        for (v, x) in bv.iter_mut().enumerate() {
            *x = _mm512_loadu_ps(bp.add(16 * v));
        }
        for i in 0..MR {
            let ai = _mm512_set1_ps(*ap.add(i));
            for v in 0..NV {
                acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
            }
        }
        ap = ap.add(a_ps);
        bp = bp.add(b_ps);
    }
    for i in 0..MR {
        for v in 0..NV {
            let d = c.add(i * ldc + 16 * v);
            if accumulate {
                _mm512_storeu_ps(d, _mm512_add_ps(_mm512_loadu_ps(d), acc[i][v]));
            } else {
                _mm512_storeu_ps(d, acc[i][v]);
            }
        }
    }
}

/// AVX2+FMA microkernel: `c[i*ldc + j] (= or +=) Σ_p a[p*a_ps + i] · b[p*b_ps + j]`, i < 6,
/// j < 16 (strides as [`micro_avx512`]).
///
/// # Safety
/// The CPU has AVX2 and FMA; `a[p*a_ps + i]` (i < 6) and `b[p*b_ps + j]` (j < 16) are readable
/// for p < kc; `c` addresses a 6×16 tile with row stride `ldc`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn micro_avx2(
    kc: usize,
    a: *const f32,
    a_ps: usize,
    b: *const f32,
    b_ps: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    const MR: usize = MR256;
    prefetch_c(c, ldc, MR, 1);
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
        ap = ap.add(a_ps);
        bp = bp.add(b_ps);
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

/// AVX-512 microkernel with A read in place from a row-major matrix: element (i, p) at
/// `a[i*lda + p]` (rows 0-3, 4-7, 8-11 addressed from three base pointers advancing one float per
/// p, offsets 0, lda, 2·lda, 3·lda), B as in [`micro_avx512`]. Spares the transposing pack of a
/// row-major A (the activations x and dy of the forward and input-gradient products).
///
/// # Safety
/// The CPU has AVX-512F; `a[i*lda + p]` (i < 12) and `b[p*b_ps + j]` (j < 32) are readable for
/// p < kc; `c` addresses a 12×32 tile with row stride `ldc`.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn micro_avx512_arows(
    kc: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    b_ps: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    micro_avx512_arows_nv::<2>(kc, a, lda, b, b_ps, c, ldc, accumulate)
}

/// [`micro_avx512_arows`] for the first 16·NV columns (NV = 1: tiles of ≤ 16 columns).
///
/// # Safety
/// As [`micro_avx512_arows`] with 16·NV columns.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn micro_avx512_arows_nv<const NV: usize>(
    kc: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    b_ps: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    const MR: usize = MR512;
    prefetch_c(c, ldc, MR, NV);
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    let (l1, l2, l3) = (lda, 2 * lda, 3 * lda);
    let mut a0 = a;
    let mut a4 = a.add(4 * lda);
    let mut a8 = a.add(8 * lda);
    let mut bp = b;
    for _ in 0..kc {
        let mut bv = [_mm512_setzero_ps(); NV];
        for (v, x) in bv.iter_mut().enumerate() {
            *x = _mm512_loadu_ps(bp.add(16 * v));
        }
        let rows = [
            a0,
            a0.add(l1),
            a0.add(l2),
            a0.add(l3),
            a4,
            a4.add(l1),
            a4.add(l2),
            a4.add(l3),
            a8,
            a8.add(l1),
            a8.add(l2),
            a8.add(l3),
        ];
        for i in 0..MR {
            let ai = _mm512_set1_ps(*rows[i]);
            for v in 0..NV {
                acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
            }
        }
        a0 = a0.add(1);
        a4 = a4.add(1);
        a8 = a8.add(1);
        bp = bp.add(b_ps);
    }
    for i in 0..MR {
        for v in 0..NV {
            let d = c.add(i * ldc + 16 * v);
            if accumulate {
                _mm512_storeu_ps(d, _mm512_add_ps(_mm512_loadu_ps(d), acc[i][v]));
            } else {
                _mm512_storeu_ps(d, acc[i][v]);
            }
        }
    }
}

/// AVX2 twin of [`micro_avx512_arows`]: 6×16 tile, A (i, p) at `a[i*lda + p]`.
///
/// # Safety
/// The CPU has AVX2 and FMA; `a[i*lda + p]` (i < 6) and `b[p*b_ps + j]` (j < 16) are readable
/// for p < kc; `c` addresses a 6×16 tile with row stride `ldc`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn micro_avx2_arows(
    kc: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    b_ps: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    const MR: usize = MR256;
    prefetch_c(c, ldc, MR, 1);
    let mut c0 = [_mm256_setzero_ps(); MR];
    let mut c1 = [_mm256_setzero_ps(); MR];
    let (l1, l2, l3) = (lda, 2 * lda, 3 * lda);
    let mut a0 = a;
    let mut a4 = a.add(4 * lda);
    let mut bp = b;
    for _ in 0..kc {
        let b0 = _mm256_loadu_ps(bp);
        let b1 = _mm256_loadu_ps(bp.add(8));
        let rows = [a0, a0.add(l1), a0.add(l2), a0.add(l3), a4, a4.add(l1)];
        for i in 0..MR {
            let ai = _mm256_broadcast_ss(&*rows[i]);
            c0[i] = _mm256_fmadd_ps(ai, b0, c0[i]);
            c1[i] = _mm256_fmadd_ps(ai, b1, c1[i]);
        }
        a0 = a0.add(1);
        a4 = a4.add(1);
        bp = bp.add(b_ps);
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
/// `a[p*a_ps + i]` (i < mr) and `b[p*b_ps + j]` (j < nr) are readable for p < kc; `c` addresses
/// an mr×nr tile with row stride `ldc`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn micro_scalar(
    mr: usize,
    nr: usize,
    kc: usize,
    a: *const f32,
    a_ps: usize,
    b: *const f32,
    b_ps: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    let mut acc = vec![0f32; mr * nr];
    for p in 0..kc {
        for i in 0..mr {
            let ai = *a.add(p * a_ps + i);
            for j in 0..nr {
                acc[i * nr + j] += ai * *b.add(p * b_ps + j);
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
