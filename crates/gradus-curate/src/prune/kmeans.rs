//! Spherical k-means: k-means under cosine distance `1 − cos(x, c)`.
//!
//! Rows are L2-normalised first; centroids are kept at unit norm (the normalised mean of their
//! members), so the nearest centroid is the one with the largest dot product and one pass is one
//! GEMM (N × D)·(D × K). Init is k-means++ (Arthur & Vassilvitskii 2007) with the cosine distance
//! as D(x): the first centre uniform, each next one drawn with probability ∝ D(x)². Full-batch
//! (Lloyd) iterations run until no assignment changes or `max_iters`. With `batch_size`, Sculley's
//! mini-batch k-means (2010) is used instead: each step draws `batch_size` rows, and each centre
//! moves toward its drawn rows with step 1/(rows it has seen); a final full pass assigns every row.
//!
//! Deterministic: every random draw comes from the seeded [`Rng`], sums run in row order in f64,
//! ties go to the lower centroid index, and the parallel GEMM gives each dot product the same
//! summation order whatever the thread count.
//!
//! An empty cluster (possible after a Lloyd step) is reseeded with the row farthest from its
//! centroid, taken from a cluster with at least two rows.

use gradus_tensor::rng::Rng;
use gradus_tensor::{Error, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{check_matrix, dot_matrix, normalize_rows};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KMeansConfig {
    /// Number of clusters (SCIP uses 100); capped at the number of rows.
    pub k: usize,
    /// Most Lloyd iterations (or mini-batch steps).
    pub max_iters: usize,
    /// Mini-batch size; `None` = full-batch Lloyd iterations.
    pub batch_size: Option<usize>,
    pub seed: u64,
}

impl Default for KMeansConfig {
    fn default() -> Self {
        Self {
            k: 100,
            max_iters: 50,
            batch_size: None,
            seed: 0,
        }
    }
}

/// A clustering of N rows into K clusters.
#[derive(Clone, Debug)]
pub struct KMeans {
    pub k: usize,
    pub d: usize,
    /// Unit-norm centroids, (K, D).
    pub centroids: Vec<f32>,
    /// Cluster of each row, (N).
    pub assign: Vec<usize>,
    /// Cosine distance of each row to its centroid, 1 − cos, (N).
    pub distance: Vec<f32>,
    /// Rows per cluster, (K).
    pub sizes: Vec<usize>,
    /// Iterations (or mini-batch steps) run.
    pub iters: usize,
}

impl KMeans {
    /// Members of each cluster, in row order.
    pub fn members(&self) -> Vec<Vec<usize>> {
        let mut m = vec![Vec::new(); self.k];
        for (i, &c) in self.assign.iter().enumerate() {
            m[c].push(i);
        }
        m
    }
}

/// Nearest centroid of each row (largest dot product, lower index on ties) and its cosine.
fn assign_all(xn: &[f32], cents: &[f32], d: usize) -> (Vec<usize>, Vec<f32>) {
    let k = cents.len() / d;
    let dots = dot_matrix(xn, cents, d);
    dots.par_chunks(k)
        .map(|row| {
            let mut best = 0;
            for j in 1..k {
                if row[j] > row[best] {
                    best = j;
                }
            }
            (best, row[best])
        })
        .unzip()
}

fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x = (*x as f64 / n) as f32);
    }
}

/// k-means++ seeding on unit rows.
fn init_pp(xn: &[f32], n: usize, d: usize, k: usize, rng: &mut Rng) -> Vec<f32> {
    let mut cents = Vec::with_capacity(k * d);
    let first = rng.below(n);
    cents.extend_from_slice(&xn[first * d..(first + 1) * d]);
    // D(x) = 1 − max_c cos(x, c), kept up to date as centres are added.
    let mut dist: Vec<f64> = vec![f64::INFINITY; n];
    for c in 0..k {
        if c > 0 {
            let total: f64 = dist.iter().map(|x| x * x).sum();
            let pick = if total <= 0.0 {
                rng.below(n) // every row sits on a centre already: any row will do
            } else {
                let mut r = rng.uniform() * total;
                let mut pick = n - 1;
                for (i, x) in dist.iter().enumerate() {
                    r -= x * x;
                    if r < 0.0 {
                        pick = i;
                        break;
                    }
                }
                pick
            };
            cents.extend_from_slice(&xn[pick * d..(pick + 1) * d]);
        }
        let cen = &cents[c * d..(c + 1) * d];
        dist.par_iter_mut().enumerate().for_each(|(i, dm)| {
            let dot: f32 = xn[i * d..(i + 1) * d]
                .iter()
                .zip(cen)
                .map(|(a, b)| a * b)
                .sum();
            let di = (1.0 - dot as f64).max(0.0);
            if di < *dm {
                *dm = di;
            }
        });
    }
    cents
}

/// Clusters the rows of `x` (N × D).
pub fn kmeans(x: &[f32], d: usize, cfg: &KMeansConfig) -> Result<KMeans> {
    let n = check_matrix(x, d)?;
    if n == 0 {
        return Err(Error::msg("k-means: no rows"));
    }
    if cfg.k == 0 {
        return Err(Error::config("k", "must be positive"));
    }
    if cfg.batch_size == Some(0) {
        return Err(Error::config("batch_size", "must be positive"));
    }
    let k = cfg.k.min(n);
    let xn = normalize_rows(x, d);
    let mut rng = Rng::derive(cfg.seed, "kmeans");
    let mut cents = init_pp(&xn, n, d, k, &mut rng);
    let mut iters = 0;
    let (mut assign, mut cos);
    match cfg.batch_size {
        None => {
            (assign, cos) = assign_all(&xn, &cents, d);
            while iters < cfg.max_iters {
                iters += 1;
                // Update: normalised mean of members (f64 sums in row order).
                let mut sums = vec![0.0f64; k * d];
                let mut counts = vec![0usize; k];
                for i in 0..n {
                    let c = assign[i];
                    counts[c] += 1;
                    for (s, v) in sums[c * d..(c + 1) * d]
                        .iter_mut()
                        .zip(&xn[i * d..(i + 1) * d])
                    {
                        *s += *v as f64;
                    }
                }
                for c in 0..k {
                    if counts[c] == 0 {
                        // Reseed: the farthest row among clusters that can spare one.
                        let far = (0..n)
                            .filter(|&i| counts[assign[i]] > 1)
                            .min_by(|&a, &b| cos[a].total_cmp(&cos[b]).then(a.cmp(&b)));
                        if let Some(i) = far {
                            counts[assign[i]] -= 1;
                            assign[i] = c;
                            counts[c] = 1;
                            cos[i] = 1.0;
                            cents[c * d..(c + 1) * d].copy_from_slice(&xn[i * d..(i + 1) * d]);
                        }
                        continue;
                    }
                    let cen = &mut cents[c * d..(c + 1) * d];
                    for (o, s) in cen.iter_mut().zip(&sums[c * d..(c + 1) * d]) {
                        *o = *s as f32;
                    }
                    normalize(cen);
                }
                let (na, nc) = assign_all(&xn, &cents, d);
                let changed = na.iter().zip(&assign).filter(|(a, b)| a != b).count();
                assign = na;
                cos = nc;
                if changed == 0 {
                    break;
                }
            }
        }
        Some(b) => {
            let mut seen = vec![0usize; k];
            for _ in 0..cfg.max_iters {
                iters += 1;
                let batch: Vec<usize> = (0..b.min(n)).map(|_| rng.below(n)).collect();
                let rows: Vec<f32> = batch
                    .iter()
                    .flat_map(|&i| xn[i * d..(i + 1) * d].iter().copied())
                    .collect();
                let (ba, _) = assign_all(&rows, &cents, d);
                for (j, &c) in ba.iter().enumerate() {
                    seen[c] += 1;
                    let eta = 1.0 / seen[c] as f32;
                    let cen = &mut cents[c * d..(c + 1) * d];
                    for (o, v) in cen.iter_mut().zip(&rows[j * d..(j + 1) * d]) {
                        *o = (1.0 - eta) * *o + eta * *v;
                    }
                }
                for c in 0..k {
                    normalize(&mut cents[c * d..(c + 1) * d]);
                }
            }
            (assign, cos) = assign_all(&xn, &cents, d);
        }
    }
    let mut sizes = vec![0usize; k];
    for &c in &assign {
        sizes[c] += 1;
    }
    let distance = cos.iter().map(|c| (1.0 - c).max(0.0)).collect();
    Ok(KMeans {
        k,
        d,
        centroids: cents,
        assign,
        distance,
        sizes,
        iters,
    })
}

/// Nearest centroid of each row of `x` (N × D) under `km`, and the cosine distance to it: places
/// new rows (e.g. a corrupted version of a row) in an existing clustering.
pub fn assign_to(km: &KMeans, x: &[f32]) -> Result<(Vec<usize>, Vec<f32>)> {
    check_matrix(x, km.d)?;
    let xn = normalize_rows(x, km.d);
    let (a, c) = assign_all(&xn, &km.centroids, km.d);
    Ok((a, c.iter().map(|c| (1.0 - c).max(0.0)).collect()))
}
