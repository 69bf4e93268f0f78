//! Graceful stop on SIGTERM (what Slurm and Kubernetes send before killing a job) and SIGINT
//! (Ctrl-C): the signal only raises a flag; the training loop finishes its current step, writes a
//! checkpoint and returns [`Error`]-kind [`interrupted_error`], which the CLI turns into a non-zero
//! exit with the command that resumes. A second SIGINT while the first is pending exits at once
//! (status 130), for a user who really wants out.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::sync::OnceLock;

use gradus_tensor::Error;

static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
static SIGNAL: AtomicI32 = AtomicI32::new(0);

fn flag() -> &'static Arc<AtomicBool> {
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

/// The text every interruption error starts with (the CLI recognises it).
pub const INTERRUPTED: &str = "interrupted by";

/// Installs the SIGTERM/SIGINT handlers (idempotent). Until this is called, the signals keep their
/// default action (the process dies).
pub fn install() -> std::io::Result<()> {
    static DONE: OnceLock<()> = OnceLock::new();
    if DONE.get().is_some() {
        return Ok(());
    }
    #[cfg(unix)]
    {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let f = flag().clone();
        // Order matters: the conditional shutdown sees the flag before this SIGINT sets it.
        signal_hook::flag::register_conditional_shutdown(SIGINT, 130, f.clone())?;
        for sig in [SIGTERM, SIGINT] {
            let f = f.clone();
            // SAFETY: the handler only stores to atomics, which is async-signal-safe.
            unsafe {
                signal_hook::low_level::register(sig, move || {
                    SIGNAL.store(sig, Ordering::SeqCst);
                    f.store(true, Ordering::SeqCst);
                })?;
            }
        }
    }
    let _ = DONE.set(());
    Ok(())
}

/// Whether a stop was requested.
pub fn requested() -> bool {
    flag().load(Ordering::SeqCst)
}

/// Requests a stop as a signal would (for tests and embedding programs).
pub fn request() {
    flag().store(true, Ordering::SeqCst);
}

/// Clears a handled request (so one process can train again after an interruption).
pub fn clear() {
    flag().store(false, Ordering::SeqCst);
    SIGNAL.store(0, Ordering::SeqCst);
}

/// The name of the signal that asked to stop (`SIGTERM`, `SIGINT`, or `a stop request`).
pub fn signal_name() -> &'static str {
    match SIGNAL.load(Ordering::SeqCst) {
        15 => "SIGTERM",
        2 => "SIGINT",
        _ => "a stop request",
    }
}

/// The conventional exit status for the signal received (128 + number; 1 without a signal).
pub fn exit_code() -> i32 {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => 1,
        s => 128 + s,
    }
}

/// The error a recipe returns after an interruption: names the signal, the step and checkpoint.
pub fn interrupted_error(step: u64, checkpoint: &std::path::Path) -> Error {
    Error::msg(format!(
        "{INTERRUPTED} {} after step {step}; checkpoint saved at {}; continue with the same command plus --resume",
        signal_name(),
        checkpoint.display()
    ))
}
