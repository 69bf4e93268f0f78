//! The bodies of the fuzz targets, shared by the libFuzzer binaries (`fuzz_targets/`, nightly
//! `cargo fuzz run <target>`) and the stable replay driver (`examples/replay.rs`).
//!
//! Each target takes arbitrary bytes. Any `Err` is an acceptable answer; a panic is a bug (DESIGN.md
//! §4: user input never causes a panic), and so is an error that does not name the file at fault.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use gradus_data::dataset::{read_json_array, read_jsonl, Fields, Shape};
use gradus_model::{Decoder, DecoderConfig};
use gradus_tensor::Device;
use gradus_train::recipe::RecipeConfig;

/// The targets, by name (the names of `fuzz_targets/*.rs` and `seeds/*/`).
pub const TARGETS: [&str; 3] = ["jsonl", "config", "safetensors"];

/// Runs the named target on one input.
pub fn run(target: &str, data: &[u8]) {
    match target {
        "jsonl" => jsonl(data),
        "config" => config(data),
        "safetensors" => safetensors(data),
        other => panic!("unknown target {other:?} (known: {TARGETS:?})"),
    }
}

thread_local! {
    // One scratch dir per thread, reused across inputs: creating a temp dir per input halves the rate.
    static SCRATCH: RefCell<Option<tempfile::TempDir>> = const { RefCell::new(None) };
}

fn scratch() -> PathBuf {
    SCRATCH.with(|s| {
        s.borrow_mut()
            .get_or_insert_with(|| {
                tempfile::Builder::new()
                    .prefix("gradus-fuzz")
                    .tempdir()
                    .expect("temp dir")
            })
            .path()
            .to_path_buf()
    })
}

fn write(path: &Path, data: &[u8]) {
    std::fs::write(path, data).expect("writing the fuzz input");
}

/// `GRADUS_FUZZ_VERBOSE=1` prints each input's outcome (to check the targets reach deep code).
fn verbose() -> bool {
    static V: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *V.get_or_init(|| std::env::var_os("GRADUS_FUZZ_VERBOSE").is_some())
}

fn must_name(err: &str, what: &str, input: &Path) {
    if verbose() {
        eprintln!("err: {err}");
    }
    assert!(
        err.contains(what),
        "error does not name {what} ({}): {err}",
        input.display()
    );
}

/// (a) JSONL reader, shape auto (plus the JSON-array reader on the same bytes).
pub fn jsonl(data: &[u8]) {
    let dir = scratch();
    let path = dir.join("rows.jsonl");
    write(&path, data);
    match read_jsonl(&path, Shape::Auto, &Fields::default()) {
        Ok(rows) => {
            if verbose() {
                eprintln!("ok: {} rows", rows.len());
            }
            assert!(rows.len() <= data.len(), "more rows than bytes")
        }
        Err(e) => must_name(&e.to_string(), "rows.jsonl", &path),
    }
    if let Err(e) = read_json_array(&path, Shape::Auto, &Fields::default()) {
        must_name(&e.to_string(), "rows.jsonl", &path);
    }
}

/// (b) Recipe config: the input as a TOML file, resolved and validated. Lines of the form
/// `#set key=value` (TOML comments, so the file is unchanged) are also passed as `--set` overrides.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let dir = scratch();
    let path = dir.join("recipe.toml");
    write(&path, data);
    let sets: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("#set "))
        .map(String::from)
        .collect();
    match gradus_cli::config::resolve::<RecipeConfig>(Some(&path), &sets) {
        Ok(cfg) => {
            let v = cfg.validate();
            if verbose() {
                eprintln!("ok: resolved; validate: {v:?}");
            }
            // What --show-config prints must parse back to the same config.
            let shown = gradus_cli::config::to_toml(&cfg).expect("to_toml of a resolved config");
            let back: RecipeConfig = toml_roundtrip(&shown, &dir);
            assert_eq!(
                format!("{back:?}"),
                format!("{cfg:?}"),
                "--show-config output does not round-trip:\n{shown}"
            );
        }
        Err(e) => {
            let msg = format!("{e:#}");
            if sets.is_empty() {
                must_name(&msg, "recipe.toml", &path);
            }
        }
    }
}

fn toml_roundtrip(shown: &str, dir: &Path) -> RecipeConfig {
    let p = dir.join("shown.toml");
    write(&p, shown.as_bytes());
    gradus_cli::config::resolve(Some(&p), &[])
        .unwrap_or_else(|e| panic!("--show-config output does not parse: {e:#}\n{shown}"))
}

/// The tiny model whose `config.json` sits next to the fuzzed `model.safetensors`:
/// V=8, D=4, 1 layer, 2 heads (head_dim 2), 1 KV head, MLP 8.
pub fn tiny_config() -> DecoderConfig {
    DecoderConfig {
        vocab_size: 8,
        hidden_size: 4,
        intermediate_size: 8,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        num_key_value_heads: 1,
        max_position_embeddings: 16,
        ..Default::default()
    }
}

/// A valid `model.safetensors` for [`tiny_config`] (the first safetensors seed).
pub fn tiny_checkpoint(dtype: gradus_model::WeightDtype) -> Vec<u8> {
    let cfg = DecoderConfig {
        dtype,
        ..tiny_config()
    };
    let model = Decoder::new_random(&cfg, 0, &Device::Cpu).expect("tiny model");
    let dir = tempfile::tempdir().expect("temp dir");
    gradus_model::hf::save_decoder(&model, dir.path()).expect("save");
    std::fs::read(dir.path().join("model.safetensors")).expect("read back")
}

/// (c) safetensors: parse the bytes; if they parse, load them as the weights of the tiny model.
pub fn safetensors(data: &[u8]) {
    let dir = scratch().join("ckpt");
    if !dir.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = serde_json::to_string(&tiny_config().to_hf_json()).unwrap();
        write(&dir.join("config.json"), cfg.as_bytes());
    }
    let path = dir.join("model.safetensors");
    write(&path, data);
    match gradus_tensor::io::read_safetensors(&path, &Device::Cpu) {
        Err(e) => must_name(&e.to_string(), "model.safetensors", &path),
        Ok(_) => match gradus_model::hf::load_decoder(&dir, &Device::Cpu) {
            Ok(model) => {
                if verbose() {
                    eprintln!("ok: loaded a {:?} decoder", model.cfg.family);
                }
                // A loaded model must also run: one forward pass over two tokens.
                let ids = [1u32, 2];
                let lp = model
                    .target_logprobs(&gradus_model::ForwardInput::new(&ids[..1], 1, 1), &ids[1..])
                    .expect("forward on a loaded model");
                drop(lp);
            }
            Err(e) => must_name(&e.to_string(), &dir.display().to_string(), &path),
        },
    }
}
