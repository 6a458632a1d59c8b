//! Plans: an output file described as data before a byte of it is written.
//!
//! The expensive part of a rewrite is moving bytes, so writers never move them: they describe
//! the output as an ordered list of [`Part`]s — new bytes (headers, pickles, zip records),
//! copies of unchanged source ranges, and tensors computed chunk by chunk — and an executor
//! streams that list into a sink. A 10 GB → 4 GB strip is then a header rewrite plus range
//! copies; in the browser the copies become `File.slice()`s with no copy at all; and every
//! writer can be tested by looking at its plan.
//!
//! Zip entries carry a CRC-32 of their bytes. Where the source recorded one for the same
//! bytes it is copied; otherwise the executor hashes the entry's bytes as they stream
//! ([`CrcSlot`]) and writes the value where a later [`Part::Crc`] asks for it (torch's zip
//! layout puts CRCs only after the data: in data descriptors and the central directory), so
//! no sink ever has to seek back.

pub mod delta;
mod eval;
mod exec;
#[cfg(not(target_arch = "wasm32"))]
mod file_sink;
mod lazy;

pub use delta::{Delta, KronFactor, Term};
pub use eval::{ElementReader, NonFinite};
pub use exec::{execute, ExecReport, MemSink, Progress, Sink};
#[cfg(not(target_arch = "wasm32"))]
pub use file_sink::{FileSink, FolderSink};
pub use lazy::{LazyData, LazyTensor};

use std::ops::Range;

/// One piece of an output file.
#[derive(Debug, Clone)]
pub enum Part {
    /// Bytes made by the writer: headers, pickles, zip records.
    Bytes(Vec<u8>),
    /// Unchanged bytes of input `input` at `offset..offset + len`.
    Copy { input: usize, offset: u64, len: u64 },
    /// A tensor whose bytes are computed when the plan runs (casts, merges, transposes,
    /// strided views), written contiguously in its dtype. `name` is for reports.
    Compute { name: String, tensor: LazyTensor },
    /// The little-endian CRC-32 of slot `n`'s parts, which come earlier in the plan.
    Crc(usize),
}

impl Part {
    pub fn len(&self) -> u64 {
        match self {
            Part::Bytes(b) => b.len() as u64,
            Part::Copy { len, .. } => *len,
            Part::Compute { tensor, .. } => tensor.nbytes(),
            Part::Crc(_) => 4,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cheapest part that writes `tensor`'s bytes: a copy when they already lie
    /// contiguously in an input, a computation otherwise.
    pub fn tensor(name: &str, tensor: &LazyTensor) -> Part {
        match tensor.as_range() {
            Some((input, offset, len)) => Part::Copy { input, offset, len },
            None => Part::Compute {
                name: name.to_string(),
                tensor: tensor.clone(),
            },
        }
    }
}

/// A CRC-32 the executor computes over a run of parts, because the writer could not know
/// it in advance.
#[derive(Debug, Clone)]
pub struct CrcSlot {
    pub parts: Range<usize>,
}

/// One output file.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub parts: Vec<Part>,
    pub crc_slots: Vec<CrcSlot>,
}

impl Plan {
    /// Output size in bytes.
    pub fn len(&self) -> u64 {
        self.parts.iter().map(Part::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes that are computed rather than copied or made up front.
    pub fn computed_bytes(&self) -> u64 {
        self.parts
            .iter()
            .filter(|p| matches!(p, Part::Compute { .. }))
            .map(Part::len)
            .sum()
    }

    /// Append a part, merging adjacent byte parts and adjacent copies of one input.
    pub fn push(&mut self, part: Part) {
        match (self.parts.last_mut(), part) {
            (Some(Part::Bytes(last)), Part::Bytes(b)) => last.extend_from_slice(&b),
            (_, part) if part.is_empty() => {}
            (_, part) => self.parts.push(part),
        }
    }
}

/// What a rewrite produces: one file, or a folder of files (diffusers layout).
#[derive(Debug, Clone)]
pub enum Output {
    File(Plan),
    /// Files by relative path (`unet/config.json`, ...), written in order.
    Folder(Vec<(String, Plan)>),
}

impl Output {
    /// Total bytes across every file.
    pub fn len(&self) -> u64 {
        match self {
            Output::File(p) => p.len(),
            Output::Folder(files) => files.iter().map(|(_, p)| p.len()).sum(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
