//! Model hashes as the ecosystem names files, all from one streaming pass over the bytes.
//!
//! - **SHA-256** of the whole file; **AutoV2** is its first 10 hex digits (A1111's
//!   `modules/hashes.py`, Civitai).
//! - **AutoV3** = kohya's `sshs_model_hash`: SHA-256 of a safetensors file's bytes after the
//!   8-byte length and the JSON header (sd-scripts `library/train_util.py`,
//!   `addnet_hash_safetensors`), so editing metadata changes AutoV2 but not AutoV3.
//! - A1111's **legacy** hash (`sd_models.model_hash`): the first 8 hex digits of SHA-256 over
//!   what `read(0x10000)` returns after `seek(0x100000)` — fewer bytes, or none, in a file
//!   shorter than that.
//!
//! Memory is one read buffer; natively the tensor-data hash runs on a second thread, so a
//! file costs one SHA-256's time, not two. The SHA-256 is the RustCrypto `sha2` crate.

use crate::error::{Error, Result};
use crate::plan::Progress;
use crate::source::Source;
use serde::Serialize;
use sha2::{Digest, Sha256};

const LEGACY_AT: u64 = 0x10_0000;
const LEGACY_LEN: u64 = 0x1_0000;
const READ_BYTES: usize = 8 << 20;

/// A file's hashes, lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hashes {
    pub sha256: String,
    pub autov2: String,
    /// SHA-256 of the tensor bytes (safetensors files only).
    pub autov3: Option<String>,
    pub legacy: String,
}

/// Where a safetensors file's tensor bytes start (`8 + header length`), if it is one.
pub fn tensor_data_start(source: &dyn Source) -> Option<u64> {
    let mut len = [0u8; 8];
    source.read_at(0, &mut len).ok()?;
    let n = u64::from_le_bytes(len);
    let start = n.checked_add(8)?;
    let mut first = [0u8; 1];
    (start <= source.len() && n > 0 && source.read_at(8, &mut first).is_ok() && first[0] == b'{')
        .then_some(start)
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hash `source`. `tensor_data` is where its tensor bytes start (from
/// [`tensor_data_start`]; `None`: no AutoV3). `progress` sees bytes read and may cancel.
pub fn hash_source(
    source: &dyn Source,
    tensor_data: Option<u64>,
    progress: &mut dyn Progress,
) -> Result<Hashes> {
    let total = source.len();
    let mut full = Sha256::new();
    let mut legacy = Sha256::new();
    let (legacy_from, legacy_to) = (LEGACY_AT.min(total), (LEGACY_AT + LEGACY_LEN).min(total));
    let mut data_hash = DataHash::start(tensor_data.is_some());
    let mut buf = vec![0u8; READ_BYTES.min(total as usize).max(1)];
    let mut at = 0u64;
    while at < total {
        let n = (total - at).min(buf.len() as u64) as usize;
        source.read_at(at, &mut buf[..n])?;
        let chunk = &buf[..n];
        let end = at + n as u64;
        if let Some(start) = tensor_data {
            if end > start {
                let from = start.saturating_sub(at) as usize;
                data_hash.update(&chunk[from..]);
            }
        }
        if at < legacy_to && end > legacy_from {
            let a = legacy_from.saturating_sub(at) as usize;
            let b = (legacy_to - at).min(n as u64) as usize;
            legacy.update(&chunk[a..b]);
        }
        full.update(chunk);
        at = end;
        if !progress.advance(at, total) {
            return Err(Error::Cancelled);
        }
    }
    let sha256 = hex(&full.finalize());
    Ok(Hashes {
        autov2: sha256[..10].to_string(),
        sha256,
        autov3: data_hash.finish(),
        legacy: hex(&legacy.finalize())[..8].to_string(),
    })
}

/// The tensor-data hasher: on its own thread natively (the whole-file hash keeps this one
/// busy), inline in the browser's worker.
enum DataHash {
    Off,
    #[cfg(not(target_arch = "wasm32"))]
    Thread {
        tx: std::sync::mpsc::SyncSender<Vec<u8>>,
        handle: std::thread::JoinHandle<String>,
    },
    #[cfg(target_arch = "wasm32")]
    Inline(Sha256),
}

impl DataHash {
    fn start(on: bool) -> DataHash {
        if !on {
            return DataHash::Off;
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
            let handle = std::thread::spawn(move || {
                let mut h = Sha256::new();
                for chunk in rx {
                    h.update(&chunk);
                }
                hex(&h.finalize())
            });
            DataHash::Thread { tx, handle }
        }
        #[cfg(target_arch = "wasm32")]
        {
            DataHash::Inline(Sha256::new())
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            DataHash::Off => {}
            #[cfg(not(target_arch = "wasm32"))]
            DataHash::Thread { tx, .. } => {
                // A send fails only if the thread died; `finish` then reports nothing.
                let _ = tx.send(bytes.to_vec());
            }
            #[cfg(target_arch = "wasm32")]
            DataHash::Inline(h) => h.update(bytes),
        }
    }

    fn finish(self) -> Option<String> {
        match self {
            DataHash::Off => None,
            #[cfg(not(target_arch = "wasm32"))]
            DataHash::Thread { tx, handle } => {
                drop(tx);
                handle.join().ok()
            }
            #[cfg(target_arch = "wasm32")]
            DataHash::Inline(h) => Some(hex(&h.finalize())),
        }
    }
}

/// What a safetensors output's hashes do when its tensors are copied unchanged from an
/// input: `Some(true)` when its tensor bytes are exactly one input's tensor bytes in order
/// (AutoV3 / `sshs_model_hash` carries over), `Some(false)` when they are laid out anew
/// (AutoV3 changes), `None` when some tensor is computed (a new model: every hash is new).
pub fn autov3_kept(
    plan: &crate::plan::Plan,
    inputs: &[crate::source::SharedSource],
) -> Option<bool> {
    use crate::plan::Part;
    let mut span: Option<(usize, u64, u64)> = None;
    let mut contiguous = true;
    for part in plan.parts.iter().skip(1) {
        match part {
            Part::Copy { input, offset, len } => match &mut span {
                None => span = Some((*input, *offset, offset + len)),
                Some((i, _, end)) if *i == *input && *end == *offset => *end += len,
                Some(_) => contiguous = false,
            },
            Part::Bytes(b) if b.is_empty() => {}
            _ => return None,
        }
    }
    let Some((input, start, end)) = span else {
        return Some(false);
    };
    let source = inputs.get(input)?;
    Some(contiguous && tensor_data_start(source.as_ref()) == Some(start) && end == source.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::MemSource;

    fn sha(bytes: &[u8]) -> String {
        hex(&Sha256::digest(bytes))
    }

    #[test]
    fn hashes_follow_their_definitions() {
        // A safetensors-shaped file longer than the legacy window.
        let header = br#"{"w":{"dtype":"U8","shape":[1200000],"data_offsets":[0,1200000]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.extend((0..1_200_000u32).map(|i| (i * 7 % 251) as u8));
        let source = MemSource::new(bytes.clone());
        let start = tensor_data_start(&source).unwrap();
        assert_eq!(start, 8 + header.len() as u64);
        let h = hash_source(&source, Some(start), &mut |_, _| true).unwrap();
        assert_eq!(h.sha256, sha(&bytes));
        assert_eq!(h.autov2, sha(&bytes)[..10]);
        assert_eq!(h.autov3.unwrap(), sha(&bytes[start as usize..]));
        assert_eq!(h.legacy, sha(&bytes[0x100000..0x110000])[..8]);

        // Shorter than 1 MiB: the legacy hash is of nothing, as A1111's read() returns.
        let small = MemSource::new(b"tiny".to_vec());
        let h = hash_source(&small, tensor_data_start(&small), &mut |_, _| true).unwrap();
        assert_eq!(h.legacy, sha(b"")[..8]);
        assert_eq!(h.autov3, None);
        assert!(hash_source(&source, None, &mut |_, _| false).is_err());
    }
}
