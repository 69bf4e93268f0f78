//! Parity with hmmlearn 0.3 `GaussianHMM` (fixture: `tests/fixtures/hmmlearn/gen.py`): from the same
//! initialisation, gradus reproduces the per-iteration log-likelihood trajectory, the fitted start
//! probabilities, transition matrix, means and covariances within 1e-6 relative, the Viterbi path
//! exactly, and the score, AIC and BIC.

use gradus_dynamics::{Covariance, FitOptions, GaussianHmm, Sequences};
use serde_json::Value;

const REL: f64 = 1e-6;

fn fixture() -> Value {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/hmmlearn/hmmlearn.json"
    );
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn flat(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(a) => a.iter().flat_map(flat).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap()],
        other => panic!("not a number: {other}"),
    }
}

fn assert_close(name: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        // Relative error, with an absolute floor of 1e-12 for entries that are (nearly) zero.
        let err = (g - w).abs() / w.abs().max(1e-6);
        assert!(
            err < REL || (g - w).abs() < 1e-12,
            "{name}[{i}]: gradus {g} vs hmmlearn {w} (rel {err:.2e})"
        );
    }
}

fn check(cov: Covariance, key: &str) {
    let f = fixture();
    let (k, d) = (
        f["k"].as_u64().unwrap() as usize,
        f["d"].as_u64().unwrap() as usize,
    );
    let seqs: Vec<Vec<f64>> = f["sequences"]
        .as_array()
        .unwrap()
        .iter()
        .map(flat)
        .collect();
    let data = Sequences::new(d, seqs.clone(), &[]).unwrap();
    let init = &f["init"];
    let mut m = GaussianHmm {
        k,
        d,
        covariance: cov,
        startprob: flat(&init["startprob"]),
        transmat: flat(&init["transmat"]),
        means: flat(&init["means"]),
        covars: flat(&init[format!("covars_{key}")]),
    };
    let opts = FitOptions {
        n_iter: f["n_iter"].as_u64().unwrap() as usize,
        tol: f["tol"].as_f64().unwrap(),
        ..FitOptions::default()
    };
    let rep = m.fit_from(&data, &opts).unwrap();
    let want = &f[key];
    assert_close("history", &rep.history, &flat(&want["history"]));
    assert_eq!(rep.converged, want["converged"].as_bool().unwrap());
    assert_close("startprob", &m.startprob, &flat(&want["startprob"]));
    assert_close("transmat", &m.transmat, &flat(&want["transmat"]));
    assert_close("means", &m.means, &flat(&want["means"]));
    assert_close("covars", &m.covars, &flat(&want["covars"]));
    // Viterbi over each sequence, concatenated (hmmlearn's decode with lengths).
    let mut path = Vec::new();
    let mut lp = 0.0;
    for s in &seqs {
        let (l, p) = m.viterbi(s).unwrap();
        lp += l;
        path.extend(p.into_iter().map(|s| s as u64));
    }
    let want_path: Vec<u64> = want["viterbi_path"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(path, want_path, "Viterbi path");
    assert_close(
        "viterbi_logprob",
        &[lp],
        &[want["viterbi_logprob"].as_f64().unwrap()],
    );
    assert_close(
        "score",
        &[m.score(&data).unwrap()],
        &[want["score"].as_f64().unwrap()],
    );
    assert_close(
        "aic",
        &[m.aic(&data).unwrap()],
        &[want["aic"].as_f64().unwrap()],
    );
    assert_close(
        "bic",
        &[m.bic(&data).unwrap()],
        &[want["bic"].as_f64().unwrap()],
    );
}

#[test]
fn diag_matches_hmmlearn() {
    check(Covariance::Diag, "diag");
}

#[test]
fn full_matches_hmmlearn() {
    check(Covariance::Full, "full");
}
