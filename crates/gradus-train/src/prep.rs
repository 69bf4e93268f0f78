//! Small helpers the recipes share before their loop: the run directory, the tokenizer, the model,
//! and turning tokenized documents into rows.

use std::path::Path;

use gradus_data::pack::{self, Overflow, Row, Sequence};
use gradus_data::tokenizer::Tokenizer;
use gradus_model::decoder::Decoder;
use gradus_tensor::{Device, Error, Result};

use crate::checkpoint::{latest_checkpoint, verify_checkpoint};
use crate::recipe::{check_context, RecipeConfig};
use crate::rundir::{open_run, RunDir, Start};

/// Special tokens of every tokenizer gradus trains: EOS/BOS share `<|endoftext|>` (GPT-2 style).
pub const SPECIALS: [&str; 4] = ["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"];

/// Takes the run directory (lock, ownership, resume checks: see [`crate::rundir`]). The config is
/// written by the training loop once a resumed checkpoint has loaded.
pub fn start_run(cfg: &RecipeConfig, start: &Start) -> Result<RunDir> {
    start_run_with(&cfg.run_dir(), cfg, start)
}

/// [`start_run`] for any recipe config (dpo, reward, ...): `dir` and the whole resolved config.
pub fn start_run_with<C: serde::Serialize>(dir: &Path, cfg: &C, start: &Start) -> Result<RunDir> {
    open_run(dir, cfg, start)
}

/// Trains a byte-level BPE on `texts` with gradus' special tokens, digits merged like other bytes.
pub fn train_tokenizer(texts: &[String], vocab_size: usize) -> Result<Tokenizer> {
    train_tokenizer_with(texts, vocab_size, false)
}

/// Trains a byte-level BPE on `texts` with gradus' special tokens, each digit its own token when
/// `split_digits` (what recipes do by default: `tokenizer.split_digits`).
pub fn train_tokenizer_with(
    texts: &[String],
    vocab_size: usize,
    split_digits: bool,
) -> Result<Tokenizer> {
    let opts = gradus_data::tokenizer::BpeOptions { split_digits };
    let mut tok = Tokenizer::train_bpe_with(texts.iter(), vocab_size, &SPECIALS, 2, opts)?;
    tok.set_bos(Some(SPECIALS[0]))?;
    tok.set_eos(Some(SPECIALS[0]))?;
    tok.set_pad(Some(SPECIALS[1]))?;
    Ok(tok)
}

/// The tokenizer of a run: from the latest checkpoint when resuming, else `tokenizer.path`, else
/// the `init_from` model's, else trained on `texts`.
pub fn tokenizer_for(cfg: &RecipeConfig, texts: &[String], resume: bool) -> Result<Tokenizer> {
    if resume {
        if let Some(ck) = latest_checkpoint(&cfg.run_dir())? {
            return Tokenizer::from_dir(&ck);
        }
    }
    if let Some(p) = &cfg.tokenizer.path {
        return if p.is_dir() {
            Tokenizer::from_dir(p)
        } else {
            Tokenizer::from_file(p)
        };
    }
    if let Some(m) = &cfg.model.init_from {
        if m.join("tokenizer.json").exists() {
            return Tokenizer::from_dir(m);
        }
        return Err(Error::format(
            m,
            "init_from has no tokenizer.json; set tokenizer.path",
        ));
    }
    train_tokenizer_with(
        texts,
        cfg.tokenizer.train_vocab_size,
        cfg.tokenizer.split_digits,
    )
}

/// The model of a run: `init_from` or a fresh one sized to the tokenizer. (When resuming, the
/// trainer overwrites the weights from the checkpoint.)
pub fn model_for(cfg: &RecipeConfig, tok: &Tokenizer) -> Result<Decoder> {
    let device = Device::Cpu;
    let model = match &cfg.model.init_from {
        Some(dir) => {
            verify_checkpoint(dir)?;
            // A checkpoint, or a LoRA adapter directory merged onto its base.
            let m = gradus_model::lora::load_model_dir(dir, &device)?;
            check_overrides(&cfg.model.config, &m.cfg, dir)?;
            check_context(
                cfg.data.seq_len,
                m.cfg.max_position_embeddings,
                &format!("{}/config.json", dir.display()),
            )?;
            m
        }
        None => {
            let mut c = cfg.model.config.clone();
            c.vocab_size = tok.vocab_size();
            c.bos_token_id = tok.bos_id();
            c.eos_token_id = tok.eos_id();
            c.pad_token_id = tok.pad_id();
            Decoder::new_random(&c, cfg.run.seed, &device)?
        }
    };
    tok.check_fits(model.cfg.vocab_size)?;
    Ok(model)
}

/// `model.config.*` settings with `model.init_from`: the architecture comes from the checkpoint,
/// so a setting that differs from the default and from the checkpoint's value would be silently
/// ignored; it is an error naming the setting, both values and the checkpoint instead.
pub fn check_overrides(
    asked: &gradus_model::DecoderConfig,
    loaded: &gradus_model::DecoderConfig,
    dir: &Path,
) -> Result<()> {
    let flat = |c: &gradus_model::DecoderConfig| {
        toml::Value::try_from(c)
            .map(|v| crate::rundir::flatten_config(&v))
            .map_err(|e| Error::msg(format!("serialising model.config: {e}")))
    };
    let (a, d, l) = (
        flat(asked)?,
        flat(&gradus_model::DecoderConfig::default())?,
        flat(loaded)?,
    );
    for (k, v) in &a {
        // Token ids and the vocabulary come from the tokenizer, not from this section.
        if k == "vocab_size" || k.ends_with("_token_id") {
            continue;
        }
        if d.get(k) != Some(v) && l.get(k) != Some(v) {
            let theirs = l.get(k).map(String::as_str).unwrap_or("(unset)");
            return Err(Error::config(
                format!("model.config.{k}"),
                format!(
                    "is {v}, but model.init_from = {} has {theirs}: with init_from the architecture is the checkpoint's \
                     (remove the setting, or train from scratch without init_from)",
                    dir.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Packs (or pads) documents into rows of `data.seq_len` (`data.overflow` unset: `split`).
pub fn rows(cfg: &RecipeConfig, seqs: &[Sequence], pad_id: u32) -> Result<Vec<Row>> {
    rows_with(
        cfg,
        seqs,
        pad_id,
        cfg.data.overflow.unwrap_or(Overflow::Split),
    )
}

/// How many documents `data.overflow = "skip"` left out, with the first few named.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OverflowReport {
    pub skipped: usize,
    /// `source: N tokens` of the first skipped documents (at most 20).
    pub examples: Vec<String>,
}

/// Applies `overflow` to documents longer than `data.seq_len` before packing, naming each by
/// `sources[i]` (e.g. `file:line`; the index when absent): `skip` warns and counts, `error` stops.
pub fn apply_overflow(
    cfg: &RecipeConfig,
    seqs: &[Sequence],
    sources: &[String],
    overflow: Overflow,
) -> Result<OverflowReport> {
    let n = cfg.data.seq_len;
    let mut rep = OverflowReport::default();
    for (i, s) in seqs.iter().enumerate() {
        if s.len() <= n {
            continue;
        }
        let src = sources
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("example {i}"));
        match overflow {
            Overflow::Error => {
                return Err(Error::config(
                    "data.overflow",
                    format!("{src}: {} tokens, longer than data.seq_len = {n} (overflow = \"error\"; \"skip\", \"split\" or \"truncate\" handle it)", s.len()),
                ))
            }
            Overflow::Skip => {
                if rep.examples.len() < 20 {
                    tracing::warn!("{src}: {} tokens, longer than data.seq_len = {n}: skipped (data.overflow = \"skip\")", s.len());
                    rep.examples.push(format!("{src}: {} tokens", s.len()));
                }
                rep.skipped += 1;
            }
            Overflow::Split | Overflow::Truncate => {}
        }
    }
    if rep.skipped > 0 {
        eprintln!(
            "warning: {} example(s) longer than data.seq_len = {n} skipped (data.overflow = \"skip\"), e.g. {}",
            rep.skipped,
            rep.examples.first().map(String::as_str).unwrap_or("")
        );
    }
    Ok(rep)
}

/// [`rows`] with an explicit overflow policy. Rows without a single loss target (e.g. the
/// prompt-only pieces of a long SFT example under `split`) are dropped, with a warning: they
/// would train on nothing and, batched together, log a loss of 0.
pub fn rows_with(
    cfg: &RecipeConfig,
    seqs: &[Sequence],
    pad_id: u32,
    overflow: Overflow,
) -> Result<Vec<Row>> {
    let mut rows = if cfg.data.pack {
        pack::pack_best_fit(seqs, cfg.data.seq_len, pad_id, overflow)?
    } else {
        pack::pad_rows(seqs, cfg.data.seq_len, pad_id, overflow)?
    };
    let before = rows.len();
    rows.retain(|r| r.loss_weight.iter().any(|&w| w > 0.0));
    if rows.len() < before {
        eprintln!(
            "warning: {} row(s) without any loss target dropped (all tokens masked)",
            before - rows.len()
        );
    }
    Ok(rows)
}

/// Reads a text dataset (JSONL/Parquet, file or directory) into plain documents.
pub fn read_text_docs(path: &Path, cfg: &RecipeConfig) -> Result<Vec<String>> {
    gradus_data::dataset::read_texts(path, gradus_data::dataset::Shape::Auto, &fields(cfg))
}

/// The dataset field names a recipe config asks for.
pub fn fields(cfg: &RecipeConfig) -> gradus_data::dataset::Fields {
    gradus_data::dataset::Fields {
        text: cfg.data.text_field.clone(),
        prompt: cfg.data.prompt_field.clone(),
        completion: cfg.data.completion_field.clone(),
        messages: cfg.data.messages_field.clone(),
    }
}

/// Plain text of examples, one document each (`Example::into_text`).
pub fn examples_to_texts(ex: Vec<gradus_data::dataset::Example>) -> Vec<String> {
    ex.into_iter().map(|e| e.into_text()).collect()
}

/// Splits `seqs` into training and held-out validation sequences: `ceil(fraction · n)` of them
/// (at least one when `fraction > 0` and `n ≥ 2`, never all), chosen by a seeded shuffle, the rest
/// kept in their order. Deterministic in `(n, fraction, seed)`.
pub fn split_validation(
    seqs: Vec<Sequence>,
    fraction: f64,
    seed: u64,
) -> (Vec<Sequence>, Vec<Sequence>) {
    let n = seqs.len();
    if fraction <= 0.0 || n < 2 {
        return (seqs, Vec::new());
    }
    let k = ((fraction * n as f64).ceil() as usize).clamp(1, n - 1);
    let mut order: Vec<usize> = (0..n).collect();
    gradus_tensor::rng::Rng::derive(seed, "gradus-train/validation-split").shuffle(&mut order);
    let mut is_val = vec![false; n];
    for &i in &order[..k] {
        is_val[i] = true;
    }
    let (mut train, mut val) = (Vec::with_capacity(n - k), Vec::with_capacity(k));
    for (s, v) in seqs.into_iter().zip(is_val) {
        if v {
            val.push(s);
        } else {
            train.push(s);
        }
    }
    (train, val)
}

/// The held-out batches of `val` sequences, packed like the training rows.
pub fn validation_batches(
    cfg: &RecipeConfig,
    val: &[Sequence],
    pad_id: u32,
) -> Result<Vec<pack::Batch>> {
    if val.is_empty() {
        return Ok(Vec::new());
    }
    pack::batches(&rows(cfg, val, pad_id)?, cfg.train.batch_size)
}
