//! Scanning: which globals a file would import when loaded in Python, with verdicts.
//!
//! Unlike inspection, a scan keeps going where it can: it reads every pickle in a zip (not
//! only `data.pkl`) or tar, follows nested pickles, and when a pickle is broken it still
//! reports what was imported before the break — Python's unpickler would already have imported
//! and called those.

use crate::checkpoint::Checkpoint;
use crate::container::detect::{detect, Format};
use crate::error::Error;
use crate::pickle::{DefaultHooks, Import, Limits, Unpickler};
use crate::report::GlobalEntry;
use crate::safety::nested::nested_imports;
use crate::safety::Verdict;
use crate::source::{Cursor, MemSource, SharedSource, Source};
use crate::value::ObjectGraph;

/// What a scan found.
#[derive(Debug)]
pub struct ScanReport {
    pub format: Option<Format>,
    /// Every imported global, not allowed first.
    pub globals: Vec<GlobalEntry>,
    /// Set when the file is valid safetensors *and* a pickle torch would unpickle: what the
    /// pickle reading does.
    pub polyglot: Option<String>,
    /// Why the file could not be read completely, if it could not.
    pub error: Option<Error>,
}

impl ScanReport {
    /// The least favourable verdict: a polyglot is never allowed, whatever it imports.
    pub fn worst(&self) -> Verdict {
        let globals = self
            .globals
            .iter()
            .map(|g| g.verdict)
            .max()
            .unwrap_or(Verdict::Allowed);
        if self.polyglot.is_some() {
            Verdict::NotAllowed
        } else {
            globals
        }
    }
}

/// Scan one source.
pub fn scan(source: SharedSource) -> ScanReport {
    let limits = Limits::default();
    let mut imports: Vec<Import> = Vec::new();
    let format = detect(source.as_ref()).ok();
    let mut polyglot = None;
    let mut error = match format {
        Some(Format::Pickle) => scan_plain_pickles(source.as_ref(), limits, 0, &mut imports),
        Some(Format::TorchTar) => {
            crate::torch::tar_format::scan(source.as_ref(), limits, &mut imports).err()
        }
        _ => match Checkpoint::open_collecting(source.clone(), limits, &mut imports) {
            Ok(ckpt) => {
                polyglot = ckpt.polyglot.clone();
                None
            }
            Err(e) => Some(e),
        },
    };
    if format == Some(Format::TorchZip) {
        if let Err(e) = scan_other_zip_pickles(source.as_ref(), limits, 0, &mut imports) {
            error.get_or_insert(e);
        }
    }
    ScanReport {
        format,
        globals: GlobalEntry::list(&imports),
        polyglot,
        error,
    }
}

/// The imports of nested data (bytes a load in an outer pickle unpickles), at `depth`.
pub(crate) fn scan_nested(source: SharedSource, limits: Limits, depth: u32) -> Vec<Import> {
    let mut imports = Vec::new();
    match detect(source.as_ref()) {
        Ok(Format::TorchZip) => {
            let _ = Checkpoint::open_nested(source.clone(), limits, depth, &mut imports);
            let _ = scan_other_zip_pickles(source.as_ref(), limits, depth, &mut imports);
        }
        Ok(Format::TorchLegacy) | Ok(Format::Safetensors) => {
            let _ = Checkpoint::open_nested(source, limits, depth, &mut imports);
        }
        Ok(Format::TorchTar) => {
            let _ = crate::torch::tar_format::scan(source.as_ref(), limits, &mut imports);
        }
        // Whatever else the bytes are, the loader hands them to the unpickler.
        _ => {
            scan_plain_pickles(source.as_ref(), limits, depth, &mut imports);
        }
    }
    imports
}

/// Every pickle in a torch zip other than `data.pkl` (which the checkpoint reader scans).
fn scan_other_zip_pickles(
    source: &dyn Source,
    limits: Limits,
    depth: u32,
    imports: &mut Vec<Import>,
) -> Result<(), Error> {
    let mut first_error = None;
    for (name, bytes) in crate::torch::zip_format::other_pickles(source)? {
        let src = MemSource::new(bytes);
        if let Some(e) = scan_plain_pickles(&src, limits, depth, imports) {
            first_error.get_or_insert(Error::Pickle {
                offset: 0,
                message: format!("{name}: {e}"),
            });
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Scan the pickles stacked in a source. Only the first must parse (it is what `pickle.load`
/// reads); later ones are scanned for imports as far as they go, like picklescan does.
pub(crate) fn scan_plain_pickles(
    source: &dyn Source,
    limits: Limits,
    depth: u32,
    imports: &mut Vec<Import>,
) -> Option<Error> {
    let mut cursor = Cursor::new(source, 0, source.len());
    let mut first = true;
    while cursor.remaining() > 0 {
        let mut graph = ObjectGraph::new();
        let mut unpickler = Unpickler::new(&mut graph, limits);
        let r = unpickler.load(&mut cursor, &mut DefaultHooks);
        imports.extend_from_slice(unpickler.imports());
        match r {
            Err(e) if first => return Some(e),
            Err(_) => break,
            Ok(root) => {
                first = false;
                imports.extend(nested_imports(&graph, Some(root), limits, depth));
            }
        }
    }
    None
}
