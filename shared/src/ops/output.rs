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
use crate::safety::Verdict;
use crate::tensor::{StorageRef, TensorKind, TensorRef};
use crate::value::{Dict, Global, ObjectGraph, Value, ValueId};
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
        flags: Default::default(),
    };
    LazyTensor::stored(input, &shape_ref, storage)
}

/// How a torch output treats values that `torch.load(weights_only=True)` would refuse.
#[derive(Debug, Clone, Copy, Default)]
pub struct OutputPolicy {
    /// Keep non-tensor entries (and, in a kept tree, objects) whose classes are outside the
    /// allowlist — never one known to run code. The output is then not weights-only loadable.
    pub keep_foreign: bool,
}

/// What a torch output left out, or kept against the allowlist.
#[derive(Debug, Clone, Default)]
pub struct OutputNotes {
    /// One `warning:` line per dropped entry.
    pub warnings: Vec<String>,
    /// Whether the output holds globals torch's `weights_only` loader refuses.
    pub foreign_kept: bool,
}

/// Plan a torch zip of `work`. A release (no kept tree) holds tensors and allowlisted
/// containers only: any other non-tensor state-dict entry is dropped with a warning unless
/// `policy.keep_foreign`. A kept tree (`graft`) may also hold the training extension's
/// classes (the training file's own Lightning state); anything outside both is refused.
pub fn torch_plan(
    work: &Working,
    inputs: &Inputs,
    policy: OutputPolicy,
) -> Result<(Plan, OutputNotes)> {
    let mut notes = OutputNotes::default();
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
                    // The container's own class and state, not its items (judged one by one).
                    let class = match src.get(origin.id) {
                        Value::Object(o) => [Some(o.callable), Some(o.args), o.state]
                            .into_iter()
                            .flatten()
                            .find_map(|id| refusal(src, id, false, policy)),
                        _ => None,
                    };
                    match class {
                        None => empty_like(&mut graph, src, origin.id),
                        Some(_) => {
                            notes.warnings.push(format!(
                                "warning: the state dict's container ({}) is outside torch's weights_only allowlist; wrote a plain dict",
                                class_of(src, origin.id)
                            ));
                            graph.push(Value::Dict(Dict::default()))
                        }
                    }
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
                // Every value an import copies gets a fresh slot at the end of the graph, so
                // the storages it brought are among those: look at them only (a scan of the
                // whole memo per entry made this quadratic in the tensor count).
                let first_new = graph.len() as ValueId;
                let id = graph.import(src, origin.id, memo);
                for to in first_new..graph.len() as ValueId {
                    if matches!(graph.get(to), Value::Storage(_)) {
                        storage_input.entry(to).or_insert(origin.input);
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
                    flags: Default::default(),
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
                if matches!(src.get(v), Value::Tensor(_)) {
                    continue;
                }
                if let Some(refused) = refusal(src, v, false, policy) {
                    notes.warnings.push(format!(
                        "warning: dropped state-dict entry '{}' ({}): {}",
                        src.key_segment(k),
                        class_of(src, v),
                        refused
                    ));
                    continue;
                }
                notes.foreign_kept |= !globals_under(src, v)
                    .iter()
                    .all(|g| crate::safety::verdict(g) == Verdict::Allowed);
                let (k, v) = (graph.import(src, k, memo), graph.import(src, v, memo));
                items.push((k, v));
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
    if work.tree.is_some() {
        if let Some(refused) = refusal(&graph, root, true, policy) {
            return Err(Error::op(format!(
                "the kept training state holds {refused}; refusing to write it into a .ckpt \
                 (write .safetensors to keep only the tensors{})",
                if policy.keep_foreign || refused.contains("runs") || refused.contains("loads") {
                    ""
                } else {
                    ", or pass --keep-foreign"
                }
            )));
        }
        notes.foreign_kept = !globals_under(&graph, root)
            .iter()
            .all(|g| crate::safety::verdict(g).passes(true));
    }

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
    let plan = crate::write::torch_zip::torch_zip(&graph, root, &storage_data)?;
    Ok((plan, notes))
}

/// Why the value `id` may not be written, if it may not: the globals under it that the
/// allowlist (with the training extension where `training`) refuses. Globals known to run code
/// are refused whatever the policy — what we write never carries a payload onward; others
/// pass with `keep_foreign`.
fn refusal(
    graph: &ObjectGraph,
    id: ValueId,
    training: bool,
    policy: OutputPolicy,
) -> Option<String> {
    let globals = globals_under(graph, id);
    let code: Vec<String> = globals
        .iter()
        .filter(|g| {
            crate::safety::explain(g).is_some() && !crate::safety::verdict(g).passes(training)
        })
        .map(|g| crate::safety::describe(g))
        .collect();
    if !code.is_empty() {
        return Some(format!(
            "{}, code that runs when the file is loaded",
            code.join(", ")
        ));
    }
    if policy.keep_foreign {
        return None;
    }
    let refused = crate::safety::refused_names(globals.iter().copied(), training);
    (!refused.is_empty()).then(|| {
        format!(
            "{} {} torch's weights_only loader refuses",
            refused.join(", "),
            if refused.len() == 1 {
                "is a global"
            } else {
                "are globals"
            }
        )
    })
}

/// Every global reachable from `id`, once each (what the pickler would write under it).
fn globals_under(graph: &ObjectGraph, id: ValueId) -> Vec<&Global> {
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![id];
    let mut out: Vec<&Global> = Vec::new();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        match graph.get(id) {
            Value::Global(g) if !out.contains(&g) => out.push(g),
            Value::List(items) | Value::Set(items) | Value::FrozenSet(items) => stack.extend(items),
            Value::Tuple(items) => stack.extend(items.iter()),
            Value::Dict(d) => stack.extend(d.entries.iter().flat_map(|&(k, v)| [k, v])),
            Value::Object(o) => {
                stack.extend([o.callable, o.args]);
                stack.extend(o.state);
                stack.extend(&o.list_items);
                stack.extend(o.dict_items.iter().flat_map(|&(k, v)| [k, v]));
            }
            Value::PersistentId(v) => stack.push(*v),
            // A tensor pickles through torch's rebuild functions and storage classes: allowed.
            _ => {}
        }
    }
    out
}

/// What a value is, for a warning: an object's class, or the Python type.
fn class_of(graph: &ObjectGraph, id: ValueId) -> String {
    match graph.get(id) {
        Value::Object(o) => match graph.get(o.callable) {
            Value::Global(g) => g.qualified(),
            other => format!("made by a {}", other.type_name()),
        },
        Value::Global(g) => format!("the global {}", g.qualified()),
        other => other.type_name().to_string(),
    }
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
