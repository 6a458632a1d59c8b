//! A [`Sink`] that composes the output as a `Blob`: unchanged ranges become `File.slice()`
//! parts (no byte is copied, whatever the file size, even where a zip CRC had them read);
//! everything else is gathered in a few
//! MiB and appended to a [`Scratch`] file on disk, or, where the browser has no origin
//! private file system, kept as in-memory Blob parts.

use super::scratch::Scratch;
use ldmkit_core::plan::Sink;
use ldmkit_core::source::Source;
use wasm_bindgen::JsValue;
use web_sys::{Blob, BlobPropertyBag};

/// Gathered bytes are written out at this size.
const PART_BYTES: usize = 8 << 20;

/// Where one stretch of the output comes from.
enum Piece {
    Input { input: usize, start: u64, end: u64 },
    Scratch { start: u64, end: u64 },
    Memory(Blob),
}

pub struct BlobSink {
    inputs: Vec<Blob>,
    scratch: Option<Scratch>,
    pieces: Vec<Piece>,
    pending: Vec<u8>,
}

fn js_error(e: JsValue) -> std::io::Error {
    std::io::Error::other(
        e.as_string()
            .or_else(|| js_sys::Error::from(e.clone()).message().as_string())
            .unwrap_or_else(|| format!("{e:?}")),
    )
}

fn slice(blob: &Blob, start: u64, end: u64) -> std::io::Result<Blob> {
    blob.slice_with_f64_and_f64(start as f64, end as f64)
        .map_err(js_error)
}

impl BlobSink {
    /// A sink whose unchanged ranges are slices of `inputs` (indexed as the plan's inputs)
    /// and whose computed bytes go to `scratch` when there is one.
    pub fn new(inputs: Vec<Blob>, scratch: Option<Scratch>) -> Self {
        BlobSink {
            inputs,
            scratch,
            pieces: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// Whether computed bytes go to disk (OPFS) rather than memory.
    pub fn on_disk(&self) -> bool {
        self.scratch.is_some()
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if let Some(scratch) = &mut self.scratch {
            let start = scratch.append(&self.pending).map_err(js_error)?;
            let end = start + self.pending.len() as u64;
            match self.pieces.last_mut() {
                Some(Piece::Scratch { end: last, .. }) if *last == start => *last = end,
                _ => self.pieces.push(Piece::Scratch { start, end }),
            }
        } else {
            // Uint8Array::from copies out of wasm memory, so the part survives memory growth.
            let bytes = js_sys::Uint8Array::from(&self.pending[..]);
            let part =
                Blob::new_with_u8_array_sequence(&js_sys::Array::of1(&bytes)).map_err(js_error)?;
            self.pieces.push(Piece::Memory(part));
        }
        self.pending.clear();
        Ok(())
    }

    /// The finished output.
    pub async fn finish(mut self) -> std::io::Result<Blob> {
        self.flush()?;
        let scratch = match self.scratch.take() {
            Some(s) => Some(s.finish().await.map_err(js_error)?),
            None => None,
        };
        let parts = js_sys::Array::new();
        for piece in &self.pieces {
            let part = match piece {
                Piece::Input { input, start, end } => slice(&self.inputs[*input], *start, *end)?,
                Piece::Scratch { start, end } => {
                    let file = scratch
                        .as_ref()
                        .expect("scratch pieces imply a scratch file");
                    slice(file, *start, *end)?
                }
                Piece::Memory(blob) => blob.clone(),
            };
            parts.push(&part);
        }
        let options = BlobPropertyBag::new();
        options.set_type("application/octet-stream");
        Blob::new_with_blob_sequence_and_options(&parts, &options).map_err(js_error)
    }
}

impl Sink for BlobSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= PART_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn copies_are_free(&self) -> bool {
        true
    }

    fn copy_range(
        &mut self,
        input: usize,
        _source: &dyn Source,
        offset: u64,
        len: u64,
    ) -> std::io::Result<bool> {
        if input >= self.inputs.len() {
            return Ok(false);
        }
        self.flush()?;
        let (start, end) = (offset, offset + len);
        match self.pieces.last_mut() {
            Some(Piece::Input {
                input: last_input,
                end: last_end,
                ..
            }) if *last_input == input && *last_end == start => *last_end = end,
            _ => self.pieces.push(Piece::Input { input, start, end }),
        }
        Ok(true)
    }
}
