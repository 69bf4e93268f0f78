//! Fused per-token log-probabilities `log_softmax(logits)[target]` with backward.
//!
//! Forward, per row: `m = max`, `lse = m + ln Σ e^(x−m)` (two passes over the row, no (N, V)
//! temporary), `out = x[target] − lse`; the N log-sum-exps are kept in the op for the backward.
//! Backward, one write pass per row: `dx[n, :] = g[n]·(onehot(target) − e^(x − lse))`.
//! Targets are validated in the wrapper: an out-of-range id is an error naming the row and value.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::common::{check_f32, f32_slice, msg, rows_per_task, with_f32, CResult};
use super::simd::{self, dispatch};

const OP: &str = "token_logprobs";

struct TokenLogprobs {
    targets: Arc<Vec<u32>>,
    /// Per-row log-sum-exp from the forward, reused by the backward.
    lse: Arc<Mutex<Option<Vec<f32>>>>,
}

/// See [`super::token_logprobs`].
pub(crate) fn token_logprobs(logits: &Tensor, targets: &Tensor) -> CResult<Tensor> {
    check_f32(logits, OP, "logits")?;
    let (n, v) = logits.dims2().map_err(|_| {
        msg(format!(
            "{OP}: logits must be (N, V), got {:?}",
            logits.dims()
        ))
    })?;
    if targets.dims() != [n] {
        return Err(msg(format!(
            "{OP}: targets have shape {:?}, expected [{n}] (one per logits row)",
            targets.dims()
        )));
    }
    if targets.dtype().is_float() {
        return Err(msg(format!(
            "{OP}: targets must be an integer tensor (u32), got {:?}",
            targets.dtype()
        )));
    }
    let tg: Vec<u32> = match targets.dtype() {
        DType::U32 => targets.to_vec1::<u32>()?,
        _ => {
            // Range-check in i64 so a negative id is reported as itself, not wrapped.
            let t64 = targets.to_dtype(DType::I64)?.to_vec1::<i64>()?;
            if let Some((row, &bad)) = t64
                .iter()
                .enumerate()
                .find(|(_, &t)| t < 0 || t >= v as i64)
            {
                return Err(msg(format!(
                    "{OP}: target {bad} at row {row} is out of range for vocab size {v}"
                )));
            }
            t64.iter().map(|&t| t as u32).collect()
        }
    };
    if let Some((row, &bad)) = tg.iter().enumerate().find(|(_, &t)| t as usize >= v) {
        return Err(msg(format!(
            "{OP}: target {bad} at row {row} is out of range for vocab size {v}"
        )));
    }
    let op = TokenLogprobs {
        targets: Arc::new(tg),
        lse: Arc::new(Mutex::new(None)),
    };
    logits.contiguous()?.apply_op1(op)
}

dispatch! {
    /// Log-sum-exp of each row of `x` (rows of `v`) into `lse`.
    fn lse_rows(x: &[f32], v: usize, lse: &mut [f32]) {
        for (row, l) in x.chunks_exact(v).zip(lse.iter_mut()) {
            let m = simd::max(row);
            *l = m + simd::sum_exp_shifted(row, m).ln();
        }
    }
}

dispatch! {
    /// In place, row by row: `x ← g·(onehot(target) − e^(x − lse))`, the gradient of
    /// `g·log_softmax(x)[target]` w.r.t. x.
    fn softmax_grad_rows(x: &mut [f32], v: usize, lse: &[f32], g: &[f32], targets: &[u32]) {
        for (((row, &l), &gn), &t) in x.chunks_exact_mut(v).zip(lse).zip(g).zip(targets) {
            for o in row.iter_mut() {
                *o = -gn * simd::exp(*o - l);
            }
            row[t as usize] += gn;
        }
    }
}

fn compute_lse(x: &[f32], v: usize) -> Vec<f32> {
    let n = x.len() / v.max(1);
    let mut lse = vec![0f32; n];
    lse_into(x, v, &mut lse);
    lse
}

fn lse_into(x: &[f32], v: usize, lse: &mut [f32]) {
    if v == 0 {
        lse.fill(f32::NEG_INFINITY);
        return;
    }
    let rows = rows_per_task(v);
    lse.par_chunks_mut(rows)
        .zip(x.par_chunks(rows * v))
        .for_each(|(lc, xc)| lse_rows(xc, v, lc));
}

/// The forward kernel (shared by the candle op and the fast training graph's chunked LM head):
/// for logits `x` (N, V) and targets (N, all < V), writes the row log-sum-exps `lse` (N) and
/// `out[n] = x[n, target_n] − lse[n]`.
pub fn forward(x: &[f32], v: usize, targets: &[u32], lse: &mut [f32], out: &mut [f32]) {
    lse_into(x, v, lse);
    for (r, (o, &t)) in out.iter_mut().zip(targets).enumerate() {
        *o = x[r * v + t as usize] - lse[r];
    }
}

/// The backward kernel, in place: turns logits `x` (N, V) into their gradient
/// `g[n]·(onehot(target_n) − softmax(x[n]))`, given the forward's `lse`.
pub fn backward_inplace(x: &mut [f32], v: usize, lse: &[f32], g: &[f32], targets: &[u32]) {
    if v == 0 {
        return;
    }
    let rows = rows_per_task(v);
    x.par_chunks_mut(rows * v).enumerate().for_each(|(ci, dc)| {
        let r0 = ci * rows;
        let nr = dc.len() / v;
        softmax_grad_rows(
            dc,
            v,
            &lse[r0..r0 + nr],
            &g[r0..r0 + nr],
            &targets[r0..r0 + nr],
        );
    });
}

dispatch! {
    /// Entropy of each row's softmax: `H = lse − Σ p·x` with `p = e^(x − lse)`.
    fn entropy_rows(x: &[f32], v: usize, lse: &[f32], out: &mut [f32]) {
        for ((row, &l), o) in x.chunks_exact(v).zip(lse).zip(out.iter_mut()) {
            let mut px = 0f32;
            for &z in row {
                px += simd::exp(z - l) * z;
            }
            *o = l - px;
        }
    }
}

dispatch! {
    /// In place, row by row: `x ← g·(onehot(target) − p) − gh·p·(log p + H)`, the gradient of
    /// `g·log_softmax(x)[target] + gh·H(softmax(x))` w.r.t. x (`log p = x − lse`).
    fn softmax_entropy_grad_rows(
        x: &mut [f32],
        v: usize,
        lse: &[f32],
        h: &[f32],
        g: &[f32],
        gh: &[f32],
        targets: &[u32],
    ) {
        for (((((row, &l), &hn), &gn), &ghn), &t) in
            x.chunks_exact_mut(v).zip(lse).zip(h).zip(g).zip(gh).zip(targets)
        {
            for o in row.iter_mut() {
                let lp = *o - l;
                let p = simd::exp(lp);
                *o = -gn * p - ghn * p * (lp + hn);
            }
            row[t as usize] += gn;
        }
    }
}

/// Entropy of the softmax of each row of logits `x` (N, V), given the forward's `lse`:
/// `out[n] = −Σ_i p_i log p_i` (nats).
pub fn entropy(x: &[f32], v: usize, lse: &[f32], out: &mut [f32]) {
    if v == 0 {
        out.fill(0.0);
        return;
    }
    let rows = rows_per_task(v);
    out.par_chunks_mut(rows)
        .zip(x.par_chunks(rows * v))
        .enumerate()
        .for_each(|(ci, (oc, xc))| entropy_rows(xc, v, &lse[ci * rows..ci * rows + oc.len()], oc));
}

/// [`backward_inplace`] with an entropy term: turns logits `x` (N, V) into the gradient of
/// `Σ_n g[n]·log_softmax(x[n])[target_n] + gh[n]·H(softmax(x[n]))`, given the forward's `lse` and
/// the rows' entropies `h` (from [`entropy`]). `∂H/∂x_i = −p_i (log p_i + H)`.
pub fn backward_inplace_with_entropy(
    x: &mut [f32],
    v: usize,
    lse: &[f32],
    h: &[f32],
    g: &[f32],
    gh: &[f32],
    targets: &[u32],
) {
    if v == 0 {
        return;
    }
    let rows = rows_per_task(v);
    x.par_chunks_mut(rows * v).enumerate().for_each(|(ci, dc)| {
        let r = ci * rows..ci * rows + dc.len() / v;
        softmax_entropy_grad_rows(
            dc,
            v,
            &lse[r.clone()],
            &h[r.clone()],
            &g[r.clone()],
            &gh[r.clone()],
            &targets[r],
        );
    });
}

impl CustomOp1 for TokenLogprobs {
    fn name(&self) -> &'static str {
        "gradus-token-logprobs"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, OP, "logits")?;
        let (n, v) = l.shape().dims2()?;
        let mut lse = vec![0f32; n];
        let mut out = vec![0f32; n];
        forward(x, v, &self.targets, &mut lse, &mut out);
        *self
            .lse
            .lock()
            .map_err(|_| msg(format!("{OP}: poisoned lock")))? = Some(lse);
        Ok((CpuStorage::F32(out), Shape::from(n)))
    }

    fn bwd(&self, logits: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        let (_n, v) = logits.dims2()?;
        let stored = self
            .lse
            .lock()
            .map_err(|_| msg(format!("{OP}: poisoned lock")))?
            .clone();
        let dx = with_f32([logits, grad], OP, |[x, g]| {
            let lse = match stored {
                Some(l) => l,
                None => compute_lse(x, v),
            };
            let mut dx = x.to_vec();
            backward_inplace(&mut dx, v, &lse, g, &self.targets);
            Ok(dx)
        })?;
        Ok(Some(Tensor::from_vec(dx, logits.shape(), logits.device())?))
    }
}
