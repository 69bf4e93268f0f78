//! Small vectorisable kernels shared by the fused ops, and the runtime CPU-feature dispatch.
//!
//! The workspace is built for the baseline x86-64 target (SSE2), so plain loops only vectorise
//! 4-wide. [`dispatch!`] compiles a kernel body twice, once as is and once with AVX2+FMA enabled,
//! and picks the second at run time when the CPU has it. Kernels are written as simple loops over
//! fixed-width lane arrays so that LLVM turns them into vector code in both versions.
//!
//! Reductions use a fixed number of lanes ([`LANES`]) and a fixed combination order, so a result
//! depends only on the inputs (and on which of the two code paths the machine takes), never on
//! threads or timing.

/// Lanes of the partial sums in reductions (two AVX2 registers).
pub(crate) const LANES: usize = 16;

/// True when the CPU supports AVX2 and FMA (checked once, then cached by std).
#[inline]
pub(crate) fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Defines `fn name(args) -> ret` whose body is compiled for the baseline target and for
/// AVX2+FMA, choosing at run time. Arguments must be plain identifiers with types.
macro_rules! dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn inner($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn fast($($arg: $ty),*) $(-> $ret)? { inner($($arg),*) }
                if $crate::ops::simd::has_avx2_fma() {
                    // SAFETY: the CPU supports the features `fast` was compiled for.
                    return unsafe { fast($($arg),*) };
                }
            }
            inner($($arg),*)
        }
    };
}
pub(crate) use dispatch;

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5·2^23: adding it rounds an f32 of magnitude < 2^22 to the nearest integer.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// e^x for f32, branch-free so that loops over it vectorise (Cephes-style range reduction and a
/// degree-6 polynomial; relative error below 4e-7 against `f32::exp` on [-87, 88], see the test). Returns exactly 0 for
/// x < -87.3 (including -inf) and saturates near f32::MAX above 88.3.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let xc = x.clamp(-87.3, 88.3);
    let t = xc * LOG2E + ROUND_MAGIC;
    let n = t - ROUND_MAGIC;
    let ni = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    let scale = f32::from_bits(((ni + 127) as u32) << 23);
    if x < -87.3 {
        0.0
    } else {
        y * scale
    }
}

/// Logistic sigmoid 1 / (1 + e^-x) with the vectorisable [`exp`].
#[inline(always)]
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// Σ a·b with [`LANES`] partial sums (fixed order).
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; LANES];
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    for (l, (x, y)) in ca.remainder().iter().zip(cb.remainder()).enumerate() {
        acc[l] += x * y;
    }
    hsum(&acc)
}

/// Σ a² with [`LANES`] partial sums.
#[inline(always)]
pub(crate) fn sum_sq(a: &[f32]) -> f32 {
    dot(a, a)
}

/// Sum of the lanes in a fixed pairwise order.
#[inline(always)]
pub(crate) fn hsum(acc: &[f32; LANES]) -> f32 {
    let mut h = [0f32; LANES / 2];
    for l in 0..LANES / 2 {
        h[l] = acc[l] + acc[l + LANES / 2];
    }
    let mut q = [0f32; LANES / 4];
    for l in 0..LANES / 4 {
        q[l] = h[l] + h[l + LANES / 4];
    }
    (q[0] + q[2]) + (q[1] + q[3])
}

/// max(a) with [`LANES`] partial maxima (-inf for an empty slice).
#[inline(always)]
pub(crate) fn max(a: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut c = a.chunks_exact(LANES);
    for x in &mut c {
        for l in 0..LANES {
            acc[l] = if x[l] > acc[l] { x[l] } else { acc[l] };
        }
    }
    for (l, x) in c.remainder().iter().enumerate() {
        acc[l] = if *x > acc[l] { *x } else { acc[l] };
    }
    acc.iter()
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m })
}

/// Σ e^(a − shift) with [`LANES`] partial sums.
#[inline(always)]
pub(crate) fn sum_exp_shifted(a: &[f32], shift: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut c = a.chunks_exact(LANES);
    for x in &mut c {
        for l in 0..LANES {
            acc[l] += exp(x[l] - shift);
        }
    }
    for (l, x) in c.remainder().iter().enumerate() {
        acc[l] += exp(x - shift);
    }
    hsum(&acc)
}

/// `a ← e^(a − shift)` in place; returns Σ of the new values ([`LANES`] partial sums).
#[inline(always)]
pub(crate) fn exp_shift_inplace_sum(a: &mut [f32], shift: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut c = a.chunks_exact_mut(LANES);
    for x in &mut c {
        for l in 0..LANES {
            let e = exp(x[l] - shift);
            x[l] = e;
            acc[l] += e;
        }
    }
    for (l, x) in c.into_remainder().iter_mut().enumerate() {
        let e = exp(*x - shift);
        *x = e;
        acc[l] += e;
    }
    hsum(&acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std_within_a_few_ulp() {
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (a, b) = (exp(x), x.exp());
            worst = worst.max(((a - b) / b).abs());
            x += 0.0137;
        }
        assert!(worst < 4e-7, "worst relative error {worst}");
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn reductions_match_naive_sums() {
        let a: Vec<f32> = (0..37).map(|i| (i as f32 * 0.7).sin()).collect();
        let b: Vec<f32> = (0..37).map(|i| (i as f32 * 0.3).cos()).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-5);
        let m = a.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        assert_eq!(max(&a), m);
        let se: f32 = a.iter().map(|x| (x - 0.5).exp()).sum();
        assert!((sum_exp_shifted(&a, 0.5) - se).abs() < 1e-5);
    }
}
