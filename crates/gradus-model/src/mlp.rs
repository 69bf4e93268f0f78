//! A one-hidden-layer MLP classifier with a hand-written forward and backward (the fast graph's
//! GEMMs, `fast::linear`) over flat parameter and gradient buffers: the model of the sparse-parity
//! experiments of Hu, Chen, Saphra and Cho (2023, RESEARCH §3.8; hidden 1000, SGD lr 0.1).
//!
//! ```text
//! a = x W1ᵀ + b1   (N×H)      h = relu(a)
//! z = h W2ᵀ + b2   (N×C)      loss = mean_n −log_softmax(z_n)[y_n]
//! backward: dz = (softmax(z) − onehot(y)) / N,  dW2 += dzᵀ h,  db2 += Σ dz,
//!           dh = dz W2,  da = dh ∘ [a > 0],  dW1 += daᵀ x,  db1 += Σ da
//! ```
//! Parameters are named like PyTorch's `nn.Sequential(Linear, ReLU, Linear)` state dict with
//! `fc1`/`fc2` prefixes: `fc1.weight` (H×I), `fc1.bias` (H), `fc2.weight` (C×H), `fc2.bias` (C),
//! initialised as `nn.Linear` does, U(−1/√fan_in, 1/√fan_in). `tests/mlp.rs` checks every gradient
//! against candle's autograd of the same function.

use gradus_tensor::rng::Rng;
use gradus_tensor::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::fast::linear;

/// Sizes of the MLP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MlpConfig {
    pub inputs: usize,
    /// Hidden width (the paper: 1000).
    pub hidden: usize,
    pub classes: usize,
}

impl Default for MlpConfig {
    fn default() -> Self {
        Self {
            inputs: 40,
            hidden: 1000,
            classes: 2,
        }
    }
}

impl MlpConfig {
    /// Errors name the field.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("mlp.inputs", self.inputs),
            ("mlp.hidden", self.hidden),
            ("mlp.classes", self.classes),
        ] {
            if v == 0 {
                return Err(Error::config(name, "must be positive"));
            }
        }
        if self.classes < 2 {
            return Err(Error::config("mlp.classes", "needs at least 2 classes"));
        }
        Ok(())
    }

    /// `(name, shape)` of every parameter, in the flat buffer's order.
    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (i, h, c) = (self.inputs, self.hidden, self.classes);
        vec![
            ("fc1.weight".into(), vec![h, i]),
            ("fc1.bias".into(), vec![h]),
            ("fc2.weight".into(), vec![c, h]),
            ("fc2.bias".into(), vec![c]),
        ]
    }
}

/// The MLP with its flat parameters, gradients and the activations of the last forward.
pub struct MlpClassifier {
    pub cfg: MlpConfig,
    params: Vec<f32>,
    grads: Vec<f32>,
    rows: usize,
    x: Vec<f32>,
    a: Vec<f32>,
    h: Vec<f32>,
    z: Vec<f32>,
}

impl MlpClassifier {
    /// Freshly initialised (PyTorch `nn.Linear` init), seeded.
    pub fn new_random(cfg: &MlpConfig, seed: u64) -> Result<Self> {
        cfg.validate()?;
        let mut rng = Rng::derive(seed, "gradus-model/mlp-init");
        let mut params = Vec::new();
        for (name, shape) in cfg.param_shapes() {
            let fan_in = if name.starts_with("fc1") {
                cfg.inputs
            } else {
                cfg.hidden
            };
            let bound = 1.0 / (fan_in as f64).sqrt();
            let n: usize = shape.iter().product();
            params.extend((0..n).map(|_| ((2.0 * rng.uniform() - 1.0) * bound) as f32));
        }
        let grads = vec![0.0; params.len()];
        Ok(Self {
            cfg: cfg.clone(),
            params,
            grads,
            rows: 0,
            x: Vec::new(),
            a: Vec::new(),
            h: Vec::new(),
            z: Vec::new(),
        })
    }

    fn offsets(&self) -> [usize; 5] {
        let (i, h, c) = (self.cfg.inputs, self.cfg.hidden, self.cfg.classes);
        let o1 = h * i;
        let o2 = o1 + h;
        let o3 = o2 + c * h;
        [0, o1, o2, o3, o3 + c]
    }

    /// The flat parameters (order of [`MlpConfig::param_shapes`]).
    pub fn params(&self) -> &[f32] {
        &self.params
    }

    /// The flat gradients accumulated since [`MlpClassifier::zero_grads`].
    pub fn grads(&self) -> &[f32] {
        &self.grads
    }

    /// Parameters (mutable) and gradients, for an optimiser step.
    pub fn params_and_grads(&mut self) -> (&mut [f32], &mut [f32]) {
        (&mut self.params, &mut self.grads)
    }

    pub fn zero_grads(&mut self) {
        self.grads.fill(0.0);
    }

    /// Every parameter as `(name, shape, values)`.
    pub fn named_tensors(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let o = self.offsets();
        self.cfg
            .param_shapes()
            .into_iter()
            .enumerate()
            .map(|(k, (n, s))| (n, s, self.params[o[k]..o[k + 1]].to_vec()))
            .collect()
    }

    /// Sets the parameters from named tensors (a checkpoint's), naming a missing tensor or one
    /// whose size differs (with `origin`, e.g. the file), before changing any.
    pub fn set_named(&mut self, tensors: &[(String, Vec<f32>)], origin: &str) -> Result<()> {
        let o = self.offsets();
        let mut next = self.params.clone();
        for (k, (name, shape)) in self.cfg.param_shapes().into_iter().enumerate() {
            let (_, v) = tensors.iter().find(|(n, _)| *n == name).ok_or_else(|| {
                Error::msg(format!("{origin}: no tensor `{name}` (an MLP checkpoint?)"))
            })?;
            if v.len() != o[k + 1] - o[k] {
                return Err(Error::msg(format!(
                    "{origin}: tensor `{name}` has {} values, the MLP's {shape:?} needs {}",
                    v.len(),
                    o[k + 1] - o[k]
                )));
            }
            next[o[k]..o[k + 1]].copy_from_slice(v);
        }
        self.params = next;
        Ok(())
    }

    fn check_x(&self, x: &[f32], rows: usize) -> Result<()> {
        if rows == 0 || x.len() != rows * self.cfg.inputs {
            return Err(Error::msg(format!(
                "mlp: {} input values for {rows} rows of {} features",
                x.len(),
                self.cfg.inputs
            )));
        }
        Ok(())
    }

    /// Logits (rows × classes); keeps the activations for [`MlpClassifier::backward`].
    pub fn forward(&mut self, x: &[f32], rows: usize) -> Result<&[f32]> {
        self.check_x(x, rows)?;
        let (i, h, c) = (self.cfg.inputs, self.cfg.hidden, self.cfg.classes);
        let o = self.offsets();
        self.rows = rows;
        self.x.clear();
        self.x.extend_from_slice(x);
        self.a.resize(rows * h, 0.0);
        self.h.resize(rows * h, 0.0);
        self.z.resize(rows * c, 0.0);
        let p = &self.params;
        linear::forward(
            &mut self.a,
            x,
            &p[o[0]..o[1]],
            Some(&p[o[1]..o[2]]),
            rows,
            i,
            h,
        );
        for (hv, &av) in self.h.iter_mut().zip(&self.a) {
            *hv = av.max(0.0);
        }
        linear::forward(
            &mut self.z,
            &self.h,
            &p[o[2]..o[3]],
            Some(&p[o[3]..o[4]]),
            rows,
            h,
            c,
        );
        Ok(&self.z)
    }

    /// Mean cross-entropy of the last forward's logits against `y`, times `scale`, with its
    /// gradient added into [`MlpClassifier::grads`]. Returns the (unscaled) mean loss.
    pub fn backward(&mut self, y: &[u32], scale: f32) -> Result<f64> {
        let (i, h, c) = (self.cfg.inputs, self.cfg.hidden, self.cfg.classes);
        let n = self.rows;
        if n == 0 || y.len() != n {
            return Err(Error::msg(format!(
                "mlp: {} labels for a forward of {n} rows",
                y.len()
            )));
        }
        if let Some(bad) = y.iter().find(|&&t| t as usize >= c) {
            return Err(Error::msg(format!(
                "mlp: label {bad} out of range for {c} classes"
            )));
        }
        let mut loss = 0f64;
        let mut dz = vec![0f32; n * c];
        for ((zr, dr), &t) in self.z.chunks_exact(c).zip(dz.chunks_exact_mut(c)).zip(y) {
            let m = zr.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let s: f64 = zr.iter().map(|&v| ((v - m) as f64).exp()).sum();
            let lse = m as f64 + s.ln();
            loss += lse - zr[t as usize] as f64;
            for k in 0..c {
                let pk = ((zr[k] as f64) - lse).exp();
                let g = pk - if k == t as usize { 1.0 } else { 0.0 };
                dr[k] = (g * scale as f64 / n as f64) as f32;
            }
        }
        let o = self.offsets();
        let w2 = &self.params[o[2]..o[3]];
        let mut dh = vec![0f32; n * h];
        linear::backward_input(&mut dh, false, &dz, w2, n, h, c);
        {
            let (g_lo, g_hi) = self.grads.split_at_mut(o[3]);
            linear::backward_params(&mut g_lo[o[2]..], Some(g_hi), &dz, &self.h, n, h, c);
        }
        for (d, &av) in dh.iter_mut().zip(&self.a) {
            if av <= 0.0 {
                *d = 0.0;
            }
        }
        {
            let (g_lo, g_hi) = self.grads.split_at_mut(o[1]);
            linear::backward_params(g_lo, Some(&mut g_hi[..h]), &dh, &self.x, n, i, h);
        }
        Ok(loss / n as f64)
    }

    /// Greedy class of each row.
    pub fn predict(&mut self, x: &[f32], rows: usize) -> Result<Vec<u32>> {
        let c = self.cfg.classes;
        let z = self.forward(x, rows)?;
        Ok(z.chunks_exact(c)
            .map(|r| {
                let mut best = 0;
                for k in 1..c {
                    if r[k] > r[best] {
                        best = k;
                    }
                }
                best as u32
            })
            .collect())
    }
}
