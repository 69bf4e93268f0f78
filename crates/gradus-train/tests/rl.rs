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
        (AlgorithmKind::Ppo, LossAggregation::Dapo),
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
    // A random tiny model samples from a nearly flat distribution over its vocabulary: the
    // entropy metric is close to ln V (and can never exceed it).
    let v = gradus_model::hf::load_decoder(&init, &gradus_tensor::Device::Cpu)
        .unwrap()
        .cfg
        .vocab_size as f64;
    let h = col(&s.fit.run_dir, "entropy");
    assert_eq!(h.len(), 1, "{h:?}");
    assert!(
        h[0] > 0.8 * v.ln() && h[0] <= v.ln() + 1e-4,
        "{h:?} vs ln {v}"
    );
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
    // PPO needs no group (G = 1 is fine), but its advantages are per token, and λ is in [0, 1].
    c.algorithm.kind = AlgorithmKind::Ppo;
    c.validate().unwrap();
    c.algorithm.importance_sampling_level = Some(gradus_objectives::rl::RatioLevel::Sequence);
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("algorithm.importance_sampling_level"), "{e}");
    c.algorithm.importance_sampling_level = None;
    c.algorithm.lam = 1.5;
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("algorithm.lam"), "{e}");
    c.algorithm.lam = 0.95;
    c.algorithm.entropy_coef = -0.1;
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("algorithm.entropy_coef"), "{e}");
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

/// `python_tests` scores completions by running them with unit tests in the sandbox: human-eval
/// style (`test` defines `check`, called with the entry point) gives 1 or 0; a list of asserts
/// gives the fraction that pass. Expected values by hand: `add` right → 1, wrong → 0, exiting
/// before the tests → 0, looping → 0 (timeout); asserts on `sq`: x*x passes all 3, x+x passes
/// only `sq(2) == 4` and `sq(0) == 0` → 2/3, a syntax error passes none → 0.
#[test]
fn python_unit_tests_reward_runs_in_the_sandbox() {
    use gradus_train::rl::rewards::{build_rewards, RewardInput};
    use serde_json::{json, Map, Value};
    let spec = |tests: &str, entry_point: Option<&str>| RewardSpec {
        name: None,
        weight: 1.0,
        kind: RewardKind::PythonTests {
            tests: tests.into(),
            entry_point: entry_point.map(Into::into),
            code_prefix: "prompt".into(),
            timeout_s: 1.0,
            memory_mb: 512,
            workers: 2,
            unisolated: false,
        },
    };
    let obj = |v: Value| -> Map<String, Value> { v.as_object().unwrap().clone() };
    let he = obj(
        json!({"test": "def check(f):\n    assert f(1, 2) == 3\n    assert f(-1, 1) == 0\n", "entry_point": "add"}),
    );
    let mut r = build_rewards(&[spec("test", Some("entry_point"))]).unwrap();
    let prompt = "def add(a, b):\n";
    let items: Vec<RewardInput> = [
        "    return a + b\n",
        "    return a - b\n",
        "    return a + b\nimport sys\nsys.exit(0)\n",
        "    while True:\n        pass\n",
    ]
    .iter()
    .map(|c| RewardInput {
        prompt,
        completion: c,
        columns: &he,
    })
    .collect();
    let none = Map::new();
    let mut with_none = items;
    with_none.push(RewardInput {
        prompt,
        completion: "    return a + b\n",
        columns: &none,
    });
    assert_eq!(r[0].name(), "python_tests");
    assert_eq!(
        r[0].score(&with_none).unwrap(),
        vec![Some(1.0), Some(0.0), Some(0.0), Some(0.0), None]
    );

    let mbpp =
        obj(json!({"test_list": ["assert sq(2) == 4", "assert sq(3) == 9", "assert sq(0) == 0"]}));
    let mut r = build_rewards(&[spec("test_list", None)]).unwrap();
    let prompt = "def sq(x):\n";
    let items: Vec<RewardInput> = ["    return x * x\n", "    return x + x\n", "    return (\n"]
        .iter()
        .map(|c| RewardInput {
            prompt,
            completion: c,
            columns: &mbpp,
        })
        .collect();
    let got = r[0].score(&items).unwrap();
    assert_eq!(got[0], Some(1.0));
    assert!((got[1].unwrap() - 2.0 / 3.0).abs() < 1e-6, "{got:?}");
    assert_eq!(got[2], Some(0.0));

    // Bad settings name the field.
    let mut bad = spec("test", None);
    if let RewardKind::PythonTests { workers, .. } = &mut bad.kind {
        *workers = 0;
    }
    let e = build_rewards(&[bad]).err().unwrap().to_string();
    assert!(e.contains("rewards[0].workers"), "{e}");
}

/// End to end: `train rl` with prompts from JSONL whose rows carry tests; every step logs the
/// reward (a tiny random model writes no valid Python, so it is 0, but it ran for each step).
#[test]
fn train_rl_with_unit_test_rewards() {
    let d = tempfile::tempdir().unwrap();
    let init = init_model(d.path(), false);
    let f = d.path().join("code.jsonl");
    std::fs::write(
        &f,
        "{\"prompt\": \"def add(a, b):\\n\", \"test\": \"def check(f):\\n    assert f(1, 2) == 3\\n\", \"entry_point\": \"add\"}\n{\"prompt\": \"def one():\\n\", \"test\": \"def check(f):\\n    assert f() == 1\\n\", \"entry_point\": \"one\"}\n",
    )
    .unwrap();
    let mut c = cfg(d.path(), &init, "pytests");
    c.data.source = f.display().to_string();
    c.train.steps = 2;
    c.train.batch_size = 4;
    c.rewards = vec![RewardSpec {
        name: None,
        weight: 1.0,
        kind: RewardKind::PythonTests {
            tests: "test".into(),
            entry_point: Some("entry_point".into()),
            code_prefix: "prompt".into(),
            timeout_s: 2.0,
            memory_mb: 512,
            workers: 2,
            unisolated: false,
        },
    }];
    let s = run(&c, false).unwrap();
    let got = col(&s.fit.run_dir, "rewards/python_tests/mean");
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.iter().all(|x| (0.0..=1.0).contains(x)), "{got:?}");
}

/// `reward_model` scores prompt + completion exactly as the reward recipe's pairs are scored
/// (same tokenization: BOS + prompt, completion + EOS; last real token), so a model trained by
/// `train reward` means the same thing in `train rl`. Checked against `reward_pair_scores` on
/// pairs tokenized by the training path, and the `output` selection of a two-output head.
#[test]
fn reward_model_reward_matches_the_reward_recipes_scores() {
    use gradus_data::chat::ChatTemplate;
    use gradus_data::preference::{tokenize, Turns};
    use gradus_data::tokenizer::Tokenizer;
    use gradus_model::hf::load_decoder;
    use gradus_model::reward::RewardModel;
    use gradus_train::rl::rewards::{build_rewards, RewardInput};
    let d = tempfile::tempdir().unwrap();
    let init = init_model(d.path(), false);
    let tok = Tokenizer::from_dir(&init).unwrap();
    let dec = load_decoder(&init, &gradus_tensor::Device::Cpu).unwrap();
    let rm = RewardModel::new(dec, vec!["help".into(), "harm".into()], 7).unwrap();
    let rm_dir = d.path().join("rm");
    rm.save(&rm_dir).unwrap();
    tok.save(&rm_dir).unwrap();

    let texts = [
        ("Compute 2+3.", "5"),
        ("Compute 2+3.", "6 is it"),
        ("Say hi.", "hi"),
    ];
    let cols = serde_json::Map::new();
    let items: Vec<RewardInput> = texts
        .iter()
        .map(|(p, c)| RewardInput {
            prompt: p,
            completion: c,
            columns: &cols,
        })
        .collect();
    let spec = |output: Option<&str>| RewardSpec {
        name: None,
        weight: 1.0,
        kind: RewardKind::RewardModel {
            path: rm_dir.clone(),
            output: output.map(Into::into),
            batch: 2,
        },
    };
    let mean = build_rewards(&[spec(None)])
        .unwrap()
        .remove(0)
        .score(&items)
        .unwrap();
    let harm = build_rewards(&[spec(Some("harm"))])
        .unwrap()
        .remove(0)
        .score(&items)
        .unwrap();

    // The training path: each text as the chosen side of a pair (rejected: another text).
    let tpl = ChatTemplate::chatml();
    let pad = gradus_eval::pairwise::pad_id(&tok);
    for (i, (p, c)) in texts.iter().enumerate() {
        let other = texts[(i + 1) % texts.len()].1;
        let t = tokenize(
            &tok,
            &tpl,
            &Turns::Text(p.to_string()),
            &[&Turns::Text(c.to_string()), &Turns::Text(other.to_string())],
        )
        .unwrap();
        let pair = gradus_data::preference::TokenizedPair {
            prompt: t.prompt,
            chosen: t.completions[0].clone(),
            rejected: t.completions[1].clone(),
            chosen_fraction: None,
            margin: None,
            chosen_reward: None,
            rejected_reward: None,
            chosen_scores: None,
            rejected_scores: None,
            category: None,
        };
        let s = gradus_eval::pairwise::reward_pair_scores(&rm, &[&pair], pad)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let want_mean = (s[0][0] + s[0][1]) / 2.0;
        assert!(
            (mean[i].unwrap() - want_mean).abs() < 1e-5,
            "{i}: {mean:?} vs {s:?}"
        );
        assert!(
            (harm[i].unwrap() - s[0][1]).abs() < 1e-5,
            "{i}: {harm:?} vs {s:?}"
        );
    }
    let e = build_rewards(&[spec(Some("nope"))])
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("rewards[0].output") && e.contains("help"), "{e}");
}

/// `lab rlvr` end to end on a tiny random "SFT" model, 2 GRPO steps: both models are scored on
/// the same held-out problems (equal n per kind, "all" = the sum), the RL run has its 2 steps, and
/// rlvr.json / rlvr.html are written. (Whether RL helps is the lab's finding at full size, not a
/// unit test.)
#[test]
fn lab_rlvr_scores_sft_and_rl_models_on_the_same_problems() {
    use gradus_train::rlvr::{run as rlvr, RlvrOptions};
    let d = tempfile::tempdir().unwrap();
    let init = init_model(d.path(), false);
    let o = rlvr(&RlvrOptions {
        dir: d.path().join("runs"),
        sft: Some(init.clone()),
        steps: 2,
        seed: 1,
        progress: false,
        overwrite: false,
        // A config of the caller's: its learning rate is what the run uses.
        rl: Some({
            let mut c = gradus_train::rlvr::default_rl_config().unwrap();
            c.train.lr = 7e-4;
            c
        }),
    })
    .unwrap();
    assert_eq!(col(&o.rl_dir, "train/lr"), vec![7e-4, 7e-4]);
    assert_eq!(o.before.len(), o.after.len());
    for (b, a) in o.before.iter().zip(&o.after) {
        assert_eq!((&b.kind, b.n), (&a.kind, a.n));
        assert!(b.n > 0);
    }
    let all = o.after.last().unwrap();
    assert_eq!(all.kind, "all");
    assert_eq!(
        all.n,
        o.after[..o.after.len() - 1]
            .iter()
            .map(|k| k.n)
            .sum::<usize>()
    );
    assert_eq!(col(&o.rl_dir, "reward/mean").len(), 2);
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(o.rl_dir.join("rlvr.json")).unwrap())
            .unwrap();
    assert_eq!(j["steps"], 2);
    let html = std::fs::read_to_string(&o.report).unwrap();
    assert!(html.contains("SFT + GRPO, all"), "{html}");
}

/// The lab's GRPO prompts come from the task the quickstart fine-tuned on (equation answers, traced
/// programs): with the generic task the model writes a format the checker does not expect, and
/// its rewards measure the format, not the skill.
#[test]
fn the_rlvr_config_draws_the_quickstarts_task() {
    let c = gradus_train::rlvr::default_rl_config().unwrap();
    assert_eq!(c.data.task, gradus_train::quickstart::task());
}

#[test]
fn lora_rl_trains_adapters_against_the_base_and_resumes_exactly() {
    // [lora]: the reference is the policy's graph with its adapters off. B starts at 0, so at the
    // first step policy = base exactly and the KL is exactly 0; once the adapters move it is not
    // (a reference that kept the adapters would give 0 forever). Stopped after 2 of 4 steps and
    // resumed: bit-identical. Checkpoints are adapter directories.
    let d = tempfile::tempdir().unwrap();
    let init = init_model(d.path(), false);
    let mut a = cfg(d.path(), &init, "lora-full");
    a.train.grad_accum = 2;
    a.algorithm.steps_per_generation = 2;
    a.algorithm.beta = 0.04;
    a.lora = Some(gradus_model::LoraConfig {
        r: 4,
        lora_alpha: 8.0,
        lora_dropout: 0.0,
        target_modules: vec!["q_proj".into(), "v_proj".into(), "up_proj".into()],
        use_rslora: false,
    });
    run(&a, false).unwrap();
    let full = d.path().join("lora-full");
    let kl = col(&full, "kl");
    assert_eq!(kl.len(), 4, "{kl:?}");
    assert_eq!(kl[0], 0.0, "policy = base at the first step");
    assert!(
        kl[1..].iter().any(|&k| k > 0.0),
        "the adapters moved: {kl:?}"
    );
    let ck = full.join("checkpoints/step-4");
    assert!(ck.join("adapter_model.safetensors").is_file());
    assert!(!ck.join("model.safetensors").exists());
    let mut b = a.clone();
    b.run.name = "lora-split".into();
    b.train.stop_after = 2;
    run(&b, false).unwrap();
    b.train.stop_after = 0;
    run(&b, true).unwrap();
    let split = d.path().join("lora-split");
    for key in ["train/loss", "train/grad_norm", "kl", "reward/mean"] {
        assert_eq!(bits(&full, key), bits(&split, key), "{key}");
    }
    // Dropout is refused (masks would make old/reference/current log-probs disagree).
    let mut c = a.clone();
    c.lora.as_mut().unwrap().lora_dropout = 0.1;
    let e = err(&c);
    assert!(e.contains("lora.lora_dropout"), "{e}");
}

#[test]
fn ppo_with_a_value_head_and_an_entropy_bonus_resumes_exactly() {
    // PPO (KL in the reward, GAE with γ 1, λ 0.95), the value head on the shared trunk and an
    // entropy bonus; 4 steps of 2 micro-batches, the split run stops after step 2 (a generation
    // boundary: the value head's Adam state must come back from the checkpoint).
    let d = tempfile::tempdir().unwrap();
    let init = init_model(d.path(), false);
    let mut a = cfg(d.path(), &init, "ppo");
    a.algorithm.kind = AlgorithmKind::Ppo;
    a.algorithm.num_generations = 2;
    a.algorithm.beta = 0.05;
    a.algorithm.lam = 0.95;
    a.algorithm.entropy_coef = 0.01;
    a.train.grad_accum = 2;
    a.train.save_every = 2;
    run(&a, false).unwrap();
    let mut b = a.clone();
    b.run.name = "ppo-split".into();
    b.train.stop_after = 2;
    run(&b, false).unwrap();
    b.train.stop_after = 0;
    run(&b, true).unwrap();
    let (full, split) = (d.path().join("ppo"), d.path().join("ppo-split"));
    for key in [
        "train/loss",
        "train/grad_norm",
        "reward/mean",
        "value/loss",
        "value/mean",
        "entropy/policy",
    ] {
        let x = bits(&full, key);
        assert_eq!(x.len(), 4, "{key} logged every step");
        assert_eq!(x, bits(&split, key), "{key}");
    }
    // The head starts at 0 (V = 0) and moves once it has had an optimiser step.
    let v = col(&full, "value/mean");
    assert_eq!(v[0], 0.0, "{v:?}");
    assert!(v[1..].iter().any(|&x| x != 0.0), "{v:?}");
    let ck = gradus_train::checkpoint::latest_checkpoint(&full)
        .unwrap()
        .unwrap();
    assert!(ck.join("value_head.json").exists());
}

#[test]
fn constrained_ppo_with_a_threshold_search_resumes_exactly() {
    // μ-PPO over the two components (task, digit) with NM-PPO moving θ every generation batch
    // against an evaluation score; the multipliers, the thresholds and the search state are part
    // of each checkpoint, so a run stopped after step 3 and resumed logs the same values.
    use gradus_train::rl::constraints::{ConstraintKind, ThresholdSearch};
    let d = tempfile::tempdir().unwrap();
    let init = init_model(d.path(), false);
    let mut a = cfg(d.path(), &init, "cppo");
    a.algorithm.kind = AlgorithmKind::Ppo;
    a.algorithm.num_generations = 2;
    a.algorithm.beta = 0.05;
    a.train.steps = 6;
    a.train.save_every = 1;
    a.constraints.kind = ConstraintKind::Inequality;
    a.constraints.thresholds = vec![0.5, 0.5];
    a.constraints.search = ThresholdSearch::NelderMead;
    a.constraints.search_every = 1;
    a.constraints.search_burn_in = 1;
    // The PI Lagrangian's proportional term is part of the multipliers' state too.
    a.constraints.proportional = 2.0;
    a.constraints.eval = vec![reward(RewardKind::WordFraction {
        words: vec!["1".into(), "2".into()],
        peak: Some(0.3),
        width: 1.0,
    })];
    run(&a, false).unwrap();
    let mut b = a.clone();
    b.run.name = "cppo-split".into();
    b.train.stop_after = 3;
    run(&b, false).unwrap();
    b.train.stop_after = 0;
    run(&b, true).unwrap();
    let (full, split) = (d.path().join("cppo"), d.path().join("cppo-split"));
    for key in [
        "train/loss",
        "value/loss",
        "eval_score",
        "constraints/task/lambda",
        "constraints/digit/lambda",
        "constraints/digit/threshold",
        "constraints/task/threshold",
    ] {
        let x = bits(&full, key);
        assert_eq!(x.len(), 6, "{key} logged every step");
        assert_eq!(x, bits(&split, key), "{key}");
    }
    // λ starts at 0.01 and moves; the search walks the initial simplex: θ = (0.5, 0.5), then
    // (0.6, 0.5), then (0.5, 0.6) (search_step 0.1), two generation batches each: one of burn-in,
    // one scored (the split run stops inside the second θ's window, after its burn-in batch).
    let l = col(&full, "constraints/digit/lambda");
    // (A batch whose component mean equals θ exactly leaves λ where it is: ask that it moves at all.)
    assert!(
        (l[0] - 0.01).abs() < 1e-9 && l.iter().any(|&x| x != l[0]),
        "{l:?}"
    );
    let (t0, t1) = (
        col(&full, "constraints/task/threshold"),
        col(&full, "constraints/digit/threshold"),
    );
    for k in [0, 1] {
        assert_eq!((t0[k], t1[k]), (0.5, 0.5), "{t0:?} {t1:?}");
    }
    for k in [2, 3] {
        assert!((t0[k] - 0.6).abs() < 1e-12 && t1[k] == 0.5, "{t0:?} {t1:?}");
    }
    for k in [4, 5] {
        assert!(t0[k] == 0.5 && (t1[k] - 0.6).abs() < 1e-12, "{t0:?} {t1:?}");
    }
    let ck = gradus_train::checkpoint::latest_checkpoint(&full)
        .unwrap()
        .unwrap();
    for f in ["value_head.json", "value_head_1.json", "value_head_2.json"] {
        assert!(ck.join(f).exists(), "{f}");
    }
}

#[test]
fn constraint_settings_are_checked() {
    use gradus_train::rl::constraints::{ConstraintKind, ThresholdSearch};
    let d = tempfile::tempdir().unwrap();
    let init = init_model(d.path(), false);
    let mut c = cfg(d.path(), &init, "bad-c");
    c.constraints.kind = ConstraintKind::Equality;
    c.constraints.thresholds = vec![0.5, 0.5];
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("constraints.kind") && e.contains("ppo"), "{e}");
    c.algorithm.kind = AlgorithmKind::Ppo;
    c.validate().unwrap();
    c.constraints.thresholds = vec![0.5];
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.contains("constraints.thresholds") && e.contains("2 [[rewards]]"),
        "{e}"
    );
    c.constraints.thresholds = vec![0.5, 0.5];
    c.constraints.search = ThresholdSearch::NelderMead;
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("constraints.eval"), "{e}");
    c.constraints.search = ThresholdSearch::Fixed;
    c.constraints.initial = 1.0;
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("constraints.initial"), "{e}");
    c.constraints.initial = 0.01;
    c.constraints.proportional = -1.0;
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("constraints.proportional"), "{e}");
    c.constraints.proportional = 0.0;
    c.constraints.search = ThresholdSearch::NelderMead;
    c.constraints.eval = c.rewards.clone();
    c.validate().unwrap();
    for field in ["search_reach_tol", "search_xtol"] {
        let mut b = c.clone();
        match field {
            "search_reach_tol" => b.constraints.search_reach_tol = f64::NAN,
            _ => b.constraints.search_xtol = -0.1,
        }
        let e = b.validate().unwrap_err().to_string();
        assert!(e.contains(&format!("constraints.{field}")), "{e}");
    }
    // word_fraction: the share of words in the set (by hand: 2 of 4), 0 without words.
    use gradus_train::rl::rewards::word_fraction;
    let set = vec!["a".to_string(), "b".to_string()];
    assert_eq!(word_fraction("a x b y", &set), 0.5);
    assert_eq!(word_fraction("  ", &set), 0.0);
    let mut c = cfg(d.path(), &init, "bad-w");
    c.rewards = vec![reward(RewardKind::WordFraction {
        words: vec![],
        peak: None,
        width: 1.0,
    })];
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("rewards[0].words"), "{e}");
}
