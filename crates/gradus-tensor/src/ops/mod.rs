//! Differentiable ops used by the models, each a fused candle `CustomOp` with a backward, beside a
//! `_ref` twin composed from plain differentiable candle ops (see [`reference`]). Tests compare the
//! forward and the gradients of every fused op against its twin on random inputs.
//!
//! The fused ops take f32 tensors on the CPU (other dtypes are an error naming the op and dtype)
//! and make non-contiguous inputs contiguous before running. Every reduction uses a fixed order,
//! so results are bit-identical run to run whatever the thread count. See each op's module for the
//! maths of its backward and what it does for speed.
//!
//! Layout convention: activations are kept as (B, T, H, Dh) — the natural view of a linear
//! projection's (B, T, H·Dh) output — so attention and rotary embedding need no transposes.

mod attention;
mod common;
mod gemv;
mod kv;
mod logprobs;
pub mod reference;
mod rms_norm;
mod rope;
pub mod simd;
mod swiglu;

pub use kv::KvBuffer;

/// The kernels behind the fused ops, on plain f32 slices: the one seam per op that both the
/// candle `CustomOp`s above and the hand-written training graph (`gradus_model::fast`) call.
/// Outputs are caller-allocated (so a graph can reuse its buffers every step); each function's
/// doc says which outputs it overwrites and which it adds into. All are deterministic whatever
/// the thread count.
pub mod kernels {
    pub use super::attention::{
        backward as attention_backward, forward as attention_forward, Dims as AttnDims,
    };
    pub use super::logprobs::{
        backward_inplace as token_logprobs_backward_inplace,
        backward_inplace_with_entropy as token_logprobs_entropy_backward_inplace,
        entropy as token_entropy, forward as token_logprobs_forward,
    };
    pub use super::rms_norm::{backward as rms_norm_backward, forward as rms_norm_forward};
    pub use super::rope::rotate as rope_rotate;
    pub use super::swiglu::{backward as swiglu_backward, forward as swiglu_forward};
}
pub use reference::{attention_ref, rms_norm_ref, rope_ref, swiglu_ref, token_logprobs_ref};

use crate::{Result, Tensor};

/// RMSNorm: `x / sqrt(mean(x², -1) + eps) * weight`.
/// x (..., D), weight (D) → (..., D).
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    Ok(rms_norm::rms_norm(x, weight, eps)?)
}

/// SwiGLU gate: `silu(gate) * up`. gate, up (..., F) → (..., F).
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    Ok(swiglu::swiglu(gate, up)?)
}

/// Rotary position embedding in the Hugging Face "rotate_half" convention.
/// x (B, T, H, Dh); cos, sin (B, T, Dh/2) gathered at each token's position id → (B, T, H, Dh).
/// With x = [x1, x2] split in halves: out = [x1·cos − x2·sin, x2·cos + x1·sin].
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    Ok(rope::rope(x, cos, sin)?)
}

/// Causal scaled-dot-product attention with grouped-query heads and an optional segment mask.
///
/// q (B, Tq, Hq, Dh); k, v (B, Tk, Hkv, Dh) with Hq a multiple of Hkv; Tq ≤ Tk. Query i sits at
/// absolute position `Tk − Tq + i` and attends key j iff `j ≤ Tk − Tq + i` and, when `segments`
/// (B, Tk) u32 is given, `segments[b, j] == segments[b, Tk − Tq + i]` (packed documents never see
/// each other; left padding gets its own segment). Returns (B, Tq, Hq, Dh).
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    segments: Option<&Tensor>,
    scale: f64,
) -> Result<Tensor> {
    Ok(attention::attention(q, k, v, segments, scale)?)
}

/// Per-token log-probabilities `log_softmax(logits)[target]`.
/// logits (N, V) f32, targets (N) u32 → (N). The fused op never materialises a second (N, V) tensor
/// in the forward pass.
pub fn token_logprobs(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    Ok(logprobs::token_logprobs(logits, targets)?)
}

/// Forward-only `y_i = x W_iᵀ + b_i` for several weights that share the input x (..., K), each
/// W_i (N_i, K) as PyTorch stores it, b_i (N_i) → one (..., N_i) tensor per weight. No autograd.
///
/// A GEMV-style kernel for few rows of x (decoding): each weight row is streamed once for all rows
/// (no packing of the weight as a GEMM does), with AVX-512 / AVX2+FMA kernels picked at run time
/// and the output features of all weights split across the rayon pool in one parallel region.
/// Rows are processed 4 at a time, so it stays correct for any row count, but beyond ~16 rows a
/// GEMM (`x.matmul(&w.t())`) is faster.
pub fn linear_rows(x: &Tensor, weights: &[(&Tensor, Option<&Tensor>)]) -> Result<Vec<Tensor>> {
    Ok(gemv::linear_rows(x, weights)?)
}

/// `dst (m×n, row stride dst_rs) = [dst +] beta · lhs (m×k) · rhs (k×n)` on raw f32 buffers with
/// element strides (row stride `*_rs`, column stride `*_cs`), through the gemm crate.
///
/// # Safety
/// All pointers must be valid for the strided extents given; `dst` must not alias the inputs.
#[allow(clippy::too_many_arguments)]
#[inline]
pub unsafe fn gemm_strided(
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
    par: gemm::Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        1.0,
        beta,
        false,
        false,
        false,
        par,
    )
}
