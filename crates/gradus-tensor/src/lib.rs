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
pub mod lock;
pub mod num;
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
///
/// On Linux/glibc it also keeps freed memory for reuse (`mallopt`): by default glibc returns every
/// buffer over 128 KiB to the kernel and faults it back in on the next step, which cost 6-8% of a
/// training step. `GRADUS_SYSTEM_MALLOC=1` turns this off.
pub fn init_runtime() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("GRADUS_SYSTEM_MALLOC").is_none() {
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        // SAFETY: mallopt only changes glibc's allocator tunables; called before other threads
        // allocate heavily. 32 MiB is glibc's largest allowed mmap threshold on 64-bit.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 << 20);
            mallopt(M_TRIM_THRESHOLD, 1 << 30);
        }
    }
}
