//! The ICL generators: bursty few-shot sequences and Boolean function classes. Expected values
//! are derived by hand in the comments.

use gradus_tasks::boolean::{
    baseline_predictions, prompt, sample_fn, sample_x, Baseline, BoolClass, BoolFn, BoolPrompt,
};
use gradus_tasks::bursty::{
    zipf_probs, BurstyConfig, BurstyTask, ItemKind, Items, LabelMode, SeqKind,
};
use gradus_tensor::rng::Rng;

fn cfg(n: usize, b: usize) -> BurstyConfig {
    BurstyConfig {
        n_classes: 64,
        n_labels: 8,
        n_novel_classes: 16,
        item: ItemKind::Gaussian { dim: 5 },
        zipf_alpha: 0.0,
        eps: 0.1,
        burstiness: b,
        p_bursty: 1.0,
        context: n,
        labels: LabelMode::Fixed,
        eval_burstiness: None,
    }
}

fn count(xs: &[usize], c: usize) -> usize {
    xs.iter().filter(|&&x| x == c).count()
}

#[test]
fn bursty_sequences_repeat_the_query_class_b_times() {
    // N = 8, B = 3 (Chan/Singh): query class ×3, one distractor ×3, 2 i.i.d. slots. So the query's
    // class appears at least 3 times (more only if an i.i.d. slot hits it) and some other class at
    // least 3 times.
    let t = BurstyTask::new(cfg(8, 3), 1, "").unwrap();
    for i in 0..200 {
        let s = t.sequence(SeqKind::Train, i);
        assert!(s.bursty);
        let (ctx, q) = (&s.classes[..8], s.classes[8]);
        assert!(count(ctx, q) >= 3, "query class {q} in {ctx:?}");
        assert!(ctx.iter().any(|&c| c != q && count(ctx, c) >= 3), "{ctx:?}");
        assert_eq!(s.labels.len(), 9);
        assert_eq!(s.target(), (q % 8) as u32);
    }
    // N = 8, B = 4 (Reddy, B | N): exactly N/B = 2 distinct classes, 4 times each.
    let t = BurstyTask::new(cfg(8, 4), 1, "").unwrap();
    for i in 0..200 {
        let s = t.sequence(SeqKind::Train, i);
        let (ctx, q) = (&s.classes[..8], s.classes[8]);
        assert_eq!(count(ctx, q), 4);
        let mut u = ctx.to_vec();
        u.sort_unstable();
        u.dedup();
        assert_eq!(u.len(), 2, "{ctx:?}");
        assert!(u.iter().all(|&c| count(ctx, c) == 4));
    }
}

#[test]
fn evaluation_burstiness_sets_the_icl_splits_only() {
    // Trained with B = 1 (8 distinct classes, the query's once) but evaluated with B = 4: the ICL
    // splits (novel, swapped) hold exactly 2 classes × 4 with the query's class 4 times, the
    // training split keeps B = 1 (the query's class once among 8 distinct), and the IWL split
    // never holds the query's class. Before `eval_burstiness` the ICL splits used the training B,
    // so runs trained with different B were scored on different tasks (a copy-any-context-label
    // model scores B/N: 1/8 at B = 1, 1/2 at B = 4).
    let mut c = cfg(8, 1);
    c.eval_burstiness = Some(4);
    let t = BurstyTask::new(c, 3, "").unwrap();
    for i in 0..100 {
        for kind in [SeqKind::IclNovel, SeqKind::IclSwap] {
            let s = t.sequence(kind, i);
            let (ctx, q) = (&s.classes[..8], s.classes[8]);
            assert_eq!(count(ctx, q), 4, "{kind:?} {ctx:?}");
            let mut u = ctx.to_vec();
            u.sort_unstable();
            u.dedup();
            assert_eq!(u.len(), 2, "{kind:?} {ctx:?}");
        }
        let s = t.sequence(SeqKind::Train, i);
        let (ctx, q) = (&s.classes[..8], s.classes[8]);
        assert_eq!(count(ctx, q), 1, "{ctx:?}");
        let mut u = ctx.to_vec();
        u.sort_unstable();
        u.dedup();
        assert_eq!(u.len(), 8, "{ctx:?}");
        let s = t.sequence(SeqKind::Iwl, i);
        assert_eq!(count(&s.classes[..8], s.classes[8]), 0);
    }
}

#[test]
fn zipf_frequencies_match_the_law() {
    // α = 1, K = 8: P(k) = (1/(k+1)) / H_8 with H_8 = 761/280 = 2.717857…, so P(0) = 0.367936,
    // P(1) = 0.183968, P(7) = 0.045992. With n = 200,000 draws the standard error of a frequency
    // is at most √(0.25/n) = 0.00112; we allow 5 standard errors (0.0056).
    let h8 = 761.0 / 280.0;
    for (k, want) in [(0, 1.0 / h8), (1, 0.5 / h8), (7, 0.125 / h8)] {
        assert!((zipf_probs(8, 1.0)[k] - want).abs() < 1e-12);
    }
    let mut c = cfg(8, 2);
    c.n_classes = 8;
    c.zipf_alpha = 1.0;
    let t = BurstyTask::new(c, 3, "").unwrap();
    let mut rng = Rng::new(9);
    let n = 200_000;
    let mut hist = [0usize; 8];
    for _ in 0..n {
        hist[t.sample_class(&mut rng)] += 1;
    }
    for k in 0..8 {
        let want = 1.0 / ((k + 1) as f64 * h8);
        let got = hist[k] as f64 / n as f64;
        assert!((got - want).abs() < 0.0056, "class {k}: {got} vs {want}");
    }
    // α = 0 is uniform: 1/8 each.
    assert!(zipf_probs(8, 0.0)
        .iter()
        .all(|&p| (p - 0.125).abs() < 1e-12));
}

#[test]
fn non_bursty_training_sequences_are_iid() {
    // p_B = 0 with K = 64 uniform classes and N = 8: a context repeats some class with probability
    // 1 − Π_{i<9}(1 − i/64) ≈ 0.44 (birthday bound over 9 draws incl. the query), so over 400
    // sequences far fewer than all contain the query class at least 3 times (bursty would be 100%).
    let mut c = cfg(8, 3);
    c.p_bursty = 0.0;
    let t = BurstyTask::new(c, 5, "").unwrap();
    let mut hits = 0;
    for i in 0..400 {
        let s = t.sequence(SeqKind::Train, i);
        assert!(!s.bursty);
        if count(&s.classes[..8], s.classes[8]) >= 3 {
            hits += 1;
        }
    }
    // P(query class ≥ 3 times among 8 uniform draws of 64) ≈ C(8,3)/64³ ≈ 2e-4.
    assert!(hits < 5, "{hits}");
}

#[test]
fn evaluation_sequences_isolate_icl_and_iwl() {
    let t = BurstyTask::new(cfg(8, 4), 2, "").unwrap();
    for i in 0..100 {
        // IWL: the query's class is absent from the context, labels fixed.
        let s = t.sequence(SeqKind::Iwl, i);
        let q = s.classes[8];
        assert_eq!(count(&s.classes[..8], q), 0);
        for (c, l) in s.classes.iter().zip(&s.labels) {
            assert_eq!(*l as usize, c % 8);
        }
        // ICL on novel classes: every class is fresh (numbered ≥ K), the query's class is in the
        // context with the query's label.
        let s = t.sequence(SeqKind::IclNovel, i);
        assert!(s.classes.iter().all(|&c| c >= 64));
        let q = s.classes[8];
        for j in 0..8 {
            if s.classes[j] == q {
                assert_eq!(s.labels[j], s.target());
            } else {
                // Distinct classes get distinct labels (2 classes, 8 labels).
                assert_ne!(s.labels[j], s.target());
            }
        }
        // Swapped labels: training classes, every label differs from the class's own, and the
        // context's copies of the query class carry the query's (swapped) label.
        let s = t.sequence(SeqKind::IclSwap, i);
        let q = s.classes[8];
        assert!(q < 64);
        assert_ne!(s.target() as usize, q % 8);
        for j in 0..8 {
            assert_ne!(s.labels[j] as usize, s.classes[j] % 8);
            if s.classes[j] == q {
                assert_eq!(s.labels[j], s.target());
            }
        }
    }
}

#[test]
fn per_sequence_labels_change_between_sequences() {
    // With per-sequence labels, the label of a class is not a function of the class: over many
    // sequences the same query class appears with at least two different labels.
    let mut c = cfg(8, 4);
    c.n_classes = 8;
    c.labels = LabelMode::PerSequence;
    let t = BurstyTask::new(c, 4, "").unwrap();
    let mut seen = std::collections::HashMap::<usize, Vec<u32>>::new();
    for i in 0..200 {
        let s = t.sequence(SeqKind::Train, i);
        seen.entry(s.classes[8]).or_default().push(s.target());
    }
    assert!(seen.values().any(|ls| ls.iter().any(|&l| l != ls[0])));
}

#[test]
fn items_follow_the_exemplar_law() {
    // ε = 0: x = μ_k / √(1 + 0) = μ_k exactly.
    let mut c = cfg(8, 4);
    c.eps = 0.0;
    let t = BurstyTask::new(c.clone(), 7, "").unwrap();
    let s = t.sequence(SeqKind::Train, 0);
    let Items::Vectors(v) = &s.items else {
        panic!("gaussian items")
    };
    for (j, &cl) in s.classes.iter().enumerate() {
        assert_eq!(&v[j * 5..(j + 1) * 5], t.centroid(cl).unwrap());
    }
    // ε = 1: x = (μ + η)/√2 with η ~ N(0, I/D): E‖x − μ/√2‖² = E‖η‖²/2 = 1/2 (D·(1/D)/2). Averaged
    // over 2000 items of D = 5 the mean is within 0.05 (sd of ‖η‖² is √(2/D) ≈ 0.63, so the standard
    // error of the mean of ‖η‖²/2 is 0.32/√2000 ≈ 0.007).
    c.eps = 1.0;
    let t = BurstyTask::new(c, 7, "").unwrap();
    let (mut acc, mut n) = (0.0f64, 0usize);
    for i in 0..223 {
        let s = t.sequence(SeqKind::Train, i);
        let Items::Vectors(v) = &s.items else {
            unreachable!()
        };
        for (j, &cl) in s.classes.iter().enumerate() {
            let mu = t.centroid(cl).unwrap();
            acc += (0..5)
                .map(|d| (v[j * 5 + d] as f64 - mu[d] as f64 / 2f64.sqrt()).powi(2))
                .sum::<f64>();
            n += 1;
        }
    }
    let mean = acc / n as f64;
    assert!((mean - 0.5).abs() < 0.05, "{mean}");
    // Token items with ε = 0 are the class prototype.
    let mut c = cfg(8, 4);
    c.item = ItemKind::Tokens { len: 3, vocab: 50 };
    c.eps = 0.0;
    let t = BurstyTask::new(c, 7, "").unwrap();
    let s = t.sequence(SeqKind::Train, 3);
    let Items::Tokens(v) = &s.items else {
        panic!("token items")
    };
    for (j, &cl) in s.classes.iter().enumerate() {
        assert_eq!(&v[j * 3..(j + 1) * 3], t.prototype(cl).unwrap());
    }
}

#[test]
fn sequences_are_a_function_of_seed_and_index() {
    let a = BurstyTask::new(cfg(8, 3), 11, "").unwrap();
    let b = BurstyTask::new(cfg(8, 3), 11, "").unwrap();
    assert_eq!(
        a.sequence(SeqKind::Train, 42),
        b.sequence(SeqKind::Train, 42)
    );
    assert_eq!(
        a.batch(SeqKind::Iwl, 10, 3)[1],
        b.sequence(SeqKind::Iwl, 11)
    );
    assert_ne!(
        a.sequence(SeqKind::Train, 42),
        a.sequence(SeqKind::Train, 43)
    );
}

#[test]
fn impossible_settings_name_the_field() {
    let err = |c: BurstyConfig| BurstyTask::new(c, 0, "icl.data.").unwrap_err().to_string();
    let e = err(cfg(8, 9));
    assert!(e.contains("icl.data.burstiness"), "{e}");
    let mut c = cfg(8, 2);
    c.n_classes = 12; // not a multiple of 8 labels
    assert!(err(c).contains("icl.data.n_classes"));
    let mut c = cfg(8, 1);
    c.n_classes = 8; // 8 distinct classes needed: fine
    assert!(BurstyTask::new(c.clone(), 0, "").is_ok());
    c.n_novel_classes = 4; // fewer fresh classes than a bursty context holds
    assert!(err(c).contains("icl.data.n_novel_classes"));
    let mut c = cfg(8, 2);
    c.p_bursty = 1.5;
    assert!(err(c).contains("p_bursty"));
    for eb in [0, 9] {
        let mut c = cfg(8, 2);
        c.eval_burstiness = Some(eb);
        let e = err(c);
        assert!(e.contains("icl.data.eval_burstiness"), "{e}");
    }
    let e = prompt(BoolClass::SparseParity { k: 9 }, 8, 4, 0, 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains('k') && e.contains("relevant bits"), "{e}");
}

#[test]
fn boolean_functions_on_hand_picked_inputs() {
    // x0 ∧ ¬x2.
    let f = BoolFn::Conjunction(vec![(0, 1), (2, -1)]);
    assert_eq!(f.eval(&[1, -1, -1]), 1);
    assert_eq!(f.eval(&[1, 1, 1]), -1);
    assert_eq!(f.eval(&[-1, 1, -1]), -1);
    // x0 ∨ ¬x2.
    let f = BoolFn::Disjunction(vec![(0, 1), (2, -1)]);
    assert_eq!(f.eval(&[-1, 1, 1]), -1);
    assert_eq!(f.eval(&[-1, 1, -1]), 1);
    // (x0 ∧ x1) ∨ (¬x2).
    let f = BoolFn::Dnf(vec![vec![(0, 1), (1, 1)], vec![(2, -1)]]);
    assert_eq!(f.eval(&[1, 1, 1]), 1);
    assert_eq!(f.eval(&[1, -1, 1]), -1);
    assert_eq!(f.eval(&[-1, -1, -1]), 1);
    // Parity of bits {0, 1}: (−1)(−1) = +1, (−1)(+1) = −1.
    let f = BoolFn::Parity(vec![0, 1]);
    assert_eq!(f.eval(&[-1, -1, 1]), 1);
    assert_eq!(f.eval(&[-1, 1, 1]), -1);
    // Strict majority of {0, 1, 2}: two +1 → +1, one +1 → −1; of {0, 1}: a tie → −1.
    assert_eq!(BoolFn::Majority(vec![0, 1, 2]).eval(&[1, 1, -1]), 1);
    assert_eq!(BoolFn::Majority(vec![0, 1, 2]).eval(&[1, -1, -1]), -1);
    assert_eq!(BoolFn::Majority(vec![0, 1]).eval(&[1, -1, 1]), -1);
    // w = (1, −1): x = (1, −1) → 2 − 0.5 > 0 → +1; x = (1, 1) → 0 − 0.5 < 0 → −1.
    let f = BoolFn::Halfspace(vec![1, -1]);
    assert_eq!(f.eval(&[1, -1]), 1);
    assert_eq!(f.eval(&[1, 1]), -1);
}

#[test]
fn conjunction_literals_and_forced_positives_follow_the_paper() {
    // Literal law: each of n = 28 variables is a positive literal w.p. 0.15 and a negative one w.p.
    // 0.15, so a conjunction has 0.3·28 = 8.4 literals on average (sd √(28·0.3·0.7) = 2.42; over
    // 2000 functions the mean's standard error is 0.054; allow 0.3).
    let mut rng = Rng::new(1);
    let mut lits = 0usize;
    let mut pos_points = 0usize;
    let trials = 2000;
    for _ in 0..trials {
        let f = sample_fn(BoolClass::Conjunction, 28, &mut rng);
        let BoolFn::Conjunction(ls) = &f else {
            unreachable!()
        };
        lits += ls.len();
        if f.eval(&sample_x(&f, 28, &mut rng)) > 0 {
            pos_points += 1;
        }
    }
    let mean = lits as f64 / trials as f64;
    assert!((mean - 8.4).abs() < 0.3, "{mean}");
    // 30% of points are forced positive; a uniform point satisfies 8.4 literals rarely, so the
    // positive rate is ≈ 0.3 + 0.7·E[2^−|lits|] ≥ 0.3 and (E[2^−|lits|] = (1 − 0.15)^28 ≈ 0.0106)
    // ≈ 0.307; allow ±0.04 (standard error √(0.21/2000) = 0.010).
    let rate = pos_points as f64 / trials as f64;
    assert!((rate - 0.307).abs() < 0.04, "{rate}");
}

fn hand_prompt(f: BoolFn, xs: &[[i8; 3]]) -> BoolPrompt {
    let ys = xs.iter().map(|x| f.eval(x)).collect();
    BoolPrompt {
        f,
        n_bits: 3,
        xs: xs.iter().flatten().copied().collect(),
        ys,
    }
}

#[test]
fn baselines_on_hand_made_prompts() {
    // Target x0 ∧ ¬x2. Points (labels): [1,1,−1] (+), [1,−1,−1] (+), [−1,1,−1] (−), [1,1,1] (−).
    // Elimination: no positive seen → every literal kept → nothing satisfies x_i ∧ ¬x_i → −.
    // After [1,1,−1]: kept {x0, x1, ¬x2}; [1,−1,−1] fails x1 → −. After it: kept {x0, ¬x2};
    // [−1,1,−1] → −; [1,1,1] → −. Predictions − − − −.
    let p = hand_prompt(
        BoolFn::Conjunction(vec![(0, 1), (2, -1)]),
        &[[1, 1, -1], [1, -1, -1], [-1, 1, -1], [1, 1, 1]],
    );
    assert_eq!(p.ys, vec![1, 1, -1, -1]);
    let opt = baseline_predictions(&p, BoolClass::Conjunction, Baseline::Optimal).unwrap();
    assert_eq!(opt, vec![-1, -1, -1, -1]);
    // Nearest neighbour: point 0 has no data → +1; point 1 is at distance 1 from point 0 (+) → +;
    // point 2: distances 1 (to p0, +) and 2 (to p1) → +; point 3: distances 1 (p0, +), 2, 2 → +.
    let nn = baseline_predictions(&p, BoolClass::Conjunction, Baseline::NearestNeighbour).unwrap();
    assert_eq!(nn, vec![1, 1, 1, 1]);
    // Averaging: ŵ starts 0 → + (tie); after p0: ŵ = (1,1,−1); p1·ŵ = 1 − 1 + 1 = 1 → +;
    // ŵ += (1,−1,−1) → (2,0,−2); p2·ŵ = −2 + 0 + 2 = 0 → + (tie); ŵ −= (−1,1,−1) → (3,−1,−1);
    // p3·ŵ = 3 − 1 − 1 = 1 → +.
    let av = baseline_predictions(&p, BoolClass::Conjunction, Baseline::Averaging).unwrap();
    assert_eq!(av, vec![1, 1, 1, 1]);
    // Parity of {0,1}: after [−1,1,1] (−) and [1,−1,1] (−), the query [−1,−1,1] is their GF(2)
    // sum (bits 110), so its label bit is 1 ⊕ 1 = 0 → +1, which is the truth ((−1)(−1) = +1).
    let p = hand_prompt(
        BoolFn::Parity(vec![0, 1]),
        &[[-1, 1, 1], [1, -1, 1], [-1, -1, 1]],
    );
    let opt =
        baseline_predictions(&p, BoolClass::SparseParity { k: 2 }, Baseline::Optimal).unwrap();
    assert_eq!(opt[2], 1);
    assert_eq!(p.ys[2], 1);
    // No optimal learner for majority.
    assert!(baseline_predictions(&p, BoolClass::Majority, Baseline::Optimal).is_none());
}

#[test]
fn optimal_learners_are_consistent_on_random_prompts() {
    // Elimination keeps a superset of the target's literals, so it never calls a negative point
    // positive (its hypothesis is at least as specific as the target).
    for i in 0..200 {
        let p = prompt(BoolClass::Conjunction, 10, 30, 5, i).unwrap();
        let opt = baseline_predictions(&p, BoolClass::Conjunction, Baseline::Optimal).unwrap();
        for (o, y) in opt.iter().zip(&p.ys) {
            assert!(!(*o > 0 && *y < 0));
        }
        // Dually for disjunctions: never calls a positive point negative.
        let p = prompt(BoolClass::Disjunction, 10, 30, 5, i).unwrap();
        let opt = baseline_predictions(&p, BoolClass::Disjunction, Baseline::Optimal).unwrap();
        for (o, y) in opt.iter().zip(&p.ys) {
            assert!(!(*o < 0 && *y > 0));
        }
    }
    // GF(2) elimination: 30 uniform points of GF(2)^8 span it except with probability < 2^-22, so
    // the last 10 predictions of a 40-point prompt are exact.
    for i in 0..50 {
        let p = prompt(BoolClass::SparseParity { k: 3 }, 8, 40, 6, i).unwrap();
        let opt =
            baseline_predictions(&p, BoolClass::SparseParity { k: 3 }, Baseline::Optimal).unwrap();
        assert_eq!(&opt[30..], &p.ys[30..], "prompt {i}");
    }
}
