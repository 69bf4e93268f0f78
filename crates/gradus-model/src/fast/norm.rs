//! The fast graph's normalisation layers (`cfg.norm`): RMSNorm calls the kernel of
//! `gradus_tensor::ops::kernels` (the candle op's seam); LayerNorm and the identity are written
//! here. LayerNorm per row of width D, with μ = mean(x), r = 1/sqrt(mean((x−μ)²) + eps),
//! x̂ = (x−μ)·r:
//! ```text
//! forward   y = x̂ ∘ w + b
//! backward  ĝ = g ∘ w,  dx = r · (ĝ − mean(ĝ) − x̂ · mean(ĝ ∘ x̂)),  dw += Σ g ∘ x̂,  db += Σ g
//! ```
//! Rows are processed in parallel for `dx`; `dw`/`db` are reduced over fixed row chunks whose
//! partials are added in chunk order, so the result does not depend on the thread count.

use gradus_tensor::ops::kernels;
use rayon::prelude::*;

use crate::config::NormKind;

/// Where a normalisation layer's parameters sit in the flat layout.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NormIx {
    pub kind: NormKind,
    pub weight: Option<usize>,
    pub bias: Option<usize>,
}

/// Rows per parallel task / reduction chunk (a function of D only).
fn rows_per_chunk(d: usize) -> usize {
    (4096 / d.max(1)).max(1)
}

/// `y = norm(x)` row by row (rows of `d`).
pub(crate) fn forward(
    kind: NormKind,
    x: &[f32],
    w: Option<&[f32]>,
    b: Option<&[f32]>,
    d: usize,
    eps: f32,
    y: &mut [f32],
) {
    match (kind, w, b) {
        (NormKind::None, _, _) => y.copy_from_slice(x),
        (NormKind::RmsNorm, Some(w), _) => kernels::rms_norm_forward(x, w, eps, y),
        (NormKind::LayerNorm, Some(w), Some(b)) => {
            let rows = rows_per_chunk(d);
            y.par_chunks_mut(rows * d)
                .zip(x.par_chunks(rows * d))
                .for_each(|(yc, xc)| {
                    for (yr, xr) in yc.chunks_exact_mut(d).zip(xc.chunks_exact(d)) {
                        let (mu, r) = moments(xr, eps);
                        for i in 0..d {
                            yr[i] = (xr[i] - mu) * r * w[i] + b[i];
                        }
                    }
                });
        }
        _ => unreachable!("norm parameters checked when the graph was built"),
    }
}

/// Mean and 1/sqrt(variance + eps) of a row, accumulated in f64 then rounded.
fn moments(x: &[f32], eps: f32) -> (f32, f32) {
    let d = x.len() as f64;
    let mu = x.iter().map(|&v| v as f64).sum::<f64>() / d;
    let var = x.iter().map(|&v| (v as f64 - mu).powi(2)).sum::<f64>() / d;
    (mu as f32, (1.0 / (var + eps as f64).sqrt()) as f32)
}

/// Backward of [`forward`]: `dx` overwritten (or added to when `accumulate_dx`, fusing the
/// residual's gradient sum), `dw`/`db` added to.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    kind: NormKind,
    x: &[f32],
    w: Option<&[f32]>,
    g: &[f32],
    d: usize,
    eps: f32,
    dx: &mut [f32],
    accumulate_dx: bool,
    dw: Option<&mut [f32]>,
    db: Option<&mut [f32]>,
) {
    match (kind, w, dw) {
        (NormKind::None, _, _) => {
            if accumulate_dx {
                for (a, &v) in dx.iter_mut().zip(g) {
                    *a += v;
                }
            } else {
                dx.copy_from_slice(g);
            }
        }
        (NormKind::RmsNorm, Some(w), Some(dw)) => {
            kernels::rms_norm_backward(x, w, g, eps, dx, accumulate_dx, dw)
        }
        (NormKind::LayerNorm, Some(w), Some(dw)) => {
            let Some(db) = db else {
                unreachable!("layernorm bias checked when the graph was built")
            };
            let n = x.len() / d.max(1);
            if n == 0 {
                return;
            }
            let rows = rows_per_chunk(d);
            let n_chunks = n.div_ceil(rows);
            let mut partial = vec![0f32; n_chunks * 2 * d];
            dx.par_chunks_mut(rows * d)
                .zip(x.par_chunks(rows * d))
                .zip(g.par_chunks(rows * d))
                .zip(partial.par_chunks_mut(2 * d))
                .for_each(|(((dxc, xc), gc), pc)| {
                    let (pw, pb) = pc.split_at_mut(d);
                    let mut xhat = vec![0f32; d];
                    for ((dxr, xr), gr) in dxc
                        .chunks_exact_mut(d)
                        .zip(xc.chunks_exact(d))
                        .zip(gc.chunks_exact(d))
                    {
                        let (mu, r) = moments(xr, eps);
                        let (mut s1, mut s2) = (0f64, 0f64);
                        for i in 0..d {
                            xhat[i] = (xr[i] - mu) * r;
                            let gh = gr[i] * w[i];
                            s1 += gh as f64;
                            s2 += (gh * xhat[i]) as f64;
                            pw[i] += gr[i] * xhat[i];
                            pb[i] += gr[i];
                        }
                        let (m1, m2) = ((s1 / d as f64) as f32, (s2 / d as f64) as f32);
                        for i in 0..d {
                            let v = r * (gr[i] * w[i] - m1 - xhat[i] * m2);
                            if accumulate_dx {
                                dxr[i] += v;
                            } else {
                                dxr[i] = v;
                            }
                        }
                    }
                });
            for p in partial.chunks_exact(2 * d) {
                for i in 0..d {
                    dw[i] += p[i];
                    db[i] += p[d + i];
                }
            }
        }
        _ => unreachable!("norm parameters checked when the graph was built"),
    }
}
