//! `gradus lab …`: argument handling for every lab; the work is in `gradus_train` (one module per
//! lab) and the `*_cmd` files named below.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

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
    /// Syntactic attention structure in a masked LM on a dependency grammar: structure onset
    /// (best heads' UAS) vs the sudden loss drop, agreement minimal pairs, and the SAS
    /// regulariser suppressing throughout or early then released (Chen et al. 2024).
    Sas(crate::icl_cmd::SasArgs),
    /// An LM as a black-box optimiser of an Ehrlich function (LLOME: SFT, then DPO or MargE
    /// rounds against an oracle budget) vs the GA: regret against oracle calls (Chen, Stanton
    /// et al. 2024).
    Llome(crate::llome_cmd::LlomeArgs),
    /// An LM as the mutation/crossover operator of an evolutionary search over programs of the
    /// tiny language (EvoPrompting: parents annotated with their fitness → children, LoRA-tuned
    /// on the fittest each round), against its untuned ablation and a GA with random mutations at
    /// equal evaluations (Chen, Dohan & So 2023).
    Evoprompting(crate::evoprompting_cmd::EvopromptingArgs),
    /// Imitation learning from language feedback on code: programs in the tiny language, feedback
    /// templated from the failing test, refinements that pass the tests fine-tune the model;
    /// against fine-tuning on gold programs and on the model's own passing samples at equal data
    /// (Chen et al. 2023).
    Ilf(crate::ilf_cmd::IlfArgs),
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
    /// Reward-model overoptimisation and constrained RL (Moskovitz et al. 2024): PPO on two
    /// correlated component rewards with fixed weights, μ-PPO, ξ-PPO and NM-PPO, scored by a
    /// hidden evaluation score that peaks at the components' proxy points.
    ConstrainedRl {
        #[arg(long, default_value = "runs")]
        dir: PathBuf,
        #[arg(long, default_value = "lab-constrained-rl")]
        name: String,
        /// `default` (minutes on 2 cores) or `smoke` (seconds).
        #[arg(long, default_value = "default")]
        size: String,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// PPO steps per arm (default 300; smoke 3).
        #[arg(long)]
        steps: Option<u64>,
        /// SGD learning rate of the Lagrange multipliers (default 1.0 for μ-PPO, 0.3 for ξ/NM-PPO).
        #[arg(long)]
        multiplier_lr: Option<f64>,
        /// Proportional gain K_p of the multipliers (PI Lagrangian; default 10; 0: the paper's
        /// pure SGD update, under which policy and multipliers cycle).
        #[arg(long)]
        proportional: Option<f64>,
        /// NM-PPO's steps (default 3000; smoke 6): one run holds the whole threshold search.
        #[arg(long)]
        nm_steps: Option<u64>,
    },
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
        LabCmd::Sas(a) => crate::icl_cmd::sas(a),
        LabCmd::Llome(a) => crate::llome_cmd::llome(a),
        LabCmd::Evoprompting(a) => crate::evoprompting_cmd::evoprompting(a),
        LabCmd::Ilf(a) => crate::ilf_cmd::ilf(a),
        LabCmd::Phf(a) => crate::phf_cmd::lab(a),
        LabCmd::ConstrainedRl {
            dir,
            name,
            size,
            seed,
            steps,
            multiplier_lr,
            proportional,
            nm_steps,
        } => {
            use gradus_train::lab_constrained as lc;
            let mut o = lc::ConstrainedLabOptions::new(dir, size.parse()?);
            o.name = name;
            o.seed = seed;
            o.steps = steps;
            o.multiplier_lr = multiplier_lr;
            o.proportional = proportional;
            o.nm_steps = nm_steps;
            o.progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let lab = o.dir.join(&o.name);
            let rows = lc::run(&o)?;
            let start = lc::hidden_score(1.0 / 3.0, 1.0 / 3.0);
            print!("{}", lc::results_md(&o, &rows, start));
            println!("lab → {}", lab.display());
            Ok(())
        }
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
