//! Opened inputs, and the state dict each one holds.

use super::{Entry, Origin, Tree, Working};
use crate::checkpoint::Checkpoint;
use crate::container::detect::Format;
use crate::error::{Error, Result};
use crate::plan::LazyTensor;
use crate::source::SharedSource;
use crate::value::{ObjectGraph, Value, ValueId};
use indexmap::IndexMap;

/// Every checkpoint file a rewrite reads; plans refer to them by index.
#[derive(Default)]
pub struct Inputs {
    checkpoints: Vec<Checkpoint>,
}

/// One input as a user names it: a checkpoint file, or a diffusers folder (one file per
/// component, its keys prefixed `unet.`, `vae.`, `text_encoder.`).
#[derive(Debug, Clone)]
pub struct Input {
    /// `(key prefix, checkpoint index)`; the prefix is empty for a single file.
    pub files: Vec<(String, usize)>,
}

/// Weight files a diffusers component folder may hold, in order of preference.
pub const DIFFUSERS_WEIGHT_FILES: &[&str] = &[
    "diffusion_pytorch_model.safetensors",
    "model.safetensors",
    "diffusion_pytorch_model.bin",
    "pytorch_model.bin",
];

/// Each component's weight file among the files of a diffusers folder, given by relative
/// path (`unet/diffusion_pytorch_model.safetensors`, `vae/config.json`, ...): `(component,
/// index into paths)` in [`COMPONENTS`](crate::layout::COMPONENTS) order. Empty when the
/// folder has none.
pub fn diffusers_weight_files<S: AsRef<str>>(paths: &[S]) -> Vec<(&'static str, usize)> {
    crate::layout::COMPONENTS
        .iter()
        .filter_map(|component| {
            DIFFUSERS_WEIGHT_FILES.iter().find_map(|file| {
                let want = format!("{component}/{file}");
                paths
                    .iter()
                    .position(|p| p.as_ref() == want)
                    .map(|i| (*component, i))
            })
        })
        .collect()
}

impl Inputs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add an opened checkpoint; returns its index.
    pub fn add(&mut self, checkpoint: Checkpoint) -> usize {
        self.checkpoints.push(checkpoint);
        self.checkpoints.len() - 1
    }

    pub fn checkpoint(&self, index: usize) -> &Checkpoint {
        &self.checkpoints[index]
    }

    /// The byte sources, by index (what the executor reads).
    pub fn sources(&self) -> Vec<SharedSource> {
        self.checkpoints.iter().map(|c| c.source.clone()).collect()
    }

    /// The working checkpoint an input starts as.
    pub fn working(&self, input: &Input) -> Result<Working> {
        let mut work = Working::default();
        for (prefix, index) in &input.files {
            let ckpt = &self.checkpoints[*index];
            if let crate::checkpoint::ContainerInfo::TorchZip { byteorder, .. } = &ckpt.info {
                if byteorder == "big" {
                    return Err(Error::op(
                        "is a big-endian torch file; rewriting those is not supported",
                    ));
                }
            }
            ckpt.tensors_named_once()?;
            let sd = find_state_dict(&ckpt.graph, ckpt.root)
                .ok_or_else(|| Error::op("holds no state dict (no dict of tensors)"))?;
            let torch = ckpt.format != Format::Safetensors;
            if input.files.len() == 1 && torch {
                work.container = Some(Origin {
                    input: *index,
                    id: sd,
                });
                if sd != ckpt.root {
                    work.tree = Some(Tree {
                        input: *index,
                        state_dict: sd,
                    });
                }
            }
            entries(ckpt, *index, sd, prefix, &mut work.state_dict)?;
        }
        Ok(work)
    }
}

impl Inputs {
    /// The adapter an input holds, or an error saying why it is not one.
    pub fn adapter(&self, input: &Input) -> Result<crate::adapter::Adapter> {
        let work = self.working(input)?;
        crate::adapter::recognise_working(&work, &self.metadata(input), &self.sources())?.ok_or_else(|| {
            Error::op(
                "is not a LoRA or LyCORIS adapter (no lora_down/lora_up, lora_A/lora_B, hada_, lokr_ or diff tensors)",
            )
        })
    }

    /// An input's safetensors metadata (empty for torch files).
    pub fn metadata(&self, input: &Input) -> std::collections::BTreeMap<String, String> {
        let mut out = std::collections::BTreeMap::new();
        for (_, index) in &input.files {
            if let crate::checkpoint::ContainerInfo::Safetensors { metadata, .. } =
                &self.checkpoints[*index].info
            {
                out.extend(metadata.clone());
            }
        }
        out
    }
}

/// The dict of tensors in a checkpoint: `state_dict` (nested ones too), the root itself,
/// or a `model`/`module` wrapper.
pub fn find_state_dict(graph: &ObjectGraph, root: ValueId) -> Option<ValueId> {
    let mut at = root;
    // Nested `state_dict`s occur (a wrapped Lightning file); a dict that contains itself
    // must not loop.
    for _ in 0..8 {
        match graph.dict_get(at, "state_dict") {
            Some(inner) if inner != at && graph.dict_items(inner).is_some() => at = inner,
            _ => break,
        }
    }
    let holds_tensors = |id: ValueId| {
        graph.dict_items(id).is_some_and(|items| {
            items
                .iter()
                .any(|&(_, v)| matches!(graph.get(v), Value::Tensor(_)))
        })
    };
    if holds_tensors(at) {
        return Some(at);
    }
    ["model", "module"]
        .iter()
        .filter_map(|k| graph.dict_get(root, k))
        .find(|&id| holds_tensors(id))
}

fn entries(
    ckpt: &Checkpoint,
    input: usize,
    sd: ValueId,
    prefix: &str,
    out: &mut IndexMap<String, Entry>,
) -> Result<()> {
    let graph = &ckpt.graph;
    for &(k, v) in graph.dict_items(sd).unwrap_or(&[]) {
        let Value::Tensor(t) = graph.get(v) else {
            continue;
        };
        let Some(key) = graph.as_str(k) else {
            return Err(Error::op(format!(
                "state dict has a non-string key {}",
                graph.key_segment(k)
            )));
        };
        let name = if prefix.is_empty() {
            key.to_string()
        } else {
            format!("{prefix}.{key}")
        };
        let tensor = LazyTensor::stored(input, t, ckpt.storage(t));
        let entry = Entry {
            tensor,
            origin: Some(Origin { input, id: v }),
        };
        if out.insert(name.clone(), entry).is_some() {
            return Err(Error::op(format!("key '{name}' appears twice")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffusers_weight_files_prefers_safetensors_and_skips_missing_components() {
        let paths = [
            "model_index.json",
            "unet/config.json",
            "unet/diffusion_pytorch_model.bin",
            "unet/diffusion_pytorch_model.safetensors",
            "text_encoder/model.safetensors",
            "tokenizer/vocab.json",
        ];
        assert_eq!(
            diffusers_weight_files(&paths),
            [("unet", 3), ("text_encoder", 4)]
        );
        assert!(diffusers_weight_files(&["a.ckpt"]).is_empty());
    }
    use crate::value::Dict;

    #[test]
    fn a_state_dict_that_contains_itself_ends_the_search() {
        let mut g = ObjectGraph::new();
        let d = g.push(Value::Dict(Dict::default()));
        let k = g.push(Value::Str("state_dict".into()));
        g.dict_insert(d, k, d);
        assert_eq!(find_state_dict(&g, d), None);
    }
}
