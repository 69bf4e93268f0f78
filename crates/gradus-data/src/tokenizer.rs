//! Tokenizer adapter over Hugging Face `tokenizers`, and a deterministic byte-level BPE trainer.
//!
//! - [`Tokenizer::from_file`] / [`Tokenizer::from_dir`] load any HF `tokenizer.json`; `from_dir` also reads
//!   `tokenizer_config.json` (bos/eos/pad tokens, `chat_template`), a `chat_template.jinja` file, and
//!   `config.json` ids as a fallback.
//! - [`Tokenizer::train_bpe`] / [`Tokenizer::train_bpe_with`] train a GPT-2 style byte-level BPE (ByteLevel
//!   pre-tokenizer and decoder, optionally each digit its own token as in Llama;
//!   no prefix space). The trainer is our own rather than `tokenizers`' `BpeTrainer`, whose tie-breaking
//!   between equally frequent pairs depends on hash-map iteration order; ours breaks ties by the
//!   smallest pair of ids, so the same corpus always gives a byte-identical `tokenizer.json`.
//!
//! Layout of a trained vocabulary: special tokens first (ids `0..S`), then the 256 byte symbols in byte
//! order (`S + b` is byte `b`), then merges in rank order.

use std::collections::{BinaryHeap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use gradus_tensor::{Error, Result};
use rayon::prelude::*;
use serde_json::{json, Value};
use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};

/// Token names tried, in order, when no config says which token is the end of sequence.
const EOS_NAMES: &[&str] = &[
    "<|endoftext|>",
    "</s>",
    "<eos>",
    "<|end_of_text|>",
    "<|im_end|>",
];
/// Token names tried, in order, when no config says which token begins a sequence.
const BOS_NAMES: &[&str] = &["<s>", "<bos>", "<|begin_of_text|>", "<|startoftext|>"];
/// Token names tried, in order, when no config says which token pads.
const PAD_NAMES: &[&str] = &["<|pad|>", "<pad>", "[PAD]", "<|padding|>"];

/// Options of [`Tokenizer::train_bpe_with`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BpeOptions {
    /// Split every digit into its own pre-token (Llama style): numbers are spelled digit by digit,
    /// which small models need to learn arithmetic.
    pub split_digits: bool,
}

/// A text tokenizer: a Hugging Face tokenizer plus the special tokens and chat template a model uses.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos: Option<u32>,
    eos: Option<u32>,
    pad: Option<u32>,
    chat_template: Option<String>,
    /// One past the largest id, computed once (`get_vocab` builds a map: per decode it was a tenth
    /// of an RL rollout).
    vocab_size: usize,
    /// Other fields of `tokenizer_config.json`, kept so that [`Tokenizer::save`] does not lose them.
    extra_config: serde_json::Map<String, Value>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("pad", &self.pad)
            .field("chat_template", &self.chat_template.is_some())
            .finish()
    }
}

impl Tokenizer {
    // ---------------------------------------------------------------- loading

    /// Wrap an already built HF tokenizer; bos/eos/pad are guessed from well-known token names.
    pub fn from_inner(inner: tokenizers::Tokenizer) -> Self {
        let vocab_size = inner
            .get_vocab(true)
            .values()
            .max()
            .map_or(0, |&m| m as usize + 1);
        let mut t = Tokenizer {
            inner,
            vocab_size,
            bos: None,
            eos: None,
            pad: None,
            chat_template: None,
            extra_config: serde_json::Map::new(),
        };
        t.fill_special_from_names();
        t
    }

    /// Load a Hugging Face `tokenizer.json`. Special tokens are guessed from well-known names.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let inner = tokenizers::Tokenizer::from_bytes(&bytes)
            .map_err(|e| Error::format(path, format!("not a valid tokenizer.json: {e}")))?;
        Ok(Self::from_inner(inner))
    }

    /// Load `dir/tokenizer.json`, then `dir/tokenizer_config.json` if present (bos/eos/pad tokens and
    /// `chat_template`), `dir/chat_template.jinja` if present, and `dir/config.json` ids as a fallback
    /// for special tokens the tokenizer config does not name.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let mut t = Self::from_file(dir.join("tokenizer.json"))?;
        // Guesses from names are only the last resort: forget them and fill in order of authority.
        let guessed = (t.bos, t.eos, t.pad);
        t.bos = None;
        t.eos = None;
        t.pad = None;

        let cfg_path = dir.join("tokenizer_config.json");
        if cfg_path.exists() {
            let cfg = read_json_object(&cfg_path)?;
            for (field, slot) in [("bos_token", 0), ("eos_token", 1), ("pad_token", 2)] {
                let Some(v) = cfg.get(field) else { continue };
                let Some(name) = special_token_name(v) else {
                    if v.is_null() {
                        continue;
                    }
                    return Err(Error::format(
                        &cfg_path,
                        format!(
                            "field \"{field}\": expected a string or {{\"content\": ...}}, found {}",
                            json_type(v)
                        ),
                    ));
                };
                let id = t.inner.token_to_id(&name).ok_or_else(|| {
                    Error::format(
                        &cfg_path,
                        format!("field \"{field}\": token {name:?} is not in the vocabulary"),
                    )
                })?;
                *t.slot_mut(slot) = Some(id);
            }
            t.chat_template = match cfg.get("chat_template") {
                None | Some(Value::Null) => None,
                Some(v) => {
                    Some(chat_template_from_value(v).map_err(|m| Error::format(&cfg_path, m))?)
                }
            };
            t.extra_config = cfg;
            for k in ["bos_token", "eos_token", "pad_token", "chat_template"] {
                t.extra_config.remove(k);
            }
        }
        let jinja = dir.join("chat_template.jinja");
        if jinja.exists() {
            t.chat_template =
                Some(std::fs::read_to_string(&jinja).map_err(|e| Error::io(&jinja, e))?);
        }

        let model_cfg = dir.join("config.json");
        if model_cfg.exists() && (t.bos.is_none() || t.eos.is_none() || t.pad.is_none()) {
            let cfg = read_json_object(&model_cfg)?;
            let vocab = t.vocab_size() as u64;
            for (field, slot) in [
                ("bos_token_id", 0),
                ("eos_token_id", 1),
                ("pad_token_id", 2),
            ] {
                if t.slot(slot).is_some() {
                    continue;
                }
                // `eos_token_id` may be a list (Llama 3 instruct): the first one is the canonical end.
                let v = match cfg.get(field) {
                    Some(Value::Array(a)) => a.first(),
                    other => other,
                };
                if let Some(id) = v.and_then(Value::as_u64) {
                    if id >= vocab {
                        return Err(Error::format(
                            &model_cfg,
                            format!("field \"{field}\" = {id} is outside the tokenizer's vocabulary ({vocab})"),
                        ));
                    }
                    *t.slot_mut(slot) = Some(id as u32);
                }
            }
        }
        if t.bos.is_none() {
            t.bos = guessed.0;
        }
        if t.eos.is_none() {
            t.eos = guessed.1;
        }
        if t.pad.is_none() {
            t.pad = guessed.2;
        }
        Ok(t)
    }

    fn slot(&self, i: usize) -> Option<u32> {
        [self.bos, self.eos, self.pad][i]
    }

    fn slot_mut(&mut self, i: usize) -> &mut Option<u32> {
        match i {
            0 => &mut self.bos,
            1 => &mut self.eos,
            _ => &mut self.pad,
        }
    }

    fn fill_special_from_names(&mut self) {
        let find = |names: &[&str]| names.iter().find_map(|n| self.inner.token_to_id(n));
        self.bos = find(BOS_NAMES);
        self.eos = find(EOS_NAMES);
        self.pad = self
            .inner
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| find(PAD_NAMES));
    }

    // ---------------------------------------------------------------- encoding

    /// Token ids of `text`. `add_special_tokens` runs the tokenizer's post-processor (e.g. a BOS for
    /// Llama tokenizers); special tokens written in the text (`<|im_end|>`) are always recognised.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode_fast(text, add_special_tokens)
            .map_err(|e| Error::msg(format!("tokenizer: cannot encode text: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of `text` with each token's byte range `(start, end)` in `text`.
    /// Tokens added by the post-processor have the empty range `(0, 0)`.
    #[allow(clippy::type_complexity)]
    pub fn encode_with_offsets(
        &self,
        text: &str,
        add_special_tokens: bool,
    ) -> Result<(Vec<u32>, Vec<(usize, usize)>)> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| Error::msg(format!("tokenizer: cannot encode text: {e}")))?;
        Ok((enc.get_ids().to_vec(), enc.get_offsets().to_vec()))
    }

    /// Encode many texts in parallel.
    pub fn encode_batch(&self, texts: &[&str], add_special_tokens: bool) -> Result<Vec<Vec<u32>>> {
        texts
            .par_iter()
            .map(|t| self.encode(t, add_special_tokens))
            .collect()
    }

    /// Text of `ids`. With `skip_special` false, encoding then decoding gives back the text exactly for
    /// byte-level tokenizers.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        let bound = self.vocab_size();
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= bound) {
            return Err(Error::msg(format!(
                "tokenizer: cannot decode id {bad}: vocabulary has {bound} ids"
            )));
        }
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| Error::msg(format!("tokenizer: cannot decode: {e}")))
    }

    // ---------------------------------------------------------------- vocabulary

    /// One past the largest token id, added tokens included: the smallest embedding a model needs.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }
    pub fn pad_id(&self) -> Option<u32> {
        self.pad
    }
    pub fn bos_token(&self) -> Option<String> {
        self.bos.and_then(|i| self.id_to_token(i))
    }
    pub fn eos_token(&self) -> Option<String> {
        self.eos.and_then(|i| self.id_to_token(i))
    }
    pub fn pad_token(&self) -> Option<String> {
        self.pad.and_then(|i| self.id_to_token(i))
    }

    /// Set (or clear with `None`) the BOS token; errors if it is not in the vocabulary.
    pub fn set_bos(&mut self, token: Option<&str>) -> Result<()> {
        self.bos = self.lookup("bos_token", token)?;
        Ok(())
    }
    pub fn set_eos(&mut self, token: Option<&str>) -> Result<()> {
        self.eos = self.lookup("eos_token", token)?;
        Ok(())
    }
    pub fn set_pad(&mut self, token: Option<&str>) -> Result<()> {
        self.pad = self.lookup("pad_token", token)?;
        Ok(())
    }

    fn lookup(&self, field: &str, token: Option<&str>) -> Result<Option<u32>> {
        token
            .map(|t| {
                self.token_to_id(t).ok_or_else(|| {
                    Error::config(field, format!("token {t:?} is not in the vocabulary"))
                })
            })
            .transpose()
    }

    /// The Jinja chat template from `tokenizer_config.json`, if any.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    pub fn set_chat_template(&mut self, template: Option<String>) {
        self.chat_template = template;
    }

    /// Encode each text on its own, unpadded, truncated to at most `max_len` tokens (special tokens
    /// included, longest-first as in transformers), whatever `tokenizer.json` says about padding and
    /// truncation. Encoders (BERT) use this: `all-MiniLM-L6-v2`'s file pads to a fixed 128 and
    /// truncates at 128 while sentence-transformers truncates at 256.
    pub fn set_encoder_mode(&mut self, max_len: usize) -> Result<()> {
        self.inner.with_padding(None);
        self.inner
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: max_len,
                ..Default::default()
            }))
            .map_err(|e| Error::msg(format!("tokenizer: cannot truncate at {max_len}: {e}")))?;
        Ok(())
    }

    /// The wrapped Hugging Face tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Error unless every token id is below the model's embedding size.
    pub fn check_fits(&self, model_vocab_size: usize) -> Result<()> {
        let need = self.vocab_size();
        if need > model_vocab_size {
            let max_id = need - 1;
            let name = self.id_to_token(max_id as u32).unwrap_or_default();
            return Err(Error::config(
                "vocab_size",
                format!(
                    "the tokenizer has token ids up to {max_id} ({name:?}), so it needs vocab_size >= {need}, \
                     but the model's vocab_size is {model_vocab_size}"
                ),
            ));
        }
        Ok(())
    }

    // ---------------------------------------------------------------- saving

    /// The `tokenizer.json` text (pretty-printed, deterministic).
    pub fn to_json(&self) -> Result<String> {
        self.inner
            .to_string(true)
            .map_err(|e| Error::msg(format!("tokenizer: cannot serialize: {e}")))
    }

    /// Write `dir/tokenizer.json` and `dir/tokenizer_config.json` (bos/eos/pad tokens, chat template,
    /// and any other fields read by [`Tokenizer::from_dir`]). Creates `dir` if needed.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let tok_path = dir.join("tokenizer.json");
        gradus_tensor::io::write_atomic(&tok_path, self.to_json()?.as_bytes())?;

        let mut cfg = self.extra_config.clone();
        cfg.entry("tokenizer_class")
            .or_insert_with(|| json!("PreTrainedTokenizerFast"));
        for (k, v) in [
            ("bos_token", self.bos_token()),
            ("eos_token", self.eos_token()),
            ("pad_token", self.pad_token()),
        ] {
            if let Some(v) = v {
                cfg.insert(k.into(), json!(v));
            }
        }
        if let Some(t) = &self.chat_template {
            cfg.insert("chat_template".into(), json!(t));
        }
        let cfg_path = dir.join("tokenizer_config.json");
        let text = serde_json::to_string_pretty(&Value::Object(cfg))
            .map_err(|e| Error::msg(e.to_string()))?;
        gradus_tensor::io::write_atomic(&cfg_path, (text + "\n").as_bytes())
    }

    /// A word-level tokenizer over a fixed vocabulary (id = position in `vocab`): text is split on
    /// whitespace and each word must be in the vocabulary (unknown words map to `unk`, which must
    /// be in it). `specials` (also in `vocab`) are marked special. Used by the algorithmic tasks
    /// (modular addition: one token per number) whose inputs are already words.
    pub fn word_level(vocab: &[String], specials: &[&str], unk: &str) -> Result<Self> {
        let mut map = serde_json::Map::new();
        for (i, w) in vocab.iter().enumerate() {
            if w.is_empty() || w.chars().any(char::is_whitespace) {
                return Err(Error::msg(format!(
                    "word-level vocabulary: entry {i} `{w}` is empty or holds whitespace"
                )));
            }
            if map.insert(w.clone(), json!(i)).is_some() {
                return Err(Error::msg(format!(
                    "word-level vocabulary: `{w}` appears twice"
                )));
            }
        }
        if !map.contains_key(unk) {
            return Err(Error::msg(format!(
                "word-level vocabulary: the unknown token `{unk}` is not in it"
            )));
        }
        let mut added = Vec::new();
        for s in specials {
            let id = map.get(*s).cloned().ok_or_else(|| {
                Error::msg(format!(
                    "word-level vocabulary: special token `{s}` is not in it"
                ))
            })?;
            added.push(
                json!({"id": id, "content": s, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true}),
            );
        }
        let j = json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
            "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"},
            "post_processor": null, "decoder": null,
            "model": {"type": "WordLevel", "vocab": Value::Object(map), "unk_token": unk},
        });
        let inner = tokenizers::Tokenizer::from_bytes(j.to_string().as_bytes())
            .map_err(|e| Error::msg(format!("word-level tokenizer: {e}")))?;
        Ok(Self::from_inner(inner))
    }

    // ---------------------------------------------------------------- training

    /// Train a byte-level BPE tokenizer (GPT-2 style, no prefix space) on `texts`, digits merged
    /// like any other bytes. Same as [`Tokenizer::train_bpe_with`] with [`BpeOptions::default`].
    pub fn train_bpe<I, S>(
        texts: I,
        vocab_size: usize,
        special_tokens: &[&str],
        min_frequency: u64,
    ) -> Result<Tokenizer>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str> + Sync,
    {
        Self::train_bpe_with(
            texts,
            vocab_size,
            special_tokens,
            min_frequency,
            BpeOptions::default(),
        )
    }

    /// Train a byte-level BPE tokenizer (GPT-2 style, no prefix space) on `texts`.
    ///
    /// With `opts.split_digits` every digit is its own pre-token (as in Llama's tokenizers), so no
    /// merge ever joins two digits and `"123"` encodes as `"1" "2" "3"`: the pre-tokenizer written to
    /// `tokenizer.json` is `Sequence[Digits(individual_digits), ByteLevel]`, which Hugging Face
    /// `tokenizers` applies identically, and the trainer counts words with that same pre-tokenizer.
    ///
    /// `vocab_size` counts everything: `special_tokens` (ids `0..S` in the given order), the 256 byte
    /// symbols, and the merges; training stops early when no pair occurs at least `min_frequency` times.
    /// Special tokens written inside the corpus are cut out and not learned from. Same corpus and
    /// arguments give an identical tokenizer.
    pub fn train_bpe_with<I, S>(
        texts: I,
        vocab_size: usize,
        special_tokens: &[&str],
        min_frequency: u64,
        opts: BpeOptions,
    ) -> Result<Tokenizer>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str> + Sync,
    {
        let n_base = special_tokens.len() + 256;
        if vocab_size < n_base {
            return Err(Error::config(
                "vocab_size",
                format!(
                    "{vocab_size} is too small: {} special tokens + 256 byte symbols need at least {n_base}",
                    special_tokens.len()
                ),
            ));
        }
        let mut seen = HashSet::new();
        for s in special_tokens {
            if s.is_empty() {
                return Err(Error::config(
                    "special_tokens",
                    "a special token is the empty string",
                ));
            }
            if !seen.insert(*s) {
                return Err(Error::config(
                    "special_tokens",
                    format!("{s:?} is listed twice"),
                ));
            }
        }

        let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": true});
        let pre_tokenizer = if opts.split_digits {
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                byte_level
            ]})
        } else {
            byte_level.clone()
        };
        let pre: tokenizers::pre_tokenizers::PreTokenizerWrapper =
            serde_json::from_value(pre_tokenizer.clone()).map_err(|e| {
                Error::msg(format!("train_bpe: bad pre-tokenizer {pre_tokenizer}: {e}"))
            })?;
        let words = count_words(texts, special_tokens, &pre)?;
        let (tokens, merges) = learn_merges(
            &words,
            vocab_size - special_tokens.len(),
            min_frequency.max(1),
        );

        // Assemble tokenizer.json by hand: explicit and stable across `tokenizers` versions.
        let byte_char = bytes_to_unicode();
        let show = |bytes: &[u8]| {
            bytes
                .iter()
                .map(|&b| byte_char[b as usize])
                .collect::<String>()
        };
        let mut vocab = serde_json::Map::new();
        let mut added = Vec::new();
        for (i, s) in special_tokens.iter().enumerate() {
            vocab.insert(s.to_string(), json!(i));
            added.push(json!({
                "id": i, "content": s, "single_word": false, "lstrip": false, "rstrip": false,
                "normalized": false, "special": true
            }));
        }
        let offset = special_tokens.len();
        for (i, t) in tokens.iter().enumerate() {
            let s = show(t);
            if vocab.contains_key(&s) {
                return Err(Error::config(
                    "special_tokens",
                    format!("{s:?} is also a byte-level token of the vocabulary"),
                ));
            }
            vocab.insert(s, json!(offset + i));
        }
        let merges: Vec<Value> = merges
            .iter()
            .map(|&(a, b)| json!([show(&tokens[a as usize]), show(&tokens[b as usize])]))
            .collect();
        let doc = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": byte_level,
            "decoder": byte_level,
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab, "merges": merges
            }
        });
        let inner = tokenizers::Tokenizer::from_bytes(doc.to_string().as_bytes()).map_err(|e| {
            Error::msg(format!(
                "train_bpe: the trained tokenizer does not load: {e}"
            ))
        })?;
        Ok(Self::from_inner(inner))
    }
}

// -------------------------------------------------------------------- config helpers

fn read_json_object(path: &Path) -> Result<serde_json::Map<String, Value>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(v) => Err(Error::format(
            path,
            format!("expected a JSON object, found {}", json_type(&v)),
        )),
        Err(e) => Err(Error::Parse {
            path: PathBuf::from(path),
            line: e.line(),
            msg: format!("invalid JSON: {e}"),
        }),
    }
}

/// `"</s>"` or `{"__type": "AddedToken", "content": "</s>", ...}`.
fn special_token_name(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

/// A `chat_template` field is a string, or a list of `{"name", "template"}` (the one named "default").
fn chat_template_from_value(v: &Value) -> std::result::Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(items) => {
            let named: Vec<(&str, &str)> = items
                .iter()
                .filter_map(|it| Some((it.get("name")?.as_str()?, it.get("template")?.as_str()?)))
                .collect();
            named
                .iter()
                .find(|(n, _)| *n == "default")
                .or(named.first())
                .map(|(_, t)| t.to_string())
                .ok_or_else(|| {
                    "field \"chat_template\": a list without {\"name\", \"template\"} entries"
                        .into()
                })
        }
        other => Err(format!(
            "field \"chat_template\": expected a string or a list, found {}",
            json_type(other)
        )),
    }
}

/// The JSON type name of a value, for error messages ("a string", "an array", ...).
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

// -------------------------------------------------------------------- byte-level BPE training

/// GPT-2's reversible map from bytes to printable characters (`bytes_to_unicode` in its encoder.py):
/// printable Latin-1 bytes map to themselves, the others to U+0100 onwards in byte order.
fn bytes_to_unicode() -> [char; 256] {
    let mut out = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        out[b as usize] = if printable {
            b as char
        } else {
            n += 1;
            char::from_u32(255 + n).expect("U+0100..U+0143 are valid chars")
        };
    }
    out
}

/// Pre-tokenize every text with `pre` (the pre-tokenizer the trained `tokenizer.json` will hold:
/// ByteLevel's GPT-2 regex, possibly after digit splitting) and count the byte strings of the
/// pieces, sorted so that what follows does not depend on hash order.
fn count_words<I, S>(
    texts: I,
    special_tokens: &[&str],
    pre: &tokenizers::pre_tokenizers::PreTokenizerWrapper,
) -> Result<Vec<(Vec<u8>, u64)>>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str> + Sync,
{
    let texts: Vec<S> = texts.into_iter().collect();
    let char_byte: HashMap<char, u8> = bytes_to_unicode()
        .iter()
        .enumerate()
        .map(|(b, &c)| (c, b as u8))
        .collect();
    let counts = texts
        .par_iter()
        .try_fold(HashMap::<Vec<u8>, u64>::new, |mut acc, text| -> Result<_> {
            for piece in split_on_specials(text.as_ref(), special_tokens) {
                let mut pts = PreTokenizedString::from(piece);
                pre.pre_tokenize(&mut pts)
                    .map_err(|e| Error::msg(format!("train_bpe: pre-tokenizer failed: {e}")))?;
                for (word, _, _) in pts.get_splits(OffsetReferential::Original, OffsetType::Byte) {
                    let bytes: Vec<u8> = word
                        .chars()
                        .map(|c| {
                            char_byte.get(&c).copied().ok_or_else(|| {
                                Error::msg(format!(
                                    "train_bpe: pre-tokenizer produced {c:?}, not a byte symbol"
                                ))
                            })
                        })
                        .collect::<Result<_>>()?;
                    *acc.entry(bytes).or_default() += 1;
                }
            }
            Ok(acc)
        })
        .try_reduce(HashMap::new, |mut a, b| {
            for (k, v) in b {
                *a.entry(k).or_default() += v;
            }
            Ok(a)
        })?;
    let mut words: Vec<(Vec<u8>, u64)> = counts.into_iter().collect();
    words.sort_unstable();
    Ok(words)
}

/// The pieces of `text` between occurrences of any special token (leftmost, longest match first).
fn split_on_specials<'a>(text: &'a str, special_tokens: &[&str]) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        let next = special_tokens
            .iter()
            .filter_map(|s| rest.find(s).map(|at| (at, std::cmp::Reverse(s.len()))))
            .min();
        match next {
            Some((at, std::cmp::Reverse(len))) => {
                if at > 0 {
                    out.push(&rest[..at]);
                }
                rest = &rest[at + len..];
            }
            None => {
                if !rest.is_empty() {
                    out.push(rest);
                }
                return out;
            }
        }
    }
}

type Pair = (u32, u32);

/// Learn merges until there are `n_tokens` byte-level tokens (256 bytes + merges).
///
/// Returns the tokens as byte strings (index = id without the special-token offset) and the merges
/// in rank order. At each step the most frequent adjacent pair is merged; ties go to the smallest
/// `(left id, right id)`. Pair counts are updated incrementally for the words that contain the pair.
fn learn_merges(
    words: &[(Vec<u8>, u64)],
    n_tokens: usize,
    min_frequency: u64,
) -> (Vec<Vec<u8>>, Vec<Pair>) {
    let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    let mut token_ids: HashMap<Vec<u8>, u32> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let mut syms: Vec<Vec<u32>> = words
        .iter()
        .map(|(w, _)| w.iter().map(|&b| b as u32).collect())
        .collect();
    let counts: Vec<u64> = words.iter().map(|(_, c)| *c).collect();

    let mut pair_count: HashMap<Pair, u64> = HashMap::new();
    let mut pair_words: HashMap<Pair, HashSet<usize>> = HashMap::new();
    for (wi, w) in syms.iter().enumerate() {
        for p in w.windows(2) {
            *pair_count.entry((p[0], p[1])).or_default() += counts[wi];
            pair_words.entry((p[0], p[1])).or_default().insert(wi);
        }
    }
    // Max-heap on (count, smallest pair); stale entries are skipped when popped.
    let mut heap: BinaryHeap<(u64, std::cmp::Reverse<Pair>)> = pair_count
        .iter()
        .map(|(&p, &c)| (c, std::cmp::Reverse(p)))
        .collect();

    let mut merges = Vec::new();
    while tokens.len() < n_tokens {
        let Some((count, std::cmp::Reverse(pair))) = heap.pop() else {
            break;
        };
        if pair_count.get(&pair).copied().unwrap_or(0) != count {
            continue; // stale
        }
        if count < min_frequency {
            break;
        }
        let mut merged = tokens[pair.0 as usize].clone();
        merged.extend_from_slice(&tokens[pair.1 as usize]);
        let new_id = *token_ids.entry(merged.clone()).or_insert_with(|| {
            tokens.push(merged);
            (tokens.len() - 1) as u32
        });
        merges.push(pair);

        let mut touched: HashSet<Pair> = HashSet::new();
        let mut affected: Vec<usize> = pair_words
            .remove(&pair)
            .unwrap_or_default()
            .into_iter()
            .collect();
        affected.sort_unstable();
        for wi in affected {
            let w = &syms[wi];
            if !w.windows(2).any(|p| (p[0], p[1]) == pair) {
                continue;
            }
            let c = counts[wi];
            for p in w.windows(2) {
                let k = (p[0], p[1]);
                *pair_count.get_mut(&k).expect("counted pair") -= c;
                touched.insert(k);
            }
            let mut out = Vec::with_capacity(w.len());
            let mut i = 0;
            while i < w.len() {
                if i + 1 < w.len() && (w[i], w[i + 1]) == pair {
                    out.push(new_id);
                    i += 2;
                } else {
                    out.push(w[i]);
                    i += 1;
                }
            }
            for p in out.windows(2) {
                let k = (p[0], p[1]);
                *pair_count.entry(k).or_default() += c;
                pair_words.entry(k).or_default().insert(wi);
                touched.insert(k);
            }
            syms[wi] = out;
        }
        pair_count.remove(&pair);
        for k in touched {
            if let Some(&c) = pair_count.get(&k) {
                if c > 0 {
                    heap.push((c, std::cmp::Reverse(k)));
                }
            }
        }
    }
    (tokens, merges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_map_matches_gpt2() {
        let m = bytes_to_unicode();
        assert_eq!(m[b'A' as usize], 'A');
        assert_eq!(m[b' ' as usize], 'Ġ'); // U+0120: space is the 33rd non-printable byte (0..=32)
        assert_eq!(m[b'\n' as usize], 'Ċ'); // U+010A: byte 10
        assert_eq!(m[0], '\u{100}');
        let set: HashSet<char> = m.iter().copied().collect();
        assert_eq!(set.len(), 256);
    }

    #[test]
    fn merges_on_toy_corpus() {
        // words: "ab" x3, "abc" x2, "bc" x1. Pairs: (a,b)=5, (b,c)=3 -> merge a+b first.
        // Then words: [ab] x3, [ab,c] x2, [b,c] x1: (ab,c)=2, (b,c)=1 -> merge ab+c.
        let words = vec![
            (b"ab".to_vec(), 3),
            (b"abc".to_vec(), 2),
            (b"bc".to_vec(), 1),
        ];
        let (tokens, merges) = learn_merges(&words, 256 + 2, 1);
        let a = b'a' as u32;
        let b = b'b' as u32;
        let c = b'c' as u32;
        assert_eq!(merges, vec![(a, b), (256, c)]);
        assert_eq!(tokens[256], b"ab");
        assert_eq!(tokens[257], b"abc");
        // min_frequency 3: only a+b (5) qualifies; ab+c (2) stops training.
        let (_, merges) = learn_merges(&words, 300, 3);
        assert_eq!(merges, vec![(a, b)]);
    }

    #[test]
    fn ties_break_to_smallest_pair_and_repeats_merge_left_to_right() {
        // "aaaa" x1: (a,a)=3 occurrences -> merge; word becomes [aa, aa]: (aa,aa)=1.
        // "xy" x3: (x,y)=3 ties with (a,a)=3; (a,a) has the smaller ids so it merges first.
        let words = vec![(b"aaaa".to_vec(), 1), (b"xy".to_vec(), 3)];
        let (tokens, merges) = learn_merges(&words, 256 + 3, 1);
        let a = b'a' as u32;
        assert_eq!(merges, vec![(a, a), (b'x' as u32, b'y' as u32), (256, 256)]);
        assert_eq!(tokens[258], b"aaaa");
    }

    #[test]
    fn split_on_specials_cuts_tokens_out() {
        let sp = ["<|endoftext|>", "<|im_end|>"];
        assert_eq!(
            split_on_specials("a<|endoftext|>b<|im_end|><|im_end|>c", &sp),
            vec!["a", "b", "c"]
        );
        assert_eq!(split_on_specials("<|endoftext|>", &sp), Vec::<&str>::new());
    }
}
