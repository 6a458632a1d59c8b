//! ldmkit in the browser.
//!
//! Two halves of one wasm module: the page ([`app`], Leptos, client-side rendered) and the
//! engine ([`engine`]), which runs ldmkit-core inside a dedicated Web Worker. The worker reads
//! the user's `File`s with synchronous `FileReaderSync` slices, so the same Rust code as the
//! CLI runs unchanged and the page never freezes; nothing is uploaded anywhere. `www/index.html`
//! calls [`start_app`], `www/worker.js` calls [`start_worker`].

pub mod app;
pub mod engine;

use wasm_bindgen::prelude::*;

/// Mount the page.
#[wasm_bindgen]
pub fn start_app() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(app::App);
}

/// Serve engine requests in this worker.
#[wasm_bindgen]
pub fn start_worker() {
    console_error_panic_hook::set_once();
    engine::serve();
}
