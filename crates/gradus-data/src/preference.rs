//! Preference data: paired `prompt`/`chosen`/`rejected` rows (strings or chat `messages`), unpaired
//! `prompt`/`completion`/`label` rows (KTO), with optional rater agreement (`chosen_fraction`),
//! preference magnitude (`margin`), per-attribute scores and scalar rewards; tokenization with TRL's
//! semantics and padded pair batches.
//!
//! Tokenization (TRL `DPOTrainer` defaults): the prompt is encoded with BOS first; each completion
//! is encoded on its own with EOS appended; the sequence log-prob covers the completion tokens and
//! EOS. Chat rows: the prompt is the messages before the last assistant turn rendered with the
//! generation prompt, the completion is the rest of the rendered conversation.

use std::path::Path;
use std::sync::Arc;

use gradus_tensor::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::chat::ChatTemplate;
use crate::dataset::{iter_records, Message, RowParser};
use crate::pack::{pad_rows, Batch, Overflow, Sequence};
use crate::tokenizer::{json_type, Tokenizer};

/// A prompt or completion: plain text, or chat messages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Turns {
    Text(String),
    Chat(Vec<Message>),
}

impl Turns {
    pub fn is_empty(&self) -> bool {
        match self {
            Turns::Text(s) => s.trim().is_empty(),
            Turns::Chat(m) => m.iter().all(|m| m.content.trim().is_empty()),
        }
    }
}

/// One preference pair and whatever extra signal the row carries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PreferencePair {
    pub prompt: Turns,
    pub chosen: Turns,
    pub rejected: Turns,
    /// Fraction of raters preferring `chosen` (α of Chen et al. 2024).
    pub chosen_fraction: Option<f64>,
    /// Preference magnitude (scaled/margin BT).
    pub margin: Option<f64>,
    /// Scalar rewards of the two completions (MargE, regression on a single score).
    pub chosen_reward: Option<f64>,
    pub rejected_reward: Option<f64>,
    /// Per-attribute scores (regression reward models), same length for both.
    pub chosen_scores: Option<Vec<f64>>,
    pub rejected_scores: Option<Vec<f64>>,
    pub category: Option<String>,
}

/// One unpaired example (KTO): a completion labelled desirable or not.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnpairedExample {
    pub prompt: Turns,
    pub completion: Turns,
    pub label: bool,
    /// A scalar reward of the completion (MargE); without it MargE uses the label as 1/0.
    pub reward: Option<f64>,
    pub category: Option<String>,
}

/// Column names of preference data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PreferenceFields {
    pub prompt: String,
    pub chosen: String,
    pub rejected: String,
    pub completion: String,
    pub label: String,
    /// Unpaired rows: an optional scalar reward of the completion (MargE).
    pub reward: String,
    pub chosen_fraction: String,
    pub margin: String,
    pub chosen_reward: String,
    pub rejected_reward: String,
    pub chosen_scores: String,
    pub rejected_scores: String,
    pub category: String,
}

impl Default for PreferenceFields {
    fn default() -> Self {
        let s = |x: &str| x.to_string();
        Self {
            prompt: s("prompt"),
            chosen: s("chosen"),
            rejected: s("rejected"),
            completion: s("completion"),
            label: s("label"),
            reward: s("reward"),
            chosen_fraction: s("chosen_fraction"),
            margin: s("margin"),
            chosen_reward: s("chosen_reward"),
            rejected_reward: s("rejected_reward"),
            chosen_scores: s("chosen_scores"),
            rejected_scores: s("rejected_scores"),
            category: s("category"),
        }
    }
}

impl PreferenceFields {
    fn columns(&self) -> Vec<String> {
        [
            &self.prompt,
            &self.chosen,
            &self.rejected,
            &self.completion,
            &self.label,
            &self.reward,
            &self.chosen_fraction,
            &self.margin,
            &self.chosen_reward,
            &self.rejected_reward,
            &self.chosen_scores,
            &self.rejected_scores,
            &self.category,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

type Res<T> = std::result::Result<T, String>;

fn turns(obj: &Map<String, Value>, key: &str, required: bool) -> Res<Option<Turns>> {
    match obj.get(key) {
        None | Some(Value::Null) if !required => Ok(None),
        None | Some(Value::Null) => Err(format!("missing field \"{key}\"")),
        Some(Value::String(s)) => Ok(Some(Turns::Text(s.clone()))),
        Some(Value::Array(items)) => {
            let mut msgs = Vec::with_capacity(items.len());
            for (i, m) in items.iter().enumerate() {
                let role = m.get("role").and_then(Value::as_str);
                let content = m.get("content").and_then(Value::as_str);
                match (role, content) {
                    (Some(r), Some(c)) => msgs.push(Message::new(r, c)),
                    _ => {
                        return Err(format!(
                            "field \"{key}\": message {i} needs string \"role\" and \"content\""
                        ))
                    }
                }
            }
            Ok(Some(Turns::Chat(msgs)))
        }
        Some(v) => Err(format!(
            "field \"{key}\": expected a string or a list of messages, found {}",
            json_type(v)
        )),
    }
}

fn number(obj: &Map<String, Value>, key: &str) -> Res<Option<f64>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| format!("field \"{key}\": expected a number, found {}", json_type(v))),
    }
}

fn numbers(obj: &Map<String, Value>, key: &str) -> Res<Option<Vec<f64>>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_f64().ok_or_else(|| {
                    format!("field \"{key}\": expected numbers, found {}", json_type(v))
                })
            })
            .collect::<Res<Vec<f64>>>()
            .map(Some),
        Some(v) => v.as_f64().map(|x| Some(vec![x])).ok_or_else(|| {
            format!(
                "field \"{key}\": expected a list of numbers, found {}",
                json_type(v)
            )
        }),
    }
}

fn text(obj: &Map<String, Value>, key: &str) -> Option<String> {
    match obj.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        v => Some(v.to_string()),
    }
}

/// A pair from one JSON object. A chat row may carry the prompt inside `chosen`/`rejected` (the
/// shared leading messages) instead of a `prompt` field.
pub fn pair_from_object(obj: &Map<String, Value>, f: &PreferenceFields) -> Res<PreferencePair> {
    let mut chosen = turns(obj, &f.chosen, true)?.unwrap_or(Turns::Text(String::new()));
    let mut rejected = turns(obj, &f.rejected, true)?.unwrap_or(Turns::Text(String::new()));
    let prompt = match turns(obj, &f.prompt, false)? {
        Some(p) => p,
        None => match (&mut chosen, &mut rejected) {
            (Turns::Chat(c), Turns::Chat(r)) => {
                let shared = c.iter().zip(r.iter()).take_while(|(a, b)| a == b).count();
                let shared = shared
                    .min(c.len().saturating_sub(1))
                    .min(r.len().saturating_sub(1));
                let p: Vec<Message> = c.drain(..shared).collect();
                r.drain(..shared);
                Turns::Chat(p)
            }
            _ => return Err(format!("missing field \"{}\"", f.prompt)),
        },
    };
    let fraction = number(obj, &f.chosen_fraction)?;
    if let Some(a) = fraction {
        if !(0.0..=1.0).contains(&a) {
            return Err(format!(
                "field \"{}\": must be in [0, 1], got {a}",
                f.chosen_fraction
            ));
        }
    }
    let cs = numbers(obj, &f.chosen_scores)?;
    let rs = numbers(obj, &f.rejected_scores)?;
    if let (Some(a), Some(b)) = (&cs, &rs) {
        if a.len() != b.len() {
            return Err(format!(
                "fields \"{}\" and \"{}\" have {} and {} scores",
                f.chosen_scores,
                f.rejected_scores,
                a.len(),
                b.len()
            ));
        }
    }
    Ok(PreferencePair {
        prompt,
        chosen,
        rejected,
        chosen_fraction: fraction,
        margin: number(obj, &f.margin)?,
        chosen_reward: number(obj, &f.chosen_reward)?,
        rejected_reward: number(obj, &f.rejected_reward)?,
        chosen_scores: cs,
        rejected_scores: rs,
        category: text(obj, &f.category),
    })
}

/// An unpaired example from one JSON object; `label` is a bool or 0/1.
pub fn unpaired_from_object(
    obj: &Map<String, Value>,
    f: &PreferenceFields,
) -> Res<UnpairedExample> {
    let label = match obj.get(&f.label) {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) if n.as_f64() == Some(1.0) => true,
        Some(Value::Number(n)) if n.as_f64() == Some(0.0) => false,
        Some(v) => {
            return Err(format!(
                "field \"{}\": expected true/false, found {v}",
                f.label
            ))
        }
        None => return Err(format!("missing field \"{}\"", f.label)),
    };
    Ok(UnpairedExample {
        prompt: turns(obj, &f.prompt, true)?.unwrap_or(Turns::Text(String::new())),
        completion: turns(obj, &f.completion, true)?.unwrap_or(Turns::Text(String::new())),
        label,
        reward: number(obj, &f.reward)?,
        category: text(obj, &f.category),
    })
}

/// All pairs of a JSONL/Parquet file or directory; errors name file:line and the field.
pub fn read_pairs(path: &Path, f: &PreferenceFields) -> Result<Vec<PreferencePair>> {
    let ff = f.clone();
    let parse: RowParser<PreferencePair> = Arc::new(move |o| pair_from_object(o, &ff));
    iter_records(path, &f.columns(), parse)?.collect()
}

/// All unpaired examples of a file or directory.
pub fn read_unpaired(path: &Path, f: &PreferenceFields) -> Result<Vec<UnpairedExample>> {
    let ff = f.clone();
    let parse: RowParser<UnpairedExample> = Arc::new(move |o| unpaired_from_object(o, &ff));
    iter_records(path, &f.columns(), parse)?.collect()
}

/// Token ids of one prompt and its completion(s): prompt with BOS, completions with EOS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tokenized {
    pub prompt: Vec<u32>,
    pub completions: Vec<Vec<u32>>,
}

/// Encodes a prompt and completions with TRL's semantics (module docs).
pub fn tokenize(
    tok: &Tokenizer,
    tpl: &ChatTemplate,
    prompt: &Turns,
    completions: &[&Turns],
) -> Result<Tokenized> {
    let mut p: Vec<u32> = tok.bos_id().into_iter().collect();
    let mut out = Vec::with_capacity(completions.len());
    match prompt {
        Turns::Text(s) => {
            p.extend(tok.encode(s, false)?);
            for c in completions {
                let text = match c {
                    Turns::Text(t) => t.clone(),
                    Turns::Chat(m) => m
                        .iter()
                        .map(|m| m.content.as_str())
                        .collect::<Vec<_>>()
                        .join("\n"),
                };
                let mut ids = tok.encode(&text, false)?;
                ids.extend(tok.eos_id());
                out.push(ids);
            }
        }
        Turns::Chat(pm) => {
            let ptext = tpl.render(pm, true)?;
            p.extend(tok.encode(&ptext, false)?);
            for c in completions {
                let mut all = pm.clone();
                match c {
                    Turns::Text(t) => all.push(Message::new("assistant", t.clone())),
                    Turns::Chat(m) => all.extend(m.iter().cloned()),
                }
                let full = tpl.render(&all, false)?;
                let rest = full.strip_prefix(&ptext).ok_or_else(|| {
                    Error::msg("chat template: the rendered prompt (with generation prompt) is not a prefix of the rendered conversation")
                })?;
                out.push(tok.encode(rest, false)?);
            }
        }
    }
    Ok(Tokenized {
        prompt: p,
        completions: out,
    })
}

/// A tokenized pair with its signals, ready for batching.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenizedPair {
    pub prompt: Vec<u32>,
    pub chosen: Vec<u32>,
    pub rejected: Vec<u32>,
    pub chosen_fraction: Option<f64>,
    pub margin: Option<f64>,
    pub chosen_reward: Option<f64>,
    pub rejected_reward: Option<f64>,
    pub chosen_scores: Option<Vec<f64>>,
    pub rejected_scores: Option<Vec<f64>>,
    pub category: Option<String>,
}

/// What to do with a pair that cannot be trained on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BadPairPolicy {
    /// Stop with an error naming the pair.
    #[default]
    Error,
    /// Skip it and count it in the run's summary.
    Skip,
}

/// Counts of skipped pairs by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkipCounts {
    pub identical: usize,
    pub empty_completion: usize,
    pub too_long: usize,
}

impl SkipCounts {
    pub fn total(&self) -> usize {
        self.identical + self.empty_completion + self.too_long
    }
}

/// Tokenizes pairs, checking each: chosen ≠ rejected, neither completion empty, prompt +
/// completion ≤ `max_len` tokens. A bad pair is an error naming it, or a counted skip.
pub fn tokenize_pairs(
    tok: &Tokenizer,
    tpl: &ChatTemplate,
    pairs: &[PreferencePair],
    max_len: usize,
    policy: BadPairPolicy,
) -> Result<(Vec<TokenizedPair>, SkipCounts)> {
    let mut out = Vec::with_capacity(pairs.len());
    let mut skips = SkipCounts::default();
    for (i, p) in pairs.iter().enumerate() {
        let reason = if p.chosen.is_empty() || p.rejected.is_empty() {
            Some(("empty completion", &mut skips.empty_completion))
        } else if p.chosen == p.rejected {
            Some(("chosen and rejected are identical", &mut skips.identical))
        } else {
            None
        };
        let t = if reason.is_none() {
            Some(tokenize(tok, tpl, &p.prompt, &[&p.chosen, &p.rejected])?)
        } else {
            None
        };
        let reason = reason.or_else(|| {
            let t = t.as_ref()?;
            let longest = t.prompt.len() + t.completions[0].len().max(t.completions[1].len());
            (longest > max_len).then_some((
                "prompt + completion is longer than the context",
                &mut skips.too_long,
            ))
        });
        if let Some((why, count)) = reason {
            match policy {
                BadPairPolicy::Error => {
                    return Err(Error::msg(format!(
                        "pair {i}: {why} (set prefs.on_bad_pair = \"skip\" to skip such pairs)"
                    )))
                }
                BadPairPolicy::Skip => {
                    *count += 1;
                    continue;
                }
            }
        }
        let mut t = t.expect("tokenized when no reason to skip");
        let rejected = t.completions.pop().unwrap_or_default();
        let chosen = t.completions.pop().unwrap_or_default();
        out.push(TokenizedPair {
            prompt: t.prompt,
            chosen,
            rejected,
            chosen_fraction: p.chosen_fraction,
            margin: p.margin,
            chosen_reward: p.chosen_reward,
            rejected_reward: p.rejected_reward,
            chosen_scores: p.chosen_scores.clone(),
            rejected_scores: p.rejected_scores.clone(),
            category: p.category.clone(),
        });
    }
    Ok((out, skips))
}

/// prompt + completion as a sequence whose loss mask covers the completion.
pub fn completion_sequence(prompt: &[u32], completion: &[u32]) -> Sequence {
    let mut ids = prompt.to_vec();
    ids.extend_from_slice(completion);
    let mask = (0..ids.len()).map(|i| i >= prompt.len()).collect();
    Sequence {
        ids,
        loss_mask: mask,
    }
}

/// Right-padded rows of `prompt + completion` sequences, one per row, as a [`Batch`] whose
/// `loss_weight` marks the completion targets; each row's completion length is the row's sum of
/// `loss_weight`.
pub fn completion_batch(seqs: &[Sequence], pad_id: u32) -> Result<Batch> {
    let t = seqs.iter().map(|s| s.ids.len()).max().unwrap_or(0);
    if t < 2 {
        return Err(Error::msg(
            "completion batch: every sequence is shorter than 2 tokens",
        ));
    }
    let rows = pad_rows(seqs, t, pad_id, Overflow::Error)?;
    Batch::from_rows(rows.iter())
}

/// The batch of B pairs: rows 0..B are prompt+chosen, rows B..2B prompt+rejected.
pub fn pair_batch(pairs: &[&TokenizedPair], pad_id: u32) -> Result<Batch> {
    let mut seqs: Vec<Sequence> = pairs
        .iter()
        .map(|p| completion_sequence(&p.prompt, &p.chosen))
        .collect();
    seqs.extend(
        pairs
            .iter()
            .map(|p| completion_sequence(&p.prompt, &p.rejected)),
    );
    completion_batch(&seqs, pad_id)
}
