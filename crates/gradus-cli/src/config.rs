//! Config resolution: defaults < `--config file.toml` < `--set a.b=value`.
//!
//! Every recipe config is a serde struct tree with `#[serde(default, deny_unknown_fields)]`, so a
//! partial TOML file deserialises directly (toml then reports the file's own line and column), and
//! an unknown key is an error that names the key and suggests the nearest known one.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Adds "did you mean `x`?" to serde's "unknown field `y`, expected one of `a`, `b`" messages.
pub fn suggest(msg: &str) -> String {
    let Some(start) = msg.find("unknown field `") else {
        return msg.to_string();
    };
    let rest = &msg[start + 15..];
    let Some(end) = rest.find('`') else {
        return msg.to_string();
    };
    let field = &rest[..end];
    let expected: Vec<&str> = rest[end + 1..]
        .split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s)
        .collect();
    let best = expected
        .iter()
        .map(|c| (strsim::jaro_winkler(field, c), *c))
        .max_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    match best {
        Some((score, c)) if score > 0.7 => format!("{msg}\n(did you mean `{c}`?)"),
        _ => msg.to_string(),
    }
}

/// Parses a `--set` value as TOML (numbers, booleans, arrays, inline tables); anything that is not
/// valid TOML is taken as a string, so `--set run.name=my-run` needs no quotes.
fn parse_value(raw: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or(toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

fn set_path(root: &mut toml::Value, key: &str, value: toml::Value) -> Result<()> {
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        bail!("--set {key}: empty key segment");
    }
    let mut cur = root;
    for p in &parts[..parts.len() - 1] {
        let table = cur
            .as_table_mut()
            .ok_or_else(|| anyhow!("--set {key}: `{p}` is not a table"))?;
        cur = table
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()));
    }
    let table = cur
        .as_table_mut()
        .ok_or_else(|| anyhow!("--set {key}: parent is not a table"))?;
    let last = parts[parts.len() - 1];
    // `kind` tags a variant (`[objective] kind = "ipo"`): switching variants drops the old one's
    // settings, which the new variant may not have; later --set keys fill the new one's.
    if last == "kind" && table.get("kind") != Some(&value) {
        table.clear();
    }
    table.insert(last.to_string(), value);
    Ok(())
}

/// Resolves a recipe config from its defaults, an optional file and `--set` overrides.
pub fn resolve<T: Serialize + DeserializeOwned + Default>(
    file: Option<&Path>,
    sets: &[String],
) -> Result<T> {
    let base: T = match file {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading config {}", p.display()))?;
            toml::from_str(&text)
                .map_err(|e| anyhow!("{}: {}", p.display(), suggest(&e.to_string())))?
        }
        None => T::default(),
    };
    resolve_from(base, sets)
}

/// `base` with `--set` overrides applied.
pub fn resolve_from<T: Serialize + DeserializeOwned>(base: T, sets: &[String]) -> Result<T> {
    if sets.is_empty() {
        return Ok(base);
    }
    let mut v = toml::Value::try_from(&base).context("serialising config")?;
    for s in sets {
        let (k, raw) = s
            .split_once('=')
            .ok_or_else(|| anyhow!("--set {s}: expected key=value"))?;
        set_path(&mut v, k.trim(), parse_value(raw.trim()))?;
    }
    let text = toml::to_string(&v)?;
    toml::from_str(&text).map_err(|e: toml::de::Error| {
        // The merged document's line numbers mean nothing to the user: keep serde's message only.
        let msg = suggest(e.message());
        anyhow!("in --set overrides ({}): {msg}", sets.join(" "))
    })
}

/// `model.init_from` given as a gradus run directory becomes its latest checkpoint
/// (`checkpoints/step-N`), so commands need not know how many steps a run took; the resolved
/// config (and so the run's `config.resolved.toml`) names the checkpoint. Anything else is left
/// as it is. Returns the replaced path, if any.
pub fn resolve_init_from<T: Serialize + DeserializeOwned>(cfg: &mut T) -> Result<Option<PathBuf>> {
    let mut v = toml::Value::try_from(&*cfg).context("serialising config")?;
    let Some(slot) = v.get_mut("model").and_then(|m| m.get_mut("init_from")) else {
        return Ok(None);
    };
    let Some(dir) = slot.as_str().map(PathBuf::from) else {
        return Ok(None);
    };
    if dir.join("config.json").is_file() || !dir.join("checkpoints").is_dir() {
        return Ok(None);
    }
    let ck = gradus_eval::lm::resolve_model_dir(&dir)
        .with_context(|| format!("model.init_from = {}", dir.display()))?;
    *slot = toml::Value::String(ck.display().to_string());
    *cfg = toml::from_str(&toml::to_string(&v)?).context("model.init_from")?;
    Ok(Some(ck))
}

/// The resolved config as TOML, as `--show-config` prints it and runs save it.
pub fn to_toml<T: Serialize>(cfg: &T) -> Result<String> {
    Ok(toml::to_string_pretty(cfg)?)
}

/// How a command treats its run directory from `--resume` / `--overwrite`: resuming may change
/// exactly the keys that `--set` names.
pub fn start(resume: bool, overwrite: bool, sets: &[String]) -> gradus_train::rundir::Start {
    use gradus_train::rundir::Start;
    if resume {
        let explicit = sets
            .iter()
            .filter_map(|s| s.split_once('=').map(|(k, _)| k.trim().to_string()))
            .collect();
        Start::Resume { explicit }
    } else if overwrite {
        Start::Overwrite
    } else {
        Start::New
    }
}

/// Merges the tables of `over` into `base` (values of `over` win).
fn merge_toml(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge_toml(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// `base` (e.g. a lab's size preset) with the fields of the TOML file `path` laid over it. The
/// file is first parsed alone, so an unknown or mistyped field is reported against it.
pub fn overlay_file<T: Serialize + DeserializeOwned>(base: T, path: Option<&Path>) -> Result<T> {
    let Some(p) = path else {
        return Ok(base);
    };
    let text =
        std::fs::read_to_string(p).with_context(|| format!("reading config {}", p.display()))?;
    let _: T = toml::from_str(&text)
        .map_err(|e| anyhow!("{}: {}", p.display(), suggest(&e.to_string())))?;
    let over: toml::Value = toml::from_str(&text).map_err(|e| anyhow!("{}: {e}", p.display()))?;
    let mut v = toml::Value::try_from(&base).context("serialising config")?;
    merge_toml(&mut v, over);
    v.try_into()
        .map_err(|e| anyhow!("{}: {}", p.display(), suggest(&e.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_from_a_run_directory_is_its_latest_checkpoint() {
        let d = tempfile::tempdir().unwrap();
        let run = d.path().join("run");
        for step in [2, 10, 9] {
            let ck = run.join(format!("checkpoints/step-{step}"));
            std::fs::create_dir_all(&ck).unwrap();
            std::fs::write(ck.join("config.json"), "{}").unwrap();
        }
        // step-11 has no config.json (an unfinished save): not a checkpoint.
        std::fs::create_dir_all(run.join("checkpoints/step-11")).unwrap();
        let mut cfg: gradus_train::recipe::RecipeConfig = resolve_from(
            Default::default(),
            &[format!("model.init_from={:?}", run.display().to_string())],
        )
        .unwrap();
        let got = resolve_init_from(&mut cfg).unwrap();
        let want = run.join("checkpoints/step-10");
        assert_eq!(got.as_deref(), Some(want.as_path()));
        assert_eq!(cfg.model.init_from.as_deref(), Some(want.as_path()));
        // A checkpoint (or model) directory, and a path that is not a run, stay as they are.
        assert_eq!(resolve_init_from(&mut cfg).unwrap(), None);
        cfg.model.init_from = Some(d.path().join("nope"));
        assert_eq!(resolve_init_from(&mut cfg).unwrap(), None);
        assert_eq!(cfg.model.init_from, Some(d.path().join("nope")));
    }
}
