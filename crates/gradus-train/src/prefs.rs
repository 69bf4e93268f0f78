//! Shared pieces of the preference recipes (`train dpo`, `train reward`): the `[prefs]` config
//! section and loading and tokenizing the training and held-out pairs. Scoring pairs (sequence
//! log-probs, ranking scores, reward-model scores) lives in `gradus_eval::pairwise`, shared with
//! `gradus eval ranking|reward`, and is re-exported here.

use std::path::PathBuf;

use gradus_data::chat::ChatTemplate;
use gradus_data::preference::{
    read_pairs, tokenize_pairs, BadPairPolicy, PreferenceFields, SkipCounts, TokenizedPair,
};
use gradus_data::tokenizer::Tokenizer;
pub use gradus_eval::pairwise::{pad_id, pair_logps, pair_logps_all, pair_scores};
use gradus_objectives::SeqLogps;
use gradus_tasks::{preference_pairs, Split, SyntheticPairsConfig};
use gradus_tensor::{Error, Result, Tensor};
use serde::{Deserialize, Serialize};

/// Where the held-out pairs of a file source without `prefs.eval_source` come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeldOut {
    /// The first `eval_pairs` usable pairs are taken out of the training set.
    #[default]
    Split,
    /// The first `eval_pairs` training pairs, left in the training set: the diagnostics are then
    /// on training data, and their metrics and report say so (`ranking_train_subset/*`).
    TrainSubset,
}

/// `[prefs]`: where pairs come from and what to do with bad ones.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrefsSection {
    /// Training pairs generated when `data.source = "synthetic"`.
    pub synthetic_pairs: usize,
    /// Held-out pairs for the ranking diagnostics: the synthetic eval split, `eval_source`, or
    /// (for a file source without `eval_source`) the first `eval_pairs` usable pairs of the file,
    /// as `held_out` says.
    pub eval_pairs: usize,
    pub eval_source: Option<String>,
    /// `split` (default): held-out pairs are taken out of the training pairs (disjoint);
    /// `train_subset`: they stay in training, and are named so.
    pub held_out: HeldOut,
    /// Ranking diagnostics on the held-out pairs every N steps (0: only at the end).
    pub eval_every: u64,
    /// Pairs with identical or empty completions, or longer than `data.seq_len`: `error` or `skip`
    /// (counted in the run summary).
    pub on_bad_pair: BadPairPolicy,
    /// α = 1 − ε when a pair has no `chosen_fraction`.
    pub agreement_eps: f64,
    pub fields: PreferenceFields,
    /// The synthetic generator's settings.
    pub synthetic: SyntheticPairsConfig,
    /// Rows are unpaired `prompt`/`completion`/`label` examples (KTO's format) instead of pairs; the
    /// held-out ranking diagnostics then need `eval_source` (pairs).
    pub unpaired: bool,
    /// Shuffle the pairs each epoch (false: file order, as TRL with a sequential sampler).
    pub shuffle: bool,
}

impl Default for PrefsSection {
    fn default() -> Self {
        Self {
            synthetic_pairs: 2000,
            eval_pairs: 200,
            eval_source: None,
            held_out: HeldOut::Split,
            eval_every: 0,
            on_bad_pair: BadPairPolicy::Error,
            agreement_eps: gradus_objectives::ranking::DEFAULT_EPS,
            fields: PreferenceFields::default(),
            synthetic: SyntheticPairsConfig::default(),
            unpaired: false,
            shuffle: true,
        }
    }
}

/// Training and held-out pairs, tokenized, and what was skipped (each bad pair counted once).
pub struct PairData {
    pub train: Vec<TokenizedPair>,
    pub eval: Vec<TokenizedPair>,
    pub skipped: SkipCounts,
    /// The "held-out" pairs are a subset of the training pairs (`prefs.held_out = "train_subset"`).
    pub eval_is_train_subset: bool,
}

/// Reads (or generates) and tokenizes the pairs of a preference run. Held-out pairs never overlap
/// the training pairs unless `prefs.held_out = "train_subset"` asks for it: the synthetic eval
/// split, `prefs.eval_source`, or the first `eval_pairs` usable pairs of the file, taken out of
/// the training set.
pub fn load_pairs(
    source: &str,
    p: &PrefsSection,
    tok: &Tokenizer,
    max_len: usize,
    seed: u64,
) -> Result<PairData> {
    let tpl = ChatTemplate::for_tokenizer(tok)?;
    let add = |a: &mut SkipCounts, b: SkipCounts| {
        a.identical += b.identical;
        a.empty_completion += b.empty_completion;
        a.too_long += b.too_long;
    };
    let mut subset = false;
    let (train, eval, skipped) = if source == "synthetic" {
        let train_raw = preference_pairs(p.synthetic_pairs, seed, Split::Train, &p.synthetic);
        let eval_raw =
            gradus_eval::pairwise::synthetic_eval_pairs(p.eval_pairs, seed, &p.synthetic);
        let (train, mut skipped) = tokenize_pairs(tok, &tpl, &train_raw, max_len, p.on_bad_pair)?;
        let (eval, s2) = tokenize_pairs(tok, &tpl, &eval_raw, max_len, p.on_bad_pair)?;
        add(&mut skipped, s2);
        (train, eval, skipped)
    } else {
        let raw = read_pairs(std::path::Path::new(source), &p.fields)?;
        if raw.is_empty() {
            return Err(Error::config(
                "data.source",
                format!("`{source}` holds no preference pairs"),
            ));
        }
        let (mut all, mut skipped) = tokenize_pairs(tok, &tpl, &raw, max_len, p.on_bad_pair)?;
        match &p.eval_source {
            Some(e) => {
                let eval_raw = read_pairs(std::path::Path::new(e), &p.fields)?;
                let (eval, s2) = tokenize_pairs(tok, &tpl, &eval_raw, max_len, p.on_bad_pair)?;
                add(&mut skipped, s2);
                (all, eval, skipped)
            }
            None => {
                let k = p.eval_pairs.min(all.len());
                match p.held_out {
                    HeldOut::Split => {
                        let train = all.split_off(k);
                        if train.is_empty() && !all.is_empty() {
                            return Err(Error::config(
                                "prefs.eval_pairs",
                                format!(
                                    "`{source}` has {} usable pairs and all {k} would be held out (taken out of training): \
                                     lower prefs.eval_pairs, or give prefs.eval_source",
                                    all.len()
                                ),
                            ));
                        }
                        (train, all, skipped)
                    }
                    HeldOut::TrainSubset => {
                        subset = k > 0;
                        let eval = all[..k].to_vec();
                        (all, eval, skipped)
                    }
                }
            }
        }
    };
    if train.is_empty() {
        if source == "synthetic" && p.synthetic_pairs == 0 {
            return Err(Error::config("prefs.synthetic_pairs", "must be positive"));
        }
        return Err(Error::config(
            "data.source",
            "every pair was skipped (see prefs.on_bad_pair)",
        ));
    }
    Ok(PairData {
        train,
        eval,
        skipped,
        eval_is_train_subset: subset,
    })
}

/// A (B,) tensor of constants (reference log-probs) for a chunk of pairs.
pub fn constant_logps(
    values: &[f64],
    lengths: &[f64],
    device: &gradus_tensor::Device,
) -> Result<SeqLogps> {
    let v: Vec<f32> = values.iter().map(|&x| x as f32).collect();
    SeqLogps::new(
        Tensor::from_slice(&v, v.len(), device)?,
        lengths.iter().map(|&x| x as f32).collect(),
    )
}

/// Where a preference run's checkpoint or model directory is.
pub fn model_dir(init_from: &Option<PathBuf>, what: &str) -> Result<PathBuf> {
    init_from.clone().ok_or_else(|| {
        Error::config(
            "model.init_from",
            format!("{what} starts from a trained model: set model.init_from"),
        )
    })
}
