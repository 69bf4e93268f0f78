//! DAPO's dynamic sampling in `train rl` (`algorithm.dynamic_sampling`): groups whose rewards are
//! all equal are dropped and more prompts drawn until the generation batch is full; after
//! `max_generation_rounds` the batch is filled with dropped groups, first drawn first. Tiny random
//! model, a few CPU steps.

mod common;
use common::{col, init_model};

use std::path::Path;

use gradus_train::rl::rewards::{RewardKind, RewardSpec};
use gradus_train::rl::{informative_groups, run, AlgorithmKind, RlConfig};
use gradus_train::schedule::Schedule;

/// A GRPO run of 4 prompts × G 4 per step whose only reward is `pattern` found in the completion.
fn cfg(dir: &Path, init: &Path, name: &str, pattern: &str) -> RlConfig {
    let mut c = RlConfig::default();
    c.run.dir = dir.to_path_buf();
    c.run.name = name.into();
    c.run.seed = 5;
    c.model.init_from = Some(init.to_path_buf());
    c.data.synthetic_prompts = 64;
    c.generation.max_new_tokens = 4;
    c.algorithm.num_generations = 4;
    c.rewards = vec![RewardSpec {
        name: Some("r".into()),
        weight: 1.0,
        kind: RewardKind::Regex {
            pattern: pattern.into(),
        },
    }];
    c.train.steps = 3;
    c.train.batch_size = 16;
    c.train.lr = 1e-2;
    c.train.progress = false;
    c.optimizer.weight_decay = 0.0;
    c.schedule = Schedule::Constant { warmup_steps: 0 };
    c
}

/// The completions table of a run, one JSON object per row.
fn rows(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("completions.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn informative_groups_by_hand() {
    // G = 3: [1,1,1] all equal → no signal; [0,1,0] differ → signal; [-,-,1] one scored
    // completion, no baseline → no signal; [-,0,1] two scored that differ → signal.
    let r = [
        Some(1.0),
        Some(1.0),
        Some(1.0),
        Some(0.0),
        Some(1.0),
        Some(0.0),
        None,
        None,
        Some(1.0),
        None,
        Some(0.0),
        Some(1.0),
    ];
    assert_eq!(informative_groups(&r, 3), vec![false, true, false, true]);
    // G = 2: equal non-binary rewards, nothing scored, a tiny difference.
    assert_eq!(
        informative_groups(
            &[Some(0.5), Some(0.5), None, None, Some(0.5), Some(0.5001)],
            2
        ),
        vec![false, false, true]
    );
}

#[test]
fn dynamic_sampling_keeps_only_groups_with_a_reward_spread_and_resumes_exactly() {
    // "[0-9]": a random model writes a digit in some completions of a prompt and not in others,
    // so some groups are mixed and others not.
    let d = tempfile::tempdir().unwrap();
    let init = init_model(d.path(), false);
    let mut a = cfg(d.path(), &init, "full", "[0-9]");
    a.algorithm.dynamic_sampling = true;
    a.algorithm.max_generation_rounds = 20;
    run(&a, false).unwrap();
    let full = d.path().join("full");
    let filled = col(&full, "dynamic_sampling/filled_groups");
    let rounds = col(&full, "dynamic_sampling/rounds");
    assert_eq!(filled.len(), 3, "logged every step");
    // Within 20 rounds of 4 prompts each, 4 mixed groups were found every time (otherwise the
    // test's reward no longer mixes: pick another pattern).
    assert_eq!(filled, vec![0.0; 3], "rounds {rounds:?}");
    assert!(rounds.iter().all(|&r| r >= 1.0), "{rounds:?}");
    // No group of the batch is uninformative, so no advantage is 0 by its group.
    assert_eq!(col(&full, "frac_reward_zero_std"), vec![0.0; 3]);
    // Every logged group (4 consecutive rows) has two different rewards.
    let rs = rows(&full);
    assert_eq!(rs.len(), 3 * 16);
    for grp in rs.chunks(4) {
        let v: Vec<f64> = grp.iter().map(|r| r["reward"].as_f64().unwrap()).collect();
        assert!(v.iter().any(|&x| x != v[0]), "{grp:?}");
        assert!(grp.iter().all(|r| r["prompt"] == grp[0]["prompt"]));
    }
    // Kept groups / drawn groups = 4 / (4 · rounds).
    let kept = col(&full, "dynamic_sampling/kept_fraction");
    for (k, r) in kept.iter().zip(&rounds) {
        assert!((k - 1.0 / r).abs() < 1e-12, "{kept:?} {rounds:?}");
    }
    // Stopped after step 1 and resumed: bit-identical (the rounds' seeds and the prompt cursor).
    let mut b = a.clone();
    b.run.name = "split".into();
    b.train.stop_after = 1;
    run(&b, false).unwrap();
    b.train.stop_after = 0;
    run(&b, true).unwrap();
    let split = d.path().join("split");
    for key in [
        "train/loss",
        "train/grad_norm",
        "reward/mean",
        "dynamic_sampling/rounds",
        "dynamic_sampling/reward_mean",
    ] {
        let bits = |dir: &Path| -> Vec<u64> { col(dir, key).iter().map(|x| x.to_bits()).collect() };
        assert_eq!(bits(&full), bits(&split), "{key}");
    }
    assert_eq!(rows(&full), rows(&split));
}

#[test]
fn a_reward_without_spread_fills_the_batch_with_the_first_groups_after_the_last_round() {
    // "^" matches every completion (even an empty one): every group is uninformative. After 3 rounds the batch is
    // filled with the dropped groups, first drawn first: round 0's 4 groups, i.e. exactly the
    // batch of a run without dynamic sampling (round 0 uses its seed and prompts).
    let d = tempfile::tempdir().unwrap();
    let init = init_model(d.path(), false);
    let mut plain = cfg(d.path(), &init, "plain", "^");
    plain.train.steps = 1;
    run(&plain, false).unwrap();
    let mut dynamic = plain.clone();
    dynamic.run.name = "dynamic".into();
    dynamic.algorithm.dynamic_sampling = true;
    dynamic.algorithm.max_generation_rounds = 3;
    run(&dynamic, false).unwrap();
    let dir = d.path().join("dynamic");
    assert_eq!(col(&dir, "dynamic_sampling/rounds"), vec![3.0]);
    assert_eq!(col(&dir, "dynamic_sampling/filled_groups"), vec![4.0]);
    assert_eq!(col(&dir, "dynamic_sampling/kept_fraction"), vec![0.0]);
    assert_eq!(col(&dir, "dynamic_sampling/reward_mean"), vec![1.0]);
    let strip = |rs: Vec<serde_json::Value>| -> Vec<(String, String)> {
        rs.iter()
            .map(|r| {
                (
                    r["prompt"].as_str().unwrap().to_string(),
                    r["completion"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    assert_eq!(strip(rows(&dir)), strip(rows(&d.path().join("plain"))));
}

#[test]
fn dynamic_sampling_settings_are_checked() {
    let d = tempfile::tempdir().unwrap();
    let init = init_model(d.path(), false);
    let mut c = cfg(d.path(), &init, "bad", "[0-9]");
    c.algorithm.dynamic_sampling = true;
    c.algorithm.max_generation_rounds = 0;
    let e = format!("{:#}", run(&c, false).err().unwrap());
    assert!(e.contains("algorithm.max_generation_rounds"), "{e}");
    c.algorithm.max_generation_rounds = 5;
    c.algorithm.kind = AlgorithmKind::ReinforcePp;
    let e = format!("{:#}", run(&c, false).err().unwrap());
    assert!(e.contains("algorithm.dynamic_sampling"), "{e}");
}
