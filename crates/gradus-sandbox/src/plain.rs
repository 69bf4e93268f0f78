//! The unisolated runner (`Isolation::Unisolated`): a plain child process with rlimits, a clean
//! environment, its own process group (killed as a whole at the wall-clock limit and after the
//! program ends) and a private temporary directory. It is NOT a security boundary.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::Limits;
use crate::isolated::{rlimits, RawRun};
use crate::outcome::Ended;
use crate::SandboxError;

/// Runs `program` unisolated; returns the run and the path the program had (for tracebacks).
pub(crate) fn run(
    exe: &Path,
    args: &[String],
    env: &[(String, String)],
    program: &str,
    limits: &Limits,
) -> Result<(RawRun, String), SandboxError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "gradus-unisolated-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let io = |what: String| move |e| SandboxError::Io { what, source: e };
    std::fs::create_dir(&dir).map_err(io(format!("create {}", dir.display())))?;
    let path = dir.join("main.py");
    std::fs::write(&path, program).map_err(io(format!("write {}", path.display())))?;
    let limits_v = rlimits(limits);
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .arg(&path)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", &dir)
        .env("LANG", "C.UTF-8")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: only async-signal-safe calls (setpgid, setrlimit) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::setpgid(0, 0);
            for &(res, soft, hard) in &limits_v {
                // NPROC counts every process of the caller's user: leave it alone here.
                if res == libc::RLIMIT_NPROC {
                    continue;
                }
                libc::setrlimit(
                    res,
                    &libc::rlimit {
                        rlim_cur: soft,
                        rlim_max: hard,
                    },
                );
            }
            Ok(())
        });
    }
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(io(format!("spawn {}", exe.display())))?;
    let pgid = child.id() as libc::pid_t;
    let cap = limits.output_bytes;
    let reader = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut all = vec![];
            let _ = r.read_to_end(&mut all);
            if all.len() > cap {
                all.drain(..all.len() - cap);
            }
            all
        })
    };
    let out = reader(Box::new(child.stdout.take().expect("piped")));
    let err = reader(Box::new(child.stderr.take().expect("piped")));
    let deadline = start + Duration::from_secs_f64(limits.wall_secs);
    let mut killed_by_us = false;
    let status = loop {
        if let Some(s) = child.try_wait().map_err(io("wait".into()))? {
            break s;
        }
        if Instant::now() >= deadline {
            killed_by_us = true;
            // SAFETY: killing the process group we created.
            unsafe { libc::killpg(pgid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    // Children that outlive the program die with it.
    // SAFETY: as above.
    unsafe { libc::killpg(pgid, libc::SIGKILL) };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    use std::os::unix::process::ExitStatusExt;
    let ended = match (status.code(), status.signal()) {
        (Some(c), _) => Ended::Exited(c),
        (None, Some(s)) => Ended::Signaled(s),
        _ => Ended::Signaled(0),
    };
    Ok((
        RawRun {
            ended,
            killed_by_us,
            oom_killed: false,
            stdout,
            stderr,
            wall: start.elapsed(),
        },
        path.display().to_string(),
    ))
}
