//! The legacy (pre-1.6) torch format: five stacked pickles, then the storages.
//!
//! Layout: magic number, protocol version (1001), `sys_info`, the object (storage persistent
//! ids `('storage', cls, key, location, numel, view)`), the sorted list of storage keys; then
//! for each key in that order an int64 element count followed by the raw bytes.

use super::rebuild::{StorageLocator, TorchHooks};
use crate::checkpoint::{ContainerInfo, Parsed};
use crate::error::{Error, Result};
use crate::pickle::{Import, Limits, Unpickler};
use crate::source::{Cursor, Source};
use crate::tensor::DataLocation;
use crate::value::{ObjectGraph, Value};

/// Legacy storages are located after the object pickle, so every one starts pending.
struct Deferred;

impl StorageLocator for Deferred {
    fn locate(&mut self, _key: &str, _nbytes: u64) -> Result<(DataLocation, Option<u32>), String> {
        Ok((DataLocation::Pending, None))
    }
}

fn header_pickle(
    cursor: &mut Cursor<'_>,
    limits: Limits,
    imports: &mut Vec<Import>,
    what: &str,
) -> Result<(ObjectGraph, u32)> {
    super::plain_pickle(cursor, limits, imports, &format!("legacy {what} pickle"))
}

pub(crate) fn read(
    source: &dyn Source,
    limits: Limits,
    imports: &mut Vec<Import>,
) -> Result<Parsed> {
    let mut cursor = Cursor::new(source, 0, source.len());

    let (g, magic) = header_pickle(&mut cursor, limits, imports, "magic number")?;
    let magic_ok = crate::container::detect::is_legacy_magic(g.get(magic));
    if !magic_ok {
        return Err(Error::torch("legacy file: wrong magic number"));
    }
    let (g, proto) = header_pickle(&mut cursor, limits, imports, "protocol version")?;
    let protocol_version = g.as_int(proto);
    if protocol_version != Some(1001) {
        return Err(Error::torch(format!(
            "legacy file: protocol version {protocol_version:?}, expected 1001"
        )));
    }
    let (g, sys_info) = header_pickle(&mut cursor, limits, imports, "sys_info")?;
    if let Some(le) = g.dict_get(sys_info, "little_endian") {
        if g.as_int(le) == Some(0) {
            return Err(Error::torch(
                "legacy file was saved on a big-endian machine; this is not supported",
            ));
        }
    }

    let mut graph = ObjectGraph::new();
    let mut hooks = TorchHooks::new(Deferred);
    let mut unpickler = Unpickler::new(&mut graph, limits);
    let root = unpickler.load(&mut cursor, &mut hooks);
    imports.extend_from_slice(unpickler.imports());
    let pickle_protocol = unpickler.protocol();
    let root = root.map_err(|e| Error::torch(format!("legacy object pickle: {e}")))?;

    let (g, keys) = header_pickle(&mut cursor, limits, imports, "storage keys")?;
    let keys: Vec<String> = g
        .as_seq(keys)
        .ok_or_else(|| Error::torch("legacy storage key list is not a list"))?
        .iter()
        .map(|&k| g.key_segment(k))
        .collect();

    // Storage records follow in key order: int64 element count, then the bytes.
    let mut pos = cursor.position();
    for key in &keys {
        let &id = hooks.storages().get(key).ok_or_else(|| {
            Error::torch(format!(
                "legacy file lists storage '{key}' that the object never uses"
            ))
        })?;
        let mut count = [0u8; 8];
        if pos.checked_add(8).is_none_or(|e| e > source.len()) {
            return Err(Error::torch(format!(
                "legacy storage '{key}' starts past the end of the file (truncated?)"
            )));
        }
        source.read_at(pos, &mut count)?;
        let count = i64::from_le_bytes(count);
        let Value::Storage(storage) = graph.get_mut(id) else {
            unreachable!("storage map holds storages");
        };
        if count < 0 || count as u64 != storage.numel {
            return Err(Error::torch(format!(
                "legacy storage '{key}' holds {count} elements but the pickle declares {}",
                storage.numel
            )));
        }
        let len = storage.numel * storage.dtype.size();
        let data = pos + 8;
        if data.checked_add(len).is_none_or(|e| e > source.len()) {
            return Err(Error::torch(format!(
                "legacy storage '{key}' ({len} bytes at offset {data}) runs past the end of the file (truncated?)"
            )));
        }
        storage.data = DataLocation::Range { offset: data, len };
        pos = data + len;
    }
    for view in &hooks.views {
        let (root_offset, elsize) = match graph.get(view.root) {
            Value::Storage(s) => match s.data {
                DataLocation::Range { offset, .. } => (offset, s.dtype.size()),
                _ => {
                    return Err(Error::torch(format!(
                        "legacy storage '{}' has no data",
                        s.key
                    )))
                }
            },
            _ => unreachable!("views point at storages"),
        };
        if let Value::Storage(s) = graph.get_mut(view.view) {
            s.data = DataLocation::Range {
                offset: root_offset + view.offset * elsize,
                len: s.numel * elsize,
            };
        }
    }
    if let Some((key, _)) = hooks.storages().iter().find(
        |(_, &id)| matches!(graph.get(id), Value::Storage(s) if s.data == DataLocation::Pending),
    ) {
        return Err(Error::torch(format!(
            "legacy storage '{key}' is used but its data is not in the file"
        )));
    }
    Ok(Parsed {
        graph,
        root,
        info: ContainerInfo::TorchLegacy {
            pickle_protocol,
            storages: keys.len(),
            trailing_bytes: source.len() - pos,
        },
    })
}
