//! `gradus report RUN1 RUN2 ...`: one page comparing run directories — each metric they share as
//! one plot with a line per run, the last logged value of every metric side by side, and the
//! settings in which their resolved configs differ. Self-contained HTML like `report.html`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use gradus_tensor::{Error, Result};
use serde_json::{Map, Value};

use crate::metrics::{read_metrics, series, METRICS_FILE};
use crate::report::{escape, flatten_json, fmt_value, svg_line_plot, Axes, Series, COLORS, STYLE};

/// One run as the comparison sees it.
struct Run {
    name: String,
    rows: Vec<Map<String, Value>>,
    config: BTreeMap<String, String>,
}

fn load(dir: &Path) -> Result<Run> {
    let mpath = dir.join(METRICS_FILE);
    if !mpath.is_file() {
        return Err(Error::format(
            dir,
            format!("not a run directory: no {METRICS_FILE}"),
        ));
    }
    let rows = read_metrics(&mpath)?;
    let cpath = dir.join(crate::rundir::CONFIG_FILE);
    let mut config = BTreeMap::new();
    if let Ok(text) = std::fs::read_to_string(&cpath) {
        let v: toml::Value =
            toml::from_str(&text).map_err(|e| Error::format(&cpath, e.to_string()))?;
        let j = serde_json::to_value(v).map_err(|e| Error::format(&cpath, e.to_string()))?;
        let mut flat = vec![];
        flatten_json("", &j, &mut flat);
        config.extend(flat);
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string());
    Ok(Run { name, rows, config })
}

/// Metric keys to plot: the numeric ones (not `step`) logged by at least two runs, or by the only
/// run; `only` (if given) instead.
fn plotted_keys(runs: &[Run], only: Option<&[String]>) -> Vec<String> {
    if let Some(k) = only {
        return k.to_vec();
    }
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for r in runs {
        let keys: BTreeSet<&str> = r
            .rows
            .iter()
            .flat_map(|row| row.iter())
            .filter(|(k, v)| k.as_str() != "step" && v.is_number())
            .map(|(k, _)| k.as_str())
            .collect();
        for k in keys {
            *count.entry(k).or_default() += 1;
        }
    }
    let need = runs.len().min(2);
    let mut keys: Vec<String> = count
        .into_iter()
        .filter(|(_, n)| *n >= need)
        .map(|(k, _)| k.to_string())
        .collect();
    // What a reader looks at first: the losses, then the rest in name order.
    keys.sort_by_key(|k| (!matches!(k.as_str(), "train/loss" | "val/loss"), k.clone()));
    keys
}

/// The last non-null value of `key` in `rows`, formatted for a table.
fn last_value(rows: &[Map<String, Value>], key: &str) -> Option<String> {
    rows.iter().rev().find_map(|r| match r.get(key)? {
        Value::Number(n) => n.as_f64().map(fmt_value),
        Value::String(s) => Some(s.clone()),
        _ => None,
    })
}

/// The comparison page of `dirs` (run directories with `metrics.jsonl`). `only`: plot these
/// metric keys instead of every one the runs share. Errors name a directory that is not a run.
pub fn compare_runs(dirs: &[PathBuf], only: Option<&[String]>) -> Result<String> {
    if dirs.is_empty() {
        return Err(Error::msg("give at least one run directory"));
    }
    let runs: Vec<Run> = dirs.iter().map(|d| load(d)).collect::<Result<_>>()?;
    let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
    let title = format!("Comparison: {}", names.join(" vs "));
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    let legend = |h: &mut String| {
        h.push_str("<figcaption class=\"legend\">");
        for (i, n) in names.iter().enumerate() {
            let _ = write!(
                h,
                "<span><b style=\"background:{}\"></b>{}</span>",
                COLORS[i % COLORS.len()],
                escape(n)
            );
        }
        h.push_str("</figcaption>");
    };
    let keys = plotted_keys(&runs, only);
    for k in &keys {
        let ser: Vec<Series> = runs
            .iter()
            .map(|r| Series {
                name: r.name.clone(),
                points: series(&r.rows, k)
                    .into_iter()
                    .map(|(s, v)| (s as f64, v))
                    .collect(),
            })
            .collect();
        let _ = writeln!(h, "<h2>{}</h2>", escape(k));
        let axes = Axes {
            log_y: false,
            x_label: "step",
            y_label: k.rsplit('/').next().unwrap_or(k),
            // Per-step training curves are noisy; learning rates and evaluations are not.
            smooth: k.starts_with("train/") && k != "train/lr" && k != "train/tokens_seen",
        };
        match svg_line_plot(&ser, &axes) {
            Some(svg) => {
                h.push_str("<figure>");
                h.push_str(&svg);
                legend(&mut h);
                h.push_str("</figure>\n");
            }
            None => {
                let _ = writeln!(h, "<p class=\"empty\">no data for {}</p>", escape(k));
            }
        }
    }
    // Last values side by side.
    let mut all: BTreeSet<String> = BTreeSet::new();
    for r in &runs {
        for row in &r.rows {
            all.extend(row.keys().filter(|k| *k != "step").cloned());
        }
    }
    h.push_str("<h2>Last logged values</h2>\n<table>\n<tr><td>metric</td>");
    for n in &names {
        let _ = write!(h, "<td>{}</td>", escape(n));
    }
    h.push_str("</tr>\n<tr><td>step</td>");
    for r in &runs {
        let _ = write!(
            h,
            "<td>{}</td>",
            last_value(&r.rows, "step").unwrap_or_default()
        );
    }
    h.push_str("</tr>\n");
    for k in &all {
        let _ = write!(h, "<tr><td>{}</td>", escape(k));
        for r in &runs {
            let _ = write!(
                h,
                "<td>{}</td>",
                escape(&last_value(&r.rows, k).unwrap_or_default())
            );
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n");
    // Settings that differ.
    let keys: BTreeSet<&String> = runs.iter().flat_map(|r| r.config.keys()).collect();
    let differ: Vec<&String> = keys
        .into_iter()
        .filter(|k| {
            let vals: BTreeSet<Option<&String>> = runs.iter().map(|r| r.config.get(*k)).collect();
            vals.len() > 1
        })
        .collect();
    h.push_str("<h2>Settings that differ</h2>\n");
    if differ.is_empty() {
        h.push_str("<p class=\"empty\">the resolved configs agree</p>\n");
    } else {
        h.push_str("<table>\n<tr><td>setting</td>");
        for n in &names {
            let _ = write!(h, "<td>{}</td>", escape(n));
        }
        h.push_str("</tr>\n");
        for k in differ {
            let _ = write!(h, "<tr><td>{}</td>", escape(k));
            for r in &runs {
                let v = r.config.get(k).map(String::as_str).unwrap_or("—");
                let _ = write!(h, "<td>{}</td>", escape(v));
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</table>\n");
    }
    h.push_str("</body></html>\n");
    Ok(h)
}
