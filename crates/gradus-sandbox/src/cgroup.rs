//! cgroup v2 limits (`memory.max`, `memory.swap.max`, `pids.max`, `cpu.max`) when a delegated
//! cgroup exists: one child cgroup per execution, created before the sandbox starts and removed
//! after it ends. Many machines (this project's included: cgroup v1 with a `unified` cgroup2
//! mount that has no controllers) have none; detection says why, and the rlimits still apply.

use std::path::{Path, PathBuf};

use crate::config::Limits;
use crate::SandboxError;

/// A delegated cgroup v2 directory under which executions get their own cgroups.
#[derive(Debug)]
pub struct Cgroup {
    dir: PathBuf,
    cpu: bool,
}

fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        if right.split_whitespace().next() != Some("cgroup2") {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

fn controllers(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

impl Cgroup {
    /// Uses `explicit` (must be a cgroup2 directory with the memory and pids controllers in its
    /// `cgroup.subtree_control` and writable), or looks at our own cgroup. `Err` says why no
    /// cgroup is used.
    pub fn detect(explicit: Option<&Path>) -> Result<Cgroup, String> {
        let dir = match explicit {
            Some(p) => p.to_path_buf(),
            None => {
                let mount = cgroup2_mount().ok_or("no cgroup2 file system is mounted")?;
                let own = std::fs::read_to_string("/proc/self/cgroup")
                    .map_err(|e| format!("read /proc/self/cgroup: {e}"))?;
                let rel = own
                    .lines()
                    .find_map(|l| l.strip_prefix("0::"))
                    .ok_or("this process is not in a cgroup v2 hierarchy")?;
                let dir = mount.join(rel.trim_start_matches('/'));
                let avail = controllers(&mount.join("cgroup.controllers"));
                if !avail.iter().any(|c| c == "memory") || !avail.iter().any(|c| c == "pids") {
                    return Err(format!(
                        "the cgroup2 mount at {} has no memory/pids controllers (a hybrid hierarchy binds them to cgroup v1); pass a delegated cgroup to use one",
                        mount.display()
                    ));
                }
                dir
            }
        };
        let sub = controllers(&dir.join("cgroup.subtree_control"));
        if !sub.iter().any(|c| c == "memory") || !sub.iter().any(|c| c == "pids") {
            return Err(format!(
                "{}: memory and pids are not enabled in cgroup.subtree_control (not delegated)",
                dir.display()
            ));
        }
        let probe = dir.join(format!("gradus-probe-{}", std::process::id()));
        std::fs::create_dir(&probe)
            .map_err(|e| format!("{} is not writable: {e}", dir.display()))?;
        let _ = std::fs::remove_dir(&probe);
        Ok(Cgroup {
            cpu: sub.iter().any(|c| c == "cpu"),
            dir,
        })
    }

    /// The delegated directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn create_exec(&self, limits: &Limits) -> Result<ExecCgroup, SandboxError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = self.dir.join(format!(
            "gradus-exec-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let io = |what: String| move |e| SandboxError::Io { what, source: e };
        std::fs::create_dir(&dir).map_err(io(format!("create cgroup {}", dir.display())))?;
        let cg = ExecCgroup { dir };
        cg.write("memory.max", &limits.memory_bytes.to_string())?;
        let _ = cg.write("memory.swap.max", "0"); // absent without swap accounting
        cg.write("pids.max", &limits.processes.to_string())?;
        if self.cpu {
            cg.write("cpu.max", "100000 100000")?; // one CPU
        }
        Ok(cg)
    }
}

/// The cgroup of one execution; removed on drop.
pub(crate) struct ExecCgroup {
    dir: PathBuf,
}

impl ExecCgroup {
    fn write(&self, file: &str, value: &str) -> Result<(), SandboxError> {
        let p = self.dir.join(file);
        std::fs::write(&p, value).map_err(|e| SandboxError::Io {
            what: format!("write {value} to {}", p.display()),
            source: e,
        })
    }

    pub(crate) fn add(&self, pid: libc::pid_t) -> Result<(), SandboxError> {
        self.write("cgroup.procs", &pid.to_string())
    }

    pub(crate) fn oom_killed(&self) -> bool {
        std::fs::read_to_string(self.dir.join("memory.events"))
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix("oom_kill ")
                        .and_then(|n| n.trim().parse::<u64>().ok())
                })
            })
            .is_some_and(|n| n > 0)
    }
}

impl Drop for ExecCgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        tracing::warn!("could not remove cgroup {}", self.dir.display());
    }
}
