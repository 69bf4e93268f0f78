//! The training-map report: one self-contained HTML page (no scripts, no external files) with the
//! state graph drawn as hand-written SVG and the tables a reader needs.
//!
//! States sit on a circle in the order of their mean position in the runs (earliest at the top,
//! clockwise). Node area ∝ occupancy; red = detour, blue = obligatory, grey = optional, white =
//! unvisited. Edge i → j is a curved arrow whose width grows with the transition count, labelled
//! with the count; i → j and j → i bend to opposite sides so both stay visible.

#![allow(clippy::needless_range_loop)]

use std::fmt::Write;

use crate::map::{StateKind, TrainingMap};
use crate::select::SelectionRow;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "—".to_string(), |x| format!("{x:.prec$}"))
}

fn colour(kind: StateKind) -> &'static str {
    match kind {
        StateKind::Detour => "#d62728",
        StateKind::Obligatory => "#1f77b4",
        StateKind::Optional => "#9a9a9a",
        StateKind::Unvisited => "#ffffff",
    }
}

/// The state graph as an SVG element.
pub fn state_graph_svg(map: &TrainingMap) -> String {
    let k = map.states.len();
    let (w, h) = (640.0f64, 520.0f64);
    let (cx, cy, radius) = (w / 2.0, h / 2.0, 190.0f64);
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&a, &b| {
        map.states[a]
            .mean_position
            .total_cmp(&map.states[b].mean_position)
    });
    let mut pos = vec![(cx, cy); k];
    for (slot, &s) in order.iter().enumerate() {
        let a = -std::f64::consts::FRAC_PI_2
            + 2.0 * std::f64::consts::PI * slot as f64 / k.max(1) as f64;
        pos[s] = if k == 1 {
            (cx, cy)
        } else {
            (cx + radius * a.cos(), cy + radius * a.sin())
        };
    }
    let node_r = |s: usize| 14.0 + 30.0 * map.states[s].occupancy.sqrt();
    let max_count = map.transitions.iter().map(|t| t.count).max().unwrap_or(1) as f64;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif"><defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#444"/></marker></defs>"##
    );
    for t in &map.transitions {
        let (x1, y1) = pos[t.from];
        let (x2, y2) = pos[t.to];
        let (dx, dy) = (x2 - x1, y2 - y1);
        let len = (dx * dx + dy * dy).sqrt().max(1e-9);
        let (ux, uy) = (dx / len, dy / len);
        // Start and end on the node rims; bend to the left of the direction of travel.
        let (sx, sy) = (x1 + ux * node_r(t.from), y1 + uy * node_r(t.from));
        let (ex, ey) = (
            x2 - ux * (node_r(t.to) + 2.0),
            y2 - uy * (node_r(t.to) + 2.0),
        );
        let bend = 0.18 * len;
        let (mx, my) = ((sx + ex) / 2.0 - uy * bend, (sy + ey) / 2.0 + ux * bend);
        let width = 1.0 + 5.0 * t.count as f64 / max_count;
        let tip: String = t
            .top_shifts
            .iter()
            .map(|(m, v)| format!("{m} {v:+.2}"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = write!(
            svg,
            r##"<path d="M{sx:.1},{sy:.1} Q{mx:.1},{my:.1} {ex:.1},{ey:.1}" fill="none" stroke="#444" stroke-opacity="0.7" stroke-width="{width:.2}" marker-end="url(#arrow)"><title>S{} → S{}: {} times in {} runs; {}</title></path>"##,
            t.from,
            t.to,
            t.count,
            t.runs,
            esc(&tip)
        );
        let (lx, ly) = (
            0.25 * sx + 0.5 * mx + 0.25 * ex,
            0.25 * sy + 0.5 * my + 0.25 * ey,
        );
        let _ = write!(
            svg,
            r##"<text x="{lx:.1}" y="{ly:.1}" font-size="12" text-anchor="middle" fill="#222" stroke="#fff" stroke-width="3" paint-order="stroke">{}</text>"##,
            t.count
        );
    }
    for s in 0..k {
        let (x, y) = pos[s];
        let st = &map.states[s];
        let _ = write!(
            svg,
            r##"<circle cx="{x:.1}" cy="{y:.1}" r="{:.1}" fill="{}" fill-opacity="0.85" stroke="#222" stroke-width="1.5"><title>S{s}: {:?}, occupancy {:.1}%, visited by {} runs</title></circle><text x="{x:.1}" y="{:.1}" font-size="14" font-weight="bold" text-anchor="middle" fill="{}">S{s}</text>"##,
            node_r(s),
            colour(st.kind),
            st.kind,
            100.0 * st.occupancy,
            st.runs_visiting,
            y + 5.0,
            if st.kind == StateKind::Unvisited || st.kind == StateKind::Optional {
                "#000"
            } else {
                "#fff"
            }
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The whole report page. `selection` is the model-selection table (empty when the number of states
/// was given); `notes` are free lines shown under the title (inputs, settings, warnings).
pub fn html(
    map: &TrainingMap,
    selection: &[SelectionRow],
    chosen_states: usize,
    notes: &[String],
) -> String {
    let mut h = String::new();
    h.push_str("<!doctype html><html><head><meta charset=\"utf-8\"><title>gradus training map</title><style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}td.l{text-align:left}.detour{color:#d62728;font-weight:bold}.obligatory{color:#1f77b4;font-weight:bold}</style></head><body>");
    let _ = write!(
        h,
        "<h1>Training map: {} runs, {chosen_states} states</h1>",
        map.runs.len()
    );
    h.push_str("<p>Hidden-Markov-model view of training (Hu et al. 2023): each checkpoint's weight statistics are z-scored within its run, a Gaussian HMM assigns every checkpoint a latent state, and the graph keeps the transitions that runs actually took.</p><ul>");
    for n in notes {
        let _ = write!(h, "<li>{}</li>", esc(n));
    }
    h.push_str("</ul><h2>State graph</h2>");
    h.push_str(&state_graph_svg(map));
    h.push_str("<p>Node area ∝ occupancy; <span class=\"detour\">red = detour</span>, <span class=\"obligatory\">blue = obligatory</span>, grey = optional. Edge labels are transition counts over all runs.</p>");
    let _ = write!(h, "<h2>States</h2><table><tr><th>state</th><th>kind</th><th>occupancy</th><th>visit frequency</th><th>runs</th><th>dwell (checkpoints)</th><th>dwell (steps)</th><th>mean position</th><th>r (visited, convergence step)</th><th>p</th><th>mean conv. step visited</th><th>skipped</th></tr>");
    for s in &map.states {
        let class = match s.kind {
            StateKind::Detour => "detour",
            StateKind::Obligatory => "obligatory",
            _ => "",
        };
        let _ = write!(
            h,
            "<tr><td>S{}</td><td class=\"l {class}\">{:?}</td><td>{:.1}%</td><td>{:.2}</td><td>{}</td><td>{:.1}</td><td>{:.0}</td><td>{:.2}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            s.state,
            s.kind,
            100.0 * s.occupancy,
            s.visit_frequency,
            s.runs_visiting,
            s.dwell_checkpoints,
            s.dwell_steps,
            s.mean_position,
            opt(s.r, 3),
            opt(s.p, 4),
            opt(s.mean_convergence_visited, 0),
            opt(s.mean_convergence_skipped, 0)
        );
    }
    let _ = write!(h, "</table><p>Detour: r &gt; 0 and p &lt; {} (two-sided t-test of Pearson r, n − 2 degrees of freedom). Obligatory: visited by every run (r undefined).</p>", map.alpha);
    h.push_str("<h2>Transitions</h2><table><tr><th>from</th><th>to</th><th>count</th><th>runs</th><th class=\"l\">largest shifts of z-scored means (to − from)</th></tr>");
    for t in &map.transitions {
        let shifts: String = t
            .top_shifts
            .iter()
            .map(|(m, v)| format!("{} {v:+.2}", esc(m)))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = write!(
            h,
            "<tr><td>S{}</td><td>S{}</td><td>{}</td><td>{}</td><td class=\"l\">{shifts}</td></tr>",
            t.from, t.to, t.count, t.runs
        );
    }
    h.push_str("</table>");
    if !selection.is_empty() {
        h.push_str("<h2>Model selection</h2><table><tr><th>states</th><th>parameters</th><th>train log-lik</th><th>held-out log-lik</th><th>AIC</th><th>BIC</th><th>converged</th></tr>");
        for r in selection {
            let mark = if r.states == chosen_states {
                " ◀"
            } else {
                ""
            };
            let _ = write!(
                h,
                "<tr><td>{}{mark}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{}</td></tr>",
                r.states,
                r.n_params,
                r.train_loglik,
                opt(r.heldout_loglik, 1),
                r.aic,
                r.bic,
                r.converged
            );
        }
        h.push_str("</table><p>Chosen: lowest BIC on the training runs (◀).</p>");
    }
    h.push_str("<h2>Runs</h2><table><tr><th class=\"l\">run</th><th>convergence step</th><th class=\"l\">state path (state × checkpoints)</th></tr>");
    for r in &map.runs {
        let mut segs: Vec<(usize, usize)> = Vec::new();
        for &s in &r.states {
            match segs.last_mut() {
                Some((p, n)) if *p == s => *n += 1,
                _ => segs.push((s, 1)),
            }
        }
        let path: String = segs
            .iter()
            .map(|(s, n)| format!("S{s}×{n}"))
            .collect::<Vec<_>>()
            .join(" → ");
        let _ = write!(
            h,
            "<tr><td class=\"l\">{}</td><td>{}</td><td class=\"l\">{path}</td></tr>",
            esc(&r.name),
            r.convergence.map_or("—".into(), |c| c.to_string())
        );
    }
    h.push_str("</table></body></html>\n");
    h
}
