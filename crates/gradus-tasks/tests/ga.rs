//! The GA baseline and the counting oracle: finds the optimum of an easy function, is
//! deterministic given the seed, counts oracle calls exactly, and checks its settings.

use gradus_tasks::ehrlich::{Ehrlich, EhrlichConfig};
use gradus_tasks::ga::{best_at, quantile, regret, run_ga, GaConfig, Oracle};
use gradus_tensor::rng::Rng;

fn easy() -> Ehrlich {
    Ehrlich::new(&EhrlichConfig {
        num_states: 4,
        dim: 8,
        num_motifs: 1,
        motif_length: 3,
        quantization: None,
        epistasis_factor: 0.0,
        seed: 3,
    })
    .unwrap()
}

fn small_ga() -> GaConfig {
    GaConfig {
        num_particles: 100,
        mutation_prob: 0.1,
        recombine_prob: Some(0.5),
        survival_quantile: 0.2,
        steps: 40,
    }
}

#[test]
fn finds_the_optimum_of_an_easy_function() {
    let f = easy();
    let mut rng = Rng::new(0);
    let init = f.initial_solutions(1, &mut rng).remove(0);
    let mut oracle = Oracle::new(&f, Some(4000));
    run_ga(&small_ga(), &init, &mut oracle, &mut rng).unwrap();
    assert_eq!(oracle.best(), 1.0, "trace {:?}", oracle.trace());
    assert_eq!(f.evaluate(oracle.best_x().unwrap()), 1.0);
    assert_eq!(regret(oracle.best()), 0.0);
}

#[test]
fn deterministic_given_the_seed() {
    let f = Ehrlich::new(&EhrlichConfig::default()).unwrap();
    let run = |seed: u64| {
        let mut rng = Rng::new(seed);
        let init = f.initial_solutions(1, &mut rng).remove(0);
        let mut oracle = Oracle::new(&f, None);
        let cfg = GaConfig {
            num_particles: 200,
            steps: 5,
            ..GaConfig::llome_seed()
        };
        let out = run_ga(&cfg, &init, &mut oracle, &mut rng).unwrap();
        (out.scored, oracle.trace().to_vec(), oracle.calls())
    };
    let a = run(1);
    assert_eq!(a, run(1));
    assert_ne!(a.0, run(2).0);
}

#[test]
fn oracle_calls_are_counted_exactly() {
    let f = easy();
    let mut rng = Rng::new(5);
    let init = f.initial_solutions(1, &mut rng).remove(0);
    // No budget: every step scores every particle once: 7 steps × 100 particles.
    let cfg = GaConfig {
        steps: 7,
        ..small_ga()
    };
    let mut oracle = Oracle::new(&f, None);
    let out = run_ga(&cfg, &init, &mut oracle, &mut rng).unwrap();
    assert_eq!(oracle.calls(), 700);
    assert_eq!(out.steps, 7);
    // A budget of 250 ends the third step part-way, at exactly 250 calls.
    let mut oracle = Oracle::new(&f, Some(250));
    let out = run_ga(&cfg, &init, &mut oracle, &mut rng).unwrap();
    assert_eq!(oracle.calls(), 250);
    assert_eq!(out.steps, 3);
    assert!(oracle.exhausted());
    assert_eq!(oracle.call(&init), None);
    assert_eq!(oracle.calls(), 250);
    // Scored particles are distinct and carry f.
    let mut xs: Vec<_> = out.scored.iter().map(|s| s.0.clone()).collect();
    let n = xs.len();
    xs.sort();
    xs.dedup();
    assert_eq!(xs.len(), n);
    for (x, y) in &out.scored {
        assert_eq!(f.evaluate(x).to_bits(), y.to_bits());
    }
}

#[test]
fn best_so_far_trace() {
    let f = easy();
    let mut o = Oracle::new(&f, None);
    let bad = vec![f.num_states; f.dim]; // out of range → −∞
    let opt = f.optimal_solution();
    o.call(&bad);
    assert_eq!(o.trace(), &[] as &[(u64, f64)], "−∞ is not an improvement");
    o.call(&opt);
    o.call(&bad);
    assert_eq!(o.trace(), &[(2, 1.0)]);
    assert_eq!(best_at(o.trace(), 1), f64::NEG_INFINITY);
    assert_eq!(best_at(o.trace(), 2), 1.0);
    assert_eq!(best_at(o.trace(), 99), 1.0);
    // Regret counts infeasible-only as f = 0.
    assert_eq!(regret(f64::NEG_INFINITY), 1.0);
    assert_eq!(regret(0.25), 0.75);
}

#[test]
fn quantile_interpolates_like_torch() {
    // torch.quantile([1, 2, 3, 4], 0.1): position 0.1·3 = 0.3 → 1 + 0.3·(2 − 1) = 1.3.
    assert!((quantile(&[4.0, 1.0, 3.0, 2.0], 0.1) - 1.3).abs() < 1e-12);
    // Exact positions need no interpolation: q = 0.5 of 5 values is the middle one.
    assert_eq!(quantile(&[5.0, 1.0, 3.0, 2.0, 4.0], 0.5), 3.0);
    // Between a finite loss and +∞ the quantile is +∞ (then every particle survives).
    assert_eq!(quantile(&[0.0, f64::INFINITY], 0.5), f64::INFINITY);
}

#[test]
fn bad_settings_name_the_field() {
    let f = easy();
    let init = f.optimal_solution();
    let cases = [
        (
            GaConfig {
                mutation_prob: 0.0,
                ..small_ga()
            },
            "ga.mutation_prob",
        ),
        (
            GaConfig {
                mutation_prob: 1.0,
                ..small_ga()
            },
            "ga.mutation_prob",
        ),
        (
            GaConfig {
                recombine_prob: Some(1.0),
                ..small_ga()
            },
            "ga.recombine_prob",
        ),
        (
            GaConfig {
                num_particles: 0,
                ..small_ga()
            },
            "ga.num_particles",
        ),
        (
            GaConfig {
                survival_quantile: 1.0,
                ..small_ga()
            },
            "ga.survival_quantile",
        ),
        // 0.01 · 100 = 1 survivor: fewer than two parents.
        (
            GaConfig {
                survival_quantile: 0.01,
                ..small_ga()
            },
            "ga.survival_quantile",
        ),
    ];
    for (cfg, field) in cases {
        let mut o = Oracle::new(&f, None);
        let e = run_ga(&cfg, &init, &mut o, &mut Rng::new(0))
            .unwrap_err()
            .to_string();
        assert!(e.contains(field), "{field}: {e}");
    }
    let mut o = Oracle::new(&f, None);
    let e = run_ga(&small_ga(), &init[..3], &mut o, &mut Rng::new(0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("init"), "{e}");
    // The presets are valid.
    GaConfig::llome_seed().validate_at("ga").unwrap();
    GaConfig::holo_benchmark().validate_at("ga").unwrap();
    assert!((GaConfig::llome_seed().recombine_prob_for(32) - 1.1 / 32.0).abs() < 1e-15);
}
