//! The zygote: one pre-started interpreter per sandbox that forks per execution (see
//! `zygote.py`), so an execution does not pay Python's start-up (about 10 ms of CPU without
//! `site`, 40 ms with it here) while still getting fresh user, mount, PID, network, IPC and UTS
//! namespaces, a fresh tmpfs `/work`, the sandbox user, rlimits, no_new_privs, Landlock and
//! seccomp, exactly as [`crate::isolated`] does. Differences: the namespaces of an execution are
//! nested inside the zygote's (user, mount with the read-only root, network), and the program runs
//! as a fresh `__main__` module of the forked interpreter instead of a fresh `python main.py`
//! (tracebacks gain one `<string>` frame of the zygote; `sys.modules` holds the pre-imported
//! standard modules).
//!
//! Launch: fork → A: unshare(user, mount, net, ipc, uts); the caller writes the id maps; A builds
//! the same root as an execution, keeps the host `/proc` open (fd 4) for writing nested id maps,
//! and execs `python -I -S -B -c zygote.py 3 4 CONFIG` as namespace root. The caller talks to it
//! over a `SOCK_SEQPACKET` socket (fd 3): one message per execution carrying the limits as JSON
//! and four fds (stdout, stderr and status pipes, a memfd with the program). When the socket
//! closes (the sandbox is dropped, or the process exits) the zygote exits.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

use crate::config::Limits;
use crate::isolated::{self, Plan, RawRun};
use crate::SandboxError;

const SOURCE: &str = include_str!("zygote.py");

pub(crate) struct Zygote {
    ctrl: OwnedFd,
    pid: libc::pid_t,
}

fn io_err(what: &str) -> SandboxError {
    SandboxError::Io {
        what: what.into(),
        source: std::io::Error::last_os_error(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Zygote {
    pub(crate) fn start(plan: &Plan, devnull: &OwnedFd) -> Result<Zygote, SandboxError> {
        let mut filter = vec![];
        for i in crate::seccomp::filter() {
            filter.extend_from_slice(&i.code.to_le_bytes());
            filter.push(i.jt);
            filter.push(i.jf);
            filter.extend_from_slice(&i.k.to_le_bytes());
        }
        let landlock = plan.landlock_abi.map(|abi| {
            let (attr, size, rules) = crate::landlock::spec(abi);
            serde_json::json!({"attr": hex(&attr), "size": size, "rules": rules})
        });
        let ns = libc::CLONE_NEWUSER
            | libc::CLONE_NEWNS
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWNET
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUTS;
        let config = serde_json::json!({"inner_id": isolated::INNER_ID, "seccomp": hex(&filter), "ns_flags": ns, "landlock": landlock}).to_string();
        let cs = |s: &str| {
            CString::new(s).map_err(|_| SandboxError::Setup("NUL in the zygote's arguments".into()))
        };
        let argv: Vec<CString> = vec![
            plan.exe.clone(),
            cs("-I")?,
            cs("-S")?,
            cs("-B")?,
            cs("-c")?,
            cs(SOURCE)?,
            cs("3")?,
            cs("4")?,
            cs(&config)?,
        ];

        let mut sv = [0; 2];
        // SAFETY: sv has room for two fds.
        if unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                sv.as_mut_ptr(),
            )
        } != 0
        {
            return Err(io_err("socketpair"));
        }
        // SAFETY: both fds were just created.
        let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) };
        let (st_r, st_w) = isolated::pipe()?;
        let (sync_r, sync_w) = isolated::pipe()?;
        let start = Instant::now();
        // SAFETY: the child only makes raw syscalls on data prepared above.
        let a = unsafe { libc::fork() };
        if a < 0 {
            return Err(io_err("fork"));
        }
        if a == 0 {
            launch(
                plan,
                devnull.as_raw_fd(),
                theirs.as_raw_fd(),
                st_w.as_raw_fd(),
                sync_r.as_raw_fd(),
                &argv,
            );
        }
        drop((theirs, st_w, sync_r));
        let mut sync_w = Some(sync_w);
        let mut on_u = || -> Result<(), SandboxError> {
            isolated::write_maps(plan, a)?;
            if let Some(w) = sync_w.take() {
                // SAFETY: writing one byte to our pipe.
                unsafe { libc::write(w.as_raw_fd(), b"g".as_ptr().cast(), 1) };
            }
            Ok(())
        };
        // The status pipe closes when exec succeeds (it is close-on-exec); no output pipes here.
        let (dummy_r1, _w1) = isolated::pipe()?;
        let (dummy_r2, _w2) = isolated::pipe()?;
        drop((_w1, _w2));
        let limits = Limits {
            wall_secs: 10.0,
            ..Limits::default()
        };
        let sup = isolated::supervise(
            Some(a),
            [dummy_r1, dummy_r2, st_r],
            start,
            &limits,
            &mut on_u,
        )?;
        if let Some(e) = sup.setup_error() {
            // SAFETY: reaping our failed child.
            unsafe {
                libc::kill(a, libc::SIGKILL);
                libc::waitpid(a, std::ptr::null_mut(), 0);
            }
            return Err(SandboxError::Setup(format!("zygote: {e}")));
        }
        Ok(Zygote { ctrl: ours, pid: a })
    }

    pub(crate) fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// Runs one program through the zygote.
    pub(crate) fn run(&self, program: &str, limits: &Limits) -> Result<RawRun, SandboxError> {
        let (out_r, out_w) = isolated::pipe()?;
        let (err_r, err_w) = isolated::pipe()?;
        let (st_r, st_w) = isolated::pipe()?;
        // SAFETY: memfd_create with a static name.
        let mfd = unsafe { libc::memfd_create(c"gradus-program".as_ptr(), libc::MFD_CLOEXEC) };
        if mfd < 0 {
            return Err(io_err("memfd_create"));
        }
        // SAFETY: just created.
        let mfd = unsafe { OwnedFd::from_raw_fd(mfd) };
        let mut f = std::fs::File::from(mfd);
        std::io::Write::write_all(&mut f, program.as_bytes()).map_err(|e| SandboxError::Io {
            what: "write the program to a memfd".into(),
            source: e,
        })?;
        let mfd: OwnedFd = f.into();
        let rl: Vec<[u64; 3]> = isolated::rlimits(limits)
            .into_iter()
            .map(|(r, s, h)| [r as u64, s, h])
            .collect();
        let msg = serde_json::json!({"wall": limits.wall_secs, "tmpfs": limits.tmpfs_bytes, "rlimits": rl}).to_string();
        let start = Instant::now();
        send_with_fds(
            self.ctrl.as_raw_fd(),
            msg.as_bytes(),
            &[
                out_w.as_raw_fd(),
                err_w.as_raw_fd(),
                st_w.as_raw_fd(),
                mfd.as_raw_fd(),
            ],
        )?;
        drop((out_w, err_w, st_w, mfd));
        let sup = isolated::supervise(None, [out_r, err_r, st_r], start, limits, &mut || Ok(()))?;
        sup.finish(start, false)
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        // Closing the socket makes the zygote exit; executions in flight finish under their own
        // wall-clock backstop.
        // SAFETY: shutting down our socket and reaping our child.
        unsafe {
            libc::shutdown(self.ctrl.as_raw_fd(), libc::SHUT_RDWR);
            let mut st = 0;
            for _ in 0..200 {
                if libc::waitpid(self.pid, &mut st, libc::WNOHANG) != 0 {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, &mut st, 0);
        }
    }
}

fn send_with_fds(sock: RawFd, data: &[u8], fds: &[RawFd]) -> Result<(), SandboxError> {
    let n = std::mem::size_of_val(fds);
    // SAFETY: the control buffer is sized with CMSG_SPACE and filled through the CMSG macros.
    unsafe {
        let space = libc::CMSG_SPACE(n as u32) as usize;
        let mut cbuf = vec![0u64; space.div_ceil(8)];
        let mut iov = libc::iovec {
            iov_base: data.as_ptr() as *mut _,
            iov_len: data.len(),
        };
        let mut mh: libc::msghdr = std::mem::zeroed();
        mh.msg_iov = &mut iov;
        mh.msg_iovlen = 1;
        mh.msg_control = cbuf.as_mut_ptr().cast();
        mh.msg_controllen = space as _;
        let cm = libc::CMSG_FIRSTHDR(&mh);
        (*cm).cmsg_level = libc::SOL_SOCKET;
        (*cm).cmsg_type = libc::SCM_RIGHTS;
        (*cm).cmsg_len = libc::CMSG_LEN(n as u32) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(cm).cast::<RawFd>(), fds.len());
        if libc::sendmsg(sock, &mh, libc::MSG_NOSIGNAL) < 0 {
            return Err(io_err("send the program to the zygote (did it die?)"));
        }
    }
    Ok(())
}

/// Process A of the launch: namespaces, root, exec of the zygote. Raw syscalls only.
fn launch(plan: &Plan, devnull: RawFd, ctrl: RawFd, st: RawFd, sync: RawFd, argv: &[CString]) -> ! {
    // SAFETY: raw syscalls in the forked child on data prepared before the fork.
    unsafe {
        // Move the fds we keep out of the way, then lay them out: 0-2 /dev/null, 3 the socket.
        let st = libc::fcntl(st, libc::F_DUPFD_CLOEXEC, 100);
        let ctrl = libc::fcntl(ctrl, libc::F_DUPFD_CLOEXEC, 101);
        let sync = libc::fcntl(sync, libc::F_DUPFD_CLOEXEC, 102);
        let dn = libc::fcntl(devnull, libc::F_DUPFD_CLOEXEC, 103);
        if st != 100 || ctrl != 101 || sync != 102 || dn != 103 {
            libc::_exit(125);
        }
        if libc::dup2(dn, 0) < 0
            || libc::dup2(dn, 1) < 0
            || libc::dup2(dn, 2) < 0
            || libc::dup2(ctrl, 3) < 0
        {
            isolated::fail(st, "dup2");
        }
        libc::syscall(libc::SYS_close_range, 4u32, 99u32, 0u32);
        libc::syscall(libc::SYS_close_range, 103u32, u32::MAX, 0u32);
        let flags = libc::CLONE_NEWUSER
            | libc::CLONE_NEWNS
            | libc::CLONE_NEWNET
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUTS;
        if libc::unshare(flags) != 0 {
            isolated::fail(st, "unshare(user, mount, net, ipc, uts) for the zygote");
        }
        isolated::write_all(st, b"U");
        let mut b = [0u8; 1];
        if libc::read(sync, b.as_mut_ptr().cast(), 1) != 1 || b[0] != b'g' {
            isolated::fail(st, "waiting for the uid/gid maps");
        }
        isolated::build_root(plan, st, Some(4));
        // The proc fd must survive exec.
        libc::fcntl(4, libc::F_SETFD, 0);
        let mut av = [std::ptr::null::<libc::c_char>(); 16];
        for (i, x) in argv.iter().take(15).enumerate() {
            av[i] = x.as_ptr();
        }
        let mut envp = [std::ptr::null::<libc::c_char>(); 64];
        for (i, e) in plan.envp.iter().take(63).enumerate() {
            envp[i] = e.as_ptr();
        }
        libc::execve(plan.exe.as_ptr(), av.as_ptr(), envp.as_ptr());
        isolated::fail(st, "execve of the zygote");
    }
}
