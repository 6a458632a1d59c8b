//! The logical checkpoint: one object tree with tensor references, whatever the file format.
//!
//! Opening reads only structure (zip directory, pickle, safetensors header); tensor bytes stay
//! in the source. Tensors are named by their path from the root — dict keys and list indices
//! joined by `/` (`state_dict/model.diffusion_model.out.2.weight`,
//! `optimizer_states/0/state/12/exp_avg`), the same rule as `tests/python/walk.py` applies
//! to what `torch.load` returns.

use crate::container::detect::{detect, Format};
use crate::error::{Error, Result};
use crate::pickle::{Import, Limits};
use crate::source::SharedSource;
use crate::tensor::{StorageRef, TensorRef};
use crate::value::{ObjectGraph, Value, ValueId};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};

/// What the container said about itself, beyond the object tree.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "format")]
pub enum ContainerInfo {
    #[serde(rename = "torch-zip")]
    TorchZip {
        /// The archive's top-level folder (`archive`, or the saved file's stem).
        prefix: String,
        byteorder: String,
        version: Option<String>,
        pickle_protocol: u8,
        entries: usize,
        /// Whether any entry is compressed (third-party re-zip; not memory-mappable).
        deflated: bool,
    },
    #[serde(rename = "torch-legacy")]
    TorchLegacy {
        pickle_protocol: u8,
        storages: usize,
        trailing_bytes: u64,
    },
    #[serde(rename = "torch-tar")]
    TorchTar {
        pickle_protocol: u8,
        storages: usize,
    },
    #[serde(rename = "safetensors")]
    Safetensors {
        header_len: u64,
        metadata: BTreeMap<String, String>,
    },
}

/// A reader's output before it becomes a [`Checkpoint`].
pub(crate) struct Parsed {
    pub graph: ObjectGraph,
    pub root: ValueId,
    pub info: ContainerInfo,
}

/// A checkpoint opened for inspection or rewriting.
pub struct Checkpoint {
    pub format: Format,
    pub source: SharedSource,
    pub graph: ObjectGraph,
    pub root: ValueId,
    /// Every global the file's pickles import (empty for safetensors), nested pickles'
    /// included.
    pub imports: Vec<Import>,
    pub info: ContainerInfo,
    /// Set when the file also reads as a pickle torch would unpickle (a safetensors
    /// polyglot): what that reading is.
    pub polyglot: Option<String>,
}

/// A tensor with its path name.
#[derive(Debug, Clone)]
pub struct NamedTensor<'a> {
    pub name: String,
    pub id: ValueId,
    pub tensor: &'a TensorRef,
}

/// Caps the tensor walk: shared references can make a small graph a huge tree.
const MAX_WALK_VISITS: usize = 20_000_000;

impl Checkpoint {
    /// Detect the format and read the structure of `source`.
    pub fn open(source: SharedSource) -> Result<Self> {
        let mut imports = Vec::new();
        Self::open_collecting(source, Limits::default(), &mut imports)
    }

    /// Like [`open`](Self::open), but every import seen is pushed to `imports` even when
    /// reading fails part-way, so a scanner still reports what a broken pickle imports.
    pub fn open_collecting(
        source: SharedSource,
        limits: Limits,
        imports: &mut Vec<Import>,
    ) -> Result<Self> {
        Self::open_nested(source, limits, 0, imports)
    }

    /// [`open_collecting`](Self::open_collecting) for data found `depth` nested loads deep.
    pub(crate) fn open_nested(
        source: SharedSource,
        limits: Limits,
        depth: u32,
        imports: &mut Vec<Import>,
    ) -> Result<Self> {
        let format = detect(source.as_ref())?;
        let start = imports.len();
        let mut polyglot = None;
        let parsed = match format {
            Format::TorchZip => crate::torch::zip_format::read(source.as_ref(), limits, imports)?,
            Format::TorchLegacy => crate::torch::legacy::read(source.as_ref(), limits, imports)?,
            Format::TorchTar => crate::torch::tar_format::read(source.as_ref(), limits, imports)?,
            Format::Safetensors => {
                let parsed = crate::safetensors::read(source.as_ref())?;
                if let Some(reading) = crate::container::detect::pickle_reading(source.as_ref()) {
                    polyglot = Some(polyglot_note(&reading));
                    imports.extend(reading.imports.into_iter().map(|mut i| {
                        i.via = Some("the file read as a pickle".into());
                        i
                    }));
                }
                parsed
            }
            Format::Pickle => {
                return Err(Error::UnknownFormat(bare_pickle_message(source.as_ref())));
            }
        };
        imports.extend(crate::safety::nested::nested_imports(
            &parsed.graph,
            Some(parsed.root),
            limits,
            depth,
        ));
        Ok(Checkpoint {
            format,
            source,
            graph: parsed.graph,
            root: parsed.root,
            imports: merge_imports(&imports[start..]),
            info: parsed.info,
            polyglot,
        })
    }

    /// The storage a tensor views.
    pub fn storage(&self, tensor: &TensorRef) -> &StorageRef {
        match self.graph.get(tensor.storage) {
            Value::Storage(s) => s,
            _ => unreachable!("readers only build tensors over storages"),
        }
    }

    /// Every tensor reachable from the root, named by path, in walk order.
    pub fn tensors(&self) -> Result<Vec<NamedTensor<'_>>> {
        let mut walk = Walk {
            graph: &self.graph,
            on_path: HashSet::new(),
            out: Vec::new(),
            visits: 0,
            max_depth: Limits::default().max_walk_depth,
        };
        walk.visit(self.root, &mut Vec::new(), 0)?;
        Ok(walk.out)
    }

    /// [`tensors`](Self::tensors), refusing a file where two tensors get one name (a key
    /// `"a/b"` beside a key `a` holding `{"b": ...}`): every command that picks tensors by
    /// name would otherwise read or keep one of them and silently drop the other.
    pub fn tensors_named_once(&self) -> Result<Vec<NamedTensor<'_>>> {
        let tensors = self.tensors()?;
        let mut seen = HashSet::with_capacity(tensors.len());
        for t in &tensors {
            if !seen.insert(t.name.as_str()) {
                return Err(Error::torch(format!(
                    "two tensors are both named '{}' (a key holding '/' beside nested dicts); refusing rather than use one and drop the other",
                    t.name
                )));
            }
        }
        Ok(tensors)
    }

    /// The globals this file's pickles import that `torch.load(weights_only=True)` refuses
    /// (the training extension counts as accepted where `training`), described with what
    /// each is known to do, first seen first. Empty for an ordinary checkpoint.
    pub fn refused_globals(&self, training: bool) -> Vec<String> {
        let mut names = crate::safety::refused_names(
            self.imports.iter().map(Import::weights_only_name),
            training,
        );
        if self.polyglot.is_some() {
            names.insert(0, "a pickle reading of the whole file (polyglot)".into());
        }
        names
    }

    /// The top-level dict's string keys and values (Lightning metadata lives there).
    pub fn top_level(&self) -> Vec<(String, ValueId)> {
        self.graph
            .dict_items(self.root)
            .map(|items| {
                items
                    .iter()
                    .map(|&(k, v)| (self.graph.key_segment(k), v))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Combine import lists from several pickles: one entry per global and way of reaching it,
/// in first-seen order.
pub(crate) fn merge_imports(raw: &[Import]) -> Vec<Import> {
    type Key<'a> = (
        &'a crate::value::Global,
        &'a Option<crate::value::Global>,
        &'a Option<String>,
        &'a Option<String>,
    );
    let mut out: Vec<Import> = Vec::new();
    let mut index: std::collections::HashMap<Key<'_>, usize> = std::collections::HashMap::new();
    for imp in raw {
        let key = (&imp.global, &imp.written, &imp.computed_by, &imp.via);
        match index.get(&key) {
            Some(&i) => out[i].count += imp.count,
            None => {
                index.insert(key, out.len());
                out.push(imp.clone());
            }
        }
    }
    out
}

/// What `torch.load` does with a bare pickle, for the one-line refusal: never "not a
/// checkpoint", since torch does unpickle it.
fn bare_pickle_message(source: &dyn crate::source::Source) -> String {
    let reading = crate::container::detect::pickle_reading(source);
    let protocol = reading.as_ref().map_or(0, |r| r.protocol);
    let refused = reading
        .map(|r| {
            crate::safety::refused_names(r.imports.iter().map(Import::weights_only_name), false)
        })
        .unwrap_or_default();
    let imports = if refused.is_empty() {
        String::new()
    } else {
        format!(
            ", importing and calling {} global(s) torch's weights_only loader refuses: {}",
            refused.len(),
            refused.join(", ")
        )
    };
    format!(
        "a bare pickle (protocol {protocol}) without torch's magic number: torch.load unpickles it{imports}, then fails (\"Invalid magic number\"); ldmkit reads no tensors from it (`ldmkit scan` lists every global)"
    )
}

/// What the pickle reading of a polyglot file does, for reports.
fn polyglot_note(reading: &crate::container::detect::PickleReading) -> String {
    let names: Vec<String> = reading
        .imports
        .iter()
        .map(|i| crate::safety::describe(&i.global))
        .collect();
    format!(
        "valid safetensors, and also a pickle that torch.load (which reads no safetensors) unpickles from byte 0{}{}",
        if reading.complete { "" } else { " until it fails" },
        if names.is_empty() {
            String::new()
        } else {
            format!(", importing {}", names.join(", "))
        }
    )
}

struct Walk<'a> {
    graph: &'a ObjectGraph,
    on_path: HashSet<ValueId>,
    out: Vec<NamedTensor<'a>>,
    visits: usize,
    max_depth: usize,
}

impl<'a> Walk<'a> {
    fn visit(&mut self, id: ValueId, path: &mut Vec<String>, depth: usize) -> Result<()> {
        self.visits += 1;
        if self.visits > MAX_WALK_VISITS {
            return Err(Error::Limit(format!(
                "object tree has more than {MAX_WALK_VISITS} paths (shared references)"
            )));
        }
        if depth > self.max_depth {
            return Err(Error::Limit(format!(
                "object tree nests deeper than {} levels",
                self.max_depth
            )));
        }
        let graph = self.graph;
        match graph.get(id) {
            Value::Tensor(t) => {
                self.out.push(NamedTensor {
                    name: path.join("/"),
                    id,
                    tensor: t,
                });
                return Ok(());
            }
            Value::Dict(_) | Value::List(_) | Value::Tuple(_) | Value::Object(_) => {}
            _ => return Ok(()),
        }
        if !self.on_path.insert(id) {
            return Ok(()); // a cycle: Python's walk stops here too
        }
        let mut child = |this: &mut Self, seg: String, v: ValueId| -> Result<()> {
            path.push(seg);
            let r = this.visit(v, path, depth + 1);
            path.pop();
            r
        };
        match graph.get(id) {
            Value::Dict(d) => {
                for &(k, v) in &d.entries {
                    child(self, graph.key_segment(k), v)?;
                }
            }
            Value::List(items) => {
                for (i, &v) in items.iter().enumerate() {
                    child(self, i.to_string(), v)?;
                }
            }
            Value::Tuple(items) => {
                for (i, &v) in items.iter().enumerate() {
                    child(self, i.to_string(), v)?;
                }
            }
            Value::Object(o) => {
                // Dict and list subclasses are walked by their items; other objects by
                // their attribute dict (the `BUILD` state), as `vars(obj)` would show.
                if let Some(items) = graph.dict_items(id) {
                    for &(k, v) in items {
                        child(self, graph.key_segment(k), v)?;
                    }
                } else if !o.list_items.is_empty() {
                    for (i, &v) in o.list_items.iter().enumerate() {
                        child(self, i.to_string(), v)?;
                    }
                } else if let Some(state) = o.state {
                    let attrs = match graph.get(state) {
                        Value::Tuple(t) if t.len() == 2 => t[0],
                        _ => state,
                    };
                    if let Value::Dict(d) = graph.get(attrs) {
                        for &(k, v) in &d.entries {
                            child(self, graph.key_segment(k), v)?;
                        }
                    }
                }
            }
            _ => {}
        }
        self.on_path.remove(&id);
        Ok(())
    }
}
