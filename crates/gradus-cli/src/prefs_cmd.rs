//! `gradus eval reward|ranking`, `gradus lab ranking-accuracy`: argument handling; the work is in
//! `gradus_eval::prefs` and `gradus_train::lab_ranking`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use gradus_data::tokenizer::Tokenizer;
use gradus_eval::prefs::{
    evaluate_ranking, evaluate_reward, load_eval_pairs, pad_id, ranking_text, reward_text,
    EvalPairs,
};
use gradus_model::hf::load_decoder;
use gradus_model::reward::RewardModel;
use gradus_objectives::ranking::DEFAULT_EPS;
use gradus_tensor::Device;

#[derive(Subcommand)]
pub enum EvalCmd {
    /// lm-evaluation-harness-compatible tasks (built-in or YAML task files) on a model.
    Run(crate::eval_cmd::EvalRunArgs),
    /// Pairwise accuracy of a reward model (overall and per category); writes every pair's scores.
    Reward(EvalRewardArgs),
    /// Ranking accuracy, idealised ranking accuracy, alignment gap and flip difficulty of a policy
    /// against a reference on preference pairs (Chen et al. 2024).
    Ranking(EvalRankingArgs),
    /// Code pass@k: sample completions from a checkpoint (or read a samples file), run them with
    /// the problems' tests in the sandbox, report unbiased pass@k with confidence intervals.
    Code(crate::code_cmd::EvalCodeArgs),
}

#[derive(Args)]
pub struct EvalData {
    /// Preference pairs (JSONL/Parquet file or directory), or `synthetic` for the built-in
    /// generator's held-out split.
    #[arg(long, default_value = "synthetic")]
    pub data: String,
    /// Pairs to generate with `--data synthetic`.
    #[arg(long, default_value_t = 200)]
    pub pairs: usize,
    /// Longest prompt + completion in tokens; longer pairs are skipped and counted.
    #[arg(long, default_value_t = 1024)]
    pub max_len: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct EvalRewardArgs {
    /// A reward model directory (written by `gradus train reward`).
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub data: EvalData,
    /// Write one JSON line per pair with its scores.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args)]
pub struct EvalRankingArgs {
    /// The policy checkpoint.
    #[arg(long)]
    pub model: PathBuf,
    /// The reference checkpoint (e.g. the SFT model DPO started from).
    #[arg(long)]
    pub reference: PathBuf,
    #[command(flatten)]
    pub data: EvalData,
    /// β for the DPO loss, reward accuracy and flip thresholds.
    #[arg(long, default_value_t = 0.1)]
    pub beta: f64,
}

#[derive(Subcommand)]
pub enum LabCmd {
    /// Pretrain → SFT → DPO on synthetic multi-rater preferences; shows the DPO loss falling and
    /// reward accuracy rising while ranking accuracy stays near the reference's (Chen et al. 2024).
    RankingAccuracy {
        #[arg(long, default_value = "runs")]
        dir: PathBuf,
        #[arg(long)]
        fast: bool,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value_t = 0.1)]
        beta: f64,
        /// Move earlier lab runs in --dir aside (never deleted) instead of refusing to start.
        #[arg(long)]
        overwrite: bool,
    },
    /// Hu et al. (2023): multi-seed modular-addition sweeps with and without a normalisation
    /// layer, Gaussian-HMM training maps and their detour states (see `training_maps_cmd`).
    TrainingMaps(crate::training_maps_cmd::TrainingMapsArgs),
    /// In-context learning emerges only with bursty sequences and many rare classes, abruptly;
    /// in-weights learning needs the opposite: a grid over burstiness and Zipf exponent
    /// (Chan et al. 2022; Reddy 2024).
    IclEmergence(crate::icl_cmd::IclEmergenceArgs),
    /// Trained long enough, ICL rises then fades while IWL rises; L2 regularisation keeps it
    /// (Singh et al. 2023).
    IclTransience(crate::icl_cmd::IclTransienceArgs),
    /// Which Boolean function classes are learned in context, against nearest neighbour,
    /// averaging and the optimal learner (Bhattamishra et al. 2024).
    BooleanIcl(crate::icl_cmd::BooleanIclArgs),
    /// An LM as a black-box optimiser of an Ehrlich function (LLOME: SFT, then DPO or MargE
    /// rounds against an oracle budget) vs the GA: regret against oracle calls (Chen, Stanton
    /// et al. 2024).
    Llome(crate::llome_cmd::LlomeArgs),
    /// Pretraining with human feedback: MLE, filtering, conditional training, unlikelihood, RWR
    /// and AWR on Python functions with PEP8 violations; misaligned share of samples and clean LM
    /// loss per objective (Korbak et al. 2023).
    Phf(crate::phf_cmd::PhfLabArgs),
    /// RL from verifiable rewards: GRPO with the built-in task's checker as the reward, from the
    /// quickstart's SFT model (made first unless --sft is given); held-out accuracy before and
    /// after with 95% intervals (Tulu 3 RLVR).
    Rlvr {
        /// An SFT checkpoint or run directory to start from (default: run the quickstart first).
        #[arg(long)]
        sft: Option<PathBuf>,
        /// GRPO optimiser steps.
        #[arg(long, default_value_t = 100)]
        steps: u64,
        #[arg(long, default_value = "runs")]
        dir: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Move earlier runs in --dir aside (never deleted) instead of refusing to start.
        #[arg(long)]
        overwrite: bool,
        /// Override the GRPO config (configs/rl/tiny.toml), e.g. --set train.lr=3e-4.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
    },
}

fn pairs_for(dir: &Path, d: &EvalData) -> Result<(Tokenizer, EvalPairs)> {
    let tok = Tokenizer::from_dir(dir)
        .with_context(|| format!("{}: needs a tokenizer.json", dir.display()))?;
    let pairs = load_eval_pairs(&d.data, &tok, d.max_len, d.pairs, d.seed)?;
    Ok((tok, pairs))
}

pub fn eval(cmd: EvalCmd) -> Result<()> {
    match cmd {
        EvalCmd::Code(a) => crate::code_cmd::run(a),
        EvalCmd::Run(a) => crate::eval_cmd::run(a),
        EvalCmd::Reward(a) => {
            let rm = RewardModel::load(&a.model)?;
            let (tok, data) = pairs_for(&a.model, &a.data)?;
            let e = evaluate_reward(&rm, &data.pairs, pad_id(&tok))?;
            if let Some(out) = &a.out {
                let lines: String = e
                    .scores
                    .iter()
                    .map(|(c, r)| format!("{}\n", serde_json::json!({"chosen": c, "rejected": r})))
                    .collect();
                gradus_tensor::io::write_atomic(out, lines.as_bytes())?;
            }
            if a.data.json {
                println!(
                    "{}",
                    serde_json::json!({"pairs": e.pairs, "accuracy": e.accuracy, "per_category": e.per_category, "skipped": data.skipped})
                );
            } else {
                println!("{}", reward_text(&e, data.skipped.total()));
            }
            Ok(())
        }
        EvalCmd::Ranking(a) => {
            let policy = load_decoder(&a.model, &Device::Cpu)?;
            let reference = load_decoder(&a.reference, &Device::Cpu)?;
            let (tok, data) = pairs_for(&a.model, &a.data)?;
            let r = evaluate_ranking(
                &policy,
                &reference,
                &data.pairs,
                pad_id(&tok),
                a.beta,
                DEFAULT_EPS,
            )?;
            if a.data.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!("{}", ranking_text(&r, a.beta, data.skipped.total()));
            }
            Ok(())
        }
    }
}

pub fn lab(cmd: LabCmd) -> Result<()> {
    match cmd {
        LabCmd::RankingAccuracy {
            dir,
            fast,
            seed,
            beta,
            overwrite,
        } => {
            let out = gradus_train::lab_ranking::run(&gradus_train::lab_ranking::LabOptions {
                dir,
                fast,
                seed,
                beta,
                progress: true,
                overwrite,
            })?;
            println!("{}", out.summary);
            Ok(())
        }
        LabCmd::TrainingMaps(a) => crate::training_maps_cmd::run(a),
        LabCmd::IclEmergence(a) => crate::icl_cmd::emergence(a),
        LabCmd::IclTransience(a) => crate::icl_cmd::transience(a),
        LabCmd::BooleanIcl(a) => crate::icl_cmd::boolean(a),
        LabCmd::Llome(a) => crate::llome_cmd::llome(a),
        LabCmd::Phf(a) => crate::phf_cmd::lab(a),
        LabCmd::Rlvr {
            sft,
            steps,
            dir,
            seed,
            overwrite,
            sets,
        } => {
            let rl = crate::config::resolve_from(gradus_train::rlvr::default_rl_config()?, &sets)?;
            let o = gradus_train::rlvr::run(&gradus_train::rlvr::RlvrOptions {
                dir,
                sft,
                steps,
                seed,
                progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
                overwrite,
                rl: Some(rl),
            })?;
            print!("{}", o.summary);
            Ok(())
        }
    }
}
