//! `gradus train sft`: supervised fine-tuning on prompt/completion or chat data, with packing and
//! loss only on completion / assistant tokens (configurable). Reads top to bottom.

use gradus_data::chat::{encode_chat, encode_prompt_completion, ChatTemplate};
use gradus_data::dataset::{read_dataset, Example, Shape};
use gradus_data::pack::Sequence;
use gradus_tasks::{instructions, Split};
use gradus_data::tokenizer::Tokenizer;
use gradus_tensor::{Error, Result};

use crate::prep::{examples_to_texts, fields, model_for, rows, start_run, tokenizer_for};
use crate::recipe::RecipeConfig;
use gradus_data::pack::RowCursor;
use crate::trainer::{fit, write_run_report, FitSummary};

/// The prompt format used for the built-in instruction task (also by quickstart's evaluation).
pub fn synthetic_prompt(question: &str) -> String {
    gradus_tasks::task_prompt(question)
}

/// The built-in instruction task as prompt/completion examples.
pub fn synthetic_examples(n: usize, seed: u64, split: Split) -> Vec<Example> {
    instructions(n, seed, split)
        .into_iter()
        .map(|i| Example::PromptCompletion { prompt: synthetic_prompt(&i.prompt), completion: i.answer })
        .collect()
}

/// Tokenizes examples into sequences with the loss mask SFT wants.
pub fn sequences(tok: &Tokenizer, examples: &[Example], completion_only: bool) -> Result<Vec<Sequence>> {
    let tpl = ChatTemplate::for_tokenizer(tok)?;
    examples
        .iter()
        .map(|e| {
            let (ids, mask) = match e {
                Example::PromptCompletion { prompt, completion } => {
                    encode_prompt_completion(tok, prompt, completion, true, true)?
                }
                Example::Chat { messages } => encode_chat(tok, &tpl, messages, true)?,
                Example::Text { text } => {
                    let mut ids: Vec<u32> = tok.bos_id().into_iter().collect();
                    ids.extend(tok.encode(text, false)?);
                    ids.extend(tok.eos_id());
                    let n = ids.len();
                    (ids, vec![true; n])
                }
            };
            let n = ids.len();
            let loss_mask = if completion_only { mask } else { vec![true; n] };
            Ok(Sequence { ids, loss_mask })
        })
        .collect()
}

pub fn run(cfg: &RecipeConfig, resume: bool) -> Result<FitSummary> {
    cfg.validate()?;
    start_run(cfg)?;

    // 1. Examples.
    let examples: Vec<Example> = if cfg.data.source == "synthetic" {
        synthetic_examples(cfg.data.synthetic_examples, cfg.run.seed, Split::Train)
    } else {
        read_dataset(std::path::Path::new(&cfg.data.source), Shape::Auto, &fields(cfg))?
    };
    if examples.is_empty() {
        return Err(Error::config("data.source", format!("`{}` holds no examples", cfg.data.source)));
    }

    // 2. Tokenizer and model (a tokenizer is trained only when starting from scratch).
    let texts = examples_to_texts(examples.clone());
    let tok = tokenizer_for(cfg, &texts, resume)?;
    let mut model = model_for(cfg, &tok)?;

    // 3. Sequences with loss masks → packed rows.
    let seqs = sequences(&tok, &examples, cfg.data.completion_only)?;
    let pad = tok.pad_id().or(tok.eos_id()).unwrap_or(0);
    let mut data = RowCursor::new(rows(cfg, &seqs, pad)?, cfg.train.batch_size, cfg.run.seed)?;

    // 4. Train, then report.
    let summary = fit(&mut model, &tok, &mut data, cfg, resume)?;
    write_run_report(&summary.run_dir, "gradus sft", cfg, &[])?;
    Ok(summary)
}
