//! The isolated runner: fork, fresh namespaces, a read-only root on tmpfs, limits, exec.
//!
//! Process tree of one execution (host PIDs on the left):
//! ```text
//! caller thread ──fork──▶ A  unshare(user, mount, pid, net, ipc, uts); waits for the id maps
//!                          └─fork──▶ B  PID 1 of the new PID namespace: builds the root
//!                                    (tmpfs + read-only binds + tmpfs /work), pivot_root,
//!                                    writes /work/main.py
//!                                     └─fork──▶ C  setresuid to the sandbox user, rlimits,
//!                                                  no_new_privs, Landlock, seccomp, exec python
//! ```
//! B waits for C, then kills everything left in its namespace (`kill(-1, SIGKILL)`: children
//! that outlive the program die with it) and reports C's wait status on a status pipe. The
//! caller reads stdout, stderr and that pipe with `poll` until the deadline; at the deadline it
//! SIGKILLs B, and the kernel kills the whole PID namespace.
//!
//! Every string and table the children need is prepared before `fork` (the caller may be
//! multi-threaded), and the children only make raw syscalls.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cgroup::Cgroup;
use crate::config::Limits;
use crate::outcome::Ended;
use crate::SandboxError;

/// The sandbox user inside the user namespace.
pub(crate) const INNER_ID: u32 = 1000;

/// One read-only bind of a host path.
struct Bind {
    src: CString,
    dst: CString,
    /// A file (an empty file is created as mount point) rather than a directory.
    file: bool,
    /// Device nodes: keep them usable (no `nodev`) and writable.
    device: bool,
}

/// Everything the children need, prepared once per sandbox.
pub(crate) struct Plan {
    staging: CString,
    root_opts: CString,
    work_opts: CString,
    work: CString,
    dirs: Vec<CString>,
    symlinks: Vec<(CString, CString)>,
    binds: Vec<Bind>,
    program_path: CString,
    pub(crate) exe: CString,
    argv: Vec<CString>,
    pub(crate) envp: Vec<CString>,
    seccomp: Vec<crate::seccomp::Insn>,
    pub(crate) landlock_abi: Option<u32>,
    rlimits: Vec<(libc::__rlimit_resource_t, u64, u64)>,
    map_host_id: Option<u32>,
    host_uid: u32,
    host_gid: u32,
    /// Keeps the staging directory alive (removed on drop).
    _staging_dir: StagingDir,
}

struct StagingDir(PathBuf);
impl Drop for StagingDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn cstr(p: impl AsRef<std::ffi::OsStr>) -> Result<CString, SandboxError> {
    CString::new(p.as_ref().as_bytes()).map_err(|_| SandboxError::Config {
        field: "path".into(),
        message: format!("{:?} contains a NUL byte", p.as_ref()),
    })
}

impl Plan {
    /// Prepares the mount table (host `/usr`, `/lib*`, `/bin`, `/sbin`, the interpreter's prefix
    /// and `ro_paths`, each read-only at the same path), the argv, environment, rlimits, seccomp
    /// program and Landlock ABI.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        exe: &Path,
        prefix: &Path,
        python_args: &[String],
        env: &[(String, String)],
        ro_paths: &[PathBuf],
        limits: &Limits,
        host_id: u32,
        landlock_abi: Option<u32>,
    ) -> Result<Self, SandboxError> {
        let base = std::env::temp_dir().join(format!(
            "gradus-sandbox-{}-{}",
            std::process::id(),
            next_id()
        ));
        std::fs::create_dir(&base).map_err(|e| SandboxError::Io {
            what: format!("create staging directory {}", base.display()),
            source: e,
        })?;
        let staging_dir = StagingDir(base.clone());
        let under = |p: &Path| base.join(p.strip_prefix("/").unwrap_or(p));

        let mut dirs: Vec<PathBuf> = vec![];
        let mut symlinks = vec![];
        let mut binds = vec![];
        let add_dir_chain = |dirs: &mut Vec<PathBuf>, p: &Path| {
            let mut acc = PathBuf::from("/");
            for c in p.components().skip(1) {
                acc.push(c);
                let d = under(&acc);
                if !dirs.contains(&d) {
                    dirs.push(d);
                }
            }
        };
        let mut covered: Vec<PathBuf> = vec![];
        for top in [
            "/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32",
        ] {
            let p = Path::new(top);
            match std::fs::symlink_metadata(p) {
                Ok(m) if m.file_type().is_symlink() => {
                    let target = std::fs::read_link(p).map_err(|e| SandboxError::Io {
                        what: format!("read link {top}"),
                        source: e,
                    })?;
                    symlinks.push((cstr(&target)?, cstr(under(p))?));
                }
                Ok(m) if m.is_dir() => {
                    add_dir_chain(&mut dirs, p);
                    binds.push(Bind {
                        src: cstr(p)?,
                        dst: cstr(under(p))?,
                        file: false,
                        device: false,
                    });
                    covered.push(p.to_path_buf());
                }
                _ => {}
            }
        }
        let canon = |p: &Path| {
            std::fs::canonicalize(p).map_err(|e| SandboxError::Io {
                what: format!("resolve {}", p.display()),
                source: e,
            })
        };
        let mut extra: Vec<PathBuf> = vec![canon(prefix)?];
        for p in ro_paths {
            extra.push(canon(p)?);
        }
        for p in extra {
            // Already visible through /usr (or through the symlinks into it)?
            if covered.iter().any(|c| p.starts_with(c)) || p.starts_with("/usr") {
                continue;
            }
            add_dir_chain(&mut dirs, &p);
            binds.push(Bind {
                src: cstr(&p)?,
                dst: cstr(under(&p))?,
                file: false,
                device: false,
            });
            covered.push(p);
        }
        add_dir_chain(&mut dirs, Path::new("/dev"));
        add_dir_chain(&mut dirs, Path::new("/work"));
        for dev in ["null", "zero", "random", "urandom"] {
            let p = Path::new("/dev").join(dev);
            if p.exists() {
                binds.push(Bind {
                    src: cstr(&p)?,
                    dst: cstr(under(&p))?,
                    file: true,
                    device: true,
                });
            }
        }
        symlinks.push((cstr("/work/tmp")?, cstr(under(Path::new("/tmp")))?));

        let mut argv = vec![cstr(exe)?];
        for a in python_args {
            argv.push(cstr(a)?);
        }
        argv.push(cstr(crate::PROGRAM_PATH)?);
        let mut envp = vec![
            cstr("PATH=/usr/local/bin:/usr/bin:/bin")?,
            cstr("HOME=/work")?,
            cstr("LANG=C.UTF-8")?,
            cstr("TMPDIR=/work/tmp")?,
        ];
        for (k, v) in env {
            envp.push(cstr(format!("{k}={v}"))?);
        }

        // SAFETY: plain id queries.
        let (host_uid, host_gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        Ok(Plan {
            staging: cstr(&base)?,
            root_opts: cstr("size=1m,nr_inodes=512,mode=755")?,
            work_opts: cstr(format!(
                "size={},nr_inodes=4096,mode=755,uid={INNER_ID},gid={INNER_ID}",
                limits.tmpfs_bytes
            ))?,
            work: cstr(under(Path::new("/work")))?,
            dirs: dirs.iter().map(cstr).collect::<Result<_, _>>()?,
            symlinks,
            binds,
            program_path: cstr(crate::PROGRAM_PATH)?,
            exe: cstr(exe)?,
            argv,
            envp,
            seccomp: crate::seccomp::filter(),
            landlock_abi,
            rlimits: rlimits(limits),
            map_host_id: (host_uid == 0).then_some(host_id),
            host_uid,
            host_gid,
            _staging_dir: staging_dir,
        })
    }
}

fn next_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

pub(crate) fn rlimits(l: &Limits) -> Vec<(libc::__rlimit_resource_t, u64, u64)> {
    vec![
        (libc::RLIMIT_AS, l.memory_bytes, l.memory_bytes),
        (libc::RLIMIT_CPU, l.cpu_secs, l.cpu_secs + 1),
        (libc::RLIMIT_FSIZE, l.file_size_bytes, l.file_size_bytes),
        (libc::RLIMIT_NOFILE, l.open_files, l.open_files),
        (libc::RLIMIT_NPROC, l.processes, l.processes),
        (libc::RLIMIT_STACK, l.stack_bytes, l.stack_bytes),
        (libc::RLIMIT_CORE, 0, 0),
        (libc::RLIMIT_MEMLOCK, 0, 0),
        (libc::RLIMIT_MSGQUEUE, 0, 0),
    ]
}

/// What the supervisor saw.
pub(crate) struct RawRun {
    pub ended: Ended,
    pub killed_by_us: bool,
    pub oom_killed: bool,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub wall: Duration,
}

// ---- the children: raw syscalls only ----

/// Writes `E<len><msg>: errno N` to the status pipe (no allocation).
pub(crate) fn report(fd: RawFd, msg: &str, errno: i32) {
    let mut buf = [0u8; 200];
    let mut n = 2;
    for &b in msg.as_bytes().iter().chain(b": errno ".iter()) {
        if n < buf.len() - 12 {
            buf[n] = b;
            n += 1;
        }
    }
    let mut digits = [0u8; 11];
    let mut d = 0;
    let mut e = errno.unsigned_abs();
    loop {
        digits[d] = b'0' + (e % 10) as u8;
        d += 1;
        e /= 10;
        if e == 0 {
            break;
        }
    }
    while d > 0 {
        d -= 1;
        buf[n] = digits[d];
        n += 1;
    }
    buf[0] = b'E';
    buf[1] = (n - 2) as u8;
    // SAFETY: writing our own stack buffer.
    unsafe { libc::write(fd, buf.as_ptr().cast(), n) };
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

pub(crate) fn fail(fd: RawFd, msg: &str) -> ! {
    report(fd, msg, errno());
    // SAFETY: terminating the child without running the parent's destructors.
    unsafe { libc::_exit(125) }
}

pub(crate) fn write_all(fd: RawFd, mut data: &[u8]) -> bool {
    while !data.is_empty() {
        // SAFETY: data is a valid slice.
        let r = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if r < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return false;
        }
        data = &data[r as usize..];
    }
    true
}

/// The fds a child keeps: 0, 1, 2, the status pipe and the sync pipe.
struct ChildFds {
    stdin: RawFd,
    out: RawFd,
    err: RawFd,
    status: RawFd,
    sync: RawFd,
}

/// Process A: new namespaces, then B.
fn child_a(plan: &Plan, fds: &ChildFds, program: &[u8], parent: libc::pid_t) -> ! {
    let st = fds.status;
    // SAFETY: raw syscalls in a freshly forked child; every pointer comes from `plan`/`program`,
    // which the fork copied.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != parent {
            libc::_exit(125);
        }
        if libc::dup2(fds.stdin, 0) < 0 || libc::dup2(fds.out, 1) < 0 || libc::dup2(fds.err, 2) < 0
        {
            fail(st, "dup2");
        }
        // Close every other fd (others threads' pipes would otherwise stay open in this tree).
        let mut keep = [st, fds.sync];
        keep.sort_unstable();
        let mut lo = 3u32;
        for k in keep {
            if (k as u32) > lo {
                libc::syscall(libc::SYS_close_range, lo, k as u32 - 1, 0u32);
            }
            lo = k as u32 + 1;
        }
        libc::syscall(libc::SYS_close_range, lo, u32::MAX, 0u32);

        let flags = libc::CLONE_NEWUSER
            | libc::CLONE_NEWNS
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWNET
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUTS;
        if libc::unshare(flags) != 0 {
            fail(st, "unshare(user, mount, pid, net, ipc, uts)");
        }
        write_all(st, b"U");
        let mut b = [0u8; 1];
        if libc::read(fds.sync, b.as_mut_ptr().cast(), 1) != 1 || b[0] != b'g' {
            fail(st, "waiting for the uid/gid maps");
        }
        libc::close(fds.sync);
        let pid = libc::fork();
        if pid < 0 {
            fail(st, "fork (namespace init)");
        }
        if pid == 0 {
            child_b(plan, st, program);
        }
        let mut msg = [0u8; 5];
        msg[0] = b'P';
        msg[1..].copy_from_slice(&pid.to_le_bytes());
        write_all(st, &msg);
        let mut status = 0;
        while libc::waitpid(pid, &mut status, 0) < 0 && errno() == libc::EINTR {}
        libc::_exit(0)
    }
}

/// Mounts a read-only (or device) bind of `b`, keeping the flags the kernel locks.
unsafe fn bind(b: &Bind, st: RawFd) {
    if b.file {
        let fd = libc::open(
            b.dst.as_ptr(),
            libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
            0o644,
        );
        if fd < 0 {
            fail(st, "create a file mount point");
        }
        libc::close(fd);
    }
    if libc::mount(
        b.src.as_ptr(),
        b.dst.as_ptr(),
        std::ptr::null(),
        libc::MS_BIND | libc::MS_REC,
        std::ptr::null(),
    ) != 0
    {
        fail(st, "bind mount");
    }
    let mut sv: libc::statvfs = std::mem::zeroed();
    if libc::statvfs(b.dst.as_ptr(), &mut sv) != 0 {
        fail(st, "statvfs of a bind mount");
    }
    let mut flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NOSUID;
    if !b.device {
        flags |= libc::MS_RDONLY | libc::MS_NODEV;
    } else if sv.f_flag & libc::ST_NODEV != 0 {
        flags |= libc::MS_NODEV;
    }
    if sv.f_flag & libc::ST_NOEXEC != 0 {
        flags |= libc::MS_NOEXEC;
    }
    if sv.f_flag & libc::ST_RDONLY != 0 {
        flags |= libc::MS_RDONLY;
    }
    if libc::mount(
        std::ptr::null(),
        b.dst.as_ptr(),
        std::ptr::null(),
        flags,
        std::ptr::null(),
    ) != 0
    {
        fail(st, "remount a bind read-only");
    }
}

/// Builds the new root (tmpfs, read-only binds, tmpfs /work), pivots into it and remounts it
/// read-only. With `procfd`, the host `/proc` is opened first onto that fd number (the zygote
/// writes id maps through it).
pub(crate) unsafe fn build_root(plan: &Plan, st: RawFd, procfd: Option<RawFd>) {
    let null = std::ptr::null::<libc::c_char>();
    if libc::mount(
        null,
        c"/".as_ptr(),
        null,
        libc::MS_REC | libc::MS_PRIVATE,
        std::ptr::null(),
    ) != 0
    {
        fail(st, "make / private");
    }
    if libc::mount(
        c"tmpfs".as_ptr(),
        plan.staging.as_ptr(),
        c"tmpfs".as_ptr(),
        libc::MS_NOSUID | libc::MS_NODEV,
        plan.root_opts.as_ptr().cast(),
    ) != 0
    {
        fail(st, "mount the root tmpfs");
    }
    for d in &plan.dirs {
        if libc::mkdir(d.as_ptr(), 0o755) != 0 && errno() != libc::EEXIST {
            fail(st, "mkdir in the new root");
        }
    }
    for (target, link) in &plan.symlinks {
        if libc::symlink(target.as_ptr(), link.as_ptr()) != 0 {
            fail(st, "symlink in the new root");
        }
    }
    for b in &plan.binds {
        bind(b, st);
    }
    if libc::mount(
        c"tmpfs".as_ptr(),
        plan.work.as_ptr(),
        c"tmpfs".as_ptr(),
        libc::MS_NOSUID | libc::MS_NODEV,
        plan.work_opts.as_ptr().cast(),
    ) != 0
    {
        fail(st, "mount the /work tmpfs");
    }
    if let Some(n) = procfd {
        let fd = libc::open(
            c"/proc".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        if fd < 0 || (fd != n && libc::dup2(fd, n) < 0) {
            fail(st, "open /proc for the zygote");
        }
        if fd != n {
            libc::close(fd);
        }
    }
    if libc::chdir(plan.staging.as_ptr()) != 0 {
        fail(st, "chdir to the new root");
    }
    if libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) != 0 {
        fail(st, "pivot_root");
    }
    if libc::umount2(c".".as_ptr(), libc::MNT_DETACH) != 0 {
        fail(st, "detach the old root");
    }
    if libc::chdir(c"/".as_ptr()) != 0 {
        fail(st, "chdir /");
    }
    if libc::mkdir(c"/work/tmp".as_ptr(), 0o1777) != 0
        || libc::chmod(c"/work/tmp".as_ptr(), 0o1777) != 0
        || libc::chown(c"/work/tmp".as_ptr(), INNER_ID, INNER_ID) != 0
    {
        fail(st, "create /work/tmp");
    }
    if libc::mount(
        null,
        c"/".as_ptr(),
        null,
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
        std::ptr::null(),
    ) != 0
    {
        fail(st, "remount / read-only");
    }
    libc::sethostname(c"sandbox".as_ptr(), 7);
}

/// Process B: PID 1 of the new namespace.
fn child_b(plan: &Plan, st: RawFd, program: &[u8]) -> ! {
    // SAFETY: raw syscalls on prepared C strings.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        build_root(plan, st, None);
        let fd = libc::open(
            plan.program_path.as_ptr(),
            libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC | libc::O_CLOEXEC,
            0o644,
        );
        if fd < 0 || !write_all(fd, program) {
            fail(st, "write the program");
        }
        libc::close(fd);

        let c = libc::fork();
        if c < 0 {
            fail(st, "fork (program)");
        }
        if c == 0 {
            child_c(plan, st);
        }
        let mut c_status = 0;
        loop {
            let mut s = 0;
            let r = libc::waitpid(-1, &mut s, 0);
            if r == c {
                c_status = s;
                // Whatever the program left behind dies with it.
                libc::kill(-1, libc::SIGKILL);
            } else if r < 0 && errno() != libc::EINTR {
                break;
            }
        }
        let mut msg = [0u8; 5];
        msg[0] = b'X';
        msg[1..].copy_from_slice(&c_status.to_le_bytes());
        write_all(st, &msg);
        libc::_exit(0)
    }
}

/// Process C: the sandbox user, limits, Landlock, seccomp, exec.
fn child_c(plan: &Plan, st: RawFd) -> ! {
    // SAFETY: raw syscalls on prepared data.
    unsafe {
        libc::setsid();
        // Empty the capability bounding set while we still hold CAP_SETPCAP.
        for cap in 0..64 {
            libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
        }
        if libc::setgroups(0, std::ptr::null()) != 0 && plan.map_host_id.is_some() {
            fail(st, "setgroups");
        }
        // From namespace root to the sandbox user: this clears every capability.
        if libc::setresgid(INNER_ID, INNER_ID, INNER_ID) != 0
            || libc::setresuid(INNER_ID, INNER_ID, INNER_ID) != 0
        {
            fail(st, "setresuid to the sandbox user");
        }
        for &(res, soft, hard) in &plan.rlimits {
            let rl = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            if libc::setrlimit(res, &rl) != 0 {
                fail(st, "setrlimit");
            }
        }
        if libc::chdir(c"/work".as_ptr()) != 0 {
            fail(st, "chdir /work");
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            fail(st, "no_new_privs");
        }
        if let Some(abi) = plan.landlock_abi {
            if let Err(step) = crate::landlock::restrict(abi) {
                fail(st, step);
            }
        }
        let prog = libc::sock_fprog {
            len: plan.seccomp.len() as u16,
            filter: plan.seccomp.as_ptr() as *mut _,
        };
        if libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog,
        ) != 0
        {
            fail(st, "install the seccomp filter");
        }
        let mut argv = [std::ptr::null::<libc::c_char>(); 32];
        for (i, a) in plan.argv.iter().take(31).enumerate() {
            argv[i] = a.as_ptr();
        }
        let mut envp = [std::ptr::null::<libc::c_char>(); 64];
        for (i, e) in plan.envp.iter().take(63).enumerate() {
            envp[i] = e.as_ptr();
        }
        libc::execve(plan.exe.as_ptr(), argv.as_ptr(), envp.as_ptr());
        fail(st, "execve of the interpreter");
    }
}

// ---- the supervisor (the caller's thread) ----

pub(crate) fn pipe() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(SandboxError::Io {
            what: "pipe2".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: both fds were just created and are owned here.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn write_file(path: &str, data: &str) -> Result<(), SandboxError> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(data.as_bytes()))
        .map_err(|e| SandboxError::Io {
            what: format!("write {data:?} to {path}"),
            source: e,
        })
}

/// Keeps the last `cap` bytes.
fn push_tail(buf: &mut Vec<u8>, data: &[u8], cap: usize) {
    buf.extend_from_slice(data);
    if buf.len() > 2 * cap.max(1) {
        let cut = buf.len() - cap;
        buf.drain(..cut);
    }
}

/// Runs one program in fresh namespaces; see the module docs.
pub(crate) fn run(
    plan: &Plan,
    devnull: &OwnedFd,
    program: &str,
    limits: &Limits,
    cgroup: Option<&Cgroup>,
) -> Result<RawRun, SandboxError> {
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (st_r, st_w) = pipe()?;
    let (sync_r, sync_w) = pipe()?;
    let fds = ChildFds {
        stdin: devnull.as_raw_fd(),
        out: out_w.as_raw_fd(),
        err: err_w.as_raw_fd(),
        status: st_w.as_raw_fd(),
        sync: sync_r.as_raw_fd(),
    };
    let exec_cgroup = cgroup.map(|c| c.create_exec(limits)).transpose()?;
    let program = program.as_bytes();
    let start = Instant::now();
    // SAFETY: getpid/fork; the child only makes raw syscalls on data prepared above.
    let parent = unsafe { libc::getpid() };
    let a = unsafe { libc::fork() };
    if a < 0 {
        return Err(SandboxError::Io {
            what: "fork".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    if a == 0 {
        child_a(plan, &fds, program, parent);
    }
    drop((out_w, err_w, st_w, sync_r));
    let mut sync_w = Some(sync_w);
    let exec_cgroup_ref = &exec_cgroup;

    let mut on_u = || -> Result<(), SandboxError> {
        write_maps(plan, a)?;
        if let Some(c) = exec_cgroup_ref {
            c.add(a)?;
        }
        if let Some(mut w) = sync_w.take().map(std::fs::File::from) {
            let _ = w.write_all(b"g");
        }
        Ok(())
    };
    let sup = supervise(Some(a), [out_r, err_r, st_r], start, limits, &mut on_u)?;
    let mut a_status = 0;
    // SAFETY: reaping our own child.
    unsafe { while libc::waitpid(a, &mut a_status, 0) < 0 && errno() == libc::EINTR {} };
    let oom_killed = exec_cgroup.as_ref().is_some_and(|c| c.oom_killed());
    drop(exec_cgroup);
    sup.finish(start, oom_killed)
}

/// What the status pipe and the output pipes delivered.
pub(crate) struct Supervised {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    killed_by_us: bool,
    c_status: Option<i32>,
    setup_error: Option<String>,
}

impl Supervised {
    pub(crate) fn setup_error(&self) -> Option<&str> {
        self.setup_error.as_deref()
    }

    pub(crate) fn finish(self, start: Instant, oom_killed: bool) -> Result<RawRun, SandboxError> {
        let wall = start.elapsed();
        if let Some(msg) = self.setup_error {
            return Err(SandboxError::Setup(msg));
        }
        let ended = match self.c_status {
            Some(s) if libc::WIFEXITED(s) => Ended::Exited(libc::WEXITSTATUS(s)),
            Some(s) if libc::WIFSIGNALED(s) => Ended::Signaled(libc::WTERMSIG(s)),
            _ if self.killed_by_us => Ended::Signaled(libc::SIGKILL),
            _ => {
                return Err(SandboxError::Setup(
                    "the sandbox ended without reporting the program's status".into(),
                ))
            }
        };
        Ok(RawRun {
            ended,
            killed_by_us: self.killed_by_us,
            oom_killed,
            stdout: self.stdout,
            stderr: self.stderr,
            wall,
        })
    }
}

/// How long the supervisor waits, after killing the namespace init, for every process of the
/// run to be gone (their pipe ends closed) before it gives up on them.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(10);

/// Reads stdout, stderr and the status pipe until all three close, killing the namespace init
/// (reported as `P`) at the deadline; `a` is killed too if the init does not go away.
/// `on_u` handles A's "namespaces made" message.
pub(crate) fn supervise(
    a: Option<libc::pid_t>,
    fds: [OwnedFd; 3],
    start: Instant,
    limits: &Limits,
    on_u: &mut dyn FnMut() -> Result<(), SandboxError>,
) -> Result<Supervised, SandboxError> {
    let deadline = start + Duration::from_secs_f64(limits.wall_secs);
    let mut stdout = vec![];
    let mut stderr = vec![];
    let mut status_buf: Vec<u8> = vec![];
    let [out_r, err_r, st_r] = fds;
    let mut open = [Some(out_r), Some(err_r), Some(st_r)];
    let mut killed_by_us = false;
    let mut init_pid: Option<libc::pid_t> = None;
    let mut c_status: Option<i32> = None;
    let mut setup_error: Option<String> = None;
    let mut grace: Option<Instant> = None;
    let mut buf = vec![0u8; 1 << 16];
    while open.iter().any(Option::is_some) {
        let now = Instant::now();
        if !killed_by_us && now >= deadline {
            killed_by_us = true;
            // SAFETY: signalling our own child (or the namespace init it reported).
            if let Some(pid) = init_pid.or(a) {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            // SIGKILLed processes always die, but on a small loaded machine (2 vCPUs, ~100
            // runnable burners) that was seen to take over 2 s; returning before they are gone
            // would report a finished run while its processes still run.
            grace = Some(now + KILL_GRACE);
        }
        if let Some(g) = grace {
            if now >= g {
                // SAFETY: as above; A always exits once B is gone.
                if let Some(a) = a {
                    unsafe { libc::kill(a, libc::SIGKILL) };
                }
                break;
            }
        }
        let wait = if killed_by_us {
            Duration::from_millis(50)
        } else {
            deadline.saturating_duration_since(now)
        };
        let mut pfds: Vec<libc::pollfd> = open
            .iter()
            .flatten()
            .map(|f| libc::pollfd {
                fd: f.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ms = wait.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: pfds is a valid array.
        let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
        if r < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return Err(SandboxError::Io {
                what: "poll".into(),
                source: std::io::Error::last_os_error(),
            });
        }
        for p in pfds.iter().filter(|p| p.revents != 0) {
            let slot = open
                .iter()
                .position(|f| f.as_ref().map(|f| f.as_raw_fd()) == Some(p.fd))
                .expect("polled fd is open");
            // SAFETY: reading into our buffer from an fd we own.
            let n = unsafe { libc::read(p.fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                if n < 0 && errno() == libc::EINTR {
                    continue;
                }
                open[slot] = None;
                continue;
            }
            let data = &buf[..n as usize];
            match slot {
                0 => push_tail(&mut stdout, data, limits.output_bytes),
                1 => push_tail(&mut stderr, data, limits.output_bytes),
                _ => status_buf.extend_from_slice(data),
            }
        }
        // Parse complete status messages.
        loop {
            match status_buf.first() {
                Some(b'U') => {
                    status_buf.remove(0);
                    if let Err(e) = on_u() {
                        setup_error = Some(e.to_string());
                        if let Some(a) = a {
                            // SAFETY: our own child, blocked waiting for the maps.
                            unsafe { libc::kill(a, libc::SIGKILL) };
                        }
                    }
                }
                Some(b'P') if status_buf.len() >= 5 => {
                    init_pid = Some(i32::from_le_bytes(
                        status_buf[1..5].try_into().expect("4 bytes"),
                    ));
                    status_buf.drain(..5);
                    if killed_by_us {
                        // SAFETY: killing the namespace init we were just told about.
                        if let Some(pid) = init_pid.or(a) {
                            unsafe { libc::kill(pid, libc::SIGKILL) };
                        }
                    }
                }
                Some(b'X') if status_buf.len() >= 5 => {
                    c_status = Some(i32::from_le_bytes(
                        status_buf[1..5].try_into().expect("4 bytes"),
                    ));
                    status_buf.drain(..5);
                }
                Some(b'E')
                    if status_buf.len() >= 2 && status_buf.len() >= 2 + status_buf[1] as usize =>
                {
                    let n = status_buf[1] as usize;
                    let msg = String::from_utf8_lossy(&status_buf[2..2 + n]).into_owned();
                    status_buf.drain(..2 + n);
                    setup_error.get_or_insert(msg);
                }
                Some(b'P' | b'X' | b'E') | None => break,
                Some(_) => {
                    setup_error.get_or_insert_with(|| "garbled status pipe".into());
                    status_buf.clear();
                }
            }
        }
    }
    Ok(Supervised {
        stdout,
        stderr,
        killed_by_us,
        c_status,
        setup_error,
    })
}

/// Writes the id maps of A's user namespace. As root: inside 0 is host root (only B, our own
/// setup code, runs as it: creating mount points and reading host paths needs a mapped id) and
/// inside 1000 is `host_id` (nobody); C switches to 1000 before anything untrusted runs, which
/// also clears its capabilities. Not root: only our own ids can be mapped, at 1000.
pub(crate) fn write_maps(plan: &Plan, a: libc::pid_t) -> Result<(), SandboxError> {
    match plan.map_host_id {
        Some(id) => {
            write_file(
                &format!("/proc/{a}/uid_map"),
                &format!("0 {} 1\n{INNER_ID} {id} 1\n", plan.host_uid),
            )?;
            write_file(
                &format!("/proc/{a}/gid_map"),
                &format!("0 {} 1\n{INNER_ID} {id} 1\n", plan.host_gid),
            )
        }
        None => {
            write_file(&format!("/proc/{a}/setgroups"), "deny")?;
            write_file(
                &format!("/proc/{a}/uid_map"),
                &format!("{INNER_ID} {} 1\n", plan.host_uid),
            )?;
            write_file(
                &format!("/proc/{a}/gid_map"),
                &format!("{INNER_ID} {} 1\n", plan.host_gid),
            )
        }
    }
}
