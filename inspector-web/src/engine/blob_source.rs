//! A [`Source`] over a browser `Blob`/`File`, read with synchronous `FileReaderSync` slices.
//!
//! Synchronous reads are only allowed in workers, which is where the engine runs. Offsets stay
//! `u64`/`f64` throughout: files pass 2³² bytes, and `usize` is 32 bits here.

use ldmkit_core::source::Source;
use web_sys::{Blob, FileReaderSync};

pub struct BlobSource {
    blob: Blob,
    len: u64,
}

// SAFETY: the wasm32 build has no threads; the engine lives on one worker thread and these
// values never leave it. `Source` asks for Send + Sync because native sources are shared.
unsafe impl Send for BlobSource {}
unsafe impl Sync for BlobSource {}

impl BlobSource {
    pub fn new(blob: Blob) -> Self {
        let len = blob.size() as u64;
        BlobSource { blob, len }
    }

    pub fn blob(&self) -> &Blob {
        &self.blob
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
}
