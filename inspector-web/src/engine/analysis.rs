//! Read-only requests: a file's report, one tensor's statistics, and the diff of two inputs.

use super::bind::{bind, files, open};
use super::{get, post, progress_reporter};
use ldmkit_core::analysis::{diff::diff as diff_inputs, stats::tensor_stats};
use ldmkit_core::model::components::state_dict_key;
use ldmkit_core::plan::{ElementReader, LazyTensor};
use ldmkit_core::report::Report;
use wasm_bindgen::JsValue;

fn json(value: &impl serde::Serialize) -> Result<JsValue, String> {
    serde_json::to_string(value)
        .map(JsValue::from)
        .map_err(|e| e.to_string())
}

/// `inspect`: the report of the request's first file.
pub fn inspect(id: &JsValue, data: &JsValue) -> Result<(), String> {
    let file = files(data).into_iter().next().ok_or("no file given")?;
    let ckpt = open(&file)?;
    let report = Report::new(&ckpt).map_err(|e| format!("{}: {e}", file.name()))?;
    post(
        id,
        "report",
        vec![("json", json(&report)?), ("name", file.name().into())],
    );
    Ok(())
}

/// `stats`: moments and histogram of tensor `key` of the first file.
pub fn stats(id: &JsValue, data: &JsValue) -> Result<(), String> {
    let file = files(data).into_iter().next().ok_or("no file given")?;
    let key = get(data, "key").as_string().unwrap_or_default();
    let ckpt = open(&file)?;
    let tensors = ckpt.tensors_named_once().map_err(|e| e.to_string())?;
    let found = tensors
        .iter()
        .find(|t| t.name == key || state_dict_key(&t.name) == Some(key.as_str()))
        .ok_or_else(|| format!("{}: no tensor '{key}'", file.name()))?;
    let lazy = LazyTensor::stored(0, found.tensor, ckpt.storage(found.tensor));
    let sources = [ckpt.source.clone()];
    let stats =
        tensor_stats(&mut ElementReader::new(&sources), &lazy, 40).map_err(|e| e.to_string())?;
    post(
        id,
        "stats",
        vec![("json", json(&stats)?), ("key", key.into())],
    );
    Ok(())
}

/// `diff`: what changed from the first input to the second.
pub fn diff(id: &JsValue, data: &JsValue) -> Result<(), String> {
    let b = bind(data)?;
    let [first, second, ..] = &b.bound[..] else {
        return Err("diff takes two inputs".into());
    };
    let working = |i: usize, input| {
        b.inputs
            .working(input)
            .map_err(|e| format!("{}: {e}", b.names[i]))
    };
    let (wa, wb) = (working(0, first)?, working(1, second)?);
    let sources = b.inputs.sources();
    let mut reader = ElementReader::new(&sources);
    let mut progress = progress_reporter(id);
    let report = diff_inputs(&mut reader, &wa, &wb, &mut |done, total| {
        progress(done as u64, total as u64);
    })
    .map_err(|e| e.to_string())?;
    post(id, "diff", vec![("json", json(&report)?)]);
    Ok(())
}
