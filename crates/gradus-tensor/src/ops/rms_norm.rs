//! Fused RMSNorm with backward.
//!
//! Forward, per row of D: `r = 1/sqrt(Σx²/D + eps)`, `y = x·r·w` (one pass to reduce, one to write).
//! Backward, per row, with `gw = g∘w`:
//!   `dx = r·gw − x · r³/D · Σ(gw∘x)`     (from `∂r/∂x_j = −r³ x_j / D`)
//!   `dw = Σ_rows g∘x·r`
//! `r` is recomputed in the backward (one dot per row, on data about to be read anyway) instead of
//! being kept alive between the passes. `dw` is reduced over fixed row chunks (a function of N and D
//! only, never of the thread count), each into its own partial, and the partials are summed in
//! chunk order: bit-reproducible run to run.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::common::{check_f32, f32_slice, msg, rows_per_task, with_f32, CResult};
use super::simd::{self, dispatch};

const OP: &str = "rms_norm";

struct RmsNorm {
    eps: f32,
}

/// See [`super::rms_norm`].
pub(crate) fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> CResult<Tensor> {
    check_f32(x, OP, "x")?;
    check_f32(weight, OP, "weight")?;
    let d = x.dims().last().copied().unwrap_or(0);
    if weight.dims() != [d] {
        return Err(msg(format!(
            "{OP}: weight has shape {:?}, expected [{d}] (the last dim of x {:?})",
            weight.dims(),
            x.dims()
        )));
    }
    let x = x.contiguous()?;
    let weight = weight.contiguous()?;
    x.apply_op2(&weight, RmsNorm { eps: eps as f32 })
}

dispatch! {
    fn fwd_rows(x: &[f32], w: &[f32], y: &mut [f32], eps: f32) {
        let d = w.len();
        let inv_d = 1.0 / d as f32;
        for (xr, yr) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
            let r = 1.0 / (simd::sum_sq(xr) * inv_d + eps).sqrt();
            for ((yo, &xi), &wi) in yr.iter_mut().zip(xr).zip(w) {
                *yo = xi * r * wi;
            }
        }
    }
}

dispatch! {
    /// dx for a block of rows (written, or added when `acc`); accumulates Σ g∘x·r into `dw` (a
    /// per-chunk partial). `gw` is a scratch row of D.
    fn bwd_rows(x: &[f32], w: &[f32], g: &[f32], dx: &mut [f32], dw: &mut [f32], eps: f32, acc: bool, gw: &mut [f32]) {
        let d = w.len();
        let inv_d = 1.0 / d as f32;
        for ((xr, gr), dxr) in x.chunks_exact(d).zip(g.chunks_exact(d)).zip(dx.chunks_exact_mut(d)) {
            let r = 1.0 / (simd::sum_sq(xr) * inv_d + eps).sqrt();
            // Σ g·w·x, with gw kept for the second pass.
            for ((o, &gi), &wi) in gw.iter_mut().zip(gr).zip(w) {
                *o = gi * wi;
            }
            let c = simd::dot(gw, xr) * r * r * r * inv_d;
            if acc {
                for ((o, &gwi), &xi) in dxr.iter_mut().zip(gw.iter()).zip(xr) {
                    *o += r * gwi - c * xi;
                }
            } else {
                for ((o, &gwi), &xi) in dxr.iter_mut().zip(gw.iter()).zip(xr) {
                    *o = r * gwi - c * xi;
                }
            }
            for ((a, &gi), &xi) in dw.iter_mut().zip(gr).zip(xr) {
                *a += gi * xi * r;
            }
        }
    }
}

/// The forward kernel (the one seam both the candle op and the fast training graph call):
/// `y = x·r·w` row by row, rows of `w.len()`, in parallel over row blocks.
pub fn forward(x: &[f32], w: &[f32], eps: f32, y: &mut [f32]) {
    let d = w.len();
    if d == 0 {
        return;
    }
    let rows = rows_per_task(d);
    y.par_chunks_mut(rows * d)
        .zip(x.par_chunks(rows * d))
        .for_each(|(yc, xc)| fwd_rows(xc, w, yc, eps));
}

/// The backward kernel: `dx` (overwritten, or added to when `accumulate_dx`, which fuses the
/// residual connection's gradient sum) and `dw += Σ_rows g∘x·r`. `dw` is reduced over fixed row
/// chunks (a function of N and D only) and the partials are added in chunk order.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    x: &[f32],
    w: &[f32],
    g: &[f32],
    eps: f32,
    dx: &mut [f32],
    accumulate_dx: bool,
    dw: &mut [f32],
) {
    let d = w.len();
    let n = x.len().checked_div(d).unwrap_or(0);
    if n == 0 || d == 0 {
        return;
    }
    // Fixed chunking: depends on (N, D) only.
    let chunk_rows = rows_per_task(d).max(n.div_ceil(256));
    let n_chunks = n.div_ceil(chunk_rows);
    let mut partial = vec![0f32; n_chunks * d];
    dx.par_chunks_mut(chunk_rows * d)
        .zip(x.par_chunks(chunk_rows * d))
        .zip(g.par_chunks(chunk_rows * d))
        .zip(partial.par_chunks_mut(d))
        .for_each(|(((dxc, xc), gc), pc)| {
            bwd_rows(xc, w, gc, dxc, pc, eps, accumulate_dx, &mut vec![0f32; d])
        });
    for p in partial.chunks_exact(d) {
        for (a, &b) in dw.iter_mut().zip(p) {
            *a += b;
        }
    }
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "gradus-rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, OP, "x")?;
        let w = f32_slice(s2, l2, OP, "weight")?;
        let mut y = vec![0f32; x.len()];
        forward(x, w, self.eps, &mut y);
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let d = w.elem_count();
        let (dx, dw) = with_f32([x, w, grad], OP, |[x, w, g]| {
            let mut dx = vec![0f32; x.len()];
            let mut dw = vec![0f32; d];
            backward(x, w, g, self.eps, &mut dx, false, &mut dw);
            Ok((dx, dw))
        })?;
        let dx = Tensor::from_vec(dx, x.shape(), x.device())?;
        let dw = Tensor::from_vec(dw, w.shape(), w.device())?;
        Ok((Some(dx), Some(dw)))
    }
}
