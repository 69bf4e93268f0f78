//! Preference data: reading (strings, chats, errors), TRL-style tokenization, bad-pair policy (the
//! synthetic generator and its pair batches are tested in gradus-tasks).

use std::io::Write;

use gradus_data::chat::ChatTemplate;
use gradus_data::preference::*;
use gradus_data::tokenizer::Tokenizer;

fn tok() -> Tokenizer {
    let corpus: Vec<String> = (0..50)
        .map(|i| format!("Question: what is {i}?\nAnswer: it is {i}. no yes maybe"))
        .collect();
    let mut t = Tokenizer::train_bpe(
        corpus.iter(),
        300,
        &["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"],
        2,
    )
    .unwrap();
    t.set_bos(Some("<|endoftext|>")).unwrap();
    t.set_eos(Some("<|endoftext|>")).unwrap();
    t.set_pad(Some("<|pad|>")).unwrap();
    t
}

fn write(dir: &tempfile::TempDir, name: &str, lines: &[&str]) -> std::path::PathBuf {
    let p = dir.path().join(name);
    let mut f = std::fs::File::create(&p).unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
    p
}

#[test]
fn reads_strings_chats_and_signals() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        &d,
        "p.jsonl",
        &[
            r#"{"prompt": "2+2?", "chosen": "4", "rejected": "5", "chosen_fraction": 0.8, "margin": 2, "category": "math"}"#,
            r#"{"chosen": [{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}], "rejected": [{"role":"user","content":"hi"},{"role":"assistant","content":"go away"}]}"#,
        ],
    );
    let pairs = read_pairs(&p, &PreferenceFields::default()).unwrap();
    assert_eq!(pairs.len(), 2);
    assert_eq!(pairs[0].chosen, Turns::Text("4".into()));
    assert_eq!(pairs[0].chosen_fraction, Some(0.8));
    assert_eq!(pairs[0].margin, Some(2.0));
    assert_eq!(pairs[0].category.as_deref(), Some("math"));
    // The shared leading user turn became the prompt.
    match (&pairs[1].prompt, &pairs[1].chosen) {
        (Turns::Chat(p), Turns::Chat(c)) => {
            assert_eq!(p.len(), 1);
            assert_eq!(p[0].content, "hi");
            assert_eq!(c.len(), 1);
            assert_eq!(c[0].content, "hello");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_rows_name_file_line_and_field() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        &d,
        "bad.jsonl",
        &[
            r#"{"prompt": "a", "chosen": "b", "rejected": "c"}"#,
            r#"{"prompt": "a", "chosen": "b"}"#,
        ],
    );
    let e = read_pairs(&p, &PreferenceFields::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bad.jsonl") && e.contains(":2") && e.contains("\"rejected\""),
        "{e}"
    );
    let p = write(
        &d,
        "frac.jsonl",
        &[r#"{"prompt": "a", "chosen": "b", "rejected": "c", "chosen_fraction": 1.5}"#],
    );
    let e = read_pairs(&p, &PreferenceFields::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("chosen_fraction") && e.contains("1.5"), "{e}");
    let p = write(
        &d,
        "kto.jsonl",
        &[r#"{"prompt": "a", "completion": "b", "label": "yes"}"#],
    );
    let e = read_unpaired(&p, &PreferenceFields::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"label\""), "{e}");
    let p = write(
        &d,
        "kto2.jsonl",
        &[r#"{"prompt": "a", "completion": "b", "label": 0}"#],
    );
    assert!(!read_unpaired(&p, &PreferenceFields::default()).unwrap()[0].label);
    // An optional scalar reward (MargE); absent → None; not a number → an error naming it.
    let p = write(
        &d,
        "marge.jsonl",
        &[
            r#"{"prompt": "a", "completion": "b", "label": true, "reward": 0.25}"#,
            r#"{"prompt": "a", "completion": "c", "label": true}"#,
        ],
    );
    let rows = read_unpaired(&p, &PreferenceFields::default()).unwrap();
    assert_eq!(rows[0].reward, Some(0.25));
    assert_eq!(rows[1].reward, None);
    let p = write(
        &d,
        "marge_bad.jsonl",
        &[r#"{"prompt": "a", "completion": "b", "label": true, "reward": "high"}"#],
    );
    let e = read_unpaired(&p, &PreferenceFields::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"reward\"") && e.contains(":1"), "{e}");
}

#[test]
fn tokenization_follows_trl_bos_prompt_eos_completion() {
    let t = tok();
    let tpl = ChatTemplate::chatml();
    let out = tokenize(
        &t,
        &tpl,
        &Turns::Text("Question: what is 3?\nAnswer: ".into()),
        &[&Turns::Text("it is 3.".into())],
    )
    .unwrap();
    let bos = t.bos_id().unwrap();
    let eos = t.eos_id().unwrap();
    assert_eq!(out.prompt[0], bos);
    assert_eq!(
        &out.prompt[1..],
        t.encode("Question: what is 3?\nAnswer: ", false)
            .unwrap()
            .as_slice()
    );
    let mut want = t.encode("it is 3.", false).unwrap();
    want.push(eos);
    assert_eq!(out.completions[0], want);
}

#[test]
fn bad_pairs_error_or_are_counted() {
    let t = tok();
    let tpl = ChatTemplate::chatml();
    let pair = |c: &str, r: &str| PreferencePair {
        prompt: Turns::Text("Question: what is 1?\nAnswer: ".into()),
        chosen: Turns::Text(c.into()),
        rejected: Turns::Text(r.into()),
        chosen_fraction: None,
        margin: None,
        chosen_reward: None,
        rejected_reward: None,
        chosen_scores: None,
        rejected_scores: None,
        category: None,
    };
    let long = "it is 1. ".repeat(40);
    let pairs = vec![
        pair("it is 1.", "no"),
        pair("yes", "yes"),
        pair("", "no"),
        pair(&long, "no"),
    ];
    let e = tokenize_pairs(&t, &tpl, &pairs, 64, BadPairPolicy::Error)
        .unwrap_err()
        .to_string();
    assert!(e.contains("pair 1") && e.contains("identical"), "{e}");
    let (ok, skips) = tokenize_pairs(&t, &tpl, &pairs, 64, BadPairPolicy::Skip).unwrap();
    assert_eq!(ok.len(), 1);
    assert_eq!(
        skips,
        SkipCounts {
            identical: 1,
            empty_completion: 1,
            too_long: 1
        }
    );
}
