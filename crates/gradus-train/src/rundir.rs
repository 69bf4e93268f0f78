//! Who owns a run directory, and what `--resume` may change.
//!
//! A run directory belongs to one run, and one process at a time:
//! - **Ownership.** Starting a run ([`Start::New`]) where a run already is (a `config.resolved.toml`,
//!   `metrics.jsonl` or `checkpoints/`) is refused with a message that offers `--resume` (continue
//!   it) or `--overwrite` ([`Start::Overwrite`]: the old directory is renamed aside to
//!   `<name>.replaced-<UTC time>`, never deleted).
//! - **Lock.** [`RunLock`] holds `run.lock` (the holder's pid, host and start time) with an exclusive
//!   advisory lock (`flock`) for the whole run. The kernel drops the lock when the holder dies, so a
//!   lock file left by a killed process is detected as stale and taken over, while a live holder
//!   keeps every other process out (the refusal names its pid and host).
//! - **Resume.** [`Start::Resume`] compares the new resolved config with the run's
//!   `config.resolved.toml` before anything is written ([`diff_configs`]): settings the checkpoint
//!   depends on (model shape, tokenizer, data, batch size, seed, ...) can never change; the step
//!   count, schedule, learning rate and other loop settings change only when `--set` names them,
//!   and each such change is recorded in the new `config.resolved.toml` under `[[run.history]]`.
//!   The latest checkpoint's checksums are verified at the same time
//!   ([`crate::checkpoint::verify_checkpoint`]). `config.resolved.toml` is written only once the
//!   checkpoint has loaded ([`RunDir::write_config`]).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

pub use gradus_tensor::lock::{host_name, DirLock, LockInfo};
use gradus_tensor::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{list_checkpoints, verify_checkpoint, CHECKPOINTS_DIR};
use crate::metrics::METRICS_FILE;

/// The lock file's name inside a run directory.
pub const LOCK_FILE: &str = "run.lock";
/// The resolved config's name inside a run directory.
pub const CONFIG_FILE: &str = "config.resolved.toml";

/// How a recipe treats its run directory.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Start {
    /// A new run: refused if the directory already holds one.
    #[default]
    New,
    /// Continue the run from its latest checkpoint (a fresh start if it has none yet). `explicit`
    /// lists the settings the user set on this command line (`--set` keys): only those may differ
    /// from the run's recorded config, and only if the checkpoint does not depend on them.
    Resume { explicit: Vec<String> },
    /// A new run; an existing run directory is first renamed aside (`<name>.replaced-<time>`).
    Overwrite,
}

impl From<bool> for Start {
    /// `true`: resume (no setting may change); `false`: a new run.
    fn from(resume: bool) -> Self {
        if resume {
            Start::Resume {
                explicit: Vec::new(),
            }
        } else {
            Start::New
        }
    }
}

impl Start {
    pub fn is_resume(&self) -> bool {
        matches!(self, Start::Resume { .. })
    }
}

/// One setting changed when a run was resumed (`[[run.history]]` in `config.resolved.toml`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigChange {
    /// The step the run was resumed at.
    pub at_step: u64,
    /// Dotted key, e.g. `train.steps`.
    pub key: String,
    /// Old and new values as TOML text (`"(unset)"` when absent).
    pub from: String,
    pub to: String,
}

// ---------------------------------------------------------------------------------------------
// The lock

/// The lock of a run directory (`run.lock`; see [`gradus_tensor::lock`]).
pub type RunLock = DirLock;

/// Takes `dir/run.lock` (creating `dir`): fails while a live process holds it, naming its pid and
/// host; takes over the lock file of a process that died.
pub fn lock_run(dir: &Path) -> Result<RunLock> {
    DirLock::acquire(dir, LOCK_FILE, "the run directory")
}

// ---------------------------------------------------------------------------------------------
// Config comparison

/// How a setting may change on `--resume`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeRule {
    /// Changes freely, not recorded (progress bar, where the runs live, per-invocation stop).
    Free,
    /// Changes only when `--set` names it; recorded in `[[run.history]]`.
    Explicit,
    /// Never: the checkpoint (weights, optimizer state, data cursor) depends on it.
    Fixed,
}

/// The rule for a dotted config key.
pub fn change_rule(key: &str) -> ChangeRule {
    let under = |p: &str| key == p || key.starts_with(&format!("{p}."));
    if [
        "run.dir",
        "run.history",
        "train.progress",
        "train.stop_after",
    ]
    .iter()
    .any(|p| under(p))
    {
        return ChangeRule::Free;
    }
    let fixed = [
        "run.name",
        "run.seed",
        "model",
        "tokenizer",
        "data",
        "lora",
        "head",
        "reference",
        "train.batch_size",
        "train.grad_accum",
        "prefs",
        "phf",
        "algorithm.num_generations",
        "algorithm.steps_per_generation",
        "algorithm.num_iterations",
    ];
    if under("prefs.eval_every") {
        return ChangeRule::Explicit;
    }
    if fixed.iter().any(|p| under(p)) {
        return ChangeRule::Fixed;
    }
    ChangeRule::Explicit
}

fn flatten(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, x) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, x, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// Dotted keys → TOML text of every leaf of a config.
pub fn flatten_config(v: &toml::Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    flatten("", v, &mut out);
    out
}

/// Compares the recorded config of a run with the config of a resume of it at `step`. Returns the
/// changes to record, or an error naming the first setting that may not change (or that changed
/// without `--set`), with its old and new values. `origin` is the recorded config's file.
pub fn diff_configs(
    old: &toml::Value,
    new: &toml::Value,
    explicit: &[String],
    step: u64,
    origin: &Path,
) -> Result<Vec<ConfigChange>> {
    let (a, b) = (flatten_config(old), flatten_config(new));
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let unset = "(unset)".to_string();
    let mut changes = Vec::new();
    for k in keys {
        let (x, y) = (a.get(k).unwrap_or(&unset), b.get(k).unwrap_or(&unset));
        if x == y {
            continue;
        }
        let named = explicit
            .iter()
            .any(|e| k == e || k.starts_with(&format!("{e}.")));
        match change_rule(k) {
            ChangeRule::Free => {}
            ChangeRule::Fixed => {
                return Err(Error::config(
                    k.clone(),
                    format!(
                        "changed from {x} to {y} since the run started ({}), but its checkpoint depends on it; \
                         resume with the old value, or start a new run (another run.name, or --overwrite)",
                        origin.display()
                    ),
                ))
            }
            ChangeRule::Explicit if !named => {
                return Err(Error::config(
                    k.clone(),
                    format!(
                        "changed from {x} to {y} since the run started ({}); a resumed run keeps its settings \
                         unless the command line says otherwise: add `--set {k}={y}` to change it (the change is \
                         recorded in config.resolved.toml), or drop the change",
                        origin.display()
                    ),
                ))
            }
            ChangeRule::Explicit => {
                changes.push(ConfigChange { at_step: step, key: k.clone(), from: x.clone(), to: y.clone() })
            }
        }
    }
    Ok(changes)
}

// ---------------------------------------------------------------------------------------------
// The run directory

/// A run directory held by this process: the lock, and the config to write once the run is
/// known to be consistent.
#[must_use = "the run directory is unlocked when this is dropped"]
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    resume: bool,
    lock: RunLock,
    config_text: String,
    config_written: bool,
    /// Where an `--overwrite` moved the previous run.
    pub moved_aside: Option<PathBuf>,
    /// Settings changed by this resume (recorded in the config).
    pub changes: Vec<ConfigChange>,
    /// The step of the checkpoint a resume continues from (None: a fresh start).
    pub resume_step: Option<u64>,
}

impl RunDir {
    /// The resolved config this run writes as `config.resolved.toml`.
    pub fn config_text(&self) -> &str {
        &self.config_text
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this invocation continues a run from a checkpoint.
    pub fn resuming(&self) -> bool {
        self.resume && self.resume_step.is_some()
    }

    /// Whether `--resume` was asked for (even when there was no checkpoint yet).
    pub fn resume_requested(&self) -> bool {
        self.resume
    }

    /// The lock held on the directory.
    pub fn lock(&self) -> &RunLock {
        &self.lock
    }

    /// Writes `config.resolved.toml` (once; later calls do nothing).
    pub fn write_config(&mut self) -> Result<()> {
        if !self.config_written {
            gradus_tensor::io::write_atomic(
                &self.path.join(CONFIG_FILE),
                self.config_text.as_bytes(),
            )?;
            self.config_written = true;
        }
        Ok(())
    }
}

/// What in `dir` shows that a run lives there (for the refusal message); empty if nothing.
fn run_contents(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for f in [CONFIG_FILE, METRICS_FILE] {
        if dir.join(f).exists() {
            found.push(f.to_string());
        }
    }
    if let Ok(cks) = list_checkpoints(dir) {
        if let Some((last, _)) = cks.last() {
            found.push(format!("{} checkpoint(s) up to step-{last}", cks.len()));
        }
    }
    if found.is_empty() && dir.join(CHECKPOINTS_DIR).exists() {
        found.push(format!("{CHECKPOINTS_DIR}/"));
    }
    found
}

/// A free name beside `dir` for the run an `--overwrite` moves aside.
fn aside_name(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    let secs = gradus_tensor::lock::now_secs();
    let (d, s) = (secs / 86400, secs % 86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = d as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + (month <= 2) as i64;
    let stamp = format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60
    );
    let mut k = 0;
    loop {
        let cand = dir.with_file_name(if k == 0 {
            format!("{name}.replaced-{stamp}")
        } else {
            format!("{name}.replaced-{stamp}-{k}")
        });
        if !cand.exists() {
            return cand;
        }
        k += 1;
    }
}

/// Takes the run directory `dir` for a run with resolved config `cfg` (see the module docs):
/// locks it, refuses to start over an existing run unless asked to, moves the old run aside on
/// `--overwrite`, and on `--resume` checks the config and the latest checkpoint before anything
/// is written. The config is written by [`RunDir::write_config`].
pub fn open_run<C: Serialize>(dir: &Path, cfg: &C, start: &Start) -> Result<RunDir> {
    let mut new_cfg =
        toml::Value::try_from(cfg).map_err(|e| Error::msg(format!("serialising config: {e}")))?;
    let mut lock = lock_run(dir)?;
    let mut moved_aside = None;
    let mut changes = Vec::new();
    let mut resume_step = None;
    let mut history: Vec<ConfigChange> = Vec::new();
    match start {
        Start::New => {
            let found = run_contents(dir);
            if !found.is_empty() {
                return Err(Error::format(
                    dir,
                    format!(
                        "already holds a run ({}); continue it with --resume, start over with --overwrite \
                         (moves it aside to {}.replaced-<time>, nothing is deleted), or choose another run.name",
                        found.join(", "),
                        dir.display()
                    ),
                ));
            }
        }
        Start::Overwrite => {
            if !run_contents(dir).is_empty() {
                let aside = aside_name(dir);
                fs::rename(dir, &aside).map_err(|e| Error::io(&aside, e))?;
                lock.moved_to(&aside);
                // The old directory (and its lock file) is now `aside`; lock the new one.
                let old = std::mem::replace(&mut lock, lock_run(dir)?);
                drop(old);
                eprintln!(
                    "moved the previous run {} aside to {}",
                    dir.display(),
                    aside.display()
                );
                moved_aside = Some(aside);
            }
        }
        Start::Resume { explicit } => {
            let cks = list_checkpoints(dir)?;
            let step = cks.last().map(|(s, _)| *s).unwrap_or(0);
            let cfg_path = dir.join(CONFIG_FILE);
            if cfg_path.exists() {
                let text = fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
                let old: toml::Value = toml::from_str(&text).map_err(|e| {
                    Error::format(
                        &cfg_path,
                        format!("cannot read the run's recorded config: {e}"),
                    )
                })?;
                history = old
                    .get("run")
                    .and_then(|r| r.get("history"))
                    .cloned()
                    .map(|h| h.try_into::<Vec<ConfigChange>>())
                    .transpose()
                    .map_err(|e| Error::format(&cfg_path, format!("run.history: {e}")))?
                    .unwrap_or_default();
                changes = diff_configs(&old, &new_cfg, explicit, step, &cfg_path)?;
                for c in &changes {
                    eprintln!("resuming {} at step {step} with a changed setting (recorded in {CONFIG_FILE}): {} {} → {}", dir.display(), c.key, c.from, c.to);
                }
            } else if !cks.is_empty() {
                tracing::warn!(
                    "{}: no {CONFIG_FILE}; resuming without checking the settings",
                    dir.display()
                );
            }
            if let Some((s, ck)) = cks.last() {
                verify_checkpoint(ck)?;
                resume_step = Some(*s);
            }
        }
    }
    history.extend(changes.iter().cloned());
    if let Some(run) = new_cfg.get_mut("run").and_then(|r| r.as_table_mut()) {
        if history.is_empty() {
            run.remove("history");
        } else {
            let h = toml::Value::try_from(&history)
                .map_err(|e| Error::msg(format!("serialising run.history: {e}")))?;
            run.insert("history".into(), h);
        }
    }
    let config_text = toml::to_string_pretty(&new_cfg)
        .map_err(|e| Error::msg(format!("serialising config: {e}")))?;
    Ok(RunDir {
        path: dir.to_path_buf(),
        resume: start.is_resume(),
        lock,
        config_text,
        config_written: false,
        moved_aside,
        changes,
        resume_step,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> toml::Value {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn rules_follow_what_the_checkpoint_depends_on() {
        assert_eq!(change_rule("model.config.hidden_size"), ChangeRule::Fixed);
        assert_eq!(change_rule("data.seq_len"), ChangeRule::Fixed);
        assert_eq!(change_rule("train.batch_size"), ChangeRule::Fixed);
        assert_eq!(change_rule("train.steps"), ChangeRule::Explicit);
        assert_eq!(change_rule("schedule.warmup_steps"), ChangeRule::Explicit);
        assert_eq!(change_rule("prefs.eval_every"), ChangeRule::Explicit);
        assert_eq!(change_rule("train.progress"), ChangeRule::Free);
        // `train.stepsX` is not under `train.steps`.
        assert_eq!(change_rule("run.dirx"), ChangeRule::Explicit);
    }

    #[test]
    fn diff_names_the_setting_and_records_explicit_changes() {
        let o = Path::new("runs/x/config.resolved.toml");
        let old = cfg("[train]\nsteps = 10\nprogress = true\n[model.config]\nhidden_size = 32\n");
        // A free change only: nothing to record.
        let same = cfg("[train]\nsteps = 10\nprogress = false\n[model.config]\nhidden_size = 32\n");
        assert!(diff_configs(&old, &same, &[], 10, o).unwrap().is_empty());
        // Shape change: refused even when named, and the message names key, values and file.
        let shape = cfg("[train]\nsteps = 10\n[model.config]\nhidden_size = 64\n");
        let e = diff_configs(&old, &shape, &["model.config.hidden_size".into()], 10, o)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("model.config.hidden_size")
                && e.contains("32 to 64")
                && e.contains("config.resolved.toml"),
            "{e}"
        );
        // Step count changed without --set: refused, and the message gives the --set to use.
        let longer =
            cfg("[train]\nsteps = 20\nprogress = true\n[model.config]\nhidden_size = 32\n");
        let e = diff_configs(&old, &longer, &[], 10, o)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--set train.steps=20"), "{e}");
        // With --set: recorded (a prefix `train` would also name it).
        let ch = diff_configs(&old, &longer, &["train.steps".into()], 10, o).unwrap();
        assert_eq!(
            ch,
            vec![ConfigChange {
                at_step: 10,
                key: "train.steps".into(),
                from: "10".into(),
                to: "20".into()
            }]
        );
    }
}
