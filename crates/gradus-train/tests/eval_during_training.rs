//! `[eval]` during training: lm-eval-compatible tasks logged as `eval/<task>/<metric>` at the
//! evaluation steps, equal to evaluating the saved checkpoint afterwards with gradus-eval.

use std::path::Path;

use gradus_train::metrics::read_metrics;
use gradus_train::recipe::RecipeConfig;

/// A 1-layer, 32-wide model trained 6 steps (batch 2, logged every 2 steps) in `dir/name`.
fn tiny(dir: &Path, name: &str) -> RecipeConfig {
    let mut c = RecipeConfig::default();
    c.run.dir = dir.to_path_buf();
    c.run.name = name.into();
    c.model.config.hidden_size = 32;
    c.model.config.intermediate_size = 64;
    c.model.config.num_hidden_layers = 1;
    c.model.config.num_attention_heads = 4;
    c.model.config.num_key_value_heads = 2;
    c.tokenizer.train_vocab_size = 300;
    c.data.seq_len = 32;
    c.train.steps = 6;
    c.train.batch_size = 2;
    c.train.log_every = 2;
    c.train.progress = false;
    c
}

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
    let mut c = tiny(dir.path(), "ev");
    c.data.source = data.display().to_string();
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

/// `[eval] samples`: each prompt's greedy continuation is logged as `samples/<i>` at the
/// evaluation steps (the step-6 text equals greedy decoding of the final checkpoint), and the
/// report shows them as samples over steps.
#[test]
fn eval_samples_are_logged_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = tiny(dir.path(), "samples");
    c.data.synthetic_examples = 200;
    c.eval.every = 3;
    c.eval.samples = vec!["Compute 2+3.".into(), "a = 4".into()];
    c.eval.sample_tokens = 5;
    gradus_train::pretrain::run(&c, false).unwrap();

    let rows = read_metrics(&dir.path().join("samples/metrics.jsonl")).unwrap();
    let logged = |key: &str| -> Vec<(u64, String)> {
        rows.iter()
            .filter_map(|r| {
                r.get(key).map(|v| {
                    (
                        r["step"].as_u64().unwrap(),
                        v.as_str().expect("a sample is a string").to_string(),
                    )
                })
            })
            .collect()
    };
    let s0 = logged("samples/0");
    let s1 = logged("samples/1");
    assert_eq!(s0.iter().map(|s| s.0).collect::<Vec<_>>(), vec![3, 6]);
    assert_eq!(s1.iter().map(|s| s.0).collect::<Vec<_>>(), vec![3, 6]);
    assert!(s0.iter().all(|s| s.1.starts_with("Compute 2+3.")), "{s0:?}");

    // Step 6 is the final checkpoint: greedy decoding of it gives the same texts.
    let ck = dir.path().join("samples/checkpoints/step-6");
    let model = gradus_model::hf::load_decoder(&ck, &gradus_tensor::Device::Cpu).unwrap();
    let tok = gradus_data::tokenizer::Tokenizer::from_dir(&ck).unwrap();
    for (prompt, logged) in [("Compute 2+3.", &s0[1].1), ("a = 4", &s1[1].1)] {
        let ids = tok.encode(prompt, true).unwrap();
        let cfg = gradus_model::generate::SamplingConfig {
            max_new_tokens: 5,
            ..Default::default()
        };
        let eos: Vec<u32> = tok.eos_id().into_iter().collect();
        let out = gradus_model::generate::generate(&model, &[ids], &cfg, &eos, &mut |_, _| false)
            .unwrap();
        let text = tok.decode(&out[0].tokens, true).unwrap();
        assert_eq!(&format!("{prompt}{text}"), logged);
    }

    // The report has a table per prompt with a row per evaluation step, in step order.
    let html = std::fs::read_to_string(dir.path().join("samples/report.html")).unwrap();
    let at = html
        .find("Samples during training")
        .expect("a samples section");
    let section = &html[at..];
    let t0 = section.find("<th>samples/0</th>").unwrap();
    let t1 = section.find("<th>samples/1</th>").unwrap();
    let first = &section[t0..t1];
    let (r3, r6) = (
        first.find("<td>3</td>").unwrap(),
        first.find("<td>6</td>").unwrap(),
    );
    assert!(r3 < r6, "{first}");
    // The page title names the recipe and the run; the subtitle the key settings.
    assert!(html.contains("<h1>gradus pretrain: samples</h1>"), "title");
    assert!(html.contains("6 steps × batch 2"), "subtitle");
}
