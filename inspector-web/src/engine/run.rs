//! `run`: a recipe over the request's inputs, answered with the output as a Blob composed of
//! input slices and computed bytes (in an OPFS scratch file when the browser has one).

use super::bind::bind;
use super::{get, post, progress_reporter, BlobSink, Scratch};
use ldmkit_core::plan::{execute, Output};
use ldmkit_core::recipe::{self, OutputFormat, Recipe};
use ldmkit_core::write::zip::folder_zip;
use wasm_bindgen::JsValue;

pub async fn run(id: &JsValue, data: &JsValue) -> Result<(), String> {
    let text = get(data, "recipe").as_string().unwrap_or_default();
    let recipe = Recipe::parse_any(text.trim()).map_err(|e| e.to_string())?;
    let format = match get(data, "format").as_string().as_deref() {
        Some("ckpt") => OutputFormat::Torch,
        Some("diffusers") => OutputFormat::DiffusersFolder,
        _ => OutputFormat::Safetensors,
    };
    let b = bind(data)?;
    let (work, notes) = recipe::run(&recipe, &b.inputs, &b.bound).map_err(|e| e.to_string())?;
    let plan =
        match recipe::output_plan(&work, &b.inputs, format, &recipe).map_err(|e| e.to_string())? {
            Output::File(plan) => plan,
            // A browser download is one file: the folder comes as a zip of it.
            Output::Folder(files) => folder_zip(files).map_err(|e| e.to_string())?,
        };
    let session = get(data, "session")
        .as_string()
        .unwrap_or_else(|| "anonymous".into());
    let run_number = get(data, "run").as_f64().unwrap_or(0.0) as u64;
    // Every byte not sliced from an input goes to disk: computed tensors, and copied ranges
    // that pass through the sink to have their CRC taken (a diffusers zip, a .ckpt from
    // safetensors).
    let scratch = Scratch::create(&session, run_number).await.ok();
    let mut sink = BlobSink::new(b.blobs, scratch);
    let on_disk = sink.on_disk();
    let report = execute(
        &plan,
        &b.inputs.sources(),
        &mut sink,
        &mut progress_reporter(id),
    )
    .map_err(|e| e.to_string())?;
    let blob = sink.finish().await.map_err(|e| e.to_string())?;
    let mut lines = notes.lines;
    for (name, bad) in &report.non_finite {
        lines.push(format!(
            "warning: {name}: {} NaN and {} infinite values",
            bad.nan, bad.inf
        ));
    }
    post_done(id, blob, &lines, report.bytes_written, on_disk);
    Ok(())
}

/// The `done` reply: the output Blob, the notes for the user, its size and where its
/// computed bytes live.
pub fn post_done(id: &JsValue, blob: web_sys::Blob, lines: &[String], bytes: u64, on_disk: bool) {
    let notes: js_sys::Array = lines.iter().map(|l| JsValue::from_str(l)).collect();
    post(
        id,
        "done",
        vec![
            ("blob", blob.into()),
            ("notes", notes.into()),
            ("bytes", (bytes as f64).into()),
            ("onDisk", on_disk.into()),
        ],
    );
}
