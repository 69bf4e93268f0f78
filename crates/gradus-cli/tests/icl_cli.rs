//! The ICL labs from the command line at smoke size, and their argument errors.

mod common;
use common::gradus;

#[test]
fn icl_labs_run_and_refuse_bad_arguments() {
    let d = tempfile::tempdir().unwrap();
    let o = gradus(
        &[
            "lab",
            "icl-emergence",
            "--size",
            "smoke",
            "--burstiness",
            "4",
            "--alphas",
            "0,1",
            "--quiet",
        ],
        d.path(),
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Header + the grid B = 4 × α ∈ {0, 1}, then the report path.
    assert!(out.contains("B4") || out.lines().count() >= 4, "{out}");
    assert!(d.path().join("runs/icl-emergence/report.html").exists());
    assert!(d
        .path()
        .join("runs/icl-emergence/B4-alpha1/metrics.jsonl")
        .exists());
    // Burstiness above the context of 8: an error naming the field, no panic.
    let o = gradus(
        &[
            "lab",
            "icl-emergence",
            "--size",
            "smoke",
            "--burstiness",
            "9",
            "--dir",
            "other",
            "--quiet",
        ],
        d.path(),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("data.burstiness"),
        "{err}"
    );
    // Unknown Boolean class.
    let o = gradus(
        &["lab", "boolean-icl", "--classes", "xor3", "--quiet"],
        d.path(),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("unknown class `xor3`"),
        "{err}"
    );
    // More relevant bits than bits.
    let o = gradus(
        &[
            "lab",
            "boolean-icl",
            "--size",
            "smoke",
            "--classes",
            "sparse_parity_7",
            "--quiet",
        ],
        d.path(),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("data.k"), "{err}");
}

#[test]
fn sas_lab_runs_and_refuses_bad_arguments() {
    let d = tempfile::tempdir().unwrap();
    let o = gradus(
        &[
            "lab",
            "sas",
            "--size",
            "smoke",
            "--release-step",
            "2",
            "--quiet",
        ],
        d.path(),
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Header + three arms, then the results and report paths.
    for arm in ["baseline", "sas-minus", "sas-release"] {
        assert!(out.contains(arm), "{out}");
        assert!(d
            .path()
            .join("runs/sas")
            .join(arm)
            .join("metrics.jsonl")
            .exists());
    }
    assert!(d.path().join("runs/sas/results.md").exists());
    assert!(d.path().join("runs/sas/report.html").exists());
    // A release step past the run: an error naming the option, no panic.
    let o = gradus(
        &[
            "lab",
            "sas",
            "--size",
            "smoke",
            "--release-step",
            "9",
            "--dir",
            "other",
            "--quiet",
        ],
        d.path(),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("release_step"), "{err}");
    // A negative λ (promotion) parses.
    let o = gradus(
        &[
            "lab",
            "sas",
            "--size",
            "smoke",
            "--sas-lambda",
            "-0.1",
            "--dir",
            "neg",
            "--quiet",
        ],
        d.path(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
