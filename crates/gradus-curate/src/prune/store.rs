//! The embeddings file: safetensors with `embeddings` f32 (N, D) and `row_ids` i64 (N) — the
//! 0-based index of each row in the input dataset — plus string metadata (model, field, ...).
//! Load it in Python with `safetensors.numpy.load_file`. [`write_npy`] writes a plain `.npy`
//! (N, D) f32 array too.

use std::collections::HashMap;
use std::path::Path;

use gradus_tensor::io::{read_raw, write_atomic, write_raw, RawTensor, StoreDtype};
use gradus_tensor::{Error, Result};

/// Embeddings of N rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Embeddings {
    pub dim: usize,
    /// (N, D) row-major.
    pub values: Vec<f32>,
    /// (N): each row's index in the input.
    pub row_ids: Vec<u64>,
    pub metadata: HashMap<String, String>,
}

impl Embeddings {
    pub fn len(&self) -> usize {
        self.row_ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.row_ids.is_empty()
    }
}

/// Writes `e` as safetensors (`embeddings` f32 (N, D), `row_ids` i64 (N), its metadata plus
/// `format = np`), atomically.
pub fn write_embeddings(path: &Path, e: &Embeddings) -> Result<()> {
    let n = e.row_ids.len();
    if e.values.len() != n * e.dim {
        return Err(Error::msg(format!(
            "embeddings: {} values for {n} rows of width {}",
            e.values.len(),
            e.dim
        )));
    }
    let ids: Vec<i64> = e.row_ids.iter().map(|&v| v as i64).collect();
    let mut meta = e.metadata.clone();
    meta.insert("format".into(), "np".into());
    write_raw(
        path,
        &[
            (
                "embeddings".into(),
                RawTensor::from_f32(vec![n, e.dim], &e.values),
            ),
            ("row_ids".into(), RawTensor::from_i64(vec![n], &ids)),
        ],
        Some(meta),
    )
}

/// Reads an embeddings file written by [`write_embeddings`]; errors name the file and tensor.
pub fn read_embeddings(path: &Path) -> Result<Embeddings> {
    let (mut tensors, metadata) = read_raw(path)?;
    let mut get = |name: &str| {
        tensors.remove(name).ok_or_else(|| Error::MissingTensor {
            path: path.to_path_buf(),
            name: name.into(),
            hint: " (expected an embeddings file written by `gradus data embed`)".into(),
        })
    };
    let ev = get("embeddings")?;
    let iv = get("row_ids")?;
    let values = match ev.to_f32() {
        Some((v, StoreDtype::F32)) if ev.shape.len() == 2 => v,
        _ => {
            return Err(Error::format(
                path,
                format!(
                    "tensor `embeddings`: expected f32 (N, D), found {:?} {:?}",
                    ev.dtype, ev.shape
                ),
            ))
        }
    };
    let (n, dim) = (ev.shape[0], ev.shape[1]);
    let ids = match iv.to_i64() {
        Some(ids) if iv.shape == [n] => ids,
        _ => {
            return Err(Error::format(
                path,
                format!(
                    "tensor `row_ids`: expected i64 ({n}), found {:?} {:?}",
                    iv.dtype, iv.shape
                ),
            ))
        }
    };
    let mut row_ids = Vec::with_capacity(n);
    for v in ids {
        if v < 0 {
            return Err(Error::format(
                path,
                format!("tensor `row_ids`: negative id {v}"),
            ));
        }
        row_ids.push(v as u64);
    }
    Ok(Embeddings {
        dim,
        values,
        row_ids,
        metadata,
    })
}

/// Writes an (N, D) little-endian f32 `.npy` file (format 1.0).
pub fn write_npy(path: &Path, values: &[f32], n: usize, d: usize) -> Result<()> {
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({n}, {d}), }}");
    // magic (6) + version (2) + header length (2) + header, padded with spaces to a multiple of 64, ending in \n.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    write_atomic(path, &bytes)
}
