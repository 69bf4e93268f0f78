//! Fused SwiGLU gate `silu(gate)·up` with backward.
//!
//! With `s = σ(gate)`: `out = gate·s·up`, `d gate = g·up·s·(1 + gate·(1 − s))`, `d up = g·gate·s`.
//! Both gradients come out of one pass over (gate, up, g). The exponential is the branch-free
//! [`simd::exp`], so the loops vectorise.

use candle_core::{CpuStorage, CustomOp2, Layout, Tensor};
use rayon::prelude::*;

use super::common::{check_f32, f32_slice, msg, with_f32, CResult, SyncPtr};
use super::simd::{self, dispatch};

const OP: &str = "swiglu";
/// Elements per rayon task.
const CHUNK: usize = 16 * 1024;

struct SwiGlu;

/// See [`super::swiglu`].
pub(crate) fn swiglu(gate: &Tensor, up: &Tensor) -> CResult<Tensor> {
    check_f32(gate, OP, "gate")?;
    check_f32(up, OP, "up")?;
    if gate.dims() != up.dims() {
        return Err(msg(format!(
            "{OP}: gate {:?} and up {:?} differ in shape",
            gate.dims(),
            up.dims()
        )));
    }
    gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu)
}

dispatch! {
    fn fwd_chunk(g: &[f32], u: &[f32], y: &mut [f32]) {
        for ((o, &a), &b) in y.iter_mut().zip(g).zip(u) {
            *o = a * simd::sigmoid(a) * b;
        }
    }
}

dispatch! {
    fn bwd_chunk(a: &[f32], b: &[f32], g: &[f32], da: &mut [f32], db: &mut [f32]) {
        let n = a.len().min(b.len()).min(g.len()).min(da.len()).min(db.len());
        for i in 0..n {
            let s = simd::sigmoid(a[i]);
            let gs = g[i] * s;
            db[i] = gs * a[i];
            da[i] = gs * b[i] * (1.0 + a[i] * (1.0 - s));
        }
    }
}

/// The forward kernel (shared by the candle op and the fast training graph): `y = silu(gate)·up`,
/// in parallel over fixed chunks.
pub fn forward(gate: &[f32], up: &[f32], y: &mut [f32]) {
    y.par_chunks_mut(CHUNK)
        .zip(gate.par_chunks(CHUNK))
        .zip(up.par_chunks(CHUNK))
        .for_each(|((yc, gc), uc)| fwd_chunk(gc, uc, yc));
}

/// The backward kernel: `dgate`, `dup` (overwritten) from the output gradient `g`.
pub fn backward(gate: &[f32], up: &[f32], g: &[f32], dgate: &mut [f32], dup: &mut [f32]) {
    let n = gate.len();
    let pa = SyncPtr::new(dgate);
    let pb = SyncPtr::new(dup);
    (0..n.div_ceil(CHUNK)).into_par_iter().for_each(|c| {
        let lo = c * CHUNK;
        let len = CHUNK.min(n - lo);
        // SAFETY: chunk c owns dgate/dup[lo..lo+len]; chunks are disjoint.
        let (dac, dbc) = unsafe { (pa.slice(lo, len), pb.slice(lo, len)) };
        bwd_chunk(
            &gate[lo..lo + len],
            &up[lo..lo + len],
            &g[lo..lo + len],
            dac,
            dbc,
        );
    });
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "gradus-swiglu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<(CpuStorage, candle_core::Shape)> {
        let g = f32_slice(s1, l1, OP, "gate")?;
        let u = f32_slice(s2, l2, OP, "up")?;
        let mut y = vec![0f32; g.len()];
        forward(g, u, &mut y);
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let (da, db) = with_f32([gate, up, grad], OP, |[a, b, g]| {
            let mut da = vec![0f32; a.len()];
            let mut db = vec![0f32; a.len()];
            backward(a, b, g, &mut da, &mut db);
            Ok((da, db))
        })?;
        let da = Tensor::from_vec(da, gate.shape(), gate.device())?;
        let db = Tensor::from_vec(db, up.shape(), up.device())?;
        Ok((Some(da), Some(db)))
    }
}
