//! report.html: self-contained, and the SVG polyline maps the data onto the plot box as derived by hand.

use std::fs;

use gradus_train::metrics::MetricsSink;
use gradus_train::report::{write_report, Section};

fn polylines(html: &str) -> Vec<(String, String)> {
    // (data-series, points) of every <polyline>.
    html.split("<polyline")
        .skip(1)
        .map(|p| {
            let attr = |name: &str| {
                let start = p.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
                p[start..start + p[start..].find('"').unwrap()].to_string()
            };
            (attr("data-series"), attr("points"))
        })
        .collect()
}

#[test]
fn report_plots_tables_and_text() {
    let run = tempfile::tempdir().unwrap();
    let mut m = MetricsSink::create(run.path()).unwrap();
    m.log(0, &[("train/loss", 3.0), ("train/lr", 1.0)]).unwrap();
    m.log(5, &[("train/loss", 1.0), ("train/lr", 10.0)])
        .unwrap();
    m.log(10, &[("train/loss", 2.0), ("train/lr", 100.0)])
        .unwrap();
    drop(m);
    let sections = vec![
        Section::plot("Loss", &["train/loss"]),
        Section::log_plot("Learning rate", &["train/lr"]),
        Section::plot("Nothing", &["eval/loss"]),
        Section::table_from_json(
            "Config",
            &serde_json::json!({"optimizer": {"lr": 0.001, "betas": [0.9, 0.95]}, "name": "tiny"}),
        ),
        Section::final_metrics(
            "Final metrics",
            &gradus_train::metrics::read_metrics(&run.path().join("metrics.jsonl")).unwrap(),
        ),
        Section::text("Notes", "first <para>\n\nsecond"),
        Section::pre("Samples", "a < b && c"),
    ];
    let path = write_report(run.path(), "Run <tiny>", &sections).unwrap();
    assert_eq!(path, run.path().join("report.html"));
    let html = fs::read_to_string(&path).unwrap();

    // Self-contained: no scripts, stylesheets or remote resources.
    for bad in ["<script", "<link", "src=", "url(", "@import"] {
        assert!(!html.contains(bad), "found {bad}");
    }
    assert_eq!(html.matches("<svg").count(), 2);

    // Plot box x in [60, 620], y in [20, 260]; steps 0, 5, 10 -> x 60, 340, 620.
    // Loss 3, 1, 2: max 3 -> top (20), min 1 -> bottom (260), 2 -> midway (140).
    // lr 1, 10, 100 on log-y: log10 = 0, 1, 2 -> y 260, 140, 20.
    let lines = polylines(&html);
    assert_eq!(
        lines,
        vec![
            (
                "train/loss".to_string(),
                "60.00,20.00 340.00,260.00 620.00,140.00".to_string()
            ),
            (
                "train/lr".to_string(),
                "60.00,260.00 340.00,140.00 620.00,20.00".to_string()
            ),
        ]
    );
    assert!(html.contains("no data for eval/loss"));

    // Tables: flattened config and last values; text escaped.
    assert!(html.contains("<td>optimizer.lr</td><td>0.001</td>"));
    assert!(html.contains("<td>optimizer.betas</td><td>[0.9,0.95]</td>"));
    assert!(html.contains("<td>step</td><td>10</td>"));
    assert!(html.contains("<td>train/loss</td><td>2</td>"));
    assert!(html.contains("<title>Run &lt;tiny&gt;</title>"));
    assert!(html.contains("<p>first &lt;para&gt;</p>\n<p>second</p>"));
    assert!(html.contains("<pre>a &lt; b &amp;&amp; c</pre>"));
}

#[test]
fn report_without_metrics_file_still_renders() {
    let run = tempfile::tempdir().unwrap();
    let p = write_report(
        run.path(),
        "empty",
        &[Section::plot("Loss", &["train/loss"])],
    )
    .unwrap();
    let html = fs::read_to_string(p).unwrap();
    assert!(html.contains("no data for train/loss") && !html.contains("<svg"));
}

/// `compare_runs`: two runs that differ in their learning rate → one plot per shared metric with
/// a line per run, a table whose train/loss cells are each run's last logged loss, and a
/// settings table that lists `train.lr` (and not what they share); a directory that is not a run
/// is named.
#[test]
fn compare_runs_overlays_metrics_and_lists_differences() {
    use gradus_train::compare::compare_runs;
    use gradus_train::recipe::RecipeConfig;
    let d = tempfile::tempdir().unwrap();
    let mut dirs = vec![];
    for (name, lr) in [("slow", 1e-3), ("fast", 3e-3)] {
        let mut c = RecipeConfig::default();
        c.run.dir = d.path().to_path_buf();
        c.run.name = name.into();
        c.model.config.hidden_size = 32;
        c.model.config.intermediate_size = 64;
        c.data.synthetic_examples = 200;
        c.data.seq_len = 32;
        c.tokenizer.train_vocab_size = 300;
        c.train.steps = 4;
        c.train.batch_size = 4;
        c.train.lr = lr;
        c.train.progress = false;
        c.schedule = gradus_train::schedule::Schedule::Constant { warmup_steps: 0 };
        let s = gradus_train::pretrain::run(&c, false).unwrap();
        dirs.push(s.run_dir);
    }
    let html = compare_runs(&dirs, None).unwrap();
    assert!(html.contains("<h1>Comparison: slow vs fast</h1>"), "{html}");
    // The train/loss section holds one polyline per run.
    let sec = html.split("<h2>train/loss</h2>").nth(1).unwrap();
    let sec = sec.split("<h2>").next().unwrap();
    assert_eq!(sec.matches("<polyline").count(), 2, "{sec}");
    // Last values: each run's last train/loss from its metrics.jsonl.
    let row = html
        .split("<tr><td>train/loss</td>")
        .nth(1)
        .unwrap()
        .split("</tr>")
        .next()
        .unwrap();
    let cells: Vec<f64> = row
        .split("<td>")
        .skip(1)
        .map(|c| c.trim_end_matches("</td>").parse().unwrap())
        .collect();
    for (dir, got) in dirs.iter().zip(&cells) {
        let rows = gradus_train::metrics::read_metrics(&dir.join("metrics.jsonl")).unwrap();
        let want = rows
            .iter()
            .rev()
            .find_map(|r| r.get("train/loss")?.as_f64())
            .unwrap();
        assert!((got - want).abs() <= 1e-5 * want.abs(), "{got} vs {want}");
    }
    // Settings: the learning rate differs, the model does not.
    let settings = html.split("<h2>Settings that differ</h2>").nth(1).unwrap();
    assert!(
        settings.contains("<tr><td>train.lr</td><td>0.001</td><td>0.003</td></tr>"),
        "{settings}"
    );
    assert!(!settings.contains("model.config.hidden_size"), "{settings}");
    // Only the chosen metrics with --metrics.
    let only = compare_runs(&dirs, Some(&["val/loss".to_string()])).unwrap();
    assert_eq!(only.matches("<figure>").count(), 1);
    let e = compare_runs(&[dirs[0].clone(), d.path().join("nope")], None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope") && e.contains("metrics.jsonl"), "{e}");
}
