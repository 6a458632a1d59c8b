//! Every opcode of pickle protocols 0–5, checked against what CPython loads.
//!
//! tests/fixtures/pickles/generate.py writes pickles (Python's own, protocols 0–5, and
//! hand-assembled ones for opcodes Python's pickler never emits) and `expected.json`: a
//! canonical rendering of what `pickle.loads` returned. Here the non-executing machine reads
//! the same bytes and we render its object tree by the same rules. Where Python would call a
//! harmless builtin (`set(...)`, `_codecs.encode(...)`), the renderer — not the machine —
//! applies its meaning, so the comparison shows the tree carries everything needed.

use ldmkit_core::pickle::{bigint_to_decimal, DefaultHooks, Limits, Pickler, Unpickler};
use ldmkit_core::source::{Cursor, MemSource, Source};
use ldmkit_core::value::{python_float_repr, ObjectGraph, ObjectKind, Value, ValueId};
use serde_json::{json, Value as J};
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/pickles")
}

/// The copyreg extension codes hand_ext.pkl was written with.
fn extension(code: &str) -> &'static str {
    match code {
        "42" => "fractions.Fraction",
        "4660" => "collections.OrderedDict",
        "305419896" => "builtins.complex",
        other => panic!("unregistered extension code {other}"),
    }
}

struct Render<'a> {
    g: &'a ObjectGraph,
}

impl Render<'_> {
    fn callable_name(&self, id: ValueId) -> String {
        match self.g.get(id) {
            Value::Global(g) if g.module == "copyreg._extension_registry" => {
                extension(&g.name).to_string()
            }
            Value::Global(g) => g.qualified(),
            other => format!("<{}>", other.type_name()),
        }
    }

    fn items(&self, ids: &[ValueId]) -> Vec<J> {
        ids.iter().map(|&i| self.render(i)).collect()
    }

    fn sorted(&self, ids: &[ValueId]) -> Vec<J> {
        let mut v = self.items(ids);
        v.sort_by_key(|j| serde_json::to_string(j).unwrap());
        v
    }

    fn seq_arg(&self, args: ValueId, n: usize) -> Option<ValueId> {
        self.g.as_seq(args).and_then(|a| a.get(n).copied())
    }

    fn latin1(&self, id: ValueId) -> Vec<u8> {
        match self.g.get(id) {
            Value::Str(s) => s.chars().map(|c| c as u32 as u8).collect(),
            Value::Bytes(b) => b.to_vec(),
            Value::Object(_) => match self.render(id) {
                J::Object(m) if m.contains_key("bytes") => hex_decode(m["bytes"].as_str().unwrap()),
                other => panic!("not bytes: {other}"),
            },
            other => panic!("not bytes: {}", other.type_name()),
        }
    }

    fn render(&self, id: ValueId) -> J {
        match self.g.get(id) {
            Value::None => J::Null,
            Value::Bool(b) => json!(b),
            Value::Int(i) => json!({"int": i.to_string()}),
            Value::BigInt(b) => json!({"int": bigint_to_decimal(b)}),
            Value::Float(f) => json!({"float": python_float_repr(*f)}),
            Value::Str(s) => json!(s.as_ref()),
            Value::Bytes(b) => json!({"bytes": hex(b)}),
            Value::ByteArray(b) => json!({"bytearray": hex(b)}),
            Value::List(l) => json!({"list": self.items(l)}),
            Value::Tuple(t) => json!({"tuple": self.items(t)}),
            Value::Dict(d) => {
                json!({"dict": d.entries.iter().map(|&(k, v)| json!([self.render(k), self.render(v)])).collect::<Vec<_>>()})
            }
            Value::Set(s) => json!({"set": self.sorted(s)}),
            Value::FrozenSet(s) => json!({"frozenset": self.sorted(s)}),
            Value::PersistentId(p) => json!({"pid": self.render(*p)}),
            Value::Global(g) => json!({"global": g.qualified()}),
            Value::Object(o) => {
                let name = self.callable_name(o.callable);
                if o.kind != ObjectKind::Reduce {
                    return json!({"object": name});
                }
                let args = self
                    .g
                    .as_seq(o.args)
                    .map(<[ValueId]>::to_vec)
                    .unwrap_or_default();
                match name.as_str() {
                    "_codecs.encode" => json!({"bytes": hex(&self.latin1(args[0]))}),
                    "builtins.bytes" if args.is_empty() => json!({"bytes": ""}),
                    "builtins.bytearray" => match args.first() {
                        Some(&a) => json!({"bytearray": hex(&self.latin1(a))}),
                        None => json!({"bytearray": ""}),
                    },
                    "builtins.set" | "builtins.frozenset" => {
                        let kind = if name.ends_with("frozenset") {
                            "frozenset"
                        } else {
                            "set"
                        };
                        let items = args.first().and_then(|&a| self.g.as_seq(a)).unwrap_or(&[]);
                        json!({kind: self.sorted(items)})
                    }
                    "builtins.complex" => json!({"call": name, "args": self.render(o.args)}),
                    "copyreg._reconstructor" => {
                        json!({"object": self.callable_name(self.seq_arg(o.args, 0).unwrap())})
                    }
                    _ if self.g.dict_items(id).is_some() => {
                        json!({"dict": self.g.dict_items(id).unwrap().iter().map(|&(k, v)| json!([self.render(k), self.render(v)])).collect::<Vec<_>>()})
                    }
                    _ => json!({"object": name}),
                }
            }
            other => panic!("unexpected {}", other.type_name()),
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn every_opcode_matches_cpython() {
    let expected: J =
        serde_json::from_slice(&std::fs::read(dir().join("expected.json")).unwrap()).unwrap();
    let expected = expected.as_object().unwrap();
    assert!(expected.len() >= 13);
    for (file, want) in expected {
        let bytes = std::fs::read(dir().join(file)).unwrap();
        let src = MemSource::new(bytes);
        let mut graph = ObjectGraph::new();
        let mut unpickler = Unpickler::new(&mut graph, Limits::default());
        let mut cursor = Cursor::new(&src, 0, src.len());
        let root = unpickler
            .load(&mut cursor, &mut DefaultHooks)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(cursor.remaining(), 0, "{file}: bytes left after STOP");
        let got = Render { g: &graph }.render(root);
        assert_same_json(&got, want, file, "ldmkit", "cpython");
    }
}

/// A rendering that shows everything, including opaque calls' arguments and state, for
/// comparing a tree with its re-pickled self.
#[allow(clippy::only_used_in_recursion)]
fn deep(g: &ObjectGraph, id: ValueId, depth: usize) -> J {
    deep_in(g, id, depth, &mut std::collections::HashSet::new())
}

/// Cycles (OmegaConf nodes point at their parents) render as a marker where they close.
fn deep_in(
    g: &ObjectGraph,
    id: ValueId,
    depth: usize,
    path: &mut std::collections::HashSet<ValueId>,
) -> J {
    if !path.insert(id) {
        return json!("<cycle>");
    }
    let r = deep_node(g, id, depth, path);
    path.remove(&id);
    r
}

fn deep_node(
    g: &ObjectGraph,
    id: ValueId,
    depth: usize,
    path: &mut std::collections::HashSet<ValueId>,
) -> J {
    let path = std::cell::RefCell::new(path);
    let d = |i: ValueId| deep_in(g, i, depth + 1, &mut path.borrow_mut());
    let seq = |ids: &[ValueId]| ids.iter().map(|&i| d(i)).collect::<Vec<_>>();
    match g.get(id) {
        // Builtins with a value meaning (bytes, sets, OrderedDict) compare by that meaning:
        // protocol 2 spells bytes as `_codecs.encode(...)` where protocol 3+ has BINBYTES.
        Value::Object(_) if Render { g }.render(id).get("object").is_none() => {
            Render { g }.render(id)
        }
        // Protocol 2 spells NEWOBJ_EX as REDUCE(copyreg.__newobj_ex__, (cls, args, kwargs)).
        Value::Object(o) if matches!(g.as_global(o.callable), Some(c) if c.qualified() == "copyreg.__newobj_ex__") =>
        {
            let a = g.as_seq(o.args).unwrap();
            json!({
                "call": d(a[0]),
                "kind": "NewObjEx",
                "args": {"tuple": [d(a[1]), d(a[2])]},
                "state": o.state.map(d),
                "list": seq(&o.list_items),
                "dict": o.dict_items.iter().map(|&(k, v)| json!([d(k), d(v)])).collect::<Vec<_>>(),
            })
        }
        Value::Object(o) => json!({
            "call": d(o.callable),
            "kind": format!("{:?}", o.kind),
            "args": d(o.args),
            "state": o.state.map(d),
            "list": seq(&o.list_items),
            "dict": o.dict_items.iter().map(|&(k, v)| json!([d(k), d(v)])).collect::<Vec<_>>(),
        }),
        Value::List(l) => json!({"list": seq(l)}),
        Value::Tuple(t) => json!({"tuple": seq(t)}),
        Value::Set(_) | Value::FrozenSet(_) => Render { g }.render(id),
        Value::Dict(x) => {
            json!({"dict": x.entries.iter().map(|&(k, v)| json!([d(k), d(v)])).collect::<Vec<_>>()})
        }
        Value::PersistentId(p) => json!({"pid": d(*p)}),
        _ => Render { g }.render(id),
    }
}

fn parse(bytes: Vec<u8>) -> (ObjectGraph, ValueId) {
    let src = MemSource::new(bytes);
    let mut graph = ObjectGraph::new();
    let mut unpickler = Unpickler::new(&mut graph, Limits::default());
    let mut cursor = Cursor::new(&src, 0, src.len());
    let root = unpickler
        .load(&mut cursor, &mut DefaultHooks)
        .expect("parses");
    (graph, root)
}

fn repickle(graph: &ObjectGraph, root: ValueId) -> Vec<u8> {
    let keys = |_: ValueId| String::new();
    Pickler::new(graph, &keys).dump(root).expect("pickles")
}

#[test]
fn repickled_trees_are_identical() {
    let mut inputs: Vec<(String, Vec<u8>)> = Vec::new();
    for entry in std::fs::read_dir(dir()).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "pkl") {
            inputs.push((p.display().to_string(), std::fs::read(&p).unwrap()));
        }
    }
    // torch's own data.pkl files (Lightning training checkpoint with OmegaConf cycles,
    // shared storages and views, fp16), read without torch hooks so every call stays visible.
    for name in ["sd1_training.ckpt", "shared_views.pt", "release_fp16.ckpt"] {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures")
            .join(name);
        let src = MemSource::new(std::fs::read(&path).unwrap());
        let archive = ldmkit_core::container::zip::ZipArchive::open(&src).unwrap();
        let entry = archive
            .entries()
            .iter()
            .find(|e| e.name.ends_with("/data.pkl"))
            .unwrap()
            .clone();
        inputs.push((
            name.to_string(),
            archive.read(&src, &entry, 1 << 30).unwrap(),
        ));
    }
    assert!(inputs.len() >= 16);
    for (name, bytes) in inputs {
        let (g1, r1) = parse(bytes);
        let once = repickle(&g1, r1);
        let (g2, r2) = parse(once.clone());
        let (a, b) = (deep(&g1, r1, 0), deep(&g2, r2, 0));
        assert_same_json(&a, &b, &name, "read", "re-pickled");
        // Re-pickling reaches a fixed point: a tree read from our own output pickles to the
        // same bytes again (the first pass may respell protocol-3+ values for protocol 2).
        let twice = repickle(&g2, r2);
        let (g3, r3) = parse(twice.clone());
        assert_eq!(
            repickle(&g3, r3),
            twice,
            "{name}: re-pickling is not stable"
        );
    }
}

/// Fail with the first differing lines of the two renderings, pretty-printed.
fn assert_same_json(left: &J, right: &J, what: &str, left_name: &str, right_name: &str) {
    if left == right {
        return;
    }
    let (l, r) = (
        serde_json::to_string_pretty(left).unwrap(),
        serde_json::to_string_pretty(right).unwrap(),
    );
    let at = l
        .lines()
        .zip(r.lines())
        .position(|(x, y)| x != y)
        .unwrap_or(0);
    let show = |s: &str| {
        s.lines()
            .skip(at.saturating_sub(4))
            .take(10)
            .collect::<Vec<_>>()
            .join("\n")
    };
    panic!(
        "{what}: differs near line {at}\n--- {left_name}\n{}\n--- {right_name}\n{}",
        show(&l),
        show(&r)
    );
}
