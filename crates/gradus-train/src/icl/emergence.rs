//! `gradus lab icl-emergence`: when does in-context learning appear? (Chan et al. 2022, "Data
//! distributional properties drive emergent in-context learning in transformers"; Reddy 2024,
//! "The mechanistic basis of data dependence and abrupt learning in an in-context classification
//! task", ICLR'24.)
//!
//! The findings: ICL emerges only when training sequences are *bursty* (the query's class recurs
//! in the context) and classes are many and rare (a Zipf tail); it appears abruptly, after a
//! plateau. IWL needs the opposite (few, frequent classes, non-bursty contexts). A Zipf exponent
//! near 1 lets both coexist: the trade-off.
//!
//! The lab trains one run per point of a grid over burstiness B (0 = i.i.d. contexts, p_B = 0;
//! otherwise every training sequence is bursty with B copies of the query's class) and Zipf
//! exponent α, each with the same model and steps, and reports final ICL/IWL accuracy per point,
//! the ICL curves (abruptness: steps from 10% to 90% of the final ICL accuracy) and the trade-off
//! plot of ICL and IWL against α for each B.

use std::path::PathBuf;

use gradus_tasks::bursty::{BurstyConfig, ItemKind, LabelMode};
use gradus_tensor::{Error, Result};

use super::{
    curve, figure, lab_start, pct, train_run, write_lab_report, IclModelSection, IclRunConfig,
    IclRunSection, IclRunSummary, IclTrainSection,
};
use crate::report::{Section, Series};

/// Lab scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabSize {
    /// Seconds: for tests.
    Smoke,
    /// Minutes on 2 CPU cores.
    Default,
    /// The papers' scale (hours on a CPU).
    Paper,
}

/// Options of `gradus lab icl-emergence`.
#[derive(Clone, Debug)]
pub struct EmergenceOptions {
    /// The lab's runs go to `dir/icl-emergence/`.
    pub dir: PathBuf,
    pub size: LabSize,
    pub seed: u64,
    /// Burstiness values (0: i.i.d. contexts).
    pub burstiness: Vec<usize>,
    /// Zipf exponents.
    pub alphas: Vec<f64>,
    /// Override the size's step count.
    pub steps: Option<u64>,
    pub resume: bool,
    pub overwrite: bool,
    pub progress: bool,
}

impl EmergenceOptions {
    /// The grid and sizes of `size`.
    pub fn new(dir: PathBuf, size: LabSize) -> Self {
        Self {
            dir,
            size,
            seed: 0,
            burstiness: match size {
                LabSize::Smoke => vec![0, 4],
                _ => vec![0, 1, 2, 4],
            },
            alphas: match size {
                LabSize::Smoke => vec![0.0],
                _ => vec![0.0, 1.0, 2.0],
            },
            steps: None,
            resume: false,
            overwrite: false,
            progress: false,
        }
    }
}

/// The run config of grid point (B, α).
pub fn run_config(o: &EmergenceOptions, b: usize, alpha: f64) -> IclRunConfig {
    let paper = o.size == LabSize::Paper;
    let smoke = o.size == LabSize::Smoke;
    let data = BurstyConfig {
        // Reddy: K = 2^9 classes… here 512 at paper scale, 256 by default (rare classes: with
        // α = 0 each is seen once per ~8 batches of 32 sequences).
        n_classes: if paper {
            512
        } else if smoke {
            64
        } else {
            256
        },
        n_labels: 32,
        n_novel_classes: 128,
        item: ItemKind::Gaussian { dim: 63 },
        zipf_alpha: alpha,
        eps: 0.1,
        burstiness: b.max(1),
        p_bursty: if b == 0 { 0.0 } else { 1.0 },
        context: 8,
        labels: LabelMode::Fixed,
    };
    let model = if paper {
        IclModelSection::new(128, 2, 4, 256)
    } else if smoke {
        IclModelSection::new(16, 2, 2, 32)
    } else {
        IclModelSection::new(64, 2, 4, 128)
    };
    let steps = o.steps.unwrap_or(match o.size {
        LabSize::Smoke => 6,
        LabSize::Default => 3000,
        LabSize::Paper => 100_000,
    });
    let train = IclTrainSection {
        steps,
        batch_size: if paper {
            128
        } else if smoke {
            8
        } else {
            32
        },
        lr: 1e-3,
        weight_decay: 0.0,
        l2: 0.0,
        eval_every: match o.size {
            LabSize::Smoke => 3,
            LabSize::Default => 100,
            LabSize::Paper => 1000,
        },
        eval_sequences: if smoke { 16 } else { 256 },
        checkpoint_every: if smoke { 3 } else { 1000 },
        keep_last: 1,
        progress: o.progress,
    };
    IclRunConfig {
        run: IclRunSection {
            dir: o.dir.join("icl-emergence"),
            name: format!("B{b}-alpha{alpha}"),
            seed: o.seed,
        },
        data,
        model,
        train,
    }
}

/// One grid point's outcome.
pub struct GridPoint {
    pub burstiness: usize,
    pub alpha: f64,
    pub summary: IclRunSummary,
}

/// The lab's outcome.
pub struct EmergenceOutcome {
    pub points: Vec<GridPoint>,
    pub report: PathBuf,
    /// Plain-text table of the grid.
    pub table: String,
}

/// Steps between the first evaluation at ≥ 10% and the first at ≥ 90% of the final ICL accuracy
/// above chance (None when ICL stays within 5 points of chance).
pub fn rise_steps(s: &IclRunSummary, chance: f64) -> Option<u64> {
    let c = s.curves.iter().find(|(k, _)| k == "eval/icl")?.1.clone();
    let fin = c.last()?.1;
    if fin - chance < 0.05 {
        return None;
    }
    let at = |f: f64| {
        c.iter()
            .find(|p| p.1 - chance >= f * (fin - chance))
            .map(|p| p.0)
    };
    Some(at(0.9)? - at(0.1)?)
}

/// Runs the grid and writes `dir/icl-emergence/report.html`.
pub fn run(o: &EmergenceOptions) -> Result<EmergenceOutcome> {
    if o.burstiness.is_empty() || o.alphas.is_empty() {
        return Err(Error::msg(
            "icl-emergence: --burstiness and --alphas need at least one value each",
        ));
    }
    let start = lab_start(o.resume, o.overwrite)?;
    let mut points = Vec::new();
    for &b in &o.burstiness {
        for &a in &o.alphas {
            let cfg = run_config(o, b, a);
            if o.progress {
                eprintln!(
                    "icl-emergence: run {} ({} steps)",
                    cfg.run.name, cfg.train.steps
                );
            }
            let summary = train_run(&cfg, &start)?;
            points.push(GridPoint {
                burstiness: b,
                alpha: a,
                summary,
            });
        }
    }
    let chance = 1.0 / 32.0;
    let mut table = String::from(
        "B  alpha  ICL(novel)  IWL   swap→ctx  swap→mem  ICL≥50% at  rise 10→90%  loss\n",
    );
    let mut rows = Vec::new();
    for p in &points {
        let s = &p.summary;
        let e = &s.final_eval;
        let onset = s
            .icl_onset
            .map_or("never".to_string(), |x| format!("step {x}"));
        let rise = rise_steps(s, chance).map_or("-".to_string(), |x| format!("{x} steps"));
        table.push_str(&format!(
            "{:<2} {:<6} {:<11} {:<5} {:<9} {:<9} {:<11} {:<12} {:.3}\n",
            p.burstiness,
            p.alpha,
            pct(e.icl),
            pct(e.iwl),
            pct(e.swap_icl),
            pct(e.swap_iwl),
            onset,
            rise,
            s.final_loss
        ));
        rows.push((
            format!("B = {}, α = {}", p.burstiness, p.alpha),
            format!(
                "ICL {}  IWL {}  swap: context {} / memory {}  ICL ≥ 50% at {onset}, rise {rise}",
                pct(e.icl),
                pct(e.iwl),
                pct(e.swap_icl),
                pct(e.swap_iwl)
            ),
        ));
    }
    let mut figs = Vec::new();
    let icl: Vec<Series> = points
        .iter()
        .map(|p| {
            curve(
                &p.summary,
                "eval/icl",
                &format!("B={} α={}", p.burstiness, p.alpha),
            )
        })
        .collect();
    figs.push(figure(
        "ICL accuracy (novel classes) during training, per grid point",
        &icl,
        "step",
        "ICL accuracy",
    ));
    let iwl: Vec<Series> = points
        .iter()
        .map(|p| {
            curve(
                &p.summary,
                "eval/iwl",
                &format!("B={} α={}", p.burstiness, p.alpha),
            )
        })
        .collect();
    figs.push(figure(
        "IWL accuracy (query class absent from the context) during training",
        &iwl,
        "step",
        "IWL accuracy",
    ));
    let mut trade = Vec::new();
    for &b in &o.burstiness {
        let pts = |f: &dyn Fn(&GridPoint) -> f64| -> Vec<(f64, f64)> {
            points
                .iter()
                .filter(|p| p.burstiness == b)
                .map(|p| (p.alpha, f(p)))
                .collect()
        };
        trade.push(Series {
            name: format!("ICL, B={b}"),
            points: pts(&|p| p.summary.final_eval.icl),
        });
        trade.push(Series {
            name: format!("IWL, B={b}"),
            points: pts(&|p| p.summary.final_eval.iwl),
        });
    }
    figs.push(figure(
        "Trade-off: final ICL and IWL accuracy against the Zipf exponent α",
        &trade,
        "Zipf exponent α",
        "final accuracy",
    ));
    let sections = vec![
        Section::text(
            "What this shows",
            "Chan et al. (2022) and Reddy (2024): in-context learning emerges only when training \
             sequences are bursty and classes are many and rare, and it appears abruptly; in-weights \
             learning needs the opposite. Each grid point is one run (same model, steps and seed). \
             ICL is measured on novel classes with labels drawn per sequence (chance 1/32), IWL on \
             sequences whose context lacks the query's class. Swapped-label sequences show which \
             strategy the model follows when the two disagree.",
        ),
        Section::table("Final accuracies per grid point", rows),
        Section::pre("Table", &table),
    ];
    let dir = o.dir.join("icl-emergence");
    let report = write_lab_report(
        &dir,
        "ICL emergence: burstiness and Zipf exponent",
        &sections,
        &figs,
    )?;
    Ok(EmergenceOutcome {
        points,
        report,
        table,
    })
}
