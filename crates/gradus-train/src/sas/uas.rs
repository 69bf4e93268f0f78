//! Unlabeled attachment score of every attention head and the syntactic attention structure
//! (SAS) metric (Clark, Khandelwal, Levy & Manning 2019, "What does BERT look at?", §4.2; as used
//! by Chen et al. 2024, arXiv 2309.07311, §2.2).
//!
//! For head (l, h) with attention A (T × T, row i = query i's weights over keys) and a gold arc
//! dep → head:
//! - **dependent → head** direction: the predicted parent of `dep` is argmax_j A[dep, j];
//! - **head → dependent** direction (the transpose): argmax_j A[j, dep], the word that attends
//!   most to `dep`;
//!
//! with j ranging over the sentence's words only (self and the special tokens `[CLS]`, `[SEP]`
//! and padding excluded). The arc counts as recovered when the prediction is its gold head. A
//! head's score for a relation is the fraction of that relation's arcs it recovers in its better
//! direction (Clark et al. report the better direction per head and relation); "all" pools every
//! arc (again in the head's better direction). **SAS** for a relation is the best head's score.
//!
//! The **soft** variant (the authors' repository) replaces the 0/1 hit by the attention weight on
//! the gold parent, A[dep, head] (or A[head, dep] in the transposed direction), averaged over arcs.

use std::ops::Range;

/// A gold arc in token positions of the encoded sentence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoldArc {
    pub dep: usize,
    pub head: usize,
    /// Index of the relation in the scorer's relation list.
    pub rel: usize,
}

/// Per (layer, head, relation): hits and soft weight in both directions.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Cell {
    hits: [f64; 2],
    soft: [f64; 2],
}

/// Accumulates attachment scores over sentences.
#[derive(Clone, Debug)]
pub struct UasAccumulator {
    layers: usize,
    heads: usize,
    rels: Vec<String>,
    cells: Vec<Cell>,
    counts: Vec<u64>,
}

/// The scores of every head: `argmax[l][h][r]` and `soft[l][h][r]`, with r = rels.len() the
/// pooled "all" column.
#[derive(Clone, Debug, PartialEq)]
pub struct UasScores {
    pub rels: Vec<String>,
    pub argmax: Vec<Vec<Vec<f64>>>,
    pub soft: Vec<Vec<Vec<f64>>>,
    /// Arcs seen per relation (then "all").
    pub counts: Vec<u64>,
}

/// Best head of one relation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BestHead {
    pub score: f64,
    pub layer: usize,
    pub head: usize,
}

/// argmax over `cand` of `value(j)`, skipping `skip`; the first index wins ties.
fn argmax_by(cand: Range<usize>, skip: usize, value: impl Fn(usize) -> f32) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for j in cand.filter(|&j| j != skip) {
        let v = value(j);
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((j, v));
        }
    }
    best.map(|b| b.0)
}

impl UasAccumulator {
    /// An empty accumulator for `layers` × `heads` attention heads and relations `rels`.
    pub fn new(layers: usize, heads: usize, rels: Vec<String>) -> Self {
        let n = layers * heads * rels.len();
        Self {
            layers,
            heads,
            counts: vec![0; rels.len()],
            rels,
            cells: vec![Cell::default(); n],
        }
    }

    /// Counts the arcs of one sentence (call once per sentence, beside [`UasAccumulator::add`]
    /// for each of its heads).
    pub fn count(&mut self, arcs: &[GoldArc]) {
        for a in arcs {
            self.counts[a.rel] += 1;
        }
    }

    /// Scores head (`layer`, `head`) on one sentence: `attn` is its (t × t) attention matrix,
    /// `words` the positions of the words (the candidates), `arcs` the gold arcs.
    pub fn add(
        &mut self,
        layer: usize,
        head: usize,
        attn: &[f32],
        t: usize,
        words: Range<usize>,
        arcs: &[GoldArc],
    ) {
        let base = (layer * self.heads + head) * self.rels.len();
        for a in arcs {
            let fwd = argmax_by(words.clone(), a.dep, |j| attn[a.dep * t + j]);
            let bwd = argmax_by(words.clone(), a.dep, |j| attn[j * t + a.dep]);
            let c = &mut self.cells[base + a.rel];
            c.hits[0] += (fwd == Some(a.head)) as u8 as f64;
            c.hits[1] += (bwd == Some(a.head)) as u8 as f64;
            c.soft[0] += attn[a.dep * t + a.head] as f64;
            c.soft[1] += attn[a.head * t + a.dep] as f64;
        }
    }

    /// Scores per head (better direction per head and relation; "all" pooled).
    pub fn scores(&self) -> UasScores {
        let nr = self.rels.len();
        let mut argmax = vec![vec![vec![0.0; nr + 1]; self.heads]; self.layers];
        let mut soft = argmax.clone();
        let total: u64 = self.counts.iter().sum();
        for l in 0..self.layers {
            for h in 0..self.heads {
                let mut all = Cell::default();
                for r in 0..nr {
                    let c = self.cells[(l * self.heads + h) * nr + r];
                    let n = self.counts[r].max(1) as f64;
                    argmax[l][h][r] = c.hits[0].max(c.hits[1]) / n;
                    soft[l][h][r] = c.soft[0].max(c.soft[1]) / n;
                    for d in 0..2 {
                        all.hits[d] += c.hits[d];
                        all.soft[d] += c.soft[d];
                    }
                }
                let n = total.max(1) as f64;
                argmax[l][h][nr] = all.hits[0].max(all.hits[1]) / n;
                soft[l][h][nr] = all.soft[0].max(all.soft[1]) / n;
            }
        }
        let mut counts = self.counts.clone();
        counts.push(total);
        UasScores {
            rels: self.rels.clone(),
            argmax,
            soft,
            counts,
        }
    }
}

impl UasScores {
    fn best(m: &[Vec<Vec<f64>>], r: usize) -> BestHead {
        let mut b = BestHead {
            score: f64::NEG_INFINITY,
            layer: 0,
            head: 0,
        };
        for (l, hs) in m.iter().enumerate() {
            for (h, v) in hs.iter().enumerate() {
                if v[r] > b.score {
                    b = BestHead {
                        score: v[r],
                        layer: l,
                        head: h,
                    };
                }
            }
        }
        b
    }

    /// SAS of relation column `r` (`rels.len()` = "all"): the best head's argmax UAS.
    pub fn sas(&self, r: usize) -> BestHead {
        Self::best(&self.argmax, r)
    }

    /// The soft SAS of column `r`: the best head's mean attention on the gold parent.
    pub fn soft_sas(&self, r: usize) -> BestHead {
        Self::best(&self.soft, r)
    }

    /// Column index of "all".
    pub fn all(&self) -> usize {
        self.rels.len()
    }
}
