//! `[phf]` in `train pretrain` (pretraining with human feedback): a tiny run per objective, exact
//! resume of the token-level objectives (AWR with its value head, unlikelihood), reference graph =
//! fast graph, the data preparation by hand, and config errors naming the field.

use std::path::Path;

use gradus_data::pack::{pack_best_fit, Overflow, Sequence};
use gradus_train::metrics::read_metrics;
use gradus_train::phf::{quantile, row_scores, PhfKind, PhfSection};
use gradus_train::recipe::{Engine, RecipeConfig};
use gradus_train::schedule::Schedule;

/// 80 small functions; every third one has a line with a PEP8 violation (`x=1`).
fn corpus(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("code.jsonl");
    let mut s = String::new();
    for i in 0..80 {
        let bad = if i % 3 == 0 {
            "    x=1\n"
        } else {
            "    x = 1\n"
        };
        let text = format!(
            "def f{}(a, b):\n{bad}    return a + b * {}\n",
            i % 7,
            i % 10
        );
        s.push_str(&serde_json::json!({ "text": text }).to_string());
        s.push('\n');
    }
    std::fs::write(&p, s).unwrap();
    p
}

fn tiny(dir: &Path, name: &str, data: &Path, kind: PhfKind) -> RecipeConfig {
    let mut c = RecipeConfig::default();
    c.run.dir = dir.to_path_buf();
    c.run.name = name.into();
    c.run.seed = 5;
    c.model.config.hidden_size = 16;
    c.model.config.intermediate_size = 32;
    c.model.config.num_hidden_layers = 1;
    c.model.config.num_attention_heads = 2;
    c.model.config.num_key_value_heads = 2;
    c.tokenizer.train_vocab_size = 280;
    c.data.source = data.display().to_string();
    c.data.seq_len = 48;
    c.data.val_fraction = 0.1;
    c.train.steps = 6;
    c.train.batch_size = 4;
    c.train.lr = 3e-3;
    c.train.progress = false;
    c.train.eval_every = 3;
    c.train.weight_norms_every = 0;
    c.schedule = Schedule::Cosine {
        warmup_steps: 1,
        min_lr_ratio: 0.1,
    };
    c.phf = Some(PhfSection {
        kind,
        // A large β so that RWR/AWR weights differ visibly from 1 on this tiny data.
        beta: if matches!(kind, PhfKind::Rwr | PhfKind::Awr) {
            0.05
        } else {
            10.0
        },
        ..PhfSection::default()
    });
    c
}

fn losses(run_dir: &Path) -> Vec<(u64, u64)> {
    read_metrics(&run_dir.join("metrics.jsonl"))
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["step"].as_u64().unwrap(),
                r["train/loss"].as_f64().unwrap().to_bits(),
            )
        })
        .collect()
}

#[test]
fn every_objective_trains_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let mut first_losses = Vec::new();
    for kind in PhfKind::ALL {
        let cfg = tiny(dir.path(), kind.name(), &data, kind);
        let s = gradus_train::pretrain::run(&cfg, false).unwrap();
        assert_eq!(s.steps, 6, "{kind:?}");
        let run = dir.path().join(kind.name());
        for f in [
            "config.resolved.toml",
            "metrics.jsonl",
            "report.html",
            "phf-scores.json",
        ] {
            assert!(run.join(f).exists(), "{kind:?}: missing {f}");
        }
        let rows = read_metrics(&run.join("metrics.jsonl")).unwrap();
        assert!(rows
            .iter()
            .all(|r| r["train/loss"].as_f64().unwrap().is_finite()));
        assert!(rows.iter().any(|r| r.contains_key("val/loss")), "{kind:?}");
        if kind.token_level() {
            assert!(rows[0].contains_key("phf/nll"), "{kind:?}: {:?}", rows[0]);
        }
        let resolved = std::fs::read_to_string(run.join("config.resolved.toml")).unwrap();
        assert!(
            resolved.contains(&format!("kind = \"{}\"", kind.name())),
            "{resolved}"
        );
        first_losses.push((kind, rows[0]["train/loss"].as_f64().unwrap()));
        // The tokenizer of every PHF run carries both control tokens.
        let tok =
            gradus_data::tokenizer::Tokenizer::from_dir(run.join("checkpoints/step-6")).unwrap();
        assert!(tok.token_to_id("<|aligned|>").is_some());
        assert!(tok.token_to_id("<|misaligned|>").is_some());
        if kind == PhfKind::Awr {
            assert!(run.join("checkpoints/step-6/value_head.json").exists());
        }
    }
    // Same init, same tokenizer, same first batch order for MLE, UL, RWR, AWR (no filtering or
    // control tokens): UL replaces −log p by −log(1 − p) on bad tokens, which is smaller at
    // p ≈ 1/V, so its first loss is below MLE's; RWR/AWR weights are < 1 on bad tokens (reward
    // −score < 0), so their first losses are below MLE's too.
    let get = |k: PhfKind| first_losses.iter().find(|x| x.0 == k).unwrap().1;
    let mle = get(PhfKind::Mle);
    assert!(get(PhfKind::Unlikelihood) < mle, "{first_losses:?}");
    assert!(get(PhfKind::Rwr) < mle, "{first_losses:?}");
    assert!(get(PhfKind::Awr) < mle, "{first_losses:?}");
}

fn resume_is_exact(kind: PhfKind, engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let mut whole = tiny(dir.path(), "whole", &data, kind);
    whole.train.engine = engine;
    gradus_train::pretrain::run(&whole, false).unwrap();
    let mut part = tiny(dir.path(), "parts", &data, kind);
    part.train.engine = engine;
    part.train.stop_after = 3;
    assert_eq!(gradus_train::pretrain::run(&part, false).unwrap().steps, 3);
    assert_eq!(gradus_train::pretrain::run(&part, true).unwrap().steps, 6);
    let a = losses(&dir.path().join("whole"));
    assert_eq!(a.len(), 6);
    assert_eq!(
        a,
        losses(&dir.path().join("parts")),
        "{kind:?}: losses differ after resume"
    );
    if kind == PhfKind::Awr {
        let va =
            std::fs::read(dir.path().join("whole/checkpoints/step-6/value_head.json")).unwrap();
        let vb =
            std::fs::read(dir.path().join("parts/checkpoints/step-6/value_head.json")).unwrap();
        assert_eq!(va, vb, "value head differs after resume");
    }
}

#[test]
fn awr_resumes_bit_identically() {
    resume_is_exact(PhfKind::Awr, Engine::Auto);
}

#[test]
fn conditional_resumes_bit_identically() {
    resume_is_exact(PhfKind::Conditional, Engine::Auto);
    // The objective is fixed for the life of a run: a resume that changes it is refused, naming it.
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let mut c = tiny(dir.path(), "fixed", &data, PhfKind::Conditional);
    c.train.stop_after = 2;
    gradus_train::pretrain::run(&c, false).unwrap();
    c.phf.as_mut().unwrap().kind = PhfKind::Mle;
    let start = gradus_train::rundir::Start::Resume {
        explicit: vec!["phf.kind".into()],
    };
    let e = gradus_train::pretrain::run(&c, start)
        .unwrap_err()
        .to_string();
    assert!(e.contains("phf.kind"), "{e}");
}

#[test]
fn unlikelihood_reference_graph_matches_fast_graph() {
    // The reference graph back-propagates the surrogate Σ dlogp·logp: same loss values (within
    // float reassociation) as the fast graph for the same steps.
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    for kind in [PhfKind::Unlikelihood, PhfKind::Awr] {
        let mut a = tiny(dir.path(), &format!("{}-fast", kind.name()), &data, kind);
        a.train.engine = Engine::Fast;
        a.train.steps = 3;
        let mut b = tiny(dir.path(), &format!("{}-ref", kind.name()), &data, kind);
        b.train.engine = Engine::Reference;
        b.train.steps = 3;
        gradus_train::pretrain::run(&a, false).unwrap();
        gradus_train::pretrain::run(&b, false).unwrap();
        let la = losses(&dir.path().join(format!("{}-fast", kind.name())));
        let lb = losses(&dir.path().join(format!("{}-ref", kind.name())));
        for ((_, x), (_, y)) in la.iter().zip(&lb) {
            let (x, y) = (f64::from_bits(*x), f64::from_bits(*y));
            assert!(
                (x - y).abs() < 1e-4 * (1.0 + x.abs()),
                "{kind:?}: {la:?} vs {lb:?}"
            );
        }
    }
}

#[test]
fn filtering_drops_the_documents_above_the_threshold() {
    // Every third document has one violation in "    x=1" (7 characters; 1/7 per character) and
    // ~50 characters in all: document score ≈ 1/50 > 2.8e-3, so filtering drops all of them from
    // the training split and keeps the others.
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let cfg = tiny(dir.path(), "filt", &data, PhfKind::Filtering);
    gradus_train::pretrain::run(&cfg, false).unwrap();
    let html = std::fs::read_to_string(dir.path().join("filt/report.html")).unwrap();
    // 80 documents, 8 held out (val_fraction 0.1); 27 bad documents (i % 3 == 0 for i < 80), some
    // of them held out: the dropped count is 27 minus the held-out bad ones, so between 19 and 27.
    let re =
        regex::Regex::new(r"training documents dropped \(score &gt; 2\.800e-3\)</td><td>(\d+)<")
            .unwrap();
    let n: usize = re
        .captures(&html)
        .unwrap_or_else(|| panic!("no filtering row in the report"))[1]
        .parse()
        .unwrap();
    assert!((19..=27).contains(&n), "dropped {n}");
    // The misaligned segments: 27 of 240 lines.
    assert!(html.contains("<td>27 ("), "segment count missing");
}

#[test]
fn row_scores_follow_the_packed_targets() {
    // Two documents with per-token scores [0, 1, 2, 3] and [0, 5, 6]; seq_len 8 packs both in one
    // row (best fit: the longer first): doc 0 at offset 0, doc 1 at offset 4. Position p predicts
    // token p+1 of its piece: scores [1, 2, 3, 0 (no target), 5, 6, 0 (no target), 0 (pad)].
    let seqs = vec![
        Sequence::pretrain(vec![10, 11, 12, 13]),
        Sequence::pretrain(vec![20, 21, 22]),
    ];
    let rows = pack_best_fit(&seqs, 8, 0, Overflow::Split).unwrap();
    assert_eq!(rows.len(), 1);
    let s = row_scores(&rows[0], &[vec![0.0, 1.0, 2.0, 3.0], vec![0.0, 5.0, 6.0]]);
    assert_eq!(s, vec![1.0, 2.0, 3.0, 0.0, 5.0, 6.0, 0.0, 0.0]);
    // A split document keeps each target's score: seq_len 3 cuts [10 11 12 13] into [10 11 12]
    // (targets 11 12 13) and [13] (no target).
    let rows = pack_best_fit(&seqs[..1], 3, 0, Overflow::Split).unwrap();
    let all: Vec<f32> = rows
        .iter()
        .flat_map(|r| row_scores(r, &[vec![0.0, 1.0, 2.0, 3.0]]))
        .collect();
    assert_eq!(all.iter().sum::<f32>(), 6.0);
}

#[test]
fn quantile_interpolates() {
    // numpy.quantile([1, 2, 3, 4], 0.5) = 2.5; 0.9 → 1 + 0.9·3 = 3.7 → 3 + 0.7 = 3.7.
    assert!((quantile(&[4.0, 1.0, 3.0, 2.0], 0.5) - 2.5).abs() < 1e-12);
    assert!((quantile(&[4.0, 1.0, 3.0, 2.0], 0.9) - 3.7).abs() < 1e-6);
}

#[test]
fn config_errors_name_the_field() {
    let parse = |s: &str| toml::from_str::<RecipeConfig>(s);
    let e = parse("[phf]\nkind = \"dpo\"\n").unwrap_err().to_string();
    assert!(e.contains("dpo") && e.contains("conditional"), "{e}");
    let e = parse("[phf]\nbogus = 1\n").unwrap_err().to_string();
    assert!(e.contains("bogus"), "{e}");
    let ok = parse("[phf]\nkind = \"awr\"\nbeta = 5.0\n").unwrap();
    assert_eq!(ok.phf.as_ref().unwrap().kind, PhfKind::Awr);
    assert_eq!(ok.phf.as_ref().unwrap().awr_alpha, 0.5);
    assert!(parse("").unwrap().phf.is_none());

    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let check = |f: &dyn Fn(&mut PhfSection), field: &str| {
        let mut c = tiny(dir.path(), "bad", &data, PhfKind::Rwr);
        f(c.phf.as_mut().unwrap());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains(field), "{field}: {e}");
    };
    check(&|p: &mut PhfSection| p.beta = 0.0, "phf.beta");
    check(
        &|p: &mut PhfSection| p.drop_token_prob = 1.5,
        "phf.drop_token_prob",
    );
    check(
        &|p: &mut PhfSection| p.filter_quantile = Some(2.0),
        "phf.filter_quantile",
    );
    check(&|p: &mut PhfSection| p.threshold = -1.0, "phf.threshold");
    check(
        &|p: &mut PhfSection| {
            p.scorer = gradus_tasks::phf::ScorerKind::Patterns;
            p.patterns = vec!["(".into()];
        },
        "phf.patterns[0]",
    );
    check(
        &|p: &mut PhfSection| p.misaligned_token = p.aligned_token.clone(),
        "phf.misaligned_token",
    );
    // SFT refuses [phf].
    let c = tiny(dir.path(), "sft", &data, PhfKind::Mle);
    let e = gradus_train::sft::run(&c, false).unwrap_err().to_string();
    assert!(e.contains("phf"), "{e}");
    // Filtering that keeps nothing names the threshold.
    let mut c = tiny(dir.path(), "none-left", &data, PhfKind::Filtering);
    c.phf.as_mut().unwrap().filter_quantile = Some(0.0);
    c.phf.as_mut().unwrap().filter_threshold = 0.0;
    // quantile 0 of scores that are ≥ 0 is the minimum (0): clean documents remain, so it runs.
    assert!(gradus_train::pretrain::run(&c, false).is_ok());
}

#[test]
fn samples_are_scored_on_complete_lines() {
    use gradus_train::lab_phf::score_samples;
    let s =
        gradus_tasks::phf::Scorer::new(gradus_tasks::phf::ScorerKind::Pep8, 79, &[], "p").unwrap();
    let texts = vec![
        // Ended by EOS: both lines count; "x=1" (3 chars, 1 violation) is bad: score (1 + 0)/8.
        ("x=1\ny = 2".to_string(), true),
        // Cut off by the token limit: the unfinished "z=" is left out; "a = 1" is clean.
        ("a = 1\nz=".to_string(), false),
        // Nothing complete: not scored.
        ("b=".to_string(), false),
    ];
    let r = score_samples(&s, &texts, 0.0);
    assert_eq!(
        (r.scored_samples, r.lines, r.bad_lines, r.bad_samples),
        (2, 3, 1, 1)
    );
    assert!((r.score_sum - 0.125).abs() < 1e-7, "{}", r.score_sum);
}

#[test]
fn lab_smoke_writes_table_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let o = gradus_train::lab_phf::PhfLabOptions {
        dir: dir.path().to_path_buf(),
        fast: true,
        progress: false,
        kinds: vec![PhfKind::Mle, PhfKind::Conditional],
        docs: Some(60),
        ..Default::default()
    };
    let out = gradus_train::lab_phf::run(&o).unwrap();
    // mle, conditional, and conditional sampled with <|aligned|> before every line.
    assert_eq!(out.rows.len(), 3);
    assert_eq!(out.rows[2].kind, gradus_train::lab_phf::FORCED_ROW);
    for r in &out.rows {
        assert!(r.clean_loss.is_finite() && r.clean_loss > 0.0, "{r:?}");
        assert!((0.0..=1.0).contains(&r.misaligned_lines));
        assert_eq!(r.samples, 8);
    }
    let lab = dir.path().join("lab-phf");
    for f in [
        "report.html",
        "results.json",
        "corpus.jsonl",
        "metrics.jsonl",
    ] {
        assert!(lab.join(f).exists(), "missing {f}");
    }
    let html = std::fs::read_to_string(lab.join("report.html")).unwrap();
    assert!(html.contains("conditional") && html.contains("Verdict"));
    // Equal tokens: both objectives saw the same number of training tokens up to the control
    // tokens (same steps and batch shape; rows are packed full but for the last one).
    assert!(out.rows.iter().all(|r| r.tokens_seen > 0));
}
