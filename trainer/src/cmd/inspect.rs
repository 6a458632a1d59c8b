//! `ldmkit inspect FILE [--json] [--filter GLOB]`.

use super::{open_source, report_error, EXIT_ERROR};
use crate::cli::InspectArgs;
use crate::format::{bar, bytes, count};
use ldmkit_core::checkpoint::ContainerInfo;
use ldmkit_core::report::{Report, TensorEntry};
use ldmkit_core::safety::{Verdict, TRAINING_EXTENSION_NAME};
use ldmkit_core::scan::scan;
use ldmkit_core::Checkpoint;

pub fn run(args: &InspectArgs) -> u8 {
    let matcher = match args.filter.as_deref().or(args.all.then_some("*")) {
        Some(glob) => match globset::Glob::new(glob) {
            Ok(g) => Some(g.compile_matcher()),
            Err(e) => {
                eprintln!("error: --filter: {e}");
                return EXIT_ERROR;
            }
        },
        None => None,
    };
    let (report, source) = match open_source(&args.file).and_then(|source| {
        let ckpt = Checkpoint::open(source.clone())
            .map_err(|e| with_refused_globals(e.to_string(), source.clone()))?;
        Report::new(&ckpt)
            .map(|r| (r, source))
            .map_err(|e| e.to_string())
    }) {
        Ok(r) => r,
        Err(message) => {
            report_error(&args.file, message);
            return EXIT_ERROR;
        }
    };
    // A file that looks like an adapter but does not hold together is refused in one line.
    if let Some(e) = &report.adapter_error {
        report_error(&args.file, e);
        return EXIT_ERROR;
    }
    let hashes = if args.hash {
        match super::hash::hash_file(&args.file, &source) {
            Ok(h) => Some(h),
            Err(e) => {
                report_error(&args.file, e);
                return EXIT_ERROR;
            }
        }
    } else {
        None
    };
    let selected: Vec<&TensorEntry> = report
        .tensors
        .iter()
        .filter(|t| matcher.as_ref().is_none_or(|m| m.is_match(&t.name)))
        .collect();
    if args.json {
        let mut value = serde_json::to_value(&report).expect("report serialises");
        value["file"] = serde_json::json!(args.file.display().to_string());
        if matcher.is_some() {
            value["tensors"] = serde_json::to_value(&selected).expect("tensors serialise");
        }
        if let Some((h, _)) = &hashes {
            value["hashes"] = serde_json::to_value(h).expect("hashes serialise");
        }
        println!("{value}");
    } else {
        print_summary(&args.file.display().to_string(), &report, args.modules);
        if let Some((h, recorded)) = &hashes {
            println!();
            println!("  hashes");
            super::hash::print_hashes(h, recorded, "    ");
        }
        if matcher.is_some() {
            print_tensors(&selected, report.tensors.len());
        }
    }
    0
}

/// A file that fails to read may still import globals (a payload before the break); say so,
/// since torch.load would have imported and called them.
fn with_refused_globals(message: String, source: ldmkit_core::source::SharedSource) -> String {
    if message.starts_with("a bare pickle") {
        return message; // already names them
    }
    let refused: Vec<String> = scan(source)
        .globals
        .into_iter()
        .filter(|g| g.verdict == Verdict::NotAllowed)
        .map(|g| match &g.why {
            Some(why) => format!("{} ({why})", g.located()),
            None => g.located(),
        })
        .collect();
    if refused.is_empty() {
        message
    } else {
        format!(
            "{message}; it imports globals torch's weights_only loader refuses, which torch.load/pickle would run (not run here): {}",
            refused.join(", ")
        )
    }
}

fn print_summary(file: &str, r: &Report, list_modules: bool) {
    println!("{file}");
    let container = match &r.metadata.container {
        ContainerInfo::TorchZip {
            prefix,
            pickle_protocol,
            entries,
            deflated,
            byteorder,
            ..
        } => format!(
            "torch zip (folder '{prefix}', pickle protocol {pickle_protocol}, {entries} entries{}{})",
            if *deflated { ", compressed: not mmap-able" } else { "" },
            if byteorder == "big" { ", big-endian" } else { "" }
        ),
        ContainerInfo::TorchLegacy {
            pickle_protocol,
            storages,
            ..
        } => format!("legacy torch (pre-1.6 stacked pickles, protocol {pickle_protocol}, {storages} storages)"),
        ContainerInfo::TorchTar {
            pickle_protocol,
            storages,
        } => format!("PyTorch 0.1 tar format (pickle protocol {pickle_protocol}, {storages} storages)"),
        ContainerInfo::Safetensors { header_len, metadata } => {
            format!("safetensors ({} header, {} metadata keys)", bytes(*header_len), metadata.len())
        }
    };
    println!("  format        {container}");
    println!(
        "  size          {} ({} bytes)",
        bytes(r.file_size),
        r.file_size
    );
    let a = &r.architecture_detail;
    if r.adapter.is_none() {
        println!(
            "  architecture  {}  [{}; {}]",
            a.display(),
            r.architecture,
            a.evidence
        );
    }
    let s = &r.metadata.storage;
    println!(
        "  tensors       {} tensors, {} parameters, {} in {} storages{}",
        r.totals.tensors,
        count(r.totals.params),
        bytes(s.storage_bytes),
        s.storages,
        if s.shared_tensors > 0 {
            format!(" ({} tensors share storage)", s.shared_tensors)
        } else {
            String::new()
        }
    );

    println!();
    if let Some(adapter) = &r.adapter {
        super::adapter_view::print(adapter, list_modules);
        println!();
    }
    if r.adapter.is_none() {
        println!(
            "  {:<16}{:>8}{:>10}{:>12}",
            "component", "tensors", "params", "size"
        );
    }
    let total = r.totals.bytes.max(1) as f64;
    for (c, t) in r.components.iter().filter(|_| r.adapter.is_none()) {
        let share = t.bytes as f64 / total;
        println!(
            "  {:<16}{:>8}{:>10}{:>12}  {} {:>3.0}%",
            c.name(),
            t.tensors,
            count(t.params),
            bytes(t.bytes),
            bar(share, 24),
            share * 100.0
        );
    }
    if r.adapter.is_none() {
        println!();
    }
    println!(
        "  {:<16}{:>8}{:>10}{:>12}",
        "dtype", "tensors", "params", "size"
    );
    for (d, t) in &r.dtypes {
        println!(
            "  {:<16}{:>8}{:>10}{:>12}",
            d,
            t.tensors,
            count(t.params),
            bytes(t.bytes)
        );
    }

    if let Some(l) = &r.metadata.lightning {
        println!();
        let opt = |v: Option<i64>| v.map_or("?".to_string(), |v| v.to_string());
        println!(
            "  lightning     epoch {}, global step {}, pytorch-lightning {}",
            opt(l.epoch),
            opt(l.global_step),
            l.version.as_deref().unwrap_or("?")
        );
        if l.extras.is_empty() {
            println!("                weights only (no training state)");
        } else {
            println!("                extras: {}", l.extras.join(", "));
        }
        if !l.callbacks.is_empty() {
            println!("                callbacks: {}", l.callbacks.join(", "));
        }
    }
    if let ContainerInfo::Safetensors { metadata, .. } = &r.metadata.container {
        // An adapter's training metadata is shown read above; `meta FILE` prints it raw.
        if !metadata.is_empty() && r.adapter.is_none() {
            println!();
            println!("  metadata");
            for (k, v) in metadata {
                let v: String = v.chars().take(100).collect();
                println!("    {k} = {v}");
            }
        }
    }

    println!();
    let refused = r
        .globals
        .iter()
        .filter(|g| g.verdict != Verdict::Allowed)
        .count();
    match r.worst_verdict() {
        _ if r.globals.is_empty() && r.polyglot.is_none() => {
            println!("  safety        no pickle: nothing is executed when this file is loaded")
        }
        Verdict::Allowed => println!(
            "  safety        allowed: all {} globals are ones torch.load(weights_only=True) accepts",
            r.globals.len()
        ),
        Verdict::Training => println!(
            "  safety        training state: {refused} globals outside torch's weights_only allowlist, all in the {TRAINING_EXTENSION_NAME} extension (ldmkit never runs them)"
        ),
        Verdict::NotAllowed => println!(
            "  safety        NOT ALLOWED: torch.load(weights_only=True) refuses {refused} of its globals; loading it with torch.load/pickle would import and call them (ldmkit did not)"
        ),
    }
    if let Some(note) = &r.polyglot {
        println!("    {:<12} {note}", Verdict::NotAllowed.label());
    }
    for g in &r.globals {
        println!("    {}", super::scan::global_line(g));
    }
}

fn print_tensors(selected: &[&TensorEntry], total: usize) {
    println!();
    println!("  {} of {} tensors match", selected.len(), total);
    let width = selected
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(0)
        .min(90);
    for t in selected {
        let shape: Vec<String> = t.shape.iter().map(u64::to_string).collect();
        println!(
            "  {:<width$}  {:<9} [{}]  {}",
            t.name,
            t.dtype,
            shape.join(", "),
            bytes(t.bytes)
        );
    }
}
