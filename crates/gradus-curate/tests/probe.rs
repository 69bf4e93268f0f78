//! The corruption probe's movement counts on a hand-built geometry (unit vectors in 2-D, cosine
//! k-means with k = 2), where every count is derived by hand below.

use gradus_curate::corrupt::{Class, Corruption, Kind};
use gradus_curate::probe::{mean, movement, Paired};
use gradus_curate::prune::kmeans::{assign_to, kmeans, KMeansConfig};

fn at(deg: f64) -> [f32; 2] {
    let r = deg.to_radians();
    [r.cos() as f32, r.sin() as f32]
}

fn corruption(kind: Kind) -> Corruption {
    Corruption {
        kind,
        class: kind.class(),
        line: 1,
        col: 0,
        before: String::new(),
        after: String::new(),
    }
}

/// Mixed corpus (corrupted rows replace their clean versions), angles in degrees:
///   rows 0, 1 at 0°, 4°                         → cluster A (centroid ≈ 2°)
///   rows 3, 4, 5 at 90°, 94°, 86°; row 2 at 88° (corrupted; clean −4°); row 6 at 100° (corrupted;
///   clean 92°)                                  → cluster B (centroid ≈ 91.6°), size 5
/// Row 2 (drop_colon, syntax): its clean version (−4°) is nearest A (size 2): it moved to the
///   other cluster, to a larger one (Δsize = 5 − 2 = +3), and closer to its centroid (3.6° vs 6°).
/// Row 6 (off_by_one, content): clean (92°) and corrupted (100°) are both in B: not moved,
///   Δsize 0, and farther (8.4° vs 0.4°).
#[test]
fn movement_counts_match_the_hand_derived_geometry() {
    let angles = [0.0, 4.0, 88.0, 90.0, 94.0, 86.0, 100.0];
    let x: Vec<f32> = angles.iter().flat_map(|&a| at(a)).collect();
    let km = kmeans(
        &x,
        2,
        &KMeansConfig {
            k: 2,
            max_iters: 50,
            batch_size: None,
            seed: 0,
        },
    )
    .unwrap();
    // Precondition: the clustering is the intended one.
    let a = km.assign[0];
    assert_eq!(km.assign[1], a);
    assert!(km.assign[2..].iter().all(|&c| c != a), "{:?}", km.assign);
    let b = km.assign[2];
    assert_eq!((km.sizes[a], km.sizes[b]), (2, 5));

    let clean: Vec<f32> = [-4.0, 92.0].iter().flat_map(|&a| at(a)).collect();
    let (clean_assign, clean_dist) = assign_to(&km, &clean).unwrap();
    assert_eq!(clean_assign, vec![a, b]);
    let (c2, c6) = (corruption(Kind::DropColon), corruption(Kind::OffByOne));
    let rows = [
        Paired {
            row: 2,
            clean_cluster: clean_assign[0],
            clean_distance: clean_dist[0],
            cos_to_clean: 0.0,
            corruption: &c2,
        },
        Paired {
            row: 6,
            clean_cluster: clean_assign[1],
            clean_distance: clean_dist[1],
            cos_to_clean: 0.5,
            corruption: &c6,
        },
    ];
    let m = movement(&km, &rows);
    assert_eq!(
        m.keys().cloned().collect::<Vec<_>>(),
        [
            "all",
            "all content",
            "all syntax",
            "drop_colon",
            "off_by_one"
        ]
    );

    let all = &m["all"];
    assert_eq!(
        (
            all.rows,
            all.other_cluster,
            all.smaller_cluster,
            all.farther
        ),
        (2, 1, 0, 1)
    );
    assert_eq!(all.delta_size, vec![3.0, 0.0]);
    assert_eq!(mean(all.delta_size.iter().copied()), 1.5);
    assert_eq!(mean(all.cos_to_clean.iter().copied()), 0.25);
    let syn = &m["all syntax"];
    assert_eq!(
        (
            syn.rows,
            syn.other_cluster,
            syn.smaller_cluster,
            syn.farther
        ),
        (1, 1, 0, 0)
    );
    assert_eq!(m["drop_colon"], *syn);
    let con = &m["all content"];
    assert_eq!(
        (
            con.rows,
            con.other_cluster,
            con.smaller_cluster,
            con.farther
        ),
        (1, 0, 0, 1)
    );
    // Distances (1 − cos of the angle to the centroid), centroid B at ≈ 91.6°, A at 2°:
    // row 2: 1 − cos 3.6° ≈ 0.00197 vs 1 − cos 6° ≈ 0.00548; row 6: 1 − cos 8.4° ≈ 0.0107 vs ≈ 0.
    let dd = &all.delta_distance;
    assert!((dd[0] - (0.00197 - 0.00548)).abs() < 2e-4, "{dd:?}");
    assert!((dd[1] - 0.0107).abs() < 3e-4, "{dd:?}");
    assert_eq!(Class::Syntax, Kind::DropColon.class());
}

#[test]
fn mean_of_nothing_is_nan() {
    assert!(mean(std::iter::empty()).is_nan());
    assert_eq!(mean([1.0, 2.0, 6.0]), 3.0);
}
