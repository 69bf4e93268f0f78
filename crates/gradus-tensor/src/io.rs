//! safetensors reading and writing with errors that name the file and the tensor.
//!
//! Weights are read in f32, bf16 or f16 and returned as f32 tensors together with their stored
//! dtype; writing takes the dtype to store. bf16/f16 → f32 → bf16/f16 is lossless, so a checkpoint
//! loaded and saved in its own dtype round-trips bit-exactly. Files are written atomically (temp
//! file + fsync + rename): a crash mid-write never leaves a half-written file under the real name.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

pub use safetensors::tensor::Dtype;
use safetensors::tensor::SafeTensors;

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

/// A tensor as a safetensors file stores it: dtype, shape and little-endian bytes. This is the one
/// layer over the safetensors crate; weights ([`read_safetensors`], [`write_safetensors`]), the
/// trainer's state ([`read_native`], [`write_native`]), encoder checkpoints and embedding files
/// (f32 matrix + i64 row ids) are all read and written through it.
#[derive(Clone, Debug, PartialEq)]
pub struct RawTensor {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl RawTensor {
    /// An f32 tensor of `shape` (the caller keeps `values.len()` = the shape's product).
    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> Self {
        Self {
            dtype: Dtype::F32,
            shape,
            data: values.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    /// An i64 tensor of `shape`.
    pub fn from_i64(shape: Vec<usize>, values: &[i64]) -> Self {
        Self {
            dtype: Dtype::I64,
            shape,
            data: values.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    /// Number of elements of the shape.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The values of a float tensor (F32, BF16 or F16; the half types widen exactly) as f32, and the
    /// stored dtype; `None` for any other dtype.
    pub fn to_f32(&self) -> Option<(Vec<f32>, StoreDtype)> {
        let b = &self.data;
        Some(match self.dtype {
            Dtype::F32 => (
                b.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
                StoreDtype::F32,
            ),
            Dtype::BF16 => (
                b.chunks_exact(2)
                    .map(|c| half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
                    .collect(),
                StoreDtype::Bf16,
            ),
            Dtype::F16 => (
                b.chunks_exact(2)
                    .map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
                    .collect(),
                StoreDtype::F16,
            ),
            _ => return None,
        })
    }

    /// The values of an I64 tensor; `None` for any other dtype.
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        (self.dtype == Dtype::I64).then(|| {
            self.data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("chunks of 8")))
                .collect()
        })
    }
}

impl safetensors::View for &RawTensor {
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

/// Every tensor of a safetensors file by name, and its `__metadata__` map. Errors name the file
/// (and the tensor, for one whose bytes do not match its dtype and shape).
pub fn read_raw(path: &Path) -> Result<(BTreeMap<String, RawTensor>, HashMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| {
        Error::format(
            path,
            format!("not a valid safetensors file (truncated or corrupt?): {e}"),
        )
    })?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        out.insert(
            name,
            RawTensor {
                dtype: view.dtype(),
                shape: view.shape().to_vec(),
                data: view.data().to_vec(),
            },
        );
    }
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::format(path, format!("not a valid safetensors file: {e}")))?;
    Ok((out, meta.metadata().clone().unwrap_or_default()))
}

/// Writes tensors (names unique) with `metadata` to a safetensors file, atomically
/// ([`write_atomic`]).
pub fn write_raw(
    path: &Path,
    tensors: &[(String, RawTensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for (name, t) in tensors {
        if !seen.insert(name.as_str()) {
            return Err(Error::format(path, format!("tensor `{name}` given twice")));
        }
        if t.data.len() * 8 != t.numel() * t.dtype.bitsize() {
            return Err(Error::format(
                path,
                format!(
                    "tensor `{name}`: {} bytes for shape {:?} of {:?}",
                    t.data.len(),
                    t.shape,
                    t.dtype
                ),
            ));
        }
    }
    let bytes =
        safetensors::tensor::serialize(tensors.iter().map(|(n, r)| (n.as_str(), r)), metadata)
            .map_err(|e| Error::format(path, format!("cannot serialise: {e}")))?;
    write_atomic(path, &bytes)
}

/// Reads every tensor of a safetensors file (weights: F32, BF16 or F16) as an f32 tensor with its
/// stored dtype, sorted by name.
pub fn read_safetensors(path: &Path, device: &Device) -> Result<Vec<Loaded>> {
    let (tensors, _) = read_raw(path)?;
    let mut out = Vec::with_capacity(tensors.len());
    for (name, raw) in tensors {
        let (values, stored) = raw.to_f32().ok_or_else(|| {
            Error::format(
                path,
                format!(
                    "tensor `{name}` has dtype {:?}; gradus reads F32, BF16 and F16 weights",
                    raw.dtype
                ),
            )
        })?;
        out.push(Loaded {
            tensor: Tensor::from_vec(values, raw.shape, device)?,
            name,
            stored,
        });
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

fn encode(name: &str, t: &Tensor, dtype: StoreDtype) -> Result<RawTensor> {
    let shape = t.dims().to_vec();
    let v: Vec<f32> = t
        .to_dtype(crate::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()
        .map_err(|e| Error::msg(format!("tensor `{name}`: {e}")))?;
    let (dt, data) = match dtype {
        StoreDtype::F32 => return Ok(RawTensor::from_f32(shape, &v)),
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
    Ok(RawTensor {
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
    let raws: Vec<(String, RawTensor)> = tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), encode(n, t, dtype)?)))
        .collect::<Result<_>>()?;
    let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    write_raw(path, &raws, Some(meta))
}

/// Writes named tensors in their own dtypes (f32 for floats, integer counters as they are),
/// atomically: the trainer's optimiser and RNG state. Names must be unique.
pub fn write_native(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let mut map: HashMap<&str, Tensor> = HashMap::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = t.to_device(&Device::Cpu)?.contiguous()?;
        if map.insert(name.as_str(), t).is_some() {
            return Err(Error::format(path, format!("tensor `{name}` given twice")));
        }
    }
    let bytes = safetensors::tensor::serialize(map, None)
        .map_err(|e| Error::format(path, format!("cannot serialise safetensors: {e}")))?;
    write_atomic(path, &bytes)
}

/// Reads every tensor of a safetensors file onto the CPU in the dtypes they were stored in, sorted
/// by name ([`write_native`]'s counterpart).
pub fn read_native(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let map = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .map_err(|e| Error::format(path, format!("invalid safetensors file: {e}")))?;
    let sorted: BTreeMap<String, Tensor> = map.into_iter().collect();
    Ok(sorted.into_iter().collect())
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
