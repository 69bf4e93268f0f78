//! The SAS lab's pieces: BERT masking statistics, UAS/SAS on a hand-built attention matrix, the
//! SAS regulariser's value and gradient (by hand and by finite differences through a model), its
//! schedule, bit-identical resume, config errors naming the field, and the lab end to end at
//! smoke size.

use gradus_model::bert_mlm::BertMlm;
use gradus_model::encoder::Encoder;
use gradus_tasks::depgrammar::{MASK, N_SPECIAL};
use gradus_tensor::rng::Rng;
use gradus_tensor::{DType, Device, Tensor, Var};
use gradus_train::icl::emergence::LabSize;
use gradus_train::rundir::Start;
use gradus_train::sas::lab::{self, SasLabOptions};
use gradus_train::sas::uas::{GoldArc, UasAccumulator};
use gradus_train::sas::{
    mask_sentence, sas_penalty, train_run, SasLearner, SasRunConfig, SasSchedule,
};

#[test]
fn masking_follows_berts_statistics() {
    // 4000 sentences of 10 words ([CLS] w… [SEP]), vocabulary of 100 words: 40 000 positions.
    // Selected: Binomial(40 000, 0.15): mean 6000, sd 71 → fraction 0.15 ± 0.0018.
    // Of the selected: [MASK] 0.8; a random word 0.1, which equals the original with
    // probability 1/100, so "changed to another word" is 0.1·0.99 = 0.099 and "unchanged" is
    // 0.1 + 0.001 = 0.101 (sds ≈ 0.005, 0.004 over ~6000).
    let vocab = N_SPECIAL as usize + 100;
    let sent: Vec<u32> = std::iter::once(1)
        .chain((0..10).map(|k| N_SPECIAL + 7 * k))
        .chain(std::iter::once(2))
        .collect();
    let (mut sel, mut masked, mut changed, mut kept, mut total) = (0, 0, 0, 0, 0);
    for i in 0..4000u64 {
        let mut rng = Rng::new(i);
        let m = mask_sentence(&sent, vocab, 0.15, &mut rng);
        assert_eq!((m.input[0], m.input[11]), (1, 2), "specials never masked");
        total += 10;
        for &(p, y) in &m.targets {
            assert!((1..=10).contains(&p));
            assert_eq!(y, sent[p]);
            sel += 1;
            let x = m.input[p];
            if x == MASK {
                masked += 1;
            } else if x != y {
                assert!(x >= N_SPECIAL && (x as usize) < vocab, "random word {x}");
                changed += 1;
            } else {
                kept += 1;
            }
        }
        // Unselected positions are untouched.
        for p in 1..=10 {
            if !m.targets.iter().any(|t| t.0 == p) {
                assert_eq!(m.input[p], sent[p]);
            }
        }
    }
    let f = |a: usize, b: usize| a as f64 / b as f64;
    assert!((f(sel, total) - 0.15).abs() < 0.01, "{}", f(sel, total));
    assert!((f(masked, sel) - 0.8).abs() < 0.02, "{}", f(masked, sel));
    assert!(
        (f(changed, sel) - 0.099).abs() < 0.015,
        "{}",
        f(changed, sel)
    );
    assert!((f(kept, sel) - 0.101).abs() < 0.015, "{}", f(kept, sel));
}

#[test]
fn uas_of_a_hand_built_attention_matrix() {
    // T = 5: [CLS] w1 w2 w3 [SEP]; gold arcs w1 → w2 (rel 0) and w3 → w2 (rel 1).
    let t = 5;
    #[rustfmt::skip]
    let head_a = [
        0.2, 0.2, 0.2, 0.2, 0.2,
        0.4, 0.35, 0.15, 0.1, 0.0,  // CLS and self highest: both excluded → w2 (right)
        0.2, 0.1, 0.1, 0.5, 0.1,
        0.1, 0.6, 0.2, 0.1, 0.0,    // w3 → w1 (wrong)
        0.2, 0.2, 0.2, 0.2, 0.2,
    ];
    #[rustfmt::skip]
    let head_b = [
        0.2, 0.2, 0.2, 0.2, 0.2,
        0.7, 0.1, 0.05, 0.1, 0.05,
        0.7, 0.05, 0.1, 0.05, 0.1,
        0.7, 0.15, 0.05, 0.05, 0.05,
        0.2, 0.2, 0.2, 0.2, 0.2,
    ];
    let arcs = [
        GoldArc {
            dep: 1,
            head: 2,
            rel: 0,
        },
        GoldArc {
            dep: 3,
            head: 2,
            rel: 1,
        },
    ];
    let mut acc = UasAccumulator::new(1, 2, vec!["det".into(), "dobj".into()]);
    acc.count(&arcs);
    acc.add(0, 0, &head_a, t, 1..4, &arcs);
    acc.add(0, 1, &head_b, t, 1..4, &arcs);
    let s = acc.scores();
    // Head A, rel 0: dependent→head argmax of row 1 over {w2 .15, w3 .1} = w2: hit. (The
    // transposed direction, argmax_j A[j, 1] over {w2 .1, w3 .6} = w3, misses; the better
    // direction counts.) Rel 1: row 3 over {w1 .6, w2 .2} = w1 misses; transposed,
    // argmax_j A[j, 3] over {w1 .1, w2 .5} = w2 hits. So 1.0 and 1.0; "all" pools per direction:
    // 1 of 2 either way = 0.5.
    assert_eq!(s.argmax[0][0], vec![1.0, 1.0, 0.5]);
    // Head B misses everything: row 1 → w3 (.1 > .05); A[j,1]: w3 .15 > w2 .05; row 3 → w1
    // (.15 > .05); A[j,3]: w1 .1 > w2 .05.
    assert_eq!(s.argmax[0][1], vec![0.0, 0.0, 0.0]);
    // Soft: rel 0 max(A[1,2] .15, A[2,1] .1) = .15; rel 1 max(A[3,2] .2, A[2,3] .5) = .5;
    // all max((.15 + .2)/2, (.1 + .5)/2) = .3. Head B: .05 everywhere.
    let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6);
    assert!(
        close(&s.soft[0][0], &[0.15, 0.5, 0.3]),
        "{:?}",
        s.soft[0][0]
    );
    assert!(
        close(&s.soft[0][1], &[0.05, 0.05, 0.05]),
        "{:?}",
        s.soft[0][1]
    );
    // SAS = best head per relation.
    let best = s.sas(s.all());
    assert_eq!((best.score, best.layer, best.head), (0.5, 0, 0));
    assert!((s.soft_sas(1).score - 0.5).abs() < 1e-6);
    assert_eq!(s.counts, vec![1, 1, 2]);
}

#[test]
fn regulariser_value_and_gradient_by_hand() {
    // B = 2 sentences, 2 layers, H = 2, T = 3. Arcs: sentence 0 (1 → 2), sentence 1 (2 → 1).
    // R = (1/B) Σ_arcs max over layers, heads and both directions A[i,j], A[j,i].
    let (b, h, t) = (2, 2, 3);
    let mut l0 = vec![0.1f32; b * h * t * t];
    let mut l1 = vec![0.1f32; b * h * t * t];
    let at = |s: usize, hh: usize, i: usize, j: usize| ((s * h + hh) * t + i) * t + j;
    // Arc 0: the largest candidate is layer 1, head 0, A[2, 1] = 0.7 (the transposed direction).
    l0[at(0, 1, 1, 2)] = 0.5;
    l1[at(0, 0, 2, 1)] = 0.7;
    // Arc 1 (dep 2, head 1 of sentence 1): layer 0, head 1, A[2, 1] = 0.9.
    l0[at(1, 1, 2, 1)] = 0.9;
    l1[at(1, 0, 1, 2)] = 0.3;
    let v0 = Var::from_vec(l0, (b, h, t, t), &Device::Cpu).unwrap();
    let v1 = Var::from_vec(l1, (b, h, t, t), &Device::Cpu).unwrap();
    let arcs = [(0, 1, 2), (1, 2, 1)];
    let r = sas_penalty(&[v0.as_tensor().clone(), v1.as_tensor().clone()], &arcs).unwrap();
    // R = (0.7 + 0.9) / 2 = 0.8.
    assert!((r.to_scalar::<f32>().unwrap() - 0.8).abs() < 1e-6);
    let g = r.backward().unwrap();
    let g0: Vec<f32> = g
        .get(v0.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let g1: Vec<f32> = g
        .get(v1.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    // ∂R/∂A = 1/B at each arc's argmax, 0 elsewhere.
    for (k, (&a, &c)) in g0.iter().zip(&g1).enumerate() {
        let want0 = if k == at(1, 1, 2, 1) { 0.5 } else { 0.0 };
        let want1 = if k == at(0, 0, 2, 1) { 0.5 } else { 0.0 };
        assert_eq!((a, c), (want0, want1), "entry {k}");
    }
    // No arcs: zero penalty; an arc outside the batch: an error.
    let z = sas_penalty(&[v0.as_tensor().clone()], &[]).unwrap();
    assert_eq!(z.to_scalar::<f32>().unwrap(), 0.0);
    assert!(sas_penalty(&[v0.as_tensor().clone()], &[(2, 0, 1)]).is_err());
}

#[test]
fn regulariser_gradient_matches_finite_differences_through_the_model() {
    // f64 model, R as a function of one query weight and one embedding entry: central
    // differences with ε = 1e-6 agree with autograd to ~1e-8 (R is smooth while the argmax of
    // each max does not switch, which a random point satisfies almost surely).
    let mut cfg = SasRunConfig::default();
    cfg.model.hidden_size = 8;
    cfg.model.num_attention_heads = 2;
    cfg.model.intermediate_size = 16;
    let l = SasLearner::new(cfg.clone()).unwrap();
    let ecfg = cfg.encoder_config(l.grammar.vocab_size());
    let m = BertMlm::new_random(&ecfg, 0.5, 3, DType::F64).unwrap();
    let sents = l
        .grammar
        .batch(gradus_tasks::depgrammar::Split::Train, 0, 2);
    let enc: Vec<Vec<u32>> = sents.iter().map(|s| s.encoded()).collect();
    let t = enc.iter().map(|e| e.len()).max().unwrap();
    let mut ids = Vec::new();
    for e in &enc {
        ids.extend_from_slice(e);
        ids.extend(std::iter::repeat_n(0, t - e.len()));
    }
    let lens: Vec<usize> = enc.iter().map(|e| e.len()).collect();
    let arcs: Vec<(usize, usize, usize)> = sents
        .iter()
        .enumerate()
        .flat_map(|(k, s)| s.arcs().into_iter().map(move |(i, j, _)| (k, i, j)))
        .collect();
    let penalty = |m: &BertMlm| -> Tensor {
        let out = m.forward(&ids, 2, t, &lens).unwrap();
        sas_penalty(&out.attentions, &arcs).unwrap()
    };
    let r = penalty(&m);
    let grads = r.backward().unwrap();
    let params = m.named_params();
    for (name, idx) in [
        ("encoder.layer.0.attention.self.query.weight", 5usize),
        ("encoder.layer.1.attention.self.key.weight", 9),
        // The row of the first word of sentence 0 (a token the batch uses).
        ("embeddings.word_embeddings.weight", 8 * ids[1] as usize + 3),
    ] {
        let var = &params.iter().find(|(n, _)| n == name).unwrap().1;
        let auto: Vec<f64> = grads
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let base: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let eps = 1e-6;
        let at = |d: f64| -> f64 {
            let mut v = base.clone();
            v[idx] += d;
            var.set(&Tensor::from_vec(v, var.dims(), &Device::Cpu).unwrap())
                .unwrap();
            penalty(&m).to_scalar::<f64>().unwrap()
        };
        let fd = (at(eps) - at(-eps)) / (2.0 * eps);
        at(0.0);
        assert!(
            (fd - auto[idx]).abs() < 1e-6 * (1.0 + fd.abs()),
            "{name}[{idx}]: finite differences {fd}, autograd {}",
            auto[idx]
        );
        assert!(auto[idx] != 0.0, "{name}[{idx}] has no gradient");
    }
}

#[test]
fn schedule_switches_the_regulariser_off() {
    let s = SasSchedule {
        lambda: 0.5,
        until_step: Some(2),
    };
    assert_eq!(
        (0..4).map(|k| s.lambda_at(k)).collect::<Vec<_>>(),
        vec![0.5, 0.5, 0.0, 0.0]
    );
    let always = SasSchedule {
        lambda: -0.2,
        until_step: None,
    };
    assert_eq!(always.lambda_at(1_000_000), -0.2);
    // In the learner: the λ of each step, and the loss = MLM + λ·R while on.
    let d = tempfile::tempdir().unwrap();
    let mut c = smoke_cfg(d.path(), "sched", 4);
    c.train.sas_lambda = 0.5;
    c.train.sas_until_step = Some(2);
    let mut l = SasLearner::new(c).unwrap();
    for k in 0..4 {
        let (loss, mlm, r, lambda) = l.train_step().unwrap();
        assert_eq!(lambda, if k < 2 { 0.5 } else { 0.0 });
        assert!(r > 0.0);
        assert!((loss - (mlm + lambda * r)).abs() < 1e-5 * loss.abs().max(1.0));
    }
}

fn smoke_cfg(dir: &std::path::Path, name: &str, steps: u64) -> SasRunConfig {
    let mut c = SasRunConfig::default();
    c.run.dir = dir.to_path_buf();
    c.run.name = name.into();
    c.model.hidden_size = 16;
    c.model.num_attention_heads = 2;
    c.model.intermediate_size = 24;
    c.train.steps = steps;
    c.train.batch_size = 4;
    c.train.warmup_steps = 2;
    c.train.eval_every = 2;
    c.train.eval_sentences = 8;
    c.train.checkpoint_every = 3;
    c.train.sas_lambda = 0.1;
    c.train.sas_until_step = Some(3);
    c
}

#[test]
fn resumed_runs_equal_uninterrupted_ones() {
    let d = tempfile::tempdir().unwrap();
    let full = smoke_cfg(d.path(), "full", 6);
    let a = train_run(&full, &Start::New).unwrap();
    // Stopped after 4 steps (an evaluation step), then resumed to 6; the schedule switches off
    // at step 3, before the stop.
    train_run(&smoke_cfg(d.path(), "half", 4), &Start::New).unwrap();
    let b = train_run(
        &smoke_cfg(d.path(), "half", 6),
        &Start::Resume {
            explicit: vec!["train.steps".into()],
        },
    )
    .unwrap();
    let read = |name: &str, f: &str| {
        std::fs::read(d.path().join(name).join("checkpoints/step-6").join(f)).unwrap()
    };
    for f in ["model.safetensors", "optimizer.safetensors"] {
        assert!(
            read("full", f) == read("half", f),
            "{f} differs after resume"
        );
    }
    assert_eq!(a.curves, b.curves);
    // Training moved the weights, and the checkpoint is a BERT the inference encoder reads.
    let fresh = tempfile::tempdir().unwrap();
    SasLearner::new(smoke_cfg(d.path(), "x", 6))
        .unwrap()
        .save(fresh.path())
        .unwrap();
    let w0 = std::fs::read(fresh.path().join("checkpoints/step-0/model.safetensors")).unwrap();
    assert!(w0 != read("full", "model.safetensors"));
    let enc = Encoder::load(&d.path().join("full/checkpoints/step-6")).unwrap();
    assert_eq!(enc.cfg.hidden_size, 16);
    // A second fresh start in the same directory is refused.
    let e = train_run(&full, &Start::New).unwrap_err().to_string();
    assert!(e.contains("--resume"), "{e}");
}

#[test]
fn bad_settings_name_the_field() {
    let d = tempfile::tempdir().unwrap();
    let mut c = smoke_cfg(d.path(), "bad", 2);
    c.data.n_nouns = 1;
    let e = SasLearner::new(c).err().unwrap().to_string();
    assert!(e.contains("data.n_nouns"), "{e}");
    let mut c = smoke_cfg(d.path(), "bad", 2);
    c.model.num_attention_heads = 3;
    let e = SasLearner::new(c).err().unwrap().to_string();
    assert!(e.contains("model.num_attention_heads"), "{e}");
    let mut c = smoke_cfg(d.path(), "bad", 2);
    c.train.mask_prob = 0.0;
    let e = SasLearner::new(c).err().unwrap().to_string();
    assert!(e.contains("train.mask_prob"), "{e}");
    let mut o = SasLabOptions::new(d.path().to_path_buf(), LabSize::Smoke);
    o.release_step = Some(6);
    let e = lab::run(&o).err().unwrap().to_string();
    assert!(e.contains("release_step"), "{e}");
    o.release_step = None;
    o.sas_lambda = 0.0;
    let e = lab::run(&o).err().unwrap().to_string();
    assert!(e.contains("sas_lambda"), "{e}");
}

#[test]
fn lab_runs_end_to_end_at_smoke_size() {
    let d = tempfile::tempdir().unwrap();
    let o = SasLabOptions::new(d.path().to_path_buf(), LabSize::Smoke);
    let out = lab::run(&o).unwrap();
    let names: Vec<&str> = out.runs.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["baseline", "sas-minus", "sas-release"]);
    // Header + three rows.
    assert_eq!(out.table.lines().count(), 4);
    let html = std::fs::read_to_string(&out.report).unwrap();
    assert!(html.contains("<svg") && html.contains("SAS"));
    let md = std::fs::read_to_string(&out.results).unwrap();
    assert!(md.contains("Baseline") && md.contains("release"));
    // The arms differ only in the regulariser: the baseline logs λ = 0, SAS− the lab's λ.
    let lambda = |i: usize| {
        out.runs[i]
            .curves
            .iter()
            .find(|c| c.0 == "train/lambda")
            .unwrap()
            .1
            .clone()
    };
    assert!(lambda(0).iter().all(|p| p.1 == 0.0));
    assert!(lambda(1).iter().all(|p| p.1 == 0.01));
    // Again without --resume: refused; with it the finished runs are only summarised.
    assert!(lab::run(&o).is_err());
    let mut r = o.clone();
    r.resume = true;
    assert_eq!(lab::run(&r).unwrap().table, out.table);
}

#[test]
fn onsets_are_the_steepest_intervals() {
    use gradus_train::sas::steepest;
    // Loss: 4.0 →(0-50) 3.0 →(50-100) 2.9 →(100-200) 2.1 →(200-250) 2.0. Falls per step: 0.02,
    // 0.002, 0.008, 0.002. Skipping the first interval the steepest fall ends at step 200.
    let loss = [(0, 4.0), (50, 3.0), (100, 2.9), (200, 2.1), (250, 2.0)];
    assert_eq!(steepest(&loss, -1.0, 1), Some(200));
    assert_eq!(steepest(&loss, -1.0, 0), Some(50));
    // A rise: the steepest is 0.3 over 50 steps (ending at 150), not 0.4 over 200 steps.
    let uas = [(0, 0.2), (100, 0.2), (150, 0.5), (350, 0.9)];
    assert_eq!(steepest(&uas, 1.0, 0), Some(150));
    // A flat or monotone-wrong curve has no onset.
    assert_eq!(steepest(&[(0, 1.0), (10, 1.0)], 1.0, 0), None);
    assert_eq!(steepest(&loss, 1.0, 0), None);
}
