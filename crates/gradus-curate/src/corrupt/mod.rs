//! Seeded synthetic corruptions of code, for the SCIP corruption probe (RESEARCH.md §3.1): does a
//! corrupted file move into a smaller cluster, or farther from its centroid, in embedding space?
//!
//! Two languages: Python, and gradus' built-in small language ([`gradus_tasks::lang`], "tiny").
//! Each corruption makes ONE edit at one site chosen at random (seeded) among the sites where it
//! applies, and reports it as a [`Corruption`]: kind, 1-based line and column of the edit, and the
//! text before and after. A kind with no site in a snippet returns `None`.
//!
//! Syntax corruptions (the program no longer parses):
//! - `delete_closing_bracket`: remove one `)`, `]` or `}`;
//! - `break_indentation` (Python): add one space before a statement that has the same indentation
//!   as the statement before it, outside brackets → `IndentationError: unexpected indent`;
//! - `drop_colon` (Python): remove the `:` ending a compound-statement header (`if`, `def`, ...);
//! - `drop_semicolon` (tiny): remove a `;` (every statement of the language ends in one);
//! - `break_keyword`: swap the first two letters of a statement keyword (`while` → `hwile`;
//!   Python: only where the result cannot parse, so not a bare `return`).
//!
//! Content corruptions (still parse, but mean something else):
//! - `flip_comparison`: `==` ↔ `!=`, `<` ↔ `>`, `<=` ↔ `>=`;
//! - `off_by_one`: an integer literal n → n + 1 or n − 1 (n > 0) — in Python one inside a `range(`
//!   call or a `[ ]` subscript, in tiny one right after a comparison (loop bounds, tests);
//! - `swap_variable`: one use of a variable replaced by another variable of the same snippet;
//! - `rename_variable`: one use of a variable renamed to a fresh name (`x` → `x_1`);
//! - `swap_operator`: one binary `+`→`-`, `-`→`+`, `*`→`+`, `/`→`*` (also `%`→`*` in tiny).

pub mod chunk;
pub mod scan;

use std::collections::BTreeSet;

use gradus_tensor::rng::Rng;
use gradus_tensor::{Error, Result};
use serde::{Deserialize, Serialize};

use scan::{scan, Tok, TokKind};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lang {
    Python,
    Tiny,
}

impl Lang {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "python" | "py" => Ok(Lang::Python),
            "tiny" | "lang" => Ok(Lang::Tiny),
            other => Err(Error::config(
                "lang",
                format!("`{other}`: expected python or tiny"),
            )),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    DeleteClosingBracket,
    BreakIndentation,
    DropColon,
    DropSemicolon,
    BreakKeyword,
    FlipComparison,
    OffByOne,
    SwapVariable,
    RenameVariable,
    SwapOperator,
}

/// Whether a corruption breaks the syntax or keeps it and changes the meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Syntax,
    Content,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::DeleteClosingBracket,
        Kind::BreakIndentation,
        Kind::DropColon,
        Kind::DropSemicolon,
        Kind::BreakKeyword,
        Kind::FlipComparison,
        Kind::OffByOne,
        Kind::SwapVariable,
        Kind::RenameVariable,
        Kind::SwapOperator,
    ];

    pub fn class(self) -> Class {
        match self {
            Kind::DeleteClosingBracket
            | Kind::BreakIndentation
            | Kind::DropColon
            | Kind::DropSemicolon
            | Kind::BreakKeyword => Class::Syntax,
            _ => Class::Content,
        }
    }

    /// The kinds that exist for a language.
    pub fn for_lang(lang: Lang) -> Vec<Kind> {
        Kind::ALL
            .into_iter()
            .filter(|k| match lang {
                Lang::Python => *k != Kind::DropSemicolon,
                Lang::Tiny => !matches!(k, Kind::BreakIndentation | Kind::DropColon),
            })
            .collect()
    }

    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default()
    }

    pub fn parse(s: &str) -> Result<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| {
            let all: Vec<String> = Kind::ALL.iter().map(|k| k.name()).collect();
            Error::config(
                "kinds",
                format!("unknown corruption `{s}`; known: {}", all.join(", ")),
            )
        })
    }
}

/// What was done, and where (1-based line and column, in characters, of the edit in the input).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Corruption {
    pub kind: Kind,
    pub class: Class,
    pub line: usize,
    pub col: usize,
    /// The text replaced ("" for an insertion).
    pub before: String,
    /// The replacement ("" for a deletion).
    pub after: String,
}

/// One candidate edit: replace `src[start..end]` by `after`.
struct Edit {
    start: usize,
    end: usize,
    line: usize,
    col: usize,
    after: String,
}

const PY_KEYWORDS: &[&str] = &[
    "False",
    "None",
    "True",
    "and",
    "as",
    "assert",
    "async",
    "await",
    "break",
    "class",
    "continue",
    "def",
    "del",
    "elif",
    "else",
    "except",
    "finally",
    "for",
    "from",
    "global",
    "if",
    "import",
    "in",
    "is",
    "lambda",
    "nonlocal",
    "not",
    "or",
    "pass",
    "raise",
    "return",
    "try",
    "while",
    "with",
    "yield",
    "self",
    "cls",
    "print",
    "len",
    "range",
    "int",
    "str",
    "list",
    "dict",
    "set",
    "tuple",
    "isinstance",
    "super",
    "object",
    "match",
    "case",
    "type",
];
const TINY_KEYWORDS: &[&str] = &["let", "if", "else", "while", "print"];
const PY_HEADERS: &[&str] = &[
    "if", "elif", "else", "for", "while", "def", "class", "try", "except", "finally", "with",
];
const PY_BREAKABLE: &[&str] = &[
    "def", "class", "if", "elif", "else", "for", "while", "import", "from", "try", "except",
    "with", "return",
];

fn text<'a>(src: &'a str, t: &Tok) -> &'a str {
    &src[t.start..t.end]
}

fn keywords(lang: Lang) -> &'static [&'static str] {
    match lang {
        Lang::Python => PY_KEYWORDS,
        Lang::Tiny => TINY_KEYWORDS,
    }
}

/// Variable uses: identifiers that are not keywords, not attributes (after `.`), not keyword
/// arguments (before `=` inside brackets), not called (before `(`), and not names of
/// `def`/`class`/`import`s.
fn variables(src: &str, toks: &[Tok], lang: Lang) -> Vec<usize> {
    let kw = keywords(lang);
    (0..toks.len())
        .filter(|&i| {
            let t = &toks[i];
            if t.kind != TokKind::Ident || kw.contains(&text(src, t)) {
                return false;
            }
            let prev = i.checked_sub(1).map(|j| text(src, &toks[j]));
            let next = toks.get(i + 1).map(|n| text(src, n));
            if matches!(
                prev,
                Some(".")
                    | Some("def")
                    | Some("class")
                    | Some("import")
                    | Some("as")
                    | Some("from")
            ) {
                return false;
            }
            if lang == Lang::Python && (next == Some("(") || (t.depth > 0 && next == Some("="))) {
                return false;
            }
            // Python: names in an import statement line are not variables.
            if lang == Lang::Python
                && toks[..i]
                    .iter()
                    .rev()
                    .take_while(|p| p.line == t.line)
                    .any(|p| matches!(text(src, p), "import" | "from"))
            {
                return false;
            }
            true
        })
        .collect()
}

/// Is token i a binary operator position: the previous token ends an operand.
fn binary_position(src: &str, toks: &[Tok], i: usize, lang: Lang) -> bool {
    let Some(p) = i.checked_sub(1).map(|j| &toks[j]) else {
        return false;
    };
    if p.line != toks[i].line && p.depth == 0 && toks[i].depth == 0 {
        return false;
    }
    match p.kind {
        TokKind::Int | TokKind::Number | TokKind::Str | TokKind::Close => true,
        TokKind::Ident => {
            !keywords(lang).contains(&text(src, p))
                || matches!(text(src, p), "self" | "None" | "True" | "False")
        }
        _ => false,
    }
}

fn sites(src: &str, toks: &[Tok], lang: Lang, kind: Kind) -> Vec<Edit> {
    let edit = |t: &Tok, after: &str| Edit {
        start: t.start,
        end: t.end,
        line: t.line,
        col: t.col,
        after: after.to_string(),
    };
    let mut out = Vec::new();
    match kind {
        Kind::DeleteClosingBracket => {
            out.extend(
                toks.iter()
                    .filter(|t| t.kind == TokKind::Close)
                    .map(|t| edit(t, "")),
            );
        }
        Kind::DropSemicolon if lang == Lang::Tiny => {
            out.extend(
                toks.iter()
                    .filter(|t| text(src, t) == ";")
                    .map(|t| edit(t, "")),
            );
        }
        Kind::DropColon if lang == Lang::Python => {
            // The last `:` at depth 0 of a logical line that starts with a header keyword.
            for (i, t) in toks.iter().enumerate() {
                if text(src, t) != ":" || t.depth != 0 {
                    continue;
                }
                let next_on_line = toks.get(i + 1).is_some_and(|n| n.line == t.end_line);
                if next_on_line {
                    continue; // `if x: return y` — keep it simple: only colons ending a line
                }
                let start_tok = toks[..i]
                    .iter()
                    .rev()
                    .find(|p| p.depth == 0 && is_line_start(toks, p));
                if start_tok.is_some_and(|s| PY_HEADERS.contains(&text(src, s))) {
                    out.push(edit(t, ""));
                }
            }
        }
        Kind::BreakIndentation if lang == Lang::Python => {
            let starts: Vec<&Tok> = toks.iter().filter(|t| is_line_start(toks, t)).collect();
            for w in starts.windows(2) {
                let (prev, cur) = (w[0], w[1]);
                if cur.depth != 0 || cur.after_backslash || cur.col != prev.col || cur.col == 1 {
                    continue;
                }
                // The previous statement must not open a block (its line ends with `:`), and must
                // be complete (no open bracket at the start of `cur`: depth 0 checked above).
                let last_before = toks.iter().rev().find(|t| t.start < cur.start);
                if last_before.is_some_and(|l| text(src, l) == ":") {
                    continue;
                }
                let ls = src[..cur.start].rfind('\n').map_or(0, |p| p + 1);
                out.push(Edit {
                    start: ls,
                    end: ls,
                    line: cur.line,
                    col: 1,
                    after: " ".into(),
                });
            }
        }
        Kind::BreakKeyword => {
            for (i, t) in toks.iter().enumerate() {
                let w = text(src, t);
                let ok = match lang {
                    Lang::Tiny => TINY_KEYWORDS.contains(&w),
                    Lang::Python => {
                        PY_BREAKABLE.contains(&w)
                            && is_line_start(toks, t)
                            && t.depth == 0
                            && (w != "return"
                                || toks.get(i + 1).is_some_and(|n| n.line == t.end_line))
                    }
                };
                if ok {
                    let mut c: Vec<char> = w.chars().collect();
                    c.swap(0, 1);
                    out.push(edit(t, &c.into_iter().collect::<String>()));
                }
            }
        }
        Kind::FlipComparison => {
            for t in toks.iter().filter(|t| t.kind == TokKind::Op) {
                let to = match text(src, t) {
                    "==" => "!=",
                    "!=" => "==",
                    "<" => ">",
                    ">" => "<",
                    "<=" => ">=",
                    ">=" => "<=",
                    _ => continue,
                };
                out.push(edit(t, to));
            }
        }
        Kind::OffByOne => {
            for (i, t) in toks.iter().enumerate() {
                if t.kind != TokKind::Int {
                    continue;
                }
                let ok = match lang {
                    Lang::Tiny => {
                        i > 0
                            && matches!(
                                text(src, &toks[i - 1]),
                                "<" | "<=" | ">" | ">=" | "==" | "!="
                            )
                    }
                    Lang::Python => in_range_or_subscript(src, toks, i),
                };
                if !ok {
                    continue;
                }
                let Ok(n) = text(src, t).parse::<u64>() else {
                    continue;
                };
                if let Some(m) = n.checked_add(1) {
                    out.push(edit(t, &m.to_string()));
                }
                if n > 0 {
                    out.push(edit(t, &(n - 1).to_string()));
                }
            }
        }
        Kind::SwapVariable => {
            let vars = variables(src, toks, lang);
            let names: BTreeSet<&str> = vars.iter().map(|&i| text(src, &toks[i])).collect();
            for &i in &vars {
                let me = text(src, &toks[i]);
                for other in names.iter().filter(|n| **n != me) {
                    out.push(edit(&toks[i], other));
                }
            }
        }
        Kind::RenameVariable => {
            let vars = variables(src, toks, lang);
            let all: BTreeSet<&str> = toks
                .iter()
                .filter(|t| t.kind == TokKind::Ident)
                .map(|t| text(src, t))
                .collect();
            for &i in &vars {
                let me = text(src, &toks[i]);
                let fresh = (1..)
                    .map(|k| format!("{me}_{k}"))
                    .find(|f| !all.contains(f.as_str()))
                    .unwrap_or_default();
                out.push(edit(&toks[i], &fresh));
            }
        }
        Kind::SwapOperator => {
            for (i, t) in toks.iter().enumerate() {
                if t.kind != TokKind::Op || !binary_position(src, toks, i, lang) {
                    continue;
                }
                let to = match (text(src, t), lang) {
                    ("+", _) => "-",
                    ("-", _) => "+",
                    ("*", _) => "+",
                    ("/", _) => "*",
                    ("%", Lang::Tiny) => "*",
                    _ => continue,
                };
                out.push(edit(t, to));
            }
        }
        _ => {}
    }
    out
}

/// Whether token t is the first token on its physical line.
fn is_line_start(toks: &[Tok], t: &Tok) -> bool {
    let i = toks
        .binary_search_by_key(&t.start, |x| x.start)
        .unwrap_or(0);
    i == 0 || toks[i - 1].end_line < t.line
}

/// Python: token i is inside the brackets of a `range(...)` call or a subscript `x[...]`.
fn in_range_or_subscript(src: &str, toks: &[Tok], i: usize) -> bool {
    let d = toks[i].depth;
    if d == 0 {
        return false;
    }
    // The innermost open bracket before i.
    let Some(j) = toks[..i]
        .iter()
        .rposition(|t| t.kind == TokKind::Open && t.depth == d - 1)
    else {
        return false;
    };
    match text(src, &toks[j]) {
        "(" => j > 0 && text(src, &toks[j - 1]) == "range",
        "[" => {
            j > 0
                && matches!(
                    toks[j - 1].kind,
                    TokKind::Ident | TokKind::Close | TokKind::Str
                )
        }
        _ => false,
    }
}

/// Applies `kind` at a random site (seeded by `rng`); `None` if the kind has no site here.
pub fn corrupt(src: &str, lang: Lang, kind: Kind, rng: &mut Rng) -> Option<(String, Corruption)> {
    let toks = scan(src, lang);
    let s = sites(src, &toks, lang, kind);
    if s.is_empty() {
        return None;
    }
    let e = &s[rng.below(s.len())];
    let mut out = String::with_capacity(src.len() + e.after.len());
    out.push_str(&src[..e.start]);
    out.push_str(&e.after);
    out.push_str(&src[e.end..]);
    Some((
        out,
        Corruption {
            kind,
            class: kind.class(),
            line: e.line,
            col: e.col,
            before: src[e.start..e.end].to_string(),
            after: e.after.clone(),
        },
    ))
}

/// Number of sites `kind` has in `src`.
pub fn count_sites(src: &str, lang: Lang, kind: Kind) -> usize {
    sites(src, &scan(src, lang), lang, kind).len()
}

/// Applies one kind drawn uniformly from those of `kinds` that have a site in `src`.
pub fn corrupt_any(
    src: &str,
    lang: Lang,
    kinds: &[Kind],
    rng: &mut Rng,
) -> Option<(String, Corruption)> {
    let toks = scan(src, lang);
    let usable: Vec<Kind> = kinds
        .iter()
        .copied()
        .filter(|k| !sites(src, &toks, lang, *k).is_empty())
        .collect();
    if usable.is_empty() {
        return None;
    }
    let k = usable[rng.below(usable.len())];
    corrupt(src, lang, k, rng)
}
