//! gradus-train: the training side of gradus.
//!
//! Model-agnostic pieces a recipe strings together, each in its own module:
//! - [`optim`]: AdamW (PyTorch semantics, per-parameter groups, savable state) and SGD over named
//!   `Var`s;
//! - [`schedule`]: learning-rate schedules with warmup (Hugging Face semantics);
//! - [`clip`]: global gradient norm, clipping, scaling and accumulation of a `GradStore`;
//! - [`checkpoint`]: atomic `checkpoints/step-N/` directories, `trainer_state.json`, file helpers;
//! - [`metrics`]: `metrics.jsonl`, with truncation on resume, mirrored to TensorBoard event files;
//! - [`tensorboard`]: TensorBoard event files (TFRecord framing, the few protobuf fields) written by hand;
//! - [`report`]: a self-contained `report.html` with hand-drawn SVG plots;
//! - [`rundir`]: one run per directory (refusal, `--overwrite`), the `run.lock`, what `--resume`
//!   may change;
//! - [`interrupt`]: SIGTERM/SIGINT finish the step, checkpoint, and stop;
//! - [`progress`]: progress bars on a terminal, plain lines otherwise;
//! - [`eval_hook`]: `[eval]`, lm-eval-compatible tasks (gradus-eval) during training;
//! - [`icl`]: in-context vs in-weights learning on bursty sequences, the labs `icl-emergence` and
//!   `icl-transience`, and the Boolean-function lab `boolean-icl`;
//! - [`sas`]: masked-LM training of a BERT encoder on a dependency grammar, the per-head UAS /
//!   SAS metric and the SAS regulariser, and the lab `sas` (Chen et al. 2024).
//!
//! The loop ([`trainer`]: `fit_learner` over a `Learner`) and the recipes built on it, one file
//! each, read top to bottom: [`recipe`] (configs), [`prep`] (data → packed rows), [`pretrain`],
//! [`sft`], [`dpo`] (the DPO family, KTO, MargE), [`reward`] (reward models), [`prefs`] (the
//! `[prefs]` section: preference pairs for `dpo` and `reward`), [`quickstart`] and
//! [`lab_ranking`] (the ranking-accuracy lab), [`llome`] (an LM as a black-box optimiser of
//! Ehrlich functions against the GA: `gradus lab llome`), [`evoprompting`] (an LM as the
//! mutation operator of an evolutionary program search: `gradus lab evoprompting`), [`ilf`]
//! (imitation learning from language feedback on tiny-language code: `gradus lab ilf`),
//! [`lab_constrained`] (constrained RL over composite rewards: `gradus lab constrained-rl`),
//! [`phf`] (`[phf]`: pretraining with human feedback, Korbak et al. 2023) and [`lab_phf`] (its
//! lab). [`lora`]: `[lora]`, adapters instead
//! of full fine-tuning, for every recipe built on the loop.
//!
//! The run directory these write is the contract with `gradus-eval` and `gradus-dynamics`:
//! ```text
//! runs/<name>/config.resolved.toml
//! runs/<name>/metrics.jsonl
//! runs/<name>/events.out.tfevents.<time>.<host>
//! runs/<name>/checkpoints/step-N/   model files, optimizer.safetensors, trainer_state.json
//! runs/<name>/report.html
//! runs/<name>/run.lock             while a process trains it: pid, host, start time
//! ```

pub mod checkpoint;
pub mod clip;
pub mod compare;
pub mod interrupt;
pub mod metrics;
pub mod optim;
pub mod progress;
pub mod report;
pub mod rlvr;
pub mod rundir;
pub mod schedule;
pub mod tensorboard;

pub mod dpo;
pub mod eval_hook;
pub mod evoprompting;
pub mod examples;
pub mod icl;
pub mod ilf;
pub mod lab_constrained;
pub mod lab_io;
pub mod lab_phf;
pub mod lab_ranking;
pub mod llome;
pub mod lora;
pub mod modular;
pub mod parity;
pub mod phf;
pub mod prefs;
pub mod prep;
pub mod pretrain;
pub mod quickstart;
pub mod recipe;
pub mod reward;
pub mod rl;
pub mod sas;
pub mod sft;
pub mod trainer;
pub mod value_head;
