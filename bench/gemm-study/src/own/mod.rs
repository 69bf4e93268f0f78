//! Our own packed sgemm, BLIS-style (Goto & van de Geijn 2008, "Anatomy of High-Performance
//! Matrix Multiplication", §4-6; Van Zee & van de Geijn 2015, BLIS §3): row-major
//! `C (m×n) [+]= A (m×k) B (k×n)` with any operand strides.
//!
//! One rayon parallel region per call: the threads split the larger of M and N (whole MR / NR
//! panels) and each runs the loops below on its part with thread-local pack buffers (no barrier;
//! the other operand's packing is repeated per thread, the smaller one by this choice).
//! Loops, outermost first:
//! 1. `jc` over blocks of NC columns on a global grid (so a [`PackedB`] lines up);
//! 2. `pc` over blocks of KC of the inner dimension; the thread packs its columns of B's
//!    (KC×NC) block into NR-column panels (k-major: NR contiguous values per p), or takes them
//!    from a [`PackedB`] built once ("packed once and reused": the engine multiplies by the same
//!    weight in every micro-batch of an optimizer step and in every generation step);
//! 3. `ic` over MC-row blocks; A's MR-row panels are packed (k-major: MR contiguous values per p)
//!    only where needed (below);
//! 4. `ir` over MR-row panels of A (one A micro-panel, MR×KC, stays in L1), `jr` over NR-column
//!    panels of B (streamed from L2), the microkernel per (MR×NR) tile ([`kernels`]). Tiles at
//!    the right or bottom edge are computed into a stack tile (AVX-512: with a 4- or 8-row kernel
//!    when the panel has that few rows) and the valid part copied out; packed panels are
//!    zero-padded, so the microkernels never branch.
//!
//! Full panels are read in place instead of packed where that is cheaper: A stored (k×m) (each
//! p's MR values are contiguous; AVX2: up to 256 rows per thread), A row-major (a second
//! microkernel broadcasts from the MR rows), B stored (k×n) up to 128 rows of C per thread.
//! Transposing packs (B = Wᵀ, edge panels of a row-major A) go 4×4 through SSE registers.
//!
//! The first `pc` block writes (or, when the caller asks, adds to) C; later blocks add.

pub mod kernels;

use std::cell::Cell;

/// Instruction set of the microkernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F: 12×32 tile.
    Avx512,
    /// AVX2 + FMA: 6×16 tile.
    Avx2,
    /// Portable scalar 4×8 tile (reference path for other targets).
    Scalar,
}

impl Isa {
    /// The widest ISA this CPU supports.
    pub fn detect() -> Isa {
        if Isa::Avx512.available() {
            Isa::Avx512
        } else if Isa::Avx2.available() {
            Isa::Avx2
        } else {
            Isa::Scalar
        }
    }

    /// Whether this CPU can run the ISA's microkernel.
    pub fn available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx512 | Isa::Avx2 => false,
            Isa::Scalar => true,
        }
    }

    /// (MR, NR) of the tile.
    pub fn tile(self) -> (usize, usize) {
        match self {
            Isa::Avx512 => (kernels::MR512, kernels::NR512),
            Isa::Avx2 => (kernels::MR256, kernels::NR256),
            Isa::Scalar => (4, 8),
        }
    }

    /// Short name: `avx512`, `avx2`, `scalar`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Scalar => "scalar",
        }
    }
}

/// Cache blocking: KC (inner dimension per block), MC (rows of A packed at once per thread), NC
/// (columns of B per block).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocking {
    /// Inner-dimension block: an A micro-panel MR×KC sits in L1.
    pub kc: usize,
    /// Rows of A packed at once (a multiple of MR).
    pub mc: usize,
    /// Columns of B per block: the packed KC×NC block sits in L2.
    pub nc: usize,
}

impl Blocking {
    /// Defaults for `isa`, or `GEMM_STUDY_BLOCKING=kc,mc,nc` when set (a tuning knob; MC and NC
    /// are rounded up to whole tiles).
    pub fn for_isa(isa: Isa) -> Blocking {
        // Read once: the environment lookup would cost a noticeable share of a 1 µs tile product.
        static CACHE: std::sync::OnceLock<[Blocking; 3]> = std::sync::OnceLock::new();
        let all =
            CACHE.get_or_init(|| [Isa::Avx512, Isa::Avx2, Isa::Scalar].map(Blocking::resolve));
        all[match isa {
            Isa::Avx512 => 0,
            Isa::Avx2 => 1,
            Isa::Scalar => 2,
        }]
    }

    fn resolve(isa: Isa) -> Blocking {
        let (mr, nr) = isa.tile();
        let def = match isa {
            Isa::Avx512 => Blocking {
                kc: 256,
                mc: 16 * mr,
                nc: 16 * nr,
            },
            Isa::Avx2 => Blocking {
                kc: 256,
                mc: 16 * mr,
                nc: 32 * nr,
            },
            Isa::Scalar => Blocking {
                kc: 64,
                mc: 8 * mr,
                nc: 8 * nr,
            },
        };
        let env = std::env::var("GEMM_STUDY_BLOCKING").ok().and_then(|s| {
            let v: Vec<usize> = s.split(',').filter_map(|x| x.trim().parse().ok()).collect();
            (v.len() == 3 && v.iter().all(|&x| x > 0)).then(|| Blocking {
                kc: v[0],
                mc: v[1],
                nc: v[2],
            })
        });
        env.unwrap_or(def).rounded(mr, nr)
    }

    /// MC and NC rounded up to multiples of MR and NR.
    pub fn rounded(self, mr: usize, nr: usize) -> Blocking {
        Blocking {
            kc: self.kc.max(1),
            mc: self.mc.div_ceil(mr).max(1) * mr,
            nc: self.nc.div_ceil(nr).max(1) * nr,
        }
    }
}

/// A raw pointer that may cross threads (the tasks write disjoint parts).
#[derive(Clone, Copy)]
struct Ptr(*mut f32);
// SAFETY: used only for disjoint writes / shared reads inside one scoped parallel region.
unsafe impl Send for Ptr {}
unsafe impl Sync for Ptr {}

impl Ptr {
    /// The pointer (a method, so closures capture the whole `Ptr`, which is `Sync`).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// A strided read-only matrix view: element (i, j) at `ptr + i*rs + j*cs`.
#[derive(Clone, Copy)]
struct View {
    ptr: *const f32,
    rs: usize,
    cs: usize,
}
// SAFETY: read-only.
unsafe impl Send for View {}
unsafe impl Sync for View {}

thread_local! {
    static A_BUF: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    static B_BUF: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` with a thread-local scratch buffer of at least `len` floats, 64-byte aligned (the
/// buffer is taken out of the slot while in use, so a nested call allocates its own).
fn with_scratch<R>(
    slot: &'static std::thread::LocalKey<Cell<Vec<f32>>>,
    len: usize,
    f: impl FnOnce(*mut f32) -> R,
) -> R {
    let mut v = slot.with(|s| s.take());
    if v.len() < len + 16 {
        v = vec![0f32; len + 16];
    }
    let off = v.as_ptr().align_offset(64).min(15);
    let r = f(unsafe { v.as_mut_ptr().add(off) });
    slot.with(|s| s.set(v));
    r
}

/// Runs `f(t)` for t in 0..threads: t ≥ 1 as tasks of the rayon pool, t = 0 on the calling
/// thread (`in_place_scope`: a caller outside the pool, like the engine's main thread, works
/// instead of handing everything to the pool and sleeping: one wake-up per call, not two).
fn par(threads: usize, f: impl Fn(usize) + Sync) {
    if threads <= 1 {
        f(0);
        return;
    }
    rayon::in_place_scope(|s| {
        let f = &f;
        for t in 1..threads {
            s.spawn(move |_| f(t));
        }
        f(0);
    });
}

/// `dst[p*ds + r] = src[r*rs + p]` for r < rows, p < cols: the transposing copy both packings
/// need when the packed dimension is the strided one (A row-major, B = Wᵀ). 4×4 blocks go through
/// SSE registers (`_MM_TRANSPOSE4_PS`: 4 loads, 8 shuffles, 4 stores per 16 values instead of 16
/// scalar strided stores).
///
/// # Safety
/// `dst` holds cols·ds floats, rows ≤ ds; the addressed part of `src` is readable.
unsafe fn transpose_into(
    dst: *mut f32,
    ds: usize,
    src: *const f32,
    rs: usize,
    rows: usize,
    cols: usize,
) {
    let mut r = 0;
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::*;
        while r + 4 <= rows {
            let s0 = src.add(r * rs);
            let (s1, s2, s3) = (s0.add(rs), s0.add(2 * rs), s0.add(3 * rs));
            let mut p = 0;
            while p + 4 <= cols {
                let mut x0 = _mm_loadu_ps(s0.add(p));
                let mut x1 = _mm_loadu_ps(s1.add(p));
                let mut x2 = _mm_loadu_ps(s2.add(p));
                let mut x3 = _mm_loadu_ps(s3.add(p));
                _MM_TRANSPOSE4_PS(&mut x0, &mut x1, &mut x2, &mut x3);
                let d = dst.add(p * ds + r);
                _mm_storeu_ps(d, x0);
                _mm_storeu_ps(d.add(ds), x1);
                _mm_storeu_ps(d.add(2 * ds), x2);
                _mm_storeu_ps(d.add(3 * ds), x3);
                p += 4;
            }
            for p in p..cols {
                let d = dst.add(p * ds + r);
                *d = *s0.add(p);
                *d.add(1) = *s1.add(p);
                *d.add(2) = *s2.add(p);
                *d.add(3) = *s3.add(p);
            }
            r += 4;
        }
    }
    for r in r..rows {
        let s = src.add(r * rs);
        for p in 0..cols {
            *dst.add(p * ds + r) = *s.add(p);
        }
    }
}

/// Packs rows `p0..p0+kc` and columns `j0..j0+nv` of B into one NR-column panel at `dst`
/// (dst[p*NR + jj]), zero-padding columns nv..NR.
///
/// # Safety
/// `dst` holds kc·NR floats; the addressed part of B is readable.
unsafe fn pack_b_panel(
    dst: *mut f32,
    b: View,
    p0: usize,
    kc: usize,
    j0: usize,
    nv: usize,
    nr: usize,
) {
    if b.cs == 1 {
        for p in 0..kc {
            let src = b.ptr.add((p0 + p) * b.rs + j0);
            let d = dst.add(p * nr);
            std::ptr::copy_nonoverlapping(src, d, nv);
            for jj in nv..nr {
                *d.add(jj) = 0.0;
            }
        }
    } else if b.rs == 1 {
        transpose_into(dst, nr, b.ptr.add(j0 * b.cs + p0), b.cs, nv, kc);
        for jj in nv..nr {
            for p in 0..kc {
                *dst.add(p * nr + jj) = 0.0;
            }
        }
    } else {
        for jj in 0..nv {
            let src = b.ptr.add((j0 + jj) * b.cs + p0 * b.rs);
            for p in 0..kc {
                *dst.add(p * nr + jj) = *src.add(p * b.rs);
            }
        }
        for jj in nv..nr {
            for p in 0..kc {
                *dst.add(p * nr + jj) = 0.0;
            }
        }
    }
}

/// Packs rows `i0..i0+mv` and columns `p0..p0+kc` of A into one MR-row panel at `dst`
/// (dst[p*MR + ii]), zero-padding rows mv..MR.
///
/// # Safety
/// `dst` holds kc·MR floats; the addressed part of A is readable.
unsafe fn pack_a_panel(
    dst: *mut f32,
    a: View,
    i0: usize,
    mv: usize,
    p0: usize,
    kc: usize,
    mr: usize,
) {
    // An MR-row panel of A is an NR-column panel of Aᵀ (strides swapped).
    let at = View {
        ptr: a.ptr,
        rs: a.cs,
        cs: a.rs,
    };
    pack_b_panel(dst, at, p0, kc, i0, mv, mr)
}

/// B packed once for every (jc, pc) block of a fixed [`Blocking`] and ISA.
pub struct PackedB {
    isa: Isa,
    blocking: Blocking,
    k: usize,
    n: usize,
    buf: Vec<f32>,
    /// Offset into `buf` of block (jc index, pc index), row-major over (jc, pc).
    offsets: Vec<usize>,
    align: usize,
}

impl PackedB {
    /// Packs B (k×n, element (p, j) at `b[p*rsb + j*csb]`) for `isa` with its default blocking.
    ///
    /// # Panics
    /// If `b` is too short for the strides.
    pub fn new(isa: Isa, b: &[f32], k: usize, n: usize, rsb: usize, csb: usize) -> PackedB {
        Self::with_blocking(isa, Blocking::for_isa(isa), b, k, n, rsb, csb)
    }

    /// As [`PackedB::new`] with an explicit blocking.
    pub fn with_blocking(
        isa: Isa,
        blocking: Blocking,
        b: &[f32],
        k: usize,
        n: usize,
        rsb: usize,
        csb: usize,
    ) -> PackedB {
        if k > 0 && n > 0 {
            assert!(
                b.len() > (k - 1) * rsb + (n - 1) * csb,
                "PackedB: B too short for {k}×{n}"
            );
        }
        let (mr, nr) = isa.tile();
        let blocking = blocking.rounded(mr, nr);
        let mut offsets = Vec::new();
        let mut total = 0;
        for jc in (0..n).step_by(blocking.nc) {
            let nc = blocking.nc.min(n - jc);
            for pc in (0..k).step_by(blocking.kc) {
                let kc = blocking.kc.min(k - pc);
                offsets.push(total);
                total += nc.div_ceil(nr) * nr * kc;
            }
        }
        let mut buf = vec![0f32; total + 16];
        let align = buf.as_ptr().align_offset(64).min(15);
        let view = View {
            ptr: b.as_ptr(),
            rs: rsb,
            cs: csb,
        };
        let mut bi = 0;
        for jc in (0..n).step_by(blocking.nc) {
            let nc = blocking.nc.min(n - jc);
            for pc in (0..k).step_by(blocking.kc) {
                let kc = blocking.kc.min(k - pc);
                let base = unsafe { buf.as_mut_ptr().add(align + offsets[bi]) };
                for q in 0..nc.div_ceil(nr) {
                    let j0 = jc + q * nr;
                    // SAFETY: offsets were sized for these panels; B's extent was checked.
                    unsafe {
                        pack_b_panel(
                            base.add(q * kc * nr),
                            view,
                            pc,
                            kc,
                            j0,
                            nr.min(jc + nc - j0),
                            nr,
                        )
                    };
                }
                bi += 1;
            }
        }
        PackedB {
            isa,
            blocking,
            k,
            n,
            buf,
            offsets,
            align,
        }
    }

    /// (k, n) of the packed matrix.
    pub fn dims(&self) -> (usize, usize) {
        (self.k, self.n)
    }

    fn block(&self, jc_idx: usize, pc_idx: usize) -> *const f32 {
        let per_jc = self.k.div_ceil(self.blocking.kc);
        unsafe {
            self.buf
                .as_ptr()
                .add(self.align + self.offsets[jc_idx * per_jc + pc_idx])
        }
    }
}

type Micro = unsafe fn(usize, *const f32, usize, *const f32, usize, *mut f32, usize, bool);

#[allow(clippy::too_many_arguments)]
unsafe fn micro_scalar_4x8(
    kc: usize,
    a: *const f32,
    a_ps: usize,
    b: *const f32,
    b_ps: usize,
    c: *mut f32,
    ldc: usize,
    acc: bool,
) {
    kernels::micro_scalar(4, 8, kc, a, a_ps, b, b_ps, c, ldc, acc)
}

/// The in-place row-major-A microkernel ([`kernels::micro_avx512_arows`]); None for scalar.
fn micro_rows_for(isa: Isa) -> Option<Micro> {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => Some(kernels::micro_avx512_arows),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => Some(kernels::micro_avx2_arows),
        _ => None,
    }
}

/// A smaller instance of the microkernel for an edge tile of `mv` rows and `nv` columns, as
/// (kernel, its rows, its columns), or None to use the full one. `a_rows`: A is read in place
/// row-major (full row panel; only the column count can shrink).
fn micro_edge_for(isa: Isa, mv: usize, nv: usize, a_rows: bool) -> Option<(Micro, usize, usize)> {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        use kernels::micro_avx512_rows as k;
        let one = nv <= 16;
        if a_rows {
            return one.then_some((kernels::micro_avx512_arows_nv::<1> as Micro, 12, 16));
        }
        let f: Micro = match (mv.div_ceil(4), one) {
            (1, true) => k::<4, 1>,
            (2, true) => k::<8, 1>,
            (_, true) => k::<12, 1>,
            (1, false) => k::<4, 2>,
            (2, false) => k::<8, 2>,
            _ => return None,
        };
        return Some((f, mv.div_ceil(4) * 4, if one { 16 } else { 32 }));
    }
    let _ = (isa, mv, nv, a_rows);
    None
}

/// Whether a B panel of `nv` valid columns can be read in place (the kernel that runs on it
/// reads exactly `nv` columns): full panels, and with AVX-512 one-vector panels.
fn b_inplace_cols(isa: Isa, nv: usize, nr: usize) -> bool {
    nv == nr || (isa == Isa::Avx512 && nv == 16)
}

fn micro_for(isa: Isa) -> Micro {
    assert!(isa.available(), "own sgemm: this CPU lacks {}", isa.name());
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => kernels::micro_avx512,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => kernels::micro_avx2,
        _ => micro_scalar_4x8,
    }
}

/// Knob `name` (a tuning aid) or `default`.
fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (A row-major read in place up to this many columns of C per thread, B stored (k×n) read in
/// place up to this many rows per thread); `GEMM_STUDY_A_DIRECT_MAX` / `GEMM_STUDY_B_DIRECT_MAX`
/// override (0 = always pack).
fn direct_max() -> (usize, usize) {
    static V: std::sync::OnceLock<(usize, usize)> = std::sync::OnceLock::new();
    *V.get_or_init(|| {
        (
            knob("GEMM_STUDY_A_DIRECT_MAX", usize::MAX),
            knob("GEMM_STUDY_B_DIRECT_MAX", 128),
        )
    })
}

/// Where B comes from.
#[derive(Clone, Copy)]
enum BSrc<'a> {
    Raw(View),
    Packed(&'a PackedB),
}

/// `C (m×n, row stride ldc) [+]= A B` with A (m×k) at `a[i*rsa + p*csa]` and B (k×n) at
/// `b[p*rsb + j*csb]`, on `threads` tasks of the current rayon pool.
///
/// # Safety
/// The addressed parts of A, B and C are valid, and C overlaps neither A nor B.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    rsa: usize,
    csa: usize,
    b: *const f32,
    rsb: usize,
    csb: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    threads: usize,
) {
    sgemm_blocked(
        isa,
        Blocking::for_isa(isa),
        m,
        n,
        k,
        a,
        rsa,
        csa,
        b,
        rsb,
        csb,
        c,
        ldc,
        accumulate,
        threads,
    )
}

/// As [`sgemm`] with an explicit blocking (tests use tiny blocks to exercise every loop edge).
///
/// # Safety
/// As [`sgemm`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm_blocked(
    isa: Isa,
    blk: Blocking,
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    rsa: usize,
    csa: usize,
    b: *const f32,
    rsb: usize,
    csb: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    threads: usize,
) {
    let (mr, nr) = isa.tile();
    let view = View {
        ptr: b,
        rs: rsb,
        cs: csb,
    };
    run(
        isa,
        blk.rounded(mr, nr),
        m,
        n,
        k,
        View {
            ptr: a,
            rs: rsa,
            cs: csa,
        },
        BSrc::Raw(view),
        c,
        ldc,
        accumulate,
        threads,
    )
}

/// As [`sgemm`] with B taken from `pb` (packed once, reused; its ISA and blocking are used).
///
/// # Safety
/// As [`sgemm`]; `pb` is (k×n).
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm_prepacked(
    m: usize,
    a: *const f32,
    rsa: usize,
    csa: usize,
    pb: &PackedB,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    threads: usize,
) {
    run(
        pb.isa,
        pb.blocking,
        m,
        pb.n,
        pb.k,
        View {
            ptr: a,
            rs: rsa,
            cs: csa,
        },
        BSrc::Packed(pb),
        c,
        ldc,
        accumulate,
        threads,
    )
}

#[allow(clippy::too_many_arguments)]
unsafe fn run(
    isa: Isa,
    blk: Blocking,
    m: usize,
    n: usize,
    k: usize,
    a: View,
    bsrc: BSrc<'_>,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    let c = Ptr(c);
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                std::slice::from_raw_parts_mut(c.0.add(i * ldc), n).fill(0.0);
            }
        }
        return;
    }
    let micro = micro_for(isa);
    let micro_rows = micro_rows_for(isa);
    let (mr, nr) = isa.tile();
    let (a_dmax, b_dmax) = direct_max();
    // One parallel region per call: the threads split the larger of M and N (whole panels) and
    // each packs what its part needs (the other operand's packing is repeated per thread, the
    // smaller one by this choice).
    let split_m = m >= n;
    let panels = if split_m {
        m.div_ceil(mr)
    } else {
        n.div_ceil(nr)
    };
    let threads = if m * n * k < (1 << 16) {
        1
    } else {
        threads.clamp(1, panels)
    };
    let per = panels.div_ceil(threads) * if split_m { mr } else { nr };
    par(threads, |t| {
        let (r0, r1, c0, c1) = if split_m {
            (t * per, ((t + 1) * per).min(m), 0, n)
        } else {
            (0, m, t * per, ((t + 1) * per).min(n))
        };
        if r0 >= r1 || c0 >= c1 {
            return;
        }
        // Read in place (full panels only; edge panels are packed, zero-padded):
        // A stored (k×m): each p's MR values are contiguous; A row-major: when this
        // thread's columns are few (micro_rows); B stored (k×n): when this thread's rows are few.
        // (A stored (k×m) in place: faster on every study shape with the AVX-512 kernel; with
        // the AVX2 one only up to ~256 rows per thread, packing wins above: single-thread
        // on-CPU timings, README.)
        let a_direct = a.rs == 1 && (isa == Isa::Avx512 || r1 - r0 <= 256);
        let a_rows = !a_direct && a.cs == 1 && c1 - c0 <= a_dmax && micro_rows.is_some();
        let b_direct = matches!(bsrc, BSrc::Raw(v) if v.cs == 1) && r1 - r0 <= b_dmax;
        let b_need = if matches!(bsrc, BSrc::Raw(_)) {
            blk.kc * blk.nc
        } else {
            0
        };
        with_scratch(&B_BUF, b_need, |bbuf| {
            with_scratch(&A_BUF, blk.mc * blk.kc, |abuf| {
                // Column blocks on the global NC grid (a PackedB's block layout), cut to [c0, c1).
                let mut jb = c0 / blk.nc * blk.nc;
                while jb < c1 {
                    let jci = jb / blk.nc;
                    let bn = blk.nc.min(n - jb); // columns of the full block
                    let j_lo = jb.max(c0);
                    let j_hi = (jb + bn).min(c1);
                    let q_lo = (j_lo - jb) / nr; // first panel of the block this thread uses
                    let q_n = (j_hi - j_lo).div_ceil(nr);
                    for (pci, pc) in (0..k).step_by(blk.kc).enumerate() {
                        let kc = blk.kc.min(k - pc);
                        let acc = accumulate || pc > 0;
                        // B panels for this block: (pointer, p-stride) per panel q (relative to q_lo).
                        let (bbase, packed_b): (*const f32, bool) = match bsrc {
                            BSrc::Packed(pb) => (pb.block(jci, pci).add(q_lo * kc * nr), true),
                            BSrc::Raw(bv) => {
                                for q in 0..q_n {
                                    let j0 = j_lo + q * nr;
                                    let nv = nr.min(j_hi - j0);
                                    if !(b_direct && b_inplace_cols(isa, nv, nr)) {
                                        pack_b_panel(bbuf.add(q * kc * nr), bv, pc, kc, j0, nv, nr);
                                    }
                                }
                                (bbuf, false)
                            }
                        };
                        for ic in (r0..r1).step_by(blk.mc) {
                            let mc = blk.mc.min(r1 - ic);
                            let pm = mc.div_ceil(mr);
                            for ir in 0..pm {
                                let i0 = ic + ir * mr;
                                let mv = mr.min(ic + mc - i0);
                                if !((a_direct || a_rows) && mv == mr) {
                                    pack_a_panel(abuf.add(ir * kc * mr), a, i0, mv, pc, kc, mr);
                                }
                            }
                            for ir in 0..pm {
                                let i0 = ic + ir * mr;
                                let mv = mr.min(ic + mc - i0);
                                let rows_here = a_rows && mv == mr;
                                let (ap, a_ps) = if a_direct && mv == mr {
                                    (a.ptr.add(pc * a.cs + i0), a.cs)
                                } else if rows_here {
                                    // micro_rows takes the row stride in the a_ps slot.
                                    (a.ptr.add(i0 * a.rs + pc), a.rs)
                                } else {
                                    (abuf.add(ir * kc * mr) as *const f32, mr)
                                };
                                let mk = match micro_rows {
                                    Some(f) if rows_here => f,
                                    _ => micro,
                                };
                                for q in 0..q_n {
                                    let j0 = j_lo + q * nr;
                                    let nv = nr.min(j_hi - j0);
                                    let (bp, b_ps) = match bsrc {
                                        BSrc::Raw(bv)
                                            if !packed_b
                                                && b_direct
                                                && b_inplace_cols(isa, nv, nr) =>
                                        {
                                            (bv.ptr.add(pc * bv.rs + j0), bv.rs)
                                        }
                                        _ => (bbase.add(q * kc * nr), nr),
                                    };
                                    let cp = c.get().add(i0 * ldc + j0);
                                    // The kernel for this tile and the (rows, columns) it writes.
                                    let (kf, kr, kcols) = if mv == mr && nv == nr {
                                        (mk, mr, nr)
                                    } else {
                                        micro_edge_for(isa, mv, nv, rows_here)
                                            .unwrap_or((mk, mr, nr))
                                    };
                                    if (mv, nv) == (kr, kcols) {
                                        kf(kc, ap, a_ps, bp, b_ps, cp, ldc, acc);
                                    } else {
                                        let mut tile = [0f32; 12 * 32];
                                        kf(kc, ap, a_ps, bp, b_ps, tile.as_mut_ptr(), nr, false);
                                        for ii in 0..mv {
                                            for jj in 0..nv {
                                                let d = cp.add(ii * ldc + jj);
                                                let v = tile[ii * nr + jj];
                                                *d = if acc { *d + v } else { v };
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    jb += blk.nc;
                }
            })
        })
    });
}
