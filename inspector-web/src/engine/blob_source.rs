//! A [`Source`] over a browser `Blob`/`File`, read with synchronous `FileReaderSync` slices.
//!
//! Synchronous reads are only allowed in workers, which is where the engine runs. Offsets stay
//! `u64`/`f64` throughout: files pass 2³² bytes, and `usize` is 32 bits here.
//!
//! Each `FileReaderSync` call costs about a millisecond whatever its size, and opening a torch
//! zip makes one small read per entry (its local header; thousands in a training checkpoint).
//! So small reads are served from a few cached 64 KiB blocks: neighbouring headers of small
//! tensors then cost one call. (Fetching all headers ahead with concurrent async reads was
//! tried: no faster, the browser serves blob reads one at a time.)

use ldmkit_core::source::Source;
use std::cell::RefCell;
use web_sys::{Blob, FileReaderSync};

/// Reads below this size go through the block cache.
const BLOCK: u64 = 64 << 10;
/// Blocks kept (most recent last).
const BLOCKS: usize = 8;

pub struct BlobSource {
    blob: Blob,
    len: u64,
    cache: RefCell<Vec<(u64, Vec<u8>)>>,
}

// SAFETY: the wasm32 build has no threads; the engine lives on one worker thread and these
// values never leave it. `Source` asks for Send + Sync because native sources are shared.
unsafe impl Send for BlobSource {}
unsafe impl Sync for BlobSource {}

impl BlobSource {
    pub fn new(blob: Blob) -> Self {
        let len = blob.size() as u64;
        BlobSource {
            blob,
            len,
            cache: RefCell::new(Vec::new()),
        }
    }

    pub fn blob(&self) -> &Blob {
        &self.blob
    }

    /// Read `buf.len()` bytes at `offset` with one `FileReaderSync` call.
    fn read_direct(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let end = offset + buf.len() as u64;
        let slice = self
            .blob
            .slice_with_f64_and_f64(offset as f64, end as f64)
            .map_err(js_error)?;
        let reader = FileReaderSync::new().map_err(js_error)?;
        let bytes = reader.read_as_array_buffer(&slice).map_err(js_error)?;
        let array = js_sys::Uint8Array::new(&bytes);
        if array.length() as usize != buf.len() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "short read",
            ));
        }
        array.copy_to(buf);
        Ok(())
    }

    /// The cached block starting at `start`, read if missing.
    fn with_block<R>(&self, start: u64, f: impl FnOnce(&[u8]) -> R) -> std::io::Result<R> {
        let mut cache = self.cache.borrow_mut();
        if let Some(at) = cache.iter().position(|(s, _)| *s == start) {
            let hit = cache.remove(at);
            cache.push(hit);
        } else {
            let mut block = vec![0u8; (self.len - start).min(BLOCK) as usize];
            self.read_direct(start, &mut block)?;
            if cache.len() == BLOCKS {
                cache.remove(0);
            }
            cache.push((start, block));
        }
        Ok(f(&cache.last().expect("just pushed").1))
    }
}

fn js_error(e: wasm_bindgen::JsValue) -> std::io::Error {
    std::io::Error::other(format!("{e:?}"))
}

impl Source for BlobSource {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.len)
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "read past the end of the file",
                )
            })?;
        if buf.is_empty() {
            return Ok(());
        }
        if buf.len() as u64 >= BLOCK {
            return self.read_direct(offset, buf);
        }
        // A small read spans at most two blocks.
        let mut at = offset;
        let mut filled = 0usize;
        while at < end {
            let start = at / BLOCK * BLOCK;
            let from = (at - start) as usize;
            let n = ((start + BLOCK).min(end) - at) as usize;
            self.with_block(start, |block| {
                buf[filled..filled + n].copy_from_slice(&block[from..from + n])
            })?;
            at += n as u64;
            filled += n;
        }
        Ok(())
    }
}
