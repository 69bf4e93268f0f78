//! SCIP, Algorithm 1 (Yang, Singh et al., arXiv 2312.02418; RESEARCH.md §3.1).
//!
//! Total prune fraction p, split α: rank all rows by the size of their cluster, ascending, and
//! remove the first round(α·p·N); rank the remaining rows by their distance to their centroid,
//! descending, and remove the next round(p·N) − round(α·p·N). Paper setting p = 0.2, α = 0.8.
//!
//! Ties in step 1 (rows of equal-sized clusters, and the rows of one cluster) are broken by
//! larger distance first, then by lower cluster id, then by row: so a cluster cut in half by the
//! budget loses its outlying rows first. Ties in step 2 go to the lower row.

use gradus_tensor::Result;

use super::kmeans::KMeans;
use super::{check_fraction, count_for, Reason, Removal};

/// Rows to remove, in removal order (step 1 then step 2).
pub fn scip(km: &KMeans, p: f64, alpha: f64) -> Result<Vec<Removal>> {
    check_fraction("fraction", p)?;
    check_fraction("alpha", alpha)?;
    let n = km.assign.len();
    let total = count_for(p, n);
    let n_small = count_for(alpha * p, n).min(total);
    let mut by_size: Vec<usize> = (0..n).collect();
    by_size.sort_by(|&a, &b| {
        let (ca, cb) = (km.assign[a], km.assign[b]);
        km.sizes[ca]
            .cmp(&km.sizes[cb])
            .then(ca.cmp(&cb))
            .then(km.distance[b].total_cmp(&km.distance[a]))
            .then(a.cmp(&b))
    });
    let mut out: Vec<Removal> = by_size[..n_small]
        .iter()
        .map(|&row| {
            let cluster = km.assign[row];
            Removal {
                row,
                reason: Reason::SmallCluster {
                    cluster,
                    cluster_size: km.sizes[cluster],
                },
            }
        })
        .collect();
    let mut rest: Vec<usize> = by_size[n_small..].to_vec();
    rest.sort_by(|&a, &b| km.distance[b].total_cmp(&km.distance[a]).then(a.cmp(&b)));
    out.extend(rest[..total - n_small].iter().map(|&row| Removal {
        row,
        reason: Reason::FarFromCentroid {
            cluster: km.assign[row],
            distance: km.distance[row],
        },
    }));
    Ok(out)
}
