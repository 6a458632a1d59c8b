//! What is in one file: format, size, architecture, components drawn as bars, dtypes, Lightning
//! metadata, the safety report, and the key tree.

use super::adapter::{AdapterSummary, HashAndMeta};
use super::keys::KeyTree;
use ldmkit_core::units::{bytes, count};
use leptos::prelude::*;
use serde_json::Value;

/// One opened file and what the engine said about it.
#[derive(Clone, PartialEq)]
pub struct Opened {
    pub name: String,
    pub report: Option<Value>,
    pub error: Option<String>,
    /// The file's hashes, once asked for.
    pub hashes: Option<Value>,
}

#[component]
pub fn Summary(
    opened: Opened,
    filter: ReadSignal<String>,
    set_filter: WriteSignal<String>,
    on_tensor: impl Fn(String) + Copy + Send + Sync + 'static,
    on_hash: impl Fn() + Copy + Send + Sync + 'static,
    on_meta: impl Fn(String) + Copy + Send + Sync + 'static,
) -> impl IntoView {
    if let Some(e) = opened.error {
        return view! { <section class="summary"><p class="error" id="file-error">{e}</p></section> }.into_any();
    }
    let Some(r) = opened.report else {
        return view! { <section class="summary"><p>"Reading…"</p></section> }.into_any();
    };
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    let adapter = r["adapter"].clone();
    let adapter_error = r["adapter_error"].as_str().map(str::to_string);
    let metadata =
        (r["format"] == "safetensors").then(|| r["metadata"]["container"]["metadata"].clone());
    let hashes = opened.hashes.clone();
    let total = r["totals"]["bytes"].as_f64().unwrap_or(0.0).max(1.0);
    let mut components: Vec<(String, Value)> = r["components"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    // Largest first: what takes the space is what the user came to see.
    let size = |c: &Value| c["bytes"].as_f64().unwrap_or(0.0);
    components.sort_by(|a, b| size(&b.1).total_cmp(&size(&a.1)));
    let globals: Vec<Value> = r["globals"].as_array().cloned().unwrap_or_default();
    let tensors: Vec<Value> = r["tensors"].as_array().cloned().unwrap_or_default();
    let lightning = r["metadata"]["lightning"].clone();
    let dtypes = r["dtypes"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}: {} tensors, {}", v["tensors"], bytes(size(v) as u64)))
                .collect::<Vec<_>>()
                .join(" · ")
        })
        .unwrap_or_default();
    view! {
        <section class="summary" id="summary">
            <h2 id="name">{opened.name.clone()}</h2>
            <table class="facts">
                <tr><th>"format"</th><td id="format-value">{s(&r["format"])}</td></tr>
                <tr><th>"size"</th><td>{bytes(r["file_size"].as_u64().unwrap_or(0))}</td></tr>
                <tr><th>"architecture"</th><td id="architecture">{s(&r["architecture"])}</td></tr>
                <tr><th>"tensors"</th><td id="tensor-count">{tensors.len()}</td></tr>
                <tr><th>"dtypes"</th><td id="dtypes">{dtypes}</td></tr>
                {(!lightning.is_null()).then(|| view! { <tr><th>"lightning"</th><td>{format!("epoch {}, global step {}", lightning["epoch"], lightning["global_step"])}</td></tr> })}
            </table>
            {adapter_error.map(|e| view! { <p class="error" id="adapter-error">{format!("malformed adapter: {e}")}</p> })}
            {(!adapter.is_null()).then(|| view! { <AdapterSummary a=adapter.clone()/> })}
            <h3>{if r["adapter"].is_null() { "Components" } else { "Tensors by component" }}</h3>
            <div class="bars" id="components">
                {components.into_iter().map(|(name, c)| {
                    let size = c["bytes"].as_f64().unwrap_or(0.0);
                    let pct = 100.0 * size / total;
                    view! {
                        <div class="bar-row">
                            <span class="bar-label">{name}</span>
                            <span class="bar"><span class="fill" style=format!("width:{pct:.1}%")></span></span>
                            <span class="bar-value">{format!("{} · {} tensors · {} params", bytes(size as u64), c["tensors"], count(c["params"].as_u64().unwrap_or(0)))}</span>
                        </div>
                    }
                }).collect_view()}
            </div>
            <HashAndMeta hashes=hashes metadata=metadata on_hash=on_hash on_meta=on_meta/>
            <h3>"Safety"</h3>
            <ul class="globals" id="globals">
                {if globals.is_empty() { Some(view! { <li>"No pickle globals: nothing would run on load."</li> }) } else { None }}
                {(!r["polyglot"].is_null()).then(|| view! { <li class="verdict-not_allowed">{format!("not allowed: {}", s(&r["polyglot"]))}</li> })}
                {globals.into_iter().map(|g| {
                    let verdict = s(&g["verdict"]);
                    let label = verdict.replace('_', " ");
                    let at = if g["via"].is_null() { String::new() } else { format!("{} → ", s(&g["via"])) };
                    let why = if g["why"].is_null() { String::new() } else { format!(" — {}", s(&g["why"])) };
                    view! { <li class=format!("verdict-{verdict}")>{format!("{label}: {at}{} ({}×){why}", s(&g["name"]), g["count"])}</li> }
                }).collect_view()}
            </ul>
            <h3>"Keys"</h3>
            <KeyTree tensors=tensors filter=filter set_filter=set_filter on_tensor=on_tensor/>
        </section>
    }.into_any()
}
