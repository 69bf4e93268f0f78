//! The preference commands end to end: `lab ranking-accuracy --fast` runs the whole chain,
//! `eval ranking` and `eval reward` read its checkpoints, and mistakes are named.

use serde_json::Value;

mod common;
use common::{gradus, ok};

#[test]
fn lab_then_eval_ranking_and_reward() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let out = ok(&gradus(
        &["lab", "ranking-accuracy", "--fast", "--dir", "runs"],
        dir,
    ));
    assert!(
        out.contains("held-out ranking accuracy") && out.contains("idealised"),
        "{out}"
    );
    let sft = dir.join("runs/lab-ranking-sft/checkpoints/step-4");
    let dpo = dir.join("runs/lab-ranking-dpo/checkpoints/step-4");
    assert!(dpo.join("model.safetensors").exists());
    let report = std::fs::read_to_string(dir.join("runs/lab-ranking-dpo/report.html")).unwrap();
    assert!(
        report.contains("ranking accuracy"),
        "the report shows the ranking diagnostics"
    );

    // eval ranking: the DPO policy against its SFT reference.
    let j: Value = serde_json::from_str(&ok(&gradus(
        &[
            "eval",
            "ranking",
            "--model",
            dpo.to_str().unwrap(),
            "--reference",
            sft.to_str().unwrap(),
            "--pairs",
            "8",
            "--json",
        ],
        dir,
    )))
    .unwrap();
    assert_eq!(j["pairs"], 8);
    assert_eq!(j["idealised"].as_array().unwrap().len(), 5);
    assert_eq!(j["flip_consistency"], 1.0);
    // A model against itself: every margin is 0, so reward accuracy is 0 and ranking = reference.
    let j: Value = serde_json::from_str(&ok(&gradus(
        &[
            "eval",
            "ranking",
            "--model",
            sft.to_str().unwrap(),
            "--reference",
            sft.to_str().unwrap(),
            "--pairs",
            "8",
            "--json",
        ],
        dir,
    )))
    .unwrap();
    assert_eq!(j["reward_accuracy"], 0.0);
    assert_eq!(j["ranking_accuracy"], j["reference_ranking_accuracy"]);

    // train reward from the SFT model, then eval reward on it.
    let o = gradus(
        &[
            "train",
            "reward",
            "--set",
            &format!("model.init_from=\"{}\"", sft.display()),
            "--set",
            "train.steps=2",
            "--set",
            "train.batch_size=4",
            "--set",
            "prefs.synthetic_pairs=16",
            "--set",
            "prefs.eval_pairs=8",
            "--set",
            "train.progress=false",
            "--set",
            "run.name=rm",
            // Digit-split tokens make some synthetic pairs longer than the default 128 (as the lab).
            "--set",
            "data.seq_len=256",
        ],
        dir,
    );
    assert!(ok(&o).contains("pairwise accuracy"));
    let rm = dir.join("runs/rm/checkpoints/step-2");
    let scores = dir.join("scores.jsonl");
    let j: Value = serde_json::from_str(&ok(&gradus(
        &[
            "eval",
            "reward",
            "--model",
            rm.to_str().unwrap(),
            "--pairs",
            "8",
            "--json",
            "--out",
            scores.to_str().unwrap(),
        ],
        dir,
    )))
    .unwrap();
    assert_eq!(j["pairs"], 8);
    assert_eq!(std::fs::read_to_string(&scores).unwrap().lines().count(), 8);

    // eval reward on a plain decoder: named.
    let o = gradus(&["eval", "reward", "--model", sft.to_str().unwrap()], dir);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("reward_head.json") && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn dpo_config_mistakes_are_named() {
    let d = tempfile::tempdir().unwrap();
    let o = gradus(
        &[
            "train",
            "dpo",
            "--set",
            "objective.kind=dpo",
            "--set",
            "objective.betta=0.2",
        ],
        d.path(),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("betta"), "{err}");
    let o = gradus(&["train", "dpo"], d.path());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("model.init_from"), "{err}");
    let o = gradus(
        &[
            "train",
            "dpo",
            "--set",
            "objective.kind=ipo",
            "--show-config",
        ],
        d.path(),
    );
    let out = ok(&o);
    assert!(
        out.contains("kind = \"ipo\"") && out.contains("[prefs]"),
        "{out}"
    );
}
