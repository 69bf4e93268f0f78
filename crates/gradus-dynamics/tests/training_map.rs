//! Training maps on sequences whose answer is known by construction.

use gradus_dynamics::hmm::{Covariance, FitOptions, GaussianHmm, Sequences};
use gradus_dynamics::map::{describe, DecodedRun, StateKind};
use gradus_dynamics::pipeline::{map_runs, write_map, MapOptions, States};
use gradus_dynamics::run::{write_dynamics, DYNAMICS_FILE};
use gradus_dynamics::select::{select_states, SelectOptions};
use gradus_dynamics::stats::{CheckpointStats, COLUMNS};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn hmm4() -> GaussianHmm {
    // Four states over two metrics a, b; means S0 (0, 0), S1 (3, −1), S2 (1, 5), S3 (9, 9).
    GaussianHmm {
        k: 4,
        d: 2,
        covariance: Covariance::Diag,
        startprob: vec![0.25; 4],
        transmat: vec![0.25; 16],
        means: vec![0.0, 0.0, 3.0, -1.0, 1.0, 5.0, 9.0, 9.0],
        covars: vec![1.0; 8],
    }
}

fn run(name: &str, states: &[usize], conv: u64) -> DecodedRun {
    DecodedRun {
        name: name.into(),
        steps: (0..states.len() as u64).map(|t| 10 * t).collect(),
        states: states.to_vec(),
        convergence: Some(conv),
    }
}

#[test]
fn map_tables_by_hand() {
    // Two fast runs go S0 → S2; two slow ones take S1 on the way.
    let runs = vec![
        run("a", &[0, 0, 2, 2], 20),
        run("b", &[0, 0, 2, 2], 30),
        run("c", &[0, 1, 1, 2], 60),
        run("d", &[0, 1, 2, 2], 70),
    ];
    let cols = vec!["a".to_string(), "b".to_string()];
    let m = describe(&runs, &hmm4(), &cols, 0.05, 1);
    // Transitions: 0→1 twice (c, d), 0→2 twice (a, b), 1→2 twice (c, d); no self-loops.
    let t: Vec<(usize, usize, usize, usize)> = m
        .transitions
        .iter()
        .map(|t| (t.from, t.to, t.count, t.runs))
        .collect();
    assert_eq!(t, vec![(0, 1, 2, 2), (0, 2, 2, 2), (1, 2, 2, 2)]);
    // 0 → 2 shifts b by 5 − 0 and a by 1: the top metric is b (+5).
    let t02 = m
        .transitions
        .iter()
        .find(|t| (t.from, t.to) == (0, 2))
        .unwrap();
    assert_eq!(t02.top_shifts, vec![("b".to_string(), 5.0)]);
    // S0 and S2 are visited by every run: obligatory, r undefined (visited is constant).
    assert_eq!(m.states[0].kind, StateKind::Obligatory);
    assert_eq!(m.states[2].kind, StateKind::Obligatory);
    assert_eq!(m.states[0].r, None);
    assert_eq!(m.states[3].kind, StateKind::Unvisited);
    // S1: visited = (0, 0, 1, 1), convergence (20, 30, 60, 70): Sxy = 40, Sxx = 1, Syy = 1700 →
    // r = 40/√1700; t = r√(2/(1 − r²)) = 4√2 with 2 df → p = 1 − t/√(2 + t²) = 1 − 4√2/√34 ≈ 0.0298.
    let s1 = &m.states[1];
    assert!((s1.r.unwrap() - 40.0 / 1700f64.sqrt()).abs() < 1e-12);
    let p = 1.0 - 4.0 * 2f64.sqrt() / 34f64.sqrt();
    assert!((s1.p.unwrap() - p).abs() < 1e-12);
    assert_eq!(s1.kind, StateKind::Detour);
    // Occupancy 3 of 16 checkpoints; stays of 2 (run c) and 1 (run d) checkpoints → dwell 1.5,
    // in steps (10 + 10) and 10 → 15; visited by 2 of 4 runs.
    assert!((s1.occupancy - 3.0 / 16.0).abs() < 1e-12);
    assert!((s1.dwell_checkpoints - 1.5).abs() < 1e-12);
    assert!((s1.dwell_steps - 15.0).abs() < 1e-12);
    assert!((s1.visit_frequency - 0.5).abs() < 1e-12);
    assert_eq!(s1.mean_convergence_visited, Some(65.0));
    assert_eq!(s1.mean_convergence_skipped, Some(25.0));
    // With α below p the same state is only optional.
    let strict = describe(&runs, &hmm4(), &cols, 0.01, 1);
    assert_eq!(strict.states[1].kind, StateKind::Optional);
}

/// Samples `n` observations of dimension d around `mean` with std `sd`.
fn noisy(rng: &mut ChaCha8Rng, mean: &[f64], sd: f64, n: usize) -> Vec<f64> {
    let mut out = Vec::new();
    for _ in 0..n {
        for m in mean {
            // Sum of 12 uniforms − 6 ≈ N(0, 1): enough for well separated clusters.
            let z: f64 = (0..12).map(|_| rng.gen::<f64>()).sum::<f64>() - 6.0;
            out.push(m + sd * z);
        }
    }
    out
}

#[test]
fn bic_selects_the_true_number_of_states() {
    // Ten sequences that visit three well separated regimes (means 0, 4, 8 in both features) in
    // order: the generating model has 3 states, and BIC should pick 3 among 1..=5.
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let seqs: Vec<Vec<f64>> = (0..10)
        .map(|_| {
            let mut s = noisy(&mut rng, &[0.0, 0.0], 0.5, 10);
            s.extend(noisy(&mut rng, &[4.0, 4.0], 0.5, 10));
            s.extend(noisy(&mut rng, &[8.0, 8.0], 0.5, 10));
            s
        })
        .collect();
    let data = Sequences::new(2, seqs, &[]).unwrap();
    let o = SelectOptions {
        covariance: Covariance::Diag,
        fit: FitOptions::default(),
        restarts: 3,
        seed: 0,
    };
    let (rows, best) = select_states(&data, None, 5, &o).unwrap();
    assert_eq!(rows.len(), 5);
    assert_eq!(
        best.k,
        3,
        "BIC per k: {:?}",
        rows.iter().map(|r| r.bic).collect::<Vec<_>>()
    );
    // Training likelihood never drops as states are added (nested models, best of restarts).
    assert!(
        rows[2].train_loglik > rows[1].train_loglik && rows[1].train_loglik > rows[0].train_loglik
    );
}

fn write_run(
    root: &std::path::Path,
    name: &str,
    regimes: &[(f64, usize)],
    acc_step: u64,
    rng: &mut ChaCha8Rng,
) -> std::path::PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let mut rows = Vec::new();
    let mut step = 0;
    for &(level, n) in regimes {
        for _ in 0..n {
            // Every column follows the regime level (scaled per column), plus small noise.
            let stats = COLUMNS
                .iter()
                .enumerate()
                .map(|(c, name)| {
                    (
                        name.to_string(),
                        level * (1.0 + c as f64) + 0.05 * (rng.gen::<f64>() - 0.5),
                    )
                })
                .collect();
            rows.push(CheckpointStats {
                step,
                stats,
                layers: Default::default(),
            });
            step += 100;
        }
    }
    write_dynamics(&dir.join(DYNAMICS_FILE), &rows).unwrap();
    let metrics: String = (0..step / 100)
        .map(|i| {
            format!(
                "{{\"step\":{},\"eval/accuracy\":{}}}\n",
                i * 100,
                if i * 100 >= acc_step { 0.9 } else { 0.1 }
            )
        })
        .collect();
    std::fs::write(dir.join("metrics.jsonl"), metrics).unwrap();
    dir
}

#[test]
fn pipeline_finds_the_detour_by_construction() {
    // Five fast runs: regime 0 then regime 10, converging at step 600–1000. Five slow runs pass
    // through regime 5 in between and converge at 1500–1900. The HMM with 3 states must put the
    // middle regime in a state visited only by the slow runs: a detour.
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut dirs = Vec::new();
    for i in 0..5u64 {
        dirs.push(write_run(
            tmp.path(),
            &format!("fast-{i}"),
            &[(0.0, 6), (10.0, 6)],
            600 + 100 * i,
            &mut rng,
        ));
        dirs.push(write_run(
            tmp.path(),
            &format!("slow-{i}"),
            &[(0.0, 6), (5.0, 6), (10.0, 6)],
            1500 + 100 * i,
            &mut rng,
        ));
    }
    let o = MapOptions {
        states: States::Fixed(3),
        restarts: 3,
        ..MapOptions::default()
    };
    let out = map_runs(&dirs, &o).unwrap();
    let detours: Vec<_> = out
        .map
        .states
        .iter()
        .filter(|s| s.kind == StateKind::Detour)
        .collect();
    assert_eq!(detours.len(), 1, "{:?}", out.map.states);
    let detour = detours[0].state;
    for r in &out.map.runs {
        assert_eq!(
            r.states.contains(&detour),
            r.name.starts_with("slow"),
            "run {} path {:?}",
            r.name,
            r.states
        );
    }
    assert_eq!(
        out.map
            .states
            .iter()
            .filter(|s| s.kind == StateKind::Obligatory)
            .count(),
        2
    );
    // Convergence steps come from metrics.jsonl: the first step with accuracy ≥ 0.5.
    let fast0 = out.map.runs.iter().find(|r| r.name == "fast-0").unwrap();
    assert_eq!(fast0.convergence, Some(600));
    assert_eq!(out.train_runs.len() + out.heldout_runs.len(), 10);
    assert_eq!(out.heldout_runs.len(), 2);
    write_map(&tmp.path().join("map"), &out).unwrap();
    let html = std::fs::read_to_string(tmp.path().join("map/report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("Detour") && html.contains("slow-4"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("map/map.json")).unwrap())
            .unwrap();
    assert_eq!(json["hmm"]["k"], 3);
}

#[test]
fn bad_runs_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let ok = write_run(tmp.path(), "ok", &[(0.0, 3), (1.0, 3)], 300, &mut rng);
    let short = write_run(tmp.path(), "short", &[(0.0, 1)], 0, &mut rng);
    let e = map_runs(&[ok.clone(), short], &MapOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("run short") && e.contains("at least 2"), "{e}");
    let missing = tmp.path().join("nothing-here");
    let e = map_runs(&[ok.clone(), missing], &MapOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("run nothing-here"), "{e}");
    // A NaN in dynamics.jsonl (serialised as null) names the file and line.
    let bad = tmp.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    let mut line = serde_json::json!({"step": 0, "stats": {}, "layers": {}});
    for c in COLUMNS {
        line["stats"][c] = serde_json::json!(1.0);
    }
    line["stats"]["trace"] = serde_json::Value::Null;
    std::fs::write(bad.join(DYNAMICS_FILE), format!("{line}\n")).unwrap();
    let e = map_runs(&[ok.clone(), bad], &MapOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("run bad") && e.contains("dynamics.jsonl:1"),
        "{e}"
    );
    // More states than checkpoints.
    let e = map_runs(
        &[ok],
        &MapOptions {
            states: States::Fixed(20),
            ..MapOptions::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("20 states"), "{e}");
}
