//! `gradus lab sas`: syntactic attention structure and sudden drops in the MLM loss (Chen,
//! Shwartz-Ziv, Cho, Leavitt & Saphra, arXiv 2309.07311, ICLR'24; RESEARCH §3.9).
//!
//! The paper's claims: (1) structure onset (the UAS of the best heads spikes) coincides with a
//! sudden drop of the MLM loss; (2) capability onset (BLiMP accuracy rising) follows; (3)
//! suppressing SAS briefly early on and then releasing it gives an early loss plateau and a later,
//! better breakthrough; (4) suppressing it for the whole run (BERT_SAS−) hurts.
//!
//! Three runs that differ only in the regulariser's schedule, all from the same seed and data:
//! - `baseline`: λ = 0;
//! - `sas-minus`: λ = `--sas-lambda` for the whole run;
//! - `sas-release`: λ until `--release-step`, then 0 (the paper's best model).
//!
//! Each is an ordinary run directory under `dir/sas/`; the lab writes `dir/sas/report.html`
//! (curves of all three) and `dir/sas/results.md` (where structure onset sits relative to the
//! loss drop, and what suppression and release did).
//!
//! λ's scale: the penalty R is a per-sentence sum over ~7 arcs of a maximum attention weight,
//! averaged over the batch (R ≈ 4–6 in an unregularised run). The default λ = 0.01 (λR ≈ 0.05
//! nats against an MLM loss of 1.5–4) suppresses mildly, as the paper's λ = 0.001 on its own
//! scale; with λ = 0.1 the attention on gold arcs is driven to ~0 and a released run did not
//! recover within 8000 steps (README, `gradus lab sas`).

use std::fmt::Write as _;
use std::path::PathBuf;

use gradus_tasks::depgrammar::DepGrammarConfig;
use gradus_tensor::{Error, Result};

use super::{
    train_run, SasModelSection, SasRunConfig, SasRunSection, SasRunSummary, SasTrainSection,
};
use crate::icl::emergence::LabSize;
use crate::icl::{figure, lab_start, write_lab_report};
use crate::report::{Section, Series};

/// Options of `gradus lab sas`.
#[derive(Clone, Debug)]
pub struct SasLabOptions {
    /// Runs go to `dir/sas/`.
    pub dir: PathBuf,
    pub size: LabSize,
    pub seed: u64,
    /// λ of the suppressed arms.
    pub sas_lambda: f64,
    /// Step at which `sas-release` stops suppressing (default: the size's).
    pub release_step: Option<u64>,
    pub steps: Option<u64>,
    pub resume: bool,
    pub overwrite: bool,
    pub progress: bool,
}

impl SasLabOptions {
    pub fn new(dir: PathBuf, size: LabSize) -> Self {
        Self {
            dir,
            size,
            seed: 0,
            sas_lambda: 0.01,
            release_step: None,
            steps: None,
            resume: false,
            overwrite: false,
            progress: false,
        }
    }

    /// Training steps per run.
    pub fn steps(&self) -> u64 {
        self.steps.unwrap_or(match self.size {
            LabSize::Smoke => 6,
            LabSize::Default => 4000,
            LabSize::Paper => 100_000,
        })
    }

    /// The release step of `sas-release` (default: an eighth of the run, inside the default
    /// size's first plateau).
    pub fn release(&self) -> u64 {
        self.release_step.unwrap_or((self.steps() / 8).max(1))
    }
}

/// The grammar of the lab: at the CPU sizes a small lexicon (8 nouns, 4 verbs, 4 adjectives, 2
/// classes), so that syntax is a large share of what is left to learn once the word statistics
/// are: with it the default model shows a loss plateau, then drops (measured: plateau at ~2.1
/// nats until step ~1250, a first drop to ~1.75, a second at ~2750 with agreement jumping from
/// chance to ~1.0); the paper size uses the full default lexicon.
pub fn lab_grammar(size: LabSize) -> DepGrammarConfig {
    if size == LabSize::Paper {
        DepGrammarConfig::default()
    } else {
        DepGrammarConfig {
            n_nouns: 8,
            n_verbs: 4,
            n_adjs: 4,
            n_classes: 2,
            ..Default::default()
        }
    }
}

/// The config of one arm (`name`, λ, until).
pub fn run_config(o: &SasLabOptions, name: &str, lambda: f64, until: Option<u64>) -> SasRunConfig {
    let (paper, smoke) = (o.size == LabSize::Paper, o.size == LabSize::Smoke);
    let model = if paper {
        // BERT-base's shape.
        SasModelSection {
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            initializer_range: 0.02,
        }
    } else if smoke {
        SasModelSection {
            hidden_size: 16,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            intermediate_size: 32,
            initializer_range: 0.02,
        }
    } else {
        SasModelSection::default()
    };
    let steps = o.steps();
    let train = SasTrainSection {
        steps,
        batch_size: if smoke {
            8
        } else if paper {
            256
        } else {
            32
        },
        // Chen et al.: lr 1e-4, warmup 10k steps (BERT-base); the miniature trains faster.
        lr: if paper { 1e-4 } else { 3e-3 },
        warmup_steps: match o.size {
            LabSize::Smoke => 2,
            LabSize::Default => 50,
            LabSize::Paper => 10_000,
        },
        weight_decay: 0.01,
        mask_prob: 0.15,
        sas_lambda: lambda,
        sas_until_step: until,
        eval_every: match o.size {
            LabSize::Smoke => 2,
            LabSize::Default => 50,
            LabSize::Paper => 1000,
        },
        eval_sentences: if smoke { 16 } else { 256 },
        checkpoint_every: match o.size {
            LabSize::Smoke => 3,
            LabSize::Default => 500,
            LabSize::Paper => 10_000,
        },
        keep_last: 1,
        progress: o.progress,
    };
    SasRunConfig {
        run: SasRunSection {
            dir: o.dir.join("sas"),
            name: name.into(),
            seed: o.seed,
        },
        data: lab_grammar(o.size),
        model,
        train,
    }
}

/// The lab's outcome.
pub struct SasLabOutcome {
    pub runs: Vec<SasRunSummary>,
    pub report: PathBuf,
    pub results: PathBuf,
    pub table: String,
}

fn opt_step(s: Option<u64>) -> String {
    s.map_or("none".into(), |s| s.to_string())
}

/// The curve `key` of a run as a plot series.
fn curve(s: &SasRunSummary, key: &str, name: &str) -> Series {
    crate::icl::curve_of(&s.curves, key, name)
}

/// First evaluated step at which `key` is at most (`below`) or at least `level`.
fn first_reaching(s: &SasRunSummary, key: &str, level: f64, below: bool) -> Option<u64> {
    let c = s.curves.iter().find(|(k, _)| k == key)?;
    c.1.iter()
        .find(|p| if below { p.1 <= level } else { p.1 >= level })
        .map(|p| p.0)
}

/// The values of `key` at the evaluation before `step` and at `step` (NaN when absent).
fn around(s: &SasRunSummary, key: &str, step: u64) -> (f64, f64) {
    let Some(c) = s.curves.iter().find(|(k, _)| k == key) else {
        return (f64::NAN, f64::NAN);
    };
    let i = c.1.iter().position(|p| p.0 == step);
    match i {
        Some(i) if i > 0 => (c.1[i - 1].1, c.1[i].1),
        Some(i) => (c.1[i].1, c.1[i].1),
        None => (f64::NAN, f64::NAN),
    }
}

/// Runs the three arms and writes the report and `results.md`.
pub fn run(o: &SasLabOptions) -> Result<SasLabOutcome> {
    if !(o.sas_lambda.is_finite() && o.sas_lambda != 0.0) {
        return Err(Error::config(
            "sas_lambda",
            format!("must be finite and non-zero, got {}", o.sas_lambda),
        ));
    }
    let release = o.release();
    if release >= o.steps() {
        return Err(Error::config(
            "release_step",
            format!("must be below the run's {} steps, got {release}", o.steps()),
        ));
    }
    // `--resume --steps N` extends the runs (the data stream, constant learning rate after warmup
    // and schedule make the extension the same as a longer run from the start).
    let start = lab_start(
        o.resume,
        o.overwrite,
        &crate::icl::explicit_fields(o.steps, &[]),
    )?;
    let arms = [
        ("baseline", 0.0, None),
        ("sas-minus", o.sas_lambda, None),
        ("sas-release", o.sas_lambda, Some(release)),
    ];
    let mut runs = Vec::new();
    for (name, lambda, until) in arms {
        let cfg = run_config(o, name, lambda, until);
        if o.progress {
            eprintln!("sas: run {name} ({} steps)", cfg.train.steps);
        }
        runs.push(train_run(&cfg, &start)?);
    }
    let mut table = String::from(
        "run          loss drop  SAS onset  BLiMP onset  final loss  final SAS  soft SAS  BLiMP simple/attractor\n",
    );
    for s in &runs {
        let e = &s.final_eval;
        let _ = writeln!(
            table,
            "{:<12} {:<10} {:<10} {:<12} {:<11.4} {:<10.3} {:<9.3} {:.3}/{:.3}",
            s.name,
            opt_step(s.loss_drop),
            opt_step(s.structure_onset),
            opt_step(s.capability_onset),
            e.mlm_loss,
            e.sas_all,
            e.soft_all,
            e.blimp_simple,
            e.blimp_attractor
        );
    }
    let lab_dir = o.dir.join("sas");
    let results = lab_dir.join("results.md");
    let md = results_md(o, &runs, &table);
    gradus_tensor::io::write_atomic(&results, md.as_bytes())?;

    let fig = |key: &str, title: &str, y: &str| {
        let series: Vec<Series> = runs.iter().map(|s| curve(s, key, &s.name)).collect();
        figure(title, &series, "step", y)
    };
    let figs = vec![
        fig("eval/mlm_loss", "Held-out MLM loss", "loss (nats)"),
        fig("sas/all", "SAS: best head's UAS (argmax), all arcs", "UAS"),
        fig(
            "sas_soft/all",
            "Soft SAS: attention on the gold parent",
            "weight",
        ),
        fig(
            "blimp/attractor",
            "Minimal pairs: agreement across an attractor",
            "accuracy",
        ),
        fig(
            "blimp/simple",
            "Minimal pairs: agreement, no attractor",
            "accuracy",
        ),
        fig("train/sas_penalty", "SAS penalty R (per sentence)", "R"),
    ];
    let sections = vec![
        Section::text(
            "What this shows",
            "Chen et al. (2024): MLMs acquire syntactic attention structure (heads attending along \
             dependency arcs) abruptly, at the same time as a sudden drop in the loss; agreement \
             ability follows. Suppressing SAS early and then releasing it gives a plateau and a \
             later breakthrough; suppressing it throughout hurts. Three runs differ only in the \
             SAS regulariser's schedule.",
        ),
        Section::pre("Table", &table),
        Section::pre("Results", &md),
    ];
    let report = write_lab_report(&lab_dir, "Syntactic attention structure", &sections, &figs)?;
    Ok(SasLabOutcome {
        runs,
        report,
        results,
        table,
    })
}

/// `results.md`: the table and what it says about the paper's claims.
pub fn results_md(o: &SasLabOptions, runs: &[SasRunSummary], table: &str) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# gradus lab sas\n");
    let _ = writeln!(
        md,
        "Size `{:?}`, seed {}, {} steps per run, λ = {}, release at step {}.\n",
        o.size,
        o.seed,
        o.steps(),
        o.sas_lambda,
        o.release()
    );
    let _ = writeln!(
        md,
        "Onsets are the step ending the evaluation interval of the steepest change: loss drop = \
         steepest fall of the held-out MLM loss (the first interval, the fall to unigram \
         statistics, excluded); SAS onset = steepest rise of the best head's UAS; BLiMP onset = \
         first evaluation with agreement-across-attractor accuracy ≥ 0.75 (chance 0.5).\n"
    );
    let _ = writeln!(md, "```\n{table}```\n");
    let find = |n: &str| runs.iter().find(|r| r.name == n);
    if let Some(b) = find("baseline") {
        let gap = match (b.structure_onset, b.loss_drop) {
            (Some(s), Some(l)) => format!(
                "SAS onset at step {s}, loss drop at step {l}: {} ({} steps apart)",
                if s == l {
                    "the same evaluation interval".to_string()
                } else if s < l {
                    "structure first".to_string()
                } else {
                    "the loss first".to_string()
                },
                s.abs_diff(l)
            ),
            _ => "no SAS onset or no loss drop found".into(),
        };
        let _ = writeln!(md, "- **Baseline**: {gap}.");
        if let Some(s) = b.structure_onset {
            let (u0, u1) = around(b, "sas/all", s);
            let (l0, l1) = around(b, "eval/mlm_loss", s);
            let _ = writeln!(
                md,
                "  Over the SAS-onset interval SAS went {u0:.3} → {u1:.3} and the held-out loss {l0:.4} → {l1:.4}."
            );
        }
        let cap = match (b.capability_onset, b.structure_onset) {
            (Some(c), Some(s)) => {
                let (l0, l1) = around(b, "eval/mlm_loss", c);
                format!(
                    "BLiMP (attractor) onset at step {c}, {} the SAS onset; the held-out loss \
                     over that interval: {l0:.4} → {l1:.4}",
                    if c >= s { "after or with" } else { "before" }
                )
            }
            _ => "agreement never reached 0.75 (no BLiMP onset)".into(),
        };
        let _ = writeln!(md, "- **Capability**: {cap}.");
        if let Some(m) = find("sas-minus") {
            let _ = writeln!(
                md,
                "- **SAS− (suppressed throughout)**: final loss {:.4} vs baseline {:.4}; final SAS {:.3} vs {:.3}; BLiMP attractor {:.3} vs {:.3}.",
                m.final_eval.mlm_loss,
                b.final_eval.mlm_loss,
                m.final_eval.sas_all,
                b.final_eval.sas_all,
                m.final_eval.blimp_attractor,
                b.final_eval.blimp_attractor
            );
        }
        if let Some(r) = find("sas-release") {
            let lvl = b.final_eval.mlm_loss + 0.05;
            let _ = writeln!(
                md,
                "- **Suppress then release (at step {})**: loss drop at step {} (baseline {}); final loss {:.4} vs baseline {:.4}; final SAS {:.3}; first step within 0.05 nats of the baseline's final loss: {} (baseline {}).",
                o.release(),
                opt_step(r.loss_drop),
                opt_step(b.loss_drop),
                r.final_eval.mlm_loss,
                b.final_eval.mlm_loss,
                r.final_eval.sas_all,
                opt_step(first_reaching(r, "eval/mlm_loss", lvl, true)),
                opt_step(first_reaching(b, "eval/mlm_loss", lvl, true)),
            );
        }
    }
    md
}
