//! Shard files: one safetensors file per run of samples of one bucket, tensors stacked on the
//! first axis: `latent_mean` and `latent_std` `[n, 4, h/8, w/8]`, `text` `[n, 77, width]`;
//! metadata `keys` and `captions` (JSON arrays, in sample order).

use candle_core::{DType, Tensor};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;

/// Write `bytes` to `path` through a temporary file and a rename, so a crash never leaves a
/// half-written file under the real name.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    let show = |e: std::io::Error| format!("{}: {e}", tmp.display());
    std::fs::write(&tmp, bytes).map_err(show)?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A stored dtype by name.
pub fn dtype(name: &str) -> Result<DType, String> {
    match name {
        "f32" => Ok(DType::F32),
        "f16" => Ok(DType::F16),
        "bf16" => Ok(DType::BF16),
        other => Err(format!("unknown dtype '{other}' (f32, f16, bf16)")),
    }
}

/// Serialise named tensors (on the CPU) with metadata to safetensors bytes.
pub fn serialize(
    tensors: &[(&str, &Tensor)],
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>, String> {
    let data: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| {
            Ok((
                n.to_string(),
                t.to_device(&candle_core::Device::Cpu)?.contiguous()?,
            ))
        })
        .collect::<candle_core::Result<_>>()
        .map_err(|e| e.to_string())?;
    let views: Vec<(String, safetensors::tensor::TensorView)> = Vec::new();
    drop(views);
    let bytes: Vec<(String, Vec<u8>, safetensors::Dtype, Vec<usize>)> = data
        .iter()
        .map(|(n, t)| Ok((n.clone(), raw(t)?, st_dtype(t.dtype()), t.dims().to_vec())))
        .collect::<Result<_, String>>()?;
    let views = bytes
        .iter()
        .map(|(n, b, d, s)| {
            safetensors::tensor::TensorView::new(*d, s.clone(), b).map(|v| (n.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    safetensors::serialize(views, Some(metadata)).map_err(|e| e.to_string())
}

fn st_dtype(d: DType) -> safetensors::Dtype {
    match d {
        DType::F16 => safetensors::Dtype::F16,
        DType::BF16 => safetensors::Dtype::BF16,
        DType::F64 => safetensors::Dtype::F64,
        _ => safetensors::Dtype::F32,
    }
}

fn raw(t: &Tensor) -> Result<Vec<u8>, String> {
    let t = t.flatten_all().map_err(|e| e.to_string())?;
    let e = |e: candle_core::Error| e.to_string();
    Ok(match t.dtype() {
        DType::F16 => t
            .to_vec1::<half::f16>()
            .map_err(e)?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::BF16 => t
            .to_vec1::<half::bf16>()
            .map_err(e)?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::F64 => t
            .to_vec1::<f64>()
            .map_err(e)?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        _ => t
            .to_dtype(DType::F32)
            .map_err(e)?
            .to_vec1::<f32>()
            .map_err(e)?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
    })
}
