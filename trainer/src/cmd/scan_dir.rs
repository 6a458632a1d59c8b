//! `scan DIR`: the checkpoint files inside a folder (a diffusers folder, a Hugging Face hub
//! cache or snapshot, a folder of models), found recursively, so one call scans them all.
//!
//! Files are picked by extension ([`CHECKPOINT_EXTENSIONS`]): sniffing every file of a hub
//! cache would read blobs twice (once under their hash name, once through the snapshot's
//! symlink). Symlinks are followed, as the hub's snapshots need, but a folder or file reached
//! twice (a symlink loop, two snapshots sharing a blob) is scanned once, under the first name
//! in sorted order. The order is sorted, so output is the same from run to run.

use super::{report_error, EXIT_ERROR};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// What a folder is searched for: torch files (zip and legacy), plain pickles, safetensors.
pub const CHECKPOINT_EXTENSIONS: &[&str] =
    &["ckpt", "pt", "pth", "bin", "safetensors", "pkl", "pickle"];

/// Folders deeper than this are not entered (a bound for absurd trees; loops are caught
/// by identity before this matters).
const MAX_DEPTH: usize = 64;

/// One thing the scan loop meets.
#[derive(Debug, PartialEq)]
pub enum Target {
    /// A file to scan: named on the command line, or found in a folder.
    File(PathBuf),
    /// A folder with no checkpoint file in it, at any depth.
    EmptyFolder(PathBuf),
    /// A folder (the one named, or one inside it) that could not be listed.
    Unreadable(PathBuf, String),
}

fn is_checkpoint(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| CHECKPOINT_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Every argument that is a folder replaced by the checkpoint files inside it (sorted,
/// each reached once); other arguments stay as they are.
pub fn expand(paths: &[PathBuf]) -> Vec<Target> {
    let mut out = Vec::new();
    for path in paths {
        if !path.is_dir() {
            out.push(Target::File(path.clone()));
            continue;
        }
        let (mut files, mut errors) = (Vec::new(), Vec::new());
        walk(path, 0, &mut HashSet::new(), &mut files, &mut errors);
        files.sort();
        // A file reached through several names (hub snapshots share blobs) is scanned once.
        let mut seen = HashSet::new();
        files.retain(|f| seen.insert(std::fs::canonicalize(f).unwrap_or_else(|_| f.clone())));
        if files.is_empty() && errors.is_empty() {
            out.push(Target::EmptyFolder(path.clone()));
        }
        out.extend(files.into_iter().map(Target::File));
        out.extend(errors.into_iter().map(|(p, e)| Target::Unreadable(p, e)));
    }
    out
}

fn walk(
    dir: &Path,
    depth: usize,
    visited: &mut HashSet<PathBuf>,
    files: &mut Vec<PathBuf>,
    errors: &mut Vec<(PathBuf, String)>,
) {
    // The real path identifies a folder however it was reached: a loop ends here.
    let real = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    if depth > MAX_DEPTH || !visited.insert(real) {
        return;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            errors.push((dir.to_path_buf(), format!("cannot list this folder: {e}")));
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        // Through symlinks to what they name; a dangling one with a checkpoint's name is
        // kept, so the scan says it is missing instead of skipping it silently.
        let (is_dir, is_file) = if kind.is_symlink() {
            match std::fs::metadata(&path) {
                Ok(m) => (m.is_dir(), m.is_file()),
                Err(_) => (false, true),
            }
        } else {
            (kind.is_dir(), kind.is_file())
        };
        if is_dir {
            walk(&path, depth + 1, visited, files, errors);
        } else if is_file && is_checkpoint(&path) {
            files.push(path);
        }
    }
}

/// What the scan loop does with `target`: the file to scan, or `None` once a folder with
/// nothing to scan has been reported (a headline, or an entry in `json`) or one that cannot
/// be listed has been (an error, exit 2).
pub fn take(
    target: Target,
    json_mode: bool,
    json: &mut Vec<serde_json::Value>,
    exit: &mut u8,
) -> Option<PathBuf> {
    match target {
        Target::File(path) => Some(path),
        Target::EmptyFolder(dir) => {
            let note = format!(
                "no checkpoint files in this folder (looked for .{})",
                CHECKPOINT_EXTENSIONS.join(", .")
            );
            if json_mode {
                json.push(serde_json::json!({
                    "file": dir.display().to_string(),
                    "format": null,
                    "verdict": null,
                    "globals": [],
                    "error": null,
                    "note": note,
                }));
            } else {
                println!("{}: {note}", dir.display());
            }
            None
        }
        Target::Unreadable(dir, message) => {
            report_error(&dir, message);
            *exit = EXIT_ERROR;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn files(targets: &[Target]) -> Vec<String> {
        targets
            .iter()
            .map(|t| match t {
                Target::File(p) => p.file_name().unwrap().to_string_lossy().into_owned(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn folders_expand_sorted_and_each_file_once() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        fs::create_dir_all(d.join("unet")).unwrap();
        fs::create_dir_all(d.join("text_encoder")).unwrap();
        fs::create_dir_all(d.join("empty")).unwrap();
        for f in [
            "unet/diffusion_pytorch_model.safetensors",
            "text_encoder/pytorch_model.bin",
            "model.CKPT",
            "notes.txt",
            "config.json",
        ] {
            fs::write(d.join(f), b"x").unwrap();
        }
        #[cfg(unix)]
        {
            // A loop, and a second name for one file.
            std::os::unix::fs::symlink(d, d.join("unet/loop")).unwrap();
            std::os::unix::fs::symlink(d.join("model.CKPT"), d.join("zz_alias.ckpt")).unwrap();
        }
        let got = expand(&[d.to_path_buf(), d.join("empty"), d.join("notes.txt")]);
        let empty = format!("{:?}", Target::EmptyFolder(d.join("empty")));
        assert_eq!(
            files(&got),
            [
                "model.CKPT",
                "pytorch_model.bin",
                "diffusion_pytorch_model.safetensors",
                &empty,
                "notes.txt",
            ]
        );
    }
}
