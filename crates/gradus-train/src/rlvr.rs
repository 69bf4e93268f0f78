//! `gradus lab rlvr`: reinforcement learning from verifiable rewards on top of the quickstart
//! (Tulu 3's RLVR, Lambert et al. 2024; RESEARCH §3.13). From the quickstart's SFT model (made
//! first when none is given), GRPO with the built-in task's own checker as the only reward, on
//! arithmetic and program-output prompts; the SFT and the RL model are then scored on the
//! quickstart's held-out problems with the evaluation harness (greedy decoding, exact match,
//! per-kind accuracy with Wilson 95% intervals). The GRPO settings are `configs/rl/tiny.toml`'s.
//!
//! Two held-out metrics, both always reported: greedy accuracy (one decode per problem, a Wilson
//! interval over problems) and sampled pass@1 at temperature 1 (DeepSeek-R1's and Tulu 3's
//! "pass@1": the mean over `k` samples per problem of the exact-match score; its 95% interval is
//! the normal one over problems, `mean ± 1.96·s/√n` with `s` the standard deviation of the
//! per-problem means, since the `k` samples of one problem are not independent draws of the
//! population), with pass@k (a problem counts when one of its `k` samples is right; Chen et al.
//! 2021's unbiased estimator with `n = k` samples) beside them, and the paired change of each
//! over the same problems ([`paired_change`]).
//!
//! What it shows at the quickstart's size (README, "Learning from verifiable rewards"): GRPO
//! sharpens the SFT model (sampled pass@1 up about 4 points, pass@8 down about 8) and leaves its
//! greedy accuracy where it was; more SFT on new problems raises greedy accuracy, GRPO's updates
//! on one problem do not carry over to others.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use gradus_data::tokenizer::Tokenizer;
use gradus_eval::{evaluate_task, LoadedTask};
use gradus_model::decoder::Decoder;
use gradus_model::hf::load_decoder;
use gradus_tasks::TaskKind;
use gradus_tensor::{Device, Error, Result};

use crate::quickstart::{self, KindAccuracy, QuickstartOptions, QuickstartSize};
use crate::report::Section;
use crate::rl::RlConfig;

/// The GRPO run of the lab (its `init_from` is replaced by the SFT model).
pub const RL_CONFIG: &str = include_str!("../../../configs/rl/tiny.toml");

#[derive(Clone, Debug)]
pub struct RlvrOptions {
    /// Where the runs go (`quickstart-*` when the SFT model is made here, and `rlvr`).
    pub dir: PathBuf,
    /// An SFT checkpoint (or run directory) to start from; None: run the quickstart first.
    pub sft: Option<PathBuf>,
    /// GRPO optimiser steps; 0 evaluates the SFT model only (no RL run).
    pub steps: u64,
    /// Held-out problems per kind (the quickstart's own evaluation has 100).
    pub eval_n: usize,
    /// Samples per held-out problem for sampled pass@1 / pass@k at temperature 1 (0: greedy only).
    pub eval_samples: usize,
    pub seed: u64,
    pub progress: bool,
    /// Move earlier runs in `dir` aside instead of refusing to start.
    pub overwrite: bool,
    /// The GRPO config to start from (None: [`RL_CONFIG`]); its run directory, seed, init and
    /// steps are the lab's.
    pub rl: Option<RlConfig>,
}

/// The lab's held-out settings by default: 500 problems per kind (1,000 in all: a 95% interval
/// of about ±2.6 points at 77%, where the quickstart's 200 give ±6) and 8 samples per problem.
pub const EVAL_N: usize = 500;
/// Samples per held-out problem for sampled pass@1 (see [`EVAL_N`]).
pub const EVAL_SAMPLES: usize = 8;

#[derive(Clone, Debug)]
pub struct RlvrOutcome {
    pub sft_checkpoint: PathBuf,
    /// The GRPO run (None when `steps` = 0).
    pub rl_dir: Option<PathBuf>,
    /// Held-out greedy accuracy per kind (the last entry is "all") of the SFT and the RL model
    /// (`after` is empty when `steps` = 0).
    pub before: Vec<KindAccuracy>,
    pub after: Vec<KindAccuracy>,
    /// Held-out sampled pass@1 / pass@k per kind (empty when `eval_samples` = 0).
    pub before_sampled: Vec<SampledAccuracy>,
    pub after_sampled: Vec<SampledAccuracy>,
    pub report: PathBuf,
    pub summary: String,
}

/// Sampled accuracy of one kind of held-out problem (or of all: `kind = "all"`).
#[derive(Clone, Debug, PartialEq)]
pub struct SampledAccuracy {
    pub kind: String,
    /// Problems.
    pub n: usize,
    /// Samples per problem.
    pub k: usize,
    /// Pass@1: the mean over problems of (right samples) / k.
    pub pass1: f64,
    /// 95% normal interval of `pass1` over problems, clamped to [0, 1].
    pub pass1_ci: (f64, f64),
    /// Problems with at least one right sample (pass@k · n).
    pub pass_k: usize,
    /// Wilson 95% interval of pass@k.
    pub pass_k_ci: (f64, f64),
    /// Right samples of each problem, in the task's order.
    pub right: Vec<usize>,
}

/// Pass@1 and pass@k from the number of right samples of each problem (`right[i]` of `k`).
pub fn sampled_accuracy(kind: &str, right: &[usize], k: usize) -> SampledAccuracy {
    let n = right.len();
    let k = k.max(1);
    let means: Vec<f64> = right.iter().map(|&c| c as f64 / k as f64).collect();
    let pass1 = means.iter().sum::<f64>() / n.max(1) as f64;
    let half = if n > 1 {
        let var = means.iter().map(|m| (m - pass1).powi(2)).sum::<f64>() / (n - 1) as f64;
        1.96 * (var / n as f64).sqrt()
    } else {
        f64::NAN
    };
    let pass_k = right.iter().filter(|&&c| c > 0).count();
    SampledAccuracy {
        kind: kind.to_string(),
        n,
        k,
        pass1,
        pass1_ci: ((pass1 - half).max(0.0), (pass1 + half).min(1.0)),
        pass_k,
        pass_k_ci: quickstart::wilson_95(pass_k, n),
        right: right.to_vec(),
    }
}

/// A paired change: the mean difference and its 95% interval.
pub type Change = (f64, (f64, f64));

/// The change of a per-problem score between two models scored on the same problems: the mean
/// of `after[i] − before[i]` and its 95% normal interval (`mean ± 1.96·s/√n`, `s` the standard
/// deviation of the differences). Pairing removes the spread of problem difficulty, which
/// dominates each model's own interval. None when the lengths differ or n < 2.
pub fn paired_change(before: &[f64], after: &[f64]) -> Option<Change> {
    let n = before.len();
    if n != after.len() || n < 2 {
        return None;
    }
    let d: Vec<f64> = before.iter().zip(after).map(|(b, a)| a - b).collect();
    let m = d.iter().sum::<f64>() / n as f64;
    let var = d.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1) as f64;
    let half = 1.96 * (var / n as f64).sqrt();
    Some((m, (m - half, m + half)))
}

/// `t` with `k` samples per problem at `temperature` (seeds `seed`, `seed + 1`, …, the same for
/// every model scored) and the `strict` filter's extraction kept per sample (no `take_first`).
fn sampled_task(t: &LoadedTask, k: usize, temperature: f64, seed: u64) -> LoadedTask {
    let mut t = t.clone();
    t.cfg.repeats = k;
    let g = t.cfg.generation_kwargs.get_or_insert_with(Default::default);
    g.insert("do_sample".into(), serde_json::json!(true));
    g.insert("temperature".into(), serde_json::json!(temperature));
    g.insert("seed".into(), serde_json::json!(seed));
    if let Some(fl) = &mut t.cfg.filter_list {
        for f in fl.iter_mut() {
            f.filter.retain(|s| s.function != "take_first");
        }
    }
    t
}

/// Sampled pass@1 / pass@k of `model` on the held-out `tasks` (`k` samples per problem at
/// `temperature`, 1 in the lab; the `strict` extraction of each sample compared with the target
/// as the greedy score does): per kind, then "all".
pub fn measure_sampled(
    model: &Decoder,
    tok: &Tokenizer,
    dir: &Path,
    tasks: &[(TaskKind, LoadedTask, &'static str)],
    k: usize,
    temperature: f64,
) -> Result<Vec<SampledAccuracy>> {
    let (m, opts) = crate::quickstart::eval_setup(model, tok, dir);
    let mut out = Vec::new();
    let mut all = Vec::new();
    for (kind, t, filter) in tasks {
        let t = sampled_task(t, k, temperature, 1000);
        let r = evaluate_task(&m, &t, &opts)
            .map_err(|e| Error::msg(format!("rlvr sampled eval {}: {e:#}", t.cfg.task)))?;
        let mut right = Vec::new();
        for row in r.samples.iter().filter(|row| row["filter"] == *filter) {
            let target = row["target"].as_str().unwrap_or("");
            let answers = row["filtered_resps"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if answers.len() != k {
                return Err(Error::msg(format!(
                    "rlvr sampled eval {}: {} answers for a problem, expected {k}",
                    t.cfg.task,
                    answers.len()
                )));
            }
            right.push(
                answers
                    .iter()
                    .filter(|a| a.as_str() == Some(target))
                    .count(),
            );
        }
        out.push(sampled_accuracy(
            &format!("{kind:?}").to_lowercase(),
            &right,
            k,
        ));
        all.extend(right);
    }
    out.push(sampled_accuracy("all", &all, k));
    Ok(out)
}

/// Greedy accuracy and (when `k` > 0) sampled pass@1 of the checkpoint `ck`.
#[allow(clippy::type_complexity)]
fn score(
    ck: &Path,
    tok: &Tokenizer,
    tasks: &[(TaskKind, LoadedTask, &'static str)],
    k: usize,
) -> Result<(
    Vec<KindAccuracy>,
    Vec<quickstart::Sample>,
    Vec<SampledAccuracy>,
)> {
    let model = load_decoder(ck, &Device::Cpu)?;
    let (greedy, samples) = quickstart::measure(&model, tok, ck, tasks)?;
    let sampled = if k > 0 {
        measure_sampled(&model, tok, ck, tasks, k, 1.0)?
    } else {
        Vec::new()
    };
    Ok((greedy, samples, sampled))
}

/// A checkpoint directory, or a run directory's latest checkpoint.
fn checkpoint_of(p: &Path) -> Result<PathBuf> {
    if p.join("config.json").is_file() {
        return Ok(p.to_path_buf());
    }
    crate::checkpoint::latest_checkpoint(p)?.ok_or_else(|| {
        Error::format(
            p,
            "neither a checkpoint (config.json) nor a run with checkpoints/step-N",
        )
    })
}

/// [`RL_CONFIG`] parsed.
pub fn default_rl_config() -> Result<RlConfig> {
    toml::from_str(RL_CONFIG).map_err(|e| Error::format("configs/rl/tiny.toml", e.to_string()))
}

/// The lab's GRPO config.
pub fn rl_config(o: &RlvrOptions, sft: &Path) -> Result<RlConfig> {
    let mut cfg = match &o.rl {
        Some(c) => c.clone(),
        None => default_rl_config()?,
    };
    cfg.run.dir = o.dir.clone();
    cfg.run.name = "rlvr".into();
    cfg.run.seed = o.seed;
    cfg.model.init_from = Some(sft.to_path_buf());
    cfg.train.steps = o.steps;
    cfg.train.save_every = o.steps;
    cfg.train.progress = o.progress;
    Ok(cfg)
}

/// Runs the lab: the SFT model (made by the quickstart when none is given), its held-out scores,
/// GRPO, the RL model's held-out scores, and the report (`rlvr.html`, `rlvr.json` in the RL run).
pub fn run(o: &RlvrOptions) -> Result<RlvrOutcome> {
    let start = if o.overwrite {
        crate::rundir::Start::Overwrite
    } else {
        crate::rundir::Start::New
    };
    // 1. The SFT model.
    let sft = match &o.sft {
        Some(p) => checkpoint_of(p)?,
        None => {
            eprintln!("[lab rlvr] no --sft given: running the quickstart first");
            let q = quickstart::run(&QuickstartOptions {
                dir: o.dir.clone(),
                size: QuickstartSize::Full,
                seed: o.seed,
                progress: o.progress,
                overwrite: o.overwrite,
                overrides: vec![],
            })?;
            checkpoint_of(&q.sft_dir)?
        }
    };
    // 2. Held-out scores before RL (the quickstart's evaluation problems, `eval_n` per kind).
    let mut plan = quickstart::plan(QuickstartSize::Full);
    plan.n_eval = o.eval_n.max(1);
    let tasks = quickstart::eval_tasks(&plan, o.seed + 1)?;
    let tok = Tokenizer::from_dir(&sft)?;
    eprintln!("[lab rlvr] evaluating the SFT model…");
    let t0 = std::time::Instant::now();
    let (before, before_samples, before_sampled) = score(&sft, &tok, &tasks, o.eval_samples)?;
    eprintln!(
        "[lab rlvr] SFT model scored in {:.0} s",
        t0.elapsed().as_secs_f64()
    );
    if o.steps == 0 {
        let wrong: Vec<quickstart::Sample> =
            before_samples.into_iter().filter(|s| !s.correct).collect();
        let summary = summary_of(&before, &[], &before_sampled, &[], None)
            + "wrong greedy answers (the first 16):\n"
            + &quickstart::show(&wrong, 16);
        return Ok(RlvrOutcome {
            sft_checkpoint: sft,
            rl_dir: None,
            before,
            after: vec![],
            before_sampled,
            after_sampled: vec![],
            report: PathBuf::new(),
            summary,
        });
    }
    // 3. GRPO.
    eprintln!("[lab rlvr] GRPO for {} steps…", o.steps);
    let t0 = std::time::Instant::now();
    let cfg = rl_config(o, &sft)?;
    let s = crate::rl::run(&cfg, start)?;
    let rl_secs = t0.elapsed().as_secs_f64();
    let rl_ck = s
        .fit
        .last_checkpoint
        .clone()
        .or(crate::checkpoint::latest_checkpoint(&s.fit.run_dir)?)
        .ok_or_else(|| Error::msg("the RL run wrote no checkpoint"))?;
    // 4. After.
    eprintln!("[lab rlvr] evaluating the RL model…");
    let (after, samples, after_sampled) = score(&rl_ck, &tok, &tasks, o.eval_samples)?;
    // Paired changes over the same problems (greedy: right or not; sampled: right / k).
    let as_f = |v: &[quickstart::Sample]| -> Vec<f64> {
        v.iter().map(|s| s.correct as u8 as f64).collect()
    };
    let greedy_change = paired_change(&as_f(&before_samples), &as_f(&samples));
    let sampled_change: Vec<(String, Option<Change>)> = before_sampled
        .iter()
        .zip(&after_sampled)
        .map(|(b, a)| {
            let f = |x: &SampledAccuracy| -> Vec<f64> {
                x.right.iter().map(|&c| c as f64 / x.k as f64).collect()
            };
            (b.kind.clone(), paired_change(&f(b), &f(a)))
        })
        .collect();
    // 5. Report.
    let mut table = vec![(
        "held-out problems".to_string(),
        after.last().map_or(0, |k| k.n).to_string(),
    )];
    for (when, k) in [("SFT", &before), ("SFT + GRPO", &after)] {
        table.extend(
            quickstart::breakdown_lines(k)
                .into_iter()
                .map(|(kind, v)| (format!("{when}, {kind}"), v)),
        );
    }
    let mut sampled_table = Vec::new();
    for (when, k) in [("SFT", &before_sampled), ("SFT + GRPO", &after_sampled)] {
        sampled_table.extend(k.iter().map(|a| {
            (
                format!("{when}, {}", a.kind),
                format!(
                    "pass@1 {:.1}% (95% CI {:.1}–{:.1}%), pass@{} {}/{} = {:.1}% ({:.1}–{:.1}%)",
                    100.0 * a.pass1,
                    100.0 * a.pass1_ci.0,
                    100.0 * a.pass1_ci.1,
                    a.k,
                    a.pass_k,
                    a.n,
                    100.0 * a.pass_k as f64 / a.n.max(1) as f64,
                    100.0 * a.pass_k_ci.0,
                    100.0 * a.pass_k_ci.1
                ),
            )
        }));
    }
    let mut sections = vec![Section::table(
        "Held-out accuracy (greedy, exact match)",
        table,
    )];
    if !sampled_table.is_empty() {
        sections.push(Section::table(
            &format!(
                "Held-out accuracy sampled at temperature 1 ({} samples per problem)",
                o.eval_samples
            ),
            sampled_table,
        ));
    }
    sections.push(Section::pre(
        "Change SFT → SFT + GRPO, paired over the same problems",
        &changes_of(greedy_change, &sampled_change),
    ));
    sections.extend([
        Section::plot(
            "Reward (task checker) per generation batch",
            &["reward/mean"],
        ),
        Section::plot("Completion length", &["completions/mean_length"]),
        Section::plot("Entropy of the sampling policy (nats)", &["entropy"]),
        Section::pre("Samples after RL", &quickstart::show(&samples, 12)),
        Section::table(
            "Runs",
            vec![
                ("SFT checkpoint".into(), sft.display().to_string()),
                ("RL run".into(), s.fit.run_dir.display().to_string()),
                ("GRPO steps".into(), s.fit.steps.to_string()),
                ("GRPO wall time".into(), format!("{rl_secs:.0} s")),
            ],
        ),
    ]);
    let rows = crate::metrics::read_metrics(&s.fit.run_dir.join(crate::metrics::METRICS_FILE))
        .unwrap_or_default();
    let html = crate::report::render_report("gradus lab rlvr: SFT → GRPO", &sections, &rows);
    let report = s.fit.run_dir.join("rlvr.html");
    gradus_tensor::io::write_atomic(&report, html.as_bytes())?;
    let greedy_json = |v: &[KindAccuracy]| {
        v.iter()
            .map(|k| serde_json::json!({"kind": k.kind, "correct": k.correct, "n": k.n, "ci95": [k.interval.0, k.interval.1]}))
            .collect::<Vec<_>>()
    };
    let sampled_json = |v: &[SampledAccuracy]| {
        v.iter()
            .map(|a| serde_json::json!({"kind": a.kind, "n": a.n, "k": a.k, "pass1": a.pass1, "pass1_ci95": [a.pass1_ci.0, a.pass1_ci.1], "pass_k": a.pass_k, "pass_k_ci95": [a.pass_k_ci.0, a.pass_k_ci.1]}))
            .collect::<Vec<_>>()
    };
    let json = serde_json::json!({
        "sft_checkpoint": sft, "rl_checkpoint": rl_ck, "steps": s.fit.steps, "rl_seconds": rl_secs,
        "before": greedy_json(&before), "after": greedy_json(&after),
        "before_sampled": sampled_json(&before_sampled), "after_sampled": sampled_json(&after_sampled),
        "change_paired": {
            "greedy_all": greedy_change.map(|(m, (lo, hi))| [m, lo, hi]),
            "sampled_pass1": sampled_change.iter().map(|(k, c)| (k.clone(), serde_json::json!(c.map(|(m, (lo, hi))| [m, lo, hi])))).collect::<serde_json::Map<_, _>>(),
        },
    });
    gradus_tensor::io::write_atomic(
        &s.fit.run_dir.join("rlvr.json"),
        serde_json::to_string_pretty(&json)
            .map_err(|e| Error::msg(e.to_string()))?
            .as_bytes(),
    )?;
    let mut summary = summary_of(&before, &after, &before_sampled, &after_sampled, None);
    summary += &changes_of(greedy_change, &sampled_change);
    let _ = writeln!(summary, "report: {}", report.display());
    Ok(RlvrOutcome {
        sft_checkpoint: sft,
        rl_dir: Some(s.fit.run_dir),
        before,
        after,
        before_sampled,
        after_sampled,
        report,
        summary,
    })
}

/// The paired changes, SFT → SFT + GRPO, in points with 95% intervals.
fn changes_of(greedy: Option<Change>, sampled: &[(String, Option<Change>)]) -> String {
    let fmt = |c: Option<Change>| match c {
        Some((m, (lo, hi))) => {
            format!("{:+.1} [{:+.1}, {:+.1}]", 100.0 * m, 100.0 * lo, 100.0 * hi)
        }
        None => "n/a".into(),
    };
    let mut s = format!(
        "change, paired over the same problems (points, 95% CI): greedy all {}",
        fmt(greedy)
    );
    for (kind, c) in sampled {
        let _ = write!(s, "; sampled pass@1 {kind} {}", fmt(*c));
    }
    s.push('\n');
    s
}

/// The printed table: greedy accuracy, then sampled pass@1 and pass@k, SFT beside SFT + GRPO.
fn summary_of(
    before: &[KindAccuracy],
    after: &[KindAccuracy],
    before_sampled: &[SampledAccuracy],
    after_sampled: &[SampledAccuracy],
    report: Option<&Path>,
) -> String {
    let pct = |x: f64| 100.0 * x;
    let mut s = String::from("held-out, greedy   SFT                          SFT + GRPO\n");
    for (i, b) in before.iter().enumerate() {
        let _ = write!(
            s,
            "{:<10} {:>5.1}% ({:>4}/{:<4}) [{:.1}, {:.1}]",
            b.kind,
            pct(b.accuracy()),
            b.correct,
            b.n,
            pct(b.interval.0),
            pct(b.interval.1),
        );
        if let Some(a) = after.get(i) {
            let _ = write!(
                s,
                "   {:>5.1}% ({:>4}/{:<4}) [{:.1}, {:.1}]",
                pct(a.accuracy()),
                a.correct,
                a.n,
                pct(a.interval.0),
                pct(a.interval.1)
            );
        }
        s.push('\n');
    }
    if let Some(k) = before_sampled.first().map(|a| a.k) {
        let _ = writeln!(
            s,
            "held-out, sampled at T = 1, {k} per problem: pass@1 [95% CI] | pass@{k} (SFT, then SFT + GRPO)"
        );
        for (i, b) in before_sampled.iter().enumerate() {
            let _ = write!(
                s,
                "{:<10} {:>5.1}% [{:.1}, {:.1}] | {:>5.1}%",
                b.kind,
                pct(b.pass1),
                pct(b.pass1_ci.0),
                pct(b.pass1_ci.1),
                pct(b.pass_k as f64 / b.n.max(1) as f64)
            );
            if let Some(a) = after_sampled.get(i) {
                let _ = write!(
                    s,
                    "   {:>5.1}% [{:.1}, {:.1}] | {:>5.1}%",
                    pct(a.pass1),
                    pct(a.pass1_ci.0),
                    pct(a.pass1_ci.1),
                    pct(a.pass_k as f64 / a.n.max(1) as f64)
                );
            }
            s.push('\n');
        }
    }
    if let Some(r) = report {
        let _ = writeln!(s, "report: {}", r.display());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampled_accuracy_by_hand() {
        // k = 8, right samples 8, 4, 0, 2 → per-problem means 1, .5, 0, .25; pass@1 = 1.75/4 =
        // .4375. Deviations .5625, .0625, −.4375, −.1875; squares sum .546875; s² = .546875/3 =
        // .18229167; s.e. = √(s²/4) = .21347814; half width 1.96 · .21347814 = .41841716.
        let a = sampled_accuracy("arith", &[8, 4, 0, 2], 8);
        assert_eq!((a.kind.as_str(), a.n, a.k), ("arith", 4, 8));
        assert!((a.pass1 - 0.4375).abs() < 1e-12);
        assert!((a.pass1_ci.0 - (0.4375 - 0.41841716)).abs() < 1e-7, "{a:?}");
        assert!((a.pass1_ci.1 - (0.4375 + 0.41841716)).abs() < 1e-7, "{a:?}");
        // pass@8: 3 of 4 problems have a right sample. Wilson, p = .75, n = 4, z² = 3.8416:
        // centre (.75 + .4802)/1.9604 = .627525, half (1.96/1.9604)·√(.046875 + .060025) =
        // .326891 → [.300634, .954416].
        assert_eq!(a.pass_k, 3);
        assert!((a.pass_k_ci.0 - 0.300634).abs() < 1e-5, "{a:?}");
        assert!((a.pass_k_ci.1 - 0.954416).abs() < 1e-5, "{a:?}");
        // All right: the interval is the point, clamped into [0, 1].
        let b = sampled_accuracy("all", &[2, 2, 2], 2);
        assert_eq!((b.pass1, b.pass1_ci), (1.0, (1.0, 1.0)));
    }

    #[test]
    fn paired_change_by_hand() {
        // Differences 0, 1, 0, 1: mean .5, s² = 4·.25/3 = 1/3, s.e. = √(1/12) = .288675,
        // half width 1.96 · .288675 = .565803.
        let (m, (lo, hi)) = paired_change(&[1.0, 0.0, 1.0, 0.0], &[1.0, 1.0, 1.0, 1.0]).unwrap();
        assert!((m - 0.5).abs() < 1e-12);
        assert!((lo - (0.5 - 0.565803)).abs() < 1e-6 && (hi - (0.5 + 0.565803)).abs() < 1e-6);
        // The same scores: no change, a zero-width interval.
        assert_eq!(
            paired_change(&[0.5, 1.0], &[0.5, 1.0]),
            Some((0.0, (0.0, 0.0)))
        );
        assert_eq!(paired_change(&[1.0, 0.0], &[1.0]), None);
        assert_eq!(paired_change(&[1.0], &[0.0]), None);
    }

    #[test]
    fn the_sampled_task_keeps_every_samples_answer() {
        let plan = quickstart::plan(QuickstartSize::Smoke);
        let tasks = quickstart::eval_tasks(&plan, 1).unwrap();
        let t = sampled_task(&tasks[0].1, 4, 1.0, 7);
        assert_eq!(t.cfg.repeats, 4);
        let g = t.cfg.generation_kwargs.as_ref().unwrap();
        assert_eq!(g["do_sample"], serde_json::json!(true));
        assert_eq!(g["seed"], serde_json::json!(7));
        let fl = t.cfg.filter_list.as_ref().unwrap();
        for f in fl {
            assert!(f.filter.iter().all(|s| s.function != "take_first"));
        }
        // `strict` keeps its regex (one answer per sample); `none` becomes the identity.
        let strict = fl.iter().find(|f| f.name == "strict").unwrap();
        assert_eq!(strict.filter.len(), 1);
        assert_eq!(strict.filter[0].function, "regex");
        // The greedy task is untouched.
        assert_eq!(tasks[0].1.cfg.repeats, 1);
    }
}
