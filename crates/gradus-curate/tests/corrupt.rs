//! Synthetic corruptions: each one changes the code in exactly the stated way; on the built-in
//! language, syntax corruptions fail to parse and content ones still parse; on Python (when a
//! `python3` is on the PATH) syntax corruptions fail to `compile()` and content ones compile.

use gradus_curate::corrupt::chunk::python_chunks;
use gradus_curate::corrupt::{corrupt, corrupt_any, count_sites, Class, Kind, Lang};
use gradus_tasks::lang;
use gradus_tasks::programs::{generate, ProgramConfig};
use gradus_tensor::rng::Rng;

/// The edit the corruption reports is the whole difference between input and output: the input
/// with `before` at (line, col) replaced by `after` gives the output.
fn check_reported_edit(src: &str, out: &str, c: &gradus_curate::corrupt::Corruption) {
    let mut offset = 0;
    for (i, l) in src.split_inclusive('\n').enumerate() {
        if i + 1 == c.line {
            offset += l.char_indices().nth(c.col - 1).map_or(l.len(), |(b, _)| b);
            break;
        }
        offset += l.len();
    }
    assert!(src[offset..].starts_with(&c.before), "{c:?} in\n{src}");
    let rebuilt = format!(
        "{}{}{}",
        &src[..offset],
        c.after,
        &src[offset + c.before.len()..]
    );
    assert_eq!(rebuilt, out, "{c:?}");
    assert_ne!(src, out);
}

const PY: &str = "def count_even(xs, limit):
    total = 0
    for i in range(len(xs)):
        if xs[i] % 2 == 0 and i < limit:
            total = total + 1
        n = xs[0]
    return total
";

#[test]
fn each_python_kind_does_what_it_says_on_a_known_snippet() {
    let mut rng = Rng::new(0);
    // Sites derived by reading PY: closing brackets `)` ×3 (range(len(xs)) has two) and `]` ×2.
    assert_eq!(count_sites(PY, Lang::Python, Kind::DeleteClosingBracket), 5);
    // `def`, `for` and `if` headers end with a colon.
    assert_eq!(count_sites(PY, Lang::Python, Kind::DropColon), 3);
    // Statements with the same indentation as the statement before, which does not open a block:
    // `for` (after `total = 0`), `n = xs[0]`? no — it follows `total = total + 1` at a deeper
    // indentation; `return total` follows `n = xs[0]` at a deeper one. So one site: the `for` line.
    assert_eq!(count_sites(PY, Lang::Python, Kind::BreakIndentation), 1);
    // `==` and `<`.
    assert_eq!(count_sites(PY, Lang::Python, Kind::FlipComparison), 2);
    // Integers inside a subscript or range(): `0` of `xs[0]` only (the others are not in one) → 0+1.
    assert_eq!(count_sites(PY, Lang::Python, Kind::OffByOne), 1);
    // Binary `+` in `total + 1` only (`%` is left alone in Python).
    assert_eq!(count_sites(PY, Lang::Python, Kind::SwapOperator), 1);

    let (out, c) = corrupt(PY, Lang::Python, Kind::BreakIndentation, &mut rng).unwrap();
    assert_eq!(
        (c.line, c.col, c.before.as_str(), c.after.as_str()),
        (3, 1, "", " ")
    );
    assert!(out.contains("\n     for i in range"));
    check_reported_edit(PY, &out, &c);

    let (out, c) = corrupt(PY, Lang::Python, Kind::OffByOne, &mut rng).unwrap();
    assert_eq!((c.line, c.before.as_str(), c.after.as_str()), (6, "0", "1"));
    assert!(out.contains("n = xs[1]"));

    let (out, c) = corrupt(PY, Lang::Python, Kind::SwapOperator, &mut rng).unwrap();
    assert!(out.contains("total = total - 1"));
    assert_eq!(c.class, Class::Content);

    for seed in 0..20 {
        let mut rng = Rng::new(seed);
        for kind in Kind::for_lang(Lang::Python) {
            let Some((out, c)) = corrupt(PY, Lang::Python, kind, &mut rng) else {
                panic!("{kind:?} has a site in PY");
            };
            assert_eq!(c.kind, kind);
            check_reported_edit(PY, &out, &c);
            match kind {
                Kind::DeleteClosingBracket => {
                    assert!([")", "]"].contains(&c.before.as_str()) && c.after.is_empty())
                }
                Kind::DropColon => assert_eq!((c.before.as_str(), c.after.as_str()), (":", "")),
                Kind::BreakKeyword => {
                    let mut b: Vec<char> = c.before.chars().collect();
                    b.swap(0, 1);
                    assert_eq!(c.after, b.into_iter().collect::<String>());
                    assert!(["def", "for", "if", "return"].contains(&c.before.as_str()));
                }
                Kind::FlipComparison => {
                    assert!(
                        [("==", "!="), ("<", ">")].contains(&(c.before.as_str(), c.after.as_str())),
                        "{c:?}"
                    )
                }
                Kind::SwapVariable => {
                    assert!(["xs", "limit", "total", "i", "n"].contains(&c.before.as_str()));
                    assert!(["xs", "limit", "total", "i", "n"].contains(&c.after.as_str()));
                    assert_ne!(c.before, c.after);
                }
                Kind::RenameVariable => assert_eq!(c.after, format!("{}_1", c.before)),
                _ => {}
            }
        }
    }
}

#[test]
fn strings_and_comments_are_never_touched() {
    let src = "x = '(a < b)]'  # ) == [\ny = \"\"\"\n  )\n\"\"\"\n";
    assert_eq!(
        count_sites(src, Lang::Python, Kind::DeleteClosingBracket),
        0
    );
    assert_eq!(count_sites(src, Lang::Python, Kind::FlipComparison), 0);
    assert!(corrupt(src, Lang::Python, Kind::SwapOperator, &mut Rng::new(0)).is_none());
}

/// Tiny-language programs from the built-in generator: syntax corruptions make `lang::parse`
/// fail, content corruptions keep it parsing, and every edit is the reported one.
#[test]
fn tiny_language_syntax_corruptions_fail_to_parse_content_ones_parse() {
    let cfg = ProgramConfig {
        max_stmts: 6,
        ..Default::default()
    };
    let mut gen = Rng::new(1);
    let mut seen = std::collections::HashMap::new();
    for p in 0..60 {
        let src = generate(&mut gen, &cfg).source;
        assert!(lang::parse(&src).is_ok());
        for kind in Kind::for_lang(Lang::Tiny) {
            let mut rng = Rng::new(p);
            let Some((out, c)) = corrupt(&src, Lang::Tiny, kind, &mut rng) else {
                continue;
            };
            *seen.entry(kind).or_insert(0) += 1;
            check_reported_edit(&src, &out, &c);
            let parsed = lang::parse(&out);
            match c.class {
                Class::Syntax => assert!(parsed.is_err(), "{c:?} still parses:\n{out}"),
                Class::Content => assert!(
                    parsed.is_ok(),
                    "{c:?} no longer parses: {:?}\n{out}",
                    parsed.err()
                ),
            }
        }
    }
    // Every kind of the language was exercised on these programs.
    for kind in Kind::for_lang(Lang::Tiny) {
        assert!(
            seen.get(&kind).copied().unwrap_or(0) > 5,
            "{kind:?} applied only {:?} times",
            seen.get(&kind)
        );
    }
}

#[test]
fn corrupt_any_is_seeded() {
    let kinds = Kind::for_lang(Lang::Python);
    let a = corrupt_any(PY, Lang::Python, &kinds, &mut Rng::new(5));
    let b = corrupt_any(PY, Lang::Python, &kinds, &mut Rng::new(5));
    assert_eq!(a, b);
    let all: std::collections::HashSet<Kind> = (0..200)
        .filter_map(|s| corrupt_any(PY, Lang::Python, &kinds, &mut Rng::new(s)))
        .map(|(_, c)| c.kind)
        .collect();
    assert_eq!(all.len(), kinds.len());
    assert!(Kind::parse("flip_comparison").is_ok());
    assert!(Kind::parse("nope")
        .unwrap_err()
        .to_string()
        .contains("flip_comparison"));
}

#[test]
fn python_chunks_are_top_level_blocks() {
    let src = "import os\n\n@deco\ndef a(x):\n    return x\n\n\nX = 1\n\nclass B:\n    def m(self):\n        pass\n\n    def n(self):\n        return 1\n";
    let c = python_chunks(src, 2, 100);
    assert_eq!(c.len(), 2);
    assert_eq!(c[0].line, 3);
    assert_eq!(c[0].text, "@deco\ndef a(x):\n    return x");
    assert!(c[1].text.starts_with("class B:") && c[1].text.ends_with("return 1"));
    // With max 4 lines the class (6 lines) is split into its methods, dedented.
    let c = python_chunks(src, 2, 4);
    assert_eq!(c.len(), 3);
    assert_eq!(c[1].text, "def m(self):\n    pass");
    assert_eq!(c[2].line, 14);
}

/// Python's own parser agrees: syntax corruptions of the stdlib-like snippets fail to compile,
/// content ones compile. Skipped (with a message) only when there is no python3 at all.
#[test]
fn python_compile_agrees_with_classes() {
    let snippets = [
        PY,
        "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, x):\n        self.items.append(x)\n        return len(self.items) - 1\n",
        "def f(a, b=2):\n    while a < b:\n        a = a * 2\n    try:\n        return a[0]\n    except IndexError:\n        return None\n",
    ];
    let mut cases = Vec::new();
    for (s, src) in snippets.iter().enumerate() {
        for kind in Kind::for_lang(Lang::Python) {
            for seed in 0..4 {
                if let Some((out, c)) =
                    corrupt(src, Lang::Python, kind, &mut Rng::new(seed * 31 + s as u64))
                {
                    cases.push((out, c.class == Class::Syntax));
                }
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let json = serde_json::to_string(&cases).unwrap();
    std::fs::write(dir.path().join("cases.json"), json).unwrap();
    let script = "import json,sys\nbad=[]\nfor i,(src,syn) in enumerate(json.load(open(sys.argv[1]))):\n    try:\n        compile(src,'x','exec'); ok=True\n    except SyntaxError:\n        ok=False\n    if ok == syn: bad.append((i,syn,src))\nprint(json.dumps(bad))\n";
    let out = match std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(dir.path().join("cases.json"))
        .output()
    {
        Ok(o) => {
            assert!(
                o.status.success(),
                "python3 failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            o
        }
        // Only a missing interpreter skips; one that runs and fails is a failure (above).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("SKIPPED: no python3 on the PATH");
            return;
        }
        Err(e) => panic!("running python3: {e}"),
    };
    let bad = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        bad.trim(),
        "[]",
        "cases where compile() disagrees with the corruption class: {bad}"
    );
    assert!(cases.len() > 60);
}
