//! Bursty few-shot sequences for in-context learning (Chan et al. 2022, "Data distributional
//! properties drive emergent in-context learning"; Reddy 2024, "The mechanistic basis of data
//! dependence and abrupt learning in an in-context classification task", `datasets_v2.py`;
//! Singh et al. 2023, "The transient nature of emergent in-context learning").
//!
//! **Classes and items.** K classes. Class k has a fixed label `k mod L` (so in-weights learning,
//! IWL, is possible). An item of class k is either
//! - a D-dimensional Gaussian exemplar (Reddy): centroid μ_k ~ N(0, I/D), item
//!   `x = (μ_k + ε·η) / √(1 + ε²)` with η ~ N(0, I/D), ε the within-class variation; or
//! - a token sequence: class k has a prototype of `item_len` tokens drawn uniformly from
//!   `item_vocab`; an exemplar replaces each prototype token, with probability ε, by a uniform one.
//!
//! **Class frequencies.** Zipf rank-frequency `P(k) ∝ (k+1)^−α` over the K training classes
//! (α = 0: uniform).
//!
//! **A sequence** is N context pairs `(x₁, ℓ₁), …, (x_N, ℓ_N)` and a query `x_q` whose label is
//! the target. With probability `p_bursty` it is *bursty*: the query's class appears B times in
//! the context, then ⌊(N − B)/B⌋ other distinct classes appear B times each, and any remaining
//! slots hold i.i.d. Zipf classes; the N items are shuffled. With N = 8, B = 3 this is Chan/Singh's
//! layout (query ×3, a distractor ×3, 2 random); with B | N it is Reddy's (N/B classes × B).
//! Otherwise the N context classes and the query class are i.i.d. Zipf draws.
//!
//! **Labels** are fixed (`k mod L`) or, with [`LabelMode::PerSequence`], drawn afresh for every
//! sequence (distinct classes get distinct labels while L allows), which forces ICL.
//!
//! **Evaluation sequences** ([`SeqKind`]):
//! - [`SeqKind::IclNovel`]: bursty sequences over K_c fresh classes (centroids/prototypes never
//!   trained on) with labels drawn per sequence: only the context tells the answer (Reddy p_C = 1;
//!   Singh's "fsl" evaluation).
//! - [`SeqKind::IclSwap`]: bursty sequences over training classes whose labels are re-assigned per
//!   sequence, every class getting a label different from its own: ICL answers the context's
//!   label, IWL the memorised one (Singh's "flip" evaluation).
//! - [`SeqKind::Iwl`]: the query's class is absent from the context (whose classes are i.i.d. from
//!   the others), labels fixed: only IWL can answer.
//!
//! Everything is a pure function of the seed: the classes come from `(seed, "bursty/…")` streams and
//! sequence `i` of a stream from its own derived stream, so batches can be regenerated exactly on
//! resume without saving a cursor beyond the index.

use gradus_tensor::rng::Rng;
use gradus_tensor::{Error, Result};
use serde::{Deserialize, Serialize};

/// How items are represented.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ItemKind {
    /// D-dimensional Gaussian exemplars around a per-class centroid (Reddy).
    Gaussian { dim: usize },
    /// `len` tokens from a vocabulary of `vocab`, a per-class prototype with token noise ε.
    Tokens { len: usize, vocab: usize },
}

/// Whether a class's label is fixed or re-drawn per sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelMode {
    /// Class k always has label `k mod L`.
    Fixed,
    /// Labels drawn per sequence (distinct classes get distinct labels while L allows).
    PerSequence,
}

/// Settings of the bursty generator (see the module docs for the meaning of each knob).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BurstyConfig {
    /// K: training classes.
    pub n_classes: usize,
    /// L: labels; class k has label k mod L.
    pub n_labels: usize,
    /// K_c: fresh classes for the ICL evaluation.
    pub n_novel_classes: usize,
    pub item: ItemKind,
    /// α of the Zipf rank-frequency law P(k) ∝ (k+1)^−α.
    pub zipf_alpha: f64,
    /// ε: within-class variation.
    pub eps: f64,
    /// B: context items sharing the query's class in a bursty sequence.
    pub burstiness: usize,
    /// p_B: fraction of bursty training sequences.
    pub p_bursty: f64,
    /// N: context pairs before the query.
    pub context: usize,
    pub labels: LabelMode,
    /// B of the evaluation sequences ([`SeqKind::IclNovel`], [`SeqKind::IclSwap`]); None: the
    /// training B. Fixing it keeps the ICL evaluation the same task across runs trained with
    /// different B (a context of N/B classes lets a model that copies any context label score
    /// B/N, so accuracies at different evaluation B are not comparable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_burstiness: Option<usize>,
}

impl Default for BurstyConfig {
    fn default() -> Self {
        Self {
            n_classes: 128,
            n_labels: 32,
            n_novel_classes: 128,
            item: ItemKind::Gaussian { dim: 63 },
            zipf_alpha: 0.0,
            eps: 0.1,
            burstiness: 4,
            p_bursty: 1.0,
            context: 8,
            labels: LabelMode::Fixed,
            eval_burstiness: None,
        }
    }
}

impl BurstyConfig {
    /// B of the evaluation sequences (`eval_burstiness`, else `burstiness`).
    pub fn eval_b(&self) -> usize {
        self.eval_burstiness.unwrap_or(self.burstiness)
    }

    /// Checks the settings; an impossible one is an error naming its field (`prefix.field`).
    pub fn validate(&self, prefix: &str) -> Result<()> {
        let f = |n: &str| format!("{prefix}{n}");
        if self.n_labels < 2 {
            return Err(Error::config(f("n_labels"), "must be at least 2"));
        }
        if self.n_classes == 0 || !self.n_classes.is_multiple_of(self.n_labels) {
            return Err(Error::config(
                f("n_classes"),
                format!(
                    "must be a positive multiple of n_labels = {} (class k has label k mod L), got {}",
                    self.n_labels, self.n_classes
                ),
            ));
        }
        if self.context == 0 {
            return Err(Error::config(f("context"), "must be at least 1"));
        }
        if self.burstiness == 0 || self.burstiness > self.context {
            return Err(Error::config(
                f("burstiness"),
                format!(
                    "must be in 1..=context ({}): the query's class cannot appear {} times in a context of {} items",
                    self.context, self.burstiness, self.context
                ),
            ));
        }
        if let Some(eb) = self.eval_burstiness {
            if eb == 0 || eb > self.context {
                return Err(Error::config(
                    f("eval_burstiness"),
                    format!(
                        "must be in 1..=context ({}): the query's class cannot appear {eb} times in a context of {} items",
                        self.context, self.context
                    ),
                ));
            }
        }
        let distinct = self.context / self.burstiness.min(self.eval_b());
        if distinct > self.n_classes {
            return Err(Error::config(
                f("n_classes"),
                format!(
                    "a bursty context holds {distinct} distinct classes (context / burstiness or eval_burstiness) but there are only {}",
                    self.n_classes
                ),
            ));
        }
        if self.n_novel_classes < distinct.max(1) {
            return Err(Error::config(
                f("n_novel_classes"),
                format!(
                    "must be at least {distinct} (distinct classes in a bursty context), got {}",
                    self.n_novel_classes
                ),
            ));
        }
        if !(self.zipf_alpha.is_finite() && self.zipf_alpha >= 0.0) {
            return Err(Error::config(
                f("zipf_alpha"),
                format!("must be finite and >= 0, got {}", self.zipf_alpha),
            ));
        }
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return Err(Error::config(
                f("eps"),
                format!("must be finite and >= 0, got {}", self.eps),
            ));
        }
        if !(0.0..=1.0).contains(&self.p_bursty) {
            return Err(Error::config(
                f("p_bursty"),
                format!("must be in [0, 1], got {}", self.p_bursty),
            ));
        }
        match self.item {
            ItemKind::Gaussian { dim: 0 } => {
                return Err(Error::config(f("item.dim"), "must be at least 1"))
            }
            ItemKind::Tokens { len, vocab } => {
                if len == 0 {
                    return Err(Error::config(f("item.len"), "must be at least 1"));
                }
                if vocab < 2 {
                    return Err(Error::config(f("item.vocab"), "must be at least 2"));
                }
            }
            _ => {}
        }
        if matches!(self.item, ItemKind::Tokens { .. }) && !(self.eps <= 1.0) {
            return Err(Error::config(
                f("eps"),
                format!(
                    "is a token replacement probability for token items: must be in [0, 1], got {}",
                    self.eps
                ),
            ));
        }
        Ok(())
    }
}

/// Which distribution a sequence comes from (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeqKind {
    /// The training distribution (bursty with probability p_B).
    Train,
    /// Bursty, fresh classes, labels per sequence: only ICL answers.
    IclNovel,
    /// Bursty, training classes, every label swapped away from the class's own.
    IclSwap,
    /// The query's class absent from the context, fixed labels: only IWL answers.
    Iwl,
}

/// Item payloads of one sequence: N context items then the query.
#[derive(Clone, Debug, PartialEq)]
pub enum Items {
    /// (N+1) × D values, row-major.
    Vectors(Vec<f32>),
    /// (N+1) × len token ids in `0..vocab`.
    Tokens(Vec<u32>),
}

/// One sequence: N context pairs and a query.
#[derive(Clone, Debug, PartialEq)]
pub struct Sequence {
    pub items: Items,
    /// Class of each item, N context items then the query (novel classes are numbered
    /// `n_classes + j`).
    pub classes: Vec<usize>,
    /// Label of each item; `labels[N]` is the query's label, the target.
    pub labels: Vec<u32>,
    /// Whether the sequence is bursty.
    pub bursty: bool,
}

impl Sequence {
    /// The query's label (the target).
    pub fn target(&self) -> u32 {
        *self.labels.last().expect("a sequence has a query")
    }
}

/// The class means (or prototypes) and the Zipf table: everything fixed for a seed.
#[derive(Clone, Debug)]
pub struct BurstyTask {
    cfg: BurstyConfig,
    seed: u64,
    /// Cumulative Zipf probabilities over the K training classes.
    cdf: Vec<f64>,
    /// (K + K_c) × D centroids, or (K + K_c) × len prototypes.
    means: Vec<f32>,
    protos: Vec<u32>,
}

/// Zipf probabilities `P(k) = (k+1)^−α / Σ_j (j+1)^−α`, k = 0..K.
pub fn zipf_probs(k: usize, alpha: f64) -> Vec<f64> {
    let w: Vec<f64> = (0..k).map(|i| ((i + 1) as f64).powf(-alpha)).collect();
    let z: f64 = w.iter().sum();
    w.into_iter().map(|x| x / z).collect()
}

impl BurstyTask {
    /// The task for `cfg` and `seed` (validated; field names are prefixed by `prefix`).
    pub fn new(cfg: BurstyConfig, seed: u64, prefix: &str) -> Result<Self> {
        cfg.validate(prefix)?;
        let mut cdf = zipf_probs(cfg.n_classes, cfg.zipf_alpha);
        let mut acc = 0.0;
        for p in cdf.iter_mut() {
            acc += *p;
            *p = acc;
        }
        let total = cfg.n_classes + cfg.n_novel_classes;
        let mut rng = Rng::derive(seed, "bursty/classes");
        let (mut means, mut protos) = (Vec::new(), Vec::new());
        match cfg.item {
            ItemKind::Gaussian { dim } => {
                let sd = 1.0 / (dim as f64).sqrt();
                means = (0..total * dim)
                    .map(|_| (rng.normal() * sd) as f32)
                    .collect();
            }
            ItemKind::Tokens { len, vocab } => {
                protos = (0..total * len).map(|_| rng.below(vocab) as u32).collect();
            }
        }
        Ok(Self {
            cfg,
            seed,
            cdf,
            means,
            protos,
        })
    }

    pub fn config(&self) -> &BurstyConfig {
        &self.cfg
    }

    /// A Zipf-distributed training class.
    pub fn sample_class(&self, rng: &mut Rng) -> usize {
        let u = rng.uniform();
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cfg.n_classes - 1)
    }

    /// Sequence `index` of kind `kind` (a pure function of seed, kind and index).
    pub fn sequence(&self, kind: SeqKind, index: u64) -> Sequence {
        let label = match kind {
            SeqKind::Train => "bursty/train",
            SeqKind::IclNovel => "bursty/icl_novel",
            SeqKind::IclSwap => "bursty/icl_swap",
            SeqKind::Iwl => "bursty/iwl",
        };
        let mut rng = Rng::derive(self.seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15), label);
        self.sample(kind, &mut rng)
    }

    /// A batch of consecutive sequences `start..start + n`.
    pub fn batch(&self, kind: SeqKind, start: u64, n: usize) -> Vec<Sequence> {
        (0..n as u64)
            .map(|i| self.sequence(kind, start + i))
            .collect()
    }

    /// Draws `n` distinct classes other than `exclude` with `draw`.
    fn distinct(
        &self,
        n: usize,
        exclude: &[usize],
        rng: &mut Rng,
        draw: &dyn Fn(&mut Rng) -> usize,
    ) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::with_capacity(n);
        let mut tries = 0usize;
        while out.len() < n {
            let c = draw(rng);
            tries += 1;
            if !exclude.contains(&c) && !out.contains(&c) {
                out.push(c);
            } else if tries > 1000 * (n + 1) {
                // Pathologically peaked Zipf: fall back to the first unused classes in order.
                for c in 0..usize::MAX {
                    if out.len() == n {
                        break;
                    }
                    if !exclude.contains(&c) && !out.contains(&c) {
                        out.push(c);
                    }
                }
            }
        }
        out
    }

    fn sample(&self, kind: SeqKind, rng: &mut Rng) -> Sequence {
        let c = &self.cfg;
        let n = c.context;
        let b = match kind {
            SeqKind::IclNovel | SeqKind::IclSwap => c.eval_b(),
            SeqKind::Train | SeqKind::Iwl => c.burstiness,
        };
        let k = c.n_classes;
        let zipf = |r: &mut Rng| self.sample_class(r);
        let novel = |r: &mut Rng| k + r.below(c.n_novel_classes);
        let bursty = match kind {
            SeqKind::Train => rng.uniform() < c.p_bursty,
            SeqKind::IclNovel | SeqKind::IclSwap => true,
            SeqKind::Iwl => false,
        };
        let draw: &dyn Fn(&mut Rng) -> usize = if kind == SeqKind::IclNovel {
            &novel
        } else {
            &zipf
        };
        let mut ctx: Vec<usize> = Vec::with_capacity(n);
        let query;
        if bursty {
            let groups = n / b;
            let cls = self.distinct(groups, &[], rng, draw);
            query = cls[0];
            for &cl in &cls {
                ctx.extend(std::iter::repeat_n(cl, b));
            }
            while ctx.len() < n {
                ctx.push(draw(rng));
            }
            rng.shuffle(&mut ctx);
        } else if kind == SeqKind::Iwl {
            query = zipf(rng);
            while ctx.len() < n {
                let cl = zipf(rng);
                if cl != query || k == 1 {
                    ctx.push(cl);
                }
            }
        } else {
            query = zipf(rng);
            for _ in 0..n {
                ctx.push(zipf(rng));
            }
        }
        let mut classes = ctx;
        classes.push(query);

        // Labels.
        let l = c.n_labels;
        let per_seq = match kind {
            SeqKind::Train => c.labels == LabelMode::PerSequence,
            SeqKind::IclNovel => true,
            SeqKind::IclSwap | SeqKind::Iwl => false,
        };
        let mut uniq: Vec<usize> = Vec::new();
        for &cl in &classes {
            if !uniq.contains(&cl) {
                uniq.push(cl);
            }
        }
        let labels: Vec<u32> = if per_seq {
            let mut perm: Vec<u32> = (0..l as u32).collect();
            rng.shuffle(&mut perm);
            let map: Vec<u32> = (0..uniq.len())
                .map(|i| if i < l { perm[i] } else { rng.below(l) as u32 })
                .collect();
            classes
                .iter()
                .map(|cl| map[uniq.iter().position(|u| u == cl).unwrap_or(0)])
                .collect()
        } else if kind == SeqKind::IclSwap {
            // Every class gets a label other than its own, distinct across classes while possible.
            let mut used: Vec<u32> = Vec::new();
            let mut map: Vec<u32> = Vec::new();
            for &cl in &uniq {
                let own = (cl % l) as u32;
                let free: Vec<u32> = (0..l as u32)
                    .filter(|&x| x != own && !used.contains(&x))
                    .collect();
                let pick = if free.is_empty() {
                    let others: Vec<u32> = (0..l as u32).filter(|&x| x != own).collect();
                    others[rng.below(others.len())]
                } else {
                    free[rng.below(free.len())]
                };
                used.push(pick);
                map.push(pick);
            }
            classes
                .iter()
                .map(|cl| map[uniq.iter().position(|u| u == cl).unwrap_or(0)])
                .collect()
        } else {
            classes.iter().map(|&cl| (cl % l) as u32).collect()
        };

        // Items.
        let items = match c.item {
            ItemKind::Gaussian { dim } => {
                let sd = 1.0 / (dim as f64).sqrt();
                let norm = 1.0 / (1.0 + c.eps * c.eps).sqrt();
                let mut v = Vec::with_capacity(classes.len() * dim);
                for &cl in &classes {
                    let mu = &self.means[cl * dim..(cl + 1) * dim];
                    for &m in mu {
                        let eta = rng.normal() * sd;
                        v.push(((m as f64 + c.eps * eta) * norm) as f32);
                    }
                }
                Items::Vectors(v)
            }
            ItemKind::Tokens { len, vocab } => {
                let mut v = Vec::with_capacity(classes.len() * len);
                for &cl in &classes {
                    for &t in &self.protos[cl * len..(cl + 1) * len] {
                        let replace = rng.uniform() < c.eps;
                        v.push(if replace { rng.below(vocab) as u32 } else { t });
                    }
                }
                Items::Tokens(v)
            }
        };
        Sequence {
            items,
            classes,
            labels,
            bursty,
        }
    }

    /// The centroid of class `cl` (Gaussian items only): D values.
    pub fn centroid(&self, cl: usize) -> Option<&[f32]> {
        match self.cfg.item {
            ItemKind::Gaussian { dim } => self.means.get(cl * dim..(cl + 1) * dim),
            ItemKind::Tokens { .. } => None,
        }
    }

    /// The prototype of class `cl` (token items only).
    pub fn prototype(&self, cl: usize) -> Option<&[u32]> {
        match self.cfg.item {
            ItemKind::Tokens { len, .. } => self.protos.get(cl * len..(cl + 1) * len),
            ItemKind::Gaussian { .. } => None,
        }
    }
}
