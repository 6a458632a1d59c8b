//! From a working checkpoint to the plan of a torch zip or safetensors file.
//!
//! Torch output reproduces what the seed's Python method (`torch.load`, edit the dict,
//! `torch.save`) would write: a kept tree is re-emitted whole with the new state dict in
//! place of the old; tensors that come unchanged from an input keep their storage, view and
//! sharing (torch saves whole storages, so a view still brings its storage along); new or
//! computed tensors get a storage of their own.

use super::{Inputs, Working};
use crate::error::{Error, Result};
use crate::plan::{LazyTensor, Plan};
use crate::safety::dangerous_names;
use crate::tensor::{StorageRef, TensorKind, TensorRef};
use crate::value::{Dict, ObjectGraph, Value, ValueId};
use std::collections::{BTreeMap, HashMap};

/// A storage's whole bytes as a 1-D lazy tensor.
fn whole_storage(input: usize, storage: &StorageRef) -> LazyTensor {
    let shape_ref = TensorRef {
        storage: 0,
        dtype: storage.dtype,
        shape: vec![storage.numel],
        strides: vec![1],
        storage_offset: 0,
        requires_grad: false,
        kind: TensorKind::Tensor,
    };
    LazyTensor::stored(input, &shape_ref, storage)
}

/// Plan a torch zip of `work`.
pub fn torch_plan(work: &Working, inputs: &Inputs) -> Result<Plan> {
    let mut graph;
    let root;
    let container;
    // Which input each storage of the output graph reads from.
    let mut storage_input: HashMap<ValueId, usize> = HashMap::new();
    let mut memos: HashMap<usize, HashMap<ValueId, ValueId>> = HashMap::new();
    match work.tree {
        Some(tree) => {
            let ckpt = inputs.checkpoint(tree.input);
            graph = ckpt.graph.clone();
            root = ckpt.root;
            container = tree.state_dict;
            for (id, v) in graph.iter() {
                if matches!(v, Value::Storage(_)) {
                    storage_input.insert(id, tree.input);
                }
            }
            // Tensors of the tree's own input are referenced as they are.
            memos.insert(tree.input, graph.iter().map(|(id, _)| (id, id)).collect());
        }
        None => {
            graph = ObjectGraph::new();
            root = graph.push(Value::Dict(Dict::default()));
            container = match work.container {
                Some(origin) => {
                    let src = &inputs.checkpoint(origin.input).graph;
                    empty_like(&mut graph, src, origin.id)
                }
                None => graph.push(Value::Dict(Dict::default())),
            };
            let key = graph.push(Value::Str("state_dict".into()));
            graph.dict_insert(root, key, container);
        }
    }

    let mut new_storages: HashMap<ValueId, (LazyTensor, String)> = HashMap::new();
    let mut items = Vec::with_capacity(work.state_dict.len());
    for (name, entry) in &work.state_dict {
        let key = graph.push(Value::Str(name.as_str().into()));
        let value = match entry.origin {
            Some(origin) => {
                let src = &inputs.checkpoint(origin.input).graph;
                let memo = memos.entry(origin.input).or_default();
                let before = memo.len();
                let id = graph.import(src, origin.id, memo);
                if memo.len() != before {
                    for (&from, &to) in memo.iter() {
                        if matches!(src.get(from), Value::Storage(_)) {
                            storage_input.entry(to).or_insert(origin.input);
                        }
                    }
                }
                id
            }
            None => {
                let t = &entry.tensor;
                let storage = graph.push(Value::Storage(Box::new(StorageRef {
                    key: String::new(),
                    dtype: t.dtype,
                    numel: t.numel(),
                    location: "cpu".into(),
                    data: crate::tensor::DataLocation::Pending,
                    untyped: false,
                    crc32: None,
                })));
                let flat = LazyTensor {
                    dtype: t.dtype,
                    shape: vec![t.numel()],
                    data: t.reshape(vec![t.numel()]).data,
                };
                new_storages.insert(storage, (flat, name.clone()));
                graph.push(Value::Tensor(Box::new(TensorRef {
                    storage,
                    dtype: t.dtype,
                    strides: TensorRef::contiguous_strides(&t.shape),
                    shape: t.shape.clone(),
                    storage_offset: 0,
                    requires_grad: false,
                    kind: TensorKind::Tensor,
                })))
            }
        };
        items.push((key, value));
    }
    // Non-tensor entries of the source state dict (`_extra_state`, counters) stay as they were.
    match (work.tree, work.container) {
        (Some(_), _) => {
            let kept: Vec<_> = graph
                .dict_items(container)
                .unwrap_or(&[])
                .iter()
                .filter(|&&(_, v)| !matches!(graph.get(v), Value::Tensor(_)))
                .copied()
                .collect();
            items.extend(kept);
        }
        (None, Some(origin)) => {
            let src = &inputs.checkpoint(origin.input).graph;
            let memo = memos.entry(origin.input).or_default();
            for &(k, v) in src.dict_items(origin.id).unwrap_or(&[]) {
                if !matches!(src.get(v), Value::Tensor(_)) {
                    let (k, v) = (graph.import(src, k, memo), graph.import(src, v, memo));
                    items.push((k, v));
                }
            }
            for (&from, &to) in memo.iter() {
                if matches!(src.get(from), Value::Storage(_)) {
                    storage_input.entry(to).or_insert(origin.input);
                }
            }
        }
        (None, None) => {}
    }
    graph.set_dict_items(container, items);
    refuse_payloads(&graph)?;

    let storage_data = |id: ValueId| -> Result<(LazyTensor, String)> {
        if let Some(t) = new_storages.get(&id) {
            return Ok(t.clone());
        }
        match (graph.get(id), storage_input.get(&id)) {
            (Value::Storage(s), Some(&input)) => {
                Ok((whole_storage(input, s), format!("storage {}", s.key)))
            }
            _ => Err(Error::op("a storage in the output has no source")),
        }
    };
    crate::write::torch_zip::torch_zip(&graph, root, &storage_data)
}

/// Refuse an output graph that imports a dangerous global. Kept trees and a state dict's
/// non-tensor entries are written back as they were, globals included, so a payload in an
/// input would reach the new file and run wherever that is loaded. (The check covers the
/// whole graph, unreachable copies too: erring that way costs a refusal, not a payload.)
fn refuse_payloads(graph: &ObjectGraph) -> Result<()> {
    let names = dangerous_names(graph.iter().filter_map(|(_, v)| match v {
        Value::Global(g) => Some(g),
        _ => None,
    }));
    if names.is_empty() {
        return Ok(());
    }
    Err(Error::op(format!(
        "an input imports {} (code that runs when the file is loaded), which a torch output \
         would copy; refusing (write .safetensors to keep only the tensors)",
        names.join(", ")
    )))
}

/// A container of the same class as `src`'s value `id` (a `dict`, or an `OrderedDict` with
/// its `_metadata` state), without items.
fn empty_like(graph: &mut ObjectGraph, src: &ObjectGraph, id: ValueId) -> ValueId {
    match src.get(id) {
        Value::Object(o) => {
            let mut memo = HashMap::new();
            let mut copy = (**o).clone();
            copy.dict_items.clear();
            copy.list_items.clear();
            copy.callable = graph.import(src, o.callable, &mut memo);
            copy.args = graph.import(src, o.args, &mut memo);
            copy.state = o.state.map(|s| graph.import(src, s, &mut memo));
            graph.push(Value::Object(Box::new(copy)))
        }
        _ => graph.push(Value::Dict(Dict::default())),
    }
}

/// Plan a safetensors file of `work`'s state dict (a kept tree is not written: the format
/// holds tensors only). Tensors are written contiguously.
pub fn safetensors_plan(work: &Working, metadata: &BTreeMap<String, String>) -> Result<Plan> {
    let tensors: Vec<(String, LazyTensor)> = work
        .state_dict
        .iter()
        .map(|(k, e)| (k.clone(), e.tensor.clone()))
        .collect();
    crate::write::safetensors::safetensors(&tensors, metadata)
}
