//! Numerically stable building blocks as differentiable candle ops.

use gradus_tensor::{Result, Tensor};

/// log σ(x), stable for large |x|, with the exact gradient σ(−x) everywhere, x = 0 included.
///
/// Two smooth branches joined by a select: x ≥ 0: −log(1 + e^{−x}); x < 0: x − log(1 + e^{x}).
/// Each branch sees only its own side's values (0 elsewhere), so neither overflows. The usual
/// `min(x, 0) − log(1 + e^{−|x|})` is wrong *at* 0 under autograd: min and |x| have kinks there,
/// and DPO's first step has every margin exactly 0 (that version doubled the step-1 gradient).
pub fn log_sigmoid(x: &Tensor) -> Result<Tensor> {
    let zeros = x.zeros_like()?;
    let pos = x.ge(&zeros)?;
    let xp = pos.where_cond(x, &zeros)?;
    let xn = pos.where_cond(&zeros, x)?;
    let on_pos = (xp.neg()?.exp()? + 1.0)?.log()?.neg()?;
    let on_neg = (&xn - (xn.exp()? + 1.0)?.log()?)?;
    Ok(pos.where_cond(&on_pos, &on_neg)?)
}

/// σ(x) = exp(log σ(x)).
pub fn sigmoid(x: &Tensor) -> Result<Tensor> {
    Ok(log_sigmoid(x)?.exp()?)
}

/// Scalar log σ(x) in f64.
pub fn log_sigmoid_f64(x: f64) -> f64 {
    x.min(0.0) - (-x.abs()).exp().ln_1p()
}

/// Scalar σ(x) in f64.
pub fn sigmoid_f64(x: f64) -> f64 {
    log_sigmoid_f64(x).exp()
}

/// A (B,) f32 tensor's values.
pub fn values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(gradus_tensor::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}
