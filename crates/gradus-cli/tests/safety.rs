//! Issue 10 with real processes: two trainers on one run directory, the stale lock of a killed
//! trainer, SIGTERM (what Slurm sends before the kill), a new run over an old one, resuming a
//! finished run, NaN weights in `score`. Each test reproduces the original failure (exit 0 with
//! work lost or mixed) and checks the refusal or the recovery.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn gradus(args: &[String], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gradus"))
        .args(args)
        .current_dir(cwd)
        .env_remove("GRADUS_LOG")
        .output()
        .expect("running gradus")
}

fn spawn(args: &[String], cwd: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_gradus"))
        .args(args)
        .current_dir(cwd)
        .env_remove("GRADUS_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting gradus")
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn corpus(dir: &Path) -> PathBuf {
    let p = dir.join("corpus.jsonl");
    let s: String = (0..40)
        .map(|i| {
            format!(
                "{}\n",
                serde_json::json!({"text": format!("{i} and {} make {}", i % 7, i + i % 7)})
            )
        })
        .collect();
    std::fs::write(&p, s).unwrap();
    p
}

/// A tiny pretraining command (the model and data are small, so a step takes milliseconds).
fn train_args(data: &Path, name: &str, steps: u64, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = ["train", "pretrain"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for s in [
        format!("data.source={}", data.display()),
        format!("run.name={name}"),
        "run.dir=runs".into(),
        "model.config.hidden_size=16".into(),
        "model.config.intermediate_size=32".into(),
        "model.config.num_hidden_layers=1".into(),
        "model.config.num_attention_heads=2".into(),
        "model.config.num_key_value_heads=1".into(),
        "tokenizer.train_vocab_size=270".into(),
        "data.seq_len=16".into(),
        "train.batch_size=2".into(),
        "train.progress=false".into(),
        "train.save_every=1".into(),
        "train.weight_norms_every=0".into(),
        format!("train.steps={steps}"),
    ] {
        a.push("--set".into());
        a.push(s);
    }
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// Waits until the run has logged at least `n` steps (or panics after a minute).
fn wait_for_steps(run: &Path, n: usize, child: &mut Child) {
    let t0 = Instant::now();
    loop {
        let lines = std::fs::read_to_string(run.join("metrics.jsonl"))
            .map(|s| s.lines().count())
            .unwrap_or(0);
        if lines >= n && run.join("checkpoints").exists() {
            return;
        }
        if let Ok(Some(st)) = child.try_wait() {
            let o = child.stderr.take().map(|mut e| {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut e, &mut s).ok();
                s
            });
            panic!("the trainer exited early ({st}): {o:?}");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the trainer logged no step in 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kill(sig: &str, pid: u32) {
    let st = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("running kill");
    assert!(st.success());
}

#[test]
fn a_second_trainer_on_a_running_run_is_refused_and_sigterm_checkpoints_and_says_how_to_resume() {
    let d = tempfile::tempdir().unwrap();
    let data = corpus(d.path());
    let run = d.path().join("runs/busy");
    let args = train_args(&data, "busy", 1_000_000, &[]);
    let mut first = spawn(&args, d.path());
    wait_for_steps(&run, 2, &mut first);

    // The original failure: the second process also trained into the directory, both exit 0.
    for extra in [&[][..], &["--resume"][..], &["--overwrite"][..]] {
        let mut a = args.clone();
        a.extend(extra.iter().map(|s| s.to_string()));
        let o = gradus(&a, d.path());
        let e = err(&o);
        assert_eq!(o.status.code(), Some(1), "{extra:?}: {e}");
        assert!(
            e.contains(&format!("in use by process {}", first.id())) && e.contains("host"),
            "{extra:?}: {e}"
        );
        assert!(!e.contains("panicked"));
    }
    assert!(
        run.exists(),
        "--overwrite must not move a run that is in use"
    );

    // SIGTERM: the step finishes, a checkpoint is written, the exit is non-zero and says how to resume.
    kill("-TERM", first.id());
    let o = first.wait_with_output().unwrap();
    let e = err(&o);
    assert_eq!(o.status.code(), Some(128 + 15), "{e}");
    assert!(e.contains("interrupted by SIGTERM after step"), "{e}");
    assert!(
        e.contains("to continue: gradus train pretrain") && e.trim_end().ends_with("--resume"),
        "{e}"
    );
    let step: u64 = e
        .split("after step ")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        run.join(format!("checkpoints/step-{step}/checksums.json"))
            .exists(),
        "no checkpoint at the interrupted step {step}: {e}"
    );
    assert!(!run.join("run.lock").exists());

    // The resume continues from that step (stop_after may change per invocation).
    let mut a = args.clone();
    a.extend(
        ["--resume", "--set", "train.stop_after=1"]
            .iter()
            .map(|s| s.to_string()),
    );
    let o = gradus(&a, d.path());
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        out(&o).contains(&format!("resumed at step {step}")),
        "{}",
        out(&o)
    );
    assert!(run.join(format!("checkpoints/step-{}", step + 1)).exists());
}

#[test]
fn the_stale_lock_of_a_killed_trainer_is_taken_over() {
    let d = tempfile::tempdir().unwrap();
    let data = corpus(d.path());
    let run = d.path().join("runs/killed");
    let args = train_args(&data, "killed", 1_000_000, &[]);
    let mut first = spawn(&args, d.path());
    wait_for_steps(&run, 2, &mut first);
    let pid = first.id();
    kill("-KILL", pid);
    let _ = first.wait();
    let lock = std::fs::read_to_string(run.join("run.lock")).unwrap();
    assert!(
        lock.contains(&format!("\"pid\":{pid}")),
        "the dead trainer's lock file stays behind: {lock}"
    );

    let mut a = args.clone();
    a.extend(
        ["--resume", "--set", "train.stop_after=1"]
            .iter()
            .map(|s| s.to_string()),
    );
    let o = gradus(&a, d.path());
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        err(&o).contains(&format!("stale lock of process {pid}")),
        "{}",
        err(&o)
    );
    assert!(out(&o).contains("resumed at step"), "{}", out(&o));
}

#[test]
fn the_same_command_twice_is_refused_overwrite_keeps_the_old_run_and_a_finished_run_says_so() {
    let d = tempfile::tempdir().unwrap();
    let data = corpus(d.path());
    let run = d.path().join("runs/twice");
    let args = train_args(&data, "twice", 2, &[]);
    let o = gradus(&args, d.path());
    assert!(o.status.success(), "{}", err(&o));
    let metrics = std::fs::read(run.join("metrics.jsonl")).unwrap();

    // Was: exit 0, metrics.jsonl truncated, checkpoints replaced.
    let o = gradus(&args, d.path());
    let e = err(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("already holds a run") && e.contains("--resume") && e.contains("--overwrite"),
        "{e}"
    );
    assert_eq!(std::fs::read(run.join("metrics.jsonl")).unwrap(), metrics);

    // Was: "loss NaN → NaN".
    let mut a = args.clone();
    a.push("--resume".into());
    let o = gradus(&a, d.path());
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        out(&o).contains("already complete at step 2") && !out(&o).contains("NaN"),
        "{}",
        out(&o)
    );

    // Was (--resume --set train.steps=N): the schedule changed silently. Now the change is said
    // and recorded (without --set, e.g. an edited --config, it is refused: tests/rundir.rs).
    let o = gradus(&train_args(&data, "twice", 4, &["--resume"]), d.path());
    assert!(o.status.success(), "{}", err(&o));
    assert!(err(&o).contains("train.steps 2 → 4"), "{}", err(&o));
    let rec = std::fs::read_to_string(run.join("config.resolved.toml")).unwrap();
    assert!(
        rec.contains("[[run.history]]") && rec.contains("key = \"train.steps\""),
        "{rec}"
    );
    let metrics = std::fs::read(run.join("metrics.jsonl")).unwrap();

    let mut a2 = args.clone();
    a2.push("--overwrite".into());
    let o = gradus(&a2, d.path());
    assert!(o.status.success(), "{}", err(&o));
    let aside: Vec<PathBuf> = std::fs::read_dir(d.path().join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("twice.replaced-")
        })
        .collect();
    assert_eq!(aside.len(), 1);
    assert_eq!(
        std::fs::read(aside[0].join("metrics.jsonl")).unwrap(),
        metrics,
        "the old run is kept as it was"
    );
}

#[test]
fn score_refuses_nan_weights() {
    let d = tempfile::tempdir().unwrap();
    let data = corpus(d.path());
    let o = gradus(&train_args(&data, "poisoned", 1, &[]), d.path());
    assert!(o.status.success(), "{}", err(&o));
    let ck = d.path().join("runs/poisoned/checkpoints/step-1");
    let ids = vec![
        "score".to_string(),
        "--model".into(),
        ck.display().to_string(),
        "--ids".into(),
        "1,2,3".into(),
    ];
    assert!(gradus(&ids, d.path()).status.success());

    // Poison one weight (a diverged run would save such a checkpoint with a valid manifest).
    let f = ck.join("model.safetensors");
    let mut t = gradus_tensor::io::read_safetensors(&f, &gradus_tensor::Device::Cpu).unwrap();
    let i = t
        .iter()
        .position(|l| l.name.contains("layers.0.self_attn.q_proj"))
        .unwrap();
    let mut v = t[i].tensor.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    v[3] = f32::NAN;
    t[i].tensor =
        gradus_tensor::Tensor::from_vec(v, t[i].tensor.dims(), &gradus_tensor::Device::Cpu)
            .unwrap();
    let named: Vec<(String, gradus_tensor::Tensor)> =
        t.into_iter().map(|l| (l.name, l.tensor)).collect();
    gradus_tensor::io::write_safetensors(&f, &named, gradus_tensor::io::StoreDtype::F32).unwrap();
    gradus_train::checkpoint::write_checksums(&ck).unwrap();

    // Was: NaN log-probs, exit 0.
    let o = gradus(&ids, d.path());
    let e = err(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("layers.0.self_attn.q_proj") && e.contains("non-finite"),
        "{e}"
    );
}
