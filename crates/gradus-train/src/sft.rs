//! `gradus train sft`: supervised fine-tuning on prompt/completion or chat data, with packing and
//! loss only on completion / assistant tokens (configurable). Reads top to bottom.

use gradus_data::chat::{encode_chat, encode_prompt_completion, ChatTemplate};
use gradus_data::dataset::{read_dataset_sourced, Example, Shape};
use gradus_data::pack::Overflow;
use gradus_data::pack::Sequence;
use gradus_data::tokenizer::Tokenizer;
use gradus_tasks::{instructions_with, Split, TaskConfig};
use gradus_tensor::{Error, Result};

use crate::prep::{
    apply_overflow, examples_to_texts, fields, model_for, rows_with, split_validation, start_run,
    tokenizer_for, validation_batches,
};
use crate::recipe::RecipeConfig;
use crate::report::Section;
use crate::rundir::Start;
use crate::trainer::{fit_validated, write_run_report, FitSummary};
use gradus_data::pack::RowCursor;

/// The prompt format used for the built-in instruction task (also by quickstart's evaluation).
pub fn synthetic_prompt(question: &str) -> String {
    gradus_tasks::task_prompt(question)
}

/// The built-in instruction task (its default settings) as prompt/completion examples.
pub fn synthetic_examples(n: usize, seed: u64, split: Split) -> Vec<Example> {
    synthetic_task_examples(n, seed, split, &TaskConfig::default())
}

/// The built-in instruction task `task` as prompt/completion examples.
pub fn synthetic_task_examples(
    n: usize,
    seed: u64,
    split: Split,
    task: &TaskConfig,
) -> Vec<Example> {
    instructions_with(n, seed, split, task)
        .into_iter()
        .map(|i| Example::PromptCompletion {
            prompt: synthetic_prompt(&i.prompt),
            completion: i.answer,
        })
        .collect()
}

/// Tokenizes examples into sequences with the loss mask SFT wants.
pub fn sequences(
    tok: &Tokenizer,
    examples: &[Example],
    completion_only: bool,
) -> Result<Vec<Sequence>> {
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

/// Runs the recipe (`start` as in [`crate::pretrain::run`]). An example longer than
/// `data.seq_len` follows `data.overflow`, by default `skip`: left out with a warning naming its
/// `file:line`, and counted in the report; never trained on as an all-masked row.
pub fn run(cfg: &RecipeConfig, start: impl Into<Start>) -> Result<FitSummary> {
    cfg.validate()?;
    if cfg.phf.is_some() {
        return Err(Error::config(
            "phf",
            "pretraining with human feedback is a `train pretrain` setting; remove [phf] for SFT",
        ));
    }
    let mut cfg = cfg.clone();
    let overflow = *cfg.data.overflow.get_or_insert(Overflow::Skip);
    let cfg = &cfg;
    let mut run = start_run(cfg, &start.into())?;
    let resume = run.resuming();

    // 1. Examples, with where each came from.
    let (examples, sources): (Vec<Example>, Vec<String>) = if cfg.data.source == "synthetic" {
        let ex = synthetic_task_examples(
            cfg.data.synthetic_examples,
            cfg.run.seed,
            Split::Train,
            &cfg.data.task,
        );
        let src = (0..ex.len())
            .map(|i| format!("synthetic example {i}"))
            .collect();
        (ex, src)
    } else {
        read_dataset_sourced(
            std::path::Path::new(&cfg.data.source),
            Shape::Auto,
            &fields(cfg),
        )?
        .into_iter()
        .unzip()
    };
    if examples.is_empty() {
        return Err(Error::config(
            "data.source",
            format!("`{}` holds no examples", cfg.data.source),
        ));
    }

    // 2. Tokenizer and model (a tokenizer is trained only when starting from scratch).
    let texts = examples_to_texts(examples.clone());
    let mut tok = tokenizer_for(cfg, &texts, resume)?;
    // Conversations are rendered with the tokenizer's chat template, ChatML when it has none: save
    // the one used, so `apply_chat_template` on the checkpoint renders what the model learned.
    if tok.chat_template().is_none()
        && examples
            .iter()
            .any(|e| matches!(e, gradus_data::dataset::Example::Chat { .. }))
    {
        tok.set_chat_template(Some(gradus_data::chat::CHATML_TEMPLATE.to_string()));
    }
    let mut model = model_for(cfg, &tok)?;

    // 3. Sequences with loss masks → packed rows.
    let seqs = sequences(&tok, &examples, cfg.data.completion_only)?;
    let skipped = apply_overflow(cfg, &seqs, &sources, overflow)?;
    if skipped.skipped == seqs.len() {
        return Err(Error::config(
            "data.seq_len",
            format!(
                "every example is longer than {} tokens (data.overflow = \"skip\")",
                cfg.data.seq_len
            ),
        ));
    }
    let pad = tok.pad_id().or(tok.eos_id()).unwrap_or(0);
    let (seqs, val) = split_validation(seqs, cfg.data.val_fraction, cfg.run.seed);
    let val = validation_batches(cfg, &val, pad)?;
    let mut data = RowCursor::new(
        rows_with(cfg, &seqs, pad, overflow)?,
        cfg.train.batch_size,
        cfg.run.seed,
    )?;

    // 4. Train, then report.
    let summary = fit_validated(&mut model, &tok, &mut data, &val, cfg, &mut run)?;
    let mut data_rows = vec![("examples".to_string(), examples.len().to_string())];
    data_rows.push((
        "skipped: longer than data.seq_len".to_string(),
        skipped.skipped.to_string(),
    ));
    data_rows.extend(
        skipped
            .examples
            .iter()
            .map(|e| ("  skipped".to_string(), e.clone())),
    );
    write_run_report(
        &summary.run_dir,
        "gradus sft",
        cfg,
        &[Section::table("Data", data_rows)],
    )?;
    Ok(summary)
}
