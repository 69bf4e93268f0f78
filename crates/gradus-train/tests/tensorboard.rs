//! gradus' TensorBoard event files against one written by TensorBoard's own `EventFileWriter`
//! (`tests/fixtures/tensorboard/gen.py`, tensorboard 2.21.0): the same events give the same bytes,
//! record framing and protobuf encoding alike, and gradus' reader reads back what the fixture holds.

use std::path::Path;

use gradus_train::tensorboard::{frame_record, read_events, Event, SummaryValue};
use serde_json::Value;

fn fixture() -> (Vec<u8>, Value) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tensorboard");
    let bytes = std::fs::read(dir.join("events.out.tfevents.fixture")).unwrap();
    let values: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("values.json")).unwrap()).unwrap();
    (bytes, values)
}

/// The fixture's events from values.json, grouped one event per (wall_time, step) as gen.py does.
fn expected_events(values: &Value) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::new();
    for e in values["events"].as_array().unwrap() {
        let (wt, step) = (
            e["wall_time"].as_f64().unwrap(),
            e["step"].as_i64().unwrap(),
        );
        let tag = e["tag"].as_str().unwrap().to_string();
        let v = match e["kind"].as_str().unwrap() {
            "scalar" => SummaryValue::Scalar(e["value"].as_f64().unwrap() as f32),
            _ => SummaryValue::Text(e["value"].as_str().unwrap().to_string()),
        };
        match out.last_mut() {
            Some(last) if last.wall_time == wt && last.step == step => last.values.push((tag, v)),
            _ => out.push(Event {
                wall_time: wt,
                step,
                file_version: None,
                values: vec![(tag, v)],
                writer: None,
            }),
        }
    }
    out
}

#[test]
fn reader_reads_what_tensorboard_wrote() {
    let (_, values) = fixture();
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tensorboard/events.out.tfevents.fixture");
    let evs = read_events(&path).unwrap();
    assert_eq!(evs[0].file_version.as_deref(), Some("brain.Event:2"));
    assert_eq!(
        evs[0].writer.as_deref(),
        Some("tensorboard.summary.writer.event_file_writer")
    );
    assert_eq!(evs[1..], expected_events(&values)[..]);
}

#[test]
fn writer_gives_tensorboards_bytes() {
    let (bytes, values) = fixture();
    // The first record: its wall_time is whatever time gen.py ran; take it from the file's header
    // event (bytes 12.. of the first record are `0x09` + the f64).
    let first_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = &bytes[12..12 + first_len];
    assert_eq!(
        header[0], 0x09,
        "the first field is wall_time (field 1, 64-bit)"
    );
    let wall_time = f64::from_le_bytes(header[1..9].try_into().unwrap());
    let mut ours = frame_record(
        &Event {
            wall_time,
            step: 0,
            file_version: Some("brain.Event:2".into()),
            values: Vec::new(),
            writer: Some("tensorboard.summary.writer.event_file_writer".into()),
        }
        .encode(),
    );
    for ev in expected_events(&values) {
        ours.extend(frame_record(&ev.encode()));
    }
    assert_eq!(ours.len(), bytes.len());
    assert_eq!(ours, bytes, "gradus' encoding differs from TensorBoard's");
}
