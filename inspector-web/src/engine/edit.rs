//! `hash` and `meta`: a file's hashes on demand (every byte is read, with progress), and a
//! safetensors file with new metadata (the header rewritten, the tensor bytes a slice of the
//! user's file).

use super::bind::{files, open};
use super::{get, post, progress_reporter, BlobSink};
use ldmkit_core::checkpoint::ContainerInfo;
use ldmkit_core::hash::{hash_source, tensor_data_start};
use ldmkit_core::plan::execute;
use std::collections::BTreeMap;
use wasm_bindgen::JsValue;

/// `hash`: AutoV2, AutoV3, legacy and SHA-256 of the first file.
pub fn hash(id: &JsValue, data: &JsValue) -> Result<(), String> {
    let file = files(data).into_iter().next().ok_or("no file given")?;
    let ckpt = open(&file)?;
    let start = match ckpt.info {
        ContainerInfo::Safetensors { .. } => tensor_data_start(ckpt.source.as_ref()),
        _ => None,
    };
    let hashes = hash_source(ckpt.source.as_ref(), start, &mut progress_reporter(id))
        .map_err(|e| format!("{}: {e}", file.name()))?;
    let json = serde_json::to_string(&hashes).map_err(|e| e.to_string())?;
    post(id, "hashes", vec![("json", json.into())]);
    Ok(())
}

/// `meta`: the first file with its metadata replaced by the request's `metadata` (a JSON
/// object of strings).
pub async fn meta(id: &JsValue, data: &JsValue) -> Result<(), String> {
    let file = files(data).into_iter().next().ok_or("no file given")?;
    let text = get(data, "metadata").as_string().unwrap_or_default();
    let metadata: BTreeMap<String, String> = serde_json::from_str(&text)
        .map_err(|e| format!("the metadata must be a JSON object of strings: {e}"))?;
    let ckpt = open(&file)?;
    if !matches!(ckpt.info, ContainerInfo::Safetensors { .. }) {
        return Err(format!(
            "{}: only safetensors files carry metadata",
            file.name()
        ));
    }
    let plan =
        ldmkit_core::write::safetensors::replace_metadata(ckpt.source.as_ref(), 0, &metadata)
            .map_err(|e| format!("{}: {e}", file.name()))?;
    let mut sink = BlobSink::new(vec![file.clone().into()], None);
    let report = execute(
        &plan,
        std::slice::from_ref(&ckpt.source),
        &mut sink,
        &mut progress_reporter(id),
    )
    .map_err(|e| e.to_string())?;
    let blob = sink.finish().await.map_err(|e| e.to_string())?;
    let lines = [
        format!("metadata: {} fields", metadata.len()),
        "hashes: AutoV2 and the legacy hash change (the header is new); AutoV3 / sshs_model_hash does not (the tensor bytes are the same)".to_string(),
    ];
    super::run::post_done(id, blob, &lines, report.bytes_written, false);
    Ok(())
}
