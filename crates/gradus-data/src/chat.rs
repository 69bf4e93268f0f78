//! Chat templates (Jinja, rendered with minijinja) and loss masks for chat and prompt/completion data.
//!
//! A [`ChatTemplate`] renders a Hugging Face `chat_template` as transformers does: `trim_blocks` and
//! `lstrip_blocks` on, the variables `messages`, `add_generation_prompt`, `bos_token`, `eos_token`,
//! the function `raise_exception(msg)`, a `tojson` filter that prints like Python's `json.dumps`
//! (`", "` and `": "` separators, no HTML escaping), and the common Python string and dict methods
//! (`.strip()`, `.startswith()`, `.split()`, `.title()`, `.items()`, `.get()`, ...). TRL-style
//! `{% generation %}` blocks are accepted and rendered as plain content.
//!
//! Without a template, [`ChatTemplate::chatml`] is used (the documented default):
//! ```text
//! <|im_start|>{role}\n{content}<|im_end|>\n        for each message
//! <|im_start|>assistant\n                          if add_generation_prompt
//! ```
//!
//! [`encode_chat`] finds each assistant turn by rendering the conversation incrementally (the prefix
//! before the turn with a generation prompt, and the prefix through the turn) and attributes tokens
//! to turns through the tokenizer's character offsets, so it works for any template whose renders
//! of prefixes are prefixes of the full render (all common templates; Qwen3's, which rewrites earlier
//! assistant turns, is not).

use gradus_tensor::{Error, Result};
use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Environment, ErrorKind, State, Value};

use crate::dataset::Message;
use crate::tokenizer::Tokenizer;

/// The default template: ChatML, as used by Qwen and many small instruct models.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}\
{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}\
{% endfor %}\
{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

const TEMPLATE_NAME: &str = "chat_template";

/// A compiled chat template with the special tokens it may refer to.
pub struct ChatTemplate {
    name: String,
    source: String,
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("name", &self.name)
            .field("source", &self.source)
            .finish()
    }
}

impl ChatTemplate {
    /// Compile `source`. `name` says where the template came from and appears in every error
    /// (e.g. `"models/x/tokenizer_config.json chat_template"`).
    pub fn new(
        name: impl Into<String>,
        source: impl Into<String>,
        bos_token: Option<String>,
        eos_token: Option<String>,
    ) -> Result<Self> {
        let name = name.into();
        let source = source.into();
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(python_method);
        env.add_function("raise_exception", raise_exception);
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, accept_generation_blocks(&source))
            .map_err(|e| template_error(&name, &e))?;
        Ok(ChatTemplate {
            name,
            source,
            env,
            bos_token: bos_token.unwrap_or_default(),
            eos_token: eos_token.unwrap_or_default(),
        })
    }

    /// The default ChatML template (see the module docs).
    pub fn chatml() -> Self {
        Self::new(
            "default ChatML template",
            CHATML_TEMPLATE,
            None,
            Some("<|im_end|>".into()),
        )
        .expect("the built-in ChatML template compiles")
    }

    /// The tokenizer's `chat_template` with its bos/eos tokens, or ChatML if it has none.
    pub fn for_tokenizer(tok: &Tokenizer) -> Result<Self> {
        match tok.chat_template() {
            Some(src) => Self::new(
                "the tokenizer's chat_template",
                src,
                tok.bos_token(),
                tok.eos_token(),
            ),
            None => Ok(Self::chatml()),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The end-of-turn token text the template writes after an assistant reply (`eos_token`;
    /// ChatML's `<|im_end|>`), empty when unknown.
    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Render a conversation; with `add_generation_prompt` the text ends where the assistant's reply
    /// begins.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let tpl = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| template_error(&self.name, &e))?;
        let ctx = minijinja::context! {
            messages => Value::from_serialize(messages),
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        };
        tpl.render(ctx).map_err(|e| template_error(&self.name, &e))
    }
}

fn template_error(name: &str, e: &minijinja::Error) -> Error {
    let mut msg = format!("chat template ({name}): {}", e.kind());
    if let Some(d) = e.detail() {
        msg.push_str(": ");
        msg.push_str(d);
    }
    if let Some(line) = e.line() {
        msg.push_str(&format!(" (template line {line})"));
    }
    Error::Msg(msg)
}

/// `raise_exception("...")` in a template aborts rendering with that message.
fn raise_exception(msg: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(
        ErrorKind::InvalidOperation,
        format!("template raised: {msg}"),
    ))
}

/// Rewrite `{% generation %}` / `{% endgeneration %}` (a transformers extension) into an always-true
/// `if` block, keeping whitespace-control dashes so the output is unchanged.
fn accept_generation_blocks(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while let Some(open) = rest.find("{%") {
        let Some(close) = rest[open..].find("%}") else {
            break;
        };
        let close = open + close + 2;
        let inner = &rest[open + 2..close - 2];
        let left = inner.starts_with('-');
        let right = inner.ends_with('-') && inner.len() > 1;
        let word = inner.trim_start_matches('-').trim_end_matches('-').trim();
        out.push_str(&rest[..open]);
        let l = if left { "-" } else { "" };
        let r = if right { "-" } else { "" };
        match word {
            "generation" => out.push_str(&format!("{{%{l} if true {r}%}}")),
            "endgeneration" => out.push_str(&format!("{{%{l} endif {r}%}}")),
            _ => out.push_str(&rest[open..close]),
        }
        rest = &rest[close..];
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------- Python compatibility

/// `tojson` as transformers defines it: `json.dumps(x, ensure_ascii=False, indent=indent)`.
fn tojson(
    value: &Value,
    indent: Option<usize>,
    kwargs: Kwargs,
) -> std::result::Result<Value, minijinja::Error> {
    let indent = match indent {
        Some(i) => Some(i),
        None => kwargs.get::<Option<usize>>("indent")?,
    };
    kwargs.assert_all_used()?;
    let mut buf = Vec::new();
    let res = match indent {
        Some(n) => {
            let ind = vec![b' '; n];
            let mut ser = serde_json::Serializer::with_formatter(
                &mut buf,
                serde_json::ser::PrettyFormatter::with_indent(&ind),
            );
            serde::Serialize::serialize(value, &mut ser)
        }
        None => {
            let mut ser = serde_json::Serializer::with_formatter(&mut buf, PythonJson);
            serde::Serialize::serialize(value, &mut ser)
        }
    };
    res.map_err(|e| minijinja::Error::new(ErrorKind::BadSerialization, e.to_string()))?;
    Ok(Value::from_safe_string(
        String::from_utf8(buf).expect("serde_json writes UTF-8"),
    ))
}

/// Python's default `json.dumps` separators: `", "` and `": "`.
struct PythonJson;

impl serde_json::ser::Formatter for PythonJson {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
}

/// The Python `str` and `dict` methods chat templates use.
fn python_method(
    state: &State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> std::result::Result<Value, minijinja::Error> {
    let unknown = || Err(minijinja::Error::from(ErrorKind::UnknownMethod));
    let str_arg = |i: usize| -> std::result::Result<Option<&str>, minijinja::Error> {
        match args.get(i) {
            None => Ok(None),
            Some(v) if v.is_none() || v.is_undefined() => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| {
                minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!(".{method}() expects a string argument"),
                )
            }),
        }
    };
    if let Some(s) = value.as_str() {
        let out: Value = match method {
            "strip" | "lstrip" | "rstrip" => {
                let chars: Option<Vec<char>> = str_arg(0)?.map(|c| c.chars().collect());
                let pat = |c: char| match &chars {
                    Some(cs) => cs.contains(&c),
                    None => c.is_whitespace(),
                };
                match method {
                    "strip" => s.trim_matches(pat),
                    "lstrip" => s.trim_start_matches(pat),
                    _ => s.trim_end_matches(pat),
                }
                .into()
            }
            "startswith" | "endswith" => {
                let arg = args.first().cloned().unwrap_or_default();
                // A prefix, or a tuple (list) of prefixes.
                let candidates: Vec<String> = match arg.as_str() {
                    Some(p) => vec![p.to_string()],
                    None => arg
                        .try_iter()?
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect(),
                };
                let hit = candidates.iter().any(|p| {
                    if method == "startswith" {
                        s.starts_with(p.as_str())
                    } else {
                        s.ends_with(p.as_str())
                    }
                });
                hit.into()
            }
            "upper" => s.to_uppercase().into(),
            // Python's str.title(): a letter after a non-letter starts a word (upper), the others
            // are lowered ("they're" → "They'Re", as Python does).
            "title" => {
                let mut out = String::with_capacity(s.len());
                let mut prev_letter = false;
                for ch in s.chars() {
                    if prev_letter {
                        out.extend(ch.to_lowercase());
                    } else {
                        out.extend(ch.to_uppercase());
                    }
                    prev_letter = ch.is_alphabetic();
                }
                out.into()
            }
            "lower" => s.to_lowercase().into(),
            "capitalize" => {
                let mut c = s.chars();
                match c.next() {
                    Some(f) => {
                        (f.to_uppercase().collect::<String>() + &c.as_str().to_lowercase()).into()
                    }
                    None => "".into(),
                }
            }
            "replace" => {
                let (Some(old), Some(new)) = (str_arg(0)?, str_arg(1)?) else {
                    return unknown();
                };
                s.replace(old, new).into()
            }
            "find" => {
                let Some(sub) = str_arg(0)? else {
                    return unknown();
                };
                s.find(sub)
                    .map_or(-1, |b| s[..b].chars().count() as i64)
                    .into()
            }
            "split" | "rsplit" => {
                let sep = str_arg(0)?;
                let max = args
                    .get(1)
                    .and_then(|v| i64::try_from(v.clone()).ok())
                    .filter(|&m| m >= 0);
                let parts: Vec<String> = match (sep, max, method) {
                    (None, _, _) => s.split_whitespace().map(str::to_owned).collect(),
                    (Some(sep), None, _) => s.split(sep).map(str::to_owned).collect(),
                    (Some(sep), Some(m), "split") => {
                        s.splitn(m as usize + 1, sep).map(str::to_owned).collect()
                    }
                    (Some(sep), Some(m), _) => {
                        let mut v: Vec<String> =
                            s.rsplitn(m as usize + 1, sep).map(str::to_owned).collect();
                        v.reverse();
                        v
                    }
                };
                Value::from(parts)
            }
            _ => return unknown(),
        };
        return Ok(out);
    }
    if value.kind() == ValueKind::Map {
        return match method {
            "items" => state.apply_filter("items", std::slice::from_ref(value)),
            "keys" => Ok(Value::from(value.try_iter()?.collect::<Vec<_>>())),
            "values" => {
                let vals: std::result::Result<Vec<Value>, _> =
                    value.try_iter()?.map(|k| value.get_item(&k)).collect();
                Ok(Value::from(vals?))
            }
            "get" => {
                let key = args.first().cloned().unwrap_or_default();
                let v = value.get_item(&key)?;
                Ok(if v.is_undefined() {
                    args.get(1).cloned().unwrap_or(Value::from(()))
                } else {
                    v
                })
            }
            _ => unknown(),
        };
    }
    unknown()
}

// ---------------------------------------------------------------- loss masks

/// Token ids of the rendered conversation and a mask, one entry per token.
///
/// With `assistant_only`, the mask is true exactly on the tokens of each assistant turn's content
/// and its end-of-turn marker (what the template writes after the generation prompt, up to the
/// turn's end, trailing whitespace excluded: `hello<|im_end|>` in ChatML, `hello<|eot_id|>` in
/// Llama 3). A token counts for a turn when its text overlaps the turn's text, so a token that joins
/// the header's last character to the reply's first (`" Fine"` after `"assistant:"`) is learned. Without
/// `assistant_only` every token is true. The text is encoded without the tokenizer's
/// post-processor specials: templates write their own (`bos_token`).
pub fn encode_chat(
    tok: &Tokenizer,
    tpl: &ChatTemplate,
    messages: &[Message],
    assistant_only: bool,
) -> Result<(Vec<u32>, Vec<bool>)> {
    let full = tpl.render(messages, false)?;
    let (ids, offsets) = tok.encode_with_offsets(&full, false)?;
    if !assistant_only {
        let n = ids.len();
        return Ok((ids, vec![true; n]));
    }
    let spans = assistant_spans(tpl, messages, &full)?;
    let mask = offsets
        .iter()
        .map(|&(s, e)| s < e && spans.iter().any(|&(a, b)| s < b && e > a))
        .collect();
    Ok((ids, mask))
}

/// Byte ranges of `full` (the render of all `messages`) covered by each assistant turn.
pub fn assistant_spans(
    tpl: &ChatTemplate,
    messages: &[Message],
    full: &str,
) -> Result<Vec<(usize, usize)>> {
    let not_prefix = |i: usize| {
        Error::Msg(format!(
            "chat template ({}): rendering messages 0..={i} does not give a prefix of the whole \
             conversation, so assistant tokens cannot be located; this template rewrites earlier turns",
            tpl.name()
        ))
    };
    let mut spans = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        if m.role != "assistant" {
            continue;
        }
        let through = tpl.render(&messages[..=i], false)?;
        if !full.starts_with(&through) {
            return Err(not_prefix(i));
        }
        let before = tpl.render(&messages[..i], false)?;
        let with_prompt = tpl.render(&messages[..i], true)?;
        if !full.starts_with(&before) {
            return Err(not_prefix(i.saturating_sub(1)));
        }
        let end = before.len().max(through.trim_end().len());
        let mut start = if with_prompt.len() <= end && full.starts_with(&with_prompt) {
            with_prompt.len()
        } else {
            before.len()
        };
        if with_prompt.len() == before.len() {
            // The template ignores add_generation_prompt: skip the turn header by finding the content.
            let content = m.content.trim();
            if let Some(at) = full[start..end]
                .find(content)
                .filter(|_| !content.is_empty())
            {
                start += at;
            }
        }
        spans.push((start, end));
    }
    Ok(spans)
}

/// Ids of `prompt` then `completion` (each encoded on its own, without post-processor specials),
/// optionally with BOS first and EOS last; the mask is true on the completion tokens and EOS.
pub fn encode_prompt_completion(
    tok: &Tokenizer,
    prompt: &str,
    completion: &str,
    add_bos: bool,
    add_eos: bool,
) -> Result<(Vec<u32>, Vec<bool>)> {
    let mut ids = Vec::new();
    if add_bos {
        ids.push(tok.bos_id().ok_or_else(|| {
            Error::config(
                "add_bos",
                "the tokenizer has no BOS token (set bos_token in tokenizer_config.json)",
            )
        })?);
    }
    ids.extend(tok.encode(prompt, false)?);
    let n_prompt = ids.len();
    ids.extend(tok.encode(completion, false)?);
    if add_eos {
        ids.push(tok.eos_id().ok_or_else(|| {
            Error::config(
                "add_eos",
                "the tokenizer has no EOS token (set eos_token in tokenizer_config.json)",
            )
        })?);
    }
    let mask = (0..ids.len()).map(|i| i >= n_prompt).collect();
    Ok((ids, mask))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_blocks_become_if_true() {
        assert_eq!(
            accept_generation_blocks("a{% generation %}b{%- endgeneration -%}c"),
            "a{% if true %}b{%- endif -%}c"
        );
        assert_eq!(
            accept_generation_blocks("{{ x }}{% if y %}{% endif %}"),
            "{{ x }}{% if y %}{% endif %}"
        );
        assert_eq!(
            accept_generation_blocks("unclosed {% gen"),
            "unclosed {% gen"
        );
    }
}
