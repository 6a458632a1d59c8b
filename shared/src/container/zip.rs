//! A read-only ZIP reader over a random-access [`Source`].
//!
//! Why not the `zip` crate: a checkpoint plan needs, for every storage entry, the absolute
//! byte range of its data and its CRC-32 (so a rewrite can copy both without touching the
//! bytes), and it must read a 10 GB archive through positional reads only — including from a
//! browser `File` — with typed, located errors and hard caps against hostile directories. That
//! is the central directory, the ZIP64 records and the local headers: a few hundred lines we
//! own, fuzzed (`fuzz/fuzz_targets/zip_reader.rs`). Inflation of deflated entries uses
//! `flate2`.

use crate::error::{Error, Result};
use crate::source::{read_vec, Source};
use std::collections::HashMap;
use std::io::Read;

const EOCD_SIG: u32 = 0x0605_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const LOCAL_SIG: u32 = 0x0403_4b50;
const EOCD_LEN: u64 = 22;
const CENTRAL_LEN: usize = 46;
const LOCAL_LEN: usize = 30;

/// Caps that keep a hostile directory from costing unbounded memory or time.
#[derive(Debug, Clone, Copy)]
pub struct ZipLimits {
    pub max_entries: u64,
    pub max_central_directory: u64,
}

impl Default for ZipLimits {
    fn default() -> Self {
        ZipLimits {
            max_entries: 1 << 20,
            max_central_directory: 256 << 20,
        }
    }
}

/// How an entry's bytes are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Stored,
    Deflated,
    Other(u16),
}

/// One archive member, with the absolute position of its data.
#[derive(Debug, Clone)]
pub struct ZipEntry {
    pub name: String,
    pub compression: Compression,
    pub compressed_size: u64,
    pub size: u64,
    pub crc32: u32,
    /// Offset of the local file header.
    pub header_offset: u64,
    /// Offset of the first data byte (after the local header, name and extra field).
    pub data_offset: u64,
}

/// The directory of a ZIP archive.
#[derive(Debug, Clone)]
pub struct ZipArchive {
    entries: Vec<ZipEntry>,
    by_name: HashMap<String, usize>,
    /// Whether the archive carries ZIP64 end records (torch always writes them).
    pub zip64: bool,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

struct EndRecord {
    entries: u64,
    cd_size: u64,
    cd_offset: u64,
    zip64: bool,
}

impl ZipArchive {
    /// Read the central directory and every local header.
    pub fn open(source: &dyn Source) -> Result<Self> {
        Self::open_with(source, ZipLimits::default())
    }

    pub fn open_with(source: &dyn Source, limits: ZipLimits) -> Result<Self> {
        let (end, mut entries, by_name) = central_directory(source, limits)?;
        for entry in &mut entries {
            entry.data_offset = read_local_header(source, entry)?;
        }
        Ok(ZipArchive {
            entries,
            by_name,
            zip64: end.zip64,
        })
    }

    /// Entries in central-directory order.
    pub fn entries(&self) -> &[ZipEntry] {
        &self.entries
    }

    pub fn get(&self, name: &str) -> Option<&ZipEntry> {
        self.by_name.get(name).map(|&i| &self.entries[i])
    }

    /// Read a whole entry into memory, inflating it if needed, refusing more than `limit` bytes.
    pub fn read(&self, source: &dyn Source, entry: &ZipEntry, limit: u64) -> Result<Vec<u8>> {
        match entry.compression {
            Compression::Stored => {
                if entry.size > limit {
                    return Err(Error::Limit(format!(
                        "entry '{}' is {} bytes (limit {limit})",
                        entry.name, entry.size
                    )));
                }
                Ok(read_vec(source, entry.data_offset, entry.size)?)
            }
            Compression::Deflated => {
                let raw = EntryReader {
                    source,
                    pos: entry.data_offset,
                    end: entry.data_offset + entry.compressed_size,
                };
                let mut out = Vec::new();
                flate2::read::DeflateDecoder::new(raw)
                    .take(limit + 1)
                    .read_to_end(&mut out)
                    .map_err(|e| {
                        Error::zip(format!("entry '{}' does not inflate: {e}", entry.name))
                    })?;
                if out.len() as u64 > limit {
                    return Err(Error::Limit(format!(
                        "entry '{}' inflates past {limit} bytes (zip bomb?)",
                        entry.name
                    )));
                }
                Ok(out)
            }
            Compression::Other(m) => Err(Error::zip(format!(
                "entry '{}' uses compression method {m}; only stored and deflated are supported",
                entry.name
            ))),
        }
    }
}

/// `Read` over a byte range of a source, for the inflater.
struct EntryReader<'a> {
    source: &'a dyn Source,
    pos: u64,
    end: u64,
}

impl Read for EntryReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (self.end - self.pos).min(buf.len() as u64).min(1 << 20) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.source.read_at(self.pos, &mut buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// The end record and the central directory's entries (data offsets not yet known).
fn central_directory(
    source: &dyn Source,
    limits: ZipLimits,
) -> Result<(EndRecord, Vec<ZipEntry>, HashMap<String, usize>)> {
    let end = find_end_record(source)?;
    if end.entries > limits.max_entries {
        return Err(Error::Limit(format!(
            "zip directory claims {} entries (limit {})",
            end.entries, limits.max_entries
        )));
    }
    if end.cd_size > limits.max_central_directory {
        return Err(Error::Limit(format!(
            "zip central directory is {} bytes (limit {})",
            end.cd_size, limits.max_central_directory
        )));
    }
    let cd_end = end.cd_offset.checked_add(end.cd_size);
    if cd_end.is_none_or(|e| e > source.len()) {
        return Err(Error::zip(format!(
            "central directory ({} bytes at offset {}) runs past the end of the {}-byte file (truncated?)",
            end.cd_size,
            end.cd_offset,
            source.len()
        )));
    }
    let cd = read_vec(source, end.cd_offset, end.cd_size)?;
    let mut entries = Vec::with_capacity(end.entries.min(4096) as usize);
    let mut by_name = HashMap::new();
    let mut at = 0usize;
    for index in 0..end.entries {
        let entry = parse_central_entry(&cd, &mut at, index, end.cd_offset)?;
        if by_name.insert(entry.name.clone(), entries.len()).is_some() {
            return Err(Error::zip(format!(
                "entry '{}' appears twice: ambiguous archive",
                entry.name
            )));
        }
        entries.push(entry);
    }
    Ok((end, entries, by_name))
}

fn find_end_record(source: &dyn Source) -> Result<EndRecord> {
    let len = source.len();
    if len < EOCD_LEN {
        return Err(Error::zip(format!(
            "{len} bytes is too short for a zip archive (truncated?)"
        )));
    }
    let tail_len = len.min(EOCD_LEN + 0xFFFF);
    let tail_start = len - tail_len;
    let tail = read_vec(source, tail_start, tail_len)?;
    let sig = EOCD_SIG.to_le_bytes();
    let found = (0..=tail.len() - EOCD_LEN as usize).rev().find(|&i| {
        tail[i..i + 4] == sig
            && i + EOCD_LEN as usize + u16_at(&tail, i + 20) as usize <= tail.len()
    });
    let Some(i) = found else {
        return Err(Error::zip(
            "no end-of-central-directory record (truncated or not a zip)".to_string(),
        ));
    };
    let eocd = &tail[i..];
    let eocd_pos = tail_start + i as u64;
    let mut rec = EndRecord {
        entries: u16_at(eocd, 10) as u64,
        cd_size: u32_at(eocd, 12) as u64,
        cd_offset: u32_at(eocd, 16) as u64,
        zip64: false,
    };
    if u16_at(eocd, 4) != 0 || u16_at(eocd, 6) != 0 {
        return Err(Error::zip("multi-disk archives are not supported"));
    }
    // A ZIP64 locator sits right before the classic record when present.
    if eocd_pos >= 20 {
        let loc = read_vec(source, eocd_pos - 20, 20)?;
        if u32_at(&loc, 0) == ZIP64_LOCATOR_SIG {
            let z64_pos = u64_at(&loc, 8);
            let z64 = z64_pos
                .checked_add(56)
                .filter(|&e| e <= eocd_pos)
                .map(|_| read_vec(source, z64_pos, 56))
                .transpose()?
                .ok_or_else(|| {
                    Error::zip(format!(
                        "ZIP64 end record offset {z64_pos} is outside the file (truncated?)"
                    ))
                })?;
            if u32_at(&z64, 0) != ZIP64_EOCD_SIG {
                return Err(Error::zip(format!(
                    "no ZIP64 end record at offset {z64_pos} (corrupt locator)"
                )));
            }
            rec = EndRecord {
                entries: u64_at(&z64, 32),
                cd_size: u64_at(&z64, 40),
                cd_offset: u64_at(&z64, 48),
                zip64: true,
            };
        }
    }
    Ok(rec)
}

fn parse_central_entry(cd: &[u8], at: &mut usize, index: u64, cd_offset: u64) -> Result<ZipEntry> {
    let here = cd_offset + *at as u64;
    let fixed = cd
        .get(*at..*at + CENTRAL_LEN)
        .ok_or_else(|| Error::zip(format!("central directory ends inside entry {index}")))?;
    if u32_at(fixed, 0) != CENTRAL_SIG {
        return Err(Error::zip(format!(
            "bad central directory signature for entry {index} at offset {here}"
        )));
    }
    let flags = u16_at(fixed, 8);
    let method = u16_at(fixed, 10);
    let crc32 = u32_at(fixed, 16);
    let mut compressed_size = u32_at(fixed, 20) as u64;
    let mut size = u32_at(fixed, 24) as u64;
    let name_len = u16_at(fixed, 28) as usize;
    let extra_len = u16_at(fixed, 30) as usize;
    let comment_len = u16_at(fixed, 32) as usize;
    let mut header_offset = u32_at(fixed, 42) as u64;
    let var_start = *at + CENTRAL_LEN;
    let var_end = var_start + name_len + extra_len + comment_len;
    let var = cd
        .get(var_start..var_end)
        .ok_or_else(|| Error::zip(format!("central directory ends inside entry {index}")))?;
    let name = std::str::from_utf8(&var[..name_len])
        .map_err(|_| Error::zip(format!("entry {index} has a name that is not UTF-8")))?
        .to_string();
    if flags & 1 != 0 {
        return Err(Error::zip(format!("entry '{name}' is encrypted")));
    }
    // ZIP64 extended information: 64-bit values for the fields that hold 0xFFFFFFFF.
    let mut extra = &var[name_len..name_len + extra_len];
    while extra.len() >= 4 {
        let id = u16_at(extra, 0);
        let len = u16_at(extra, 2) as usize;
        let body = extra
            .get(4..4 + len)
            .ok_or_else(|| Error::zip(format!("entry '{name}' has a truncated extra field")))?;
        if id == 0x0001 {
            let mut vals = body.chunks_exact(8).map(|c| u64_at(c, 0));
            let mut take = |field: &mut u64| -> Result<()> {
                if *field == 0xFFFF_FFFF {
                    *field = vals.next().ok_or_else(|| {
                        Error::zip(format!("entry '{name}' lacks its ZIP64 sizes"))
                    })?;
                }
                Ok(())
            };
            take(&mut size)?;
            take(&mut compressed_size)?;
            take(&mut header_offset)?;
        }
        extra = &extra[4 + len..];
    }
    let compression = match method {
        0 => Compression::Stored,
        8 => Compression::Deflated,
        m => Compression::Other(m),
    };
    if compression == Compression::Stored && compressed_size != size {
        return Err(Error::zip(format!(
            "stored entry '{name}' has compressed size {compressed_size} but size {size}"
        )));
    }
    *at = var_end;
    Ok(ZipEntry {
        name,
        compression,
        compressed_size,
        size,
        crc32,
        header_offset,
        data_offset: 0,
    })
}

fn read_local_header(source: &dyn Source, entry: &ZipEntry) -> Result<u64> {
    let past_end = || {
        Error::zip(format!(
            "entry '{}' at offset {} lies past the end of the file (truncated?)",
            entry.name, entry.header_offset
        ))
    };
    let fixed_end = entry
        .header_offset
        .checked_add(LOCAL_LEN as u64)
        .ok_or_else(past_end)?;
    if fixed_end > source.len() {
        return Err(past_end());
    }
    // The fixed part and the name in one read where the file allows (one read per entry
    // matters where each read is a browser call).
    let name_end = fixed_end
        .checked_add(entry.name.len() as u64)
        .filter(|&e| e <= source.len())
        .unwrap_or(fixed_end);
    let head = read_vec(source, entry.header_offset, name_end - entry.header_offset)?;
    let fixed = &head[..LOCAL_LEN];
    if u32_at(fixed, 0) != LOCAL_SIG {
        return Err(Error::zip(format!(
            "entry '{}': no local header at offset {} (corrupt directory)",
            entry.name, entry.header_offset
        )));
    }
    let name_len = u16_at(fixed, 26) as u64;
    let extra_len = u16_at(fixed, 28) as u64;
    if name_len != entry.name.len() as u64 {
        return Err(Error::zip(format!(
            "entry '{}': local header name differs from the directory's",
            entry.name
        )));
    }
    if name_end != fixed_end + name_len {
        return Err(past_end());
    }
    if &head[LOCAL_LEN..] != entry.name.as_bytes() {
        return Err(Error::zip(format!(
            "entry '{}': local header name differs from the directory's",
            entry.name
        )));
    }
    let data_offset = fixed_end + name_len + extra_len;
    let data_end = data_offset.checked_add(entry.compressed_size);
    if data_end.is_none_or(|e| e > source.len()) {
        return Err(Error::zip(format!(
            "entry '{}' ({} bytes at offset {data_offset}) runs past the end of the {}-byte file (truncated?)",
            entry.name,
            entry.compressed_size,
            source.len()
        )));
    }
    Ok(data_offset)
}
