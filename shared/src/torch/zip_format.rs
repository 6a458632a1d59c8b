//! `torch.save`'s zip format: `<folder>/data.pkl` plus one stored entry per storage.

use super::rebuild::{StorageLocator, TorchHooks};
use crate::checkpoint::{ContainerInfo, Parsed};
use crate::container::zip::{Compression, ZipArchive};
use crate::error::{Error, Result};
use crate::pickle::{Import, Limits, Unpickler};
use crate::source::{Cursor, MemSource, Source};
use crate::tensor::DataLocation;
use crate::value::ObjectGraph;

struct ZipStorages<'a> {
    archive: &'a ZipArchive,
    prefix: &'a str,
}

impl StorageLocator for ZipStorages<'_> {
    fn locate(&mut self, key: &str, nbytes: u64) -> Result<(DataLocation, Option<u32>), String> {
        let name = format!("{}/data/{key}", self.prefix);
        let entry = self
            .archive
            .get(&name)
            .ok_or_else(|| format!("storage '{name}' is missing from the archive"))?;
        if entry.size < nbytes {
            return Err(format!(
                "storage '{name}' holds {} bytes but the pickle declares {nbytes}",
                entry.size
            ));
        }
        // torch.save with CRCs turned off records 0: treat that as unknown, so a rewrite
        // computes real ones.
        let crc =
            (entry.size == nbytes && (entry.crc32 != 0 || nbytes == 0)).then_some(entry.crc32);
        Ok(match entry.compression {
            Compression::Stored => (
                DataLocation::Range {
                    offset: entry.data_offset,
                    len: nbytes,
                },
                crc,
            ),
            _ => (
                DataLocation::Deflated {
                    entry: name,
                    offset: entry.data_offset,
                    compressed_len: entry.compressed_size,
                    len: nbytes,
                },
                crc,
            ),
        })
    }
}

/// Small text records (`byteorder`, `version`) are read only if they are small.
fn small_record(source: &dyn Source, archive: &ZipArchive, name: &str) -> Result<Option<String>> {
    match archive.get(name) {
        Some(e) if e.size <= 64 => {
            let bytes = archive.read(source, e, 64)?;
            Ok(Some(String::from_utf8_lossy(&bytes).trim().to_string()))
        }
        _ => Ok(None),
    }
}

/// The archive's top folder, as torch's reader finds it: the first entry's prefix.
pub(crate) fn archive_prefix(archive: &ZipArchive) -> Result<String> {
    let first = archive
        .entries()
        .first()
        .ok_or_else(|| Error::zip("archive is empty: not a PyTorch checkpoint"))?;
    match first.name.split_once('/') {
        Some((prefix, _)) => Ok(prefix.to_string()),
        None => Err(Error::zip(format!(
            "first entry '{}' is not inside a folder: not a PyTorch checkpoint",
            first.name
        ))),
    }
}

pub(crate) fn read(
    source: &dyn Source,
    limits: Limits,
    imports: &mut Vec<Import>,
) -> Result<Parsed> {
    let archive = ZipArchive::open(source)?;
    let prefix = archive_prefix(&archive)?;
    if archive.get(&format!("{prefix}/constants.pkl")).is_some() {
        return Err(Error::UnknownFormat(
            "a TorchScript archive (torch.jit.save), not a checkpoint: load it with torch.jit.load"
                .into(),
        ));
    }
    let pkl_name = format!("{prefix}/data.pkl");
    let pkl = archive.get(&pkl_name).ok_or_else(|| {
        let names: Vec<&str> = archive
            .entries()
            .iter()
            .take(3)
            .map(|e| e.name.as_str())
            .collect();
        Error::UnknownFormat(format!(
            "a zip archive without '{pkl_name}' (entries: {}), not a PyTorch checkpoint",
            names.join(", ")
        ))
    })?;
    let byteorder = small_record(source, &archive, &format!("{prefix}/byteorder"))?;
    if let Some(order) = &byteorder {
        match order.as_str() {
            "little" => {}
            // torch byte-swaps such a file on load; reading its bytes as they are would give
            // other values than torch's, so it is refused until a swap is written.
            "big" => {
                return Err(Error::torch(
                    "the archive's byteorder record says 'big' (saved on a big-endian machine); \
                     its tensors would read wrong here, so it is refused",
                ))
            }
            _ => return Err(Error::torch(format!("byteorder record says '{order}'"))),
        }
    }
    let version = match small_record(source, &archive, &format!("{prefix}/version"))? {
        Some(v) => Some(v),
        None => small_record(source, &archive, &format!("{prefix}/.data/version"))?,
    };

    // A stored data.pkl is read in place; a deflated one (third-party re-zip) is inflated
    // under the pickle size cap, which also stops deflate bombs.
    let inflated;
    let (pkl_source, start, end): (&dyn Source, u64, u64) = match pkl.compression {
        Compression::Stored => {
            if pkl.size > limits.max_pickle_bytes {
                return Err(Error::Limit(format!(
                    "'{pkl_name}' is {} bytes (limit {})",
                    pkl.size, limits.max_pickle_bytes
                )));
            }
            (source, pkl.data_offset, pkl.data_offset + pkl.size)
        }
        _ => {
            inflated = MemSource::new(archive.read(source, pkl, limits.max_pickle_bytes)?);
            (&inflated, 0, inflated.len())
        }
    };
    let mut graph = ObjectGraph::new();
    let mut hooks = TorchHooks::new(ZipStorages {
        archive: &archive,
        prefix: &prefix,
    });
    let mut cursor = Cursor::new(pkl_source, start, end);
    let mut unpickler = Unpickler::new(&mut graph, limits);
    let root = unpickler.load(&mut cursor, &mut hooks);
    imports.extend_from_slice(unpickler.imports());
    let protocol = unpickler.protocol();
    let root = root.map_err(|e| in_entry(e, &pkl_name))?;
    let deflated = archive
        .entries()
        .iter()
        .any(|e| e.compression != Compression::Stored);
    Ok(Parsed {
        graph,
        root,
        info: ContainerInfo::TorchZip {
            prefix,
            byteorder: byteorder.unwrap_or_else(|| "little".into()),
            version,
            pickle_protocol: protocol,
            entries: archive.entries().len(),
            deflated,
        },
    })
}

fn in_entry(e: Error, name: &str) -> Error {
    match e {
        Error::Pickle { offset, message } => Error::Pickle {
            offset,
            message: format!("{name}: {message}"),
        },
        Error::Torch(m) => Error::Torch(format!("{name}: {m}")),
        other => other,
    }
}

/// Every pickle in the archive other than `data.pkl`, for scanning.
pub(crate) fn other_pickles(source: &dyn Source) -> Result<Vec<(String, Vec<u8>)>> {
    let archive = ZipArchive::open(source)?;
    let mut out = Vec::new();
    for e in archive.entries() {
        if e.name.ends_with(".pkl") && !e.name.ends_with("/data.pkl") {
            out.push((e.name.clone(), archive.read(source, e, 64 << 20)?));
        }
    }
    Ok(out)
}
