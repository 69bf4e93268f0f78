//! Gradient norm, clipping (PyTorch's `clip_grad_norm_` semantics) and scaling, over the gradients
//! of a list of named parameters.
//!
//! Only the gradients of the given parameters are read or changed; a Var listed twice (tied
//! weights under two names) is counted once. Parameters without a gradient are skipped.
//! Squares are summed in f64 per parameter (in parallel) and the per-parameter sums are added in
//! list order, so the norm does not depend on the number of threads.

use std::collections::HashSet;

use candle_core::backprop::GradStore;
use candle_core::{DType, Var};
use gradus_tensor::{Error, Result};
use rayon::prelude::*;

/// PyTorch's `clip_grad_norm_` adds this to the norm before dividing.
pub const CLIP_EPS: f64 = 1e-6;

/// The parameters' Vars, each once, in list order.
fn unique_vars(params: &[(String, Var)]) -> Vec<&Var> {
    let mut seen = HashSet::new();
    params
        .iter()
        .map(|(_, v)| v)
        .filter(|v| seen.insert(v.as_tensor().id()))
        .collect()
}

/// The L2 norm of all the parameters' gradients taken together: `sqrt(sum_p sum_i g_pi^2)`.
pub fn global_grad_norm(grads: &GradStore, params: &[(String, Var)]) -> Result<f64> {
    let vars = unique_vars(params);
    let sums: Vec<f64> = vars
        .par_iter()
        .map(|v| -> Result<f64> {
            let Some(g) = grads.get(v.as_tensor()) else {
                return Ok(0.0);
            };
            let g = g.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
            Ok(g.iter().map(|&x| (x as f64) * (x as f64)).sum())
        })
        .collect::<Result<_>>()?;
    Ok(sums.iter().sum::<f64>().sqrt())
}

/// Multiplies every parameter's gradient by `factor` (e.g. `1 / accumulation_steps`).
pub fn scale_grads(grads: &mut GradStore, params: &[(String, Var)], factor: f64) -> Result<()> {
    if !factor.is_finite() {
        return Err(Error::msg(format!(
            "scale_grads: factor must be finite, got {factor}"
        )));
    }
    for v in unique_vars(params) {
        if let Some(g) = grads.get(v.as_tensor()) {
            let scaled = (g * factor)?;
            grads.insert(v.as_tensor(), scaled);
        }
    }
    Ok(())
}

/// Clips the global gradient norm to `max_norm` and returns the norm before clipping.
///
/// As `torch.nn.utils.clip_grad_norm_`: if `norm > max_norm`, every gradient is multiplied by
/// `max_norm / (norm + 1e-6)`. If the norm is not finite (NaN/inf gradients) the gradients are left
/// as they are and the non-finite norm is returned, for the caller to skip the step or stop.
pub fn clip_grad_norm(
    grads: &mut GradStore,
    params: &[(String, Var)],
    max_norm: f64,
) -> Result<f64> {
    if !(max_norm.is_finite() && max_norm > 0.0) {
        return Err(Error::config(
            "max_grad_norm",
            format!("must be finite and > 0, got {max_norm}"),
        ));
    }
    let norm = global_grad_norm(grads, params)?;
    if norm.is_finite() && norm > max_norm {
        scale_grads(grads, params, max_norm / (norm + CLIP_EPS))?;
    }
    Ok(norm)
}

/// Adds the parameters' gradients in `from` into `into` (gradient accumulation). Only parameter
/// gradients are kept, so the intermediate gradients of a backward pass are not held in memory.
pub fn accumulate_grads(
    into: &mut GradStore,
    from: &GradStore,
    params: &[(String, Var)],
) -> Result<()> {
    for v in unique_vars(params) {
        let t = v.as_tensor();
        if let Some(g) = from.get(t) {
            let sum = match into.get(t) {
                Some(acc) => (acc + g)?,
                None => g.detach(),
            };
            into.insert(t, sum);
        }
    }
    Ok(())
}

/// [`global_grad_norm`] over flat gradient storage (the fast training graph's): parameter i owns
/// the next `lens[i]` elements. Same summation order (f64 per parameter, then in list order).
pub fn flat_grad_norm(grads: &[f32], lens: &[usize]) -> f64 {
    let mut parts = Vec::with_capacity(lens.len());
    let mut off = 0;
    for &n in lens {
        parts.push(&grads[off..(off + n).min(grads.len())]);
        off += n;
    }
    let sums: Vec<f64> = parts
        .par_iter()
        .map(|g| g.iter().map(|&x| (x as f64) * (x as f64)).sum())
        .collect();
    sums.iter().sum::<f64>().sqrt()
}

/// [`clip_grad_norm`] over flat gradient storage; returns the norm before clipping.
pub fn clip_flat_grad_norm(grads: &mut [f32], lens: &[usize], max_norm: f64) -> Result<f64> {
    if !(max_norm.is_finite() && max_norm > 0.0) {
        return Err(Error::config(
            "max_grad_norm",
            format!("must be finite and > 0, got {max_norm}"),
        ));
    }
    let norm = flat_grad_norm(grads, lens);
    if norm.is_finite() && norm > max_norm {
        // As candle's `tensor * f64` (affine with the factor rounded to f32).
        let f = (max_norm / (norm + CLIP_EPS)) as f32;
        grads
            .par_chunks_mut(1 << 15)
            .for_each(|c| c.iter_mut().for_each(|x| *x = *x * f + 0.0));
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn setup() -> (Vec<(String, Var)>, GradStore) {
        let a = Var::zeros((2, 2), DType::F32, &Device::Cpu).unwrap();
        let b = Var::zeros(3, DType::F32, &Device::Cpu).unwrap();
        let c = Var::zeros(1, DType::F32, &Device::Cpu).unwrap(); // no gradient
        let mut g = GradStore::default();
        // a: [1, 2, 2, 0] -> squares 9; b: [0, 4, 0] -> 16; total 25 -> norm 5.
        g.insert(
            a.as_tensor(),
            Tensor::new(&[[1f32, 2.], [2., 0.]], &Device::Cpu).unwrap(),
        );
        g.insert(
            b.as_tensor(),
            Tensor::new(&[0f32, 4., 0.], &Device::Cpu).unwrap(),
        );
        let params = vec![
            ("a".into(), a.clone()),
            ("b".into(), b),
            ("c".into(), c),
            ("a_tied".into(), a),
        ];
        (params, g)
    }

    fn vals(g: &GradStore, v: &Var) -> Vec<f32> {
        g.get(v.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn norm_counts_tied_vars_once() {
        let (params, g) = setup();
        assert_eq!(global_grad_norm(&g, &params).unwrap(), 5.0);
    }

    #[test]
    fn clip_scales_by_max_over_norm_plus_eps() {
        let (params, mut g) = setup();
        let n = clip_grad_norm(&mut g, &params, 1.0).unwrap();
        assert_eq!(n, 5.0);
        // coefficient 1 / (5 + 1e-6); b[1] = 4 * coef.
        let coef = 1.0 / (5.0 + 1e-6);
        let b = vals(&g, &params[1].1);
        assert!((b[1] as f64 - 4.0 * coef).abs() < 1e-7, "{b:?}");
        let a = vals(&g, &params[0].1);
        assert!((a[1] as f64 - 2.0 * coef).abs() < 1e-7, "{a:?}");
        assert!((global_grad_norm(&g, &params).unwrap() - 5.0 * coef).abs() < 1e-6);
    }

    #[test]
    fn clip_leaves_small_gradients_alone() {
        let (params, mut g) = setup();
        assert_eq!(clip_grad_norm(&mut g, &params, 5.0).unwrap(), 5.0);
        assert_eq!(vals(&g, &params[1].1), vec![0.0, 4.0, 0.0]);
        assert!(clip_grad_norm(&mut g, &params, 0.0).is_err());
        assert!(clip_grad_norm(&mut g, &params, f64::NAN).is_err());
    }

    #[test]
    fn flat_norm_and_clip_match_the_gradstore_ones() {
        let (params, mut g) = setup();
        // a = [1, 2, 2, 0], b = [0, 4, 0] laid out flat: norm 5 as in `norm_counts_tied_vars_once`.
        let mut flat = vec![1f32, 2., 2., 0., 0., 4., 0.];
        let lens = [4, 3];
        assert_eq!(flat_grad_norm(&flat, &lens), 5.0);
        assert_eq!(clip_flat_grad_norm(&mut flat, &lens, 1.0).unwrap(), 5.0);
        clip_grad_norm(&mut g, &params, 1.0).unwrap();
        let mut want = vals(&g, &params[0].1);
        want.extend(vals(&g, &params[1].1));
        assert_eq!(flat, want);
        assert!(clip_flat_grad_norm(&mut flat, &lens, 0.0).is_err());
    }

    #[test]
    fn scale_and_accumulate() {
        let (params, g) = setup();
        let mut acc = GradStore::default();
        accumulate_grads(&mut acc, &g, &params).unwrap();
        accumulate_grads(&mut acc, &g, &params).unwrap();
        scale_grads(&mut acc, &params, 0.5).unwrap();
        // (g + g) / 2 = g, and the tied var was added once per call, not twice.
        assert_eq!(vals(&acc, &params[0].1), vec![1.0, 2.0, 2.0, 0.0]);
        assert_eq!(vals(&acc, &params[1].1), vec![0.0, 4.0, 0.0]);
        assert!(acc.get(params[2].1.as_tensor()).is_none());
    }
}
