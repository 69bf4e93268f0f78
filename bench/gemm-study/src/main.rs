//! `gemm-study`: times the GEMM candidates on the engine's shapes (one JSON line per shape ×
//! candidate on stdout). Run by `bench/gemm_study.sh`, which builds it twice (with and without the
//! gemm crate's `x86-v4` feature), interleaves it with MKL's `torch.matmul` and prints the table.
//!
//! ```text
//! gemm-study shapes [--markdown]
//! gemm-study run [--candidates gemm,faer,own-avx512,...] [--threads 2] [--budget-ms 120]
//!                [--min-reps 5] [--only base,lab,peak] [--round R] [--cpu-time]
//! ```
//! Candidates: `gemm` (the gemm crate as the engine calls it; AVX-512 in the default build,
//! AVX2 in the `--no-default-features` build; labelled `gemm-avx512` / `gemm-avx2`), `faer`
//! (faer's matmul, its own ISA choice), `faer-avx2` / `faer-avx512` (faer's kernel with the ISA
//! forced), `own-avx512`, `own-avx2`, `own-prepacked-avx512`, `own-prepacked-avx2` (B packed
//! once before timing; only for shapes whose B is a weight; the one-off packing time is reported
//! as `pack_ms`). Default: every candidate this CPU and build can run.
//!
//! `--cpu-time` (with `--threads 1`): time by the thread's on-CPU time, a development aid on a
//! loaded machine (preemption does not count; cache sharing still does). Not for results.
//!
//! Timing per (shape, candidate): 2 untimed calls, then at least `--min-reps` samples and as many
//! as fit in `--budget-ms`; a sample is one call, or the mean of a batch of calls for calls under
//! ~50 µs; reports best and median per call. Shapes are the outer loop and candidates the
//! inner one, so a drifting machine hits every candidate alike.

use std::time::Instant;

use gemm_study::candidates as cand;
use gemm_study::own::Isa;
use gemm_study::shapes::{all_gemms, markdown, markdown_attention, Gemm, Layout, BASE, LAB};

fn usage() -> ! {
    eprintln!(
        "usage: gemm-study shapes [--markdown] | gemm-study run [--candidates LIST] [--threads N] \
         [--budget-ms MS] [--min-reps N] [--only GROUPS] [--round R]"
    );
    std::process::exit(2)
}

/// The gemm crate's ISA in this build.
fn gemm_label() -> &'static str {
    if cfg!(feature = "x86-v4") && Isa::Avx512.available() {
        "gemm-avx512"
    } else {
        "gemm-avx2"
    }
}

fn default_candidates() -> Vec<String> {
    let mut v = vec!["gemm".to_string(), "faer".into()];
    for isa in [Isa::Avx512, Isa::Avx2] {
        if isa.available() {
            v.push(format!("faer-{}", isa.name()));
            v.push(format!("own-{}", isa.name()));
            v.push(format!("own-prepacked-{}", isa.name()));
        }
    }
    v
}

fn parse_isa(s: &str) -> Option<Isa> {
    match s {
        "avx512" => Some(Isa::Avx512),
        "avx2" => Some(Isa::Avx2),
        "scalar" => Some(Isa::Scalar),
        _ => None,
    }
}

/// Seconds this thread has run on a CPU: `clock_gettime(CLOCK_THREAD_CPUTIME_ID)` by a raw
/// syscall (Linux x86-64: syscall 228, clock id 3), which is exact to the nanosecond (the
/// `/proc` schedstat counters only advance at scheduler ticks).
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn thread_cpu_s() -> f64 {
    let mut ts = [0i64; 2];
    // SAFETY: clock_gettime writes one struct timespec (two i64) to the pointer.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") 228i64 => _,
            in("rdi") 3i64,
            in("rsi") ts.as_mut_ptr(),
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack)
        );
    }
    ts[0] as f64 + ts[1] as f64 * 1e-9
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
fn thread_cpu_s() -> f64 {
    f64::NAN
}

/// `--cpu-time` (development aid on a loaded machine, one thread only): time calls by the
/// thread's on-CPU time instead of wall time, so time spent preempted does not count.
static CPU_TIME: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Times `f` as the module docs say; returns (best, median) seconds per call and the number of
/// samples. Calls shorter than ~50 µs are timed in batches (one sample = the mean of a batch), so
/// the clock's own cost and resolution do not swamp 1 µs attention tiles.
fn time(budget_s: f64, min_reps: usize, mut f: impl FnMut()) -> (f64, f64, usize) {
    let cpu = CPU_TIME.load(std::sync::atomic::Ordering::Relaxed);
    let now = || {
        if cpu {
            thread_cpu_s()
        } else {
            let t: &Instant = START.get_or_init(Instant::now);
            t.elapsed().as_secs_f64()
        }
    };
    f();
    let t0 = now();
    f();
    let one = (now() - t0).max(1e-9);
    let batch = ((50e-6 / one).ceil() as usize).clamp(1, 1000);
    let mut ts = Vec::new();
    let start = Instant::now();
    while ts.len() < min_reps || (start.elapsed().as_secs_f64() < budget_s && ts.len() < 10_000) {
        let t0 = now();
        for _ in 0..batch {
            f();
        }
        ts.push((now() - t0) / batch as f64);
    }
    ts.sort_by(|a, b| a.total_cmp(b));
    (ts[0], ts[ts.len() / 2], ts.len())
}

/// Origin of the wall clock readings.
static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            ((s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect()
}

fn json_shape(g: &Gemm) -> String {
    format!(
        "{{\"id\": \"{}\", \"group\": \"{}\", \"m\": {}, \"n\": {}, \"k\": {}, \"layout\": \"{}\", \
         \"count\": {}, \"b_is_weight\": {}, \"accumulate\": {}, \"single_thread\": {}, \"role\": \"{}\"}}",
        g.id(),
        g.group,
        g.m,
        g.n,
        g.k,
        g.layout.name(),
        g.count,
        g.b_is_weight,
        accumulates(g),
        g.single_thread,
        g.role
    )
}

/// The engine accumulates weight gradients (TN, beta = 1); the study times the other layouts as
/// plain products (the engine's residual adds on o/down and the dn sums of dX differ only in
/// reading C once).
fn accumulates(g: &Gemm) -> bool {
    g.layout == Layout::TN
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else { usage() };
    let flag = |name: &str| -> Option<String> {
        args.iter()
            .position(|a| a == name)
            .map(|i| args.get(i + 1).cloned().unwrap_or_else(|| usage()))
    };
    match cmd.as_str() {
        "shapes" => {
            if args.iter().any(|a| a == "--markdown") {
                for p in [BASE, LAB] {
                    println!(
                        "### {} preset (N = {}·{} = {} token rows)\n",
                        p.name,
                        p.batch,
                        p.seq,
                        p.batch * p.seq
                    );
                    println!("{}", markdown(&p));
                    println!(
                        "Attention tiles of the {} step (one thread per call):\n\n{}",
                        p.name,
                        markdown_attention(&p)
                    );
                }
            } else {
                for g in all_gemms() {
                    println!("{}", json_shape(&g));
                }
            }
        }
        "run" => run(
            flag("--candidates")
                .map(|s| s.split(',').map(str::to_string).collect())
                .unwrap_or_else(default_candidates),
            flag("--threads").map_or(2, |s| s.parse().unwrap_or_else(|_| usage())),
            flag("--budget-ms").map_or(120.0, |s| s.parse().unwrap_or_else(|_| usage())) / 1e3,
            flag("--min-reps").map_or(5, |s| s.parse().unwrap_or_else(|_| usage())),
            flag("--only").map(|s| s.split(',').map(str::to_string).collect::<Vec<_>>()),
            flag("--round").unwrap_or_else(|| "0".into()),
        ),
        _ => usage(),
    }
}

fn run(
    cands: Vec<String>,
    threads: usize,
    budget: f64,
    min_reps: usize,
    only: Option<Vec<String>>,
    round: String,
) {
    if std::env::args().any(|a| a == "--cpu-time") {
        if threads != 1 {
            eprintln!("gemm-study: --cpu-time needs --threads 1");
            std::process::exit(2);
        }
        CPU_TIME.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .expect("rayon pool");
    for c in &cands {
        let ok = match c.as_str() {
            "gemm" | "faer" => true,
            s => s
                .strip_prefix("own-prepacked-")
                .or_else(|| s.strip_prefix("own-"))
                .or_else(|| s.strip_prefix("faer-"))
                .and_then(parse_isa)
                .is_some_and(|i| i.available()),
        };
        if !ok {
            eprintln!("gemm-study: unknown candidate or ISA missing on this CPU: {c}");
            std::process::exit(2);
        }
    }
    let build = if cfg!(feature = "x86-v4") {
        "x86-v4"
    } else {
        "avx2"
    };
    for g in all_gemms() {
        if let Some(o) = &only {
            if !o.iter().any(|x| x == g.group) {
                continue;
            }
        }
        let (m, n, k, l) = (g.m, g.n, g.k, g.layout);
        let acc = accumulates(&g);
        let threads = if g.single_thread { 1 } else { threads };
        let a = random(m * k, 1);
        let b = random(k * n, 2);
        let mut c = random(m * n, 3);
        for name in &cands {
            let mut pack_ms = None;
            let (best, med, reps) = match name.as_str() {
                "gemm" => time(budget, min_reps, || {
                    cand::gemm_crate(m, n, k, &a, &b, &mut c, l, acc, threads)
                }),
                "faer" => time(budget, min_reps, || {
                    cand::faer_matmul(m, n, k, &a, &b, &mut c, l, acc, threads)
                }),
                s if s.starts_with("faer-") => {
                    let avx512 = s == "faer-avx512";
                    time(budget, min_reps, || {
                        cand::faer_kernel(avx512, m, n, k, &a, &b, &mut c, l, acc, threads)
                    })
                }
                s if s.starts_with("own-prepacked-") => {
                    if !g.b_is_weight {
                        continue;
                    }
                    let isa = parse_isa(&s["own-prepacked-".len()..]).unwrap_or_else(|| usage());
                    let (pb_best, _, _) =
                        time(budget / 4.0, 3, || drop(cand::pack_b(isa, n, k, &b, l)));
                    pack_ms = Some(pb_best * 1e3);
                    let pb = cand::pack_b(isa, n, k, &b, l);
                    time(budget, min_reps, || {
                        cand::own_prepacked(m, &a, &pb, &mut c, l, acc, threads)
                    })
                }
                s => {
                    let isa = parse_isa(&s["own-".len()..]).unwrap_or_else(|| usage());
                    time(budget, min_reps, || {
                        cand::own(isa, m, n, k, &a, &b, &mut c, l, acc, threads)
                    })
                }
            };
            let label = if name == "gemm" {
                gemm_label().to_string()
            } else {
                name.clone()
            };
            println!(
                "{{\"side\": \"rust\", \"build\": \"{build}\", \"round\": \"{round}\", \"candidate\": \"{label}\", \
                 \"shape\": \"{}\", \"threads\": {threads}, \"reps\": {reps}, \"best_ms\": {:.6}, \
                 \"median_ms\": {:.6}, \"median_gflops\": {:.2}, \"pack_ms\": {}}}",
                g.id(),
                best * 1e3,
                med * 1e3,
                g.flops() / med / 1e9,
                pack_ms.map_or("null".to_string(), |p| format!("{p:.6}"))
            );
        }
    }
}
