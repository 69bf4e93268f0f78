# gradus-sandbox zygote: a pre-started interpreter inside the sandbox's user and mount
# namespaces (read-only root, no network) that forks once per execution instead of paying
# Python's start-up. Started by zygote.rs as `python -I -S -B -c <this> CTRL PROCFD CONFIG`.
#
# Per request (a SOCK_SEQPACKET message: JSON limits + fds stdout, stderr, status, program memfd):
#   zygote --fork--> X  unshare(user, mount, pid, net, ipc, uts); the zygote writes its id maps
#                    (through PROCFD, the host /proc kept open from before pivot_root)
#     X --fork--> Y  PID 1 of the new PID namespace: fresh tmpfs on /work, writes main.py,
#                    wall-clock backstop, waits for W then kills everything left, reports W's status
#       Y --fork--> W  sandbox user (1000), empty bounding set, rlimits, no_new_privs, Landlock,
#                    seccomp, close every other fd, then runs /work/main.py as __main__.
# Status pipe protocol (as the Rust side): b'P' + pid (host) of Y, b'X' + wait status of W,
# b'E' + len + message on a setup failure.
import builtins
import ctypes
import gc
import json
import os
import resource
import signal
import socket
import struct
import sys
import traceback

# Modules programs commonly import: loaded once here, shared by every fork.
import collections, functools, hashlib, heapq, itertools, math, random, re, string, typing  # noqa: E401,F401
import bisect, copy, decimal, fractions, operator, statistics, datetime  # noqa: E401,F401

CTRL, PROCFD = int(sys.argv[1]), int(sys.argv[2])
CFG = json.loads(sys.argv[3])
INNER = CFG["inner_id"]
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
FILTER = ctypes.create_string_buffer(bytes.fromhex(CFG["seccomp"]))


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


FPROG = SockFprog(len(bytes.fromhex(CFG["seccomp"])) // 8, ctypes.cast(FILTER, ctypes.c_void_p))
NS = CFG["ns_flags"]
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP = 1, 24, 38, 22
MS_NOSUID, MS_NODEV = 2, 4
SYS_CLOSE_RANGE, SYS_LL_CREATE, SYS_LL_ADD, SYS_LL_RESTRICT = 436, 444, 445, 446


def die(st, what):
    msg = ("%s: errno %d" % (what, ctypes.get_errno())).encode()[:180]
    try:
        os.write(st, b"E" + bytes([len(msg)]) + msg)
    finally:
        os._exit(125)


def ck(r, st, what):
    if r != 0:
        die(st, what)


def landlock(st):
    ll = CFG.get("landlock")
    if not ll:
        return
    attr = ctypes.create_string_buffer(bytes.fromhex(ll["attr"]))
    rs = libc.syscall(SYS_LL_CREATE, attr, ctypes.c_size_t(ll["size"]), ctypes.c_uint32(0))
    if rs < 0:
        die(st, "landlock_create_ruleset")
    for path, access in ll["rules"]:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        pb = ctypes.create_string_buffer(struct.pack("<Qi", access, fd))
        ck(libc.syscall(SYS_LL_ADD, ctypes.c_int(rs), ctypes.c_int(1), pb, ctypes.c_uint32(0)), st, "landlock_add_rule")
        os.close(fd)
    ck(libc.syscall(SYS_LL_RESTRICT, ctypes.c_int(rs), ctypes.c_uint32(0)), st, "landlock_restrict_self")
    os.close(rs)


def run_main(path):
    """Runs `path` as `__main__`, as `python path` would (what runpy.run_path does, without its
    importer lookups and context managers: ~1 ms of each execution)."""
    main = type(sys)("__main__")
    main.__dict__.update(__file__=path, __cached__=None, __loader__=None, __package__=None, __spec__=None, __builtins__=builtins)
    sys.modules["__main__"] = main
    with open(path, "rb") as f:
        code = compile(f.read(), path, "exec", dont_inherit=True)
    exec(code, main.__dict__)


def worker(st, lim):
    os.setsid()
    for cap in range(64):  # EINVAL past the kernel's last capability
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            break
    os.setgroups([])
    os.setresgid(INNER, INNER, INNER)
    os.setresuid(INNER, INNER, INNER)  # from namespace root: clears every capability
    for res, soft, hard in lim["rlimits"]:
        resource.setrlimit(res, (soft, hard))
    os.chdir("/work")
    ck(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), st, "no_new_privs")
    landlock(st)
    ck(libc.prctl(PR_SET_SECCOMP, 2, ctypes.byref(FPROG)), st, "install the seccomp filter")
    libc.syscall(SYS_CLOSE_RANGE, ctypes.c_uint(3), ctypes.c_uint(0xFFFFFFFF), ctypes.c_uint(0))
    sys.argv = ["/work/main.py"]
    sys.path[0:0] = ["/work"]
    code = 0
    try:
        run_main("/work/main.py")
    except SystemExit as e:
        c = e.code
        if c is None:
            code = 0
        elif isinstance(c, int):
            code = c
        else:
            print(c, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except BaseException:
            pass
    os._exit(code & 0xFF)


def kill_all():
    """Kills every other process of this PID namespace (none left: ESRCH)."""
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass


def init(st, prog, lim):
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    opts = "size=%d,nr_inodes=4096,mode=755,uid=%d,gid=%d" % (lim["tmpfs"], INNER, INNER)
    ck(libc.mount(b"tmpfs", b"/work", b"tmpfs", MS_NOSUID | MS_NODEV, opts.encode()), st, "mount the /work tmpfs")
    os.mkdir("/work/tmp", 0o1777)
    os.chmod("/work/tmp", 0o1777)
    os.chown("/work/tmp", INNER, INNER)
    socket.sethostname("sandbox")
    chunks = []
    os.lseek(prog, 0, 0)
    while True:
        b = os.read(prog, 1 << 20)
        if not b:
            break
        chunks.append(b)
    os.close(prog)
    fd = os.open("/work/main.py", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    os.write(fd, b"".join(chunks))
    os.close(fd)

    def backstop(*_):  # the supervisor kills us at the wall-clock limit; this is a second line
        kill_all()
        os.write(st, b"X" + struct.pack("<i", signal.SIGKILL))
        os._exit(0)

    signal.signal(signal.SIGALRM, backstop)
    signal.setitimer(signal.ITIMER_REAL, lim["wall"] + 2.0)
    w = os.fork()
    if w == 0:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        try:
            worker(st, lim)
        except BaseException as e:
            msg = ("worker setup: %r" % (e,)).encode()[:180]
            os.write(st, b"E" + bytes([len(msg)]) + msg)
            os._exit(125)
    status = 0
    while True:
        try:
            pid, s = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid == w:
            status = s
            kill_all()
    os.write(st, b"X" + struct.pack("<i", status))
    os._exit(0)


def child(out, err, st, prog, lim, sync_r, ready_w):
    try:
        os.close(CTRL)
        os.close(PROCFD)
        os.dup2(out, 1)
        os.dup2(err, 2)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        ck(libc.unshare(NS), st, "unshare(user, mount, pid, net, ipc, uts)")
        os.write(ready_w, b"u")
        if os.read(sync_r, 1) != b"g":
            os._exit(125)
        y = os.fork()
        if y == 0:
            init(st, prog, lim)
        os.write(st, b"P" + struct.pack("<i", y))
        os.waitpid(y, 0)
    except BaseException as e:
        msg = ("zygote child: %r" % (e,)).encode()[:180]
        os.write(st, b"E" + bytes([len(msg)]) + msg)
    os._exit(0)


def main():
    ctrl = socket.socket(fileno=CTRL)
    maps = "0 0 1\n%d %d 1\n" % (INNER, INNER)
    while True:
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            pass
        try:
            msg, fds, _, _ = socket.recv_fds(ctrl, 1 << 16, 4)
        except InterruptedError:
            continue
        if not msg:
            os._exit(0)  # the supervisor is gone
        if len(fds) != 4:
            for f in fds:
                os.close(f)
            continue
        out, err, st, prog = fds
        lim = json.loads(msg)
        sync_r, sync_w = os.pipe()
        ready_r, ready_w = os.pipe()
        # Everything alive now goes to the permanent generation: the child's first garbage
        # collection would otherwise walk (and so copy-on-write) the whole inherited heap, which
        # measured ~3.5 ms of each execution's ~12 ms of CPU.
        gc.freeze()
        x = os.fork()
        if x == 0:
            os.close(sync_w)
            os.close(ready_r)
            child(out, err, st, prog, lim, sync_r, ready_w)
        os.close(sync_r)
        os.close(ready_w)
        for f in fds:
            os.close(f)
        if os.read(ready_r, 1) == b"u":
            try:
                for name in ("uid_map", "gid_map"):
                    fd = os.open("%d/%s" % (x, name), os.O_WRONLY, dir_fd=PROCFD)
                    os.write(fd, maps.encode())
                    os.close(fd)
                os.write(sync_w, b"g")
            except OSError:
                pass  # the child reads EOF and exits; its supervisor sees no status
        os.close(sync_w)
        os.close(ready_r)


main()
