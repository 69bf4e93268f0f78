//! Batched KV-cache decoding with greedy, temperature, top-k and top-p sampling.
//!
//! Prompts of different lengths are left-padded; padding gets segment 0 and real tokens segment 1,
//! so the attention's segment mask keeps padding invisible, and each row's positions start at 0
//! at its first real token (the same numbers a lone prompt would get).

use gradus_tensor::rng::Rng;
use gradus_tensor::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::decoder::{Decoder, ForwardInput, KvCache};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingConfig {
    pub max_new_tokens: usize,
    /// 0 means greedy.
    pub temperature: f64,
    /// 0 disables.
    pub top_k: usize,
    /// 1.0 disables.
    pub top_p: f64,
    pub seed: u64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 64,
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

impl SamplingConfig {
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0) {
            return Err(Error::config("temperature", "must be ≥ 0"));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::config("top_p", "must be in (0, 1]"));
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Finish {
    Eos,
    Stop,
    Length,
}

#[derive(Clone, Debug)]
pub struct Generation {
    /// New tokens only (without the prompt, including the EOS token if one ended the row).
    pub tokens: Vec<u32>,
    pub finish: Finish,
    /// Per new token: the entropy (nats) of the distribution it was drawn from before top-k/top-p,
    /// softmax(logits / temperature) (temperature 1 when greedy), as TRL's entropy metric.
    pub entropies: Vec<f32>,
}

/// Entropy (nats) of softmax(logits / temperature); temperature 0 (greedy) counts as 1.
pub fn entropy(logits: &[f32], temperature: f64) -> f32 {
    let t = if temperature > 0.0 { temperature } else { 1.0 };
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    if !m.is_finite() {
        return 0.0;
    }
    // H = log Z − Σ p·x with x = logits/t shifted by the max: stable for large logits.
    let (mut z, mut zx) = (0.0f64, 0.0f64);
    for &l in logits {
        let x = (l as f64 - m) / t;
        let e = x.exp();
        z += e;
        zx += e * x;
    }
    (z.ln() - zx / z) as f32
}

/// Picks the next token from one row of logits.
pub fn sample(logits: &[f32], cfg: &SamplingConfig, rng: &mut Rng) -> u32 {
    if cfg.temperature == 0.0 {
        let mut best = 0;
        for (i, &x) in logits.iter().enumerate() {
            if x > logits[best] {
                best = i;
            }
        }
        return best as u32;
    }
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    // Sort by logit descending, ties by index: deterministic.
    idx.sort_by(|&a, &b| {
        logits[b]
            .partial_cmp(&logits[a])
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(&b))
    });
    if cfg.top_k > 0 && cfg.top_k < idx.len() {
        idx.truncate(cfg.top_k);
    }
    let t = cfg.temperature as f32;
    let m = logits[idx[0]] / t;
    let mut p: Vec<f64> = idx
        .iter()
        .map(|&i| ((logits[i] / t - m) as f64).exp())
        .collect();
    let z: f64 = p.iter().sum();
    p.iter_mut().for_each(|x| *x /= z);
    if cfg.top_p < 1.0 {
        let mut acc = 0.0;
        let mut keep = p.len();
        for (j, &x) in p.iter().enumerate() {
            acc += x;
            if acc >= cfg.top_p {
                keep = j + 1;
                break;
            }
        }
        p.truncate(keep);
        idx.truncate(keep);
        let z: f64 = p.iter().sum();
        p.iter_mut().for_each(|x| *x /= z);
    }
    let u = rng.uniform();
    let mut acc = 0.0;
    for (j, &x) in p.iter().enumerate() {
        acc += x;
        if u < acc {
            return idx[j] as u32;
        }
    }
    *idx.last().unwrap_or(&0) as u32
}

/// Generates continuations for a batch of prompts. `eos` ends a row; `stop(row, new_tokens)`
/// returning true ends it too (for stop strings, checked by the caller on decoded text).
pub fn generate(
    model: &Decoder,
    prompts: &[Vec<u32>],
    cfg: &SamplingConfig,
    eos: &[u32],
    stop: &mut dyn FnMut(usize, &[u32]) -> bool,
) -> Result<Vec<Generation>> {
    generate_banning(model, prompts, cfg, eos, &[], stop)
}

/// [`generate`] that never emits the tokens of `banned` (their logits are set to −∞ before
/// sampling), e.g. the control tokens of conditional training (Korbak et al. 2023).
pub fn generate_banning(
    model: &Decoder,
    prompts: &[Vec<u32>],
    cfg: &SamplingConfig,
    eos: &[u32],
    banned: &[u32],
    stop: &mut dyn FnMut(usize, &[u32]) -> bool,
) -> Result<Vec<Generation>> {
    generate_guided(model, prompts, cfg, eos, banned, &mut |_, _| None, stop)
}

/// [`generate_banning`] where `force(row, new_tokens)` may dictate a row's next token (it is then
/// emitted without sampling and counts towards `max_new_tokens`), e.g. a control token at the start
/// of every line.
pub fn generate_guided(
    model: &Decoder,
    prompts: &[Vec<u32>],
    cfg: &SamplingConfig,
    eos: &[u32],
    banned: &[u32],
    force: &mut dyn FnMut(usize, &[u32]) -> Option<u32>,
    stop: &mut dyn FnMut(usize, &[u32]) -> bool,
) -> Result<Vec<Generation>> {
    cfg.validate()?;
    let b = prompts.len();
    if b == 0 {
        return Ok(vec![]);
    }
    if let Some(i) = prompts.iter().position(|p| p.is_empty()) {
        return Err(Error::msg(format!(
            "prompt {i} is empty: generation needs at least one token (e.g. BOS)"
        )));
    }
    let pad = model
        .cfg
        .pad_token_id
        .or(model.cfg.eos_token_id)
        .unwrap_or(0);
    let l = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(b * l);
    let mut pos = Vec::with_capacity(b * l);
    let mut segs: Vec<Vec<u32>> = Vec::with_capacity(b);
    let mut next_pos: Vec<u32> = Vec::with_capacity(b);
    for p in prompts {
        let padn = l - p.len();
        ids.extend(std::iter::repeat_n(pad, padn).chain(p.iter().copied()));
        pos.extend(std::iter::repeat_n(0, padn).chain(0..p.len() as u32));
        segs.push(
            std::iter::repeat_n(0, padn)
                .chain(std::iter::repeat_n(1, p.len()))
                .collect(),
        );
        next_pos.push(p.len() as u32);
    }
    let mut rng = Rng::derive(cfg.seed, "generate");
    let mut cache = KvCache::with_capacity(model.cfg.num_hidden_layers, l + cfg.max_new_tokens);
    let mut out: Vec<Generation> = (0..b)
        .map(|_| Generation {
            tokens: vec![],
            finish: Finish::Length,
            entropies: vec![],
        })
        .collect();
    let mut done = vec![false; b];
    let v = model.cfg.vocab_size;
    let flat_segs = |segs: &[Vec<u32>]| -> Vec<u32> { segs.iter().flatten().copied().collect() };

    let mut inp_ids = ids;
    let mut inp_pos = pos;
    let mut t = l;
    for _ in 0..cfg.max_new_tokens {
        let s = flat_segs(&segs);
        let inp = ForwardInput {
            input_ids: &inp_ids,
            batch: b,
            seq_len: t,
            position_ids: Some(&inp_pos),
            segment_ids: Some(&s),
        };
        // On a rayon worker: the step's many small parallel ops then run inline or are stolen by
        // the other workers, instead of each being handed from this thread to the pool and waited on.
        let logits = rayon::scope(|_| -> Result<Vec<Vec<f32>>> {
            let h = model.hidden_states(&inp, Some(&mut cache))?;
            let last = h.narrow(1, t - 1, 1)?.squeeze(1)?; // (B, D)
            Ok(model.logits_inference(&last)?.to_vec2::<f32>()?)
        })?;
        let mut next = Vec::with_capacity(b);
        for (r, row) in logits.iter().enumerate() {
            debug_assert_eq!(row.len(), v);
            let tok = if done[r] {
                pad
            } else if let Some(t) = force(r, &out[r].tokens) {
                t
            } else if banned.is_empty() {
                sample(row, cfg, &mut rng)
            } else {
                let mut row = row.clone();
                for &b in banned {
                    if let Some(x) = row.get_mut(b as usize) {
                        *x = f32::NEG_INFINITY;
                    }
                }
                sample(&row, cfg, &mut rng)
            };
            if !done[r] {
                out[r].tokens.push(tok);
                out[r].entropies.push(entropy(row, cfg.temperature));
                if eos.contains(&tok) {
                    done[r] = true;
                    out[r].finish = Finish::Eos;
                } else if stop(r, &out[r].tokens) {
                    done[r] = true;
                    out[r].finish = Finish::Stop;
                }
            }
            next.push(tok);
        }
        if done.iter().all(|&d| d) {
            break;
        }
        inp_pos = next_pos.clone();
        for (r, p) in next_pos.iter_mut().enumerate() {
            *p += 1;
            segs[r].push(1);
        }
        inp_ids = next;
        t = 1;
    }
    Ok(out)
}
