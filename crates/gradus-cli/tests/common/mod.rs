//! What the CLI test files share: run the `gradus` binary, and the three verdicts on its output
//! (success with its stdout, success with JSON on stdout, a user error that names what is wrong).
#![allow(dead_code)] // each test file uses some of these

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

/// Runs `gradus ARGS` in `cwd` (logging left at its default).
pub fn gradus(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gradus"))
        .args(args)
        .current_dir(cwd)
        .env_remove("GRADUS_LOG")
        .output()
        .expect("running the gradus binary")
}

/// The run succeeded without a panic; its stdout.
pub fn ok(o: &Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{out}\nstderr:\n{err}",
        o.status.code()
    );
    assert!(!err.contains("panicked"), "{err}");
    out
}

/// The run succeeded and printed JSON; that value.
pub fn ok_json(o: &Output) -> Value {
    let out = ok(o);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {out}"))
}

/// Exit status 1 (a user error), no panic, and stderr names every needle; the stderr.
pub fn fails_naming(o: &Output, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(!err.contains("panicked"), "panic on user input: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr should name {n:?}: {err}");
    }
    err
}
