//! One micro-batch of the policy update on the fast training graph, and completion log-probs.
//!
//! Rows are `prompt ++ completion`, right-padded to the longest row; each row's positions start at
//! 0, so a row's numbers are those it would get alone. The fast graph's per-token log-probs of the
//! completion tokens become a (B, T_c) leaf; the objectives of `gradus_objectives::rl` turn it into
//! the micro-batch's share of the step's loss; the leaf's gradient, scattered back onto the
//! completion positions, is the `dlogp` the graph back-propagates.

use gradus_model::decoder::ForwardInput;
use gradus_model::fast::FastDecoder;
use gradus_objectives::rl::{
    aggregate, clip_stats, clipped_policy_loss, clipped_value_loss, kl_penalty, kl_term,
    ClipConfig, KlEstimator, LossAggregation, PerToken, StepTotals,
};
use gradus_tensor::{Device, Error, Result, Tensor, Var};
use serde::{Deserialize, Serialize};

/// One completion of a rollout, with what the update needs (kept in checkpoints, so a resumed run
/// continues on the very same generation batch).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Index of the prompt in the step's generation batch (its group).
    pub group: usize,
    pub prompt: Vec<u32>,
    /// New tokens, the EOS included when the completion ended with it.
    pub completion: Vec<u32>,
    /// Ended by EOS or a stop string (false: cut at the maximum length).
    pub terminated: bool,
    /// Whether the completion takes part in the loss (false: masked, e.g. truncated with
    /// `mask_truncated_completions`).
    pub in_loss: bool,
    /// One advantage for the whole completion, or one per completion token (REINFORCE++).
    pub advantages: Vec<f32>,
    /// Per-token log-probs of the policy that generated it (None: the update is on-policy, ρ = 1).
    pub old_logps: Option<Vec<f32>>,
    /// Per-token log-probs of the reference model (None when β = 0).
    pub ref_logps: Option<Vec<f32>>,
    /// PPO: each value head's per-token predictions when the completion was generated (V_old),
    /// `values[k][t]` for head k (one head; constrained PPO: the KL's and one per component).
    #[serde(default)]
    pub values: Option<PerToken>,
    /// PPO: the per-token returns each value head regresses on (GAE: Â + V_old).
    #[serde(default)]
    pub returns: Option<PerToken>,
}

/// PPO's critic terms of a micro-batch: value heads on the final hidden states, each with its
/// clipped loss `coef_k · 0.5·max((V − R)², (V_old + clip(V − V_old, ±clip) − R)²)` aggregated
/// like the policy loss, and whether their gradients also flow into the trunk.
pub struct ValueTerm<'a> {
    pub heads: &'a mut [crate::value_head::ValueHead],
    /// One weight per head.
    pub coefs: &'a [f64],
    pub clip: f64,
    /// True: only the heads learn from the value loss (the trunk's hidden states are detached).
    pub detach: bool,
}

/// The optional terms of a micro-batch's loss beyond the policy surrogate and the KL.
#[derive(Default)]
pub struct Extras<'a> {
    /// Entropy bonus: `− coef · H` per token (H the policy's softmax entropy at the token),
    /// aggregated like the policy loss. The graph must compute entropies (`set_entropy(true)`).
    pub entropy_coef: f64,
    pub value: Option<ValueTerm<'a>>,
}

/// The loss settings of the update (see `gradus_objectives::rl`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossSettings {
    pub clip: ClipConfig,
    /// KL coefficient β in the loss (0: no KL term).
    pub beta: f64,
    pub kl: KlEstimator,
    /// Multiply the KL by the importance ratio (TRL's `use_bias_correction_kl`).
    pub kl_correction: bool,
    pub aggregation: LossAggregation,
}

/// Rows laid out for the fast graph.
struct Packed {
    input_ids: Vec<u32>,
    targets: Vec<u32>,
    positions: Vec<u32>,
    segments: Vec<u32>,
    batch: usize,
    seq_len: usize,
    /// Flat index (into B·T) of each row's first completion target.
    starts: Vec<usize>,
    lens: Vec<usize>,
}

fn pack(rows: &[(&[u32], &[u32])], pad: u32) -> Result<Packed> {
    let b = rows.len();
    if let Some(i) = rows.iter().position(|(p, _)| p.is_empty()) {
        return Err(Error::msg(format!(
            "rl: row {i} has an empty prompt (a completion needs at least one token before it)"
        )));
    }
    let t = rows
        .iter()
        .map(|(p, c)| p.len() + c.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let mut p = Packed {
        input_ids: vec![pad; b * t],
        targets: vec![pad; b * t],
        positions: vec![0; b * t],
        segments: vec![0; b * t],
        batch: b,
        seq_len: t,
        starts: Vec::with_capacity(b),
        lens: Vec::with_capacity(b),
    };
    for (i, (pr, c)) in rows.iter().enumerate() {
        let row: Vec<u32> = pr.iter().chain(c.iter()).copied().collect();
        for (j, &tok) in row.iter().enumerate() {
            p.input_ids[i * t + j] = tok;
            p.segments[i * t + j] = 1;
            if j + 1 < row.len() {
                p.targets[i * t + j] = row[j + 1];
            }
        }
        for j in 0..t {
            p.positions[i * t + j] = j as u32;
        }
        p.starts.push(i * t + pr.len() - 1);
        p.lens.push(c.len());
    }
    Ok(p)
}

fn forward<'a>(fast: &'a mut FastDecoder, p: &Packed) -> Result<&'a [f32]> {
    let inp = ForwardInput {
        input_ids: &p.input_ids,
        batch: p.batch,
        seq_len: p.seq_len,
        position_ids: Some(&p.positions),
        segment_ids: Some(&p.segments),
    };
    fast.forward(&inp, &p.targets)
}

/// Per-token log-probs of each row's completion under the graph's current weights (no training
/// state is kept: call before, not between, a forward and its backward).
pub fn completion_logps(
    fast: &mut FastDecoder,
    rows: &[(&[u32], &[u32])],
    pad: u32,
) -> Result<Vec<Vec<f32>>> {
    if rows.is_empty() {
        return Ok(vec![]);
    }
    let p = pack(rows, pad)?;
    let lp = forward(fast, &p)?;
    Ok(p.starts
        .iter()
        .zip(&p.lens)
        .map(|(&s, &n)| lp[s..s + n].to_vec())
        .collect())
}

/// What one micro-batch reports: its share of the step's loss and sums for the step's metrics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MicroOut {
    /// The micro-batch's share of the step's loss (sums to the step's loss).
    pub loss: f64,
    /// Σ over loss tokens of the KL term's per-token value (before β) and the token count.
    pub kl_sum: f64,
    pub tokens: f64,
    /// Clip indicator sums over loss tokens (sequence ratios: over sequences).
    pub clip_low: f64,
    pub clip_high: f64,
    pub clip_region: f64,
    /// Tokens (sequences, for sequence ratios) the clip sums are over.
    pub clip_count: f64,
    pub clip_low_min: f64,
    pub clip_high_max: f64,
    /// Σ over loss tokens of the policy's entropy (when the entropy bonus is on).
    pub entropy_sum: f64,
    /// Σ over loss tokens of the unscaled value loss (all heads), and of the first head's
    /// predictions (PPO).
    pub value_loss_sum: f64,
    pub value_sum: f64,
}

/// Per-token log-probs and value-head predictions of each row's completion under the graph's
/// current weights (V_t at the position that predicts completion token t); as
/// [`completion_logps`], no training state is kept.
pub fn completion_logps_values(
    fast: &mut FastDecoder,
    rows: &[(&[u32], &[u32])],
    pad: u32,
    heads: &[crate::value_head::ValueHead],
) -> Result<(PerToken, Vec<PerToken>)> {
    if rows.is_empty() {
        return Ok((vec![], vec![]));
    }
    let p = pack(rows, pad)?;
    let lp = forward(fast, &p)?.to_vec();
    let d = fast_hidden_size(fast);
    let h = fast.final_hidden()?;
    let mut lps = Vec::with_capacity(rows.len());
    let mut vals = Vec::with_capacity(rows.len());
    for (&s, &n) in p.starts.iter().zip(&p.lens) {
        lps.push(lp[s..s + n].to_vec());
        let hr = &h[s * d..(s + n) * d];
        vals.push(heads.iter().map(|head| head.values(hr)).collect());
    }
    Ok((lps, vals))
}

fn fast_hidden_size(fast: &FastDecoder) -> usize {
    fast.config().hidden_size
}

/// Forward, loss and backward of one micro-batch: adds ∂(the micro-batch's share of the step's
/// loss)/∂θ into the graph's gradients. `totals` are the whole optimiser step's.
pub fn policy_micro_step(
    fast: &mut FastDecoder,
    samples: &[&Sample],
    s: &LossSettings,
    totals: &StepTotals,
    pad: u32,
) -> Result<MicroOut> {
    policy_micro_step_ext(fast, samples, s, totals, pad, Extras::default())
}

/// [`policy_micro_step`] with an entropy bonus and/or PPO's value loss ([`Extras`]). The value
/// head's gradient is accumulated into the head (its optimiser step is the caller's).
pub fn policy_micro_step_ext(
    fast: &mut FastDecoder,
    samples: &[&Sample],
    s: &LossSettings,
    totals: &StepTotals,
    pad: u32,
    mut ex: Extras,
) -> Result<MicroOut> {
    let b = samples.len();
    if b == 0 {
        return Ok(MicroOut::default());
    }
    let rows: Vec<(&[u32], &[u32])> = samples
        .iter()
        .map(|x| (x.prompt.as_slice(), x.completion.as_slice()))
        .collect();
    let p = pack(&rows, pad)?;
    let tc = p.lens.iter().copied().max().unwrap_or(0).max(1);
    let lp_all = forward(fast, &p)?.to_vec();
    let mut lp = vec![0f32; b * tc];
    let mut old = vec![0f32; b * tc];
    let mut refl = vec![0f32; b * tc];
    let mut mask = vec![0f32; b * tc];
    let mut adv = Vec::with_capacity(b * tc);
    let per_token_adv = samples.iter().any(|x| x.advantages.len() != 1);
    for (i, x) in samples.iter().enumerate() {
        let n = p.lens[i];
        let check = |v: &Option<Vec<f32>>, what: &str| -> Result<()> {
            match v {
                Some(v) if v.len() != n => Err(Error::msg(format!(
                    "rl: sample {i} has {} {what} log-probs for {n} completion tokens",
                    v.len()
                ))),
                _ => Ok(()),
            }
        };
        check(&x.old_logps, "old")?;
        check(&x.ref_logps, "reference")?;
        if s.beta != 0.0 && x.ref_logps.is_none() {
            return Err(Error::msg(format!(
                "rl: sample {i} has no reference log-probs but β = {}",
                s.beta
            )));
        }
        for j in 0..n {
            let v = lp_all[p.starts[i] + j];
            lp[i * tc + j] = v;
            old[i * tc + j] = x.old_logps.as_ref().map_or(v, |o| o[j]);
            refl[i * tc + j] = x.ref_logps.as_ref().map_or(v, |r| r[j]);
            mask[i * tc + j] = if x.in_loss { 1.0 } else { 0.0 };
        }
        if per_token_adv {
            if x.advantages.len() != n {
                return Err(Error::msg(format!(
                    "rl: sample {i} has {} advantages for {n} completion tokens",
                    x.advantages.len()
                )));
            }
            adv.extend_from_slice(&x.advantages);
            adv.extend(std::iter::repeat_n(0.0, tc - n));
        } else {
            adv.push(x.advantages[0]);
        }
    }
    let dev = Device::Cpu;
    let leaf = Var::from_vec(lp, (b, tc), &dev)?;
    let old_t = Tensor::from_vec(old, (b, tc), &dev)?;
    let mask_t = Tensor::from_vec(mask.clone(), (b, tc), &dev)?;
    let pl = clipped_policy_loss(leaf.as_tensor(), &old_t, &adv, &mask_t, &s.clip)?;
    let mut out = MicroOut::default();
    let mut per = pl.per_token.clone();
    if s.beta != 0.0 {
        let ref_t = Tensor::from_vec(refl, (b, tc), &dev)?;
        let kl = kl_penalty(leaf.as_tensor(), &ref_t, s.kl)?;
        let k = kl_term(&kl, &pl.ratio_t, 1.0, s.kl_correction)?;
        out.kl_sum = (k.detach() * &mask_t)?.sum_all()?.to_scalar::<f32>()? as f64;
        per = (per + (k * s.beta)?)?;
    }
    // Per completion token (b, tc) gathered from per-row (B·T) values of the forward.
    let gather = |src: &[f32]| -> Vec<f32> {
        let mut v = vec![0f32; b * tc];
        for i in 0..b {
            for j in 0..p.lens[i] {
                v[i * tc + j] = src[p.starts[i] + j];
            }
        }
        v
    };
    let ent_leaf = if ex.entropy_coef != 0.0 {
        let h = gather(fast.entropies()?);
        out.entropy_sum = h.iter().zip(&mask).map(|(h, m)| (h * m) as f64).sum();
        let leaf = Var::from_vec(h, (b, tc), &dev)?;
        per = (per - (leaf.as_tensor() * ex.entropy_coef)?)?;
        Some(leaf)
    } else {
        None
    };
    let mut value_leaves = Vec::new();
    if let Some(vt) = ex.value.as_ref() {
        if vt.coefs.len() != vt.heads.len() {
            return Err(Error::msg(format!(
                "rl: {} value heads but {} value-loss weights",
                vt.heads.len(),
                vt.coefs.len()
            )));
        }
        let hid = fast.final_hidden()?;
        for (k, head) in vt.heads.iter().enumerate() {
            let v_new = gather(&head.values(hid));
            let (mut v_old, mut ret) = (vec![0f32; b * tc], vec![0f32; b * tc]);
            for (i, x) in samples.iter().enumerate() {
                let n = p.lens[i];
                let (Some(vo), Some(r)) = (
                    x.values.as_ref().and_then(|v| v.get(k)),
                    x.returns.as_ref().and_then(|r| r.get(k)),
                ) else {
                    return Err(Error::msg(format!(
                        "rl: sample {i} has no values/returns for value head {k} (PPO)"
                    )));
                };
                if vo.len() != n || r.len() != n {
                    return Err(Error::msg(format!(
                        "rl: sample {i} has {} values and {} returns (head {k}) for {n} completion tokens",
                        vo.len(),
                        r.len()
                    )));
                }
                v_old[i * tc..i * tc + n].copy_from_slice(vo);
                ret[i * tc..i * tc + n].copy_from_slice(r);
            }
            if k == 0 {
                out.value_sum = v_new.iter().zip(&mask).map(|(v, m)| (v * m) as f64).sum();
            }
            let leaf = Var::from_vec(v_new, (b, tc), &dev)?;
            let vl = clipped_value_loss(
                leaf.as_tensor(),
                &Tensor::from_vec(v_old, (b, tc), &dev)?,
                &Tensor::from_vec(ret, (b, tc), &dev)?,
                vt.clip,
            )?;
            out.value_loss_sum += (vl.detach() * &mask_t)?.sum_all()?.to_scalar::<f32>()? as f64;
            per = (per + (vl * vt.coefs[k])?)?;
            value_leaves.push(leaf);
        }
    }
    let loss = aggregate(&per, &mask_t, s.aggregation, totals)?;
    out.loss = loss.to_scalar::<f32>()? as f64;
    let grads = loss.backward()?;
    let grad_of = |v: &Var| -> Result<Vec<f32>> {
        match grads.get(v.as_tensor()) {
            Some(g) => Ok(g.flatten_all()?.to_vec1()?),
            None => Ok(vec![0.0; b * tc]),
        }
    };
    let g = grad_of(&leaf)?;
    // Scatter (b, tc) gradients back onto the forward's B·T rows.
    let scatter = |g: &[f32]| -> Vec<f32> {
        let mut v = vec![0f32; p.batch * p.seq_len];
        for i in 0..b {
            for j in 0..p.lens[i] {
                v[p.starts[i] + j] = g[i * tc + j];
            }
        }
        v
    };
    let dlogp = scatter(&g);
    let dent = match &ent_leaf {
        Some(l) => Some(scatter(&grad_of(l)?)),
        None => None,
    };
    let mut dhidden = None;
    if let Some(vt) = ex.value.as_mut() {
        let hid = fast.final_hidden()?.to_vec();
        let d = fast_hidden_size(fast);
        let mut dh = vec![0f32; hid.len()];
        for (head, leaf) in vt.heads.iter_mut().zip(&value_leaves) {
            let dv = scatter(&grad_of(leaf)?);
            head.accumulate(&hid, &dv);
            for (r, &g) in dv.iter().enumerate() {
                if g != 0.0 {
                    for (o, &w) in dh[r * d..(r + 1) * d].iter_mut().zip(&head.w) {
                        *o += g * w;
                    }
                }
            }
        }
        if !vt.detach {
            dhidden = Some(dh);
        }
    }
    fast.backward_ext(&dlogp, dent.as_deref(), dhidden.as_deref())?;

    let mask_rows: Vec<Vec<f32>> = mask.chunks(tc).map(|r| r.to_vec()).collect();
    out.tokens = mask.iter().map(|&m| m as f64).sum();
    let st = clip_stats(&pl, &mask_rows);
    let seq = pl.ratio.first().is_some_and(|r| r.len() == 1);
    out.clip_count = if seq { b as f64 } else { out.tokens };
    out.clip_low = st.low_mean * out.clip_count.max(1.0);
    out.clip_high = st.high_mean * out.clip_count.max(1.0);
    out.clip_region = st.region_mean * out.clip_count.max(1.0);
    out.clip_low_min = st.low_min;
    out.clip_high_max = st.high_max;
    Ok(out)
}
