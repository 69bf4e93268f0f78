//! Parity with lm-evaluation-harness 0.4.13 (fixture: `tests/fixtures/lm_eval`, made by its `gen.py`
//! with lm-eval's `simple_evaluate` on a tiny random Llama; see the README there).
//!
//! gradus runs the same task files on the same model and must reproduce: every prompt and
//! continuation string, every per-choice / per-window log-likelihood within 1e-4 and its is_greedy
//! flag, every greedy generation token-identical (so the same text), every filtered answer, every
//! per-sample metric value, every discrete aggregate (acc, acc_norm, acc_bytes, exact_match) and its
//! closed-form stderr exactly (1e-12), and the perplexity-type aggregates within 1e-5 relative
//! (they are continuous functions of the log-likelihoods).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use gradus_eval::{evaluate_task, EvalModel, EvalOptions, LoadedTask, TaskResult};
use serde_json::Value;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lm_eval")
}

fn expected_rows(task: &str) -> HashMap<(String, u64), Value> {
    let text = std::fs::read_to_string(fixture().join(format!("expected/{task}.jsonl"))).unwrap();
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                (
                    v["filter"].as_str().unwrap().to_string(),
                    v["doc_id"].as_u64().unwrap(),
                ),
                v,
            )
        })
        .collect()
}

fn expected_results() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture().join("expected/results.json")).unwrap())
        .unwrap()
}

fn run(task: &str, batch_size: usize) -> TaskResult {
    let model = EvalModel::load(&fixture().join("model")).unwrap();
    let t = LoadedTask::from_yaml(&fixture().join(format!("{task}.yaml"))).unwrap();
    let opts = EvalOptions {
        batch_size,
        bootstrap_iters: 200,
        ..Default::default()
    };
    evaluate_task(&model, &t, &opts).unwrap()
}

fn ours(r: &TaskResult) -> HashMap<(String, u64), &Value> {
    r.samples
        .iter()
        .map(|v| {
            (
                (
                    v["filter"].as_str().unwrap().to_string(),
                    v["doc_id"].as_u64().unwrap(),
                ),
                v,
            )
        })
        .collect()
}

fn close(a: f64, b: f64, tol: f64, what: &str) {
    assert!(
        (a - b).abs() <= tol,
        "{what}: gradus {a} vs lm-eval {b} (tolerance {tol})"
    );
}

fn check_aggregates(task: &str, r: &TaskResult, discrete: bool) {
    let exp = expected_results();
    let e = &exp["results"][task];
    assert_eq!(
        e["sample_len"].as_u64().unwrap() as usize,
        r.n_samples,
        "{task}: sample count"
    );
    let mut n = 0;
    for (k, m) in &r.metrics {
        let ev = e[k.as_str()]
            .as_f64()
            .unwrap_or_else(|| panic!("{task}: lm-eval has no `{k}`"));
        if discrete {
            assert_eq!(m.value, ev, "{task} {k}");
            let (name, filter) = k.split_once(',').unwrap();
            let es = e[format!("{name}_stderr,{filter}")].as_f64().unwrap();
            close(m.stderr.unwrap(), es, 1e-12, &format!("{task} {k} stderr"));
        } else {
            close(m.value, ev, 1e-5 * ev.abs(), &format!("{task} {k}"));
        }
        n += 1;
    }
    let expected_keys = e
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.contains(',') && !k.contains("_stderr"))
        .count();
    assert_eq!(
        n, expected_keys,
        "{task}: gradus reports {n} metrics, lm-eval {expected_keys}"
    );
}

fn check_multiple_choice(task: &str, batch_size: usize) {
    let r = run(task, batch_size);
    let exp = expected_rows(task);
    let got = ours(&r);
    assert_eq!(got.len(), exp.len(), "{task}: number of sample rows");
    for (key, e) in &exp {
        let g = got
            .get(key)
            .unwrap_or_else(|| panic!("{task}: no sample {key:?}"));
        let args = e["arguments"].as_array().unwrap();
        let choices = g["choices"].as_array().unwrap();
        assert_eq!(
            args.len(),
            choices.len(),
            "{task} {key:?}: number of choices"
        );
        for (i, a) in args.iter().enumerate() {
            assert_eq!(
                g["prompt"].as_str().unwrap(),
                a[0].as_str().unwrap(),
                "{task} {key:?}: prompt"
            );
            let lm_cont = a[1].as_str().unwrap();
            assert!(
                lm_cont.ends_with(choices[i].as_str().unwrap()),
                "{task} {key:?}: continuation {lm_cont:?}"
            );
            let ell = e["filtered_resps"][i][0].as_f64().unwrap();
            let egreedy = e["filtered_resps"][i][1].as_bool().unwrap();
            close(
                g["loglikelihoods"][i].as_f64().unwrap(),
                ell,
                1e-4,
                &format!("{task} {key:?} choice {i}"),
            );
            assert_eq!(
                g["is_greedy"][i].as_bool().unwrap(),
                egreedy,
                "{task} {key:?} choice {i}: is_greedy"
            );
        }
        for m in e["metrics"].as_array().unwrap() {
            let m = m.as_str().unwrap();
            assert_eq!(
                g["metrics"][m].as_f64().unwrap(),
                e[m].as_f64().unwrap(),
                "{task} {key:?}: {m}"
            );
        }
    }
    check_aggregates(task, &r, true);
}

#[test]
fn multiple_choice_with_random_fewshot_matches_lm_eval() {
    // Contexts here exceed the 64-token window: HFLM's left truncation is exercised on every document.
    check_multiple_choice("mc_fewshot", 4);
}

#[test]
fn multiple_choice_first_n_and_jinja_choices_match_lm_eval() {
    check_multiple_choice("mc_firstn", 1);
}

#[test]
fn rolling_loglikelihood_matches_lm_eval() {
    let task = "rolling";
    let r = run(task, 3);
    let exp = expected_rows(task);
    let got = ours(&r);
    assert_eq!(got.len(), exp.len());
    for (key, e) in &exp {
        let g = got[key];
        close(
            g["loglikelihood"].as_f64().unwrap(),
            e["filtered_resps"][0].as_f64().unwrap(),
            1e-4,
            &format!("{task} {key:?}"),
        );
        assert_eq!(
            g["words"].as_f64().unwrap(),
            e["word_perplexity"][1].as_f64().unwrap(),
            "{task} {key:?}: word count"
        );
        assert_eq!(
            g["bytes"].as_f64().unwrap(),
            e["byte_perplexity"][1].as_f64().unwrap(),
            "{task} {key:?}: byte count"
        );
    }
    // The 90-word document needs several 64-token windows.
    assert!(r.samples.iter().any(|s| s["windows"].as_u64().unwrap() > 1));
    check_aggregates(task, &r, false);
}

#[test]
fn generate_until_matches_lm_eval() {
    let task = "gen_arith";
    let r = run(task, 3);
    let exp = expected_rows(task);
    let got = ours(&r);
    assert_eq!(got.len(), exp.len());
    for (key, e) in &exp {
        let g = got[key];
        assert_eq!(
            g["prompt"].as_str().unwrap(),
            e["arguments"][0][0].as_str().unwrap(),
            "{task} {key:?}: prompt"
        );
        assert_eq!(
            g["resps"][0].as_str().unwrap(),
            e["resps"][0][0].as_str().unwrap(),
            "{task} {key:?}: generation"
        );
        assert_eq!(
            g["filtered_resps"][0].as_str().unwrap(),
            e["filtered_resps"]
                .as_str()
                .unwrap_or_else(|| e["filtered_resps"][0].as_str().unwrap()),
            "{task} {key:?}: filtered"
        );
        assert_eq!(
            g["metrics"]["exact_match"].as_f64().unwrap(),
            e["exact_match"].as_f64().unwrap(),
            "{task} {key:?}: exact_match"
        );
    }
    check_aggregates(task, &r, true);
}
