//! safetensors files: an 8-byte header length, a JSON header, then packed tensor data.
//!
//! The header is validated by the `safetensors` crate itself (`SafeTensors::read_metadata`:
//! size cap, UTF-8, JSON schema, dtypes, contiguous non-overlapping offsets, shape × dtype
//! sizes with overflow checks), so we accept exactly what the reference accepts. The crate
//! wants the whole file in one slice to check the final length; we hand it the header only,
//! accept its "incomplete buffer" verdict, and check the data length against the real file
//! length ourselves — no tensor byte is read.

use crate::checkpoint::{ContainerInfo, Parsed};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::source::{read_vec, Source};
use crate::tensor::{DataLocation, StorageRef, TensorKind, TensorRef};
use crate::value::{Dict, ObjectGraph, Value};
use safetensors::tensor::{Metadata, SafeTensorError};
use safetensors::SafeTensors;
use std::collections::BTreeMap;

/// The crate's cap on header size.
pub const MAX_HEADER: u64 = 100_000_000;

pub(crate) fn read(source: &dyn Source) -> Result<Parsed> {
    let len = source.len();
    if len < 8 {
        return Err(Error::Safetensors(format!(
            "file is {len} bytes, too short for the 8-byte header length"
        )));
    }
    let mut n = [0u8; 8];
    source.read_at(0, &mut n)?;
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER {
        return Err(Error::Safetensors(format!(
            "header length {n} exceeds the format's limit of {MAX_HEADER} bytes"
        )));
    }
    if 8 + n > len {
        return Err(Error::Safetensors(format!(
            "header length {n} runs past the end of the {len}-byte file (truncated?)"
        )));
    }
    let header = read_vec(source, 0, 8 + n)?;
    match SafeTensors::read_metadata(&header) {
        Ok(_) | Err(SafeTensorError::MetadataIncompleteBuffer) => {}
        Err(e) => return Err(Error::Safetensors(describe(&e))),
    }
    let metadata: Metadata = serde_json::from_slice(&header[8..])
        .map_err(|e| Error::Safetensors(format!("invalid header: {e}")))?;
    let data_start = 8 + n;
    let data_len = metadata.data_len() as u64;
    if data_start + data_len != len {
        return Err(Error::Safetensors(format!(
            "tensor data should end at byte {} but the file is {len} bytes ({})",
            data_start + data_len,
            if data_start + data_len > len {
                "truncated"
            } else {
                "trailing bytes"
            }
        )));
    }

    let mut graph = ObjectGraph::new();
    let root = graph.push(Value::Dict(Dict::default()));
    let infos = metadata.tensors();
    for name in metadata.offset_keys() {
        let info = infos[&name];
        let st_name = format!("{:?}", info.dtype);
        let dtype = DType::from_safetensors_name(&st_name).ok_or_else(|| {
            Error::Safetensors(format!("tensor '{name}': unsupported dtype {st_name}"))
        })?;
        let (begin, end) = info.data_offsets;
        let shape: Vec<u64> = info.shape.iter().map(|&d| d as u64).collect();
        let storage = graph.push(Value::Storage(Box::new(StorageRef {
            key: name.clone(),
            dtype,
            numel: (end - begin) as u64 * 8 / dtype.bits().max(1),
            location: "cpu".into(),
            data: DataLocation::Range {
                offset: data_start + begin as u64,
                len: (end - begin) as u64,
            },
            untyped: false,
            crc32: None,
        })));
        let tensor = graph.push(Value::Tensor(Box::new(TensorRef {
            storage,
            dtype,
            strides: TensorRef::contiguous_strides(&shape),
            shape,
            storage_offset: 0,
            requires_grad: false,
            kind: TensorKind::Tensor,
        })));
        let key = graph.push(Value::Str(name.into()));
        graph.dict_insert(root, key, tensor);
    }
    let user_metadata: BTreeMap<String, String> = metadata
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    Ok(Parsed {
        graph,
        root,
        info: ContainerInfo::Safetensors {
            header_len: n,
            metadata: user_metadata,
        },
    })
}

fn describe(e: &SafeTensorError) -> String {
    match e {
        SafeTensorError::InvalidHeader(_) => "header is not valid UTF-8".into(),
        SafeTensorError::InvalidHeaderDeserialization(e) => {
            format!("header is not a valid tensor table: {e}")
        }
        SafeTensorError::InvalidOffset(name) => {
            format!("tensor '{name}' has data offsets that leave a hole or overlap another tensor")
        }
        SafeTensorError::TensorInvalidInfo => {
            "a tensor's byte range does not match its shape and dtype".into()
        }
        SafeTensorError::ValidationOverflow => "a tensor's shape overflows".into(),
        SafeTensorError::MisalignedSlice => "a tensor's size is not a whole number of bytes".into(),
        other => other.to_string(),
    }
}
