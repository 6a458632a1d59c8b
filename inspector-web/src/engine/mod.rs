//! The engine: ldmkit-core behind a message protocol, in a dedicated Web Worker.
//!
//! Requests are plain objects `{id, op, files, prefixes?, groups?, recipe?, format?, key?}`
//! (see [`bind`] for how files become inputs); replies echo `id`: `{op: "report", json}`,
//! `{op: "stats", json}`, `{op: "diff", json}`, `{op: "progress", done, total}`,
//! `{op: "done", blob, notes, bytes}`, `{op: "hashes", json}`, `{op: "error", message}`
//! (`hash` and `meta` requests: [`edit`]). Work runs synchronously in
//! the worker (it is the worker's whole job); the page cancels a run by terminating the worker
//! and starting a fresh one.

mod analysis;
mod bind;
mod blob_sink;
mod blob_source;
mod edit;
mod run;
mod scratch;

pub use blob_sink::BlobSink;
pub use blob_source::BlobSource;
pub use scratch::Scratch;

use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent};

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

/// A field of a request.
pub(crate) fn get(data: &JsValue, key: &str) -> JsValue {
    js_sys::Reflect::get(data, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

/// Send a reply for request `id`.
pub(crate) fn post(id: &JsValue, op: &str, mut fields: Vec<(&str, JsValue)>) {
    fields.push(("id", id.clone()));
    fields.push(("op", JsValue::from_str(op)));
    let _ = scope().post_message(&object(&fields));
}

/// Post progress, about a hundred times per job.
pub(crate) fn progress_reporter(id: &JsValue) -> impl FnMut(u64, u64) -> bool + '_ {
    let mut last = 0u64;
    move |done: u64, total: u64| {
        if done < last || done - last >= total / 100 || done == total {
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
    }
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

fn handle(id: &JsValue, data: &JsValue) -> Result<(), String> {
    match get(data, "op").as_string().unwrap_or_default().as_str() {
        "inspect" => analysis::inspect(id, data),
        "stats" => analysis::stats(id, data),
        "diff" => analysis::diff(id, data),
        "hash" => edit::hash(id, data),
        "meta" => {
            let (id, data) = (id.clone(), data.clone());
            wasm_bindgen_futures::spawn_local(async move {
                if let Err(message) = edit::meta(&id, &data).await {
                    post(&id, "error", vec![("message", JsValue::from_str(&message))]);
                }
            });
            Ok(())
        }
        "run" => {
            let (id, data) = (id.clone(), data.clone());
            // Async only to open and close the scratch file; the run itself is synchronous.
            wasm_bindgen_futures::spawn_local(async move {
                if let Err(message) = run::run(&id, &data).await {
                    post(&id, "error", vec![("message", JsValue::from_str(&message))]);
                }
            });
            Ok(())
        }
        other => Err(format!("unknown request '{other}'")),
    }
}
