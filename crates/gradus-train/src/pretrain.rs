//! `gradus train pretrain`: next-token prediction on text, from scratch or from a checkpoint.
//! Reads top to bottom: documents → tokenizer → model → rows → loop → report.

use gradus_data::pack::Sequence;
use gradus_tasks::{corpus, CorpusConfig};
use gradus_tensor::{Error, Result};

use crate::prep::{
    model_for, read_text_docs, rows, split_validation, start_run, tokenizer_for, validation_batches,
};
use crate::recipe::RecipeConfig;
use crate::rundir::Start;
use crate::trainer::{fit_validated, write_run_report, FitSummary};
use gradus_data::pack::RowCursor;

/// Runs the recipe. `start`: a new run (`false` / [`Start::New`]), `--resume` (`true` /
/// [`Start::Resume`]) or [`Start::Overwrite`]; see [`crate::rundir`].
pub fn run(cfg: &RecipeConfig, start: impl Into<Start>) -> Result<FitSummary> {
    cfg.validate()?;
    let start = start.into();
    if cfg.data.source == crate::modular::SOURCE {
        return crate::modular::run(cfg, start);
    }
    if cfg.data.source == crate::parity::SOURCE {
        return crate::parity::run(cfg, start);
    }
    let mut cfg = cfg.clone();
    cfg.data
        .overflow
        .get_or_insert(gradus_data::pack::Overflow::Split);
    let cfg = &cfg;
    let mut run = start_run(cfg, &start)?;
    let resume = run.resuming();

    // 1. Documents.
    let docs: Vec<String> = if cfg.data.source == "synthetic" {
        corpus(&CorpusConfig::styled(
            cfg.data.synthetic_examples,
            cfg.run.seed,
            &cfg.data.corpus,
        ))?
    } else {
        read_text_docs(std::path::Path::new(&cfg.data.source), cfg)?
    };
    if docs.is_empty() {
        return Err(Error::config(
            "data.source",
            format!("`{}` holds no documents", cfg.data.source),
        ));
    }

    // 2. Tokenizer and model.
    let tok = tokenizer_for(cfg, &docs, resume)?;
    let mut model = model_for(cfg, &tok)?;

    // 3. Tokenize: BOS + text + EOS, every token a target.
    let bos = tok.bos_id();
    let eos = tok.eos_id();
    let mut seqs = Vec::with_capacity(docs.len());
    for d in &docs {
        let mut ids: Vec<u32> = bos.into_iter().collect();
        ids.extend(tok.encode(d, false)?);
        ids.extend(eos);
        let n = ids.len();
        seqs.push(Sequence {
            ids,
            loss_mask: vec![true; n],
        });
    }
    let pad = tok.pad_id().or(eos).unwrap_or(0);
    let (seqs, val) = split_validation(seqs, cfg.data.val_fraction, cfg.run.seed);
    let val = validation_batches(cfg, &val, pad)?;
    let mut data = RowCursor::new(rows(cfg, &seqs, pad)?, cfg.train.batch_size, cfg.run.seed)?;

    // 4. Train, then report.
    let summary = fit_validated(&mut model, &tok, &mut data, &val, cfg, &mut run)?;
    write_run_report(&summary.run_dir, "gradus pretrain", cfg, &[])?;
    Ok(summary)
}
