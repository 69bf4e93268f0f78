//! gradus-model: the decoder family (Llama / Qwen2), Hugging Face checkpoint load and save,
//! LoRA adapters in the PEFT layout, reward heads, KV-cache generation with sampling, and a BERT
//! encoder for sentence embeddings ([`encoder`]) and its trainable masked-LM twin ([`bert_mlm`]).

pub mod bert_mlm;
pub mod config;
pub mod decoder;
pub mod encoder;
pub mod fast;
pub mod generate;
pub mod hf;
pub mod lora;
pub mod mlp;
pub mod reward;

pub use config::{DecoderConfig, Family, NormKind, WeightDtype};
pub use decoder::{Decoder, ForwardInput, KvCache};
pub use lora::LoraConfig;
pub use reward::RewardModel;
