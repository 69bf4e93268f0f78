//! `gradus lab constrained-rl` at smoke size: every arm runs from the same SFT start and logs the
//! hidden evaluation score, the constrained arms log their multipliers and thresholds, a second
//! call resumes (nothing is retrained), and the hidden score is the one the docs state.

use gradus_train::lab_constrained::{hidden_score, run, ConstrainedLabOptions, LabSize};

#[test]
fn hidden_score_by_hand() {
    // Peaks (0.6, 0.5), width 0.6: 1 at the proxy points; at the uniform start (1/3, 1/3):
    // 0.5·[(1 − (0.2667/0.6)²) + (1 − (0.1667/0.6)²)] = 0.5·(0.80247 + 0.92284) = 0.86265.
    assert!((hidden_score(0.6, 0.5) - 1.0).abs() < 1e-12);
    assert!((hidden_score(1.0 / 3.0, 1.0 / 3.0) - 0.862654).abs() < 1e-5);
    // Past the proxy points the score falls: all mass on the shared words (1, 1).
    assert!(hidden_score(1.0, 1.0) < hidden_score(0.6, 0.5) - 0.5);
}

#[test]
fn smoke_lab_runs_every_arm_and_resumes() {
    let d = tempfile::tempdir().unwrap();
    let o = ConstrainedLabOptions::new(d.path(), LabSize::Smoke);
    let rows = run(&o).unwrap();
    let arms: Vec<&str> = rows.iter().map(|r| r.arm.as_str()).collect();
    assert_eq!(arms, ["fixed", "mu", "xi", "nm"]);
    for r in &rows {
        assert!(
            (0.0..=1.0).contains(&r.r_a) && (0.0..=1.0).contains(&r.r_b),
            "{r:?}"
        );
        assert!(r.eval.is_finite() && r.eval <= 1.0, "{r:?}");
        assert_eq!(r.thresholds.is_some(), r.arm != "fixed", "{r:?}");
        // β > 0 with the KL in the reward: the KL is logged.
        assert!(r.kl.is_some(), "{r:?}");
    }
    assert_eq!(rows[1].thresholds, Some([0.6, 0.5]));
    let lab = d.path().join("lab-constrained-rl");
    for f in [
        "results.md",
        "summary.json",
        "report.html",
        "sft/metrics.jsonl",
    ] {
        assert!(lab.join(f).exists(), "{f}");
    }
    // A second call finds every stage finished: the metrics are not rewritten.
    let before = std::fs::read_to_string(lab.join("mu/metrics.jsonl")).unwrap();
    let again = run(&o).unwrap();
    assert_eq!(again.len(), 4);
    assert_eq!(
        std::fs::read_to_string(lab.join("mu/metrics.jsonl")).unwrap(),
        before
    );
    // The hidden score is never a training reward.
    let cfg = std::fs::read_to_string(lab.join("fixed/config.resolved.toml")).unwrap();
    assert!(
        cfg.contains("eval_A") && cfg.contains("[constraints]"),
        "{cfg}"
    );
}
