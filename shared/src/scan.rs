//! Scanning: which globals a file would import when loaded in Python, with verdicts.
//!
//! Unlike inspection, a scan keeps going where it can: it reads every pickle in a zip (not
//! only `data.pkl`), and when a pickle is broken it still reports what was imported before
//! the break — Python's unpickler would already have imported and called those.

use crate::checkpoint::Checkpoint;
use crate::container::detect::{detect, Format};
use crate::error::Error;
use crate::pickle::{DefaultHooks, Import, Limits, Unpickler};
use crate::report::GlobalEntry;
use crate::safety::Verdict;
use crate::source::{Cursor, MemSource, SharedSource, Source};
use crate::value::ObjectGraph;

/// What a scan found.
#[derive(Debug)]
pub struct ScanReport {
    pub format: Option<Format>,
    /// Every imported global, most dangerous first.
    pub globals: Vec<GlobalEntry>,
    /// Why the file could not be read completely, if it could not.
    pub error: Option<Error>,
}

impl ScanReport {
    pub fn worst(&self) -> Verdict {
        self.globals
            .iter()
            .map(|g| g.verdict)
            .max()
            .unwrap_or(Verdict::Allowed)
    }
}

/// Scan one source.
pub fn scan(source: SharedSource) -> ScanReport {
    let limits = Limits::default();
    let mut imports: Vec<Import> = Vec::new();
    let format = detect(source.as_ref()).ok();
    let mut error = if format.is_none() && looks_like_pickle(source.as_ref()) {
        scan_plain_pickles(source.as_ref(), limits, &mut imports)
    } else {
        Checkpoint::open_collecting(source.clone(), limits, &mut imports).err()
    };
    if format == Some(Format::TorchZip) {
        match crate::torch::zip_format::other_pickles(source.as_ref()) {
            Ok(pickles) => {
                for (name, bytes) in pickles {
                    let src = MemSource::new(bytes);
                    let mut graph = ObjectGraph::new();
                    let mut unpickler = Unpickler::new(&mut graph, limits);
                    let mut cursor = Cursor::new(&src, 0, src.len());
                    let r = unpickler.load(&mut cursor, &mut DefaultHooks);
                    imports.extend_from_slice(unpickler.imports());
                    if let (Err(e), None) = (r, &error) {
                        error = Some(Error::Pickle {
                            offset: 0,
                            message: format!("{name}: {e}"),
                        });
                    }
                }
            }
            Err(e) => {
                error.get_or_insert(e);
            }
        }
    }
    let globals = GlobalEntry::list(&imports);
    let format = format.or(error.is_none().then_some(Format::Pickle));
    ScanReport {
        format,
        globals,
        error,
    }
}

/// A bare pickle (`.pkl`, `.pickle`, `.joblib`): protocol 2+ header, or a protocol 0/1 opcode.
fn looks_like_pickle(source: &dyn Source) -> bool {
    let mut head = [0u8; 2];
    if source.len() < 2 || source.read_at(0, &mut head).is_err() {
        return false;
    }
    (head[0] == 0x80 && head[1] <= 5) || matches!(head[0], b'(' | b'c' | b'}' | b']')
}

/// Scan the pickles stacked in a file. Only the first must parse (it is what `pickle.load`
/// reads); later ones are scanned for imports as far as they go, like picklescan does.
fn scan_plain_pickles(
    source: &dyn Source,
    limits: Limits,
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
            Ok(_) => first = false,
        }
    }
    None
}
