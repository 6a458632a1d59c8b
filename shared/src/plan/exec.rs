//! Running a plan: streaming its parts into a sink, hashing what must be hashed, reporting
//! progress and honouring cancellation.

use super::eval::{count_non_finite, streams, ElementReader, NonFinite, ReadWindows};
use super::{LazyTensor, Part, Plan};
use crate::error::{Error, Result};
use crate::source::{SharedSource, Source};

/// Bytes moved per read or computed per chunk: large enough for disk speed, small enough that
/// memory stays flat whatever the tensor size.
const CHUNK_BYTES: u64 = 8 << 20;
/// Output bytes per computed chunk (each worker holds about six chunks' worth of buffers).
const COMPUTE_CHUNK_BYTES: u64 = 2 << 20;
/// At most this many threads compute chunks of one tensor at once.
#[cfg(not(target_arch = "wasm32"))]
const MAX_WORKERS: usize = 8;
/// Bytes per in-kernel copy call.
const KERNEL_COPY_BYTES: u64 = 64 << 20;
/// Copies of at most this many bytes are read through a read-ahead window of
/// `COPY_WINDOW_BYTES`.
const SMALL_COPY: u64 = 16 << 10;
const COPY_WINDOW_BYTES: u64 = 256 << 10;

/// Where a plan's bytes go. Whatever a sink's methods fail with, [`execute`] reports as
/// [`Error::Write`] ("writing failed"), never as a read error.
pub trait Sink {
    /// Append bytes.
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()>;

    /// Append `len` bytes of input `input` (`source`) at `offset` without passing them
    /// through our memory, if this sink can (a native file sink over a file source: a kernel
    /// copy; the browser: a slice of the user's `File`). `Ok(false)`: it cannot; the
    /// executor then reads and writes them itself.
    fn copy_range(
        &mut self,
        _input: usize,
        _source: &dyn Source,
        _offset: u64,
        _len: u64,
    ) -> std::io::Result<bool> {
        Ok(false)
    }

    /// Whether `copy_range` costs nothing once the bytes have been read anyway (the browser:
    /// a slice of the user's `File`, where writing would store a second copy). Then ranges
    /// the executor reads to hash for a zip CRC are still appended as copies.
    fn copies_are_free(&self) -> bool {
        false
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
    let mut windows = ReadWindows::default();
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
        // `copy`: where `bytes` came from, when the sink may take them as a copy instead.
        let mut emit = |bytes: &[u8],
                        sink: &mut dyn Sink,
                        written: &mut u64,
                        progress: &mut dyn Progress,
                        copy: Option<(usize, &dyn Source, u64)>|
         -> Result<()> {
            if let Some(s) = slot_of[index] {
                hashers[s].update(bytes);
            }
            let copied = match copy {
                Some((input, source, offset)) => sink
                    .copy_range(input, source, offset, bytes.len() as u64)
                    .map_err(Error::Write)?,
                None => false,
            };
            if !copied {
                sink.write(bytes).map_err(Error::Write)?;
            }
            *written += bytes.len() as u64;
            if !progress.advance(*written, total) {
                return Err(Error::Cancelled);
            }
            Ok(())
        };
        match part {
            Part::Bytes(bytes) => emit(bytes, sink, &mut written, progress, None)?,
            Part::Crc(_) => emit(
                &crc.expect("computed above"),
                sink,
                &mut written,
                progress,
                None,
            )?,
            Part::Copy { input, offset, len } => {
                let source = inputs
                    .get(*input)
                    .ok_or_else(|| Error::op(format!("input {input} is not open")))?;
                let mut at = 0;
                // A small copy (a bias, a counter: files of many tiny tensors are all such) is
                // cheaper read through a window and written through the sink's buffer than
                // moved by two calls of its own; unless copies are free for the sink.
                if *len <= SMALL_COPY && !sink.copies_are_free() {
                    if *len > 0 {
                        let bytes = windows.read(
                            *input,
                            source.as_ref(),
                            *offset,
                            *len,
                            COPY_WINDOW_BYTES,
                        )?;
                        emit(bytes, sink, &mut written, progress, None)?;
                    }
                    continue;
                }
                // Bytes nobody needs to hash can move inside the kernel, in pieces so that
                // progress and cancellation keep working.
                if slot_of[index].is_none() {
                    while at < *len {
                        let n = (*len - at).min(KERNEL_COPY_BYTES);
                        let copied = sink
                            .copy_range(*input, source.as_ref(), offset + at, n)
                            .map_err(Error::Write)?;
                        if !copied {
                            break;
                        }
                        at += n;
                        written += n;
                        if !progress.advance(written, total) {
                            return Err(Error::Cancelled);
                        }
                    }
                }
                let copy_after_hash = slot_of[index].is_some() && sink.copies_are_free();
                while at < *len {
                    let n = (*len - at).min(CHUNK_BYTES) as usize;
                    buf.resize(n, 0);
                    source.read_at(offset + at, &mut buf)?;
                    let copy = copy_after_hash.then_some((*input, source.as_ref(), offset + at));
                    emit(&buf, sink, &mut written, progress, copy)?;
                    at += n as u64;
                }
            }
            Part::Compute { name, tensor } => {
                reader.clear();
                let workers = if streams(tensor) { workers() } else { 1 };
                let mut per_chunk = (COMPUTE_CHUNK_BYTES / tensor.dtype.size().max(1)).max(1);
                // A baked weight costs far more to compute than to write: split even a small
                // one so that every worker has a share.
                if matches!(&*tensor.data, super::LazyData::Adapted { .. }) {
                    per_chunk = per_chunk.min(tensor.numel().div_ceil(4 * workers as u64).max(1));
                }
                let mut bad = NonFinite::default();
                compute_chunks(
                    inputs,
                    &mut reader,
                    tensor,
                    per_chunk,
                    workers,
                    &mut |chunk| {
                        let (bytes, found) = chunk?;
                        bad.nan += found.nan;
                        bad.inf += found.inf;
                        emit(&bytes, sink, &mut written, progress, None)
                    },
                )?;
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

type Chunk = Result<(Vec<u8>, NonFinite)>;

fn compute_one(
    reader: &mut ElementReader<'_>,
    tensor: &LazyTensor,
    start: u64,
    count: u64,
) -> Chunk {
    let mut bytes = Vec::with_capacity((count * tensor.dtype.size()) as usize);
    reader.read_bytes(tensor, start, count, &mut bytes)?;
    let mut bad = NonFinite::default();
    count_non_finite(&bytes, tensor.dtype, &mut bad);
    Ok((bytes, bad))
}

/// How many chunks to compute at once (one, where there are no threads: the browser's worker
/// is itself the thread).
fn workers() -> usize {
    #[cfg(not(target_arch = "wasm32"))]
    {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_WORKERS))
    }
    #[cfg(target_arch = "wasm32")]
    {
        1
    }
}

/// Compute `tensor` chunk by chunk and hand each to `consume` in order. Where there are
/// threads, `workers` compute chunks ahead (each at most one chunk ahead) while `consume`
/// writes, so computing and writing overlap; the output is the same whatever the count.
fn compute_chunks(
    inputs: &[SharedSource],
    reader: &mut ElementReader<'_>,
    tensor: &LazyTensor,
    per_chunk: u64,
    workers: usize,
    consume: &mut dyn FnMut(Chunk) -> Result<()>,
) -> Result<()> {
    let numel = tensor.numel();
    let chunks = numel.div_ceil(per_chunk);
    let range = |i: u64| (i * per_chunk, (numel - i * per_chunk).min(per_chunk));
    #[cfg(not(target_arch = "wasm32"))]
    if workers > 1 && chunks > 1 {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::mpsc::sync_channel;
        let workers = workers.min(chunks as usize);
        let stop = AtomicBool::new(false);
        let stop = &stop;
        return std::thread::scope(|scope| {
            let mut receivers = Vec::with_capacity(workers);
            for w in 0..workers {
                let (tx, rx) = sync_channel::<Chunk>(1);
                receivers.push(rx);
                scope.spawn(move || {
                    let mut reader = ElementReader::new(inputs);
                    let mut i = w as u64;
                    while i < chunks && !stop.load(Ordering::Relaxed) {
                        let (start, count) = range(i);
                        if tx
                            .send(compute_one(&mut reader, tensor, start, count))
                            .is_err()
                        {
                            break;
                        }
                        i += workers as u64;
                    }
                });
            }
            for i in 0..chunks {
                let chunk = receivers[(i % workers as u64) as usize]
                    .recv()
                    .unwrap_or_else(|_| Err(Error::op("a compute thread failed")));
                if let Err(e) = consume(chunk) {
                    stop.store(true, Ordering::Relaxed);
                    // Dropping the receivers unblocks workers waiting to send.
                    drop(receivers);
                    return Err(e);
                }
            }
            Ok(())
        });
    }
    #[cfg(target_arch = "wasm32")]
    let _ = (inputs, workers);
    for i in 0..chunks {
        let (start, count) = range(i);
        consume(compute_one(reader, tensor, start, count))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::MemSource;
    use std::sync::Arc;

    /// Writes straight to a file, unbuffered, so the first write meets the file's error.
    struct RawFile(std::fs::File);

    impl Sink for RawFile {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
            std::io::Write::write_all(&mut self.0, bytes)
        }
    }

    fn plan(parts: Vec<Part>) -> Plan {
        Plan {
            parts,
            crc_slots: Vec::new(),
        }
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_full_disk_is_a_write_error() {
        // /dev/full accepts the open and fails every write with ENOSPC.
        let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
            return;
        };
        let input: SharedSource = Arc::new(MemSource::new(vec![7u8; 64]));
        let mut sink = RawFile(full);
        for part in [
            Part::Bytes(b"header".to_vec()),
            Part::Copy {
                input: 0,
                offset: 0,
                len: 64,
            },
        ] {
            let e = execute(
                &plan(vec![part]),
                std::slice::from_ref(&input),
                &mut sink,
                &mut |_, _| true,
            )
            .unwrap_err();
            assert!(matches!(e, Error::Write(_)), "{e:?}");
            assert_eq!(
                e.to_string(),
                "writing failed: No space left on device (os error 28)"
            );
        }
    }

    #[test]
    fn a_short_input_is_still_a_read_error() {
        let input: SharedSource = Arc::new(MemSource::new(vec![7u8; 8]));
        let copy = Part::Copy {
            input: 0,
            offset: 0,
            len: 64,
        };
        let e = execute(
            &plan(vec![copy]),
            &[input],
            &mut MemSink::default(),
            &mut |_, _| true,
        )
        .unwrap_err();
        assert!(matches!(e, Error::Io(_)), "{e:?}");
        assert!(e.to_string().starts_with("read failed: "), "{e}");
    }
}
