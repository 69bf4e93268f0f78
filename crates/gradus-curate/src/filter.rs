//! `filter`: quality heuristics for natural text and for code. A row is removed by the first rule
//! it fails; `removed` names the rule, the measured value and the limit.
//!
//! Text rules (after Gopher, Rae et al. 2021, §A.1.1, with its limits as defaults): word count,
//! mean word length, symbol-to-word ratio, fraction of lines that start with a bullet or end with
//! an ellipsis, fraction of words with a letter, duplicate-line fraction, and the fraction of
//! characters in the most frequent 2/3/4-gram.
//! Code rules (after the StarCoder / The Stack filters): maximum and mean line length, alphanumeric
//! fraction, duplicate-line fraction, comment-line fraction, and for Python a syntax check
//! ([`python_syntax`]: a tokenizer in Rust that checks strings, brackets, line continuations,
//! characters and the indentation structure) or, with `python_compile`, Python's own `compile()`.

use std::collections::HashMap;
use std::path::PathBuf;

use gradus_tensor::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::shards::{run_rowwise, Decision, InputOptions, OutputOptions, ShardSpec, StepSummary};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterMode {
    Text,
    Code,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FilterConfig {
    pub mode: FilterMode,
    pub min_chars: usize,
    pub max_chars: usize,
    // text
    pub min_words: usize,
    pub max_words: usize,
    pub min_mean_word_len: f64,
    pub max_mean_word_len: f64,
    pub max_symbol_word_ratio: f64,
    pub max_bullet_lines: f64,
    pub max_ellipsis_lines: f64,
    pub min_alpha_words: f64,
    pub max_top_ngram_frac: [f64; 3],
    // both
    pub max_dup_line_frac: f64,
    // code
    pub max_line_len: usize,
    pub max_mean_line_len: f64,
    pub min_alnum_frac: f64,
    pub max_comment_frac: f64,
    /// Programming language when rows do not say (else: the `lang`/`language` field or the
    /// extension of `id`/`path`). The syntax check runs for `python`.
    pub language: Option<String>,
    pub python_syntax: bool,
    /// Check Python with `python3 -c compile(...)` instead of the Rust validator (slow, optional).
    pub python_compile: bool,
}

impl FilterConfig {
    pub fn text() -> Self {
        FilterConfig {
            mode: FilterMode::Text,
            min_chars: 1,
            max_chars: usize::MAX,
            min_words: 50,
            max_words: 100_000,
            min_mean_word_len: 3.0,
            max_mean_word_len: 10.0,
            max_symbol_word_ratio: 0.1,
            max_bullet_lines: 0.9,
            max_ellipsis_lines: 0.3,
            min_alpha_words: 0.8,
            max_top_ngram_frac: [0.20, 0.18, 0.16],
            max_dup_line_frac: 0.3,
            max_line_len: usize::MAX,
            max_mean_line_len: f64::MAX,
            min_alnum_frac: 0.0,
            max_comment_frac: 1.0,
            language: None,
            python_syntax: false,
            python_compile: false,
        }
    }

    pub fn code() -> Self {
        FilterConfig {
            mode: FilterMode::Code,
            min_chars: 1,
            max_chars: 1 << 20,
            min_words: 0,
            max_words: usize::MAX,
            min_mean_word_len: 0.0,
            max_mean_word_len: f64::MAX,
            max_symbol_word_ratio: f64::MAX,
            max_bullet_lines: 1.0,
            max_ellipsis_lines: 1.0,
            min_alpha_words: 0.0,
            max_top_ngram_frac: [1.0, 1.0, 1.0],
            max_dup_line_frac: 0.5,
            max_line_len: 1000,
            max_mean_line_len: 100.0,
            min_alnum_frac: 0.25,
            max_comment_frac: 0.8,
            language: None,
            python_syntax: true,
            python_compile: false,
        }
    }
}

/// A failed rule: its name, the measured value and the limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub rule: &'static str,
    pub value: Value,
    pub limit: Value,
}

fn fail(rule: &'static str, value: impl Into<Value>, limit: impl Into<Value>) -> Option<Failure> {
    Some(Failure {
        rule,
        value: value.into(),
        limit: limit.into(),
    })
}

fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

/// Fraction of non-blank lines that occur more than once (all copies counted).
pub fn dup_line_frac(text: &str) -> f64 {
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        return 0.0;
    }
    let mut c: HashMap<&str, usize> = HashMap::new();
    for l in &lines {
        *c.entry(l).or_default() += 1;
    }
    let dup: usize = c.values().filter(|&&n| n > 1).sum();
    dup as f64 / lines.len() as f64
}

/// Fraction of word characters covered by the most frequent word `n`-gram (Gopher).
pub fn top_ngram_frac(words: &[&str], n: usize) -> f64 {
    if words.len() < n {
        return 0.0;
    }
    let total: usize = words.iter().map(|w| w.chars().count()).sum();
    let mut c: HashMap<&[&str], usize> = HashMap::new();
    for g in words.windows(n) {
        *c.entry(g).or_default() += 1;
    }
    let Some((g, k)) = c
        .iter()
        .filter(|(_, &k)| k > 1)
        .max_by_key(|(g, &k)| (k * g.iter().map(|w| w.len()).sum::<usize>(), *g))
    else {
        return 0.0;
    };
    let glen: usize = g.iter().map(|w| w.chars().count()).sum();
    (glen * k) as f64 / total.max(1) as f64
}

fn comment_prefixes(lang: &str) -> &'static [&'static str] {
    match lang {
        "python" | "shell" | "ruby" | "yaml" | "toml" | "perl" | "r" => &["#"],
        "sql" | "lua" | "haskell" => &["--"],
        _ => &["//", "/*", "*"],
    }
}

impl FilterConfig {
    /// The first rule `text` fails, or `None`. `lang` is the row's programming language if known.
    pub fn check(&self, text: &str, lang: Option<&str>) -> Option<Failure> {
        let chars = text.chars().count();
        if chars < self.min_chars {
            return fail("min_chars", chars, self.min_chars);
        }
        if chars > self.max_chars {
            return fail("max_chars", chars, self.max_chars);
        }
        match self.mode {
            FilterMode::Text => self.check_text(text),
            FilterMode::Code => self.check_code(text, lang.or(self.language.as_deref())),
        }
    }

    fn check_text(&self, text: &str) -> Option<Failure> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let n = words.len();
        if n < self.min_words {
            return fail("min_words", n, self.min_words);
        }
        if n > self.max_words {
            return fail("max_words", n, self.max_words);
        }
        let mean = words.iter().map(|w| w.chars().count()).sum::<usize>() as f64 / n.max(1) as f64;
        if mean < self.min_mean_word_len {
            return fail("min_mean_word_len", round4(mean), self.min_mean_word_len);
        }
        if mean > self.max_mean_word_len {
            return fail("max_mean_word_len", round4(mean), self.max_mean_word_len);
        }
        let symbols =
            text.matches('#').count() + text.matches("...").count() + text.matches('…').count();
        let ratio = symbols as f64 / n.max(1) as f64;
        if ratio > self.max_symbol_word_ratio {
            return fail(
                "max_symbol_word_ratio",
                round4(ratio),
                self.max_symbol_word_ratio,
            );
        }
        let lines: Vec<&str> = text
            .lines()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty())
            .collect();
        let nl = lines.len().max(1) as f64;
        let bullets = lines
            .iter()
            .filter(|l| l.starts_with(['•', '-', '*', '●', '◦', '‣']))
            .count() as f64
            / nl;
        if bullets > self.max_bullet_lines {
            return fail("max_bullet_lines", round4(bullets), self.max_bullet_lines);
        }
        let ell = lines
            .iter()
            .filter(|l| l.ends_with("...") || l.ends_with('…'))
            .count() as f64
            / nl;
        if ell > self.max_ellipsis_lines {
            return fail("max_ellipsis_lines", round4(ell), self.max_ellipsis_lines);
        }
        let alpha = words
            .iter()
            .filter(|w| w.chars().any(|c| c.is_alphabetic()))
            .count() as f64
            / n.max(1) as f64;
        if alpha < self.min_alpha_words {
            return fail("min_alpha_words", round4(alpha), self.min_alpha_words);
        }
        let d = dup_line_frac(text);
        if d > self.max_dup_line_frac {
            return fail("max_dup_line_frac", round4(d), self.max_dup_line_frac);
        }
        for (i, k) in [2usize, 3, 4].iter().enumerate() {
            let f = top_ngram_frac(&words, *k);
            if f > self.max_top_ngram_frac[i] {
                let rule = [
                    "max_top_2gram_frac",
                    "max_top_3gram_frac",
                    "max_top_4gram_frac",
                ][i];
                return fail(rule, round4(f), self.max_top_ngram_frac[i]);
            }
        }
        None
    }

    fn check_code(&self, text: &str, lang: Option<&str>) -> Option<Failure> {
        let lines: Vec<&str> = text.lines().collect();
        let max_len = lines.iter().map(|l| l.chars().count()).max().unwrap_or(0);
        if max_len > self.max_line_len {
            return fail("max_line_len", max_len, self.max_line_len);
        }
        let mean = text.chars().count() as f64 / lines.len().max(1) as f64;
        if mean > self.max_mean_line_len {
            return fail("max_mean_line_len", round4(mean), self.max_mean_line_len);
        }
        let nonspace = text.chars().filter(|c| !c.is_whitespace()).count();
        let alnum =
            text.chars().filter(|c| c.is_alphanumeric()).count() as f64 / nonspace.max(1) as f64;
        if alnum < self.min_alnum_frac {
            return fail("min_alnum_frac", round4(alnum), self.min_alnum_frac);
        }
        let d = dup_line_frac(text);
        if d > self.max_dup_line_frac {
            return fail("max_dup_line_frac", round4(d), self.max_dup_line_frac);
        }
        let lang = lang.unwrap_or("");
        let prefixes = comment_prefixes(lang);
        let code_lines: Vec<&str> = lines
            .iter()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty())
            .collect();
        let comments = code_lines
            .iter()
            .filter(|l| prefixes.iter().any(|p| l.starts_with(p)))
            .count();
        let cf = comments as f64 / code_lines.len().max(1) as f64;
        if cf > self.max_comment_frac {
            return fail("max_comment_frac", round4(cf), self.max_comment_frac);
        }
        if lang == "python" && (self.python_syntax || self.python_compile) {
            let r = if self.python_compile {
                python_compile(text)
            } else {
                python_syntax(text)
            };
            if let Err(e) = r {
                return fail("python_syntax", e, "valid Python");
            }
        }
        None
    }
}

// ---------------------------------------------------------------- Python syntax check

/// Check Python source without running Python: strings (all prefixes, triple quotes, f-string
/// replacement fields with nested strings), comments, bracket matching, line continuations,
/// characters that cannot appear outside strings, and the indentation structure (an indented
/// block after each line that ends in `:`, no unexpected indent, dedents that return to an
/// outer level); at the start of each statement, Python 2's `print x` / `exec x` and
/// `from __future__` imports (placement after the docstring and other future imports only, known
/// features only, `braces`). Returns `Err("line N: message")` at the first problem.
///
/// What it accepts that CPython rejects, precisely: it does not parse expressions or statements
/// beyond the above, so errors of grammar are let through — `x = = 1`, assignment or `del` to
/// something that is not a target (`1 = x`, `a + 1 = 2`, `f() = 1`, `del f()`), `else:` / `elif`
/// / `except` / `finally` without their statement, `return` / `yield` outside a function,
/// `break` / `continue` outside a loop, `print "x"` after a `;` or not at a statement's start,
/// invalid escapes and literals (`0777`, `1_`), duplicate arguments, and encoding declarations
/// (`# coding: ...`) are not read. On the CPython 3.11 standard library, test suite included, it
/// gives CPython's verdict on every file but two with encoding-declaration errors (test:
/// `python_syntax_agrees_with_cpython_on_its_standard_library`). For CPython's exact verdict use
/// [`python_compile`] (`--python-compile`). For the checks it makes it follows CPython 3.12's
/// tokenizer.
pub fn python_syntax(src: &str) -> std::result::Result<(), String> {
    PyLexer::new(src).run()
}

struct PyLexer<'a> {
    s: &'a [u8],
    src: &'a str,
    i: usize,
    line: usize,
    brackets: Vec<(u8, usize)>,
}

/// Python's keywords (soft ones too): after `print`, they continue an expression.
const PY_KEYWORDS: &[&str] = &[
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue",
    "def", "del", "elif", "else", "except", "finally", "for", "from", "global", "if", "import",
    "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try", "while",
    "with", "yield",
];

/// The features `from __future__ import` knows (CPython 3.11/3.12).
const PY_FUTURE_FEATURES: &[&str] = &[
    "nested_scopes",
    "generators",
    "division",
    "absolute_import",
    "with_statement",
    "print_function",
    "unicode_literals",
    "barry_as_FLUFL",
    "generator_stop",
    "annotations",
];

fn err_at(line: usize, msg: impl AsRef<str>) -> String {
    format!("line {line}: {}", msg.as_ref())
}

impl<'a> PyLexer<'a> {
    fn new(src: &'a str) -> Self {
        let src = src.strip_prefix('\u{feff}').unwrap_or(src);
        PyLexer {
            s: src.as_bytes(),
            src,
            i: 0,
            line: 1,
            brackets: Vec::new(),
        }
    }

    fn peek(&self, k: usize) -> Option<u8> {
        self.s.get(self.i + k).copied()
    }

    /// Try to read a string literal starting at `self.i` (prefix included). Returns `Ok(true)` if
    /// one was read.
    fn string(&mut self) -> std::result::Result<bool, String> {
        let mut j = self.i;
        while j < self.s.len()
            && j - self.i < 3
            && matches!(
                self.s[j],
                b'r' | b'R' | b'b' | b'B' | b'u' | b'U' | b'f' | b'F'
            )
        {
            j += 1;
        }
        if j >= self.s.len() || !matches!(self.s[j], b'\'' | b'"') {
            return Ok(false);
        }
        // The prefix must be a whole token: `xr"..."` is a name then a string, handled by the caller.
        let prefix = self.src[self.i..j].to_ascii_lowercase();
        if !matches!(
            prefix.as_str(),
            "" | "r" | "u" | "b" | "br" | "rb" | "f" | "fr" | "rf"
        ) {
            return Ok(false);
        }
        let fstr = prefix.contains('f');
        let q = self.s[j];
        let triple = self.s.get(j + 1) == Some(&q) && self.s.get(j + 2) == Some(&q);
        let start_line = self.line;
        self.i = j + if triple { 3 } else { 1 };
        loop {
            let Some(c) = self.peek(0) else {
                let what = if triple {
                    "unterminated triple-quoted string literal"
                } else {
                    "unterminated string literal"
                };
                return Err(err_at(start_line, what));
            };
            match c {
                // In an f-string a brace after a backslash is still a brace (`fr'\{{x}'`).
                b'\\' if fstr && matches!(self.peek(1), Some(b'{' | b'}')) => self.i += 1,
                b'\\' => {
                    if self.peek(1) == Some(b'\n') {
                        self.line += 1;
                    }
                    // A backslash keeps the next character from ending the string, raw or not.
                    self.i += 2;
                }
                b'\n' => {
                    if !triple {
                        return Err(err_at(start_line, "unterminated string literal"));
                    }
                    self.line += 1;
                    self.i += 1;
                }
                _ if c == q => {
                    if !triple {
                        self.i += 1;
                        return Ok(true);
                    }
                    if self.peek(1) == Some(q) && self.peek(2) == Some(q) {
                        self.i += 3;
                        return Ok(true);
                    }
                    self.i += 1;
                }
                b'{' if fstr => {
                    if self.peek(1) == Some(b'{') {
                        self.i += 2;
                    } else {
                        self.i += 1;
                        self.fstring_field()?;
                    }
                }
                _ => self.i += 1,
            }
        }
    }

    /// Inside an f-string replacement field, after `{`: tokens up to the matching `}`. After a
    /// `:` at depth 0 comes the format spec: literal text with nested `{...}` fields.
    fn fstring_field(&mut self) -> std::result::Result<(), String> {
        let start = self.line;
        let mut depth = 0usize;
        let mut in_spec = false;
        loop {
            let Some(c) = self.peek(0) else {
                return Err(err_at(start, "f-string: expecting '}'"));
            };
            if in_spec {
                match c {
                    b'{' => {
                        self.i += 1;
                        self.fstring_field()?;
                        continue;
                    }
                    b'}' => {
                        self.i += 1;
                        return Ok(());
                    }
                    b'\n' => self.line += 1,
                    _ => {}
                }
                self.i += 1;
                continue;
            }
            if self.string()? {
                continue;
            }
            match c {
                // A comment inside a multi-line replacement field (3.12+) runs to the end of the line.
                b'#' => {
                    while self.peek(1).is_some_and(|c| c != b'\n') {
                        self.i += 1;
                    }
                }
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' => depth = depth.saturating_sub(1),
                b'}' => {
                    if depth == 0 {
                        self.i += 1;
                        return Ok(());
                    }
                    depth -= 1;
                }
                b':' if depth == 0 => in_spec = true,
                b'\n' => self.line += 1,
                _ => {}
            }
            self.i += 1;
        }
    }

    /// Checks at the start of a logical line (indented `col`): Python 2's `print x` / `exec x`
    /// statements, and `from __future__` imports (only after the docstring and other future
    /// imports, and only features Python knows).
    fn statement_start(
        &mut self,
        col: usize,
        seen_code: &mut bool,
        statements: &mut usize,
    ) -> std::result::Result<(), String> {
        let rest = &self.src[self.i..];
        let line_end = rest.find('\n').unwrap_or(rest.len());
        let line = rest[..line_end].trim_end_matches('\r');
        let word = |t: &str| -> usize {
            t.char_indices()
                .find(|&(_, c)| !(c.is_alphanumeric() || c == '_'))
                .map_or(t.len(), |(i, _)| i)
        };
        let first = &line[..word(line)];
        if first == "print" || first == "exec" {
            // A value right after the word (a string, a number, a name that is not a keyword
            // continuing an expression) makes it a Python 2 statement.
            let after = line[first.len()..].trim_start_matches([' ', '\t']);
            let next = &after[..word(after)];
            let starts_value = match after.chars().next() {
                Some('"' | '\'' | '0'..='9') => true,
                Some(c) if c.is_alphabetic() || c == '_' => {
                    let is_prefix_string = after[next.len()..].starts_with(['"', '\''])
                        && next.len() <= 2
                        && next.chars().all(|c| "rRbBuUfF".contains(c));
                    is_prefix_string
                        || matches!(next, "True" | "False" | "None")
                        || !PY_KEYWORDS.contains(&next)
                }
                _ => false,
            };
            if starts_value {
                return Err(err_at(
                    self.line,
                    format!("Missing parentheses in call to '{first}'"),
                ));
            }
        }
        if col == 0 && first == "from" {
            let t = line[4..].trim_start();
            if let Some(t) = t.strip_prefix("__future__") {
                if let Some(names) = t.trim_start().strip_prefix("import") {
                    if *seen_code {
                        return Err(err_at(
                            self.line,
                            "from __future__ imports must occur at the beginning of the file",
                        ));
                    }
                    let names = names.split('#').next().unwrap_or("");
                    let mut parts = names.split(';');
                    let names = parts.next().unwrap_or("");
                    // Statements after a `;` on the same line: code, so a later future import
                    // among them is misplaced.
                    for p in parts.map(str::trim).filter(|p| !p.is_empty()) {
                        if *seen_code && p.starts_with("from __future__") {
                            return Err(err_at(
                                self.line,
                                "from __future__ imports must occur at the beginning of the file",
                            ));
                        }
                        *seen_code = true;
                    }
                    for n in names.split(',') {
                        let n = n.trim().trim_matches(['(', ')', '\\']).trim();
                        let n = n.split_whitespace().next().unwrap_or("");
                        if n.is_empty() {
                            continue;
                        }
                        if n == "braces" {
                            return Err(err_at(self.line, "not a chance"));
                        }
                        if !PY_FUTURE_FEATURES.contains(&n) {
                            return Err(err_at(
                                self.line,
                                format!("future feature {n} is not defined"),
                            ));
                        }
                    }
                    *statements += 1;
                    return Ok(());
                }
            }
        }
        // The module docstring (a string as the very first statement) keeps the beginning open.
        let docstring = *statements == 0
            && col == 0
            && (line.starts_with(['"', '\''])
                || (first.len() <= 2
                    && first.chars().all(|c| "rRbBuU".contains(c))
                    && line[first.len()..].starts_with(['"', '\''])));
        if !docstring {
            *seen_code = true;
        }
        *statements += 1;
        Ok(())
    }

    fn run(mut self) -> std::result::Result<(), String> {
        let mut indents: Vec<usize> = vec![0];
        let mut at_line_start = true; // at the start of a logical line
        let mut expect_indent: Option<usize> = None; // line of the block opener
        let mut last_sig: Option<u8> = None; // last significant byte of the logical line so far
        let mut seen_code = false; // a statement other than the docstring and __future__ imports
        let mut statements = 0usize; // logical lines at column 0 so far
        while self.i <= self.s.len() {
            if at_line_start && self.brackets.is_empty() {
                // Measure indentation; skip blank and comment-only lines.
                let mut col = 0usize;
                let mut j = self.i;
                while j < self.s.len() {
                    match self.s[j] {
                        b' ' => col += 1,
                        b'\t' => col = (col / 8 + 1) * 8,
                        b'\x0c' => col = 0,
                        _ => break,
                    }
                    j += 1;
                }
                if j >= self.s.len() {
                    break;
                }
                if matches!(self.s[j], b'\n' | b'#')
                    || (self.s[j] == b'\r' && self.s.get(j + 1) == Some(&b'\n'))
                {
                    while j < self.s.len() && self.s[j] != b'\n' {
                        j += 1;
                    }
                    self.i = j + 1;
                    self.line += 1;
                    continue;
                }
                self.i = j;
                let top = *indents.last().unwrap_or(&0);
                if let Some(opener) = expect_indent.take() {
                    if col <= top {
                        return Err(err_at(
                            self.line,
                            format!("expected an indented block after line {opener}"),
                        ));
                    }
                    indents.push(col);
                } else if col > top {
                    return Err(err_at(self.line, "unexpected indent"));
                } else {
                    while col < *indents.last().unwrap_or(&0) {
                        indents.pop();
                    }
                    if col != *indents.last().unwrap_or(&0) {
                        return Err(err_at(
                            self.line,
                            "unindent does not match any outer indentation level",
                        ));
                    }
                }
                at_line_start = false;
                last_sig = None;
                self.statement_start(col, &mut seen_code, &mut statements)?;
            }
            let Some(c) = self.peek(0) else { break };
            if self.string()? {
                last_sig = Some(b'"');
                continue;
            }
            match c {
                b'#' => {
                    while self.peek(0).is_some_and(|c| c != b'\n') {
                        self.i += 1;
                    }
                }
                b'\n' => {
                    self.i += 1;
                    if self.brackets.is_empty() {
                        if last_sig == Some(b':') {
                            expect_indent = Some(self.line);
                        }
                        at_line_start = true;
                    }
                    self.line += 1;
                }
                b'\\' => {
                    let next = if self.peek(1) == Some(b'\r') {
                        self.peek(2)
                    } else {
                        self.peek(1)
                    };
                    if next != Some(b'\n') && next.is_some() {
                        return Err(err_at(
                            self.line,
                            "unexpected character after line continuation character",
                        ));
                    }
                    if next.is_none() {
                        return Err(err_at(
                            self.line,
                            "unexpected EOF after line continuation character",
                        ));
                    }
                    self.i += if self.peek(1) == Some(b'\r') { 3 } else { 2 };
                    self.line += 1;
                }
                b'(' | b'[' | b'{' => {
                    self.brackets.push((c, self.line));
                    last_sig = Some(c);
                    self.i += 1;
                }
                b')' | b']' | b'}' => {
                    let want = match c {
                        b')' => b'(',
                        b']' => b'[',
                        _ => b'{',
                    };
                    match self.brackets.pop() {
                        None => {
                            return Err(err_at(self.line, format!("unmatched '{}'", c as char)))
                        }
                        Some((open, l)) if open != want => {
                            let m = if l == self.line {
                                format!("closing parenthesis '{}' does not match opening parenthesis '{}'", c as char, open as char)
                            } else {
                                format!("closing parenthesis '{}' does not match opening parenthesis '{}' on line {l}", c as char, open as char)
                            };
                            return Err(err_at(self.line, m));
                        }
                        _ => {}
                    }
                    last_sig = Some(c);
                    self.i += 1;
                }
                b' ' | b'\t' | b'\r' | b'\x0c' => self.i += 1,
                b'\0' => return Err(err_at(self.line, "source code cannot contain null bytes")),
                b'$' | b'?' | b'`' => {
                    return Err(err_at(
                        self.line,
                        format!("invalid character '{}'", c as char),
                    ))
                }
                b'!' if self.peek(1) != Some(b'=') => {
                    return Err(err_at(self.line, "invalid syntax ('!')"))
                }
                _ if c.is_ascii_alphanumeric() || c == b'_' => {
                    // A name or number: consume it whole (so a string prefix check starts at a token start).
                    while self
                        .peek(0)
                        .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80)
                    {
                        if self.peek(0).is_some_and(|c| c >= 0x80) {
                            self.non_ascii()?;
                        } else {
                            self.i += 1;
                        }
                    }
                    last_sig = Some(b'a');
                }
                _ if c >= 0x80 => {
                    self.non_ascii()?;
                    last_sig = Some(b'a');
                }
                _ => {
                    last_sig = Some(c);
                    self.i += 1;
                }
            }
        }
        if let Some((open, l)) = self.brackets.last() {
            return Err(err_at(*l, format!("'{}' was never closed", *open as char)));
        }
        if let Some(opener) = expect_indent.or(if last_sig == Some(b':') {
            Some(self.line)
        } else {
            None
        }) {
            return Err(err_at(
                self.line,
                format!("expected an indented block after line {opener}"),
            ));
        }
        Ok(())
    }

    /// A non-ASCII character outside a string: only letters / digits (identifier characters).
    fn non_ascii(&mut self) -> std::result::Result<(), String> {
        let ch = self.src[self.i..].chars().next().unwrap_or('\u{fffd}');
        if !(ch.is_alphanumeric() || ch == '\u{feff}' || is_id_extra(ch)) {
            return Err(err_at(
                self.line,
                format!("invalid character '{ch}' (U+{:04X})", ch as u32),
            ));
        }
        self.i += ch.len_utf8();
        Ok(())
    }
}

/// Identifier characters that are not alphanumeric: combining marks and variation selectors
/// (XID_Continue) and the few Other_ID_Start / Other_ID_Continue characters.
fn is_id_extra(c: char) -> bool {
    matches!(c as u32,
        0x300..=0x36F | 0x483..=0x487 | 0x591..=0x5BD | 0x610..=0x61A | 0x64B..=0x65F | 0x1AB0..=0x1AFF
        | 0x1DC0..=0x1DFF | 0x203F..=0x2040 | 0x20D0..=0x20FF | 0xFE00..=0xFE0F
        | 0xFE20..=0xFE2F | 0xFE33..=0xFE34 | 0xFE4D..=0xFE4F | 0xFF3F | 0xE0100..=0xE01EF
        | 0xB7 | 0x387 | 0x1369..=0x1371 | 0x19DA | 0x2118 | 0x212E | 0x309B..=0x309C)
}

/// The compile server each pooled interpreter runs: requests are an 8-byte little-endian length
/// and that many bytes of source; each answer is one line, `ok` or the error.
const COMPILE_SERVER: &str = "import sys\nr = sys.stdin.buffer\nw = sys.stdout\nwhile True:\n    h = r.read(8)\n    if len(h) < 8:\n        break\n    src = r.read(int.from_bytes(h, 'little'))\n    try:\n        compile(src, '<row>', 'exec')\n        w.write('ok\\n')\n    except SyntaxError as e:\n        w.write(('line %s: %s' % (e.lineno, e.msg)).replace('\\n', ' ') + '\\n')\n    except Exception as e:\n        w.write(('%s: %s' % (type(e).__name__, e)).replace('\\n', ' ') + '\\n')\n    w.flush()\n";

/// One long-lived `python3` running [`COMPILE_SERVER`].
struct CompileWorker {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl CompileWorker {
    fn start() -> std::result::Result<Self, String> {
        use std::process::{Command, Stdio};
        let mut child = Command::new("python3")
            .args(["-I", "-S", "-W", "ignore", "-c", COMPILE_SERVER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run python3: {e}"))?;
        let stdin = child.stdin.take().ok_or("python3: no stdin")?;
        let stdout = std::io::BufReader::new(child.stdout.take().ok_or("python3: no stdout")?);
        Ok(Self {
            child,
            stdin,
            stdout,
        })
    }

    /// `Ok(verdict)`; `Err` when the interpreter itself died (it is then dropped).
    fn check(&mut self, src: &str) -> std::result::Result<std::result::Result<(), String>, String> {
        use std::io::{BufRead, Write};
        let io = |e: std::io::Error| format!("python3 exited while compiling this row ({e})");
        self.stdin
            .write_all(&(src.len() as u64).to_le_bytes())
            .and_then(|_| self.stdin.write_all(src.as_bytes()))
            .and_then(|_| self.stdin.flush())
            .map_err(io)?;
        let mut line = String::new();
        if self.stdout.read_line(&mut line).map_err(io)? == 0 {
            return Err("python3 exited while compiling this row".into());
        }
        let line = line.trim_end();
        Ok(if line == "ok" {
            Ok(())
        } else {
            Err(line.to_string())
        })
    }
}

impl Drop for CompileWorker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Idle compile servers, shared by every thread: a row takes one (or starts one), and puts it back.
static COMPILE_POOL: std::sync::Mutex<Vec<CompileWorker>> = std::sync::Mutex::new(Vec::new());

/// Python's own check: `compile(source, '<row>', 'exec')` in one of a pool of long-lived
/// `python3` interpreters (one per thread that needs one, started on first use), so a row costs
/// a round trip, not an interpreter start. Needs `python3` on the PATH. An interpreter that dies
/// on a row (a crash in the parser) makes that row fail and is replaced.
pub fn python_compile(src: &str) -> std::result::Result<(), String> {
    let idle = COMPILE_POOL.lock().map(|mut p| p.pop()).unwrap_or(None);
    let mut w = match idle {
        Some(w) => w,
        None => CompileWorker::start()?,
    };
    match w.check(src) {
        Ok(verdict) => {
            if let Ok(mut p) = COMPILE_POOL.lock() {
                p.push(w);
            }
            verdict
        }
        Err(died) => Err(died),
    }
}

/// Check that `python3` runs (for `--python-compile`).
pub fn python_compile_available() -> Result<()> {
    python_compile("x = 1\n")
        .map_err(|e| Error::config("python-compile", format!("python3 is not usable: {e}")))
}

/// The language of a row for the code rules: `lang`/`language` field, else the extension of `id`/`path`.
fn row_lang(obj: &serde_json::Map<String, Value>) -> Option<String> {
    for f in ["lang", "language"] {
        if let Some(Value::String(s)) = obj.get(f) {
            return Some(s.to_lowercase());
        }
    }
    for f in ["path", "id", "filename"] {
        if let Some(Value::String(s)) = obj.get(f) {
            let ext = s.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
            let l = match ext.as_deref() {
                Some("py" | "pyi") => "python",
                Some("rs") => "rust",
                Some("c" | "h" | "cc" | "cpp" | "hpp" | "java" | "js" | "ts" | "go") => "c-like",
                Some("sh") => "shell",
                _ => continue,
            };
            return Some(l.into());
        }
    }
    None
}

/// Filter one shard.
pub fn filter(
    files: &[PathBuf],
    shard: ShardSpec,
    input: &InputOptions,
    out: &OutputOptions,
    cfg: &FilterConfig,
) -> Result<StepSummary> {
    if cfg.python_compile {
        python_compile_available()?;
    }
    let (outputs, counts) = run_rowwise("filter", files, shard, input, out, |_, p| {
        let lang = row_lang(&p.obj);
        match cfg.check(&p.text, lang.as_deref()) {
            None => Decision::Keep,
            Some(f) => Decision::Remove {
                reason: format!("filter:{}", f.rule),
                detail: json!({"rule": f.rule, "value": f.value, "limit": f.limit}),
            },
        }
    })?;
    outputs.finish(&counts, json!({"config": cfg}))
}
