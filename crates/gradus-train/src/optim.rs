//! Optimizers over named parameters: [`AdamW`] (PyTorch semantics) and a plain [`Sgd`].
//!
//! The optimizer owns a list of `(name, Var)` pairs, so it works for any model: a recipe hands it
//! `model.named_parameters()` (or a LoRA subset) and later calls [`AdamW::step`] with the
//! [`GradStore`] returned by `loss.backward()`.
//!
//! # AdamW
//! Matches `torch.optim.AdamW(foreach=False)` in f32, step by step (checked against a committed
//! PyTorch fixture, `tests/fixtures/adamw/`). For a parameter `p` with gradient `g`, at its own step
//! count `t` (incremented only on steps where `p` has a gradient, as in PyTorch):
//! ```text
//! p  <- p * (1 - lr * wd)                       decoupled weight decay (Loshchilov & Hutter)
//! m  <- lerp(m, g, 1 - beta1)                   = beta1 m + (1 - beta1) g
//! v  <- beta2 v + (1 - beta2) g^2
//! p  <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
//! ```
//! `lr` is the scheduled learning rate times the parameter's group `lr_scale`.
//! Scalars (bias corrections, step size) are computed in f64 and rounded to f32 once; the
//! element-wise math runs in f32 over flat buffers, in parallel over parameters (and over chunks of
//! large parameters) with rayon. Every element's update depends only on its own values, so results
//! do not depend on the number of threads.
//!
//! Parameters of another dtype (bf16, f16) are updated in f32 and rounded back; there is no f32
//! master copy yet. Non-CPU parameters round-trip through host memory.
//!
//! # Groups
//! Every parameter gets a [`ParamGroup`] (betas, eps, weight decay, lr scale) from a rule applied to
//! its name and rank. The default rule ([`default_no_decay`]) turns weight decay off for tensors of
//! rank <= 1 (norm weights, biases), as GPT-2/nanoGPT/HF trainers do.
//!
//! # State
//! [`AdamW::state_tensors`] returns `exp_avg.<param>`, `exp_avg_sq.<param>` (f32, the parameter's
//! shape), `step.<param>` (i64 scalar: that parameter's own step count) and `step` (i64 scalar: the
//! number of `step` calls). [`AdamW::load_state`] checks every one of them and names the tensor at
//! fault.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use gradus_tensor::{Error, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Parameters with more elements than this are updated in parallel chunks of this size.
const PAR_CHUNK: usize = 1 << 15;

/// The default no-decay rule: no weight decay on tensors of rank <= 1 (norm weights, biases).
pub fn default_no_decay(_name: &str, rank: usize) -> bool {
    rank <= 1
}

/// AdamW hyper-parameters (the learning rate comes from the schedule at each step).
///
/// Defaults are PyTorch's: betas (0.9, 0.999), eps 1e-8, weight_decay 0.01.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamWConfig {
    /// `(beta1, beta2)`: decay rates of the first and second moment estimates. TOML: `[0.9, 0.95]`.
    pub betas: (f64, f64),
    /// Added to the denominator for numerical stability.
    pub eps: f64,
    /// Decoupled weight decay for the parameters the no-decay rule does not exempt.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

impl AdamWConfig {
    /// Checks the ranges; errors name the field (`optimizer.betas`, ...).
    pub fn validate(&self) -> Result<()> {
        self.group().validate("optimizer")
    }

    /// The group these settings give a decayed parameter (lr_scale 1).
    pub fn group(&self) -> ParamGroup {
        ParamGroup {
            betas: self.betas,
            eps: self.eps,
            weight_decay: self.weight_decay,
            lr_scale: 1.0,
        }
    }
}

/// Per-parameter AdamW settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ParamGroup {
    pub betas: (f64, f64),
    pub eps: f64,
    pub weight_decay: f64,
    /// Multiplies the scheduled learning rate for this parameter.
    pub lr_scale: f64,
}

impl ParamGroup {
    fn validate(&self, what: &str) -> Result<()> {
        let (b1, b2) = self.betas;
        for (v, n) in [(b1, "betas[0]"), (b2, "betas[1]")] {
            if !(0.0..1.0).contains(&v) {
                return Err(Error::config(
                    format!("{what}.{n}"),
                    format!("must be in [0, 1), got {v}"),
                ));
            }
        }
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return Err(Error::config(
                format!("{what}.eps"),
                format!("must be finite and >= 0, got {}", self.eps),
            ));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(Error::config(
                format!("{what}.weight_decay"),
                format!("must be finite and >= 0, got {}", self.weight_decay),
            ));
        }
        if !(self.lr_scale.is_finite() && self.lr_scale >= 0.0) {
            return Err(Error::config(
                format!("{what}.lr_scale"),
                format!("must be finite and >= 0, got {}", self.lr_scale),
            ));
        }
        Ok(())
    }
}

/// Checks names are unique and no Var is listed twice (a tied weight must appear once, or it would
/// be updated twice per step).
fn check_params(params: &[(String, Var)]) -> Result<()> {
    let mut names = HashSet::new();
    let mut ids = HashMap::new();
    for (name, var) in params {
        if !names.insert(name.as_str()) {
            return Err(Error::msg(format!(
                "optimizer: parameter name `{name}` is listed twice"
            )));
        }
        if let Some(first) = ids.insert(var.as_tensor().id(), name.as_str()) {
            return Err(Error::msg(format!(
                "optimizer: parameters `{first}` and `{name}` are the same variable (tied weights must be listed once)"
            )));
        }
    }
    Ok(())
}

fn check_lr(lr: f64) -> Result<()> {
    if lr.is_finite() && lr >= 0.0 {
        Ok(())
    } else {
        Err(Error::config(
            "lr",
            format!("learning rate must be finite and >= 0, got {lr}"),
        ))
    }
}

/// The parameter's values as a flat f32 vector.
fn flat_f32(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
}

/// The gradient of `var` as a flat f32 vector, or None; errors if its shape differs.
fn grad_of(grads: &GradStore, name: &str, var: &Var) -> Result<Option<Vec<f32>>> {
    let Some(g) = grads.get(var.as_tensor()) else {
        return Ok(None);
    };
    if g.dims() != var.dims() {
        return Err(Error::TensorShape {
            name: name.to_string(),
            expected: var.dims().to_vec(),
            found: g.dims().to_vec(),
            context: " (gradient)".into(),
        });
    }
    Ok(Some(flat_f32(g)?))
}

/// Writes a flat f32 buffer back into `var`, in the var's dtype and device.
fn set_var(var: &Var, data: Vec<f32>) -> Result<()> {
    let t = Tensor::from_vec(data, var.dims(), &Device::Cpu)?;
    let t = t.to_dtype(var.dtype())?.to_device(var.device())?;
    var.set(&t)?;
    Ok(())
}

struct AdamSlot {
    name: String,
    var: Var,
    group: ParamGroup,
    step: u64,
    exp_avg: Vec<f32>,
    exp_avg_sq: Vec<f32>,
}

/// The scalar factors of one AdamW update, computed in f64 and rounded once.
#[derive(Clone, Copy)]
struct AdamScalars {
    decay_mul: Option<f32>,
    w1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    bc2_sqrt: f32,
    eps: f32,
    neg_step_size: f32,
}

impl AdamScalars {
    fn new(g: &ParamGroup, lr: f64, step: u64) -> Self {
        let (b1, b2) = g.betas;
        let t = step as f64;
        let bc1 = 1.0 - b1.powf(t);
        let bc2 = 1.0 - b2.powf(t);
        Self {
            decay_mul: (g.weight_decay != 0.0).then_some((1.0 - lr * g.weight_decay) as f32),
            w1: (1.0 - b1) as f32,
            beta2: b2 as f32,
            one_minus_beta2: (1.0 - b2) as f32,
            bc2_sqrt: bc2.sqrt() as f32,
            eps: g.eps as f32,
            neg_step_size: (-(lr / bc1)) as f32,
        }
    }

    /// The element-wise update over matching chunks: PyTorch's single-tensor AdamW, op by op for
    /// each element, fused into one pass over (p, m, v, g) (each element's arithmetic is the same
    /// sequence as the op-by-op version, so the result is too).
    #[inline]
    fn apply(&self, p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]) {
        let d = self.decay_mul.unwrap_or(1.0);
        let decay = self.decay_mul.is_some();
        let w1 = self.w1;
        let w1c = 1.0 - w1;
        // torch.lerp: self + w (end - self) for |w| < 0.5, else end - (end - self)(1 - w).
        let small_w = w1.abs() < 0.5;
        for (((p, m), v), &g) in p.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
            if decay {
                *p *= d;
            }
            if small_w {
                *m += w1 * (g - *m);
            } else {
                *m = g - (g - *m) * w1c;
            }
            *v = *v * self.beta2 + self.one_minus_beta2 * (g * g);
            let denom = v.sqrt() / self.bc2_sqrt + self.eps;
            *p += self.neg_step_size * (*m / denom);
        }
    }
}

/// AdamW with decoupled weight decay and per-parameter groups (see the module docs).
pub struct AdamW {
    slots: Vec<AdamSlot>,
    steps_taken: u64,
}

impl AdamW {
    /// AdamW with the default rule: no weight decay on rank <= 1 tensors.
    pub fn new(params: Vec<(String, Var)>, cfg: AdamWConfig) -> Result<Self> {
        Self::with_no_decay(params, cfg, default_no_decay)
    }

    /// AdamW where `no_decay(name, rank)` selects the parameters without weight decay.
    pub fn with_no_decay(
        params: Vec<(String, Var)>,
        cfg: AdamWConfig,
        no_decay: impl Fn(&str, usize) -> bool,
    ) -> Result<Self> {
        cfg.validate()?;
        Self::with_groups(params, |name, rank| {
            let mut g = cfg.group();
            if no_decay(name, rank) {
                g.weight_decay = 0.0;
            }
            g
        })
    }

    /// AdamW where `group(name, rank)` gives every parameter its own settings.
    pub fn with_groups(
        params: Vec<(String, Var)>,
        group: impl Fn(&str, usize) -> ParamGroup,
    ) -> Result<Self> {
        check_params(&params)?;
        let mut slots = Vec::with_capacity(params.len());
        for (name, var) in params {
            let g = group(&name, var.rank());
            g.validate(&format!("optimizer group of `{name}`"))?;
            let n = var.elem_count();
            slots.push(AdamSlot {
                name,
                var,
                group: g,
                step: 0,
                exp_avg: vec![0.0; n],
                exp_avg_sq: vec![0.0; n],
            });
        }
        Ok(Self {
            slots,
            steps_taken: 0,
        })
    }

    /// One update with learning rate `lr` (times each group's `lr_scale`). Parameters without a
    /// gradient in `grads` are skipped, and their own step count does not advance.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        check_lr(lr)?;
        // Read every gradient first, so a shape error leaves all parameters untouched.
        let gs: Vec<Option<Vec<f32>>> = self
            .slots
            .iter()
            .map(|s| grad_of(grads, &s.name, &s.var))
            .collect::<Result<_>>()?;
        self.slots
            .par_iter_mut()
            .zip(gs)
            .try_for_each(|(s, g)| -> Result<()> {
                let Some(g) = g else { return Ok(()) };
                let mut p = flat_f32(s.var.as_tensor())?;
                s.step += 1;
                let sc = AdamScalars::new(&s.group, lr * s.group.lr_scale, s.step);
                if p.len() > PAR_CHUNK {
                    p.par_chunks_mut(PAR_CHUNK)
                        .zip(s.exp_avg.par_chunks_mut(PAR_CHUNK))
                        .zip(s.exp_avg_sq.par_chunks_mut(PAR_CHUNK))
                        .zip(g.par_chunks(PAR_CHUNK))
                        .for_each(|(((p, m), v), g)| sc.apply(p, m, v, g));
                } else {
                    sc.apply(&mut p, &mut s.exp_avg, &mut s.exp_avg_sq, &g);
                }
                set_var(&s.var, p)
            })?;
        self.steps_taken += 1;
        Ok(())
    }

    /// One update over flat storage (the fast training graph's, `gradus_model::fast`): parameter
    /// i of the list owns the next `numel_i` elements of `params` and `grads`, in list order. The
    /// same arithmetic as [`AdamW::step`] (every parameter has a gradient); the Vars are not read
    /// or written (the caller owns the flat copy and writes it back when needed).
    pub fn step_flat(&mut self, params: &mut [f32], grads: &[f32], lr: f64) -> Result<()> {
        check_lr(lr)?;
        let total: usize = self.slots.iter().map(|s| s.exp_avg.len()).sum();
        if params.len() != total || grads.len() != total {
            return Err(Error::msg(format!(
                "AdamW::step_flat: {} parameters and {} gradients given, the optimizer's {} parameters hold {total} elements",
                params.len(),
                grads.len(),
                self.slots.len()
            )));
        }
        let mut work = Vec::with_capacity(self.slots.len());
        let (mut rest_p, mut rest_g) = (params, grads);
        for s in self.slots.iter_mut() {
            let n = s.exp_avg.len();
            let (p, tp) = std::mem::take(&mut rest_p).split_at_mut(n);
            let (g, tg) = rest_g.split_at(n);
            rest_p = tp;
            rest_g = tg;
            work.push((s, p, g));
        }
        work.into_par_iter().for_each(|(s, p, g)| {
            s.step += 1;
            let sc = AdamScalars::new(&s.group, lr * s.group.lr_scale, s.step);
            if p.len() > PAR_CHUNK {
                p.par_chunks_mut(PAR_CHUNK)
                    .zip(s.exp_avg.par_chunks_mut(PAR_CHUNK))
                    .zip(s.exp_avg_sq.par_chunks_mut(PAR_CHUNK))
                    .zip(g.par_chunks(PAR_CHUNK))
                    .for_each(|(((p, m), v), g)| sc.apply(p, m, v, g));
            } else {
                sc.apply(p, &mut s.exp_avg, &mut s.exp_avg_sq, g);
            }
        });
        self.steps_taken += 1;
        Ok(())
    }

    /// How many times [`AdamW::step`] has run (restored by [`AdamW::load_state`]).
    pub fn steps_taken(&self) -> u64 {
        self.steps_taken
    }

    /// The parameters, in the order given.
    pub fn params(&self) -> Vec<(&str, &Var)> {
        self.slots
            .iter()
            .map(|s| (s.name.as_str(), &s.var))
            .collect()
    }

    /// The settings of parameter `name`.
    pub fn group(&self, name: &str) -> Option<ParamGroup> {
        self.slots.iter().find(|s| s.name == name).map(|s| s.group)
    }

    /// The optimizer state as named tensors (see the module docs for the names).
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(3 * self.slots.len() + 1);
        out.push((
            "step".to_string(),
            Tensor::new(self.steps_taken as i64, &Device::Cpu)?,
        ));
        for s in &self.slots {
            let shape = s.var.dims();
            out.push((
                format!("exp_avg.{}", s.name),
                Tensor::from_slice(&s.exp_avg, shape, &Device::Cpu)?,
            ));
            out.push((
                format!("exp_avg_sq.{}", s.name),
                Tensor::from_slice(&s.exp_avg_sq, shape, &Device::Cpu)?,
            ));
            out.push((
                format!("step.{}", s.name),
                Tensor::new(s.step as i64, &Device::Cpu)?,
            ));
        }
        Ok(out)
    }

    /// Restores the state written by [`AdamW::state_tensors`]. Every tensor must be present with
    /// the right shape and no unknown tensor may be present; on error nothing is changed.
    pub fn load_state(&mut self, tensors: &[(String, Tensor)]) -> Result<()> {
        self.load_state_from(tensors, None)
    }

    /// Writes the state to a safetensors file in its own dtypes ([`gradus_tensor::io::write_native`]).
    pub fn save_state_file(&self, path: &Path) -> Result<()> {
        gradus_tensor::io::write_native(path, &self.state_tensors()?)
    }

    /// Loads the state from a safetensors file; errors name the file and the tensor.
    pub fn load_state_file(&mut self, path: &Path) -> Result<()> {
        let tensors = gradus_tensor::io::read_native(path)?;
        self.load_state_from(&tensors, Some(path))
    }

    fn load_state_from(&mut self, tensors: &[(String, Tensor)], path: Option<&Path>) -> Result<()> {
        let where_ = || match path {
            Some(p) => format!(" in optimizer state {}", p.display()),
            None => " in optimizer state".to_string(),
        };
        let mut by_name: HashMap<&str, &Tensor> = HashMap::new();
        for (n, t) in tensors {
            if by_name.insert(n.as_str(), t).is_some() {
                return Err(Error::msg(format!(
                    "tensor `{n}` appears twice{}",
                    where_()
                )));
            }
        }
        let missing = |name: String| match path {
            Some(p) => Error::MissingTensor {
                path: p.to_path_buf(),
                name,
                hint: " (optimizer state)".into(),
            },
            None => Error::msg(format!("tensor `{name}` is missing{}", where_())),
        };
        let take = |name: &str| -> Result<&Tensor> {
            by_name
                .get(name)
                .copied()
                .ok_or_else(|| missing(name.into()))
        };
        let scalar = |name: &str| -> Result<u64> {
            let t = take(name)?;
            let v = t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
            match v.as_slice() {
                [x] if *x >= 0.0 && x.fract() == 0.0 && *x < 9.0e15 => Ok(*x as u64),
                _ => Err(Error::msg(format!(
                    "tensor `{name}`{}: expected one non-negative integer, found shape {:?}",
                    where_(),
                    t.dims()
                ))),
            }
        };
        let steps_taken = scalar("step")?;
        let mut loaded = Vec::with_capacity(self.slots.len());
        let mut used: HashSet<String> = HashSet::from(["step".to_string()]);
        for s in &self.slots {
            let mut moment = |prefix: &str| -> Result<Vec<f32>> {
                let name = format!("{prefix}.{}", s.name);
                let t = take(&name)?;
                if t.dims() != s.var.dims() {
                    return Err(Error::TensorShape {
                        name: name.clone(),
                        expected: s.var.dims().to_vec(),
                        found: t.dims().to_vec(),
                        context: format!("{} (parameter `{}`)", where_(), s.name),
                    });
                }
                let v = flat_f32(t)?;
                used.insert(name);
                Ok(v)
            };
            let m = moment("exp_avg")?;
            let v = moment("exp_avg_sq")?;
            let step_name = format!("step.{}", s.name);
            let step = scalar(&step_name)?;
            used.insert(step_name);
            loaded.push((m, v, step));
        }
        let mut unknown: Vec<&str> = by_name
            .keys()
            .copied()
            .filter(|n| !used.contains(*n))
            .collect();
        if !unknown.is_empty() {
            unknown.sort_unstable();
            return Err(Error::msg(format!(
                "unexpected tensor `{}`{} (no such parameter in this optimizer; {} unexpected in all)",
                unknown[0],
                where_(),
                unknown.len()
            )));
        }
        for (s, (m, v, step)) in self.slots.iter_mut().zip(loaded) {
            s.exp_avg = m;
            s.exp_avg_sq = v;
            s.step = step;
        }
        self.steps_taken = steps_taken;
        Ok(())
    }
}

/// Plain SGD with optional momentum (PyTorch semantics, dampening 0, no Nesterov) and
/// coupled L2 weight decay on the parameters the rule does not exempt:
/// `g <- g + wd p; b <- mu b + g (b = g at the first step); p <- p - lr b`.
pub struct Sgd {
    slots: Vec<SgdSlot>,
    momentum: f64,
}

struct SgdSlot {
    name: String,
    var: Var,
    weight_decay: f64,
    buf: Option<Vec<f32>>,
}

impl Sgd {
    /// SGD; `no_decay(name, rank)` exempts parameters from `weight_decay`.
    pub fn new(
        params: Vec<(String, Var)>,
        momentum: f64,
        weight_decay: f64,
        no_decay: impl Fn(&str, usize) -> bool,
    ) -> Result<Self> {
        check_params(&params)?;
        if !(0.0..1.0).contains(&momentum) {
            return Err(Error::config(
                "optimizer.momentum",
                format!("must be in [0, 1), got {momentum}"),
            ));
        }
        if !(weight_decay.is_finite() && weight_decay >= 0.0) {
            return Err(Error::config(
                "optimizer.weight_decay",
                format!("must be finite and >= 0, got {weight_decay}"),
            ));
        }
        let slots = params
            .into_iter()
            .map(|(name, var)| {
                let wd = if no_decay(&name, var.rank()) {
                    0.0
                } else {
                    weight_decay
                };
                SgdSlot {
                    name,
                    var,
                    weight_decay: wd,
                    buf: None,
                }
            })
            .collect();
        Ok(Self { slots, momentum })
    }

    /// One update; parameters without a gradient are skipped.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        check_lr(lr)?;
        let gs: Vec<Option<Vec<f32>>> = self
            .slots
            .iter()
            .map(|s| grad_of(grads, &s.name, &s.var))
            .collect::<Result<_>>()?;
        let mu = self.momentum as f32;
        let lr32 = lr as f32;
        self.slots
            .par_iter_mut()
            .zip(gs)
            .try_for_each(|(s, g)| -> Result<()> {
                let Some(mut g) = g else { return Ok(()) };
                let mut p = flat_f32(s.var.as_tensor())?;
                if s.weight_decay != 0.0 {
                    let wd = s.weight_decay as f32;
                    g.iter_mut().zip(&p).for_each(|(g, &p)| *g += wd * p);
                }
                let d = if mu != 0.0 {
                    match &mut s.buf {
                        Some(b) => {
                            b.iter_mut().zip(&g).for_each(|(b, &g)| *b = *b * mu + g);
                            b.clone()
                        }
                        None => {
                            s.buf = Some(g.clone());
                            g
                        }
                    }
                } else {
                    g
                };
                p.iter_mut().zip(&d).for_each(|(p, &d)| *p -= lr32 * d);
                set_var(&s.var, p)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(v: &[f32], shape: &[usize]) -> Var {
        Var::from_tensor(&Tensor::from_slice(v, shape, &Device::Cpu).unwrap()).unwrap()
    }

    fn vals(v: &Var) -> Vec<f32> {
        v.as_tensor().flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn first_step_by_hand() {
        // p = 1, g = 0.5, lr = 0.1, betas (0.9, 0.999), eps 0:
        //   m = 0.1 * 0.5 = 0.05, v = 0.001 * 0.25 = 0.00025,
        //   m / (1 - 0.9) = 0.5, sqrt(v / (1 - 0.999)) = 0.5 -> update = lr * 1 = 0.1.
        // The 2-D parameter also decays first: 1 * (1 - 0.1 * 0.1) = 0.99 -> 0.89.
        // The 1-D one does not (default rule): 1 -> 0.9.
        let w = var(&[1.0, 1.0], &[1, 2]);
        let b = var(&[1.0], &[1]);
        let cfg = AdamWConfig {
            betas: (0.9, 0.999),
            eps: 0.0,
            weight_decay: 0.1,
        };
        let mut opt =
            AdamW::new(vec![("w".into(), w.clone()), ("b".into(), b.clone())], cfg).unwrap();
        let mut g = GradStore::default();
        g.insert(
            w.as_tensor(),
            Tensor::new(&[[0.5f32, -0.5]], &Device::Cpu).unwrap(),
        );
        g.insert(b.as_tensor(), Tensor::new(&[0.5f32], &Device::Cpu).unwrap());
        opt.step(&g, 0.1).unwrap();
        let w_ = vals(&w);
        assert!(
            (w_[0] - 0.89).abs() < 1e-6 && (w_[1] - 1.09).abs() < 1e-6,
            "{w_:?}"
        );
        assert!((vals(&b)[0] - 0.9).abs() < 1e-6);
    }

    #[test]
    fn params_without_grad_are_untouched_and_lr_scale_applies() {
        let a = var(&[2.0], &[1]);
        let c = var(&[3.0], &[1]);
        let mut opt = AdamW::with_groups(
            vec![("a".into(), a.clone()), ("c".into(), c.clone())],
            |name, _| ParamGroup {
                betas: (0.9, 0.999),
                eps: 0.0,
                weight_decay: 0.0,
                lr_scale: if name == "a" { 0.5 } else { 1.0 },
            },
        )
        .unwrap();
        let mut g = GradStore::default();
        g.insert(a.as_tensor(), Tensor::new(&[-4f32], &Device::Cpu).unwrap());
        opt.step(&g, 0.2).unwrap();
        // First step moves by lr * lr_scale * sign(g) = 0.2 * 0.5 = 0.1 upwards.
        assert!((vals(&a)[0] - 2.1).abs() < 1e-6);
        assert_eq!(vals(&c), vec![3.0]);
        let st: HashMap<String, Tensor> = opt.state_tensors().unwrap().into_iter().collect();
        assert_eq!(st["step.a"].to_scalar::<i64>().unwrap(), 1);
        assert_eq!(st["step.c"].to_scalar::<i64>().unwrap(), 0);
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        let w = var(&[1.0; 6], &[2, 3]);
        let p = vec![("w".to_string(), w.clone())];
        let bad = AdamWConfig {
            betas: (1.0, 0.999),
            ..Default::default()
        };
        assert!(AdamW::new(p.clone(), bad)
            .err()
            .unwrap()
            .to_string()
            .contains("optimizer.betas[0]"));
        let e = AdamW::new(
            vec![("w".into(), w.clone()), ("w2".into(), w.clone())],
            AdamWConfig::default(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("`w`") && e.contains("`w2`"), "{e}");
        let mut opt = AdamW::new(p, AdamWConfig::default()).unwrap();
        let mut g = GradStore::default();
        g.insert(
            w.as_tensor(),
            Tensor::zeros((3, 2), DType::F32, &Device::Cpu).unwrap(),
        );
        let e = opt.step(&g, 0.1).unwrap_err().to_string();
        assert!(
            e.contains("`w`") && e.contains("[2, 3]") && e.contains("[3, 2]"),
            "{e}"
        );
        assert!(opt.step(&GradStore::default(), f64::NAN).is_err());
    }

    #[test]
    fn load_state_names_missing_mismatched_and_unknown_tensors() {
        let w = var(&[1.0; 6], &[2, 3]);
        let opt = AdamW::new(vec![("w".into(), w.clone())], AdamWConfig::default()).unwrap();
        let good = opt.state_tensors().unwrap();
        let mut other = AdamW::new(vec![("w".into(), w)], AdamWConfig::default()).unwrap();
        other.load_state(&good).unwrap();

        let missing: Vec<_> = good
            .iter()
            .filter(|(n, _)| n != "exp_avg_sq.w")
            .cloned()
            .collect();
        let e = other.load_state(&missing).unwrap_err().to_string();
        assert!(e.contains("`exp_avg_sq.w`") && e.contains("missing"), "{e}");

        let mut wrong = good.clone();
        for (n, t) in wrong.iter_mut() {
            if n == "exp_avg.w" {
                *t = Tensor::zeros((3, 2), DType::F32, &Device::Cpu).unwrap();
            }
        }
        let e = other.load_state(&wrong).unwrap_err().to_string();
        assert!(
            e.contains("`exp_avg.w`") && e.contains("[2, 3]") && e.contains("[3, 2]"),
            "{e}"
        );

        let mut extra = good.clone();
        extra.push((
            "exp_avg.v".into(),
            Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
        ));
        let e = other.load_state(&extra).unwrap_err().to_string();
        assert!(e.contains("`exp_avg.v`") && e.contains("unexpected"), "{e}");
    }

    #[test]
    fn step_flat_is_bit_identical_to_step() {
        // Two parameters (one decayed 2-D, one exempt 1-D), three steps with changing gradients:
        // the flat update must reproduce the GradStore one bit for bit (same per-element ops).
        let w0: Vec<f32> = (0..6).map(|i| (i as f32 * 0.37).sin()).collect();
        let b0 = [0.5f32, -0.25];
        let (w, b) = (var(&w0, &[2, 3]), var(&b0, &[2]));
        let cfg = AdamWConfig {
            betas: (0.9, 0.95),
            eps: 1e-8,
            weight_decay: 0.1,
        };
        let mut opt =
            AdamW::new(vec![("w".into(), w.clone()), ("b".into(), b.clone())], cfg).unwrap();
        let mut flat_opt = AdamW::new(
            vec![
                ("w".into(), var(&w0, &[2, 3])),
                ("b".into(), var(&b0, &[2])),
            ],
            cfg,
        )
        .unwrap();
        let mut flat: Vec<f32> = w0.iter().chain(&b0).copied().collect();
        for step in 0..3 {
            let g: Vec<f32> = (0..8)
                .map(|i| ((i + 3 * step) as f32 * 0.91).cos())
                .collect();
            let mut gs = GradStore::default();
            gs.insert(
                w.as_tensor(),
                Tensor::from_slice(&g[..6], (2, 3), &Device::Cpu).unwrap(),
            );
            gs.insert(
                b.as_tensor(),
                Tensor::from_slice(&g[6..], 2, &Device::Cpu).unwrap(),
            );
            opt.step(&gs, 0.01).unwrap();
            flat_opt.step_flat(&mut flat, &g, 0.01).unwrap();
        }
        let want: Vec<u32> = vals(&w)
            .iter()
            .chain(&vals(&b))
            .map(|x| x.to_bits())
            .collect();
        assert_eq!(flat.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want);
        assert_ne!(flat[0], w0[0], "the parameters moved");
        // State written by either is interchangeable (same names, values).
        let (a, c) = (
            opt.state_tensors().unwrap(),
            flat_opt.state_tensors().unwrap(),
        );
        for ((n1, t1), (n2, t2)) in a.iter().zip(&c) {
            assert_eq!(n1, n2);
            let (x, y): (Vec<f64>, Vec<f64>) = (
                t1.flatten_all()
                    .unwrap()
                    .to_dtype(DType::F64)
                    .unwrap()
                    .to_vec1()
                    .unwrap(),
                t2.flatten_all()
                    .unwrap()
                    .to_dtype(DType::F64)
                    .unwrap()
                    .to_vec1()
                    .unwrap(),
            );
            assert_eq!(x, y, "{n1}");
        }
        // A wrong length is an error naming both sizes.
        let e = flat_opt
            .step_flat(&mut flat[..7], &[0.0; 7], 0.01)
            .unwrap_err()
            .to_string();
        assert!(e.contains("7") && e.contains("8"), "{e}");
    }

    #[test]
    fn sgd_momentum_by_hand() {
        // p = 1, g = 1 twice, lr 0.1, momentum 0.5: b1 = 1 -> p = 0.9; b2 = 0.5 + 1 = 1.5 -> p = 0.75.
        let p = var(&[1.0], &[1]);
        let mut opt = Sgd::new(vec![("p".into(), p.clone())], 0.5, 0.0, default_no_decay).unwrap();
        let mut g = GradStore::default();
        g.insert(p.as_tensor(), Tensor::new(&[1f32], &Device::Cpu).unwrap());
        opt.step(&g, 0.1).unwrap();
        opt.step(&g, 0.1).unwrap();
        assert!((vals(&p)[0] - 0.75).abs() < 1e-6);
    }
}
