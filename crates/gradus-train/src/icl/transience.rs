//! `gradus lab icl-transience`: in-context learning can be transient (Singh, Chan, Moskovitz,
//! Grant, Saxe, Hill 2023, "The Transient Nature of Emergent In-Context Learning in
//! Transformers", NeurIPS'23, arXiv 2311.08360).
//!
//! The finding: trained long enough on bursty sequences whose classes keep fixed labels (so both
//! strategies solve the training task), ICL accuracy rises, then fades towards chance while IWL
//! rises and the training loss keeps falling; L2 regularisation makes ICL persist (§5).
//!
//! The lab trains two runs that differ only in the L2 penalty λ (0 and `--l2`, default 1e-4 per
//! step-gradient λθ): Singh's layout of N = 8 context pairs with the query's class ×3 and a
//! distractor ×3 (B = 3), fixed labels, Gaussian exemplars instead of Omniglot (RESEARCH §3.2's
//! miniature), and reports each run's ICL peak, final ICL, final IWL and their curves.

use std::path::PathBuf;

use gradus_tasks::bursty::{BurstyConfig, ItemKind, LabelMode};
use gradus_tensor::Result;

use super::emergence::LabSize;
use super::{
    curve, figure, lab_start, pct, train_run, write_lab_report, IclModelSection, IclRunConfig,
    IclRunSection, IclRunSummary, IclTrainSection,
};
use crate::report::{Section, Series};

/// Options of `gradus lab icl-transience`.
#[derive(Clone, Debug)]
pub struct TransienceOptions {
    /// Runs go to `dir/icl-transience/`.
    pub dir: PathBuf,
    pub size: LabSize,
    pub seed: u64,
    /// λ of the regularised run.
    pub l2: f64,
    pub steps: Option<u64>,
    pub resume: bool,
    pub overwrite: bool,
    pub progress: bool,
}

impl TransienceOptions {
    pub fn new(dir: PathBuf, size: LabSize) -> Self {
        Self {
            dir,
            size,
            seed: 0,
            l2: 1e-4,
            steps: None,
            resume: false,
            overwrite: false,
            progress: false,
        }
    }
}

/// The run config with L2 penalty `l2`.
pub fn run_config(o: &TransienceOptions, l2: f64) -> IclRunConfig {
    let (paper, smoke) = (o.size == LabSize::Paper, o.size == LabSize::Smoke);
    let data = BurstyConfig {
        // Fixed labels, one label per class (as Omniglot classes in Chan/Singh), few enough
        // classes that memorising them is possible within the run.
        n_classes: if paper {
            1600
        } else if smoke {
            16
        } else {
            64
        },
        n_labels: if paper {
            1600
        } else if smoke {
            16
        } else {
            64
        },
        n_novel_classes: 128,
        item: ItemKind::Gaussian { dim: 63 },
        zipf_alpha: 0.0,
        eps: 0.1,
        burstiness: 3,
        p_bursty: 1.0,
        context: 8,
        labels: LabelMode::Fixed,
        eval_burstiness: None,
    };
    let model = if paper {
        // Singh: 12 layers, d_model 64, 8 heads, MLP ratio 4.
        IclModelSection::new(64, 12, 8, 256)
    } else if smoke {
        IclModelSection::new(16, 2, 2, 32)
    } else {
        IclModelSection::new(64, 2, 4, 256)
    };
    let steps = o.steps.unwrap_or(match o.size {
        LabSize::Smoke => 6,
        LabSize::Default => 12_000,
        LabSize::Paper => 1_000_000,
    });
    let train = IclTrainSection {
        steps,
        batch_size: if smoke { 8 } else { 32 },
        // Singh: Adam, lr 3e-4, batch 32.
        lr: if paper { 3e-4 } else { 1e-3 },
        weight_decay: 0.0,
        l2,
        eval_every: match o.size {
            LabSize::Smoke => 3,
            LabSize::Default => 250,
            LabSize::Paper => 10_000,
        },
        eval_sequences: if smoke { 16 } else { 256 },
        checkpoint_every: if smoke { 3 } else { 2000 },
        keep_last: 1,
        progress: o.progress,
    };
    IclRunConfig {
        run: IclRunSection {
            dir: o.dir.join("icl-transience"),
            name: if l2 > 0.0 {
                format!("l2-{l2}")
            } else {
                "no-l2".into()
            },
            seed: o.seed,
        },
        data,
        model,
        train,
    }
}

/// The lab's outcome.
pub struct TransienceOutcome {
    pub runs: Vec<IclRunSummary>,
    pub report: PathBuf,
    pub table: String,
}

/// Whether a run's ICL is transient: its final ICL accuracy kept less than half of the peak's
/// gain over `copy` (the accuracy of copying a random context label), after a peak at least 10
/// points above it.
pub fn is_transient(s: &IclRunSummary, copy: f64) -> bool {
    let gain = s.peak_icl.1 - copy;
    gain >= 0.1 && s.final_eval.icl - copy < 0.5 * gain
}

/// First evaluated step at which `key` reaches `thr` (None: never).
fn first_at(s: &IclRunSummary, key: &str, thr: f64) -> Option<u64> {
    s.curves
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, c)| c.iter().find(|p| p.1 >= thr).map(|p| p.0))
}

/// The lab's findings in numbers (Markdown): per arm the ICL peak and final accuracy, when IWL
/// reached 90%, and whether ICL was transient.
pub fn findings(runs: &[IclRunSummary], copy: f64) -> String {
    let mut out = format!(
        "ICL: novel classes, labels per sequence (copying a random context label scores {}). \
         Transient = the final ICL keeps less than half of the peak's gain over that level.\n\n",
        pct(copy)
    );
    for s in runs {
        let e = &s.final_eval;
        out.push_str(&format!(
            "- {}: ICL peak {} at step {}, final {} at step {} ({}); IWL final {}, ≥ 90% from {}; \
             swapped labels at the end: {} follow the context, {} the memorised label.\n",
            s.name,
            pct(s.peak_icl.1),
            s.peak_icl.0,
            pct(e.icl),
            s.steps,
            if is_transient(s, copy) {
                "transient"
            } else if s.peak_icl.1 - copy < 0.1 {
                "ICL never emerged"
            } else {
                "persists"
            },
            pct(e.iwl),
            first_at(s, "eval/iwl", 0.9).map_or("never".into(), |x| format!("step {x}")),
            pct(e.swap_icl),
            pct(e.swap_iwl),
        ));
    }
    out
}

/// Runs both arms and writes `dir/icl-transience/report.html`.
pub fn run(o: &TransienceOptions) -> Result<TransienceOutcome> {
    run_with(o, &Ok)
}

/// [`run`] with each arm's config passed through `adjust` first (the CLI's `--set` overrides;
/// `train.l2` stays the arm's).
pub fn run_with(
    o: &TransienceOptions,
    adjust: &dyn Fn(IclRunConfig) -> Result<IclRunConfig>,
) -> Result<TransienceOutcome> {
    let start = lab_start(o.resume, o.overwrite)?;
    let mut runs = Vec::new();
    for l2 in [0.0, o.l2] {
        let base = run_config(o, l2);
        let mut cfg = adjust(base.clone())?;
        cfg.run.dir = base.run.dir;
        cfg.run.name = base.run.name;
        cfg.train.l2 = l2;
        if o.progress {
            eprintln!(
                "icl-transience: run {} ({} steps)",
                cfg.run.name, cfg.train.steps
            );
        }
        runs.push(train_run(&cfg, &start)?);
    }
    let mut table = String::from(
        "run        peak ICL (step)      final ICL  final IWL  swap→ctx  swap→mem  ICL kept  loss\n",
    );
    let mut rows = Vec::new();
    for s in &runs {
        let e = &s.final_eval;
        let kept = if s.peak_icl.1 > 0.0 {
            e.icl / s.peak_icl.1
        } else {
            0.0
        };
        table.push_str(&format!(
            "{:<10} {:<7} ({:<8})    {:<10} {:<10} {:<9} {:<9} {:<9} {:.4}\n",
            s.name,
            pct(s.peak_icl.1),
            s.peak_icl.0,
            pct(e.icl),
            pct(e.iwl),
            pct(e.swap_icl),
            pct(e.swap_iwl),
            pct(kept),
            s.final_loss
        ));
        rows.push((
            s.name.clone(),
            format!(
                "ICL peak {} at step {}, final {} ({} of the peak); IWL final {}; loss {:.4}",
                pct(s.peak_icl.1),
                s.peak_icl.0,
                pct(e.icl),
                pct(kept),
                pct(e.iwl),
                s.final_loss
            ),
        ));
    }
    let copy = {
        let c = run_config(o, 0.0);
        c.data.eval_b() as f64 / c.data.context as f64
    };
    let findings = findings(&runs, copy);
    let mut series = Vec::new();
    for s in &runs {
        series.push(curve(s, "eval/icl", &format!("ICL, {}", s.name)));
        series.push(curve(s, "eval/iwl", &format!("IWL, {}", s.name)));
    }
    let mut figs = vec![figure(
        "ICL (novel classes) and IWL accuracy during training, with and without L2",
        &series,
        "step",
        "accuracy",
    )];
    let swap: Vec<Series> = runs
        .iter()
        .flat_map(|s| {
            [
                curve(s, "eval/swap_icl", &format!("follows context, {}", s.name)),
                curve(s, "eval/swap_iwl", &format!("follows memory, {}", s.name)),
            ]
        })
        .collect();
    figs.push(figure(
        "Swapped labels: which strategy wins when they disagree",
        &swap,
        "step",
        "share of swapped-label queries",
    ));
    let loss: Vec<Series> = runs
        .iter()
        .map(|s| curve(s, "train/loss", &format!("train loss, {}", s.name)))
        .collect();
    figs.push(figure("Training loss", &loss, "step", "loss"));
    let sections = vec![
        Section::text(
            "What this shows",
            "Singh et al. (2023): with bursty training sequences whose classes keep fixed labels, \
             ICL emerges first and can then fade while IWL takes over, the training loss still \
             falling; L2 regularisation keeps ICL. Both runs share everything but the L2 penalty. \
             ICL: novel classes with per-sequence labels; IWL: the query's class absent from the \
             context.",
        ),
        Section::pre("Findings", &findings),
        Section::table("Per run", rows),
        Section::pre("Table", &table),
    ];
    let dir = o.dir.join("icl-transience");
    super::write_results_md(
        &dir,
        "ICL transience and L2 regularisation",
        &format!("{findings}\n## Per run\n\n```\n{table}```\n"),
    )?;
    let report = write_lab_report(
        &dir,
        "ICL transience and L2 regularisation",
        &sections,
        &figs,
    )?;
    Ok(TransienceOutcome {
        runs,
        report,
        table,
    })
}
