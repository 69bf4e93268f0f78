//! Ehrlich functions: parity with holo-bench (committed fixture), the structure of gradus' own
//! draws, hand-derived values, and bad settings.

use gradus_tasks::ehrlich::{banded_mask, is_ergodic, Ehrlich, EhrlichConfig};
use gradus_tensor::rng::Rng;
use serde_json::Value;

fn fixture() -> Value {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ehrlich/ehrlich.json"
    );
    let text = std::fs::read_to_string(p).expect("fixture ehrlich.json (run gen.py)");
    serde_json::from_str(&text).expect("fixture JSON")
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

fn config_of(c: &Value) -> EhrlichConfig {
    EhrlichConfig {
        num_states: c["num_states"].as_u64().unwrap() as usize,
        dim: c["dim"].as_u64().unwrap() as usize,
        num_motifs: c["num_motifs"].as_u64().unwrap() as usize,
        motif_length: c["motif_length"].as_u64().unwrap() as usize,
        quantization: c["quantization"].as_u64().map(|q| q as usize),
        epistasis_factor: c["epistasis_factor"].as_f64().unwrap(),
        seed: 0,
    }
}

/// gradus, given holo's parameters, reproduces every f-value bit for bit (−inf for infeasible),
/// the feasibility of every sequence, and holo's constructive optimum.
#[test]
fn holo_parity() {
    let doc = fixture();
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 4);
    let mut checked = 0;
    let mut partial = 0;
    for (ci, case) in cases.iter().enumerate() {
        let cfg = config_of(&case["config"]);
        let transition: Vec<Vec<f64>> = case["transition"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect()
            })
            .collect();
        let motifs = case["motifs"]
            .as_array()
            .unwrap()
            .iter()
            .map(usizes)
            .collect();
        let spacings = case["spacings"]
            .as_array()
            .unwrap()
            .iter()
            .map(usizes)
            .collect();
        let f = Ehrlich::from_parts(&cfg, transition, motifs, spacings).unwrap();
        assert_eq!(
            f.optimal_solution(),
            usizes(&case["optimal_solution"]),
            "case {ci}: optimal solution"
        );
        for (si, s) in case["sequences"].as_array().unwrap().iter().enumerate() {
            let x = usizes(&s["x"]);
            let want = s["f"].as_f64().unwrap_or(f64::NEG_INFINITY);
            let got = f.evaluate(&x);
            assert_eq!(
                got.to_bits(),
                want.to_bits(),
                "case {ci} sequence {si} ({}): gradus {got}, holo {want}",
                s["kind"]
            );
            assert_eq!(f.is_feasible(&x), s["feasible"].as_bool().unwrap());
            if want > 0.0 && want < 1.0 {
                partial += 1;
            }
            checked += 1;
        }
    }
    // The fixture exercises partial scores, not only 0, 1 and −inf.
    assert!(partial >= 4, "only {partial} partial scores in the fixture");
    assert!(checked >= 40);
}

/// A function small enough to score by hand.
/// v = 3, L = 6, one motif a = [0, 1] with spacing [2] (offsets 0, 2), q = 2 (= k).
/// Transitions: all allowed except 0 → 2.
fn tiny(q: usize, eps: f64) -> Ehrlich {
    let cfg = EhrlichConfig {
        num_states: 3,
        dim: 6,
        num_motifs: 1,
        motif_length: 2,
        quantization: Some(q),
        epistasis_factor: eps,
        seed: 0,
    };
    let t = vec![
        vec![0.5, 0.5, 0.0],
        vec![0.25, 0.5, 0.25],
        vec![1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0],
    ];
    Ehrlich::from_parts(&cfg, t, vec![vec![0, 1]], vec![vec![2]]).unwrap()
}

#[test]
fn hand_derived_values() {
    let f = tiny(2, 0.0);
    // x = 0 0 1 1 1 1: window l = 0 reads (x0, x2) = (0, 1): both match → h = 1, f = 1.
    assert_eq!(f.evaluate(&[0, 0, 1, 1, 1, 1]), 1.0);
    // x = 1 1 1 1 1 1: windows read (1, 1): only the second element matches → h = 1/2.
    assert_eq!(f.evaluate(&[1, 1, 1, 1, 1, 1]), 0.5);
    // x = 2 2 2 2 2 2: no element matches anywhere → 0 (feasible: 2 → 2 is allowed).
    assert_eq!(f.evaluate(&[2, 2, 2, 2, 2, 2]), 0.0);
    // 0 → 2 has probability 0: infeasible → −∞, even though the motif is present.
    assert_eq!(f.evaluate(&[0, 2, 1, 1, 1, 1]), f64::NEG_INFINITY);
    // Wrong length or a state out of range: not a solution → −∞.
    assert_eq!(f.evaluate(&[0, 0, 1]), f64::NEG_INFINITY);
    assert_eq!(f.evaluate(&[0, 0, 1, 1, 1, 3]), f64::NEG_INFINITY);
    // q = 1: ⌈2/1⌉ = 2 matches per level, one level → half a motif counts 0.
    let f1 = tiny(1, 0.0);
    assert_eq!(f1.evaluate(&[1, 1, 1, 1, 1, 1]), 0.0);
    assert_eq!(f1.evaluate(&[0, 0, 1, 1, 1, 1]), 1.0);
    // Epistasis ε = 1: g(1/2) = (1·½·(−½) + 1)·½ = ¾·½ = 3/8; g(1) = 1.
    let fe = tiny(2, 1.0);
    assert_eq!(fe.evaluate(&[1, 1, 1, 1, 1, 1]), 0.375);
    assert_eq!(fe.evaluate(&[0, 0, 1, 1, 1, 1]), 1.0);
    // holo's optimum: motif 0 at 0, gap filled with 0, 1 at offset 2, tail repeats 1.
    assert_eq!(f.optimal_solution(), vec![0, 0, 1, 1, 1, 1]);
}

/// Band half-width 1 on 5 states: row i allows i−1, i, i+1 (mod 5).
#[test]
fn banded_mask_wraps() {
    let m = banded_mask(5, 1);
    let row0: Vec<usize> = (0..5).filter(|&j| m[0][j]).collect();
    assert_eq!(row0, vec![0, 1, 4]);
    let row4: Vec<usize> = (0..5).filter(|&j| m[4][j]).collect();
    assert_eq!(row4, vec![0, 3, 4]);
    // A 3-cycle 0 → 1 → 2 → 0 is irreducible but periodic: not ergodic. With self-loops it is.
    let cyc = vec![
        vec![0.0, 1.0, 0.0],
        vec![0.0, 0.0, 1.0],
        vec![1.0, 0.0, 0.0],
    ];
    assert!(!is_ergodic(&cyc));
    let lazy = vec![
        vec![0.5, 0.5, 0.0],
        vec![0.0, 0.5, 0.5],
        vec![0.5, 0.0, 0.5],
    ];
    assert!(is_ergodic(&lazy));
    // Two closed classes: reducible.
    let split = vec![vec![1.0, 0.0], vec![0.0, 1.0]];
    assert!(!is_ergodic(&split));
}

/// Whether row `r`'s allowed columns (diagonal aside) hold a cyclic interval of `width` columns
/// and nothing outside it.
fn is_cyclic_band(row: &[f64], r: usize, width: usize) -> bool {
    let n = row.len();
    (0..n).any(|start| {
        (0..n).all(|j| {
            let inside = (j + n - start) % n < width;
            let allowed = row[j] > 0.0;
            if j == r {
                inside || allowed // the diagonal is always allowed
            } else {
                inside == allowed
            }
        })
    })
}

/// gradus' generator: ergodic, banded, row-stochastic; motifs jointly feasible; spacings fit;
/// the optimum scores 1; DMP samples are feasible; uniform sequences mostly are not.
#[test]
fn generated_functions_have_holo_structure() {
    for (seed, (v, l, c, k)) in [
        (32, 32, 4, 4),
        (8, 16, 2, 4),
        (10, 24, 2, 3),
        (32, 128, 4, 8),
    ]
    .into_iter()
    .enumerate()
    {
        let cfg = EhrlichConfig {
            num_states: v,
            dim: l,
            num_motifs: c,
            motif_length: k,
            quantization: None,
            epistasis_factor: 0.0,
            seed: seed as u64,
        };
        let f = Ehrlich::new(&cfg).unwrap();
        let bw = (v as f64 * 0.4) as usize;
        assert!(is_ergodic(&f.transition));
        for (i, row) in f.transition.iter().enumerate() {
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            assert!(row[i] > 0.0, "repeats are always allowed");
            if 2 * bw + 1 < v {
                assert!(is_cyclic_band(row, i, 2 * bw + 1), "row {i} not banded");
                let nz = row.iter().filter(|&&x| x > 0.0).count();
                assert!(nz == 2 * bw + 1 || nz == 2 * bw + 2);
            }
        }
        // Stationary: π P = π.
        for j in 0..v {
            let pj: f64 = (0..v).map(|i| f.stationary[i] * f.transition[i][j]).sum();
            assert!((pj - f.stationary[j]).abs() < 1e-9);
        }
        let joint: Vec<usize> = f.motifs.iter().flatten().copied().collect();
        assert_eq!(joint.len(), c * k);
        assert!(joint.windows(2).all(|w| f.transition[w[0]][w[1]] > 0.0));
        let slack = (l - c * k) / c;
        for s in &f.spacings {
            assert_eq!(s.len(), k - 1);
            assert!(s.iter().all(|&d| d >= 1));
            assert!(s.iter().sum::<usize>() <= (k - 1) + slack);
        }
        let opt = f.optimal_solution();
        assert_eq!(opt.len(), l);
        assert!(f.is_feasible(&opt));
        assert_eq!(f.evaluate(&opt), 1.0);
        let mut rng = Rng::new(7);
        for x in f.initial_solutions(8, &mut rng) {
            assert!(f.is_feasible(&x));
            let y = f.evaluate(&x);
            assert!((0.0..=1.0).contains(&y));
        }
        let infeasible = f
            .random_solutions(32, &mut rng)
            .iter()
            .filter(|x| f.evaluate(x) == f64::NEG_INFINITY)
            .count();
        assert!(
            infeasible >= 16,
            "uniform sequences should mostly be infeasible"
        );
        // Same seed, same function; another seed, another one.
        assert_eq!(Ehrlich::new(&cfg).unwrap(), f);
        let other = Ehrlich::new(&EhrlichConfig { seed: 99, ..cfg }).unwrap();
        assert_ne!(other.motifs, f.motifs);
    }
}

fn err(cfg: EhrlichConfig) -> String {
    Ehrlich::new(&cfg).unwrap_err().to_string()
}

#[test]
fn unsatisfiable_settings_name_the_field() {
    let base = EhrlichConfig::default();
    // c·k = 4·8 = 32 > L = 16.
    let e = err(EhrlichConfig {
        dim: 16,
        motif_length: 8,
        ..base.clone()
    });
    assert!(e.contains("num_motifs") && e.contains("32"), "{e}");
    // Motif longer than the number of states.
    let e = err(EhrlichConfig {
        num_states: 3,
        num_motifs: 1,
        motif_length: 4,
        quantization: None,
        ..base.clone()
    });
    assert!(e.contains("motif_length"), "{e}");
    // q = 3 does not divide k = 4; q = 0; q > k.
    for q in [3, 0, 5] {
        let e = err(EhrlichConfig {
            quantization: Some(q),
            ..base.clone()
        });
        assert!(e.contains("quantization"), "q = {q}: {e}");
    }
    let e = err(EhrlichConfig {
        num_states: 1,
        ..base.clone()
    });
    assert!(e.contains("num_states"), "{e}");
    let e = err(EhrlichConfig {
        epistasis_factor: f64::NAN,
        ..base.clone()
    });
    assert!(e.contains("epistasis_factor"), "{e}");
    // Prefixed names, as a lab config reports them.
    let e = EhrlichConfig {
        dim: 3,
        ..base.clone()
    }
    .validate_at("ehrlich")
    .unwrap_err()
    .to_string();
    assert!(e.contains("ehrlich.num_motifs"), "{e}");
    // Parameters that do not fit the settings.
    let f = Ehrlich::new(&base).unwrap();
    let e = Ehrlich::from_parts(
        &base,
        f.transition.clone(),
        vec![vec![0; 4]; 3],
        f.spacings.clone(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("motifs"), "{e}");
    let e = Ehrlich::from_parts(
        &base,
        f.transition.clone(),
        f.motifs.clone(),
        vec![vec![30, 1, 1]; 4],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("spacings"), "{e}");
}
