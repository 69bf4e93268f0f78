//! gradus-tensor: the tensor layer of gradus.
//!
//! A thin facade over candle (tensors, autograd, GEMM) plus what candle lacks for training:
//! fused ops **with backward** (attention, RMSNorm, SwiGLU, rotary embedding, token log-probs), each
//! beside a slow `_ref` twin built from plain differentiable ops; a seeded portable RNG; numeric
//! tolerances; and the error type every gradus crate shares.
//!
//! Shape legend used in every doc comment: B batch, T time, D model width, H heads, V vocab,
//! Dh head width.
//!
//! Never use `candle_nn::ops::{softmax_last_dim, rms_norm, layer_norm}` or candle's rotary ops on a
//! training path: they are custom ops without backward and silently drop gradients.

pub mod error;
pub mod io;
pub mod ops;
pub mod rng;
pub mod tol;

pub use candle_core as candle;
pub use candle_core::{DType, Device, IndexOp, Module, Shape, Tensor, Var, D};
pub use error::{Error, Result};

/// Process-wide runtime settings for the CPU path; call once at the start of `main`, before any
/// tensor op. candle runs elementwise ops on its own barrier pool whose extra thread spins after
/// each op; on a 2-core machine it competes with the two GEMM threads (measured: 20-25% of a
/// training step). gradus' hot elementwise work is in its own rayon kernels, so unless the user set
/// `CANDLE_NUM_THREADS`, that pool gets one thread (GEMM threads follow `RAYON_NUM_THREADS`).
pub fn init_runtime() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}
