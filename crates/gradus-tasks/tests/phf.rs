//! The PHF scorers on hand-checked lines, and the synthetic code corpus against its own labels.

use gradus_tasks::phf::{
    code_corpus, doc_score, segments, CodeCorpusConfig, PatternScorer, Pep8Scorer, Scorer,
    ScorerKind,
};

fn codes(line: &str) -> Vec<&'static str> {
    Pep8Scorer::default()
        .line_violations(line, 0)
        .into_iter()
        .map(|v| v.code)
        .collect()
}

#[test]
fn clean_lines_have_no_violations() {
    for l in [
        "def f(a, b):\n",
        "    x = a + b * 3\n",
        "    return -x\n",
        "    y = f(a, key=1)\n",
        "    z = (1,)\n",
        "    if (a) and b:\n",
        "    s = 'a=b,c;d'  # a comment\n",
        "        acc += x ** 2\n",
        "    return a != b\n",
        "\n",
        "print(*args, **kwargs)\n",
    ] {
        assert_eq!(codes(l), Vec::<&str>::new(), "{l:?}");
    }
}

#[test]
fn each_checked_kind_is_found() {
    // One violation each, by construction of the line.
    let cases: [(&str, &str); 13] = [
        ("x = 1  \n", "W291"),
        ("    \n", "W293"),
        ("\tx = 1\n", "W191"),
        ("  x = 1\n", "E111"),
        ("x=1\n", "E225"),
        ("y = a+b\n", "E225"),
        ("f(a,b)\n", "E231"),
        ("f(a , b)\n", "E203"),
        ("f( a)\n", "E201"),
        ("f(a )\n", "E202"),
        ("f (a)\n", "E211"),
        ("x = 1; y = 2\n", "E702"),
        ("x = 1 # c\n", "E261"),
    ];
    for (line, code) in cases {
        assert_eq!(codes(line), vec![code], "{line:?}");
    }
    assert_eq!(codes("x = 1;\n"), vec!["E703"]);
    // E501: 80 characters is one too many for 79.
    let long = format!("x = {}\n", "1".repeat(76));
    assert_eq!(codes(&long), vec!["E501"]);
    // E303: three blank lines before a statement.
    let p = Pep8Scorer::default();
    assert_eq!(p.line_violations("x = 1\n", 3)[0].code, "E303");
    assert!(p.line_violations("x = 1\n", 2).is_empty());
}

#[test]
fn scores_are_violations_per_character() {
    let p = Pep8Scorer::default();
    // "x=1+y" (5 chars): `=` and `+` both lack spaces → 2 violations / 5 characters.
    assert_eq!(codes("x=1+y\n"), vec!["E225", "E225"]);
    assert!((p.score_line("x=1+y\n", 0) - 0.4).abs() < 1e-7);
    // A document: "x=1\n" (3 chars, 1 violation) and "y = 2\n" (5 chars, 0): per-segment scores
    // 1/3 and 0; document score (1/3·3 + 0·5)/8 = 1/8.
    let s = Scorer::new(ScorerKind::Pep8, 79, &[], "phf.patterns").unwrap();
    let doc = "x=1\ny = 2\n";
    let segs = segments(doc);
    assert_eq!(segs, vec!["x=1\n", "y = 2\n"]);
    let sc = s.score_segments(&segs);
    assert!((sc[0] - 1.0 / 3.0).abs() < 1e-7 && sc[1] == 0.0);
    assert!((doc_score(&segs, &sc) - 0.125).abs() < 1e-7);
    assert!((s.score_text(doc) - 0.125).abs() < 1e-7);
    // E303 from the document's context: the 4th segment follows three blank lines.
    let sc = s.score_segments(&segments("a = 1\n\n\n\nb = 2\n"));
    assert_eq!(sc, vec![0.0, 0.0, 0.0, 0.0, 0.2]);
}

#[test]
fn pattern_scorer_counts_matches_per_character() {
    let p = PatternScorer::new(&["darn".into(), r"\bheck\b".into()], "phf.patterns").unwrap();
    // "darn it, heck, darn" is 19 characters with 3 matches.
    assert_eq!(p.matches("darn it, heck, darn\n"), 3);
    assert!((p.score("darn it, heck, darn\n") - 3.0 / 19.0).abs() < 1e-7);
    assert_eq!(p.score("checked\n"), 0.0);
    let e = PatternScorer::new(&["ok".into(), "(".into()], "phf.patterns").unwrap_err();
    assert!(e.to_string().contains("phf.patterns[1]"), "{e}");
    let e = Scorer::new(ScorerKind::Patterns, 79, &[], "phf.patterns").unwrap_err();
    assert!(e.to_string().contains("phf.patterns"), "{e}");
}

#[test]
fn code_corpus_labels_match_the_scorer() {
    let cfg = CodeCorpusConfig {
        docs: 400,
        bad_line_fraction: 0.3,
        sloppy_doc_fraction: 0.5,
        seed: 7,
    };
    let docs = code_corpus(&cfg).unwrap();
    assert_eq!(docs.len(), 400);
    let s = Scorer::new(ScorerKind::Pep8, 79, &[], "phf.patterns").unwrap();
    let (mut lines, mut bad) = (0usize, 0usize);
    for d in &docs {
        let segs = segments(&d.text);
        let sc = s.score_segments(&segs);
        assert_eq!(sc.len(), d.bad.len());
        for ((seg, &x), &b) in segs.iter().zip(&sc).zip(&d.bad) {
            assert_eq!(x > 0.0, b, "{seg:?} scored {x}, labelled bad = {b}");
        }
        lines += sc.len();
        bad += d.bad.iter().filter(|&&b| b).count();
    }
    // ~0.3 of lines are bad: binomial sd over >1500 lines is ≈ 0.012.
    let f = bad as f64 / lines as f64;
    assert!((f - 0.3).abs() < 0.05, "bad fraction {f}");
    // Seeded: the same config gives the same corpus; document i does not depend on `docs`.
    let again = code_corpus(&CodeCorpusConfig { docs: 10, ..cfg }).unwrap();
    assert_eq!(again[..], docs[..10]);
}

#[test]
fn violations_cluster_in_sloppy_documents() {
    // sloppy_doc_fraction 0.5 with bad_line_fraction 0.3: about half the documents are clean;
    // with 1.0 (lines independent, p = 0.3, 3-5 lines) a document is clean with probability
    // 0.7^3..0.7^5 ≈ 0.17..0.34.
    let clean_share = |sloppy: f64| {
        let docs = code_corpus(&CodeCorpusConfig {
            docs: 600,
            bad_line_fraction: 0.3,
            sloppy_doc_fraction: sloppy,
            seed: 1,
        })
        .unwrap();
        docs.iter().filter(|d| d.bad.iter().all(|b| !b)).count() as f64 / 600.0
    };
    let c = clean_share(0.5);
    // Clean: the non-sloppy half plus sloppy ones drawing no bad line (0.4^4 ≈ 0.03 of them).
    assert!((0.45..0.6).contains(&c), "{c}");
    let c = clean_share(1.0);
    assert!((0.12..0.4).contains(&c), "{c}");
    let bad = CodeCorpusConfig {
        bad_line_fraction: 0.6,
        sloppy_doc_fraction: 0.5,
        ..CodeCorpusConfig::default()
    };
    assert!(code_corpus(&bad)
        .unwrap_err()
        .to_string()
        .contains("bad_line_fraction"));
}

#[test]
fn pep8_scorer_matches_pycodestyle_fixture() {
    // tests/fixtures/pep8/cases.json: what pycodestyle reports on each source with only gradus'
    // checks selected (gen.py; E226-E228 written as E225).
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/pep8/cases.json"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 30);
    let p = Pep8Scorer::default();
    let mut with_violations = 0;
    for c in cases {
        let src = c["source"].as_str().unwrap();
        let want: Vec<(u64, String)> = c["violations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| (x[0].as_u64().unwrap(), x[1].as_str().unwrap().to_string()))
            .collect();
        let mut got = Vec::new();
        let mut blank = 0;
        for (i, seg) in segments(src).iter().enumerate() {
            for v in p.line_violations(seg, blank) {
                got.push((i as u64 + 1, v.code.to_string()));
            }
            blank = if seg.trim().is_empty() { blank + 1 } else { 0 };
        }
        got.sort();
        assert_eq!(got, want, "{src:?}");
        with_violations += usize::from(!want.is_empty());
    }
    assert!(with_violations >= 25, "{with_violations}");
}
