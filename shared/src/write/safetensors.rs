//! The safetensors writer: header first (offsets are known before any data is read), then
//! every tensor's bytes back to back.
//!
//! Laid out as the `safetensors` library's own `serialize` does, so files look familiar to
//! every reader: tensors ordered by dtype (largest alignment first) then name, the JSON
//! header starting with `{` and `__metadata__`, padded with spaces to a multiple of 8 so the
//! data is 8-byte aligned. Metadata keys are sorted, so one recipe always yields one file.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::plan::{LazyTensor, Part, Plan};
use std::collections::BTreeMap;

/// The safetensors library's dtype order (its enum order: increasing alignment).
const DTYPE_ORDER: &[&str] = &[
    "BOOL",
    "F4",
    "F6_E2M3",
    "F6_E3M2",
    "U8",
    "I8",
    "F8_E5M2",
    "F8_E4M3",
    "F8_E8M0",
    "F8_E4M3FNUZ",
    "F8_E5M2FNUZ",
    "I16",
    "U16",
    "F16",
    "BF16",
    "I32",
    "U32",
    "F32",
    "C64",
    "F64",
    "I64",
    "U64",
];

/// The format's own cap on header size.
const MAX_HEADER: usize = 100_000_000;

fn st_name(name: &str, dtype: DType) -> Result<&'static str> {
    dtype
        .safetensors_name()
        .filter(|_| dtype.bits() % 8 == 0)
        .ok_or_else(|| {
            Error::op(format!(
                "tensor '{name}': safetensors has no {} dtype",
                dtype.torch_name()
            ))
        })
}

/// A JSON header as the file begins: its length (padded with spaces to a multiple of 8, so
/// the data is 8-byte aligned) and itself.
fn framed(header: &str) -> Result<Vec<u8>> {
    let padded = header.len().next_multiple_of(8);
    if padded > MAX_HEADER {
        return Err(Error::op("safetensors header would exceed 100 MB"));
    }
    let mut head = (padded as u64).to_le_bytes().to_vec();
    head.extend_from_slice(header.as_bytes());
    head.resize(8 + padded, b' ');
    Ok(head)
}

/// Plan a safetensors file holding `tensors` and `metadata`.
pub fn safetensors(
    tensors: &[(String, LazyTensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<Plan> {
    let mut order: Vec<(usize, &'static str)> = Vec::with_capacity(tensors.len());
    let mut seen = std::collections::HashSet::new();
    for (i, (name, t)) in tensors.iter().enumerate() {
        if name == "__metadata__" || !seen.insert(name.as_str()) {
            return Err(Error::op(format!(
                "tensor name '{name}' cannot be written to safetensors"
            )));
        }
        order.push((i, st_name(name, t.dtype)?));
    }
    let rank = |s: &str| DTYPE_ORDER.iter().position(|&d| d == s).unwrap_or(0);
    order.sort_by(|a, b| {
        rank(b.1)
            .cmp(&rank(a.1))
            .then_with(|| tensors[a.0].0.cmp(&tensors[b.0].0))
    });

    let mut header = String::from("{");
    if !metadata.is_empty() {
        header.push_str("\"__metadata__\":");
        header.push_str(&serde_json::to_string(metadata).expect("strings serialize"));
    }
    let mut offset = 0u64;
    for &(i, dtype) in &order {
        let (name, t) = &tensors[i];
        if header.len() > 1 {
            header.push(',');
        }
        let end = offset + t.nbytes();
        header.push_str(&serde_json::to_string(name).expect("strings serialize"));
        header.push_str(&format!(
            ":{{\"dtype\":\"{dtype}\",\"shape\":{},\"data_offsets\":[{offset},{end}]}}",
            serde_json::to_string(&t.shape).expect("numbers serialize")
        ));
        offset = end;
    }
    header.push('}');
    let head = framed(&header)?;

    let mut plan = Plan::default();
    plan.push(Part::Bytes(head));
    for &(i, _) in &order {
        let (name, t) = &tensors[i];
        plan.push(Part::tensor(name, t));
    }
    Ok(plan)
}

/// A safetensors file (input `input`, `source`) with its `__metadata__` replaced by
/// `metadata` and its tensor bytes unchanged: a new header, then the old data region as one
/// copy. Tensor entries and their offsets stay as they were, so the tensor bytes — and with
/// them AutoV3 / kohya's `sshs_model_hash` — are the same; the whole-file hash (AutoV2)
/// changes with the header.
pub fn replace_metadata(
    source: &dyn crate::source::Source,
    input: usize,
    metadata: &BTreeMap<String, String>,
) -> Result<Plan> {
    let mut len = [0u8; 8];
    source.read_at(0, &mut len)?;
    let n = u64::from_le_bytes(len);
    let data_start = n
        .checked_add(8)
        .filter(|&s| n <= MAX_HEADER as u64 && s <= source.len())
        .ok_or_else(|| Error::Safetensors(format!("header length {n} does not fit the file")))?;
    let raw = crate::source::read_vec(source, 8, n)?;
    let mut table: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&raw)
        .map_err(|e| Error::Safetensors(format!("header is not a JSON object: {e}")))?;
    table.remove("__metadata__");
    let mut header = String::from("{");
    if !metadata.is_empty() {
        header.push_str("\"__metadata__\":");
        header.push_str(&serde_json::to_string(metadata).expect("strings serialize"));
    }
    for (name, entry) in &table {
        if header.len() > 1 {
            header.push(',');
        }
        header.push_str(&serde_json::to_string(name).expect("strings serialize"));
        header.push(':');
        header.push_str(&serde_json::to_string(entry).expect("JSON serializes"));
    }
    header.push('}');
    let head = framed(&header)?;
    let mut plan = Plan::default();
    plan.push(Part::Bytes(head));
    plan.push(Part::Copy {
        input,
        offset: data_start,
        len: source.len() - data_start,
    });
    Ok(plan)
}
