//! The object tree of a checkpoint: what a pickle describes, without running it.
//!
//! Values live in one arena ([`ObjectGraph`]) and refer to each other by [`ValueId`], because
//! pickles share objects through the memo (a dict is memoised empty, filled later, and
//! referenced again) and can even build cycles. Anything Python would import and call becomes
//! an opaque [`Object`] naming its callable: kept, reported, and re-emitted verbatim by a
//! writer, never executed.

use crate::tensor::{StorageRef, TensorRef};
use std::collections::HashMap;

/// Index of a value in its [`ObjectGraph`].
pub type ValueId = u32;

/// A Python global (`module.name`) that a pickle imports.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Global {
    pub module: String,
    pub name: String,
}

impl Global {
    pub fn new(module: &str, name: &str) -> Self {
        Global {
            module: module.to_string(),
            name: name.to_string(),
        }
    }

    /// `module.name`, as scanners and torch's allowlist write it.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.module, self.name)
    }
}

/// How an opaque object was constructed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// `REDUCE`: `callable(*args)`.
    Reduce,
    /// `NEWOBJ`: `cls.__new__(cls, *args)`.
    NewObj,
    /// `NEWOBJ_EX`: `cls.__new__(cls, *args, **kwargs)`; `args` holds `(args, kwargs)`.
    NewObjEx,
    /// `INST`/`OBJ`: protocol 0/1 instance creation.
    Inst,
}

/// A value Python would have built by calling something. Kept opaque.
#[derive(Debug, Clone)]
pub struct Object {
    pub callable: ValueId,
    pub args: ValueId,
    pub kind: ObjectKind,
    /// `BUILD` state (`__setstate__` / `__dict__` update), if any.
    pub state: Option<ValueId>,
    /// Items `APPEND`ed to it (list subclasses).
    pub list_items: Vec<ValueId>,
    /// Items `SETITEM`ed on it (`OrderedDict` and other dict subclasses).
    pub dict_items: Vec<(ValueId, ValueId)>,
}

/// A dict with Python's overwrite-on-equal-key semantics for hashable scalar keys.
#[derive(Debug, Clone, Default)]
pub struct Dict {
    pub entries: Vec<(ValueId, ValueId)>,
    index: HashMap<HashKey, usize>,
}

/// Keys we can compare without Python: ints/bools (equal when numerically equal), strings,
/// bytes and `None`. Other keys are kept in order without deduplication.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum HashKey {
    Int(i64),
    Str(Box<str>),
    Bytes(Box<[u8]>),
    None,
}

/// One node of the object tree.
#[derive(Debug, Clone)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer beyond i64: little-endian two's complement bytes, as pickle stores them.
    BigInt(Box<[u8]>),
    Float(f64),
    Str(Box<str>),
    Bytes(Box<[u8]>),
    ByteArray(Box<[u8]>),
    List(Vec<ValueId>),
    Tuple(Box<[ValueId]>),
    Dict(Dict),
    Set(Vec<ValueId>),
    FrozenSet(Vec<ValueId>),
    Global(Global),
    Object(Box<Object>),
    /// A persistent id no reader resolved.
    PersistentId(ValueId),
    Storage(Box<StorageRef>),
    Tensor(Box<TensorRef>),
}

impl Value {
    /// A short type name for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::ByteArray(_) => "bytearray",
            Value::List(_) => "list",
            Value::Tuple(_) => "tuple",
            Value::Dict(_) => "dict",
            Value::Set(_) => "set",
            Value::FrozenSet(_) => "frozenset",
            Value::Global(_) => "global",
            Value::Object(_) => "object",
            Value::PersistentId(_) => "persistent id",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
        }
    }
}

/// The arena holding every value of one pickle (or one safetensors header).
#[derive(Debug, Clone, Default)]
pub struct ObjectGraph {
    values: Vec<Value>,
}

impl ObjectGraph {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn push(&mut self, value: Value) -> ValueId {
        let id = self.values.len() as ValueId;
        self.values.push(value);
        id
    }

    pub fn get(&self, id: ValueId) -> &Value {
        &self.values[id as usize]
    }

    pub fn get_mut(&mut self, id: ValueId) -> &mut Value {
        &mut self.values[id as usize]
    }

    /// Every value with its id, in creation order.
    pub fn iter(&self) -> impl Iterator<Item = (ValueId, &Value)> {
        self.values
            .iter()
            .enumerate()
            .map(|(i, v)| (i as ValueId, v))
    }

    /// The string inside a `Str` value.
    pub fn as_str(&self, id: ValueId) -> Option<&str> {
        match self.get(id) {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer inside an `Int` (or `Bool`) value.
    pub fn as_int(&self, id: ValueId) -> Option<i64> {
        match self.get(id) {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }

    /// Elements of a tuple or list.
    pub fn as_seq(&self, id: ValueId) -> Option<&[ValueId]> {
        match self.get(id) {
            Value::Tuple(t) => Some(t),
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    /// The global a value names, if it is one.
    pub fn as_global(&self, id: ValueId) -> Option<&Global> {
        match self.get(id) {
            Value::Global(g) => Some(g),
            _ => None,
        }
    }

    /// Key/value pairs of a dict or of a dict-like object (an `OrderedDict`).
    pub fn dict_items(&self, id: ValueId) -> Option<&[(ValueId, ValueId)]> {
        match self.get(id) {
            Value::Dict(d) => Some(&d.entries),
            Value::Object(o) if !o.dict_items.is_empty() || self.is_dict_class(o.callable) => {
                Some(&o.dict_items)
            }
            _ => None,
        }
    }

    fn is_dict_class(&self, callable: ValueId) -> bool {
        matches!(self.as_global(callable), Some(g) if g.module == "collections" && (g.name == "OrderedDict" || g.name == "defaultdict" || g.name == "Counter"))
    }

    /// Look a string key up in a dict-like value.
    pub fn dict_get(&self, id: ValueId, key: &str) -> Option<ValueId> {
        self.dict_items(id)?
            .iter()
            .find(|(k, _)| self.as_str(*k) == Some(key))
            .map(|&(_, v)| v)
    }

    fn hash_key(&self, id: ValueId) -> Option<HashKey> {
        Some(match self.get(id) {
            Value::Int(i) => HashKey::Int(*i),
            Value::Bool(b) => HashKey::Int(*b as i64),
            Value::Str(s) => HashKey::Str(s.clone()),
            Value::Bytes(b) => HashKey::Bytes(b.clone()),
            Value::None => HashKey::None,
            _ => return None,
        })
    }

    /// `dict[key] = value` with Python's semantics for scalar keys.
    pub fn dict_insert(&mut self, dict: ValueId, key: ValueId, value: ValueId) {
        let hk = self.hash_key(key);
        let Value::Dict(d) = &mut self.values[dict as usize] else {
            return;
        };
        match hk {
            Some(hk) => match d.index.get(&hk) {
                Some(&i) => d.entries[i].1 = value,
                None => {
                    d.index.insert(hk, d.entries.len());
                    d.entries.push((key, value));
                }
            },
            None => d.entries.push((key, value)),
        }
    }

    /// Copy the value `id` of `src` (and everything it references) into this graph.
    /// `memo` maps values already copied, so shared values stay shared and cycles close.
    pub fn import(
        &mut self,
        src: &ObjectGraph,
        id: ValueId,
        memo: &mut HashMap<ValueId, ValueId>,
    ) -> ValueId {
        if let Some(&done) = memo.get(&id) {
            return done;
        }
        // Reserve the slot first so a cycle back to this value finds it in the memo.
        let slot = self.push(Value::None);
        memo.insert(id, slot);
        let mut map = |g: &mut ObjectGraph, v: ValueId| g.import(src, v, memo);
        let copied = match src.get(id) {
            Value::List(items) => Value::List(items.iter().map(|&v| map(self, v)).collect()),
            Value::Tuple(items) => Value::Tuple(items.iter().map(|&v| map(self, v)).collect()),
            Value::Set(items) => Value::Set(items.iter().map(|&v| map(self, v)).collect()),
            Value::FrozenSet(items) => {
                Value::FrozenSet(items.iter().map(|&v| map(self, v)).collect())
            }
            Value::Dict(d) => {
                let entries: Vec<_> = d
                    .entries
                    .iter()
                    .map(|&(k, v)| (map(self, k), map(self, v)))
                    .collect();
                self.values[slot as usize] = Value::Dict(Dict::default());
                for (k, v) in entries {
                    self.dict_insert(slot, k, v);
                }
                return slot;
            }
            Value::Object(o) => Value::Object(Box::new(Object {
                callable: map(self, o.callable),
                args: map(self, o.args),
                kind: o.kind,
                state: o.state.map(|s| map(self, s)),
                list_items: o.list_items.iter().map(|&v| map(self, v)).collect(),
                dict_items: o
                    .dict_items
                    .iter()
                    .map(|&(k, v)| (map(self, k), map(self, v)))
                    .collect(),
            })),
            Value::PersistentId(v) => Value::PersistentId(map(self, *v)),
            Value::Tensor(t) => {
                let mut t = t.clone();
                t.storage = map(self, t.storage);
                Value::Tensor(t)
            }
            other => other.clone(),
        };
        self.values[slot as usize] = copied;
        slot
    }

    /// Replace the items of a dict or dict-like object (keeps its class and state).
    pub fn set_dict_items(&mut self, id: ValueId, items: Vec<(ValueId, ValueId)>) {
        match &mut self.values[id as usize] {
            Value::Dict(_) => {
                self.values[id as usize] = Value::Dict(Dict::default());
                for (k, v) in items {
                    self.dict_insert(id, k, v);
                }
            }
            Value::Object(o) => o.dict_items = items,
            _ => {}
        }
    }

    /// Render a dict key for a tensor path: strings as-is, classes as `module.name`, anything
    /// else as Python's `str(key)` — the same rule as the Python reference walk.
    pub fn key_segment(&self, id: ValueId) -> String {
        match self.get(id) {
            Value::Str(s) => s.to_string(),
            Value::Global(g) => g.qualified(),
            _ => self.py_repr(id, 0),
        }
    }

    /// Python's `repr` for scalar values and tuples of them (what `str()` of a key shows).
    fn py_repr(&self, id: ValueId, depth: usize) -> String {
        match self.get(id) {
            Value::Str(s) => py_str_repr(s),
            Value::Int(i) => i.to_string(),
            Value::BigInt(b) => crate::pickle::bigint_to_decimal(b),
            Value::Bool(true) => "True".into(),
            Value::Bool(false) => "False".into(),
            Value::None => "None".into(),
            Value::Float(f) => python_float_repr(*f),
            Value::Global(g) => format!("<class '{}'>", g.qualified()),
            Value::Bytes(b) => format!(
                "b{}",
                py_str_repr(&b.iter().map(|&c| c as char).collect::<String>())
            ),
            Value::Tuple(items) if depth < 8 => {
                let parts: Vec<String> =
                    items.iter().map(|&i| self.py_repr(i, depth + 1)).collect();
                if parts.len() == 1 {
                    format!("({},)", parts[0])
                } else {
                    format!("({})", parts.join(", "))
                }
            }
            other => format!("<{}>", other.type_name()),
        }
    }
}

/// Python's `repr` of a str: single quotes unless the text holds one and no double quote.
fn py_str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's `repr` of a float: shortest round-trip digits, scientific notation outside
/// `1e-4 <= |x| < 1e16` (`1e+300`, `1e-05`), `.0` on integral values, `inf`, `nan`.
pub fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "-1.2345e-7".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("integer exponent");
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        let body = if point <= 0 {
            format!("0.{}{}", "0".repeat((-point) as usize), digits)
        } else if point as usize >= digits.len() {
            format!("{}{}.0", digits, "0".repeat(point as usize - digits.len()))
        } else {
            format!(
                "{}.{}",
                &digits[..point as usize],
                &digits[point as usize..]
            )
        };
        format!("{sign}{body}")
    } else {
        let m = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{m}e{esign}{:02}", exp.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::python_float_repr as r;

    #[test]
    fn float_repr_matches_python() {
        for (f, s) in [
            (1.5, "1.5"),
            (1e300, "1e+300"),
            (1e-5, "1e-05"),
            (5e-324, "5e-324"),
            (1e16, "1e+16"),
            (123456.789, "123456.789"),
            (0.1, "0.1"),
            (0.0001, "0.0001"),
            (-2.5e-3, "-0.0025"),
            (100.0, "100.0"),
            (1234567890123456.0, "1234567890123456.0"),
        ] {
            assert_eq!(r(f), s);
        }
    }
}
