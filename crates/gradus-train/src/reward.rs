//! `gradus train reward`: reward models on preference pairs (their evaluation, shared with
//! `gradus eval reward`, is `gradus_eval::pairwise`).
//!
//! `[objective] kind = bt | bt_margin | scaled_bt | regression` (with `center_coef` for reward
//! centering). The head reads the last non-pad token (the completion's EOS). Regression → BT
//! initialisation (HelpSteer2-Preference): train `regression` first, then start a `bt`/`scaled_bt`
//! run with `model.init_from` = that reward model and `head.init_label` = the output to keep.

use std::path::Path;

use gradus_data::pack::{CursorState, IndexCursor};
use gradus_data::preference::TokenizedPair;
use gradus_data::tokenizer::Tokenizer;
use gradus_model::reward::RewardModel;
use gradus_model::WeightDtype;
use gradus_objectives::math::values;
use gradus_objectives::reward::{
    bradley_terry, bt_margin, centering, regression, scaled_bt, RewardObjective,
};
use gradus_tensor::{Error, Result, Tensor, Var};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::prefs::{load_pairs, pad_id, PrefsSection};
use crate::report::Section;
use crate::trainer::{fit_learner, set_params, write_run_report, FitSummary, Learner};
use gradus_eval::pairwise::{evaluate_reward, reward_pair_scores, scalar_scores, RewardEval};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[derive(Default)]
pub struct HeadSection {
    /// Output names. Default: `["reward"]`, or the data's attribute names for regression.
    pub labels: Vec<String>,
    /// When `model.init_from` is a reward model with several outputs, keep only this one.
    pub init_label: Option<String>,
}

crate::recipe_config! {
    /// The `gradus train reward` config: the shared recipe sections plus `[objective]`, `[head]`,
    /// `[prefs]`.
    pub struct RewardConfig {
        pub objective: RewardObjective,
        pub head: HeadSection,
        pub prefs: PrefsSection,
    }
}

impl RewardConfig {
    pub fn validate(&self) -> Result<()> {
        self.base().validate()?;
        self.objective.validate()?;
        if self.model.init_from.is_none() {
            return Err(Error::config(
                "model.init_from",
                "a reward model starts from a trained decoder (or a reward model)",
            ));
        }
        Ok(())
    }

    fn labels(&self) -> Vec<String> {
        if !self.head.labels.is_empty() {
            return self.head.labels.clone();
        }
        match self.objective {
            RewardObjective::Regression {} => gradus_tasks::synthetic_pairs::ATTRIBUTES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            _ => vec!["reward".into()],
        }
    }
}

/// Checks that every pair carries what the objective needs.
fn check_signals(obj: &RewardObjective, pairs: &[TokenizedPair], k: usize) -> Result<()> {
    for (i, p) in pairs.iter().enumerate() {
        match obj {
            RewardObjective::BtMargin { .. } | RewardObjective::ScaledBt { .. } if p.margin.is_none() => {
                return Err(Error::config("objective.kind", format!("`{}` needs a `margin` in every pair; pair {i} has none", obj.name())))
            }
            RewardObjective::Regression {} => match (&p.chosen_scores, &p.rejected_scores) {
                (Some(a), Some(b)) if a.len() == k && b.len() == k => {}
                _ => {
                    return Err(Error::config(
                        "objective.kind",
                        format!("`regression` needs `chosen_scores`/`rejected_scores` with {k} values (head.labels) in every pair; pair {i} does not"),
                    ))
                }
            },
            _ => {}
        }
    }
    Ok(())
}

struct RmLearner<'a> {
    rm: &'a mut RewardModel,
    tok: &'a Tokenizer,
    pairs: Vec<TokenizedPair>,
    cursor: IndexCursor,
    pad: u32,
    objective: RewardObjective,
}

impl Learner for RmLearner<'_> {
    type Micro = Vec<usize>;
    fn params(&self) -> Vec<(String, Var)> {
        self.rm.params()
    }
    fn next_micro(&mut self) -> Result<Vec<usize>> {
        Ok(self
            .cursor
            .next_indices()
            .ok_or_else(|| Error::msg("no preference data"))?
            .to_vec())
    }
    fn weight(&self, m: &Vec<usize>) -> f64 {
        m.len() as f64
    }
    fn tokens(&self, m: &Vec<usize>) -> u64 {
        m.iter()
            .map(|&i| {
                (2 * self.pairs[i].prompt.len()
                    + self.pairs[i].chosen.len()
                    + self.pairs[i].rejected.len()) as u64
            })
            .sum()
    }
    fn loss(&mut self, idx: &Vec<usize>, norm: f64) -> Result<(Tensor, Vec<(String, f64)>)> {
        let pairs: Vec<&TokenizedPair> = idx.iter().map(|&i| &self.pairs[i]).collect();
        let n = pairs.len();
        let s = reward_pair_scores(self.rm, &pairs, self.pad)?;
        let per = |f: &dyn Fn(&TokenizedPair) -> f64| {
            pairs.iter().map(|p| f(p) as f32).collect::<Vec<f32>>()
        };
        let losses = match self.objective {
            RewardObjective::Regression {} => {
                let mut target: Vec<f32> = Vec::new();
                for p in &pairs {
                    target.extend(p.chosen_scores.iter().flatten().map(|&x| x as f32));
                }
                for p in &pairs {
                    target.extend(p.rejected_scores.iter().flatten().map(|&x| x as f32));
                }
                let l = regression(&s, &target)?;
                (l.narrow(0, 0, n)? + l.narrow(0, n, n)?)?
            }
            ref o => {
                let (rc, rr) = (
                    s.narrow(0, 0, n)?.squeeze(1)?,
                    s.narrow(0, n, n)?.squeeze(1)?,
                );
                let base = match o {
                    RewardObjective::BtMargin { .. } => {
                        bt_margin(&rc, &rr, &per(&|p| p.margin.unwrap_or(0.0)))?
                    }
                    RewardObjective::ScaledBt { .. } => {
                        scaled_bt(&rc, &rr, &per(&|p| p.margin.unwrap_or(1.0)))?
                    }
                    _ => bradley_terry(&rc, &rr)?,
                };
                if o.center_coef() > 0.0 {
                    (base + centering(&rc, &rr, o.center_coef())?)?
                } else {
                    base
                }
            }
        };
        let sc = scalar_scores(&s.detach())?;
        let (c, r) = (values(&sc.narrow(0, 0, n)?)?, values(&sc.narrow(0, n, n)?)?);
        let scale = n as f64 / norm;
        let mean = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>() / v.len().max(1) as f64;
        let acc: Vec<f32> = c
            .iter()
            .zip(&r)
            .map(|(a, b)| (a > b) as u8 as f32)
            .collect();
        let marg: Vec<f32> = c.iter().zip(&r).map(|(a, b)| a - b).collect();
        let metrics = vec![
            ("rewards/accuracy".to_string(), mean(&acc) * scale),
            ("rewards/margin".to_string(), mean(&marg) * scale),
            ("rewards/chosen".to_string(), mean(&c) * scale),
            ("rewards/rejected".to_string(), mean(&r) * scale),
        ];
        Ok(((losses.sum_all()? / norm)?, metrics))
    }
    fn save(&self, dir: &Path) -> Result<()> {
        self.rm.save(dir)?;
        self.tok.save(dir)
    }
    fn load(&mut self, dir: &Path) -> Result<()> {
        let saved = RewardModel::load(dir)?;
        let t: Vec<(String, Tensor)> = saved
            .params()
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().clone()))
            .collect();
        set_params(&self.rm.params(), &t, dir)
    }
    fn cursor(&self) -> Value {
        serde_json::to_value(self.cursor.state()).unwrap_or(Value::Null)
    }
    fn restore_cursor(&mut self, cursor: &Value) -> Result<()> {
        let st: CursorState = serde_json::from_value(cursor.clone()).map_err(|e| {
            Error::msg(format!("trainer_state.json: bad data_cursor {cursor}: {e}"))
        })?;
        self.cursor.restore(st)
    }
}

pub struct RewardSummary {
    pub fit: FitSummary,
    pub eval: RewardEval,
}

/// Runs the recipe (`start` as in [`crate::pretrain::run`]).
pub fn run(cfg: &RewardConfig, start: impl Into<crate::rundir::Start>) -> Result<RewardSummary> {
    cfg.validate()?;
    let base = cfg.base();
    let mut run = crate::prep::start_run_with(&base.run_dir(), cfg, &start.into())?;
    let run_dir = run.path().to_path_buf();
    let resume = run.resuming();

    // 1. Tokenizer, model with its head, pairs.
    let tok = crate::prep::tokenizer_for(&base, &[], resume)?;
    let init = crate::prefs::model_dir(&cfg.model.init_from, "train reward")?;
    let mut rm = if init.join(gradus_model::reward::HEAD_META).exists() {
        crate::checkpoint::verify_checkpoint(&init)?;
        let rm = RewardModel::load(&init)?;
        match &cfg.head.init_label {
            Some(l) => {
                let k = rm.labels.iter().position(|x| x == l).ok_or_else(|| {
                    Error::config(
                        "head.init_label",
                        format!("`{l}` is not one of {:?}", rm.labels),
                    )
                })?;
                rm.select_output(k)?
            }
            None => rm,
        }
    } else {
        let dec = crate::prep::model_for(&base, &tok)?;
        RewardModel::new(dec, cfg.labels(), cfg.run.seed)?
    };
    rm.decoder.cfg.dtype = WeightDtype::F32;
    let is_regression = matches!(cfg.objective, RewardObjective::Regression {});
    if !is_regression && rm.labels.len() != 1 {
        return Err(Error::config(
            "head.init_label",
            format!(
                "`{}` trains one output; the model has {:?}: pick one with head.init_label",
                cfg.objective.name(),
                rm.labels
            ),
        ));
    }
    let data = load_pairs(
        &cfg.data.source,
        &cfg.prefs,
        &tok,
        cfg.data.seq_len,
        cfg.run.seed,
    )?;
    check_signals(&cfg.objective, &data.train, rm.labels.len())?;
    let pad = pad_id(&tok);
    let before = evaluate_reward(&rm, &data.eval, pad)?;

    // 2. Train.
    let n = data.train.len();
    let mut learner = RmLearner {
        rm: &mut rm,
        tok: &tok,
        pairs: data.train.clone(),
        cursor: IndexCursor::new(n, cfg.train.batch_size, cfg.run.seed)?
            .with_shuffle(cfg.prefs.shuffle),
        pad,
        objective: cfg.objective.clone(),
    };
    let fit = fit_learner(&mut learner, &base, &mut run)?;

    // 3. Held-out accuracy, scores, report.
    let eval = evaluate_reward(&rm, &data.eval, pad)?;
    let text = serde_json::to_string_pretty(&json!({"before": before.accuracy, "after": eval}))
        .unwrap_or_default();
    gradus_tensor::io::write_atomic(&run_dir.join("reward_eval.json"), text.as_bytes())?;
    let mut rows = vec![(
        "pairwise accuracy (held-out)".to_string(),
        format!(
            "{:.1}% → {:.1}%",
            100.0 * before.accuracy,
            100.0 * eval.accuracy
        ),
    )];
    rows.extend(
        eval.per_category
            .iter()
            .map(|(k, (c, t, a))| (format!("  {k}"), format!("{c}/{t} ({:.1}%)", 100.0 * a))),
    );
    let extra = vec![
        Section::plot("Reward accuracy (train batches)", &["rewards/accuracy"]),
        Section::plot(
            "Scores",
            &["rewards/chosen", "rewards/rejected", "rewards/margin"],
        ),
        Section::table("Held-out pairs", rows),
    ];
    write_run_report(
        &run_dir,
        &format!("gradus train reward ({})", cfg.objective.name()),
        &base,
        &extra,
    )?;
    Ok(RewardSummary { fit, eval })
}
