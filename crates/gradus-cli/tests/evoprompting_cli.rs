//! `gradus lab evoprompting` from the command line: presets and config files resolve in order
//! (size < file < --set), bad settings are refused naming the field before anything runs, and the
//! smoke size runs end to end.

mod common;
use common::{fails_naming, gradus, ok};

#[test]
fn evoprompting_resolves_its_config_and_refuses_bad_settings() {
    let d = tempfile::tempdir().unwrap();
    let out = ok(&gradus(
        &["lab", "evoprompting", "--size", "smoke", "--show-config"],
        d.path(),
    ));
    // The smoke preset: 4 + 2 rounds of 2 × 3.
    assert!(
        out.contains("evaluations = 16") && out.contains("[tune.lora]"),
        "{out}"
    );
    // A file laid over the preset keeps the preset's other values; --set wins over both.
    std::fs::write(d.path().join("c.toml"), "[search]\nchildren = 4\n").unwrap();
    let out = ok(&gradus(
        &[
            "lab",
            "evoprompting",
            "--size",
            "smoke",
            "--config",
            "c.toml",
            "--set",
            "budget.evaluations=20",
            "--show-config",
        ],
        d.path(),
    ));
    assert!(
        out.contains("children = 4") && out.contains("initial = 4"),
        "{out}"
    );
    assert!(out.contains("evaluations = 20"), "{out}");
    // A budget smaller than the initial population plus one round (16 + 64 by default).
    fails_naming(
        &gradus(
            &["lab", "evoprompting", "--set", "budget.evaluations=50"],
            d.path(),
        ),
        &["budget.evaluations", "80"],
    );
    // A typo in a key, from --set and from a file.
    fails_naming(
        &gradus(
            &["lab", "evoprompting", "--set", "search.childs=3"],
            d.path(),
        ),
        &["childs"],
    );
    std::fs::write(d.path().join("bad.toml"), "[serch]\nchildren = 4\n").unwrap();
    fails_naming(
        &gradus(&["lab", "evoprompting", "--config", "bad.toml"], d.path()),
        &["bad.toml", "serch"],
    );
    // Nothing was written.
    assert!(!d.path().join("runs").exists());
}

#[test]
fn evoprompting_smoke_runs_and_resumes() {
    let d = tempfile::tempdir().unwrap();
    let out = ok(&gradus(
        &["lab", "evoprompting", "--size", "smoke"],
        d.path(),
    ));
    assert!(
        out.contains("GA (random mutations)") && out.contains("report:"),
        "{out}"
    );
    let lab = d.path().join("runs/lab-evoprompting");
    assert!(lab.join("report.html").is_file() && lab.join("results.md").is_file());
    // Starting again is refused; --resume reads every finished round back.
    fails_naming(
        &gradus(&["lab", "evoprompting", "--size", "smoke"], d.path()),
        &["--resume"],
    );
    let again = ok(&gradus(
        &["lab", "evoprompting", "--size", "smoke", "--resume"],
        d.path(),
    ));
    assert_eq!(again, out);
}
