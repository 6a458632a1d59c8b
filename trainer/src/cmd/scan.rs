//! `ldmkit scan FILE...`.

use super::{open_source, report_error, EXIT_ERROR};
use crate::cli::ScanArgs;
use ldmkit_core::report::GlobalEntry;
use ldmkit_core::safety::{Verdict, TRAINING_EXTENSION_NAME};
use ldmkit_core::scan::{scan, ScanReport};

pub fn run(args: &ScanArgs) -> u8 {
    let mut exit = 0u8;
    let mut json = Vec::new();
    for target in super::scan_dir::expand(&args.files) {
        let Some(path) = super::scan_dir::take(target, args.json, &mut json, &mut exit) else {
            continue;
        };
        let path = &path;
        let source = match open_source(path) {
            Ok(s) => s,
            Err(message) => {
                report_error(path, message);
                exit = EXIT_ERROR;
                continue;
            }
        };
        let report = scan(source);
        let worst = report.worst();
        if let Some(e) = &report.error {
            report_error(path, e);
            exit = EXIT_ERROR;
        } else if !worst.passes(args.training) && exit == 0 {
            exit = 1;
        }
        if args.json {
            json.push(serde_json::json!({
                "file": path.display().to_string(),
                "format": report.format.map(|f| f.name()),
                "verdict": worst,
                "polyglot": report.polyglot,
                "globals": report.globals,
                "error": report.error.as_ref().map(|e| e.to_string()),
            }));
            continue;
        }
        if report.error.is_some() && report.globals.is_empty() {
            continue;
        }
        println!("{}: {}", path.display(), headline(&report));
        if let Some(note) = &report.polyglot {
            println!("  {:<12} {note}", Verdict::NotAllowed.label());
        }
        for g in &report.globals {
            println!("  {}", global_line(g));
        }
    }
    if args.json {
        println!("{}", serde_json::Value::Array(json));
    }
    exit
}

/// One line for a scan: what the verdict means for loading the file.
fn headline(report: &ScanReport) -> String {
    let n = |v: Verdict| report.globals.iter().filter(|g| g.verdict == v).count();
    let known = report
        .globals
        .iter()
        .filter(|g| g.verdict == Verdict::NotAllowed && g.why.is_some())
        .count();
    match report.worst() {
        Verdict::NotAllowed if report.polyglot.is_some() => {
            "NOT ALLOWED: a polyglot (safetensors and a pickle torch.load unpickles)".to_string()
        }
        Verdict::NotAllowed => {
            let mut line = format!(
                "NOT ALLOWED: {} global(s) torch.load(weights_only=True) refuses",
                n(Verdict::NotAllowed) + n(Verdict::Training)
            );
            if known > 0 {
                line += &format!(
                    ", {known} known to run code or load data when Python loads the file"
                );
            }
            line + " (ldmkit never runs them)"
        }
        Verdict::Training => format!(
            "training checkpoint: {} global(s) outside torch's weights_only allowlist, all in the {} extension",
            n(Verdict::Training),
            TRAINING_EXTENSION_NAME
        ),
        Verdict::Allowed if report.error.is_some() => {
            "unreadable (the globals imported before the error are all allowed)".to_string()
        }
        Verdict::Allowed if report.globals.is_empty() => {
            "allowed (no globals imported)".to_string()
        }
        Verdict::Allowed => {
            "allowed (every global is one torch.load(weights_only=True) accepts)".to_string()
        }
    }
}

/// `not allowed  state_dict/x → nested pickle → posix.system (1x): runs shell commands`.
pub fn global_line(g: &GlobalEntry) -> String {
    let mut line = format!("{:<12} {} ({}x)", g.verdict.label(), g.located(), g.count);
    if let Some(w) = &g.written {
        line += &format!(" [written {w}]");
    }
    if let Some(why) = &g.why {
        line += &format!(": {why}");
    }
    if let Some(by) = &g.computed_by {
        line += &format!(" (name built by {by})");
    }
    line
}
