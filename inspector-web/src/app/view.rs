//! The page's components.

use super::worker::{field, request, Engine};
use ldmkit_core::ops::EmaMode;
use ldmkit_core::recipe::{self, presets, Recipe};
use leptos::prelude::*;
use serde_json::Value;
use wasm_bindgen::JsValue;
use web_sys::{File, HtmlInputElement};

/// One opened file and what the engine said about it.
#[derive(Clone)]
struct Opened {
    name: String,
    report: Option<Value>,
    error: Option<String>,
}

/// The actions offered, each a recipe preset.
const ACTIONS: &[(&str, &str)] = &[
    (
        "strip",
        "Strip to a release (drop EMA, optimizer, training state)",
    ),
    ("ema", "Extract EMA weights"),
    (
        "merge",
        "Merge-back: training checkpoint + its base (2 files)",
    ),
    (
        "graft",
        "Graft: base weights into a training checkpoint (base, training)",
    ),
    ("weighted-sum", "Weighted sum A·(1−α)+B·α (2 files)"),
    ("add-difference", "Add difference A+(B−C)·α (3 files)"),
    ("bake-vae", "Bake VAE: model + VAE (2 files)"),
];

fn build_recipe(action: &str, dtype: &str, alpha: f64) -> Recipe {
    let dtype = recipe::parse_dtype(dtype);
    match action {
        "ema" => presets::strip(EmaMode::Use, dtype),
        "merge" => presets::merge(EmaMode::Drop, dtype),
        "graft" => presets::graft(false, dtype),
        "weighted-sum" => presets::weighted_sum(alpha, dtype),
        "add-difference" => presets::add_difference(alpha, dtype),
        "bake-vae" => presets::bake_vae(dtype),
        _ => presets::strip(EmaMode::Drop, dtype),
    }
}

fn human(bytes: f64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"];
    let mut v = bytes;
    let mut u = 0;
    while v >= 1000.0 && u < units.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.2} {}", units[u])
    }
}

fn location_hash() -> String {
    web_sys::window()
        .and_then(|w| w.location().hash().ok())
        .unwrap_or_default()
}

fn set_location_hash(recipe: &Recipe) {
    let url = recipe::to_url(recipe, "");
    if let Some(w) = web_sys::window() {
        if let Ok(history) = w.history() {
            let _ = history.replace_state_with_url(&JsValue::NULL, "", Some(&url));
        }
    }
}

#[component]
pub fn App() -> impl IntoView {
    let (files, set_files) = signal_local::<Vec<File>>(Vec::new());
    let (opened, set_opened) = signal::<Vec<Opened>>(Vec::new());
    let (selected, set_selected) = signal(0usize);
    let (filter, set_filter) = signal(String::new());
    let (stats, set_stats) = signal::<Option<(String, Value)>>(None);
    let (progress, set_progress) = signal::<Option<(f64, f64)>>(None);
    let (download, set_download) = signal::<Option<(String, String, f64)>>(None);
    let (notes, set_notes) = signal::<Vec<String>>(Vec::new());
    let (error, set_error) = signal::<Option<String>>(None);
    let (action, set_action) = signal("strip".to_string());
    let (dtype, set_dtype) = signal("f16".to_string());
    let (alpha, set_alpha) = signal(0.5f64);
    let (format, set_format) = signal("safetensors".to_string());
    // A recipe that came in a link wins over the form until the user changes the form.
    let linked = Recipe::parse_any(&location_hash()).ok();
    let (from_link, set_from_link) = signal(linked.is_some());
    let (link_recipe, _) = signal(linked);

    let recipe = Memo::new(move |_| {
        if from_link.get() {
            if let Some(r) = link_recipe.get() {
                return r;
            }
        }
        build_recipe(&action.get(), &dtype.get(), alpha.get())
    });
    Effect::new(move |_| set_location_hash(&recipe.get()));

    let on_reply = move |reply: JsValue| {
        let op = field(&reply, "op").as_string().unwrap_or_default();
        let json = || {
            field(&reply, "json")
                .as_string()
                .and_then(|s| serde_json::from_str::<Value>(&s).ok())
        };
        match op.as_str() {
            "report" => {
                let name = field(&reply, "name").as_string().unwrap_or_default();
                set_opened.update(|o| {
                    if let Some(entry) = o
                        .iter_mut()
                        .find(|e| e.name == name && e.report.is_none() && e.error.is_none())
                    {
                        entry.report = json();
                    }
                });
            }
            "stats" => {
                let key = field(&reply, "key").as_string().unwrap_or_default();
                set_stats.set(json().map(|j| (key, j)));
            }
            "progress" => {
                let done = field(&reply, "done").as_f64().unwrap_or(0.0);
                let total = field(&reply, "total").as_f64().unwrap_or(1.0);
                set_progress.set(Some((done, total)));
            }
            "done" => {
                let blob: web_sys::Blob = field(&reply, "blob").into();
                let bytes = field(&reply, "bytes").as_f64().unwrap_or(0.0);
                let url = web_sys::Url::create_object_url_with_blob(&blob).unwrap_or_default();
                let name = if format.get_untracked() == "ckpt" {
                    "ldmkit-output.ckpt"
                } else {
                    "ldmkit-output.safetensors"
                };
                if let Some((old, _, _)) = download.get_untracked() {
                    let _ = web_sys::Url::revoke_object_url(&old);
                }
                set_download.set(Some((url, name.to_string(), bytes)));
                let lines = js_sys::Array::from(&field(&reply, "notes"))
                    .iter()
                    .filter_map(|v| v.as_string())
                    .collect();
                set_notes.set(lines);
                set_progress.set(None);
            }
            "error" => {
                let message = field(&reply, "message").as_string().unwrap_or_default();
                set_progress.set(None);
                set_opened.update(|o| {
                    if let Some(entry) = o
                        .iter_mut()
                        .find(|e| e.report.is_none() && e.error.is_none())
                    {
                        entry.error = Some(message.clone());
                    } else {
                        set_error.set(Some(message.clone()));
                    }
                });
            }
            _ => {}
        }
    };
    let engine = StoredValue::new_local(Engine::start(on_reply).ok());
    let restart = move || engine.set_value(Engine::start(on_reply).ok());
    let send = move |req: JsValue| {
        engine.with_value(|e| {
            if let Some(e) = e {
                e.send(&req)
            }
        })
    };

    let open_files = move |list: Vec<File>| {
        set_error.set(None);
        set_stats.set(None);
        set_opened.set(
            list.iter()
                .map(|f| Opened {
                    name: f.name(),
                    report: None,
                    error: None,
                })
                .collect(),
        );
        set_selected.set(0);
        for f in &list {
            send(request("inspect", std::slice::from_ref(f), &[]));
        }
        set_files.set(list);
    };
    let on_pick = move |ev: leptos::ev::Event| {
        let input: HtmlInputElement = event_target(&ev);
        if let Some(list) = input.files() {
            open_files((0..list.length()).filter_map(|i| list.get(i)).collect());
        }
    };
    let on_drop = move |ev: leptos::ev::DragEvent| {
        ev.prevent_default();
        if let Some(list) = ev.data_transfer().and_then(|d| d.files()) {
            open_files((0..list.length()).filter_map(|i| list.get(i)).collect());
        }
    };
    let run = move |_| {
        set_error.set(None);
        set_download.set(None);
        set_notes.set(Vec::new());
        set_progress.set(Some((0.0, 1.0)));
        let text = recipe.get_untracked().to_text();
        send(request(
            "run",
            &files.get_untracked(),
            &[
                ("recipe", JsValue::from_str(&text)),
                ("format", JsValue::from_str(&format.get_untracked())),
            ],
        ));
    };
    let cancel = move |_| {
        restart();
        set_progress.set(None);
        set_error.set(Some("cancelled".into()));
    };
    let copy_link = move |_| {
        let href = web_sys::window()
            .and_then(|w| w.location().href().ok())
            .unwrap_or_default();
        if let Some(w) = web_sys::window() {
            let _ = w.navigator().clipboard().write_text(&href);
        }
    };

    view! {
        <header>
            <h1>"ldmkit"</h1>
            <p class="tagline">"Open, inspect and rewrite Stable Diffusion checkpoints in your browser. Nothing is uploaded; pickles are never executed."</p>
        </header>
        <section class="drop" on:dragover=|ev: leptos::ev::DragEvent| ev.prevent_default() on:drop=on_drop>
            <label>"Open checkpoints (.ckpt .pt .pth .bin .safetensors), or drop them here: "
                <input id="file" type="file" multiple accept=".ckpt,.pt,.pth,.bin,.safetensors" on:change=on_pick/>
            </label>
        </section>
        {move || from_link.get().then(|| view! {
            <section class="linked" id="linked">
                <p>"This link carries a recipe. Open its inputs in this order: "
                    <strong>{move || recipe.get().inputs.join(", ")}</strong></p>
                <button on:click=move |_| set_from_link.set(false)>"Use the form instead"</button>
            </section>
        })}
        {move || error.get().map(|e| view! { <p class="error" id="error">{e}</p> })}
        <nav class="tabs">
            {move || opened.get().into_iter().enumerate().map(|(i, o)| view! {
                <button class:active=move || selected.get() == i on:click=move |_| set_selected.set(i)>{o.name.clone()}</button>
            }).collect_view()}
        </nav>
        {move || opened.get().get(selected.get()).cloned().map(|o| view! {
            <Summary opened=o filter=filter set_filter=set_filter on_tensor=move |key: String| {
                let f = files.get_untracked().get(selected.get_untracked()).cloned();
                if let Some(f) = f {
                    send(request("stats", &[f], &[("key", JsValue::from_str(&key))]));
                }
            }/>
        })}
        {move || stats.get().map(|(key, s)| view! { <Stats key=key stats=s/> })}
        <section class="actions">
            <h2>"Rewrite"</h2>
            <label>"Action "
                <select id="action" on:change=move |ev| { set_from_link.set(false); set_action.set(event_target_value(&ev)); }>
                    {ACTIONS.iter().map(|(v, l)| view! { <option value=*v selected=move || action.get() == *v>{*l}</option> }).collect_view()}
                </select>
            </label>
            <label>" Cast "
                <select id="dtype" on:change=move |ev| { set_from_link.set(false); set_dtype.set(event_target_value(&ev)); }>
                    <option value="f16" selected=true>"float16"</option>
                    <option value="bf16">"bfloat16"</option>
                    <option value="f32">"float32"</option>
                    <option value="keep">"keep dtypes"</option>
                </select>
            </label>
            <label>" α "
                <input id="alpha" type="number" step="0.05" min="0" max="1" prop:value=move || alpha.get().to_string()
                    on:input=move |ev| { set_from_link.set(false); if let Ok(a) = event_target_value(&ev).parse() { set_alpha.set(a) } }/>
            </label>
            <label>" Output "
                <select id="format" on:change=move |ev| set_format.set(event_target_value(&ev))>
                    <option value="safetensors" selected=true>".safetensors"</option>
                    <option value="ckpt">".ckpt"</option>
                </select>
            </label>
            <pre id="recipe" class="recipe">{move || recipe.get().to_text()}</pre>
            <button id="copy-link" on:click=copy_link>"Copy link"</button>
            <button id="run" on:click=run disabled=move || files.get().is_empty() || progress.get().is_some()>"Run"</button>
            {move || progress.get().map(|(done, total)| view! {
                <div class="progress">
                    <progress id="progress" max=total value=done></progress>
                    " " {format!("{} / {}", human(done), human(total))} " "
                    <button id="cancel" on:click=cancel>"Cancel"</button>
                </div>
            })}
            <ul class="notes">{move || notes.get().into_iter().map(|n| view! { <li>{n}</li> }).collect_view()}</ul>
            {move || download.get().map(|(url, name, bytes)| view! {
                <p><a id="download" href=url download=name.clone()>{format!("Download {name} ({})", human(bytes))}</a></p>
            })}
        </section>
    }
}

#[component]
fn Summary(
    opened: Opened,
    filter: ReadSignal<String>,
    set_filter: WriteSignal<String>,
    on_tensor: impl Fn(String) + Copy + Send + Sync + 'static,
) -> impl IntoView {
    if let Some(e) = opened.error {
        return view! { <section class="summary"><p class="error" id="file-error">{e}</p></section> }.into_any();
    }
    let Some(r) = opened.report else {
        return view! { <section class="summary"><p>"Reading…"</p></section> }.into_any();
    };
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
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
    view! {
        <section class="summary" id="summary">
            <h2 id="name">{opened.name.clone()}</h2>
            <table class="facts">
                <tr><th>"format"</th><td id="format-value">{s(&r["format"])}</td></tr>
                <tr><th>"size"</th><td>{human(r["file_size"].as_f64().unwrap_or(0.0))}</td></tr>
                <tr><th>"architecture"</th><td id="architecture">{s(&r["architecture"])}</td></tr>
                <tr><th>"tensors"</th><td id="tensor-count">{tensors.len()}</td></tr>
                {(!lightning.is_null()).then(|| view! { <tr><th>"lightning"</th><td>{format!("epoch {}, global step {}", lightning["epoch"], lightning["global_step"])}</td></tr> })}
            </table>
            <h3>"Components"</h3>
            <div class="bars" id="components">
                {components.into_iter().map(|(name, c)| {
                    let bytes = c["bytes"].as_f64().unwrap_or(0.0);
                    let pct = 100.0 * bytes / total;
                    view! {
                        <div class="bar-row">
                            <span class="bar-label">{name}</span>
                            <span class="bar"><span class="fill" style=format!("width:{pct:.1}%")></span></span>
                            <span class="bar-value">{format!("{} · {} tensors · {}", human(bytes), c["tensors"], c["params"])}</span>
                        </div>
                    }
                }).collect_view()}
            </div>
            <h3>"Safety"</h3>
            <ul class="globals" id="globals">
                {if globals.is_empty() { Some(view! { <li>"No pickle globals: nothing would run on load."</li> }) } else { None }}
                {globals.into_iter().map(|g| {
                    let verdict = s(&g["verdict"]);
                    view! { <li class=format!("verdict-{verdict}")>{format!("{verdict}: {} ({}×)", s(&g["name"]), g["count"])}</li> }
                }).collect_view()}
            </ul>
            <h3>"Keys"</h3>
            <input id="filter" placeholder="filter, e.g. attn2.to_k" prop:value=move || filter.get() on:input=move |ev| set_filter.set(event_target_value(&ev))/>
            <div class="keys-box">
            <table class="keys" id="keys">
                <tr><th>"name"</th><th>"dtype"</th><th>"shape"</th><th>"size"</th></tr>
                {move || {
                    let f = filter.get();
                    tensors.iter().filter(|t| f.is_empty() || t["name"].as_str().unwrap_or("").contains(&f)).take(300).map(|t| {
                        let name = t["name"].as_str().unwrap_or("").to_string();
                        let key = name.clone();
                        view! {
                            <tr class="key" on:click=move |_| on_tensor(key.clone())>
                                <td>{name}</td><td>{s(&t["dtype"])}</td><td>{t["shape"].to_string()}</td><td>{human(t["bytes"].as_f64().unwrap_or(0.0))}</td>
                            </tr>
                        }
                    }).collect_view()
                }}
            </table>
            </div>
        </section>
    }.into_any()
}

#[component]
fn Stats(key: String, stats: Value) -> impl IntoView {
    let counts: Vec<f64> = stats["histogram"]["counts"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    let peak = counts.iter().cloned().fold(1.0, f64::max);
    let n = |k: &str| {
        stats[k]
            .as_f64()
            .map_or("-".to_string(), |v| format!("{v:.4e}"))
    };
    view! {
        <section class="stats" id="stats">
            <h3>{key}</h3>
            <p>{format!("min {}  max {}  mean {}  std {}  NaN {}  Inf {}", n("min"), n("max"), n("mean"), n("std"), stats["nan"], stats["inf"])}</p>
            <div class="histogram">
                {counts.into_iter().map(|c| view! { <span class="hbar" style=format!("height:{:.1}%", 100.0 * c / peak)></span> }).collect_view()}
            </div>
            <p class="axis">{format!("{} … {}", n("min"), n("max"))}</p>
        </section>
    }
}
