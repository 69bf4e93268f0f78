//! `report.html`: one self-contained page (no external JS, CSS or fonts) that a person reads after a
//! run: line plots of metrics from `metrics.jsonl` drawn as inline SVG by hand, key/value tables
//! (config, final metrics) and text/pre blocks (e.g. samples before and after training).
//!
//! Plot geometry is fixed so tests can derive coordinates by hand: the SVG is [`WIDTH`] x
//! [`HEIGHT`] and the plot box spans x in `[PLOT_LEFT, PLOT_RIGHT]`, y in `[PLOT_TOP, PLOT_BOTTOM]`.
//! The smallest step maps to `PLOT_LEFT`, the largest to `PLOT_RIGHT`; the smallest value to
//! `PLOT_BOTTOM`, the largest to `PLOT_TOP` (no padding). With `log_y`, values are placed by
//! `log10` and non-positive values are left out. Each series is one `<polyline>` with one point
//! per step that has a finite value, coordinates printed with two decimals.
//!
//! Noisy training curves are smoothed as TensorBoard smooths them (an exponential moving average,
//! debiased: [`ema`]) when [`Axes::smooth`] is set and a series has at least [`SMOOTH_MIN_POINTS`]
//! points: the raw curve is then drawn faint (`data-raw`, 25% opacity) under the smoothed one
//! (`data-series`), and the y-range is the raw curve's, so spikes stay visible. Each plot names its
//! axes: x below, y rotated on the left.
//!
//! Samples over steps ([`Section::Samples`]): every metrics row holding `samples/<i>` strings
//! (written by `[eval] samples` during training) becomes one row of a table per prompt, so a reader
//! sees what the model answered at each evaluation step.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use gradus_tensor::Result;
use serde_json::{Map, Value};

use crate::metrics::{read_metrics, series, METRICS_FILE};

/// The report's file name inside a run directory.
pub const REPORT_FILE: &str = "report.html";

pub const WIDTH: f64 = 640.0;
pub const HEIGHT: f64 = 300.0;
pub const PLOT_LEFT: f64 = 60.0;
pub const PLOT_RIGHT: f64 = 620.0;
pub const PLOT_TOP: f64 = 20.0;
pub const PLOT_BOTTOM: f64 = 260.0;

/// Series colours, in order (Okabe-Ito, readable by colour-blind readers).
pub(crate) const COLORS: [&str; 7] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000",
];

/// A line plot of metric keys against `step`.
#[derive(Clone, Debug, PartialEq)]
pub struct PlotSpec {
    pub title: String,
    /// Metric keys, one series each (`train/loss`, `eval/loss`).
    pub keys: Vec<String>,
    pub log_y: bool,
    /// Draw long series smoothed over their faint raw curve (training curves).
    pub smooth: bool,
}

/// How a plot's axes and lines are drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Axes<'a> {
    pub log_y: bool,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub smooth: bool,
}

/// Series with fewer points are drawn as they are, even when smoothing is asked for.
pub const SMOOTH_MIN_POINTS: usize = 30;

/// The smoothing weight for a series of `n` points: none below [`SMOOTH_MIN_POINTS`], then
/// `1 - 20/n` (a window of about a twentieth of the run), at most 0.8 (about 5 points, so the
/// smoothed curve lags a falling loss by little).
pub fn smoothing_weight(n: usize) -> f64 {
    if n < SMOOTH_MIN_POINTS {
        0.0
    } else {
        (1.0 - 20.0 / n as f64).min(0.8)
    }
}

/// TensorBoard's smoothing: `m_i = w·m_{i-1} + (1-w)·y_i` from `m_{-1} = 0`, divided by
/// `1 - w^(i+1)` so the first points are not pulled towards zero. `w = 0` returns `ys`.
pub fn ema(ys: &[f64], w: f64) -> Vec<f64> {
    let mut m = 0.0;
    let mut wk = 1.0;
    ys.iter()
        .map(|&y| {
            m = w * m + (1.0 - w) * y;
            wk *= w;
            m / (1.0 - wk)
        })
        .collect()
}

/// The y-axis title of a plot of `keys`: their shared last path part (`train/loss`, `val/loss`
/// → `loss`), else `fallback`.
pub fn y_label_of(keys: &[String], fallback: &str) -> String {
    let last = |k: &String| k.rsplit('/').next().unwrap_or(k).to_string();
    match keys.first().map(last) {
        Some(l) if keys.iter().all(|k| last(k) == l) => l,
        _ => fallback.to_string(),
    }
}

/// One part of the report, in page order.
#[derive(Clone, Debug, PartialEq)]
pub enum Section {
    Plot(PlotSpec),
    /// Two-column table of keys and values.
    Table {
        title: String,
        rows: Vec<(String, String)>,
    },
    /// A paragraph of text (escaped; blank lines separate paragraphs).
    Text {
        title: String,
        body: String,
    },
    /// Preformatted text (escaped), e.g. generated samples.
    Pre {
        title: String,
        body: String,
    },
    /// The `samples/<i>` strings of the metrics rows: a table per sample index, one row per step.
    Samples {
        title: String,
    },
    /// A line under the page title (the run's key settings).
    Subtitle(String),
}

impl Section {
    pub fn plot(title: &str, keys: &[&str]) -> Self {
        Section::Plot(PlotSpec {
            title: title.into(),
            keys: keys.iter().map(|k| k.to_string()).collect(),
            log_y: false,
            smooth: false,
        })
    }

    /// A training curve: log-y, smoothed over its faint raw curve when long.
    pub fn training_plot(title: &str, keys: &[&str]) -> Self {
        Section::Plot(PlotSpec {
            title: title.into(),
            keys: keys.iter().map(|k| k.to_string()).collect(),
            log_y: true,
            smooth: true,
        })
    }

    pub fn log_plot(title: &str, keys: &[&str]) -> Self {
        Section::Plot(PlotSpec {
            title: title.into(),
            keys: keys.iter().map(|k| k.to_string()).collect(),
            log_y: true,
            smooth: false,
        })
    }

    pub fn table(title: &str, rows: Vec<(String, String)>) -> Self {
        Section::Table {
            title: title.into(),
            rows,
        }
    }

    /// A table of a JSON value flattened to dotted keys (`optimizer.betas = [0.9,0.95]`); use
    /// `serde_json::to_value(&config)` for a config struct.
    pub fn table_from_json(title: &str, value: &Value) -> Self {
        let mut rows = Vec::new();
        flatten_json("", value, &mut rows);
        Section::Table {
            title: title.into(),
            rows,
        }
    }

    /// A table of the last value of every metric key (and the last step).
    pub fn final_metrics(title: &str, rows: &[Map<String, Value>]) -> Self {
        Section::Table {
            title: title.into(),
            rows: final_metrics(rows),
        }
    }

    pub fn text(title: &str, body: &str) -> Self {
        Section::Text {
            title: title.into(),
            body: body.into(),
        }
    }

    pub fn pre(title: &str, body: &str) -> Self {
        Section::Pre {
            title: title.into(),
            body: body.into(),
        }
    }
}

pub(crate) fn flatten_json(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten_json(&key, v, out);
            }
        }
        Value::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

/// `(key, last value)` for every key of the rows, sorted by key, `step` first.
pub fn final_metrics(rows: &[Map<String, Value>]) -> Vec<(String, String)> {
    let mut last: std::collections::BTreeMap<&str, &Value> = Default::default();
    for r in rows {
        for (k, v) in r {
            if !v.is_null() {
                last.insert(k.as_str(), v);
            }
        }
    }
    let fmt = |v: &Value| match v {
        Value::Number(n) => n.as_f64().map(fmt_value).unwrap_or_else(|| n.to_string()),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut out: Vec<(String, String)> = Vec::new();
    if let Some(s) = last.remove("step") {
        out.push(("step".into(), fmt(s)));
    }
    out.extend(last.into_iter().map(|(k, v)| (k.to_string(), fmt(v))));
    out
}

/// A value for a table: integers as integers, others with 6 significant digits.
pub(crate) fn fmt_value(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else if x != 0.0 && (x.abs() < 1e-3 || x.abs() >= 1e6) {
        format!("{x:.5e}")
    } else {
        let s = format!("{x:.6}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Escapes text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One line of a plot: `(x, y)` points in x order.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// "Nice" tick positions (1, 2 or 5 times a power of ten) inside `[lo, hi]`, about `n` of them.
fn nice_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return vec![lo];
    }
    let raw = (hi - lo) / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    // A small slack so that ends which are multiples of `step` survive rounding (1.2 / 0.1 = 11.99..).
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// A tick label: short decimal or exponent notation.
fn tick_label(x: f64) -> String {
    if x == 0.0 {
        return "0".into();
    }
    let a = x.abs();
    if !(1e-3..1e5).contains(&a) {
        let s = format!("{x:.1e}");
        return s.replace(".0e", "e");
    }
    let s = format!("{x:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Maps `v` from `[lo, hi]` onto `[a, b]`; the middle when the range is empty.
fn map(v: f64, lo: f64, hi: f64, a: f64, b: f64) -> f64 {
    if hi > lo {
        a + (v - lo) / (hi - lo) * (b - a)
    } else {
        (a + b) / 2.0
    }
}

/// An inline SVG line plot of `series` (see the module docs for the geometry). `None` when no
/// series has a point to draw.
pub fn svg_line_plot(series: &[Series], axes: &Axes) -> Option<String> {
    let Axes {
        log_y,
        x_label,
        y_label,
        smooth,
    } = *axes;
    let ty = |y: f64| if log_y { y.log10() } else { y };
    let drawn: Vec<(usize, Vec<(f64, f64)>)> = series
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let pts = s
                .points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite() && (!log_y || *y > 0.0))
                .map(|&(x, y)| (x, ty(y)))
                .collect::<Vec<_>>();
            (i, pts)
        })
        .filter(|(_, p)| !p.is_empty())
        .collect();
    if drawn.is_empty() {
        return None;
    }
    let all = drawn.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for &(x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    let px = |x: f64| map(x, x0, x1, PLOT_LEFT, PLOT_RIGHT);
    let py = |y: f64| map(y, y0, y1, PLOT_BOTTOM, PLOT_TOP);

    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">"#
    );
    // Grid and tick labels.
    let yticks: Vec<(f64, String)> = if log_y && y1 - y0 >= 1.0 {
        let step = nice_ticks(0.0, y1 - y0, 5)
            .get(1)
            .copied()
            .unwrap_or(1.0)
            .max(1.0)
            .round();
        let first = (y0 / step).ceil() as i64;
        let last = (y1 / step).floor() as i64;
        (first..=last)
            .map(|i| (i as f64 * step, tick_label(10f64.powf(i as f64 * step))))
            .collect()
    } else if log_y {
        let (lo, hi) = (10f64.powf(y0), 10f64.powf(y1));
        nice_ticks(lo, hi, 4)
            .into_iter()
            .filter(|v| *v > 0.0)
            .map(|v| (v.log10(), tick_label(v)))
            .collect()
    } else {
        nice_ticks(y0, y1, 5)
            .into_iter()
            .map(|v| (v, tick_label(v)))
            .collect()
    };
    for (v, label) in &yticks {
        let y = py(*v);
        let _ = write!(
            s,
            r##"<line x1="{PLOT_LEFT}" y1="{y:.2}" x2="{PLOT_RIGHT}" y2="{y:.2}" stroke="#e4e4e4"/><text x="{:.2}" y="{:.2}" text-anchor="end">{}</text>"##,
            PLOT_LEFT - 6.0,
            y + 4.0,
            escape(label)
        );
    }
    for v in nice_ticks(x0, x1, 6) {
        let x = px(v);
        let _ = write!(
            s,
            r##"<line x1="{x:.2}" y1="{PLOT_BOTTOM}" x2="{x:.2}" y2="{:.2}" stroke="#444"/><text x="{x:.2}" y="{:.2}" text-anchor="middle">{}</text>"##,
            PLOT_BOTTOM + 5.0,
            PLOT_BOTTOM + 18.0,
            escape(&tick_label(v))
        );
    }
    // Axes box, x label below, y label rotated on the left.
    let ymid = (PLOT_TOP + PLOT_BOTTOM) / 2.0;
    let _ = write!(
        s,
        r##"<rect x="{PLOT_LEFT}" y="{PLOT_TOP}" width="{}" height="{}" fill="none" stroke="#444"/><text x="{:.2}" y="{:.2}" text-anchor="middle">{}</text><text x="12" y="{ymid:.2}" text-anchor="middle" transform="rotate(-90 12 {ymid:.2})">{}</text>"##,
        PLOT_RIGHT - PLOT_LEFT,
        PLOT_BOTTOM - PLOT_TOP,
        (PLOT_LEFT + PLOT_RIGHT) / 2.0,
        HEIGHT - 6.0,
        escape(x_label),
        escape(y_label)
    );
    let line = |pts: &[(f64, f64)]| -> String {
        pts.iter()
            .map(|&(x, y)| format!("{:.2},{:.2}", px(x), py(y)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    for (i, pts) in &drawn {
        let color = COLORS[i % COLORS.len()];
        let w = if smooth {
            smoothing_weight(pts.len())
        } else {
            0.0
        };
        let shown = if w > 0.0 {
            let _ = write!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1" stroke-opacity="0.25" data-raw="{}" points="{}"/>"#,
                escape(&series[*i].name),
                line(pts)
            );
            // Smoothed in the plotted space (log10 values on a log axis), as TensorBoard does.
            let ys: Vec<f64> = pts.iter().map(|p| p.1).collect();
            pts.iter().zip(ema(&ys, w)).map(|(p, y)| (p.0, y)).collect()
        } else {
            pts.clone()
        };
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" data-series="{}" points="{}"/>"#,
            escape(&series[*i].name),
            line(&shown)
        );
        if pts.len() == 1 {
            let (x, y) = pts[0];
            let _ = write!(
                s,
                r#"<circle cx="{:.2}" cy="{:.2}" r="2.5" fill="{color}"/>"#,
                px(x),
                py(y)
            );
        }
    }
    s.push_str("</svg>");
    Some(s)
}

pub(crate) const STYLE: &str = "body{font-family:sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}\
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}\
table{border-collapse:collapse}td{border:1px solid #ddd;padding:2px 8px;font-family:monospace}\
pre{background:#f6f6f6;padding:8px;overflow-x:auto;white-space:pre-wrap}\
.legend span{margin-right:1.2em;font-size:.9em;white-space:nowrap;display:inline-block}.subtitle{color:#555;margin-top:-.6em}.legend b{display:inline-block;width:14px;height:3px;vertical-align:middle;margin-right:4px}\
.empty{color:#888}";

/// The report page for `sections`, with plots drawn from metric `rows`.
pub fn render_report(title: &str, sections: &[Section], rows: &[Map<String, Value>]) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>\n<h1>{}</h1>\n",
        escape(title),
        escape(title)
    );
    for sec in sections {
        match sec {
            Section::Plot(p) => {
                let _ = writeln!(h, "<h2>{}</h2>", escape(&p.title));
                let ser: Vec<Series> = p
                    .keys
                    .iter()
                    .map(|k| Series {
                        name: k.clone(),
                        points: series(rows, k)
                            .into_iter()
                            .map(|(s, v)| (s as f64, v))
                            .collect(),
                    })
                    .collect();
                let y_label = y_label_of(&p.keys, &p.title);
                let axes = Axes {
                    log_y: p.log_y,
                    x_label: "step",
                    y_label: &y_label,
                    smooth: p.smooth,
                };
                match svg_line_plot(&ser, &axes) {
                    Some(svg) => {
                        h.push_str("<figure>");
                        h.push_str(&svg);
                        h.push_str("<figcaption class=\"legend\">");
                        for (i, k) in p.keys.iter().enumerate() {
                            let _ = write!(
                                h,
                                "<span><b style=\"background:{}\"></b>{}</span>",
                                COLORS[i % COLORS.len()],
                                escape(k)
                            );
                        }
                        if p.log_y {
                            h.push_str("<span>(log scale)</span>");
                        }
                        if p.smooth && ser.iter().any(|s| s.points.len() >= SMOOTH_MIN_POINTS) {
                            h.push_str("<span>(smoothed; raw curve faint)</span>");
                        }
                        h.push_str("</figcaption></figure>\n");
                    }
                    None => {
                        let _ = writeln!(
                            h,
                            "<p class=\"empty\">no data for {}</p>",
                            escape(&p.keys.join(", "))
                        );
                    }
                }
            }
            Section::Table { title, rows } => {
                let _ = writeln!(h, "<h2>{}</h2>\n<table>", escape(title));
                for (k, v) in rows {
                    let _ = writeln!(h, "<tr><td>{}</td><td>{}</td></tr>", escape(k), escape(v));
                }
                h.push_str("</table>\n");
            }
            Section::Text { title, body } => {
                let _ = writeln!(h, "<h2>{}</h2>", escape(title));
                for para in body.split("\n\n").filter(|p| !p.trim().is_empty()) {
                    let _ = writeln!(h, "<p>{}</p>", escape(para.trim()));
                }
            }
            Section::Pre { title, body } => {
                let _ = writeln!(h, "<h2>{}</h2>\n<pre>{}</pre>", escape(title), escape(body));
            }
            Section::Subtitle(text) => {
                let _ = writeln!(h, "<p class=\"subtitle\">{}</p>", escape(text));
            }
            Section::Samples { title } => {
                let tables = samples_over_steps(rows);
                if !tables.is_empty() {
                    let _ = writeln!(h, "<h2>{}</h2>", escape(title));
                }
                for (key, steps) in tables {
                    let _ = writeln!(
                        h,
                        "<table class=\"samples\"><tr><th>step</th><th>{}</th></tr>",
                        escape(&key)
                    );
                    for (step, text) in steps {
                        let _ = writeln!(
                            h,
                            "<tr><td>{step}</td><td><pre>{}</pre></td></tr>",
                            escape(&text)
                        );
                    }
                    h.push_str("</table>\n");
                }
            }
        }
    }
    h.push_str("</body></html>\n");
    h
}

/// The `samples/<i>` strings of `rows` (`i` a number: what `[eval] samples` logs; other
/// `samples/…` keys belong to their recipe's own sections), per key in key order, as (step, text)
/// in step order.
pub fn samples_over_steps(rows: &[Map<String, Value>]) -> Vec<(String, Vec<(u64, String)>)> {
    let mut by_key: std::collections::BTreeMap<String, Vec<(u64, String)>> = Default::default();
    for r in rows {
        let Some(step) = crate::metrics::row_step(r) else {
            continue;
        };
        for (k, v) in r {
            let indexed = k
                .strip_prefix("samples/")
                .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()));
            if let (true, Some(t)) = (indexed, v.as_str()) {
                by_key
                    .entry(k.clone())
                    .or_default()
                    .push((step, t.to_string()));
            }
        }
    }
    by_key
        .into_iter()
        .map(|(k, mut v)| {
            v.sort_by_key(|s| s.0);
            (k, v)
        })
        .collect()
}

/// Writes `run_dir/report.html` (atomically), plotting from `run_dir/metrics.jsonl` if it exists.
pub fn write_report(run_dir: &Path, title: &str, sections: &[Section]) -> Result<PathBuf> {
    let mpath = run_dir.join(METRICS_FILE);
    let rows = if mpath.exists() {
        read_metrics(&mpath)?
    } else {
        Vec::new()
    };
    let html = render_report(title, sections, &rows);
    let path = run_dir.join(REPORT_FILE);
    crate::checkpoint::write_bytes_atomic(&path, html.as_bytes())?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ticks_are_round_and_inside() {
        assert_eq!(
            nice_ticks(0.0, 10.0, 5),
            vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
        );
        // range 0.23 / 4 = 0.0575 -> step 0.1: 1.0, 1.1, 1.2 inside [0.97, 1.2]
        let t = nice_ticks(0.97, 1.2, 4);
        assert_eq!(t.len(), 3);
        assert!(
            (t[0] - 1.0).abs() < 1e-12 && (t[2] - 1.2).abs() < 1e-12,
            "{t:?}"
        );
    }

    #[test]
    fn ema_is_tensorboards_debiased_average() {
        // w = 0.5 over [1, 3]: m0 = 0.5·1 = 0.5, debiased 0.5 / (1 − 0.5) = 1;
        // m1 = 0.5·0.5 + 0.5·3 = 1.75, debiased 1.75 / (1 − 0.25) = 7/3.
        let m = ema(&[1.0, 3.0], 0.5);
        assert!(
            (m[0] - 1.0).abs() < 1e-12 && (m[1] - 7.0 / 3.0).abs() < 1e-12,
            "{m:?}"
        );
        assert_eq!(ema(&[2.0, 5.0], 0.0), vec![2.0, 5.0]);
        assert_eq!(smoothing_weight(SMOOTH_MIN_POINTS - 1), 0.0);
        assert!((smoothing_weight(50) - 0.6).abs() < 1e-12);
        assert_eq!(smoothing_weight(10_000), 0.8);
    }

    #[test]
    fn long_training_curves_are_smoothed_over_their_faint_raw_curve() {
        // 200 points alternating 1 and 3: the raw curve spans the whole box (y 260 and 20); the
        // smoothed one (w = 0.8) settles into an oscillation of (1 − w)/(1 + w) = 1/9 of it.
        let pts: Vec<(f64, f64)> = (0..200)
            .map(|i| (i as f64, if i % 2 == 0 { 1.0 } else { 3.0 }))
            .collect();
        let ser = [Series {
            name: "train/loss".into(),
            points: pts,
        }];
        let axes = Axes {
            log_y: false,
            x_label: "step",
            y_label: "loss",
            smooth: true,
        };
        let svg = svg_line_plot(&ser, &axes).unwrap();
        let ys = |attr: &str| -> Vec<f64> {
            let at = svg.find(attr).unwrap();
            let p = &svg[at..];
            let start = p.find("points=\"").unwrap() + 8;
            let pts = &p[start..start + p[start..].find('"').unwrap()];
            pts.split(' ')
                .map(|xy| xy.split_once(',').unwrap().1.parse().unwrap())
                .collect()
        };
        let (raw, smooth) = (ys("data-raw="), ys("data-series="));
        assert_eq!((raw.len(), smooth.len()), (200, 200));
        assert!(raw.contains(&20.0) && raw.contains(&260.0));
        let spread = |v: &[f64]| {
            v[100..].iter().cloned().fold(f64::MIN, f64::max)
                - v[100..].iter().cloned().fold(f64::MAX, f64::min)
        };
        assert!(spread(&smooth) < 0.15 * spread(&raw), "{smooth:?}");
        assert!(svg.contains("stroke-opacity=\"0.25\""));
        // The y title is drawn rotated.
        assert!(svg.contains("rotate(-90") && svg.contains(">loss</text>"));
        // Short series and plots that do not ask for it are drawn as they are.
        let plain = svg_line_plot(
            &ser,
            &Axes {
                smooth: false,
                ..axes
            },
        )
        .unwrap();
        assert!(!plain.contains("data-raw="));
    }

    #[test]
    fn y_titles_and_samples_over_steps() {
        let keys = |ks: &[&str]| ks.iter().map(|k| k.to_string()).collect::<Vec<_>>();
        assert_eq!(y_label_of(&keys(&["train/loss", "val/loss"]), "x"), "loss");
        assert_eq!(
            y_label_of(&keys(&["weights/a", "weights/b"]), "norms"),
            "norms"
        );
        let rows: Vec<Map<String, Value>> = [
            serde_json::json!({"step": 20, "samples/0": "b<", "train/loss": 1.0}),
            serde_json::json!({"step": 10, "samples/0": "a", "samples/1": "z", "samples/after_sft": "q"}),
            serde_json::json!({"step": 30, "train/loss": 1.0}),
        ]
        .into_iter()
        .map(|v| v.as_object().unwrap().clone())
        .collect();
        let s = samples_over_steps(&rows);
        assert_eq!(
            s,
            vec![
                (
                    "samples/0".to_string(),
                    vec![(10, "a".to_string()), (20, "b<".to_string())]
                ),
                ("samples/1".to_string(), vec![(10, "z".to_string())]),
            ]
        );
        let html = render_report("t", &[Section::Samples { title: "S".into() }], &rows);
        assert!(html.contains("<pre>b&lt;</pre>"), "{html}");
    }

    #[test]
    fn labels_and_escape() {
        assert_eq!(tick_label(0.5), "0.5");
        assert_eq!(tick_label(2.0), "2");
        assert_eq!(tick_label(1e-5), "1e-5");
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(fmt_value(3.0), "3");
        assert_eq!(fmt_value(0.125), "0.125");
    }
}
