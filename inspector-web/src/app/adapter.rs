//! An adapter's summary: what it is and for which base, ranks and strengths, modules per block
//! drawn as a picture, its training metadata read as a table, the ranked tags (trigger words
//! first), and what the metadata claims against what the tensors hold.

use ldmkit_core::units::count;
use leptos::prelude::*;
use serde_json::Value;

/// Tags shown before "… and N more".
const TAGS_SHOWN: usize = 40;

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn spread(typical: &Value, spread: &Value) -> String {
    let (min, max) = (s(&spread["min"]), s(&spread["max"]));
    let t = if typical.is_null() {
        min.clone()
    } else {
        s(typical)
    };
    if min == max {
        t
    } else {
        format!("{t} ({min}–{max})")
    }
}

/// Modules per block as an SVG bar chart: one column per block, height by parameters.
#[component]
fn BlockPicture(blocks: Vec<Value>) -> impl IntoView {
    let (w, h, pad) = (24.0f64, 120.0f64, 28.0f64);
    let most = blocks
        .iter()
        .map(|b| b["params"].as_f64().unwrap_or(0.0))
        .fold(1.0f64, f64::max);
    let width = w * blocks.len() as f64 + 8.0;
    view! {
        <svg id="block-picture" class="block-picture" width=width height=h + pad
            viewBox=format!("0 0 {width} {}", h + pad) role="img">
            <title>"Adapter parameters per block"</title>
            {blocks.into_iter().enumerate().map(|(i, b)| {
                let p = b["params"].as_f64().unwrap_or(0.0);
                let bh = (h - 14.0) * p / most;
                let x = 4.0 + i as f64 * w;
                let name = s(&b["block"]);
                let tip = format!("{name}: {} modules, {} params", b["modules"], count(p as u64));
                let class = if name.starts_with("TE") { "bar-te" } else { "bar-unet" };
                view! {
                    <g>
                        <title>{tip}</title>
                        <rect class=class x=x + 2.0 y=h - bh width=w - 4.0 height=bh></rect>
                        <text x=x + w / 2.0 y=h + 10.0 font-size="8" text-anchor="middle">{name.clone()}</text>
                        <text x=x + w / 2.0 y=h - bh - 2.0 font-size="8" text-anchor="middle">{s(&b["modules"])}</text>
                    </g>
                }
            }).collect_view()}
        </svg>
    }
}

#[component]
pub fn AdapterSummary(a: Value) -> impl IntoView {
    let modules: Vec<Value> = a["modules"].as_array().cloned().unwrap_or_default();
    let blocks: Vec<Value> = a["blocks"].as_array().cloned().unwrap_or_default();
    let t = a["training"].clone();
    let arr = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let settings = arr(&t["settings"]);
    let datasets = arr(&t["datasets"]);
    let tags = arr(&t["tags"]);
    let modelspec = arr(&t["modelspec"]);
    let claims = arr(&a["claims"]);
    let more_tags = tags.len().saturating_sub(TAGS_SHOWN);
    let spelling = match a["spelling"].as_str() {
        Some("kohya") => "kohya names",
        _ => "diffusers / PEFT names",
    };
    view! {
        <h3>"Adapter"</h3>
        <table class="facts" id="adapter">
            <tr><th>"kind"</th><td id="adapter-kind">{s(&a["kind"])}" ("{spelling}")"</td></tr>
            <tr><th>"base"</th><td id="adapter-base">{s(&a["base"])}" — "{s(&a["base_evidence"])}</td></tr>
            <tr><th>"modules"</th><td id="adapter-modules">{modules.len()}</td></tr>
            {(!a["rank_spread"].is_null()).then(|| view! { <tr><th>"rank"</th><td id="adapter-rank">{spread(&a["rank"], &a["rank_spread"])}</td></tr> })}
            {(!a["alpha_spread"].is_null()).then(|| view! { <tr><th>"alpha"</th><td id="adapter-alpha">{spread(&a["alpha"], &a["alpha_spread"])}</td></tr> })}
            <tr><th>"strength"</th><td>{spread(&Value::Null, &a["strength_spread"])}" (alpha / rank, at ratio 1)"</td></tr>
            {claims.iter().map(|c| view! {
                <tr class="warning"><th>"claims"</th><td class="claim">{format!("the metadata says {} {}, the tensors hold {}", s(&c["what"]), s(&c["claimed"]), s(&c["held"]))}</td></tr>
            }).collect_view()}
        </table>
        <h3>"Modules per block"</h3>
        <BlockPicture blocks=blocks/>
        <details>
            <summary>{format!("All {} modules", modules.len())}</summary>
            <table class="modules" id="adapter-module-table">
                <tr><th>"module"</th><th>"block"</th><th>"kind"</th><th>"rank"</th><th>"alpha"</th><th>"strength"</th></tr>
                {modules.into_iter().map(|m| view! {
                    <tr>
                        <td class="key">{s(&m["name"])}</td>
                        <td>{s(&m["block"])}</td>
                        <td>{s(&m["kind"])}{if m["dora"].as_bool() == Some(true) { " + DoRA" } else { "" }}</td>
                        <td>{s(&m["rank"])}</td>
                        <td>{s(&m["alpha"])}</td>
                        <td>{s(&m["strength"])}</td>
                    </tr>
                }).collect_view()}
            </table>
        </details>
        {(!settings.is_empty() || !datasets.is_empty()).then(|| view! {
            <h3>"Training"</h3>
            <table class="facts" id="training">
                {settings.into_iter().map(|row| view! { <tr><th>{s(&row[0])}</th><td>{s(&row[2])}</td></tr> }).collect_view()}
                {datasets.into_iter().map(|d| view! {
                    <tr><th>{format!("dataset {}", s(&d["folder"]))}</th><td>{format!("{} images × {} repeats", s(&d["images"]), s(&d["repeats"]))}</td></tr>
                }).collect_view()}
            </table>
        })}
        {(!tags.is_empty()).then(|| view! {
            <h3>"Tags (most frequent first: the likely trigger words lead)"</h3>
            <ol class="tags" id="tags">
                {tags.into_iter().take(TAGS_SHOWN).map(|tag| view! { <li><span class="tag">{s(&tag[0])}</span>" "{s(&tag[1])}</li> }).collect_view()}
            </ol>
            {(more_tags > 0).then(|| view! { <p>{format!("… and {more_tags} more")}</p> })}
        })}
        {(!t["trigger"].is_null()).then(|| view! { <p id="trigger">"Trigger: "<strong>{s(&t["trigger"])}</strong></p> })}
        {(!modelspec.is_empty()).then(|| view! {
            <h3>"modelspec"</h3>
            <table class="facts" id="modelspec">
                {modelspec.into_iter().map(|row| view! { <tr><th>{s(&row[0])}</th><td>{s(&row[1])}</td></tr> }).collect_view()}
            </table>
        })}
    }
}

/// Hashes on demand, and the metadata editor of a safetensors file.
#[component]
pub fn HashAndMeta(
    hashes: Option<Value>,
    metadata: Option<Value>,
    on_hash: impl Fn() + Copy + Send + Sync + 'static,
    on_meta: impl Fn(String) + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let text = metadata.map(|m| serde_json::to_string_pretty(&m).unwrap_or_default());
    let (edited, set_edited) = signal(text.clone().unwrap_or_default());
    view! {
        <h3>"Hashes"</h3>
        {match hashes {
            Some(h) => view! {
                <table class="facts" id="hashes">
                    <tr><th>"AutoV2"</th><td id="hash-autov2">{s(&h["autov2"])}</td></tr>
                    <tr><th>"AutoV3"</th><td id="hash-autov3">{if h["autov3"].is_null() { "— (not safetensors)".to_string() } else { s(&h["autov3"]) }}</td></tr>
                    <tr><th>"legacy"</th><td id="hash-legacy">{s(&h["legacy"])}</td></tr>
                    <tr><th>"SHA-256"</th><td id="hash-sha256">{s(&h["sha256"])}</td></tr>
                </table>
            }.into_any(),
            None => view! { <button id="hash" on:click=move |_| on_hash()>"Compute hashes (reads the whole file)"</button> }.into_any(),
        }}
        {text.map(|_| view! {
            <h3>"Metadata"</h3>
            <p>"Edit the JSON and download: the header is rewritten, the tensor bytes are copied as they are (AutoV3 stays, AutoV2 changes)."</p>
            <textarea id="meta-json" rows="10" cols="80" prop:value=move || edited.get()
                on:input=move |ev| set_edited.set(event_target_value(&ev))></textarea>
            <br/>
            <button id="meta-save" on:click=move |_| on_meta(edited.get_untracked())>"Download with this metadata"</button>
        })}
    }
}
