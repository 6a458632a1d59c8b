//! Scratch space on disk for computed output bytes: a file in the origin private file system
//! (OPFS), written through a synchronous access handle from the worker.
//!
//! Why: a 10 GB → 2 GB fp16 merge computes 2 GB. Kept as in-memory Blob parts those bytes
//! may stay in the renderer's memory (Chromium pages blobs to disk only in some profiles);
//! written here they go to disk as they are made, and the download is a `File.slice()` of
//! the scratch file. Where OPFS is missing (some private windows) the sink falls back to
//! Blob parts.
//!
//! Files are named `ldmkit-scratch-<page session>-<n>`. A page's later run, or a fresh worker
//! after a cancel, removes that page's earlier files; files of other sessions are removed once
//! a day old (another open tab may still be offering one as a download).

use js_sys::{Object, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    File, FileSystemDirectoryHandle, FileSystemFileHandle, FileSystemGetFileOptions,
    FileSystemReadWriteOptions, FileSystemSyncAccessHandle, WorkerGlobalScope,
};

const PREFIX: &str = "ldmkit-scratch-";
const STALE_MS: f64 = 24.0 * 3600.0 * 1000.0;

async fn root() -> Result<FileSystemDirectoryHandle, JsValue> {
    let scope: WorkerGlobalScope = js_sys::global().unchecked_into();
    let dir = JsFuture::from(scope.navigator().storage().get_directory()).await?;
    Ok(dir.unchecked_into())
}

/// One scratch file being appended to.
pub struct Scratch {
    file: FileSystemFileHandle,
    handle: FileSystemSyncAccessHandle,
    len: u64,
}

impl Scratch {
    /// Create `ldmkit-scratch-<session>-<run>` (after removing the session's older files).
    pub async fn create(session: &str, run: u64) -> Result<Scratch, JsValue> {
        let dir = root().await?;
        sweep(&dir, session).await;
        let options = FileSystemGetFileOptions::new();
        options.set_create(true);
        let name = format!("{PREFIX}{session}-{run}");
        let file: FileSystemFileHandle =
            JsFuture::from(dir.get_file_handle_with_options(&name, &options))
                .await?
                .unchecked_into();
        let handle: FileSystemSyncAccessHandle = JsFuture::from(file.create_sync_access_handle())
            .await?
            .unchecked_into();
        handle.truncate_with_f64(0.0)?;
        Ok(Scratch {
            file,
            handle,
            len: 0,
        })
    }

    /// Append `bytes`; returns the offset they were written at.
    pub fn append(&mut self, bytes: &[u8]) -> Result<u64, JsValue> {
        let at = self.len;
        let options = FileSystemReadWriteOptions::new();
        let mut done = 0usize;
        while done < bytes.len() {
            options.set_at((at + done as u64) as f64);
            let n = self
                .handle
                .write_with_u8_array_and_options(&bytes[done..], &options)?;
            if n <= 0.0 {
                return Err(JsValue::from_str(
                    "the browser's file system refused a write (disk full?)",
                ));
            }
            done += n as usize;
        }
        self.len += bytes.len() as u64;
        Ok(at)
    }

    /// Close the handle and return the file, ready to be sliced into a download.
    pub async fn finish(self) -> Result<File, JsValue> {
        self.handle.flush()?;
        self.handle.close();
        let file = self.file.clone();
        drop(self);
        Ok(JsFuture::from(file.get_file()).await?.unchecked_into())
    }
}

impl Drop for Scratch {
    /// A run that fails mid-way releases the file's lock, so the next run's sweep removes it.
    fn drop(&mut self) {
        self.handle.close();
    }
}

/// Remove this session's scratch files, and other sessions' once they are a day old.
/// Errors are ignored: a file another tab holds open simply stays.
async fn sweep(dir: &FileSystemDirectoryHandle, session: &str) {
    let Ok(names) = entry_names(dir).await else {
        return;
    };
    let now = js_sys::Date::now();
    for name in names {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let ours = rest.starts_with(&format!("{session}-"));
        if !ours {
            let Ok(handle) = JsFuture::from(dir.get_file_handle(&name)).await else {
                continue;
            };
            let handle: FileSystemFileHandle = handle.unchecked_into();
            let Ok(file) = JsFuture::from(handle.get_file()).await else {
                continue;
            };
            let file: File = file.unchecked_into();
            if now - file.last_modified() < STALE_MS {
                continue;
            }
        }
        let _ = JsFuture::from(dir.remove_entry(&name)).await;
    }
}

/// The names in `dir` (its async `keys()` iterator, drained).
async fn entry_names(dir: &FileSystemDirectoryHandle) -> Result<Vec<String>, JsValue> {
    let iter: Object = dir.keys().unchecked_into();
    let next = Reflect::get(&iter, &JsValue::from_str("next"))?.dyn_into::<js_sys::Function>()?;
    let mut names = Vec::new();
    loop {
        let step = JsFuture::from(next.call0(&iter)?.dyn_into::<Promise>()?).await?;
        if Reflect::get(&step, &JsValue::from_str("done"))?.is_truthy() {
            return Ok(names);
        }
        if let Some(name) = Reflect::get(&step, &JsValue::from_str("value"))?.as_string() {
            names.push(name);
        }
    }
}
