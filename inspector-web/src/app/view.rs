//! The page: the App component, which holds the state and routes the engine's replies.

use super::actions::{build_recipe, location_hash, set_location_hash, ACTIONS};
use super::diff::DiffView;
use super::format::human;
use super::stats::Stats;
use super::summary::{Opened, Summary};
use super::worker::{field, request, Engine};
use ldmkit_core::recipe::Recipe;
use leptos::prelude::*;
use serde_json::Value;
use wasm_bindgen::JsValue;
use web_sys::{File, HtmlInputElement};

#[component]
pub fn App() -> impl IntoView {
    let (files, set_files) = signal_local::<Vec<File>>(Vec::new());
    let (opened, set_opened) = signal::<Vec<Opened>>(Vec::new());
    let (selected, set_selected) = signal(0usize);
    let (filter, set_filter) = signal(String::new());
    let (stats, set_stats) = signal::<Option<(String, Value)>>(None);
    let (progress, set_progress) = signal::<Option<(f64, f64)>>(None);
    // Which long job the progress bar belongs to: "run" or "diff".
    let (busy, set_busy) = signal::<Option<&'static str>>(None);
    let (diff, set_diff) = signal::<Option<(String, String, Value)>>(None);
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
            "diff" => {
                set_progress.set(None);
                set_busy.set(None);
                let names = opened.get_untracked();
                let name = |i: usize| names.get(i).map(|o| o.name.clone()).unwrap_or_default();
                set_diff.set(json().map(|j| (name(0), name(1), j)));
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
                set_busy.set(None);
            }
            "error" => {
                let message = field(&reply, "message").as_string().unwrap_or_default();
                set_progress.set(None);
                set_busy.set(None);
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
        set_diff.set(None);
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
    // Names this page's scratch files in the browser's private file system.
    let session = format!("{:08x}", (js_sys::Math::random() * 4294967295.0) as u32);
    let runs = StoredValue::new(0u32);
    let run = move |_| {
        runs.update_value(|n| *n += 1);
        set_error.set(None);
        set_download.set(None);
        set_notes.set(Vec::new());
        set_progress.set(Some((0.0, 1.0)));
        set_busy.set(Some("run"));
        let text = recipe.get_untracked().to_text();
        send(request(
            "run",
            &files.get_untracked(),
            &[
                ("recipe", JsValue::from_str(&text)),
                ("format", JsValue::from_str(&format.get_untracked())),
                ("session", JsValue::from_str(&session)),
                ("run", JsValue::from(runs.get_value())),
            ],
        ));
    };
    let compare = move |_| {
        set_error.set(None);
        set_diff.set(None);
        set_progress.set(Some((0.0, 1.0)));
        set_busy.set(Some("diff"));
        let both: Vec<File> = files.get_untracked().into_iter().take(2).collect();
        send(request("diff", &both, &[]));
    };
    let cancel = move |_| {
        restart();
        set_progress.set(None);
        set_busy.set(None);
        set_error.set(Some("cancelled".into()));
    };
    let progress_bar = move || {
        progress.get().map(|(done, total)| {
            view! {
                <div class="progress">
                    <progress id="progress" max=total value=done></progress>
                    " " {format!("{} / {}", human(done), human(total))} " "
                    <button id="cancel" on:click=cancel>"Cancel"</button>
                </div>
            }
        })
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
        {move || (files.get().len() >= 2).then(|| view! {
            <section class="compare">
                <button id="compare" on:click=compare disabled=move || busy.get().is_some()>
                    {move || format!("Compare {} → {}", opened.get().first().map(|o| o.name.clone()).unwrap_or_default(),
                        opened.get().get(1).map(|o| o.name.clone()).unwrap_or_default())}
                </button>
                {move || (busy.get() == Some("diff")).then(|| progress_bar())}
            </section>
        })}
        {move || diff.get().map(|(a, b, report)| view! { <DiffView a=a b=b report=report/> })}
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
            {move || (busy.get() == Some("run")).then(|| progress_bar())}
            <ul class="notes">{move || notes.get().into_iter().map(|n| view! { <li>{n}</li> }).collect_view()}</ul>
            {move || download.get().map(|(url, name, bytes)| view! {
                <p><a id="download" href=url download=name.clone()>{format!("Download {name} ({})", human(bytes))}</a></p>
            })}
        </section>
    }
}
