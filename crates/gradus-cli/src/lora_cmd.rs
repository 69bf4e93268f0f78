//! `gradus lora ...`: LoRA adapter tools. `merge` folds a PEFT-layout adapter into its base
//! checkpoint and writes a plain Hugging Face checkpoint (the library work is in
//! `gradus_model::lora`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Subcommand;

use gradus_model::hf::{load_decoder, save_decoder};
use gradus_model::lora::load_adapter;
use gradus_tensor::Device;

#[derive(Subcommand)]
pub enum LoraCmd {
    /// Merge a LoRA adapter (adapter_config.json + adapter_model.safetensors, as PEFT writes them)
    /// into its base model: W + scale·B·A. Writes config.json + model.safetensors (in the base's
    /// dtype) and copies the base's tokenizer and generation files.
    Merge {
        /// The base Hugging Face checkpoint directory (or a run directory: its latest checkpoint).
        #[arg(long)]
        base: PathBuf,
        /// The adapter directory (or a LoRA run's directory: its latest checkpoint).
        #[arg(long)]
        adapter: PathBuf,
        /// Where to write the merged checkpoint (created if missing; must differ from --base).
        #[arg(long)]
        out: PathBuf,
    },
}

/// Files beside the weights that a merged checkpoint keeps from its base, when present.
const COPIED: [&str; 9] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "generation_config.json",
];

pub fn run(cmd: LoraCmd) -> Result<()> {
    match cmd {
        LoraCmd::Merge { base, adapter, out } => merge(&base, &adapter, &out),
    }
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn merge(base: &Path, adapter: &Path, out: &Path) -> Result<()> {
    // Run directories stand for their latest checkpoint.
    let base = &gradus_eval::lm::resolve_model_dir(base)?;
    let adapter = &gradus_eval::lm::resolve_model_dir(adapter)?;
    if same_dir(base, out) {
        bail!(
            "--out {} is the base checkpoint directory; write the merged model elsewhere",
            out.display()
        );
    }
    let mut model = load_decoder(base, &Device::Cpu)
        .with_context(|| format!("loading the base model from {}", base.display()))?;
    let cfg = load_adapter(adapter, &mut model).with_context(|| {
        format!(
            "loading the LoRA adapter from {} onto {}",
            adapter.display(),
            base.display()
        )
    })?;
    let n_layers = model.lora_params().len() / 2;
    let merged = model.merge_lora()?;
    save_decoder(&merged, out)
        .with_context(|| format!("writing the merged model to {}", out.display()))?;
    let mut copied = Vec::new();
    for f in COPIED {
        let src = base.join(f);
        if src.is_file() {
            std::fs::copy(&src, out.join(f))
                .with_context(|| format!("copying {} to {}", src.display(), out.display()))?;
            copied.push(f);
        }
    }
    println!(
        "merged {n_layers} LoRA layers (r {}, alpha {}, scale {:.4}, modules {}) into {} → {}{}",
        cfg.r,
        cfg.lora_alpha,
        cfg.scale(),
        cfg.target_modules.join(","),
        base.display(),
        out.display(),
        if copied.is_empty() {
            String::new()
        } else {
            format!("; copied {}", copied.join(", "))
        }
    );
    Ok(())
}
