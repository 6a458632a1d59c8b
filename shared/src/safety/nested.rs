//! Nested pickles: data that a load unpickles while it runs.
//!
//! Attackers hide a payload one level down — `torch.storage._load_from_bytes(b'...')`,
//! `pickle.loads(_codecs.encode('...', 'latin1'))` — where a scanner reading only the outer
//! pickle sees one call. (Plain `pickle.dumps` of a tensor uses `_load_from_bytes` too, with a
//! whole `torch.save` file inside.) When the inner bytes are in the file — a bytes literal, or
//! bytes built by calls with literal arguments — we scan them with the same non-executing
//! machinery, recursively within the limits, and report their globals with the path of the
//! value that loads them: `state_dict/x → nested pickle → posix.system`.

use crate::pickle::{Import, Limits};
use crate::source::MemSource;
use crate::value::{ObjectGraph, ObjectKind, Value, ValueId};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Callables whose first argument is pickled (or `torch.save`d) data, loaded when they run.
const LOADERS: &[(&str, &str)] = &[
    ("torch.storage", "_load_from_bytes"),
    ("torch", "load"),
    ("torch.serialization", "load"),
    ("torch.serialization", "_load"),
    ("pickle", "loads"),
    ("pickle", "_loads"),
    ("pickle", "load"),
    ("_pickle", "loads"),
    ("_pickle", "load"),
    ("dill", "loads"),
    ("dill._dill", "loads"),
    ("cloudpickle", "loads"),
    ("numpy", "loads"),
    ("joblib", "load"),
];

/// How deep nested loads are followed; deeper ones are reported as such.
const MAX_DEPTH: u32 = 4;

/// The globals that nested loads in `graph` would import, each with its `via` path.
pub(crate) fn nested_imports(
    graph: &ObjectGraph,
    root: Option<ValueId>,
    limits: Limits,
    depth: u32,
) -> Vec<Import> {
    let loads: Vec<(ValueId, Vec<u8>)> = graph
        .iter()
        .filter_map(|(id, v)| match v {
            Value::Object(o) if o.kind == ObjectKind::Reduce && is_loader(graph, o.callable) => {
                let arg = *graph.as_seq(o.args)?.first()?;
                literal_bytes(graph, arg, 0).map(|b| (id, b))
            }
            _ => None,
        })
        .collect();
    if loads.is_empty() {
        return Vec::new();
    }
    let paths = root
        .map(|r| paths_to(graph, r, loads.iter().map(|(id, _)| *id).collect()))
        .unwrap_or_default();
    let mut out = Vec::new();
    for (id, bytes) in loads {
        let path = paths
            .get(&id)
            .cloned()
            .unwrap_or_else(|| "(a value outside the tree)".into());
        let here = format!("{path} → nested pickle");
        if depth >= MAX_DEPTH {
            out.push(too_deep(&here));
            continue;
        }
        let inner = crate::scan::scan_nested(Arc::new(MemSource::new(bytes)), limits, depth + 1);
        for mut imp in inner {
            imp.via = Some(match imp.via.take() {
                None => here.clone(),
                Some(v) => format!("{here} → {v}"),
            });
            out.push(imp);
        }
    }
    out
}

fn too_deep(via: &str) -> Import {
    Import {
        global: crate::value::Global::new("?", "?"),
        written: None,
        computed_by: Some(format!("nested loads deeper than {MAX_DEPTH} levels")),
        via: Some(via.to_string()),
        count: 1,
        first_offset: 0,
    }
}

fn is_loader(graph: &ObjectGraph, callable: ValueId) -> bool {
    graph
        .as_global(callable)
        .is_some_and(|g| LOADERS.iter().any(|&(m, n)| g.module == m && g.name == n))
}

/// Bytes a value evaluates to without running anything unknown: a bytes literal, or
/// `_codecs.encode(str[, encoding])`, `io.BytesIO(...)`, `bytes(...)`, `bytearray(...)` over one.
fn literal_bytes(graph: &ObjectGraph, id: ValueId, depth: u32) -> Option<Vec<u8>> {
    if depth > 8 {
        return None;
    }
    match graph.get(id) {
        Value::Bytes(b) | Value::ByteArray(b) => Some(b.to_vec()),
        Value::Object(o) => {
            let g = graph.as_global(o.callable)?;
            let args = graph.as_seq(o.args)?;
            match (g.module.as_str(), g.name.as_str()) {
                ("_codecs", "encode") | ("codecs", "encode") => {
                    let text = graph.as_str(*args.first()?)?;
                    let encoding = match args.get(1) {
                        Some(&e) => graph.as_str(e)?.to_ascii_lowercase().replace('_', "-"),
                        None => "utf-8".into(),
                    };
                    match encoding.as_str() {
                        "latin1" | "latin-1" | "iso-8859-1" | "iso8859-1" | "l1" => {
                            text.chars().map(|c| u8::try_from(c as u32).ok()).collect()
                        }
                        "utf-8" | "utf8" => Some(text.as_bytes().to_vec()),
                        _ => None,
                    }
                }
                ("io", "BytesIO")
                | ("_io", "BytesIO")
                | ("builtins", "bytes")
                | ("builtins", "bytearray") => literal_bytes(graph, *args.first()?, depth + 1),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The tensor-style path (dict keys and list indices joined by `/`) of each target, as first
/// reached from `root`; `(root)` for the root itself.
fn paths_to(
    graph: &ObjectGraph,
    root: ValueId,
    mut targets: HashSet<ValueId>,
) -> HashMap<ValueId, String> {
    let mut found = HashMap::new();
    let mut seen = HashSet::new();
    // Breadth first, so the shortest path names a shared value.
    let mut queue = std::collections::VecDeque::from([(root, String::new())]);
    while let Some((id, path)) = queue.pop_front() {
        if targets.is_empty() || seen.len() > 1_000_000 {
            break;
        }
        if !seen.insert(id) {
            continue;
        }
        if targets.remove(&id) {
            let shown = if path.is_empty() {
                "(root)".to_string()
            } else {
                path.clone()
            };
            found.insert(id, shown);
        }
        let join = |seg: String| {
            if path.is_empty() {
                seg
            } else {
                format!("{path}/{seg}")
            }
        };
        match graph.get(id) {
            Value::Dict(d) => {
                for &(k, v) in &d.entries {
                    queue.push_back((v, join(graph.key_segment(k))));
                }
            }
            Value::List(items) => {
                for (i, &v) in items.iter().enumerate() {
                    queue.push_back((v, join(i.to_string())));
                }
            }
            Value::Tuple(items) => {
                for (i, &v) in items.iter().enumerate() {
                    queue.push_back((v, join(i.to_string())));
                }
            }
            Value::Set(items) | Value::FrozenSet(items) => {
                for (i, &v) in items.iter().enumerate() {
                    queue.push_back((v, join(i.to_string())));
                }
            }
            Value::Object(o) => {
                for &(k, v) in &o.dict_items {
                    queue.push_back((v, join(graph.key_segment(k))));
                }
                for (i, &v) in o.list_items.iter().enumerate() {
                    queue.push_back((v, join(i.to_string())));
                }
                if let Some(state) = o.state {
                    queue.push_back((state, path.clone()));
                }
                // A call's arguments: where a nested load sits inside another call.
                queue.push_back((o.args, path.clone()));
            }
            _ => {}
        }
    }
    found
}
