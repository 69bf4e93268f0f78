//! Embedding-space pruning of a corpus (RESEARCH.md §3.1): cosine k-means, then SCIP, SemDeDup, D4
//! and random pruning. Everything works on plain row-major `&[f32]` matrices (N × D, one embedding
//! per row) and returns the rows to remove, each with the reason, so the CLI can write a
//! `removed.jsonl` a person can audit.
//!
//! - [`kmeans`]: spherical k-means (cosine distance `1 − cos`), k-means++ init, optional mini-batch
//!   updates, seeded, rayon-parallel assignment (one GEMM per pass).
//! - [`scip`]: SCIP, Algorithm 1 — α·p·N rows from the smallest clusters, the rest by largest
//!   distance to their centroid.
//! - [`semdedup`]: SemDeDup — within each cluster, rows whose cosine to an earlier row is high.
//! - [`d4`]: D4 — SemDeDup, re-cluster the rest, then prune the most prototypical rows.
//! - [`store`]: the embeddings file (safetensors `embeddings` f32 (N, D) + `row_ids` i64 (N); `.npy`).

pub mod d4;
pub mod kmeans;
pub mod scip;
pub mod semdedup;
pub mod store;

use gradus_tensor::rng::Rng;
use gradus_tensor::{Error, Result};
use serde::{Deserialize, Serialize};

/// Why a row was removed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    /// SCIP step 1: the row's cluster is among the smallest.
    SmallCluster { cluster: usize, cluster_size: usize },
    /// SCIP step 2: far from its centroid (`distance` = 1 − cos).
    FarFromCentroid { cluster: usize, distance: f32 },
    /// SemDeDup: cosine `cosine` to row `duplicate_of` (kept or removed itself) of the same cluster.
    NearDuplicate {
        cluster: usize,
        duplicate_of: usize,
        cosine: f32,
    },
    /// D4 prototype step: among the rows closest to their (re-clustered) centroid.
    Prototypical { cluster: usize, distance: f32 },
    /// Random pruning.
    Random,
}

/// One removed row (its index in the input, 0-based) and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Removal {
    pub row: usize,
    #[serde(flatten)]
    pub reason: Reason,
}

/// Number of rows a fraction `p` of `n` stands for (rounded to nearest).
pub fn count_for(p: f64, n: usize) -> usize {
    ((p * n as f64).round() as usize).min(n)
}

/// Error unless `p` is a fraction in [0, 1].
pub fn check_fraction(name: &str, p: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&p) {
        return Err(Error::config(
            name,
            format!("{p} is not a fraction in [0, 1]"),
        ));
    }
    Ok(())
}

/// Checks a matrix: `x.len() == n·d`, d > 0, finite values.
pub fn check_matrix(x: &[f32], d: usize) -> Result<usize> {
    if d == 0 || !x.len().is_multiple_of(d) {
        return Err(Error::msg(format!(
            "embeddings: {} values do not form rows of width {d}",
            x.len()
        )));
    }
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(Error::msg(format!(
            "embeddings: row {} holds a non-finite value",
            i / d
        )));
    }
    Ok(x.len() / d)
}

/// Random pruning: `count_for(p, n)` rows drawn uniformly without replacement (seeded).
pub fn random(n: usize, p: f64, seed: u64) -> Result<Vec<Removal>> {
    check_fraction("fraction", p)?;
    let mut idx: Vec<usize> = (0..n).collect();
    Rng::derive(seed, "prune/random").shuffle(&mut idx);
    let mut out: Vec<Removal> = idx[..count_for(p, n)]
        .iter()
        .map(|&row| Removal {
            row,
            reason: Reason::Random,
        })
        .collect();
    out.sort_by_key(|r| r.row);
    Ok(out)
}

/// L2-normalised copy of the rows of `x` (zero rows stay zero).
pub fn normalize_rows(x: &[f32], d: usize) -> Vec<f32> {
    let mut out = x.to_vec();
    for row in out.chunks_exact_mut(d) {
        let n = row
            .iter()
            .map(|v| (*v as f64) * (*v as f64))
            .sum::<f64>()
            .sqrt();
        if n > 0.0 {
            row.iter_mut().for_each(|v| *v = (*v as f64 / n) as f32);
        }
    }
    out
}

/// `a (m×d) · bᵀ (d×n)` → (m×n), row-major, rayon-parallel GEMM.
pub(crate) fn dot_matrix(a: &[f32], b: &[f32], d: usize) -> Vec<f32> {
    let m = a.len() / d;
    let n = b.len() / d;
    let mut out = vec![0.0f32; m * n];
    if m == 0 || n == 0 {
        return out;
    }
    // SAFETY: a is (m × d), b is (n × d) row-major (bᵀ read with column stride d), out (m × n).
    unsafe {
        gemm::gemm(
            m,
            n,
            d,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            d as isize,
            b.as_ptr(),
            d as isize,
            1,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        );
    }
    out
}
