//! `lab rlvr`'s sampled held-out score (`rlvr::measure_sampled`) against hand-set targets: at
//! temperature 0 every sample is the greedy answer, so with half the targets set to the model's own
//! greedy answers and half to a string it cannot write, pass@1 is exactly 1/2 and pass@k counts the
//! first half.

#[allow(dead_code)] // `col` is for the other suites
mod common;
use common::init_model;

use gradus_data::tokenizer::Tokenizer;
use gradus_eval::{evaluate_task, EvalModel, EvalOptions};
use gradus_model::hf::load_decoder;
use gradus_tensor::Device;
use gradus_train::quickstart::{eval_tasks, plan, Plan, QuickstartSize};
use gradus_train::rlvr::measure_sampled;
use serde_json::json;

#[test]
fn sampled_pass_at_1_counts_each_samples_answer() {
    let d = tempfile::tempdir().unwrap();
    let init = init_model(d.path(), false);
    let model = load_decoder(&init, &Device::Cpu).unwrap();
    let tok = Tokenizer::from_dir(&init).unwrap();
    let p = Plan {
        n_eval: 6,
        ..plan(QuickstartSize::Full)
    };
    let tasks = eval_tasks(&p, 2).unwrap();
    let (kind, task, filter) = tasks[0].clone();
    // The model's greedy answers (the `strict` extraction), problem by problem.
    let mut m = EvalModel::from_parts(model.clone(), tok.clone(), init.clone());
    m.prepend_bos = true;
    let opts = EvalOptions {
        batch_size: 32,
        bootstrap_iters: 0,
        ..Default::default()
    };
    let r = evaluate_task(&m, &task, &opts).unwrap();
    let greedy: Vec<String> = r
        .samples
        .iter()
        .filter(|row| row["filter"] == filter)
        .map(|row| row["answer"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(greedy.len(), 6);
    let mut t = task.clone();
    for (i, doc) in t.splits.get_mut("test").unwrap().iter_mut().enumerate() {
        let target = if i < 3 {
            greedy[i].clone()
        } else {
            "never".into()
        };
        doc.data.insert("answer".into(), json!(target));
    }
    let s = measure_sampled(&model, &tok, &init, &[(kind, t, filter)], 4, 0.0).unwrap();
    assert_eq!(s.len(), 2, "the kind, then all");
    for a in &s {
        assert_eq!((a.n, a.k), (6, 4));
        assert_eq!(a.pass1, 0.5, "{a:?}");
        assert_eq!(a.pass_k, 3, "{a:?}");
    }
    assert_eq!(s[1].kind, "all");
}
