//! gradus-objectives: pure loss functions over tensors. Objectives take tensors, never models.
//!
//! Token log-prob extraction (gradus-model), the objective (here) and the reduction (the recipe)
//! are three separate things. Each objective is one function citing its paper equation and returns
//! per-example losses plus the diagnostics a run logs.
//!
//! - [`preference`]: the DPO family over paired sequence log-probs (DPO, IPO, length-normalised DPO,
//!   SimPO, γ-scaled DPO, robust/conservative DPO, hinge), KTO (unpaired) and MargE.
//! - [`reward`]: reward-model losses (Bradley–Terry, margin, scaled, regression, centering).
//! - [`ranking`]: ranking accuracy, idealised ranking accuracy, alignment gap, flip difficulty
//!   (Chen et al. 2024), plain f64 arithmetic.
//! - [`rl`]: policy-gradient RL (GRPO, RLOO, REINFORCE++, ReMax advantages; PPO-clip with
//!   clip-higher, dual clip and GSPO ratios; k1/k2/k3 KL; grpo/bnpo/dr_grpo/dapo aggregation).
//! - [`phf`]: pretraining with human feedback (Korbak et al. 2023): unlikelihood, reward- and
//!   advantage-weighted regression over per-token log-probs.
//! - [`math`]: numerically stable log σ and friends as differentiable tensor ops.

pub mod math;
pub mod phf;
pub mod preference;
pub mod ranking;
pub mod reward;
pub mod rl;

pub use preference::{
    PairLogps, PairLoss, PairObjective, PreferenceObjective, SeqLogps, SingleObjective,
};
