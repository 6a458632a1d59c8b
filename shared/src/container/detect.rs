//! Format detection from content, never from the file extension.
//!
//! Users rename files freely (`.ckpt` that is a safetensors file, `.bin` that is a torch zip),
//! so the first bytes decide. Anything we do not read gets a message that says what the bytes
//! look like instead ("a PNG image", "an empty file"), which is the useful error.

use crate::error::{Error, Result};
use crate::source::Source;
use serde::Serialize;

/// The checkpoint formats ldmkit reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Format {
    /// `torch.save` since 1.6: a ZIP64 archive with `data.pkl` and `data/<key>` storages.
    #[serde(rename = "torch-zip")]
    TorchZip,
    /// `torch.save(_use_new_zipfile_serialization=False)` and torch < 1.6: stacked pickles.
    #[serde(rename = "torch-legacy")]
    TorchLegacy,
    /// Hugging Face safetensors: a JSON header and raw little-endian tensor data.
    #[serde(rename = "safetensors")]
    Safetensors,
    /// A bare pickle: not a checkpoint torch can load, but `scan` reads it.
    #[serde(rename = "pickle")]
    Pickle,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::TorchZip => "torch-zip",
            Format::TorchLegacy => "torch-legacy",
            Format::Safetensors => "safetensors",
            Format::Pickle => "pickle",
        }
    }
}

/// The LONG1 payload of torch's legacy magic number 0x1950a86a20f9469cfc6c.
pub(crate) const LEGACY_MAGIC: [u8; 10] =
    [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// Decide the format from the first bytes of `source`.
pub fn detect(source: &dyn Source) -> Result<Format> {
    let len = source.len();
    let mut head = [0u8; 512];
    let n = len.min(head.len() as u64) as usize;
    source.read_at(0, &mut head[..n])?;
    let head = &head[..n];
    if n == 0 {
        return Err(Error::UnknownFormat("empty file".into()));
    }
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return Ok(Format::TorchZip);
    }
    // PROTO n, LONG1 10, magic: the first of the legacy format's pickles.
    if n >= 14 && head[0] == 0x80 && head[2] == 0x8a && head[3] == 10 && head[4..14] == LEGACY_MAGIC
    {
        return Ok(Format::TorchLegacy);
    }
    if n >= 9 && head[8] == b'{' {
        return Ok(Format::Safetensors);
    }
    Err(Error::UnknownFormat(describe_unknown(head, len)))
}

fn describe_unknown(head: &[u8], len: u64) -> String {
    let what = if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        "a PNG image".to_string()
    } else if head.starts_with(b"\xff\xd8\xff") {
        "a JPEG image".to_string()
    } else if head.starts_with(b"RIFF") && head.get(8..12) == Some(b"WEBP") {
        "a WebP image".to_string()
    } else if head.starts_with(b"\x1f\x8b") {
        "gzip data".to_string()
    } else if head.len() > 262 && &head[257..262] == b"ustar" {
        "a tar archive (the PyTorch 0.1.1 tar format is not supported; re-save it with a newer torch)".to_string()
    } else if head.starts_with(b"version https://git-lfs") {
        "a Git LFS pointer, not the model (run `git lfs pull`)".to_string()
    } else if head.starts_with(b"<") {
        "an HTML/XML page (a failed download?)".to_string()
    } else if head[0] == 0x80 && head.len() > 1 && head[1] <= 5 {
        "a plain pickle without torch's magic number (not a torch checkpoint)".to_string()
    } else if head.starts_with(b"GGUF") {
        "a GGUF file".to_string()
    } else if head.starts_with(b"\x93NUMPY") {
        "a NumPy .npy array".to_string()
    } else {
        let shown: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("unrecognised content (first bytes {})", shown.join(" "))
    };
    format!("not a checkpoint: {what}, {len} bytes; expected a torch .ckpt/.pt zip, a legacy torch file or .safetensors")
}
