//! A linear value head `V = h·w + b` on a decoder's final hidden states, with its own Adam
//! (β₁ 0.9, β₂ 0.999, ε 1e-8, no weight decay): AWR's baseline in pretraining with feedback
//! (`[phf] kind = "awr"`) and PPO's critic in `train rl` (`[algorithm] kind = "ppo"`, where its
//! gradient can also flow into the trunk through `FastDecoder::backward_ext`). Saved bit-exactly
//! (f32 bits in JSON) so that a resumed run continues identically.

use std::path::Path;

use gradus_tensor::{Error, Result};
use serde::{Deserialize, Serialize};

/// The value head and its Adam state (see the module docs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ValueHead {
    pub w: Vec<f32>,
    pub b: f32,
    pub m: Vec<f32>,
    pub v: Vec<f32>,
    pub step: u64,
    #[serde(skip)]
    pub grad: Vec<f32>,
}

#[derive(Serialize, Deserialize)]
struct ValueHeadBits {
    /// `w` then `b`, `m` (len D + 1), `v` (len D + 1), as f32 bits.
    w: Vec<u32>,
    m: Vec<u32>,
    v: Vec<u32>,
    step: u64,
}

impl ValueHead {
    pub fn new(d: usize) -> Self {
        Self {
            w: vec![0.0; d],
            b: 0.0,
            m: vec![0.0; d + 1],
            v: vec![0.0; d + 1],
            step: 0,
            grad: vec![0.0; d + 1],
        }
    }

    /// `V` (N) of hidden states `h` (N, D).
    pub fn values(&self, h: &[f32]) -> Vec<f32> {
        let d = self.w.len();
        h.chunks(d)
            .map(|r| r.iter().zip(&self.w).map(|(a, b)| a * b).sum::<f32>() + self.b)
            .collect()
    }

    /// Adds `Σ_t dV_t · (h_t, 1)` into the gradient.
    pub fn accumulate(&mut self, h: &[f32], dv: &[f32]) {
        let d = self.w.len();
        for (r, &g) in h.chunks(d).zip(dv) {
            if g == 0.0 {
                continue;
            }
            for (acc, &x) in self.grad[..d].iter_mut().zip(r) {
                *acc += g * x;
            }
            self.grad[d] += g;
        }
    }

    /// One Adam step with the accumulated gradient, which is then cleared.
    pub fn step(&mut self, lr: f64) {
        let d = self.w.len();
        self.step += 1;
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
        let bc1 = 1.0 - b1.powi(self.step as i32);
        let bc2 = 1.0 - b2.powi(self.step as i32);
        for i in 0..=d {
            let g = self.grad[i] as f64;
            let m = b1 * self.m[i] as f64 + (1.0 - b1) * g;
            let v = b2 * self.v[i] as f64 + (1.0 - b2) * g * g;
            self.m[i] = m as f32;
            self.v[i] = v as f32;
            let upd = (lr * (m / bc1) / ((v / bc2).sqrt() + eps)) as f32;
            if i < d {
                self.w[i] -= upd;
            } else {
                self.b -= upd;
            }
            self.grad[i] = 0.0;
        }
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let mut w: Vec<u32> = self.w.iter().map(|x| x.to_bits()).collect();
        w.push(self.b.to_bits());
        let bits = ValueHeadBits {
            w,
            m: self.m.iter().map(|x| x.to_bits()).collect(),
            v: self.v.iter().map(|x| x.to_bits()).collect(),
            step: self.step,
        };
        let text = serde_json::to_string(&bits).map_err(|e| Error::msg(e.to_string()))?;
        gradus_tensor::io::write_atomic(path, text.as_bytes())
    }

    pub fn load(path: &Path, d: usize) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let b: ValueHeadBits = serde_json::from_str(&text)
            .map_err(|e| Error::format(path, format!("not a value head: {e}")))?;
        if b.w.len() != d + 1 || b.m.len() != d + 1 || b.v.len() != d + 1 {
            return Err(Error::format(
                path,
                format!(
                    "value head of width {}, the model has hidden_size {d}",
                    b.w.len().saturating_sub(1)
                ),
            ));
        }
        let f = |v: &[u32]| v.iter().map(|&x| f32::from_bits(x)).collect::<Vec<f32>>();
        let w = f(&b.w);
        Ok(Self {
            b: w[d],
            w: w[..d].to_vec(),
            m: f(&b.m),
            v: f(&b.v),
            step: b.step,
            grad: vec![0.0; d + 1],
        })
    }
}
