//! An input projection for continuous inputs: `embeds = x Wᵀ` with W (D, D_in), the vectors fed
//! to [`super::FastDecoder::forward_with_embeds`] (Reddy 2024 and Chan et al. 2022 feed exemplar
//! vectors to the transformer through a learned linear map). No bias: rows whose input is all zero
//! (token positions) get a zero embedding, so the token embedding alone describes them.
//!
//! The weight and its gradient are flat f32 buffers like the fast graph's, so the same
//! `AdamW::step_flat` updates them. Shapes: x (N, D_in), embeds (N, D).

use gradus_tensor::rng::Rng;
use gradus_tensor::{Error, Result};

use super::linear;

/// A bias-free linear map from D_in input features to the model width D.
#[derive(Clone, Debug)]
pub struct InputProjection {
    pub d_in: usize,
    pub d_model: usize,
    /// (D, D_in) row-major, as PyTorch's `nn.Linear(D_in, D, bias=False).weight`.
    pub weight: Vec<f32>,
    /// ∂loss/∂weight accumulated by [`InputProjection::backward`].
    pub grad: Vec<f32>,
}

impl InputProjection {
    /// Weights ~ N(0, std²) from `seed`.
    pub fn new_random(d_in: usize, d_model: usize, std: f64, seed: u64) -> Self {
        let mut rng = Rng::derive(seed, "input_proj");
        let weight = (0..d_model * d_in)
            .map(|_| (rng.normal() * std) as f32)
            .collect();
        Self {
            d_in,
            d_model,
            weight,
            grad: vec![0.0; d_model * d_in],
        }
    }

    /// A projection with the given weight (D × D_in values).
    pub fn from_weight(d_in: usize, d_model: usize, weight: Vec<f32>) -> Result<Self> {
        if weight.len() != d_in * d_model {
            return Err(Error::msg(format!(
                "input projection weight has {} values, expected hidden_size {d_model} × input dim {d_in}",
                weight.len()
            )));
        }
        Ok(Self {
            d_in,
            d_model,
            grad: vec![0.0; weight.len()],
            weight,
        })
    }

    fn check(&self, x: &[f32], rows: usize) -> Result<()> {
        if x.len() != rows * self.d_in {
            return Err(Error::msg(format!(
                "input projection: x has {} values, expected {rows} rows × {}",
                x.len(),
                self.d_in
            )));
        }
        Ok(())
    }

    /// `embeds (rows, D) = x (rows, D_in) Wᵀ`.
    pub fn forward(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        self.check(x, rows)?;
        let mut y = vec![0f32; rows * self.d_model];
        linear::forward(&mut y, x, &self.weight, None, rows, self.d_in, self.d_model);
        Ok(y)
    }

    /// Adds `dembeds (rows, D)ᵀ x` to the weight gradient.
    pub fn backward(&mut self, dembeds: &[f32], x: &[f32], rows: usize) -> Result<()> {
        self.check(x, rows)?;
        if dembeds.len() != rows * self.d_model {
            return Err(Error::msg(format!(
                "input projection: gradient has {} values, expected {rows} rows × {}",
                dembeds.len(),
                self.d_model
            )));
        }
        linear::backward_params(
            &mut self.grad,
            None,
            dembeds,
            x,
            rows,
            self.d_in,
            self.d_model,
        );
        Ok(())
    }

    pub fn zero_grad(&mut self) {
        self.grad.fill(0.0);
    }
}
