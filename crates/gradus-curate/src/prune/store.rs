//! The embeddings file: safetensors with `embeddings` f32 (N, D) and `row_ids` i64 (N) — the
//! 0-based index of each row in the input dataset — plus string metadata (model, field, ...).
//! Load it in Python with `safetensors.numpy.load_file`. [`write_npy`] writes a plain `.npy`
//! (N, D) f32 array too.

use std::collections::HashMap;
use std::path::Path;

use gradus_tensor::io::write_atomic;
use gradus_tensor::{Error, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

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

pub fn write_embeddings(path: &Path, e: &Embeddings) -> Result<()> {
    let n = e.row_ids.len();
    if e.values.len() != n * e.dim {
        return Err(Error::msg(format!(
            "embeddings: {} values for {n} rows of width {}",
            e.values.len(),
            e.dim
        )));
    }
    let vb: Vec<u8> = e.values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let ib: Vec<u8> = e
        .row_ids
        .iter()
        .flat_map(|v| (*v as i64).to_le_bytes())
        .collect();
    let err = |m: String| Error::format(path, m);
    let tv = TensorView::new(Dtype::F32, vec![n, e.dim], &vb).map_err(|x| err(x.to_string()))?;
    let ti = TensorView::new(Dtype::I64, vec![n], &ib).map_err(|x| err(x.to_string()))?;
    let mut meta = e.metadata.clone();
    meta.insert("format".into(), "np".into());
    let bytes = safetensors::tensor::serialize([("embeddings", tv), ("row_ids", ti)], Some(meta))
        .map_err(|x| err(format!("cannot serialise: {x}")))?;
    write_atomic(path, &bytes)
}

pub fn read_embeddings(path: &Path) -> Result<Embeddings> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::format(path, format!("not a valid safetensors file: {e}")))?;
    let get = |name: &str| {
        st.tensor(name).map_err(|_| Error::MissingTensor {
            path: path.to_path_buf(),
            name: name.into(),
            hint: " (expected an embeddings file written by `gradus data embed`)".into(),
        })
    };
    let ev = get("embeddings")?;
    let iv = get("row_ids")?;
    if ev.dtype() != Dtype::F32 || ev.shape().len() != 2 {
        return Err(Error::format(
            path,
            format!(
                "tensor `embeddings`: expected f32 (N, D), found {:?} {:?}",
                ev.dtype(),
                ev.shape()
            ),
        ));
    }
    let (n, dim) = (ev.shape()[0], ev.shape()[1]);
    if iv.dtype() != Dtype::I64 || iv.shape() != [n] {
        return Err(Error::format(
            path,
            format!(
                "tensor `row_ids`: expected i64 ({n}), found {:?} {:?}",
                iv.dtype(),
                iv.shape()
            ),
        ));
    }
    let values = ev
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let mut row_ids = Vec::with_capacity(n);
    for c in iv.data().chunks_exact(8) {
        let v = i64::from_le_bytes(c.try_into().expect("chunks of 8"));
        if v < 0 {
            return Err(Error::format(
                path,
                format!("tensor `row_ids`: negative id {v}"),
            ));
        }
        row_ids.push(v as u64);
    }
    let (_, m) =
        SafeTensors::read_metadata(&bytes).map_err(|e| Error::format(path, e.to_string()))?;
    Ok(Embeddings {
        dim,
        values,
        row_ids,
        metadata: m.metadata().clone().unwrap_or_default(),
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
