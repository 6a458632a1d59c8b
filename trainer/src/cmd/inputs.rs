//! Opening rewrite inputs: a checkpoint file, or a diffusers folder (one file per component).

use super::open_source;
use ldmkit_core::layout::COMPONENTS;
use ldmkit_core::ops::{Input, Inputs};
use ldmkit_core::Checkpoint;
use std::path::{Path, PathBuf};

/// Weight files a diffusers component folder may hold, in order of preference.
const WEIGHT_FILES: &[&str] = &[
    "diffusion_pytorch_model.safetensors",
    "model.safetensors",
    "diffusion_pytorch_model.bin",
    "pytorch_model.bin",
];

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
    let mut files = Vec::new();
    for component in COMPONENTS {
        let folder = path.join(component);
        let Some(file) = WEIGHT_FILES
            .iter()
            .map(|f| folder.join(f))
            .find(|f| f.is_file())
        else {
            continue;
        };
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
