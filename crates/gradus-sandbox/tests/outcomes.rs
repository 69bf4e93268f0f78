//! Outcomes of ordinary programs in the full sandbox, and the unisolated mode.

use gradus_sandbox::{Isolation, Limits, Outcome, Sandbox, SandboxConfig};

fn small() -> Limits {
    Limits {
        wall_secs: 2.0,
        cpu_secs: 2,
        memory_bytes: 512 << 20,
        tmpfs_bytes: 8 << 20,
        processes: 32,
        open_files: 64,
        ..Limits::default()
    }
}

/// Both modes: the zygote (checked to be in use) and a fresh interpreter per execution.
fn sandboxes() -> Vec<Sandbox> {
    [true, false]
        .into_iter()
        .map(|zygote| {
            let sb = Sandbox::new(SandboxConfig {
                limits: small(),
                zygote,
                ..SandboxConfig::default()
            })
            .expect("the sandbox works on Linux as root (CI)");
            eprintln!("layers: {}", sb.layers());
            assert_eq!(sb.layers().mode, if zygote { "zygote" } else { "fresh" });
            sb
        })
        .collect()
}

#[test]
fn passed_failed_and_stdout() {
    for sb in sandboxes() {
        passed_failed_and_stdout_in(&sb);
    }
}

fn passed_failed_and_stdout_in(sb: &Sandbox) {
    let e = sb.run("import math, collections, hashlib\nprint(math.factorial(5))\n");
    assert_eq!(e.outcome, Outcome::Passed, "{}", e.stderr);
    assert_eq!(e.stdout, "120\n");
    let e =
        sb.run("def f(x):\n    return x + 1\n\nassert f(1) == 2\nassert f(2) == 4, 'off by one'\n");
    assert_eq!(
        e.outcome,
        Outcome::Failed {
            error: "AssertionError".into(),
            message: "off by one".into(),
            line: Some(5),
            source: Some("assert f(2) == 4, 'off by one'".into())
        }
    );
    let e = sb.run("import numpy_that_does_not_exist\n");
    assert!(
        matches!(&e.outcome, Outcome::Failed { error, line: Some(1), .. } if error == "ModuleNotFoundError"),
        "{:?}",
        e.outcome
    );
    let e = sb.run("import sys\nsys.exit(3)\n");
    assert_eq!(e.exit_code, Some(3));
    // The program is `__main__` as under `python main.py`: its globals, argv, and a class that
    // pickle finds through sys.modules['__main__'] (both modes must agree).
    let e = sb.run(concat!(
        "import pickle, sys\n",
        "class P:\n    pass\n",
        "print(__name__, __file__, sys.argv[0], sys.modules['__main__'].P is P)\n",
        "print(type(pickle.loads(pickle.dumps(P()))).__name__)\n",
        "if __name__ == '__main__':\n    print('main')\n",
    ));
    assert_eq!(
        e.stdout, "__main__ /work/main.py /work/main.py True\nP\nmain\n",
        "{}",
        e.stderr
    );
    // The limits are the configured ones, not the host's (a host with a huge stack limit once
    // made threads fail to start under `memory_bytes`).
    let e = sb.run(
        "import resource as r\nfor k in ('STACK', 'AS', 'NOFILE', 'NPROC'):\n    print(r.getrlimit(getattr(r, 'RLIMIT_' + k))[0])\n",
    );
    let l = small();
    let want = format!(
        "{}\n{}\n{}\n{}\n",
        l.stack_bytes, l.memory_bytes, l.open_files, l.processes
    );
    assert_eq!(e.stdout, want, "{}", e.stderr);
}

#[test]
fn timeout_oom_crash() {
    for sb in sandboxes() {
        timeout_oom_crash_in(&sb);
    }
}

fn timeout_oom_crash_in(sb: &Sandbox) {
    let e = sb.run("while True:\n    pass\n");
    assert_eq!(e.outcome, Outcome::Timeout);
    assert!(
        e.wall_secs < 2.0 + 1.0,
        "killed near the 2 s limit, took {}",
        e.wall_secs
    );
    let e = sb.run("x = bytearray(2 << 30)\n");
    assert_eq!(e.outcome, Outcome::OutOfMemory, "{}", e.stderr);
    let e = sb.run("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n");
    assert_eq!(
        e.outcome,
        Outcome::Crashed {
            signal: 11,
            name: "SIGSEGV".into()
        }
    );
}

#[test]
fn the_layers_are_reported() {
    let sbs = sandboxes();
    let l = sbs[0].layers();
    assert_eq!(l.namespaces, ["user", "mount", "pid", "net", "ipc", "uts"]);
    assert!(l.seccomp_denied > 40 && l.no_new_privs && l.read_only_root);
    // Landlock is reported exactly when the kernel answers the ABI query.
    assert_eq!(l.landlock_abi, gradus_sandbox::landlock::abi_version());
    assert!(l.cgroup.is_some() != l.cgroup_note.is_some());
}

#[test]
fn unisolated_runs_but_says_so() {
    let sb = Sandbox::new(SandboxConfig {
        isolation: Isolation::Unisolated,
        limits: small(),
        ..SandboxConfig::default()
    })
    .unwrap();
    assert!(sb.layers().to_string().starts_with("UNISOLATED"));
    let e = sb.run("assert 1 + 1 == 3\n");
    assert!(
        matches!(&e.outcome, Outcome::Failed { error, line: Some(1), .. } if error == "AssertionError"),
        "{:?}",
        e.outcome
    );
    assert_eq!(sb.run("while True: pass\n").outcome, Outcome::Timeout);
}
