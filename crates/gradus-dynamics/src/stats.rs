//! Checkpoint statistics: the 14 columns of Hu, Chen, Saphra and Cho (arXiv 2308.09543, §3 "metrics"),
//! plus the per-matrix values behind them.
//!
//! For each weight matrix W (m × n):
//! - `l1` = Σ|w|, `l2` = ‖W‖_F = √Σw², `trace` = Σ_{i < min(m,n)} W_ii, `spectral` = σ_max(W);
//! - `code_sparsity` = l1 / l2, `computational_sparsity` = trace / spectral (0 when the denominator is 0);
//! - `mean_lambda`, `variance_lambda`: mean and variance of the min(m, n) singular values, values
//!   below 1e-5 set to 0 first.
//!
//! These eight are averaged over the selected matrices ([`MatrixSelection`]: by default every 2-D
//! tensor except the vocabulary matrices, i.e. attention Q/K/V/O and MLP in/out as in the paper).
//! The last six columns are the mean, median and variance of all weights (every tensor whose name
//! does not end in `bias`) and of all biases.
//!
//! Conventions (PyTorch's, which the paper's code uses): variances are unbiased (n − 1; 0 when
//! n < 2), the median of an even count is the lower of the two middle values. A checkpoint
//! without biases gets 0 for the three bias columns (a constant column z-scores to 0). The SVD
//! comes from `faer` (pure Rust, maintained, singular values only, in f64).

use std::collections::BTreeMap;
use std::path::Path;

use gradus_tensor::{Error, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// The 14 column names, in the paper's order.
pub const COLUMNS: [&str; 14] = [
    "l1",
    "l2",
    "trace",
    "spectral",
    "code_sparsity",
    "computational_sparsity",
    "mean_lambda",
    "variance_lambda",
    "mean_w",
    "median_w",
    "var_w",
    "mean_b",
    "median_b",
    "var_b",
];

/// Singular values below this are set to 0 before their mean and variance (the paper's rule).
pub const SINGULAR_FLOOR: f64 = 1e-5;

/// Which 2-D tensors count as "weight matrices" for the first eight columns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatrixSelection {
    /// Every 2-D tensor except vocabulary matrices (names containing `embed`, `lm_head`, `wte`, `wpe`).
    #[default]
    Blocks,
    /// Every 2-D tensor.
    All,
}

impl MatrixSelection {
    /// Whether the 2-D tensor `name` is selected.
    pub fn keeps(self, name: &str) -> bool {
        match self {
            MatrixSelection::All => true,
            MatrixSelection::Blocks => !["embed", "lm_head", "wte", "wpe"]
                .iter()
                .any(|p| name.contains(p)),
        }
    }
}

/// The eight per-matrix statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MatrixStats {
    pub l1: f64,
    pub l2: f64,
    pub trace: f64,
    pub spectral: f64,
    pub code_sparsity: f64,
    pub computational_sparsity: f64,
    pub mean_lambda: f64,
    pub variance_lambda: f64,
}

impl MatrixStats {
    fn as_array(&self) -> [f64; 8] {
        [
            self.l1,
            self.l2,
            self.trace,
            self.spectral,
            self.code_sparsity,
            self.computational_sparsity,
            self.mean_lambda,
            self.variance_lambda,
        ]
    }
}

/// One checkpoint's statistics: the 14 columns and the per-matrix values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointStats {
    /// Training step of the checkpoint.
    pub step: u64,
    /// The 14 columns, keyed by [`COLUMNS`] names.
    pub stats: BTreeMap<String, f64>,
    /// Per-matrix statistics, keyed by tensor name.
    pub layers: BTreeMap<String, MatrixStats>,
}

impl CheckpointStats {
    /// The 14 columns as a vector in [`COLUMNS`] order (missing ones are NaN).
    pub fn row(&self) -> Vec<f64> {
        COLUMNS
            .iter()
            .map(|c| self.stats.get(*c).copied().unwrap_or(f64::NAN))
            .collect()
    }
}

/// A named tensor as plain data: row-major f32 values.
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// Singular values of a row-major `rows × cols` matrix, descending (faer's SVD in f64).
pub fn singular_values(rows: usize, cols: usize, values: &[f32]) -> Result<Vec<f64>> {
    if values.len() != rows * cols {
        return Err(Error::msg(format!(
            "matrix of {rows}×{cols} needs {} values, got {}",
            rows * cols,
            values.len()
        )));
    }
    if rows == 0 || cols == 0 {
        return Ok(Vec::new());
    }
    let m = faer::Mat::<f64>::from_fn(rows, cols, |i, j| values[i * cols + j] as f64);
    let mut s = m.as_ref().singular_values().map_err(|e| {
        Error::msg(format!(
            "SVD of a {rows}×{cols} matrix did not converge: {e:?}"
        ))
    })?;
    s.sort_by(|a, b| b.total_cmp(a));
    Ok(s)
}

/// The eight statistics of one row-major `rows × cols` matrix.
pub fn matrix_stats(rows: usize, cols: usize, values: &[f32]) -> Result<MatrixStats> {
    let s = singular_values(rows, cols, values)?;
    let l1: f64 = values.iter().map(|&v| (v as f64).abs()).sum();
    let l2: f64 = values
        .iter()
        .map(|&v| (v as f64) * (v as f64))
        .sum::<f64>()
        .sqrt();
    let trace: f64 = (0..rows.min(cols))
        .map(|i| values[i * cols + i] as f64)
        .sum();
    let spectral = s.first().copied().unwrap_or(0.0);
    let floored: Vec<f64> = s
        .iter()
        .map(|&x| if x < SINGULAR_FLOOR { 0.0 } else { x })
        .collect();
    let (mean_lambda, variance_lambda) = mean_var(floored.iter().copied(), floored.len());
    Ok(MatrixStats {
        l1,
        l2,
        trace,
        spectral,
        code_sparsity: ratio(l1, l2),
        computational_sparsity: ratio(trace, spectral),
        mean_lambda,
        variance_lambda,
    })
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        0.0
    } else {
        a / b
    }
}

/// Mean and unbiased variance (0 when n < 2) in f64, two passes.
fn mean_var(it: impl Iterator<Item = f64> + Clone, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 0.0);
    }
    let mean = it.clone().sum::<f64>() / n as f64;
    if n < 2 {
        return (mean, 0.0);
    }
    let ss: f64 = it.map(|x| (x - mean) * (x - mean)).sum();
    (mean, ss / (n - 1) as f64)
}

/// Lower median (PyTorch's `median`): element `(n − 1) / 2` of the sorted values; 0 for none.
fn lower_median(mut v: Vec<f32>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let k = (v.len() - 1) / 2;
    let (_, m, _) = v.select_nth_unstable_by(k, |a, b| a.total_cmp(b));
    *m as f64
}

/// Statistics of a set of named tensors (one checkpoint). Errors name a tensor holding NaN/inf.
pub fn checkpoint_stats(
    step: u64,
    tensors: &[NamedTensor],
    sel: MatrixSelection,
) -> Result<CheckpointStats> {
    for t in tensors {
        if t.values.iter().any(|v| !v.is_finite()) {
            return Err(Error::msg(format!(
                "step {step}: tensor `{}` holds a NaN or infinite value",
                t.name
            )));
        }
        if t.shape.iter().product::<usize>() != t.values.len() {
            return Err(Error::msg(format!(
                "step {step}: tensor `{}`: shape {:?} does not match its {} values",
                t.name,
                t.shape,
                t.values.len()
            )));
        }
    }
    let mats: Vec<&NamedTensor> = tensors
        .iter()
        .filter(|t| t.shape.len() == 2 && !is_bias(&t.name) && sel.keeps(&t.name))
        .collect();
    let per: Vec<(String, MatrixStats)> = mats
        .par_iter()
        .map(|t| {
            Ok((
                t.name.clone(),
                matrix_stats(t.shape[0], t.shape[1], &t.values)?,
            ))
        })
        .collect::<Result<_>>()?;
    let mut avg = [0.0f64; 8];
    for (_, m) in &per {
        for (a, v) in avg.iter_mut().zip(m.as_array()) {
            *a += v;
        }
    }
    if !per.is_empty() {
        avg.iter_mut().for_each(|a| *a /= per.len() as f64);
    }
    let weights: Vec<f32> = tensors
        .iter()
        .filter(|t| !is_bias(&t.name))
        .flat_map(|t| t.values.iter().copied())
        .collect();
    let biases: Vec<f32> = tensors
        .iter()
        .filter(|t| is_bias(&t.name))
        .flat_map(|t| t.values.iter().copied())
        .collect();
    let (mean_w, var_w) = mean_var(weights.iter().map(|&v| v as f64), weights.len());
    let (mean_b, var_b) = mean_var(biases.iter().map(|&v| v as f64), biases.len());
    let median_w = lower_median(weights);
    let median_b = lower_median(biases);
    let values = [
        avg[0], avg[1], avg[2], avg[3], avg[4], avg[5], avg[6], avg[7], mean_w, median_w, var_w,
        mean_b, median_b, var_b,
    ];
    Ok(CheckpointStats {
        step,
        stats: COLUMNS
            .iter()
            .zip(values)
            .map(|(c, v)| (c.to_string(), v))
            .collect(),
        layers: per.into_iter().collect(),
    })
}

fn is_bias(name: &str) -> bool {
    name == "bias" || name.ends_with(".bias") || name.ends_with("_bias")
}

/// Statistics of one `model.safetensors` file.
pub fn safetensors_stats(step: u64, path: &Path, sel: MatrixSelection) -> Result<CheckpointStats> {
    let loaded = gradus_tensor::io::read_safetensors(path, &gradus_tensor::Device::Cpu)?;
    let mut tensors = Vec::with_capacity(loaded.len());
    for l in loaded {
        let shape = l.tensor.dims().to_vec();
        let values = l.tensor.flatten_all()?.to_vec1::<f32>()?;
        tensors.push(NamedTensor {
            name: l.name,
            shape,
            values,
        });
    }
    checkpoint_stats(step, &tensors, sel).map_err(|e| Error::format(path, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagonal_matrix_by_hand() {
        // W = diag(3, -4) padded to 2×3: singular values are |3|, |−4| → {4, 3}.
        // l1 = 7, l2 = 5, trace = 3 − 4 = −1, spectral = 4, code = 7/5, comp = −1/4,
        // mean_lambda = 3.5, variance_lambda = ((0.5)² + (0.5)²)/(2 − 1) = 0.5.
        let w = [3.0, 0.0, 0.0, 0.0, -4.0, 0.0];
        let s = matrix_stats(2, 3, &w).unwrap();
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        close(s.l1, 7.0);
        close(s.l2, 5.0);
        close(s.trace, -1.0);
        close(s.spectral, 4.0);
        close(s.code_sparsity, 1.4);
        close(s.computational_sparsity, -0.25);
        close(s.mean_lambda, 3.5);
        close(s.variance_lambda, 0.5);
    }

    #[test]
    fn rank_one_matrix_floors_tiny_singular_values() {
        // W = u vᵀ with u = (1, 2), v = (2, 0, 1): one singular value ‖u‖‖v‖ = √5·√5 = 5, the other 0
        // (numerically ~1e-16, floored to exactly 0): mean 2.5, variance (2.5² + 2.5²)/1 = 12.5.
        let w = [2.0, 0.0, 1.0, 4.0, 0.0, 2.0];
        let s = matrix_stats(2, 3, &w).unwrap();
        assert!((s.spectral - 5.0).abs() < 1e-12);
        assert!((s.mean_lambda - 2.5).abs() < 1e-12);
        assert!((s.variance_lambda - 12.5).abs() < 1e-12);
        // trace = W00 + W11 = 2 + 0.
        assert!((s.trace - 2.0).abs() < 1e-12);
    }

    #[test]
    fn checkpoint_columns_by_hand() {
        let t = |name: &str, shape: Vec<usize>, values: Vec<f32>| NamedTensor {
            name: name.into(),
            shape,
            values,
        };
        let tensors = vec![
            // Two selected matrices: I₂ (all stats: l1 2, l2 √2, trace 2, σ {1,1}) and 2·I₂.
            t("layers.0.q.weight", vec![2, 2], vec![1.0, 0.0, 0.0, 1.0]),
            t("layers.0.k.weight", vec![2, 2], vec![2.0, 0.0, 0.0, 2.0]),
            // Excluded from the matrix average (vocabulary), included in the weight columns.
            t("embed_tokens.weight", vec![1, 2], vec![5.0, 7.0]),
            t("layers.0.q.bias", vec![3], vec![1.0, -1.0, 3.0]),
        ];
        let c = checkpoint_stats(7, &tensors, MatrixSelection::Blocks).unwrap();
        let g = |k: &str| c.stats[k];
        // Average of the two matrices: l1 (2 + 4)/2 = 3, l2 (√2 + 2√2)/2 = 1.5√2, trace (2 + 4)/2 = 3,
        // spectral (1 + 2)/2 = 1.5, code sparsity √2 for both, computational sparsity 2 for both,
        // mean_lambda 1.5, variance_lambda 0.
        assert!((g("l1") - 3.0).abs() < 1e-12);
        assert!((g("l2") - 1.5 * 2f64.sqrt()).abs() < 1e-12);
        assert!((g("trace") - 3.0).abs() < 1e-12);
        assert!((g("spectral") - 1.5).abs() < 1e-12);
        assert!((g("code_sparsity") - 2f64.sqrt()).abs() < 1e-12);
        assert!((g("computational_sparsity") - 2.0).abs() < 1e-12);
        assert!((g("mean_lambda") - 1.5).abs() < 1e-12);
        assert!(g("variance_lambda").abs() < 1e-12);
        // Weights: 1 0 0 1 2 0 0 2 5 7 → n 10, sum 18, mean 1.8; sorted 0 0 0 0 1 1 2 2 5 7, lower median
        // = element 4 = 1; Σx² = 1 + 1 + 4 + 4 + 25 + 49 = 84, Σ(x − 1.8)² = 84 − 10·1.8² = 51.6 → var 51.6/9.
        assert!((g("mean_w") - 1.8).abs() < 1e-12);
        assert_eq!(g("median_w"), 1.0);
        assert!((g("var_w") - 51.6 / 9.0).abs() < 1e-12);
        // Biases 1 −1 3: mean 1, median 1, var (0 + 4 + 4)/2 = 4.
        assert!((g("mean_b") - 1.0).abs() < 1e-12);
        assert_eq!(g("median_b"), 1.0);
        assert!((g("var_b") - 4.0).abs() < 1e-12);
        assert_eq!(c.layers.len(), 2);
        assert_eq!(c.row().len(), 14);
    }

    #[test]
    fn nan_names_the_tensor() {
        let t = NamedTensor {
            name: "fc.weight".into(),
            shape: vec![1, 2],
            values: vec![1.0, f32::NAN],
        };
        let e = checkpoint_stats(3, &[t], MatrixSelection::All)
            .unwrap_err()
            .to_string();
        assert!(e.contains("fc.weight") && e.contains("step 3"), "{e}");
    }
}
