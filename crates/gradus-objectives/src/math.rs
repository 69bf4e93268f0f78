//! Numerically stable building blocks as differentiable candle ops.

use gradus_tensor::{Result, Tensor};

/// log σ(x) = min(x, 0) − log(1 + e^{−|x|}), stable for large |x|; differentiable.
pub fn log_sigmoid(x: &Tensor) -> Result<Tensor> {
    let m = x.minimum(0f64)?;
    let soft = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    Ok((m - soft)?)
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
    Ok(t.to_dtype(gradus_tensor::DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}
