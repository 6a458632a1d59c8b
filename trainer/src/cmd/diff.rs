//! `ldmkit diff A B`: what changed between two checkpoints, drawn per component and block.

use super::inputs::open_input;
use super::{report_error, EXIT_ERROR};
use crate::cli::DiffArgs;
use crate::format::bar;
use indicatif::ProgressBar;
use ldmkit_core::analysis::diff::{diff, DiffReport, GroupChange};
use ldmkit_core::ops::Inputs;
use ldmkit_core::plan::ElementReader;

fn compute(args: &DiffArgs) -> Result<DiffReport, (std::path::PathBuf, String)> {
    let mut inputs = Inputs::new();
    let a = open_input(&args.a, &mut inputs)?;
    let b = open_input(&args.b, &mut inputs)?;
    let wa = inputs
        .working(&a)
        .map_err(|e| (args.a.clone(), e.to_string()))?;
    let wb = inputs
        .working(&b)
        .map_err(|e| (args.b.clone(), e.to_string()))?;
    let sources = inputs.sources();
    let mut reader = ElementReader::new(&sources);
    let bar = if args.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(wa.state_dict.len() as u64)
    };
    let r = diff(&mut reader, &wa, &wb, &mut |done, _| {
        bar.set_position(done as u64)
    })
    .map_err(|e| (args.a.clone(), e.to_string()));
    bar.finish_and_clear();
    r
}

fn groups(title: &str, groups: &[GroupChange]) {
    if groups.is_empty() {
        return;
    }
    println!("{title} (relative change |A-B|/|A|)");
    let peak = groups
        .iter()
        .map(|g| g.relative)
        .filter(|r| r.is_finite())
        .fold(0.0f64, f64::max);
    let width = groups.iter().map(|g| g.name.len()).max().unwrap_or(0);
    for g in groups {
        let fill = if peak > 0.0 {
            (g.relative / peak).min(1.0)
        } else {
            0.0
        };
        println!(
            "  {:<width$} {} {:>10.3e}  {}/{} changed",
            g.name,
            bar(fill, 30),
            g.relative,
            g.changed,
            g.tensors
        );
    }
}

pub fn run(args: &DiffArgs) -> u8 {
    let report = match compute(args) {
        Ok(r) => r,
        Err((path, e)) => {
            report_error(&path, e);
            return EXIT_ERROR;
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).expect("report serialises")
        );
        return 0;
    }
    let list = |title: &str, keys: &[String]| {
        if !keys.is_empty() {
            println!("{title}: {}", keys.len());
            for k in keys.iter().take(10) {
                println!("  {k}");
            }
            if keys.len() > 10 {
                println!("  ... {} more", keys.len() - 10);
            }
        }
    };
    list(&format!("only in {}", args.a.display()), &report.only_in_a);
    list(&format!("only in {}", args.b.display()), &report.only_in_b);
    list("shape or dtype changed", &report.mismatched);
    println!(
        "{} tensors compared, {} identical",
        report.tensors.len(),
        report.identical
    );
    groups("by component", &report.components);
    groups("by UNet block", &report.unet_blocks);
    let mut top: Vec<_> = report.tensors.iter().filter(|t| t.relative > 0.0).collect();
    top.sort_by(|a, b| b.relative.total_cmp(&a.relative));
    if !top.is_empty() {
        println!("most changed tensors");
        for t in top.iter().take(10) {
            println!("  {:>10.3e}  {}", t.relative, t.name);
        }
    }
    0
}
