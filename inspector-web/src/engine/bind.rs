//! Turning a request's files into rewrite inputs.
//!
//! A request lists files; `groups[i]` says which input file `i` belongs to and `prefixes[i]`
//! its key prefix, so a picked diffusers folder (one weight file per component) is one input
//! as on the CLI. Without them every file is an input of its own.

use super::{get, BlobSource};
use ldmkit_core::ops::{Input, Inputs};
use ldmkit_core::scan::scan;
use ldmkit_core::source::SharedSource;
use ldmkit_core::Checkpoint;
use std::sync::Arc;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{Blob, File};

/// The files of a request.
pub fn files(data: &JsValue) -> Vec<File> {
    js_sys::Array::from(&get(data, "files"))
        .iter()
        .filter_map(|f| f.dyn_into::<File>().ok())
        .collect()
}

/// Open a file; on failure the message names the file and any global it imports that
/// torch's weights_only loader refuses (torch.load would have run those before failing).
pub fn open(file: &File) -> Result<Checkpoint, String> {
    let src: SharedSource = Arc::new(BlobSource::new(file.clone().into()));
    Checkpoint::open(src.clone()).map_err(|e| {
        let refused: Vec<String> = scan(src)
            .globals
            .into_iter()
            .filter(|g| g.verdict == ldmkit_core::safety::Verdict::NotAllowed)
            .map(|g| g.located())
            .collect();
        let mut message = format!("{}: {e}", file.name());
        if !refused.is_empty() && !message.contains("a bare pickle") {
            message += &format!(
                " (it imports {}, which torch.load would import and call)",
                refused.join(", ")
            );
        }
        message
    })
}

/// A request's files opened as inputs.
pub struct Bound {
    pub inputs: Inputs,
    /// The inputs as the recipe names them, in order.
    pub bound: Vec<Input>,
    /// The files as blobs, indexed like `inputs` (what output slices refer to).
    pub blobs: Vec<Blob>,
    /// A display name per bound input.
    pub names: Vec<String>,
}

pub fn bind(data: &JsValue) -> Result<Bound, String> {
    let files = files(data);
    let prefixes = js_sys::Array::from(&get(data, "prefixes"));
    let groups = js_sys::Array::from(&get(data, "groups"));
    let mut out = Bound {
        inputs: Inputs::new(),
        bound: Vec::new(),
        blobs: Vec::new(),
        names: Vec::new(),
    };
    for (i, file) in files.iter().enumerate() {
        let group = groups.get(i as u32).as_f64().map_or(i, |g| g as usize);
        let prefix = prefixes.get(i as u32).as_string().unwrap_or_default();
        let index = out.inputs.add(open(file)?);
        out.blobs.push(file.clone().into());
        if group >= out.bound.len() {
            out.bound.resize(group + 1, Input { files: Vec::new() });
            out.names.resize(group + 1, String::new());
        }
        if out.names[group].is_empty() {
            out.names[group] = file.name();
        }
        out.bound[group].files.push((prefix, index));
    }
    if out.bound.iter().any(|b| b.files.is_empty()) {
        return Err("a request names an input with no files".into());
    }
    Ok(out)
}
