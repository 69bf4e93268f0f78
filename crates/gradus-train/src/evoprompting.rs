//! `gradus lab evoprompting`: a language model as the mutation and crossover operator of an
//! evolutionary search (EvoPrompting, Chen, Dohan & So 2023, arXiv 2302.14838; RESEARCH §3.11,
//! "toolkit miniature"), against a GA with random mutations at equal evaluations, on program
//! synthesis in the tiny language ([`gradus_tasks::evo`]: a hidden target program, fitness =
//! closeness of the outputs on test inputs minus a size penalty).
//!
//! 1. **Pretraining** (once per lab, target-independent): a tiny decoder from scratch (an ordinary
//!    `train sft` run directory, loss on every token) on documents that teach the format
//!    ```text
//!    parent f7 : let a = x * 3 ; print a + 1 ; parent f9 : print x * 4 ; target f11 : <child>
//!    ```
//!    whose parents are random genomes (the second often a mutation of the first, as in a
//!    population), whose child is made from them by the GA's random crossover and mutations, and
//!    whose `fK` annotations are fitness buckets (K = round(20·fitness)) against a random target of
//!    the document, the `target` being the child's own (hindsight), so the LM learns to write
//!    children near their parents and what a fitness annotation means.
//! 2. **Rounds** per seed (a seed draws the hidden target, the initial population and every later
//!    draw), each arm with its own counting [`Evaluator`] of `budget.evaluations` calls, all arms
//!    starting from the same `search.initial` random genomes (counted by each):
//!    - `search.prompts` (m) prompts, each of `search.parents` (k) parents drawn uniformly from
//!      the population, sorted by fitness (best last), annotated with their fitness buckets and a
//!      target `search.target_delta` above the best parent;
//!    - `search.children` (n) children sampled per prompt (temperature, top-p), evaluated (every
//!      child counts, unparsable ones too, until the budget is spent);
//!    - children below `search.threshold` are dropped; population ← top `search.population` of
//!      population ∪ children ([`survive`]);
//!    - **EvoPrompting** only: before each later round, LoRA adapters (`[tune]`) are trained on
//!      the pretrained LM from scratch on the `tune.examples` fittest distinct children so far,
//!      each as (its parents' prompt with its own fitness as the target → the child); the paper
//!      prompt-tunes a soft prompt, LoRA is the parameter-efficient stand-in here. Every tuning is
//!      a `train sft` run directory with `[lora]`.
//!
//!    Arms: `evoprompting`, `no_tuning` (the pretrained LM as the operator, never tuned: the
//!    paper's ablation) and `ga` (the same loop with [`ga_children`]: random crossover and AST
//!    mutations in place of the LM).
//! 3. **Report**: best fitness against evaluations per arm (mean over seeds) in `report.html`,
//!    mean ± sd per round and the final table in `results.md`, `results.json`, and example prompts
//!    and children in `examples.md`.
//!
//! Layout (resumable: finished rounds are read back, an interrupted training run resumes):
//! ```text
//! <dir>/<name>/config.resolved.toml, tokenizer/, pretrain.jsonl, pretrain/ (run), metrics.jsonl
//! <dir>/<name>/seed-<s>/target.json, <arm>/r<i>.json (round records), evoprompting/tune-r<i>/ (runs)
//! <dir>/<name>/results.json, results.md, examples.md, report.html
//! ```

use crate::lab_io::{cached, write_json_pretty, write_jsonl};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use gradus_data::tokenizer::Tokenizer;
use gradus_model::decoder::Decoder;
use gradus_model::generate::{generate, SamplingConfig};
use gradus_model::lora::load_model_dir;
use gradus_model::LoraConfig;
use gradus_tasks::evo::{
    ga_child, ga_children, random_genome, render, sample_parents, survive, Evaluator, EvoGaConfig,
    EvoTarget, EvoTaskConfig, Member,
};
use gradus_tasks::lang;
use gradus_tensor::io::write_atomic;
use gradus_tensor::rng::Rng;
use gradus_tensor::{Device, Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::checkpoint::latest_checkpoint;
use crate::report::{write_report, Section};
use crate::rundir::{open_run, Start};

/// The arms compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arm {
    /// The LM as operator, LoRA-tuned on the fittest children before every later round.
    Evoprompting,
    /// The pretrained LM as operator, never tuned (the paper's ablation).
    NoTuning,
    /// Random crossover and AST mutations.
    Ga,
}

impl Arm {
    pub fn name(self) -> &'static str {
        match self {
            Arm::Evoprompting => "evoprompting",
            Arm::NoTuning => "no_tuning",
            Arm::Ga => "ga",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Arm::Evoprompting => "EvoPrompting (LM + LoRA tuning)",
            Arm::NoTuning => "EvoPrompting without tuning",
            Arm::Ga => "GA (random mutations)",
        }
    }
    /// The paper's finding for this arm (qualitative; its numbers are on other tasks).
    fn paper(self) -> &'static str {
        match self {
            Arm::Evoprompting => "best: beats plain evolution and every ablation",
            Arm::NoTuning => "worse than with prompt-tuning",
            Arm::Ga => {
                "worse than the LM operator (paper's baselines: naive few-shot, random search)"
            }
        }
    }
}

/// `[run]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvoRunSection {
    pub dir: PathBuf,
    pub name: String,
    /// Each seed draws a hidden target, an initial population and every later draw.
    pub seeds: Vec<u64>,
    /// Progress lines from the training runs.
    pub progress: bool,
}

impl Default for EvoRunSection {
    fn default() -> Self {
        Self {
            dir: "runs".into(),
            name: "lab-evoprompting".into(),
            seeds: vec![0, 1, 2],
            progress: false,
        }
    }
}

/// `[search]`: the evolutionary loop shared by every arm.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchSection {
    /// Random genomes evaluated first (the seed population; the paper's are hand-written).
    pub initial: usize,
    /// Population kept after each round (top by fitness).
    pub population: usize,
    /// Prompts per round (m).
    pub prompts: usize,
    /// Parents per prompt (k; 1 = mutation only, ≥ 2 = crossover).
    pub parents: usize,
    /// Children per prompt (n).
    pub children: usize,
    /// Children below this fitness are dropped.
    pub threshold: f64,
    /// The prompt's target is this much above the best parent's fitness (capped at 1).
    pub target_delta: f64,
}

impl Default for SearchSection {
    fn default() -> Self {
        Self {
            initial: 16,
            population: 16,
            prompts: 8,
            parents: 2,
            children: 8,
            threshold: 0.05,
            target_delta: 0.1,
        }
    }
}

impl SearchSection {
    /// Evaluations one round spends.
    pub fn per_round(&self) -> u64 {
        (self.prompts * self.children) as u64
    }
}

/// `[budget]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvoBudgetSection {
    /// Fitness evaluations per arm and seed, the initial population included (the last round
    /// may be cut short).
    pub evaluations: u64,
}

impl Default for EvoBudgetSection {
    fn default() -> Self {
        // 16 initial + 10 rounds of 8 × 8.
        Self { evaluations: 656 }
    }
}

/// `[model]`: the tiny decoder pretrained from scratch (Hugging Face names).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvoModelSection {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    /// Context (tokens per training row and the most a prompt plus its child may take).
    pub seq_len: usize,
}

impl Default for EvoModelSection {
    fn default() -> Self {
        Self {
            hidden_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            intermediate_size: 192,
            seq_len: 256,
        }
    }
}

/// `[pretrain]`: the format-teaching corpus and its training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvoPretrainSection {
    pub documents: usize,
    pub steps: u64,
    pub batch_size: usize,
    pub lr: f64,
    /// Seed of the corpus and the run (shared by every lab seed: pretraining never sees a target).
    pub seed: u64,
}

impl Default for EvoPretrainSection {
    fn default() -> Self {
        Self {
            documents: 16_000,
            steps: 1500,
            batch_size: 16,
            lr: 2e-3,
            seed: 0,
        }
    }
}

/// `[tune]`: EvoPrompting's per-round tuning (LoRA on the pretrained LM).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TuneSection {
    /// The fittest distinct children so far trained on.
    pub examples: usize,
    pub steps: u64,
    pub batch_size: usize,
    pub lr: f64,
    pub lora: LoraConfig,
}

impl Default for TuneSection {
    fn default() -> Self {
        Self {
            examples: 64,
            steps: 30,
            batch_size: 16,
            lr: 2e-3,
            lora: LoraConfig {
                r: 8,
                lora_alpha: 16.0,
                target_modules: [
                    "q_proj",
                    "k_proj",
                    "v_proj",
                    "o_proj",
                    "gate_proj",
                    "up_proj",
                    "down_proj",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect(),
                ..Default::default()
            },
        }
    }
}

/// `[generation]`: sampling children.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvoGenerationSection {
    pub temperature: f64,
    pub top_p: f64,
    /// Longest child (tokens); genomes longer than this are never parents.
    pub max_new_tokens: usize,
}

impl Default for EvoGenerationSection {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 0.95,
            max_new_tokens: 64,
        }
    }
}

/// The whole lab config (`configs/evoprompting/default.toml`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvoConfig {
    /// The arms compared (`evoprompting`, `no_tuning`, `ga`).
    pub arms: Vec<Arm>,
    pub run: EvoRunSection,
    pub task: EvoTaskConfig,
    pub search: SearchSection,
    pub budget: EvoBudgetSection,
    pub ga: EvoGaConfig,
    pub model: EvoModelSection,
    pub pretrain: EvoPretrainSection,
    pub tune: TuneSection,
    pub generation: EvoGenerationSection,
}

impl Default for EvoConfig {
    /// The CPU default (minutes on 2 cores in the release build).
    fn default() -> Self {
        Self {
            arms: vec![Arm::Evoprompting, Arm::NoTuning, Arm::Ga],
            run: EvoRunSection::default(),
            task: EvoTaskConfig::default(),
            search: SearchSection::default(),
            budget: EvoBudgetSection::default(),
            ga: EvoGaConfig::default(),
            model: EvoModelSection::default(),
            pretrain: EvoPretrainSection::default(),
            tune: TuneSection::default(),
            generation: EvoGenerationSection::default(),
        }
    }
}

/// Scale presets of the lab.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvoSize {
    /// Seconds, for tests: one seed, two tiny rounds, a tiny model.
    Smoke,
    /// The CPU default.
    Default,
}

impl EvoConfig {
    /// The preset of `size`.
    pub fn preset(size: EvoSize) -> Self {
        match size {
            EvoSize::Default => Self::default(),
            EvoSize::Smoke => Self {
                run: EvoRunSection {
                    name: "lab-evoprompting".into(),
                    seeds: vec![0],
                    ..Default::default()
                },
                search: SearchSection {
                    initial: 4,
                    population: 4,
                    prompts: 2,
                    parents: 2,
                    children: 3,
                    ..Default::default()
                },
                budget: EvoBudgetSection { evaluations: 16 },
                model: EvoModelSection {
                    hidden_size: 32,
                    num_hidden_layers: 1,
                    num_attention_heads: 2,
                    intermediate_size: 64,
                    seq_len: 128,
                },
                pretrain: EvoPretrainSection {
                    documents: 64,
                    steps: 3,
                    batch_size: 8,
                    ..Default::default()
                },
                tune: TuneSection {
                    examples: 8,
                    steps: 2,
                    batch_size: 4,
                    ..Default::default()
                },
                generation: EvoGenerationSection {
                    max_new_tokens: 24,
                    ..Default::default()
                },
                ..Default::default()
            },
        }
    }

    /// Checks every setting; errors name the field.
    pub fn validate(&self) -> Result<()> {
        self.task.validate_at("task")?;
        self.ga.validate_at("ga")?;
        if self.arms.is_empty() {
            return Err(Error::config(
                "arms",
                "give at least one of evoprompting, no_tuning, ga",
            ));
        }
        if self.run.seeds.is_empty() {
            return Err(Error::config("run.seeds", "give at least one seed"));
        }
        let s = &self.search;
        for (name, v) in [
            ("search.initial", s.initial),
            ("search.population", s.population),
            ("search.prompts", s.prompts),
            ("search.parents", s.parents),
            ("search.children", s.children),
        ] {
            if v == 0 {
                return Err(Error::config(name, "must be at least 1"));
            }
        }
        if s.parents > s.population.min(s.initial) {
            return Err(Error::config(
                "search.parents",
                format!(
                    "{} parents per prompt, but the population holds at most {}",
                    s.parents,
                    s.population.min(s.initial)
                ),
            ));
        }
        if !(0.0..1.0).contains(&s.threshold) {
            return Err(Error::config("search.threshold", "must be in [0, 1)"));
        }
        if !(0.0..=1.0).contains(&s.target_delta) {
            return Err(Error::config("search.target_delta", "must be in [0, 1]"));
        }
        let round = s.initial as u64 + s.per_round();
        if self.budget.evaluations < round {
            return Err(Error::config(
                "budget.evaluations",
                format!(
                    "{} evaluations is smaller than the initial population plus one round \
                     (search.initial {} + search.prompts × search.children {} = {round}): no round could run",
                    self.budget.evaluations,
                    s.initial,
                    s.per_round()
                ),
            ));
        }
        if self.budget.evaluations > 1_000_000 {
            return Err(Error::config("budget.evaluations", "must be at most 10⁶"));
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
        if m.num_hidden_layers == 0 || m.intermediate_size == 0 {
            return Err(Error::config(
                "model.num_hidden_layers",
                "layers and intermediate_size must be ≥ 1",
            ));
        }
        let g = &self.generation;
        if !(g.temperature > 0.0 && g.temperature.is_finite()) {
            return Err(Error::config("generation.temperature", "must be positive"));
        }
        if !(g.top_p > 0.0 && g.top_p <= 1.0) {
            return Err(Error::config("generation.top_p", "must be in (0, 1]"));
        }
        if g.max_new_tokens < 8 {
            return Err(Error::config(
                "generation.max_new_tokens",
                "must be at least 8",
            ));
        }
        // A prompt (BOS, k parents of at most max_new_tokens words with 3 words of annotation
        // each, the target's 3 words) and its child must fit the context.
        let need = 1 + s.parents * (g.max_new_tokens + 3) + 3 + g.max_new_tokens + 1;
        if need > m.seq_len {
            return Err(Error::config(
                "model.seq_len",
                format!(
                    "{} tokens, but a prompt of search.parents = {} parents of up to generation.max_new_tokens = {} words and its child need {need}",
                    m.seq_len, s.parents, g.max_new_tokens
                ),
            ));
        }
        for (name, st, bs, lr) in [
            (
                "pretrain",
                self.pretrain.steps,
                self.pretrain.batch_size,
                self.pretrain.lr,
            ),
            ("tune", self.tune.steps, self.tune.batch_size, self.tune.lr),
        ] {
            if st == 0 || bs == 0 || !(lr > 0.0 && lr.is_finite()) {
                return Err(Error::config(
                    format!("{name}.steps"),
                    "steps, batch_size and lr must be positive",
                ));
            }
        }
        if self.pretrain.documents == 0 {
            return Err(Error::config("pretrain.documents", "must be at least 1"));
        }
        if self.tune.examples == 0 {
            return Err(Error::config("tune.examples", "must be at least 1"));
        }
        self.tune.lora.validate().map_err(|e| match e {
            // LoraConfig names its fields `lora.*`; here they live under `tune.lora`.
            Error::Config { field, msg } => Error::config(format!("tune.{field}"), msg),
            other => other,
        })?;
        Ok(())
    }

    fn lab_dir(&self) -> PathBuf {
        self.run.dir.join(&self.run.name)
    }

    /// Rounds a search runs (the last may be cut short by the budget).
    pub fn rounds(&self) -> usize {
        let left = self.budget.evaluations - self.search.initial as u64;
        left.div_ceil(self.search.per_round()) as usize
    }
}

// ------------------------------------------------------------------------------- format

/// Fitness buckets of the annotations: `f0` … `f20` (round(20·fitness)).
pub const BUCKETS: usize = 20;

/// The annotation word of a fitness.
pub fn bucket(fitness: f64) -> String {
    let b = (fitness.clamp(0.0, 1.0) * BUCKETS as f64).round() as usize;
    format!("f{b}")
}

/// The prompt of `parents` (shown in the order given) and a target fitness:
/// `parent fA : <program> parent fB : <program> target fC :`.
pub fn prompt_text(parents: &[Member], target: f64) -> String {
    let mut s = String::new();
    for p in parents {
        s.push_str(&format!("parent {} : {} ", bucket(p.fitness), p.source));
    }
    s.push_str(&format!("target {} :", bucket(target)));
    s
}

/// The lab's word-level tokenizer: specials, the annotation words and every program word.
pub fn tokenizer(task: &EvoTaskConfig) -> Result<Tokenizer> {
    let mut vocab: Vec<String> = [
        "<|endoftext|>",
        "<|pad|>",
        "<|unk|>",
        "parent",
        "target",
        ":",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    vocab.extend((0..=BUCKETS).map(|b| format!("f{b}")));
    vocab.extend(task.program_words());
    let mut tok =
        Tokenizer::word_level(&vocab, &["<|endoftext|>", "<|pad|>", "<|unk|>"], "<|unk|>")?;
    tok.set_bos(Some("<|endoftext|>"))?;
    tok.set_eos(Some("<|endoftext|>"))?;
    tok.set_pad(Some("<|pad|>"))?;
    Ok(tok)
}

/// Parents sorted by fitness, ascending (the best nearest the child), ties by source.
fn sorted_parents(mut ps: Vec<Member>) -> Vec<Member> {
    ps.sort_by(|a, b| {
        a.fitness
            .total_cmp(&b.fitness)
            .then(a.source.cmp(&b.source))
    });
    ps
}

/// A random genome of at most `max_words` words.
fn short_genome(task: &EvoTaskConfig, max_words: usize, rng: &mut Rng) -> String {
    loop {
        let lets = rng.below(task.max_lets + 1);
        let s = render(&random_genome(task, lets, rng));
        if s.split(' ').count() <= max_words {
            return s;
        }
    }
}

/// Pretraining document `i` (module docs, step 1) as a prompt/completion row.
pub fn pretrain_document(cfg: &EvoConfig, i: usize) -> Result<Value> {
    let task = &cfg.task;
    let max_words = cfg.generation.max_new_tokens;
    let mut rng = Rng::derive(cfg.pretrain.seed, &format!("evo-doc-{i}"));
    let target = EvoTarget::draw(task, &mut rng)?;
    let score = |src: &str| target.score(task, src).fitness;
    let first = short_genome(task, max_words, &mut rng);
    let mut parents = vec![Member {
        fitness: score(&first),
        source: first.clone(),
    }];
    while parents.len() < cfg.search.parents {
        let src = if rng.uniform() < 0.5 {
            let p = lang::parse(&first).map_err(gradus_tensor::Error::from)?;
            let mut c = p;
            for _ in 0..1 + rng.below(2) {
                c = gradus_tasks::evo::mutate(&c, task, &mut rng);
            }
            render(&c)
        } else {
            short_genome(task, max_words, &mut rng)
        };
        if src.split(' ').count() <= max_words {
            parents.push(Member {
                fitness: score(&src),
                source: src,
            });
        }
    }
    let parents = sorted_parents(parents);
    let child = loop {
        let c = ga_child(&parents, task, &cfg.ga, &mut rng);
        if c.split(' ').count() < max_words {
            break c;
        }
    };
    Ok(json!({"prompt": prompt_text(&parents, score(&child)), "completion": child}))
}

// ------------------------------------------------------------------------------- records

/// A prompt of a round: its parents (in prompt order) and target fitness.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PromptRecord {
    pub parents: Vec<Member>,
    pub target: f64,
}

/// An evaluated child.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChildRecord {
    /// Index of its prompt in the round.
    pub prompt: usize,
    /// Rendered canonically when it parses, else the raw text.
    pub source: String,
    pub fitness: f64,
    pub matched: usize,
    pub parsed: bool,
    pub error: Option<String>,
}

/// One round of one arm: what was proposed, and the state after it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    /// 0 = the initial population.
    pub round: usize,
    /// Examples the LM was tuned on before this round (EvoPrompting; 0 otherwise).
    pub tuned_on: usize,
    pub prompts: Vec<PromptRecord>,
    pub children: Vec<ChildRecord>,
    /// The population after survival.
    pub population: Vec<Member>,
    /// Evaluations spent so far.
    pub calls: u64,
    /// The evaluator's best-so-far trace so far.
    pub trace: Vec<(u64, f64)>,
    /// Whether any program so far solved the task (every output exact).
    pub solved: bool,
}

// ------------------------------------------------------------------------------- training

/// An SFT run directory `dir` on `data`: from scratch (pretraining) or LoRA on `base`; returns
/// its final checkpoint. An interrupted run resumes from its checkpoint.
fn train(
    cfg: &EvoConfig,
    dir: &Path,
    data: &Path,
    base: Option<&Path>,
    seed: u64,
) -> Result<PathBuf> {
    let mut c = crate::recipe::RecipeConfig::default();
    c.run.dir = dir.parent().unwrap_or(Path::new(".")).to_path_buf();
    c.run.name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    c.run.seed = seed;
    c.data.source = data.display().to_string();
    c.data.seq_len = cfg.model.seq_len;
    c.data.pack = true;
    c.data.val_fraction = 0.0;
    c.optimizer.weight_decay = 0.0;
    let s = match base {
        None => {
            let m = &cfg.model;
            c.tokenizer.path = Some(cfg.lab_dir().join("tokenizer"));
            c.model.config.hidden_size = m.hidden_size;
            c.model.config.num_hidden_layers = m.num_hidden_layers;
            c.model.config.num_attention_heads = m.num_attention_heads;
            c.model.config.num_key_value_heads = m.num_attention_heads;
            c.model.config.intermediate_size = m.intermediate_size;
            c.model.config.max_position_embeddings = m.seq_len;
            c.data.completion_only = false;
            c.schedule = crate::schedule::Schedule::Cosine {
                warmup_steps: (cfg.pretrain.steps / 20).max(1),
                min_lr_ratio: 0.1,
            };
            (cfg.pretrain.steps, cfg.pretrain.batch_size, cfg.pretrain.lr)
        }
        Some(b) => {
            c.model.init_from = Some(b.to_path_buf());
            c.data.completion_only = true;
            c.lora = Some(cfg.tune.lora.clone());
            (cfg.tune.steps, cfg.tune.batch_size, cfg.tune.lr)
        }
    };
    let t = &mut c.train;
    t.steps = s.0;
    t.batch_size = s.1;
    t.lr = s.2;
    t.log_every = 10;
    t.eval_every = 0;
    t.weight_norms_every = 0;
    t.save_every = 0;
    t.keep_last = 1;
    t.progress = cfg.run.progress;
    crate::sft::run(
        &c,
        Start::Resume {
            explicit: Vec::new(),
        },
    )?;
    latest_checkpoint(dir)?.ok_or_else(|| Error::format(dir, "the run wrote no checkpoint"))
}

/// The pretraining corpus and run (shared by every seed); returns the checkpoint.
fn pretrain(cfg: &EvoConfig) -> Result<PathBuf> {
    let lab = cfg.lab_dir();
    let data = lab.join("pretrain.jsonl");
    let dir = lab.join("pretrain");
    if let Some(ck) = latest_checkpoint(&dir)? {
        if ck.ends_with(format!("step-{}", cfg.pretrain.steps)) {
            return Ok(ck);
        }
    }
    if !data.exists() {
        let rows = (0..cfg.pretrain.documents)
            .map(|i| pretrain_document(cfg, i))
            .collect::<Result<Vec<_>>>()?;
        write_jsonl(&data, &rows)?;
    }
    eprintln!(
        "pretraining the operator LM on {} documents ({} steps)…",
        cfg.pretrain.documents, cfg.pretrain.steps
    );
    train(cfg, &dir, &data, None, cfg.pretrain.seed)
}

// ------------------------------------------------------------------------------- proposing

/// The program words of generated tokens (up to the first special token).
fn decode(tok: &Tokenizer, tokens: &[u32]) -> String {
    let mut words = Vec::new();
    for &t in tokens {
        if t <= 2 {
            break; // <|endoftext|>, <|pad|>, <|unk|>
        }
        words.push(tok.id_to_token(t).unwrap_or_default());
    }
    words.join(" ")
}

/// n children per prompt from `model`, as text.
fn lm_children(
    cfg: &EvoConfig,
    tok: &Tokenizer,
    model: &Decoder,
    prompts: &[PromptRecord],
    seed: u64,
) -> Result<Vec<(usize, String)>> {
    let n = cfg.search.children;
    let mut ids = Vec::with_capacity(prompts.len() * n);
    for p in prompts {
        let mut x = vec![0u32];
        x.extend(tok.encode(&prompt_text(&p.parents, p.target), false)?);
        for _ in 0..n {
            ids.push(x.clone());
        }
    }
    let sc = SamplingConfig {
        max_new_tokens: cfg.generation.max_new_tokens,
        temperature: cfg.generation.temperature,
        top_p: cfg.generation.top_p,
        seed,
        ..Default::default()
    };
    let out = generate(model, &ids, &sc, &[0], &mut |_, _| false)?;
    Ok(out
        .into_iter()
        .enumerate()
        .map(|(r, g)| (r / n, decode(tok, &g.tokens)))
        .collect())
}

/// The tuning rows of EvoPrompting: the fittest distinct children so far, each as its prompt
/// with its own fitness as the target → the child.
pub fn tuning_rows(cfg: &EvoConfig, history: &[RoundRecord]) -> Vec<Value> {
    let mut kids: Vec<(f64, String, String)> = Vec::new();
    // Round 0 is the initial population: random genomes, no prompt.
    for r in history.iter().filter(|r| r.round > 0) {
        for c in &r.children {
            if c.parsed && c.fitness >= cfg.search.threshold {
                let Some(p) = r.prompts.get(c.prompt) else {
                    continue;
                };
                kids.push((
                    c.fitness,
                    c.source.clone(),
                    prompt_text(&p.parents, c.fitness),
                ));
            }
        }
    }
    kids.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut seen = HashSet::new();
    kids.into_iter()
        .filter(|k| seen.insert(k.1.clone()))
        .take(cfg.tune.examples)
        .map(|(_, child, prompt)| json!({"prompt": prompt, "completion": child}))
        .collect()
}

// ------------------------------------------------------------------------------- the search

/// What the LM arms need.
struct Lm<'a> {
    tok: &'a Tokenizer,
    base_ck: &'a Path,
    base: &'a Decoder,
}

/// One arm on one seed: the initial population, then rounds until the budget is spent. Each
/// finished round is a record on disk, read back on resume.
fn run_arm(
    cfg: &EvoConfig,
    arm: Arm,
    seed: u64,
    target: &EvoTarget,
    lm: Option<&Lm>,
) -> Result<Vec<RoundRecord>> {
    let dir = cfg.lab_dir().join(format!("seed-{seed}")).join(arm.name());
    let task = &cfg.task;
    let n_in = task.num_inputs;
    let mut ev = Evaluator::new(task, target, cfg.budget.evaluations);
    let r0: RoundRecord = cached(&dir.join("r0.json"), || {
        let mut rng = Rng::derive(seed, "evo-initial");
        let mut children = Vec::new();
        for _ in 0..cfg.search.initial {
            let src = short_genome(task, cfg.generation.max_new_tokens, &mut rng);
            let f = ev.evaluate(&src).ok_or_else(|| {
                Error::config("budget.evaluations", "spent before the initial population")
            })?;
            children.push(ChildRecord {
                prompt: 0,
                source: src,
                fitness: f.fitness,
                matched: f.matched,
                parsed: true,
                error: f.error,
            });
        }
        let kids: Vec<Member> = children
            .iter()
            .map(|c| Member {
                source: c.source.clone(),
                fitness: c.fitness,
            })
            .collect();
        Ok(RoundRecord {
            round: 0,
            tuned_on: 0,
            prompts: Vec::new(),
            solved: children
                .iter()
                .any(|c| c.error.is_none() && c.matched == n_in),
            // The initial population is kept whole (no threshold), up to its size.
            population: survive(&[], &kids, 0.0, cfg.search.population),
            children,
            calls: ev.calls(),
            trace: ev.trace().to_vec(),
        })
    })?;
    let mut history = vec![r0];
    for r in 1..=cfg.rounds() {
        let prev = history.last().cloned().expect("r0 is there");
        ev.restore(prev.calls, prev.trace.clone());
        if ev.exhausted() {
            break;
        }
        let rec: RoundRecord = cached(&dir.join(format!("r{r}.json")), || {
            let mut rng = Rng::derive(seed, &format!("evo-{}-r{r}", arm.name()));
            let pop = &prev.population;
            let prompts: Vec<PromptRecord> = (0..cfg.search.prompts)
                .map(|_| {
                    let parents = sorted_parents(sample_parents(pop, cfg.search.parents, &mut rng));
                    let best = parents.iter().map(|p| p.fitness).fold(0.0, f64::max);
                    PromptRecord {
                        parents,
                        target: (best + cfg.search.target_delta).min(1.0),
                    }
                })
                .collect();
            let mut tuned_on = 0;
            let texts: Vec<(usize, String)> = match (arm, lm) {
                (Arm::Ga, _) => {
                    let mut out = Vec::new();
                    for (i, p) in prompts.iter().enumerate() {
                        let kids = ga_children(
                            &p.parents,
                            1,
                            p.parents.len(),
                            cfg.search.children,
                            task,
                            &cfg.ga,
                            &mut rng,
                        );
                        out.extend(kids.into_iter().map(|k| (i, k)));
                    }
                    out
                }
                (_, None) => return Err(Error::msg("an LM arm without its model")),
                (Arm::NoTuning, Some(lm)) => {
                    lm_children(cfg, lm.tok, lm.base, &prompts, rng.next_u64())?
                }
                (Arm::Evoprompting, Some(lm)) => {
                    let rows = if r >= 2 {
                        tuning_rows(cfg, &history)
                    } else {
                        Vec::new()
                    };
                    if rows.is_empty() {
                        lm_children(cfg, lm.tok, lm.base, &prompts, rng.next_u64())?
                    } else {
                        tuned_on = rows.len();
                        let data = dir.join(format!("tune-r{r}.jsonl"));
                        write_jsonl(&data, &rows)?;
                        eprintln!(
                            "[seed {seed}] EvoPrompting round {r}: LoRA on the {} fittest children…",
                            rows.len()
                        );
                        let ck = train(
                            cfg,
                            &dir.join(format!("tune-r{r}")),
                            &data,
                            Some(lm.base_ck),
                            seed * 1000 + r as u64,
                        )?;
                        let model = load_model_dir(&ck, &Device::Cpu)?;
                        lm_children(cfg, lm.tok, &model, &prompts, rng.next_u64())?
                    }
                }
            };
            let mut children = Vec::new();
            for (i, text) in texts {
                let Some(f) = ev.evaluate(&text) else { break };
                let (source, parsed) = match lang::parse(&text) {
                    Ok(p) => (render(&p), true),
                    Err(_) => (text, false),
                };
                children.push(ChildRecord {
                    prompt: i,
                    source,
                    fitness: f.fitness,
                    matched: f.matched,
                    parsed,
                    error: f.error,
                });
            }
            let kids: Vec<Member> = children
                .iter()
                .filter(|c| c.parsed)
                .map(|c| Member {
                    source: c.source.clone(),
                    fitness: c.fitness,
                })
                .collect();
            let solved = prev.solved
                || children
                    .iter()
                    .any(|c| c.error.is_none() && c.matched == n_in);
            Ok(RoundRecord {
                round: r,
                tuned_on,
                prompts,
                population: survive(pop, &kids, cfg.search.threshold, cfg.search.population),
                children,
                calls: ev.calls(),
                trace: ev.trace().to_vec(),
                solved,
            })
        })?;
        history.push(rec);
    }
    Ok(history)
}

// ------------------------------------------------------------------------------- the lab

/// What the lab reports.
pub struct EvoOutcome {
    pub lab_dir: PathBuf,
    /// The markdown results table.
    pub table: String,
    pub report: PathBuf,
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

/// Evaluations at the end of the initial population and of every round.
fn checkpoints(cfg: &EvoConfig) -> Vec<u64> {
    (0..=cfg.rounds() as u64)
        .map(|r| {
            (cfg.search.initial as u64 + r * cfg.search.per_round()).min(cfg.budget.evaluations)
        })
        .collect()
}

/// Runs the lab (`start`: a new lab directory, `--resume` or `--overwrite`).
pub fn run(cfg: &EvoConfig, start: Start) -> Result<EvoOutcome> {
    cfg.validate()?;
    let lab = cfg.lab_dir();
    let mut rd = open_run(&lab, cfg, &start)?;
    rd.write_config()?;
    let t0 = std::time::Instant::now();
    let tok_dir = lab.join("tokenizer");
    let tok = tokenizer(&cfg.task)?;
    if !tok_dir.join("tokenizer.json").exists() {
        std::fs::create_dir_all(&tok_dir).map_err(|e| Error::io(&tok_dir, e))?;
        tok.save(&tok_dir)?;
    }
    let mut arms = cfg.arms.clone();
    arms.sort();
    arms.dedup();
    let needs_lm = arms.iter().any(|a| *a != Arm::Ga);
    let base_ck = if needs_lm { Some(pretrain(cfg)?) } else { None };
    let base = match &base_ck {
        Some(ck) => Some(load_model_dir(ck, &Device::Cpu)?),
        None => None,
    };
    let lm = match (&base_ck, &base) {
        (Some(ck), Some(b)) => Some(Lm {
            tok: &tok,
            base_ck: ck,
            base: b,
        }),
        _ => None,
    };

    // Every seed, every arm.
    let mut results: BTreeMap<u64, (EvoTarget, BTreeMap<Arm, Vec<RoundRecord>>)> = BTreeMap::new();
    for &seed in &cfg.run.seeds {
        let sdir = lab.join(format!("seed-{seed}"));
        let target: EvoTarget = cached(&sdir.join("target.json"), || {
            EvoTarget::draw(&cfg.task, &mut Rng::derive(seed, "evo-target"))
        })?;
        eprintln!("[seed {seed}] hidden target: {}", target.source);
        let mut per_arm = BTreeMap::new();
        for &arm in &arms {
            eprintln!("[seed {seed}] {}…", arm.label());
            per_arm.insert(arm, run_arm(cfg, arm, seed, &target, lm.as_ref())?);
        }
        results.insert(seed, (target, per_arm));
    }

    // Best fitness at the checkpoints, per arm, over seeds.
    let xs = checkpoints(cfg);
    let mut best: BTreeMap<Arm, Vec<Vec<f64>>> = BTreeMap::new(); // [checkpoint][seed]
    for &arm in &arms {
        let rows = xs
            .iter()
            .map(|&x| {
                results
                    .values()
                    .map(|(_, a)| {
                        let tr = &a[&arm].last().expect("r0").trace;
                        gradus_tasks::evo::best_after(tr, x)
                    })
                    .collect()
            })
            .collect();
        best.insert(arm, rows);
    }
    let mut lines = String::new();
    for (i, &x) in xs.iter().enumerate() {
        let mut row = serde_json::Map::new();
        row.insert("step".into(), json!(x));
        for (arm, b) in &best {
            row.insert(format!("best/{}", arm.name()), json!(mean_sd(&b[i]).0));
        }
        lines.push_str(&Value::Object(row).to_string());
        lines.push('\n');
    }
    write_atomic(&lab.join("metrics.jsonl"), lines.as_bytes())?;

    // results.md: the final table and the per-round curve.
    let last = xs.len() - 1;
    let n_seeds = cfg.run.seeds.len();
    let mut table = format!(
        "| arm | best after the initial population ({} evals) | final best fitness ({} evals), mean ± sd over {n_seeds} seeds | per seed | seeds solved | valid children | paper (qualitative) |\n|---|---|---|---|---|---|---|\n",
        xs[0], xs[last]
    );
    let mut rows_html = Vec::new();
    for (arm, b) in &best {
        let (m0, _) = mean_sd(&b[0]);
        let (mf, sf) = mean_sd(&b[last]);
        let each = b[last]
            .iter()
            .map(|x| format!("{x:.3}"))
            .collect::<Vec<_>>()
            .join(", ");
        let solved = results
            .values()
            .filter(|(_, a)| a[arm].last().is_some_and(|r| r.solved))
            .count();
        let (valid, total) = results.values().fold((0, 0), |acc, (_, a)| {
            a[arm][1..].iter().fold(acc, |(v, t), r| {
                (
                    v + r.children.iter().filter(|c| c.error.is_none()).count(),
                    t + r.children.len(),
                )
            })
        });
        let valid_pct = 100.0 * valid as f64 / (total.max(1)) as f64;
        table.push_str(&format!(
            "| {} | {m0:.3} | {mf:.3} ± {sf:.3} | {each} | {solved}/{n_seeds} | {valid_pct:.0}% | {} |\n",
            arm.label(),
            arm.paper()
        ));
        rows_html.push((
            arm.label().to_string(),
            format!("{mf:.3} ± {sf:.3} (seeds: {each}); solved {solved}/{n_seeds}; valid children {valid_pct:.0}%; paper: {}", arm.paper()),
        ));
    }
    let mut curve = String::from("| evaluations |");
    for arm in best.keys() {
        curve.push_str(&format!(" {} |", arm.name()));
    }
    curve.push_str("\n|---|");
    curve.push_str(&"---|".repeat(best.len()));
    curve.push('\n');
    for (i, x) in xs.iter().enumerate() {
        curve.push_str(&format!("| {x} |"));
        for b in best.values() {
            let (m, s) = mean_sd(&b[i]);
            curve.push_str(&format!(" {m:.3} ± {s:.3} |"));
        }
        curve.push('\n');
    }
    let md = format!(
        "# gradus lab evoprompting\n\nBest fitness found (1 = every output of the hidden target matched, less the size penalty).\n\n{table}\n## Best fitness vs evaluations (mean ± sd over seeds)\n\n{curve}"
    );
    write_atomic(&lab.join("results.md"), md.as_bytes())?;
    let results_json = json!({
        "checkpoints": xs,
        "best": best.iter().map(|(a, b)| (a.name().to_string(), json!(b))).collect::<serde_json::Map<_, _>>(),
        "seeds": results.iter().map(|(s, (t, a))| (s.to_string(), json!({
            "target": t,
            "arms": a.iter().map(|(arm, h)| {
                let last = h.last().expect("r0");
                (arm.name().to_string(), json!({
                    "trace": last.trace,
                    "calls": last.calls,
                    "solved": last.solved,
                    "best": last.population.first(),
                }))
            }).collect::<serde_json::Map<_, _>>(),
        }))).collect::<serde_json::Map<_, _>>(),
    });
    write_json_pretty(&lab.join("results.json"), &results_json)?;

    // examples.md and per-round diagnostics of the first seed.
    let mut ex = String::from("# Example prompts and children (first seed)\n\n");
    let mut diag = Vec::new();
    if let Some((seed, (target, per_arm))) = results.iter().next() {
        ex.push_str(&format!(
            "Hidden target (seed {seed}): `{}`, outputs on x = 1..={}: {:?}\n\n",
            target.source,
            target.inputs.len(),
            target.outputs
        ));
        for (arm, h) in per_arm {
            if let Some(best) = h.last().and_then(|r| r.population.first()) {
                ex.push_str(&format!(
                    "Best of {}: `{}` (fitness {:.3})\n\n",
                    arm.label(),
                    best.source,
                    best.fitness
                ));
            }
            for r in &h[1..] {
                let valid = r.children.iter().filter(|c| c.error.is_none()).count();
                let bestc = r.children.iter().map(|c| c.fitness).fold(0.0, f64::max);
                let mean = r.children.iter().map(|c| c.fitness).sum::<f64>()
                    / r.children.len().max(1) as f64;
                diag.push((
                    format!("{} round {}", arm.name(), r.round),
                    format!(
                        "{} children ({} valid), mean fitness {mean:.3}, best child {bestc:.3}; population best {:.3}; tuned on {}",
                        r.children.len(), valid, r.population.first().map_or(0.0, |m| m.fitness), r.tuned_on
                    ),
                ));
            }
        }
        for (arm, h) in per_arm {
            if *arm == Arm::Ga {
                continue;
            }
            if let Some(r) = h.last().filter(|r| r.round > 0) {
                ex.push_str(&format!("## {} — round {}\n\n", arm.label(), r.round));
                for (i, p) in r.prompts.iter().enumerate().take(2) {
                    ex.push_str(&format!(
                        "Prompt {i}:\n```\n{}\n```\nChildren:\n",
                        prompt_text(&p.parents, p.target)
                    ));
                    for c in r.children.iter().filter(|c| c.prompt == i) {
                        ex.push_str(&format!(
                            "- `{}` → fitness {:.3}{}\n",
                            c.source,
                            c.fitness,
                            c.error
                                .as_ref()
                                .map(|e| format!(" ({e})"))
                                .unwrap_or_default()
                        ));
                    }
                    ex.push('\n');
                }
            }
        }
    }
    write_atomic(&lab.join("examples.md"), ex.as_bytes())?;

    let keys: Vec<String> = arms.iter().map(|a| format!("best/{}", a.name())).collect();
    let key_refs: Vec<&str> = keys.iter().map(|s| s.as_str()).collect();
    let summary = format!(
        "Program synthesis toward a hidden target in the tiny language: {} test inputs, targets of {} lets; fitness = mean 1/(1+|y−t|) − {} × words. \
         {} seeds; {} evaluations per arm and seed ({} initial, then {} rounds of {} prompts × {} parents × {} children); population {}, threshold {}. \
         Operator LM: {} layers × {} wide, pretrained {} steps on {} documents; EvoPrompting tunes LoRA r = {} for {} steps on the {} fittest children before every later round. \
         The x axis (\"step\") is evaluations; the y axis the best fitness so far, mean over seeds. Took {:.0} s.",
        cfg.task.num_inputs, cfg.task.target_lets, cfg.task.size_penalty, n_seeds, cfg.budget.evaluations, cfg.search.initial, cfg.rounds(),
        cfg.search.prompts, cfg.search.parents, cfg.search.children, cfg.search.population, cfg.search.threshold,
        cfg.model.num_hidden_layers, cfg.model.hidden_size, cfg.pretrain.steps, cfg.pretrain.documents, cfg.tune.lora.r, cfg.tune.steps, cfg.tune.examples,
        t0.elapsed().as_secs_f64()
    );
    let sections = vec![
        Section::text("Setting", &summary),
        Section::plot("Best fitness vs evaluations (mean over seeds)", &key_refs),
        Section::table("Final best fitness: ours vs the paper", rows_html),
        Section::pre("results.md", &md),
        Section::table("Rounds (first seed)", diag),
        Section::pre("examples.md", &ex),
        Section::table_from_json("Config", &serde_json::to_value(cfg).unwrap_or(Value::Null)),
    ];
    let report = write_report(&lab, "gradus lab evoprompting", &sections)?;
    Ok(EvoOutcome {
        lab_dir: lab,
        table,
        report,
    })
}
