//! LoRA adapters on the fast graph's linear layers (Hu et al. 2021, eq. 3; PEFT's layout, see
//! [`crate::lora`]): `y = x Wᵀ + b + s · dropout(x) Aᵀ Bᵀ` with A (r, in), B (out, r) and
//! `s = lora_alpha / r` (or `/ √r` with rsLoRA).
//!
//! Forward: `hs = s · dropout(x) Aᵀ` (N, r) is kept, then `y += hs Bᵀ`. Backward from dy (N, out):
//! ```text
//! dB += dyᵀ hs                  dh = s · dy B            (N, r)
//! dA += dhᵀ dropout(x)          dx += (dh A) ∘ mask       (mask = 1 without dropout)
//! ```
//! Two rank-r GEMM pairs per adapter: with the base frozen, the backward skips the base weights'
//! `dW = dyᵀ x` GEMMs entirely (the N·in·out products that dominate a full backward).
//!
//! Dropout draws the very mask stream of the candle path ([`crate::lora`]): one [`Rng`] shared by
//! every adapter, `uniform() < p` per element of x (N, in) row-major, adapters in forward order
//! (per layer q, k, v, o, gate, up, down), kept entries scaled by `1/(1-p)` in f32. So with the
//! same RNG state the fast and the reference graphs drop the same entries (tested), and the
//! stream's state resumes a run exactly. Masks are kept from the forward for the backward.

use gradus_tensor::rng::Rng;

use super::linear;
use super::params::ParamLayout;

/// One adapter's place in the layout: A (r, in) and B (out, r), its rank and scale.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AdIx {
    pub a: usize,
    pub b: usize,
    pub r: usize,
    pub scale: f32,
}

/// What an adapter keeps from the forward: `hs = s · dropout(x) Aᵀ` (N, r) and the dropout mask
/// (N, in; 0 or 1/(1-p)), valid when `masked`.
#[derive(Default)]
pub(crate) struct LoraActs {
    pub hs: Vec<f32>,
    pub mask: Vec<f32>,
    pub masked: bool,
}

/// The adapter dropout shared by every adapter of the graph.
#[derive(Clone, Debug)]
pub(crate) struct Dropout {
    pub p: f64,
    pub keep: f32,
    pub rng: Rng,
    pub training: bool,
}

impl Dropout {
    pub fn new(p: f64, training: bool, rng: Rng) -> Self {
        Self {
            p,
            keep: (1.0 / (1.0 - p)) as f32,
            rng,
            training,
        }
    }
}

/// `y (N, out) += s · dropout(x) Aᵀ Bᵀ`, keeping what the backward needs in `acts`. `scratch`
/// holds at least N·in values.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(
    ad: &AdIx,
    params: &[f32],
    layout: &ParamLayout,
    acts: &mut LoraActs,
    drop: Option<&mut Dropout>,
    x: &[f32],
    y: &mut [f32],
    scratch: &mut [f32],
    (n, inp, out): (usize, usize, usize),
) {
    let a = &params[layout.range(ad.a)];
    let b = &params[layout.range(ad.b)];
    let x = &x[..n * inp];
    let src: &[f32] = match drop.filter(|d| d.training && d.p > 0.0) {
        Some(d) => {
            let m = &mut acts.mask[..n * inp];
            for v in m.iter_mut() {
                *v = if d.rng.uniform() < d.p { 0.0 } else { d.keep };
            }
            for ((s, &xv), &mv) in scratch[..n * inp].iter_mut().zip(x).zip(m.iter()) {
                *s = xv * mv;
            }
            acts.masked = true;
            &scratch[..n * inp]
        }
        None => {
            acts.masked = false;
            x
        }
    };
    linear::matmul(&mut acts.hs, false, src, false, a, true, n, ad.r, inp);
    for h in &mut acts.hs[..n * ad.r] {
        *h *= ad.scale;
    }
    linear::matmul(y, true, &acts.hs, false, b, true, n, out, ad.r);
}

/// The backward of [`forward`] from `dy` (N, out): adds `(dh A) ∘ mask` into `dx` (N, in) and,
/// when `grads` = (dA, dB) is given, the adapter's weight gradients into them. `dh` holds at least
/// N·r values, `scratch` N·in.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    ad: &AdIx,
    params: &[f32],
    layout: &ParamLayout,
    acts: &LoraActs,
    grads: Option<(&mut [f32], &mut [f32])>,
    x: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    dh: &mut [f32],
    scratch: &mut [f32],
    (n, inp, out): (usize, usize, usize),
) {
    let a = &params[layout.range(ad.a)];
    let b = &params[layout.range(ad.b)];
    let r = ad.r;
    // dh = s · dy B (N, r).
    linear::matmul(dh, false, dy, false, b, false, n, r, out);
    for v in &mut dh[..n * r] {
        *v *= ad.scale;
    }
    if let Some((ga, gb)) = grads {
        // dB (out, r) += dyᵀ hs.
        linear::backward_params(gb, None, dy, &acts.hs, n, r, out);
        // dA (r, in) += dhᵀ dropout(x).
        let src: &[f32] = if acts.masked {
            for ((s, &xv), &mv) in scratch[..n * inp]
                .iter_mut()
                .zip(&x[..n * inp])
                .zip(&acts.mask[..n * inp])
            {
                *s = xv * mv;
            }
            &scratch[..n * inp]
        } else {
            &x[..n * inp]
        };
        linear::backward_params(ga, None, dh, src, n, inp, r);
    }
    // dx += (dh A) ∘ mask.
    if acts.masked {
        linear::matmul(scratch, false, dh, false, a, false, n, inp, r);
        for ((d, &s), &m) in dx[..n * inp]
            .iter_mut()
            .zip(&scratch[..n * inp])
            .zip(&acts.mask[..n * inp])
        {
            *d += s * m;
        }
    } else {
        linear::matmul(dx, true, dh, false, a, false, n, inp, r);
    }
}
