//! SemDeDup (Abbas et al., arXiv 2303.09540): semantic near-duplicates within each k-means cluster.
//!
//! In each cluster the rows are ordered by distance to the centroid, descending (the paper's
//! default keeps the least prototypical row of a duplicate group), ties by row. Row j's score is
//! its largest cosine to any row before it in that order, m_j = max_{i<j} cos(x_i, x_j) (the upper
//! triangle of the cluster's similarity matrix, as in the reference code: earlier rows count
//! whether or not they are removed themselves). A row is a duplicate when m_j > threshold
//! (the paper's 1 − ε). The first row of each cluster has no score and is always kept.
//!
//! With a target fraction instead of a threshold, the rows with the largest scores are removed
//! (equivalent to choosing the threshold at that quantile), ties by row.

use gradus_tensor::{Error, Result};
use rayon::prelude::*;

use super::kmeans::KMeans;
use super::{check_fraction, count_for, dot_matrix, normalize_rows, Reason, Removal};

/// A row's duplicate score: the cosine `cosine` to the earlier row `of` of cluster `cluster`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DupScore {
    pub row: usize,
    pub cluster: usize,
    pub of: usize,
    pub cosine: f32,
}

/// Scores of every row that has an earlier row in its cluster (cluster order, then the order above).
pub fn scores(x: &[f32], d: usize, km: &KMeans) -> Vec<DupScore> {
    let members = km.members();
    let per: Vec<Vec<DupScore>> = members
        .par_iter()
        .enumerate()
        .map(|(c, rows)| {
            let mut order = rows.clone();
            order.sort_by(|&a, &b| km.distance[b].total_cmp(&km.distance[a]).then(a.cmp(&b)));
            let sub: Vec<f32> = order
                .iter()
                .flat_map(|&i| x[i * d..(i + 1) * d].iter().copied())
                .collect();
            let sub = normalize_rows(&sub, d);
            let m = order.len();
            let sim = dot_matrix(&sub, &sub, d);
            (1..m)
                .map(|j| {
                    let mut best = 0;
                    for i in 1..j {
                        if sim[i * m + j] > sim[best * m + j] {
                            best = i;
                        }
                    }
                    DupScore {
                        row: order[j],
                        cluster: c,
                        of: order[best],
                        cosine: sim[best * m + j],
                    }
                })
                .collect()
        })
        .collect();
    per.into_iter().flatten().collect()
}

fn removal(s: &DupScore) -> Removal {
    Removal {
        row: s.row,
        reason: Reason::NearDuplicate {
            cluster: s.cluster,
            duplicate_of: s.of,
            cosine: s.cosine,
        },
    }
}

/// Rows whose duplicate score exceeds `threshold` (a cosine in [-1, 1]), in row order.
pub fn semdedup_threshold(
    x: &[f32],
    d: usize,
    km: &KMeans,
    threshold: f32,
) -> Result<Vec<Removal>> {
    if !(-1.0..=1.0).contains(&threshold) {
        return Err(Error::config(
            "threshold",
            format!("{threshold} is not a cosine in [-1, 1]"),
        ));
    }
    let mut out: Vec<Removal> = scores(x, d, km)
        .iter()
        .filter(|s| s.cosine > threshold)
        .map(removal)
        .collect();
    out.sort_by_key(|r| r.row);
    Ok(out)
}

/// The round(p·N) rows with the largest duplicate scores, largest first.
pub fn semdedup_fraction(x: &[f32], d: usize, km: &KMeans, p: f64) -> Result<Vec<Removal>> {
    check_fraction("fraction", p)?;
    let mut s = scores(x, d, km);
    s.sort_by(|a, b| b.cosine.total_cmp(&a.cosine).then(a.row.cmp(&b.row)));
    let want = count_for(p, km.assign.len());
    if want > s.len() {
        return Err(Error::config(
            "fraction",
            format!("SemDeDup can remove at most {} rows (one per cluster is always kept), {want} asked", s.len()),
        ));
    }
    Ok(s[..want].iter().map(removal).collect())
}
