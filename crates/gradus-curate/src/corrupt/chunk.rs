//! Splitting Python source files into function-level chunks for embedding (the probe's corpus).
//!
//! A chunk is one top-level `def` or `class` block, with the decorators and comment lines right
//! above it, up to the line before the next top-level statement. A class longer than `max_lines`
//! is split into its methods instead (each dedented to column 0, so it stays valid Python on its
//! own). Chunks shorter than `min_lines` or longer than `max_lines` (after that split) are dropped;
//! module-level code outside functions and classes is not used. Each chunk keeps its first line
//! number in the file.

/// A piece of a source file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// 1-based first line in the file.
    pub line: usize,
    pub text: String,
}

fn indent(l: &str) -> usize {
    l.len() - l.trim_start().len()
}

fn starts_block(l: &str) -> bool {
    let t = l.trim_start();
    t.starts_with("def ")
        || t.starts_with("class ")
        || t.starts_with("async def ")
        || t.starts_with('@')
}

/// Blocks starting at indentation `ind` within lines[lo..hi]: (start, end) line index ranges.
fn blocks(lines: &[&str], lo: usize, hi: usize, ind: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = lo;
    while i < hi {
        let l = lines[i];
        if !l.trim().is_empty() && indent(l) == ind && starts_block(l) {
            let start = i;
            // Skip decorators to the def/class line, then its body: lines that are blank or
            // indented deeper than `ind` (plus continuation lines of the header).
            let mut j = i;
            while j < hi && lines[j].trim_start().starts_with('@') {
                j += 1;
            }
            j += 1;
            while j < hi
                && (lines[j].trim().is_empty()
                    || indent(lines[j]) > ind
                    || lines[j].trim_start().starts_with(')'))
            {
                j += 1;
            }
            let mut end = j;
            while end > start + 1 && lines[end - 1].trim().is_empty() {
                end -= 1;
            }
            out.push((start, end));
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

/// The function-level chunks of a Python file.
pub fn python_chunks(src: &str, min_lines: usize, max_lines: usize) -> Vec<Chunk> {
    let lines: Vec<&str> = src.lines().collect();
    let mut out = Vec::new();
    for (s, e) in blocks(&lines, 0, lines.len(), 0) {
        if e - s <= max_lines {
            if e - s >= min_lines {
                out.push(Chunk {
                    line: s + 1,
                    text: lines[s..e].join("\n"),
                });
            }
            continue;
        }
        let is_class = lines[s..e]
            .iter()
            .find(|l| !l.trim_start().starts_with('@'))
            .is_some_and(|l| l.starts_with("class "));
        if !is_class {
            continue;
        }
        // Methods: blocks at the indentation of the class body.
        let Some(body_ind) = lines[s + 1..e]
            .iter()
            .find(|l| !l.trim().is_empty())
            .map(|l| indent(l))
        else {
            continue;
        };
        for (ms, me) in blocks(&lines, s + 1, e, body_ind) {
            let n = me - ms;
            if n < min_lines || n > max_lines {
                continue;
            }
            let text: Vec<&str> = lines[ms..me]
                .iter()
                .map(|l| {
                    if l.get(..body_ind).is_some_and(|p| p.trim().is_empty()) {
                        &l[body_ind..]
                    } else {
                        l.trim_start()
                    }
                })
                .collect();
            out.push(Chunk {
                line: ms + 1,
                text: text.join("\n"),
            });
        }
    }
    out
}
