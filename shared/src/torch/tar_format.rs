//! The PyTorch 0.1 tar format (before 0.1.10), which `torch.load` still reads first of all
//! non-zip files.
//!
//! A tar archive of four members. `storages`: a pickled count, then per storage a pickled
//! `(key, location, storage_class)` followed by an int64 element count and the raw bytes, then
//! a pickled list of views `(target, root, offset, numel)`. `tensors`: a pickled count, then
//! per tensor a pickled `(key, storage_key, tensor_class)` followed by int32 ndim, 4 bytes of
//! padding, ndim int64 sizes, ndim int64 strides and an int64 storage offset. `pickle`: the
//! object, whose persistent ids are those keys. `sys_info`: a pickle torch never reads.
//!
//! The tar walk is ours (a few header fields) because the `tar` crate reads streams, and a
//! checkpoint reader needs random access over a [`Source`] to keep tensor bytes in place.

use crate::checkpoint::{ContainerInfo, Parsed};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::pickle::{Hooks, Import, Limits, Unpickler};
use crate::source::{Cursor, Source};
use crate::tensor::{DataLocation, StorageRef, TensorKind, TensorRef};
use crate::value::{ObjectGraph, Value, ValueId};
use std::collections::HashMap;

/// A regular file in the archive.
#[derive(Debug, Clone, Copy)]
struct Member {
    offset: u64,
    size: u64,
}

/// Regular-file members by name. Stops at the end-of-archive blocks or the end of the source.
fn members(source: &dyn Source) -> Result<HashMap<String, Member>> {
    let mut out = HashMap::new();
    let mut pos = 0u64;
    let mut long_name: Option<String> = None;
    let mut header = [0u8; 512];
    while pos + 512 <= source.len() {
        source.read_at(pos, &mut header)?;
        if header.iter().all(|&b| b == 0) {
            break;
        }
        let field = |range: std::ops::Range<usize>| {
            let raw = &header[range];
            let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            String::from_utf8_lossy(&raw[..end]).into_owned()
        };
        let size_text = field(124..136);
        let size = u64::from_str_radix(size_text.trim(), 8).map_err(|_| {
            Error::torch(format!(
                "tar header at {pos}: size '{size_text}' is not octal"
            ))
        })?;
        let data = pos + 512;
        if data.checked_add(size).is_none_or(|e| e > source.len()) {
            return Err(Error::torch(format!(
                "tar member at {pos} ({size} bytes) runs past the end of the file (truncated?)"
            )));
        }
        let mut name = long_name.take().unwrap_or_else(|| field(0..100));
        if &header[257..262] == b"ustar" && header[345] != 0 {
            name = format!("{}/{name}", field(345..500));
        }
        match header[156] {
            b'0' | 0 => {
                out.insert(name, Member { offset: data, size });
            }
            b'L' if size <= 4096 => {
                let bytes = crate::source::read_vec(source, data, size)?;
                let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
                long_name = Some(String::from_utf8_lossy(&bytes[..end]).into_owned());
            }
            _ => {}
        }
        pos = data + size.div_ceil(512) * 512;
    }
    Ok(out)
}

fn member(members: &HashMap<String, Member>, name: &str) -> Result<Member> {
    members.get(name).copied().ok_or_else(|| {
        Error::torch(format!(
            "a tar archive without a '{name}' member: not a PyTorch 0.1 checkpoint"
        ))
    })
}

/// One small pickle at the cursor, with its imports collected.
fn small_pickle(
    cursor: &mut Cursor<'_>,
    limits: Limits,
    imports: &mut Vec<Import>,
    what: &str,
) -> Result<(ObjectGraph, ValueId)> {
    super::plain_pickle(cursor, limits, imports, &format!("tar '{what}'"))
}

fn count(g: &ObjectGraph, id: ValueId, what: &str, limits: Limits) -> Result<usize> {
    g.as_int(id)
        .and_then(|n| usize::try_from(n).ok())
        .filter(|&n| n <= limits.max_values)
        .ok_or_else(|| Error::torch(format!("tar '{what}': the count is not a sane integer")))
}

fn read_i64(cursor: &mut Cursor<'_>, what: &str) -> Result<i64> {
    let bytes = cursor
        .take(8)?
        .ok_or_else(|| Error::torch(format!("tar '{what}' ends early (truncated?)")))?;
    Ok(i64::from_le_bytes(bytes.try_into().expect("8 bytes")))
}

/// A storage as the `storages` member declares it.
#[derive(Debug, Clone)]
struct TarStorage {
    dtype: DType,
    numel: u64,
    offset: u64,
    location: String,
}

/// A tensor as the `tensors` member declares it.
#[derive(Debug, Clone)]
struct TarTensor {
    storage: String,
    shape: Vec<u64>,
    strides: Vec<u64>,
    offset: u64,
}

fn key_of(g: &ObjectGraph, id: ValueId) -> String {
    g.key_segment(id)
}

fn read_storages(
    source: &dyn Source,
    m: Member,
    limits: Limits,
    imports: &mut Vec<Import>,
) -> Result<HashMap<String, TarStorage>> {
    let mut cursor = Cursor::new(source, m.offset, m.offset + m.size);
    let (g, n) = small_pickle(&mut cursor, limits, imports, "storages")?;
    let n = count(&g, n, "storages", limits)?;
    let mut out = HashMap::new();
    for _ in 0..n {
        let (g, args) = small_pickle(&mut cursor, limits, imports, "storages")?;
        let a = g.as_seq(args).filter(|a| a.len() == 3).ok_or_else(|| {
            Error::torch("tar 'storages': a record is not (key, location, class)")
        })?;
        let class = g
            .as_global(a[2])
            .filter(|c| c.module == "torch")
            .and_then(|c| DType::from_storage_class(&c.name))
            .ok_or_else(|| {
                Error::torch("tar 'storages': a record's class is not a torch storage")
            })?;
        let numel = read_i64(&mut cursor, "storages")?;
        let numel = u64::try_from(numel)
            .map_err(|_| Error::torch("tar 'storages': a negative element count"))?;
        let len = numel
            .checked_mul(class.size())
            .filter(|&l| l <= cursor.remaining())
            .ok_or_else(|| {
                Error::torch("tar 'storages': a storage runs past the member (truncated?)")
            })?;
        let offset = cursor.position();
        cursor.skip(len)?;
        out.insert(
            key_of(&g, a[0]),
            TarStorage {
                dtype: class,
                numel,
                offset,
                location: g.as_str(a[1]).unwrap_or("cpu").to_string(),
            },
        );
    }
    let (g, views) = small_pickle(&mut cursor, limits, imports, "storages")?;
    for &v in g.as_seq(views).unwrap_or(&[]) {
        let f = g.as_seq(v).filter(|f| f.len() == 4).ok_or_else(|| {
            Error::torch("tar 'storages': a view is not (target, root, offset, numel)")
        })?;
        let root = out
            .get(&key_of(&g, f[1]))
            .cloned()
            .ok_or_else(|| Error::torch("tar 'storages': a view of an unknown storage"))?;
        let (offset, numel) = (g.as_int(f[2]), g.as_int(f[3]));
        let (Some(offset), Some(numel)) = (
            offset.and_then(|o| u64::try_from(o).ok()),
            numel.and_then(|n| u64::try_from(n).ok()),
        ) else {
            return Err(Error::torch(
                "tar 'storages': a view's offset or size is not a count",
            ));
        };
        if offset.checked_add(numel).is_none_or(|e| e > root.numel) {
            return Err(Error::torch(
                "tar 'storages': a view lies outside its storage",
            ));
        }
        out.insert(
            key_of(&g, f[0]),
            TarStorage {
                numel,
                offset: root.offset + offset * root.dtype.size(),
                ..root
            },
        );
    }
    Ok(out)
}

fn read_tensors(
    source: &dyn Source,
    m: Member,
    limits: Limits,
    imports: &mut Vec<Import>,
) -> Result<HashMap<String, TarTensor>> {
    let mut cursor = Cursor::new(source, m.offset, m.offset + m.size);
    let (g, n) = small_pickle(&mut cursor, limits, imports, "tensors")?;
    let n = count(&g, n, "tensors", limits)?;
    let mut out = HashMap::new();
    for _ in 0..n {
        let (g, args) = small_pickle(&mut cursor, limits, imports, "tensors")?;
        let a = g
            .as_seq(args)
            .filter(|a| a.len() == 3)
            .ok_or_else(|| Error::torch("tar 'tensors': a record is not (key, storage, class)"))?;
        let ndim = read_i64(&mut cursor, "tensors")? as i32; // int32, then 4 bytes of padding
        if !(0..=64).contains(&ndim) {
            return Err(Error::torch(format!("tar 'tensors': {ndim} dimensions")));
        }
        let mut dims = Vec::with_capacity(2 * ndim as usize + 1);
        for _ in 0..2 * ndim + 1 {
            let v = read_i64(&mut cursor, "tensors")?;
            dims.push(
                u64::try_from(v).map_err(|_| Error::torch("tar 'tensors': a negative size"))?,
            );
        }
        let offset = dims.pop().expect("one more than 2·ndim");
        let strides = dims.split_off(ndim as usize);
        out.insert(
            key_of(&g, a[0]),
            TarTensor {
                storage: key_of(&g, a[1]),
                shape: dims,
                strides,
                offset,
            },
        );
    }
    Ok(out)
}

/// Persistent ids of the `pickle` member: tensor or storage keys.
struct TarHooks {
    storages: HashMap<String, TarStorage>,
    tensors: HashMap<String, TarTensor>,
    made: HashMap<String, ValueId>,
}

impl TarHooks {
    fn storage(&mut self, graph: &mut ObjectGraph, key: &str) -> Result<ValueId, String> {
        if let Some(&id) = self.made.get(key) {
            return Ok(id);
        }
        let s = self
            .storages
            .get(key)
            .ok_or_else(|| format!("persistent id '{key}' names no tensor or storage"))?;
        let id = graph.push(Value::Storage(Box::new(StorageRef {
            key: key.to_string(),
            dtype: s.dtype,
            numel: s.numel,
            location: s.location.clone(),
            data: DataLocation::Range {
                offset: s.offset,
                len: s.numel * s.dtype.size(),
            },
            untyped: false,
            crc32: None,
        })));
        self.made.insert(key.to_string(), id);
        Ok(id)
    }
}

impl Hooks for TarHooks {
    fn persistent_load(
        &mut self,
        graph: &mut ObjectGraph,
        pid: ValueId,
    ) -> Result<ValueId, String> {
        if let Some(items) = graph.as_seq(pid) {
            // (class, source file, source): a pickled module's class; torch returns the class.
            return items
                .first()
                .copied()
                .ok_or_else(|| "an empty persistent id".into());
        }
        let key = graph.key_segment(pid);
        let Some(t) = self.tensors.get(&key).cloned() else {
            return self.storage(graph, &key);
        };
        let storage = self.storage(graph, &t.storage)?;
        let Value::Storage(s) = graph.get(storage) else {
            unreachable!("storage() makes storages")
        };
        TensorRef::storage_span(&t.shape, &t.strides, t.offset)
            .filter(|&e| e <= s.numel)
            .ok_or_else(|| format!("tensor '{key}' lies outside its storage '{}'", t.storage))?;
        let dtype = s.dtype;
        Ok(graph.push(Value::Tensor(Box::new(TensorRef {
            storage,
            dtype,
            shape: t.shape,
            strides: t.strides,
            storage_offset: t.offset,
            requires_grad: false,
            kind: TensorKind::Tensor,
            flags: Default::default(),
        }))))
    }
}

pub(crate) fn read(
    source: &dyn Source,
    limits: Limits,
    imports: &mut Vec<Import>,
) -> Result<Parsed> {
    let members = members(source)?;
    let storages = read_storages(source, member(&members, "storages")?, limits, imports)?;
    let tensors = read_tensors(source, member(&members, "tensors")?, limits, imports)?;
    let m = member(&members, "pickle")?;
    let mut graph = ObjectGraph::new();
    let mut hooks = TarHooks {
        storages,
        tensors,
        made: HashMap::new(),
    };
    let mut unpickler = Unpickler::new(&mut graph, limits);
    let mut cursor = Cursor::new(source, m.offset, m.offset + m.size);
    let root = unpickler.load(&mut cursor, &mut hooks);
    imports.extend_from_slice(unpickler.imports());
    let pickle_protocol = unpickler.protocol();
    let root = root.map_err(|e| Error::torch(format!("tar 'pickle': {e}")))?;
    Ok(Parsed {
        graph,
        root,
        info: ContainerInfo::TorchTar {
            pickle_protocol,
            storages: hooks.made.len(),
        },
    })
}

/// Every pickle in the archive, for scanning: the object, `sys_info`, and those inside the
/// storage and tensor records (as far as they go).
pub(crate) fn scan(source: &dyn Source, limits: Limits, imports: &mut Vec<Import>) -> Result<()> {
    let members = members(source)?;
    let mut first_error = None;
    for name in ["pickle", "sys_info"] {
        if let Some(m) = members.get(name) {
            let range =
                crate::source::read_vec(source, m.offset, m.size.min(limits.max_pickle_bytes))?;
            let src = crate::source::MemSource::new(range);
            if let Some(e) = crate::scan::scan_plain_pickles(&src, limits, 0, imports) {
                first_error.get_or_insert(Error::torch(format!("tar '{name}': {e}")));
            }
        }
    }
    let mut records = Vec::new();
    let r = members
        .get("storages")
        .map(|&m| read_storages(source, m, limits, &mut records).map(drop))
        .transpose()
        .and_then(|_| {
            members
                .get("tensors")
                .map(|&m| read_tensors(source, m, limits, &mut records).map(drop))
                .transpose()
        });
    imports.extend(records);
    if let Err(e) = r {
        first_error.get_or_insert(e);
    }
    first_error.map_or(Ok(()), Err)
}
