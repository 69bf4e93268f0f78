//! `gradus lab constrained-rl`: reward-model overoptimisation and constrained RL in miniature
//! (Moskovitz et al. 2024; RESEARCH §3.5).
//!
//! The task: a tiny decoder, first fine-tuned to write `words` random words from a vocabulary of
//! `vocab` (`w0 w7 w3 …`, uniform), is then trained by PPO with two **correlated component
//! rewards**, the share of its words in A = {w0, w1, w2, w3} and in B = {w2, w3, w4, w5} (they
//! share w2, w3). A **hidden evaluation score** (never a training reward) is the mean of
//! `1 − ((r_A − 0.6)/0.6)²` and `1 − ((r_B − 0.5)/0.6)²`: it rises with each component up to its
//! **proxy point** (0.6, 0.5) and falls past it, as the paper's human-rating stand-in does.
//!
//! Four PPO runs from the same start, same steps, β and settings:
//! - `fixed`: PPO on r_A + r_B (fixed weights): more of both is always better for it, so it is
//!   expected to push past the proxy points (overoptimisation: the eval score rises, then falls);
//! - `mu`: μ-PPO, inequality constraints r_i ≥ θ_i at the proxy points, the KL as the objective;
//! - `xi`: ξ-PPO, equality constraints r_i = θ_i;
//! - `nm`: NM-PPO, ξ-PPO (as the paper's NM-PPO config: equality constraints) whose θ starts at
//!   (0.4, 0.4) and is moved by Nelder–Mead against the eval score within the one run: at each θ
//!   it trains until the components have reached θ (±5%, as the paper's implementation checks;
//!   at most 32 batches), then one evaluation = the mean eval score over 16 generation batches.
//!   It gets more steps than the other arms (`nm_steps`): a search needs ~30 evaluations.
//!
//! The constrained arms use a PI Lagrangian by default (`proportional` K_p = 10: λ_i =
//! squash(p_i + K_p·(θ_i − mean_i)), Stooke et al. 2020): with the paper's pure SGD update
//! (K_p = 0) the whitened advantages push the policy at full strength whichever way λ points,
//! so policy and multipliers cycle around θ (r_A swinging 0.35 ↔ 0.8 at θ* here) and NM-PPO
//! scores each θ on a random phase of the cycle. `--proportional 0` runs the paper's update.
//!
//! Layout: `<dir>/<name>/{tokenizer/, sft.jsonl, prompts.jsonl, sft/, fixed/, mu/, xi/, nm/,
//! results.md, summary.json, report.html}`. Every stage is an ordinary run directory, resumed when
//! it exists (a finished one is not retrained).

use std::path::{Path, PathBuf};

use gradus_data::tokenizer::Tokenizer;
use gradus_tensor::rng::Rng;
use gradus_tensor::{Error, Result};
use serde::Serialize;
use serde_json::{json, Value};

use crate::rl::constraints::{ConstraintKind, ThresholdSearch};
use crate::rl::rewards::{RewardKind, RewardSpec};
use crate::rl::{AlgorithmKind, RlConfig};
use crate::rundir::Start;
use crate::schedule::Schedule;

/// The component word sets and the hidden score's peaks (proxy points) and width.
pub const SET_A: [&str; 4] = ["w0", "w1", "w2", "w3"];
pub const SET_B: [&str; 4] = ["w2", "w3", "w4", "w5"];
pub const PROXY: [f64; 2] = [0.6, 0.5];
pub const WIDTH: f64 = 0.6;
/// NM-PPO's starting thresholds.
pub const NM_START: [f64; 2] = [0.4, 0.4];

/// Sizes: `smoke` (seconds, for tests) or `default` (minutes on 2 cores).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum LabSize {
    Smoke,
    Default,
}

impl std::str::FromStr for LabSize {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "smoke" => Ok(Self::Smoke),
            "default" => Ok(Self::Default),
            o => Err(Error::config(
                "--size",
                format!("`{o}`: expected smoke or default"),
            )),
        }
    }
}

/// What the lab runs.
#[derive(Clone, Debug)]
pub struct ConstrainedLabOptions {
    pub dir: PathBuf,
    pub name: String,
    pub size: LabSize,
    pub seed: u64,
    /// PPO steps per arm (default by size).
    pub steps: Option<u64>,
    /// SGD learning rate of the multipliers (None: 1.0 for μ-PPO, 0.3 for ξ-PPO and NM-PPO,
    /// whose tanh is steeper; the paper's 0.1 is for thousands of updates, the lab has a few
    /// hundred).
    pub multiplier_lr: Option<f64>,
    /// The multipliers' proportional gain K_p (None: 10; 0: the paper's pure SGD update).
    pub proportional: Option<f64>,
    /// NM-PPO's steps (default by size: it runs a whole search).
    pub nm_steps: Option<u64>,
    pub progress: bool,
}

impl ConstrainedLabOptions {
    pub fn new(dir: impl Into<PathBuf>, size: LabSize) -> Self {
        Self {
            dir: dir.into(),
            name: "lab-constrained-rl".into(),
            size,
            seed: 0,
            steps: None,
            multiplier_lr: None,
            proportional: None,
            nm_steps: None,
            progress: false,
        }
    }
    fn lab_dir(&self) -> PathBuf {
        self.dir.join(&self.name)
    }
    fn vocab(&self) -> usize {
        12
    }
    fn words(&self) -> usize {
        match self.size {
            LabSize::Smoke => 6,
            LabSize::Default => 12,
        }
    }
    fn sft_steps(&self) -> u64 {
        match self.size {
            LabSize::Smoke => 10,
            LabSize::Default => 300,
        }
    }
    fn rl_steps(&self) -> u64 {
        self.steps.unwrap_or(match self.size {
            LabSize::Smoke => 3,
            LabSize::Default => 300,
        })
    }
    /// NM-PPO's steps.
    pub fn nm_steps(&self) -> u64 {
        self.nm_steps.unwrap_or(match self.size {
            LabSize::Smoke => 6,
            LabSize::Default => 3000,
        })
    }
    /// K_p of the constrained arms.
    pub fn proportional(&self) -> f64 {
        self.proportional.unwrap_or(10.0)
    }
}

/// One arm's outcome, averaged over the last fifth of its steps.
#[derive(Clone, Debug, Serialize)]
pub struct ArmResult {
    pub arm: String,
    pub r_a: f64,
    pub r_b: f64,
    pub eval: f64,
    /// The eval score averaged over every step of the run.
    pub mean_eval: f64,
    /// The best eval score of any logged step (smoothed over 5 steps) and where.
    pub peak_eval: f64,
    pub peak_step: u64,
    pub kl: Option<f64>,
    /// θ at the end (constrained arms).
    pub thresholds: Option<[f64; 2]>,
}

/// The lab's word-level tokenizer: specials, `go`, `:` and `w0 … w{vocab−1}`.
pub fn tokenizer(vocab: usize) -> Result<Tokenizer> {
    let mut v: Vec<String> = ["<|endoftext|>", "<|pad|>", "<|unk|>", "go", ":"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.extend((0..vocab).map(|i| format!("w{i}")));
    let mut tok = Tokenizer::word_level(&v, &["<|endoftext|>", "<|pad|>", "<|unk|>"], "<|unk|>")?;
    tok.set_bos(Some("<|endoftext|>"))?;
    tok.set_eos(Some("<|endoftext|>"))?;
    tok.set_pad(Some("<|pad|>"))?;
    Ok(tok)
}

/// The hidden evaluation score of component shares (r_A, r_B).
pub fn hidden_score(r_a: f64, r_b: f64) -> f64 {
    let p = |r: f64, c: f64| 1.0 - ((r - c) / WIDTH).powi(2);
    0.5 * (p(r_a, PROXY[0]) + p(r_b, PROXY[1]))
}

fn words_reward(name: &str, set: &[&str], peak: Option<f64>, weight: f32) -> RewardSpec {
    RewardSpec {
        name: Some(name.into()),
        weight,
        kind: RewardKind::WordFraction {
            words: set.iter().map(|s| s.to_string()).collect(),
            peak,
            width: WIDTH,
        },
    }
}

/// The PPO config of one arm (everything but the constraints).
pub fn arm_config(o: &ConstrainedLabOptions, arm: &str, init: &Path) -> RlConfig {
    let lab = o.lab_dir();
    let mut c = RlConfig::default();
    c.run.dir = lab.clone();
    c.run.name = arm.into();
    c.run.seed = o.seed;
    c.model.init_from = Some(init.to_path_buf());
    c.data.source = lab.join("prompts.jsonl").display().to_string();
    c.generation.max_new_tokens = o.words();
    c.algorithm.kind = AlgorithmKind::Ppo;
    c.algorithm.num_generations = 4;
    c.algorithm.beta = 0.02;
    c.algorithm.lam = 0.95;
    c.rewards = vec![
        words_reward("A", &SET_A, None, 1.0),
        words_reward("B", &SET_B, None, 1.0),
    ];
    c.constraints.eval = vec![
        words_reward("eval_A", &SET_A, Some(PROXY[0]), 0.5),
        words_reward("eval_B", &SET_B, Some(PROXY[1]), 0.5),
    ];
    let steps = if arm == "nm" {
        o.nm_steps()
    } else {
        o.rl_steps()
    };
    c.train.steps = steps;
    c.train.batch_size = 16;
    c.train.lr = 1e-3;
    c.train.log_every = 1;
    c.train.save_every = steps.div_ceil(3).max(1);
    c.train.progress = o.progress;
    c.optimizer.weight_decay = 0.0;
    c.schedule = Schedule::Constant { warmup_steps: 0 };
    c.constraints.initial = 0.1;
    c.constraints.proportional = o.proportional();
    c.constraints.lr =
        o.multiplier_lr
            .unwrap_or(if arm == "xi" || arm == "nm" { 0.3 } else { 1.0 });
    match arm {
        "mu" | "xi" => {
            c.constraints.kind = if arm == "mu" {
                ConstraintKind::Inequality
            } else {
                ConstraintKind::Equality
            };
            c.constraints.thresholds = PROXY.to_vec();
        }
        "nm" => {
            c.constraints.kind = ConstraintKind::Equality;
            c.constraints.thresholds = NM_START.to_vec();
            c.constraints.search = ThresholdSearch::NelderMead;
            c.constraints.search_step = 0.15;
            c.constraints.search_reach_tol = 0.05;
            c.constraints.search_burn_in = 64;
            c.constraints.search_every = 16;
            // The eval score is flat near θ* (width 0.6: 0.01 below the peak is ~0.08 away in
            // one coordinate) and a 16-batch mean is noisy (sd ≈ 0.004 here): a spread below
            // 0.003 on a simplex within 0.03 ends the search, else at most 30 iterations.
            c.constraints.search_iterations = 30;
            c.constraints.search_tol = 0.003;
            c.constraints.search_xtol = 0.03;
        }
        _ => {}
    }
    c
}

fn col(rows: &[serde_json::Map<String, Value>], key: &str) -> Vec<(u64, f64)> {
    rows.iter()
        .filter_map(|r| Some((r.get("step")?.as_u64()?, r.get(key)?.as_f64()?)))
        .collect()
}

fn tail_mean(v: &[(u64, f64)]) -> f64 {
    let k = (v.len() / 5).max(1);
    let t = &v[v.len().saturating_sub(k)..];
    t.iter().map(|x| x.1).sum::<f64>() / t.len().max(1) as f64
}

fn arm_result(run_dir: &Path, arm: &str) -> Result<ArmResult> {
    let rows = crate::metrics::read_metrics(&run_dir.join("metrics.jsonl"))?;
    let (a, b, e) = (
        col(&rows, "rewards/A/mean"),
        col(&rows, "rewards/B/mean"),
        col(&rows, "eval_score"),
    );
    if e.is_empty() {
        return Err(Error::format(run_dir, "no eval_score in metrics.jsonl"));
    }
    let mut peak = (0u64, f64::NEG_INFINITY);
    for i in 0..e.len() {
        let w = &e[i.saturating_sub(2)..(i + 3).min(e.len())];
        let m = w.iter().map(|x| x.1).sum::<f64>() / w.len() as f64;
        if m > peak.1 {
            peak = (e[i].0, m);
        }
    }
    let kl = col(&rows, "kl");
    let th = |k: &str| col(&rows, k).last().map(|x| x.1);
    Ok(ArmResult {
        arm: arm.into(),
        r_a: tail_mean(&a),
        r_b: tail_mean(&b),
        eval: tail_mean(&e),
        mean_eval: e.iter().map(|x| x.1).sum::<f64>() / e.len() as f64,
        peak_eval: peak.1,
        peak_step: peak.0,
        kl: (!kl.is_empty()).then(|| tail_mean(&kl)),
        thresholds: match (th("constraints/A/threshold"), th("constraints/B/threshold")) {
            (Some(x), Some(y)) => Some([x, y]),
            _ => None,
        },
    })
}

/// Runs (or resumes) every stage and writes the results; returns one row per arm.
pub fn run(o: &ConstrainedLabOptions) -> Result<Vec<ArmResult>> {
    let lab = o.lab_dir();
    std::fs::create_dir_all(&lab).map_err(|e| Error::io(&lab, e))?;
    let tok_dir = lab.join("tokenizer");
    if !tok_dir.join("tokenizer.json").exists() {
        tokenizer(o.vocab())?.save(&tok_dir)?;
    }
    // Data: uniform random words after `go :`, and the RL prompts.
    let mut rng = Rng::derive(o.seed, "lab-constrained/sft-data");
    let sft_rows: Vec<Value> = (0..4000)
        .map(|_| {
            let w: Vec<String> = (0..o.words())
                .map(|_| format!("w{}", rng.below(o.vocab())))
                .collect();
            json!({"prompt": "go :", "completion": w.join(" ")})
        })
        .collect();
    crate::lab_io::write_jsonl(&lab.join("sft.jsonl"), &sft_rows)?;
    crate::lab_io::write_jsonl(
        &lab.join("prompts.jsonl"),
        &vec![json!({"prompt": "go :"}); 64],
    )?;
    // The starting policy: a tiny decoder fine-tuned from scratch on the random words.
    let mut s = crate::recipe::RecipeConfig::default();
    s.run.dir = lab.clone();
    s.run.name = "sft".into();
    s.run.seed = o.seed;
    s.tokenizer.path = Some(tok_dir);
    s.model.config.hidden_size = 32;
    s.model.config.num_hidden_layers = 1;
    s.model.config.num_attention_heads = 2;
    s.model.config.num_key_value_heads = 2;
    s.model.config.intermediate_size = 64;
    s.model.config.max_position_embeddings = 64;
    s.data.source = lab.join("sft.jsonl").display().to_string();
    s.data.seq_len = o.words() + 4;
    s.data.pack = false;
    s.data.completion_only = true;
    s.data.val_fraction = 0.0;
    s.optimizer.weight_decay = 0.0;
    s.train.steps = o.sft_steps();
    s.train.batch_size = 32;
    s.train.lr = 3e-3;
    s.train.log_every = 10;
    s.train.save_every = o.sft_steps();
    s.train.progress = o.progress;
    let resume = || Start::Resume {
        explicit: Vec::new(),
    };
    crate::sft::run(&s, resume())?;
    let init = crate::checkpoint::latest_checkpoint(&lab.join("sft"))?
        .ok_or_else(|| Error::format(lab.join("sft"), "the SFT stage wrote no checkpoint"))?;
    let mut rows = Vec::new();
    let mut dirs = Vec::new();
    for arm in ["fixed", "mu", "xi", "nm"] {
        eprintln!("== constrained-rl: {arm} ==");
        let c = arm_config(o, arm, &init);
        crate::rl::run(&c, resume())?;
        let d = lab.join(arm);
        rows.push(arm_result(&d, arm)?);
        dirs.push(d);
    }
    let start = hidden_score(SET_A.len() as f64 / 12.0, SET_B.len() as f64 / 12.0);
    let md = results_md(o, &rows, start);
    gradus_tensor::io::write_atomic(&lab.join("results.md"), md.as_bytes())?;
    let summary = json!({"size": o.size, "seed": o.seed, "steps": o.rl_steps(),
        "nm_steps": o.nm_steps(), "proportional": o.proportional(), "arms": rows,
        "proxy_points": PROXY, "eval_at_uniform": start});
    gradus_tensor::io::write_atomic(
        &lab.join("summary.json"),
        serde_json::to_string_pretty(&summary)
            .map_err(|e| Error::msg(e.to_string()))?
            .as_bytes(),
    )?;
    let keys: Vec<String> = [
        "eval_score",
        "rewards/A/mean",
        "rewards/B/mean",
        "kl",
        "constraints/A/lambda",
        "constraints/B/lambda",
        "constraints/A/threshold",
        "constraints/B/threshold",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let html = crate::compare::compare_runs(&dirs, Some(&keys))?;
    gradus_tensor::io::write_atomic(&lab.join("report.html"), html.as_bytes())?;
    Ok(rows)
}

/// The paper's claims and ours, as Markdown.
pub fn results_md(o: &ConstrainedLabOptions, rows: &[ArmResult], start: f64) -> String {
    let mut s = String::from("# Constrained RL over composite rewards (lab)\n\n");
    s.push_str(&format!(
        "`gradus lab constrained-rl` ({:?} size, seed {}, {} PPO steps per arm, NM-PPO {}; multipliers' \
K_p = {}). Components: share of words in \
A = {{w0..w3}} and B = {{w2..w5}} (correlated through w2, w3). Hidden eval = mean of 1 − ((r − θ*)/{WIDTH})² at \
proxy points θ* = ({}, {}); at the uniform start it is {start:.3}.\n\n",
        o.size,
        o.seed,
        o.rl_steps(),
        o.nm_steps(),
        o.proportional(),
        PROXY[0],
        PROXY[1]
    ));
    s.push_str("| arm | r_A | r_B | eval (last 20%) | eval (mean over the run) | best eval (step) | KL | θ at the end |\n|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        s.push_str(&format!(
            "| {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} ({}) | {} | {} |\n",
            r.arm,
            r.r_a,
            r.r_b,
            r.eval,
            r.mean_eval,
            r.peak_eval,
            r.peak_step,
            r.kl.map_or("—".into(), |k| format!("{k:.3}")),
            r.thresholds
                .map_or("—".into(), |t| format!("({:.2}, {:.2})", t[0], t[1]))
        ));
    }
    if let Some(t) = rows
        .iter()
        .find(|r| r.arm == "nm")
        .and_then(|r| r.thresholds)
    {
        s.push_str(&format!(
            "\nNM-PPO's θ at the end: ({:.3}, {:.3}); θ* = ({}, {}); largest coordinate gap {:.3}.\n",
            t[0],
            t[1],
            PROXY[0],
            PROXY[1],
            (t[0] - PROXY[0]).abs().max((t[1] - PROXY[1]).abs())
        ));
    }
    s.push_str(
        "\nPaper (Moskovitz et al. 2024): fixed-weight PPO overoptimises the component rewards (the \
evaluation score peaks, then falls); μ-PPO and ξ-PPO hold the components near the proxy points and reach \
a higher evaluation score; NM-PPO finds the proxy points within one run.\n",
    );
    s
}
