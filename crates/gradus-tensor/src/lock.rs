//! Exclusive locks on directories that one process at a time may write (a run directory, a
//! data step's output directory): a lock file holding the holder's pid, host and start time,
//! locked with an advisory `flock` for as long as the holder lives. The kernel drops the `flock`
//! when the holder dies, so a lock file left by a killed process is recognised as stale and taken
//! over, while a live holder keeps every other process out (the refusal names its pid and host).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// This machine's host name (for lock files): `/proc/sys/kernel/hostname`, `$HOSTNAME`, or "unknown".
pub fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

/// What a lock file says about its holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockInfo {
    pub pid: u32,
    pub host: String,
    /// Seconds since the Unix epoch when the lock was taken.
    pub since: u64,
}

impl LockInfo {
    /// `{"pid": .., "host": .., "since": ..}`.
    pub fn to_json(&self) -> String {
        serde_json::json!({"pid": self.pid, "host": self.host, "since": self.since}).to_string()
    }

    /// Parses what [`LockInfo::to_json`] wrote (None for anything else).
    pub fn parse(text: &str) -> Option<LockInfo> {
        let v: serde_json::Value = serde_json::from_str(text.trim()).ok()?;
        Some(LockInfo {
            pid: u32::try_from(v.get("pid")?.as_u64()?).ok()?,
            host: v.get("host")?.as_str()?.to_string(),
            since: v.get("since").and_then(|x| x.as_u64()).unwrap_or(0),
        })
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An exclusive lock on a run directory, held until dropped (the file is then removed).
#[derive(Debug)]
pub struct DirLock {
    path: PathBuf,
    file: Option<File>,
    /// The stale holder this lock replaced, if any.
    pub took_over: Option<LockInfo>,
}

/// Takes an exclusive `flock` without waiting: Ok(false) if another open file holds it. (On
/// platforms without `flock` the lock file alone marks the holder; it is then never stale.)
fn try_flock(f: &File) -> std::io::Result<bool> {
    #[cfg(unix)]
    {
        use std::os::unix::io::AsRawFd;
        // SAFETY: flock on a file descriptor we own for the duration of the call.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::WouldBlock {
            return Ok(false);
        }
        Err(e)
    }
    #[cfg(not(unix))]
    {
        let _ = f;
        Ok(true)
    }
}

fn same_file(a: &File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (a.metadata(), fs::metadata(path)) {
            (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (a, path);
        path.exists()
    }
}

impl DirLock {
    /// Takes `dir/<name>` (creating `dir`). Fails if a live process holds it, naming its pid and
    /// host and calling the directory `what` ("the run directory"); a lock file whose holder is
    /// gone is taken over (see the module docs).
    pub fn acquire(dir: &Path, name: &str, what: &str) -> Result<DirLock> {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join(name);
        for _ in 0..20 {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            let mut old = String::new();
            match try_flock(&file) {
                Ok(true) => {}
                Ok(false) => {
                    let _ = file.read_to_string(&mut old);
                    let who = match LockInfo::parse(&old) {
                        Some(h) => format!(
                            "process {} on host {} (since Unix time {})",
                            h.pid, h.host, h.since
                        ),
                        None => "another process".into(),
                    };
                    return Err(Error::format(
                        &path,
                        format!(
                            "{what} {} is in use by {who}; two processes must not write into it at once",
                            dir.display()
                        ),
                    ));
                }
                Err(e) => return Err(Error::io(&path, e)),
            }
            // The file may have been removed (and maybe recreated) by its previous holder between
            // our open and our lock: then we locked a dead inode; try again.
            if !same_file(&file, &path) {
                continue;
            }
            let _ = file.read_to_string(&mut old);
            let took_over = LockInfo::parse(&old);
            if let Some(h) = &took_over {
                eprintln!(
                    "warning: {}: taking over the stale lock of process {} on host {}",
                    path.display(),
                    h.pid,
                    h.host
                );
            }
            let me = LockInfo {
                pid: std::process::id(),
                host: host_name(),
                since: now_secs(),
            };
            let text = me.to_json();
            file.set_len(0).map_err(|e| Error::io(&path, e))?;
            file.rewind().map_err(|e| Error::io(&path, e))?;
            file.write_all(format!("{text}\n").as_bytes())
                .map_err(|e| Error::io(&path, e))?;
            file.sync_all().map_err(|e| Error::io(&path, e))?;
            return Ok(DirLock {
                path,
                file: Some(file),
                took_over,
            });
        }
        Err(Error::format(
            &path,
            "could not take the lock (it kept changing hands)",
        ))
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the lock's bookkeeping after its directory was renamed to `dir` (the open file stays
    /// locked).
    pub fn moved_to(&mut self, dir: &Path) {
        if let Some(name) = self.path.file_name().map(|n| n.to_owned()) {
            self.path = dir.join(name);
        }
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        if let Some(f) = self.file.take() {
            // Remove the file while still holding the lock, so nobody can lock it in between.
            if same_file(&f, &self.path) {
                let _ = fs::remove_file(&self.path);
            }
            drop(f);
        }
    }
}
