//! Format detection from content, never from the file extension, in `torch.load`'s order.
//!
//! Users rename files freely (`.ckpt` that is a safetensors file, `.bin` that is a torch zip),
//! so the bytes decide, and they decide as torch does: a file that starts with a zip's local
//! header is a torch zip; a tar is the PyTorch 0.1 tar format; anything else torch hands to
//! `pickle.load` — a legacy file when that first pickle is torch's magic number, a bare pickle
//! otherwise, in every protocol and whatever opcode it starts with. A file is called "not a
//! checkpoint" only when torch would not unpickle it either; the message then says what the
//! bytes look like instead ("a PNG image", "an empty file"), which is the useful error.

use crate::error::{Error, Result};
use crate::pickle::{Hooks, Import, Limits, Unpickler};
use crate::source::{Cursor, Source};
use crate::value::{ObjectGraph, Value, ValueId};
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
    /// The PyTorch 0.1 tar format: `sys_info`, `storages`, `tensors` and `pickle` members.
    #[serde(rename = "torch-tar")]
    TorchTar,
    /// Hugging Face safetensors: a JSON header and raw little-endian tensor data.
    #[serde(rename = "safetensors")]
    Safetensors,
    /// A bare pickle: `torch.load` unpickles it (running what it imports) and then refuses it
    /// for want of the magic number; `scan` reads it.
    #[serde(rename = "pickle")]
    Pickle,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::TorchZip => "torch-zip",
            Format::TorchLegacy => "torch-legacy",
            Format::TorchTar => "torch-tar",
            Format::Safetensors => "safetensors",
            Format::Pickle => "pickle",
        }
    }
}

/// The LONG1 payload of torch's legacy magic number 0x1950a86a20f9469cfc6c.
pub(crate) const LEGACY_MAGIC: [u8; 10] =
    [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// Decide the format of `source` as `torch.load` would.
pub fn detect(source: &dyn Source) -> Result<Format> {
    let len = source.len();
    let mut head = [0u8; 512];
    let n = len.min(head.len() as u64) as usize;
    source.read_at(0, &mut head[..n])?;
    let head = &head[..n];
    if n == 0 {
        return Err(Error::UnknownFormat("empty file".into()));
    }
    // torch's `_is_zipfile` looks at the first four bytes only.
    if head.starts_with(b"PK\x03\x04") {
        return Ok(Format::TorchZip);
    }
    // An empty archive (end record only): torch would hand it to pickle, which fails at once.
    if head.starts_with(b"PK\x05\x06") {
        return Ok(Format::TorchZip);
    }
    if is_tar(head) {
        return Ok(Format::TorchTar);
    }
    let reading = pickle_reading(source);
    if reading.as_ref().is_some_and(|r| r.is_legacy_magic) {
        return Ok(Format::TorchLegacy);
    }
    if n >= 9 && head[8] == b'{' {
        return Ok(Format::Safetensors);
    }
    if reading.is_some() {
        return Ok(Format::Pickle);
    }
    Err(Error::UnknownFormat(describe_unknown(head, len)))
}

/// Whether a value is torch's legacy magic number, however the pickle spelled it (`LONG1`
/// in protocol 2, a decimal `LONG` with a spare sign byte in protocol 0).
pub(crate) fn is_legacy_magic(value: &Value) -> bool {
    let Value::BigInt(b) = value else {
        return false;
    };
    let mut b = &b[..];
    while b.len() > LEGACY_MAGIC.len() && b.last() == Some(&0) {
        b = &b[..b.len() - 1];
    }
    b == LEGACY_MAGIC
}

/// A tar header: ustar magic, or a v7 header whose checksum adds up (what `tarfile` accepts).
fn is_tar(head: &[u8]) -> bool {
    if head.len() < 512 {
        return false;
    }
    if &head[257..262] == b"ustar" {
        return true;
    }
    let field = std::str::from_utf8(&head[148..156]).unwrap_or("");
    let Ok(stored) = u32::from_str_radix(field.trim_matches(|c: char| c == '\0' || c == ' '), 8)
    else {
        return false;
    };
    let sum: u32 = head[..512]
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                b as u32
            }
        })
        .sum();
    stored == sum && head[0] != 0
}

/// What Python's `pickle.load` makes of the first bytes of a file.
pub struct PickleReading {
    /// Globals it imports (and, where it calls them, calls) before finishing or failing.
    pub imports: Vec<Import>,
    /// Whether it reaches `STOP` (Python returns a value).
    pub complete: bool,
    /// Whether the value is torch's legacy magic number.
    pub is_legacy_magic: bool,
    pub protocol: u8,
}

/// `pickle.load` as torch calls it on a file that is not a zip: no persistent ids.
struct PlainLoad;

impl Hooks for PlainLoad {
    fn persistent_load(&mut self, _: &mut ObjectGraph, _: ValueId) -> Result<ValueId, String> {
        Err("a persistent id outside torch's loader".into())
    }
}

/// Run the machine over the first pickle of `source`: `Some` when Python would unpickle
/// something (it reaches `STOP`, or imports a global before it fails), `None` when it fails
/// before doing anything.
pub fn pickle_reading(source: &dyn Source) -> Option<PickleReading> {
    let limits = Limits::default();
    let mut graph = ObjectGraph::new();
    let mut unpickler = Unpickler::new(&mut graph, limits);
    let mut cursor = Cursor::new(source, 0, source.len());
    let result = unpickler.load(&mut cursor, &mut PlainLoad);
    let imports = unpickler.imports().to_vec();
    let protocol = unpickler.protocol();
    let complete = result.is_ok();
    if !complete && imports.is_empty() {
        return None;
    }
    let is_legacy_magic = result.is_ok_and(|v| is_legacy_magic(graph.get(v)));
    Some(PickleReading {
        imports,
        complete,
        is_legacy_magic,
        protocol,
    })
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
    } else if head.starts_with(b"version https://git-lfs") {
        "a Git LFS pointer, not the model (run `git lfs pull`)".to_string()
    } else if head.starts_with(b"<") {
        "an HTML/XML page (a failed download?)".to_string()
    } else if head[0] == 0x80 && head.len() > 1 && head[1] <= 5 {
        "a broken pickle that Python's unpickler rejects before importing anything".to_string()
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
