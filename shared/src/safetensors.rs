//! safetensors files: an 8-byte header length, a JSON header, then packed tensor data.
//!
//! The header is validated by the `safetensors` crate itself (`SafeTensors::read_metadata`:
//! size cap, UTF-8, JSON schema, dtypes, contiguous non-overlapping offsets, shape × dtype
//! sizes with overflow checks), so we accept exactly what the reference accepts. The crate
//! wants the whole file in one slice to check the final length; we hand it the header only,
//! accept its "incomplete buffer" verdict, and check the data length against the real file
//! length ourselves — no tensor byte is read.
//!
//! The crate counts bytes in `usize`, which is 32 bits in the browser: there a 6.9 GB SDXL file
//! (offsets past 4 GiB) or any tensor of 512 MB or more would not even parse. So the table is
//! read again here with 64-bit offsets ([`Table`]) and checked by the same rules; on 64-bit
//! targets both checks run, and a test holds them to the same verdicts.

use crate::checkpoint::{ContainerInfo, Parsed};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::source::{read_vec, Source};
use crate::tensor::{DataLocation, StorageRef, TensorKind, TensorRef};
use crate::value::{Dict, ObjectGraph, Value};
#[cfg(any(target_pointer_width = "64", test))]
use safetensors::{tensor::SafeTensorError, SafeTensors};
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
    let data_start = 8 + n;
    let table = Table::parse(&header[8..]);
    // Offsets past the end of any file (a hostile header can sum them towards 2^64) are
    // refused before any arithmetic with them: the crate's own check adds them unchecked
    // (a panic in debug builds).
    let overflow = || Error::Safetensors("tensor data offsets overflow a 64-bit file size".into());
    if let Ok(t) = &table {
        data_start.checked_add(t.data_len).ok_or_else(overflow)?;
    }
    #[cfg(target_pointer_width = "64")]
    match SafeTensors::read_metadata(&header) {
        Ok(_) | Err(SafeTensorError::MetadataIncompleteBuffer) => {}
        Err(e) => return Err(Error::Safetensors(describe(&e))),
    }
    let table = table?;
    let data_end = data_start
        .checked_add(table.data_len)
        .ok_or_else(overflow)?;
    if data_end != len {
        return Err(Error::Safetensors(format!(
            "tensor data should end at byte {data_end} but the file is {len} bytes ({})",
            if data_end > len {
                "truncated"
            } else {
                "trailing bytes"
            }
        )));
    }

    let mut graph = ObjectGraph::new();
    let root = graph.push(Value::Dict(Dict::default()));
    for TableEntry {
        name,
        dtype,
        shape,
        begin,
        end,
    } in table.tensors
    {
        let storage = graph.push(Value::Storage(Box::new(StorageRef {
            key: name.clone(),
            dtype,
            numel: (end - begin) * 8 / dtype.bits().max(1),
            location: "cpu".into(),
            data: DataLocation::Range {
                offset: data_start + begin,
                len: end - begin,
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
            flags: Default::default(),
        })));
        let key = graph.push(Value::Str(name.into()));
        graph.dict_insert(root, key, tensor);
    }
    let user_metadata = table.metadata;
    Ok(Parsed {
        graph,
        root,
        info: ContainerInfo::Safetensors {
            header_len: n,
            metadata: user_metadata,
        },
    })
}

/// One tensor of the header table, with 64-bit offsets relative to the data start.
struct TableEntry {
    name: String,
    dtype: DType,
    shape: Vec<u64>,
    begin: u64,
    end: u64,
}

/// The header table read with 64-bit sizes, checked by the crate's rules: known dtypes,
/// offsets that tile the data from 0 with no hole or overlap, and each tensor's byte count
/// equal to its shape × dtype size (overflow is an error).
struct Table {
    /// In data order (the crate's `offset_keys` order).
    tensors: Vec<TableEntry>,
    metadata: BTreeMap<String, String>,
    data_len: u64,
}

/// A JSON object's entries in order, duplicates kept (a map would keep only the last).
struct Entries(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Entries, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(Visit)
    }
}

#[derive(serde::Deserialize)]
struct RawInfo {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

impl Table {
    fn parse(json: &[u8]) -> Result<Table> {
        let bad = |m: String| Error::Safetensors(m);
        let text =
            std::str::from_utf8(json).map_err(|_| bad("header is not valid UTF-8".into()))?;
        let raw: Entries = serde_json::from_str(text)
            .map_err(|e| bad(format!("header is not a valid tensor table: {e}")))?;
        let mut metadata = BTreeMap::new();
        let mut seen_metadata = false;
        // As the crate: every occurrence of a key must be valid; the last one counts.
        let mut by_name: BTreeMap<String, TableEntry> = BTreeMap::new();
        for (name, value) in raw.0 {
            if name == "__metadata__" {
                if std::mem::replace(&mut seen_metadata, true) {
                    return Err(bad(
                        "header is not a valid tensor table: duplicate field `__metadata__`".into(),
                    ));
                }
                let map: Option<BTreeMap<String, String>> = serde_json::from_value(value)
                    .map_err(|e| bad(format!("header is not a valid tensor table: {e}")))?;
                metadata = map.unwrap_or_default();
                continue;
            }
            let info: RawInfo = serde_json::from_value(value)
                .map_err(|e| bad(format!("header is not a valid tensor table: {name}: {e}")))?;
            let dtype = DType::from_safetensors_name(&info.dtype)
                .ok_or_else(|| bad(format!("tensor '{name}': unsupported dtype {}", info.dtype)))?;
            let (begin, end) = info.data_offsets;
            by_name.insert(
                name.clone(),
                TableEntry {
                    name,
                    dtype,
                    shape: info.shape,
                    begin,
                    end,
                },
            );
        }
        let mut tensors: Vec<TableEntry> = by_name.into_values().collect();
        tensors.sort_by(|a, b| (a.begin, a.end, &a.name).cmp(&(b.begin, b.end, &b.name)));
        let mut at = 0u64;
        for t in &tensors {
            if t.begin != at || t.end < t.begin {
                return Err(bad(format!(
                    "tensor '{}' has data offsets that leave a hole or overlap another tensor",
                    t.name
                )));
            }
            let bits = t
                .shape
                .iter()
                .try_fold(1u64, |n, &d| n.checked_mul(d))
                .and_then(|n| n.checked_mul(t.dtype.bits()))
                .ok_or_else(|| bad("a tensor's shape overflows".into()))?;
            if bits % 8 != 0 {
                return Err(bad("a tensor's size is not a whole number of bytes".into()));
            }
            if t.end - t.begin != bits / 8 {
                return Err(bad(
                    "a tensor's byte range does not match its shape and dtype".into(),
                ));
            }
            at = t.end;
        }
        Ok(Table {
            tensors,
            metadata,
            data_len: at,
        })
    }
}

#[cfg(target_pointer_width = "64")]
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

#[cfg(test)]
mod tests {
    use super::*;

    fn with_length(json: &str) -> Vec<u8> {
        let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(json.as_bytes());
        bytes
    }

    #[test]
    fn the_64_bit_table_gives_the_crates_verdicts() {
        let headers = [
            r#"{"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"b":{"dtype":"F16","shape":[4],"data_offsets":[24,32]}}"#,
            r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"BF16","shape":[],"data_offsets":[0,2]}}"#,
            r#"{"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"b":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}"#,
            r#"{}"#,
            // a hole, an overlap, a size that does not match the shape
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
            r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
            // unknown dtype, overflowing shape, reversed offsets, wrong types
            r#"{"a":{"dtype":"F31","shape":[1],"data_offsets":[0,4]}}"#,
            r#"{"a":{"dtype":"F32","shape":[18446744073709551615,2],"data_offsets":[0,4]}}"#,
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#,
            r#"{"a":{"dtype":"F32","shape":"1","data_offsets":[0,4]}}"#,
            r#"{"__metadata__":{"format":1}}"#,
            r#"[1,2]"#,
            r#"{"a":"#,
            // null metadata; duplicate metadata; a duplicate key whose first value is bad
            r#"{"__metadata__":null,"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
            r#"{"__metadata__":{},"__metadata__":{},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
            r#"{"a":{"dtype":"F31","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
            // offsets summing towards 2^64
            r#"{"a":{"dtype":"U8","shape":[9223372036854775807],"data_offsets":[0,9223372036854775807]},"b":{"dtype":"U8","shape":[9223372036854775800],"data_offsets":[9223372036854775807,18446744073709551607]}}"#,
        ];
        for json in headers {
            let ours = Table::parse(json.as_bytes()).map(|t| t.data_len);
            let crate_ok = match SafeTensors::read_metadata(&with_length(json)) {
                Ok(_) | Err(SafeTensorError::MetadataIncompleteBuffer) => true,
                Err(_) => false,
            };
            assert_eq!(ours.is_ok(), crate_ok, "{json}: ours {ours:?}");
        }
    }

    #[test]
    fn offsets_that_sum_past_2_pow_64_are_an_error_not_a_wrap() {
        // Sizes stay below 2^61 bytes, so bit counts fit in 64 bits.
        let step = 1u64 << 60;
        let mut tensors: Vec<String> = (0..15)
            .map(|i| {
                format!(
                    r#""t{i}":{{"dtype":"U8","shape":[{step}],"data_offsets":[{},{}]}}"#,
                    i * step,
                    (i + 1) * step
                )
            })
            .collect();
        // The last ends at 2^64 - 1: the data end, header added, is past 2^64.
        tensors.push(format!(
            r#""t15":{{"dtype":"U8","shape":[{}],"data_offsets":[{},{}]}}"#,
            step - 1,
            15 * step,
            u64::MAX
        ));
        let json = format!("{{{}}}", tensors.join(","));
        assert_eq!(Table::parse(json.as_bytes()).unwrap().data_len, u64::MAX);
        let mut file = with_length(&json);
        file.extend_from_slice(&[0; 16]);
        let source = crate::source::MemSource::new(file);
        let err = read(&source).err().expect("refused");
        assert!(err.to_string().contains("overflow"), "{err}");
    }

    #[test]
    fn offsets_past_4_gib_and_tensors_of_512_mb_parse() {
        // What a 32-bit usize cannot hold: the browser's case.
        let n = 3u64 << 30;
        let json = format!(
            r#"{{"a":{{"dtype":"F16","shape":[{n}],"data_offsets":[0,{}]}},"b":{{"dtype":"F32","shape":[2],"data_offsets":[{},{}]}}}}"#,
            2 * n,
            2 * n,
            2 * n + 8
        );
        let table = Table::parse(json.as_bytes()).unwrap();
        assert_eq!(table.data_len, 2 * n + 8);
        assert_eq!(table.tensors[1].begin, 6 << 30);
    }
}
