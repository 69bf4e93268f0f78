//! Speed benches of gradus-dynamics (the lead measures them on a quiet machine; see bench/dynamics/).
//!
//!     cargo run --release -p gradus-dynamics --example dynamics_bench -- hmm-fit bench/dynamics/hmm_data.json
//!     cargo run --release -p gradus-dynamics --example dynamics_bench -- stats [--hidden 256 --layers 5 --ffn 1024 --vocab 4096]
//!
//! `hmm-fit` reads the data and initialisation written by `bench/dynamics/hmm_fit.py` and runs
//! exactly `n_iter` EM iterations (tol = −∞), as the Python script does with hmmlearn, and prints
//! one JSON line. `stats` builds a Llama-shaped model (q, k, v, o, gate, up, down per layer, tied
//! embedding; ≈ 6.3M parameters by default), saves it as safetensors, and times the 14 statistics
//! from the file and from memory.

use std::time::Instant;

use gradus_dynamics::hmm::{Covariance, FitOptions, GaussianHmm, Sequences};
use gradus_dynamics::stats::{checkpoint_stats, safetensors_stats, MatrixSelection, NamedTensor};
use rand::{Rng, SeedableRng};
use serde_json::Value;

fn flat(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(a) => a.iter().flat_map(flat).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap_or(f64::NAN)],
        _ => Vec::new(),
    }
}

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn hmm_fit(path: &str) -> Result<(), Box<dyn std::error::Error>> {
    let f: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let k = f["k"].as_u64().ok_or("k")? as usize;
    let d = f["d"].as_u64().ok_or("d")? as usize;
    let n_iter = f["n_iter"].as_u64().ok_or("n_iter")? as usize;
    let seqs: Vec<Vec<f64>> = f["sequences"]
        .as_array()
        .ok_or("sequences")?
        .iter()
        .map(flat)
        .collect();
    let data = Sequences::new(d, seqs, &[])?;
    for cov in [Covariance::Diag, Covariance::Full] {
        let key = if cov == Covariance::Diag {
            "covars_diag"
        } else {
            "covars_full"
        };
        let init = GaussianHmm {
            k,
            d,
            covariance: cov,
            startprob: flat(&f["init"]["startprob"]),
            transmat: flat(&f["init"]["transmat"]),
            means: flat(&f["init"]["means"]),
            covars: flat(&f["init"][key]),
        };
        let o = FitOptions {
            n_iter,
            tol: f64::NEG_INFINITY,
            ..FitOptions::default()
        };
        let mut best = f64::INFINITY;
        let mut ll = 0.0;
        for _ in 0..3 {
            let mut m = init.clone();
            let t0 = Instant::now();
            let rep = m.fit_from(&data, &o)?;
            best = best.min(t0.elapsed().as_secs_f64());
            ll = rep.last();
        }
        println!(
            "{}",
            serde_json::json!({"bench": "hmm_fit", "impl": "gradus", "covariance": format!("{cov:?}").to_lowercase(), "k": k, "d": d, "n_obs": data.n_obs(), "n_iter": n_iter, "seconds_best_of_3": best, "final_loglik": ll})
        );
    }
    Ok(())
}

fn stats(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let (h, layers, ffn, vocab) = (
        arg(args, "--hidden", 256),
        arg(args, "--layers", 5),
        arg(args, "--ffn", 1024),
        arg(args, "--vocab", 4096),
    );
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut mat = |name: String, r: usize, c: usize| NamedTensor {
        name,
        shape: vec![r, c],
        values: (0..r * c).map(|_| rng.gen::<f32>() - 0.5).collect(),
    };
    let mut tensors = vec![mat("model.embed_tokens.weight".into(), vocab, h)];
    for l in 0..layers {
        for p in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            tensors.push(mat(format!("model.layers.{l}.self_attn.{p}.weight"), h, h));
        }
        tensors.push(mat(
            format!("model.layers.{l}.mlp.gate_proj.weight"),
            ffn,
            h,
        ));
        tensors.push(mat(format!("model.layers.{l}.mlp.up_proj.weight"), ffn, h));
        tensors.push(mat(
            format!("model.layers.{l}.mlp.down_proj.weight"),
            h,
            ffn,
        ));
    }
    let n_params: usize = tensors.iter().map(|t| t.values.len()).sum();
    let dir = std::env::temp_dir().join(format!("gradus-dynamics-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("model.safetensors");
    let views: Vec<(String, gradus_tensor::Tensor)> = tensors
        .iter()
        .map(|t| {
            Ok((
                t.name.clone(),
                gradus_tensor::Tensor::from_vec(
                    t.values.clone(),
                    t.shape.clone(),
                    &gradus_tensor::Device::Cpu,
                )?,
            ))
        })
        .collect::<gradus_tensor::Result<_>>()?;
    gradus_tensor::io::write_safetensors(&file, &views, gradus_tensor::io::StoreDtype::F32)?;
    let mut mem = f64::INFINITY;
    let mut from_file = f64::INFINITY;
    for _ in 0..3 {
        let t0 = Instant::now();
        checkpoint_stats(0, &tensors, MatrixSelection::Blocks)?;
        mem = mem.min(t0.elapsed().as_secs_f64());
        let t0 = Instant::now();
        safetensors_stats(0, &file, MatrixSelection::Blocks)?;
        from_file = from_file.min(t0.elapsed().as_secs_f64());
    }
    std::fs::remove_dir_all(&dir)?;
    println!(
        "{}",
        serde_json::json!({"bench": "checkpoint_stats", "params": n_params, "matrices": tensors.len() - 1, "seconds_in_memory_best_of_3": mem, "seconds_from_safetensors_best_of_3": from_file, "threads": rayon::current_num_threads()})
    );
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("hmm-fit") => match args.get(1) {
            Some(p) => hmm_fit(p),
            None => Err("usage: dynamics_bench hmm-fit DATA.json".into()),
        },
        Some("stats") => stats(&args[1..]),
        _ => Err("usage: dynamics_bench hmm-fit DATA.json | stats [--hidden H --layers L --ffn F --vocab V]".into()),
    };
    if let Err(e) = r {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
