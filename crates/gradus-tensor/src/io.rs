//! safetensors reading and writing with errors that name the file and the tensor.
//!
//! Weights are read in f32, bf16 or f16 and returned as f32 tensors together with their stored
//! dtype; writing takes the dtype to store. bf16/f16 → f32 → bf16/f16 is lossless, so a checkpoint
//! loaded and saved in its own dtype round-trips bit-exactly. Files are written atomically (temp
//! file + fsync + rename): a crash mid-write never leaves a half-written file under the real name.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::{Device, Error, Result, Tensor};

/// On-disk element type of a stored tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreDtype {
    F32,
    Bf16,
    F16,
}

/// One tensor read from a file: f32 values, and the dtype it was stored in.
pub struct Loaded {
    pub name: String,
    pub tensor: Tensor,
    pub stored: StoreDtype,
}

fn decode(path: &Path, name: &str, view: &TensorView, device: &Device) -> Result<Loaded> {
    let shape = view.shape().to_vec();
    let bytes = view.data();
    let (values, stored): (Vec<f32>, StoreDtype) = match view.dtype() {
        Dtype::F32 => (
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            StoreDtype::F32,
        ),
        Dtype::BF16 => (
            bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
                .collect(),
            StoreDtype::Bf16,
        ),
        Dtype::F16 => (
            bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
                .collect(),
            StoreDtype::F16,
        ),
        other => {
            return Err(Error::format(
                path,
                format!(
                    "tensor `{name}` has dtype {other:?}; gradus reads F32, BF16 and F16 weights"
                ),
            ))
        }
    };
    let n: usize = shape.iter().product();
    if values.len() != n {
        return Err(Error::format(
            path,
            format!(
                "tensor `{name}`: shape {shape:?} needs {n} values, file holds {}",
                values.len()
            ),
        ));
    }
    Ok(Loaded {
        name: name.to_string(),
        tensor: Tensor::from_vec(values, shape, device)?,
        stored,
    })
}

fn parse<'a>(path: &Path, bytes: &'a [u8]) -> Result<SafeTensors<'a>> {
    SafeTensors::deserialize(bytes).map_err(|e| {
        Error::format(
            path,
            format!("not a valid safetensors file (truncated or corrupt?): {e}"),
        )
    })
}

/// Reads every tensor of a safetensors file, sorted by name.
pub fn read_safetensors(path: &Path, device: &Device) -> Result<Vec<Loaded>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = parse(path, &bytes)?;
    let mut out = Vec::new();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    for name in names {
        let view = st
            .tensor(&name)
            .map_err(|e| Error::format(path, format!("tensor `{name}`: {e}")))?;
        out.push(decode(path, &name, &view, device)?);
    }
    Ok(out)
}

/// Reads the `__metadata__` map of a safetensors file.
pub fn read_safetensors_metadata(path: &Path) -> Result<HashMap<String, String>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::format(path, format!("not a valid safetensors file: {e}")))?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl safetensors::View for &Raw {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn encode(name: &str, t: &Tensor, dtype: StoreDtype) -> Result<Raw> {
    let shape = t.dims().to_vec();
    let v: Vec<f32> = t
        .to_dtype(crate::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()
        .map_err(|e| Error::msg(format!("tensor `{name}`: {e}")))?;
    let (dt, data) = match dtype {
        StoreDtype::F32 => (Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        StoreDtype::Bf16 => (
            Dtype::BF16,
            v.iter()
                .flat_map(|x| half::bf16::from_f32(*x).to_bits().to_le_bytes())
                .collect(),
        ),
        StoreDtype::F16 => (
            Dtype::F16,
            v.iter()
                .flat_map(|x| half::f16::from_f32(*x).to_bits().to_le_bytes())
                .collect(),
        ),
    };
    Ok(Raw {
        dtype: dt,
        shape,
        data,
    })
}

/// Writes tensors (stored as `dtype`) with `{"format": "pt"}` metadata, atomically.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    dtype: StoreDtype,
) -> Result<()> {
    let raws: Vec<(String, Raw)> = tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), encode(n, t, dtype)?)))
        .collect::<Result<_>>()?;
    let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let bytes =
        safetensors::tensor::serialize(raws.iter().map(|(n, r)| (n.as_str(), r)), Some(meta))
            .map_err(|e| Error::format(path, format!("cannot serialise: {e}")))?;
    write_atomic(path, &bytes)
}

/// A temporary name beside `path` that no other writer uses: `.<name>.tmp-<pid>-<n>` with a
/// per-process counter, created with `create_new` by the callers (so two processes, or two threads,
/// writing the same file never share a temporary file).
pub fn unique_temp_path(path: &Path) -> Result<std::path::PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let fname = path
        .file_name()
        .ok_or_else(|| Error::format(path, "not a file path"))?
        .to_string_lossy()
        .to_string();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Ok(dir.join(format!(".{fname}.tmp-{}-{n}", std::process::id())))
}

/// Writes `bytes` to `path` through a uniquely named temp file in the same directory
/// ([`unique_temp_path`]), fsync, rename and a sync of the directory: readers see the old file or
/// the new one, never a part, and concurrent writers never write into each other's temp file. The
/// temp file is removed if anything fails.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = unique_temp_path(path)?;
    let res = (|| -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        // Make the rename itself durable (best effort: not every platform can open a directory).
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}
