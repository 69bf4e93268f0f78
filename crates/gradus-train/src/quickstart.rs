//! `gradus quickstart`: the whole loop on built-in data, no download, a few minutes on 2 cores.
//!
//! 1. Generate the synthetic corpus (arithmetic, programs of gradus' tiny language with their
//!    outputs, templated text) and train a byte-level BPE tokenizer on it.
//! 2. Pretrain a tiny Llama-style decoder from scratch on it.
//! 3. Measure the instruction task (held-out split) with greedy decoding: accuracy and samples.
//! 4. SFT the pretrained model on the instruction task's train split (loss on answers only).
//! 5. Measure again, and write `report.html` with both runs' curves, samples and accuracies.

use std::path::PathBuf;

use gradus_tasks::{instructions, is_correct, Instruction, Split};
use gradus_data::tokenizer::Tokenizer;
use gradus_model::decoder::Decoder;
use gradus_model::generate::{generate, SamplingConfig};
use gradus_model::hf::load_decoder;
use gradus_model::DecoderConfig;
use gradus_tensor::{Device, Error, Result};

use crate::recipe::{ModelSection, RecipeConfig};
use crate::report::Section;
use crate::schedule::Schedule;
use crate::sft::synthetic_prompt;
use crate::trainer::write_run_report;

#[derive(Clone, Debug)]
pub struct QuickstartOptions {
    pub dir: PathBuf,
    /// A much shorter run, for smoke tests.
    pub fast: bool,
    pub seed: u64,
    pub progress: bool,
}

#[derive(Clone, Debug)]
pub struct QuickstartOutcome {
    pub pretrain_dir: PathBuf,
    pub sft_dir: PathBuf,
    pub accuracy_before: f64,
    pub accuracy_after: f64,
    pub report: PathBuf,
    /// What the CLI prints.
    pub summary: String,
}

/// One evaluated prompt.
#[derive(Clone, Debug)]
pub struct Sample {
    pub prompt: String,
    pub completion: String,
    pub expected: String,
    pub correct: bool,
}

/// Greedy-decodes each instruction's prompt and checks the answer. Returns accuracy and samples.
pub fn task_accuracy(model: &Decoder, tok: &Tokenizer, items: &[Instruction], max_new_tokens: usize) -> Result<(f64, Vec<Sample>)> {
    let eos: Vec<u32> = tok.eos_id().into_iter().collect();
    let cfg = SamplingConfig { max_new_tokens, ..Default::default() };
    let mut samples = Vec::with_capacity(items.len());
    for chunk in items.chunks(32) {
        let prompts: Vec<Vec<u32>> = chunk
            .iter()
            .map(|it| {
                let mut ids: Vec<u32> = tok.bos_id().into_iter().collect();
                ids.extend(tok.encode(&synthetic_prompt(&it.prompt), false)?);
                Ok(ids)
            })
            .collect::<Result<_>>()?;
        let outs = generate(model, &prompts, &cfg, &eos, &mut |_, _| false)?;
        for (it, o) in chunk.iter().zip(outs) {
            let completion = tok.decode(&o.tokens, true)?;
            samples.push(Sample {
                correct: is_correct(it, &completion),
                prompt: it.prompt.clone(),
                completion,
                expected: it.answer.clone(),
            });
        }
    }
    let acc = samples.iter().filter(|s| s.correct).count() as f64 / samples.len().max(1) as f64;
    Ok((acc, samples))
}

fn show(samples: &[Sample], n: usize) -> String {
    samples
        .iter()
        .take(n)
        .map(|s| {
            format!(
                "{} {}\n   → {:?} (expected {:?})\n",
                if s.correct { "✓" } else { "✗" },
                s.prompt.replace('\n', "\n   "),
                s.completion.trim_end(),
                s.expected
            )
        })
        .collect()
}

/// The two recipe configs quickstart runs (also shipped as configs/quickstart/*.toml).
pub fn configs(o: &QuickstartOptions) -> (RecipeConfig, RecipeConfig) {
    let model = DecoderConfig {
        hidden_size: 128,
        intermediate_size: 384,
        num_hidden_layers: 4,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        max_position_embeddings: 256,
        tie_word_embeddings: true,
        ..Default::default()
    };
    let mut pre = RecipeConfig::default();
    pre.run.dir = o.dir.clone();
    pre.run.name = "quickstart-pretrain".into();
    pre.run.seed = o.seed;
    pre.model = ModelSection { init_from: None, config: model };
    pre.tokenizer.train_vocab_size = 384;
    pre.data.synthetic_examples = if o.fast { 600 } else { 20000 };
    pre.data.seq_len = 128;
    pre.train.steps = if o.fast { 6 } else { 500 };
    pre.train.batch_size = 16;
    pre.train.lr = 3e-3;
    pre.train.weight_norms_every = if o.fast { 2 } else { 25 };
    pre.train.progress = o.progress;
    pre.optimizer.weight_decay = 0.1;
    pre.optimizer.betas = (0.9, 0.95);
    pre.schedule = Schedule::Cosine { warmup_steps: if o.fast { 1 } else { 30 }, min_lr_ratio: 0.1 };

    let mut sft = pre.clone();
    sft.run.name = "quickstart-sft".into();
    sft.model.init_from = Some(o.dir.join("quickstart-pretrain/checkpoints").join(format!("step-{}", pre.train.steps)));
    sft.data.synthetic_examples = if o.fast { 200 } else { 8000 };
    sft.data.completion_only = true;
    sft.train.steps = if o.fast { 4 } else { 300 };
    sft.train.lr = 1e-3;
    sft.schedule = Schedule::Cosine { warmup_steps: if o.fast { 1 } else { 20 }, min_lr_ratio: 0.1 };
    (pre, sft)
}

pub fn run(o: &QuickstartOptions) -> Result<QuickstartOutcome> {
    let t0 = std::time::Instant::now();
    let (pre, sft) = configs(o);
    let n_eval = if o.fast { 16 } else { 200 };
    let eval_items = instructions(n_eval, o.seed + 1, Split::Eval);

    // 1-2. Pretrain from scratch on the synthetic corpus (the tokenizer is trained inside).
    eprintln!("[1/4] pretraining a tiny decoder from scratch on the built-in corpus…");
    let s1 = crate::pretrain::run(&pre, false)?;
    let ck = s1.last_checkpoint.clone().ok_or_else(|| Error::msg("pretraining wrote no checkpoint"))?;

    // 3. The task before SFT.
    eprintln!("[2/4] evaluating the instruction task before SFT…");
    let tok = Tokenizer::from_dir(&ck)?;
    let base = load_decoder(&ck, &Device::Cpu)?;
    let (acc0, before) = task_accuracy(&base, &tok, &eval_items, 12)?;

    // 4. SFT.
    eprintln!("[3/4] supervised fine-tuning on the instruction task…");
    let s2 = crate::sft::run(&sft, false)?;
    let ck2 = s2.last_checkpoint.clone().ok_or_else(|| Error::msg("SFT wrote no checkpoint"))?;

    // 5. The task after SFT, and the report.
    eprintln!("[4/4] evaluating after SFT and writing the report…");
    let tuned = load_decoder(&ck2, &Device::Cpu)?;
    let (acc1, after) = task_accuracy(&tuned, &tok, &eval_items, 12)?;
    let by_kind = |samples: &[Sample]| -> Vec<(String, String)> {
        let mut m: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
        for (s, it) in samples.iter().zip(&eval_items) {
            let e = m.entry(format!("{:?}", it.kind)).or_default();
            e.0 += s.correct as usize;
            e.1 += 1;
        }
        m.into_iter().map(|(k, (c, n))| (k, format!("{c}/{n}"))).collect()
    };
    let mut acc_rows = vec![
        ("accuracy before SFT".to_string(), format!("{:.1}%", 100.0 * acc0)),
        ("accuracy after SFT".to_string(), format!("{:.1}%", 100.0 * acc1)),
        ("held-out problems".to_string(), eval_items.len().to_string()),
    ];
    acc_rows.extend(by_kind(&after).into_iter().map(|(k, v)| (format!("after SFT, {k}"), v)));
    let pre_rows = crate::metrics::read_metrics(&s1.run_dir.join("metrics.jsonl")).unwrap_or_default();
    let extra = vec![
        Section::table("Instruction task (held-out split, greedy decoding)", acc_rows),
        Section::pre("Samples before SFT", &show(&before, 8)),
        Section::pre("Samples after SFT", &show(&after, 8)),
        Section::table(
            "Pretraining run",
            vec![
                ("run directory".into(), s1.run_dir.display().to_string()),
                ("steps".into(), s1.steps.to_string()),
                ("loss first → last".into(), format!("{:.4} → {:.4}", s1.first_loss.unwrap_or(f64::NAN), s1.last_loss.unwrap_or(f64::NAN))),
                ("tokens seen".into(), s1.tokens_seen.to_string()),
            ],
        ),
        Section::final_metrics("Pretraining final metrics", &pre_rows),
    ];
    let report = write_run_report(&s2.run_dir, "gradus quickstart: pretrain → SFT", &sft, &extra)?;
    write_run_report(&s1.run_dir, "gradus quickstart: pretraining", &pre, &[])?;
    let summary = format!(
        "quickstart done in {:.0}s\n  pretrain: {} steps, loss {:.3} → {:.3}  ({})\n  sft:      {} steps, loss {:.3} → {:.3}  ({})\n  instruction task accuracy (held-out, greedy): {:.1}% before SFT → {:.1}% after\n\nsamples after SFT:\n{}\nreport: {}",
        t0.elapsed().as_secs_f64(),
        s1.steps,
        s1.first_loss.unwrap_or(f64::NAN),
        s1.last_loss.unwrap_or(f64::NAN),
        s1.run_dir.display(),
        s2.steps,
        s2.first_loss.unwrap_or(f64::NAN),
        s2.last_loss.unwrap_or(f64::NAN),
        s2.run_dir.display(),
        100.0 * acc0,
        100.0 * acc1,
        show(&after, 6),
        report.display()
    );
    Ok(QuickstartOutcome {
        pretrain_dir: s1.run_dir,
        sft_dir: s2.run_dir,
        accuracy_before: acc0,
        accuracy_after: acc1,
        report,
        summary,
    })
}
