//! `[phf]` in `gradus train pretrain`: pretraining with human feedback (Korbak et al. 2023,
//! "Pretraining Language Models with Human Preferences", arXiv 2302.08582).
//!
//! Every document is cut into segments (its lines, [`gradus_tasks::phf::segments`]), and each
//! segment gets a misalignment score from a scorer (`phf.scorer`: PEP8-style violations per
//! character for Python code, the paper's code task, or matches of forbidden patterns; higher =
//! worse, reward = −score). The scores are computed once, at the start of a run, and cached in the
//! run directory (`phf-scores.json`), which a `--resume` reads back instead of scoring again.
//! Each segment is tokenized on its own (so every token belongs to exactly one segment): a
//! document is `BOS, tokens(segment 1), …, tokens(segment k), EOS`, BOS and EOS counted as aligned.
//! Then `phf.kind` picks the objective (the paper's §2; defaults are the paper's settings):
//! - `mle`: plain next-token prediction on the same segmented data (the baseline);
//! - `filtering`: documents whose score (the character-weighted mean of their segments', i.e.
//!   violations per character) exceeds `filter_threshold` (the paper's PEP8 threshold 2.8e-3) are
//!   dropped; `filter_quantile` instead drops those above that quantile of document scores;
//! - `conditional`: each segment is prefixed with `<|aligned|>` when its score ≤ `threshold`,
//!   else `<|misaligned|>`; the token is left out for `drop_token_prob` (1%) of segments; control
//!   tokens are ordinary targets. The tokenizer trained by the run has both tokens as special
//!   tokens (a given tokenizer must already have them). At inference, prompt with `<|aligned|>`
//!   and ban both tokens (what `gradus lab phf` does);
//! - `unlikelihood`: tokens of segments scoring above `threshold` get `−ul_alpha · log(1 − p)`,
//!   the others MLE (α = 1);
//! - `rwr`: token NLL weighted by `min(exp(r/β), clip_weight_max)`, β = 10;
//! - `awr`: weight `min(exp((r − V)/β), clip)` with V a value head, loss `awr_alpha · weighted LM
//!   + (1 − awr_alpha) · value MSE` (α = 0.5, β = 10, clip 1000).
//!
//! The losses are in `gradus_objectives::phf`. Validation (`val/loss`) uses held-out documents
//! (split before filtering) in the same segmented format; for conditional training every segment
//! carries its true control token, which is left out of the loss.
//!
//! Deviations from the paper's code, on purpose: the AWR value head is a linear map of the final
//! hidden state trained on the **detached** state (the trunk is trained only by the weighted LM
//! term; the paper back-propagates the value loss into the trunk) with its own Adam
//! (`value_lr`), stepped once per optimiser step and saved with every checkpoint
//! (`value_head.json`, exact bits); the misalignment threshold is per segment for UL as for
//! conditional training.

use std::path::Path;

use gradus_data::pack::{Batch, CursorState, IndexCursor, Row, Sequence};
use gradus_data::tokenizer::Tokenizer;
use gradus_model::decoder::Decoder;
use gradus_model::fast::FastDecoder;
use gradus_objectives::phf as obj;
use gradus_tasks::phf::{doc_score, segments, Scorer, ScorerKind};
use gradus_tensor::rng::Rng;
use gradus_tensor::{Error, Result, Tensor, Var};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::recipe::RecipeConfig;
use crate::trainer::{forward_input, BatchSource, Learner, LmLearner};

/// The scores cache in the run directory.
pub const SCORES_FILE: &str = "phf-scores.json";
/// The AWR value head in each checkpoint directory.
pub const VALUE_HEAD_FILE: &str = "value_head.json";

/// Which PHF objective (`[phf] kind`); see the module docs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum PhfKind {
    #[default]
    Mle,
    Filtering,
    Conditional,
    Unlikelihood,
    Rwr,
    Awr,
}

impl PhfKind {
    pub const ALL: [PhfKind; 6] = [
        PhfKind::Mle,
        PhfKind::Filtering,
        PhfKind::Conditional,
        PhfKind::Unlikelihood,
        PhfKind::Rwr,
        PhfKind::Awr,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PhfKind::Mle => "mle",
            PhfKind::Filtering => "filtering",
            PhfKind::Conditional => "conditional",
            PhfKind::Unlikelihood => "unlikelihood",
            PhfKind::Rwr => "rwr",
            PhfKind::Awr => "awr",
        }
    }

    /// Whether the objective needs per-token scores in the loss (not only in data preparation).
    pub fn token_level(self) -> bool {
        matches!(self, PhfKind::Unlikelihood | PhfKind::Rwr | PhfKind::Awr)
    }
}

/// `[phf]`: pretraining with human feedback. Defaults are the paper's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PhfSection {
    pub kind: PhfKind,
    /// `pep8` (violations per character) or `patterns` (regex matches per character).
    pub scorer: ScorerKind,
    /// Regular expressions of `scorer = "patterns"`.
    pub patterns: Vec<String>,
    /// PEP8's maximum line length (E501).
    pub max_line_length: usize,
    /// A segment scoring above this is misaligned (conditional training, unlikelihood). 0: any
    /// violation.
    pub threshold: f64,
    /// Filtering: documents scoring above this are dropped (the paper's PEP8 value 2.8e-3).
    pub filter_threshold: f64,
    /// Filtering: if set, drop documents above this quantile of document scores instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter_quantile: Option<f64>,
    pub aligned_token: String,
    pub misaligned_token: String,
    /// Conditional training: probability of leaving a segment's control token out (0.01).
    pub drop_token_prob: f64,
    /// Unlikelihood: weight α of the −log(1 − p) term (1).
    pub ul_alpha: f64,
    /// RWR/AWR temperature β (10).
    pub beta: f64,
    /// AWR: weight of the LM term; the value loss gets 1 − α (0.5).
    pub awr_alpha: f64,
    /// RWR/AWR: upper clip of the token weights (1000).
    pub clip_weight_max: f64,
    /// AWR: Adam learning rate of the value head.
    pub value_lr: f64,
}

impl Default for PhfSection {
    fn default() -> Self {
        Self {
            kind: PhfKind::Mle,
            scorer: ScorerKind::Pep8,
            patterns: Vec::new(),
            max_line_length: 79,
            threshold: 0.0,
            filter_threshold: 2.8e-3,
            filter_quantile: None,
            aligned_token: "<|aligned|>".into(),
            misaligned_token: "<|misaligned|>".into(),
            drop_token_prob: 0.01,
            ul_alpha: 1.0,
            beta: 10.0,
            awr_alpha: 0.5,
            clip_weight_max: 1000.0,
            value_lr: 1e-3,
        }
    }
}

impl PhfSection {
    /// Checks every setting, naming the field; compiles the scorer.
    pub fn validate(&self) -> Result<()> {
        self.scorer()?;
        let finite_pos = |v: f64, f: &str| -> Result<()> {
            if !(v > 0.0 && v.is_finite()) {
                return Err(Error::config(
                    format!("phf.{f}"),
                    format!("must be positive and finite, got {v}"),
                ));
            }
            Ok(())
        };
        finite_pos(self.beta, "beta")?;
        finite_pos(self.clip_weight_max, "clip_weight_max")?;
        finite_pos(self.value_lr, "value_lr")?;
        if !(self.threshold >= 0.0 && self.threshold.is_finite()) {
            return Err(Error::config(
                "phf.threshold",
                format!(
                    "must be ≥ 0 and finite (scores are ≥ 0), got {}",
                    self.threshold
                ),
            ));
        }
        if !(self.filter_threshold >= 0.0 && self.filter_threshold.is_finite()) {
            return Err(Error::config(
                "phf.filter_threshold",
                format!("must be ≥ 0 and finite, got {}", self.filter_threshold),
            ));
        }
        if let Some(q) = self.filter_quantile {
            if !(0.0..=1.0).contains(&q) {
                return Err(Error::config(
                    "phf.filter_quantile",
                    format!("must be in [0, 1], got {q}"),
                ));
            }
        }
        for (v, f) in [
            (self.drop_token_prob, "drop_token_prob"),
            (self.awr_alpha, "awr_alpha"),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(Error::config(
                    format!("phf.{f}"),
                    format!("must be in [0, 1], got {v}"),
                ));
            }
        }
        if !(self.ul_alpha >= 0.0 && self.ul_alpha.is_finite()) {
            return Err(Error::config(
                "phf.ul_alpha",
                format!("must be ≥ 0 and finite, got {}", self.ul_alpha),
            ));
        }
        for (t, f) in [
            (&self.aligned_token, "aligned_token"),
            (&self.misaligned_token, "misaligned_token"),
        ] {
            if t.is_empty() {
                return Err(Error::config(format!("phf.{f}"), "must not be empty"));
            }
        }
        if self.aligned_token == self.misaligned_token {
            return Err(Error::config(
                "phf.misaligned_token",
                "must differ from phf.aligned_token",
            ));
        }
        Ok(())
    }

    /// The configured scorer.
    pub fn scorer(&self) -> Result<Scorer> {
        Scorer::new(
            self.scorer,
            self.max_line_length,
            &self.patterns,
            "phf.patterns",
        )
    }
}

/// Scored documents: per document, the score of each segment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoreCache {
    pub scorer: ScorerKind,
    pub docs: usize,
    /// `scores[d][s]`: segment `s` of document `d`, as f32 bits (exact on every reload).
    pub scores: Vec<Vec<u32>>,
}

/// The segment scores of `docs`: read from `<run_dir>/phf-scores.json` when resuming and it is
/// there (checked against the documents), else computed (in parallel) and written atomically.
pub fn segment_scores(
    run_dir: &Path,
    docs: &[String],
    phf: &PhfSection,
    resume: bool,
) -> Result<Vec<Vec<f32>>> {
    let path = run_dir.join(SCORES_FILE);
    if resume && path.exists() {
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let c: ScoreCache = serde_json::from_str(&text)
            .map_err(|e| Error::format(&path, format!("not a PHF scores cache: {e}")))?;
        if c.docs != docs.len() || c.scores.len() != docs.len() {
            return Err(Error::format(
                &path,
                format!(
                    "holds scores of {} documents, the data has {}",
                    c.docs,
                    docs.len()
                ),
            ));
        }
        for (i, (d, s)) in docs.iter().zip(&c.scores).enumerate() {
            if segments(d).len() != s.len() {
                return Err(Error::format(
                    &path,
                    format!(
                        "document {i}: {} scores, {} segments",
                        s.len(),
                        segments(d).len()
                    ),
                ));
            }
        }
        return Ok(c
            .scores
            .into_iter()
            .map(|s| s.into_iter().map(f32::from_bits).collect())
            .collect());
    }
    let scorer = phf.scorer()?;
    use rayon::prelude::*;
    let scores: Vec<Vec<f32>> = docs
        .par_iter()
        .map(|d| scorer.score_segments(&segments(d)))
        .collect();
    let cache = ScoreCache {
        scorer: phf.scorer,
        docs: docs.len(),
        scores: scores
            .iter()
            .map(|s| s.iter().map(|x| x.to_bits()).collect())
            .collect(),
    };
    let text = serde_json::to_string(&cache).map_err(|e| Error::msg(e.to_string()))?;
    gradus_tensor::io::write_atomic(&path, text.as_bytes())?;
    Ok(scores)
}

/// The byte-level BPE of a PHF run: gradus' special tokens plus the two control tokens, trained
/// on every document (before filtering, so all six objectives of a corpus share it).
pub fn train_tokenizer(
    texts: &[String],
    cfg: &RecipeConfig,
    phf: &PhfSection,
) -> Result<Tokenizer> {
    let mut specials: Vec<&str> = crate::prep::SPECIALS.to_vec();
    specials.push(&phf.aligned_token);
    specials.push(&phf.misaligned_token);
    let opts = gradus_data::tokenizer::BpeOptions {
        split_digits: cfg.tokenizer.split_digits,
    };
    let mut tok = Tokenizer::train_bpe_with(
        texts.iter(),
        cfg.tokenizer.train_vocab_size,
        &specials,
        2,
        opts,
    )?;
    tok.set_bos(Some(crate::prep::SPECIALS[0]))?;
    tok.set_eos(Some(crate::prep::SPECIALS[0]))?;
    tok.set_pad(Some(crate::prep::SPECIALS[1]))?;
    Ok(tok)
}

/// The tokenizer of a PHF run: as [`crate::prep::tokenizer_for`], but a trained one carries the
/// control tokens; conditional training checks a given tokenizer has them.
pub fn tokenizer_for(
    cfg: &RecipeConfig,
    phf: &PhfSection,
    texts: &[String],
    resume: bool,
) -> Result<Tokenizer> {
    let given = cfg.tokenizer.path.is_some()
        || cfg.model.init_from.is_some()
        || (resume && crate::checkpoint::latest_checkpoint(&cfg.run_dir())?.is_some());
    let tok = if given {
        crate::prep::tokenizer_for(cfg, texts, resume)?
    } else {
        train_tokenizer(texts, cfg, phf)?
    };
    if phf.kind == PhfKind::Conditional {
        control_ids(&tok, phf)?;
    }
    Ok(tok)
}

/// The ids of `(aligned, misaligned)` in `tok`, or an error naming the missing one.
pub fn control_ids(tok: &Tokenizer, phf: &PhfSection) -> Result<(u32, u32)> {
    let id = |t: &str, f: &str| {
        tok.token_to_id(t).ok_or_else(|| {
            Error::config(
                format!("phf.{f}"),
                format!("the tokenizer has no `{t}` token: conditional training needs it (train the tokenizer in this run, or add the token)"),
            )
        })
    };
    Ok((
        id(&phf.aligned_token, "aligned_token")?,
        id(&phf.misaligned_token, "misaligned_token")?,
    ))
}

/// How control tokens are placed in [`encode_doc`].
#[derive(Clone, Copy, Debug)]
pub enum Control {
    /// No control tokens.
    None,
    /// `(aligned, misaligned)` by each segment's score, as loss targets.
    Train(u32, u32),
    /// `(aligned, misaligned)` by each segment's score, not counted in the loss (validation).
    Eval(u32, u32),
    /// `aligned` before every segment, not counted in the loss (clean held-out text).
    AlignedEval(u32),
}

/// One tokenized document: its sequence and, per token, its segment's score (0 for BOS/EOS).
/// `drop(segment)` says whether to leave that segment's control token out.
pub fn encode_doc(
    tok: &Tokenizer,
    doc: &str,
    scores: &[f32],
    threshold: f64,
    control: Control,
    drop: &mut dyn FnMut() -> bool,
) -> Result<(Sequence, Vec<f32>)> {
    let mut ids: Vec<u32> = tok.bos_id().into_iter().collect();
    let mut mask = vec![true; ids.len()];
    let mut tscore = vec![0f32; ids.len()];
    for (seg, &s) in segments(doc).iter().zip(scores) {
        let bad = s as f64 > threshold;
        let ctl = match control {
            Control::None => None,
            Control::Train(a, m) => (!drop()).then_some((if bad { m } else { a }, true)),
            Control::Eval(a, m) => Some((if bad { m } else { a }, false)),
            Control::AlignedEval(a) => Some((a, false)),
        };
        if let Some((id, counted)) = ctl {
            ids.push(id);
            mask.push(counted);
            tscore.push(s);
        }
        let t = tok.encode(seg, false)?;
        mask.extend(std::iter::repeat_n(true, t.len()));
        tscore.extend(std::iter::repeat_n(s, t.len()));
        ids.extend(t);
    }
    if let Some(e) = tok.eos_id() {
        ids.push(e);
        mask.push(true);
        tscore.push(0.0);
    }
    Ok((Sequence::new(ids, mask)?, tscore))
}

/// What data preparation did, for the report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PhfStats {
    pub docs: usize,
    pub segments: usize,
    /// Segments scoring above `phf.threshold`.
    pub misaligned_segments: usize,
    /// Training documents dropped by filtering, and the document-score threshold used.
    pub filtered_docs: usize,
    pub filter_threshold: Option<f64>,
    /// Control tokens left out (conditional training).
    pub dropped_control_tokens: usize,
}

impl PhfStats {
    pub fn table(&self, phf: &PhfSection) -> Vec<(String, String)> {
        let mut rows = vec![
            ("phf.kind".to_string(), phf.kind.name().to_string()),
            ("documents".into(), self.docs.to_string()),
            ("segments (lines)".into(), self.segments.to_string()),
            (
                format!("misaligned segments (score > {})", phf.threshold),
                format!(
                    "{} ({:.1}%)",
                    self.misaligned_segments,
                    100.0 * self.misaligned_segments as f64 / self.segments.max(1) as f64
                ),
            ),
        ];
        if let Some(t) = self.filter_threshold {
            rows.push((
                format!("training documents dropped (score > {t:.3e})"),
                self.filtered_docs.to_string(),
            ));
        }
        if phf.kind == PhfKind::Conditional {
            rows.push((
                "control tokens left out".into(),
                self.dropped_control_tokens.to_string(),
            ));
        }
        rows
    }
}

/// Prepared PHF data: training sequences with per-token scores, validation sequences.
pub struct PhfData {
    pub train: Vec<Sequence>,
    pub train_scores: Vec<Vec<f32>>,
    pub val: Vec<Sequence>,
    pub stats: PhfStats,
}

/// The `q` quantile of `xs` (linear interpolation between order statistics, numpy's default).
pub fn quantile(xs: &[f32], q: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut v: Vec<f64> = xs.iter().map(|&x| x as f64).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    let pos = q * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// Splits off validation documents (as [`crate::prep::split_validation`] would), filters, and
/// encodes documents for `phf.kind`.
pub fn prepare(
    cfg: &RecipeConfig,
    phf: &PhfSection,
    tok: &Tokenizer,
    docs: &[String],
    scores: &[Vec<f32>],
) -> Result<PhfData> {
    let mut stats = PhfStats {
        docs: docs.len(),
        ..Default::default()
    };
    for s in scores {
        stats.segments += s.len();
        stats.misaligned_segments += s.iter().filter(|&&x| x as f64 > phf.threshold).count();
    }
    // The same split as the other recipes: split_validation over document indices.
    let idx: Vec<Sequence> = (0..docs.len())
        .map(|i| Sequence::pretrain(vec![i as u32]))
        .collect();
    let (tr, va) = crate::prep::split_validation(idx, cfg.data.val_fraction, cfg.run.seed);
    let mut train_ix: Vec<usize> = tr.iter().map(|s| s.ids[0] as usize).collect();
    let val_ix: Vec<usize> = va.iter().map(|s| s.ids[0] as usize).collect();

    if phf.kind == PhfKind::Filtering {
        let dscore = |i: usize| doc_score(&segments(&docs[i]), &scores[i]);
        let t = match phf.filter_quantile {
            Some(q) => {
                let ds: Vec<f32> = train_ix.iter().map(|&i| dscore(i)).collect();
                quantile(&ds, q)
            }
            None => phf.filter_threshold,
        };
        let before = train_ix.len();
        train_ix.retain(|&i| dscore(i) as f64 <= t);
        stats.filtered_docs = before - train_ix.len();
        stats.filter_threshold = Some(t);
        if train_ix.is_empty() {
            return Err(Error::config(
                "phf.filter_threshold",
                format!("filtering at {t:.3e} drops every training document"),
            ));
        }
    }
    let (train_ctl, val_ctl) = match phf.kind {
        PhfKind::Conditional => {
            let (a, m) = control_ids(tok, phf)?;
            (Control::Train(a, m), Control::Eval(a, m))
        }
        _ => (Control::None, Control::None),
    };
    let mut rng = Rng::derive(cfg.run.seed, "gradus-train/phf/drop-control");
    let p = phf.drop_token_prob;
    let mut dropped = 0usize;
    let mut drop = || {
        let d = rng.uniform() < p;
        dropped += usize::from(d);
        d
    };
    let mut train = Vec::with_capacity(train_ix.len());
    let mut train_scores = Vec::with_capacity(train_ix.len());
    for &i in &train_ix {
        let (s, t) = encode_doc(
            tok,
            &docs[i],
            &scores[i],
            phf.threshold,
            train_ctl,
            &mut drop,
        )?;
        train.push(s);
        train_scores.push(t);
    }
    stats.dropped_control_tokens = dropped;
    let mut never = || false;
    let val = val_ix
        .iter()
        .map(|&i| {
            encode_doc(
                tok,
                &docs[i],
                &scores[i],
                phf.threshold,
                val_ctl,
                &mut never,
            )
            .map(|x| x.0)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(PhfData {
        train,
        train_scores,
        val,
        stats,
    })
}

/// The per-position score of each row's targets (0 where there is no target), from the pieces
/// the packer placed: position `p` of piece `(doc, start, offset)` predicts token
/// `start + (p − offset) + 1` of its document.
pub fn row_scores(row: &Row, token_scores: &[Vec<f32>]) -> Vec<f32> {
    let mut s = vec![0f32; row.seq_len()];
    for pc in &row.pieces {
        for j in 0..pc.len {
            let p = pc.offset + j;
            if row.loss_weight[p] > 0.0 {
                s[p] = token_scores[pc.doc][pc.start + j + 1];
            }
        }
    }
    s
}

/// A micro-batch with the score of each position's target.
#[derive(Clone, Debug)]
pub struct PhfBatch {
    pub batch: Batch,
    /// (B·T) segment score of each target (0 on padding).
    pub score: Vec<f32>,
}

/// Rows with their per-position scores, walked like [`gradus_data::pack::RowCursor`] (same
/// seeded order, same saved `(epoch, index)`).
pub struct PhfCursor {
    rows: Vec<Row>,
    scores: Vec<Vec<f32>>,
    idx: IndexCursor,
}

impl PhfCursor {
    pub fn new(
        rows: Vec<Row>,
        token_scores: &[Vec<f32>],
        batch_size: usize,
        seed: u64,
    ) -> Result<Self> {
        let scores = rows.iter().map(|r| row_scores(r, token_scores)).collect();
        let idx = IndexCursor::new(rows.len(), batch_size, seed)?;
        Ok(Self { rows, scores, idx })
    }

    pub fn next_batch(&mut self) -> Result<PhfBatch> {
        let ids = self
            .idx
            .next_indices()
            .ok_or_else(|| Error::msg("the training data produced no rows (empty dataset?)"))?
            .to_vec();
        let batch = Batch::from_rows(ids.iter().map(|&i| &self.rows[i]))?;
        let score = ids
            .iter()
            .flat_map(|&i| self.scores[i].iter().copied())
            .collect();
        Ok(PhfBatch { batch, score })
    }

    pub fn cursor(&self) -> Value {
        serde_json::to_value(self.idx.state()).unwrap_or(Value::Null)
    }

    pub fn restore(&mut self, cursor: &Value) -> Result<()> {
        let st: CursorState = serde_json::from_value(cursor.clone()).map_err(|e| {
            Error::msg(format!("trainer_state.json: bad data_cursor {cursor}: {e}"))
        })?;
        self.idx.restore(st)
    }
}

/// The data source LmLearner is given inside [`PhfLearner`] (which feeds batches itself).
pub struct NoData;

impl BatchSource for NoData {
    fn next_batch(&mut self) -> Result<Batch> {
        Err(Error::msg("PhfLearner feeds its own batches"))
    }
    fn cursor(&self) -> Value {
        Value::Null
    }
    fn restore(&mut self, _cursor: &Value) -> Result<()> {
        Ok(())
    }
}

pub use crate::value_head::ValueHead;

/// The learner of the token-level PHF objectives (unlikelihood, RWR, AWR): the LM learner of
/// pretraining with the objective of `gradus_objectives::phf` in place of the NLL. On the fast
/// graph the objective's `dlogp` is back-propagated directly; on the reference graph through the
/// surrogate `Σ dlogp·logp` (same gradient), whose value is replaced by the objective's loss.
pub struct PhfLearner<'a> {
    pub lm: LmLearner<'a>,
    pub data: PhfCursor,
    pub phf: PhfSection,
    pub value: Option<ValueHead>,
    pub grad_accum: usize,
    micro_seen: usize,
}

impl<'a> PhfLearner<'a> {
    pub fn new(lm: LmLearner<'a>, data: PhfCursor, phf: &PhfSection, grad_accum: usize) -> Self {
        let d = lm.model.cfg.hidden_size;
        Self {
            value: (phf.kind == PhfKind::Awr).then(|| ValueHead::new(d)),
            lm,
            data,
            phf: phf.clone(),
            grad_accum: grad_accum.max(1),
            micro_seen: 0,
        }
    }

    /// The objective on one micro-batch's log-probs (and final hidden states for AWR, (N, D)).
    fn objective(
        &mut self,
        lp: &[f32],
        m: &PhfBatch,
        h: Option<&[f32]>,
        norm: f64,
    ) -> Result<(obj::TokenLoss, Vec<(String, f64)>)> {
        let w = &m.batch.loss_weight;
        let p = &self.phf;
        let share = m.batch.num_target_tokens() as f64 / norm.max(1.0);
        let reward: Vec<f32> = m.score.iter().map(|&s| -s).collect();
        let (l, mut metrics) = match p.kind {
            PhfKind::Unlikelihood => {
                let bad: Vec<bool> = m.score.iter().map(|&s| s as f64 > p.threshold).collect();
                let l = obj::unlikelihood(lp, w, &bad, p.ul_alpha, norm)?;
                let c = l.mean_coef;
                (
                    l,
                    vec![("phf/unlikelihood_fraction".to_string(), c * share)],
                )
            }
            PhfKind::Rwr => {
                let l = obj::rwr(lp, w, &reward, p.beta, p.clip_weight_max, norm)?;
                let c = l.mean_coef;
                (l, vec![("phf/mean_weight".to_string(), c * share)])
            }
            PhfKind::Awr => {
                let h = h.ok_or_else(|| Error::msg("AWR needs the final hidden states"))?;
                let vh = self
                    .value
                    .as_mut()
                    .ok_or_else(|| Error::msg("AWR without a value head"))?;
                let values = vh.values(h);
                let a = obj::awr(
                    lp,
                    w,
                    &reward,
                    &values,
                    p.beta,
                    p.awr_alpha,
                    p.clip_weight_max,
                    norm,
                )?;
                vh.accumulate(h, &a.dvalue);
                let c = a.lm.mean_coef;
                (
                    a.lm,
                    vec![
                        ("phf/mean_weight".to_string(), c * share),
                        ("phf/value_loss".to_string(), a.value_loss),
                    ],
                )
            }
            _ => (obj::mle(lp, w, norm)?, Vec::new()),
        };
        metrics.push(("phf/nll".to_string(), l.nll));
        self.micro_seen += 1;
        if self.micro_seen == self.grad_accum {
            self.micro_seen = 0;
            let lr = self.phf.value_lr;
            if let Some(vh) = self.value.as_mut() {
                vh.step(lr);
            }
        }
        Ok((l, metrics))
    }
}

impl Learner for PhfLearner<'_> {
    type Micro = PhfBatch;
    fn params(&self) -> Vec<(String, Var)> {
        self.lm.params()
    }
    fn next_micro(&mut self) -> Result<PhfBatch> {
        self.data.next_batch()
    }
    fn weight(&self, m: &PhfBatch) -> f64 {
        self.lm.weight(&m.batch)
    }
    fn tokens(&self, m: &PhfBatch) -> u64 {
        self.lm.tokens(&m.batch)
    }
    fn loss(&mut self, m: &PhfBatch, norm: f64) -> Result<(Tensor, Vec<(String, f64)>)> {
        let b = &m.batch;
        let model = &*self.lm.model;
        let inp = forward_input(b);
        let n = b.rows * b.seq_len;
        let h = model.hidden_states(&inp, None)?;
        let logits = model
            .logits_from_hidden(&h)?
            .reshape((n, model.cfg.vocab_size))?;
        let tg = Tensor::from_slice(&b.targets, n, model.device())?;
        let lp = gradus_tensor::ops::token_logprobs(&logits, &tg)?;
        let lpv: Vec<f32> = lp.to_vec1()?;
        let hv: Option<Vec<f32>> = if self.phf.kind == PhfKind::Awr {
            Some(h.detach().flatten_all()?.to_vec1()?)
        } else {
            None
        };
        let dev = model.device().clone();
        let (l, metrics) = self.objective(&lpv, m, hv.as_deref(), norm)?;
        let d = Tensor::from_vec(l.dlogp.clone(), n, &dev)?;
        let s = (lp * d)?.sum_all()?;
        let loss = (&s - s.detach())?.affine(1.0, l.loss)?;
        Ok((loss, metrics))
    }
    fn fast(&mut self) -> Option<&mut FastDecoder> {
        self.lm.fast.as_mut()
    }
    fn fast_loss(&mut self, m: &PhfBatch, norm: f64) -> Result<(f64, Vec<(String, f64)>)> {
        let awr = self.phf.kind == PhfKind::Awr;
        let fast = self
            .lm
            .fast
            .as_mut()
            .ok_or_else(|| Error::msg("PhfLearner: no fast graph"))?;
        let lp = fast
            .forward(&forward_input(&m.batch), &m.batch.targets)?
            .to_vec();
        let h = if awr {
            Some(fast.final_hidden()?.to_vec())
        } else {
            None
        };
        let (l, metrics) = self.objective(&lp, m, h.as_deref(), norm)?;
        let fast = self
            .lm
            .fast
            .as_mut()
            .ok_or_else(|| Error::msg("PhfLearner: no fast graph"))?;
        fast.backward(&l.dlogp)?;
        Ok((l.loss, metrics))
    }
    fn save(&self, dir: &Path) -> Result<()> {
        self.lm.save(dir)?;
        if let Some(v) = &self.value {
            v.save(&dir.join(VALUE_HEAD_FILE))?;
        }
        Ok(())
    }
    fn load(&mut self, dir: &Path) -> Result<()> {
        self.lm.load(dir)?;
        if self.value.is_some() {
            let d = self.lm.model.cfg.hidden_size;
            self.value = Some(ValueHead::load(&dir.join(VALUE_HEAD_FILE), d)?);
        }
        Ok(())
    }
    fn cursor(&self) -> Value {
        self.data.cursor()
    }
    fn restore_cursor(&mut self, cursor: &Value) -> Result<()> {
        self.data.restore(cursor)
    }
    fn eval_model(&self) -> Option<(&Decoder, &Tokenizer)> {
        self.lm.eval_model()
    }
    fn sync_weights(&self) -> Result<()> {
        self.lm.sync_weights()
    }
    fn step_metrics(&mut self, step: u64) -> Result<Map<String, Value>> {
        self.lm.step_metrics(step)
    }
}
