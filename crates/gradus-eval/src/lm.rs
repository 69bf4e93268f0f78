//! The three request kinds of lm-evaluation-harness, on a gradus decoder, with HFLM's semantics.
//!
//! - [`EvalModel::loglikelihood`]: `(context, continuation) → (Σ log p(continuation | context),
//!   is_greedy)`. The split rule of HFLM's `_encode_pair`: trailing whitespace of the context moves
//!   to the front of the continuation, the whole string is encoded once and the continuation's
//!   tokens are what follows the context's own encoding. An empty context is replaced by the
//!   prefix token (BOS, else EOS). Inputs longer than the window keep their last `max_length + 1`
//!   tokens (`(ctx + cont)[-(L+1):][:-1]` is fed to the model), as HFLM does; a continuation that
//!   alone does not fit is an error, not a silent truncation.
//! - [`EvalModel::loglikelihood_rolling`]: the log-likelihood of a whole text scored in disjoint
//!   windows of at most `max_length` predicted tokens, each window seeing up to `max_length`
//!   tokens of context (lm-eval's `get_rolling_token_windows` with `context_len = 1`, then
//!   `make_disjoint_window`); the first token is predicted from the prefix token.
//! - [`EvalModel::generate_until`]: greedy (or sampled) continuation on the KV-cache generator,
//!   the context left-truncated to `max_length - max_gen_toks` tokens, decoding stopped once any
//!   stop string appears (or at EOS, or after `max_gen_toks` tokens), the text decoded without
//!   special tokens and cut before the first occurrence of each stop string in turn.
//!
//! Texts are encoded as lm-eval 0.4.13 encodes them: with the tokenizer's own special tokens (a BOS
//! for Llama-style post-processors) unless the text already starts with the BOS text.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use gradus_data::tokenizer::Tokenizer;
use gradus_model::generate::{generate, SamplingConfig};
use gradus_model::{Decoder, ForwardInput};
use gradus_tensor::{Device, Tensor};

/// A model and its tokenizer, ready to answer requests.
pub struct EvalModel {
    /// The decoder.
    pub decoder: Decoder,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// The context window (tokens): HFLM's `max_length`, `max_position_embeddings` unless overridden.
    pub max_length: usize,
    /// The checkpoint directory the model was loaded from.
    pub dir: PathBuf,
    /// Whether to run the tokenizer's post-processor (lm-eval's `add_bos_token`); `None` = lm-eval
    /// 0.4.13's default (yes, unless the text starts with the BOS text).
    pub add_special_tokens: Option<bool>,
    /// Put the prefix token (BOS) in front of every encoded text that does not start with it
    /// already: for models trained with a BOS at the start of every sequence by a tokenizer whose
    /// post-processor adds none (gradus' trained tokenizers; the SFT recipe adds the BOS itself).
    /// Default off (lm-eval's behaviour).
    pub prepend_bos: bool,
}

/// Result of one log-likelihood request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LogLikelihood {
    /// Sum of the continuation tokens' log-probabilities (natural log).
    pub logprob: f64,
    /// Whether greedy decoding would have produced the continuation (every token the argmax).
    pub is_greedy: bool,
    /// Whether the context was cut to fit the window.
    pub truncated: bool,
}

/// One generation request.
#[derive(Clone, Debug, PartialEq)]
pub struct GenRequest {
    /// The prompt.
    pub context: String,
    /// Stop strings (the EOS token's text is added, as lm-eval's `handle_stop_sequences` does).
    pub until: Vec<String>,
    /// Maximum number of new tokens.
    pub max_gen_toks: usize,
    /// Sampling temperature; 0 is greedy.
    pub temperature: f64,
    /// Seed of sampled generation.
    pub seed: u64,
}

/// Where a gradus run directory or Hugging Face checkpoint directory keeps its model: `dir` itself
/// when it holds `config.json` (or is a PEFT adapter directory), else the highest
/// `dir/checkpoints/step-N` that is one.
pub fn resolve_model_dir(dir: &Path) -> Result<PathBuf> {
    let is_model =
        |d: &Path| d.join("config.json").is_file() || gradus_model::lora::is_adapter_dir(d);
    if is_model(dir) {
        return Ok(dir.to_path_buf());
    }
    let ck = dir.join("checkpoints");
    if ck.is_dir() {
        let mut best: Option<(u64, PathBuf)> = None;
        for e in std::fs::read_dir(&ck).with_context(|| format!("reading {}", ck.display()))? {
            let e = e.with_context(|| format!("reading {}", ck.display()))?;
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(n) = name
                .strip_prefix("step-")
                .and_then(|s| s.parse::<u64>().ok())
            {
                if is_model(&e.path()) && best.as_ref().is_none_or(|(b, _)| n > *b) {
                    best = Some((n, e.path()));
                }
            }
        }
        return best.map(|(_, p)| p).ok_or_else(|| {
            anyhow!(
                "{}: no checkpoints/step-N directory with a config.json (is the run finished?)",
                dir.display()
            )
        });
    }
    if !dir.exists() {
        bail!("{}: no such directory (expected a Hugging Face model directory or a gradus run directory)", dir.display());
    }
    bail!(
        "{}: neither a Hugging Face model directory (config.json + model.safetensors) nor a gradus run directory (checkpoints/step-N)",
        dir.display()
    )
}

fn log_softmax_at(row: &[f32], target: u32) -> (f64, bool) {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let z: f64 = row.iter().map(|&x| (x as f64 - m).exp()).sum();
    let lse = m + z.ln();
    // torch.argmax returns the first maximum.
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    (row[target as usize] as f64 - lse, best == target as usize)
}

/// Splits `(context, continuation)` as HFLM's `_encode_pair`: returns (context text, continuation text).
pub fn split_pair(context: &str, continuation: &str) -> (String, String) {
    let trimmed = context.trim_end();
    let n = context.len() - trimmed.len();
    if n > 0 {
        (
            trimmed.to_string(),
            format!("{}{}", &context[trimmed.len()..], continuation),
        )
    } else {
        (context.to_string(), continuation.to_string())
    }
}

/// lm-eval's `get_rolling_token_windows(tokens, prefix, max_seq_len, context_len=1)` followed by
/// `make_disjoint_window`: (context tokens, predicted tokens) pairs covering every token once.
pub fn rolling_windows(
    tokens: &[u32],
    prefix: u32,
    max_seq_len: usize,
) -> Vec<(Vec<u32>, Vec<u32>)> {
    let mut out = Vec::new();
    if tokens.is_empty() || max_seq_len == 0 {
        return out;
    }
    let pred_len = max_seq_len; // max_seq_len - context_len + 1 with context_len = 1
    let first = max_seq_len.min(tokens.len());
    let mut ctx = vec![prefix];
    ctx.extend_from_slice(&tokens[..first - 1]);
    out.push((ctx, tokens[..first].to_vec()));
    let mut predicted = first;
    while predicted < tokens.len() {
        let n = (tokens.len() - predicted).min(pred_len);
        let end = predicted + n;
        let start = end.saturating_sub(max_seq_len + 1);
        out.push((
            tokens[start..end - 1].to_vec(),
            tokens[end - n..end].to_vec(),
        ));
        predicted += n;
    }
    // make_disjoint_window: a[: len(a) - (len(b) - 1)]
    out.into_iter()
        .map(|(a, b)| {
            let keep = a.len() - (b.len() - 1).min(a.len());
            (a[..keep].to_vec(), b)
        })
        .collect()
}

impl EvalModel {
    /// Loads a Hugging Face model directory or the latest checkpoint of a gradus run directory.
    pub fn load(dir: &Path) -> Result<Self> {
        let dir = resolve_model_dir(dir)?;
        let decoder = gradus_model::lora::load_model_dir(&dir, &Device::Cpu)
            .with_context(|| format!("loading the model in {}", dir.display()))?;
        let tok_dir = gradus_model::lora::tokenizer_dir(&dir)?;
        let tokenizer = Tokenizer::from_dir(&tok_dir)
            .with_context(|| format!("loading the tokenizer in {}", tok_dir.display()))?;
        tokenizer
            .check_fits(decoder.cfg.vocab_size)
            .with_context(|| format!("{}: tokenizer and model disagree", dir.display()))?;
        let max_length = decoder.cfg.max_position_embeddings;
        Ok(EvalModel {
            decoder,
            tokenizer,
            max_length,
            dir,
            add_special_tokens: None,
            prepend_bos: false,
        })
    }

    /// A model already in memory (e.g. the one being trained); the window is its
    /// `max_position_embeddings`.
    pub fn from_parts(decoder: Decoder, tokenizer: Tokenizer, dir: PathBuf) -> Self {
        let max_length = decoder.cfg.max_position_embeddings;
        EvalModel {
            decoder,
            tokenizer,
            max_length,
            dir,
            add_special_tokens: None,
            prepend_bos: false,
        }
    }

    /// The token that stands for an empty context: BOS, else EOS (HFLM's `prefix_token_id`).
    pub fn prefix_token_id(&self) -> Result<u32> {
        self.tokenizer
            .bos_id()
            .or(self.tokenizer.eos_id())
            .or(self.decoder.cfg.bos_token_id)
            .or(self.decoder.cfg.eos_token_id)
            .ok_or_else(|| anyhow!("{}: the tokenizer has neither a BOS nor an EOS token, needed to score a text from its start", self.dir.display()))
    }

    /// Encodes as lm-eval 0.4.13's `tok_encode`: with the tokenizer's special tokens (e.g. a BOS its
    /// post-processor adds) unless the text already starts with the prefix token's text, or as
    /// [`EvalModel::add_special_tokens`] forces.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let add = match self.add_special_tokens {
            Some(a) => a,
            None => {
                let bos = match self.prefix_token_id() {
                    Ok(id) => self.tokenizer.decode(&[id], false)?,
                    Err(_) => String::new(),
                };
                bos.is_empty() || !text.starts_with(&bos)
            }
        };
        Ok(self.tokenizer.encode(text, add)?)
    }

    /// [`EvalModel::encode`] of a text that starts a request (a context, or context and
    /// continuation together), with the BOS in front when [`EvalModel::prepend_bos`] asks for it.
    pub fn encode_context(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.encode(text)?;
        if self.prepend_bos {
            let p = self.prefix_token_id()?;
            if ids.first() != Some(&p) {
                ids.insert(0, p);
            }
        }
        Ok(ids)
    }

    /// (context tokens, continuation tokens) of a log-likelihood request, as HFLM builds them.
    pub fn encode_pair(&self, context: &str, continuation: &str) -> Result<(Vec<u32>, Vec<u32>)> {
        if context.is_empty() {
            return Ok((vec![self.prefix_token_id()?], self.encode(continuation)?));
        }
        let (ctx, cont) = split_pair(context, continuation);
        let whole = self.encode_context(&format!("{ctx}{cont}"))?;
        let c = self.encode_context(&ctx)?;
        let n = c.len().min(whole.len());
        Ok((c, whole[n..].to_vec()))
    }

    /// Log-likelihood requests, `batch_size` rows per forward pass (right-padded; the causal mask
    /// keeps padding invisible, so scores do not depend on the batch). Results in request order.
    pub fn loglikelihood(
        &self,
        reqs: &[(String, String)],
        batch_size: usize,
    ) -> Result<Vec<LogLikelihood>> {
        let toks = reqs
            .iter()
            .map(|(c, x)| self.encode_pair(c, x))
            .collect::<Result<Vec<_>>>()?;
        self.loglikelihood_tokens(&toks, batch_size)
    }

    /// Scores token-level (context, continuation) pairs; see [`EvalModel::loglikelihood`].
    pub fn loglikelihood_tokens(
        &self,
        reqs: &[(Vec<u32>, Vec<u32>)],
        batch_size: usize,
    ) -> Result<Vec<LogLikelihood>> {
        let l = self.max_length;
        for (i, (_, cont)) in reqs.iter().enumerate() {
            if cont.len() > l {
                bail!(
                    "request {i}: the continuation has {} tokens, more than the model's context window of {l} tokens: this model cannot score it",
                    cont.len()
                );
            }
        }
        // Longest first, as lm-eval orders them (less padding per batch).
        let mut order: Vec<usize> = (0..reqs.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(reqs[i].0.len() + reqs[i].1.len()));
        let mut out = vec![
            LogLikelihood {
                logprob: 0.0,
                is_greedy: true,
                truncated: false
            };
            reqs.len()
        ];
        let dev = self.decoder.device().clone();
        for chunk in order.chunks(batch_size.max(1)) {
            let mut inps: Vec<(usize, Vec<u32>, usize, bool)> = Vec::new(); // (req, input, contlen, truncated)
            for &i in chunk {
                let (ctx, cont) = &reqs[i];
                if cont.is_empty() {
                    continue; // Σ over no tokens = 0, greedy (an empty `all()`)
                }
                let whole: Vec<u32> = ctx.iter().chain(cont.iter()).copied().collect();
                let truncated = whole.len() > l + 1;
                let start = whole.len().saturating_sub(l + 1);
                let inp = whole[start..whole.len() - 1].to_vec();
                inps.push((i, inp, cont.len(), truncated));
            }
            if inps.is_empty() {
                continue;
            }
            let b = inps.len();
            let t = inps.iter().map(|x| x.1.len()).max().unwrap_or(1);
            let mut ids = vec![0u32; b * t];
            let mut rows: Vec<u32> = Vec::new(); // flat (b, t) positions whose logits we need
            for (r, (_, inp, contlen, _)) in inps.iter().enumerate() {
                ids[r * t..r * t + inp.len()].copy_from_slice(inp);
                for p in inp.len() - contlen..inp.len() {
                    rows.push((r * t + p) as u32);
                }
            }
            let inp = ForwardInput::new(&ids, b, t);
            let h = self.decoder.hidden_states(&inp, None)?.detach();
            let h = h.reshape((b * t, self.decoder.cfg.hidden_size))?;
            let idx = Tensor::from_slice(&rows, rows.len(), &dev)?;
            let logits = self
                .decoder
                .logits_inference(&h.index_select(&idx, 0)?)?
                .to_vec2::<f32>()?;
            let mut k = 0;
            for (i, _, contlen, truncated) in &inps {
                let cont = &reqs[*i].1;
                let mut lp = 0.0;
                let mut greedy = true;
                for &tok in cont.iter().take(*contlen) {
                    let (x, g) = log_softmax_at(&logits[k], tok);
                    lp += x;
                    greedy &= g;
                    k += 1;
                }
                out[*i] = LogLikelihood {
                    logprob: lp,
                    is_greedy: greedy,
                    truncated: *truncated,
                };
            }
        }
        Ok(out)
    }

    /// Rolling log-likelihood of each text (sum over all its tokens), in disjoint windows.
    pub fn loglikelihood_rolling(&self, texts: &[String], batch_size: usize) -> Result<Vec<f64>> {
        let prefix = self.prefix_token_id()?;
        let mut all = Vec::new();
        let mut owner = Vec::new();
        for (i, s) in texts.iter().enumerate() {
            for w in rolling_windows(&self.encode(s)?, prefix, self.max_length) {
                all.push(w);
                owner.push(i);
            }
        }
        let res = self.loglikelihood_tokens(&all, batch_size)?;
        let mut out = vec![0.0; texts.len()];
        for (r, i) in res.iter().zip(owner) {
            out[i] += r.logprob;
        }
        Ok(out)
    }

    /// Generation requests, `batch_size` prompts at a time (requests with the same settings are
    /// batched together). Returns the texts, cut at the stop strings.
    pub fn generate_until(&self, reqs: &[GenRequest], batch_size: usize) -> Result<Vec<String>> {
        let eos_text = match self.tokenizer.eos_id() {
            Some(e) => Some(self.tokenizer.decode(&[e], false)?),
            None => None,
        };
        let mut eos_ids: Vec<u32> = Vec::new();
        eos_ids.extend(self.decoder.cfg.eos_token_id);
        eos_ids.extend(self.tokenizer.eos_id());
        let mut out = vec![String::new(); reqs.len()];
        // Group by settings (lm-eval batches by identical generation kwargs), longest prompt first.
        let mut order: Vec<usize> = (0..reqs.len()).collect();
        let key = |r: &GenRequest| {
            (
                r.until.clone(),
                r.max_gen_toks,
                r.temperature.to_bits(),
                r.seed,
            )
        };
        let enc: Vec<Vec<u32>> = reqs
            .iter()
            .map(|r| self.encode_context(&r.context))
            .collect::<Result<_>>()?;
        order.sort_by(|&a, &b| {
            key(&reqs[a])
                .cmp(&key(&reqs[b]))
                .then(enc[b].len().cmp(&enc[a].len()))
        });
        let mut i = 0;
        while i < order.len() {
            let first = &reqs[order[i]];
            let mut j = i;
            while j < order.len() && j - i < batch_size.max(1) && key(&reqs[order[j]]) == key(first)
            {
                j += 1;
            }
            let group = &order[i..j];
            let mut until: Vec<String> = first.until.clone();
            if let Some(e) = &eos_text {
                if !until.contains(e) {
                    until.push(e.clone());
                }
            }
            if first.max_gen_toks >= self.max_length {
                bail!(
                    "max_gen_toks {} leaves no room for a prompt in the model's context window of {} tokens",
                    first.max_gen_toks,
                    self.max_length
                );
            }
            let max_ctx = self.max_length - first.max_gen_toks;
            let mut prompts = Vec::with_capacity(group.len());
            for &r in group {
                let e = &enc[r];
                if e.is_empty() {
                    bail!("generation request {r}: the prompt encodes to no tokens");
                }
                prompts.push(e[e.len().saturating_sub(max_ctx)..].to_vec());
            }
            let cfg = SamplingConfig {
                max_new_tokens: first.max_gen_toks,
                temperature: first.temperature,
                top_k: 0,
                top_p: 1.0,
                seed: first.seed,
            };
            let tok = &self.tokenizer;
            let stops: Vec<&str> = until
                .iter()
                .map(|s| s.as_str())
                .filter(|s| !s.is_empty())
                .collect();
            let mut stop = |_row: usize, new: &[u32]| -> bool {
                match tok.decode(new, false) {
                    Ok(s) => stops.iter().any(|u| s.contains(u)),
                    Err(_) => false,
                }
            };
            let gens = generate(&self.decoder, &prompts, &cfg, &eos_ids, &mut stop)?;
            for (&r, g) in group.iter().zip(gens) {
                let mut s = self.tokenizer.decode(&g.tokens, true)?;
                for u in &until {
                    if !u.is_empty() {
                        if let Some(p) = s.find(u.as_str()) {
                            s.truncate(p);
                        }
                    }
                }
                out[r] = s;
            }
            i = j;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_moves_trailing_spaces() {
        // "Q: 2+2 =  " has two trailing spaces: they join the continuation.
        assert_eq!(
            split_pair("Q: 2+2 =  ", "4"),
            ("Q: 2+2 =".to_string(), "  4".to_string())
        );
        assert_eq!(split_pair("a\n", "b"), ("a".to_string(), "\nb".to_string()));
        assert_eq!(split_pair("a", " b"), ("a".to_string(), " b".to_string()));
    }

    #[test]
    fn rolling_windows_cover_each_token_once() {
        // tokens 1..=7, window 3, prefix 0. By hand from lm-eval's definition:
        // first window: ctx [0,1,2] → pred [1,2,3]; made disjoint: ctx [0] (3 - (3-1) = 1 kept).
        // next: predicted=3, n=3, end=6: ctx tokens[2..5]=[3,4,5], pred [4,5,6] → ctx [3].
        // next: predicted=6, n=1, end=7: ctx tokens[3..6]=[4,5,6], pred [7] → ctx [4,5,6].
        let t: Vec<u32> = (1..=7).collect();
        let w = rolling_windows(&t, 0, 3);
        assert_eq!(
            w,
            vec![
                (vec![0], vec![1, 2, 3]),
                (vec![3], vec![4, 5, 6]),
                (vec![4, 5, 6], vec![7])
            ]
        );
        let covered: Vec<u32> = w.iter().flat_map(|(_, b)| b.clone()).collect();
        assert_eq!(covered, t);
    }
}
