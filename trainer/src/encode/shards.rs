//! Shard files: one safetensors file per run of samples of one bucket, tensors stacked on the
//! first axis: `latent_mean` and `latent_std` `[n, 4, h/8, w/8]`, `text` `[n, 77, width]`;
//! metadata `keys` and `captions` (JSON arrays, in sample order).

use candle_core::{DType, Tensor};
use ldmkit_core::plan::{execute, LazyTensor, MemSink};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
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

/// Serialise named tensors with metadata to safetensors bytes, through ldmkit-core's writer
/// (the `safetensors` crate writes metadata in hash order; ours is sorted, so the same
/// samples always give the same bytes and the same shard hash).
pub fn serialize(
    tensors: &[(&str, &Tensor)],
    metadata: BTreeMap<String, String>,
) -> Result<Vec<u8>, String> {
    let lazy = tensors
        .iter()
        .map(|(name, t)| {
            let shape = t.dims().iter().map(|&d| d as u64).collect();
            Ok((
                name.to_string(),
                LazyTensor::constant(core_dtype(t.dtype())?, shape, raw(t)?),
            ))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let plan = ldmkit_core::write::safetensors::safetensors(&lazy, &metadata)
        .map_err(|e| e.to_string())?;
    let mut sink = MemSink::default();
    execute(&plan, &[], &mut sink, &mut |_, _| true).map_err(|e| e.to_string())?;
    Ok(sink.0)
}

fn core_dtype(d: DType) -> Result<ldmkit_core::DType, String> {
    use ldmkit_core::DType as D;
    Ok(match d {
        DType::F32 => D::Float32,
        DType::F16 => D::Float16,
        DType::BF16 => D::BFloat16,
        DType::F64 => D::Float64,
        other => return Err(format!("cannot store {other:?} tensors")),
    })
}

/// A tensor's bytes, little-endian, row-major.
fn raw(t: &Tensor) -> Result<Vec<u8>, String> {
    let t = t
        .to_device(&candle_core::Device::Cpu)
        .and_then(|t| t.flatten_all())
        .map_err(crate::models::one_line)?;
    let e = crate::models::one_line;
    fn bytes<T: Copy, const N: usize>(v: Vec<T>, f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
        v.into_iter().flat_map(f).collect()
    }
    Ok(match t.dtype() {
        DType::F16 => bytes(t.to_vec1::<half::f16>().map_err(e)?, |v| v.to_le_bytes()),
        DType::BF16 => bytes(t.to_vec1::<half::bf16>().map_err(e)?, |v| v.to_le_bytes()),
        DType::F64 => bytes(t.to_vec1::<f64>().map_err(e)?, |v| v.to_le_bytes()),
        DType::F32 => bytes(t.to_vec1::<f32>().map_err(e)?, |v| v.to_le_bytes()),
        other => return Err(format!("cannot store {other:?} tensors")),
    })
}
