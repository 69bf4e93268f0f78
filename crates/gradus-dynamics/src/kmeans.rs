//! k-means (k-means++ seeding, Lloyd iterations, best of several seedings by inertia): the HMM's
//! initial state means, as hmmlearn takes them from scikit-learn's `KMeans`.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Squared Euclidean distance.
fn dist2(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Centroids (k × d, row-major) of the rows of `x` (n × d), and their inertia.
///
/// k-means++ picks each new centre with probability ∝ squared distance to the nearest chosen one
/// (Arthur & Vassilvitskii 2007); Lloyd's iterations then alternate assignment and means until the
/// assignment stops changing or `max_iter`. An empty cluster keeps its centre. Requires n ≥ 1.
pub fn kmeans_once(
    x: &[f64],
    d: usize,
    k: usize,
    max_iter: usize,
    rng: &mut ChaCha8Rng,
) -> (Vec<f64>, f64) {
    let n = x.len() / d;
    let row = |i: usize| &x[i * d..(i + 1) * d];
    let mut c = Vec::with_capacity(k * d);
    c.extend_from_slice(row(rng.gen_range(0..n)));
    let mut nearest: Vec<f64> = (0..n).map(|i| dist2(row(i), &c[..d])).collect();
    while c.len() < k * d {
        let total: f64 = nearest.iter().sum();
        let pick = if total > 0.0 {
            let mut u = rng.gen::<f64>() * total;
            let mut p = n - 1;
            for (i, &w) in nearest.iter().enumerate() {
                if u < w {
                    p = i;
                    break;
                }
                u -= w;
            }
            p
        } else {
            rng.gen_range(0..n)
        };
        let start = c.len();
        c.extend_from_slice(row(pick));
        for (i, m) in nearest.iter_mut().enumerate() {
            *m = m.min(dist2(row(i), &c[start..start + d]));
        }
    }
    let mut assign = vec![usize::MAX; n];
    for _ in 0..max_iter {
        let mut changed = false;
        for (i, a) in assign.iter_mut().enumerate() {
            let best = (0..k)
                .min_by(|&p, &q| {
                    dist2(row(i), &c[p * d..(p + 1) * d])
                        .total_cmp(&dist2(row(i), &c[q * d..(q + 1) * d]))
                })
                .unwrap_or(0);
            if *a != best {
                *a = best;
                changed = true;
            }
        }
        if !changed {
            break;
        }
        let mut sum = vec![0.0; k * d];
        let mut cnt = vec![0usize; k];
        for (i, &a) in assign.iter().enumerate() {
            cnt[a] += 1;
            for (s, v) in sum[a * d..(a + 1) * d].iter_mut().zip(row(i)) {
                *s += v;
            }
        }
        for j in 0..k {
            if cnt[j] > 0 {
                for t in 0..d {
                    c[j * d + t] = sum[j * d + t] / cnt[j] as f64;
                }
            }
        }
    }
    let inertia = (0..n)
        .map(|i| {
            (0..k)
                .map(|j| dist2(row(i), &c[j * d..(j + 1) * d]))
                .fold(f64::INFINITY, f64::min)
        })
        .sum();
    (c, inertia)
}

/// Best of `n_init` k-means runs by inertia.
pub fn kmeans(x: &[f64], d: usize, k: usize, n_init: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let mut best: Option<(Vec<f64>, f64)> = None;
    for _ in 0..n_init.max(1) {
        let (c, inertia) = kmeans_once(x, d, k, 300, rng);
        if best.as_ref().is_none_or(|b| inertia < b.1) {
            best = Some((c, inertia));
        }
    }
    best.map(|b| b.0).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn finds_two_separated_clusters() {
        // Points around (0, 0) and (10, 10): the centroids are the cluster means, by construction
        // (0.5, 0) and (10, 10.5).
        let x = [0.0, 0.0, 1.0, 0.0, 10.0, 10.0, 10.0, 11.0];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut c = kmeans(&x, 2, 2, 5, &mut rng);
        if c[0] > c[2] {
            c.rotate_left(2);
        }
        assert_eq!(c, vec![0.5, 0.0, 10.0, 10.5]);
    }
}
