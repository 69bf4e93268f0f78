//! `gradus lab llome` from the command line: the resolved config, and bad settings refused with
//! an error naming the field before anything runs.

mod common;
use common::{fails_naming, gradus, ok};

#[test]
fn llome_shows_its_config_and_refuses_bad_settings() {
    let d = tempfile::tempdir().unwrap();
    let out = ok(&gradus(
        &[
            "lab",
            "llome",
            "--set",
            "budget.per_round=100",
            "--show-config",
        ],
        d.path(),
    ));
    assert!(
        out.contains("[ehrlich]") && out.contains("per_round = 100"),
        "{out}"
    );
    // An oracle budget smaller than a round.
    fails_naming(
        &gradus(&["lab", "llome", "--set", "budget.per_round=1"], d.path()),
        &["budget.per_round"],
    );
    // c·k > L: 4 motifs of 16 in 32 positions.
    fails_naming(
        &gradus(
            &["lab", "llome", "--set", "ehrlich.motif_length=16"],
            d.path(),
        ),
        &["ehrlich.num_motifs"],
    );
    // A typo in a key.
    fails_naming(
        &gradus(&["lab", "llome", "--set", "budget.per_rond=5"], d.path()),
        &["per_rond"],
    );
    // Nothing was written.
    assert!(!d.path().join("runs").exists());
}
