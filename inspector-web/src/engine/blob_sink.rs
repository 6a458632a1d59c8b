//! A [`Sink`] that composes the output as a `Blob`: unchanged ranges become `File.slice()`
//! parts (no byte is copied, whatever the file size), everything else is gathered into
//! Uint8Array parts of a few MiB, which the browser may keep on disk.

use ldmkit_core::plan::Sink;
use ldmkit_core::source::Source;
use wasm_bindgen::JsValue;
use web_sys::{Blob, BlobPropertyBag};

/// Gathered bytes become a Blob part at this size.
const PART_BYTES: usize = 8 << 20;

pub struct BlobSink {
    inputs: Vec<Blob>,
    parts: js_sys::Array,
    pending: Vec<u8>,
}

fn js_error(e: JsValue) -> std::io::Error {
    std::io::Error::other(format!("{e:?}"))
}

impl BlobSink {
    pub fn new(inputs: Vec<Blob>) -> Self {
        BlobSink {
            inputs,
            parts: js_sys::Array::new(),
            pending: Vec::new(),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        // Uint8Array::from copies out of wasm memory, so the part survives memory growth.
        let bytes = js_sys::Uint8Array::from(&self.pending[..]);
        let part =
            Blob::new_with_u8_array_sequence(&js_sys::Array::of1(&bytes)).map_err(js_error)?;
        self.parts.push(&part);
        self.pending.clear();
        Ok(())
    }

    /// The finished output.
    pub fn finish(mut self) -> std::io::Result<Blob> {
        self.flush()?;
        let options = BlobPropertyBag::new();
        options.set_type("application/octet-stream");
        Blob::new_with_blob_sequence_and_options(&self.parts, &options).map_err(js_error)
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

    fn copy_range(
        &mut self,
        input: usize,
        _source: &dyn Source,
        offset: u64,
        len: u64,
    ) -> std::io::Result<bool> {
        let Some(blob) = self.inputs.get(input).cloned() else {
            return Ok(false);
        };
        self.flush()?;
        let slice = blob
            .slice_with_f64_and_f64(offset as f64, (offset + len) as f64)
            .map_err(js_error)?;
        self.parts.push(&slice);
        Ok(true)
    }
}
