//! Naive reference product in f64, and the error measure the tests use.

use crate::shapes::Layout;

/// `C (m×n) = [C +] op(A) op(B)` accumulated in f64 (row-parallel over the rayon pool).
#[allow(clippy::too_many_arguments)]
pub fn matmul_f64(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    c0: Option<&[f32]>,
    layout: Layout,
) -> Vec<f64> {
    use rayon::prelude::*;
    let (a_rs, a_cs) = layout.a_strides(m, k);
    let (b_rs, b_cs) = layout.b_strides(n, k);
    // B as a dense row-major f64 (k×n) so the inner loop runs over contiguous j.
    let mut bd = vec![0f64; k * n];
    for p in 0..k {
        for j in 0..n {
            bd[p * n + j] = b[p * b_rs + j * b_cs] as f64;
        }
    }
    let mut out = vec![0f64; m * n];
    out.par_chunks_mut(n.max(1))
        .enumerate()
        .for_each(|(i, row)| {
            if let Some(c0) = c0 {
                for (r, &x) in row.iter_mut().zip(&c0[i * n..(i + 1) * n]) {
                    *r = x as f64;
                }
            }
            for p in 0..k {
                let av = a[i * a_rs + p * a_cs] as f64;
                for (r, &bv) in row.iter_mut().zip(&bd[p * n..(p + 1) * n]) {
                    *r += av * bv;
                }
            }
        });
    out
}

/// Max over elements of |c − r| / scale, where scale = √K·σ_A·σ_B is the standard deviation
/// of one entry of a product of independent zero-mean inputs (σ: the inputs' root mean square). A correct f32
/// kernel stays near 2⁻²⁴·√K (rounding of a K-term sum); a kernel that drops or repeats one
/// product term is off by |a·b| ≈ σ_Aσ_B somewhere, i.e. by ≈ 1/√K of the scale.
pub fn scaled_error(c: &[f32], r: &[f64], a: &[f32], b: &[f32], k: usize) -> f64 {
    let sd = |x: &[f32]| {
        let n = x.len().max(1) as f64;
        (x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / n).sqrt()
    };
    let scale = (k.max(1) as f64).sqrt() * sd(a) * sd(b);
    let mut worst = 0f64;
    for (&x, &y) in c.iter().zip(r) {
        let e = (x as f64 - y).abs();
        if e.is_nan() {
            return f64::INFINITY;
        }
        worst = worst.max(e);
    }
    worst / scale
}
