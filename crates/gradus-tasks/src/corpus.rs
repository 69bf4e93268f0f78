//! The mixed pretraining corpus: arithmetic, programs with their outputs, and templated text, in
//! proportions set by [`Mix`].

use crate::{arith, instruct, programs, split_of, text, ArithConfig, ProgramConfig, Split};
use gradus_tensor::rng::Rng;
use gradus_tensor::{Error, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Relative weights of the document kinds (need not sum to 1).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mix {
    pub arith: f64,
    pub program: f64,
    pub text: f64,
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            arith: 1.0,
            program: 1.0,
            text: 1.0,
        }
    }
}

/// The kind of a corpus document.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocKind {
    Arith,
    Program,
    Text,
}

/// What the corpus's documents look like, without its size and seed (a recipe's
/// `[data.corpus]`; see [`CorpusConfig::styled`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorpusStyle {
    pub mix: Mix,
    /// Probability that a sentence of a text document is a world fact (default 0.4).
    pub fact_share: f64,
    pub arith: ArithConfig,
    pub program: ProgramConfig,
}

impl Default for CorpusStyle {
    fn default() -> Self {
        let c = CorpusConfig::default();
        Self {
            mix: c.mix,
            fact_share: c.fact_share,
            arith: c.arith,
            program: c.program,
        }
    }
}

/// The corpus's size, seed and document settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorpusConfig {
    pub n_docs: usize,
    pub seed: u64,
    pub mix: Mix,
    /// Probability that a sentence of a text document is a world fact.
    pub fact_share: f64,
    pub arith: ArithConfig,
    pub program: ProgramConfig,
    /// Leave out arithmetic and program documents whose instruction prompt is in the eval split (see
    /// [`instruct`]), so the instruction eval is not contaminated by pretraining.
    pub exclude_eval: bool,
}

impl Default for CorpusConfig {
    fn default() -> Self {
        Self {
            n_docs: 10_000,
            seed: 0,
            mix: Mix::default(),
            fact_share: text::FACT_SHARE,
            arith: ArithConfig::default(),
            program: ProgramConfig::default(),
            exclude_eval: true,
        }
    }
}

impl CorpusConfig {
    /// `n_docs` documents of `style` from `seed`, eval problems excluded.
    pub fn styled(n_docs: usize, seed: u64, style: &CorpusStyle) -> Self {
        Self {
            n_docs,
            seed,
            mix: style.mix,
            fact_share: style.fact_share,
            arith: style.arith.clone(),
            program: style.program.clone(),
            exclude_eval: true,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let m = self.mix;
        for (name, w) in [
            ("mix.arith", m.arith),
            ("mix.program", m.program),
            ("mix.text", m.text),
        ] {
            if !w.is_finite() || w < 0.0 {
                return Err(Error::config(
                    name,
                    format!("weight {w} must be finite and >= 0"),
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.fact_share) {
            return Err(Error::config(
                "fact_share",
                format!("{} must be in [0, 1]", self.fact_share),
            ));
        }
        if m.arith + m.program + m.text <= 0.0 {
            return Err(Error::config("mix", "at least one weight must be positive"));
        }
        self.arith.validate()?;
        self.program.validate()
    }
}

/// SplitMix64 finalizer: a well-mixed 64-bit hash of `x`.
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e3779b97f4a7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d049bb133111eb);
    x ^ (x >> 31)
}

/// The random stream of document `i` of a corpus with `seed`.
fn doc_rng(seed: u64, i: usize) -> Rng {
    Rng::derive(
        splitmix64(seed ^ splitmix64(i as u64)),
        "gradus-data/corpus-doc",
    )
}

/// Redraws allowed when a drawn problem is in the eval split (one in five is): the chance of running
/// out is 5^-64.
const EXCLUDE_ATTEMPTS: usize = 64;

/// Document `i` of the corpus described by `cfg` (which must be valid), with its kind.
pub fn document(cfg: &CorpusConfig, i: usize) -> (DocKind, String) {
    let mut rng = doc_rng(cfg.seed, i);
    let m = cfg.mix;
    let total = m.arith + m.program + m.text;
    let u = rng.uniform() * total;
    let kind = if u < m.arith {
        DocKind::Arith
    } else if u < m.arith + m.program || m.text <= 0.0 {
        DocKind::Program
    } else {
        DocKind::Text
    };
    let keep = |prompt: String| !cfg.exclude_eval || split_of(&prompt) == Split::Train;
    let text = match kind {
        DocKind::Arith => {
            let mut p = arith::sample(&mut rng, &cfg.arith);
            for _ in 0..EXCLUDE_ATTEMPTS {
                if keep(instruct::arith_prompt(&p)) {
                    break;
                }
                p = arith::sample(&mut rng, &cfg.arith);
            }
            p.document()
        }
        DocKind::Program => {
            let mut g = programs::generate(&mut rng, &cfg.program);
            for _ in 0..EXCLUDE_ATTEMPTS {
                if keep(instruct::program_prompt(&g.source)) {
                    break;
                }
                g = programs::generate(&mut rng, &cfg.program);
            }
            if cfg.program.trace {
                g.traced_document()
            } else {
                g.document()
            }
        }
        DocKind::Text => text::paragraph_with(&mut rng, cfg.fact_share),
    };
    (kind, text)
}

/// The corpus: `cfg.n_docs` documents, deterministic in `cfg`.
pub fn corpus(cfg: &CorpusConfig) -> Result<Vec<String>> {
    cfg.validate()?;
    Ok((0..cfg.n_docs)
        .into_par_iter()
        .map(|i| document(cfg, i).1)
        .collect())
}
