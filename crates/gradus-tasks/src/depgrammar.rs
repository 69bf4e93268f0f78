//! A synthetic dependency grammar with gold heads and relation labels, for masked-LM training and
//! the syntactic attention structure (SAS) metric of Chen, Shwartz-Ziv, Cho, Leavitt & Saphra
//! ("Sudden drops in the loss", arXiv 2309.07311, ICLR'24; RESEARCH §3.9's miniature, in place of
//! their 1k WSJ sentences with gold parses).
//!
//! **Sentences** (templated, one token per word, no tokenizer):
//! ```text
//! S   → NPs [PP] V [NPo]          root: V
//! NP  → Det Adj* N                det: Det → N, amod: Adj → N
//! PP  → Prep NP                   prep: Prep → N(subject), pobj: N(pp) → Prep
//!                                 nsubj: N(subject) → V, dobj: N(object) → V
//! ```
//! Heads are 1-based word indices, 0 for the root (the CoNLL convention).
//!
//! **What there is to learn** (so that attending along arcs helps the MLM):
//! - number agreement: the verb agrees with its subject's number, *across* a PP whose noun (the
//!   attractor) has its own number; determiners agree with their noun (`a`/`this` singular,
//!   `these`/`many` plural, `the` either);
//! - selection: nouns, adjectives and verbs come in `n_classes` semantic classes; an adjective
//!   modifies nouns of its class; verb v takes subjects of class `v mod C` and objects of class
//!   `(v + 1) mod C`.
//!
//! **Minimal pairs** (BLiMP-style capability metric): [`DepGrammar::minimal_pair`] gives a
//! grammatical sentence and the same sentence with the verb's number flipped, with or without an
//! attractor of the opposite number between subject and verb ([`PairKind`]).
//!
//! **Streams.** Sentence i of a split is drawn from its own stream derived from (seed, split, i):
//! the corpus is streaming and a resumed run regenerates exactly the sentences it would have seen.

use gradus_tensor::rng::Rng;
use gradus_tensor::{Error, Result};
use serde::{Deserialize, Serialize};

/// `[PAD]` token id.
pub const PAD: u32 = 0;
/// `[CLS]` token id (position 0 of every encoded sentence).
pub const CLS: u32 = 1;
/// `[SEP]` token id (after the last word).
pub const SEP: u32 = 2;
/// `[MASK]` token id.
pub const MASK: u32 = 3;
/// Number of special tokens; word ids start here.
pub const N_SPECIAL: u32 = 4;

/// Dependency relation of a word to its head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rel {
    Root,
    Det,
    Amod,
    Nsubj,
    Dobj,
    Prep,
    Pobj,
}

impl Rel {
    /// Every relation, in a fixed order (the index of [`Rel::index`]).
    pub const ALL: [Rel; 7] = [
        Rel::Root,
        Rel::Det,
        Rel::Amod,
        Rel::Nsubj,
        Rel::Dobj,
        Rel::Prep,
        Rel::Pobj,
    ];

    /// Position in [`Rel::ALL`].
    pub fn index(self) -> usize {
        Rel::ALL.iter().position(|&r| r == self).unwrap_or(0)
    }

    /// The Universal-Dependencies-style name (`nsubj`).
    pub fn name(self) -> &'static str {
        match self {
            Rel::Root => "root",
            Rel::Det => "det",
            Rel::Amod => "amod",
            Rel::Nsubj => "nsubj",
            Rel::Dobj => "dobj",
            Rel::Prep => "prep",
            Rel::Pobj => "pobj",
        }
    }
}

/// Grammatical number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Number {
    Sg,
    Pl,
}

impl Number {
    fn flip(self) -> Self {
        match self {
            Number::Sg => Number::Pl,
            Number::Pl => Number::Sg,
        }
    }
}

/// Determiners and the numbers they allow (None: either).
const DETS: [(&str, Option<Number>); 5] = [
    ("the", None),
    ("a", Some(Number::Sg)),
    ("this", Some(Number::Sg)),
    ("these", Some(Number::Pl)),
    ("many", Some(Number::Pl)),
];

const NOUNS: [&str; 24] = [
    "dog", "cat", "bird", "horse", "child", "teacher", "farmer", "doctor", "apple", "stone",
    "river", "tree", "song", "story", "letter", "garden", "hammer", "window", "cloud", "lamp",
    "boat", "road", "friend", "king",
];
const VERBS: [&str; 12] = [
    "see", "like", "carry", "follow", "find", "paint", "hear", "visit", "push", "watch", "build",
    "greet",
];
const ADJS: [&str; 16] = [
    "big", "small", "red", "old", "young", "quiet", "happy", "green", "dark", "bright", "soft",
    "tall", "cold", "warm", "heavy", "brave",
];
const PREPS: [&str; 6] = ["near", "behind", "with", "under", "beside", "above"];

/// Settings of the grammar.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DepGrammarConfig {
    /// Noun lemmas (each has a singular and a plural form); noun k is in class k mod C.
    pub n_nouns: usize,
    /// Transitive verb lemmas (singular and plural forms).
    pub n_verbs: usize,
    /// Adjectives; adjective a modifies nouns of class a mod C.
    pub n_adjs: usize,
    /// Prepositions.
    pub n_preps: usize,
    /// C: semantic classes (selection of adjectives and verb arguments).
    pub n_classes: usize,
    /// Probability of each further adjective in a noun phrase (geometric, at most `max_adjs`).
    pub p_adj: f64,
    pub max_adjs: usize,
    /// Probability that the subject carries a PP (whose noun is an agreement attractor).
    pub p_pp: f64,
    /// Probability that the verb has an object.
    pub p_object: f64,
}

impl Default for DepGrammarConfig {
    fn default() -> Self {
        Self {
            n_nouns: 24,
            n_verbs: 12,
            n_adjs: 16,
            n_preps: 6,
            n_classes: 4,
            p_adj: 0.4,
            max_adjs: 2,
            p_pp: 0.5,
            p_object: 0.7,
        }
    }
}

impl DepGrammarConfig {
    /// Checks the settings; an impossible one is an error naming its field (`prefix.field`).
    pub fn validate(&self, prefix: &str) -> Result<()> {
        let f = |n: &str| format!("{prefix}{n}");
        if self.n_classes == 0 {
            return Err(Error::config(f("n_classes"), "must be at least 1"));
        }
        if self.n_nouns < self.n_classes {
            return Err(Error::config(
                f("n_nouns"),
                format!(
                    "must be at least n_classes = {} (every class needs a noun), got {}",
                    self.n_classes, self.n_nouns
                ),
            ));
        }
        if self.n_verbs == 0 {
            return Err(Error::config(f("n_verbs"), "must be at least 1"));
        }
        if self.max_adjs > 0 && self.p_adj > 0.0 && self.n_adjs < self.n_classes {
            return Err(Error::config(
                f("n_adjs"),
                format!(
                    "must be at least n_classes = {} when adjectives are used (every class needs one), got {}",
                    self.n_classes, self.n_adjs
                ),
            ));
        }
        if self.n_preps == 0 {
            return Err(Error::config(
                f("n_preps"),
                "must be at least 1 (the attractor minimal pairs need a PP)",
            ));
        }
        for (v, n) in [
            (self.p_adj, "p_adj"),
            (self.p_pp, "p_pp"),
            (self.p_object, "p_object"),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(Error::config(
                    f(n),
                    format!("must be a probability in [0, 1], got {v}"),
                ));
            }
        }
        if self.max_adjs > 8 {
            return Err(Error::config(
                f("max_adjs"),
                format!("must be at most 8, got {}", self.max_adjs),
            ));
        }
        Ok(())
    }

    /// Longest sentence in words: subject NP, PP (prep + NP), verb, object NP.
    pub fn max_words(&self) -> usize {
        let np = 2 + self.max_adjs;
        np + (1 + np) + 1 + np
    }
}

/// Which split a sentence stream belongs to (disjoint streams of the same grammar).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Eval,
}

/// A sentence with its gold dependency tree.
#[derive(Clone, Debug, PartialEq)]
pub struct Sentence {
    /// Token ids of the words (no special tokens).
    pub words: Vec<u32>,
    /// Head of word k (0-based k) as a 1-based word index; 0 for the root.
    pub heads: Vec<usize>,
    pub rels: Vec<Rel>,
    /// 0-based index of the verb.
    pub verb: usize,
    /// 0-based index of the subject noun.
    pub subject: usize,
    /// 0-based index of the PP's noun (the attractor), if any.
    pub attractor: Option<usize>,
}

impl Sentence {
    /// `[CLS] w₁ … w_n [SEP]`: word k (0-based) sits at position k + 1.
    pub fn encoded(&self) -> Vec<u32> {
        let mut v = Vec::with_capacity(self.words.len() + 2);
        v.push(CLS);
        v.extend_from_slice(&self.words);
        v.push(SEP);
        v
    }

    /// Gold arcs (dependent position, head position, relation) in encoded positions (word k at
    /// k + 1), the root excluded (its head is no word).
    pub fn arcs(&self) -> Vec<(usize, usize, Rel)> {
        self.heads
            .iter()
            .zip(&self.rels)
            .enumerate()
            .filter(|(_, (&h, _))| h > 0)
            .map(|(k, (&h, &r))| (k + 1, h, r))
            .collect()
    }
}

/// A BLiMP-style minimal pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairKind {
    /// Subject directly before the verb (no PP).
    Simple,
    /// A PP whose noun has the opposite number sits between subject and verb.
    Attractor,
}

/// A grammatical sentence and the same with the verb's number flipped.
#[derive(Clone, Debug, PartialEq)]
pub struct MinimalPair {
    pub good: Sentence,
    /// The verb token of the ungrammatical variant (the only difference).
    pub bad_verb: u32,
    pub kind: PairKind,
}

/// The grammar with its vocabulary.
#[derive(Clone, Debug)]
pub struct DepGrammar {
    pub cfg: DepGrammarConfig,
    seed: u64,
    vocab: Vec<String>,
    det0: u32,
    noun0: u32,
    verb0: u32,
    adj0: u32,
    prep0: u32,
}

fn lemma(list: &[&str], i: usize) -> String {
    if i < list.len() {
        list[i].to_string()
    } else {
        format!("{}{}", list[i % list.len()], i / list.len() + 1)
    }
}

impl DepGrammar {
    /// The grammar of `cfg` (checked; errors name `prefix.field`) with sentence streams from `seed`.
    pub fn new(cfg: DepGrammarConfig, seed: u64, prefix: &str) -> Result<Self> {
        cfg.validate(prefix)?;
        let mut vocab: Vec<String> = ["[PAD]", "[CLS]", "[SEP]", "[MASK]"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let det0 = vocab.len() as u32;
        vocab.extend(DETS.iter().map(|d| d.0.to_string()));
        // Nouns: singular 2k, plural 2k + 1.
        let noun0 = vocab.len() as u32;
        for k in 0..cfg.n_nouns {
            let l = lemma(&NOUNS, k);
            vocab.push(l.clone());
            vocab.push(format!("{l}s"));
        }
        // Verbs: singular ("sees") 2v, plural ("see") 2v + 1.
        let verb0 = vocab.len() as u32;
        for v in 0..cfg.n_verbs {
            let l = lemma(&VERBS, v);
            vocab.push(format!("{l}s"));
            vocab.push(l);
        }
        let adj0 = vocab.len() as u32;
        vocab.extend((0..cfg.n_adjs).map(|a| lemma(&ADJS, a)));
        let prep0 = vocab.len() as u32;
        vocab.extend((0..cfg.n_preps).map(|p| lemma(&PREPS, p)));
        Ok(Self {
            cfg,
            seed,
            vocab,
            det0,
            noun0,
            verb0,
            adj0,
            prep0,
        })
    }

    /// Vocabulary size (special tokens included).
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// The word of token `id` (`?` out of range).
    pub fn word(&self, id: u32) -> &str {
        self.vocab.get(id as usize).map_or("?", |s| s.as_str())
    }

    /// The words of `ids` joined by spaces.
    pub fn render(&self, ids: &[u32]) -> String {
        ids.iter()
            .map(|&i| self.word(i))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Token of noun lemma `k` in number `n`.
    pub fn noun(&self, k: usize, n: Number) -> u32 {
        self.noun0 + 2 * k as u32 + (n == Number::Pl) as u32
    }

    /// Token of verb lemma `v` agreeing with a subject of number `n`.
    pub fn verb(&self, v: usize, n: Number) -> u32 {
        self.verb0 + 2 * v as u32 + (n == Number::Pl) as u32
    }

    /// Number of a noun or verb token (None for other words).
    pub fn number_of(&self, id: u32) -> Option<Number> {
        let in_nouns = id >= self.noun0 && id < self.verb0;
        let in_verbs = id >= self.verb0 && id < self.adj0;
        if in_nouns || in_verbs {
            let base = if in_nouns { self.noun0 } else { self.verb0 };
            Some(if (id - base).is_multiple_of(2) {
                Number::Sg
            } else {
                Number::Pl
            })
        } else {
            None
        }
    }

    /// Numbers a determiner token allows (None: either, or not a determiner).
    pub fn det_number(&self, id: u32) -> Option<Number> {
        let i = id.checked_sub(self.det0)? as usize;
        DETS.get(i).and_then(|d| d.1)
    }

    /// Whether `id` is a determiner.
    pub fn is_det(&self, id: u32) -> bool {
        id >= self.det0 && id < self.noun0
    }

    /// Class of a noun token (None for other words).
    pub fn noun_class(&self, id: u32) -> Option<usize> {
        (id >= self.noun0 && id < self.verb0)
            .then(|| ((id - self.noun0) / 2) as usize % self.cfg.n_classes)
    }

    /// Class of an adjective token (None for other words).
    pub fn adj_class(&self, id: u32) -> Option<usize> {
        (id >= self.adj0 && id < self.prep0).then(|| (id - self.adj0) as usize % self.cfg.n_classes)
    }

    /// (subject class, object class) of a verb token.
    pub fn verb_classes(&self, id: u32) -> Option<(usize, usize)> {
        (id >= self.verb0 && id < self.adj0).then(|| {
            let v = ((id - self.verb0) / 2) as usize;
            let c = self.cfg.n_classes;
            (v % c, (v + 1) % c)
        })
    }

    fn rng(&self, label: &str, i: u64) -> Rng {
        Rng::derive(self.seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15), label)
    }

    /// A uniformly drawn member of class `c` among `n` items (item k has class k mod C).
    fn of_class(rng: &mut Rng, n: usize, classes: usize, c: usize) -> usize {
        let count = (n - c).div_ceil(classes);
        c + classes * rng.below(count)
    }

    /// Appends an NP (determiner, adjectives, noun of class `class` and number `num`) and returns
    /// the noun's 0-based index; the caller sets the noun's head and relation.
    fn push_np(&self, rng: &mut Rng, s: &mut Sentence, class: usize, num: Number) -> usize {
        let c = &self.cfg;
        let dets: Vec<usize> = (0..DETS.len())
            .filter(|&i| DETS[i].1.is_none_or(|n| n == num))
            .collect();
        let det = dets[rng.below(dets.len())];
        let mut n_adj = 0;
        while c.n_adjs >= c.n_classes && n_adj < c.max_adjs && rng.uniform() < c.p_adj {
            n_adj += 1;
        }
        let start = s.words.len();
        let noun_pos = start + 1 + n_adj;
        s.words.push(self.det0 + det as u32);
        s.heads.push(noun_pos + 1);
        s.rels.push(Rel::Det);
        for _ in 0..n_adj {
            let a = Self::of_class(rng, c.n_adjs, c.n_classes, class);
            s.words.push(self.adj0 + a as u32);
            s.heads.push(noun_pos + 1);
            s.rels.push(Rel::Amod);
        }
        let k = Self::of_class(rng, c.n_nouns, c.n_classes, class);
        s.words.push(self.noun(k, num));
        s.heads.push(0); // set by the caller
        s.rels.push(Rel::Root);
        noun_pos
    }

    fn number(rng: &mut Rng) -> Number {
        if rng.below(2) == 0 {
            Number::Sg
        } else {
            Number::Pl
        }
    }

    /// Builds a sentence from `rng`; `pp`: force a PP (Some(true)), forbid it (Some(false)), or
    /// draw it with `p_pp` (None); `attractor`: force the PP noun's number.
    fn build(&self, rng: &mut Rng, pp: Option<bool>, attract: Option<bool>) -> Sentence {
        let c = &self.cfg;
        let v = rng.below(c.n_verbs);
        let (subj_class, obj_class) = (v % c.n_classes, (v + 1) % c.n_classes);
        let subj_num = Self::number(rng);
        let mut s = Sentence {
            words: Vec::new(),
            heads: Vec::new(),
            rels: Vec::new(),
            verb: 0,
            subject: 0,
            attractor: None,
        };
        let subj = self.push_np(rng, &mut s, subj_class, subj_num);
        let with_pp = pp.unwrap_or_else(|| rng.uniform() < c.p_pp);
        if with_pp {
            let p = rng.below(c.n_preps);
            let prep_pos = s.words.len();
            s.words.push(self.prep0 + p as u32);
            s.heads.push(subj + 1);
            s.rels.push(Rel::Prep);
            let pp_class = rng.below(c.n_classes);
            let pp_num = match attract {
                Some(true) => subj_num.flip(),
                Some(false) => subj_num,
                None => Self::number(rng),
            };
            let n = self.push_np(rng, &mut s, pp_class, pp_num);
            s.heads[n] = prep_pos + 1;
            s.rels[n] = Rel::Pobj;
            s.attractor = Some(n);
        }
        let verb_pos = s.words.len();
        s.words.push(self.verb(v, subj_num));
        s.heads.push(0);
        s.rels.push(Rel::Root);
        s.heads[subj] = verb_pos + 1;
        s.rels[subj] = Rel::Nsubj;
        if rng.uniform() < c.p_object {
            let obj_num = Self::number(rng);
            let o = self.push_np(rng, &mut s, obj_class, obj_num);
            s.heads[o] = verb_pos + 1;
            s.rels[o] = Rel::Dobj;
        }
        s.verb = verb_pos;
        s.subject = subj;
        s
    }

    /// Sentence `i` of `split`.
    pub fn sentence(&self, split: Split, i: u64) -> Sentence {
        let label = match split {
            Split::Train => "depgrammar/train",
            Split::Eval => "depgrammar/eval",
        };
        self.build(&mut self.rng(label, i), None, None)
    }

    /// Sentences `start..start + n` of `split`.
    pub fn batch(&self, split: Split, start: u64, n: usize) -> Vec<Sentence> {
        (0..n as u64)
            .map(|k| self.sentence(split, start + k))
            .collect()
    }

    /// Minimal pair `i` of `kind` (its own stream, disjoint from the training sentences).
    pub fn minimal_pair(&self, kind: PairKind, i: u64) -> MinimalPair {
        let (label, pp, attract) = match kind {
            PairKind::Simple => ("depgrammar/pairs-simple", Some(false), None),
            PairKind::Attractor => ("depgrammar/pairs-attractor", Some(true), Some(true)),
        };
        let good = self.build(&mut self.rng(label, i), pp, attract);
        let v = good.words[good.verb];
        let bad_verb = if (v - self.verb0).is_multiple_of(2) {
            v + 1
        } else {
            v - 1
        };
        MinimalPair {
            good,
            bad_verb,
            kind,
        }
    }
}
