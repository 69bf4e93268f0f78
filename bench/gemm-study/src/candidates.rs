//! The candidates, each one function `C (m×n) [+]= op(A) op(B)` into a preallocated row-major
//! output, with the engine's operand layouts ([`Layout`]) and a thread count.
//!
//! - [`gemm_crate`]: the `gemm` crate 0.19 exactly as the engine calls it
//!   (crates/gradus-tensor/src/ops/mod.rs `gemm_strided`, crates/gradus-model/src/fast/linear.rs
//!   `matmul`/`parallelism`): `gemm::gemm` with dst column stride 1, row stride n, alpha 1,
//!   beta 1, `Parallelism::Rayon(threads)` at ≥ 2¹⁶ multiply-adds. Its ISA is fixed by this
//!   build: AVX-512 with the `x86-v4` feature (as the workspace enables it), else AVX2+FMA.
//! - [`faer_matmul`]: `faer::linalg::matmul::matmul` with `Par::rayon(threads)`. For f32 on x86
//!   (std) faer 0.24 calls `private_gemm_x86::gemm` above 16³ multiply-adds, picking AVX-512
//!   at run time when the CPU has it, else AVX2 (nano-gemm below 16³).
//! - [`faer_kernel`]: that same `private_gemm_x86::gemm` call with the instruction set forced
//!   (to measure faer's AVX2 path on an AVX-512 CPU).
//! - [`own`]: our packed sgemm ([`crate::own`]) for a given ISA; [`own_prepacked`] takes B
//!   packed once ([`PackedB`]).

use crate::own::{self as ownk, Isa, PackedB};
use crate::shapes::Layout;

/// Checks the slice extents of one call (internal misuse panics: these are bench inputs).
fn check(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &[f32]) {
    assert!(
        a.len() >= m * k && b.len() >= k * n && c.len() >= m * n,
        "gemm-study: buffer too small for {m}×{n}×{k}"
    );
}

/// The `gemm` crate as the engine calls it.
#[allow(clippy::too_many_arguments)]
pub fn gemm_crate(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    layout: Layout,
    accumulate: bool,
    threads: usize,
) {
    check(m, n, k, a, b, c);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].fill(0.0);
        }
        return;
    }
    let (a_rs, a_cs) = layout.a_strides(m, k);
    let (b_rs, b_cs) = layout.b_strides(n, k);
    // fast/linear.rs `parallelism`: PAR_MIN_WORK = 1 << 16.
    let par = if threads > 1 && m.saturating_mul(n).saturating_mul(k) >= 1 << 16 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: extents checked; `c` is a distinct &mut.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// `faer::linalg::matmul::matmul` with `Par::rayon(threads)` (`Par::Seq` for one thread).
#[allow(clippy::too_many_arguments)]
pub fn faer_matmul(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    layout: Layout,
    accumulate: bool,
    threads: usize,
) {
    check(m, n, k, a, b, c);
    let (a_rs, a_cs) = layout.a_strides(m, k);
    let (b_rs, b_cs) = layout.b_strides(n, k);
    // SAFETY: extents checked; strides describe the slices; `c` is a distinct &mut.
    unsafe {
        let av =
            faer::MatRef::<f32>::from_raw_parts(a.as_ptr(), m, k, a_rs as isize, a_cs as isize);
        let bv =
            faer::MatRef::<f32>::from_raw_parts(b.as_ptr(), k, n, b_rs as isize, b_cs as isize);
        let cv = faer::MatMut::<f32>::from_raw_parts_mut(c.as_mut_ptr(), m, n, n as isize, 1);
        faer::linalg::matmul::matmul(
            cv,
            if accumulate {
                faer::Accum::Add
            } else {
                faer::Accum::Replace
            },
            av,
            bv,
            1.0f32,
            if threads > 1 {
                faer::Par::rayon(threads)
            } else {
                faer::Par::Seq
            },
        );
    }
}

/// faer's x86 f32 kernel (`private_gemm_x86::gemm`, called as faer 0.24 calls it) with the
/// instruction set forced: `avx512 = false` measures its AVX2 path on any AVX2 CPU.
///
/// # Panics
/// If the CPU lacks the instruction set.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub fn faer_kernel(
    avx512: bool,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    layout: Layout,
    accumulate: bool,
    threads: usize,
) {
    use private_gemm_x86 as pg;
    check(m, n, k, a, b, c);
    let isa = if avx512 { Isa::Avx512 } else { Isa::Avx2 };
    assert!(
        isa.available(),
        "faer kernel: this CPU lacks {}",
        isa.name()
    );
    if m == 0 || n == 0 {
        return;
    }
    let (a_rs, a_cs) = layout.a_strides(m, k);
    let (b_rs, b_cs) = layout.b_strides(n, k);
    let alpha = 1.0f32;
    // faer: n_threads = par.degree() at ≥ PAR_THRESHOLD_MNK (4096) · size_of::<f32>() mnk.
    let nt = if m * n * k >= 4096 * 4 {
        threads.max(1)
    } else {
        1
    };
    // SAFETY: extents checked; strides describe the slices.
    unsafe {
        pg::gemm(
            pg::DType::F32,
            pg::IType::U64,
            if avx512 {
                pg::InstrSet::Avx512
            } else {
                pg::InstrSet::Avx256
            },
            m,
            n,
            k,
            c.as_mut_ptr() as *mut (),
            n as isize,
            1,
            std::ptr::null(),
            std::ptr::null(),
            pg::DstKind::Full,
            if accumulate {
                pg::Accum::Add
            } else {
                pg::Accum::Replace
            },
            a.as_ptr() as *const (),
            a_rs as isize,
            a_cs as isize,
            false,
            std::ptr::null(),
            0,
            b.as_ptr() as *const (),
            b_rs as isize,
            b_cs as isize,
            false,
            &raw const alpha as *const (),
            nt,
        )
    }
}

/// Our packed sgemm with `isa`.
///
/// # Panics
/// If the CPU lacks `isa`.
#[allow(clippy::too_many_arguments)]
pub fn own(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    layout: Layout,
    accumulate: bool,
    threads: usize,
) {
    check(m, n, k, a, b, c);
    let (a_rs, a_cs) = layout.a_strides(m, k);
    let (b_rs, b_cs) = layout.b_strides(n, k);
    // SAFETY: extents checked; `c` is a distinct &mut.
    unsafe {
        ownk::sgemm(
            isa,
            m,
            n,
            k,
            a.as_ptr(),
            a_rs,
            a_cs,
            b.as_ptr(),
            b_rs,
            b_cs,
            c.as_mut_ptr(),
            n,
            accumulate,
            threads,
        )
    }
}

/// Packs B (k×n in `layout`'s B layout) once for [`own_prepacked`].
pub fn pack_b(isa: Isa, n: usize, k: usize, b: &[f32], layout: Layout) -> PackedB {
    let (b_rs, b_cs) = layout.b_strides(n, k);
    PackedB::new(isa, b, k, n, b_rs, b_cs)
}

/// Our packed sgemm with B packed once ([`pack_b`]); `layout.b_t` is already folded into `pb`.
#[allow(clippy::too_many_arguments)]
pub fn own_prepacked(
    m: usize,
    a: &[f32],
    pb: &PackedB,
    c: &mut [f32],
    layout: Layout,
    accumulate: bool,
    threads: usize,
) {
    let (k, n) = pb.dims();
    assert!(
        a.len() >= m * k && c.len() >= m * n,
        "gemm-study: buffer too small for {m}×{n}×{k}"
    );
    let (a_rs, a_cs) = layout.a_strides(m, k);
    // SAFETY: extents checked; `c` is a distinct &mut.
    unsafe {
        ownk::sgemm_prepacked(
            m,
            a.as_ptr(),
            a_rs,
            a_cs,
            pb,
            c.as_mut_ptr(),
            n,
            accumulate,
            threads,
        )
    }
}
