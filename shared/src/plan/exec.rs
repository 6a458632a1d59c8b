//! Running a plan: streaming its parts into a sink, hashing what must be hashed, reporting
//! progress and honouring cancellation.

use super::eval::{count_non_finite, ElementReader, NonFinite};
use super::{Part, Plan};
use crate::error::{Error, Result};
use crate::source::{SharedSource, Source};

/// Bytes moved per read or computed per chunk: large enough for disk speed, small enough that
/// memory stays flat whatever the tensor size.
const CHUNK_BYTES: u64 = 8 << 20;
/// Bytes per in-kernel copy call.
const KERNEL_COPY_BYTES: u64 = 64 << 20;

/// Where a plan's bytes go.
pub trait Sink {
    /// Append bytes.
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()>;

    /// Append `len` bytes of `source` at `offset` without passing them through our memory,
    /// if this sink can (a native file sink over a file source). `Ok(false)`: it cannot;
    /// the executor then reads and writes them itself.
    fn copy_range(
        &mut self,
        _source: &dyn Source,
        _offset: u64,
        _len: u64,
    ) -> std::io::Result<bool> {
        Ok(false)
    }
}

/// A sink in memory (tests, small outputs, the browser's header parts).
#[derive(Debug, Default)]
pub struct MemSink(pub Vec<u8>);

impl Sink for MemSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

/// Told how far a plan has got; returns `false` to cancel.
pub trait Progress {
    fn advance(&mut self, done: u64, total: u64) -> bool;
}

impl<F: FnMut(u64, u64) -> bool> Progress for F {
    fn advance(&mut self, done: u64, total: u64) -> bool {
        self(done, total)
    }
}

/// What running a plan found.
#[derive(Debug, Clone, Default)]
pub struct ExecReport {
    pub bytes_written: u64,
    pub bytes_computed: u64,
    /// Computed tensors that came out with NaN or infinite values.
    pub non_finite: Vec<(String, NonFinite)>,
}

/// Write `plan` into `sink`, reading copies and computations from `inputs`.
pub fn execute(
    plan: &Plan,
    inputs: &[SharedSource],
    sink: &mut dyn Sink,
    progress: &mut dyn Progress,
) -> Result<ExecReport> {
    let total = plan.len();
    let mut report = ExecReport::default();
    let mut reader = ElementReader::new(inputs);
    // Which CRC slot, if any, each part feeds.
    let mut slot_of = vec![None; plan.parts.len()];
    for (s, slot) in plan.crc_slots.iter().enumerate() {
        for p in slot.parts.clone() {
            slot_of[p] = Some(s);
        }
    }
    let mut hashers: Vec<crc32fast::Hasher> = plan
        .crc_slots
        .iter()
        .map(|_| crc32fast::Hasher::new())
        .collect();
    let mut written = 0u64;
    let mut buf = Vec::new();
    for (index, part) in plan.parts.iter().enumerate() {
        let crc = match part {
            Part::Crc(slot) => {
                let done = plan
                    .crc_slots
                    .get(*slot)
                    .is_some_and(|s| s.parts.end <= index);
                if !done {
                    return Err(Error::op("plan asks for a CRC before its data"));
                }
                Some(hashers[*slot].clone().finalize().to_le_bytes())
            }
            _ => None,
        };
        let mut emit = |bytes: &[u8],
                        sink: &mut dyn Sink,
                        written: &mut u64,
                        progress: &mut dyn Progress|
         -> Result<()> {
            if let Some(s) = slot_of[index] {
                hashers[s].update(bytes);
            }
            sink.write(bytes)?;
            *written += bytes.len() as u64;
            if !progress.advance(*written, total) {
                return Err(Error::Cancelled);
            }
            Ok(())
        };
        match part {
            Part::Bytes(bytes) => emit(bytes, sink, &mut written, progress)?,
            Part::Crc(_) => emit(&crc.expect("computed above"), sink, &mut written, progress)?,
            Part::Copy { input, offset, len } => {
                let source = inputs
                    .get(*input)
                    .ok_or_else(|| Error::op(format!("input {input} is not open")))?;
                let mut at = 0;
                // Bytes nobody needs to hash can move inside the kernel, in pieces so that
                // progress and cancellation keep working.
                if slot_of[index].is_none() {
                    while at < *len {
                        let n = (*len - at).min(KERNEL_COPY_BYTES);
                        if !sink.copy_range(source.as_ref(), offset + at, n)? {
                            break;
                        }
                        at += n;
                        written += n;
                        if !progress.advance(written, total) {
                            return Err(Error::Cancelled);
                        }
                    }
                }
                while at < *len {
                    let n = (*len - at).min(CHUNK_BYTES) as usize;
                    buf.resize(n, 0);
                    source.read_at(offset + at, &mut buf)?;
                    emit(&buf, sink, &mut written, progress)?;
                    at += n as u64;
                }
            }
            Part::Compute { name, tensor } => {
                let per_chunk = (CHUNK_BYTES / tensor.dtype.size().max(1)).max(1);
                let numel = tensor.numel();
                let mut bad = NonFinite::default();
                let mut start = 0;
                while start < numel {
                    let count = (numel - start).min(per_chunk);
                    buf.clear();
                    reader.read_bytes(tensor, start, count, &mut buf)?;
                    count_non_finite(&buf, tensor.dtype, &mut bad);
                    emit(&buf, sink, &mut written, progress)?;
                    start += count;
                }
                report.bytes_computed += tensor.nbytes();
                if bad != NonFinite::default() {
                    report.non_finite.push((name.clone(), bad));
                }
            }
        }
    }
    report.bytes_written = written;
    Ok(report)
}
