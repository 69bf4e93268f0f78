//! `train rl` end to end on a tiny random model: exact resume in the middle of a reused generation
//! batch, every estimator runs, rewards (built-in and external) reach the metrics, bad input is a
//! clear error.

mod common;
use common::{col, init_model};

use std::path::Path;

use gradus_objectives::rl::LossAggregation;
use gradus_train::rl::rewards::{RewardKind, RewardSpec};
use gradus_train::rl::{run, AlgorithmKind, RlConfig};
use gradus_train::schedule::Schedule;

fn reward(kind: RewardKind) -> RewardSpec {
    RewardSpec {
        name: None,
        weight: 1.0,
        kind,
    }
}

fn cfg(dir: &Path, init: &Path, name: &str) -> RlConfig {
    let mut c = RlConfig::default();
    c.run.dir = dir.to_path_buf();
    c.run.name = name.into();
    c.run.seed = 3;
    c.model.init_from = Some(init.to_path_buf());
    c.data.synthetic_prompts = 16;
    c.generation.max_new_tokens = 6;
    c.algorithm.num_generations = 4;
    c.rewards = vec![
        reward(RewardKind::Task {}),
        RewardSpec {
            name: Some("digit".into()),
            weight: 0.5,
            kind: RewardKind::Regex {
                pattern: "[0-9]".into(),
            },
        },
    ];
    c.train.steps = 4;
    c.train.batch_size = 4;
    c.train.lr = 1e-2;
    c.train.progress = false;
    c.optimizer.weight_decay = 0.0;
    c.schedule = Schedule::Constant { warmup_steps: 0 };
    c
}

fn bits(run_dir: &Path, key: &str) -> Vec<u64> {
    col(run_dir, key).iter().map(|x| x.to_bits()).collect()
}

#[test]
fn resume_inside_a_reused_generation_batch_is_bit_identical() {
    // Generation batch = 4 completions × 2 micro-batches × 2 steps = 16 (4 prompts × G 4), used
    // for μ = 2 passes: 4 optimiser steps per generation, 6 steps = 2 generations. The split run
    // stops after step 3, in the middle of the first batch's second pass (old log-probs in use).
    let d = tempfile::tempdir().unwrap();
    let init = init_model(d.path(), false);
    let mut a = cfg(d.path(), &init, "full");
    a.train.steps = 6;
    a.train.grad_accum = 2;
    a.algorithm.steps_per_generation = 2;
    a.algorithm.num_iterations = 2;
    a.algorithm.beta = 0.04;
    a.algorithm.epsilon_high = Some(0.28);
    run(&a, false).unwrap();
    let mut b = a.clone();
    b.run.name = "split".into();
    b.train.stop_after = 3;
    run(&b, false).unwrap();
    b.train.stop_after = 0;
    run(&b, true).unwrap();
    let (full, split) = (d.path().join("full"), d.path().join("split"));
    for key in [
        "train/loss",
        "train/grad_norm",
        "reward/mean",
        "kl",
        "clip_ratio/region_mean",
    ] {
        let x = bits(&full, key);
        assert_eq!(x.len(), 6, "{key} logged every step");
        assert_eq!(x, bits(&split, key), "{key}");
    }
    // Two generation batches, each logged once in completions.jsonl (16 rows each), the same rows.
    let rows = |dir: &Path| std::fs::read_to_string(dir.join("completions.jsonl")).unwrap();
    assert_eq!(rows(&full), rows(&split));
    let lines: Vec<serde_json::Value> = rows(&full)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 32);
    for k in [
        "prompt",
        "completion",
        "rewards",
        "advantage",
        "reward",
        "terminated",
    ] {
        assert!(lines[0].get(k).is_some(), "{k} in {}", lines[0]);
    }
    assert!(lines[0]["rewards"].get("digit").is_some());
    // With β > 0 the loss has a KL term; from the second step on the policy has moved.
    assert!(col(&full, "kl")[1] > 0.0, "{:?}", col(&full, "kl"));
    assert!(full.join("report.html").exists());
}

#[test]
fn every_estimator_and_aggregation_runs() {
    let d = tempfile::tempdir().unwrap();
    let init = init_model(d.path(), false);
    for (i, (kind, agg)) in [
        (AlgorithmKind::Grpo, LossAggregation::Grpo),
        (AlgorithmKind::Grpo, LossAggregation::Bnpo),
        (AlgorithmKind::Grpo, LossAggregation::DrGrpo),
        (AlgorithmKind::Rloo, LossAggregation::Grpo),
        (AlgorithmKind::ReinforcePp, LossAggregation::Dapo),
        (AlgorithmKind::Remax, LossAggregation::Dapo),
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = cfg(d.path(), &init, &format!("k{i}"));
        c.train.steps = 2;
        c.algorithm.kind = kind;
        c.algorithm.loss_type = Some(agg);
        c.algorithm.beta = 0.05;
        c.algorithm.steps_per_generation = 2;
        let s = run(&c, false).unwrap();
        let loss = col(&s.fit.run_dir, "train/loss");
        assert_eq!(loss.len(), 2, "{kind:?}");
        assert!(loss.iter().all(|x| x.is_finite()), "{kind:?} {loss:?}");
        let rewards = col(&s.fit.run_dir, "rewards/digit/mean");
        assert!(
            rewards.iter().all(|x| (0.0..=1.0).contains(x)),
            "{rewards:?}"
        );
        let zero_std = col(&s.fit.run_dir, "frac_reward_zero_std");
        if matches!(kind, AlgorithmKind::Grpo | AlgorithmKind::Rloo) {
            assert_eq!(zero_std.len(), 2, "{kind:?}");
        }
    }
}

#[test]
fn an_external_reward_command_scores_every_completion() {
    let d = tempfile::tempdir().unwrap();
    let init = init_model(d.path(), false);
    let mut c = cfg(d.path(), &init, "ext");
    c.train.steps = 1;
    // Reads each JSON request line, answers 0.25 (as a bare number) or an object; both parse.
    c.rewards = vec![RewardSpec {
        name: Some("ext".into()),
        weight: 2.0,
        kind: RewardKind::Command {
            command: vec![
                "sh".into(),
                "-c".into(),
                "i=0; while read l; do i=$((i+1)); if [ $((i % 2)) = 0 ]; then echo '{\"score\": 0.25}'; else echo 0.25; fi; done".into(),
            ],
            timeout_s: 10.0,
        },
    }];
    let s = run(&c, false).unwrap();
    // Every completion scored 0.25; the combined reward is 2 × 0.25.
    assert_eq!(col(&s.fit.run_dir, "rewards/ext/mean"), vec![0.25]);
    assert_eq!(col(&s.fit.run_dir, "reward/mean"), vec![0.5]);
    assert_eq!(col(&s.fit.run_dir, "frac_reward_zero_std"), vec![1.0]);
}

fn err(c: &RlConfig) -> String {
    match run(c, false) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let init = init_model(d.path(), false);
    // G = 1.
    let mut c = cfg(d.path(), &init, "g1");
    c.algorithm.num_generations = 1;
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("num_generations"), "{e}");
    // A prompt longer than the context (512 positions) with max_new_tokens.
    let f = d.path().join("prompts.jsonl");
    let long = "a b ".repeat(400);
    std::fs::write(
        &f,
        format!("{{\"prompt\": \"Compute 1+1.\", \"answer\": \"2\"}}\n{{\"prompt\": \"{long}\", \"answer\": \"2\"}}\n"),
    )
    .unwrap();
    let mut c = cfg(d.path(), &init, "long");
    c.data.source = f.display().to_string();
    c.rewards = vec![reward(RewardKind::Exact {
        field: "answer".into(),
    })];
    let e = err(&c);
    assert!(e.contains("row 2") && e.contains("context"), "{e}");
    // External rewards: a crash, a malformed answer, a hang.
    let cmd = |script: &str, timeout_s: f64| {
        let mut c = cfg(d.path(), &init, &format!("cmd{}", script.len()));
        c.rewards = vec![RewardSpec {
            name: Some("judge".into()),
            weight: 1.0,
            kind: RewardKind::Command {
                command: vec!["sh".into(), "-c".into(), script.into()],
                timeout_s,
            },
        }];
        err(&c)
    };
    let e = cmd("read l; exit 3", 10.0);
    assert!(
        e.contains("judge") && e.contains("request #") && e.contains("\"completion\""),
        "{e}"
    );
    let e = cmd("while read l; do echo hello; done", 10.0);
    assert!(
        e.contains("malformed answer \"hello\"") && e.contains("request #1"),
        "{e}"
    );
    let e = cmd("while read l; do sleep 5; done", 0.3);
    assert!(
        e.contains("no answer within 0.3 s") && e.contains("request #1"),
        "{e}"
    );
}
