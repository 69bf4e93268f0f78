//! gradus-dynamics: training dynamics as a walk through latent states (Hu, Chen, Saphra and Cho,
//! "Latent State Models of Training Dynamics", arXiv 2308.09543, TMLR 2023).
//!
//! - [`stats`]: the paper's 14 per-checkpoint weight statistics (plus per-matrix values);
//! - [`run`]: reading run directories (checkpoints, `dynamics.jsonl`, `metrics.jsonl`, convergence step);
//! - [`hmm`]: a Gaussian HMM (diagonal / full covariance, Baum–Welch in log space, Viterbi, AIC/BIC)
//!   with hmmlearn's update rules, and [`kmeans`] for its initialisation;
//! - [`select`]: z-scoring within runs, the 80/20 split over runs and model selection over 1–8 states;
//! - [`map`]: the training map (observed transitions, per-state table, detour and obligatory states);
//! - [`pipeline`]: `gradus dynamics map` end to end (load, z-score, fit on 80%, decode, write);
//! - [`report`]: the self-contained HTML report with the state graph drawn as SVG;
//! - [`stattest`]: Pearson correlation and its t-test.
//!
//! It reads run directories and never imports `gradus-train` (training may call it to record
//! statistics online; not the other way round).

pub mod hmm;
pub mod kmeans;
pub mod map;
pub mod pipeline;
pub mod report;
pub mod run;
pub mod select;
pub mod stats;
pub mod stattest;

pub use hmm::{Covariance, FitOptions, FitReport, GaussianHmm, Sequences};
pub use stats::{checkpoint_stats, CheckpointStats, MatrixSelection, MatrixStats, COLUMNS};
