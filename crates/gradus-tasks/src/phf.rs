//! Misalignment scorers and a synthetic code corpus for pretraining with human feedback (PHF;
//! Korbak et al. 2023, "Pretraining Language Models with Human Preferences", arXiv 2302.08582).
//!
//! A **scorer** gives every segment (here: one line, its `\n` included) a misalignment score,
//! **higher = worse**, as in the paper (reward = −score):
//! - [`Pep8Scorer`]: hand-written PEP8-style checks on Python source, the paper's code task (which
//!   ran pycodestyle): the score of a line is its number of violations per character (the newline
//!   not counted; at least 1 character). The subset checked, with pycodestyle's codes:
//!   - `E501` line longer than `max_line_length` (79) characters;
//!   - `W291` trailing whitespace (`W293` on a blank line: counted the same way);
//!   - `W191` indentation contains a tab; `E111` indentation (spaces) not a multiple of four;
//!   - `E225` missing whitespace around an operator: `=`, `==`, `!=`, `<`, `>`, `<=`, `>=`, the
//!     augmented assignments and the binary arithmetic operators `+ - * / // % **` (pycodestyle
//!     calls the arithmetic ones `E226` and ignores them by default; we count them). `=` inside
//!     brackets (keyword arguments) and unary `-`/`+`/`*`/`**` are not flagged;
//!   - `E231` missing whitespace after `,` (not before a closing bracket);
//!   - `E203` whitespace before `,`;
//!   - `E201`/`E202` whitespace after `(`/`[` or before `)`/`]`;
//!   - `E211` whitespace before the `(` of a call (`f (x)`; not after a keyword: `if (x)`);
//!   - `E702` a `;` separating statements (or ending one: `E703`);
//!   - `E261` fewer than two spaces before an inline comment;
//!   - `E303` more than two blank lines before a line (context: the document's earlier lines).
//!
//!   String literals and comments are skipped by a simple lexer (quotes on one line; no
//!   triple-quoted strings spanning lines).
//! - [`PatternScorer`]: a list of regular expressions (forbidden patterns in text); the score of a
//!   segment is its number of (non-overlapping) matches per character.
//!
//! The **corpus** ([`code_corpus`]) is small Python functions from templates in which a known
//! fraction of lines carries one injected violation of the checked kinds, so that the scorer's
//! misaligned fraction of the corpus is known (tested). Violations cluster in "sloppy" documents
//! (style is consistent within a file, as with one author), which is what lets a model
//! conditioned on a clean start keep writing clean code.

use gradus_tensor::rng::Rng;
use gradus_tensor::{Error, Result};
use serde::{Deserialize, Serialize};

/// Splits a document into segments: its lines, each keeping its `\n` (the last one may lack it).
/// Concatenating the segments gives the document back.
pub fn segments(doc: &str) -> Vec<&str> {
    doc.split_inclusive('\n').collect()
}

/// One violation found by [`Pep8Scorer`]: pycodestyle's code and the 0-based column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub code: &'static str,
    pub col: usize,
}

/// PEP8-style checks (the subset in the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct Pep8Scorer {
    pub max_line_length: usize,
}

impl Default for Pep8Scorer {
    fn default() -> Self {
        Self {
            max_line_length: 79,
        }
    }
}

const KEYWORDS: [&str; 13] = [
    "if", "elif", "while", "for", "in", "and", "or", "not", "return", "assert", "yield", "with",
    "else",
];

/// The characters of `line` that are code (not inside a string literal or after `#`), as
/// `Some(char)`, with string contents replaced by `None`; and the column where a comment starts.
fn code_mask(chars: &[char]) -> (Vec<Option<char>>, Option<usize>) {
    let mut out = Vec::with_capacity(chars.len());
    let mut quote: Option<char> = None;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match quote {
            Some(q) => {
                if c == '\\' && i + 1 < chars.len() {
                    out.push(None);
                    out.push(None);
                    i += 2;
                    continue;
                }
                if c == q {
                    quote = None;
                    out.push(Some(c));
                } else {
                    out.push(None);
                }
            }
            None => {
                if c == '#' {
                    return (out, Some(i));
                }
                if c == '\'' || c == '"' {
                    quote = Some(c);
                }
                out.push(Some(c));
            }
        }
        i += 1;
    }
    (out, None)
}

fn viol(code: &'static str, col: usize) -> Violation {
    Violation { code, col }
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

impl Pep8Scorer {
    /// The violations of `line` (its trailing `\n`, if any, ignored); `blank_before` is the number
    /// of blank lines directly before it (for `E303`).
    pub fn line_violations(&self, line: &str, blank_before: usize) -> Vec<Violation> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        let chars: Vec<char> = line.chars().collect();
        let n = chars.len();
        let mut v = Vec::new();
        if n > self.max_line_length {
            v.push(viol("E501", self.max_line_length));
        }
        let trimmed_end = line.trim_end_matches([' ', '\t']).chars().count();
        if trimmed_end < n {
            v.push(viol(
                if trimmed_end == 0 { "W293" } else { "W291" },
                trimmed_end,
            ));
        }
        if trimmed_end == 0 {
            return v; // a blank line: nothing else to check
        }
        if blank_before > 2 {
            v.push(viol("E303", 0));
        }
        let indent: Vec<char> = chars
            .iter()
            .take_while(|c| **c == ' ' || **c == '\t')
            .copied()
            .collect();
        if indent.contains(&'\t') {
            v.push(viol("W191", 0));
        } else if !indent.len().is_multiple_of(4) {
            v.push(viol("E111", indent.len()));
        }
        let (code, comment) = code_mask(&chars);
        let m = code.len();
        let at = |i: usize| -> Option<char> { code.get(i).copied().flatten() };
        if let Some(c) = comment {
            // E261: code before the comment needs two spaces in front of `#`.
            let before: String = chars[..c].iter().collect();
            if !before.trim().is_empty() && !before.ends_with("  ") {
                v.push(viol("E261", c));
            }
        }
        // Bracket depth at each position (for keyword arguments).
        let mut depth = vec![0i32; m + 1];
        for i in 0..m {
            depth[i + 1] = depth[i]
                + match at(i) {
                    Some('(' | '[' | '{') => 1,
                    Some(')' | ']' | '}') => -1,
                    _ => 0,
                };
        }
        let start = indent.len();
        let mut i = start;
        while i < m {
            let Some(c) = at(i) else {
                i += 1;
                continue;
            };
            match c {
                ',' => {
                    if i > start && at(i - 1) == Some(' ') {
                        v.push(viol("E203", i - 1));
                    }
                    match at(i + 1) {
                        None if i + 1 >= m => {}
                        Some(' ' | ')' | ']' | '}') => {}
                        _ => v.push(viol("E231", i)),
                    }
                }
                ';' => {
                    let rest_blank = (i + 1..m).all(|j| at(j) == Some(' '));
                    v.push(viol(if rest_blank { "E703" } else { "E702" }, i));
                }
                '(' | '[' => {
                    if at(i + 1) == Some(' ') && i + 1 < m {
                        v.push(viol("E201", i + 1));
                    }
                    if c == '(' && i > start && at(i - 1) == Some(' ') {
                        // E211: `name (` where name is not a keyword.
                        let mut j = i - 1;
                        while j > start && at(j) == Some(' ') {
                            j -= 1;
                        }
                        let end = j + 1;
                        let mut k = end;
                        while k > start && at(k - 1).is_some_and(is_ident) {
                            k -= 1;
                        }
                        let word: String = chars[k..end].iter().collect();
                        if !word.is_empty()
                            && at(j).is_some_and(is_ident)
                            && !KEYWORDS.contains(&word.as_str())
                            && !word.chars().all(|c| c.is_ascii_digit())
                        {
                            v.push(viol("E211", i - 1));
                        }
                    }
                }
                ')' | ']' if i > start && at(i - 1) == Some(' ') => {
                    v.push(viol("E202", i - 1));
                }
                _ => {}
            }
            // Operators.
            let two: String = [at(i), at(i + 1)].iter().flatten().collect();
            let three: String = [at(i), at(i + 1), at(i + 2)].iter().flatten().collect();
            let op_len = if ["//=", "**="].contains(&three.as_str()) {
                3
            } else if [
                "==", "!=", "<=", ">=", "+=", "-=", "*=", "/=", "%=", "//", "**", "->",
            ]
            .contains(&two.as_str())
            {
                2
            } else if "=<>+-*/%".contains(c) {
                1
            } else {
                0
            };
            if op_len > 0 {
                let op: String = chars[i..i + op_len].iter().collect();
                let prev = (start..i).rev().map(at).find(|c| *c != Some(' ')).flatten();
                let unary_ctx = match prev {
                    None => true,
                    Some(p) => "=([{,:<>+-*/%!".contains(p),
                } || {
                    // After a keyword such as `return -1`.
                    let mut k = i;
                    while k > start && at(k - 1) == Some(' ') {
                        k -= 1;
                    }
                    let e = k;
                    while k > start && at(k - 1).is_some_and(is_ident) {
                        k -= 1;
                    }
                    let w: String = chars[k..e].iter().collect();
                    KEYWORDS.contains(&w.as_str())
                };
                let is_unary = matches!(op.as_str(), "-" | "+" | "*" | "**") && unary_ctx;
                let kwarg = op == "=" && depth[i] > 0;
                if !is_unary && !kwarg {
                    let space_before = i > 0 && at(i - 1) == Some(' ');
                    let space_after = at(i + op_len) == Some(' ') || i + op_len >= m;
                    if !space_before || !space_after {
                        v.push(viol("E225", i));
                    }
                }
                i += op_len;
                continue;
            }
            i += 1;
        }
        v
    }

    /// Violations per character of `line` (the newline not counted, at least one character).
    pub fn score_line(&self, line: &str, blank_before: usize) -> f32 {
        let n = line.trim_end_matches(['\n', '\r']).chars().count().max(1);
        self.line_violations(line, blank_before).len() as f32 / n as f32
    }
}

/// Forbidden patterns: the score of a segment is its number of matches per character.
#[derive(Clone, Debug)]
pub struct PatternScorer {
    patterns: Vec<regex::Regex>,
}

impl PatternScorer {
    /// Compiles `patterns`; an invalid one is an error naming `field[i]` and the regex error.
    pub fn new(patterns: &[String], field: &str) -> Result<Self> {
        let patterns = patterns
            .iter()
            .enumerate()
            .map(|(i, p)| {
                regex::Regex::new(p)
                    .map_err(|e| Error::config(format!("{field}[{i}]"), format!("`{p}`: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { patterns })
    }

    /// Matches of every pattern in `segment`.
    pub fn matches(&self, segment: &str) -> usize {
        self.patterns
            .iter()
            .map(|r| r.find_iter(segment).count())
            .sum()
    }

    pub fn score(&self, segment: &str) -> f32 {
        let n = segment
            .trim_end_matches(['\n', '\r'])
            .chars()
            .count()
            .max(1);
        self.matches(segment) as f32 / n as f32
    }
}

/// Which built-in scorer (`[phf] scorer`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScorerKind {
    /// [`Pep8Scorer`].
    #[default]
    Pep8,
    /// [`PatternScorer`] over `patterns`.
    Patterns,
}

/// A misalignment scorer over the segments of a document.
#[derive(Clone, Debug)]
pub enum Scorer {
    Pep8(Pep8Scorer),
    Patterns(PatternScorer),
}

impl Scorer {
    /// The scorer of `kind`; `patterns` (named `field` in errors) must be non-empty for
    /// [`ScorerKind::Patterns`].
    pub fn new(
        kind: ScorerKind,
        max_line_length: usize,
        patterns: &[String],
        field: &str,
    ) -> Result<Self> {
        match kind {
            ScorerKind::Pep8 => {
                if max_line_length == 0 {
                    return Err(Error::config(
                        "phf.max_line_length",
                        "must be positive (PEP8: 79)",
                    ));
                }
                Ok(Scorer::Pep8(Pep8Scorer { max_line_length }))
            }
            ScorerKind::Patterns => {
                if patterns.is_empty() {
                    return Err(Error::config(
                        field,
                        "scorer = \"patterns\" needs at least one regular expression",
                    ));
                }
                Ok(Scorer::Patterns(PatternScorer::new(patterns, field)?))
            }
        }
    }

    /// The score of each segment of a document, in order (higher = worse). PEP8's `E303` looks
    /// at the blank lines before a segment, so segments are scored with their document.
    pub fn score_segments(&self, segs: &[&str]) -> Vec<f32> {
        match self {
            Scorer::Pep8(p) => {
                let mut blank = 0usize;
                segs.iter()
                    .map(|s| {
                        let sc = p.score_line(s, blank);
                        if s.trim().is_empty() {
                            blank += 1;
                        } else {
                            blank = 0;
                        }
                        sc
                    })
                    .collect()
            }
            Scorer::Patterns(p) => segs.iter().map(|s| p.score(s)).collect(),
        }
    }

    /// The score of a whole text: the character-weighted mean of its segments' scores (for
    /// per-character scorers: violations of the text per character).
    pub fn score_text(&self, text: &str) -> f32 {
        let segs = segments(text);
        doc_score(&segs, &self.score_segments(&segs))
    }
}

/// Character-weighted mean of segment scores (each segment's length without its newline, at
/// least 1): a document's score from its segments'.
pub fn doc_score(segs: &[&str], scores: &[f32]) -> f32 {
    let (mut num, mut den) = (0f64, 0f64);
    for (s, &x) in segs.iter().zip(scores) {
        let n = s.trim_end_matches(['\n', '\r']).chars().count().max(1) as f64;
        num += x as f64 * n;
        den += n;
    }
    if den > 0.0 {
        (num / den) as f32
    } else {
        0.0
    }
}

/// Settings of the synthetic code corpus.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CodeCorpusConfig {
    /// Documents (one function each).
    pub docs: usize,
    /// Share of lines with one injected violation, over the corpus.
    pub bad_line_fraction: f64,
    /// Share of documents written "sloppily": violations occur only there, each line of a
    /// sloppy document violating with probability `bad_line_fraction / sloppy_doc_fraction`, so
    /// style is consistent within a document (as code by one author is). 1: every line
    /// independently.
    pub sloppy_doc_fraction: f64,
    pub seed: u64,
}

impl Default for CodeCorpusConfig {
    fn default() -> Self {
        Self {
            docs: 2000,
            bad_line_fraction: 0.3,
            sloppy_doc_fraction: 0.5,
            seed: 0,
        }
    }
}

impl CodeCorpusConfig {
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.bad_line_fraction) {
            return Err(Error::config(
                "bad_line_fraction",
                format!("must be in [0, 1], got {}", self.bad_line_fraction),
            ));
        }
        if !(self.sloppy_doc_fraction > 0.0 && self.sloppy_doc_fraction <= 1.0) {
            return Err(Error::config(
                "sloppy_doc_fraction",
                format!("must be in (0, 1], got {}", self.sloppy_doc_fraction),
            ));
        }
        if self.bad_line_fraction > self.sloppy_doc_fraction {
            return Err(Error::config(
                "bad_line_fraction",
                format!(
                    "{} is more than sloppy_doc_fraction = {}: violations occur only in sloppy documents",
                    self.bad_line_fraction, self.sloppy_doc_fraction
                ),
            ));
        }
        Ok(())
    }
}

/// One generated function: its text and, per line, whether a violation was injected.
#[derive(Clone, Debug, PartialEq)]
pub struct CodeDoc {
    pub text: String,
    pub bad: Vec<bool>,
}

const NAMES: [&str; 12] = [
    "total", "count", "value", "result", "items", "limit", "acc", "step", "size", "score", "width",
    "offset",
];
const FUNCS: [&str; 8] = [
    "compute", "update", "scale", "merge", "clamp", "shift", "measure", "collect",
];
const NOUNS: [&str; 6] = ["values", "rows", "prices", "scores", "points", "weights"];

/// Clean lines of one function (indent included, no newline).
fn clean_function(r: &mut Rng) -> Vec<String> {
    let pick = |r: &mut Rng, xs: &[&'static str]| xs[r.below(xs.len())];
    let f = format!("{}_{}", pick(r, &FUNCS), pick(r, &NOUNS));
    let a = pick(r, &NAMES);
    let mut b = pick(r, &NAMES);
    while b == a {
        b = pick(r, &NAMES);
    }
    let k = 1 + r.below(9);
    let op = pick(r, &["+", "-", "*"]);
    let mut lines = vec![format!("def {f}({a}, {b}):")];
    match r.below(4) {
        0 => {
            lines.push(format!("    out = {a} {op} {b} * {k}"));
            lines.push(format!("    if out > {}:", k * 10));
            lines.push(format!("        out = out - {k}"));
            lines.push("    return out".into());
        }
        1 => {
            lines.push("    acc = 0".into());
            lines.push(format!("    for x in range({a}, {b}):"));
            lines.push(format!("        acc += x {op} {k}"));
            lines.push("    return acc".into());
        }
        2 => {
            lines.push(format!("    pair = ({a}, {b} {op} {k})"));
            lines.push("    first = pair[0]".into());
            lines.push(format!("    return max(first, pair[1]) {op} {k}"));
        }
        _ => {
            lines.push(format!("    while {a} < {b}:"));
            lines.push(format!("        {a} = {a} + {k}"));
            lines.push(format!("    print({a}, {b})"));
            lines.push(format!("    return {a} == {b}"));
        }
    }
    lines
}

/// Injects one violation into a clean line (indent kept), if a kind applies; returns the new line.
fn inject(line: &str, r: &mut Rng) -> String {
    let indent = line.len() - line.trim_start().len();
    let (ind, body) = line.split_at(indent);
    let mut kinds: Vec<u8> = vec![0, 1]; // trailing whitespace, semicolon + statement
    if body.contains(" = ") || body.contains(" + ") || body.contains(" - ") {
        kinds.push(2); // missing whitespace around an operator
    }
    if body.contains(", ") {
        kinds.push(3); // missing whitespace after a comma
    }
    if body.contains('(') && !body.starts_with("def ") {
        kinds.push(4); // whitespace before/after a parenthesis
    }
    if indent >= 4 {
        kinds.push(5); // tab indentation
    }
    match kinds[r.below(kinds.len())] {
        0 => format!("{line}  "),
        1 => format!("{line}; pass"),
        2 => {
            for op in [" = ", " + ", " - "] {
                if let Some(p) = body.find(op) {
                    let tight = op.trim();
                    return format!("{ind}{}{tight}{}", &body[..p], &body[p + op.len()..]);
                }
            }
            line.to_string()
        }
        3 => format!("{ind}{}", body.replacen(", ", ",", 1)),
        4 => {
            let p = body.find('(').unwrap_or(0);
            let call = body[..p].ends_with(|c: char| c.is_alphanumeric() || c == '_');
            if r.below(2) == 0 && call {
                format!("{ind}{} {}", &body[..p], &body[p..])
            } else {
                format!("{ind}{}( {}", &body[..p], &body[p + 1..])
            }
        }
        _ => format!("\t{}{body}", " ".repeat(indent - 4)),
    }
}

/// The synthetic code corpus: document `i` drawn from its own stream `(seed, i)`. A document is
/// sloppy with probability `sloppy_doc_fraction`; every line is clean PEP8 except, in sloppy
/// documents, those drawn bad (probability `bad_line_fraction / sloppy_doc_fraction`), which carry
/// exactly one injected violation ([`Pep8Scorer`] finds at least one there and none elsewhere: tested).
pub fn code_corpus(cfg: &CodeCorpusConfig) -> Result<Vec<CodeDoc>> {
    cfg.validate()?;
    Ok((0..cfg.docs)
        .map(|i| {
            let mut r = Rng::derive(cfg.seed, &format!("gradus-tasks/phf/code/{i}"));
            let lines = clean_function(&mut r);
            let sloppy = r.uniform() < cfg.sloppy_doc_fraction;
            let p_line = cfg.bad_line_fraction / cfg.sloppy_doc_fraction;
            let mut text = String::new();
            let mut bad = Vec::with_capacity(lines.len());
            for l in lines {
                let b = sloppy && r.uniform() < p_line;
                let l = if b { inject(&l, &mut r) } else { l };
                text.push_str(&l);
                text.push('\n');
                bad.push(b);
            }
            CodeDoc { text, bad }
        })
        .collect())
}
