//! Landlock (Linux 5.13+): an unprivileged file-system, network and scope allow-list stacked on
//! the namespaces. Raw syscalls (three of them) so the forked child needs no allocation; the ABI
//! version decides which rights exist (v2 REFER, v3 TRUNCATE, v4 TCP bind/connect, v5
//! IOCTL_DEV, v6 signal and abstract-socket scoping).
//!
//! Rules: `/` may be read and executed, `/work` (the tmpfs) written, `/dev` files read and written;
//! no TCP bind or connect at all (v4+); no signals to, or abstract UNIX sockets of, processes
//! outside the sandbox's Landlock domain (v6+).

use std::ffi::CStr;

const CREATE_RULESET_VERSION: u32 = 1;
const RULE_PATH_BENEATH: u32 = 1;

const EXECUTE: u64 = 1 << 0;
const WRITE_FILE: u64 = 1 << 1;
const READ_FILE: u64 = 1 << 2;
const READ_DIR: u64 = 1 << 3;
const MAKE_CHAR: u64 = 1 << 6;
const MAKE_BLOCK: u64 = 1 << 11;
const REFER: u64 = 1 << 13;
const TRUNCATE: u64 = 1 << 14;
const IOCTL_DEV: u64 = 1 << 15;

const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1;
const SCOPE_SIGNAL: u64 = 2;
const NET_BIND_TCP: u64 = 1;
const NET_CONNECT_TCP: u64 = 2;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

#[repr(C, packed)]
struct PathBeneath {
    allowed_access: u64,
    parent_fd: i32,
}

/// The Landlock ABI version of the running kernel, or `None` without Landlock.
pub fn abi_version() -> Option<u32> {
    // SAFETY: with a null attribute and size 0 this syscall only reports the ABI version.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    };
    (r > 0).then_some(r as u32)
}

fn fs_rights(abi: u32) -> u64 {
    let mut all = (1u64 << 13) - 1;
    if abi >= 2 {
        all |= REFER;
    }
    if abi >= 3 {
        all |= TRUNCATE;
    }
    if abi >= 5 {
        all |= IOCTL_DEV;
    }
    all
}

fn attr(abi: u32) -> (RulesetAttr, usize) {
    let attr = RulesetAttr {
        handled_access_fs: fs_rights(abi),
        handled_access_net: if abi >= 4 {
            NET_BIND_TCP | NET_CONNECT_TCP
        } else {
            0
        },
        scoped: if abi >= 6 {
            SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
        } else {
            0
        },
    };
    let size = match abi {
        1..=3 => 8,
        4 | 5 => 16,
        _ => 24,
    };
    (attr, size)
}

/// The three rules: `/` read and execute, `/work` everything but device nodes, `/dev` files read
/// and written.
fn rules(abi: u32) -> [(&'static CStr, u64); 3] {
    let handled = fs_rights(abi);
    [
        (c"/", READ_FILE | READ_DIR | EXECUTE),
        (c"/work", handled & !(MAKE_CHAR | MAKE_BLOCK)),
        (
            c"/dev",
            (READ_FILE | WRITE_FILE | READ_DIR | if abi >= 5 { IOCTL_DEV } else { 0 }) & handled,
        ),
    ]
}

/// The ruleset attribute (24 bytes, little-endian), the size to pass for this ABI, and the rules
/// (path, access), for the zygote, which applies them from Python.
pub(crate) fn spec(abi: u32) -> (Vec<u8>, usize, Vec<(String, u64)>) {
    let (a, size) = attr(abi);
    let mut bytes = vec![];
    for v in [a.handled_access_fs, a.handled_access_net, a.scoped] {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    (
        bytes,
        size,
        rules(abi)
            .iter()
            .map(|(p, a)| (p.to_string_lossy().into_owned(), *a))
            .collect(),
    )
}

/// Restricts the calling thread (in the forked child, after `no_new_privs`) to [`rules`].
/// Returns the name of the failing step on error. Allocation-free.
pub(crate) fn restrict(abi: u32) -> Result<(), &'static str> {
    let (attr, size) = attr(abi);
    // SAFETY: attr lives across the call and `size` does not exceed it.
    let ruleset = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const RulesetAttr,
            size,
            0u32,
        )
    };
    if ruleset < 0 {
        return Err("landlock_create_ruleset");
    }
    let ruleset = ruleset as i32;
    for (path, access) in rules(abi) {
        // SAFETY: path is NUL-terminated; the fd is closed below.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err("landlock: open rule path");
        }
        let pb = PathBeneath {
            allowed_access: access,
            parent_fd: fd,
        };
        // SAFETY: pb lives across the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_landlock_add_rule,
                ruleset,
                RULE_PATH_BENEATH,
                &pb as *const PathBeneath,
                0u32,
            )
        };
        unsafe { libc::close(fd) };
        if r < 0 {
            return Err("landlock_add_rule");
        }
    }
    // SAFETY: plain syscall on our own fd.
    let r = unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0u32) };
    unsafe { libc::close(ruleset) };
    if r < 0 {
        return Err("landlock_restrict_self");
    }
    Ok(())
}
