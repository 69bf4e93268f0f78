//! `gradus train pretrain`: next-token prediction on text, from scratch or from a checkpoint.
//! Reads top to bottom: documents → tokenizer → model → rows → loop → report. With `[phf]`,
//! pretraining with human feedback ([`crate::phf`]): segments scored, data filtered or tagged,
//! and the token-level objectives through [`crate::phf::PhfLearner`].

use gradus_data::pack::Sequence;
use gradus_tasks::{corpus, CorpusConfig};
use gradus_tensor::{Error, Result};

use crate::phf::{PhfCursor, PhfLearner, PhfSection};
use crate::prep::{
    model_for, read_text_docs, rows, split_validation, start_run, tokenizer_for, validation_batches,
};
use crate::recipe::RecipeConfig;
use crate::report::Section;
use crate::rundir::{RunDir, Start};
use crate::trainer::{
    fast_engine_for, fit_learner, fit_validated, write_run_report, FitSummary, LmLearner,
};
use gradus_data::pack::RowCursor;
use gradus_model::WeightDtype;

/// Runs the recipe. `start`: a new run (`false` / [`Start::New`]), `--resume` (`true` /
/// [`Start::Resume`]) or [`Start::Overwrite`]; see [`crate::rundir`].
pub fn run(cfg: &RecipeConfig, start: impl Into<Start>) -> Result<FitSummary> {
    cfg.validate()?;
    let start = start.into();
    if cfg.data.source == crate::modular::SOURCE || cfg.data.source == crate::parity::SOURCE {
        if cfg.phf.is_some() {
            return Err(Error::config(
                "phf",
                format!(
                    "pretraining with human feedback needs text; data.source = `{}` is not",
                    cfg.data.source
                ),
            ));
        }
        if cfg.data.source == crate::modular::SOURCE {
            return crate::modular::run(cfg, start);
        }
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
    if let Some(phf) = &cfg.phf {
        return run_phf(cfg, phf, &docs, run);
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

/// Pretraining with human feedback: score segments (cached in the run directory), tokenize per
/// segment (with control tokens, or filtered), then the LM loop or the token-level objective.
fn run_phf(
    cfg: &RecipeConfig,
    phf: &PhfSection,
    docs: &[String],
    mut run: RunDir,
) -> Result<FitSummary> {
    let resume = run.resuming();
    // 2. Scores, tokenizer (with the control tokens) and model.
    let scores = crate::phf::segment_scores(run.path(), docs, phf, resume)?;
    let tok = crate::phf::tokenizer_for(cfg, phf, docs, resume)?;
    let mut model = model_for(cfg, &tok)?;

    // 3. Segmented sequences → packed rows (with each target's segment score).
    let data = crate::phf::prepare(cfg, phf, &tok, docs, &scores)?;
    let pad = tok.pad_id().or(tok.eos_id()).unwrap_or(0);
    let val = validation_batches(cfg, &data.val, pad)?;
    let train_rows = rows(cfg, &data.train, pad)?;

    // 4. Train, then report.
    let summary = if phf.kind.token_level() {
        model.cfg.dtype = WeightDtype::F32;
        let fast = fast_engine_for(&model, cfg.train.engine, None)?;
        let cursor = PhfCursor::new(
            train_rows,
            &data.train_scores,
            cfg.train.batch_size,
            cfg.run.seed,
        )?;
        let mut none = crate::phf::NoData;
        let lm = LmLearner {
            model: &mut model,
            tok: &tok,
            data: &mut none,
            weight_norms_every: cfg.train.weight_norms_every,
            val: &val,
            eval_every: cfg.train.eval_every,
            last_step: cfg.train.steps,
            fast,
            lora: None,
        };
        let mut learner = PhfLearner::new(lm, cursor, phf, cfg.train.grad_accum);
        let s = fit_learner(&mut learner, cfg, &mut run)?;
        crate::trainer::Learner::sync_weights(&learner)?;
        s
    } else {
        let mut cursor = RowCursor::new(train_rows, cfg.train.batch_size, cfg.run.seed)?;
        fit_validated(&mut model, &tok, &mut cursor, &val, cfg, &mut run)?
    };
    let mut extra = vec![Section::table(
        "Pretraining with human feedback: data",
        data.stats.table(phf),
    )];
    if phf.kind.token_level() {
        extra.push(Section::plot(
            "PHF: MLE part of the loss (nll per token)",
            &["phf/nll"],
        ));
    }
    write_run_report(&summary.run_dir, "gradus pretrain (PHF)", cfg, &extra)?;
    Ok(summary)
}
