//! Fused rotary position embedding (Hugging Face rotate_half convention) with backward.
//!
//! Per token (b, t) and head, with x = [x1, x2]: `out = [x1·c − x2·s, x2·c + x1·s]`. The map is
//! a rotation, so its vector-Jacobian product is the inverse rotation: the backward is the same
//! kernel with `s` negated. cos/sin are read through their strides (last dim contiguous), so a
//! (1, T, Dh/2) table broadcast to (B, T, Dh/2) is used in place, never copied B times.
//! No gradient flows to cos/sin (they are functions of position ids, not parameters).

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::common::{check_f32, f32_slice, f32_strided, msg, rows_per_task, CResult};
use super::simd::dispatch;

const OP: &str = "rope";

struct Rope {
    /// Rotate by −angle (the backward).
    inverse: bool,
}

/// See [`super::rope`].
pub(crate) fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> CResult<Tensor> {
    check_f32(x, OP, "x")?;
    check_f32(cos, OP, "cos")?;
    check_f32(sin, OP, "sin")?;
    let (b, t, _h, dh) = x.dims4()?;
    if dh % 2 != 0 {
        return Err(msg(format!("{OP}: head width Dh = {dh} must be even")));
    }
    for (name, c) in [("cos", cos), ("sin", sin)] {
        if c.dims() != [b, t, dh / 2] {
            return Err(msg(format!(
                "{OP}: `{name}` has shape {:?}, expected [{b}, {t}, {}]",
                c.dims(),
                dh / 2
            )));
        }
    }
    let table = |c: &Tensor| -> CResult<Tensor> {
        if c.stride()[2] == 1 || dh == 0 {
            Ok(c.clone())
        } else {
            c.contiguous()
        }
    };
    x.contiguous()?
        .apply_op3(&table(cos)?, &table(sin)?, Rope { inverse: false })
}

dispatch! {
    /// Rotates the heads of one token: `x`, `y` are (H, Dh); `c`, `s` are (Dh/2).
    fn rotate_token(x: &[f32], c: &[f32], s: &[f32], y: &mut [f32], sign: f32) {
        let half = c.len();
        if half == 0 {
            return;
        }
        for (xh, yh) in x.chunks_exact(2 * half).zip(y.chunks_exact_mut(2 * half)) {
            let (x1, x2) = xh.split_at(half);
            let (y1, y2) = yh.split_at_mut(half);
            for i in 0..half {
                let si = sign * s[i];
                y1[i] = x1[i] * c[i] - x2[i] * si;
                y2[i] = x2[i] * c[i] + x1[i] * si;
            }
        }
    }
}

/// The kernel (shared by the candle op and the fast training graph): rotates every token row of
/// `x` (rows of H·Dh) into `y`, by −angle when `inverse` (the backward). `table(row)` gives the
/// row's (cos, sin) slices of Dh/2.
pub fn rotate<'t>(
    x: &[f32],
    h: usize,
    dh: usize,
    y: &mut [f32],
    inverse: bool,
    table: impl Fn(usize) -> (&'t [f32], &'t [f32]) + Sync,
) {
    let sign = if inverse { -1.0 } else { 1.0 };
    let tok = h * dh;
    if tok == 0 {
        return;
    }
    let per_task = rows_per_task(tok);
    y.par_chunks_mut(per_task * tok)
        .enumerate()
        .for_each(|(ci, yc)| {
            for (k, yt) in yc.chunks_exact_mut(tok).enumerate() {
                let row = ci * per_task + k;
                let (c, s) = table(row);
                rotate_token(&x[row * tok..(row + 1) * tok], c, s, yt, sign);
            }
        });
}

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        "gradus-rope"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, OP, "x")?;
        let (cos, co) = f32_strided(s2, l2, OP, "cos")?;
        let (sin, so) = f32_strided(s3, l3, OP, "sin")?;
        let (_b, t, h, dh) = l1.shape().dims4()?;
        let half = dh / 2;
        let (cst, sst) = (l2.stride(), l3.stride());
        let mut y = vec![0f32; x.len()];
        rotate(x, h, dh, &mut y, self.inverse, |row| {
            let (bi, ti) = (row / t, row % t);
            let cb = co + bi * cst[0] + ti * cst[1];
            let sb = so + bi * sst[0] + ti * sst[1];
            (&cos[cb..cb + half], &sin[sb..sb + half])
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dx = grad.contiguous()?.apply_op3_no_bwd(
            cos,
            sin,
            &Rope {
                inverse: !self.inverse,
            },
        )?;
        Ok((Some(dx), None, None))
    }
}
