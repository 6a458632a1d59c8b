//! The page's handle on the engine worker: start it, send requests, route replies.

use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{MessageEvent, Worker, WorkerOptions, WorkerType};

/// A running engine worker (replaced wholesale to cancel a run).
pub struct Engine {
    worker: Worker,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
}

impl Engine {
    /// Start `worker.js` as a module worker; every reply goes to `on_reply`.
    pub fn start(on_reply: impl Fn(JsValue) + 'static) -> Result<Engine, JsValue> {
        let options = WorkerOptions::new();
        options.set_type(WorkerType::Module);
        let worker = Worker::new_with_options("./worker.js", &options)?;
        let on_message =
            Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| on_reply(ev.data()));
        worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        Ok(Engine {
            worker,
            _on_message: on_message,
        })
    }

    pub fn send(&self, request: &JsValue) {
        let _ = self.worker.post_message(request);
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.worker.terminate();
    }
}

/// Read a field of a reply.
pub fn field(value: &JsValue, key: &str) -> JsValue {
    js_sys::Reflect::get(value, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

/// Build a request object.
pub fn request(op: &str, files: &[web_sys::File], extra: &[(&str, JsValue)]) -> JsValue {
    let o = js_sys::Object::new();
    let set = |k: &str, v: &JsValue| {
        let _ = js_sys::Reflect::set(&o, &JsValue::from_str(k), v);
    };
    set("op", &JsValue::from_str(op));
    let list: js_sys::Array = files.iter().map(JsValue::from).collect();
    set("files", &list.into());
    for (k, v) in extra {
        set(k, v);
    }
    o.into()
}
