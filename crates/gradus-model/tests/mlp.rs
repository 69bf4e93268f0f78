//! The hand-written MLP (`gradus_model::mlp`) against candle's autograd of the same function:
//! loss and every parameter's gradient on random weights and inputs; accumulation and errors.
//!
//! Tolerance: both sides are f32 with different summation orders; loss |Δ| ≤ 1e-5, gradients
//! max |Δ| ≤ 1e-4 · max |reference| + 1e-7 (a wrong term — a missing ReLU mask, a bias gradient
//! not summed, a transposed weight — is off by O(1) of that scale).

use gradus_model::mlp::{MlpClassifier, MlpConfig};
use gradus_tensor::rng::Rng;
use gradus_tensor::{Device, Tensor, Var};

fn reference(m: &MlpClassifier, x: &[f32], y: &[u32], rows: usize) -> (f64, Vec<Vec<f32>>) {
    let dev = Device::Cpu;
    let vars: Vec<Var> = m
        .named_tensors()
        .into_iter()
        .map(|(_, s, v)| Var::from_slice(&v, s.as_slice(), &dev).unwrap())
        .collect();
    let c = m.cfg.classes;
    let xt = Tensor::from_slice(x, (rows, m.cfg.inputs), &dev).unwrap();
    let a = xt
        .matmul(&vars[0].as_tensor().t().unwrap())
        .unwrap()
        .broadcast_add(vars[1].as_tensor())
        .unwrap();
    let h = a.relu().unwrap();
    let z = h
        .matmul(&vars[2].as_tensor().t().unwrap())
        .unwrap()
        .broadcast_add(vars[3].as_tensor())
        .unwrap();
    let m_ = z.max_keepdim(1).unwrap();
    let zc = z.broadcast_sub(&m_).unwrap();
    let lse = zc.exp().unwrap().sum_keepdim(1).unwrap().log().unwrap();
    let logp = zc.broadcast_sub(&lse).unwrap();
    let onehot: Vec<f32> = y
        .iter()
        .flat_map(|&t| (0..c).map(move |k| if k == t as usize { 1.0 } else { 0.0 }))
        .collect();
    let oh = Tensor::from_slice(&onehot, (rows, c), &dev).unwrap();
    let loss = ((logp * oh).unwrap().sum_all().unwrap().neg().unwrap() / rows as f64).unwrap();
    let g = loss.backward().unwrap();
    let grads = vars
        .iter()
        .map(|v| {
            g.get(v.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        })
        .collect();
    (loss.to_scalar::<f32>().unwrap() as f64, grads)
}

fn data(seed: u64, rows: usize, inputs: usize, classes: usize) -> (Vec<f32>, Vec<u32>) {
    let mut rng = Rng::new(seed);
    let x = (0..rows * inputs).map(|_| rng.normal() as f32).collect();
    let y = (0..rows).map(|_| rng.below(classes) as u32).collect();
    (x, y)
}

#[test]
fn gradients_match_candle_autograd() {
    for (cfg, rows, seed) in [
        (
            MlpConfig {
                inputs: 7,
                hidden: 33,
                classes: 2,
            },
            19,
            1,
        ),
        (
            MlpConfig {
                inputs: 40,
                hidden: 1000,
                classes: 2,
            },
            64,
            2,
        ),
        (
            MlpConfig {
                inputs: 5,
                hidden: 12,
                classes: 4,
            },
            9,
            3,
        ),
    ] {
        let mut m = MlpClassifier::new_random(&cfg, seed).unwrap();
        let (x, y) = data(seed + 10, rows, cfg.inputs, cfg.classes);
        let (loss_ref, g_ref) = reference(&m, &x, &y, rows);
        m.zero_grads();
        m.forward(&x, rows).unwrap();
        let loss = m.backward(&y, 1.0).unwrap();
        assert!(
            (loss - loss_ref).abs() < 1e-5,
            "{cfg:?}: loss {loss} vs {loss_ref}"
        );
        let mut off = 0;
        for ((name, _, v), gr) in m.named_tensors().iter().zip(&g_ref) {
            let gf = &m.grads()[off..off + v.len()];
            off += v.len();
            let scale = gr.iter().fold(0f32, |a, &x| a.max(x.abs()));
            assert!(scale > 0.0, "{name}: zero reference gradient");
            let d = gf
                .iter()
                .zip(gr)
                .fold(0f32, |a, (p, q)| a.max((p - q).abs()));
            assert!(
                d <= 1e-4 * scale + 1e-7,
                "{cfg:?}: gradient of {name} differs by {d} (scale {scale})"
            );
        }
    }
}

#[test]
fn gradients_accumulate_with_scale_and_bad_inputs_are_errors() {
    let cfg = MlpConfig {
        inputs: 4,
        hidden: 8,
        classes: 2,
    };
    let mut m = MlpClassifier::new_random(&cfg, 5).unwrap();
    let (x, y) = data(6, 6, 4, 2);
    m.zero_grads();
    m.forward(&x, 6).unwrap();
    m.backward(&y, 1.0).unwrap();
    let once = m.grads().to_vec();
    // Two backwards with scale 0.5 each add up to one with scale 1.
    m.zero_grads();
    for _ in 0..2 {
        m.forward(&x, 6).unwrap();
        m.backward(&y, 0.5).unwrap();
    }
    for (a, b) in m.grads().iter().zip(&once) {
        assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0));
    }
    assert!(m.forward(&x[..5], 6).is_err());
    m.forward(&x, 6).unwrap();
    let e = m
        .backward(&[0, 1, 2, 0, 0, 0], 1.0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("label 2"), "{e}");
    let e = m
        .set_named(&[("fc1.weight".into(), vec![0.0; 3])], "ck.safetensors")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("ck.safetensors") && e.contains("fc1.weight"),
        "{e}"
    );
    let e = MlpConfig { hidden: 0, ..cfg }
        .validate()
        .unwrap_err()
        .to_string();
    assert!(e.contains("mlp.hidden"), "{e}");
}

#[test]
fn sgd_learns_a_sparse_parity() {
    // n = 8 bits, k = 2 (XOR of two bits): an MLP of width 64 trained by full-batch SGD
    // (lr 0.5) on all 256 inputs reaches 100% accuracy; a linear model cannot exceed ~50-75%.
    let n = 8;
    let mut x = Vec::new();
    let mut y = Vec::new();
    for v in 0u32..256 {
        for b in 0..n {
            x.push(if v >> b & 1 == 1 { 1.0f32 } else { -1.0 });
        }
        y.push((v & 1) ^ (v >> 5 & 1));
    }
    let cfg = MlpConfig {
        inputs: n,
        hidden: 64,
        classes: 2,
    };
    let mut m = MlpClassifier::new_random(&cfg, 7).unwrap();
    for _ in 0..400 {
        m.zero_grads();
        m.forward(&x, 256).unwrap();
        m.backward(&y, 1.0).unwrap();
        let (p, g) = m.params_and_grads();
        for (p, g) in p.iter_mut().zip(g.iter()) {
            *p -= 0.5 * g;
        }
    }
    let pred = m.predict(&x, 256).unwrap();
    let acc = pred.iter().zip(&y).filter(|(a, b)| a == b).count();
    assert_eq!(acc, 256, "accuracy {acc}/256");
}
