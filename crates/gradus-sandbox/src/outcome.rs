//! Structured outcomes of one execution, and how a Python exit is read into one.

use serde::Serialize;

/// What became of one execution.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// Exit status 0.
    Passed,
    /// A non-zero exit: an uncaught exception (`AssertionError`, `NameError`, ...) or `sys.exit(n)`.
    Failed {
        /// Exception type (last line of the traceback), or `exit status N` without a traceback.
        error: String,
        /// The exception's message, possibly empty.
        message: String,
        /// Line of the program (1-based) where the traceback's last frame in the program points:
        /// for a failed `assert`, the assertion.
        line: Option<u32>,
        /// The source text of that line.
        source: Option<String>,
    },
    /// The wall-clock or CPU limit passed.
    Timeout,
    /// The memory limit was hit (`MemoryError`, or the cgroup's OOM killer).
    OutOfMemory,
    /// Killed by a signal the sandbox did not send (SIGSEGV, SIGABRT, ...).
    Crashed { signal: i32, name: String },
    /// The sandbox could not run the program (setup failed); says what failed.
    SandboxError { message: String },
}

impl Outcome {
    /// Short name of the kind (`passed`, `failed`, `timeout`, `out_of_memory`, `crashed`, `sandbox_error`).
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed { .. } => "failed",
            Outcome::Timeout => "timeout",
            Outcome::OutOfMemory => "out_of_memory",
            Outcome::Crashed { .. } => "crashed",
            Outcome::SandboxError { .. } => "sandbox_error",
        }
    }

    pub fn passed(&self) -> bool {
        matches!(self, Outcome::Passed)
    }
}

/// One execution: its outcome and what it printed.
#[derive(Clone, Debug, Serialize)]
pub struct Execution {
    pub outcome: Outcome,
    /// Exit status when the program exited normally.
    pub exit_code: Option<i32>,
    /// The tail of stdout (at most `Limits::output_bytes`), lossily decoded.
    pub stdout: String,
    /// The tail of stderr (at most `Limits::output_bytes`), lossily decoded.
    pub stderr: String,
    /// Wall-clock seconds from start to the end of the sandbox.
    pub wall_secs: f64,
}

/// How the process ended, as the supervisor saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    Exited(i32),
    Signaled(i32),
}

/// Name of a signal (`SIGSEGV`), or `signal N`.
pub fn signal_name(sig: i32) -> String {
    let n = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => return format!("signal {sig}"),
    };
    n.to_string()
}

/// Reads how a Python program ended into an [`Outcome`]. `killed_by_us` is true when the
/// supervisor killed it at the wall-clock limit; `oom_killed` when the cgroup reported an OOM kill.
pub(crate) fn classify(
    program: &str,
    path: &str,
    ended: Ended,
    stderr: &str,
    killed_by_us: bool,
    oom_killed: bool,
) -> Outcome {
    if killed_by_us {
        return Outcome::Timeout;
    }
    if oom_killed {
        return Outcome::OutOfMemory;
    }
    match ended {
        Ended::Exited(0) => Outcome::Passed,
        Ended::Exited(code) => {
            let (error, message) = last_exception(stderr)
                .unwrap_or_else(|| (format!("exit status {code}"), String::new()));
            if error == "MemoryError" {
                return Outcome::OutOfMemory;
            }
            let line = last_program_line(stderr, path);
            let source = line
                .and_then(|l| program.lines().nth(l as usize - 1))
                .map(|s| s.trim().to_string());
            Outcome::Failed {
                error,
                message,
                line,
                source,
            }
        }
        Ended::Signaled(libc::SIGXCPU) => Outcome::Timeout,
        Ended::Signaled(sig) => {
            // The interpreter aborts on some allocation failures ("Fatal Python error: ... MemoryError").
            if (sig == libc::SIGABRT || sig == libc::SIGSEGV) && stderr.contains("MemoryError") {
                return Outcome::OutOfMemory;
            }
            Outcome::Crashed {
                signal: sig,
                name: signal_name(sig),
            }
        }
    }
}

/// The exception of the last traceback in `stderr`: its type and message. A traceback ends with
/// `Type: message` (or a bare `Type`) on a line that does not start with a space. A syntax error
/// is reported without the `Traceback` header; then only a type ending in `Error` counts.
fn last_exception(stderr: &str) -> Option<(String, String)> {
    let tb = stderr.rfind("Traceback (most recent call last):");
    let tail = &stderr[tb.unwrap_or(0)..];
    let line = tail
        .lines()
        .rev()
        .find(|l| !l.starts_with(' ') && !l.trim().is_empty() && !l.starts_with("Traceback ("))?;
    let (ty, msg) = match line.split_once(": ") {
        Some((t, m)) => (t, m),
        None => (line.trim_end_matches(':'), ""),
    };
    let ty = ty.trim();
    let valid = !ty.is_empty()
        && ty
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '.')
        && (tb.is_some() || ty.ends_with("Error"));
    valid.then(|| (ty.to_string(), msg.to_string()))
}

/// The line number of the last frame in the program file (`File "/work/main.py", line N`) of the
/// last traceback (or of a syntax error report).
fn last_program_line(stderr: &str, path: &str) -> Option<u32> {
    let start = stderr
        .rfind("Traceback (most recent call last):")
        .unwrap_or(0);
    let prefix = format!("File \"{path}\", line ");
    stderr[start..]
        .lines()
        .rev()
        .filter_map(|l| l.trim_start().strip_prefix(prefix.as_str()))
        .find_map(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = crate::PROGRAM_PATH;
    const PROG: &str = "def f():\n    return 1\nassert f() == 2, 'f is wrong'\n";

    // A traceback as CPython 3.11 prints it for PROG (written by hand from the format).
    const TB: &str = "Traceback (most recent call last):\n  File \"/work/main.py\", line 3, in <module>\n    assert f() == 2, 'f is wrong'\nAssertionError: f is wrong\n";

    #[test]
    fn assertion_names_the_line_and_message() {
        let o = classify(PROG, P, Ended::Exited(1), TB, false, false);
        assert_eq!(
            o,
            Outcome::Failed {
                error: "AssertionError".into(),
                message: "f is wrong".into(),
                line: Some(3),
                source: Some("assert f() == 2, 'f is wrong'".into())
            }
        );
    }

    #[test]
    fn bare_exception_and_frames_outside_the_program() {
        let tb = "Traceback (most recent call last):\n  File \"/work/main.py\", line 2, in <module>\n  File \"/usr/lib/x.py\", line 9, in g\nModuleNotFoundError: No module named 'nope'\n";
        match classify("a\nb\n", P, Ended::Exited(1), tb, false, false) {
            Outcome::Failed {
                error,
                message,
                line,
                ..
            } => {
                assert_eq!(error, "ModuleNotFoundError");
                assert_eq!(message, "No module named 'nope'");
                assert_eq!(line, Some(2)); // the last frame *in the program*, not the library's line 9
            }
            o => panic!("{o:?}"),
        }
        let tb = "Traceback (most recent call last):\n  File \"/work/main.py\", line 1, in <module>\nAssertionError\n";
        assert!(
            matches!(classify("assert 0\n", P, Ended::Exited(1), tb, false, false), Outcome::Failed { error, message, .. } if error == "AssertionError" && message.is_empty())
        );
    }

    #[test]
    fn kinds_of_endings() {
        assert_eq!(
            classify("", P, Ended::Exited(0), "", false, false),
            Outcome::Passed
        );
        assert_eq!(
            classify("", P, Ended::Signaled(libc::SIGKILL), "", true, false),
            Outcome::Timeout
        );
        assert_eq!(
            classify("", P, Ended::Signaled(libc::SIGXCPU), "", false, false),
            Outcome::Timeout
        );
        assert_eq!(
            classify("", P, Ended::Signaled(libc::SIGKILL), "", false, true),
            Outcome::OutOfMemory
        );
        let tb = "Traceback (most recent call last):\n  File \"/work/main.py\", line 1, in <module>\nMemoryError\n";
        assert_eq!(
            classify("x\n", P, Ended::Exited(1), tb, false, false),
            Outcome::OutOfMemory
        );
        assert_eq!(
            classify("", P, Ended::Signaled(libc::SIGSEGV), "", false, false),
            Outcome::Crashed {
                signal: libc::SIGSEGV,
                name: "SIGSEGV".into()
            }
        );
        assert!(
            matches!(classify("", P, Ended::Exited(3), "bye\n", false, false), Outcome::Failed { error, .. } if error == "exit status 3")
        );
        // A syntax error has no "Traceback" header (CPython 3.11 format).
        let se = "  File \"/work/main.py\", line 2\n    def f(:\n          ^\nSyntaxError: invalid syntax\n";
        assert_eq!(
            classify("x = 1\ndef f(:\n", P, Ended::Exited(1), se, false, false),
            Outcome::Failed {
                error: "SyntaxError".into(),
                message: "invalid syntax".into(),
                line: Some(2),
                source: Some("def f(:".into())
            }
        );
    }
}
