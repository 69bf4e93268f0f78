//! The corruption probe's movement statistics (RESEARCH.md §3.1, SCIP): how replacing a row by its
//! corrupted version moves it within one clustering of the mixed corpus.
//!
//! For each corrupted row `i` (its corrupted embedding is row `i` of the clustering) and its clean
//! version (placed in the same clustering by nearest centroid), the probe compares the size of the
//! cluster each sits in and its cosine distance to that centroid. Counts are per corruption kind,
//! per class ("all syntax" / "all content") and over all corrupted rows.

use std::collections::BTreeMap;

use crate::corrupt::{Class, Corruption};
use crate::prune::kmeans::KMeans;

/// One corrupted row, paired with its clean version.
#[derive(Clone, Debug)]
pub struct Paired<'a> {
    /// Row index in the clustering (the corrupted embedding).
    pub row: usize,
    /// Cluster the clean version is nearest to.
    pub clean_cluster: usize,
    /// Cosine distance of the clean version to that centroid.
    pub clean_distance: f32,
    /// Cosine similarity between the clean and the corrupted embedding.
    pub cos_to_clean: f64,
    pub corruption: &'a Corruption,
}

/// Movement of a group of corrupted rows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Movement {
    pub rows: usize,
    /// Corrupted rows whose cluster differs from their clean version's.
    pub other_cluster: usize,
    /// Corrupted rows in a smaller cluster than their clean version.
    pub smaller_cluster: usize,
    /// Corrupted rows farther from their centroid than their clean version.
    pub farther: usize,
    /// Per row: cluster size (corrupted) − cluster size (clean).
    pub delta_size: Vec<f64>,
    /// Per row: distance (corrupted) − distance (clean).
    pub delta_distance: Vec<f64>,
    pub cos_to_clean: Vec<f64>,
}

/// Groups: each corruption kind's name, `"all syntax"` / `"all content"`, and `"all"`.
pub fn movement(km: &KMeans, rows: &[Paired]) -> BTreeMap<String, Movement> {
    let mut out: BTreeMap<String, Movement> = BTreeMap::new();
    for p in rows {
        let s0 = km.sizes[p.clean_cluster] as f64;
        let s1 = km.sizes[km.assign[p.row]] as f64;
        let d0 = p.clean_distance as f64;
        let d1 = km.distance[p.row] as f64;
        let class = if p.corruption.class == Class::Syntax {
            "all syntax"
        } else {
            "all content"
        };
        for key in [
            p.corruption.kind.name(),
            class.to_string(),
            "all".to_string(),
        ] {
            let m = out.entry(key).or_default();
            m.rows += 1;
            m.other_cluster += (km.assign[p.row] != p.clean_cluster) as usize;
            m.smaller_cluster += (s1 < s0) as usize;
            m.farther += (d1 > d0) as usize;
            m.delta_size.push(s1 - s0);
            m.delta_distance.push(d1 - d0);
            m.cos_to_clean.push(p.cos_to_clean);
        }
    }
    out
}

/// The mean of `xs`, NaN when empty (a statistic of no rows does not exist).
pub fn mean(xs: impl IntoIterator<Item = f64>) -> f64 {
    gradus_tensor::num::mean(xs).unwrap_or(f64::NAN)
}
