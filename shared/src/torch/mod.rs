//! PyTorch's on-disk formats, read into an [`ObjectGraph`](crate::value::ObjectGraph).
//!
//! Both formats are a pickle describing the object plus raw storage bytes. They differ in
//! where the storages are: zip entries `data/<key>` (`zip_format`) or a run of
//! `[count][bytes]` records after five stacked pickles (`legacy`). The shared piece is
//! `rebuild`: the pickle hooks that turn torch's storage persistent ids and tensor rebuild
//! calls into typed references. The PyTorch 0.1 tar format (`tar_format`) keeps its tensors
//! in records of its own.

pub(crate) mod legacy;
pub(crate) mod rebuild;
pub(crate) mod tar_format;
pub(crate) mod zip_format;

use crate::error::Result;
use crate::pickle::{DefaultHooks, Import, Limits, Unpickler};
use crate::source::Cursor;
use crate::value::{ObjectGraph, ValueId};

/// One plain pickle at the cursor (no torch hooks), its imports collected even when it
/// fails; `context` names it in the error (`legacy sys_info pickle`, `tar 'storages'`).
pub(crate) fn plain_pickle(
    cursor: &mut Cursor<'_>,
    limits: Limits,
    imports: &mut Vec<Import>,
    context: &str,
) -> Result<(ObjectGraph, ValueId)> {
    let mut graph = ObjectGraph::new();
    let mut unpickler = Unpickler::new(&mut graph, limits);
    let root = unpickler.load(cursor, &mut DefaultHooks);
    imports.extend_from_slice(unpickler.imports());
    let root = root.map_err(|e| crate::error::Error::torch(format!("{context}: {e}")))?;
    Ok((graph, root))
}
