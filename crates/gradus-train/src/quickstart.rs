//! `gradus quickstart`: the whole loop on built-in data, no download, a few minutes on 2 cores.
//!
//! 1. Generate the synthetic corpus (arithmetic, programs of gradus' tiny language with their
//!    outputs, templated text about an invented world) and train a byte-level BPE tokenizer on it,
//!    digits split (each digit its own token, as Llama's tokenizers do: numbers are then spelled the
//!    same way everywhere, which small models need to learn arithmetic).
//! 2. Pretrain a tiny Llama-style decoder from scratch on it.
//! 3. Measure the instruction task (held-out split, never seen in pretraining or SFT) with greedy
//!    decoding: accuracy per kind with n and a 95% Wilson interval, and samples.
//! 4. SFT the pretrained model on the instruction task's train split (loss on answers only).
//! 5. Measure again; log the accuracies and samples to the SFT run's metrics.jsonl / TensorBoard
//!    file, and write `report.html` with both runs' curves, samples and accuracies.
//!
//! The task ([`task`]) and the corpus are chosen so that a model this small learns them within the
//! time: numbers of at most two digits, straight-line programs of two statements on one-digit
//! literals, and facts of the invented world; the corpus leans towards arithmetic and programs.

use std::path::PathBuf;

use gradus_data::tokenizer::Tokenizer;
use gradus_model::decoder::Decoder;
use gradus_model::generate::{generate, SamplingConfig};
use gradus_model::hf::load_decoder;
use gradus_model::DecoderConfig;
use gradus_tasks::{
    instructions_with, is_correct, ArithConfig, ArithOp, CorpusStyle, Instruction, Mix,
    ProgramConfig, Split, TaskConfig, TaskMix,
};
use gradus_tensor::{Device, Error, Result};

use crate::recipe::{ModelSection, RecipeConfig};
use crate::report::Section;
use crate::schedule::Schedule;
use crate::sft::synthetic_prompt;
use crate::trainer::write_run_report;

/// The scale of a quickstart run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuickstartSize {
    /// What `gradus quickstart` runs: ≥ 60% held-out accuracy after SFT in under 3 minutes on 2 cores.
    Full,
    /// A smaller model and fewer steps that still learn the task clearly (the seeded test guard).
    Reduced,
    /// A few steps of each stage: checks the pipeline, learns nothing (`--fast`).
    Smoke,
}

#[derive(Clone, Debug)]
pub struct QuickstartOptions {
    pub dir: PathBuf,
    /// How big a run: the real one, a reduced one that still learns (the test guard), or a smoke run.
    pub size: QuickstartSize,
    pub seed: u64,
    pub progress: bool,
    /// Move earlier quickstart runs in `dir` aside instead of refusing to start (see
    /// [`crate::rundir`]).
    pub overwrite: bool,
}

impl QuickstartOptions {
    /// How the runs start: new, or over earlier ones moved aside.
    pub fn start(&self) -> crate::rundir::Start {
        if self.overwrite {
            crate::rundir::Start::Overwrite
        } else {
            crate::rundir::Start::New
        }
    }
}

#[derive(Clone, Debug)]
pub struct QuickstartOutcome {
    pub pretrain_dir: PathBuf,
    pub sft_dir: PathBuf,
    pub accuracy_before: f64,
    pub accuracy_after: f64,
    /// Per-kind accuracies before and after SFT (the last entry is "all").
    pub kinds_before: Vec<KindAccuracy>,
    pub kinds_after: Vec<KindAccuracy>,
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
pub fn task_accuracy(
    model: &Decoder,
    tok: &Tokenizer,
    items: &[Instruction],
    max_new_tokens: usize,
) -> Result<(f64, Vec<Sample>)> {
    let eos: Vec<u32> = tok.eos_id().into_iter().collect();
    let cfg = SamplingConfig {
        max_new_tokens,
        ..Default::default()
    };
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

/// Wilson score interval for `k` successes in `n` trials at 95% (z = 1.96): the interval for a
/// proportion that stays inside [0, 1] and is sensible for small `n` (Wilson 1927).
pub fn wilson_95(k: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let z = 1.96f64;
    let (k, n) = (k as f64, n as f64);
    let p = k / n;
    let denom = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denom;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// Accuracy of one kind of problem (or of all: `kind = "all"`).
#[derive(Clone, Debug, PartialEq)]
pub struct KindAccuracy {
    pub kind: String,
    pub correct: usize,
    pub n: usize,
    /// 95% Wilson interval of the accuracy.
    pub interval: (f64, f64),
}

impl KindAccuracy {
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.n.max(1) as f64
    }
}

/// Per-kind accuracies of `samples` (graded answers to `items`, in order), then the total as "all".
pub fn breakdown(items: &[Instruction], samples: &[Sample]) -> Vec<KindAccuracy> {
    let mut m: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    for (s, it) in samples.iter().zip(items) {
        let e = m
            .entry(format!("{:?}", it.kind).to_lowercase())
            .or_default();
        e.0 += s.correct as usize;
        e.1 += 1;
    }
    let total = (m.values().map(|v| v.0).sum(), m.values().map(|v| v.1).sum());
    m.into_iter()
        .chain(std::iter::once(("all".to_string(), total)))
        .map(|(kind, (correct, n))| KindAccuracy {
            kind,
            correct,
            n,
            interval: wilson_95(correct, n),
        })
        .collect()
}

/// `"arith 45/67 = 67.2% [55.3, 77.2]"` lines of a breakdown.
fn breakdown_lines(b: &[KindAccuracy]) -> Vec<(String, String)> {
    b.iter()
        .map(|k| {
            (
                k.kind.clone(),
                format!(
                    "{}/{} = {:.1}%  (95% CI {:.1}–{:.1}%)",
                    k.correct,
                    k.n,
                    100.0 * k.accuracy(),
                    100.0 * k.interval.0,
                    100.0 * k.interval.1
                ),
            )
        })
        .collect()
}

/// The instruction task quickstart teaches and measures: arithmetic on numbers up to two digits
/// (products by one digit), straight-line programs of two statements on one-digit literals, and
/// questions about the invented world's facts, in equal parts. Held-out problems are never seen in
/// pretraining or SFT (the split is by a hash of the prompt, see `gradus_tasks::instruct`).
pub fn task() -> TaskConfig {
    TaskConfig {
        mix: TaskMix {
            arith: 1.0,
            program: 1.0,
            fact: 1.0,
        },
        arith: ArithConfig {
            min_digits: 1,
            max_digits: 2,
            mul_max_digits: 1,
            ops: vec![ArithOp::Add, ArithOp::Sub, ArithOp::Mul],
        },
        program: ProgramConfig {
            max_stmts: 2,
            max_expr_depth: 1,
            max_literal: 9,
            loops: false,
            branches: false,
            max_loop_iters: 1,
            max_abs_value: 99,
            single_print: true,
        },
    }
}

/// The sizes of one quickstart scale.
struct Plan {
    hidden: usize,
    layers: usize,
    pre_docs: usize,
    pre_steps: u64,
    sft_examples: usize,
    sft_steps: u64,
    warmup: u64,
    n_eval: usize,
}

fn plan(size: QuickstartSize) -> Plan {
    match size {
        QuickstartSize::Full => Plan {
            hidden: 128,
            layers: 4,
            pre_docs: 20000,
            pre_steps: 500,
            sft_examples: 8000,
            sft_steps: 300,
            warmup: 30,
            n_eval: 200,
        },
        QuickstartSize::Reduced => Plan {
            hidden: 64,
            layers: 2,
            pre_docs: 6000,
            pre_steps: 200,
            sft_examples: 3000,
            sft_steps: 150,
            warmup: 20,
            n_eval: 120,
        },
        QuickstartSize::Smoke => Plan {
            hidden: 128,
            layers: 4,
            pre_docs: 600,
            pre_steps: 6,
            sft_examples: 200,
            sft_steps: 4,
            warmup: 1,
            n_eval: 16,
        },
    }
}

/// The two recipe configs quickstart runs.
pub fn configs(o: &QuickstartOptions) -> (RecipeConfig, RecipeConfig) {
    let p = plan(o.size);
    let model = DecoderConfig {
        hidden_size: p.hidden,
        intermediate_size: 3 * p.hidden,
        num_hidden_layers: p.layers,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        max_position_embeddings: 256,
        tie_word_embeddings: true,
        ..Default::default()
    };
    let task = task();
    let mut pre = RecipeConfig::default();
    pre.run.dir = o.dir.clone();
    pre.run.name = "quickstart-pretrain".into();
    pre.run.seed = o.seed;
    pre.model = ModelSection {
        init_from: None,
        config: model,
        ..Default::default()
    };
    pre.tokenizer.train_vocab_size = 384;
    pre.tokenizer.split_digits = true;
    pre.data.corpus = CorpusStyle {
        mix: Mix {
            arith: 4.0,
            program: 2.0,
            text: 1.5,
        },
        fact_share: 0.4,
        arith: task.arith.clone(),
        program: ProgramConfig {
            single_print: false,
            ..task.program.clone()
        },
    };
    pre.data.task = task;
    pre.data.synthetic_examples = p.pre_docs;
    pre.data.seq_len = 128;
    pre.data.val_fraction = 0.02;
    pre.train.steps = p.pre_steps;
    pre.train.eval_every = 100;
    pre.train.batch_size = 16;
    pre.train.lr = 3e-3;
    pre.train.weight_norms_every = (p.pre_steps / 20).max(1);
    pre.train.progress = o.progress;
    pre.optimizer.weight_decay = 0.1;
    pre.optimizer.betas = (0.9, 0.95);
    pre.schedule = Schedule::Cosine {
        warmup_steps: p.warmup,
        min_lr_ratio: 0.1,
    };

    let mut sft = pre.clone();
    sft.run.name = "quickstart-sft".into();
    sft.model.init_from = Some(
        o.dir
            .join("quickstart-pretrain/checkpoints")
            .join(format!("step-{}", pre.train.steps)),
    );
    sft.data.synthetic_examples = p.sft_examples;
    sft.data.completion_only = true;
    sft.data.val_fraction = 0.02;
    sft.train.steps = p.sft_steps;
    sft.train.eval_every = 100;
    sft.train.lr = 1e-3;
    sft.schedule = Schedule::Cosine {
        warmup_steps: (p.warmup * 2 / 3).max(1),
        min_lr_ratio: 0.1,
    };
    (pre, sft)
}

pub fn run(o: &QuickstartOptions) -> Result<QuickstartOutcome> {
    let t0 = std::time::Instant::now();
    let (pre, sft) = configs(o);
    let n_eval = plan(o.size).n_eval;
    let eval_items = instructions_with(n_eval, o.seed + 1, Split::Eval, &sft.data.task);

    // 1-2. Pretrain from scratch on the synthetic corpus (the tokenizer is trained inside).
    eprintln!("[1/4] pretraining a tiny decoder from scratch on the built-in corpus…");
    let s1 = crate::pretrain::run(&pre, o.start())?;
    let ck = s1
        .last_checkpoint
        .clone()
        .ok_or_else(|| Error::msg("pretraining wrote no checkpoint"))?;

    // 3. The task before SFT.
    eprintln!("[2/4] evaluating the instruction task before SFT…");
    let tok = Tokenizer::from_dir(&ck)?;
    let base = load_decoder(&ck, &Device::Cpu)?;
    let (acc0, before) = task_accuracy(&base, &tok, &eval_items, 12)?;

    // 4. SFT.
    eprintln!("[3/4] supervised fine-tuning on the instruction task…");
    let s2 = crate::sft::run(&sft, o.start())?;
    let ck2 = s2
        .last_checkpoint
        .clone()
        .ok_or_else(|| Error::msg("SFT wrote no checkpoint"))?;

    // 5. The task after SFT, and the report.
    eprintln!("[4/4] evaluating after SFT and writing the report…");
    let tuned = load_decoder(&ck2, &Device::Cpu)?;
    let (acc1, after) = task_accuracy(&tuned, &tok, &eval_items, 12)?;
    let kinds_before = breakdown(&eval_items, &before);
    let kinds_after = breakdown(&eval_items, &after);
    // The task's results in the SFT run's metrics.jsonl and TensorBoard file, at its last step.
    let mut sink = crate::metrics::MetricsSink::open_path(
        &s2.run_dir.join(crate::metrics::METRICS_FILE),
        Some(s2.steps),
    )?;
    let mut row = serde_json::Map::new();
    for (when, kinds) in [("before_sft", &kinds_before), ("after_sft", &kinds_after)] {
        for k in kinds.iter() {
            row.insert(
                format!("task/{when}/{}", k.kind),
                serde_json::json!(k.accuracy()),
            );
        }
    }
    row.insert(
        "samples/before_sft".into(),
        serde_json::json!(show(&before, 8)),
    );
    row.insert(
        "samples/after_sft".into(),
        serde_json::json!(show(&after, 8)),
    );
    sink.log_values(s2.steps, &row)?;
    drop(sink);
    let mut acc_rows = vec![(
        "held-out problems".to_string(),
        eval_items.len().to_string(),
    )];
    acc_rows.extend(
        breakdown_lines(&kinds_before)
            .into_iter()
            .map(|(k, v)| (format!("before SFT, {k}"), v)),
    );
    acc_rows.extend(
        breakdown_lines(&kinds_after)
            .into_iter()
            .map(|(k, v)| (format!("after SFT, {k}"), v)),
    );
    let pre_rows =
        crate::metrics::read_metrics(&s1.run_dir.join("metrics.jsonl")).unwrap_or_default();
    let extra = vec![
        Section::table(
            "Instruction task (held-out split, greedy decoding)",
            acc_rows,
        ),
        Section::pre("Samples before SFT", &show(&before, 8)),
        Section::pre("Samples after SFT", &show(&after, 8)),
        Section::table(
            "Pretraining run",
            vec![
                ("run directory".into(), s1.run_dir.display().to_string()),
                ("steps".into(), s1.steps.to_string()),
                (
                    "loss first → last".into(),
                    format!(
                        "{:.4} → {:.4}",
                        s1.first_loss.unwrap_or(f64::NAN),
                        s1.last_loss.unwrap_or(f64::NAN)
                    ),
                ),
                ("tokens seen".into(), s1.tokens_seen.to_string()),
            ],
        ),
        Section::final_metrics("Pretraining final metrics", &pre_rows),
    ];
    let report = write_run_report(
        &s2.run_dir,
        "gradus quickstart: pretrain → SFT",
        &sft,
        &extra,
    )?;
    write_run_report(&s1.run_dir, "gradus quickstart: pretraining", &pre, &[])?;
    let table: String = kinds_before
        .iter()
        .zip(&kinds_after)
        .map(|(b, a)| {
            format!(
                "    {:<8} n={:<4} {:>5.1}% [{:>5.1}, {:>5.1}]  →  {:>5.1}% [{:>5.1}, {:>5.1}]\n",
                a.kind,
                a.n,
                100.0 * b.accuracy(),
                100.0 * b.interval.0,
                100.0 * b.interval.1,
                100.0 * a.accuracy(),
                100.0 * a.interval.0,
                100.0 * a.interval.1
            )
        })
        .collect();
    let summary = format!(
        "quickstart done in {:.0}s\n  pretrain: {} steps, loss {:.3} → {:.3}  ({})\n  sft:      {} steps, loss {:.3} → {:.3}  ({})\n  instruction task accuracy (held-out, greedy): {:.1}% before SFT → {:.1}% after\n  per kind, before SFT → after SFT (95% Wilson interval):\n{}\nsamples after SFT:\n{}\nreport: {}",
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
        table,
        show(&after, 6),
        report.display()
    );
    Ok(QuickstartOutcome {
        pretrain_dir: s1.run_dir,
        sft_dir: s2.run_dir,
        accuracy_before: acc0,
        accuracy_after: acc1,
        kinds_before,
        kinds_after,
        report,
        summary,
    })
}
