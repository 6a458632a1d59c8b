//! `ldmkit scan FILE...`.

use super::{open_source, report_error, EXIT_ERROR};
use crate::cli::ScanArgs;
use ldmkit_core::safety::Verdict;
use ldmkit_core::scan::scan;

pub fn run(args: &ScanArgs) -> u8 {
    let mut exit = 0u8;
    let mut json = Vec::new();
    for path in &args.files {
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
        } else if worst != Verdict::Allowed && exit == 0 {
            exit = 1;
        }
        if args.json {
            json.push(serde_json::json!({
                "file": path.display().to_string(),
                "format": report.format.map(|f| f.name()),
                "verdict": worst,
                "globals": report.globals,
                "error": report.error.as_ref().map(|e| e.to_string()),
            }));
            continue;
        }
        let n = |v: Verdict| report.globals.iter().filter(|g| g.verdict == v).count();
        let headline = match worst {
            _ if report.error.is_some() && report.globals.is_empty() => continue,
            Verdict::Allowed if report.error.is_some() => {
                "unreadable (globals imported before the error are all allowed)".to_string()
            }
            _ if report.globals.is_empty() => "safe (no globals imported)".to_string(),
            Verdict::Dangerous => format!(
                "DANGEROUS: {} globals that run code when loaded",
                n(Verdict::Dangerous)
            ),
            Verdict::Unknown => format!(
                "{} globals outside torch's weights_only allowlist",
                n(Verdict::Unknown)
            ),
            Verdict::Allowed => {
                "safe (every global is one torch's weights_only loader accepts)".to_string()
            }
        };
        println!("{}: {headline}", path.display());
        for g in &report.globals {
            println!("  {:<10}{} ({}x)", g.verdict.label(), g.name, g.count);
        }
    }
    if args.json {
        println!("{}", serde_json::Value::Array(json));
    }
    exit
}
