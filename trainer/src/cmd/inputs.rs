//! Opening rewrite inputs: a checkpoint file, or a diffusers folder (one file per component).

use super::open_source;
use ldmkit_core::layout::COMPONENTS;
use ldmkit_core::ops::{diffusers_weight_files, Input, Inputs};
use ldmkit_core::Checkpoint;
use std::path::{Path, PathBuf};

fn open_file(path: &Path, inputs: &mut Inputs) -> Result<usize, String> {
    let source = open_source(path)?;
    let ckpt = Checkpoint::open(source).map_err(|e| e.to_string())?;
    Ok(inputs.add(ckpt))
}

/// Open `path` into `inputs`. Errors are `(file, message)` so the user learns which file.
pub fn open_input(path: &Path, inputs: &mut Inputs) -> Result<Input, (PathBuf, String)> {
    if !path.is_dir() {
        let index = open_file(path, inputs).map_err(|e| (path.to_path_buf(), e))?;
        return Ok(Input {
            files: vec![(String::new(), index)],
        });
    }
    // Relative paths of the component folders' files, as the browser sees a picked folder.
    let mut paths = Vec::new();
    for component in COMPONENTS {
        let Ok(entries) = std::fs::read_dir(path.join(component)) else {
            continue;
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|e| e.path().is_file())
            .map(|e| format!("{component}/{}", e.file_name().to_string_lossy()))
            .collect();
        names.sort();
        paths.extend(names);
    }
    let mut files = Vec::new();
    for (component, at) in diffusers_weight_files(&paths) {
        let file = path.join(&paths[at]);
        let index = open_file(&file, inputs).map_err(|e| (file.clone(), e))?;
        files.push((component.to_string(), index));
    }
    if files.is_empty() {
        return Err((
            path.to_path_buf(),
            "folder holds no diffusers components (unet/, vae/, text_encoder/)".into(),
        ));
    }
    Ok(Input { files })
}

/// A warning line for each file of `input` whose pickles import globals that run code when
/// Python loads it. ldmkit never runs them and reads only the tensors; the user is told so
/// that the file is not loaded elsewhere.
pub fn payload_warnings(path: &Path, input: &Input, inputs: &Inputs) -> Vec<String> {
    input
        .files
        .iter()
        .filter_map(|(component, index)| {
            let refused = inputs.checkpoint(*index).refused_globals(true);
            if refused.is_empty() {
                return None;
            }
            let part = if component.is_empty() {
                String::new()
            } else {
                format!(" ({component})")
            };
            Some(format!(
                "warning: {}{part}: imports globals torch's weights_only loader refuses: {} — \
                 Python would import and call them when loading the file (never run here; only its tensors are read)",
                path.display(),
                refused.join(", ")
            ))
        })
        .collect()
}
