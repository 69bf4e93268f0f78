//! Config resolution: every shipped config parses, precedence holds, and mistakes name the key.

use std::path::{Path, PathBuf};

use gradus_cli::config::{resolve, suggest};
use gradus_train::recipe::RecipeConfig;

fn shipped() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut out = vec![];
    let mut stack = vec![root];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "toml") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn every_shipped_config_parses_and_validates() {
    let files = shipped();
    assert!(
        files.len() >= 3,
        "expected shipped configs, found {files:?}"
    );
    for f in files {
        // The directory names the recipe, hence the config type.
        let recipe = f
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        let checked = match recipe.as_str() {
            "dpo" => resolve::<gradus_train::dpo::DpoConfig>(Some(&f), &[])
                .and_then(|c| Ok(c.validate()?)),
            "reward" => resolve::<gradus_train::reward::RewardConfig>(Some(&f), &[])
                .and_then(|c| Ok(c.validate()?)),
            "llome" => resolve::<gradus_train::llome::LlomeConfig>(Some(&f), &[])
                .and_then(|c| Ok(c.validate()?)),
            "evoprompting" => resolve::<gradus_train::evoprompting::EvoConfig>(Some(&f), &[])
                .and_then(|c| Ok(c.validate()?)),
            "ilf" => resolve::<gradus_train::ilf::IlfConfig>(Some(&f), &[]).and_then(|c| {
                // The shipped default is exactly the built-in default.
                assert_eq!(
                    c,
                    gradus_train::ilf::IlfConfig::default(),
                    "{}",
                    f.display()
                );
                Ok(c.validate()?)
            }),
            "rl" => {
                resolve::<gradus_train::rl::RlConfig>(Some(&f), &[]).and_then(|c| Ok(c.validate()?))
            }
            _ => resolve::<RecipeConfig>(Some(&f), &[]).and_then(|c| Ok(c.validate()?)),
        };
        checked.unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
}

#[test]
fn precedence_is_defaults_then_file_then_set() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.toml");
    std::fs::write(&f, "[train]\nlr = 0.5\nsteps = 7\n").unwrap();
    let d = RecipeConfig::default();
    let c: RecipeConfig =
        resolve(Some(&f), &["train.steps=9".into(), "run.name=abc".into()]).unwrap();
    assert_eq!(c.train.lr, 0.5); // from the file
    assert_eq!(c.train.steps, 9); // --set beats the file
    assert_eq!(c.run.name, "abc"); // bare strings need no quotes
    assert_eq!(c.train.batch_size, d.train.batch_size); // untouched default
    let c: RecipeConfig = resolve(
        None,
        &[
            "model.config.hidden_size=96".into(),
            "optimizer.betas=[0.9, 0.95]".into(),
        ],
    )
    .unwrap();
    assert_eq!(c.model.config.hidden_size, 96);
    assert_eq!(c.optimizer.betas, (0.9, 0.95));
    let c: RecipeConfig = resolve(
        None,
        &[
            "schedule.kind=\"cosine\"".into(),
            "schedule.warmup_steps=5".into(),
        ],
    )
    .unwrap();
    assert_eq!(c.schedule.warmup_steps(), 5);
}

#[test]
fn unknown_keys_are_named_with_a_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.toml");
    std::fs::write(&f, "[train]\nsteps = 3\nlearning_rat = 0.1\n").unwrap();
    let e = resolve::<RecipeConfig>(Some(&f), &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bad.toml") && e.contains("learning_rat") && e.contains("line 3"),
        "{e}"
    );
    let e = resolve::<RecipeConfig>(None, &["train.stesp=3".into()])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("stesp") && e.contains("did you mean `steps`"),
        "{e}"
    );
    let e = resolve::<RecipeConfig>(None, &["train.steps".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("key=value"), "{e}");
    // A wrong type names the key.
    let e = resolve::<RecipeConfig>(None, &["train.steps=\"many\"".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("steps"), "{e}");
}

#[test]
fn suggestion_picks_the_nearest_field() {
    let m = "unknown field `batchsize`, expected one of `steps`, `batch_size`, `lr`";
    assert!(
        suggest(m).ends_with("(did you mean `batch_size`?)"),
        "{}",
        suggest(m)
    );
    let m = "unknown field `zzz`, expected one of `steps`, `lr`";
    assert_eq!(suggest(m), m);
}
