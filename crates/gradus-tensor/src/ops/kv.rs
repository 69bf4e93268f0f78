//! An in-place key/value store for one attention layer during decoding, and attention of new
//! queries against it (forward only, no autograd).
//!
//! Keys and values live in two buffers laid out (B, capacity, Hkv, Dh). [`KvBuffer::append`]
//! copies a step's (B, T, Hkv, Dh) keys/values behind the filled prefix (growing the capacity
//! by doubling when needed, so a buffer sized for prompt + new tokens never reallocates), and
//! [`KvBuffer::attend`] reads only the filled prefix through its strides. Nothing is concatenated
//! per step.
//!
//! Attention, one rayon task per (b, query head): for each query (absolute position
//! `len − Tq + i`), scores `scale·q·k_j` over the visible keys (causal, same segment), softmax with
//! the max subtracted, then `Σ p_j v_j / Σ p_j`. Meant for few queries per row (decoding);
//! a long prefill is better served by the blocked [`super::attention`].

use candle_core::Tensor;
use rayon::prelude::*;

use super::common::{check_f32, f32_slice, msg, CResult, SyncPtr};
use super::simd::{self, dispatch};

const OP: &str = "kv_cache";

/// Keys and values of earlier positions for one layer: (B, capacity, Hkv, Dh) each, the first
/// [`KvBuffer::len`] positions filled.
#[derive(Clone, Debug)]
pub struct KvBuffer {
    b: usize,
    hkv: usize,
    dh: usize,
    cap: usize,
    len: usize,
    k: Vec<f32>,
    v: Vec<f32>,
}

impl KvBuffer {
    /// An empty buffer with room for `capacity` positions per row.
    pub fn new(batch: usize, kv_heads: usize, head_dim: usize, capacity: usize) -> Self {
        let n = batch * capacity * kv_heads * head_dim;
        KvBuffer {
            b: batch,
            hkv: kv_heads,
            dh: head_dim,
            cap: capacity,
            len: 0,
            k: vec![0.0; n],
            v: vec![0.0; n],
        }
    }

    /// Filled positions per row.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    pub fn batch(&self) -> usize {
        self.b
    }

    fn row(&self) -> usize {
        self.hkv * self.dh
    }

    fn grow(&mut self, need: usize) {
        let cap = need.max(2 * self.cap);
        let row = self.row();
        let mut k = vec![0.0; self.b * cap * row];
        let mut v = vec![0.0; self.b * cap * row];
        for b in 0..self.b {
            let (src, dst) = (b * self.cap * row, b * cap * row);
            k[dst..dst + self.len * row].copy_from_slice(&self.k[src..src + self.len * row]);
            v[dst..dst + self.len * row].copy_from_slice(&self.v[src..src + self.len * row]);
        }
        self.k = k;
        self.v = v;
        self.cap = cap;
    }

    /// Writes k, v (B, T, Hkv, Dh) at positions len..len+T of every row.
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> crate::Result<()> {
        Ok(self.append_(k, v)?)
    }

    fn append_(&mut self, k: &Tensor, v: &Tensor) -> CResult<()> {
        check_f32(k, OP, "k")?;
        check_f32(v, OP, "v")?;
        let (b, t, h, d) = k.dims4().map_err(|_| {
            msg(format!(
                "{OP}: k must be (B, T, Hkv, Dh), got {:?}",
                k.dims()
            ))
        })?;
        if (b, h, d) != (self.b, self.hkv, self.dh) || v.dims() != k.dims() {
            return Err(msg(format!(
                "{OP}: k {:?} / v {:?} do not fit a cache of batch {}, {} kv heads of width {}",
                k.dims(),
                v.dims(),
                self.b,
                self.hkv,
                self.dh
            )));
        }
        if self.len + t > self.cap {
            self.grow(self.len + t);
        }
        let row = self.row();
        for (src, dst) in [(k, 0), (v, 1)] {
            let src = src.contiguous()?;
            let (g, l) = src.storage_and_layout();
            let s = match &*g {
                candle_core::Storage::Cpu(s) => f32_slice(s, l, OP, "k/v")?,
                _ => return Err(msg(format!("{OP}: k/v must be on the CPU"))),
            };
            let buf = if dst == 0 { &mut self.k } else { &mut self.v };
            for bi in 0..b {
                let o = (bi * self.cap + self.len) * row;
                buf[o..o + t * row].copy_from_slice(&s[bi * t * row..(bi + 1) * t * row]);
            }
        }
        self.len += t;
        Ok(())
    }

    /// Attention of q (B, Tq, Hq, Dh), Hq a multiple of Hkv, against the filled prefix: query i
    /// sits at position `len − Tq + i` and sees key j iff `j ≤ len − Tq + i` and, when `segments`
    /// (B, len) row-major is given, `segments[b, j] == segments[b, len − Tq + i]`.
    /// Returns (B, Tq, Hq, Dh). No autograd.
    pub fn attend(
        &self,
        q: &Tensor,
        segments: Option<&[u32]>,
        scale: f64,
    ) -> crate::Result<Tensor> {
        Ok(self.attend_(q, segments, scale as f32)?)
    }

    fn attend_(&self, q: &Tensor, segments: Option<&[u32]>, scale: f32) -> CResult<Tensor> {
        check_f32(q, OP, "q")?;
        let (b, tq, hq, dh) = q.dims4().map_err(|_| {
            msg(format!(
                "{OP}: q must be (B, Tq, Hq, Dh), got {:?}",
                q.dims()
            ))
        })?;
        if b != self.b || dh != self.dh || self.hkv == 0 || hq % self.hkv != 0 {
            return Err(msg(format!(
                "{OP}: q {:?} does not fit a cache of batch {}, {} kv heads of width {}",
                q.dims(),
                self.b,
                self.hkv,
                self.dh
            )));
        }
        if tq > self.len {
            return Err(msg(format!(
                "{OP}: {tq} queries but only {} cached positions",
                self.len
            )));
        }
        if let Some(s) = segments {
            if s.len() != b * self.len {
                return Err(msg(format!(
                    "{OP}: segments have {} entries, expected {b} × {}",
                    s.len(),
                    self.len
                )));
            }
        }
        let q = q.contiguous()?;
        let (g, l) = q.storage_and_layout();
        let qs = match &*g {
            candle_core::Storage::Cpu(s) => f32_slice(s, l, OP, "q")?,
            _ => return Err(msg(format!("{OP}: q must be on the CPU"))),
        };
        let mut out = vec![0f32; b * tq * hq * dh];
        let po = SyncPtr::new(&mut out);
        let (len, cap, hkv, rep) = (self.len, self.cap, self.hkv, hq / self.hkv);
        let (kb, vb) = (&self.k, &self.v);
        let task = |bh: usize| {
            let (bi, h) = (bh / hq, bh % hq);
            let kh = h / rep;
            let seg = segments.map(|s| &s[bi * len..(bi + 1) * len]);
            let mut p = vec![0f32; len];
            for i in 0..tq {
                let pos = len - tq + i;
                let qo = ((bi * tq + i) * hq + h) * dh;
                // SAFETY: task (bi, h) alone writes the (bi, ·, h, ·) rows of `out`.
                let o = unsafe { po.slice(qo, dh) };
                query(
                    &qs[qo..qo + dh],
                    kb,
                    vb,
                    (bi * cap * hkv + kh) * dh,
                    hkv * dh,
                    pos,
                    seg,
                    scale,
                    &mut p,
                    o,
                );
            }
        };
        if b * hq * tq * len * dh < 32 * 1024 || rayon::current_num_threads() < 2 {
            (0..b * hq).for_each(task);
        } else {
            (0..b * hq).into_par_iter().for_each(task);
        }
        drop(g);
        Tensor::from_vec(out, (b, tq, hq, dh), q.device())
    }
}

/// One query against keys 0..=pos of one (row, kv head): k/v rows start at `base` with stride
/// `stride`; `p` is scratch of at least pos + 1 floats; writes the attention output to `o`.
#[allow(clippy::too_many_arguments)]
fn query(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    base: usize,
    stride: usize,
    pos: usize,
    seg: Option<&[u32]>,
    scale: f32,
    p: &mut [f32],
    o: &mut [f32],
) {
    let dh = q.len();
    assert!(base + pos * stride + dh <= k.len().min(v.len()) && p.len() > pos && o.len() == dh);
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: bounds checked above; the CPU has AVX-512F.
        unsafe { scores_avx512(q, k, base, stride, pos, scale, p) };
        let l = softmax_masked(seg, pos, p);
        unsafe { weighted_sum_avx512(v, base, stride, pos, &p[..=pos], 1.0 / l, o) };
        return;
    }
    query_portable(q, k, v, base, stride, pos, seg, scale, p, o)
}

/// Applies the segment mask to the scores p[..=pos], then `p ← e^(p − max)`; returns Σ p.
fn softmax_masked(seg: Option<&[u32]>, pos: usize, p: &mut [f32]) -> f32 {
    if let Some(s) = seg {
        let me = s[pos];
        for (x, &sj) in p[..=pos].iter_mut().zip(&s[..=pos]) {
            if sj != me {
                *x = f32::NEG_INFINITY;
            }
        }
    }
    let m = simd::max(&p[..=pos]);
    simd::exp_shift_inplace_sum(&mut p[..=pos], m)
}

/// p[j] = scale·q·k_j for j ≤ pos, one 16-wide FMA chain per key (masked tail).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn scores_avx512(
    q: &[f32],
    k: &[f32],
    base: usize,
    stride: usize,
    pos: usize,
    scale: f32,
    p: &mut [f32],
) {
    use std::arch::x86_64::*;
    let dh = q.len();
    let full = dh / 16 * 16;
    let m: __mmask16 = ((1u32 << (dh - full)) - 1) as __mmask16;
    let (qp, kp) = (q.as_ptr(), k.as_ptr().add(base));
    for j in 0..=pos {
        let kr = kp.add(j * stride);
        let mut acc = _mm512_setzero_ps();
        let mut d = 0;
        while d < full {
            acc = _mm512_fmadd_ps(_mm512_loadu_ps(qp.add(d)), _mm512_loadu_ps(kr.add(d)), acc);
            d += 16;
        }
        if full < dh {
            acc = _mm512_fmadd_ps(
                _mm512_maskz_loadu_ps(m, qp.add(full)),
                _mm512_maskz_loadu_ps(m, kr.add(full)),
                acc,
            );
        }
        p[j] = scale * _mm512_reduce_add_ps(acc);
    }
}

/// o = inv·Σ_j p[j]·v_j. Up to 128 floats the whole output row stays in registers (one
/// independent FMA chain per 16 floats); wider rows go 128 floats at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn weighted_sum_avx512(
    v: &[f32],
    base: usize,
    stride: usize,
    pos: usize,
    p: &[f32],
    inv: f32,
    o: &mut [f32],
) {
    let dh = o.len();
    let vp = v.as_ptr().add(base);
    let mut d = 0;
    while d < dh {
        let n = (dh - d).min(128);
        let (vq, oq) = (vp.add(d), o.as_mut_ptr().add(d));
        match n.div_ceil(16) {
            1 => wsum_chunks::<1>(vq, stride, pos, p, inv, n, oq),
            2 => wsum_chunks::<2>(vq, stride, pos, p, inv, n, oq),
            3 => wsum_chunks::<3>(vq, stride, pos, p, inv, n, oq),
            4 => wsum_chunks::<4>(vq, stride, pos, p, inv, n, oq),
            5 => wsum_chunks::<5>(vq, stride, pos, p, inv, n, oq),
            6 => wsum_chunks::<6>(vq, stride, pos, p, inv, n, oq),
            7 => wsum_chunks::<7>(vq, stride, pos, p, inv, n, oq),
            _ => wsum_chunks::<8>(vq, stride, pos, p, inv, n, oq),
        }
        d += n;
    }
}

/// `n` (≤ 16·C) output floats from C register accumulators; the last chunk is masked.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn wsum_chunks<const C: usize>(
    v: *const f32,
    stride: usize,
    pos: usize,
    p: &[f32],
    inv: f32,
    n: usize,
    o: *mut f32,
) {
    use std::arch::x86_64::*;
    let mut m = [0xFFFFu16; C];
    m[C - 1] = ((1u32 << (n - 16 * (C - 1))) - 1) as u16;
    let mut acc = [_mm512_setzero_ps(); C];
    for j in 0..=pos {
        let w = _mm512_set1_ps(p[j]);
        let r = v.add(j * stride);
        for c in 0..C {
            acc[c] = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(m[c], r.add(16 * c)), acc[c]);
        }
    }
    let s = _mm512_set1_ps(inv);
    for c in 0..C {
        _mm512_mask_storeu_ps(o.add(16 * c), m[c], _mm512_mul_ps(acc[c], s));
    }
}

dispatch! {
    /// [`query`] for CPUs without AVX-512.
    fn query_portable(q: &[f32], k: &[f32], v: &[f32], base: usize, stride: usize, pos: usize, seg: Option<&[u32]>, scale: f32, p: &mut [f32], o: &mut [f32]) {
        let dh = q.len();
        for j in 0..=pos {
            let kr = &k[base + j * stride..base + j * stride + dh];
            p[j] = scale * simd::dot(q, kr);
        }
        let l = softmax_masked(seg, pos, p);
        o.fill(0.0);
        for j in 0..=pos {
            let w = p[j];
            if w == 0.0 {
                continue;
            }
            let vr = &v[base + j * stride..base + j * stride + dh];
            for (a, &b) in o.iter_mut().zip(vr) {
                *a += w * b;
            }
        }
        let inv = 1.0 / l;
        for a in o.iter_mut() {
            *a *= inv;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::attention_ref;
    use crate::rng::Rng;
    use candle_core::Device;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// Appending in pieces (with growth past the initial capacity) and attending the last queries
    /// gives the reference attention over the concatenated keys, with GQA and left-padding segments.
    #[test]
    fn attend_matches_reference_attention() {
        let dev = Device::Cpu;
        let mut rng = Rng::new(21);
        let (b, tk, hq, hkv, dh) = (3, 11, 4, 2, 6);
        let k = rng.randn(&[b, tk, hkv, dh], 1.0, &dev).unwrap();
        let v = rng.randn(&[b, tk, hkv, dh], 1.0, &dev).unwrap();
        // Row 0 unpadded, row 1 with 3 pad positions (segment 0), row 2 with 1.
        let seg: Vec<u32> = (0..b)
            .flat_map(|r| (0..tk).map(move |j| u32::from(j >= [0, 3, 1][r])))
            .collect();
        let seg_t = Tensor::from_slice(&seg, (b, tk), &dev).unwrap();
        for &(first, tq) in &[(5usize, 3usize), (10, 1), (0, 11)] {
            let q = rng.randn(&[b, tq, hq, dh], 1.0, &dev).unwrap();
            let mut buf = KvBuffer::new(b, hkv, dh, 2);
            let mut at = 0;
            for n in [first, tk - first] {
                if n > 0 {
                    buf.append(&k.narrow(1, at, n).unwrap(), &v.narrow(1, at, n).unwrap())
                        .unwrap();
                    at += n;
                }
            }
            assert_eq!(buf.len(), tk);
            assert!(buf.capacity() >= tk);
            let got = buf.attend(&q, Some(&seg), 0.4).unwrap();
            let want = attention_ref(&q, &k, &v, Some(&seg_t), 0.4).unwrap();
            assert!(
                max_diff(&got, &want) < 1e-5,
                "segments, tq {tq}: {}",
                max_diff(&got, &want)
            );
            let got = buf.attend(&q, None, 0.4).unwrap();
            let want = attention_ref(&q, &k, &v, None, 0.4).unwrap();
            assert!(max_diff(&got, &want) < 1e-5, "causal, tq {tq}");
        }
    }

    /// The portable kernel (CPUs without AVX-512) agrees with the dispatched one, masked or not,
    /// with a head width that leaves a vector tail.
    #[test]
    fn portable_query_matches_dispatched() {
        let mut rng = Rng::new(22);
        for (dh, stride, n) in [(20, 26, 9), (140, 150, 5)] {
            let k: Vec<f32> = (0..n * stride).map(|_| rng.normal() as f32).collect();
            let v: Vec<f32> = (0..n * stride).map(|_| rng.normal() as f32).collect();
            let q: Vec<f32> = (0..dh).map(|_| rng.normal() as f32).collect();
            let seg: Vec<u32> = [0, 0, 1, 1, 1, 0, 1, 1, 1][9 - n..].to_vec();
            for s in [None, Some(&seg[..])] {
                let (mut p1, mut p2) = (vec![0f32; n], vec![0f32; n]);
                let (mut o1, mut o2) = (vec![0f32; dh], vec![0f32; dh]);
                query(&q, &k, &v, 3, stride, n - 1, s, 0.3, &mut p1, &mut o1);
                query_portable(&q, &k, &v, 3, stride, n - 1, s, 0.3, &mut p2, &mut o2);
                for (a, b) in o1.iter().zip(&o2) {
                    assert!((a - b).abs() < 1e-5, "dh {dh}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn shape_errors_are_reported() {
        let dev = Device::Cpu;
        let mut buf = KvBuffer::new(2, 2, 4, 4);
        let k = Tensor::zeros((2, 1, 3, 4), candle_core::DType::F32, &dev).unwrap();
        let e = buf.append(&k, &k).unwrap_err().to_string();
        assert!(e.contains("do not fit"), "{e}");
        let k = Tensor::zeros((2, 1, 2, 4), candle_core::DType::F32, &dev).unwrap();
        buf.append(&k, &k).unwrap();
        let q = Tensor::zeros((2, 2, 2, 4), candle_core::DType::F32, &dev).unwrap();
        let e = buf.attend(&q, None, 1.0).unwrap_err().to_string();
        assert!(e.contains("only 1 cached"), "{e}");
    }
}
