//! The torch zip writer: an object tree becomes `data.pkl` plus one stored entry per storage,
//! in the records and order `torch.save` (PyTorch 2.9) writes.

use super::zip::ZipBuilder;
use crate::error::Result;
use crate::pickle::Pickler;
use crate::plan::{LazyTensor, Part, Plan};
use crate::value::{ObjectGraph, ValueId};
use std::cell::RefCell;
use std::collections::HashMap;

/// Every archive gets this top folder: `torch.save` uses the output file's stem, or
/// `archive` when writing to a stream (as Lightning does). A fixed name keeps the bytes
/// independent of the output's file name, so one recipe gives one result everywhere.
pub const ARCHIVE_PREFIX: &str = "archive";

/// Plan a torch zip of the tree at `root`. `storage_data` gives the bytes of each storage
/// value the pickle reaches, as a lazy tensor of exactly the storage's size, and a name for
/// reports (the tensor it holds).
pub fn torch_zip(
    graph: &ObjectGraph,
    root: ValueId,
    storage_data: &dyn Fn(ValueId) -> Result<(LazyTensor, String)>,
) -> Result<Plan> {
    // torch numbers storages in the order the pickler meets them.
    let order: RefCell<(HashMap<ValueId, usize>, Vec<ValueId>)> = RefCell::default();
    let keys = |id: ValueId| -> String {
        let mut o = order.borrow_mut();
        let next = o.1.len();
        let key = *o.0.entry(id).or_insert(next);
        if key == next {
            o.1.push(id);
        }
        key.to_string()
    };
    let pickle = Pickler::new(graph, &keys).dump(root)?;
    let storages = order.into_inner().1;

    let p = ARCHIVE_PREFIX;
    let mut zip = ZipBuilder::new();
    zip.add_bytes(&format!("{p}/data.pkl"), pickle);
    zip.add_bytes(&format!("{p}/.format_version"), b"1".to_vec());
    zip.add_bytes(&format!("{p}/.storage_alignment"), b"64".to_vec());
    zip.add_bytes(&format!("{p}/byteorder"), b"little".to_vec());
    for (key, id) in storages.into_iter().enumerate() {
        let (data, label) = storage_data(id)?;
        let name = format!("{p}/data/{key}");
        zip.add(
            &name,
            vec![Part::tensor(&label, &data)],
            data.nbytes(),
            data.known_crc(),
        );
    }
    zip.add_bytes(&format!("{p}/version"), b"3\n".to_vec());
    Ok(zip.finish())
}
