//! The engine: ldmkit-core behind a message protocol, in a dedicated Web Worker.
//!
//! Requests are plain objects `{id, op, files, recipe?, format?, key?}`; replies echo `id`:
//! `{op: "report", json}`, `{op: "stats", json}`, `{op: "diff", json}`,
//! `{op: "progress", done, total}`, `{op: "done", blob, notes, bytes}`, `{op: "error", message}`.
//! Work runs synchronously in the worker (it is the worker's whole job); the page cancels a run
//! by terminating the worker and starting a fresh one.

mod blob_sink;
mod blob_source;
mod scratch;

pub use blob_sink::BlobSink;
pub use blob_source::BlobSource;
pub use scratch::Scratch;

use ldmkit_core::analysis::{diff::diff, stats::tensor_stats};
use ldmkit_core::model::components::state_dict_key;
use ldmkit_core::ops::{Input, Inputs};
use ldmkit_core::plan::{execute, ElementReader, LazyTensor, Output};
use ldmkit_core::recipe::{self, OutputFormat, Recipe};
use ldmkit_core::report::Report;
use ldmkit_core::scan::scan;
use ldmkit_core::source::SharedSource;
use ldmkit_core::Checkpoint;
use std::sync::Arc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{Blob, DedicatedWorkerGlobalScope, File, MessageEvent};

fn scope() -> DedicatedWorkerGlobalScope {
    js_sys::global().unchecked_into()
}

fn object(fields: &[(&str, JsValue)]) -> JsValue {
    let o = js_sys::Object::new();
    for (k, v) in fields {
        let _ = js_sys::Reflect::set(&o, &JsValue::from_str(k), v);
    }
    o.into()
}

fn get(data: &JsValue, key: &str) -> JsValue {
    js_sys::Reflect::get(data, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

fn post(id: &JsValue, op: &str, mut fields: Vec<(&str, JsValue)>) {
    fields.push(("id", id.clone()));
    fields.push(("op", JsValue::from_str(op)));
    let _ = scope().post_message(&object(&fields));
}

/// Install the message handler and tell the page the engine is ready.
pub fn serve() {
    let handler = Closure::<dyn FnMut(MessageEvent)>::new(|ev: MessageEvent| {
        let data = ev.data();
        let id = get(&data, "id");
        if let Err(message) = handle(&id, &data) {
            post(&id, "error", vec![("message", JsValue::from_str(&message))]);
        }
    });
    scope().set_onmessage(Some(handler.as_ref().unchecked_ref()));
    handler.forget();
    post(&JsValue::NULL, "ready", vec![]);
}

fn files(data: &JsValue) -> Vec<File> {
    js_sys::Array::from(&get(data, "files"))
        .iter()
        .filter_map(|f| f.dyn_into::<File>().ok())
        .collect()
}

fn source(file: &File) -> SharedSource {
    Arc::new(BlobSource::new(file.clone().into()))
}

/// Open a file; on failure the message names the file and any dangerous global it imports.
fn open(file: &File) -> Result<Checkpoint, String> {
    let src = source(file);
    Checkpoint::open(src.clone()).map_err(|e| {
        let dangerous: Vec<String> = scan(src)
            .globals
            .into_iter()
            .filter(|g| g.verdict == ldmkit_core::safety::Verdict::Dangerous)
            .map(|g| g.name)
            .collect();
        let mut message = format!("{}: {e}", file.name());
        if !dangerous.is_empty() {
            message += &format!(
                " (it imports {}, which would run code in torch.load)",
                dangerous.join(", ")
            );
        }
        message
    })
}

fn handle(id: &JsValue, data: &JsValue) -> Result<(), String> {
    let op = get(data, "op").as_string().unwrap_or_default();
    let files = files(data);
    let first = || files.first().ok_or_else(|| "no file given".to_string());
    match op.as_str() {
        "inspect" => {
            let file = first()?;
            let ckpt = open(file)?;
            let report = Report::new(&ckpt).map_err(|e| format!("{}: {e}", file.name()))?;
            let json = serde_json::to_string(&report).map_err(|e| e.to_string())?;
            post(
                id,
                "report",
                vec![("json", json.into()), ("name", file.name().into())],
            );
        }
        "stats" => {
            let file = first()?;
            let key = get(data, "key").as_string().unwrap_or_default();
            let ckpt = open(file)?;
            let tensors = ckpt.tensors().map_err(|e| e.to_string())?;
            let found = tensors
                .iter()
                .find(|t| t.name == key || state_dict_key(&t.name) == Some(key.as_str()))
                .ok_or_else(|| format!("no tensor '{key}'"))?;
            let lazy = LazyTensor::stored(0, found.tensor, ckpt.storage(found.tensor));
            let sources = [ckpt.source.clone()];
            let stats = tensor_stats(&mut ElementReader::new(&sources), &lazy, 40)
                .map_err(|e| e.to_string())?;
            let json = serde_json::to_string(&stats).map_err(|e| e.to_string())?;
            post(
                id,
                "stats",
                vec![("json", json.into()), ("key", key.into())],
            );
        }
        "diff" => {
            let [a, b] = &files[..] else {
                return Err("diff takes two files".into());
            };
            let mut inputs = Inputs::new();
            let ia = Input {
                files: vec![(String::new(), inputs.add(open(a)?))],
            };
            let ib = Input {
                files: vec![(String::new(), inputs.add(open(b)?))],
            };
            let wa = inputs
                .working(&ia)
                .map_err(|e| format!("{}: {e}", a.name()))?;
            let wb = inputs
                .working(&ib)
                .map_err(|e| format!("{}: {e}", b.name()))?;
            let sources = inputs.sources();
            let mut reader = ElementReader::new(&sources);
            let report = diff(&mut reader, &wa, &wb, &mut |done, total| {
                post(
                    id,
                    "progress",
                    vec![
                        ("done", (done as f64).into()),
                        ("total", (total as f64).into()),
                    ],
                );
            })
            .map_err(|e| e.to_string())?;
            let json = serde_json::to_string(&report).map_err(|e| e.to_string())?;
            post(id, "diff", vec![("json", json.into())]);
        }
        "run" => {
            let (id, data) = (id.clone(), data.clone());
            // Async only to open and close the scratch file; the run itself is synchronous.
            wasm_bindgen_futures::spawn_local(async move {
                if let Err(message) = run(&id, &data, &files).await {
                    post(&id, "error", vec![("message", JsValue::from_str(&message))]);
                }
            });
        }
        other => return Err(format!("unknown request '{other}'")),
    }
    Ok(())
}

/// Run a recipe and reply with the output as a Blob composed from file slices and
/// computed parts (in an OPFS scratch file when the browser has one).
async fn run(id: &JsValue, data: &JsValue, files: &[File]) -> Result<(), String> {
    let text = get(data, "recipe").as_string().unwrap_or_default();
    let recipe = Recipe::parse_any(text.trim()).map_err(|e| e.to_string())?;
    let format = match get(data, "format").as_string().as_deref() {
        Some("ckpt") => OutputFormat::Torch,
        _ => OutputFormat::Safetensors,
    };
    let mut inputs = Inputs::new();
    let mut bound = Vec::new();
    for file in files {
        let index = inputs.add(open(file)?);
        bound.push(Input {
            files: vec![(String::new(), index)],
        });
    }
    let (work, notes) = recipe::run(&recipe, &inputs, &bound).map_err(|e| e.to_string())?;
    let Output::File(plan) =
        recipe::output_plan(&work, &inputs, format, &recipe).map_err(|e| e.to_string())?
    else {
        return Err(
            "a diffusers folder cannot be downloaded as one file; choose .safetensors or .ckpt"
                .into(),
        );
    };
    let blobs: Vec<Blob> = files.iter().map(|f| f.clone().into()).collect();
    let session = get(data, "session")
        .as_string()
        .unwrap_or_else(|| "anonymous".into());
    let run_number = get(data, "run").as_f64().unwrap_or(0.0) as u64;
    let scratch = if plan.computed_bytes() > 0 {
        Scratch::create(&session, run_number).await.ok()
    } else {
        None
    };
    let mut sink = BlobSink::new(blobs, scratch);
    let on_disk = sink.on_disk();
    let mut last = 0u64;
    let mut progress = |done: u64, total: u64| {
        // About a hundred updates per run.
        if done - last >= total / 100 || done == total {
            last = done;
            post(
                id,
                "progress",
                vec![
                    ("done", (done as f64).into()),
                    ("total", (total as f64).into()),
                ],
            );
        }
        true
    };
    let report =
        execute(&plan, &inputs.sources(), &mut sink, &mut progress).map_err(|e| e.to_string())?;
    let blob = sink.finish().await.map_err(|e| e.to_string())?;
    let mut lines = notes.lines;
    for (name, bad) in &report.non_finite {
        lines.push(format!(
            "warning: {name}: {} NaN and {} infinite values",
            bad.nan, bad.inf
        ));
    }
    let notes: js_sys::Array = lines.iter().map(|l| JsValue::from_str(l)).collect();
    post(
        id,
        "done",
        vec![
            ("blob", blob.into()),
            ("notes", notes.into()),
            ("bytes", (report.bytes_written as f64).into()),
            ("onDisk", on_disk.into()),
        ],
    );
    Ok(())
}
