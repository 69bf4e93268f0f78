//! The README is true: every command in its ```sh blocks runs, in order, in a scratch directory
//! (with the repository's `configs/`), against the built-in data, and exits 0. `gradus` there is
//! `tests/readme/gradus_shim.py`: the real binary with the README's own arguments plus the flags
//! that make each run take seconds (`--fast`, `--size smoke`, `--set train.steps=3`, ...); paths,
//! field names, quoting and every other flag are the README's. `cargo run --release --bin gradus
//! --` runs the same binary; `cargo test` (the set-up block's second line) is this suite and is
//! not run again. Cluster job templates (the sbatch and Ray files in non-`sh` fences) are not run:
//! their local equivalents are `sh` blocks. Needs python3 (as the sandbox tests do).

use std::path::Path;
use std::process::Command;

/// The ```sh blocks of `readme`, each with the line it starts on.
fn sh_blocks(readme: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(usize, String)> = None;
    for (i, line) in readme.lines().enumerate() {
        match (&mut cur, line.trim_end()) {
            (None, "```sh") => cur = Some((i + 2, String::new())),
            (Some(_), "```") => out.push(cur.take().unwrap()),
            (Some((_, b)), l) => {
                b.push_str(l);
                b.push('\n');
            }
            _ => {}
        }
    }
    out
}

#[test]
fn every_readme_command_runs_on_built_in_data() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let blocks = sh_blocks(&readme);
    assert!(blocks.len() >= 10, "found {} sh blocks", blocks.len());

    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(work.join("bin")).unwrap();
    std::os::unix::fs::symlink(root.join("configs"), work.join("configs")).unwrap();
    let shim = work.join("bin/gradus");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/readme/gradus_shim.py"),
        &shim,
    )
    .unwrap();
    let log = dir.path().join("commands.log");
    let path = format!(
        "{}:{}",
        work.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for (line, block) in &blocks {
        // The set-up block: `cargo run ... --` is the binary; `cargo test` is this very suite.
        let script: String = block
            .lines()
            .filter(|l| !l.trim_start().starts_with("cargo test"))
            .map(|l| l.replace("cargo run --release --bin gradus --", "gradus"))
            .collect::<Vec<_>>()
            .join("\n");
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .current_dir(&work)
            .env("PATH", &path)
            .env("GRADUS_BIN", env!("CARGO_BIN_EXE_gradus"))
            .env("GRADUS_README_LOG", &log)
            .env("RAYON_NUM_THREADS", "2")
            .output()
            .unwrap();
        let ran = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            out.status.success(),
            "README.md block at line {line} failed ({}):\n{script}\n--- last commands run:\n{}\n--- stderr:\n{}\n--- stdout:\n{}",
            out.status,
            ran.lines().rev().take(3).collect::<Vec<_>>().join("\n"),
            tail(&String::from_utf8_lossy(&out.stderr)),
            tail(&String::from_utf8_lossy(&out.stdout)),
        );
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(25)..].join("\n")
}
