//! `[eval]` during training: lm-eval-compatible tasks logged as `eval/<task>/<metric>` at the
//! evaluation steps, equal to evaluating the saved checkpoint afterwards with gradus-eval.

use std::path::Path;

use gradus_train::metrics::read_metrics;
use gradus_train::recipe::RecipeConfig;

#[test]
fn eval_section_logs_task_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("corpus.jsonl");
    let mut s = String::new();
    for i in 0..60 {
        s.push_str(
            &serde_json::json!({"text": format!("Which city? Marn or Quib? -> Marn {i}")})
                .to_string(),
        );
        s.push('\n');
    }
    std::fs::write(&data, s).unwrap();
    let task = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../gradus-eval/tests/fixtures/lm_eval/mc_firstn.yaml");
    let mut c = RecipeConfig::default();
    c.run.dir = dir.path().to_path_buf();
    c.run.name = "ev".into();
    c.model.config.hidden_size = 32;
    c.model.config.intermediate_size = 64;
    c.model.config.num_hidden_layers = 1;
    c.model.config.num_attention_heads = 4;
    c.model.config.num_key_value_heads = 2;
    c.tokenizer.train_vocab_size = 300;
    c.data.source = data.display().to_string();
    c.data.seq_len = 32;
    c.train.steps = 6;
    c.train.batch_size = 2;
    c.train.log_every = 2;
    c.train.progress = false;
    c.eval.tasks = vec![task.display().to_string()];
    c.eval.every = 3;
    c.eval.limit = Some(4);
    gradus_train::pretrain::run(&c, false).unwrap();

    let rows = read_metrics(&dir.path().join("ev/metrics.jsonl")).unwrap();
    let evals: Vec<(u64, f64)> = rows
        .iter()
        .filter_map(|r| {
            r.get("eval/mc_firstn/acc")
                .map(|v| (r["step"].as_u64().unwrap(), v.as_f64().unwrap()))
        })
        .collect();
    // every = 3 over 6 steps: steps 3 and 6 (step 3 is not a logging step: its own row).
    assert_eq!(evals.iter().map(|e| e.0).collect::<Vec<_>>(), vec![3, 6]);
    assert!(rows.iter().any(|r| r["step"] == 6
        && r.get("train/loss").is_some()
        && r.get("eval/mc_firstn/acc_norm").is_some()));

    // The report plots the task's metrics (acc and acc_norm, not their standard errors).
    let html = std::fs::read_to_string(dir.path().join("ev/report.html")).unwrap();
    let at = html
        .find("Evaluation during training: mc_firstn")
        .expect("an eval plot in the report");
    let section = &html[at..];
    let section = &section[..section[1..].find("<h2").map_or(section.len(), |e| e + 1)];
    assert!(section.contains("eval/mc_firstn/acc_norm"), "{section}");
    assert!(!section.contains("stderr"), "{section}");

    // The step-6 value is what gradus-eval gives on the final checkpoint.
    let model = gradus_eval::EvalModel::load(&dir.path().join("ev")).unwrap();
    let t = gradus_eval::LoadedTask::from_yaml(&task).unwrap();
    let opts = gradus_eval::EvalOptions {
        limit: Some(4),
        ..Default::default()
    };
    let r = gradus_eval::evaluate_task(&model, &t, &opts).unwrap();
    assert_eq!(r.metrics["acc,none"].value, evals[1].1);

    // A task that does not exist fails before training.
    c.run.name = "bad".into();
    c.eval.tasks = vec!["no_such_task".into()];
    let e = gradus_train::pretrain::run(&c, false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("eval.tasks") && e.contains("no_such_task"),
        "{e}"
    );
}
