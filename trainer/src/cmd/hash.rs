//! `ldmkit hash FILE...`: AutoV2, AutoV3 (kohya's sshs_model_hash), A1111's legacy hash and
//! SHA-256, streamed with a progress bar for big files.

use super::{open_source, report_error, EXIT_ERROR};
use crate::cli::HashArgs;
use indicatif::{ProgressBar, ProgressStyle};
use ldmkit_core::checkpoint::ContainerInfo;
use ldmkit_core::hash::{hash_source, tensor_data_start, Hashes};
use ldmkit_core::source::SharedSource;
use ldmkit_core::Checkpoint;
use std::path::Path;

/// Files smaller than this hash too fast to need a progress bar.
const PROGRESS_MIN_BYTES: u64 = 200_000_000;

/// Hash one opened file, with a progress bar when it is big; also the `sshs_model_hash` its
/// metadata records, if any.
pub fn hash_file(path: &Path, source: &SharedSource) -> Result<(Hashes, Option<String>), String> {
    // Only a file that reads as safetensors has an AutoV3.
    let ckpt = Checkpoint::open(source.clone()).ok();
    let (start, recorded) = match ckpt.as_ref().map(|c| &c.info) {
        Some(ContainerInfo::Safetensors { metadata, .. }) => (
            tensor_data_start(source.as_ref()),
            metadata.get("sshs_model_hash").cloned(),
        ),
        _ => (None, None),
    };
    let bar = (source.len() >= PROGRESS_MIN_BYTES).then(|| {
        let bar = ProgressBar::new(source.len());
        bar.set_style(
            ProgressStyle::with_template(
                "  hashing {msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .expect("template is valid"),
        );
        bar.set_message(path.display().to_string());
        bar
    });
    let hashes = hash_source(source.as_ref(), start, &mut |done, _| {
        if let Some(b) = &bar {
            b.set_position(done);
        }
        true
    })
    .map_err(|e| e.to_string())?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok((hashes, recorded))
}

/// How the recorded sshs_model_hash compares with the tensor bytes.
pub fn recorded_note(h: &Hashes, recorded: &Option<String>) -> Option<String> {
    let r = recorded.as_ref()?;
    Some(match &h.autov3 {
        Some(v3) if v3.eq_ignore_ascii_case(r.trim()) => {
            "matches the sshs_model_hash in its metadata".to_string()
        }
        _ => format!("its metadata's sshs_model_hash {r} is not the hash of its tensor bytes"),
    })
}

pub fn print_hashes(h: &Hashes, recorded: &Option<String>, indent: &str) {
    println!("{indent}AutoV2   {}", h.autov2);
    match &h.autov3 {
        Some(v3) => {
            println!("{indent}AutoV3   {v3}  (kohya sshs_model_hash: SHA-256 of the tensor bytes)")
        }
        None => println!("{indent}AutoV3   -  (not a safetensors file)"),
    }
    println!("{indent}legacy   {}  (A1111's old 8-digit hash)", h.legacy);
    println!("{indent}SHA-256  {}", h.sha256);
    if let Some(note) = recorded_note(h, recorded) {
        println!("{indent}note     {note}");
    }
}

pub fn run(args: &HashArgs) -> u8 {
    let mut code = 0;
    let mut json = Vec::new();
    for path in &args.files {
        let result = open_source(path).and_then(|s| hash_file(path, &s));
        match result {
            Ok((h, recorded)) => {
                if args.json {
                    let mut v = serde_json::to_value(&h).expect("hashes serialise");
                    v["file"] = serde_json::json!(path.display().to_string());
                    if let Some(r) = &recorded {
                        v["sshs_model_hash"] = serde_json::json!(r);
                    }
                    json.push(v);
                } else {
                    println!("{}", path.display());
                    print_hashes(&h, &recorded, "  ");
                }
            }
            Err(e) => {
                report_error(path, e);
                code = EXIT_ERROR;
            }
        }
    }
    if args.json {
        println!("{}", serde_json::Value::Array(json));
    }
    code
}
