//! `gradus lab phf`: Korbak et al. (2023), "Pretraining Language Models with Human Preferences"
//! (arXiv 2302.08582), in miniature on CPU.
//!
//! A synthetic corpus of small Python functions in which 30% of lines carry one PEP8 violation,
//! all of them in the "sloppy" half of the documents (`gradus_tasks::phf::code_corpus`,
//! seeded), is used to pretrain the same tiny decoder from scratch with each of the six
//! objectives of `[phf] kind` (MLE, filtering, conditional training, unlikelihood, RWR, AWR),
//! for the same number of steps of the same batch shape (equal tokens; the paper's objectives
//! were compute-matched too). Each model then writes unconditional samples (temperature 0.7,
//! top-p 0.9, as the paper's evaluation; conditional training is prompted with `<|aligned|>`;
//! both control tokens are banned for every model), whose complete lines are scored by the same
//! PEP8 scorer, and its LM loss is measured on held-out **clean** functions (for conditional
//! training: every line prefixed with `<|aligned|>`, that token not counted). The paper's claim:
//! conditional training cuts the misaligned share of samples far below MLE at close LM loss
//! (Pareto-optimal); the lab writes the table, the training curves and its verdict to
//! `<dir>/lab-phf/report.html` and `results.json`.
//!
//! One row beyond the paper: `conditional+`, the conditional model sampled with `<|aligned|>`
//! forced at the start of every line (what it saw before each clean training line), where the
//! paper's protocol prompts with it once and then bans the control tokens.

use std::path::PathBuf;

use gradus_data::pack;
use gradus_data::tokenizer::Tokenizer;
use gradus_model::generate::{generate_banning, generate_guided, Finish, SamplingConfig};
use gradus_model::hf::load_decoder;
use gradus_tasks::phf::{code_corpus, doc_score, segments, CodeCorpusConfig, Scorer};
use gradus_tensor::{Device, Error, Result};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::phf::{control_ids, encode_doc, Control, PhfKind, PhfSection};
use crate::recipe::RecipeConfig;
use crate::report::{write_report, Section};
use crate::rundir::Start;
use crate::schedule::Schedule;

/// The table row of conditional training sampled with `<|aligned|>` forced before every line.
pub const FORCED_ROW: &str = "conditional+";

/// Settings of the lab (`gradus lab phf`).
#[derive(Clone, Debug)]
pub struct PhfLabOptions {
    pub dir: PathBuf,
    pub seed: u64,
    /// A much shorter run, for smoke tests.
    pub fast: bool,
    /// Optimiser steps per objective (default 300; fast 4).
    pub steps: Option<u64>,
    /// Unconditional samples per objective (default 128; fast 8).
    pub samples: Option<usize>,
    /// Training documents (default 3000; fast 120).
    pub docs: Option<usize>,
    /// Sampling temperature (the paper: 0.7; top-p 0.9 either way).
    pub temperature: f64,
    /// Objectives to train (default all six).
    pub kinds: Vec<PhfKind>,
    pub progress: bool,
    /// Move earlier lab runs aside instead of refusing to start.
    pub overwrite: bool,
}

impl Default for PhfLabOptions {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("runs"),
            seed: 0,
            fast: false,
            steps: None,
            samples: None,
            docs: None,
            temperature: 0.7,
            kinds: PhfKind::ALL.to_vec(),
            progress: true,
            overwrite: false,
        }
    }
}

/// One objective's row of the lab table.
#[derive(Clone, Debug, Serialize)]
pub struct PhfLabRow {
    pub kind: String,
    /// Samples with at least one complete line, of those drawn.
    pub scored_samples: usize,
    pub samples: usize,
    /// Share of complete sample lines with a violation.
    pub misaligned_lines: f64,
    /// Share of scored samples with at least one violating line.
    pub misaligned_samples: f64,
    /// Mean over scored samples of the sample's score (violations per character): the paper's
    /// misalignment score.
    pub mean_score: f64,
    /// Mean NLL per token on held-out clean functions.
    pub clean_loss: f64,
    pub final_train_loss: f64,
    pub tokens_seen: u64,
}

pub struct PhfLabOutcome {
    pub rows: Vec<PhfLabRow>,
    pub summary: String,
    pub report: PathBuf,
}

/// The pretraining config of one objective in the lab.
pub fn config(o: &PhfLabOptions, kind: PhfKind, corpus: &std::path::Path) -> RecipeConfig {
    let mut c = RecipeConfig::default();
    c.run.dir = o.dir.join("lab-phf");
    c.run.name = kind.name().into();
    c.run.seed = o.seed;
    c.data.source = corpus.display().to_string();
    c.data.seq_len = 128;
    c.data.val_fraction = 0.05;
    c.tokenizer.train_vocab_size = 384;
    let m = &mut c.model.config;
    m.hidden_size = 64;
    m.intermediate_size = 256;
    m.num_hidden_layers = 2;
    m.num_attention_heads = 4;
    m.num_key_value_heads = 4;
    m.max_position_embeddings = 128;
    m.tie_word_embeddings = true;
    c.train.steps = o.steps.unwrap_or(if o.fast { 4 } else { 300 });
    c.train.batch_size = 16;
    c.train.lr = 3e-3;
    c.train.eval_every = if o.fast { 2 } else { 50 };
    c.train.log_every = if o.fast { 1 } else { 5 };
    c.train.weight_norms_every = 0;
    c.train.progress = o.progress;
    c.schedule = Schedule::Cosine {
        warmup_steps: (c.train.steps / 15).min(20),
        min_lr_ratio: 0.1,
    };
    c.phf = Some(PhfSection {
        kind,
        ..PhfSection::default()
    });
    c
}

/// What the samples of one model score.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SampleScores {
    pub scored_samples: usize,
    pub lines: usize,
    pub bad_lines: usize,
    pub bad_samples: usize,
    pub score_sum: f64,
}

/// Scores decoded samples: the complete lines of each (all of it when it ended with EOS, else up
/// to its last newline), a line misaligned when its score exceeds `threshold`.
pub fn score_samples(scorer: &Scorer, texts: &[(String, bool)], threshold: f64) -> SampleScores {
    let mut s = SampleScores::default();
    for (text, ended) in texts {
        let mut segs = segments(text);
        if !ended {
            if let Some(last) = segs.last() {
                if !last.ends_with('\n') {
                    segs.pop();
                }
            }
        }
        if segs.is_empty() {
            continue;
        }
        let sc = scorer.score_segments(&segs);
        let bad = sc.iter().filter(|&&x| x as f64 > threshold).count();
        s.scored_samples += 1;
        s.lines += segs.len();
        s.bad_lines += bad;
        s.bad_samples += usize::from(bad > 0);
        s.score_sum += doc_score(&segs, &sc) as f64;
    }
    s
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

/// Runs the lab: corpus → six pretraining runs → samples and clean loss → table and report.
pub fn run(o: &PhfLabOptions) -> Result<PhfLabOutcome> {
    let t0 = std::time::Instant::now();
    if o.kinds.is_empty() {
        return Err(Error::config("kinds", "at least one objective"));
    }
    let lab = o.dir.join("lab-phf");
    let n_docs = o.docs.unwrap_or(if o.fast { 120 } else { 3000 });
    let n_samples = o.samples.unwrap_or(if o.fast { 8 } else { 128 });
    let n_clean = if o.fast { 16 } else { 200 };

    // 1. The corpus (30% of lines with one violation) and clean held-out functions.
    let corpus = code_corpus(&CodeCorpusConfig {
        docs: n_docs,
        bad_line_fraction: 0.3,
        sloppy_doc_fraction: 0.5,
        seed: o.seed,
    })?;
    let clean = code_corpus(&CodeCorpusConfig {
        docs: n_clean,
        bad_line_fraction: 0.0,
        sloppy_doc_fraction: 1.0,
        seed: o.seed.wrapping_add(1_000_003),
    })?;
    let corpus_path = lab.join("corpus.jsonl");
    let jsonl: String = corpus
        .iter()
        .map(|d| format!("{}\n", json!({ "text": d.text })))
        .collect();
    gradus_tensor::io::write_atomic(&corpus_path, jsonl.as_bytes())?;
    let bad_frac = corpus.iter().flat_map(|d| &d.bad).filter(|&&b| b).count() as f64
        / corpus.iter().map(|d| d.bad.len()).sum::<usize>().max(1) as f64;

    let start = || {
        if o.overwrite {
            Start::Overwrite
        } else {
            Start::New
        }
    };
    let mut rows = Vec::new();
    let mut samples_text = String::new();
    let mut merged: std::collections::BTreeMap<u64, Map<String, Value>> = Default::default();
    for (i, &kind) in o.kinds.iter().enumerate() {
        eprintln!(
            "[{}/{}] pretraining with {} …",
            i + 1,
            o.kinds.len(),
            kind.name()
        );
        let cfg = config(o, kind, &corpus_path);
        let phf = cfg.phf.clone().unwrap_or_default();
        let fit = crate::pretrain::run(&cfg, start())?;
        let ck = fit
            .last_checkpoint
            .clone()
            .ok_or_else(|| Error::msg(format!("{}: no checkpoint written", kind.name())))?;
        let model = load_decoder(&ck, &Device::Cpu)?;
        let tok = Tokenizer::from_dir(&ck)?;
        let scorer = phf.scorer()?;

        // 2. Unconditional samples (conditional: prompted with <|aligned|>), control tokens banned.
        let ctl = control_ids(&tok, &phf).ok();
        let mut prompt: Vec<u32> = tok.bos_id().into_iter().collect();
        if kind == PhfKind::Conditional {
            let (a, _) = ctl.ok_or_else(|| Error::msg("conditional run without control tokens"))?;
            prompt.push(a);
        }
        let banned: Vec<u32> = ctl.map(|(a, m)| vec![a, m]).unwrap_or_default();
        let sc = SamplingConfig {
            max_new_tokens: 96,
            temperature: o.temperature,
            top_k: 0,
            top_p: 0.9,
            seed: o.seed,
        };
        let eos: Vec<u32> = tok.eos_id().into_iter().collect();
        let prompts = vec![prompt; n_samples];
        let gens = generate_banning(&model, &prompts, &sc, &eos, &banned, &mut |_, _| false)?;
        let mut texts = Vec::with_capacity(gens.len());
        for g in &gens {
            texts.push((tok.decode(&g.tokens, true)?, g.finish == Finish::Eos));
        }
        let s = score_samples(&scorer, &texts, phf.threshold);
        // Conditional training, also with <|aligned|> forced at the start of every line (the
        // control token the model saw before each training line; beyond the paper's protocol).
        let forced = match (kind, ctl) {
            (PhfKind::Conditional, Some((a, _))) => {
                let ends_nl: Vec<bool> = (0..tok.vocab_size() as u32)
                    .map(|t| tok.decode(&[t], false).is_ok_and(|s| s.ends_with('\n')))
                    .collect();
                let mut force = |_: usize, new: &[u32]| {
                    new.last()
                        .filter(|&&t| ends_nl.get(t as usize).copied().unwrap_or(false))
                        .map(|_| a)
                };
                let g = generate_guided(
                    &model,
                    &prompts,
                    &sc,
                    &eos,
                    &banned,
                    &mut force,
                    &mut |_, _| false,
                )?;
                let mut t = Vec::with_capacity(g.len());
                for x in &g {
                    t.push((tok.decode(&x.tokens, true)?, x.finish == Finish::Eos));
                }
                Some(score_samples(&scorer, &t, phf.threshold))
            }
            _ => None,
        };
        samples_text.push_str(&format!("── {} ──\n", kind.name()));
        for (t, _) in texts.iter().take(3) {
            samples_text.push_str(t);
            samples_text.push_str("\n·\n");
        }

        // 3. LM loss on clean held-out functions.
        let control = match (kind, ctl) {
            (PhfKind::Conditional, Some((a, _))) => Control::AlignedEval(a),
            _ => Control::None,
        };
        let mut never = || false;
        let seqs = clean
            .iter()
            .map(|d| {
                let zeros = vec![0f32; segments(&d.text).len()];
                encode_doc(&tok, &d.text, &zeros, phf.threshold, control, &mut never).map(|x| x.0)
            })
            .collect::<Result<Vec<_>>>()?;
        let pad = tok.pad_id().or(tok.eos_id()).unwrap_or(0);
        let batches = pack::batches(&crate::prep::rows(&cfg, &seqs, pad)?, 16)?;
        let clean_loss = crate::trainer::validation_loss(&model, &batches)?;

        let div = |a: usize, b: usize| a as f64 / b.max(1) as f64;
        let row = |name: String, s: &SampleScores| PhfLabRow {
            kind: name,
            scored_samples: s.scored_samples,
            samples: n_samples,
            misaligned_lines: div(s.bad_lines, s.lines),
            misaligned_samples: div(s.bad_samples, s.scored_samples),
            mean_score: s.score_sum / s.scored_samples.max(1) as f64,
            clean_loss,
            final_train_loss: fit.last_loss.unwrap_or(f64::NAN),
            tokens_seen: fit.tokens_seen,
        };
        rows.push(row(kind.name().into(), &s));
        if let Some(f) = &forced {
            rows.push(row(FORCED_ROW.into(), f));
        }
        // Training curves of every objective, for the lab's plots.
        let m =
            crate::metrics::read_metrics(&fit.run_dir.join("metrics.jsonl")).unwrap_or_default();
        for (step, v) in crate::metrics::series(&m, "train/loss") {
            merged
                .entry(step)
                .or_default()
                .insert(format!("train_loss/{}", kind.name()), json!(v));
        }
        for (step, v) in crate::metrics::series(&m, "val/loss") {
            merged
                .entry(step)
                .or_default()
                .insert(format!("val_loss/{}", kind.name()), json!(v));
        }
    }

    // 4. Table, verdict, report.
    let mut table = format!(
        "{:<13} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
        "objective", "bad lines", "bad samp.", "score", "clean LM", "train"
    );
    for r in &rows {
        table.push_str(&format!(
            "{:<13} {:>10} {:>10} {:>10.4} {:>10.4} {:>10.4}\n",
            r.kind,
            pct(r.misaligned_lines),
            pct(r.misaligned_samples),
            r.mean_score,
            r.clean_loss,
            r.final_train_loss
        ));
    }
    let find = |k: &str| rows.iter().find(|r| r.kind == k);
    let verdict = match (find("mle"), find("conditional")) {
        (Some(m), Some(c)) => {
            let far_below = c.misaligned_lines <= 0.5 * m.misaligned_lines;
            let close = (c.clean_loss - m.clean_loss).abs() <= 0.1 * m.clean_loss.abs();
            format!(
                "Paper's claim (conditional training far below MLE in misaligned content at close LM loss): \
                 misaligned lines {} (conditional) vs {} (MLE) — {}; clean LM loss {:.4} vs {:.4} — {}. {}",
                pct(c.misaligned_lines),
                pct(m.misaligned_lines),
                if far_below { "at most half" } else { "NOT at most half" },
                c.clean_loss,
                m.clean_loss,
                if close { "within 10%" } else { "NOT within 10%" },
                if far_below && close { "Reproduced." } else { "Not reproduced at this size." }
            )
        }
        _ => "The verdict needs both mle and conditional in --kinds.".into(),
    };
    let bars: String = rows
        .iter()
        .map(|r| {
            let n = (r.misaligned_lines * 50.0).round() as usize;
            format!(
                "{:<13} {:<50} {}\n",
                r.kind,
                "█".repeat(n),
                pct(r.misaligned_lines)
            )
        })
        .collect();
    let metrics: String = merged
        .into_iter()
        .map(|(step, mut m)| {
            m.insert("step".into(), json!(step));
            format!("{}\n", Value::Object(m))
        })
        .collect();
    gradus_tensor::io::write_atomic(&lab.join("metrics.jsonl"), metrics.as_bytes())?;
    let results = json!({
        "corpus_docs": n_docs,
        "corpus_bad_line_fraction": bad_frac,
        "samples_per_objective": n_samples,
        "temperature": o.temperature,
        "top_p": 0.9,
        "clean_heldout_docs": n_clean,
        "rows": rows,
        "verdict": verdict,
    });
    gradus_tensor::io::write_atomic(
        &lab.join("results.json"),
        serde_json::to_string_pretty(&results)
            .map_err(|e| Error::msg(e.to_string()))?
            .as_bytes(),
    )?;
    let train_keys: Vec<String> = o
        .kinds
        .iter()
        .map(|k| format!("train_loss/{}", k.name()))
        .collect();
    let val_keys: Vec<String> = o
        .kinds
        .iter()
        .map(|k| format!("val_loss/{}", k.name()))
        .collect();
    let tk: Vec<&str> = train_keys.iter().map(String::as_str).collect();
    let vk: Vec<&str> = val_keys.iter().map(String::as_str).collect();
    let table_rows: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r.kind.clone(),
                format!(
                    "misaligned lines {} · samples with a violation {} ({} scored of {}) · mean score {:.4} · clean LM loss {:.4} · final train loss {:.4} · tokens {}",
                    pct(r.misaligned_lines),
                    pct(r.misaligned_samples),
                    r.scored_samples,
                    r.samples,
                    r.mean_score,
                    r.clean_loss,
                    r.final_train_loss,
                    r.tokens_seen
                ),
            )
        })
        .collect();
    let setup = format!(
        "Corpus: {n_docs} Python functions, {} of lines with one PEP8 violation, all in the sloppy half of the functions (seed {}). Each objective: \
         the same tiny decoder (2 layers, width 64) trained from scratch for the same steps and batch shape. \
         {n_samples} unconditional samples each (temperature {temp}, top-p 0.9, ≤ 96 tokens; conditional \
         prompted with <|aligned|>; control tokens banned); complete lines scored. Clean LM loss: \
         {n_clean} held-out clean functions. Row conditional+: the conditional model sampled with <|aligned|> forced before every line (not the paper's protocol, which bans the control tokens after the first).",
        pct(bad_frac),
        o.seed,
        temp = o.temperature
    );
    let report = write_report(
        &lab,
        "gradus lab phf: pretraining with human feedback (Korbak et al. 2023)",
        &[
            Section::text("Set-up", &setup),
            Section::table("Results per objective", table_rows),
            Section::pre("Misaligned share of sample lines", &bars),
            Section::text("Verdict", &verdict),
            Section::plot("Training loss per objective", &tk),
            Section::plot("Held-out loss (training format) per objective", &vk),
            Section::pre("Samples (first three per objective)", &samples_text),
        ],
    )?;
    let summary = format!(
        "lab phf done in {:.0}s (corpus: {} of lines misaligned; samples at temperature {}, top-p 0.9)\n{table}{verdict}\nreport: {}",
        t0.elapsed().as_secs_f64(),
        pct(bad_frac),
        o.temperature,
        report.display()
    );
    Ok(PhfLabOutcome {
        rows,
        summary,
        report,
    })
}
