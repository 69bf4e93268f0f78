//! Row-major GEMMs into preallocated outputs through the gemm crate, and the three products of a
//! linear layer `y = x Wᵀ + b` (W stored (out, in) as in PyTorch):
//! forward `y = x Wᵀ`, input gradient `dx = dy W`, weight gradient `dW += dyᵀ x` (accumulated in
//! place, beta = 1, so micro-batches add into one buffer), bias gradient `db += Σ_rows dy`.
//! Shapes: x (N, in), y (N, out).

use gradus_tensor::ops::gemm_strided;

/// Below this many multiply-adds a GEMM runs on the calling thread.
const PAR_MIN_WORK: usize = 1 << 16;

/// [`PAR_MIN_WORK`], or `GRADUS_GEMM_PAR_MIN_WORK` when set (a benchmarking knob: the point where
/// waking the thread pool pays differs between CPUs).
fn par_min_work() -> usize {
    static V: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *V.get_or_init(|| {
        std::env::var("GRADUS_GEMM_PAR_MIN_WORK")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(PAR_MIN_WORK)
    })
}

fn parallelism(m: usize, n: usize, k: usize) -> gemm::Parallelism {
    let threads = rayon::current_num_threads();
    if threads > 1 && m.saturating_mul(n).saturating_mul(k) >= par_min_work() {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    }
}

/// `c (m×n) = [c +] a · b` where `a` is stored (m×k) or, when `a_t`, (k×m); `b` is stored (k×n)
/// or, when `b_t`, (n×k). Row-major, contiguous.
///
/// # Panics
/// If a slice is shorter than its shape says (internal shapes only; never user input).
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    c: &mut [f32],
    accumulate: bool,
    a: &[f32],
    a_t: bool,
    b: &[f32],
    b_t: bool,
    m: usize,
    n: usize,
    k: usize,
) {
    assert!(
        c.len() >= m * n && a.len() >= m * k && b.len() >= k * n,
        "fast matmul: buffer too small for {m}×{k}×{n}"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].fill(0.0);
        }
        return;
    }
    let (a_rs, a_cs) = if a_t { (1, m) } else { (k, 1) };
    let (b_rs, b_cs) = if b_t { (1, k) } else { (n, 1) };
    // SAFETY: the extents were checked above; `c` is a distinct &mut, so it aliases neither input.
    unsafe {
        gemm_strided(
            m,
            n,
            k,
            c.as_mut_ptr(),
            n,
            accumulate,
            a.as_ptr(),
            a_rs,
            a_cs,
            b.as_ptr(),
            b_rs,
            b_cs,
            1.0,
            parallelism(m, n, k),
        )
    }
}

/// `y (N×out) = x (N×in) Wᵀ + b`.
pub fn forward(
    y: &mut [f32],
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    rows: usize,
    inp: usize,
    out: usize,
) {
    match b {
        Some(b) => {
            for yr in y[..rows * out].chunks_exact_mut(out) {
                yr.copy_from_slice(b);
            }
            matmul(y, true, x, false, w, true, rows, out, inp);
        }
        None => matmul(y, false, x, false, w, true, rows, out, inp),
    }
}

/// `dx (N×in) = [dx +] dy (N×out) W`.
pub fn backward_input(
    dx: &mut [f32],
    accumulate: bool,
    dy: &[f32],
    w: &[f32],
    rows: usize,
    inp: usize,
    out: usize,
) {
    matmul(dx, accumulate, dy, false, w, false, rows, inp, out);
}

/// `dW (out×in) += dyᵀ x` and `db += Σ_rows dy` (rows summed in order: deterministic).
#[allow(clippy::too_many_arguments)]
pub fn backward_params(
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    dy: &[f32],
    x: &[f32],
    rows: usize,
    inp: usize,
    out: usize,
) {
    matmul(dw, true, dy, true, x, false, out, inp, rows);
    if let Some(db) = db {
        for r in dy[..rows * out].chunks_exact(out) {
            for (a, &g) in db.iter_mut().zip(r) {
                *a += g;
            }
        }
    }
}
