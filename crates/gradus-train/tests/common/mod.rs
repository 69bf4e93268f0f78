//! Shared by the preference-recipe tests: a tiny random "SFT" model and metrics columns.

use std::path::{Path, PathBuf};

use gradus_data::preference::Turns;
use gradus_model::decoder::Decoder;
use gradus_model::hf::save_decoder;
use gradus_model::DecoderConfig;
use gradus_tasks::{preference_pairs, Split, SyntheticPairsConfig};
use gradus_tensor::Device;
use gradus_train::metrics::read_metrics;
use gradus_train::prep::train_tokenizer;

/// A tiny random model with a tokenizer trained on the synthetic pairs' text, saved in `dir/init`.
pub fn init_model(dir: &Path, tied: bool) -> PathBuf {
    let out = dir.join("init");
    let texts: Vec<String> =
        preference_pairs(200, 0, Split::Train, &SyntheticPairsConfig::default())
            .into_iter()
            .map(|p| match (p.prompt, p.chosen, p.rejected) {
                (Turns::Text(a), Turns::Text(b), Turns::Text(c)) => format!("{a}{b}\n{c}"),
                _ => unreachable!("synthetic pairs are text"),
            })
            .collect();
    let tok = train_tokenizer(&texts, 300).unwrap();
    let cfg = DecoderConfig {
        vocab_size: tok.vocab_size(),
        hidden_size: 32,
        intermediate_size: 64,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        max_position_embeddings: 512,
        tie_word_embeddings: tied,
        ..Default::default()
    };
    save_decoder(&Decoder::new_random(&cfg, 1, &Device::Cpu).unwrap(), &out).unwrap();
    tok.save(&out).unwrap();
    out
}

/// One metric's values over the logged steps of a run.
pub fn col(run_dir: &Path, key: &str) -> Vec<f64> {
    read_metrics(&run_dir.join("metrics.jsonl"))
        .unwrap()
        .iter()
        .filter_map(|r| r.get(key).and_then(|v| v.as_f64()))
        .collect()
}
