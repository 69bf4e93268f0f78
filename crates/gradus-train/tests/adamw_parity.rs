//! AdamW against torch.optim.AdamW: `tests/fixtures/adamw/gen.py` (see its docstring) ran 5 steps on
//! a decayed 2-D tensor and an undecayed 1-D tensor with given gradients and learning rates; the
//! second tensor had no gradient at step 2. We replay the same gradients and compare after every step.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use gradus_tensor::io::read_native;
use gradus_train::optim::{AdamW, AdamWConfig};

/// Max abs difference allowed against PyTorch (f32, a few ulps of O(1) values over 5 steps).
const ADAMW_PARITY: f32 = 1e-6;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/adamw")
}

struct Fixture {
    t: HashMap<String, Tensor>,
    lrs: Vec<f64>,
    betas: (f64, f64),
    eps: f64,
    wd: f64,
}

fn load() -> Fixture {
    let t: HashMap<String, Tensor> = read_native(&fixture_dir().join("fixture.safetensors"))
        .unwrap()
        .into_iter()
        .collect();
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_dir().join("versions.json")).unwrap(),
    )
    .unwrap();
    let lrs = v["lrs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let betas = (
        v["betas"][0].as_f64().unwrap(),
        v["betas"][1].as_f64().unwrap(),
    );
    Fixture {
        t,
        lrs,
        betas,
        eps: v["eps"].as_f64().unwrap(),
        wd: v["weight_decay"]["w"].as_f64().unwrap(),
    }
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    flat(a)
        .iter()
        .zip(flat(b))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn setup(f: &Fixture) -> (Var, Var, AdamW) {
    let w = Var::from_tensor(&f.t["init.w"]).unwrap();
    let b = Var::from_tensor(&f.t["init.b"]).unwrap();
    let cfg = AdamWConfig {
        betas: f.betas,
        eps: f.eps,
        weight_decay: f.wd,
    };
    // Default rule: w (2-D) decays, b (1-D) does not -- the fixture's two param groups.
    let opt = AdamW::new(vec![("w".into(), w.clone()), ("b".into(), b.clone())], cfg).unwrap();
    assert_eq!(opt.group("w").unwrap().weight_decay, f.wd);
    assert_eq!(opt.group("b").unwrap().weight_decay, 0.0);
    (w, b, opt)
}

fn grads_at(f: &Fixture, k: usize, w: &Var, b: &Var) -> GradStore {
    let mut g = GradStore::default();
    g.insert(w.as_tensor(), f.t[&format!("grad.w.{k}")].clone());
    if let Some(gb) = f.t.get(&format!("grad.b.{k}")) {
        g.insert(b.as_tensor(), gb.clone());
    }
    g
}

#[test]
fn adamw_matches_pytorch_step_by_step() {
    let f = load();
    assert!(
        !f.t.contains_key("grad.b.2"),
        "fixture should skip b at step 2"
    );
    let (w, b, mut opt) = setup(&f);
    for (k, &lr) in f.lrs.iter().enumerate() {
        opt.step(&grads_at(&f, k, &w, &b), lr).unwrap();
        let dw = max_diff(w.as_tensor(), &f.t[&format!("expected.w.{k}")]);
        let db = max_diff(b.as_tensor(), &f.t[&format!("expected.b.{k}")]);
        assert!(
            dw <= ADAMW_PARITY && db <= ADAMW_PARITY,
            "step {k}: |dw| {dw:e}, |db| {db:e}"
        );
    }
    // The moments and the per-parameter step counts match too (b skipped one step: 4, w: 5).
    let state: HashMap<String, Tensor> = opt.state_tensors().unwrap().into_iter().collect();
    for name in ["exp_avg.w", "exp_avg_sq.w", "exp_avg.b", "exp_avg_sq.b"] {
        let d = max_diff(&state[name], &f.t[name]);
        assert!(d <= ADAMW_PARITY, "{name}: {d:e}");
    }
    let step = |n: &str| {
        state[n]
            .to_dtype(candle_core::DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    assert_eq!(step("step.w"), flat(&f.t["step.w"])[0] as f64);
    assert_eq!(step("step.b"), flat(&f.t["step.b"])[0] as f64);
    assert_eq!(step("step"), 5.0);
}

#[test]
fn saved_state_resumes_bitwise() {
    let f = load();
    // Uninterrupted.
    let (w1, b1, mut o1) = setup(&f);
    for (k, &lr) in f.lrs.iter().enumerate() {
        o1.step(&grads_at(&f, k, &w1, &b1), lr).unwrap();
    }
    // Interrupted after 3 steps: save params + state to disk, rebuild everything, load, continue.
    let dir = tempfile::tempdir().unwrap();
    let (w2, b2, mut o2) = setup(&f);
    for k in 0..3 {
        o2.step(&grads_at(&f, k, &w2, &b2), f.lrs[k]).unwrap();
    }
    let path = dir.path().join("optimizer.safetensors");
    o2.save_state_file(&path).unwrap();
    let (p_w, p_b) = (
        w2.as_tensor().copy().unwrap(),
        b2.as_tensor().copy().unwrap(),
    );
    drop((w2, b2, o2));
    let (w3, b3, mut o3) = setup(&f);
    w3.set(&p_w).unwrap();
    b3.set(&p_b).unwrap();
    o3.load_state_file(&path).unwrap();
    assert_eq!(o3.steps_taken(), 3);
    for k in 3..5 {
        o3.step(&grads_at(&f, k, &w3, &b3), f.lrs[k]).unwrap();
    }
    assert_eq!(flat(w1.as_tensor()), flat(w3.as_tensor()));
    assert_eq!(flat(b1.as_tensor()), flat(b3.as_tensor()));
}
