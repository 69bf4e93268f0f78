//! Filters over a document's responses (lm-eval's `filter_list`): `regex`, `take_first`,
//! `majority_vote`, `lowercase`, `uppercase`.
//!
//! A pipeline maps the list of responses of one document (one per repeat) to a new list;
//! `take_first` ends with a single answer. `regex` follows lm-eval's `RegexFilter`: `findall`,
//! pick match `group_select` (Python indexing), a tuple of groups gives its first non-empty group,
//! the result is stripped; no match gives the fallback (`[invalid]`). Patterns use the Rust `regex`
//! syntax, which covers Python's except look-around and back-references (refused when parsed).

use anyhow::{anyhow, bail, Result};

use crate::task::FilterStep;

/// lm-eval's default pattern of the `regex` filter.
pub const DEFAULT_REGEX: &str = r"#### (\-?[0-9\.\,]+)";

/// Checks that a step is known and its pattern compiles.
pub fn check_step(s: &FilterStep) -> Result<()> {
    match s.function.as_str() {
        "regex" => {
            let p = s.regex_pattern.as_deref().unwrap_or(DEFAULT_REGEX);
            regex::Regex::new(p).map_err(|e| anyhow!("regex_pattern {p:?} does not compile: {e}"))?;
            Ok(())
        }
        "take_first" | "majority_vote" | "lowercase" | "uppercase" => Ok(()),
        other => bail!("filter function `{other}` is not supported (regex, take_first, majority_vote, lowercase, uppercase)"),
    }
}

/// lm-eval's `RegexFilter` on one response.
pub fn regex_extract(re: &regex::Regex, group_select: i64, fallback: &str, resp: &str) -> String {
    // findall: with no group, the whole matches; with one group, that group; with several, tuples.
    let groups = re.captures_len() - 1;
    let matches: Vec<Vec<String>> = re
        .captures_iter(resp)
        .map(|c| {
            if groups == 0 {
                vec![c.get(0).map_or("", |m| m.as_str()).to_string()]
            } else {
                (1..=groups)
                    .map(|g| c.get(g).map_or("", |m| m.as_str()).to_string())
                    .collect()
            }
        })
        .collect();
    if matches.is_empty() {
        return fallback.to_string();
    }
    let n = matches.len() as i64;
    let idx = if group_select < 0 {
        n + group_select
    } else {
        group_select
    };
    let Some(m) = (0..n).contains(&idx).then(|| &matches[idx as usize]) else {
        // Python would raise IndexError; an answer that cannot be extracted is the fallback.
        return fallback.to_string();
    };
    let picked = if groups <= 1 {
        m[0].clone()
    } else {
        match m.iter().find(|s| !s.is_empty()) {
            Some(s) => s.clone(),
            None => fallback.to_string(),
        }
    };
    picked.trim().to_string()
}

/// Applies a pipeline to one document's responses.
pub fn apply(steps: &[FilterStep], resps: &[String]) -> Result<Vec<String>> {
    let mut cur: Vec<String> = resps.to_vec();
    for s in steps {
        cur = match s.function.as_str() {
            "regex" => {
                let p = s.regex_pattern.as_deref().unwrap_or(DEFAULT_REGEX);
                let re = regex::Regex::new(p).map_err(|e| anyhow!("regex_pattern {p:?}: {e}"))?;
                let fb = s.fallback.as_deref().unwrap_or("[invalid]");
                cur.iter()
                    .map(|r| regex_extract(&re, s.group_select.unwrap_or(0), fb, r))
                    .collect()
            }
            "take_first" => cur.into_iter().take(1).collect(),
            "majority_vote" => {
                // Counter(resps).most_common(1): highest count, ties to the first seen.
                let mut counts: Vec<(String, usize)> = Vec::new();
                for r in &cur {
                    match counts.iter_mut().find(|(k, _)| k == r) {
                        Some((_, c)) => *c += 1,
                        None => counts.push((r.clone(), 1)),
                    }
                }
                let mut best: Option<&(String, usize)> = None;
                for c in &counts {
                    if best.is_none_or(|b| c.1 > b.1) {
                        best = Some(c);
                    }
                }
                best.map(|b| vec![b.0.clone()]).unwrap_or_default()
            }
            "lowercase" => cur.iter().map(|r| r.to_lowercase()).collect(),
            "uppercase" => cur.iter().map(|r| r.to_uppercase()).collect(),
            other => bail!("filter function `{other}` is not supported"),
        };
    }
    Ok(cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(f: &str, p: Option<&str>, g: Option<i64>) -> FilterStep {
        FilterStep {
            function: f.into(),
            regex_pattern: p.map(String::from),
            group_select: g,
            fallback: None,
        }
    }

    #[test]
    fn regex_like_lm_eval() {
        // Python: re.findall(r"(-?[0-9]+)", "a 12 b -3") == ['12', '-3']; [0] → '12', [-1] → '-3'.
        let r = vec!["a 12 b -3".to_string()];
        assert_eq!(
            apply(&[step("regex", Some("(-?[0-9]+)"), None)], &r).unwrap(),
            vec!["12"]
        );
        assert_eq!(
            apply(&[step("regex", Some("(-?[0-9]+)"), Some(-1))], &r).unwrap(),
            vec!["-3"]
        );
        // No match → fallback.
        assert_eq!(
            apply(&[step("regex", Some("(x+)"), None)], &r).unwrap(),
            vec!["[invalid]"]
        );
        // Two groups: findall gives tuples, the first non-empty group wins: ('', '7').
        assert_eq!(
            apply(
                &[step("regex", Some("(a)?=(\\d)"), None)],
                &["=7".to_string()]
            )
            .unwrap(),
            vec!["7"]
        );
        // The default pattern (GSM8K's "#### 42").
        assert_eq!(
            apply(&[step("regex", None, None)], &["so #### 42".to_string()]).unwrap(),
            vec!["42"]
        );
    }

    #[test]
    fn vote_and_first() {
        let r: Vec<String> = ["b", "a", "a", "b", "c"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        // Counter.most_common(1) on a tie (a: 2, b: 2) keeps the first inserted: "b".
        assert_eq!(
            apply(&[step("majority_vote", None, None)], &r).unwrap(),
            vec!["b"]
        );
        assert_eq!(
            apply(&[step("take_first", None, None)], &r).unwrap(),
            vec!["b"]
        );
        assert!(check_step(&step("nope", None, None)).is_err());
        assert!(check_step(&step("regex", Some("(?<=a)b"), None)).is_err());
    }
}
