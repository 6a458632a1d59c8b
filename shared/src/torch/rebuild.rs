//! Torch's pickle vocabulary: storage persistent ids and tensor rebuild functions.
//!
//! `torch.save` pickles a tensor as `REDUCE(torch._utils._rebuild_tensor_v2, (storage,
//! offset, size, stride, requires_grad, hooks[, metadata]))` and a storage as a persistent id
//! `('storage', StorageClass, key, location, numel[, view])`. These hooks recognise exactly
//! those (and the parameter / subclass / v3 variants) and validate every view against its
//! storage's bounds, so a tensor reference that survives reading is always readable.

use crate::dtype::DType;
use crate::pickle::Hooks;
use crate::tensor::{DataLocation, StorageRef, TensorKind, TensorRef, ViewFlags};
use crate::value::{ObjectGraph, Value, ValueId};
use std::collections::HashMap;

/// Resolves a storage key to where its bytes are.
pub(crate) trait StorageLocator {
    /// Locate storage `key` of `nbytes` bytes, or explain why it cannot be.
    /// The CRC-32 comes along when the container has one for exactly those bytes.
    fn locate(&mut self, key: &str, nbytes: u64) -> Result<(DataLocation, Option<u32>), String>;
}

/// A legacy storage view: `(view value, root key, element offset)`, resolved once roots are located.
pub(crate) struct PendingView {
    pub view: ValueId,
    pub root: ValueId,
    pub offset: u64,
}

pub(crate) struct TorchHooks<L: StorageLocator> {
    locator: L,
    storages: HashMap<String, ValueId>,
    pub views: Vec<PendingView>,
}

impl<L: StorageLocator> TorchHooks<L> {
    pub fn new(locator: L) -> Self {
        TorchHooks {
            locator,
            storages: HashMap::new(),
            views: Vec::new(),
        }
    }

    /// Storage values by key, for the legacy reader to locate after the pickle.
    pub fn storages(&self) -> &HashMap<String, ValueId> {
        &self.storages
    }
}

fn storage_dtype(graph: &ObjectGraph, id: ValueId) -> Result<DType, String> {
    let g = graph
        .as_global(id)
        .ok_or("storage type in a persistent id is not a class")?;
    if !g.module.starts_with("torch") {
        return Err(format!("'{}' is not a torch storage class", g.qualified()));
    }
    if g.name == "UntypedStorage" {
        return Ok(DType::UInt8);
    }
    DType::from_storage_class(&g.name)
        .ok_or_else(|| format!("unknown storage class '{}'", g.qualified()))
}

fn int_arg(graph: &ObjectGraph, id: ValueId, what: &str) -> Result<u64, String> {
    let v = graph
        .as_int(id)
        .ok_or_else(|| format!("{what} is a {}, not an int", graph.get(id).type_name()))?;
    u64::try_from(v).map_err(|_| format!("{what} is negative ({v})"))
}

fn dims(graph: &ObjectGraph, id: ValueId, what: &str) -> Result<Vec<u64>, String> {
    let items = graph
        .as_seq(id)
        .or_else(|| match graph.get(id) {
            // torch.Size pickled as REDUCE(torch.Size, ([...],))
            Value::Object(o) => graph
                .as_seq(o.args)
                .and_then(|a| a.first())
                .and_then(|&l| graph.as_seq(l)),
            _ => None,
        })
        .ok_or_else(|| format!("{what} is a {}, not a tuple", graph.get(id).type_name()))?;
    if items.len() > 64 {
        return Err(format!("{what} has {} dimensions (limit 64)", items.len()));
    }
    items.iter().map(|&i| int_arg(graph, i, what)).collect()
}

impl<L: StorageLocator> TorchHooks<L> {
    fn rebuild_tensor(
        &mut self,
        graph: &mut ObjectGraph,
        args: &[ValueId],
        dtype_arg: Option<ValueId>,
        func: &str,
    ) -> Result<ValueId, String> {
        if args.len() < 4 {
            return Err(format!("{func} called with {} arguments", args.len()));
        }
        let storage_id = args[0];
        let Value::Storage(storage) = graph.get(storage_id) else {
            return Err(format!(
                "{func}: argument 0 is a {}, not a storage",
                graph.get(storage_id).type_name()
            ));
        };
        let storage_nbytes = storage.nbytes().ok_or("storage size overflows")?;
        let mut dtype = storage.dtype;
        if let Some(d) = dtype_arg {
            let g = graph
                .as_global(d)
                .ok_or(format!("{func}: dtype is not a torch dtype"))?;
            dtype = DType::from_torch_name(&g.name)
                .filter(|_| g.module == "torch")
                .ok_or_else(|| format!("{func}: unknown dtype '{}'", g.qualified()))?;
        }
        let offset = int_arg(graph, args[1], "storage offset")?;
        let shape = dims(graph, args[2], "size")?;
        let strides = dims(graph, args[3], "stride")?;
        if shape.len() != strides.len() {
            return Err(format!(
                "{func}: size has {} dimensions but stride has {}",
                shape.len(),
                strides.len()
            ));
        }
        let numel = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        if numel.and_then(|n| n.checked_mul(dtype.bits())).is_none() {
            return Err(format!("{func}: shape {shape:?} overflows"));
        }
        let span = TensorRef::storage_span(&shape, &strides, offset)
            .and_then(|elems| elems.checked_mul(dtype.bits()))
            .map(|bits| bits.div_ceil(8))
            .ok_or_else(|| format!("{func}: view {shape:?}/{strides:?}+{offset} overflows"))?;
        if span > storage_nbytes {
            let key = &storage.key;
            return Err(format!(
                "tensor of shape {shape:?} (stride {strides:?}, offset {offset}) needs {span} bytes but its storage '{key}' holds {storage_nbytes}"
            ));
        }
        let requires_grad = args
            .get(4)
            .and_then(|&r| graph.as_int(r))
            .is_some_and(|v| v != 0);
        // `_rebuild_tensor_v2`'s metadata: torch's view flags, which change the values.
        let mut flags = ViewFlags::default();
        let metadata = if dtype_arg.is_some() {
            args.get(7)
        } else {
            args.get(6)
        };
        if let Some(&m) = metadata {
            for &(k, v) in graph.dict_items(m).unwrap_or(&[]) {
                let on = graph.as_int(v).is_some_and(|b| b != 0);
                match graph.as_str(k) {
                    Some("neg") => flags.neg = on,
                    Some("conj") => flags.conj = on,
                    // torch sets its own metadata keys; one we do not know might change the
                    // values too, so it is refused rather than ignored.
                    _ if !on => {}
                    other => {
                        return Err(format!(
                            "{func}: tensor metadata '{}' (a view flag ldmkit does not know)",
                            other.unwrap_or("?")
                        ))
                    }
                }
            }
        }
        Ok(graph.push(Value::Tensor(Box::new(TensorRef {
            storage: storage_id,
            dtype,
            shape,
            strides,
            storage_offset: offset,
            requires_grad,
            kind: TensorKind::Tensor,
            flags,
        }))))
    }

    fn reduce_named(
        &mut self,
        graph: &mut ObjectGraph,
        module: &str,
        name: &str,
        args: ValueId,
    ) -> Result<Option<ValueId>, String> {
        let Some(a) = graph.as_seq(args).map(<[ValueId]>::to_vec) else {
            return Ok(None);
        };
        let func = format!("{module}.{name}");
        match (module, name) {
            ("torch._utils", "_rebuild_tensor") | ("torch._utils", "_rebuild_tensor_v2") => {
                self.rebuild_tensor(graph, &a, None, &func).map(Some)
            }
            ("torch._utils", "_rebuild_tensor_v3") => {
                let dtype = *a.get(6).ok_or(format!("{func} called without a dtype"))?;
                self.rebuild_tensor(graph, &a, Some(dtype), &func).map(Some)
            }
            ("torch._utils", "_rebuild_parameter")
            | ("torch._utils", "_rebuild_parameter_with_state")
            | ("torch._utils", "_rebuild_parameter_v2") => {
                let data = *a.first().ok_or(format!("{func} called without data"))?;
                let requires_grad = a
                    .get(1)
                    .and_then(|&r| graph.as_int(r))
                    .is_some_and(|v| v != 0);
                let Value::Tensor(t) = graph.get(data) else {
                    // A parameter around something we could not rebuild stays opaque.
                    return Ok(None);
                };
                let mut t = t.clone();
                t.kind = TensorKind::Parameter;
                t.requires_grad = requires_grad;
                Ok(Some(graph.push(Value::Tensor(t))))
            }
            ("torch._tensor", "_rebuild_from_type_v2")
            | ("torch._tensor", "_rebuild_from_type") => {
                let (Some(&f), Some(&ty), Some(&inner)) = (a.first(), a.get(1), a.get(2)) else {
                    return Ok(None);
                };
                let Some(inner_result) = self.reduce(graph, f, inner)? else {
                    return Ok(None);
                };
                let Value::Tensor(t) = graph.get(inner_result) else {
                    return Ok(Some(inner_result));
                };
                let mut t = t.clone();
                if let Some(g) = graph.as_global(ty) {
                    t.kind = match (g.module.as_str(), g.name.as_str()) {
                        ("torch", "Tensor") | ("torch._tensor", "Tensor") => t.kind,
                        ("torch.nn.parameter", "Parameter") => TensorKind::Parameter,
                        _ => TensorKind::Subclass(g.qualified()),
                    };
                }
                Ok(Some(graph.push(Value::Tensor(t))))
            }
            _ => Ok(None),
        }
    }
}

impl<L: StorageLocator> TorchHooks<L> {
    /// `Tensor.__setstate__` (what `BUILD` on a tensor runs; the `weights_only` loader calls
    /// `set_` directly): a 4-tuple re-points the view (`set_(storage, offset, size, stride)`),
    /// a 5-tuple replaces the data with its first item, a 3-tuple sets `requires_grad`.
    /// The tensor is changed in place, as torch changes it, so every reference sees it.
    fn set_state(
        &mut self,
        graph: &mut ObjectGraph,
        target: ValueId,
        state: ValueId,
    ) -> Result<(), String> {
        let Value::Tensor(old) = graph.get(target) else {
            return Err(format!(
                "BUILD state on a {} (torch would call its __setstate__)",
                graph.get(target).type_name()
            ));
        };
        let old = (**old).clone();
        let items = graph
            .as_seq(state)
            .map(<[ValueId]>::to_vec)
            .ok_or("BUILD state on a tensor is not a tuple")?;
        let mut new = match items.len() {
            4 => {
                let rebuilt = self.rebuild_tensor(graph, &items, None, "Tensor.set_")?;
                let Value::Tensor(t) = graph.get(rebuilt) else {
                    unreachable!("rebuild_tensor makes tensors")
                };
                let mut t = (**t).clone();
                t.requires_grad = old.requires_grad;
                t
            }
            5 => match graph.get(items[0]) {
                Value::Tensor(t) => {
                    let mut t = (**t).clone();
                    t.requires_grad = graph.as_int(items[3]).is_some_and(|v| v != 0);
                    t
                }
                other => {
                    return Err(format!(
                        "BUILD state on a tensor sets its data to a {}",
                        other.type_name()
                    ))
                }
            },
            3 => {
                let mut t = old.clone();
                t.requires_grad = graph.as_int(items[0]).is_some_and(|v| v != 0);
                t
            }
            n => return Err(format!("BUILD state on a tensor is a {n}-tuple")),
        };
        new.kind = old.kind;
        *graph.get_mut(target) = Value::Tensor(Box::new(new));
        Ok(())
    }
}

impl<L: StorageLocator> Hooks for TorchHooks<L> {
    fn build_tensor(
        &mut self,
        graph: &mut ObjectGraph,
        target: ValueId,
        state: ValueId,
    ) -> Result<Option<ValueId>, String> {
        self.set_state(graph, target, state)?;
        Ok(None)
    }

    fn persistent_load(
        &mut self,
        graph: &mut ObjectGraph,
        pid: ValueId,
    ) -> Result<ValueId, String> {
        let Some(items) = graph.as_seq(pid).map(<[ValueId]>::to_vec) else {
            return Ok(graph.push(Value::PersistentId(pid)));
        };
        if items.first().and_then(|&i| graph.as_str(i)) != Some("storage") {
            // ('module', ...) ids of pickled nn.Module classes and the like stay opaque.
            return Ok(graph.push(Value::PersistentId(pid)));
        }
        if items.len() < 5 {
            return Err(format!(
                "storage persistent id has {} fields, expected 5",
                items.len()
            ));
        }
        let dtype = storage_dtype(graph, items[1])?;
        let untyped = graph
            .as_global(items[1])
            .is_some_and(|g| g.name == "UntypedStorage");
        let key = match graph.get(items[2]) {
            Value::Str(s) => s.to_string(),
            Value::Int(i) => i.to_string(),
            other => return Err(format!("storage key is a {}", other.type_name())),
        };
        let location = graph.as_str(items[3]).unwrap_or("?").to_string();
        let numel = int_arg(graph, items[4], "storage size")?;
        let root = match self.storages.get(&key) {
            Some(&id) => id,
            None => {
                let nbytes = numel
                    .checked_mul(dtype.size())
                    .ok_or_else(|| format!("storage '{key}' size overflows"))?;
                let (data, crc32) = self.locator.locate(&key, nbytes)?;
                let id = graph.push(Value::Storage(Box::new(StorageRef {
                    key: key.clone(),
                    dtype,
                    numel,
                    location,
                    data,
                    untyped,
                    crc32,
                })));
                self.storages.insert(key.clone(), id);
                id
            }
        };
        // Legacy storage views: (view_key, offset, size) into the root storage.
        if let Some(&view) = items.get(5) {
            if let Some(v) = graph.as_seq(view).map(<[ValueId]>::to_vec) {
                if v.len() == 3 {
                    let view_key = graph.key_segment(v[0]);
                    let offset = int_arg(graph, v[1], "storage view offset")?;
                    let size = int_arg(graph, v[2], "storage view size")?;
                    if offset.checked_add(size).is_none_or(|e| e > numel) {
                        return Err(format!(
                            "storage view '{view_key}' lies outside storage '{key}'"
                        ));
                    }
                    let id = graph.push(Value::Storage(Box::new(StorageRef {
                        key: view_key,
                        dtype,
                        numel: size,
                        location: graph.as_str(items[3]).unwrap_or("?").to_string(),
                        data: DataLocation::Pending,
                        untyped,
                        crc32: None,
                    })));
                    self.views.push(PendingView {
                        view: id,
                        root,
                        offset,
                    });
                    return Ok(id);
                }
            }
        }
        Ok(root)
    }

    fn reduce(
        &mut self,
        graph: &mut ObjectGraph,
        callable: ValueId,
        args: ValueId,
    ) -> Result<Option<ValueId>, String> {
        let Some(g) = graph.as_global(callable) else {
            return Ok(None);
        };
        let (module, name) = (g.module.clone(), g.name.clone());
        self.reduce_named(graph, &module, &name, args)
    }
}
