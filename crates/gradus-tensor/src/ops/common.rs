//! Helpers shared by the fused ops: dtype checks with clear errors, access to f32 CPU buffers,
//! and a raw pointer that rayon tasks may share to write disjoint parts of one output.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Storage, Tensor};

pub(crate) type CResult<T> = candle_core::Result<T>;

pub(crate) fn msg(m: String) -> candle_core::Error {
    candle_core::Error::Msg(m)
}

/// Error unless `t` is f32 on the CPU.
pub(crate) fn check_f32(t: &Tensor, op: &str, arg: &str) -> CResult<()> {
    if t.dtype() != DType::F32 {
        return Err(msg(format!(
            "{op}: `{arg}` has dtype {:?}; the fused op supports f32 only (use the `_ref` twin or convert)",
            t.dtype()
        )));
    }
    if !t.device().is_cpu() {
        return Err(msg(format!(
            "{op}: `{arg}` is not on the CPU; the fused op has only a CPU kernel"
        )));
    }
    Ok(())
}

/// The f32 elements of a contiguous CPU storage as seen through `layout`.
pub(crate) fn f32_slice<'a>(
    s: &'a CpuStorage,
    l: &Layout,
    op: &str,
    arg: &str,
) -> CResult<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(v) => v.as_slice(),
        other => {
            return Err(msg(format!(
                "{op}: `{arg}` has dtype {:?}; the fused op supports f32 only",
                other.dtype()
            )))
        }
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => Err(msg(format!(
            "{op}: `{arg}` must be contiguous (internal: the wrapper makes it so)"
        ))),
    }
}

/// The whole f32 buffer of a CPU storage plus the start offset of `layout` (for strided reads).
pub(crate) fn f32_strided<'a>(
    s: &'a CpuStorage,
    l: &Layout,
    op: &str,
    arg: &str,
) -> CResult<(&'a [f32], usize)> {
    match s {
        CpuStorage::F32(v) => Ok((v.as_slice(), l.start_offset())),
        other => Err(msg(format!(
            "{op}: `{arg}` has dtype {:?}; the fused op supports f32 only",
            other.dtype()
        ))),
    }
}

/// Runs `f` on the contiguous f32 contents of `ts` (in a backward pass, where candle hands us
/// tensors rather than storages). Non-contiguous tensors (e.g. a broadcast gradient) are copied.
pub(crate) fn with_f32<const N: usize, R>(
    ts: [&Tensor; N],
    op: &str,
    f: impl FnOnce([&[f32]; N]) -> CResult<R>,
) -> CResult<R> {
    let owned: Vec<Tensor> = ts.iter().map(|t| t.contiguous()).collect::<CResult<_>>()?;
    let guards: Vec<_> = owned.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices: [&[f32]; N] = [&[]; N];
    for (i, (g, l)) in guards.iter().enumerate() {
        let s = match &**g {
            Storage::Cpu(s) => s,
            _ => return Err(msg(format!("{op}: backward runs on the CPU only"))),
        };
        slices[i] = f32_slice(s, l, op, "backward input")?;
    }
    f(slices)
}

/// A raw pointer shared by rayon tasks that write disjoint elements of one buffer.
#[derive(Clone, Copy)]
pub(crate) struct SyncPtr(pub *mut f32);
// SAFETY: users only write disjoint index sets from different tasks (documented at each use).
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}

impl SyncPtr {
    pub(crate) fn new(v: &mut [f32]) -> Self {
        SyncPtr(v.as_mut_ptr())
    }
    /// The element pointer at `off` (for strided writers such as gemm).
    ///
    /// # Safety
    /// `off` must lie inside the buffer.
    #[inline(always)]
    pub(crate) unsafe fn at(&self, off: usize) -> *mut f32 {
        self.0.add(off)
    }
    /// # Safety
    /// `off..off+len` must lie inside the buffer and no other task may touch it concurrently.
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice(&self, off: usize, len: usize) -> &mut [f32] {
        std::slice::from_raw_parts_mut(self.0.add(off), len)
    }
}

/// Rows per rayon task for row-wise kernels: aims at ~32k elements per task, at least one row.
pub(crate) fn rows_per_task(row_len: usize) -> usize {
    (32 * 1024 / row_len.max(1)).max(1)
}
