//! `gradus train pretrain`: next-token prediction on text, from scratch or from a checkpoint.
//! Reads top to bottom: documents → tokenizer → model → rows → loop → report.

use gradus_data::pack::Sequence;
use gradus_tasks::{corpus, CorpusConfig};
use gradus_tensor::{Error, Result};

use crate::prep::{model_for, read_text_docs, rows, start_run, tokenizer_for};
use crate::recipe::RecipeConfig;
use gradus_data::pack::RowCursor;
use crate::trainer::{fit, write_run_report, FitSummary};

pub fn run(cfg: &RecipeConfig, resume: bool) -> Result<FitSummary> {
    cfg.validate()?;
    start_run(cfg)?;

    // 1. Documents.
    let docs: Vec<String> = if cfg.data.source == "synthetic" {
        corpus(&CorpusConfig { n_docs: cfg.data.synthetic_examples, seed: cfg.run.seed, ..Default::default() })?
    } else {
        read_text_docs(std::path::Path::new(&cfg.data.source), cfg)?
    };
    if docs.is_empty() {
        return Err(Error::config("data.source", format!("`{}` holds no documents", cfg.data.source)));
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
        seqs.push(Sequence { ids, loss_mask: vec![true; n] });
    }
    let pad = tok.pad_id().or(eos).unwrap_or(0);
    let mut data = RowCursor::new(rows(cfg, &seqs, pad)?, cfg.train.batch_size, cfg.run.seed)?;

    // 4. Train, then report.
    let summary = fit(&mut model, &tok, &mut data, cfg, resume)?;
    write_run_report(&summary.run_dir, "gradus pretrain", cfg, &[])?;
    Ok(summary)
}
