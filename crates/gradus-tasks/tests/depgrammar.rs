//! The dependency grammar: trees, agreement and selection on every sentence of a seeded stream,
//! one structure derived by hand, minimal pairs, streaming, and settings errors naming the field.

use gradus_tasks::depgrammar::{
    DepGrammar, DepGrammarConfig, Number, PairKind, Rel, Sentence, Split, CLS, SEP,
};

fn grammar(cfg: DepGrammarConfig) -> DepGrammar {
    DepGrammar::new(cfg, 7, "data.").unwrap()
}

/// Every word reaches the root by following heads, with no cycle, and exactly one word is root.
fn assert_tree(s: &Sentence) {
    let n = s.words.len();
    assert_eq!(s.heads.len(), n);
    assert_eq!(s.rels.len(), n);
    let roots: Vec<usize> = (0..n).filter(|&k| s.heads[k] == 0).collect();
    assert_eq!(roots, vec![s.verb], "one root, the verb");
    assert_eq!(s.rels[s.verb], Rel::Root);
    for k in 0..n {
        let mut at = k;
        let mut steps = 0;
        while s.heads[at] != 0 {
            assert!(s.heads[at] <= n, "head out of range");
            assert_ne!(s.heads[at], at + 1, "self loop");
            at = s.heads[at] - 1;
            steps += 1;
            assert!(steps <= n, "cycle through word {k}");
        }
    }
}

#[test]
fn every_sentence_is_a_tree_with_agreement_and_selection() {
    let g = grammar(DepGrammarConfig::default());
    let mut with_pp = 0;
    let mut mismatched = 0;
    for s in g.batch(Split::Train, 0, 500) {
        assert_tree(&s);
        assert!(s.words.len() <= g.cfg.max_words());
        let subj = s.words[s.subject];
        let verb = s.words[s.verb];
        // Subject-verb agreement, whatever the attractor's number.
        assert_eq!(g.number_of(subj), g.number_of(verb));
        assert_eq!(s.heads[s.subject], s.verb + 1);
        assert_eq!(s.rels[s.subject], Rel::Nsubj);
        let (sc, oc) = g.verb_classes(verb).unwrap();
        assert_eq!(g.noun_class(subj), Some(sc));
        for k in 0..s.words.len() {
            let head = s.heads[k].checked_sub(1).map(|h| s.words[h]);
            match s.rels[k] {
                Rel::Det => {
                    let noun = head.unwrap();
                    assert!(g.is_det(s.words[k]));
                    // A determiner with a number agrees with its noun.
                    if let Some(n) = g.det_number(s.words[k]) {
                        assert_eq!(Some(n), g.number_of(noun));
                    }
                }
                Rel::Amod => {
                    assert_eq!(g.adj_class(s.words[k]), g.noun_class(head.unwrap()));
                }
                Rel::Dobj => {
                    assert_eq!(head, Some(verb));
                    assert_eq!(g.noun_class(s.words[k]), Some(oc));
                }
                Rel::Pobj => {
                    assert_eq!(s.attractor, Some(k));
                    // The preposition attaches to the subject.
                    let prep = s.heads[k] - 1;
                    assert_eq!(s.rels[prep], Rel::Prep);
                    assert_eq!(s.heads[prep], s.subject + 1);
                    with_pp += 1;
                    if g.number_of(s.words[k]) != g.number_of(subj) {
                        mismatched += 1;
                    }
                }
                _ => {}
            }
        }
    }
    // p_pp = 0.5 over 500 sentences: 250 ± 11 (binomial sd); attractor numbers are a fair coin.
    assert!((190..=310).contains(&with_pp), "{with_pp}");
    assert!(mismatched > with_pp / 4 && mismatched < 3 * with_pp / 4);
}

#[test]
fn a_full_template_has_the_hand_derived_tree() {
    // No adjectives, PP and object always: "Det N Prep Det N V Det N".
    // Words (1-based): 1 det→2, 2 nsubj→6, 3 prep→2, 4 det→5, 5 pobj→3, 6 root, 7 det→8, 8 dobj→6.
    let g = grammar(DepGrammarConfig {
        p_adj: 0.0,
        p_pp: 1.0,
        p_object: 1.0,
        ..Default::default()
    });
    for s in g.batch(Split::Eval, 0, 20) {
        assert_eq!(s.heads, vec![2, 6, 2, 5, 3, 0, 8, 6]);
        use Rel::*;
        assert_eq!(s.rels, vec![Det, Nsubj, Prep, Det, Pobj, Root, Det, Dobj]);
        assert_eq!((s.subject, s.verb, s.attractor), (1, 5, Some(4)));
        // Encoded: [CLS] w1..w8 [SEP]; arcs in positions (word k at k): 7 arcs, no root.
        let e = s.encoded();
        assert_eq!((e[0], e[9], e.len()), (CLS, SEP, 10));
        let arcs = s.arcs();
        assert_eq!(arcs.len(), 7);
        assert_eq!(arcs[1], (2, 6, Nsubj));
        assert_eq!(arcs[6], (8, 6, Dobj));
    }
}

#[test]
fn vocabulary_and_streams() {
    let g = grammar(DepGrammarConfig::default());
    // 4 specials + 5 determiners + 2·24 nouns + 2·12 verbs + 16 adjectives + 6 prepositions.
    assert_eq!(g.vocab_size(), 4 + 5 + 48 + 24 + 16 + 6);
    assert_eq!(g.word(g.noun(0, Number::Pl)), "dogs");
    assert_eq!(g.word(g.verb(0, Number::Sg)), "sees");
    assert_eq!(g.word(g.verb(0, Number::Pl)), "see");
    // Streaming: sentence 10 does not depend on how many were asked for; splits differ.
    let a = g.batch(Split::Train, 0, 12);
    let b = g.batch(Split::Train, 10, 1);
    assert_eq!(a[10], b[0]);
    assert_ne!(g.batch(Split::Eval, 0, 12), a);
    // Another seed, another stream.
    let h = DepGrammar::new(DepGrammarConfig::default(), 8, "").unwrap();
    assert_ne!(h.batch(Split::Train, 0, 12), a);
}

#[test]
fn minimal_pairs_flip_only_the_verb_number() {
    let g = grammar(DepGrammarConfig::default());
    for i in 0..50 {
        let p = g.minimal_pair(PairKind::Attractor, i);
        let s = &p.good;
        let subj_n = g.number_of(s.words[s.subject]).unwrap();
        let att = s.attractor.expect("attractor pairs have a PP");
        assert!(att > s.subject && att < s.verb);
        assert_ne!(g.number_of(s.words[att]), Some(subj_n));
        assert_eq!(g.number_of(s.words[s.verb]), Some(subj_n));
        assert_ne!(g.number_of(p.bad_verb), Some(subj_n));
        // Same lemma: the two forms are adjacent ids 2v, 2v + 1.
        assert_eq!(s.words[s.verb].abs_diff(p.bad_verb), 1);
        let q = g.minimal_pair(PairKind::Simple, i);
        assert!(q.good.attractor.is_none());
        assert_eq!(q.good.verb, q.good.subject + 1);
    }
}

#[test]
fn bad_settings_name_the_field() {
    let cases: [(DepGrammarConfig, &str); 5] = [
        (
            DepGrammarConfig {
                n_nouns: 2,
                ..Default::default()
            },
            "data.n_nouns",
        ),
        (
            DepGrammarConfig {
                n_classes: 0,
                ..Default::default()
            },
            "data.n_classes",
        ),
        (
            DepGrammarConfig {
                p_pp: 1.5,
                ..Default::default()
            },
            "data.p_pp",
        ),
        (
            DepGrammarConfig {
                n_adjs: 1,
                ..Default::default()
            },
            "data.n_adjs",
        ),
        (
            DepGrammarConfig {
                n_preps: 0,
                ..Default::default()
            },
            "data.n_preps",
        ),
    ];
    for (cfg, field) in cases {
        let e = DepGrammar::new(cfg, 0, "data.").unwrap_err().to_string();
        assert!(e.contains(field), "{e}");
    }
}
