//! k-means, SCIP, SemDeDup, D4 and random pruning on hand-built embeddings whose answers can be
//! derived by hand (derivations in the comments).

use gradus_curate::prune::d4::d4;
use gradus_curate::prune::kmeans::{kmeans, KMeans, KMeansConfig};
use gradus_curate::prune::scip::scip;
use gradus_curate::prune::semdedup::{semdedup_fraction, semdedup_threshold};
use gradus_curate::prune::store::{read_embeddings, write_embeddings, write_npy, Embeddings};
use gradus_curate::prune::{random, Reason};

/// Three well-separated groups in 3-D (rows, in order):
/// - A, rows 0..10: nine copies of e1 = (1, 0, 0), then row 9 = (1, 0.3, 0) (16.7° off e1);
/// - B, rows 10..15: four copies of e2, then row 14 = (0, 1, 0.2) (11.3° off e2);
/// - C, rows 15..17: e3 and row 16 = (0.15, 0, 1) (8.5° off e3).
///
/// Groups are 90° apart, so cosine k-means with k = 3 finds exactly A, B, C. Each centroid is the
/// normalised mean of its unit rows, so it lies between the copies and the odd row, much nearer the
/// copies: the odd rows 9 and 14 are the farthest of their groups, and row 9 (16.7° · 9/10 ≈ 15°
/// from A's centroid) and row 14 (11.3° · 4/5 ≈ 9°) are the two farthest rows overall. C's two
/// rows are both 4.3° from their centroid (it bisects them: a tie, so tests treat them as a set).
/// B's copies of e2 are the rows nearest any centroid (11.3°/5 ≈ 2.3°) once A's copies are gone.
fn groups() -> (Vec<f32>, usize) {
    let mut x = Vec::new();
    for _ in 0..9 {
        x.extend([1.0, 0.0, 0.0]);
    }
    x.extend([1.0, 0.3, 0.0]);
    for _ in 0..4 {
        x.extend([0.0, 1.0, 0.0]);
    }
    x.extend([0.0, 1.0, 0.2]);
    x.extend([0.0, 0.0, 1.0]);
    x.extend([0.15, 0.0, 1.0]);
    (x, 3)
}

fn sorted(x: &[usize]) -> Vec<usize> {
    let mut v = x.to_vec();
    v.sort();
    v
}

fn cluster_of(km: &KMeans, rows: std::ops::Range<usize>) -> usize {
    let c = km.assign[rows.start];
    for r in rows {
        assert_eq!(km.assign[r], c, "row {r}");
    }
    c
}

fn check_groups(km: &KMeans) {
    let (a, b, c) = (
        cluster_of(km, 0..10),
        cluster_of(km, 10..15),
        cluster_of(km, 15..17),
    );
    assert!(a != b && b != c && a != c);
    assert_eq!((km.sizes[a], km.sizes[b], km.sizes[c]), (10, 5, 2));
    // A's centroid is within a few degrees of e1: cos > 0.99.
    assert!(km.centroids[a * 3] > 0.99);
    // Row 9 is farther from A's centroid than the copies of e1.
    assert!(km.distance[9] > km.distance[0]);
}

#[test]
fn kmeans_finds_separated_groups_for_any_seed_full_and_minibatch() {
    let (x, d) = groups();
    for seed in 0..5 {
        let km = kmeans(
            &x,
            d,
            &KMeansConfig {
                k: 3,
                max_iters: 20,
                batch_size: None,
                seed,
            },
        )
        .unwrap();
        check_groups(&km);
        let mb = kmeans(
            &x,
            d,
            &KMeansConfig {
                k: 3,
                max_iters: 30,
                batch_size: Some(8),
                seed,
            },
        )
        .unwrap();
        check_groups(&mb);
    }
    // Same seed, same result (bitwise).
    let c = KMeansConfig {
        k: 3,
        max_iters: 20,
        batch_size: None,
        seed: 7,
    };
    let (k1, k2) = (kmeans(&x, d, &c).unwrap(), kmeans(&x, d, &c).unwrap());
    assert_eq!(k1.assign, k2.assign);
    assert_eq!(k1.centroids, k2.centroids);
    // Cosine distance ignores scale: doubling every row changes nothing.
    let x2: Vec<f32> = x.iter().map(|v| v * 2.0).collect();
    assert_eq!(kmeans(&x2, d, &c).unwrap().assign, k1.assign);
}

#[test]
fn kmeans_caps_k_and_rejects_bad_input() {
    let (x, d) = groups();
    let km = kmeans(
        &x,
        d,
        &KMeansConfig {
            k: 50,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(km.k, 17);
    assert!(kmeans(&x[..5], d, &KMeansConfig::default())
        .unwrap_err()
        .to_string()
        .contains("width 3"));
    let mut bad = x.clone();
    bad[4] = f32::NAN;
    assert!(kmeans(&bad, d, &KMeansConfig::default())
        .unwrap_err()
        .to_string()
        .contains("row 1"));
}

#[test]
fn scip_prunes_smallest_cluster_then_farthest_rows() {
    let (x, d) = groups();
    let km = kmeans(
        &x,
        d,
        &KMeansConfig {
            k: 3,
            max_iters: 20,
            batch_size: None,
            seed: 0,
        },
    )
    .unwrap();
    // N = 17, p = 4/17 → 4 rows; α = 0.5 → round(2.0) = 2 by cluster size: the smallest cluster is
    // C (2 rows: 15, 16); the other 2 by distance: rows 9 and 14 (see `groups`).
    let rm = scip(&km, 4.0 / 17.0, 0.5).unwrap();
    let rows: Vec<usize> = rm.iter().map(|r| r.row).collect();
    assert_eq!(sorted(&rows[..2]), vec![15, 16]);
    assert_eq!(&rows[2..], &[9, 14]);
    assert!(matches!(
        rm[0].reason,
        Reason::SmallCluster {
            cluster_size: 2,
            ..
        }
    ));
    assert!(matches!(rm[2].reason, Reason::FarFromCentroid { .. }));
    // α = 1: all 4 by cluster size: C (2), then the 2 farthest rows of B (next smallest, 5 rows).
    let rows: Vec<usize> = scip(&km, 4.0 / 17.0, 1.0)
        .unwrap()
        .iter()
        .map(|r| r.row)
        .collect();
    assert_eq!(sorted(&rows[..2]), vec![15, 16]);
    assert_eq!(rows[2], 14);
    assert!((10..14).contains(&rows[3]));
    // α = 0: purely by distance; p = 0 removes nothing.
    let rows: Vec<usize> = scip(&km, 2.0 / 17.0, 0.0)
        .unwrap()
        .iter()
        .map(|r| r.row)
        .collect();
    assert_eq!(rows, vec![9, 14]);
    assert!(scip(&km, 0.0, 0.8).unwrap().is_empty());
    assert!(scip(&km, 1.5, 0.8).is_err());
}

#[test]
fn semdedup_removes_exact_duplicates_and_keeps_one_per_group() {
    let (x, d) = groups();
    let km = kmeans(
        &x,
        d,
        &KMeansConfig {
            k: 3,
            max_iters: 20,
            batch_size: None,
            seed: 0,
        },
    )
    .unwrap();
    // Within a cluster rows are ordered by distance descending, then row: A = [9, 0, 1, ..., 8],
    // B = [14, 10, 11, 12, 13]. Scores (max cosine to an earlier row): rows 1..8 and 11..13 score
    // 1 (copies of row 0 / row 10); row 0 scores cos(16.7°) = 0.958, row 10 cos(11.3°) = 0.981,
    // C's second row cos(8.5°) = 1/sqrt(1.0225) = 0.9889. Threshold 0.999 removes the 11 copies.
    let rm = semdedup_threshold(&x, d, &km, 0.999).unwrap();
    let rows: Vec<usize> = rm.iter().map(|r| r.row).collect();
    assert_eq!(rows, vec![1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 13]);
    for r in &rm {
        match r.reason {
            Reason::NearDuplicate {
                duplicate_of,
                cosine,
                ..
            } => {
                assert!(duplicate_of == 0 || duplicate_of == 10, "{duplicate_of}");
                assert!(cosine > 0.999);
            }
            ref other => panic!("{other:?}"),
        }
    }
    // Threshold 0.985 also catches C's pair (0.9889), not row 10 (0.981).
    assert_eq!(semdedup_threshold(&x, d, &km, 0.985).unwrap().len(), 12);
    // By fraction: the 11 copies score 1; asking for 12 rows adds C's scored row next (0.9889).
    let rm = semdedup_fraction(&x, d, &km, 12.0 / 17.0).unwrap();
    assert!([15, 16].contains(&rm.last().unwrap().row));
    // At most N − K rows can go.
    assert!(semdedup_fraction(&x, d, &km, 15.0 / 17.0).is_err());
}

#[test]
fn d4_dedups_first_then_prunes_prototypes() {
    let (x, d) = groups();
    let cfg = KMeansConfig {
        k: 3,
        max_iters: 20,
        batch_size: None,
        seed: 0,
    };
    let km = kmeans(&x, d, &cfg).unwrap();
    // p = 10/17 → 10 rows; dedup share 0.8 → 8 by SemDeDup: the 11 rows scoring 1, ties by row →
    // rows 1..8. The 9 left re-cluster into A' = {0, 9} (each 8.4° from its centroid),
    // B = {10..14} (copies 2.3°), C (4.3°): the 2 most prototypical rows are copies of e2.
    let rm = d4(&x, d, &km, &cfg, 10.0 / 17.0, 0.8).unwrap();
    assert_eq!(rm.len(), 10);
    let dedup = rm
        .iter()
        .filter(|r| matches!(r.reason, Reason::NearDuplicate { .. }))
        .count();
    assert_eq!(dedup, 8);
    let rows: Vec<usize> = rm.iter().map(|r| r.row).collect();
    assert_eq!(&rows[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert!(rows[8..].iter().all(|r| (10..14).contains(r)), "{rows:?}");
    assert!(matches!(rm[9].reason, Reason::Prototypical { .. }));
    let mut rows: Vec<usize> = rm.iter().map(|r| r.row).collect();
    rows.sort();
    rows.dedup();
    assert_eq!(rows.len(), 10, "no row removed twice");
}

#[test]
fn random_pruning_is_seeded_and_exact_in_count() {
    let a = random(100, 0.2, 1).unwrap();
    assert_eq!(a.len(), 20);
    assert_eq!(a, random(100, 0.2, 1).unwrap());
    assert_ne!(a, random(100, 0.2, 2).unwrap());
    assert!(a.windows(2).all(|w| w[0].row < w[1].row));
}

#[test]
fn embeddings_file_round_trips_and_npy_header_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let e = Embeddings {
        dim: 3,
        values: vec![1.0, 2.0, 3.0, -4.0, 5.5, 6.25],
        row_ids: vec![7, 9],
        metadata: [("model".to_string(), "tiny".to_string())].into(),
    };
    let p = dir.path().join("e.safetensors");
    write_embeddings(&p, &e).unwrap();
    let back = read_embeddings(&p).unwrap();
    assert_eq!(back.values, e.values);
    assert_eq!(back.row_ids, e.row_ids);
    assert_eq!(back.metadata["model"], "tiny");
    let np = dir.path().join("e.npy");
    write_npy(&np, &e.values, 2, 3).unwrap();
    let b = std::fs::read(&np).unwrap();
    assert_eq!(&b[..8], b"\x93NUMPY\x01\x00");
    let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
    assert_eq!((10 + hl) % 64, 0);
    assert!(std::str::from_utf8(&b[10..10 + hl])
        .unwrap()
        .contains("'shape': (2, 3)"));
    assert_eq!(b.len(), 10 + hl + 6 * 4);
    assert!(read_embeddings(&np).is_err());
}
