//! Tokenizer adapter and byte-level BPE training.

use gradus_data::tokenizer::Tokenizer;
use proptest::prelude::*;

const SPECIALS: &[&str] = &["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"];

fn corpus() -> Vec<String> {
    let mut v = Vec::new();
    for i in 0..200 {
        v.push(format!(
            "The quick brown fox {i} jumps over the lazy dog.\nfn main() {{ println!(\"{}\"); }}\n\
             Ünïcödé tëxt, 日本語のテキスト, emoji 🦀🚀 and tabs\tand  spaces.",
            i * 7
        ));
    }
    v.push("a<|endoftext|>b".into());
    v
}

fn trained() -> Tokenizer {
    Tokenizer::train_bpe(corpus(), 400, SPECIALS, 2).unwrap()
}

#[test]
fn special_tokens_come_first_and_are_detected() {
    let tok = trained();
    for (i, s) in SPECIALS.iter().enumerate() {
        assert_eq!(tok.token_to_id(s), Some(i as u32), "{s}");
        assert_eq!(tok.id_to_token(i as u32).as_deref(), Some(*s));
    }
    assert_eq!(tok.eos_id(), Some(0));
    assert_eq!(tok.pad_id(), Some(1));
    assert_eq!(tok.bos_id(), None);
    assert_eq!(tok.vocab_size(), 400);
    // A special token written in the text is one token, also without add_special_tokens.
    assert_eq!(tok.encode("<|im_start|>", false).unwrap(), vec![2]);
    // Byte symbols follow the specials in byte order: "A" is byte 65.
    assert_eq!(tok.token_to_id("A"), Some(4 + 65));
}

#[test]
fn first_merge_is_the_most_frequent_pair_with_smallest_ids() {
    // Pieces: "hello" x1, " hello" x2, " world" x1.
    // Pair counts: (h,e)=(e,l)=(l,l)=(l,o)=3, (' ',h)=2, the rest 1. Among the ties the smallest
    // byte ids win: e=101 < h=104 < l=108, so (e,l) is merged first.
    let tok = Tokenizer::train_bpe(
        ["hello hello hello world"],
        1 + 256 + 1,
        &["<|endoftext|>"],
        1,
    )
    .unwrap();
    let ids = tok.encode("hello", false).unwrap();
    let byte = |c: u8| 1 + c as u32;
    assert_eq!(ids, vec![byte(b'h'), 1 + 256, byte(b'l'), byte(b'o')]);
    assert_eq!(tok.id_to_token(257).as_deref(), Some("el"));
}

#[test]
fn training_is_deterministic_and_order_free() {
    let a = trained().to_json().unwrap();
    let b = trained().to_json().unwrap();
    assert_eq!(a, b);
    let mut rev = corpus();
    rev.reverse();
    let c = Tokenizer::train_bpe(rev, 400, SPECIALS, 2)
        .unwrap()
        .to_json()
        .unwrap();
    assert_eq!(a, c, "word counts do not depend on the order of the texts");
}

#[test]
fn min_frequency_stops_training_early() {
    // Every pair occurs once: with min_frequency 2 nothing merges.
    let tok = Tokenizer::train_bpe(["abcdef"], 1000, &[], 2).unwrap();
    assert_eq!(tok.vocab_size(), 256);
    assert_eq!(tok.encode("abc", false).unwrap(), vec![97, 98, 99]);
}

#[test]
fn too_small_vocab_and_duplicate_specials_are_errors() {
    let e = Tokenizer::train_bpe(["x"], 100, SPECIALS, 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("100") && e.contains("260"), "{e}");
    let e = Tokenizer::train_bpe(["x"], 300, &["<a>", "<a>"], 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("<a>"), "{e}");
}

#[test]
fn round_trips_known_hard_strings() {
    let tok = trained();
    for s in [
        "",
        " leading space",
        "trailing space ",
        "\n\n\t\r\n",
        "\u{0}\u{1}\u{7f}",
        "日本語 🦀 e\u{301} ﬁ",
        "The quick brown fox<|im_end|>\n",
        "   multiple   spaces   ",
    ] {
        let ids = tok.encode(s, false).unwrap();
        assert_eq!(tok.decode(&ids, false).unwrap(), s);
    }
    let ids = tok.encode("hi<|im_end|>there", false).unwrap();
    assert_eq!(tok.decode(&ids, true).unwrap(), "hithere");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn round_trips_any_text(s in "\\PC*|[\\s\\S]{0,40}") {
        let tok = trained_cached();
        let ids = tok.encode(&s, false).unwrap();
        prop_assert_eq!(tok.decode(&ids, false).unwrap(), s);
    }
}

fn trained_cached() -> &'static Tokenizer {
    static TOK: std::sync::OnceLock<Tokenizer> = std::sync::OnceLock::new();
    TOK.get_or_init(trained)
}

#[test]
fn check_fits_names_both_sizes() {
    let tok = trained();
    tok.check_fits(400).unwrap();
    tok.check_fits(1024).unwrap();
    let e = tok.check_fits(399).unwrap_err().to_string();
    assert!(
        e.contains("up to 399") && e.contains(">= 400") && e.contains("is 399"),
        "{e}"
    );
}

#[test]
fn decode_of_unknown_id_is_an_error() {
    let e = trained().decode(&[5, 600], false).unwrap_err().to_string();
    assert!(e.contains("600"), "{e}");
}

#[test]
fn save_and_from_dir_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut tok = trained();
    tok.set_bos(Some("<|im_start|>")).unwrap();
    tok.set_chat_template(Some("{{ messages[0].content }}".into()));
    tok.save(dir.path()).unwrap();
    let back = Tokenizer::from_dir(dir.path()).unwrap();
    assert_eq!(back.bos_id(), Some(2));
    assert_eq!(back.eos_id(), Some(0));
    assert_eq!(back.pad_id(), Some(1));
    assert_eq!(back.chat_template(), Some("{{ messages[0].content }}"));
    assert_eq!(back.to_json().unwrap(), tok.to_json().unwrap());
    let text = "fn main() { println!(\"7\"); } 🦀";
    assert_eq!(
        back.encode(text, false).unwrap(),
        tok.encode(text, false).unwrap()
    );
    assert!(tok
        .set_eos(Some("<nope>"))
        .unwrap_err()
        .to_string()
        .contains("<nope>"));
}

#[test]
fn from_dir_reads_hf_config_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let tok = trained();
    std::fs::write(dir.path().join("tokenizer.json"), tok.to_json().unwrap()).unwrap();
    // AddedToken objects, a null pad, and a list of named templates, as transformers writes them.
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        r#"{"bos_token": {"__type": "AddedToken", "content": "<|im_start|>", "lstrip": false},
            "eos_token": "<|im_end|>", "pad_token": null, "model_max_length": 2048,
            "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}"#,
    )
    .unwrap();
    // config.json ids are used only where the tokenizer config says nothing (pad here).
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"eos_token_id": [0, 3], "pad_token_id": 3}"#,
    )
    .unwrap();
    let t = Tokenizer::from_dir(dir.path()).unwrap();
    assert_eq!(
        (t.bos_id(), t.eos_id(), t.pad_id()),
        (Some(2), Some(3), Some(3))
    );
    assert_eq!(t.chat_template(), Some("D"));

    // The other fields survive a save.
    let out = tempfile::tempdir().unwrap();
    t.save(out.path()).unwrap();
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("tokenizer_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["model_max_length"], 2048);
    assert_eq!(cfg["eos_token"], "<|im_end|>");

    // chat_template.jinja wins over the config's template.
    std::fs::write(dir.path().join("chat_template.jinja"), "J").unwrap();
    assert_eq!(
        Tokenizer::from_dir(dir.path()).unwrap().chat_template(),
        Some("J")
    );

    // A token the vocabulary lacks is an error naming the file and the field.
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        r#"{"eos_token": "</s>"}"#,
    )
    .unwrap();
    let e = Tokenizer::from_dir(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("tokenizer_config.json") && e.contains("eos_token") && e.contains("</s>"),
        "{e}"
    );
}

#[test]
fn load_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tokenizer.json");
    let e = Tokenizer::from_file(&p).unwrap_err().to_string();
    assert!(e.contains("tokenizer.json"), "{e}");
    std::fs::write(&p, "{\"version\": \"1.0\", \"model\": 3}").unwrap();
    let e = Tokenizer::from_file(&p).unwrap_err().to_string();
    assert!(
        e.contains("tokenizer.json") && e.contains("not a valid"),
        "{e}"
    );
    std::fs::write(&p, trained().to_json().unwrap()).unwrap();
    std::fs::write(dir.path().join("tokenizer_config.json"), "{oops").unwrap();
    let e = Tokenizer::from_dir(dir.path()).unwrap_err().to_string();
    assert!(e.contains("tokenizer_config.json:1"), "{e}");
}

/// Python `tokenizers` loads our tokenizer.json and encodes/decodes like we do.
/// Run with: `cargo test -p gradus-data --test tokenizer -- --ignored python`
#[test]
#[ignore = "needs python3 with the `tokenizers` package"]
fn python_tokenizers_loads_trained_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let tok = trained();
    tok.save(dir.path()).unwrap();
    let text = "fn main() { println!(\"42\"); }\n日本語 🦀<|im_end|> tabs\tend";
    let script = "import sys, json\nfrom tokenizers import Tokenizer\nt = Tokenizer.from_file(sys.argv[1])\n\
         e = t.encode(sys.argv[2], add_special_tokens=False)\n\
         print(json.dumps({'ids': e.ids, 'text': t.decode(e.ids, skip_special_tokens=False)}))";
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(dir.path().join("tokenizer.json"))
        .arg(text)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<u32> = serde_json::from_value(v["ids"].clone()).unwrap();
    assert_eq!(ids, tok.encode(text, false).unwrap());
    assert_eq!(v["text"], text);
}

/// Train a 4k vocabulary on CPython's top-level standard library (~7 MB, 168 files) twice: same
/// bytes, round trip on every file, and a rough timing.
/// Run with: `cargo test -p gradus-data --release --test tokenizer -- --ignored cpython --nocapture`
#[test]
#[ignore = "reads CPython's stdlib from the pyenv root; a few seconds"]
fn train_on_cpython_stdlib() {
    let root = std::env::var("HOME").unwrap() + "/.pyenv/versions/3.11.7/lib/python3.11";
    let mut files: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "py"))
        .collect();
    files.sort();
    let texts: Vec<String> = files
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect();
    let bytes: usize = texts.iter().map(String::len).sum();
    let t0 = std::time::Instant::now();
    let a = Tokenizer::train_bpe(&texts, 4096, SPECIALS, 2).unwrap();
    let dt = t0.elapsed();
    let b = Tokenizer::train_bpe(&texts, 4096, SPECIALS, 2).unwrap();
    assert_eq!(a.to_json().unwrap(), b.to_json().unwrap());
    let mut n_tokens = 0;
    for t in &texts {
        let ids = a.encode(t, false).unwrap();
        n_tokens += ids.len();
        assert_eq!(&a.decode(&ids, false).unwrap(), t);
    }
    println!(
        "{} files, {bytes} bytes, trained in {dt:?}; {:.2} bytes/token",
        texts.len(),
        bytes as f64 / n_tokens as f64
    );
}

// ---------------------------------------------------------------- digit splitting

fn numbers_corpus() -> Vec<String> {
    // Numbers repeat a lot: a BPE without digit splitting merges "12", "123", ... (checked below).
    (0..300)
        .map(|i| format!("{i}+{}={} and 123 12 1234 x1 a42b", i * 7, i * 8))
        .collect()
}

fn split_opts() -> gradus_data::tokenizer::BpeOptions {
    gradus_data::tokenizer::BpeOptions { split_digits: true }
}

#[test]
fn split_digits_gives_one_token_per_digit_and_round_trips() {
    let text = "37+45=82, x = 1234567890; 0.5 and a42b\n-17";
    // Without splitting, this corpus merges digits (so the checks below can fail).
    let merged = Tokenizer::train_bpe(numbers_corpus(), 400, SPECIALS, 2).unwrap();
    let pieces = |tok: &Tokenizer| -> Vec<String> {
        tok.encode(text, false)
            .unwrap()
            .iter()
            .map(|&i| tok.decode(&[i], false).unwrap())
            .collect()
    };
    assert!(
        pieces(&merged)
            .iter()
            .any(|p| p.chars().filter(char::is_ascii_digit).count() > 1),
        "{:?}",
        pieces(&merged)
    );

    let tok = Tokenizer::train_bpe_with(numbers_corpus(), 400, SPECIALS, 2, split_opts()).unwrap();
    // Every token that holds a digit is exactly that one digit.
    for p in pieces(&tok) {
        if p.chars().any(|c| c.is_ascii_digit()) {
            assert_eq!(p.chars().count(), 1, "token {p:?} holds a digit and more");
        }
    }
    // The digits of 1234567890 are the byte symbols of '1'..'0' (ids 4 + byte), one each.
    let ids = tok.encode("1234567890", false).unwrap();
    let want: Vec<u32> = b"1234567890".iter().map(|&b| 4 + b as u32).collect();
    assert_eq!(ids, want);
    // No learned merge contains a digit.
    let json: serde_json::Value = serde_json::from_str(&tok.to_json().unwrap()).unwrap();
    for m in json["model"]["merges"].as_array().unwrap() {
        let s = m.to_string();
        assert!(
            !s.chars().any(|c| c.is_ascii_digit()),
            "merge {s} joins a digit"
        );
    }
    for s in [text, "", "9", "日本語 42 🦀", "  007  ", "\n\n123\t"] {
        let ids = tok.encode(s, false).unwrap();
        assert_eq!(tok.decode(&ids, false).unwrap(), s);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn split_digits_round_trips_any_text(s in "[0-9a-z +=\\-\\n]{0,40}|\\PC{0,20}") {
        static TOK: std::sync::OnceLock<Tokenizer> = std::sync::OnceLock::new();
        let tok = TOK.get_or_init(|| Tokenizer::train_bpe_with(numbers_corpus(), 400, SPECIALS, 2, split_opts()).unwrap());
        let ids = tok.encode(&s, false).unwrap();
        prop_assert_eq!(tok.decode(&ids, false).unwrap(), s.clone());
        let digits = s.chars().filter(char::is_ascii_digit).count();
        let digit_tokens = ids.iter().filter(|&&i| (4 + b'0' as u32..=4 + b'9' as u32).contains(&i)).count();
        prop_assert_eq!(digits, digit_tokens);
    }
}

#[test]
fn saved_tokenizer_json_splits_digits_for_any_hf_loader() {
    let tok = Tokenizer::train_bpe_with(numbers_corpus(), 400, SPECIALS, 2, split_opts()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    tok.save(dir.path()).unwrap();
    // The file says so in HF's own terms: Sequence[Digits(individual_digits), ByteLevel].
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("tokenizer.json")).unwrap())
            .unwrap();
    let pre = &json["pre_tokenizer"];
    assert_eq!(pre["type"], "Sequence");
    assert_eq!(
        pre["pretokenizers"][0],
        serde_json::json!({"type": "Digits", "individual_digits": true})
    );
    assert_eq!(pre["pretokenizers"][1]["type"], "ByteLevel");
    // A fresh `tokenizers` load of the file encodes each digit as its own token.
    let hf = tokenizers::Tokenizer::from_file(dir.path().join("tokenizer.json")).unwrap();
    let enc = hf.encode("90+0=90", false).unwrap();
    let toks: Vec<&str> = enc.get_tokens().iter().map(String::as_str).collect();
    assert_eq!(toks, ["9", "0", "+", "0", "=", "9", "0"]);
    assert_eq!(enc.get_ids(), tok.encode("90+0=90", false).unwrap());
}

/// Python `tokenizers` loads a digit-splitting tokenizer.json and encodes digits one per token.
/// Run with: `cargo test -p gradus-data --test tokenizer -- --ignored python`
#[test]
#[ignore = "needs python3 with the `tokenizers` package"]
fn python_tokenizers_splits_digits_like_gradus() {
    let dir = tempfile::tempdir().unwrap();
    let tok = Tokenizer::train_bpe_with(numbers_corpus(), 400, SPECIALS, 2, split_opts()).unwrap();
    tok.save(dir.path()).unwrap();
    let text = "12+7=19 and x = 1234;";
    let script = "import sys, json\nfrom tokenizers import Tokenizer\nt = Tokenizer.from_file(sys.argv[1])\n\
         print(json.dumps(t.encode(sys.argv[2], add_special_tokens=False).ids))";
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(dir.path().join("tokenizer.json"))
        .arg(text)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids: Vec<u32> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ids, tok.encode(text, false).unwrap());
}
