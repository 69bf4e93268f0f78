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
    /// Config keys the command line overrides with `--set` (a resumed run accepts their changes).
    pub set_keys: Vec<String>,
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
            set_keys: Vec::new(),
        }
    }
}

/// K of the default and paper sizes.
pub const DEFAULT_CLASSES: usize = 2048;
/// B of every grid point's ICL evaluation sequences.
pub const EVAL_BURSTINESS: usize = 4;

/// The run config of grid point (B, α).
pub fn run_config(o: &EmergenceOptions, b: usize, alpha: f64) -> IclRunConfig {
    let paper = o.size == LabSize::Paper;
    let smoke = o.size == LabSize::Smoke;
    let data = BurstyConfig {
        // Many rare classes: Reddy sweeps K up to 2^14 and finds ICL only for large K. Measured
        // at the default size (B = 4, α = 0, 3,000 steps): K = 256 is memorised by step 300
        // and ICL never appears (12.9% at the end); K = 2048 gives ICL 98.8% with IWL 4.3%.
        n_classes: if smoke { 64 } else { DEFAULT_CLASSES },
        n_labels: 32,
        n_novel_classes: 128,
        item: ItemKind::Gaussian { dim: 63 },
        zipf_alpha: alpha,
        eps: 0.1,
        burstiness: b.max(1),
        p_bursty: if b == 0 { 0.0 } else { 1.0 },
        context: 8,
        labels: LabelMode::Fixed,
        // One ICL evaluation for the whole grid (Reddy's B = 4 of N = 8: two classes of four,
        // so copying a random context label scores 50%), whatever B the run trained with.
        eval_burstiness: Some(EVAL_BURSTINESS),
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
    /// ICL accuracy of a model that copies a random context label (eval B / N): the context
    /// holds N / B classes of B items each, so such a model is right B / N of the time.
    pub copy_level: f64,
    pub summary: IclRunSummary,
}

impl GridPoint {
    /// First evaluated step whose ICL accuracy is at least halfway from the copy level to 1
    /// (None: never).
    pub fn onset(&self) -> Option<u64> {
        let thr = 0.5 * (1.0 + self.copy_level);
        icl_curve(&self.summary)
            .iter()
            .find(|p| p.1 >= thr)
            .map(|p| p.0)
    }
}

fn icl_curve(s: &IclRunSummary) -> &[(u64, f64)] {
    s.curves
        .iter()
        .find(|(k, _)| k == "eval/icl")
        .map_or(&[], |c| c.1.as_slice())
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

/// A B × α matrix of a final accuracy (Markdown table; "-" where a point is missing).
fn matrix(
    points: &[GridPoint],
    bs: &[usize],
    alphas: &[f64],
    f: impl Fn(&GridPoint) -> f64,
) -> String {
    let mut t = String::from("| B \\ α |");
    for a in alphas {
        t.push_str(&format!(" {a} |"));
    }
    t.push_str("\n|---|");
    t.push_str(&"---|".repeat(alphas.len()));
    t.push('\n');
    for &b in bs {
        t.push_str(&format!("| {b} |"));
        for &a in alphas {
            let v = points
                .iter()
                .find(|p| p.burstiness == b && p.alpha == a)
                .map_or("-".to_string(), |p| pct(f(p)));
            t.push_str(&format!(" {v} |"));
        }
        t.push('\n');
    }
    t
}

/// The lab's findings in numbers (Markdown): final ICL and IWL over B × α, then the claims read
/// off the grid: ICL against B at the flattest Zipf law, IWL against B, both against α at the
/// highest B, and each ICL run's onset and rise.
pub fn findings(points: &[GridPoint], bs: &[usize], alphas: &[f64]) -> String {
    let mut out = String::new();
    let copy = points.first().map_or(0.0, |p| p.copy_level);
    out.push_str(&format!(
        "Final ICL accuracy (novel classes; copying a random context label scores {}):\n\n{}\n",
        pct(copy),
        matrix(points, bs, alphas, |p| p.summary.final_eval.icl)
    ));
    out.push_str(&format!(
        "Final IWL accuracy (query class absent from the context):\n\n{}\n",
        matrix(points, bs, alphas, |p| p.summary.final_eval.iwl)
    ));
    let get = |b: usize, a: f64| points.iter().find(|p| p.burstiness == b && p.alpha == a);
    let series = |a: Option<f64>, b: Option<usize>, f: &dyn Fn(&GridPoint) -> f64| -> String {
        points
            .iter()
            .filter(|p| a.is_none_or(|a| p.alpha == a) && b.is_none_or(|b| p.burstiness == b))
            .map(|p| {
                if a.is_some() {
                    format!("B={} {}", p.burstiness, pct(f(p)))
                } else {
                    format!("α={} {}", p.alpha, pct(f(p)))
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let (Some(&a0), Some(&bmax)) = (alphas.first(), bs.iter().max()) {
        out.push_str(&format!(
            "- ICL against burstiness (α = {a0}): {}.\n",
            series(Some(a0), None, &|p| p.summary.final_eval.icl)
        ));
        out.push_str(&format!(
            "- IWL against burstiness (α = {a0}): {}.\n",
            series(Some(a0), None, &|p| p.summary.final_eval.iwl)
        ));
        out.push_str(&format!(
            "- ICL against the Zipf exponent (B = {bmax}): {}.\n",
            series(None, Some(bmax), &|p| p.summary.final_eval.icl)
        ));
        out.push_str(&format!(
            "- IWL against the Zipf exponent (B = {bmax}): {}.\n",
            series(None, Some(bmax), &|p| p.summary.final_eval.iwl)
        ));
        let both: Vec<String> = points
            .iter()
            .filter(|p| {
                p.summary.final_eval.icl >= 0.5 * (1.0 + p.copy_level)
                    && p.summary.final_eval.iwl >= 0.5
            })
            .map(|p| format!("B={} α={}", p.burstiness, p.alpha))
            .collect();
        out.push_str(&format!(
            "- Both strategies at once (ICL above the halfway mark and IWL ≥ 50%): {}.\n",
            if both.is_empty() {
                "none".to_string()
            } else {
                both.join(", ")
            }
        ));
        let _ = get;
    }
    for p in points {
        if let (Some(on), Some(rise)) = (p.onset(), rise_steps(&p.summary, p.copy_level)) {
            out.push_str(&format!(
                "- B={} α={}: ICL onset at step {on} of {}, rising from 10% to 90% of its final \
                 gain over the copy level in {rise} steps (final {}).\n",
                p.burstiness,
                p.alpha,
                p.summary.steps,
                pct(p.summary.final_eval.icl)
            ));
        }
    }
    out
}

/// Runs the grid and writes `dir/icl-emergence/report.html`.
pub fn run(o: &EmergenceOptions) -> Result<EmergenceOutcome> {
    run_with(o, &Ok)
}

/// [`run`] with every grid point's config passed through `adjust` first (the CLI's `--set`
/// overrides; grid point names and the grid's B and α stay the lab's).
pub fn run_with(
    o: &EmergenceOptions,
    adjust: &dyn Fn(IclRunConfig) -> Result<IclRunConfig>,
) -> Result<EmergenceOutcome> {
    if o.burstiness.is_empty() || o.alphas.is_empty() {
        return Err(Error::msg(
            "icl-emergence: --burstiness and --alphas need at least one value each",
        ));
    }
    let start = lab_start(
        o.resume,
        o.overwrite,
        &super::explicit_fields(o.steps, &o.set_keys),
    )?;
    let mut points = Vec::new();
    for &b in &o.burstiness {
        for &a in &o.alphas {
            let base = run_config(o, b, a);
            let mut cfg = adjust(base.clone())?;
            cfg.run.dir = base.run.dir;
            cfg.run.name = base.run.name;
            cfg.data.burstiness = base.data.burstiness;
            cfg.data.zipf_alpha = base.data.zipf_alpha;
            if b == 0 {
                cfg.data.p_bursty = 0.0;
            }
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
                copy_level: cfg.data.eval_b() as f64 / cfg.data.context as f64,
                summary,
            });
        }
    }
    let mut table = String::from(
        "B  alpha  ICL(novel)  IWL   swap→ctx  swap→mem  ICL onset   rise 10→90%  loss\n",
    );
    let mut rows = Vec::new();
    for p in &points {
        let s = &p.summary;
        let e = &s.final_eval;
        let onset = p
            .onset()
            .map_or("never".to_string(), |x| format!("step {x}"));
        let rise = rise_steps(s, p.copy_level).map_or("-".to_string(), |x| format!("{x} steps"));
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
                "ICL {}  IWL {}  swap: context {} / memory {}  ICL onset {onset}, rise {rise}",
                pct(e.icl),
                pct(e.iwl),
                pct(e.swap_icl),
                pct(e.swap_iwl)
            ),
        ));
    }
    let findings = findings(&points, &o.burstiness, &o.alphas);
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
             ICL is measured on novel classes with labels drawn per sequence, the same evaluation \
             layout for every grid point (copying a random context label scores B_eval / N), IWL \
             on sequences whose context lacks the query's class. Swapped-label sequences show \
             which strategy the model follows when the two disagree. ICL onset: the first \
             evaluation halfway from the copy level to 100%.",
        ),
        Section::pre("Findings", &findings),
        Section::table("Final accuracies per grid point", rows),
        Section::pre("Table", &table),
    ];
    let dir = o.dir.join("icl-emergence");
    super::write_results_md(
        &dir,
        "ICL emergence: burstiness and Zipf exponent",
        &format!("{findings}\n## Per grid point\n\n```\n{table}```\n"),
    )?;
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
