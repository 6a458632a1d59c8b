//! Running a recipe from the command line: open inputs, run, write through a temporary file
//! with a progress bar, rename on success. Every rewrite command ends here.
//!
//! Ctrl-C, SIGTERM and SIGHUP (ctrlc's `termination` feature) all cancel between chunks, so
//! the temporary is removed on the way out; an error of the output is said as "writing
//! failed", never as a read error of an input.

use super::inputs::{open_input, payload_warnings};
use super::{report_error, EXIT_ERROR};
use crate::cli::OutputArgs;
use crate::format::bytes;
use indicatif::{ProgressBar, ProgressStyle};
use ldmkit_core::ops::{Inputs, OutputPolicy};
use ldmkit_core::plan::{execute, ExecReport, FileSink, FolderSink, Output, Plan};
use ldmkit_core::recipe::{self, OutputFormat, Recipe};
use ldmkit_core::source::SharedSource;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Exit code after Ctrl-C (128 + SIGINT, as shells report it), also used for SIGTERM and
/// SIGHUP: the handler cannot tell them apart.
const EXIT_CANCELLED: u8 = 130;
/// Outputs smaller than this finish too fast to need a progress bar.
const PROGRESS_MIN_BYTES: u64 = 200_000_000;

/// What OUT's name says the format is.
fn output_format(out: &Path) -> Result<OutputFormat, String> {
    let ext = out
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    match ext.as_deref() {
        Some("safetensors") => Ok(OutputFormat::Safetensors),
        Some("ckpt" | "pt" | "pth" | "bin") => Ok(OutputFormat::Torch),
        None => Ok(OutputFormat::DiffusersFolder),
        Some(other) => Err(format!(
            "unknown output type '.{other}' (use .safetensors, .ckpt, .pt, or a folder name for diffusers)"
        )),
    }
}

/// Whether writing `out` would replace one of the inputs (or a file inside an input folder).
fn overwrites_input(out: &Path, inputs: &[PathBuf]) -> Option<PathBuf> {
    let out = std::fs::canonicalize(out).ok()?;
    inputs.iter().find_map(|i| {
        let i = std::fs::canonicalize(i).ok()?;
        (out == i || out.starts_with(&i) || i.starts_with(&out)).then_some(i)
    })
}

/// Print the recipe's text and link.
pub fn print_recipe(recipe: &Recipe) -> u8 {
    print!("{}", recipe.to_text());
    println!(
        "# link: {}",
        recipe::to_url(recipe, recipe::DEFAULT_APP_URL)
    );
    0
}

/// Run `recipe` on `paths` and write `out`; returns the exit code.
pub fn run(recipe: &Recipe, paths: &[PathBuf], out_args: &OutputArgs) -> u8 {
    run_with_intro(recipe, paths, out_args, None)
}

/// [`run`], saying `intro` first once the output is sure to be written.
pub fn run_with_intro(
    recipe: &Recipe,
    paths: &[PathBuf],
    out_args: &OutputArgs,
    intro: Option<String>,
) -> u8 {
    if out_args.print_recipe {
        return print_recipe(recipe);
    }
    let out = out_args.output.as_deref().expect("clap requires -o");
    let fail = |path: &Path, message: &dyn std::fmt::Display| {
        report_error(path, message);
        EXIT_ERROR
    };
    let format = match output_format(out) {
        Ok(f) => f,
        Err(e) => return fail(out, &e),
    };
    if let Some(input) = overwrites_input(out, paths) {
        return fail(
            out,
            &format!("refusing to overwrite the input {}", input.display()),
        );
    }
    if paths.len() != recipe.inputs.len() {
        eprintln!(
            "error: the recipe takes {} input(s) ({}), got {}",
            recipe.inputs.len(),
            recipe.inputs.join(", "),
            paths.len()
        );
        return EXIT_ERROR;
    }
    let mut inputs = Inputs::new();
    let mut bound = Vec::new();
    let mut warnings = Vec::new();
    for path in paths {
        match open_input(path, &mut inputs) {
            Ok(i) => {
                warnings.extend(payload_warnings(path, &i, &inputs));
                bound.push(i);
            }
            Err((file, message)) => return fail(&file, &message),
        }
    }
    let (work, notes) = match recipe::run(recipe, &inputs, &bound) {
        Ok(r) => r,
        Err(e) => return fail(&paths[0], &e),
    };
    let policy = OutputPolicy {
        keep_foreign: out_args.keep_foreign,
    };
    let (output, output_notes) =
        match recipe::output_plan_with(&work, &inputs, format, recipe, policy) {
            Ok(o) => o,
            Err(e) => return fail(out, &e),
        };
    warnings.extend(output_notes.warnings.iter().cloned());
    // Only once the output is sure to be written: a refused rewrite stays one line.
    for line in intro.iter().chain(&warnings) {
        eprintln!("{line}");
    }
    for line in &notes.lines {
        eprintln!("  {line}");
    }
    let hashes_note = match (&output, format) {
        (Output::File(plan), OutputFormat::Safetensors) => {
            match ldmkit_core::hash::autov3_kept(plan, &inputs.sources()) {
                Some(true) => Some("  hashes: the tensors are copied unchanged and in order: AutoV3 / sshs_model_hash stays, AutoV2 changes"),
                Some(false) => Some("  hashes: the tensors are unchanged but laid out anew: AutoV2 and AutoV3 both change"),
                None => None,
            }
        }
        _ => None,
    };
    match write(&output, &inputs.sources(), out) {
        Ok(report) => {
            const SHOWN: usize = 5;
            for (name, bad) in report.non_finite.iter().take(SHOWN) {
                eprintln!(
                    "warning: {name}: {} NaN and {} infinite values after computing",
                    bad.nan, bad.inf
                );
            }
            if report.non_finite.len() > SHOWN {
                eprintln!(
                    "warning: ... and {} more tensors with NaN or infinite values",
                    report.non_finite.len() - SHOWN
                );
            }
            let foreign = if output_notes.foreign_kept {
                "; it keeps globals torch's weights_only loader refuses (--keep-foreign), so it is NOT loadable with torch.load(weights_only=True)"
            } else {
                ""
            };
            eprintln!(
                "wrote {} ({}){foreign}",
                out.display(),
                bytes(report.bytes_written)
            );
            if let Some(note) = hashes_note {
                eprintln!("{note}");
            }
            0
        }
        Err(WriteError::Cancelled) => {
            eprintln!("cancelled; nothing was written to {}", out.display());
            EXIT_CANCELLED
        }
        Err(WriteError::Failed(e)) => fail(out, &e),
    }
}

enum WriteError {
    Cancelled,
    Failed(String),
}

/// Write `output` to `out` as every rewrite does (temporary, progress, rename); on failure
/// the message is printed and the exit code returned.
pub fn write_output(
    output: &Output,
    sources: &[SharedSource],
    out: &Path,
) -> Result<ExecReport, u8> {
    match write(output, sources, out) {
        Ok(r) => Ok(r),
        Err(WriteError::Cancelled) => {
            eprintln!("cancelled; nothing was written to {}", out.display());
            Err(EXIT_CANCELLED)
        }
        Err(WriteError::Failed(e)) => {
            report_error(out, &e);
            Err(EXIT_ERROR)
        }
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn progress_bar(total: u64) -> ProgressBar {
    if total < PROGRESS_MIN_BYTES {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template"),
    );
    bar
}

fn write(output: &Output, sources: &[SharedSource], out: &Path) -> Result<ExecReport, WriteError> {
    // Ctrl-C, SIGTERM and SIGHUP cancel between chunks, so the temporary file is removed on
    // the way out.
    let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst));
    let bar = Arc::new(progress_bar(output.len()));
    let total = output.len();
    let mut base = 0u64;
    let mut run_one = |plan: &Plan, sink: &mut FileSink| -> Result<ExecReport, WriteError> {
        let b = bar.clone();
        let start = base;
        let mut progress = move |done: u64, _: u64| {
            b.set_position(start + done);
            !INTERRUPTED.load(Ordering::SeqCst)
        };
        let r = execute(plan, sources, sink, &mut progress).map_err(|e| match e {
            ldmkit_core::Error::Cancelled => WriteError::Cancelled,
            other => WriteError::Failed(other.to_string()),
        })?;
        base += plan.len();
        Ok(r)
    };
    // Creating, flushing and renaming the output: its own errors, whatever they are.
    let io = |e: std::io::Error| WriteError::Failed(ldmkit_core::Error::Write(e).to_string());
    let report = match output {
        Output::File(plan) => {
            let mut sink = FileSink::create(out).map_err(io)?;
            let r = run_one(plan, &mut sink)?;
            sink.commit().map_err(io)?;
            r
        }
        Output::Folder(files) => {
            let folder = FolderSink::create(out).map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => WriteError::Failed(e.to_string()),
                _ => io(e),
            })?;
            let mut all = ExecReport::default();
            for (name, plan) in files {
                let mut sink = folder.file(name).map_err(io)?;
                let r = run_one(plan, &mut sink)?;
                sink.commit().map_err(io)?;
                all.bytes_written += r.bytes_written;
                all.bytes_computed += r.bytes_computed;
                all.non_finite.extend(r.non_finite);
            }
            folder.commit().map_err(io)?;
            all
        }
    };
    bar.finish_and_clear();
    debug_assert_eq!(base, total);
    Ok(report)
}
