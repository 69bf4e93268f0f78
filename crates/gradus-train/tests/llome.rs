//! `gradus lab llome`: the shipped presets, bad settings, pair formation and curves on hand-made
//! data, and a tiny end-to-end lab (exact oracle accounting, resume, refusal).

use gradus_tasks::ehrlich::EhrlichConfig;
use gradus_tasks::ga::GaConfig;
use gradus_tensor::rng::Rng;
use gradus_train::llome::{
    curve, edit_pairs, parse_states, preference_triples, prompt_text, run, scaled_temperatures,
    tokenizer, Curve, Labelled, LlomeConfig, Method, PairsSection, RoundRecord, SeedData,
    StageSection,
};
use gradus_train::rundir::Start;

fn shipped(name: &str) -> LlomeConfig {
    let p = format!("{}/../../configs/llome/{name}", env!("CARGO_MANIFEST_DIR"));
    toml::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn shipped_configs_are_the_presets() {
    assert_eq!(shipped("default.toml"), LlomeConfig::default());
    assert_eq!(shipped("paper.toml"), LlomeConfig::paper());
    LlomeConfig::default().validate().unwrap();
    LlomeConfig::paper().validate().unwrap();
}

fn err(f: impl FnOnce(&mut LlomeConfig)) -> String {
    let mut c = LlomeConfig::default();
    f(&mut c);
    c.validate().unwrap_err().to_string()
}

#[test]
fn bad_settings_name_the_field() {
    // An oracle budget smaller than a round (one label cannot form a pair).
    let e = err(|c| c.budget.per_round = 1);
    assert!(
        e.contains("budget.per_round") && e.contains("smaller than a round"),
        "{e}"
    );
    // More labels than a round can propose: 32 × 2 × (1 + 4·3) = 832.
    let e = err(|c| c.budget.per_round = 833);
    assert!(e.contains("budget.per_round") && e.contains("832"), "{e}");
    // Unsatisfiable Ehrlich settings: c·k = 4·16 > L = 32; k > v; q not dividing k.
    let e = err(|c| c.ehrlich.motif_length = 16);
    assert!(e.contains("ehrlich.num_motifs"), "{e}");
    let e = err(|c| {
        c.ehrlich.num_states = 3;
        c.ehrlich.num_motifs = 1;
    });
    assert!(e.contains("ehrlich.motif_length"), "{e}");
    let e = err(|c| c.ehrlich.quantization = Some(3));
    assert!(e.contains("ehrlich.quantization"), "{e}");
    let e = err(|c| c.ga.survival_quantile = 0.001);
    assert!(e.contains("ga.survival_quantile"), "{e}");
    let e = err(|c| c.generation.temperatures = vec![1.0, 0.0]);
    assert!(e.contains("generation.temperatures"), "{e}");
    let e = err(|c| c.run.seeds.clear());
    assert!(e.contains("run.seeds"), "{e}");
    let e = err(|c| c.pairs.max_infeasible = 1.0);
    assert!(e.contains("pairs.max_infeasible"), "{e}");
}

/// Four-state sequences of length 4; max distance 0.25 · 4 = 1 position.
/// a = 0000 (0.25), b = 0001 (0.5), d = 0011 (infeasible), e = 1000 (0.25), c = 1111 (1.0).
fn items() -> Vec<(Vec<usize>, f64)> {
    vec![
        (vec![0, 0, 0, 0], 0.25),
        (vec![0, 0, 0, 1], 0.5),
        (vec![1, 1, 1, 1], 1.0),
        (vec![0, 0, 1, 1], f64::NEG_INFINITY),
        (vec![1, 0, 0, 0], 0.25),
        (vec![0, 0, 0, 0], 0.25), // a duplicate: counted once
    ]
}

fn pairs_cfg(max_infeasible: f64) -> PairsSection {
    PairsSection {
        max_distance: 0.25,
        neighbors: 30,
        max_infeasible,
        likelihood_quantile: 0.6,
        max_pairs: 100,
    }
}

#[test]
fn edit_pairs_follow_llome_filters() {
    // Within one position: a–b (0.25 → 0.5), a–e (equal scores: dropped), b–d (d infeasible → b).
    // c is 3+ positions from everything. With at most 10% infeasible pairs and one feasible pair,
    // round(1 · 0.1 / 0.9) = 0 infeasible pairs stay.
    let p = edit_pairs(&items(), 4, &pairs_cfg(0.1), &mut Rng::new(0));
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(
        (p[0].low.clone(), p[0].high.clone()),
        (vec![0, 0, 0, 0], vec![0, 0, 0, 1])
    );
    assert_eq!((p[0].f_low, p[0].f_high), (0.25, 0.5));
    // Allowing half: round(1 · 0.5 / 0.5) = 1 infeasible pair, d → b.
    let p = edit_pairs(&items(), 4, &pairs_cfg(0.5), &mut Rng::new(0));
    assert_eq!(p.len(), 2);
    assert!(p.iter().any(|q| q.low == vec![0, 0, 1, 1]
        && q.high == vec![0, 0, 0, 1]
        && q.f_low == f64::NEG_INFINITY));
}

#[test]
fn preference_triples_follow_llome() {
    // The infeasible d is filtered out (0 of 10% of 4 feasible items). For x = a: neighbours b
    // (better) and e (equal): triples (a, b, e) and (a, b, a) (x itself as the rejected one).
    // e's only neighbour a is not better; b has no better neighbour.
    let t = preference_triples(&items(), 4, &pairs_cfg(0.1), &mut Rng::new(0));
    let mut got: Vec<(Vec<usize>, Vec<usize>, Vec<usize>)> = t
        .iter()
        .map(|t| (t.x.clone(), t.chosen.clone(), t.rejected.clone()))
        .collect();
    got.sort();
    let a = vec![0, 0, 0, 0];
    let b = vec![0, 0, 0, 1];
    let e = vec![1, 0, 0, 0];
    assert_eq!(
        got,
        vec![(a.clone(), b.clone(), a.clone()), (a.clone(), b.clone(), e)]
    );
    assert!(t.iter().all(|t| t.f_chosen == 0.5));
}

#[test]
fn tokens_and_parsing() {
    let tok = tokenizer(4).unwrap();
    // Ids: 0 <|endoftext|>, 1 <|pad|>, 2 <|unk|>, 3 ":", then s0..s3 = 4..7.
    assert_eq!(
        tok.encode(&prompt_text(&[0, 3, 1]), false).unwrap(),
        vec![4, 7, 5, 3]
    );
    assert_eq!(parse_states(&[4, 7, 5, 0], 3, 4), Some(vec![0, 3, 1]));
    assert_eq!(parse_states(&[4, 7], 3, 4), None); // too short
    assert_eq!(parse_states(&[4, 3, 5], 3, 4), None); // the separator is not a state
    assert_eq!(parse_states(&[4, 8, 5], 3, 4), None); // out of range
}

#[test]
fn temperatures_rise_when_proposals_stay_close() {
    let base = [0.6, 1.0];
    assert_eq!(scaled_temperatures(&base, None, true), vec![0.6, 1.0]);
    assert_eq!(scaled_temperatures(&base, Some(0.05), true), vec![1.2, 1.6]);
    assert_eq!(
        scaled_temperatures(&base, Some(0.05), false),
        vec![0.6, 1.0]
    );
    assert_eq!(scaled_temperatures(&base, Some(0.12), true)[0], 0.8);
    assert_eq!(scaled_temperatures(&base, Some(0.3), true), vec![0.6, 1.0]);
}

#[test]
fn curves_count_every_label() {
    let seed = SeedData {
        init: vec![],
        scored: vec![],
        calls: 100,
        trace: vec![(1, 0.0), (40, 0.25)],
    };
    let lab = |f: Option<f64>| Labelled {
        x: vec![],
        f,
        loglik: 0.0,
        input: vec![],
    };
    let round = |labels: Vec<Labelled>| RoundRecord {
        round: 0,
        pairs: 0,
        temperatures: vec![],
        proposals: 0,
        parsable: 0,
        distinct_new: 0,
        mean_hamming: 0.0,
        labelled: labels,
    };
    // Calls 101, 102 (0.5: improvement), 103 (infeasible), then 104 (1.0: improvement).
    let c = curve(
        &seed,
        &[
            round(vec![lab(Some(0.1)), lab(Some(0.5)), lab(None)]),
            round(vec![lab(Some(1.0))]),
        ],
    );
    assert_eq!(
        c,
        Curve {
            trace: vec![(1, 0.0), (40, 0.25), (102, 0.5), (104, 1.0)],
            calls: 104
        }
    );
}

fn tiny(dir: &std::path::Path) -> LlomeConfig {
    let mut c = LlomeConfig::default();
    c.run.dir = dir.to_path_buf();
    c.run.name = "llome".into();
    c.run.seeds = vec![0];
    c.ehrlich = EhrlichConfig {
        num_states: 6,
        dim: 8,
        num_motifs: 2,
        motif_length: 2,
        quantization: None,
        epistasis_factor: 0.0,
        seed: 1,
    };
    c.ga = GaConfig {
        num_particles: 60,
        mutation_prob: 0.05,
        recombine_prob: None,
        survival_quantile: 0.2,
        steps: 3,
    };
    c.budget.per_round = 10;
    c.budget.rounds = 1;
    c.generation.prompts = 4;
    c.generation.iterations = 1;
    c.generation.samples = 3;
    c.generation.temperatures = vec![1.0];
    c.model.hidden_size = 16;
    c.model.num_hidden_layers = 1;
    c.model.num_attention_heads = 2;
    c.model.intermediate_size = 32;
    c.first = StageSection {
        steps: 40,
        batch_size: 16,
        lr: 3e-3,
    };
    c.train = StageSection {
        steps: 3,
        batch_size: 4,
        lr: 1e-3,
    };
    c.pairs.max_pairs = 200;
    c
}

#[test]
fn tiny_lab_runs_counts_calls_and_resumes() {
    let d = tempfile::tempdir().unwrap();
    let cfg = tiny(d.path());
    let out = run(&cfg, Start::New).unwrap();
    let lab = d.path().join("llome");
    assert!(out.report.exists());
    for m in ["GA", "LLOME-SFT", "LLOME-DPO", "LLOME-MargE"] {
        assert!(out.table.contains(m), "{}", out.table);
    }
    let res: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(lab.join("results.json")).unwrap()).unwrap();
    // Checkpoints: after the seed data (60 × 3 = 180 calls) and after each of the 2 label rounds.
    assert_eq!(res["checkpoints"], serde_json::json!([180, 190, 200]));
    let curves = &res["curves"]["0"];
    // The GA spends exactly a LLOME run's planned calls: 180 + 2 × 10.
    assert_eq!(curves["ga"]["calls"], 200);
    let seed: SeedData =
        serde_json::from_str(&std::fs::read_to_string(lab.join("seed-0/seed_data.json")).unwrap())
            .unwrap();
    assert_eq!(seed.calls, 180);
    let r0: RoundRecord =
        serde_json::from_str(&std::fs::read_to_string(lab.join("seed-0/r0-labels.json")).unwrap())
            .unwrap();
    assert!(r0.labelled.len() <= 10);
    // One iteration: a greedy proposal and 3 samples for each of the 4 prompts.
    assert_eq!(r0.proposals, 4 * (1 + 3));
    for m in [Method::Sft, Method::Dpo, Method::Marge] {
        let r1: RoundRecord = serde_json::from_str(
            &std::fs::read_to_string(lab.join(format!("seed-0/{}/r1-labels.json", m.name())))
                .unwrap(),
        )
        .unwrap();
        // Every LLOME call is a label: seed data + both rounds' labels.
        let calls = curves[m.name()]["calls"].as_u64().unwrap();
        assert_eq!(
            calls,
            180 + r0.labelled.len() as u64 + r1.labelled.len() as u64
        );
        // Labels are f of their sequence.
        for l in &r1.labelled {
            assert!(l.x.len() == 8);
        }
    }
    // Every regret is in [0, 1] and never rises with more calls.
    for (_, r) in res["regret"].as_object().unwrap() {
        let per_cp: Vec<f64> = r
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v[0].as_f64().unwrap())
            .collect();
        assert!(per_cp.iter().all(|x| (0.0..=1.0).contains(x)));
        assert!(per_cp.windows(2).all(|w| w[1] <= w[0]), "{per_cp:?}");
    }
    // A second start refuses; --resume reads every finished stage back: the same table.
    let e = run(&cfg, Start::New).err().unwrap().to_string();
    assert!(e.contains("--resume"), "{e}");
    let again = run(&cfg, Start::Resume { explicit: vec![] }).unwrap();
    assert_eq!(again.table, out.table);
}
