//! Preference evaluation: `gradus eval reward` (pairwise accuracy of a reward model) and
//! `gradus eval ranking` (ranking accuracy, idealised ranking accuracy, alignment gap and flip
//! difficulty of a policy against a reference; Chen et al. 2024, RESEARCH §3.1).
//!
//! The scoring pieces here (sequence log-probs of pairs, reward-model scores of pairs) are also what
//! the DPO and reward recipes in `gradus-train` use for their held-out diagnostics, so a number
//! logged during training and the same number from `gradus eval` come from one function.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use gradus_data::chat::ChatTemplate;
use gradus_data::preference::{
    pair_batch, read_pairs, tokenize_pairs, BadPairPolicy, PreferenceFields, PreferencePair,
    SkipCounts, TokenizedPair,
};
use gradus_data::tokenizer::Tokenizer;
use gradus_model::decoder::Decoder;
use gradus_model::reward::RewardModel;
use gradus_objectives::math::values;
use gradus_objectives::ranking::{ranking_report, PairScores, RankingReport};
use gradus_objectives::{PairLogps, SeqLogps};
use gradus_tasks::{preference_pairs, Split, SyntheticPairsConfig};
use gradus_tensor::{Error, Result, Tensor};
use serde::Serialize;

/// The pad id of a tokenizer (pad, else EOS, else 0).
pub fn pad_id(tok: &Tokenizer) -> u32 {
    tok.pad_id().or(tok.eos_id()).unwrap_or(0)
}

/// The held-out pairs of the built-in preference generator for a run seeded `seed`: the eval split
/// drawn with `seed + 1`, the same pairs a `train dpo`/`train reward` run with that seed holds out.
pub fn synthetic_eval_pairs(
    n: usize,
    seed: u64,
    cfg: &SyntheticPairsConfig,
) -> Vec<PreferencePair> {
    preference_pairs(n, seed + 1, Split::Eval, cfg)
}

/// Pairs to evaluate, tokenized with the model's chat template, and what was skipped.
pub struct EvalPairs {
    pub pairs: Vec<TokenizedPair>,
    pub skipped: SkipCounts,
}

/// Reads the pairs of `source` (a JSONL/Parquet file or directory, evaluated whole) or, for
/// `synthetic`, generates `n_synthetic` held-out pairs ([`synthetic_eval_pairs`]). Pairs that are
/// identical, empty or longer than `max_len` tokens are skipped and counted.
pub fn load_eval_pairs(
    source: &str,
    tok: &Tokenizer,
    max_len: usize,
    n_synthetic: usize,
    seed: u64,
) -> Result<EvalPairs> {
    let tpl = ChatTemplate::for_tokenizer(tok)?;
    let raw = if source == "synthetic" {
        synthetic_eval_pairs(n_synthetic, seed, &SyntheticPairsConfig::default())
    } else {
        read_pairs(Path::new(source), &PreferenceFields::default())?
    };
    if raw.is_empty() {
        return Err(Error::config(
            "data",
            format!("`{source}` holds no preference pairs"),
        ));
    }
    let (pairs, skipped) = tokenize_pairs(tok, &tpl, &raw, max_len, BadPairPolicy::Skip)?;
    if pairs.is_empty() {
        return Err(Error::config(
            "data",
            format!(
                "every pair of `{source}` was skipped ({} identical, {} empty, {} longer than {max_len} tokens)",
                skipped.identical, skipped.empty_completion, skipped.too_long
            ),
        ));
    }
    Ok(EvalPairs { pairs, skipped })
}

/// Sequence log-probs of `pairs` under `model`: chosen and rejected (B,) with completion lengths.
pub fn pair_logps(model: &Decoder, pairs: &[&TokenizedPair], pad: u32) -> Result<PairLogps> {
    let b = pair_batch(pairs, pad)?;
    let lp = model.row_logps(&crate::forward_input(&b), &b.targets, &b.loss_weight)?;
    let n = pairs.len();
    let lens: Vec<f32> = (0..2 * n)
        .map(|r| {
            b.loss_weight[r * b.seq_len..(r + 1) * b.seq_len]
                .iter()
                .sum()
        })
        .collect();
    PairLogps::new(
        SeqLogps::new(lp.narrow(0, 0, n)?, lens[..n].to_vec())?,
        SeqLogps::new(lp.narrow(0, n, n)?, lens[n..].to_vec())?,
    )
}

/// [`pair_logps`] over many pairs in chunks, without gradients: per pair (chosen, rejected, |y_w|, |y_l|).
pub fn pair_logps_all(
    model: &Decoder,
    pairs: &[TokenizedPair],
    pad: u32,
    chunk: usize,
) -> Result<Vec<[f64; 4]>> {
    let mut out = Vec::with_capacity(pairs.len());
    for c in pairs.chunks(chunk.max(1)) {
        let refs: Vec<&TokenizedPair> = c.iter().collect();
        let l = pair_logps(model, &refs, pad)?;
        let lc = values(&l.chosen.logps.detach())?;
        let lr = values(&l.rejected.logps.detach())?;
        for i in 0..c.len() {
            out.push([
                lc[i] as f64,
                lr[i] as f64,
                l.chosen.lengths[i] as f64,
                l.rejected.lengths[i] as f64,
            ]);
        }
    }
    Ok(out)
}

/// Ranking scores of pairs from policy and reference log-probs (as [`pair_logps_all`] returns).
pub fn pair_scores(
    pairs: &[TokenizedPair],
    policy: &[[f64; 4]],
    reference: &[[f64; 4]],
) -> Vec<PairScores> {
    pairs
        .iter()
        .zip(policy.iter().zip(reference))
        .map(|(p, (a, r))| PairScores {
            policy_chosen: a[0],
            policy_rejected: a[1],
            ref_chosen: r[0],
            ref_rejected: r[1],
            chosen_len: a[2],
            rejected_len: a[3],
            agreement: p.chosen_fraction,
        })
        .collect()
}

/// The ranking diagnostics of `policy` against `reference` on `pairs` (Chen et al. 2024).
pub fn evaluate_ranking(
    policy: &Decoder,
    reference: &Decoder,
    pairs: &[TokenizedPair],
    pad: u32,
    beta: f64,
    eps: f64,
) -> Result<RankingReport> {
    let pl = pair_logps_all(policy, pairs, pad, 16)?;
    let rl = pair_logps_all(reference, pairs, pad, 16)?;
    Ok(ranking_report(&pair_scores(pairs, &pl, &rl), beta, eps))
}

/// A ranking report as the lines `gradus eval ranking` prints.
pub fn ranking_text(r: &RankingReport, beta: f64, skipped: usize) -> String {
    let mut s = String::new();
    let pct = |x: f64| 100.0 * x;
    let _ = writeln!(s, "pairs {} (skipped {skipped})", r.pairs);
    let _ = writeln!(
        s,
        "ranking accuracy              {:.1}%",
        pct(r.ranking_accuracy)
    );
    let _ = writeln!(
        s,
        "  length-normalised           {:.1}%",
        pct(r.ranking_accuracy_normalized)
    );
    let _ = writeln!(
        s,
        "reference ranking accuracy    {:.1}%",
        pct(r.reference_ranking_accuracy)
    );
    let _ = writeln!(
        s,
        "reward accuracy (β = {beta})     {:.1}%",
        pct(r.reward_accuracy)
    );
    for ((b, i), (_, g)) in r.idealised.iter().zip(&r.alignment_gap) {
        let _ = writeln!(
            s,
            "idealised R* at β = {b:<5}    {:.1}%  (alignment gap {:.1}%)",
            pct(*i),
            pct(*g)
        );
    }
    let _ = write!(
        s,
        "mean DPO loss {:.4}; mean flip threshold {:.4}; Thm 4.1 consistency {:.1}%",
        r.mean_dpo_loss,
        r.mean_flip_threshold,
        pct(r.flip_consistency)
    );
    s
}

/// Rows 0..B prompt+chosen, B..2B prompt+rejected; each row's last real position.
fn last_positions(pairs: &[&TokenizedPair]) -> Vec<usize> {
    let c = pairs.iter().map(|p| p.prompt.len() + p.chosen.len() - 1);
    let r = pairs.iter().map(|p| p.prompt.len() + p.rejected.len() - 1);
    c.chain(r).collect()
}

/// Reward-model scores (2B, K) of a batch of pairs: rows 0..B chosen, B..2B rejected.
pub fn reward_pair_scores(rm: &RewardModel, pairs: &[&TokenizedPair], pad: u32) -> Result<Tensor> {
    let b = pair_batch(pairs, pad)?;
    rm.scores(&crate::forward_input(&b), &last_positions(pairs))
}

/// Reward-model scores (N, K) of `prompt + completion` texts, tokenized as the reward and DPO
/// recipes tokenize a text pair (BOS + prompt, completion + EOS), `batch` rows at a time. A text
/// longer than the model's context is an error naming its index.
pub fn score_completions(
    rm: &RewardModel,
    tok: &Tokenizer,
    items: &[(&str, &str)],
    batch: usize,
) -> Result<Vec<Vec<f32>>> {
    let ctx = rm.decoder.cfg.max_position_embeddings;
    let pad = pad_id(tok);
    let mut seqs = Vec::with_capacity(items.len());
    for (i, (prompt, completion)) in items.iter().enumerate() {
        let mut p: Vec<u32> = tok.bos_id().into_iter().collect();
        p.extend(tok.encode(prompt, false)?);
        let mut c = tok.encode(completion, false)?;
        c.extend(tok.eos_id());
        if p.len() + c.len() > ctx {
            return Err(Error::msg(format!(
                "reward model: text {i} has {} tokens, more than its context of {ctx}",
                p.len() + c.len()
            )));
        }
        seqs.push(gradus_data::preference::completion_sequence(&p, &c));
    }
    let mut out = Vec::with_capacity(items.len());
    for chunk in seqs.chunks(batch.max(1)) {
        // A one-token sequence cannot form a batch of its own; a pad keeps it at 2.
        let b = gradus_data::preference::completion_batch(chunk, pad).or_else(|_| {
            let padded: Vec<_> = chunk
                .iter()
                .map(|s| {
                    let mut s = s.clone();
                    s.ids.push(pad);
                    s.loss_mask.push(false);
                    s
                })
                .collect();
            gradus_data::preference::completion_batch(&padded, pad)
        })?;
        let last: Vec<usize> = chunk.iter().map(|s| s.ids.len() - 1).collect();
        let scores = rm.scores(&crate::forward_input(&b), &last)?;
        out.extend(scores.to_vec2::<f32>()?);
    }
    Ok(out)
}

/// A scalar per row: the single output, or the mean of the outputs of a multi-attribute head.
pub fn scalar_scores(scores: &Tensor) -> Result<Tensor> {
    Ok(scores.mean(1)?)
}

/// Pairwise accuracy of a reward model, overall and per category, with every pair's scores.
#[derive(Clone, Debug, Serialize)]
pub struct RewardEval {
    pub pairs: usize,
    pub accuracy: f64,
    /// Per category: (correct, total, accuracy).
    pub per_category: BTreeMap<String, (usize, usize, f64)>,
    /// (chosen, rejected) scalar scores per pair.
    pub scores: Vec<(f64, f64)>,
}

/// [`RewardEval`] of `rm` on `pairs`: a pair is correct when its chosen score is strictly higher.
pub fn evaluate_reward(rm: &RewardModel, pairs: &[TokenizedPair], pad: u32) -> Result<RewardEval> {
    let mut scores = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(16) {
        let refs: Vec<&TokenizedPair> = chunk.iter().collect();
        let s = values(&scalar_scores(&reward_pair_scores(rm, &refs, pad)?)?)?;
        let n = chunk.len();
        scores.extend((0..n).map(|i| (s[i] as f64, s[n + i] as f64)));
    }
    let mut per: BTreeMap<String, (usize, usize, f64)> = BTreeMap::new();
    for (p, (c, r)) in pairs.iter().zip(&scores) {
        let e = per
            .entry(p.category.clone().unwrap_or_else(|| "all".into()))
            .or_default();
        e.0 += (c > r) as usize;
        e.1 += 1;
    }
    for v in per.values_mut() {
        v.2 = v.0 as f64 / v.1.max(1) as f64;
    }
    let correct = scores.iter().filter(|(c, r)| c > r).count();
    Ok(RewardEval {
        pairs: pairs.len(),
        accuracy: correct as f64 / pairs.len().max(1) as f64,
        per_category: per,
        scores,
    })
}

/// A reward evaluation as the lines `gradus eval reward` prints.
pub fn reward_text(e: &RewardEval, skipped: usize) -> String {
    let mut s = format!(
        "pairwise accuracy {:.1}% over {} pairs ({skipped} skipped)",
        100.0 * e.accuracy,
        e.pairs
    );
    for (k, (c, t, acc)) in &e.per_category {
        let _ = write!(s, "\n  {k:<12} {c}/{t}  {:.1}%", 100.0 * acc);
    }
    s
}
