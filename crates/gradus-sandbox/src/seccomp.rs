//! The seccomp-bpf deny list installed just before the untrusted program starts.
//!
//! A deny list (everything else allowed) keeps ordinary Python working while closing the kernel
//! interfaces a contained program has no business with: debugging other processes (`ptrace`,
//! `process_vm_*`, `pidfd_getfd`, `kcmp`), the mount API, new namespaces (`unshare`, `setns`,
//! `clone` with any `CLONE_NEW*` flag; `clone3` answers ENOSYS because its flags live in memory a
//! filter cannot read, and libc then falls back to `clone`), `bpf`, the kernel keyring,
//! `perf_event_open`, `userfaultfd`, `io_uring` (whose operations bypass seccomp), modules, kexec,
//! reboot, swap, clocks and I/O ports. Denied calls fail with EPERM. A syscall of another ABI
//! (the x32 bit on x86-64) fails too, and a foreign architecture kills the process.
//!
//! The filter is written by hand (about 100 BPF instructions, each denied number a compare and a
//! return) rather than with a filter compiler: it has no long jumps to patch, it can guard the x32
//! numbers, and it is built once in the parent so the forked child only calls `prctl`.

/// One BPF instruction (`struct sock_filter`).
pub(crate) type Insn = libc::sock_filter;

const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;

const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;

const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
/// Low 32 bits of `args[0]` (little-endian).
const OFF_ARG0: u32 = 16;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;
#[cfg(target_arch = "x86_64")]
const X32_BIT: u32 = 0x4000_0000;

/// Every `CLONE_NEW*` flag.
pub(crate) const CLONE_NS_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u32;

/// The denied syscall numbers for this architecture.
pub(crate) fn denied() -> Vec<(i64, &'static str)> {
    let mut v: Vec<(i64, &'static str)> = vec![
        (libc::SYS_ptrace, "ptrace"),
        (libc::SYS_process_vm_readv, "process_vm_readv"),
        (libc::SYS_process_vm_writev, "process_vm_writev"),
        (libc::SYS_pidfd_getfd, "pidfd_getfd"),
        (libc::SYS_kcmp, "kcmp"),
        (libc::SYS_mount, "mount"),
        (libc::SYS_umount2, "umount2"),
        (libc::SYS_pivot_root, "pivot_root"),
        (libc::SYS_chroot, "chroot"),
        (libc::SYS_move_mount, "move_mount"),
        (libc::SYS_open_tree, "open_tree"),
        (libc::SYS_fsopen, "fsopen"),
        (libc::SYS_fsmount, "fsmount"),
        (libc::SYS_fsconfig, "fsconfig"),
        (libc::SYS_fspick, "fspick"),
        (libc::SYS_mount_setattr, "mount_setattr"),
        (libc::SYS_unshare, "unshare"),
        (libc::SYS_setns, "setns"),
        (libc::SYS_bpf, "bpf"),
        (libc::SYS_keyctl, "keyctl"),
        (libc::SYS_add_key, "add_key"),
        (libc::SYS_request_key, "request_key"),
        (libc::SYS_perf_event_open, "perf_event_open"),
        (libc::SYS_userfaultfd, "userfaultfd"),
        (libc::SYS_io_uring_setup, "io_uring_setup"),
        (libc::SYS_io_uring_enter, "io_uring_enter"),
        (libc::SYS_io_uring_register, "io_uring_register"),
        (libc::SYS_kexec_load, "kexec_load"),
        (libc::SYS_init_module, "init_module"),
        (libc::SYS_finit_module, "finit_module"),
        (libc::SYS_delete_module, "delete_module"),
        (libc::SYS_reboot, "reboot"),
        (libc::SYS_swapon, "swapon"),
        (libc::SYS_swapoff, "swapoff"),
        (libc::SYS_acct, "acct"),
        (libc::SYS_open_by_handle_at, "open_by_handle_at"),
        (libc::SYS_name_to_handle_at, "name_to_handle_at"),
        (libc::SYS_settimeofday, "settimeofday"),
        (libc::SYS_clock_settime, "clock_settime"),
        (libc::SYS_clock_adjtime, "clock_adjtime"),
        (libc::SYS_adjtimex, "adjtimex"),
        (libc::SYS_syslog, "syslog"),
        (libc::SYS_quotactl, "quotactl"),
        (libc::SYS_lookup_dcookie, "lookup_dcookie"),
        (libc::SYS_vhangup, "vhangup"),
        (libc::SYS_personality, "personality"),
        (libc::SYS_fanotify_init, "fanotify_init"),
        (libc::SYS_process_madvise, "process_madvise"),
        (libc::SYS_move_pages, "move_pages"),
        (libc::SYS_migrate_pages, "migrate_pages"),
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        (libc::SYS_kexec_file_load, "kexec_file_load"),
        (libc::SYS_iopl, "iopl"),
        (libc::SYS_ioperm, "ioperm"),
        (libc::SYS_modify_ldt, "modify_ldt"),
        (libc::SYS_uselib, "uselib"),
    ]);
    v
}

fn stmt(code: u16, k: u32) -> Insn {
    Insn {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Insn {
    Insn { code, jt, jf, k }
}

/// Builds the filter program.
pub(crate) fn filter() -> Vec<Insn> {
    let eperm = RET_ERRNO | libc::EPERM as u32;
    let mut p = vec![
        stmt(LD_W_ABS, OFF_ARCH),
        jump(JEQ_K, AUDIT_ARCH, 1, 0),
        stmt(RET_K, RET_KILL_PROCESS),
        stmt(LD_W_ABS, OFF_NR),
    ];
    #[cfg(target_arch = "x86_64")]
    p.extend([jump(JSET_K, X32_BIT, 0, 1), stmt(RET_K, eperm)]);
    for (nr, _) in denied() {
        p.extend([jump(JEQ_K, nr as u32, 0, 1), stmt(RET_K, eperm)]);
    }
    p.extend([
        jump(JEQ_K, libc::SYS_clone3 as u32, 0, 1),
        stmt(RET_K, RET_ERRNO | libc::ENOSYS as u32),
    ]);
    // clone: refuse any namespace flag in args[0].
    p.extend([
        jump(JEQ_K, libc::SYS_clone as u32, 0, 4),
        stmt(LD_W_ABS, OFF_ARG0),
        jump(JSET_K, CLONE_NS_FLAGS, 0, 1),
        stmt(RET_K, eperm),
        stmt(RET_K, RET_ALLOW),
    ]);
    p.push(stmt(RET_K, RET_ALLOW));
    p
}

/// A tiny BPF interpreter over `seccomp_data` for the tests: returns the filter's verdict.
#[cfg(test)]
fn eval(prog: &[Insn], arch: u32, nr: u32, arg0: u32) -> u32 {
    let mut pc = 0;
    let mut acc = 0u32;
    loop {
        let i = prog[pc];
        match i.code {
            LD_W_ABS => {
                acc = match i.k {
                    OFF_NR => nr,
                    OFF_ARCH => arch,
                    OFF_ARG0 => arg0,
                    k => panic!("load of offset {k}"),
                };
                pc += 1;
            }
            JEQ_K => pc += 1 + if acc == i.k { i.jt } else { i.jf } as usize,
            JSET_K => pc += 1 + if acc & i.k != 0 { i.jt } else { i.jf } as usize,
            RET_K => return i.k,
            c => panic!("opcode {c:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        let p = filter();
        let eperm = RET_ERRNO | libc::EPERM as u32;
        assert_eq!(eval(&p, AUDIT_ARCH, libc::SYS_ptrace as u32, 0), eperm);
        assert_eq!(eval(&p, AUDIT_ARCH, libc::SYS_unshare as u32, 0), eperm);
        assert_eq!(
            eval(&p, AUDIT_ARCH, libc::SYS_io_uring_setup as u32, 0),
            eperm
        );
        assert_eq!(eval(&p, AUDIT_ARCH, libc::SYS_read as u32, 0), RET_ALLOW);
        assert_eq!(eval(&p, AUDIT_ARCH, libc::SYS_execve as u32, 0), RET_ALLOW);
        // fork-like clone (SIGCHLD only) is allowed; CLONE_NEWUSER or CLONE_NEWNET is not.
        assert_eq!(
            eval(&p, AUDIT_ARCH, libc::SYS_clone as u32, libc::SIGCHLD as u32),
            RET_ALLOW
        );
        assert_eq!(
            eval(
                &p,
                AUDIT_ARCH,
                libc::SYS_clone as u32,
                libc::CLONE_NEWUSER as u32 | 17
            ),
            eperm
        );
        assert_eq!(
            eval(
                &p,
                AUDIT_ARCH,
                libc::SYS_clone as u32,
                libc::CLONE_NEWNET as u32
            ),
            eperm
        );
        assert_eq!(
            eval(&p, AUDIT_ARCH, libc::SYS_clone3 as u32, 0),
            RET_ERRNO | libc::ENOSYS as u32
        );
        assert_eq!(
            eval(&p, 0x4000_0003, libc::SYS_read as u32, 0),
            RET_KILL_PROCESS
        );
        #[cfg(target_arch = "x86_64")]
        assert_eq!(eval(&p, AUDIT_ARCH, X32_BIT | 101, 0), eperm);
        assert!(p.len() < u16::MAX as usize);
    }
}
