//! Checkpoint directory protocol: atomic step-N, crash safety, pruning, leftovers, trainer state.

use std::fs;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use gradus_tensor::io::{read_native, write_native};
use gradus_tensor::rng::Rng;
use gradus_train::checkpoint::*;

fn write_marker(dir: &Path, text: &str) -> gradus_tensor::Result<()> {
    fs::write(dir.join("marker.txt"), text)
        .map_err(|e| gradus_tensor::Error::io(dir.join("marker.txt"), e))
}

fn marker(p: &Path) -> String {
    fs::read_to_string(p.join("marker.txt")).unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir.join(CHECKPOINTS_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn save_list_latest_and_prune() {
    let run = tempfile::tempdir().unwrap();
    assert_eq!(latest_checkpoint(run.path()).unwrap(), None);
    for step in [10u64, 20, 30, 40] {
        let p = save_checkpoint(
            run.path(),
            step,
            |d| write_marker(d, &format!("s{step}")),
            2,
        )
        .unwrap();
        assert_eq!(
            p,
            run.path().join("checkpoints").join(format!("step-{step}"))
        );
    }
    // keep_last = 2: 30 and 40 remain, nothing hidden is left behind.
    assert_eq!(names(run.path()), vec!["step-30", "step-40"]);
    let list = list_checkpoints(run.path()).unwrap();
    assert_eq!(
        list.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        vec![30, 40]
    );
    let latest = latest_checkpoint(run.path()).unwrap().unwrap();
    assert_eq!(marker(&latest), "s40");
    // Numeric, not lexicographic, order: step-100 is newer than step-40.
    save_checkpoint(run.path(), 100, |d| write_marker(d, "s100"), 0).unwrap();
    assert_eq!(
        marker(&latest_checkpoint(run.path()).unwrap().unwrap()),
        "s100"
    );
    assert_eq!(names(run.path()), vec!["step-100", "step-30", "step-40"]); // keep_last 0 keeps all
}

#[test]
fn failing_or_panicking_writer_leaves_good_checkpoints_alone() {
    let run = tempfile::tempdir().unwrap();
    save_checkpoint(run.path(), 5, |d| write_marker(d, "good"), 1).unwrap();

    // An error half-way through writing the same step and a newer one.
    for step in [5u64, 6] {
        let e = save_checkpoint(
            run.path(),
            step,
            |d| {
                write_marker(d, "partial")?;
                Err(gradus_tensor::Error::msg("disk full"))
            },
            1,
        )
        .unwrap_err();
        assert!(e.to_string().contains("disk full"));
    }
    assert_eq!(names(run.path()), vec!["step-5"]);
    assert_eq!(
        marker(&latest_checkpoint(run.path()).unwrap().unwrap()),
        "good"
    );

    // A panic mid-write.
    let r = std::panic::catch_unwind(|| {
        let _ = save_checkpoint(
            run.path(),
            7,
            |d| {
                write_marker(d, "partial").unwrap();
                panic!("killed");
            },
            1,
        );
    });
    assert!(r.is_err());
    assert_eq!(
        marker(&latest_checkpoint(run.path()).unwrap().unwrap()),
        "good"
    );
    assert_eq!(list_checkpoints(run.path()).unwrap().len(), 1);
}

#[test]
fn leftovers_of_a_killed_process_are_ignored_then_cleaned() {
    let run = tempfile::tempdir().unwrap();
    save_checkpoint(run.path(), 1, |d| write_marker(d, "one"), 3).unwrap();
    let ck = run.path().join(CHECKPOINTS_DIR);
    // A process killed while writing step 2, and one killed while deleting step 0.
    fs::create_dir(ck.join(".step-2.tmp-99999")).unwrap();
    fs::write(ck.join(".step-2.tmp-99999/marker.txt"), "torn").unwrap();
    fs::create_dir(ck.join(".step-0.del-99999")).unwrap();
    // Unrelated names are ignored, not deleted.
    fs::create_dir(ck.join("notes")).unwrap();
    fs::create_dir(ck.join("step-x")).unwrap();
    assert_eq!(list_checkpoints(run.path()).unwrap().len(), 1);
    assert_eq!(
        marker(&latest_checkpoint(run.path()).unwrap().unwrap()),
        "one"
    );

    save_checkpoint(run.path(), 3, |d| write_marker(d, "three"), 3).unwrap();
    assert_eq!(
        names(run.path()),
        vec!["notes", "step-1", "step-3", "step-x"]
    );
}

#[test]
fn replacing_a_step_and_recovering_an_interrupted_replacement() {
    let run = tempfile::tempdir().unwrap();
    save_checkpoint(run.path(), 4, |d| write_marker(d, "first"), 0).unwrap();
    save_checkpoint(run.path(), 4, |d| write_marker(d, "second"), 0).unwrap();
    assert_eq!(names(run.path()), vec!["step-4"]);
    assert_eq!(marker(&run.path().join("checkpoints/step-4")), "second");

    // Killed between "step-4 -> .step-4.old-PID" and ".tmp -> step-4": the old one still counts.
    let ck = run.path().join(CHECKPOINTS_DIR);
    fs::rename(ck.join("step-4"), ck.join(".step-4.old-4242")).unwrap();
    fs::create_dir(ck.join(".step-4.tmp-4242")).unwrap();
    let latest = latest_checkpoint(run.path()).unwrap().unwrap();
    assert_eq!(marker(&latest), "second");
    // The next save puts it back under its name.
    save_checkpoint(run.path(), 5, |d| write_marker(d, "five"), 0).unwrap();
    assert_eq!(names(run.path()), vec!["step-4", "step-5"]);
    assert_eq!(marker(&ck.join("step-4")), "second");
}

#[test]
fn trainer_state_roundtrips_the_rng_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(42);
    for _ in 0..1001 {
        rng.next_u64();
    }
    let mut st = TrainerState::new(17, 2, rng.state());
    st.tokens_seen = 123_456_789_012;
    st.data_cursor = serde_json::json!({"index": 77, "order_seed": 3});
    st.extra = serde_json::json!({"best_eval": 1.25});
    st.save(dir.path()).unwrap();
    let back = TrainerState::load(dir.path()).unwrap();
    assert_eq!(back, st);
    let mut r2 = Rng::from_state(back.rng.to_state().unwrap());
    assert_eq!(
        (0..4).map(|_| rng.next_u64()).collect::<Vec<_>>(),
        (0..4).map(|_| r2.next_u64()).collect::<Vec<_>>()
    );

    // Malformed and unknown fields are errors naming the file / field.
    let p = dir.path().join(TRAINER_STATE_FILE);
    fs::write(&p, "{\"step\": 1, \"epoch\": 0, \"rng\": {\"seed\": \"zz\", \"word_pos\": \"0\", \"stream\": 0}}").unwrap();
    let e = TrainerState::load(dir.path())
        .unwrap()
        .rng
        .to_state()
        .unwrap_err()
        .to_string();
    assert!(e.contains("rng.seed"), "{e}");
    fs::write(&p, "{\"step\": 1, \"epoch\": 0, \"stepz\": 3}").unwrap();
    let e = TrainerState::load(dir.path()).unwrap_err().to_string();
    assert!(e.contains("trainer_state.json:1:"), "{e}");
}

#[test]
fn safetensors_helpers_roundtrip_and_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.safetensors");
    let a = Tensor::arange(0f32, 6., &Device::Cpu)
        .unwrap()
        .reshape((2, 3))
        .unwrap();
    let b = Tensor::new(7i64, &Device::Cpu).unwrap();
    // A non-contiguous input is written in logical order.
    write_native(&p, &[("z.a".into(), a.t().unwrap()), ("b".into(), b)]).unwrap();
    let back = read_native(&p).unwrap();
    assert_eq!(
        back.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        vec!["b", "z.a"]
    );
    assert_eq!(back[1].1.dims(), &[3, 2]);
    assert_eq!(
        back[1].1.to_vec2::<f32>().unwrap(),
        vec![vec![0., 3.], vec![1., 4.], vec![2., 5.]]
    );
    assert_eq!(back[0].1.dtype(), DType::I64);

    let dup = write_native(&p, &[("x".into(), a.clone()), ("x".into(), a.clone())]).unwrap_err();
    assert!(dup.to_string().contains("t.safetensors"), "{dup}");
    fs::write(&p, b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":").unwrap();
    let e = read_native(&p).unwrap_err().to_string();
    assert!(e.contains("t.safetensors"), "{e}");
    let e = read_native(&dir.path().join("missing.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.safetensors"), "{e}");
}

#[test]
fn json_atomic_writes_and_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.json");
    write_json_atomic(&p, &serde_json::json!({"x": 1})).unwrap();
    write_json_atomic(&p, &serde_json::json!({"x": 2})).unwrap();
    let v: serde_json::Value = read_json(&p).unwrap();
    assert_eq!(v["x"], 2);
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temporary file left"
    );
}
