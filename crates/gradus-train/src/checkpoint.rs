//! Checkpoint mechanics of the run directory, independent of any model.
//!
//! ```text
//! runs/<name>/checkpoints/step-N/          a complete checkpoint (whatever `write_files` wrote:
//!                                           model files, optimizer.safetensors, trainer_state.json)
//! runs/<name>/checkpoints/.step-N.tmp-PID  being written; ignored by readers, removed at the next save
//! runs/<name>/checkpoints/.step-N.old-PID  a previous step-N being replaced (see below)
//! runs/<name>/checkpoints/.step-N.del-PID  being deleted by pruning
//! ```
//! [`save_checkpoint`] writes into a hidden temporary directory, fsyncs every file and the
//! directory, then renames it to `step-N` in one `rename(2)`: a directory named `step-N` is always
//! complete. A crash (an error or panic in `write_files`, or a killed process) leaves at worst a
//! hidden temporary directory, which readers ignore and the next save removes; it never touches an
//! existing checkpoint. Replacing an existing `step-N` renames it to `.step-N.old-PID` first; if the
//! process dies between the two renames, readers treat the `.old` directory as `step-N` and the next
//! save puts it back. Pruning renames a checkpoint to a hidden name before deleting it, so a crash
//! mid-delete never leaves a half-deleted `step-N`.
//!
//! Every checkpoint carries `checksums.json` (written last, before the rename): the size and
//! XXH3-128 hash of every file in it. [`verify_checkpoint`] recomputes them before a checkpoint is
//! loaded (on `--resume`, `init_from`, `score`), so a flipped bit or a truncated file is an error
//! naming the file instead of silently different weights. Checkpoints written before the manifest
//! existed load with a warning.
//!
//! Also here: [`TrainerState`] (`trainer_state.json`) and small file helpers
//! ([`write_safetensors`], [`read_safetensors`], [`write_json_atomic`], [`read_json`]).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use gradus_tensor::rng::RngState;
use gradus_tensor::{Error, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The directory of checkpoints inside a run directory.
pub const CHECKPOINTS_DIR: &str = "checkpoints";
/// The trainer state's file name inside a checkpoint.
pub const TRAINER_STATE_FILE: &str = "trainer_state.json";
/// The optimizer state's file name inside a checkpoint.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// The checksum manifest's file name inside a checkpoint.
pub const CHECKSUMS_FILE: &str = "checksums.json";

// ---------------------------------------------------------------------------------------------
// Trainer state

/// An [`RngState`] as JSON: the 32-byte seed as 64 hex digits, the 128-bit word position as a
/// decimal string (JSON numbers lose precision beyond 2^53), the stream number as an integer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedRng {
    pub seed: String,
    pub word_pos: String,
    pub stream: u64,
}

impl From<RngState> for SavedRng {
    fn from(s: RngState) -> Self {
        let seed = s.seed.iter().map(|b| format!("{b:02x}")).collect();
        SavedRng {
            seed,
            word_pos: s.word_pos.to_string(),
            stream: s.stream,
        }
    }
}

impl SavedRng {
    /// The state back; errors say which field is malformed.
    pub fn to_state(&self) -> Result<RngState> {
        let bad =
            |field: &str, msg: String| Error::msg(format!("trainer state: rng.{field}: {msg}"));
        let hex = self.seed.as_bytes();
        if hex.len() != 64 {
            return Err(bad(
                "seed",
                format!("expected 64 hex digits, found {} characters", hex.len()),
            ));
        }
        let mut seed = [0u8; 32];
        for (i, byte) in seed.iter_mut().enumerate() {
            let pair = std::str::from_utf8(&hex[2 * i..2 * i + 2])
                .map_err(|e| bad("seed", e.to_string()))?;
            *byte = u8::from_str_radix(pair, 16)
                .map_err(|_| bad("seed", format!("`{pair}` is not hex")))?;
        }
        let word_pos = self
            .word_pos
            .parse::<u128>()
            .map_err(|e| bad("word_pos", format!("`{}`: {e}", self.word_pos)))?;
        Ok(RngState {
            seed,
            word_pos,
            stream: self.stream,
        })
    }
}

/// What a trainer needs beyond the model and optimizer to resume exactly; `trainer_state.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerState {
    /// Optimizer updates taken.
    pub step: u64,
    /// Passes over the data started (or completed; the recipe says which).
    pub epoch: u64,
    /// Where the data loader is: recipe-defined (e.g. `{"epoch_order_seed": 3, "index": 1200}`).
    #[serde(default)]
    pub data_cursor: serde_json::Value,
    /// The trainer's random stream (dropout, sampling, shuffling).
    pub rng: SavedRng,
    /// Training tokens consumed so far.
    #[serde(default)]
    pub tokens_seen: u64,
    /// Anything else the recipe must restore (more RNG streams, best eval loss, ...).
    #[serde(default)]
    pub extra: serde_json::Value,
}

impl TrainerState {
    pub fn new(step: u64, epoch: u64, rng: RngState) -> Self {
        Self {
            step,
            epoch,
            data_cursor: serde_json::Value::Null,
            rng: rng.into(),
            tokens_seen: 0,
            extra: serde_json::Value::Null,
        }
    }

    /// Writes `dir/trainer_state.json` atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        write_json_atomic(&dir.join(TRAINER_STATE_FILE), self)
    }

    /// Reads `dir/trainer_state.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        read_json(&dir.join(TRAINER_STATE_FILE))
    }
}

// ---------------------------------------------------------------------------------------------
// File helpers

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::io(path, e)
}

/// fsync a directory so renames and creations inside it are durable (a no-op off Unix).
fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        fs::File::open(dir)
            .and_then(|f| f.sync_all())
            .map_err(io_err(dir))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// fsync every file under `dir` (recursively), then the directories themselves.
fn sync_tree(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let path = entry.path();
        let ty = entry.file_type().map_err(io_err(&path))?;
        if ty.is_dir() {
            sync_tree(&path)?;
        } else if ty.is_file() {
            fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(io_err(&path))?;
        }
    }
    sync_dir(dir)
}

/// Writes `bytes` to `path` via a temporary file, fsync and rename: readers see the old file or the
/// new one, never a part (see [`gradus_tensor::io::write_atomic`]).
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    gradus_tensor::io::write_atomic(path, bytes)
}

/// Writes `value` as pretty JSON (with a final newline) to `path` atomically.
pub fn write_json_atomic<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let mut s =
        serde_json::to_string_pretty(value).map_err(|e| Error::format(path, e.to_string()))?;
    s.push('\n');
    write_bytes_atomic(path, s.as_bytes())
}

/// Reads a JSON file; errors name the file and line.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    serde_json::from_str(&text).map_err(|e| Error::Parse {
        path: path.to_path_buf(),
        line: e.line(),
        msg: e.to_string(),
    })
}

// ---------------------------------------------------------------------------------------------
// Checkpoint directories

/// What a name in `checkpoints/` is.
enum Entry {
    Complete(u64),
    /// `.step-N.old-PID`: a complete checkpoint caught mid-replacement.
    Old(u64),
    /// `.step-N.tmp-PID` or `.step-N.del-PID`: garbage.
    Garbage,
    Other,
}

fn classify(name: &str) -> Entry {
    let digits = |s: &str| -> Option<u64> {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse().ok()
        } else {
            None
        }
    };
    if let Some(n) = name.strip_prefix("step-").and_then(digits) {
        return Entry::Complete(n);
    }
    if let Some(rest) = name.strip_prefix(".step-") {
        if let Some((n, tail)) = rest.split_once('.') {
            if digits(n).is_some() {
                if let Some(pid) = tail.strip_prefix("old-") {
                    if let (Some(n), Some(_)) = (digits(n), digits(pid)) {
                        return Entry::Old(n);
                    }
                }
                if tail.starts_with("tmp-") || tail.starts_with("del-") {
                    return Entry::Garbage;
                }
            }
        }
    }
    Entry::Other
}

fn scan(ckpt_dir: &Path) -> Result<Vec<(String, Entry)>> {
    let rd = match fs::read_dir(ckpt_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(ckpt_dir, e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(io_err(ckpt_dir))?;
        if !entry.file_type().map_err(io_err(&entry.path()))?.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let kind = classify(&name);
        out.push((name, kind));
    }
    Ok(out)
}

/// The complete checkpoints of a run, `(step, path)` sorted by step. A `.step-N.old-PID` directory
/// stands in for `step-N` when that is missing (a replacement interrupted between its renames).
pub fn list_checkpoints(run_dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let dir = run_dir.join(CHECKPOINTS_DIR);
    let entries = scan(&dir)?;
    let mut found: BTreeMap<u64, PathBuf> = BTreeMap::new();
    let mut olds: BTreeMap<u64, PathBuf> = BTreeMap::new();
    for (name, kind) in entries {
        match kind {
            Entry::Complete(n) => {
                found.insert(n, dir.join(name));
            }
            Entry::Old(n) => {
                olds.entry(n).or_insert_with(|| dir.join(name));
            }
            Entry::Garbage | Entry::Other => {}
        }
    }
    for (n, p) in olds {
        found.entry(n).or_insert(p);
    }
    Ok(found.into_iter().collect())
}

/// The complete checkpoint with the highest step, if any.
pub fn latest_checkpoint(run_dir: &Path) -> Result<Option<PathBuf>> {
    Ok(list_checkpoints(run_dir)?.pop().map(|(_, p)| p))
}

/// Removes leftovers of interrupted saves: temporary and half-deleted directories go, an `.old`
/// directory goes back to `step-N` if that is missing, else it goes too.
fn clean_leftovers(dir: &Path) -> Result<()> {
    for (name, kind) in scan(dir)? {
        let path = dir.join(&name);
        match kind {
            Entry::Garbage => {
                fs::remove_dir_all(&path).map_err(io_err(&path))?;
            }
            Entry::Old(n) => {
                let target = dir.join(format!("step-{n}"));
                if target.exists() {
                    remove_checkpoint_dir(dir, &path, n)?;
                } else {
                    fs::rename(&path, &target).map_err(io_err(&target))?;
                    sync_dir(dir)?;
                }
            }
            Entry::Complete(_) | Entry::Other => {}
        }
    }
    Ok(())
}

/// Deletes a checkpoint directory safely: hide it first (one rename), then delete.
fn remove_checkpoint_dir(dir: &Path, path: &Path, step: u64) -> Result<()> {
    let hidden = dir.join(format!(".step-{step}.del-{}", std::process::id()));
    if hidden.exists() {
        fs::remove_dir_all(&hidden).map_err(io_err(&hidden))?;
    }
    fs::rename(path, &hidden).map_err(io_err(path))?;
    sync_dir(dir)?;
    fs::remove_dir_all(&hidden).map_err(io_err(&hidden))
}

/// Removes the temporary directory unless disarmed (on error and on panic in `write_files`).
struct TmpGuard(Option<PathBuf>);

impl Drop for TmpGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_dir_all(p);
        }
    }
}

/// Saves checkpoint `step` of the run in `run_dir` (see the module docs for the protocol) and
/// returns its path, `run_dir/checkpoints/step-N`.
///
/// `write_files` receives an empty directory to fill (model, `optimizer.safetensors`,
/// `trainer_state.json`, ...). If it fails or panics, nothing else changes and its error is
/// returned (the panic goes on unwinding). After a successful save, the oldest complete
/// checkpoints beyond the newest `keep_last` are deleted; `keep_last = 0` keeps all. The checkpoint
/// just written is never deleted, even if older-numbered ones would be kept.
pub fn save_checkpoint(
    run_dir: &Path,
    step: u64,
    write_files: impl FnOnce(&Path) -> Result<()>,
    keep_last: usize,
) -> Result<PathBuf> {
    let dir = run_dir.join(CHECKPOINTS_DIR);
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    clean_leftovers(&dir)?;

    let pid = std::process::id();
    let tmp = dir.join(format!(".step-{step}.tmp-{pid}"));
    fs::create_dir(&tmp).map_err(io_err(&tmp))?;
    let mut guard = TmpGuard(Some(tmp.clone()));
    write_files(&tmp)?;
    write_checksums(&tmp)?;
    sync_tree(&tmp)?;

    let target = dir.join(format!("step-{step}"));
    if target.exists() {
        let old = dir.join(format!(".step-{step}.old-{pid}"));
        fs::rename(&target, &old).map_err(io_err(&target))?;
        fs::rename(&tmp, &target).map_err(io_err(&target))?;
        guard.0 = None;
        sync_dir(&dir)?;
        remove_checkpoint_dir(&dir, &old, step)?;
    } else {
        fs::rename(&tmp, &target).map_err(io_err(&target))?;
        guard.0 = None;
    }
    sync_dir(&dir)?;

    if keep_last > 0 {
        let all = list_checkpoints(run_dir)?;
        let excess = all.len().saturating_sub(keep_last);
        for (n, path) in all.into_iter().filter(|(n, _)| *n != step).take(excess) {
            remove_checkpoint_dir(&dir, &path, n)?;
        }
    }
    Ok(target)
}

// ---------------------------------------------------------------------------------------------
// Checksums

/// One file's entry in `checksums.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSum {
    /// Bytes.
    pub size: u64,
    /// XXH3-128 of the contents, 32 hex digits.
    pub xxh3_128: String,
}

fn hash_file(path: &Path) -> Result<FileSum> {
    use std::io::Read;
    let mut f = fs::File::open(path).map_err(io_err(path))?;
    let mut h = twox_hash::XxHash3_128::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.write(&buf[..n]);
    }
    Ok(FileSum {
        size,
        xxh3_128: format!("{:032x}", h.finish_128()),
    })
}

/// The files of a checkpoint directory (relative paths, sorted), without the manifest.
fn checkpoint_files(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = dir.join(&rel);
        for entry in fs::read_dir(&abs).map_err(io_err(&abs))? {
            let entry = entry.map_err(io_err(&abs))?;
            let r = rel.join(entry.file_name());
            let ty = entry.file_type().map_err(io_err(&entry.path()))?;
            if ty.is_dir() {
                stack.push(r);
            } else if ty.is_file() && r != Path::new(CHECKSUMS_FILE) {
                out.push(r.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Writes `dir/checksums.json`: size and XXH3-128 of every other file in `dir`.
pub fn write_checksums(dir: &Path) -> Result<()> {
    let mut sums = BTreeMap::new();
    for rel in checkpoint_files(dir)? {
        sums.insert(rel.clone(), hash_file(&dir.join(&rel))?);
    }
    write_json_atomic(&dir.join(CHECKSUMS_FILE), &sums)
}

/// Checks a checkpoint against its `checksums.json`: every listed file present with its size and
/// hash. An error names the file that differs. Returns false (and warns) for a directory without
/// a manifest (a Hugging Face model, or a checkpoint from before manifests).
pub fn verify_checkpoint(dir: &Path) -> Result<bool> {
    let manifest = dir.join(CHECKSUMS_FILE);
    if !manifest.exists() {
        // A Hugging Face model directory has none; a gradus checkpoint from before manifests is
        // worth a warning.
        if dir.join(TRAINER_STATE_FILE).exists() {
            tracing::warn!(
                "{}: no {CHECKSUMS_FILE}; its files cannot be verified",
                dir.display()
            );
        }
        return Ok(false);
    }
    let sums: BTreeMap<String, FileSum> = read_json(&manifest)?;
    for (rel, want) in &sums {
        if rel.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(Error::format(&manifest, format!("bad file name `{rel}`")));
        }
        let path = dir.join(rel);
        if !path.is_file() {
            return Err(Error::format(
                &path,
                format!("missing: the checkpoint's {CHECKSUMS_FILE} lists it"),
            ));
        }
        let got = hash_file(&path)?;
        if got.size != want.size {
            return Err(Error::format(
                &path,
                format!("corrupt checkpoint file: {} bytes, {CHECKSUMS_FILE} says {} (truncated or replaced?)", got.size, want.size),
            ));
        }
        if got.xxh3_128 != want.xxh3_128 {
            return Err(Error::format(
                &path,
                format!(
                    "corrupt checkpoint file: its checksum (XXH3-128 {}) differs from {CHECKSUMS_FILE} ({}); \
                     the file changed on disk after it was written",
                    got.xxh3_128, want.xxh3_128
                ),
            ));
        }
    }
    Ok(true)
}
