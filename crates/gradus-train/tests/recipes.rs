//! End-to-end recipe invariants on tiny CPU runs: exact resume, accumulation equivalence,
//! packed = padded, and the run directory's contents.

use std::path::Path;

use gradus_data::pack::Sequence;
use gradus_model::decoder::Decoder;
use gradus_model::hf::load_decoder;
use gradus_tensor::Device;
use gradus_train::metrics::read_metrics;
use gradus_train::prep::{rows, train_tokenizer};
use gradus_train::recipe::{Engine, RecipeConfig};
use gradus_train::schedule::Schedule;
use gradus_train::trainer::batch_loss;

/// A small JSONL corpus written into `dir`.
fn corpus(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("corpus.jsonl");
    let mut s = String::new();
    for i in 0..120 {
        let a = (i * 7) % 50;
        let b = (i * 13) % 40;
        let line = format!(
            "the sum of {a} and {b} is {}. {}",
            a + b,
            "ab ".repeat(i % 9)
        );
        s.push_str(&serde_json::json!({ "text": line }).to_string());
        s.push('\n');
    }
    std::fs::write(&p, s).unwrap();
    p
}

fn tiny_cfg(dir: &Path, name: &str, data: &Path) -> RecipeConfig {
    let mut c = RecipeConfig::default();
    c.run.dir = dir.to_path_buf();
    c.run.name = name.into();
    c.run.seed = 3;
    c.model.config.hidden_size = 32;
    c.model.config.intermediate_size = 64;
    c.model.config.num_hidden_layers = 2;
    c.model.config.num_attention_heads = 4;
    c.model.config.num_key_value_heads = 2;
    c.tokenizer.train_vocab_size = 300;
    c.data.source = data.display().to_string();
    c.data.seq_len = 32;
    c.train.steps = 20;
    c.train.batch_size = 4;
    c.train.lr = 3e-3;
    c.train.progress = false;
    c.train.weight_norms_every = 5;
    c.schedule = Schedule::Cosine {
        warmup_steps: 3,
        min_lr_ratio: 0.1,
    };
    c
}

fn losses(run_dir: &Path) -> Vec<(u64, u64)> {
    read_metrics(&run_dir.join("metrics.jsonl"))
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["step"].as_u64().unwrap(),
                r["train/loss"].as_f64().unwrap().to_bits(),
            )
        })
        .collect()
}

fn params_bits(m: &Decoder) -> Vec<u32> {
    m.named_params()
        .iter()
        .flat_map(|(_, v)| v.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        .map(f32::to_bits)
        .collect()
}

#[test]
fn resumed_run_is_bit_identical_to_an_uninterrupted_one() {
    // The default engine (`auto`): the fast graph covers this model.
    resume_is_bit_identical(Engine::Auto);
}

#[test]
fn resumed_run_is_bit_identical_on_the_reference_graph() {
    resume_is_bit_identical(Engine::Reference);
}

fn resume_is_bit_identical(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let mut whole = tiny_cfg(dir.path(), "whole", &data);
    whole.train.engine = engine;
    let s = gradus_train::pretrain::run(&whole, false).unwrap();
    assert_eq!(s.steps, 20);

    let mut part = tiny_cfg(dir.path(), "parts", &data);
    part.train.engine = engine;
    part.train.stop_after = 10;
    let s1 = gradus_train::pretrain::run(&part, false).unwrap();
    assert_eq!(s1.steps, 10);
    let s2 = gradus_train::pretrain::run(&part, true).unwrap();
    assert_eq!(s2.steps, 20);

    let a = losses(&dir.path().join("whole"));
    let b = losses(&dir.path().join("parts"));
    assert_eq!(a.len(), 20);
    assert_eq!(a, b, "losses differ after resume");
    let ma = load_decoder(&dir.path().join("whole/checkpoints/step-20"), &Device::Cpu).unwrap();
    let mb = load_decoder(&dir.path().join("parts/checkpoints/step-20"), &Device::Cpu).unwrap();
    assert_eq!(
        params_bits(&ma),
        params_bits(&mb),
        "final weights differ after resume"
    );
    // The loss went down and the run directory is complete.
    let first = f64::from_bits(a[0].1);
    let last = f64::from_bits(a[19].1);
    assert!(last < first, "loss did not fall: {first} → {last}");
    let run = dir.path().join("whole");
    for f in ["config.resolved.toml", "metrics.jsonl", "report.html"] {
        assert!(run.join(f).exists(), "missing {f}");
    }
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "optimizer.safetensors",
        "trainer_state.json",
    ] {
        assert!(
            run.join("checkpoints/step-20").join(f).exists(),
            "checkpoint lacks {f}"
        );
    }
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("train/loss"));
    let rows = read_metrics(&run.join("metrics.jsonl")).unwrap();
    assert!(
        rows[4].contains_key("weights/layer.0/norm"),
        "{:?}",
        rows[4].keys().collect::<Vec<_>>()
    );
    for k in ["train/lr", "train/grad_norm", "train/tokens_per_s"] {
        assert!(rows[0].contains_key(k), "metrics lack {k}");
    }
}

#[test]
fn batch_8_equals_batch_2_times_accumulation_4() {
    accumulation_is_invariant(Engine::Auto);
}

#[test]
fn batch_8_equals_batch_2_times_accumulation_4_on_the_reference_graph() {
    accumulation_is_invariant(Engine::Reference);
}

fn accumulation_is_invariant(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let mut a = tiny_cfg(dir.path(), "b8", &data);
    a.train.engine = engine;
    a.train.steps = 2;
    a.train.batch_size = 8;
    a.train.grad_accum = 1;
    a.train.max_grad_norm = 0.0;
    a.schedule = Schedule::Constant { warmup_steps: 0 };
    let mut b = a.clone();
    b.run.name = "b2x4".into();
    b.train.batch_size = 2;
    b.train.grad_accum = 4;
    gradus_train::pretrain::run(&a, false).unwrap();
    gradus_train::pretrain::run(&b, false).unwrap();
    let la = losses(&dir.path().join("b8"));
    let lb = losses(&dir.path().join("b2x4"));
    assert_eq!((la.len(), lb.len()), (2, 2), "both runs log every step");
    for ((_, x), (_, y)) in la.iter().zip(&lb) {
        let (x, y) = (f64::from_bits(*x), f64::from_bits(*y));
        assert!((x - y).abs() < 1e-5, "loss {x} vs {y}");
    }
    let ma = load_decoder(&dir.path().join("b8/checkpoints/step-2"), &Device::Cpu).unwrap();
    let mb = load_decoder(&dir.path().join("b2x4/checkpoints/step-2"), &Device::Cpu).unwrap();
    let d = params_bits(&ma)
        .iter()
        .zip(params_bits(&mb))
        .map(|(x, y)| (f32::from_bits(*x) - f32::from_bits(y)).abs())
        .fold(0.0, f32::max);
    assert!(d < 1e-5, "weights differ by {d}");
    // The comparison can fail: a run whose steps see 2 rows instead of 8 (batch 2 × accumulation 1)
    // ends with weights far outside the tolerance.
    let mut c = a.clone();
    c.run.name = "b2".into();
    c.train.batch_size = 2;
    gradus_train::pretrain::run(&c, false).unwrap();
    let mc = load_decoder(&dir.path().join("b2/checkpoints/step-2"), &Device::Cpu).unwrap();
    let dc = params_bits(&ma)
        .iter()
        .zip(params_bits(&mc))
        .map(|(x, y)| (f32::from_bits(*x) - f32::from_bits(y)).abs())
        .fold(0.0, f32::max);
    assert!(dc > 1e-3, "a different batching moves the weights by {dc}");
}

#[test]
fn packed_and_padded_batches_give_the_same_loss() {
    let dir = tempfile::tempdir().unwrap();
    let texts: Vec<String> = (0..30)
        .map(|i| format!("doc {i}: {}", "xy z ".repeat(1 + i % 7)))
        .collect();
    let tok = train_tokenizer(&texts, 300).unwrap();
    let mut cfg = tiny_cfg(dir.path(), "x", Path::new("unused"));
    cfg.data.seq_len = 64;
    let mut c = cfg.model.config.clone();
    c.vocab_size = tok.vocab_size();
    let model = Decoder::new_random(&c, 1, &Device::Cpu).unwrap();
    let seqs: Vec<Sequence> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let ids = tok.encode(t, false).unwrap();
            let n = ids.len();
            // A mask that is not all-true, as in SFT: the first 3 tokens are prompt.
            Sequence {
                ids,
                loss_mask: (0..n).map(|j| j >= 3 || i % 2 == 0).collect(),
            }
        })
        .collect();
    let total = |pack: bool| -> (f64, usize) {
        let mut c = cfg.clone();
        c.data.pack = pack;
        let r = rows(&c, &seqs, 0).unwrap();
        let n = r.len();
        let b = gradus_data::pack::Batch::from_rows(r.iter()).unwrap();
        let norm = b.num_target_tokens() as f64;
        (
            batch_loss(&model, &b, norm)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64,
            n,
        )
    };
    let (packed, n_packed) = total(true);
    let (padded, n_padded) = total(false);
    assert!(
        n_packed < n_padded,
        "packing should use fewer rows ({n_packed} vs {n_padded})"
    );
    assert!(
        (packed - padded).abs() < 1e-5,
        "packed {packed} vs padded {padded}"
    );
}

#[test]
fn bad_config_values_name_the_field() {
    let mut c = RecipeConfig::default();
    c.train.batch_size = 0;
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("train.batch_size"));
    let mut c = RecipeConfig::default();
    c.model.config.num_key_value_heads = 3;
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("num_key_value_heads"));
}

#[test]
fn quickstart_fast_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let o = gradus_train::quickstart::QuickstartOptions {
        dir: dir.path().to_path_buf(),
        size: gradus_train::quickstart::QuickstartSize::Smoke,
        seed: 0,
        progress: false,
        overwrite: false,
        overrides: Vec::new(),
    };
    let out = gradus_train::quickstart::run(&o).unwrap();
    assert!(out.report.exists());
    let html = std::fs::read_to_string(&out.report).unwrap();
    assert!(
        html.contains("Samples before SFT")
            && html.contains("Samples after SFT")
            && html.contains("<svg")
    );
    assert!(
        (0.0..=1.0).contains(&out.accuracy_before) && (0.0..=1.0).contains(&out.accuracy_after)
    );
    assert!(out
        .pretrain_dir
        .join("checkpoints/step-6/tokenizer.json")
        .exists());
}

/// The seeded guard of the quickstart at a reduced size (a 2-layer, 64-wide model, 500 pretraining
/// steps at peak learning rate 6e-3 + 300 SFT steps at 2e-3, 60 held-out problems per kind, the full
/// plan's task: equation answers, program traces). Measured with seed 0 (`gradus quickstart
/// --reduced`; the release binary and this debug-profile test give the same numbers): 12/120 correct
/// before SFT (10.0%; arithmetic 1/60, programs 11/60) and 29/120 after (24.2% [17.4, 32.6];
/// arithmetic 3/60, programs 26/60). The guard asserts at least 20/120 after SFT (9 problems of
/// margin: 20/120 = 16.7% is just below the measured result's 95% Wilson lower bound, 17.4%, so
/// another CPU family's rounding, which changes the trajectory as a seed would, still passes), and
/// at least 8 more correct than before (the measured gain is 17): skipping SFT, or SFT not learning,
/// leaves 12/120 and fails both; a measured ablation with SFT cut to 2 steps (`--plan-set
/// sft_steps=2 --plan-set warmup=1`, which also changes pretraining's warm-up) gave 16/120 → 19/120
/// and fails both too (the gain check is the sharper one). It also checks that the results reach the SFT run's metrics and
/// that every graded answer is written to the samples file.
#[test]
fn quickstart_reduced_learns_the_task() {
    let dir = tempfile::tempdir().unwrap();
    let o = gradus_train::quickstart::QuickstartOptions {
        dir: dir.path().to_path_buf(),
        size: gradus_train::quickstart::QuickstartSize::Reduced,
        seed: 0,
        progress: false,
        overwrite: false,
        overrides: Vec::new(),
    };
    let out = gradus_train::quickstart::run(&o).unwrap();
    eprintln!("{}", out.summary);
    let all = |k: &[gradus_train::quickstart::KindAccuracy]| k.last().unwrap().clone();
    let (before, after) = (all(&out.kinds_before), all(&out.kinds_after));
    assert_eq!(before.kind, "all");
    assert_eq!(after.n, 120);
    assert!((out.accuracy_after - after.accuracy()).abs() < 1e-12);
    assert!(
        after.correct >= before.correct + 8,
        "before {before:?} after {after:?}"
    );
    assert!(
        out.accuracy_after >= REDUCED_THRESHOLD,
        "accuracy after SFT {:.3} < {REDUCED_THRESHOLD}",
        out.accuracy_after
    );
    // The task's results are in the SFT run's metrics (and so its TensorBoard file).
    let rows = gradus_train::metrics::read_metrics(&out.sft_dir.join("metrics.jsonl")).unwrap();
    let logged = rows
        .iter()
        .find_map(|r| r.get("task/after_sft/all"))
        .and_then(|v| v.as_f64())
        .unwrap();
    assert!((logged - out.accuracy_after).abs() < 1e-12);
    // Every graded answer, before and after, is in the samples file.
    let lines =
        std::fs::read_to_string(out.sft_dir.join(gradus_train::quickstart::SAMPLES_FILE)).unwrap();
    let rows: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2 * 120);
    let correct_after = rows
        .iter()
        .filter(|r| r["when"] == "after_sft" && r["correct"] == true)
        .count();
    assert_eq!(correct_after, after.correct);
}

/// Plan overrides (`gradus quickstart --plan-set`) apply as TOML values; a wrong key or value is
/// named, never a panic.
#[test]
fn quickstart_plan_overrides_name_what_is_wrong() {
    use gradus_train::quickstart::{plan, QuickstartSize};
    let full = plan(QuickstartSize::Full);
    let p = full
        .with_overrides(&[
            "sft_steps=7".into(),
            "trace = true".into(),
            "pre_lr=1e-3".into(),
        ])
        .unwrap();
    assert_eq!((p.sft_steps, p.trace, p.pre_lr), (7, true, 1e-3));
    assert_eq!(p.hidden, full.hidden);
    let e = full.with_overrides(&["sft_stepz=7".into()]).unwrap_err();
    assert!(e.to_string().contains("sft_stepz"), "{e}");
    let e = full
        .with_overrides(&["sft_steps=\"many\"".into()])
        .unwrap_err();
    assert!(e.to_string().contains("sft_steps"), "{e}");
    let e = full.with_overrides(&["sft_steps".into()]).unwrap_err();
    assert!(e.to_string().contains("key=value"), "{e}");
}

#[test]
fn wilson_interval_by_hand() {
    use gradus_train::quickstart::wilson_95;
    // k = 5, n = 10, z = 1.96: p = 0.5, z² = 3.8416; denominator 1 + 0.38416 = 1.38416;
    // centre (0.5 + 0.19208) / 1.38416 = 0.5; half = 1.96 · sqrt(0.025 + 0.009604) / 1.38416
    // = 1.96 · 0.186021 / 1.38416 = 0.26341: [0.23659, 0.76341].
    let (lo, hi) = wilson_95(5, 10);
    assert!(
        (lo - 0.23659).abs() < 1e-5 && (hi - 0.76341).abs() < 1e-5,
        "{lo} {hi}"
    );
    // k = 0, n = 20: lower 0; upper = (z²/2n + z·sqrt(z²/4n²)) / (1 + z²/n) = 2·0.09604 / 1.19208 = 0.161130.
    let (lo, hi) = wilson_95(0, 20);
    assert_eq!(lo, 0.0);
    assert!((hi - 0.161130).abs() < 1e-5, "{hi}");
    assert_eq!(wilson_95(0, 0), (0.0, 1.0));
}

#[test]
fn sft_on_chat_jsonl_trains_only_on_assistant_turns() {
    let dir = tempfile::tempdir().unwrap();
    // A pretrained starting point: a few pretraining steps on the small corpus.
    let data = corpus(dir.path());
    let mut pre = tiny_cfg(dir.path(), "base", &data);
    pre.train.steps = 3;
    pre.schedule = Schedule::Constant { warmup_steps: 0 };
    gradus_train::pretrain::run(&pre, false).unwrap();
    let base = dir.path().join("base/checkpoints/step-3");

    let chat = dir.path().join("chat.jsonl");
    let mut s = String::new();
    for i in 0..40 {
        let m = serde_json::json!({"messages": [
            {"role": "user", "content": format!("add {i} and 1")},
            {"role": "assistant", "content": format!("{}", i + 1)},
        ]});
        s.push_str(&m.to_string());
        s.push('\n');
    }
    std::fs::write(&chat, s).unwrap();
    let mut sft = tiny_cfg(dir.path(), "sft", &chat);
    sft.model.init_from = Some(base.clone());
    sft.train.steps = 8;
    sft.schedule = Schedule::Constant { warmup_steps: 0 };
    let out = gradus_train::sft::run(&sft, false).unwrap();
    assert!(out.last_loss.unwrap() < out.first_loss.unwrap(), "{out:?}");
    let a = load_decoder(&base, &Device::Cpu).unwrap();
    let b = load_decoder(&dir.path().join("sft/checkpoints/step-8"), &Device::Cpu).unwrap();
    assert_ne!(params_bits(&a), params_bits(&b), "SFT changed no parameter");

    // The checkpoint carries the chat template it was trained with (the base had none: ChatML)
    // and a generation_config.json with the tokenizer's ids, as transformers reads them.
    let ck = dir.path().join("sft/checkpoints/step-8");
    let tcfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ck.join("tokenizer_config.json")).unwrap())
            .unwrap();
    assert_eq!(
        tcfg["chat_template"].as_str(),
        Some(gradus_data::chat::CHATML_TEMPLATE)
    );
    let base_tcfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(base.join("tokenizer_config.json")).unwrap())
            .unwrap();
    assert!(
        base_tcfg.get("chat_template").is_none(),
        "pretraining saves no template"
    );
    let gen: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ck.join("generation_config.json")).unwrap())
            .unwrap();
    let t = gradus_data::tokenizer::Tokenizer::from_dir(&ck).unwrap();
    assert_eq!(gen["eos_token_id"].as_u64(), t.eos_id().map(u64::from));
    assert_eq!(gen["pad_token_id"].as_u64(), t.pad_id().map(u64::from));
    assert_eq!(gen["bos_token_id"].as_u64(), t.bos_id().map(u64::from));
    assert!(t.eos_id().is_some() && t.pad_id().is_some());

    // The loss mask: only assistant content (+ end-of-turn) tokens are targets.
    let tok = gradus_data::tokenizer::Tokenizer::from_dir(&base).unwrap();
    let ex = gradus_data::dataset::read_dataset(
        &chat,
        gradus_data::dataset::Shape::Auto,
        &Default::default(),
    )
    .unwrap();
    let seqs = gradus_train::sft::sequences(&tok, &ex[..1], true).unwrap();
    let picked: Vec<u32> = seqs[0]
        .ids
        .iter()
        .zip(&seqs[0].loss_mask)
        .filter(|(_, &m)| m)
        .map(|(&i, _)| i)
        .collect();
    let text = tok.decode(&picked, false).unwrap();
    assert_eq!(text, "1<|im_end|>");
}

/// The accuracy the reduced quickstart must reach after SFT: 20/120, 9 problems below the 29/120 it
/// reaches with seed 0 (see `quickstart_reduced_learns_the_task`).
const REDUCED_THRESHOLD: f64 = 20.0 / 120.0 - 1e-9;

/// Every checkpoint carries a Hugging Face model card: front matter transformers' hub reads, the
/// run's name and step, its data, the loss last logged (the same number as metrics.jsonl's last
/// line at that step) and the resolved config.
#[test]
fn checkpoints_carry_a_model_card() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let mut c = tiny_cfg(dir.path(), "card", &data);
    c.train.steps = 6;
    c.train.save_every = 3;
    let s = gradus_train::pretrain::run(&c, false).unwrap();
    let run = s.run_dir;
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    for step in [3u64, 6] {
        let card = std::fs::read_to_string(run.join(format!("checkpoints/step-{step}/README.md")))
            .unwrap();
        assert!(
            card.starts_with("---\nlibrary_name: transformers\ntags:\n- gradus\n---\n"),
            "{card}"
        );
        assert!(card.contains(&format!("# card (step {step})")), "{card}");
        assert!(
            card.contains(&format!("for {step} of 6 optimiser steps")),
            "{card}"
        );
        assert!(
            card.contains(&format!("- Data: `{}`", data.display())),
            "{card}"
        );
        // The loss of the last metrics line written up to this step.
        let loss = metrics
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["step"].as_u64().is_some_and(|s| s <= step))
            .filter_map(|v| v["train/loss"].as_f64())
            .next_back()
            .unwrap();
        assert!(
            card.contains(&format!("| train/loss | {loss} |")),
            "{loss}: {card}"
        );
        let cfg_text = std::fs::read_to_string(run.join("config.resolved.toml")).unwrap();
        assert!(card.contains(cfg_text.trim_end()), "{card}");
    }
}
