//! Seeded, portable random streams.
//!
//! candle's CPU device cannot be seeded, so every random number in gradus (weight init, dropout,
//! data shuffling, sampling) comes from a ChaCha8 stream whose state can be saved in a checkpoint and
//! restored bit-exactly. Normal samples use Box-Muller on f64 so results do not depend on the
//! platform's libm more than `ln`/`cos`/`sin` do.

use rand::{Rng as _, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{Device, Result, Tensor};

#[derive(Clone, Debug)]
pub struct Rng {
    inner: ChaCha8Rng,
}

/// The resumable state of an [`Rng`]: its seed and the position in its stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RngState {
    pub seed: [u8; 32],
    pub word_pos: u128,
    pub stream: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self {
            inner: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// A child stream, independent of this one, derived from `(seed, label)`.
    pub fn derive(seed: u64, label: &str) -> Self {
        let mut h: u64 = 0xcbf29ce484222325;
        for b in label.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        Self::new(seed ^ h.rotate_left(17))
    }

    pub fn state(&self) -> RngState {
        RngState {
            seed: self.inner.get_seed(),
            word_pos: self.inner.get_word_pos(),
            stream: self.inner.get_stream(),
        }
    }

    pub fn from_state(s: RngState) -> Self {
        let mut inner = ChaCha8Rng::from_seed(s.seed);
        inner.set_stream(s.stream);
        inner.set_word_pos(s.word_pos);
        Self { inner }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        self.inner.gen::<f64>()
    }

    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        self.inner.gen_range(0..n.max(1))
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    pub fn shuffle<T>(&mut self, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            let j = self.below(i + 1);
            xs.swap(i, j);
        }
    }

    /// A tensor of i.i.d. N(0, std²) f32 values.
    pub fn randn(&mut self, shape: &[usize], std: f64, device: &Device) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| (self.normal() * std) as f32).collect();
        Ok(Tensor::from_vec(v, shape, device)?)
    }

    /// A tensor of i.i.d. U(lo, hi) f32 values.
    pub fn rand_uniform(
        &mut self,
        shape: &[usize],
        lo: f64,
        hi: f64,
        device: &Device,
    ) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| (lo + (hi - lo) * self.uniform()) as f32)
            .collect();
        Ok(Tensor::from_vec(v, shape, device)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_roundtrip_continues_the_same_stream() {
        let mut a = Rng::new(7);
        for _ in 0..13 {
            a.next_u64();
        }
        let s = a.state();
        let mut b = Rng::from_state(s);
        let xa: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let xb: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
        assert_eq!(xa, xb);
    }

    #[test]
    fn normal_has_unit_variance() {
        let mut r = Rng::new(1);
        let n = 20000;
        let xs: Vec<f64> = (0..n).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "var {var}");
    }
}
