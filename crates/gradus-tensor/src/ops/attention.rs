//! Fused causal attention with grouped-query heads and segment masks, forward and backward,
//! FlashAttention-2 style on the CPU.
//!
//! Forward, one rayon task per (b, query head, block of [`BR`] queries): stream over blocks of
//! [`BC`] keys of the matching kv head (GQA by index arithmetic, K/V never repeated), with tile
//! products `S = scale·Q Kᵀ` and `O += P V` done by `gemm` straight on the (B, T, H, Dh) buffers
//! (row stride H·Dh), and the online softmax (running max m, running sum l, O rescaled when m
//! grows). Only a (BR × BC) score tile exists at a time. The per-row log-sum-exp `m + ln l` is
//! kept in the op (B·Hq·Tq floats) for the backward.
//!
//! Backward, one task per (b, kv head): for each key block j, for each query head of the group and
//! each query block i that is not fully masked, recompute `P = exp(S − lse)`, then
//! `dV_j += Pᵀ dO_i`, `dP = dO_i V_jᵀ`, `dS = P ∘ (dP − D_i)` with `D = rowsum(dO ∘ O)`,
//! `dK_j += scale·dSᵀ Q_i`, `dQ_i += scale·dS K_j`. The task owns dK/dV of its kv head and dQ of
//! its query heads, so every accumulation is sequential in a fixed order: bit-reproducible,
//! no atomics. With too few (b, kv head) pairs to keep the cores busy, a two-pass variant
//! (dK/dV by key block, then dQ by query block) is used instead; see [`backward`].
//!
//! Blocks are skipped when fully masked: causally (key block entirely after the query block) and
//! by segments (the id ranges [min, max] of the query block and of the key block do not overlap,
//! which is exact-safe for any labelling and skips everything for increasing document ids).
//! Blocks that are fully visible skip the per-element mask.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::common::{check_f32, f32_slice, msg, with_f32, CResult, SyncPtr};
use super::simd::{self, dispatch};

const OP: &str = "attention";
/// Queries per block.
const BR: usize = 64;
/// Keys per block.
const BC: usize = 64;

/// See [`super::attention`].
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    segments: Option<&Tensor>,
    scale: f64,
) -> CResult<Tensor> {
    check_f32(q, OP, "q")?;
    check_f32(k, OP, "k")?;
    check_f32(v, OP, "v")?;
    let (b, tq, hq, dh) = q.dims4().map_err(|_| {
        msg(format!(
            "{OP}: q must be (B, Tq, Hq, Dh), got {:?}",
            q.dims()
        ))
    })?;
    let (bk, tk, hkv, dhk) = k.dims4().map_err(|_| {
        msg(format!(
            "{OP}: k must be (B, Tk, Hkv, Dh), got {:?}",
            k.dims()
        ))
    })?;
    if bk != b || dhk != dh {
        return Err(msg(format!(
            "{OP}: q {:?} and k {:?} disagree on B or Dh",
            q.dims(),
            k.dims()
        )));
    }
    if v.dims() != k.dims() {
        return Err(msg(format!(
            "{OP}: v {:?} must have the shape of k {:?}",
            v.dims(),
            k.dims()
        )));
    }
    if hkv == 0 || hq % hkv != 0 {
        return Err(msg(format!(
            "{OP}: Hq = {hq} must be a multiple of Hkv = {hkv}"
        )));
    }
    if tq > tk {
        return Err(msg(format!("{OP}: Tq = {tq} exceeds Tk = {tk}")));
    }
    let segments = match segments {
        None => None,
        Some(s) => {
            if s.dims() != [b, tk] {
                return Err(msg(format!(
                    "{OP}: segments have shape {:?}, expected [{b}, {tk}]",
                    s.dims()
                )));
            }
            if s.dtype().is_float() {
                return Err(msg(format!(
                    "{OP}: segments must be an integer tensor (u32), got {:?}",
                    s.dtype()
                )));
            }
            Some(Arc::new(
                s.to_dtype(DType::U32)?.flatten_all()?.to_vec1::<u32>()?,
            ))
        }
    };
    let op = Attention {
        scale: scale as f32,
        segments,
        lse: Arc::new(Mutex::new(None)),
    };
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

struct Attention {
    scale: f32,
    /// (B, Tk) segment ids, if any.
    segments: Option<Arc<Vec<u32>>>,
    /// (B, Hq, Tq) log-sum-exp of the scaled, masked scores, from the forward.
    lse: Arc<Mutex<Option<Vec<f32>>>>,
}

/// Shapes of one attention call: q (B, Tq, Hq, Dh); k, v (B, Tk, Hkv, Dh).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    pub b: usize,
    pub tq: usize,
    pub tk: usize,
    pub hq: usize,
    pub hkv: usize,
    pub dh: usize,
}

impl Dims {
    fn rep(&self) -> usize {
        self.hq / self.hkv
    }
    /// Absolute position of query 0.
    fn off(&self) -> usize {
        self.tk - self.tq
    }
    fn nqb(&self) -> usize {
        self.tq.div_ceil(BR)
    }
    fn nkb(&self) -> usize {
        self.tk.div_ceil(BC)
    }
    fn q_range(&self, qb: usize) -> (usize, usize) {
        (qb * BR, ((qb + 1) * BR).min(self.tq))
    }
    fn k_range(&self, kb: usize) -> (usize, usize) {
        (kb * BC, ((kb + 1) * BC).min(self.tk))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Block {
    /// Every (query, key) pair is masked.
    Skip,
    /// Every pair is visible.
    Full,
    /// Mixed: apply the element mask.
    Partial,
}

/// Block classification and element masks for one call.
struct Masker<'a> {
    d: Dims,
    seg: Option<&'a [u32]>,
    /// (B, nkb) segment id range of each key block.
    kseg: Vec<(u32, u32)>,
    /// (B, nqb) segment id range of each query block (at the queries' absolute positions).
    qseg: Vec<(u32, u32)>,
}

fn id_range(ids: &[u32]) -> (u32, u32) {
    ids.iter()
        .fold((u32::MAX, 0), |(lo, hi), &s| (lo.min(s), hi.max(s)))
}

impl<'a> Masker<'a> {
    fn new(d: Dims, seg: Option<&'a [u32]>) -> Self {
        let (mut kseg, mut qseg) = (Vec::new(), Vec::new());
        if let Some(s) = seg {
            for b in 0..d.b {
                let row = &s[b * d.tk..(b + 1) * d.tk];
                for kb in 0..d.nkb() {
                    let (j0, j1) = d.k_range(kb);
                    kseg.push(id_range(&row[j0..j1]));
                }
                for qb in 0..d.nqb() {
                    let (i0, i1) = d.q_range(qb);
                    qseg.push(id_range(&row[d.off() + i0..d.off() + i1]));
                }
            }
        }
        Masker { d, seg, kseg, qseg }
    }

    fn classify(&self, b: usize, qb: usize, kb: usize) -> Block {
        let (i0, i1) = self.d.q_range(qb);
        let (j0, j1) = self.d.k_range(kb);
        let off = self.d.off();
        if j0 > off + i1 - 1 {
            return Block::Skip;
        }
        let mut full = j1 - 1 <= off + i0;
        if self.seg.is_some() {
            let (qlo, qhi) = self.qseg[b * self.d.nqb() + qb];
            let (klo, khi) = self.kseg[b * self.d.nkb() + kb];
            if qhi < klo || khi < qlo {
                return Block::Skip;
            }
            full &= qlo == qhi && klo == khi && qlo == klo;
        }
        if full {
            Block::Full
        } else {
            Block::Partial
        }
    }

    /// Sets masked entries of the score tile `s` (rows i0.., cols j0.., row stride BC) to −inf.
    fn apply(&self, b: usize, i0: usize, nr: usize, j0: usize, nc: usize, s: &mut [f32]) {
        let off = self.d.off();
        for r in 0..nr {
            let qp = off + i0 + r;
            let row = &mut s[r * BC..r * BC + nc];
            // Causal: keys j > qp.
            let vis = (qp + 1).saturating_sub(j0).min(nc);
            row[vis..].fill(f32::NEG_INFINITY);
            if let Some(seg) = self.seg {
                let sr = &seg[b * self.d.tk..(b + 1) * self.d.tk];
                let mine = sr[qp];
                for (x, &sj) in row[..vis].iter_mut().zip(&sr[j0..j0 + vis]) {
                    if sj != mine {
                        *x = f32::NEG_INFINITY;
                    }
                }
            }
        }
    }
}

/// [`gemm_strided`] on this thread (the attention tiles are already parallel).
///
/// # Safety
/// As [`gemm_strided`].
#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn mm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: *const f32,
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: *const f32,
    rhs_rs: usize,
    rhs_cs: usize,
    beta: f32,
) {
    super::gemm_strided(
        m,
        n,
        k,
        dst,
        dst_rs,
        accumulate,
        lhs,
        lhs_rs,
        lhs_cs,
        rhs,
        rhs_rs,
        rhs_cs,
        beta,
        gemm::Parallelism::None,
    )
}

dispatch! {
    /// Online-softmax update of one score tile (nr × nc, row stride BC), turned into P in place;
    /// rescales the accumulator rows of `o` (row stride dh) and updates running max `m` and sum `l`.
    fn online_softmax(s: &mut [f32], nr: usize, nc: usize, m: &mut [f32], l: &mut [f32], o: &mut [f32], dh: usize) {
        for r in 0..nr {
            let row = &mut s[r * BC..r * BC + nc];
            let mx = simd::max(row);
            if mx == f32::NEG_INFINITY {
                row.fill(0.0);
                continue;
            }
            let m_new = if mx > m[r] { mx } else { m[r] };
            let alpha = simd::exp(m[r] - m_new);
            let sum = simd::exp_shift_inplace_sum(row, m_new);
            l[r] = l[r] * alpha + sum;
            if alpha != 1.0 {
                for x in &mut o[r * dh..(r + 1) * dh] {
                    *x *= alpha;
                }
            }
            m[r] = m_new;
        }
    }
}

/// Query blocks with at most this many rows use [`small_qk`]/[`small_pv`] instead of gemm.
const SMALL_NR: usize = 4;

dispatch! {
    /// `s[r, c] = scale · q_r · k_c` for nr query rows (stride qrs) and nc keys (stride krs).
    fn small_qk(q: &[f32], qrs: usize, nr: usize, k: &[f32], krs: usize, nc: usize, dh: usize, scale: f32, s: &mut [f32]) {
        for r in 0..nr {
            let qr = &q[r * qrs..r * qrs + dh];
            for c in 0..nc {
                s[r * BC + c] = scale * simd::dot(qr, &k[c * krs..c * krs + dh]);
            }
        }
    }
}

dispatch! {
    /// `o_r += Σ_c p[r, c] · v_c` for nr rows of the accumulator `o` (stride dh).
    fn small_pv(p: &[f32], nr: usize, v: &[f32], krs: usize, nc: usize, dh: usize, o: &mut [f32]) {
        for r in 0..nr {
            let or = &mut o[r * dh..(r + 1) * dh];
            for c in 0..nc {
                let pc = p[r * BC + c];
                if pc != 0.0 {
                    for (x, &vi) in or.iter_mut().zip(&v[c * krs..c * krs + dh]) {
                        *x += pc * vi;
                    }
                }
            }
        }
    }
}

dispatch! {
    /// `s ← exp(s − lse_row)` for a tile (nr × nc, row stride BC): the probabilities P.
    fn probs(s: &mut [f32], nr: usize, nc: usize, lse: &[f32]) {
        for r in 0..nr {
            let l = lse[r];
            for x in &mut s[r * BC..r * BC + nc] {
                *x = simd::exp(*x - l);
            }
        }
    }
}

dispatch! {
    /// `dp ← p ∘ (dp − D_row)`: the score gradient dS (tile nr × nc, row stride BC).
    fn dscores(p: &[f32], dp: &mut [f32], nr: usize, nc: usize, drow: &[f32]) {
        for r in 0..nr {
            let dr = drow[r];
            let pr = &p[r * BC..r * BC + nc];
            for (x, &pi) in dp[r * BC..r * BC + nc].iter_mut().zip(pr) {
                *x = pi * (*x - dr);
            }
        }
    }
}

dispatch! {
    /// Row dot products `D[i] = dO[i]·O[i]` for contiguous rows of `dh`.
    fn row_dots(a: &[f32], b: &[f32], dh: usize, out: &mut [f32]) {
        for ((x, y), o) in a.chunks_exact(dh).zip(b.chunks_exact(dh)).zip(out.iter_mut()) {
            *o = simd::dot(x, y);
        }
    }
}

impl Attention {
    /// Returns the output (B, Tq, Hq, Dh) and the log-sum-exp (B, Hq, Tq).
    fn forward(&self, d: Dims, q: &[f32], k: &[f32], v: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let mut out = vec![0f32; d.b * d.tq * d.hq * d.dh];
        let mut lse = vec![0f32; d.b * d.hq * d.tq];
        forward(
            d,
            self.scale,
            self.segments.as_deref().map(|s| s.as_slice()),
            q,
            k,
            v,
            &mut out,
            &mut lse,
        );
        (out, lse)
    }
}

/// The forward kernel (shared by the candle op and the fast training graph): writes the output
/// `out` (B, Tq, Hq, Dh) and the log-sum-exp `lse` (B, Hq, Tq) of the scaled, masked scores.
/// `segments` (B, Tk) when given. Every output element is written.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    d: Dims,
    scale: f32,
    segments: Option<&[u32]>,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
    lse: &mut [f32],
) {
    let me = Kernel { scale, segments };
    me.forward(d, q, k, v, out, lse)
}

/// The backward kernel: `dq`, `dk`, `dv` (overwritten) from the forward's inputs, its output `o`,
/// the output gradient `g` and the forward's `lse`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    d: Dims,
    scale: f32,
    segments: Option<&[u32]>,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    o: &[f32],
    g: &[f32],
    lse: &[f32],
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) {
    let me = Kernel { scale, segments };
    me.backward(d, q, k, v, o, g, lse, dq, dk, dv)
}

/// The kernel's parameters for one call.
struct Kernel<'s> {
    scale: f32,
    segments: Option<&'s [u32]>,
}

impl Kernel<'_> {
    fn forward(&self, d: Dims, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32], lse: &mut [f32]) {
        if out.is_empty() {
            return;
        }
        if d.tq == 1 && d.rep() > 1 && d.rep() <= BR {
            self.forward_decode(d, q, k, v, out, lse);
            return;
        }
        let masker = Masker::new(d, self.segments);
        let (po, pl) = (SyncPtr::new(out), SyncPtr::new(lse));
        let (nqb, nkb, dh, rep) = (d.nqb(), d.nkb(), d.dh, d.rep());
        let (qrs, krs) = (d.hq * dh, d.hkv * dh);
        let scale = self.scale;
        (0..d.b * d.hq * nqb).into_par_iter().for_each_init(
            || {
                (
                    vec![0f32; BR * BC],
                    vec![0f32; BR * dh],
                    vec![0f32; BR],
                    vec![0f32; BR],
                )
            },
            |(s, o, m, l), task| {
                let qb = task % nqb;
                let h = (task / nqb) % d.hq;
                let b = task / (nqb * d.hq);
                let kvh = h / rep;
                let (i0, i1) = d.q_range(qb);
                let nr = i1 - i0;
                o[..nr * dh].fill(0.0);
                m[..nr].fill(f32::NEG_INFINITY);
                l[..nr].fill(0.0);
                let qbase = ((b * d.tq + i0) * d.hq + h) * dh;
                let qp = q[qbase..].as_ptr();
                for kb in 0..nkb {
                    let kind = masker.classify(b, qb, kb);
                    if kind == Block::Skip {
                        continue;
                    }
                    let (j0, j1) = d.k_range(kb);
                    let nc = j1 - j0;
                    let kbase = ((b * d.tk + j0) * d.hkv + kvh) * dh;
                    // SAFETY: q rows i0..i1 of head h, k/v rows j0..j1 of head kvh lie in bounds
                    // (strides H·Dh); s and o are task-local buffers of BR×BC and BR×Dh.
                    if nr <= SMALL_NR {
                        // Few queries (decoding with a KV cache): dots and axpys beat gemm's packing.
                        small_qk(&q[qbase..], qrs, nr, &k[kbase..], krs, nc, dh, scale, s);
                    } else {
                        unsafe {
                            mm(
                                nr,
                                nc,
                                dh,
                                s.as_mut_ptr(),
                                BC,
                                false,
                                qp,
                                qrs,
                                1,
                                k[kbase..].as_ptr(),
                                1,
                                krs,
                                scale,
                            );
                        }
                    }
                    if kind == Block::Partial {
                        masker.apply(b, i0, nr, j0, nc, s);
                    }
                    online_softmax(s, nr, nc, m, l, o, dh);
                    if nr <= SMALL_NR {
                        small_pv(s, nr, &v[kbase..], krs, nc, dh, o);
                    } else {
                        unsafe {
                            mm(
                                nr,
                                dh,
                                nc,
                                o.as_mut_ptr(),
                                dh,
                                true,
                                s.as_ptr(),
                                BC,
                                1,
                                v[kbase..].as_ptr(),
                                krs,
                                1,
                                1.0,
                            );
                        }
                    }
                }
                for r in 0..nr {
                    let inv = 1.0 / l[r];
                    // SAFETY: this task is the only writer of output row (b, i0 + r, h) and of
                    // lse[(b, h, i0 + r)].
                    let dst = unsafe { po.slice(((b * d.tq + i0 + r) * d.hq + h) * dh, dh) };
                    for (x, &a) in dst.iter_mut().zip(&o[r * dh..(r + 1) * dh]) {
                        *x = a * inv;
                    }
                    unsafe {
                        *pl.slice((b * d.hq + h) * d.tq + i0 + r, 1)
                            .get_unchecked_mut(0) = m[r] + l[r].ln()
                    };
                }
            },
        );
    }

    /// The forward for a single query per sequence (decoding with a KV cache) under GQA: one
    /// task per (b, kv head) whose tile rows are the query heads of the group (adjacent rows of
    /// stride Dh in q and out), so each K/V block is read once per group instead of once per
    /// query head — decoding is bound by reading the cache.
    fn forward_decode(
        &self,
        d: Dims,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        out: &mut [f32],
        lse: &mut [f32],
    ) {
        let masker = Masker::new(d, self.segments);
        let (nkb, dh, rep) = (d.nkb(), d.dh, d.rep());
        let krs = d.hkv * dh;
        let scale = self.scale;
        let (po, pl) = (SyncPtr::new(out), SyncPtr::new(lse));
        (0..d.b * d.hkv).into_par_iter().for_each_init(
            || {
                (
                    vec![0f32; BR * BC],
                    vec![0f32; BR * dh],
                    vec![0f32; BR],
                    vec![0f32; BR],
                )
            },
            |(s, o, m, l), task| {
                let (b, kvh) = (task / d.hkv, task % d.hkv);
                let nr = rep;
                o[..nr * dh].fill(0.0);
                m[..nr].fill(f32::NEG_INFINITY);
                l[..nr].fill(0.0);
                // Rows: q[b, 0, kvh·rep + r, :] for r < rep, stride Dh; also the output rows.
                let qbase = (b * d.hq + kvh * rep) * dh;
                for kb in 0..nkb {
                    let kind = masker.classify(b, 0, kb);
                    if kind == Block::Skip {
                        continue;
                    }
                    let (j0, j1) = d.k_range(kb);
                    let nc = j1 - j0;
                    let kbase = ((b * d.tk + j0) * d.hkv + kvh) * dh;
                    if nr <= SMALL_NR {
                        small_qk(&q[qbase..], dh, nr, &k[kbase..], krs, nc, dh, scale, s);
                    } else {
                        // SAFETY: rows qbase.. (rep × Dh) and key rows j0..j1 are in bounds.
                        unsafe {
                            mm(
                                nr,
                                nc,
                                dh,
                                s.as_mut_ptr(),
                                BC,
                                false,
                                q[qbase..].as_ptr(),
                                dh,
                                1,
                                k[kbase..].as_ptr(),
                                1,
                                krs,
                                scale,
                            );
                        }
                    }
                    if kind == Block::Partial {
                        // Every row is the same query position (the last one).
                        for r in 0..nr {
                            masker.apply(b, 0, 1, j0, nc, &mut s[r * BC..]);
                        }
                    }
                    online_softmax(s, nr, nc, m, l, o, dh);
                    if nr <= SMALL_NR {
                        small_pv(s, nr, &v[kbase..], krs, nc, dh, o);
                    } else {
                        unsafe {
                            mm(
                                nr,
                                dh,
                                nc,
                                o.as_mut_ptr(),
                                dh,
                                true,
                                s.as_ptr(),
                                BC,
                                1,
                                v[kbase..].as_ptr(),
                                krs,
                                1,
                                1.0,
                            );
                        }
                    }
                }
                // SAFETY: this task alone writes out rows (b, 0, group heads) and their lse.
                let dst = unsafe { po.slice(qbase, nr * dh) };
                let ls = unsafe { pl.slice(b * d.hq + kvh * rep, nr) };
                for r in 0..nr {
                    let inv = 1.0 / l[r];
                    for (x, &a) in dst[r * dh..(r + 1) * dh]
                        .iter_mut()
                        .zip(&o[r * dh..(r + 1) * dh])
                    {
                        *x = a * inv;
                    }
                    ls[r] = m[r] + l[r].ln();
                }
            },
        );
    }

    /// Gradients (dq, dk, dv, overwritten) given the forward's inputs, output `o`, its gradient
    /// `g` and lse.
    ///
    /// With at least [`ONE_PASS_MIN_TASKS`] (b, kv head) pairs: one task per pair owns dK/dV of
    /// its kv head and dQ of its query heads (5 tile products per visited tile). With fewer pairs
    /// (a single sequence with one kv head would run on one thread) two passes instead: tasks over
    /// (b, kv head, key block) own dK/dV rows, then tasks over (b, head, query block) own dQ rows
    /// (7 tile products per tile, but parallel). The choice depends on shapes only, never on the
    /// thread count, and each accumulation runs in a fixed order: bit-reproducible.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        d: Dims,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        o: &[f32],
        g: &[f32],
        lse: &[f32],
        dq: &mut [f32],
        dk: &mut [f32],
        dv: &mut [f32],
    ) {
        dq.fill(0.0);
        dk.fill(0.0);
        dv.fill(0.0);
        if dq.is_empty() || dk.is_empty() {
            return;
        }
        // D = rowsum(dO ∘ O), laid out (B, Hq, Tq) like lse.
        let dh = d.dh;
        let mut drow_bth = vec![0f32; d.b * d.tq * d.hq];
        drow_bth
            .par_chunks_mut(256)
            .zip(g.par_chunks(256 * dh))
            .zip(o.par_chunks(256 * dh))
            .for_each(|((out, gc), oc)| row_dots(gc, oc, dh, out));
        let mut drow = vec![0f32; d.b * d.hq * d.tq];
        for b in 0..d.b {
            for t in 0..d.tq {
                for h in 0..d.hq {
                    drow[(b * d.hq + h) * d.tq + t] = drow_bth[(b * d.tq + t) * d.hq + h];
                }
            }
        }
        let ctx = BwdCtx {
            d,
            scale: self.scale,
            masker: Masker::new(d, self.segments),
            q,
            k,
            v,
            g,
            lse,
            drow: &drow,
            dq: SyncPtr::new(dq),
            dk: SyncPtr::new(dk),
            dv: SyncPtr::new(dv),
        };
        let (nqb, nkb, rep) = (d.nqb(), d.nkb(), d.rep());
        let scratch = || (vec![0f32; BR * BC], vec![0f32; BR * BC]);
        if d.b * d.hkv >= ONE_PASS_MIN_TASKS {
            (0..d.b * d.hkv)
                .into_par_iter()
                .for_each_init(scratch, |(s, dp), task| {
                    let (b, kvh) = (task / d.hkv, task % d.hkv);
                    for kb in 0..nkb {
                        for h in kvh * rep..(kvh + 1) * rep {
                            for qb in 0..nqb {
                                // SAFETY: this task alone touches dk/dv rows (b, ·, kvh) and dq
                                // rows (b, ·, h) for the heads h of its group.
                                unsafe { ctx.tile(s, dp, b, h, qb, kb, true, true) };
                            }
                        }
                    }
                });
        } else {
            (0..d.b * d.hkv * nkb)
                .into_par_iter()
                .for_each_init(scratch, |(s, dp), task| {
                    let (b, kvh, kb) = (task / (d.hkv * nkb), (task / nkb) % d.hkv, task % nkb);
                    for h in kvh * rep..(kvh + 1) * rep {
                        for qb in 0..nqb {
                            // SAFETY: this task alone touches dk/dv rows of key block kb of (b, kvh).
                            unsafe { ctx.tile(s, dp, b, h, qb, kb, true, false) };
                        }
                    }
                });
            (0..d.b * d.hq * nqb)
                .into_par_iter()
                .for_each_init(scratch, |(s, dp), task| {
                    let (b, h, qb) = (task / (d.hq * nqb), (task / nqb) % d.hq, task % nqb);
                    for kb in 0..nkb {
                        // SAFETY: this task alone touches dq rows of query block qb of (b, h).
                        unsafe { ctx.tile(s, dp, b, h, qb, kb, false, true) };
                    }
                });
        }
    }
}

/// (b, kv head) pairs from which the backward runs in one pass (see [`backward`]).
const ONE_PASS_MIN_TASKS: usize = 4;

/// Everything one backward tile needs.
struct BwdCtx<'a> {
    d: Dims,
    scale: f32,
    masker: Masker<'a>,
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    g: &'a [f32],
    lse: &'a [f32],
    drow: &'a [f32],
    dq: SyncPtr,
    dk: SyncPtr,
    dv: SyncPtr,
}

impl BwdCtx<'_> {
    /// Gradient contributions of the tile (query block qb of head h) × (key block kb of its kv
    /// head): into dK/dV when `kv`, into dQ when `qg`. `s`, `dp` are BR×BC scratch tiles.
    ///
    /// # Safety
    /// No other task may concurrently write the dq rows (when `qg`) or dk/dv rows (when `kv`)
    /// this tile touches.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile(
        &self,
        s: &mut [f32],
        dp: &mut [f32],
        b: usize,
        h: usize,
        qb: usize,
        kb: usize,
        kv: bool,
        qg: bool,
    ) {
        let d = self.d;
        let kind = self.masker.classify(b, qb, kb);
        if kind == Block::Skip {
            return;
        }
        let (dh, scale) = (d.dh, self.scale);
        let (qrs, krs) = (d.hq * dh, d.hkv * dh);
        let (i0, i1) = d.q_range(qb);
        let (j0, j1) = d.k_range(kb);
        let (nr, nc) = (i1 - i0, j1 - j0);
        let kbase = ((b * d.tk + j0) * d.hkv + h / d.rep()) * dh;
        let qbase = ((b * d.tq + i0) * d.hq + h) * dh;
        let (kp, vp) = (self.k[kbase..].as_ptr(), self.v[kbase..].as_ptr());
        let (qp, gp) = (self.q[qbase..].as_ptr(), self.g[qbase..].as_ptr());
        let lrow = &self.lse[(b * d.hq + h) * d.tq + i0..][..nr];
        let drw = &self.drow[(b * d.hq + h) * d.tq + i0..][..nr];
        // All row ranges are in bounds by construction of the block ranges.
        mm(
            nr,
            nc,
            dh,
            s.as_mut_ptr(),
            BC,
            false,
            qp,
            qrs,
            1,
            kp,
            1,
            krs,
            scale,
        );
        if kind == Block::Partial {
            self.masker.apply(b, i0, nr, j0, nc, s);
        }
        probs(s, nr, nc, lrow);
        if kv {
            // dV_j += Pᵀ dO_i
            mm(
                nc,
                dh,
                nr,
                self.dv.at(kbase),
                krs,
                true,
                s.as_ptr(),
                1,
                BC,
                gp,
                qrs,
                1,
                1.0,
            );
        }
        // dP = dO_i V_jᵀ, then dS = P ∘ (dP − D) in place.
        mm(
            nr,
            nc,
            dh,
            dp.as_mut_ptr(),
            BC,
            false,
            gp,
            qrs,
            1,
            vp,
            1,
            krs,
            1.0,
        );
        dscores(s, dp, nr, nc, drw);
        if kv {
            // dK_j += scale · dSᵀ Q_i
            mm(
                nc,
                dh,
                nr,
                self.dk.at(kbase),
                krs,
                true,
                dp.as_ptr(),
                1,
                BC,
                qp,
                qrs,
                1,
                scale,
            );
        }
        if qg {
            // dQ_i += scale · dS K_j
            mm(
                nr,
                dh,
                nc,
                self.dq.at(qbase),
                qrs,
                true,
                dp.as_ptr(),
                BC,
                1,
                kp,
                krs,
                1,
                scale,
            );
        }
    }
}

fn dims_of(lq: &Layout, lk: &Layout) -> CResult<Dims> {
    let (b, tq, hq, dh) = lq.shape().dims4()?;
    let (_, tk, hkv, _) = lk.shape().dims4()?;
    Ok(Dims {
        b,
        tq,
        tk,
        hq,
        hkv,
        dh,
    })
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "gradus-attention"
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
        let q = f32_slice(s1, l1, OP, "q")?;
        let k = f32_slice(s2, l2, OP, "k")?;
        let v = f32_slice(s3, l3, OP, "v")?;
        let d = dims_of(l1, l2)?;
        let (out, lse) = self.forward(d, q, k, v);
        *self
            .lse
            .lock()
            .map_err(|_| msg(format!("{OP}: poisoned lock")))? = Some(lse);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = dims_of(q.layout(), k.layout())?;
        let guard = self
            .lse
            .lock()
            .map_err(|_| msg(format!("{OP}: poisoned lock")))?;
        let (dq, dk, dv) = with_f32([q, k, v, res, grad], OP, |[q, k, v, o, g]| {
            let recomputed;
            let lse = match guard.as_ref() {
                Some(l) => l.as_slice(),
                None => {
                    recomputed = self.forward(d, q, k, v).1;
                    recomputed.as_slice()
                }
            };
            let mut dq = vec![0f32; q.len()];
            let mut dk = vec![0f32; k.len()];
            let mut dv = vec![0f32; v.len()];
            let segs = self.segments.as_deref().map(|s| s.as_slice());
            backward(
                d, self.scale, segs, q, k, v, o, g, lse, &mut dq, &mut dk, &mut dv,
            );
            Ok((dq, dk, dv))
        })?;
        drop(guard);
        Ok((
            Some(Tensor::from_vec(dq, q.shape(), q.device())?),
            Some(Tensor::from_vec(dk, k.shape(), k.device())?),
            Some(Tensor::from_vec(dv, v.shape(), v.device())?),
        ))
    }
}
