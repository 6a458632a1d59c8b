//! What the user opened, as rewrite inputs: each picked file is an input of its own; a picked
//! folder (or a dropped one) is one input made of its diffusers components' weight files, as
//! `ldmkit` takes a diffusers folder on the command line.

use ldmkit_core::ops::diffusers_weight_files;
use wasm_bindgen::JsValue;
use web_sys::File;

/// One opened file and where it goes in a rewrite.
#[derive(Clone)]
pub struct Picked {
    pub file: File,
    /// Which input it belongs to (0 = the recipe's first).
    pub input: usize,
    /// Its key prefix within the input (`unet`, `vae`, ... for a folder; empty for a file).
    pub prefix: String,
    /// What its tab says.
    pub label: String,
}

/// The path of a file inside a picked folder (`sd15/unet/x.safetensors`), empty for a file.
fn relative_path(file: &File) -> String {
    js_sys::Reflect::get(file, &JsValue::from_str("webkitRelativePath"))
        .ok()
        .and_then(|v| v.as_string())
        .unwrap_or_default()
}

/// Turn a pick into inputs numbered from `first_input`.
pub fn pick(list: Vec<File>, first_input: usize) -> Result<Vec<Picked>, String> {
    let mut out = Vec::new();
    let mut folders: Vec<(String, Vec<(String, File)>)> = Vec::new();
    for file in list {
        let path = relative_path(&file);
        match path.split_once('/') {
            Some((root, rest)) => match folders.iter_mut().find(|(r, _)| r == root) {
                Some((_, files)) => files.push((rest.to_string(), file)),
                None => folders.push((root.to_string(), vec![(rest.to_string(), file)])),
            },
            None => {
                let input = first_input + out.len();
                out.push(Picked {
                    label: file.name(),
                    file,
                    input,
                    prefix: String::new(),
                });
            }
        }
    }
    for (root, files) in folders {
        let paths: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
        let chosen = diffusers_weight_files(&paths);
        if chosen.is_empty() {
            return Err(format!(
                "{root}: folder holds no diffusers components (unet/, vae/, text_encoder/)"
            ));
        }
        let input = out.last().map_or(first_input, |p: &Picked| p.input + 1);
        for (component, at) in chosen {
            out.push(Picked {
                file: files[at].1.clone(),
                input,
                prefix: component.to_string(),
                label: format!("{root}/{component}"),
            });
        }
    }
    Ok(out)
}

/// The request fields that carry `picked` as inputs: `files`, `prefixes`, `groups`.
pub fn fields(picked: &[Picked]) -> (Vec<File>, Vec<(&'static str, JsValue)>) {
    let files = picked.iter().map(|p| p.file.clone()).collect();
    let prefixes: js_sys::Array = picked
        .iter()
        .map(|p| JsValue::from_str(&p.prefix))
        .collect();
    let groups: js_sys::Array = picked
        .iter()
        .map(|p| JsValue::from(p.input as u32))
        .collect();
    (
        files,
        vec![("prefixes", prefixes.into()), ("groups", groups.into())],
    )
}

/// A name per input: the file's, or the folder's for a picked folder.
pub fn input_names(picked: &[Picked]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for p in picked {
        if p.input >= names.len() {
            let name = match p.label.strip_suffix(&format!("/{}", p.prefix)) {
                Some(folder) if !p.prefix.is_empty() => folder.to_string(),
                _ => p.label.clone(),
            };
            names.push(name);
        }
    }
    names
}
