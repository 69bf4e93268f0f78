//! Forward-only `y = x Wᵀ (+ b)` for a few rows of x (decoding: one row per sequence), over the
//! (out, in) row-major weight as PyTorch stores it.
//!
//! A general GEMM packs the whole weight into panels before it multiplies; with 8 rows of x that
//! packing is most of the work (measured: 75% of a decode step). Here every output feature is a dot
//! product of one weight row with each row of x: the weight is read once, straight from where it
//! lies, and x (a few KiB) stays in L1.
//!
//! Register blocking: 4 weight rows × 4 (AVX-512) or 2 (AVX2) rows of x, one accumulator vector
//! per pair, k streamed in vector-width steps (the AVX-512 tail uses masked loads, the AVX2 and
//! scalar tails scalar code). The accumulators are reduced with a shuffle tree, all of a block's
//! sums at once. Several weights that share the input (q/k/v, gate/up) are one call: their output
//! features form one list, cut into tasks for rayon, so one parallel region serves them all.
//!
//! Instruction sets are picked at run time: AVX-512F, else AVX2+FMA, else portable code.
//! Results differ from a GEMM only by summation order.

use candle_core::{Storage, Tensor};
use rayon::prelude::*;

use super::common::{check_f32, f32_slice, msg, CResult, SyncPtr};

const OP: &str = "linear_rows";

/// The kernels this build can run; [`Isa::best`] is the fastest the CPU supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Isa {
    pub(crate) fn best() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if super::simd::has_avx2_fma() {
                return Isa::Avx2;
            }
        }
        Isa::Scalar
    }

    /// Every kernel the CPU can run (for tests).
    #[cfg(test)]
    pub(crate) fn available() -> Vec<Isa> {
        let mut v = vec![Isa::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if super::simd::has_avx2_fma() {
                v.push(Isa::Avx2);
            }
            if std::is_x86_feature_detected!("avx512f") {
                v.push(Isa::Avx512);
            }
        }
        v
    }
}

/// One weight of a call: w (n, k) row-major, optional bias (n), output (rows, n) row-major.
pub(crate) struct Job<'a> {
    pub w: &'a [f32],
    pub n: usize,
    pub bias: Option<&'a [f32]>,
    pub out: &'a mut [f32],
}

/// Weight rows per task: about 64 KiB of weight, a multiple of 4.
fn rows_per_task(k: usize) -> usize {
    (64 * 1024 / 4 / k.max(1)).max(4).div_ceil(4) * 4
}

/// `out_i = x W_iᵀ + b_i` for every job; x (rows, k) row-major. Parallel over output features
/// when the work is large enough to pay for a rayon round trip.
pub(crate) fn run(isa: Isa, x: &[f32], rows: usize, k: usize, jobs: &mut [Job]) {
    assert!(x.len() >= rows * k, "linear_rows: x too short");
    let per = rows_per_task(k);
    // (job, first feature, end feature, output pointer)
    let mut tasks: Vec<(usize, usize, usize, SyncPtr)> = Vec::new();
    let mut work = 0usize;
    for (j, job) in jobs.iter_mut().enumerate() {
        assert!(
            job.w.len() >= job.n * k && job.out.len() >= rows * job.n,
            "linear_rows: job too short"
        );
        let p = SyncPtr::new(job.out);
        let mut c = 0;
        while c < job.n {
            let e = (c + per).min(job.n);
            tasks.push((j, c, e, p));
            c = e;
        }
        work += job.n * k * rows;
    }
    let jobs = &*jobs;
    let task = |&(j, c0, c1, p): &(usize, usize, usize, SyncPtr)| {
        let job = &jobs[j];
        // SAFETY: each task writes only the columns c0..c1 of its job's output (rows × n), and the
        // tasks of one job cover disjoint column ranges.
        unsafe { features(isa, x, rows, k, job.w, job.n, job.bias, c0, c1, p) };
    };
    if work < 64 * 1024 || tasks.len() < 2 || rayon::current_num_threads() < 2 {
        tasks.iter().for_each(task);
    } else {
        tasks.par_iter().for_each(task);
    }
}

/// Output features c0..c1 of one weight, all rows of x.
///
/// # Safety
/// `out` points at a (rows, n) buffer; no one else writes its columns c0..c1 meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn features(
    isa: Isa,
    x: &[f32],
    rows: usize,
    k: usize,
    w: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    c0: usize,
    c1: usize,
    out: SyncPtr,
) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        return features_avx512(x, rows, k, w, n, bias, c0, c1, out);
    }
    let xr = match isa {
        Isa::Scalar => 4,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => 2,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => 4,
    };
    let mut sums = [0f32; 16];
    let mut c = c0;
    while c < c1 {
        let wr = (c1 - c).min(4);
        let wp = w[c * k..].as_ptr();
        let mut r = 0;
        while r < rows {
            let nr = (rows - r).min(xr);
            let xp = x[r * k..].as_ptr();
            block(isa, xp, wp, k, wr, nr, &mut sums);
            for i in 0..wr {
                let b = bias.map_or(0.0, |b| b[c + i]);
                for j in 0..nr {
                    *out.at((r + j) * n + c + i) = sums[i * 4 + j] + b;
                }
            }
            r += nr;
        }
        c += wr;
    }
}

/// sums[i·4 + j] = Σ_p w[i·k + p]·x[j·k + p] for i < wr ≤ 4, j < nr ≤ 4 (≤ 2 for AVX2).
///
/// # Safety
/// `w` has wr rows and `x` nr rows of k readable floats.
#[inline(always)]
unsafe fn block(
    isa: Isa,
    x: *const f32,
    w: *const f32,
    k: usize,
    wr: usize,
    nr: usize,
    sums: &mut [f32; 16],
) {
    macro_rules! go {
        ($f:ident, $($w:literal, $x:literal);*) => {
            match (wr, nr) {
                $(($w, $x) => $f::<$w, $x>(x, w, k, sums),)*
                _ => unreachable!("block {wr}x{nr}"),
            }
        };
    }
    match isa {
        Isa::Scalar => {
            go!(block_scalar, 1,1;1,2;1,3;1,4;2,1;2,2;2,3;2,4;3,1;3,2;3,3;3,4;4,1;4,2;4,3;4,4)
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => go!(block_avx2, 1,1;1,2;2,1;2,2;3,1;3,2;4,1;4,2),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unreachable!("AVX-512 goes through features_avx512"),
    }
}

/// Portable version: 8 partial sums per pair, which LLVM vectorises for the baseline target.
#[inline(always)]
unsafe fn block_scalar<const WR: usize, const XR: usize>(
    x: *const f32,
    w: *const f32,
    k: usize,
    sums: &mut [f32; 16],
) {
    const L: usize = 8;
    let mut acc = [[[0f32; L]; XR]; WR];
    let kk = k / L * L;
    let mut p = 0;
    while p < kk {
        for i in 0..WR {
            let wv = std::slice::from_raw_parts(w.add(i * k + p), L);
            for j in 0..XR {
                let xv = std::slice::from_raw_parts(x.add(j * k + p), L);
                for l in 0..L {
                    acc[i][j][l] += wv[l] * xv[l];
                }
            }
        }
        p += L;
    }
    for i in 0..WR {
        for j in 0..XR {
            let a = &acc[i][j];
            let mut s = ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
            for q in kk..k {
                s += *w.add(i * k + q) * *x.add(j * k + q);
            }
            sums[i * 4 + j] = s;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2<const WR: usize, const XR: usize>(
    x: *const f32,
    w: *const f32,
    k: usize,
    sums: &mut [f32; 16],
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_ps(); XR]; WR];
    let kk = k / 8 * 8;
    let mut p = 0;
    while p < kk {
        let mut wv = [_mm256_setzero_ps(); WR];
        for i in 0..WR {
            wv[i] = _mm256_loadu_ps(w.add(i * k + p));
        }
        for j in 0..XR {
            let xv = _mm256_loadu_ps(x.add(j * k + p));
            for i in 0..WR {
                acc[i][j] = _mm256_fmadd_ps(wv[i], xv, acc[i][j]);
            }
        }
        p += 8;
    }
    // Reduce 8 vectors (pair index i·2 + j, zero-padded) to one vector of 8 sums.
    let mut v = [_mm256_setzero_ps(); 8];
    for i in 0..WR {
        for j in 0..XR {
            v[i * 2 + j] = acc[i][j];
        }
    }
    let t01 = _mm256_hadd_ps(v[0], v[1]);
    let t23 = _mm256_hadd_ps(v[2], v[3]);
    let t45 = _mm256_hadd_ps(v[4], v[5]);
    let t67 = _mm256_hadd_ps(v[6], v[7]);
    let a = _mm256_hadd_ps(t01, t23); // per 128-bit half: partial sums of v0..v3
    let b = _mm256_hadd_ps(t45, t67);
    let lo = _mm256_permute2f128_ps(a, b, 0x20);
    let hi = _mm256_permute2f128_ps(a, b, 0x31);
    let mut s = [0f32; 8];
    _mm256_storeu_ps(s.as_mut_ptr(), _mm256_add_ps(lo, hi));
    for i in 0..WR {
        for j in 0..XR {
            let mut t = s[i * 2 + j];
            for q in kk..k {
                t += *w.add(i * k + q) * *x.add(j * k + q);
            }
            sums[i * 4 + j] = t;
        }
    }
}

/// [`features`] with AVX-512: for a full block of 4 weight rows, x row j's 4 sums are the j-th
/// 128-bit lane of the reduced vector and go to the output with one 4-float store.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn features_avx512(
    x: &[f32],
    rows: usize,
    k: usize,
    w: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    c0: usize,
    c1: usize,
    out: SyncPtr,
) {
    use std::arch::x86_64::*;
    let mut sums = [0f32; 16];
    let mut c = c0;
    while c < c1 {
        let wr = (c1 - c).min(4);
        let wp = w[c * k..].as_ptr();
        let mut r = 0;
        while r < rows {
            let nr = (rows - r).min(4);
            let xp = x[r * k..].as_ptr();
            macro_rules! go {
                ($($w:literal, $x:literal);*) => {
                    match (wr, nr) {
                        $(($w, $x) => block_avx512::<$w, $x>(xp, wp, k),)*
                        _ => unreachable!("block {wr}x{nr}"),
                    }
                };
            }
            let total = go!(1,1;1,2;1,3;1,4;2,1;2,2;2,3;2,4;3,1;3,2;3,3;3,4;4,1;4,2;4,3;4,4);
            if wr == 4 {
                let b4 = bias.map_or(_mm_setzero_ps(), |b| _mm_loadu_ps(b[c..c + 4].as_ptr()));
                for j in 0..nr {
                    let lane = match j {
                        0 => _mm512_extractf32x4_ps::<0>(total),
                        1 => _mm512_extractf32x4_ps::<1>(total),
                        2 => _mm512_extractf32x4_ps::<2>(total),
                        _ => _mm512_extractf32x4_ps::<3>(total),
                    };
                    _mm_storeu_ps(out.at((r + j) * n + c), _mm_add_ps(lane, b4));
                }
            } else {
                _mm512_storeu_ps(sums.as_mut_ptr(), total);
                for j in 0..nr {
                    for i in 0..wr {
                        *out.at((r + j) * n + c + i) =
                            sums[j * 4 + i] + bias.map_or(0.0, |b| b[c + i]);
                    }
                }
            }
            r += nr;
        }
        c += wr;
    }
}

/// The 16 sums Σ_p w[i·k + p]·x[j·k + p] (i < WR, j < XR; others 0) at index j·4 + i.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn block_avx512<const WR: usize, const XR: usize>(
    x: *const f32,
    w: *const f32,
    k: usize,
) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); XR]; WR];
    let kk = k / 16 * 16;
    let mut p = 0;
    while p < kk {
        let mut wv = [_mm512_setzero_ps(); WR];
        for i in 0..WR {
            wv[i] = _mm512_loadu_ps(w.add(i * k + p));
            // The same line of the next block of 4 weight rows (the weight is read front to back);
            // a prefetch never faults, so running past the end of the weight is harmless.
            _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add((i + 4) * k + p) as *const i8);
        }
        for j in 0..XR {
            let xv = _mm512_loadu_ps(x.add(j * k + p));
            for i in 0..WR {
                acc[i][j] = _mm512_fmadd_ps(wv[i], xv, acc[i][j]);
            }
        }
        p += 16;
    }
    if kk < k {
        let m: __mmask16 = ((1u32 << (k - kk)) - 1) as __mmask16;
        let mut wv = [_mm512_setzero_ps(); WR];
        for i in 0..WR {
            wv[i] = _mm512_maskz_loadu_ps(m, w.add(i * k + kk));
        }
        for j in 0..XR {
            let xv = _mm512_maskz_loadu_ps(m, x.add(j * k + kk));
            for i in 0..WR {
                acc[i][j] = _mm512_fmadd_ps(wv[i], xv, acc[i][j]);
            }
        }
    }
    // Reduce 16 vectors (pair index j·4 + i, zero-padded) to one vector of 16 sums.
    let mut v = [_mm512_setzero_ps(); 16];
    for i in 0..WR {
        for j in 0..XR {
            v[j * 4 + i] = acc[i][j];
        }
    }
    // Level 1, per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3].
    let mut s2 = [_mm512_setzero_ps(); 8];
    for q in 0..8 {
        let (a, b) = (v[2 * q], v[2 * q + 1]);
        s2[q] = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
    }
    // Level 2, per 128-bit lane: [a, b, c, d] (that lane's share of four sums).
    let mut s4 = [_mm512_setzero_ps(); 4];
    for q in 0..4 {
        let (ab, cd) = (s2[2 * q], s2[2 * q + 1]);
        s4[q] = _mm512_add_ps(
            _mm512_shuffle_ps::<0x44>(ab, cd),
            _mm512_shuffle_ps::<0xEE>(ab, cd),
        );
    }
    // Level 3: [u0 lanes 0+1, u0 lanes 2+3, u1 lanes 0+1, u1 lanes 2+3], and the same for u2, u3.
    let lane_pairs = |a: __m512, b: __m512| {
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x88>(a, b),
            _mm512_shuffle_f32x4::<0xDD>(a, b),
        )
    };
    let v01 = lane_pairs(s4[0], s4[1]);
    let v23 = lane_pairs(s4[2], s4[3]);
    // Level 4: lane g holds the four complete sums of group g.
    lane_pairs(v01, v23)
}

/// Borrow the contiguous f32 contents of `t` for the duration of `f`.
fn with_slice<R>(t: &Tensor, arg: &str, f: impl FnOnce(&[f32]) -> CResult<R>) -> CResult<R> {
    let t = t.contiguous()?;
    let (g, l) = t.storage_and_layout();
    let s = match &*g {
        Storage::Cpu(s) => f32_slice(s, l, OP, arg)?,
        _ => return Err(msg(format!("{OP}: `{arg}` is not on the CPU"))),
    };
    f(s)
}

/// See [`super::linear_rows`].
pub(crate) fn linear_rows(
    x: &Tensor,
    weights: &[(&Tensor, Option<&Tensor>)],
) -> CResult<Vec<Tensor>> {
    check_f32(x, OP, "x")?;
    let dims = x.dims().to_vec();
    let k = *dims
        .last()
        .ok_or_else(|| msg(format!("{OP}: x must have at least one dimension")))?;
    let rows: usize = dims[..dims.len() - 1].iter().product();
    let mut outs: Vec<Vec<f32>> = Vec::with_capacity(weights.len());
    for (i, (w, b)) in weights.iter().enumerate() {
        check_f32(w, OP, "weight")?;
        let (n, kw) = w.dims2().map_err(|_| {
            msg(format!(
                "{OP}: weight {i} must be (out, in), got {:?}",
                w.dims()
            ))
        })?;
        if kw != k {
            return Err(msg(format!(
                "{OP}: weight {i} is {:?} but x has {k} input features",
                w.dims()
            )));
        }
        if let Some(b) = b {
            check_f32(b, OP, "bias")?;
            if b.dims() != [n] {
                return Err(msg(format!(
                    "{OP}: bias {i} has shape {:?}, expected [{n}]",
                    b.dims()
                )));
            }
        }
        outs.push(vec![0f32; rows * n]);
    }
    // Hold every weight's storage for the call (read guards), then run all jobs in one region.
    let wc: Vec<Tensor> = weights
        .iter()
        .map(|(w, _)| w.contiguous())
        .collect::<CResult<_>>()?;
    let bc: Vec<Option<Tensor>> = weights
        .iter()
        .map(|(_, b)| b.map(|b| b.contiguous()).transpose())
        .collect::<CResult<_>>()?;
    let wg: Vec<_> = wc.iter().map(|t| t.storage_and_layout()).collect();
    let bg: Vec<_> = bc
        .iter()
        .map(|t| t.as_ref().map(|t| t.storage_and_layout()))
        .collect();
    let mut wsl: Vec<&[f32]> = Vec::with_capacity(wg.len());
    for (g, l) in &wg {
        match &**g {
            Storage::Cpu(s) => wsl.push(f32_slice(s, l, OP, "weight")?),
            _ => return Err(msg(format!("{OP}: a weight is not on the CPU"))),
        }
    }
    let mut bsl: Vec<Option<&[f32]>> = Vec::with_capacity(bg.len());
    for b in &bg {
        match b {
            None => bsl.push(None),
            Some((g, l)) => match &**g {
                Storage::Cpu(s) => bsl.push(Some(f32_slice(s, l, OP, "bias")?)),
                _ => return Err(msg(format!("{OP}: a bias is not on the CPU"))),
            },
        }
    }
    with_slice(x, "x", |xs| {
        let mut jobs: Vec<Job> = outs
            .iter_mut()
            .zip(wsl.iter().zip(&bsl))
            .zip(&wc)
            .map(|((out, (w, b)), wt)| Job {
                w,
                n: wt.dim(0).unwrap_or(0),
                bias: *b,
                out,
            })
            .collect();
        run(Isa::best(), xs, rows, k, &mut jobs);
        Ok(())
    })?;
    let dev = x.device();
    outs.into_iter()
        .zip(&wc)
        .map(|(o, w)| {
            let mut od = dims.clone();
            *od.last_mut().unwrap_or(&mut 0) = w.dim(0)?;
            Tensor::from_vec(o, od, dev)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn naive(x: &[f32], rows: usize, k: usize, w: &[f32], n: usize, b: Option<&[f32]>) -> Vec<f64> {
        let mut y = vec![0f64; rows * n];
        for r in 0..rows {
            for o in 0..n {
                let mut s = b.map_or(0.0, |b| b[o] as f64);
                for p in 0..k {
                    s += x[r * k + p] as f64 * w[o * k + p] as f64;
                }
                y[r * n + o] = s;
            }
        }
        y
    }

    fn randv(rng: &mut Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.normal() as f32).collect()
    }

    /// Every kernel on odd shapes (k tails for 16-, 8- and 1-wide code; row and feature counts that
    /// are not multiples of the blocks) against a float64 sum: |err| ≤ 1e-5·(Σ|x·w| + 1), the size
    /// of float32 rounding over k ≤ 300 terms.
    #[test]
    fn kernels_match_a_float64_matmul() {
        let mut rng = Rng::new(11);
        for &(rows, k, n1, n2) in &[
            (1, 1, 1, 3),
            (3, 17, 5, 7),
            (8, 256, 33, 9),
            (5, 300, 4, 13),
            (16, 31, 70, 2),
            (7, 64, 128, 1),
        ] {
            let x = randv(&mut rng, rows * k);
            let w1 = randv(&mut rng, n1 * k);
            let w2 = randv(&mut rng, n2 * k);
            let b2 = randv(&mut rng, n2);
            let want1 = naive(&x, rows, k, &w1, n1, None);
            let want2 = naive(&x, rows, k, &w2, n2, Some(&b2));
            let abs1 = naive(
                &x.iter().map(|v| v.abs()).collect::<Vec<_>>(),
                rows,
                k,
                &w1.iter().map(|v| v.abs()).collect::<Vec<_>>(),
                n1,
                None,
            );
            for isa in Isa::available() {
                let mut o1 = vec![f32::NAN; rows * n1];
                let mut o2 = vec![f32::NAN; rows * n2];
                let mut jobs = [
                    Job {
                        w: &w1,
                        n: n1,
                        bias: None,
                        out: &mut o1,
                    },
                    Job {
                        w: &w2,
                        n: n2,
                        bias: Some(&b2),
                        out: &mut o2,
                    },
                ];
                run(isa, &x, rows, k, &mut jobs);
                for (i, (&g, &e)) in o1.iter().zip(&want1).enumerate() {
                    let tol = 1e-5 * (abs1[i] + 1.0);
                    assert!(
                        ((g as f64) - e).abs() <= tol,
                        "{isa:?} {rows}x{k}x{n1} [{i}]: {g} vs {e}"
                    );
                }
                for (i, (&g, &e)) in o2.iter().zip(&want2).enumerate() {
                    assert!(
                        ((g as f64) - e).abs() <= 1e-4 * (k as f64).sqrt(),
                        "{isa:?} bias job [{i}]: {g} vs {e}"
                    );
                }
            }
        }
    }

    /// Big enough to take the parallel path (work ≥ 64k): same answer as one task at a time.
    #[test]
    fn parallel_split_matches_sequential() {
        let mut rng = Rng::new(12);
        let (rows, k, n) = (8, 200, 301);
        let x = randv(&mut rng, rows * k);
        let w = randv(&mut rng, n * k);
        let mut a = vec![0f32; rows * n];
        run(
            Isa::best(),
            &x,
            rows,
            k,
            &mut [Job {
                w: &w,
                n,
                bias: None,
                out: &mut a,
            }],
        );
        let want = naive(&x, rows, k, &w, n, None);
        for (g, e) in a.iter().zip(&want) {
            assert!(((*g as f64) - e).abs() < 1e-3, "{g} vs {e}");
        }
    }

    #[test]
    fn tensor_api_matches_matmul_and_checks_shapes() {
        let mut rng = Rng::new(13);
        let dev = candle_core::Device::Cpu;
        let x = rng.randn(&[2, 3, 40], 1.0, &dev).unwrap();
        let w = rng.randn(&[21, 40], 1.0, &dev).unwrap();
        let b = rng.randn(&[21], 1.0, &dev).unwrap();
        let y = linear_rows(&x, &[(&w, Some(&b)), (&w, None)]).unwrap();
        assert_eq!(y[0].dims(), &[2, 3, 21]);
        let want = x.reshape((6, 40)).unwrap().matmul(&w.t().unwrap()).unwrap();
        let want_b = want.broadcast_add(&b).unwrap().reshape((2, 3, 21)).unwrap();
        let d = (&y[0] - want_b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-4, "{d}");
        let d = (y[1].reshape((6, 21)).unwrap() - want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-4, "{d}");
        let bad = rng.randn(&[21, 41], 1.0, &dev).unwrap();
        let e = linear_rows(&x, &[(&bad, None)]).unwrap_err().to_string();
        assert!(e.contains("input features"), "{e}");
    }
}
