//! The pickler: writes an object tree back as a protocol-2 pickle, the way `torch.save` does.
//!
//! Rewriting a training checkpoint must keep everything the user did not ask to drop —
//! optimizer state, callbacks, OmegaConf hyper-parameters — so every value the reader built is
//! re-emitted: containers and scalars as Python's pickler writes them, opaque objects as the
//! same `REDUCE`/`NEWOBJ`/`BUILD` sequence that created them (never interpreted), tensors as
//! torch's `_rebuild_tensor_v2` calls over storage persistent ids. Shared values are written
//! once and referenced through the memo, so tied weights stay tied and cycles stay cycles.
//! (Tensor subclasses restored through `_rebuild_from_type_v2` are written as plain tensors or
//! parameters.)

use crate::error::{Error, Result};
use crate::tensor::{StorageRef, TensorKind, TensorRef};
use crate::value::{ObjectGraph, ObjectKind, Value, ValueId};
use std::collections::HashMap;

/// Python's pickler batches APPENDS/SETITEMS by this many items.
const BATCH: usize = 1000;
/// Values nest no deeper than this when written (the reader's walk limit, with headroom).
const MAX_DEPTH: usize = 2000;

/// Writes one pickle.
pub struct Pickler<'g> {
    graph: &'g ObjectGraph,
    out: Vec<u8>,
    memo: HashMap<ValueId, u32>,
    /// Memo index of each global written, by module then name (looked up without building
    /// a key: every tensor writes two or three globals), and how many there are.
    globals: HashMap<String, HashMap<String, u32>>,
    global_count: usize,
    /// Output key for each storage value (writers renumber storages densely).
    storage_keys: &'g dyn Fn(ValueId) -> String,
}

impl<'g> Pickler<'g> {
    /// A pickler over `graph`; `storage_keys` names each storage in the output archive.
    pub fn new(graph: &'g ObjectGraph, storage_keys: &'g dyn Fn(ValueId) -> String) -> Self {
        Pickler {
            graph,
            out: Vec::new(),
            memo: HashMap::new(),
            globals: HashMap::new(),
            global_count: 0,
            storage_keys,
        }
    }

    /// Pickle `root` (protocol 2) and return the bytes.
    pub fn dump(mut self, root: ValueId) -> Result<Vec<u8>> {
        self.out.extend_from_slice(&[0x80, 2]);
        self.value(root, 0)?;
        self.out.push(b'.');
        Ok(self.out)
    }

    fn put(&mut self, id: Option<ValueId>) -> u32 {
        let index = (self.memo.len() + self.global_count) as u32;
        if index < 256 {
            self.out.extend_from_slice(&[b'q', index as u8]);
        } else {
            self.out.push(b'r');
            self.out.extend_from_slice(&index.to_le_bytes());
        }
        if let Some(id) = id {
            self.memo.insert(id, index);
        }
        index
    }

    fn get(&mut self, index: u32) {
        if index < 256 {
            self.out.extend_from_slice(&[b'h', index as u8]);
        } else {
            self.out.push(b'j');
            self.out.extend_from_slice(&index.to_le_bytes());
        }
    }

    fn int(&mut self, v: i64) {
        match v {
            0..=0xff => self.out.extend_from_slice(&[b'K', v as u8]),
            0x100..=0xffff => {
                self.out.push(b'M');
                self.out.extend_from_slice(&(v as u16).to_le_bytes());
            }
            _ if i32::try_from(v).is_ok() => {
                self.out.push(b'J');
                self.out.extend_from_slice(&(v as i32).to_le_bytes());
            }
            _ => {
                let mut bytes = v.to_le_bytes().to_vec();
                // Minimal two's complement, as Python's encode_long does.
                while bytes.len() > 1 {
                    let last = bytes[bytes.len() - 1];
                    let prev = bytes[bytes.len() - 2];
                    if (last == 0 && prev & 0x80 == 0) || (last == 0xff && prev & 0x80 != 0) {
                        bytes.pop();
                    } else {
                        break;
                    }
                }
                self.long(&bytes);
            }
        }
    }

    fn long(&mut self, le: &[u8]) {
        if le.len() < 256 {
            self.out.extend_from_slice(&[0x8a, le.len() as u8]);
        } else {
            self.out.push(0x8b);
            self.out.extend_from_slice(&(le.len() as u32).to_le_bytes());
        }
        self.out.extend_from_slice(le);
    }

    fn str(&mut self, s: &str) {
        self.out.push(b'X');
        self.out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
    }

    /// `GLOBAL`, with Python 3 module names mapped back to Python 2 for protocol 2.
    fn global(&mut self, module: &str, name: &str) {
        if let Some(&i) = self.globals.get(module).and_then(|names| names.get(name)) {
            self.get(i);
            return;
        }
        let written = match module {
            "builtins" => "__builtin__",
            "copyreg" => "copy_reg",
            other => other,
        };
        self.out.push(b'c');
        self.out.extend_from_slice(written.as_bytes());
        self.out.push(b'\n');
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(b'\n');
        let index = self.put(None);
        self.globals
            .entry(module.to_string())
            .or_default()
            .insert(name.to_string(), index);
        self.global_count += 1;
    }

    fn tuple_of(&mut self, items: &[ValueId], depth: usize) -> Result<()> {
        match items.len() {
            0 => self.out.push(b')'),
            n @ 1..=3 => {
                for &i in items {
                    self.value(i, depth + 1)?;
                }
                self.out.push(0x84 + n as u8);
            }
            _ => {
                self.out.push(b'(');
                for &i in items {
                    self.value(i, depth + 1)?;
                }
                self.out.push(b't');
            }
        }
        Ok(())
    }

    fn appends(&mut self, items: &[ValueId], depth: usize) -> Result<()> {
        for batch in items.chunks(BATCH) {
            self.out.push(b'(');
            for &i in batch {
                self.value(i, depth + 1)?;
            }
            self.out.push(b'e');
        }
        Ok(())
    }

    fn setitems(&mut self, items: &[(ValueId, ValueId)], depth: usize) -> Result<()> {
        for batch in items.chunks(BATCH) {
            self.out.push(b'(');
            for &(k, v) in batch {
                self.value(k, depth + 1)?;
                self.value(v, depth + 1)?;
            }
            self.out.push(b'u');
        }
        Ok(())
    }

    /// `_codecs.encode(latin1_text, 'latin1')`: how protocol 2 writes `bytes`.
    fn bytes(&mut self, b: &[u8]) {
        if b.is_empty() {
            self.global("builtins", "bytes");
            self.out.push(b')');
        } else {
            self.global("_codecs", "encode");
            let text: String = b.iter().map(|&c| c as char).collect();
            self.str(&text);
            self.str("latin1");
            self.out.push(0x86);
        }
        self.out.push(b'R');
    }

    fn empty_ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.out.push(b')');
        self.out.push(b'R');
    }

    fn storage(&mut self, id: ValueId, s: &StorageRef) {
        // ('storage', StorageClass, key, location, numel) as a persistent id.
        self.out.push(b'(');
        self.str("storage");
        let class = s.dtype.storage_class().filter(|_| !s.untyped);
        self.global("torch", class.unwrap_or("UntypedStorage"));
        self.str(&(self.storage_keys)(id));
        self.str(&s.location);
        let numel = if class.is_some() {
            s.numel
        } else {
            s.nbytes().unwrap_or(s.numel)
        };
        self.int(numel as i64);
        self.out.extend_from_slice(b"tQ");
        self.put(Some(id));
    }

    fn dims(&mut self, dims: &[u64]) {
        match dims.len() {
            0 => self.out.push(b')'),
            n => {
                if n > 3 {
                    self.out.push(b'(');
                }
                for &d in dims {
                    self.int(d as i64);
                }
                self.out.push(if n > 3 { b't' } else { 0x84 + n as u8 });
            }
        }
    }

    fn tensor(&mut self, t: &TensorRef, depth: usize) -> Result<()> {
        let parameter = t.kind == TensorKind::Parameter;
        if parameter {
            self.global("torch._utils", "_rebuild_parameter");
        }
        let (storage_dtype, untyped) = match self.graph.get(t.storage) {
            Value::Storage(s) => (s.dtype, s.untyped),
            _ => return Err(Error::torch("tensor without a storage")),
        };
        let v3 = untyped || t.dtype.storage_class().is_none() || storage_dtype != t.dtype;
        self.global(
            "torch._utils",
            if v3 {
                "_rebuild_tensor_v3"
            } else {
                "_rebuild_tensor_v2"
            },
        );
        self.out.push(b'(');
        self.value(t.storage, depth + 1)?;
        self.int(t.storage_offset as i64);
        self.dims(&t.shape);
        self.dims(&t.strides);
        self.out.push(if t.requires_grad && !parameter {
            0x88
        } else {
            0x89
        });
        self.empty_ordered_dict();
        if v3 {
            self.global("torch", t.dtype.torch_name());
        }
        if !t.flags.is_plain() {
            // The metadata argument, as torch writes it: the view flags that are set.
            self.out.push(b'}');
            for (key, on) in [("conj", t.flags.conj), ("neg", t.flags.neg)] {
                if on {
                    self.str(key);
                    self.out.extend_from_slice(&[0x88, b's']);
                }
            }
        }
        self.out.extend_from_slice(b"tR");
        if parameter {
            self.out.push(if t.requires_grad { 0x88 } else { 0x89 });
            self.empty_ordered_dict();
            self.out.extend_from_slice(&[0x87, b'R']);
        }
        Ok(())
    }

    fn value(&mut self, id: ValueId, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(Error::Limit(format!(
                "object tree nests deeper than {MAX_DEPTH} levels"
            )));
        }
        if let Some(&index) = self.memo.get(&id) {
            self.get(index);
            return Ok(());
        }
        let graph = self.graph;
        match graph.get(id) {
            Value::None => self.out.push(b'N'),
            Value::Bool(b) => self.out.push(if *b { 0x88 } else { 0x89 }),
            Value::Int(i) => self.int(*i),
            Value::BigInt(b) => self.long(b),
            Value::Float(f) => {
                self.out.push(b'G');
                self.out.extend_from_slice(&f.to_be_bytes());
            }
            Value::Str(s) => {
                self.str(s);
                self.put(Some(id));
            }
            Value::Bytes(b) => {
                self.bytes(b);
                self.put(Some(id));
            }
            Value::ByteArray(b) => {
                self.global("builtins", "bytearray");
                self.bytes(b);
                self.out.extend_from_slice(&[0x85, b'R']);
                self.put(Some(id));
            }
            Value::List(items) => {
                self.out.push(b']');
                self.put(Some(id));
                self.appends(items, depth)?;
            }
            Value::Tuple(items) => {
                self.tuple_of(items, depth)?;
                // A tuple may have been memoised while its items were written (a cycle
                // through a list); Python then pops it and reuses the memo entry.
                if let Some(&index) = self.memo.get(&id) {
                    self.out.push(b'0');
                    self.get(index);
                } else {
                    self.put(Some(id));
                }
            }
            Value::Dict(d) => {
                self.out.push(b'}');
                self.put(Some(id));
                self.setitems(&d.entries, depth)?;
            }
            Value::Set(items) | Value::FrozenSet(items) => {
                let frozen = matches!(graph.get(id), Value::FrozenSet(_));
                self.global("builtins", if frozen { "frozenset" } else { "set" });
                self.out.push(b']');
                self.appends(items, depth)?;
                self.out.extend_from_slice(&[0x85, b'R']);
                self.put(Some(id));
            }
            Value::Global(g) => self.global(&g.module, &g.name),
            Value::Object(o) => {
                match o.kind {
                    ObjectKind::Reduce => {
                        self.value(o.callable, depth + 1)?;
                        self.value(o.args, depth + 1)?;
                        self.out.push(b'R');
                    }
                    ObjectKind::NewObj => {
                        self.value(o.callable, depth + 1)?;
                        self.value(o.args, depth + 1)?;
                        self.out.push(0x81);
                    }
                    ObjectKind::NewObjEx => {
                        // Protocol 2 has no NEWOBJ_EX: Python writes copyreg.__newobj_ex__.
                        self.global("copyreg", "__newobj_ex__");
                        let parts = graph.as_seq(o.args).unwrap_or(&[]).to_vec();
                        self.out.push(b'(');
                        self.value(o.callable, depth + 1)?;
                        for p in parts {
                            self.value(p, depth + 1)?;
                        }
                        self.out.extend_from_slice(b"tR");
                    }
                    ObjectKind::Inst => {
                        self.out.push(b'(');
                        self.value(o.callable, depth + 1)?;
                        for &a in graph.as_seq(o.args).unwrap_or(&[]) {
                            self.value(a, depth + 1)?;
                        }
                        self.out.push(b'o');
                    }
                }
                self.put(Some(id));
                if !o.list_items.is_empty() {
                    self.appends(&o.list_items, depth)?;
                }
                if !o.dict_items.is_empty() {
                    self.setitems(&o.dict_items, depth)?;
                }
                if let Some(state) = o.state {
                    self.value(state, depth + 1)?;
                    self.out.push(b'b');
                }
            }
            Value::PersistentId(pid) => {
                self.value(*pid, depth + 1)?;
                self.out.push(b'Q');
                self.put(Some(id));
            }
            Value::Storage(s) => self.storage(id, s),
            Value::Tensor(t) => {
                self.tensor(t, depth)?;
                self.put(Some(id));
            }
        }
        Ok(())
    }
}
