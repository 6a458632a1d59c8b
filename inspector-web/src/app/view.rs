//! The page: the App component, which holds the state and routes the engine's replies.

use super::actions::{build_recipe, location_hash, required_format, set_location_hash, ACTIONS};
use super::diff::DiffView;
use super::inputs::{self, input_names, pick, Picked};
use super::stats::Stats;
use super::summary::{Opened, Summary};
use super::worker::{field, request, Engine};
use ldmkit_core::recipe::Recipe;
use ldmkit_core::units::bytes;
use leptos::prelude::*;
use serde_json::Value;
use wasm_bindgen::JsValue;
use web_sys::{File, HtmlInputElement};

#[component]
pub fn App() -> impl IntoView {
    let (picked, set_picked) = signal_local::<Vec<Picked>>(Vec::new());
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
    // Whether the engine worker has loaded its WebAssembly (tests wait for it before timing).
    let (engine_ready, set_engine_ready) = signal(false);
    let (action, set_action) = signal("strip".to_string());
    let (dtype, set_dtype) = signal("f16".to_string());
    let (alpha, set_alpha) = signal(0.5f64);
    let (format, set_format) = signal("safetensors".to_string());
    // Block weights for bake-lora and the block-weighted merges (empty: none).
    let (blocks, set_blocks) = signal(String::new());
    // Inspect requests are `inspect:<generation>:<tab>`; "Clear" starts a new generation, so
    // a late reply for a cleared file is dropped instead of landing on a new tab.
    let generation = StoredValue::new(0u32);
    // The output format of the run in flight (the form may change while it runs).
    let run_format = StoredValue::new(String::new());
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
        let inputs = picked.with(|p| input_names(p).len());
        build_recipe(
            &action.get(),
            &dtype.get(),
            alpha.get(),
            &blocks.get(),
            inputs,
        )
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
            "ready" => set_engine_ready.set(true),
            "report" => {
                if let Some(tab) = inspect_tab(&reply, generation.get_value()) {
                    set_opened.update(|o| {
                        if let Some(entry) = o.get_mut(tab) {
                            entry.report = json();
                        }
                    });
                }
            }
            "diff" => {
                set_progress.set(None);
                set_busy.set(None);
                let names = picked.with_untracked(|p| input_names(p));
                let name = |i: usize| names.get(i).cloned().unwrap_or_default();
                set_diff.set(json().map(|j| (name(0), name(1), j)));
            }
            "hashes" => {
                set_progress.set(None);
                set_busy.set(None);
                let id = field(&reply, "id").as_string().unwrap_or_default();
                let tab = id
                    .strip_prefix("hash:")
                    .and_then(|r| r.split_once(':'))
                    .filter(|(g, _)| g.parse() == Ok(generation.get_value()))
                    .and_then(|(_, t)| t.parse::<usize>().ok());
                if let Some(tab) = tab {
                    set_opened.update(|o| {
                        if let Some(entry) = o.get_mut(tab) {
                            entry.hashes = json();
                        }
                    });
                }
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
                let name = match run_format.get_value().as_str() {
                    "ckpt" => "ldmkit-output.ckpt",
                    "diffusers" => "ldmkit-output-diffusers.zip",
                    _ => "ldmkit-output.safetensors",
                };
                set_download.update(|d| replace_download(d, Some((url, name.to_string(), bytes))));
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
                let id = field(&reply, "id").as_string().unwrap_or_default();
                if id == "run" || id == "diff" || id == "meta" || id.starts_with("hash:") {
                    set_progress.set(None);
                    set_busy.set(None);
                }
                if let Some(tab) = inspect_tab(&reply, generation.get_value()) {
                    // A file that cannot be read: the message belongs to its tab.
                    set_opened.update(|o| {
                        if let Some(entry) = o.get_mut(tab) {
                            entry.error = Some(message.clone());
                        }
                    });
                } else if !id.starts_with("inspect:") {
                    set_error.set(Some(message));
                }
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

    // New picks are added after what is open (a folder and a file can be compared or merged);
    // "Clear" starts over.
    let open_files = move |list: Vec<File>| {
        set_error.set(None);
        set_stats.set(None);
        set_diff.set(None);
        let existing = picked.get_untracked();
        let next_input = existing.last().map_or(0, |p| p.input + 1);
        let new = match pick(list, next_input) {
            Ok(new) => new,
            Err(e) => return set_error.set(Some(e)),
        };
        let first_tab = existing.len();
        set_opened.update(|o| {
            o.extend(new.iter().map(|p| Opened {
                name: p.label.clone(),
                report: None,
                error: None,
                hashes: None,
            }))
        });
        set_selected.set(first_tab);
        for (i, p) in new.iter().enumerate() {
            send(inspect_request(
                &p.file,
                generation.get_value(),
                first_tab + i,
            ));
        }
        set_picked.update(|all| all.extend(new));
    };
    let clear = move |_| {
        generation.update_value(|g| *g += 1);
        set_picked.set(Vec::new());
        set_opened.set(Vec::new());
        set_stats.set(None);
        set_diff.set(None);
        set_error.set(None);
        set_download.update(|d| replace_download(d, None));
    };
    let on_pick = move |ev: leptos::ev::Event| {
        let input: HtmlInputElement = event_target(&ev);
        if let Some(list) = input.files() {
            open_files((0..list.length()).filter_map(|i| list.get(i)).collect());
        }
        // Picking the same file again is a new pick.
        input.set_value("");
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
        run_format.set_value(format.get_untracked());
        set_error.set(None);
        set_download.update(|d| replace_download(d, None));
        set_notes.set(Vec::new());
        set_progress.set(Some((0.0, 1.0)));
        set_busy.set(Some("run"));
        let text = recipe.get_untracked().to_text();
        let (files, mut extra) = inputs::fields(&picked.get_untracked());
        extra.extend([
            ("id", JsValue::from_str("run")),
            ("recipe", JsValue::from_str(&text)),
            ("format", JsValue::from_str(&format.get_untracked())),
            ("session", JsValue::from_str(&session)),
            ("run", JsValue::from(runs.get_value())),
        ]);
        send(request("run", &files, &extra));
    };
    let compare = move |_| {
        set_error.set(None);
        set_diff.set(None);
        set_progress.set(Some((0.0, 1.0)));
        set_busy.set(Some("diff"));
        let both: Vec<Picked> = picked
            .get_untracked()
            .into_iter()
            .filter(|p| p.input < 2)
            .collect();
        let (files, mut extra) = inputs::fields(&both);
        extra.push(("id", JsValue::from_str("diff")));
        send(request("diff", &files, &extra));
    };
    let cancel = move |_| {
        restart();
        set_progress.set(None);
        set_busy.set(None);
        set_error.set(Some("cancelled".into()));
        // The old worker took its queue with it: ask again for summaries still missing.
        let pending: Vec<usize> = opened.with_untracked(|o| {
            o.iter()
                .enumerate()
                .filter(|(_, e)| e.report.is_none() && e.error.is_none())
                .map(|(i, _)| i)
                .collect()
        });
        picked.with_untracked(|p| {
            for tab in pending {
                if let Some(p) = p.get(tab) {
                    send(inspect_request(&p.file, generation.get_value(), tab));
                }
            }
        });
    };
    let progress_bar = move || {
        progress.get().map(|(done, total)| {
            view! {
                <div class="progress">
                    <progress id="progress" max=total value=done></progress>
                    " " {format!("{} / {}", bytes(done as u64), bytes(total as u64))} " "
                    <button id="cancel" on:click=cancel>"Cancel"</button>
                </div>
            }
        })
    };
    // The selected tab's content: the summary is rebuilt only when it changes (another tab's
    // reply would otherwise collapse this tab's key tree).
    let current = Memo::new(move |_| opened.with(|o| o.get(selected.get()).cloned()));
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
            {move || engine_ready.get().then(|| view! { <span id="engine-ready" hidden=true></span> })}
            <h1>"ldmkit"</h1>
            <p class="tagline">"Open, inspect and rewrite Stable Diffusion checkpoints in your browser. Nothing is uploaded; pickles are never executed."</p>
        </header>
        <section class="drop" on:dragover=|ev: leptos::ev::DragEvent| ev.prevent_default() on:drop=on_drop>
            <label>"Open checkpoints (.ckpt .pt .pth .bin .safetensors), or drop them here: "
                <input id="file" type="file" multiple accept=".ckpt,.pt,.pth,.bin,.safetensors" on:change=on_pick/>
            </label>
            <label class="folder">" or a diffusers folder: "
                <input id="folder" type="file" prop:webkitdirectory=true on:change=on_pick/>
            </label>
            {move || picked.with(|p| !p.is_empty()).then(|| view! { <button id="clear" on:click=clear>"Clear"</button> })}
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
        {move || current.get().map(|o| view! {
            <Summary opened=o filter=filter set_filter=set_filter on_tensor=move |key: String| {
                let f = picked.get_untracked().get(selected.get_untracked()).map(|p| p.file.clone());
                if let Some(f) = f {
                    send(request("stats", &[f], &[("id", JsValue::from_str("stats")), ("key", JsValue::from_str(&key))]));
                }
            } on_hash=move || {
                let tab = selected.get_untracked();
                let f = picked.get_untracked().get(tab).map(|p| p.file.clone());
                if let Some(f) = f {
                    set_progress.set(Some((0.0, 1.0)));
                    set_busy.set(Some("hash"));
                    let id = format!("hash:{}:{tab}", generation.get_value());
                    send(request("hash", &[f], &[("id", JsValue::from_str(&id))]));
                }
            } on_meta=move |json: String| {
                let f = picked.get_untracked().get(selected.get_untracked()).map(|p| p.file.clone());
                if let Some(f) = f {
                    run_format.set_value("safetensors".into());
                    set_error.set(None);
                    set_download.update(|d| replace_download(d, None));
                    set_busy.set(Some("run"));
                    send(request("meta", &[f], &[("id", JsValue::from_str("meta")), ("metadata", JsValue::from_str(&json))]));
                }
            }/>
        })}
        {move || (busy.get() == Some("hash")).then(progress_bar)}
        {move || stats.get().map(|(key, s)| view! { <Stats key=key stats=s/> })}
        {move || (picked.with(|p| input_names(p).len()) >= 2).then(|| view! {
            <section class="compare">
                <button id="compare" on:click=compare disabled=move || busy.get().is_some()>
                    {move || picked.with(|p| { let n = input_names(p); format!("Compare {} → {}", n[0], n[1]) })}
                </button>
                {move || (busy.get() == Some("diff")).then(progress_bar)}
            </section>
        })}
        {move || diff.get().map(|(a, b, report)| view! { <DiffView a=a b=b report=report/> })}
        <section class="actions">
            <h2>"Rewrite"</h2>
            <label>"Action "
                <select id="action" on:change=move |ev| {
                    set_from_link.set(false);
                    let a = event_target_value(&ev);
                    match required_format(&a) {
                        Some(f) => set_format.set(f.to_string()),
                        None if format.get_untracked() == "diffusers" => set_format.set("safetensors".into()),
                        None => {}
                    }
                    set_action.set(a);
                }>
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
            <label>" α / ratio "
                <input id="alpha" type="number" step="0.05" min="0" max="1" prop:value=move || alpha.get().to_string()
                    on:input=move |ev| { set_from_link.set(false); if let Ok(a) = event_target_value(&ev).parse() { set_alpha.set(a) } }/>
            </label>
            <label>" blocks "
                <input id="blocks" type="text" size="24" placeholder="e.g. OUTS or 26 weights" prop:value=move || blocks.get()
                    on:input=move |ev| { set_from_link.set(false); set_blocks.set(event_target_value(&ev)) }/>
            </label>
            <label>" Output "
                <select id="format" on:change=move |ev| set_format.set(event_target_value(&ev))>
                    <option value="safetensors" selected=move || format.get() == "safetensors">".safetensors"</option>
                    <option value="ckpt" selected=move || format.get() == "ckpt">".ckpt"</option>
                    <option value="diffusers" selected=move || format.get() == "diffusers">"diffusers folder (.zip)"</option>
                </select>
            </label>
            <pre id="recipe" class="recipe">{move || recipe.get().to_text()}</pre>
            <button id="copy-link" on:click=copy_link>"Copy link"</button>
            <button id="run" on:click=run disabled=move || picked.with(|p| p.is_empty()) || progress.get().is_some()>"Run"</button>
            {move || (busy.get() == Some("run")).then(progress_bar)}
            <ul class="notes">{move || notes.get().into_iter().map(|n| view! { <li>{n}</li> }).collect_view()}</ul>
            {move || download.get().map(|(url, name, size)| view! {
                <p><a id="download" href=url download=name.clone()>{format!("Download {name} ({})", bytes(size as u64))}</a></p>
            })}
        </section>
    }
}

/// An inspect request for `file`, shown in tab `tab` of generation `generation`.
fn inspect_request(file: &File, generation: u32, tab: usize) -> JsValue {
    let id = JsValue::from_str(&format!("inspect:{generation}:{tab}"));
    request("inspect", std::slice::from_ref(file), &[("id", id)])
}

/// The tab an inspect reply belongs to, if it is of the current generation.
fn inspect_tab(reply: &JsValue, generation: u32) -> Option<usize> {
    let id = field(reply, "id").as_string()?;
    let mut parts = id.strip_prefix("inspect:")?.split(':');
    let g: u32 = parts.next()?.parse().ok()?;
    let tab = parts.next()?.parse().ok()?;
    (g == generation).then_some(tab)
}

/// Set the download link, releasing the old one's object URL (and the Blob it keeps alive).
fn replace_download(slot: &mut Option<(String, String, f64)>, new: Option<(String, String, f64)>) {
    if let Some((old, _, _)) = slot.take() {
        let _ = web_sys::Url::revoke_object_url(&old);
    }
    *slot = new;
}
