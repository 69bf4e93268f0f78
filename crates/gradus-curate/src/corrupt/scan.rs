//! A light lexer for finding corruption sites: tokens with byte ranges, 1-based line and column,
//! and bracket depth, skipping comments (and, for Python, string literals). It does not validate
//! anything; it only needs to classify what a corruption may touch.

use super::Lang;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokKind {
    Ident,
    Int,
    /// Other numbers (floats, hex, ...), never edited.
    Number,
    Str,
    Op,
    Open,
    Close,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tok {
    pub kind: TokKind,
    pub start: usize,
    pub end: usize,
    pub line: usize,
    pub col: usize,
    /// Line of the token's last character (differs from `line` for multi-line strings).
    pub end_line: usize,
    /// Bracket depth before this token.
    pub depth: usize,
    /// The previous token ends a physical line with a `\` continuation.
    pub after_backslash: bool,
}

const PY_OPS3: &[&str] = &["**=", "//=", ">>=", "<<=", "..."];
const PY_OPS2: &[&str] = &[
    "==", "!=", "<=", ">=", "->", "**", "//", "<<", ">>", "+=", "-=", "*=", "/=", "%=", "&=", "|=",
    "^=", ":=", "@=",
];
const TINY_OPS2: &[&str] = &["==", "!=", "<=", ">=", "&&", "||"];

fn is_string_prefix(s: &str) -> bool {
    s.len() <= 2
        && s.chars()
            .all(|c| matches!(c.to_ascii_lowercase(), 'r' | 'b' | 'f' | 'u'))
}

pub fn scan(src: &str, lang: Lang) -> Vec<Tok> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let (mut i, mut line, mut line_start) = (0usize, 1usize, 0usize);
    let mut depth = 0usize;
    let mut backslash = false;
    let col_of = |pos: usize, ls: usize| src[ls..pos].chars().count() + 1;
    while i < b.len() {
        let c = b[i];
        if c == b'\n' {
            i += 1;
            line += 1;
            line_start = i;
            continue;
        }
        if c == b'\\' && lang == Lang::Python && b.get(i + 1) == Some(&b'\n') {
            backslash = true;
            i += 1;
            continue;
        }
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'#' {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let start = i;
        let (sl, sc) = (line, col_of(i, line_start));
        let mut kind;
        if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] >= 0x80) {
                i += 1;
            }
            kind = TokKind::Ident;
            if lang == Lang::Python
                && i < b.len()
                && (b[i] == b'"' || b[i] == b'\'')
                && is_string_prefix(&src[start..i])
            {
                kind = TokKind::Str;
            }
        } else if c.is_ascii_digit()
            || (c == b'.' && b.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                i += 1;
            }
            kind = if src[start..i].bytes().all(|d| d.is_ascii_digit()) {
                TokKind::Int
            } else {
                TokKind::Number
            };
        } else if lang == Lang::Python && (c == b'"' || c == b'\'') {
            kind = TokKind::Str;
        } else if matches!(c, b'(' | b'[' | b'{') {
            i += 1;
            kind = TokKind::Open;
        } else if matches!(c, b')' | b']' | b'}') {
            i += 1;
            kind = TokKind::Close;
        } else {
            let rest = &src[i..];
            let ops: &[&[&str]] = match lang {
                Lang::Python => &[PY_OPS3, PY_OPS2],
                Lang::Tiny => &[TINY_OPS2],
            };
            let w = ops
                .iter()
                .flat_map(|l| l.iter())
                .find(|o| rest.starts_with(**o))
                .map_or(1, |o| o.len());
            // Keep char boundaries for non-ASCII punctuation.
            let w = (w..=4).find(|&w| src.is_char_boundary(i + w)).unwrap_or(w);
            i += w;
            kind = TokKind::Op;
        }
        if kind == TokKind::Str {
            // Skip the quoted part (i is at the quote).
            let q = b[i];
            let triple = b.get(i + 1) == Some(&q) && b.get(i + 2) == Some(&q);
            i += if triple { 3 } else { 1 };
            while i < b.len() {
                if b[i] == b'\\' {
                    if b.get(i + 1) == Some(&b'\n') {
                        line += 1;
                        line_start = i + 2;
                    }
                    i += 2;
                    continue;
                }
                if b[i] == b'\n' {
                    if !triple {
                        break; // unterminated single-quoted string: stop at the line end
                    }
                    line += 1;
                    line_start = i + 1;
                }
                if b[i] == q && (!triple || (b.get(i + 1) == Some(&q) && b.get(i + 2) == Some(&q)))
                {
                    i += if triple { 3 } else { 1 };
                    break;
                }
                i += 1;
            }
            i = i.min(b.len());
        }
        if kind == TokKind::Close {
            depth = depth.saturating_sub(1);
        }
        out.push(Tok {
            kind,
            start,
            end: i,
            line: sl,
            col: sc,
            end_line: line,
            depth,
            after_backslash: backslash,
        });
        backslash = false;
        if kind == TokKind::Open {
            depth += 1;
        }
    }
    out
}
