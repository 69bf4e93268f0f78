//! Runs the fuzz targets on stable Rust, without libFuzzer: every file of `seeds/<target>/` (and of
//! `corpus/<target>/` and `artifacts/<target>/` when present), then seeded random mutations of them.
//! A panicking input is written to `artifacts/<target>/crash-<hash>` and the run exits with status 1.
//!
//!   cargo run --release --example replay -- all                # seeds + 3000 mutations per target
//!   cargo run --release --example replay -- jsonl --secs 120   # mutate for two minutes
//!   cargo run --release --example replay -- config --iters 10000 --seed 7
//!   cargo run --release --example replay -- safetensors path/to/input   # replay files only
//!   cargo run --release --example replay -- write-seeds        # regenerate the generated seeds

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gradus_fuzz::{run, tiny_checkpoint, TARGETS};

/// splitmix64: small, seeded, good enough to pick mutations.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Tokens worth splicing in, per target (a poor man's libFuzzer dictionary).
fn dictionary(target: &str) -> &'static [&'static str] {
    match target {
        "jsonl" => &[
            "{",
            "}",
            "[",
            "]",
            "\"",
            ":",
            ",",
            "\n",
            "\r\n",
            "null",
            "true",
            "1e999",
            "-0",
            "\"\\ud800\"",
            "\"text\"",
            "\"prompt\"",
            "\"completion\"",
            "\"messages\"",
            "\"role\"",
            "\"content\"",
            "\"type\"",
            "\"[{\\\"role\\\":1}]\"",
            "\u{feff}",
            "\u{0}",
        ],
        "config" => &[
            "[run]\n",
            "[model]\n",
            "[model.config]\n",
            "[tokenizer]\n",
            "[data]\n",
            "[optimizer]\n",
            "[schedule]\n",
            "[train]\n",
            "[[x]]\n",
            " = ",
            "\n",
            "\"",
            "'",
            "0",
            "-1",
            "1e308",
            "nan",
            "inf",
            "-inf",
            "18446744073709551616",
            "[]",
            "{}",
            "true",
            "steps",
            "lr",
            "batch_size",
            "kind",
            "\"cosine\"",
            "\"linear\"",
            "hidden_size",
            "vocab_size",
            "source",
            "#set train.steps=0\n",
            "#set a..b=1\n",
            "#set model=1\n",
            "#set train.lr=nan\n",
            "#set model.config.num_attention_heads=3\n",
        ],
        "safetensors" => &[
            "{",
            "}",
            "\"dtype\":\"F32\"",
            "\"dtype\":\"BF16\"",
            "\"dtype\":\"F16\"",
            "\"dtype\":\"I64\"",
            "\"shape\":[]",
            "\"shape\":[0]",
            "\"shape\":[4294967296,4294967296]",
            "\"data_offsets\":[0,0]",
            "\"data_offsets\":[0,99999999]",
            "\"__metadata__\":{\"format\":\"pt\"}",
            "\"lm_head.weight\"",
            "\"model.norm.weight\"",
            "\0\0\0\0\0\0\0\0",
            "\u{ff}\u{ff}\u{ff}\u{ff}\u{ff}\u{ff}\u{ff}\u{7f}",
        ],
        _ => &[],
    }
}

fn mutate(rng: &mut Rng, pool: &[Vec<u8>], target: &str) -> Vec<u8> {
    let mut v = pool[rng.below(pool.len())].clone();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        let len = v.len();
        match rng.below(10) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                v.splice(i..i, bytes);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(16));
                v.drain(i..i + n);
            }
            4 if len > 0 => {
                // duplicate a range
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                let chunk = v[i..i + n].to_vec();
                let j = rng.below(len + 1);
                v.splice(j..j, chunk);
            }
            5 => v.truncate(rng.below(len + 1)),
            6 => {
                // splice in another input's tail
                let other = &pool[rng.below(pool.len())];
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                v.truncate(cut);
                v.extend_from_slice(&other[from..]);
            }
            7 | 8 => {
                let d = dictionary(target);
                if !d.is_empty() {
                    let tok = d[rng.below(d.len())].as_bytes();
                    let i = rng.below(len + 1);
                    if rng.below(2) == 0 || len == 0 {
                        v.splice(i..i, tok.iter().copied());
                    } else {
                        let end = (i + tok.len()).min(len);
                        v.splice(i..end, tok.iter().copied());
                    }
                }
            }
            _ if len >= 8 && target == "safetensors" => {
                // rewrite the u64 header length
                let n: u64 = match rng.below(4) {
                    0 => rng.next(),
                    1 => (len as u64)
                        .wrapping_add(rng.below(16) as u64)
                        .wrapping_sub(8),
                    2 => rng.below(len) as u64,
                    _ => u64::MAX,
                };
                v[..8].copy_from_slice(&n.to_le_bytes());
            }
            _ => {}
        }
    }
    v
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn hash(data: &[u8]) -> u64 {
    // FNV-1a: a stable name for a crashing input.
    data.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// Runs one input; on a panic saves it and returns the panic message.
fn try_one(root: &Path, target: &str, data: &[u8]) -> Option<String> {
    let r = std::panic::catch_unwind(|| run(target, data));
    let payload = r.err()?;
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "<non-string panic>".into());
    let dir = root.join("artifacts").join(target);
    std::fs::create_dir_all(&dir).ok();
    let f = dir.join(format!("crash-{:016x}", hash(data)));
    std::fs::write(&f, data).ok();
    Some(format!("{}: {msg}", f.display()))
}

struct Opts {
    targets: Vec<String>,
    files: Vec<PathBuf>,
    iters: Option<u64>,
    secs: Option<f64>,
    seed: u64,
}

fn parse_args() -> Opts {
    let mut args = std::env::args().skip(1);
    let mut o = Opts {
        targets: vec![],
        files: vec![],
        iters: None,
        secs: None,
        seed: 0,
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--iters" => {
                o.iters = Some(args.next().and_then(|x| x.parse().ok()).expect("--iters N"))
            }
            "--secs" => o.secs = Some(args.next().and_then(|x| x.parse().ok()).expect("--secs S")),
            "--seed" => o.seed = args.next().and_then(|x| x.parse().ok()).expect("--seed K"),
            "all" => o.targets.extend(TARGETS.iter().map(|s| s.to_string())),
            t if TARGETS.contains(&t) => o.targets.push(t.to_string()),
            f if Path::new(f).exists() => o.files.push(f.into()),
            other => {
                eprintln!("unknown argument {other:?}; targets: all {TARGETS:?}");
                std::process::exit(2);
            }
        }
    }
    if o.targets.is_empty() {
        o.targets.extend(TARGETS.iter().map(|s| s.to_string()));
    }
    o
}

fn write_seeds(root: &Path) {
    let dir = root.join("seeds/safetensors");
    std::fs::create_dir_all(&dir).unwrap();
    let good = tiny_checkpoint(gradus_model::WeightDtype::F32);
    std::fs::write(dir.join("valid-f32.safetensors"), &good).unwrap();
    std::fs::write(
        dir.join("valid-bf16.safetensors"),
        tiny_checkpoint(gradus_model::WeightDtype::Bf16),
    )
    .unwrap();
    std::fs::write(dir.join("truncated.safetensors"), &good[..good.len() / 2]).unwrap();
    let hlen = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    std::fs::write(dir.join("header-only.safetensors"), &good[..8 + hlen]).unwrap();
    println!("wrote generated seeds under {}", dir.display());
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if std::env::args().nth(1).as_deref() == Some("write-seeds") {
        write_seeds(&root);
        return;
    }
    // Panics are caught and reported once per input; keep the default hook from printing each one.
    std::panic::set_hook(Box::new(|_| {}));
    let o = parse_args();
    let mut failures = 0usize;
    for target in &o.targets {
        let t0 = Instant::now();
        let mut paths = o.files.clone();
        if paths.is_empty() {
            for sub in ["seeds", "corpus", "artifacts"] {
                paths.extend(files_in(&root.join(sub).join(target)));
            }
        }
        let pool: Vec<Vec<u8>> = paths
            .iter()
            .map(|p| std::fs::read(p).expect("reading an input"))
            .collect();
        let mut crashes = Vec::new();
        for (p, data) in paths.iter().zip(&pool) {
            if let Some(m) = try_one(&root, target, data) {
                crashes.push(format!("{} → {m}", p.display()));
            }
        }
        let mut n = 0u64;
        if o.files.is_empty() && !pool.is_empty() {
            let iters = o
                .iters
                .unwrap_or(if o.secs.is_some() { u64::MAX } else { 3000 });
            let deadline = o.secs.map(|s| t0 + Duration::from_secs_f64(s));
            let mut rng = Rng(o.seed ^ hash(target.as_bytes()));
            while n < iters && deadline.is_none_or(|d| Instant::now() < d) {
                let input = mutate(&mut rng, &pool, target);
                if let Some(m) = try_one(&root, target, &input) {
                    crashes.push(m);
                }
                n += 1;
            }
        }
        println!(
            "{target}: {} files + {n} mutated inputs in {:.1}s, {} panics",
            pool.len(),
            t0.elapsed().as_secs_f64(),
            crashes.len()
        );
        for c in crashes.iter().take(20) {
            println!("  {c}");
        }
        failures += crashes.len();
    }
    if failures > 0 {
        std::process::exit(1);
    }
}
