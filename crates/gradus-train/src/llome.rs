//! `gradus lab llome`: a language model as a black-box sequence optimiser (LLOME, Chen, Stanton
//! et al. 2024, arXiv 2410.22296; RESEARCH §3.6) on an Ehrlich function, against the GA baseline,
//! in miniature on a CPU.
//!
//! Per seed (the function is fixed by `[ehrlich]`; a seed changes the GA's and the LM's draws):
//! 1. **Seed data**: holo's GA ([`gradus_tasks::ga`], `[ga]`: LLOME's 1,000 particles × 10 steps)
//!    from one feasible DMP sample; every distinct scored particle is kept with its f.
//! 2. **Edit pairs** x_low → x_high (LLOME's `find_dense_pairs`): for each sequence its
//!    `pairs.neighbors` nearest others (exact Hamming search; LLOME uses approximate NN) within
//!    Hamming distance `pairs.max_distance`·L, oriented by f (equal scores dropped), pairs whose
//!    lower sequence is infeasible cut to `pairs.max_infeasible` of the set. DPO gets LLOME's
//!    triples (x, y_w, y_l) among x's neighbours with f(y_w) > f(x) ≥ f(y_l) (x itself may be
//!    y_l). At most `pairs.max_pairs` (a seeded subsample) train a round.
//! 3. **Round 0: SFT** of a tiny decoder trained from scratch (`[model]`, `[first]`) on the GA
//!    pairs: prompt = x_low's states as tokens and a separator, target = x_high.
//! 4. **Each round** (round 0 and `budget.rounds` more): the LM proposes improvements of the
//!    `generation.prompts` best sequences of its training data, greedy plus `generation.samples`
//!    samples at each temperature, for `generation.iterations` iterations (each continuing from the
//!    trajectory's most likely proposal so far); outputs that are not L states are unparsable.
//!    The distinct, not yet labelled proposals are ranked by their length-normalised likelihood
//!    (kept above the `pairs.likelihood_quantile` quantile, LLOME's filter) and
//!    `budget.per_round` of them, drawn at random, are labelled by the oracle (when fewer than
//!    the budget pass the filter, the most likely ones are labelled, so every round spends its
//!    budget unless the LM proposed fewer new sequences). Temperatures rise
//!    when the previous round's proposals stayed close to their inputs (LLOME's
//!    `temperature_scaling`: +0.6/+0.4/+0.2 below a mean Hamming fraction 0.075/0.1/0.15).
//! 5. Rounds 1..: new pairs from the previous round's labels only (LLOME's
//!    `proportion_of_old_data = 0`), and the model is trained further with **SFT** (LLOME-SFT),
//!    **DPO** (β `dpo.beta`) or **MargE** (`[marge]`, reward r = max(0, f(y) − f(x)), infeasible
//!    as 0), each through the ordinary recipes ([`crate::sft::run`], [`crate::dpo::run`]) on a
//!    JSONL file: every round is a normal run directory.
//! 6. **GA baseline**: the same GA from the same start, continued to the same number of oracle
//!    calls as a LLOME run (seed data + every round's labels).
//!
//! Regret = 1 − best f found (infeasible counts as 0) against oracle calls, averaged over seeds,
//! is plotted in `report.html` and tabulated in `regret.md` and `results.json`.
//!
//! Layout (resumable: a finished stage is read back, an unfinished training run resumes from its
//! checkpoint):
//! ```text
//! <dir>/<name>/config.resolved.toml, function.json, tokenizer/, metrics.jsonl (regret per call)
//! <dir>/<name>/seed-<s>/seed_data.json, ga.json, r0-sft/ (run), r0.jsonl, r0-labels.json
//! <dir>/<name>/seed-<s>/<sft|dpo|marge>/r<i>/ (run), r<i>.jsonl, r<i>-labels.json
//! <dir>/<name>/results.json, regret.md, report.html
//! ```

use crate::lab_io::{cached, read_json, write_json, write_jsonl};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use gradus_data::preference::{completion_batch, completion_sequence, BadPairPolicy};
use gradus_data::tokenizer::Tokenizer;
use gradus_model::decoder::Decoder;
use gradus_model::generate::{generate, SamplingConfig};
use gradus_model::hf::load_decoder;
use gradus_objectives::{PairObjective, PreferenceObjective, SingleObjective};
use gradus_tasks::ehrlich::{hamming, score_or_zero, Ehrlich, EhrlichConfig};
use gradus_tasks::ga::{best_at, quantile, regret, run_ga, GaConfig, Oracle};
use gradus_tensor::io::write_atomic;
use gradus_tensor::rng::Rng;
use gradus_tensor::{Device, Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::checkpoint::latest_checkpoint;
use crate::report::{write_report, Section};
use crate::rundir::{open_run, Start};

/// The optimisers compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// The GA baseline.
    Ga,
    /// LLOME with SFT in every round.
    Sft,
    /// LLOME: one SFT round, then DPO.
    Dpo,
    /// LLOME: one SFT round, then MargE.
    Marge,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Ga => "ga",
            Method::Sft => "sft",
            Method::Dpo => "dpo",
            Method::Marge => "marge",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Method::Ga => "GA",
            Method::Sft => "LLOME-SFT",
            Method::Dpo => "LLOME-DPO",
            Method::Marge => "LLOME-MargE",
        }
    }
}

/// `[run]`: where the lab writes and which seeds it runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlomeRunSection {
    pub dir: PathBuf,
    pub name: String,
    pub seeds: Vec<u64>,
    /// Progress lines from the training runs.
    pub progress: bool,
}

impl Default for LlomeRunSection {
    fn default() -> Self {
        Self {
            dir: "runs".into(),
            name: "lab-llome".into(),
            seeds: vec![0, 1],
            progress: false,
        }
    }
}

/// `[budget]`: oracle labels per round and the number of rounds after the first (SFT) one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetSection {
    /// Oracle labels spent per round (LLOME: 2,000).
    pub per_round: u64,
    /// Rounds after the first SFT round (LLOME: 9).
    pub rounds: usize,
}

impl Default for BudgetSection {
    fn default() -> Self {
        Self {
            per_round: 200,
            rounds: 4,
        }
    }
}

/// `[pairs]`: how training pairs are formed (LLOME's `propen_dataset_formatting`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PairsSection {
    /// Largest Hamming distance of a pair, as a fraction of L.
    pub max_distance: f64,
    /// Nearest neighbours considered per sequence.
    pub neighbors: usize,
    /// Largest fraction of pairs whose lower sequence is infeasible.
    pub max_infeasible: f64,
    /// Proposals below this quantile of likelihood are not labelled.
    pub likelihood_quantile: f64,
    /// At most this many pairs (triples for DPO) train a round (seeded subsample).
    pub max_pairs: usize,
}

impl Default for PairsSection {
    fn default() -> Self {
        Self {
            max_distance: 0.25,
            neighbors: 30,
            max_infeasible: 0.1,
            likelihood_quantile: 0.6,
            max_pairs: 2000,
        }
    }
}

/// `[generation]`: how the LM proposes candidates each round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerationSection {
    /// Seed sequences (the best of the round's training data; LLOME: 200).
    pub prompts: usize,
    /// Iterations per round (LLOME: 10).
    pub iterations: usize,
    /// Samples per prompt at each temperature (LLOME: 10), besides one greedy proposal.
    pub samples: usize,
    /// Sampling temperatures (LLOME: 0.6, 0.8, …, 1.6).
    pub temperatures: Vec<f64>,
    /// Raise the temperatures when proposals stay close to their inputs.
    pub temperature_scaling: bool,
}

impl Default for GenerationSection {
    fn default() -> Self {
        Self {
            prompts: 32,
            iterations: 2,
            samples: 4,
            temperatures: vec![0.6, 1.0, 1.4],
            temperature_scaling: true,
        }
    }
}

impl GenerationSection {
    /// Proposals one round makes at most.
    pub fn proposals_per_round(&self) -> u64 {
        (self.prompts * self.iterations * (1 + self.samples * self.temperatures.len())) as u64
    }
}

/// `[model]`: the tiny decoder trained from scratch (Hugging Face names).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlomeModelSection {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
}

impl Default for LlomeModelSection {
    fn default() -> Self {
        Self {
            hidden_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            intermediate_size: 128,
        }
    }
}

/// Training settings of one kind of round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StageSection {
    pub steps: u64,
    pub batch_size: usize,
    pub lr: f64,
}

impl Default for StageSection {
    fn default() -> Self {
        Self {
            steps: 60,
            batch_size: 16,
            lr: 3e-4,
        }
    }
}

/// `[dpo]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlomeDpoSection {
    pub beta: f64,
}

impl Default for LlomeDpoSection {
    /// LLOME's f₂ DPO pipeline: β = 0.4.
    fn default() -> Self {
        Self { beta: 0.4 }
    }
}

/// `[marge]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlomeMargeSection {
    pub alpha: f64,
    pub beta: f64,
    pub self_normalize: bool,
}

impl Default for LlomeMargeSection {
    /// LLOME's f₂ MargE pipeline: α = 1, β = 10, self-normalised weights.
    fn default() -> Self {
        Self {
            alpha: 1.0,
            beta: 10.0,
            self_normalize: true,
        }
    }
}

/// The whole lab config (`configs/lab/llome.toml`; `llome-paper.toml` is the paper's scale).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlomeConfig {
    /// The optimisers compared (`ga`, `sft`, `dpo`, `marge`).
    pub methods: Vec<Method>,
    pub run: LlomeRunSection,
    pub ehrlich: EhrlichConfig,
    /// The seed-data GA and the GA baseline.
    pub ga: GaConfig,
    pub budget: BudgetSection,
    pub pairs: PairsSection,
    pub generation: GenerationSection,
    pub model: LlomeModelSection,
    /// The first (SFT) round, from scratch.
    pub first: StageSection,
    /// Every later round (SFT, DPO or MargE).
    pub train: StageSection,
    pub dpo: LlomeDpoSection,
    pub marge: LlomeMargeSection,
}

impl Default for LlomeConfig {
    /// The CPU default: LLOME's f₂ function (v = 32, L = 32, c = 4, k = 4) and seed GA, with
    /// fewer labels (200 per round), rounds (1 + 4), proposals and a tiny decoder.
    fn default() -> Self {
        Self {
            methods: vec![Method::Ga, Method::Sft, Method::Dpo, Method::Marge],
            run: LlomeRunSection::default(),
            ehrlich: EhrlichConfig::default(),
            ga: GaConfig::llome_seed(),
            budget: BudgetSection::default(),
            pairs: PairsSection::default(),
            generation: GenerationSection::default(),
            model: LlomeModelSection::default(),
            first: StageSection {
                steps: 300,
                batch_size: 32,
                lr: 2e-3,
            },
            train: StageSection::default(),
            dpo: LlomeDpoSection::default(),
            marge: LlomeMargeSection::default(),
        }
    }
}

impl LlomeConfig {
    /// The paper's f₂ setting (labels, rounds, proposals; `llome-paper.toml`), with the tiny
    /// decoder in place of Pythia-2.8B. Hours on a CPU.
    pub fn paper() -> Self {
        Self {
            run: LlomeRunSection {
                name: "lab-llome-paper".into(),
                seeds: vec![0, 1, 2],
                ..Default::default()
            },
            budget: BudgetSection {
                per_round: 2000,
                rounds: 9,
            },
            generation: GenerationSection {
                prompts: 200,
                iterations: 10,
                samples: 10,
                temperatures: vec![0.6, 0.8, 1.0, 1.2, 1.4, 1.6],
                temperature_scaling: true,
            },
            pairs: PairsSection {
                max_pairs: 20000,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Checks the settings; errors name the field.
    pub fn validate(&self) -> Result<()> {
        self.ehrlich.validate_at("ehrlich")?;
        self.ga.validate_at("ga")?;
        if self.ga.steps == 0 {
            return Err(Error::config(
                "ga.steps",
                "the seed GA needs at least one step",
            ));
        }
        if self.run.seeds.is_empty() {
            return Err(Error::config("run.seeds", "give at least one seed"));
        }
        if self.methods.is_empty() {
            return Err(Error::config(
                "methods",
                "give at least one of ga, sft, dpo, marge",
            ));
        }
        let g = &self.generation;
        if g.prompts == 0 || g.iterations == 0 {
            return Err(Error::config(
                "generation.prompts",
                "prompts and iterations must be ≥ 1",
            ));
        }
        if let Some(t) = g
            .temperatures
            .iter()
            .find(|t| !(**t > 0.0 && t.is_finite()))
        {
            return Err(Error::config(
                "generation.temperatures",
                format!("temperatures must be positive, got {t}"),
            ));
        }
        let b = &self.budget;
        if b.per_round < 2 {
            return Err(Error::config(
                "budget.per_round",
                format!(
                    "{} oracle label(s) is smaller than a round: a round needs at least 2 labels to form one training pair",
                    b.per_round
                ),
            ));
        }
        let most = g.proposals_per_round();
        if b.per_round > most {
            return Err(Error::config(
                "budget.per_round",
                format!(
                    "{} labels per round, but a round proposes at most {most} sequences \
                     (generation.prompts × iterations × (1 + samples × temperatures)): the budget could never be spent",
                    b.per_round
                ),
            ));
        }
        if self.ga.num_particles as u64 * self.ga.steps as u64 > 10_000_000 {
            return Err(Error::config(
                "ga.num_particles",
                "num_particles × steps above 10⁷ oracle calls of seed data",
            ));
        }
        let p = &self.pairs;
        if !(p.max_distance > 0.0 && p.max_distance <= 1.0) {
            return Err(Error::config("pairs.max_distance", "must be in (0, 1]"));
        }
        if p.neighbors == 0 || p.max_pairs == 0 {
            return Err(Error::config(
                "pairs.neighbors",
                "neighbors and max_pairs must be ≥ 1",
            ));
        }
        if !(0.0..1.0).contains(&p.max_infeasible) {
            return Err(Error::config("pairs.max_infeasible", "must be in [0, 1)"));
        }
        if !(0.0..=1.0).contains(&p.likelihood_quantile) {
            return Err(Error::config(
                "pairs.likelihood_quantile",
                "must be in [0, 1]",
            ));
        }
        for (name, s) in [("first", &self.first), ("train", &self.train)] {
            if s.steps == 0 || s.batch_size == 0 || !(s.lr > 0.0) {
                return Err(Error::config(
                    format!("{name}.steps"),
                    "steps, batch_size and lr must be positive",
                ));
            }
        }
        let m = &self.model;
        if m.hidden_size == 0
            || m.num_attention_heads == 0
            || !m.hidden_size.is_multiple_of(m.num_attention_heads)
        {
            return Err(Error::config(
                "model.hidden_size",
                "must be a positive multiple of num_attention_heads",
            ));
        }
        if !(self.dpo.beta > 0.0) {
            return Err(Error::config("dpo.beta", "must be positive"));
        }
        if !(self.marge.alpha >= 0.0 && self.marge.beta >= 0.0) {
            return Err(Error::config("marge.alpha", "alpha and beta must be ≥ 0"));
        }
        Ok(())
    }

    fn lab_dir(&self) -> PathBuf {
        self.run.dir.join(&self.run.name)
    }

    /// Tokens per training row: BOS, L states, separator, L states, EOS (2L + 3), and one spare.
    fn seq_len(&self) -> usize {
        2 * self.ehrlich.dim + 4
    }
}

// ------------------------------------------------------------------------------- data types

/// One oracle label of a round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Labelled {
    pub x: Vec<usize>,
    /// f(x); None = infeasible (−∞).
    pub f: Option<f64>,
    /// Length-normalised log-likelihood of the proposal given its input.
    pub loglik: f64,
    pub input: Vec<usize>,
}

/// A round's proposals and labels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    pub round: usize,
    pub pairs: usize,
    pub temperatures: Vec<f64>,
    pub proposals: usize,
    pub parsable: usize,
    pub distinct_new: usize,
    /// Mean Hamming distance of parsable proposals to their inputs, as a fraction of L.
    pub mean_hamming: f64,
    pub labelled: Vec<Labelled>,
}

/// The GA seed data of a seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedData {
    pub init: Vec<usize>,
    pub scored: Vec<(Vec<usize>, Option<f64>)>,
    pub calls: u64,
    pub trace: Vec<(u64, f64)>,
}

/// A best-so-far curve: (oracle calls, best f) at every improvement, and the calls spent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    pub trace: Vec<(u64, f64)>,
    pub calls: u64,
}

/// What the lab reports.
pub struct LlomeOutcome {
    pub lab_dir: PathBuf,
    /// Markdown regret table.
    pub table: String,
    pub report: PathBuf,
}

fn opt_f(f: f64) -> Option<f64> {
    f.is_finite().then_some(f)
}

fn f_of(f: Option<f64>) -> f64 {
    f.unwrap_or(f64::NEG_INFINITY)
}

// ------------------------------------------------------------------------------- tokens

/// The lab's word-level tokenizer: specials, the separator `:` and one token `s<i>` per state.
pub fn tokenizer(num_states: usize) -> Result<Tokenizer> {
    let mut vocab: Vec<String> = ["<|endoftext|>", "<|pad|>", "<|unk|>", ":"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    vocab.extend((0..num_states).map(|i| format!("s{i}")));
    let mut tok =
        Tokenizer::word_level(&vocab, &["<|endoftext|>", "<|pad|>", "<|unk|>"], "<|unk|>")?;
    tok.set_bos(Some("<|endoftext|>"))?;
    tok.set_eos(Some("<|endoftext|>"))?;
    tok.set_pad(Some("<|pad|>"))?;
    Ok(tok)
}

/// The id of state 0 in [`tokenizer`].
const STATE0: u32 = 4;

/// `s3 s17 …` (a completion).
pub fn seq_text(x: &[usize]) -> String {
    x.iter()
        .map(|s| format!("s{s}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The prompt of an edit: the sequence and the separator.
pub fn prompt_text(x: &[usize]) -> String {
    format!("{} :", seq_text(x))
}

/// Prompt ids as the recipes encode them: BOS, states, separator.
fn prompt_ids(x: &[usize]) -> Vec<u32> {
    let mut ids = vec![0u32];
    ids.extend(x.iter().map(|&s| STATE0 + s as u32));
    ids.push(3);
    ids
}

/// The first L generated tokens as states, or None (unparsable: a special token, the separator,
/// or fewer than L tokens).
pub fn parse_states(tokens: &[u32], dim: usize, num_states: usize) -> Option<Vec<usize>> {
    if tokens.len() < dim {
        return None;
    }
    tokens[..dim]
        .iter()
        .map(|&t| {
            let s = t.checked_sub(STATE0)? as usize;
            (s < num_states).then_some(s)
        })
        .collect()
}

// ------------------------------------------------------------------------------- pairs

/// For each item, its `k` nearest other items (Hamming, ties by index) within `max_d`.
fn neighbours(xs: &[Vec<usize>], k: usize, max_d: usize) -> Vec<Vec<usize>> {
    xs.iter()
        .enumerate()
        .map(|(i, a)| {
            let mut c: Vec<(usize, usize)> = xs
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(j, b)| (hamming(a, b), j))
                .filter(|(d, _)| *d <= max_d)
                .collect();
            c.sort_unstable();
            c.truncate(k);
            c.into_iter().map(|(_, j)| j).collect()
        })
        .collect()
}

/// Distinct items (first occurrence kept).
fn distinct(items: &[(Vec<usize>, f64)]) -> Vec<(Vec<usize>, f64)> {
    let mut seen = HashSet::new();
    items
        .iter()
        .filter(|(x, _)| seen.insert(x.clone()))
        .cloned()
        .collect()
}

/// An edit pair: the lower-scoring sequence, the higher one, and their scores.
#[derive(Clone, Debug, PartialEq)]
pub struct EditPair {
    pub low: Vec<usize>,
    pub high: Vec<usize>,
    pub f_low: f64,
    pub f_high: f64,
}

/// Keeps at most `round(n_ok · p / (1 − p))` of the `bad` entries (a seeded sample), LLOME's
/// `filter_infeasible_examples`.
fn cap_infeasible<T: Clone>(ok: Vec<T>, bad: Vec<T>, p: f64, rng: &mut Rng) -> Vec<T> {
    let keep = ((ok.len() as f64) * p / (1.0 - p)).round() as usize;
    let mut bad = bad;
    rng.shuffle(&mut bad);
    bad.truncate(keep);
    let mut all = ok;
    all.extend(bad);
    rng.shuffle(&mut all);
    all
}

/// LLOME's dense edit pairs among `items` (module docs, step 2).
pub fn edit_pairs(
    items: &[(Vec<usize>, f64)],
    dim: usize,
    p: &PairsSection,
    rng: &mut Rng,
) -> Vec<EditPair> {
    let items = distinct(items);
    let xs: Vec<Vec<usize>> = items.iter().map(|i| i.0.clone()).collect();
    let max_d = (p.max_distance * dim as f64).floor() as usize;
    let nn = neighbours(&xs, p.neighbors, max_d);
    let mut idx = std::collections::BTreeSet::new();
    for (i, ns) in nn.iter().enumerate() {
        for &j in ns {
            idx.insert((i.min(j), i.max(j)));
        }
    }
    let (mut ok, mut bad) = (Vec::new(), Vec::new());
    for (i, j) in idx {
        let (fi, fj) = (items[i].1, items[j].1);
        if fi == fj {
            continue; // equal scores (also both infeasible) make no pair
        }
        let (lo, hi) = if fi < fj { (i, j) } else { (j, i) };
        let pair = EditPair {
            low: xs[lo].clone(),
            high: xs[hi].clone(),
            f_low: items[lo].1,
            f_high: items[hi].1,
        };
        if pair.f_low.is_finite() {
            ok.push(pair)
        } else {
            bad.push(pair)
        }
    }
    let mut all = cap_infeasible(ok, bad, p.max_infeasible, rng);
    all.truncate(p.max_pairs);
    all
}

/// A DPO triple: prompt x, chosen y_w (better than x), rejected y_l (not better).
#[derive(Clone, Debug, PartialEq)]
pub struct Triple {
    pub x: Vec<usize>,
    pub chosen: Vec<usize>,
    pub rejected: Vec<usize>,
    pub f_chosen: f64,
}

/// LLOME's preference triples among `items` (`find_preference_pairs`).
pub fn preference_triples(
    items: &[(Vec<usize>, f64)],
    dim: usize,
    p: &PairsSection,
    rng: &mut Rng,
) -> Vec<Triple> {
    let items = distinct(items);
    let (ok, bad): (Vec<_>, Vec<_>) = items.into_iter().partition(|i| i.1.is_finite());
    let mut items = cap_infeasible(ok, bad, p.max_infeasible, rng);
    // A canonical order, so the triples depend on the data, not on the shuffle above.
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let xs: Vec<Vec<usize>> = items.iter().map(|i| i.0.clone()).collect();
    let f: Vec<f64> = items.iter().map(|i| i.1).collect();
    let max_d = (p.max_distance * dim as f64).floor() as usize;
    let nn = neighbours(&xs, p.neighbors, max_d);
    let mut set = std::collections::BTreeSet::new();
    for (i, ns) in nn.iter().enumerate() {
        let mut cands: Vec<(usize, usize)> = Vec::new();
        for &a in ns {
            for &b in ns {
                cands.push((a, b));
            }
            cands.push((i, a));
        }
        for (a, b) in cands {
            if f[a] > f[i] && f[b] <= f[i] {
                set.insert((i, a, b));
            } else if f[b] > f[i] && f[a] <= f[i] {
                set.insert((i, b, a));
            }
        }
    }
    let mut all: Vec<Triple> = set
        .into_iter()
        .map(|(i, w, l)| Triple {
            x: xs[i].clone(),
            chosen: xs[w].clone(),
            rejected: xs[l].clone(),
            f_chosen: f[w],
        })
        .collect();
    rng.shuffle(&mut all);
    all.truncate(p.max_pairs);
    all
}

/// The `n` best distinct sequences (f descending, then lexicographic).
fn best_distinct(items: impl IntoIterator<Item = (Vec<usize>, f64)>, n: usize) -> Vec<Vec<usize>> {
    let mut v: Vec<(Vec<usize>, f64)> = items.into_iter().collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut seen = HashSet::new();
    v.into_iter()
        .filter(|(x, _)| seen.insert(x.clone()))
        .take(n)
        .map(|(x, _)| x)
        .collect()
}

// ------------------------------------------------------------------------------- proposals

/// Length-normalised log π(completion + EOS | prompt) of each pair.
fn completion_logliks(
    model: &Decoder,
    prompts: &[Vec<u32>],
    completions: &[Vec<u32>],
    eos: u32,
    pad: u32,
) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(prompts.len());
    for (pc, cc) in prompts.chunks(64).zip(completions.chunks(64)) {
        let seqs: Vec<_> = pc
            .iter()
            .zip(cc)
            .map(|(p, c)| {
                let mut c = c.clone();
                c.push(eos);
                completion_sequence(p, &c)
            })
            .collect();
        let b = completion_batch(&seqs, pad)?;
        let lp = model
            .row_logps(
                &crate::trainer::forward_input(&b),
                &b.targets,
                &b.loss_weight,
            )?
            .to_vec1::<f32>()?;
        for (r, l) in lp.iter().enumerate() {
            let n: f32 = b.loss_weight[r * b.seq_len..(r + 1) * b.seq_len]
                .iter()
                .sum();
            out.push(*l as f64 / n.max(1.0) as f64);
        }
    }
    Ok(out)
}

/// LLOME's temperature schedule: higher temperatures when the last round's proposals stayed
/// close to their inputs.
pub fn scaled_temperatures(base: &[f64], prev_hamming: Option<f64>, scaling: bool) -> Vec<f64> {
    let shift = match prev_hamming {
        Some(h) if scaling && h < 0.075 => 0.6,
        Some(h) if scaling && h < 0.1 => 0.4,
        Some(h) if scaling && h < 0.15 => 0.2,
        _ => 0.0,
    };
    base.iter().map(|t| t + shift).collect()
}

/// One round's proposals from `model` for `seeds`, and the labels bought with the budget.
#[allow(clippy::too_many_arguments)]
fn propose_and_label(
    cfg: &LlomeConfig,
    f: &Ehrlich,
    model: &Decoder,
    seeds: &[Vec<usize>],
    labelled_before: &HashSet<Vec<usize>>,
    temps: &[f64],
    round: usize,
    pairs: usize,
    rng_seed: u64,
) -> Result<RoundRecord> {
    let g = &cfg.generation;
    let (dim, v) = (f.dim, f.num_states);
    let (eos, pad) = (0u32, 1u32);
    let mut inputs: Vec<Vec<usize>> = seeds.to_vec();
    // Best (loglik, x) per trajectory, and every distinct proposal with its best loglik and input.
    let mut traj_best: Vec<Option<(f64, Vec<usize>)>> = vec![None; seeds.len()];
    let mut pool: HashMap<Vec<usize>, (f64, Vec<usize>)> = HashMap::new();
    let (mut proposals, mut parsable, mut ham_sum) = (0usize, 0usize, 0.0f64);
    for it in 0..g.iterations {
        let pids: Vec<Vec<u32>> = inputs.iter().map(|x| prompt_ids(x)).collect();
        // (trajectory, tokens) of every proposal of this iteration.
        let mut outs: Vec<(usize, Vec<u32>)> = Vec::new();
        let greedy = SamplingConfig {
            max_new_tokens: dim + 1,
            temperature: 0.0,
            ..Default::default()
        };
        for (t, gen) in generate(model, &pids, &greedy, &[eos], &mut |_, _| false)?
            .into_iter()
            .enumerate()
        {
            outs.push((t, gen.tokens));
        }
        for (ti, &temp) in temps.iter().enumerate() {
            if g.samples == 0 {
                break;
            }
            let batch: Vec<Vec<u32>> = pids
                .iter()
                .flat_map(|p| std::iter::repeat_n(p.clone(), g.samples))
                .collect();
            let sc = SamplingConfig {
                max_new_tokens: dim + 1,
                temperature: temp,
                seed: rng_seed
                    .wrapping_mul(1_000_003)
                    .wrapping_add((round * 10_000 + it * 100 + ti) as u64),
                ..Default::default()
            };
            for (r, gen) in generate(model, &batch, &sc, &[eos], &mut |_, _| false)?
                .into_iter()
                .enumerate()
            {
                outs.push((r / g.samples, gen.tokens));
            }
        }
        proposals += outs.len();
        let parsed: Vec<(usize, Vec<usize>)> = outs
            .iter()
            .filter_map(|(t, toks)| parse_states(toks, dim, v).map(|x| (*t, x)))
            .collect();
        parsable += parsed.len();
        let pp: Vec<Vec<u32>> = parsed.iter().map(|(t, _)| pids[*t].clone()).collect();
        let cc: Vec<Vec<u32>> = parsed
            .iter()
            .map(|(_, x)| x.iter().map(|&s| STATE0 + s as u32).collect())
            .collect();
        let ll = completion_logliks(model, &pp, &cc, eos, pad)?;
        for ((t, x), l) in parsed.into_iter().zip(ll) {
            ham_sum += hamming(&x, &inputs[t]) as f64 / dim as f64;
            let e = pool
                .entry(x.clone())
                .or_insert((f64::NEG_INFINITY, inputs[t].clone()));
            if l > e.0 {
                *e = (l, inputs[t].clone());
            }
            if traj_best[t].as_ref().is_none_or(|b| l > b.0) {
                traj_best[t] = Some((l, x));
            }
        }
        for (t, b) in traj_best.iter().enumerate() {
            if let Some((_, x)) = b {
                inputs[t] = x.clone();
            }
        }
    }
    // Distinct proposals not labelled before, in a canonical order.
    let mut cand: Vec<(Vec<usize>, f64, Vec<usize>)> = pool
        .into_iter()
        .filter(|(x, _)| !labelled_before.contains(x))
        .map(|(x, (l, inp))| (x, l, inp))
        .collect();
    cand.sort_by(|a, b| a.0.cmp(&b.0));
    let distinct_new = cand.len();
    let budget = cfg.budget.per_round as usize;
    let mut rng = Rng::derive(rng_seed, &format!("llome-label-{round}"));
    if cand.len() > budget {
        let lls: Vec<f64> = cand.iter().map(|c| c.1).collect();
        let thr = quantile(&lls, cfg.pairs.likelihood_quantile);
        let kept: Vec<_> = cand.iter().filter(|c| c.1 >= thr).cloned().collect();
        if kept.len() >= budget {
            // LLOME: a random sample of the proposals above the likelihood quantile.
            cand = kept;
            rng.shuffle(&mut cand);
        } else {
            // Too few above it: the most likely proposals, so the whole budget is spent.
            cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        }
        cand.truncate(budget);
    }
    let labelled = cand
        .into_iter()
        .map(|(x, loglik, input)| Labelled {
            f: opt_f(f.evaluate(&x)),
            x,
            loglik,
            input,
        })
        .collect();
    Ok(RoundRecord {
        round,
        pairs,
        temperatures: temps.to_vec(),
        proposals,
        parsable,
        distinct_new,
        mean_hamming: if parsable > 0 {
            ham_sum / parsable as f64
        } else {
            1.0
        },
        labelled,
    })
}

// ------------------------------------------------------------------------------- training

/// A sequence with its f (−∞ when infeasible).
type Scored = (Vec<usize>, f64);

fn fill_train(c: &mut crate::recipe::TrainSection, s: &StageSection, progress: bool) {
    c.steps = s.steps;
    c.batch_size = s.batch_size;
    c.lr = s.lr;
    c.log_every = 10;
    c.eval_every = 0;
    c.weight_norms_every = 0;
    c.save_every = 0;
    c.keep_last = 1;
    c.progress = progress;
}

/// Which objective a round trains with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    First,
    Sft,
    Dpo,
    Marge,
}

/// Trains one round (a run directory `dir`) on `data` from `init` (None: from scratch) and
/// returns its final checkpoint. An interrupted round resumes from its checkpoint.
fn train_round(
    cfg: &LlomeConfig,
    stage: Stage,
    dir: &Path,
    data: &Path,
    init: Option<&Path>,
    seed: u64,
) -> Result<PathBuf> {
    let lab = cfg.lab_dir();
    let start = Start::Resume {
        explicit: Vec::new(),
    };
    let parent = dir.parent().unwrap_or(Path::new(".")).to_path_buf();
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let source = data.display().to_string();
    match stage {
        Stage::First | Stage::Sft => {
            let mut c = crate::recipe::RecipeConfig::default();
            c.run.dir = parent;
            c.run.name = name;
            c.run.seed = seed;
            c.tokenizer.path = Some(lab.join("tokenizer"));
            match init {
                Some(p) => c.model.init_from = Some(p.to_path_buf()),
                None => {
                    let m = &cfg.model;
                    c.model.config.hidden_size = m.hidden_size;
                    c.model.config.num_hidden_layers = m.num_hidden_layers;
                    c.model.config.num_attention_heads = m.num_attention_heads;
                    c.model.config.num_key_value_heads = m.num_attention_heads;
                    c.model.config.intermediate_size = m.intermediate_size;
                    c.model.config.max_position_embeddings = cfg.seq_len().next_power_of_two();
                }
            }
            c.data.source = source;
            c.data.seq_len = cfg.seq_len();
            c.data.pack = false;
            c.data.completion_only = true;
            c.data.val_fraction = 0.0;
            c.optimizer.weight_decay = 0.0;
            let s = if stage == Stage::First {
                &cfg.first
            } else {
                &cfg.train
            };
            fill_train(&mut c.train, s, cfg.run.progress);
            crate::sft::run(&c, start)?;
        }
        Stage::Dpo | Stage::Marge => {
            let mut c = crate::dpo::DpoConfig::default();
            c.run.dir = parent;
            c.run.name = name;
            c.run.seed = seed;
            c.model.init_from = init.map(Path::to_path_buf);
            c.data.source = source;
            c.data.seq_len = cfg.seq_len();
            c.prefs.eval_pairs = 0;
            c.prefs.on_bad_pair = BadPairPolicy::Skip;
            c.optimizer.weight_decay = 0.0;
            if stage == Stage::Dpo {
                c.objective = PreferenceObjective::Pair(PairObjective::Dpo {
                    beta: cfg.dpo.beta,
                    label_smoothing: 0.0,
                });
            } else {
                c.objective = PreferenceObjective::Single(SingleObjective::Marge {
                    alpha: cfg.marge.alpha,
                    beta: cfg.marge.beta,
                    self_normalize: cfg.marge.self_normalize,
                });
                c.prefs.unpaired = true;
            }
            fill_train(&mut c.train, &cfg.train, cfg.run.progress);
            crate::dpo::run(&c, start)?;
        }
    }
    latest_checkpoint(dir)?.ok_or_else(|| Error::format(dir, "the round wrote no checkpoint"))
}

/// The training file of a round from labelled `items`, and the items whose sequences seed the
/// next proposals (the better side of each pair / the chosen ones).
fn round_data(
    cfg: &LlomeConfig,
    stage: Stage,
    items: &[(Vec<usize>, f64)],
    path: &Path,
    rng: &mut Rng,
) -> Result<(usize, Vec<Scored>)> {
    let dim = cfg.ehrlich.dim;
    let (rows, better): (Vec<Value>, Vec<(Vec<usize>, f64)>) = match stage {
        Stage::Dpo => preference_triples(items, dim, &cfg.pairs, rng)
            .into_iter()
            .map(|t| {
                (
                    json!({"prompt": prompt_text(&t.x), "chosen": seq_text(&t.chosen), "rejected": seq_text(&t.rejected)}),
                    (t.chosen, t.f_chosen),
                )
            })
            .unzip(),
        Stage::Marge => edit_pairs(items, dim, &cfg.pairs, rng)
            .into_iter()
            .map(|p| {
                let r = (score_or_zero(p.f_high) - score_or_zero(p.f_low)).max(0.0);
                (
                    json!({"prompt": prompt_text(&p.low), "completion": seq_text(&p.high), "label": true, "reward": r}),
                    (p.high, p.f_high),
                )
            })
            .unzip(),
        Stage::First | Stage::Sft => edit_pairs(items, dim, &cfg.pairs, rng)
            .into_iter()
            .map(|p| {
                (
                    json!({"prompt": prompt_text(&p.low), "completion": seq_text(&p.high)}),
                    (p.high, p.f_high),
                )
            })
            .unzip(),
    };
    if !rows.is_empty() {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
        write_jsonl(path, &rows)?;
    }
    Ok((rows.len(), better))
}

// ------------------------------------------------------------------------------- curves

/// The best-so-far curve of the seed data followed by `rounds`' labels in order.
pub fn curve(seed: &SeedData, rounds: &[RoundRecord]) -> Curve {
    let mut trace = seed.trace.clone();
    let mut best = trace.last().map_or(f64::NEG_INFINITY, |t| t.1);
    let mut calls = seed.calls;
    for r in rounds {
        for l in &r.labelled {
            calls += 1;
            let y = f_of(l.f);
            if y > best {
                best = y;
                trace.push((calls, y));
            }
        }
    }
    Curve { trace, calls }
}

/// Mean and sample standard deviation.
fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n.max(1.0);
    let sd = if v.len() > 1 {
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (m, sd)
}

// ------------------------------------------------------------------------------- the lab

/// One seed: GA seed data, the GA baseline and every LLOME variant. Returns each method's curve.
fn run_seed(cfg: &LlomeConfig, f: &Ehrlich, seed: u64) -> Result<BTreeMap<Method, Curve>> {
    let dir = cfg.lab_dir().join(format!("seed-{seed}"));
    let methods: HashSet<Method> = cfg.methods.iter().copied().collect();
    let label_rounds = cfg.budget.rounds as u64 + 1;

    // 1. Seed data from the GA.
    let seed_data: SeedData = cached(&dir.join("seed_data.json"), || {
        eprintln!(
            "[seed {seed}] GA seed data ({} particles × {} steps)…",
            cfg.ga.num_particles, cfg.ga.steps
        );
        let mut rng = Rng::derive(seed, "llome-ga");
        let init = f.initial_solutions(1, &mut rng).remove(0);
        let mut oracle = Oracle::new(f, None);
        let out = run_ga(&cfg.ga, &init, &mut oracle, &mut rng)?;
        Ok(SeedData {
            init,
            scored: out.scored.into_iter().map(|(x, y)| (x, opt_f(y))).collect(),
            calls: oracle.calls(),
            trace: oracle.trace().to_vec(),
        })
    })?;
    let mut curves = BTreeMap::new();

    // 2. The GA baseline: the same GA, continued to a LLOME run's calls.
    if methods.contains(&Method::Ga) {
        let total = seed_data.calls + label_rounds * cfg.budget.per_round;
        let c: Curve = cached(&dir.join("ga.json"), || {
            eprintln!("[seed {seed}] GA baseline to {total} oracle calls…");
            let mut rng = Rng::derive(seed, "llome-ga");
            let init = f.initial_solutions(1, &mut rng).remove(0);
            let mut oracle = Oracle::new(f, Some(total));
            let ga = GaConfig {
                steps: total.div_ceil(cfg.ga.num_particles as u64) as usize,
                ..cfg.ga.clone()
            };
            run_ga(&ga, &init, &mut oracle, &mut rng)?;
            Ok(Curve {
                trace: oracle.trace().to_vec(),
                calls: oracle.calls(),
            })
        })?;
        curves.insert(Method::Ga, c);
    }
    let llm: Vec<Method> = [Method::Sft, Method::Dpo, Method::Marge]
        .into_iter()
        .filter(|m| methods.contains(m))
        .collect();
    if llm.is_empty() {
        return Ok(curves);
    }

    // 3. Round 0: SFT from scratch on the GA pairs, then the first proposals (shared).
    let seed_items: Vec<(Vec<usize>, f64)> = seed_data
        .scored
        .iter()
        .map(|(x, y)| (x.clone(), f_of(*y)))
        .collect();
    let mut seen0: HashSet<Vec<usize>> = seed_items.iter().map(|i| i.0.clone()).collect();
    let r0: RoundRecord = cached(&dir.join("r0-labels.json"), || {
        let mut rng = Rng::derive(seed, "llome-pairs-0");
        let data = dir.join("r0.jsonl");
        let (n, better) = round_data(cfg, Stage::First, &seed_items, &data, &mut rng)?;
        if n == 0 {
            return Err(Error::config(
                "pairs.max_distance",
                "the GA seed data formed no edit pairs: raise pairs.max_distance or ga.mutation_prob",
            ));
        }
        eprintln!("[seed {seed}] round 0: SFT on {n} GA edit pairs…");
        let ck = train_round(cfg, Stage::First, &dir.join("r0-sft"), &data, None, seed)?;
        let model = load_decoder(&ck, &Device::Cpu)?;
        let prompts = best_distinct(better, cfg.generation.prompts);
        let temps = cfg.generation.temperatures.clone();
        propose_and_label(cfg, f, &model, &prompts, &seen0, &temps, 0, n, seed)
    })?;
    let ck0 = latest_checkpoint(&dir.join("r0-sft"))?
        .ok_or_else(|| Error::format(dir.join("r0-sft"), "round 0 has no checkpoint"))?;
    seen0.extend(r0.labelled.iter().map(|l| l.x.clone()));

    // 4. Each variant's rounds.
    for m in llm {
        let mdir = dir.join(m.name());
        let stage = match m {
            Method::Sft => Stage::Sft,
            Method::Dpo => Stage::Dpo,
            _ => Stage::Marge,
        };
        let mut rounds = vec![r0.clone()];
        let mut seen = seen0.clone();
        let mut ck = ck0.clone();
        for r in 1..=cfg.budget.rounds {
            let prev = rounds.last().cloned().unwrap_or_else(|| r0.clone());
            let items: Vec<(Vec<usize>, f64)> = prev
                .labelled
                .iter()
                .map(|l| (l.x.clone(), f_of(l.f)))
                .collect();
            let run_dir = mdir.join(format!("r{r}"));
            let rec: RoundRecord = cached(&mdir.join(format!("r{r}-labels.json")), || {
                let mut rng = Rng::derive(seed, &format!("llome-pairs-{}-{r}", m.name()));
                let data = mdir.join(format!("r{r}.jsonl"));
                let (n, better) = round_data(cfg, stage, &items, &data, &mut rng)?;
                let model_ck = if n > 0 {
                    eprintln!(
                        "[seed {seed}] {} round {r}: training on {n} examples…",
                        m.label()
                    );
                    train_round(
                        cfg,
                        stage,
                        &run_dir,
                        &data,
                        Some(&ck),
                        seed * 1000 + r as u64,
                    )?
                } else {
                    eprintln!(
                        "[seed {seed}] {} round {r}: no pairs formed; the model is unchanged",
                        m.label()
                    );
                    ck.clone()
                };
                let model = load_decoder(&model_ck, &Device::Cpu)?;
                let pool = if better.is_empty() {
                    items.clone()
                } else {
                    better
                };
                let prompts = best_distinct(pool, cfg.generation.prompts);
                let temps = scaled_temperatures(
                    &cfg.generation.temperatures,
                    Some(prev.mean_hamming),
                    cfg.generation.temperature_scaling,
                );
                propose_and_label(
                    cfg,
                    f,
                    &model,
                    &prompts,
                    &seen,
                    &temps,
                    r,
                    n,
                    seed * 1000 + r as u64,
                )
            })?;
            if let Some(c) = latest_checkpoint(&run_dir)? {
                ck = c;
            }
            seen.extend(rec.labelled.iter().map(|l| l.x.clone()));
            rounds.push(rec);
        }
        curves.insert(m, curve(&seed_data, &rounds));
    }
    Ok(curves)
}

/// The checkpoints (oracle calls) at which regret is reported: end of seed data and of each
/// round, as planned.
fn checkpoints(seed_calls: u64, cfg: &LlomeConfig) -> Vec<u64> {
    (0..=cfg.budget.rounds as u64 + 1)
        .map(|r| seed_calls + r * cfg.budget.per_round)
        .collect()
}

/// Runs the lab (`start`: a new lab directory, `--resume` or `--overwrite`).
pub fn run(cfg: &LlomeConfig, start: Start) -> Result<LlomeOutcome> {
    cfg.validate()?;
    let lab = cfg.lab_dir();
    let mut rd = open_run(&lab, cfg, &start)?;
    rd.write_config()?;
    let t0 = std::time::Instant::now();
    let f = Ehrlich::new(&cfg.ehrlich)?;
    write_json(&lab.join("function.json"), &f)?;
    let tok_dir = lab.join("tokenizer");
    if !tok_dir.join("tokenizer.json").exists() {
        std::fs::create_dir_all(&tok_dir).map_err(|e| Error::io(&tok_dir, e))?;
        tokenizer(f.num_states)?.save(&tok_dir)?;
    }

    let mut per_seed: BTreeMap<u64, BTreeMap<Method, Curve>> = BTreeMap::new();
    for &s in &cfg.run.seeds {
        per_seed.insert(s, run_seed(cfg, &f, s)?);
    }

    // Regret at the planned checkpoints, per method, over seeds.
    let seed_calls = (cfg.ga.num_particles * cfg.ga.steps) as u64;
    let xs = checkpoints(seed_calls, cfg);
    let mut methods: Vec<Method> = cfg.methods.clone();
    methods.sort();
    methods.dedup();
    let mut regrets: BTreeMap<Method, Vec<Vec<f64>>> = BTreeMap::new(); // [checkpoint][seed]
    for &m in &methods {
        let rows: Vec<Vec<f64>> = xs
            .iter()
            .map(|&x| {
                per_seed
                    .values()
                    .filter_map(|c| c.get(&m))
                    .map(|c| regret(best_at(&c.trace, x)))
                    .collect()
            })
            .collect();
        regrets.insert(m, rows);
    }
    // metrics.jsonl: mean regret per method at each checkpoint (step = oracle calls).
    let mut lines = String::new();
    for (i, &x) in xs.iter().enumerate() {
        let mut row = serde_json::Map::new();
        row.insert("step".into(), json!(x));
        for (m, r) in &regrets {
            row.insert(format!("regret/{}", m.name()), json!(mean_sd(&r[i]).0));
        }
        lines.push_str(&Value::Object(row).to_string());
        lines.push('\n');
    }
    write_atomic(&lab.join("metrics.jsonl"), lines.as_bytes())?;

    // The table: paper vs ours.
    // The paper's findings as its abstract states them (no numbers transcribed).
    let paper = |m: Method| match m {
        Method::Ga => "highest regret: LLMs reach lower regret with fewer evaluations",
        Method::Sft | Method::Dpo => {
            "below the GA; difficulty reaching f* without explicit rewards"
        }
        Method::Marge => "lowest (explicit rewards); solves some Ehrlich functions",
    };
    let last = xs.len() - 1;
    let mut table = format!(
        "| method | regret after seed data ({} calls) | final regret ({} calls), mean ± sd over {} seeds | per seed | paper (f₂, qualitative) |\n|---|---|---|---|---|\n",
        xs[0], xs[last], cfg.run.seeds.len()
    );
    let mut rows_html = Vec::new();
    for (m, r) in &regrets {
        let (m0, _) = mean_sd(&r[0]);
        let (mf, sf) = mean_sd(&r[last]);
        let each = r[last]
            .iter()
            .map(|x| format!("{x:.3}"))
            .collect::<Vec<_>>()
            .join(", ");
        table.push_str(&format!(
            "| {} | {m0:.3} | {mf:.3} ± {sf:.3} | {each} | {} |\n",
            m.label(),
            paper(*m)
        ));
        rows_html.push((
            m.label().to_string(),
            format!("{mf:.3} ± {sf:.3} (seeds: {each}); paper: {}", paper(*m)),
        ));
    }
    write_atomic(&lab.join("regret.md"), table.as_bytes())?;
    let results = json!({
        "checkpoints": xs,
        "regret": regrets.iter().map(|(m, r)| (m.name().to_string(), json!(r))).collect::<serde_json::Map<_, _>>(),
        "curves": per_seed.iter().map(|(s, c)| (s.to_string(), json!(c.iter().map(|(m, c)| (m.name().to_string(), json!(c))).collect::<serde_json::Map<_, _>>()))).collect::<serde_json::Map<_, _>>(),
    });
    write_json(&lab.join("results.json"), &results)?;

    // Per-round diagnostics of the first seed.
    let mut diag = Vec::new();
    if let Some(&s) = cfg.run.seeds.first() {
        let sd = cfg.lab_dir().join(format!("seed-{s}"));
        for m in &methods {
            if *m == Method::Ga {
                continue;
            }
            for r in 0..=cfg.budget.rounds {
                let p = if r == 0 {
                    sd.join("r0-labels.json")
                } else {
                    sd.join(m.name()).join(format!("r{r}-labels.json"))
                };
                if let Ok(rec) = read_json::<RoundRecord>(&p) {
                    let feas = rec.labelled.iter().filter(|l| l.f.is_some()).count();
                    let best = rec
                        .labelled
                        .iter()
                        .map(|l| f_of(l.f))
                        .fold(f64::NEG_INFINITY, f64::max);
                    diag.push((
                        format!("{} round {r}", m.label()),
                        format!(
                            "{} pairs; {} proposals, {} parsable, {} new; labelled {} ({} feasible), best f {:.3}; mean Hamming {:.3}; T = {:?}",
                            rec.pairs, rec.proposals, rec.parsable, rec.distinct_new, rec.labelled.len(), feas, best, rec.mean_hamming, rec.temperatures
                        ),
                    ));
                }
            }
        }
    }
    let keys: Vec<String> = methods
        .iter()
        .map(|m| format!("regret/{}", m.name()))
        .collect();
    let key_refs: Vec<&str> = keys.iter().map(|s| s.as_str()).collect();
    let summary = format!(
        "Ehrlich function v = {}, L = {}, c = {}, k = {}, q = {} (seed {}); {} seeds; seed data {} oracle calls (GA {} particles × {} steps), then 1 SFT round + {} rounds of {} labels. \
         The x axis of the plot (\"step\") is the number of oracle calls; regret = 1 − best f found (infeasible = 0), mean over seeds. Took {:.0} s.",
        cfg.ehrlich.num_states, cfg.ehrlich.dim, cfg.ehrlich.num_motifs, cfg.ehrlich.motif_length, cfg.ehrlich.quantization(), cfg.ehrlich.seed,
        cfg.run.seeds.len(), seed_calls, cfg.ga.num_particles, cfg.ga.steps, cfg.budget.rounds, cfg.budget.per_round,
        t0.elapsed().as_secs_f64()
    );
    let sections = vec![
        Section::text("Setting", &summary),
        Section::plot("Regret vs oracle calls (mean over seeds)", &key_refs),
        Section::table("Final regret: ours vs the paper", rows_html),
        Section::pre("regret.md", &table),
        Section::table("Rounds (first seed)", diag),
        Section::table_from_json("Config", &serde_json::to_value(cfg).unwrap_or(Value::Null)),
    ];
    let report = write_report(&lab, "gradus lab llome", &sections)?;
    Ok(LlomeOutcome {
        lab_dir: lab,
        table,
        report,
    })
}
