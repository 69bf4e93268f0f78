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
    let t = if temperature > 0.0 { temperature } else { 1.0 } as f32;
    let (m, e) = shifted_exps(logits, t);
    entropy_of(logits, t, m, &e)
}

/// [`entropy`] from [`shifted_exps`]`(logits, t)` = (m, e): H = log Z − Σ p·x with x = logits/t
/// shifted by the max (stable for large logits); 0 when no logit is finite.
fn entropy_of(logits: &[f32], t: f32, m: f32, e: &[f32]) -> f32 {
    if !m.is_finite() {
        return 0.0;
    }
    let inv_t = 1.0 / t;
    let (mut z, mut zx) = (0.0f64, 0.0f64);
    for (&l, &e) in logits.iter().zip(e) {
        z += e as f64;
        if e > 0.0 {
            zx += e as f64 * ((l * inv_t - m) as f64);
        }
    }
    (z.ln() - zx / z) as f32
}

/// Whether `cfg` samples from the whole softmax (temperature > 0, no top-k or top-p cut) over a
/// vocabulary of `v`.
fn samples_full(cfg: &SamplingConfig, v: usize) -> bool {
    cfg.temperature > 0.0 && !(cfg.top_k > 0 && cfg.top_k < v) && cfg.top_p >= 1.0
}

/// (max of logits/t, e^(logits/t − max) per entry): the unnormalised softmax at temperature `t`,
/// with the vectorisable f32 exp of `gradus_tensor` (relative error < 4e-7; libm's f64 exp here was
/// a tenth of an RL step).
fn shifted_exps(logits: &[f32], t: f32) -> (f32, Vec<f32>) {
    let inv_t = 1.0 / t;
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) * inv_t;
    let e = if m.is_finite() {
        logits
            .iter()
            .map(|&x| gradus_tensor::ops::simd::exp(x * inv_t - m))
            .collect()
    } else {
        vec![0.0; logits.len()]
    };
    (m, e)
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
    let t = cfg.temperature as f32;
    if samples_full(cfg, logits.len()) {
        return draw(&shifted_exps(logits, t).1, rng);
    }
    let truncates = cfg.top_k > 0 && cfg.top_k < logits.len();
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    // By logit descending, ties by index: deterministic.
    let order = |&a: &usize, &b: &usize| {
        logits[b]
            .partial_cmp(&logits[a])
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(&b))
    };
    if truncates {
        // Only the k best need an order: select them, then sort those.
        idx.select_nth_unstable_by(cfg.top_k - 1, order);
        idx.truncate(cfg.top_k);
    }
    idx.sort_by(order);
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

/// Draws from softmax(logits / t) over the whole vocabulary given its unnormalised terms `e`
/// ([`shifted_exps`]): the inverse CDF in index order (no sort: with a 512-word vocabulary,
/// sorting every row was a third of an RL step).
fn draw(e: &[f32], rng: &mut Rng) -> u32 {
    let z: f64 = e.iter().map(|&x| x as f64).sum();
    let u = rng.uniform() * z;
    let mut acc = 0.0;
    let mut last = 0;
    for (i, &x) in e.iter().enumerate() {
        if x > 0.0 {
            last = i;
        }
        acc += x as f64;
        if u < acc {
            return i as u32;
        }
    }
    last as u32
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
            // Sampling the whole softmax: its terms serve the draw and the entropy metric alike.
            let mut h = None;
            let tok = if done[r] {
                pad
            } else if let Some(t) = force(r, &out[r].tokens) {
                t
            } else if banned.is_empty() && samples_full(cfg, v) {
                let t = cfg.temperature as f32;
                let (m, e) = shifted_exps(row, t);
                h = Some(entropy_of(row, t, m, &e));
                draw(&e, &mut rng)
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
                out[r]
                    .entropies
                    .push(h.unwrap_or_else(|| entropy(row, cfg.temperature)));
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
