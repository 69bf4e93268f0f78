//! D4 (Tirumala et al., arXiv 2308.12284): SemDeDup, then re-cluster what is left and prune the
//! most prototypical rows (SSL-prototypes, Sorscher et al. 2022: the rows closest to their
//! centroid are the "easy", redundant ones).
//!
//! With total fraction p and `dedup_share` s: first SemDeDup removes round(s·p·N) rows (largest
//! duplicate scores, see [`super::semdedup`]); the rest is clustered again with the same k-means
//! settings; then the round(p·N) − that rows with the smallest distance to their new centroid are
//! removed (ties by row).

use gradus_tensor::Result;

use super::kmeans::{kmeans, KMeans, KMeansConfig};
use super::semdedup::semdedup_fraction;
use super::{check_fraction, count_for, Reason, Removal};

pub fn d4(
    x: &[f32],
    d: usize,
    km: &KMeans,
    cfg: &KMeansConfig,
    p: f64,
    dedup_share: f64,
) -> Result<Vec<Removal>> {
    check_fraction("fraction", p)?;
    check_fraction("dedup_share", dedup_share)?;
    let n = km.assign.len();
    let total = count_for(p, n);
    let n_dedup = count_for(dedup_share * p, n).min(total);
    let mut out = semdedup_fraction(x, d, km, n_dedup as f64 / n.max(1) as f64)?;
    let mut removed = vec![false; n];
    for r in &out {
        removed[r.row] = true;
    }
    let left: Vec<usize> = (0..n).filter(|&i| !removed[i]).collect();
    let need = total - out.len();
    if need == 0 || left.is_empty() {
        return Ok(out);
    }
    let sub: Vec<f32> = left
        .iter()
        .flat_map(|&i| x[i * d..(i + 1) * d].iter().copied())
        .collect();
    let km2 = kmeans(
        &sub,
        d,
        &KMeansConfig {
            seed: cfg.seed.wrapping_add(1),
            ..cfg.clone()
        },
    )?;
    let mut order: Vec<usize> = (0..left.len()).collect();
    order.sort_by(|&a, &b| km2.distance[a].total_cmp(&km2.distance[b]).then(a.cmp(&b)));
    out.extend(order[..need.min(order.len())].iter().map(|&j| Removal {
        row: left[j],
        reason: Reason::Prototypical {
            cluster: km2.assign[j],
            distance: km2.distance[j],
        },
    }));
    Ok(out)
}
