//! `ldmkit meta FILE [--set K=V]... [--delete K]... [-o OUT]`: show or edit a safetensors
//! file's metadata. The edit rewrites the header and copies the tensor bytes as one range
//! (`write::safetensors::replace_metadata`), through the same temporary-then-rename writer
//! as every rewrite.

use super::rewrite::write_output;
use super::{open_source, report_error, EXIT_ERROR};
use crate::cli::MetaArgs;
use ldmkit_core::checkpoint::ContainerInfo;
use ldmkit_core::plan::Output;
use ldmkit_core::Checkpoint;
use std::collections::BTreeMap;

/// The edits asked for, in order: `(key, Some(value))` sets, `(key, None)` deletes.
fn edits(args: &MetaArgs) -> Result<Vec<(String, Option<String>)>, String> {
    let mut out = Vec::new();
    for (key, value) in [
        ("modelspec.title", &args.title),
        ("modelspec.trigger_phrase", &args.trigger),
        ("modelspec.description", &args.description),
    ] {
        if let Some(v) = value {
            out.push((key.to_string(), Some(v.clone())));
        }
    }
    for s in &args.set {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| format!("--set takes KEY=VALUE, not '{s}'"))?;
        if k.is_empty() {
            return Err(format!("--set '{s}': the key is empty"));
        }
        out.push((k.to_string(), Some(v.to_string())));
    }
    for k in &args.delete {
        out.push((k.clone(), None));
    }
    Ok(out)
}

pub fn run(args: &MetaArgs) -> u8 {
    let fail = |path: &std::path::Path, m: &dyn std::fmt::Display| {
        report_error(path, m);
        EXIT_ERROR
    };
    let edits = match edits(args) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_ERROR;
        }
    };
    let source = match open_source(&args.file) {
        Ok(s) => s,
        Err(e) => return fail(&args.file, &e),
    };
    let metadata = match Checkpoint::open(source.clone()).map(|c| c.info) {
        Ok(ContainerInfo::Safetensors { metadata, .. }) => metadata,
        Ok(_) => return fail(
            &args.file,
            &"is not a safetensors file: only safetensors files carry metadata (convert it first)",
        ),
        Err(e) => return fail(&args.file, &e),
    };
    let Some(out) = &args.output else {
        if !edits.is_empty() {
            eprintln!("error: an edit needs -o OUT (the input is never changed in place)");
            return EXIT_ERROR;
        }
        if args.json {
            println!(
                "{}",
                serde_json::to_value(&metadata).expect("strings serialise")
            );
        } else {
            println!("{}", args.file.display());
            for (k, v) in &metadata {
                println!("  {k} = {v}");
            }
        }
        return 0;
    };
    if std::fs::canonicalize(out).ok() == std::fs::canonicalize(&args.file).ok() {
        return fail(out, &"refusing to overwrite the input");
    }
    let mut next: BTreeMap<String, String> = metadata.clone();
    let mut changed = Vec::new();
    for (k, v) in &edits {
        match v {
            Some(v) => {
                next.insert(k.clone(), v.clone());
                changed.push(format!("set {k}"));
            }
            None => {
                if next.remove(k).is_none() {
                    eprintln!("warning: {k} is not in the metadata");
                }
                changed.push(format!("deleted {k}"));
            }
        }
    }
    let plan = match ldmkit_core::write::safetensors::replace_metadata(source.as_ref(), 0, &next) {
        Ok(p) => p,
        Err(e) => return fail(&args.file, &e),
    };
    match write_output(&Output::File(plan), &[source], out) {
        Ok(report) => {
            eprintln!(
                "wrote {} ({} bytes): {}",
                out.display(),
                report.bytes_written,
                if changed.is_empty() {
                    "metadata unchanged".into()
                } else {
                    changed.join(", ")
                }
            );
            eprintln!(
                "  hashes: AutoV2 and the legacy hash change (the header is new); AutoV3 / sshs_model_hash does not (the tensor bytes are copied as they are)"
            );
            0
        }
        Err(code) => code,
    }
}
