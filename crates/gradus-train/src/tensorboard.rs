//! TensorBoard event files: `events.out.tfevents.<unix time>.<host>` beside `metrics.jsonl`.
//!
//! An event file is a sequence of TFRecord records, each
//! ```text
//! u64 LE  length of data
//! u32 LE  masked CRC-32C of those 8 length bytes
//! data    one serialized `tensorflow.Event` protocol buffer
//! u32 LE  masked CRC-32C of data
//! ```
//! where `mask(c) = ((c >> 15) | (c << 17)) + 0xa282ead8` (TensorFlow's `crc32c::Mask`) and CRC-32C
//! is the Castagnoli polynomial (reflected `0x82F63B78`, RFC 3720 §B.4). The first record is an
//! `Event` holding only `wall_time`, `file_version = "brain.Event:2"` and the writer's name
//! (`source_metadata.writer`, as TensorBoard's own `EventFileWriter` does).
//!
//! Only the few protobuf fields TensorBoard needs are written, by hand, in field-number order (as
//! protobuf serializers do), so no protobuf dependency is needed:
//! ```text
//! Event          wall_time=1 (double), step=2 (int64), file_version=3 (string), summary=5,
//!                source_metadata=10 (SourceMetadata: writer=1, string)
//! Summary        value=1 (repeated Value)
//! Value          tag=1 (string), simple_value=2 (float), tensor=8, metadata=9
//! SummaryMetadata  plugin_data=1 (PluginData: plugin_name=1, content=2)
//! TensorProto    dtype=1 (DT_STRING = 7), tensor_shape=2 (dim=2 {size=1}), string_val=8
//! ```
//! Scalars are `simple_value` (what TensorBoard's scalar dashboard reads); texts use the `text`
//! plugin with a string tensor of shape `[1]`, as `torch.utils.tensorboard`'s `add_text` writes
//! them (its tag gets no `/text_summary` suffix here). [`read_events`] parses files back, checking
//! both CRCs of every record.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use gradus_tensor::{Error, Result};

// ------------------------------------------------------------------ CRC-32C and framing

/// The CRC-32C (Castagnoli) lookup table, built at compile time.
const CRC32C_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// CRC-32C of `data` (initial value and final xor `0xFFFFFFFF`).
pub fn crc32c(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = CRC32C_TABLE[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

/// TensorFlow's masked CRC: rotate right by 15 bits and add a constant.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let c = crc32c(data);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One TFRecord: length, masked CRC of the length, data, masked CRC of the data.
pub fn frame_record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

/// Splits a TFRecord file into its records' data, checking both CRCs of each. Errors name the
/// record index and byte offset.
pub fn unframe_records(path: &Path, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let bad =
            |what: &str| Error::format(path, format!("record {} at byte {at}: {what}", out.len()));
        if bytes.len() - at < 12 {
            return Err(bad("truncated header"));
        }
        let len_bytes = &bytes[at..at + 8];
        let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
        let len_crc = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().expect("4 bytes"));
        if len_crc != masked_crc32c(len_bytes) {
            return Err(bad("length CRC mismatch"));
        }
        let len = usize::try_from(len).map_err(|_| bad("length too large"))?;
        let start = at + 12;
        if bytes.len() - start < len.saturating_add(4) {
            return Err(bad("truncated data"));
        }
        let data = &bytes[start..start + len];
        let data_crc = u32::from_le_bytes(
            bytes[start + len..start + len + 4]
                .try_into()
                .expect("4 bytes"),
        );
        if data_crc != masked_crc32c(data) {
            return Err(bad("data CRC mismatch"));
        }
        out.push(data.to_vec());
        at = start + len + 4;
    }
    Ok(out)
}

// ------------------------------------------------------------------ protobuf encoding

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Tag byte(s) of `field` with wire type `wire` (0 varint, 1 64-bit, 2 length-delimited, 5 32-bit).
fn put_tag(out: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(out, ((field as u64) << 3) | wire as u64);
}

fn put_bytes(out: &mut Vec<u8>, field: u32, data: &[u8]) {
    put_tag(out, field, 2);
    put_varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

/// What a summary value holds.
#[derive(Clone, Debug, PartialEq)]
pub enum SummaryValue {
    /// A scalar (`simple_value`).
    Scalar(f32),
    /// Text (the text plugin's string tensor).
    Text(String),
}

/// One event: a time, a step, and either the file version or summary values.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub wall_time: f64,
    pub step: i64,
    pub file_version: Option<String>,
    pub values: Vec<(String, SummaryValue)>,
    /// `source_metadata.writer`: the program that wrote the file (first event only).
    pub writer: Option<String>,
}

fn encode_value(tag: &str, v: &SummaryValue) -> Vec<u8> {
    let mut out = Vec::new();
    put_bytes(&mut out, 1, tag.as_bytes());
    match v {
        SummaryValue::Scalar(x) => {
            put_tag(&mut out, 2, 5);
            out.extend_from_slice(&x.to_le_bytes());
        }
        SummaryValue::Text(s) => {
            // TensorProto { dtype: DT_STRING, tensor_shape { dim { size: 1 } }, string_val: [s] }
            let mut dim = Vec::new();
            put_tag(&mut dim, 1, 0);
            put_varint(&mut dim, 1);
            let mut shape = Vec::new();
            put_bytes(&mut shape, 2, &dim);
            let mut tensor = Vec::new();
            put_tag(&mut tensor, 1, 0);
            put_varint(&mut tensor, 7);
            put_bytes(&mut tensor, 2, &shape);
            put_bytes(&mut tensor, 8, s.as_bytes());
            put_bytes(&mut out, 8, &tensor);
            // SummaryMetadata { plugin_data { plugin_name: "text" } }
            let mut plugin = Vec::new();
            put_bytes(&mut plugin, 1, b"text");
            let mut meta = Vec::new();
            put_bytes(&mut meta, 1, &plugin);
            put_bytes(&mut out, 9, &meta);
        }
    }
    out
}

impl Event {
    /// The serialized `tensorflow.Event`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_tag(&mut out, 1, 1);
        out.extend_from_slice(&self.wall_time.to_le_bytes());
        if self.step != 0 {
            put_tag(&mut out, 2, 0);
            put_varint(&mut out, self.step as u64);
        }
        if let Some(v) = &self.file_version {
            put_bytes(&mut out, 3, v.as_bytes());
        }
        if !self.values.is_empty() {
            let mut summary = Vec::new();
            for (tag, v) in &self.values {
                put_bytes(&mut summary, 1, &encode_value(tag, v));
            }
            put_bytes(&mut out, 5, &summary);
        }
        if let Some(w) = &self.writer {
            let mut meta = Vec::new();
            put_bytes(&mut meta, 1, w.as_bytes());
            put_bytes(&mut out, 10, &meta);
        }
        out
    }

    /// Parses a serialized `Event` (the fields above; others are skipped).
    pub fn decode(data: &[u8]) -> std::result::Result<Event, String> {
        let mut ev = Event {
            wall_time: 0.0,
            step: 0,
            file_version: None,
            values: Vec::new(),
            writer: None,
        };
        for f in fields(data)? {
            match (f.0, f.1) {
                (1, Field::I64(b)) => ev.wall_time = f64::from_le_bytes(b),
                (2, Field::Varint(v)) => ev.step = v as i64,
                (3, Field::Bytes(b)) => ev.file_version = Some(utf8(b)?),
                (5, Field::Bytes(b)) => {
                    for (n, v) in fields(b)? {
                        if let (1, Field::Bytes(b)) = (n, v) {
                            ev.values.push(decode_value(b)?);
                        }
                    }
                }
                (10, Field::Bytes(b)) => {
                    for (n, v) in fields(b)? {
                        if let (1, Field::Bytes(w)) = (n, v) {
                            ev.writer = Some(utf8(w)?);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(ev)
    }
}

fn utf8(b: &[u8]) -> std::result::Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|e| format!("invalid UTF-8: {e}"))
}

fn decode_value(data: &[u8]) -> std::result::Result<(String, SummaryValue), String> {
    let mut tag = String::new();
    let mut value = None;
    for (n, f) in fields(data)? {
        match (n, f) {
            (1, Field::Bytes(b)) => tag = utf8(b)?,
            (2, Field::I32(b)) => value = Some(SummaryValue::Scalar(f32::from_le_bytes(b))),
            (8, Field::Bytes(b)) => {
                for (n2, f2) in fields(b)? {
                    if let (8, Field::Bytes(s)) = (n2, f2) {
                        value = Some(SummaryValue::Text(utf8(s)?));
                    }
                }
            }
            _ => {}
        }
    }
    Ok((
        tag.clone(),
        value.ok_or_else(|| format!("summary value {tag:?} holds neither a scalar nor text"))?,
    ))
}

enum Field<'a> {
    Varint(u64),
    I64([u8; 8]),
    Bytes(&'a [u8]),
    I32([u8; 4]),
}

fn read_varint(data: &[u8], at: &mut usize) -> std::result::Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *data.get(*at).ok_or("truncated varint")?;
        *at += 1;
        v |= ((b & 0x7f) as u64) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err("varint longer than 10 bytes".into())
}

/// The `(field number, value)` pairs of a protobuf message.
fn fields(data: &[u8]) -> std::result::Result<Vec<(u32, Field<'_>)>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let key = read_varint(data, &mut at)?;
        let (field, wire) = ((key >> 3) as u32, key & 7);
        let take = |at: &mut usize, n: usize| -> std::result::Result<&[u8], String> {
            let end = at
                .checked_add(n)
                .filter(|&e| e <= data.len())
                .ok_or("truncated field")?;
            let s = &data[*at..end];
            *at = end;
            Ok(s)
        };
        let f = match wire {
            0 => Field::Varint(read_varint(data, &mut at)?),
            1 => Field::I64(take(&mut at, 8)?.try_into().expect("8 bytes")),
            2 => {
                let n = read_varint(data, &mut at)? as usize;
                Field::Bytes(take(&mut at, n)?)
            }
            5 => Field::I32(take(&mut at, 4)?.try_into().expect("4 bytes")),
            w => return Err(format!("unsupported wire type {w} (field {field})")),
        };
        out.push((field, f));
    }
    Ok(out)
}

// ------------------------------------------------------------------ writer and reader

/// Appends events to `events.out.tfevents.<time>.<host>` in a run directory. Each event is written
/// with one `write` call and flushed, like `metrics.jsonl`.
pub struct EventWriter {
    path: PathBuf,
    file: File,
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn hostname() -> String {
    let raw = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .unwrap_or_default();
    let h: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
        .collect();
    if h.is_empty() {
        "localhost".into()
    } else {
        h
    }
}

impl EventWriter {
    /// A new event file in `dir` (named with the current time and host; a file of the same name is
    /// never overwritten: a `.N` suffix is added), starting with the file-version event.
    pub fn create(dir: &Path) -> Result<Self> {
        let t = now_secs();
        let base = format!("events.out.tfevents.{}.{}", t as u64, hostname());
        let mut path = dir.join(&base);
        let mut n = 1;
        let file = loop {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(f) => break f,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => {
                    path = dir.join(format!("{base}.{n}"));
                    n += 1;
                }
                Err(e) => return Err(Error::io(&path, e)),
            }
        };
        let mut w = Self { path, file };
        w.write_event(&Event {
            wall_time: t,
            step: 0,
            file_version: Some("brain.Event:2".into()),
            values: Vec::new(),
            writer: Some("gradus".into()),
        })?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event.
    pub fn write_event(&mut self, ev: &Event) -> Result<()> {
        self.file
            .write_all(&frame_record(&ev.encode()))
            .map_err(|e| Error::io(&self.path, e))?;
        self.file.flush().map_err(|e| Error::io(&self.path, e))
    }

    /// Appends one event at the current time holding `values` at `step`.
    pub fn write_values(&mut self, step: u64, values: Vec<(String, SummaryValue)>) -> Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        self.write_event(&Event {
            wall_time: now_secs(),
            step: step as i64,
            file_version: None,
            values,
            writer: None,
        })
    }
}

/// The event files of a run directory, sorted by name.
pub fn event_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("events.out.tfevents."))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Every event of an event file, CRCs checked; errors name the file and record.
pub fn read_events(path: &Path) -> Result<Vec<Event>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    unframe_records(path, &bytes)?
        .iter()
        .enumerate()
        .map(|(i, d)| Event::decode(d).map_err(|m| Error::format(path, format!("record {i}: {m}"))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_values() {
        // The standard check value of CRC-32C (RFC 3720 B.4; "CRC-32/ISCSI" in the CRC catalogue).
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        // RFC 3720 B.4: 32 bytes of zeros -> aa 36 91 8a (stored little-endian, so 0x8A9136AA).
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        // 32 bytes of 0xFF -> 43 ab a8 62.
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
    }

    #[test]
    fn mask_is_rotate_right_15_plus_constant() {
        // crc("123456789") = 0xE3069283; rotr 15: low 15 bits 0x1283 move to the top.
        // 0xE3069283 >> 15 = 0x1C60D, 0xE3069283 << 17 (mod 2^32) = 0x25060000;
        // or = 0x2507C60D; + 0xa282ead8 = 0xC78AB0E5.
        assert_eq!(masked_crc32c(b"123456789"), 0xC78A_B0E5);
    }

    #[test]
    fn record_framing_by_hand() {
        let r = frame_record(b"abc");
        assert_eq!(r.len(), 8 + 4 + 3 + 4);
        assert_eq!(&r[..8], &[3, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            &r[8..12],
            &masked_crc32c(&[3, 0, 0, 0, 0, 0, 0, 0]).to_le_bytes()
        );
        assert_eq!(&r[12..15], b"abc");
        assert_eq!(&r[15..], &masked_crc32c(b"abc").to_le_bytes());
        let p = Path::new("x");
        assert_eq!(unframe_records(p, &r).unwrap(), vec![b"abc".to_vec()]);
        let mut bad = r.clone();
        bad[13] ^= 1;
        assert!(unframe_records(p, &bad)
            .unwrap_err()
            .to_string()
            .contains("data CRC"));
        assert!(unframe_records(p, &r[..10])
            .unwrap_err()
            .to_string()
            .contains("truncated"));
    }

    #[test]
    fn event_encoding_by_hand() {
        // wall_time 1.0: tag 0x09 then the f64 LE bytes of 1.0 (0x3FF0000000000000);
        // step 300: tag 0x10, varint 300 = 0xAC 0x02;
        // summary (0x2A, len) { value (0x0A, len) { tag (0x0A 0x01 'a'), simple_value (0x15, 0.5f32 LE) } }.
        let ev = Event {
            wall_time: 1.0,
            step: 300,
            file_version: None,
            values: vec![("a".into(), SummaryValue::Scalar(0.5))],
            writer: None,
        };
        let want: Vec<u8> = vec![
            0x09, 0, 0, 0, 0, 0, 0, 0xF0, 0x3F, 0x10, 0xAC, 0x02, 0x2A, 10, 0x0A, 8, 0x0A, 1, b'a',
            0x15, 0, 0, 0, 0x3F,
        ];
        assert_eq!(ev.encode(), want);
        assert_eq!(Event::decode(&want).unwrap(), ev);
    }

    #[test]
    fn writer_round_trips_scalars_and_text() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path()).unwrap();
        w.write_values(3, vec![("train/loss".into(), SummaryValue::Scalar(2.5))])
            .unwrap();
        w.write_values(
            4,
            vec![("samples".into(), SummaryValue::Text("✓ 2+2 → 4".into()))],
        )
        .unwrap();
        let files = event_files(dir.path()).unwrap();
        assert_eq!(files, vec![w.path().to_path_buf()]);
        let evs = read_events(&files[0]).unwrap();
        assert_eq!(evs.len(), 3);
        assert_eq!(evs[0].file_version.as_deref(), Some("brain.Event:2"));
        assert_eq!(evs[0].writer.as_deref(), Some("gradus"));
        assert_eq!(
            (evs[1].step, &evs[1].values[0]),
            (3, &("train/loss".to_string(), SummaryValue::Scalar(2.5)))
        );
        assert_eq!(evs[2].values[0].1, SummaryValue::Text("✓ 2+2 → 4".into()));
        // A second writer in the same second does not overwrite the first file.
        let w2 = EventWriter::create(dir.path()).unwrap();
        assert_ne!(w2.path(), w.path());
        assert_eq!(event_files(dir.path()).unwrap().len(), 2);
    }
}
