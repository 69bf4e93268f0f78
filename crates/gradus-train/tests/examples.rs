//! `gradus data example`: each file reads back, through the reader its recipe uses for
//! `data.source = FILE`, as the rows the recipe generates for `data.source = "synthetic"`.

use gradus_data::dataset::{read_dataset, read_texts, Example, Fields, Message, Shape};
use gradus_data::preference::{read_pairs, PreferenceFields};
use gradus_tasks::{corpus, instructions_with, preference_pairs, CorpusConfig, Split, TaskConfig};
use gradus_train::examples::{example_rows, write_jsonl, ExampleKind};

fn written(kind: ExampleKind, n: usize, seed: u64) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rows.jsonl");
    write_jsonl(&path, &example_rows(kind, n, seed).unwrap()).unwrap();
    (dir, path)
}

#[test]
fn corpus_pairs_and_chats_read_back_as_the_built_in_data() {
    let (_d, p) = written(ExampleKind::Corpus, 12, 3);
    let texts = read_texts(&p, Shape::Text, &Fields::default()).unwrap();
    assert_eq!(
        texts,
        corpus(&CorpusConfig::styled(12, 3, &Default::default())).unwrap()
    );

    let (_d, p) = written(ExampleKind::Pairs, 20, 5);
    let read = read_pairs(&p, &PreferenceFields::default()).unwrap();
    assert_eq!(
        read,
        preference_pairs(20, 5, Split::Train, &Default::default())
    );

    let (_d, p) = written(ExampleKind::Chats, 15, 7);
    let read = read_dataset(&p, Shape::Chat, &Fields::default()).unwrap();
    let want: Vec<Example> = instructions_with(15, 7, Split::Train, &TaskConfig::default())
        .into_iter()
        .map(|i| Example::Chat {
            messages: vec![
                Message::new("user", i.prompt),
                Message::new("assistant", i.answer),
            ],
        })
        .collect();
    assert_eq!(read, want);
}

#[test]
fn prompts_give_rl_the_rows_and_columns_of_the_synthetic_task() {
    let (_d, p) = written(ExampleKind::Prompts, 30, 0);
    let texts: Vec<String> = instructions_with(30, 0, Split::Train, &TaskConfig::default())
        .iter()
        .map(|i| gradus_tasks::task_prompt(&i.prompt))
        .collect();
    let tok = gradus_train::prep::train_tokenizer_with(&texts, 300, true).unwrap();
    let mut cfg = gradus_train::rl::RlConfig::default();
    cfg.data.synthetic_prompts = 30;
    let synthetic = gradus_train::rl::load_prompts(&cfg, &tok, 4096).unwrap();
    cfg.data.source = p.display().to_string();
    cfg.rewards = vec![toml::from_str("kind = \"task\"").unwrap()];
    let from_file = gradus_train::rl::load_prompts(&cfg, &tok, 4096).unwrap();
    assert_eq!(synthetic.len(), 30);
    assert_eq!(from_file.len(), 30);
    for (a, b) in synthetic.iter().zip(&from_file) {
        assert_eq!((&a.text, &a.ids), (&b.text, &b.ids));
        for col in ["answer", "kind"] {
            assert_eq!(a.columns[col], b.columns[col], "{col} of {}", a.text);
        }
    }
}

#[test]
fn problems_are_humaneval_rows_whose_solution_is_the_arithmetic() {
    let (_d, p) = written(ExampleKind::Problems, 40, 2);
    let problems = gradus_eval::code::problems::load_problems(&p).unwrap();
    assert!(problems.len() >= 30, "{} problems", problems.len());
    for pr in &problems {
        // The docstring's "Compute A op B." evaluated here, independently of the generator.
        let q = pr.prompt.split("\"\"\"").nth(1).unwrap();
        let expr = q.strip_prefix("Compute ").unwrap().trim_end_matches('.');
        let (i, op) = expr
            .char_indices()
            .skip(1)
            .find(|(_, c)| "+-*".contains(*c))
            .unwrap_or_else(|| panic!("no operator in {q:?}"));
        let (a, b): (i64, i64) = (expr[..i].parse().unwrap(), expr[i + 1..].parse().unwrap());
        let v = match op {
            '+' => a + b,
            '-' => a - b,
            _ => a * b,
        };
        assert_eq!(pr.canonical_solution, format!("    return {v}\n"), "{q}");
        assert_eq!(
            pr.test,
            format!("def check(candidate):\n    assert candidate() == {v}\n")
        );
        assert_eq!(pr.entry_point, "solve");
    }
}
