//! Reference twins: the same maths as the fused ops, composed from plain differentiable candle ops.
//! Slow and memory-hungry, but obviously right; the fused ops are tested against them.

use crate::{DType, Result, Tensor, D};

/// See [`super::rms_norm`].
pub fn rms_norm_ref(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    let inv = (ms + eps)?.sqrt()?.recip()?;
    Ok(x.broadcast_mul(&inv)?.broadcast_mul(weight)?)
}

/// See [`super::swiglu`].
pub fn swiglu_ref(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    Ok((gate.silu()? * up)?)
}

/// See [`super::rope`].
pub fn rope_ref(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let dh = x.dim(3)?;
    let h = dh / 2;
    let x1 = x.narrow(3, 0, h)?;
    let x2 = x.narrow(3, h, h)?;
    let c = cos.unsqueeze(2)?; // (B, T, 1, Dh/2)
    let s = sin.unsqueeze(2)?;
    let o1 = (x1.broadcast_mul(&c)? - x2.broadcast_mul(&s)?)?;
    let o2 = (x2.broadcast_mul(&c)? + x1.broadcast_mul(&s)?)?;
    Ok(Tensor::cat(&[o1, o2], 3)?)
}

/// Softmax over the last dim from differentiable ops (the max is detached: softmax is shift
/// invariant, so this changes no gradient).
pub fn softmax_ref(x: &Tensor) -> Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&m)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

/// See [`super::attention`].
pub fn attention_ref(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    segments: Option<&Tensor>,
    scale: f64,
) -> Result<Tensor> {
    let (b, tq, hq, dh) = q.dims4()?;
    let (_, tk, hkv, _) = k.dims4()?;
    let rep = hq / hkv;
    let q = q.transpose(1, 2)?.contiguous()?; // (B, Hq, Tq, Dh)
    let expand = |t: &Tensor| -> Result<Tensor> {
        let t = t.transpose(1, 2)?; // (B, Hkv, Tk, Dh)
        let t = t.unsqueeze(2)?.broadcast_as((b, hkv, rep, tk, dh))?;
        Ok(t.reshape((b, hq, tk, dh))?)
    };
    let k = expand(k)?;
    let v = expand(v)?;
    let scores = (q.matmul(&k.t()?)? * scale)?; // (B, Hq, Tq, Tk)
                                                // Additive mask (B, 1, Tq, Tk): 0 where allowed, -inf where not.
    let off = tk - tq;
    let seg: Option<Vec<u32>> = match segments {
        Some(s) => Some(s.to_dtype(DType::U32)?.flatten_all()?.to_vec1::<u32>()?),
        None => None,
    };
    let mut mask = vec![0f32; b * tq * tk];
    for bi in 0..b {
        for i in 0..tq {
            let qp = off + i;
            for j in 0..tk {
                let ok = j <= qp
                    && seg
                        .as_ref()
                        .is_none_or(|s| s[bi * tk + j] == s[bi * tk + qp]);
                if !ok {
                    mask[(bi * tq + i) * tk + j] = f32::NEG_INFINITY;
                }
            }
        }
    }
    let mask = Tensor::from_vec(mask, (b, 1, tq, tk), q.device())?;
    let p = softmax_ref(&scores.broadcast_add(&mask)?)?;
    let o = p.matmul(&v)?; // (B, Hq, Tq, Dh)
    Ok(o.transpose(1, 2)?.contiguous()?)
}

/// See [`super::token_logprobs`].
pub fn token_logprobs_ref(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let m = logits.max_keepdim(D::Minus1)?.detach();
    let z = logits.broadcast_sub(&m)?;
    let lse = z.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let logp = z.broadcast_sub(&lse)?;
    let idx = targets.to_dtype(DType::U32)?.unsqueeze(1)?;
    Ok(logp.gather(&idx, 1)?.squeeze(1)?)
}
