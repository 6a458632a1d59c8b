//! The opcode interpreter.

use super::bigint::{bigint_to_i64, decimal_to_bigint};
use super::limits::Limits;
use super::text::{decode_raw_unicode_escape, decode_string_literal};
use crate::error::{Error, Result};
use crate::source::Cursor;
use crate::value::{Dict, Global, Object, ObjectGraph, ObjectKind, Value, ValueId};
use std::collections::HashMap;

/// Where the machine asks its embedder to interpret torch-specific constructs.
///
/// Errors are plain messages; the machine adds the byte offset.
pub trait Hooks {
    /// `PERSID`/`BINPERSID`: turn a persistent id into a value (torch: a storage).
    fn persistent_load(
        &mut self,
        graph: &mut ObjectGraph,
        pid: ValueId,
    ) -> Result<ValueId, String> {
        Ok(graph.push(Value::PersistentId(pid)))
    }

    /// `REDUCE`: `Some(value)` to replace the default opaque object (torch: a tensor).
    fn reduce(
        &mut self,
        _graph: &mut ObjectGraph,
        _callable: ValueId,
        _args: ValueId,
    ) -> Result<Option<ValueId>, String> {
        Ok(None)
    }

    /// `BUILD` on a tensor or storage: Python would call its `__setstate__` (torch:
    /// `Tensor.set_`, which changes what the tensor views). `Ok(Some(v))` replaces the stack
    /// top with `v`; the default refuses, since ignoring the state would read other values
    /// than torch does.
    fn build_tensor(
        &mut self,
        graph: &mut ObjectGraph,
        target: ValueId,
        _state: ValueId,
    ) -> Result<Option<ValueId>, String> {
        Err(format!(
            "BUILD state on a {} (torch would call its __setstate__)",
            graph.get(target).type_name()
        ))
    }
}

/// Hooks that interpret nothing: every call stays opaque.
pub struct DefaultHooks;
impl Hooks for DefaultHooks {}

/// One global a pickle imports, with how often and where first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    /// What Python's unpickler imports: Python 2 names mapped as `fix_imports` does.
    pub global: Global,
    /// The name as the pickle writes it, where `fix_imports` maps it to another.
    pub written: Option<Global>,
    /// For a name computed at load time (`STACK_GLOBAL` over strings built by calls): the
    /// callable that builds it. `global` then holds a placeholder.
    pub computed_by: Option<String>,
    /// Where the import happens when not in the file's own pickle: the value whose load
    /// unpickles nested data (`state_dict/x → nested pickle`).
    pub via: Option<String>,
    pub count: u64,
    /// Byte offset of the first import, in the pickle.
    pub first_offset: u64,
}

impl Import {
    /// The name as written in the pickle: what torch's `weights_only` loader maps with its
    /// own tables and looks up, so what the verdict is about.
    pub fn weights_only_name(&self) -> &Global {
        self.written.as_ref().unwrap_or(&self.global)
    }

    /// The key two imports are merged under: the same global, reached the same way.
    pub fn same_as(&self, other: &Import) -> bool {
        self.global == other.global
            && self.written == other.written
            && self.computed_by == other.computed_by
            && self.via == other.via
    }
}

/// Interprets one pickle from a cursor into an [`ObjectGraph`].
pub struct Unpickler<'g> {
    graph: &'g mut ObjectGraph,
    limits: Limits,
    stack: Vec<ValueId>,
    marks: Vec<usize>,
    memo: HashMap<u64, ValueId>,
    total_bytes: u64,
    imports: Vec<Import>,
    import_index: HashMap<(Global, Option<Global>, Option<String>), usize>,
    protocol: u8,
    op_offset: u64,
}

type Step<T> = std::result::Result<T, String>;

impl<'g> Unpickler<'g> {
    pub fn new(graph: &'g mut ObjectGraph, limits: Limits) -> Self {
        Unpickler {
            graph,
            limits,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            total_bytes: 0,
            imports: Vec::new(),
            import_index: HashMap::new(),
            protocol: 0,
            op_offset: 0,
        }
    }

    /// Globals imported so far — also after an error, so a scanner still reports what a
    /// truncated or broken pickle would have imported before failing.
    pub fn imports(&self) -> &[Import] {
        &self.imports
    }

    /// The highest `PROTO` seen (0 if none).
    pub fn protocol(&self) -> u8 {
        self.protocol
    }

    /// Run until `STOP`; returns the result value. `base` is the cursor position counted as
    /// pickle byte 0 in error messages.
    pub fn load(&mut self, cursor: &mut Cursor<'_>, hooks: &mut dyn Hooks) -> Result<ValueId> {
        let base = cursor.position();
        self.stack.clear();
        self.marks.clear();
        self.memo.clear();
        loop {
            self.op_offset = cursor.position() - base;
            let op = match cursor.take(1)? {
                Some(b) => b[0],
                None => {
                    return Err(self.error("pickle ends before STOP (truncated)".into()));
                }
            };
            match self.step(op, cursor, hooks) {
                Ok(Some(result)) => return Ok(result),
                Ok(None) => {}
                Err(msg) => return Err(self.error(msg)),
            }
        }
    }

    fn error(&self, message: String) -> Error {
        if message.starts_with("limit:") {
            Error::Limit(format!(
                "{} (at pickle byte {})",
                &message[7..],
                self.op_offset
            ))
        } else {
            Error::Pickle {
                offset: self.op_offset,
                message,
            }
        }
    }

    // ---- stack helpers -------------------------------------------------------------

    fn push(&mut self, value: Value) -> Step<()> {
        let id = self.alloc(value)?;
        self.stack.push(id);
        Ok(())
    }

    fn alloc(&mut self, value: Value) -> Step<ValueId> {
        if self.graph.len() >= self.limits.max_values {
            return Err(format!(
                "limit: more than {} values in one pickle",
                self.limits.max_values
            ));
        }
        Ok(self.graph.push(value))
    }

    fn pop(&mut self) -> Step<ValueId> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err("stack underflow".into());
        }
        Ok(self.stack.pop().expect("checked"))
    }

    fn top(&self) -> Step<ValueId> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err("stack underflow".into());
        }
        Ok(*self.stack.last().expect("checked"))
    }

    fn pop_mark(&mut self) -> Step<Vec<ValueId>> {
        let mark = self.marks.pop().ok_or("no MARK on the stack")?;
        Ok(self.stack.split_off(mark))
    }

    fn count_bytes(&mut self, n: u64) -> Step<()> {
        if n > self.limits.max_string {
            return Err(format!(
                "limit: a {n}-byte string (limit {})",
                self.limits.max_string
            ));
        }
        self.total_bytes += n;
        if self.total_bytes > self.limits.max_total_bytes {
            return Err(format!(
                "limit: more than {} bytes of strings",
                self.limits.max_total_bytes
            ));
        }
        Ok(())
    }

    fn read<'c>(cursor: &'c mut Cursor<'_>, n: usize) -> Step<&'c [u8]> {
        match cursor.take(n) {
            Ok(Some(b)) => Ok(b),
            Ok(None) => Err("pickle ends inside an opcode (truncated)".into()),
            Err(e) => Err(format!("read failed: {e}")),
        }
    }

    /// Read a length-prefixed payload after checking the length against the limits and the
    /// bytes actually left, so a forged length never allocates.
    fn read_sized<'c>(&mut self, cursor: &'c mut Cursor<'_>, len: u64) -> Step<&'c [u8]> {
        self.count_bytes(len)?;
        if len > cursor.remaining() {
            return Err(format!(
                "a {len}-byte value runs past the end of the pickle (truncated)"
            ));
        }
        Self::read(cursor, len as usize)
    }

    fn read_line(&mut self, cursor: &mut Cursor<'_>) -> Step<Vec<u8>> {
        let mut line = Vec::new();
        loop {
            let b = Self::read(cursor, 1)?[0];
            if b == b'\n' {
                return Ok(line);
            }
            line.push(b);
            if line.len() as u64 > self.limits.max_string {
                return Err(format!(
                    "limit: a text line over {} bytes",
                    self.limits.max_string
                ));
            }
        }
    }

    fn u8(cursor: &mut Cursor<'_>) -> Step<u64> {
        Ok(Self::read(cursor, 1)?[0] as u64)
    }

    fn u16(cursor: &mut Cursor<'_>) -> Step<u64> {
        let b = Self::read(cursor, 2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]) as u64)
    }

    fn u32(cursor: &mut Cursor<'_>) -> Step<u64> {
        let b = Self::read(cursor, 4)?;
        Ok(u32::from_le_bytes(b.try_into().expect("4")) as u64)
    }

    fn u64(cursor: &mut Cursor<'_>) -> Step<u64> {
        let b = Self::read(cursor, 8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8")))
    }

    fn memo_put(&mut self, index: u64, id: ValueId) -> Step<()> {
        if self.memo.len() >= self.limits.max_memo && !self.memo.contains_key(&index) {
            return Err(format!(
                "limit: more than {} memo entries",
                self.limits.max_memo
            ));
        }
        self.memo.insert(index, id);
        Ok(())
    }

    fn memo_get(&mut self, index: u64) -> Step<()> {
        let id = *self
            .memo
            .get(&index)
            .ok_or_else(|| format!("memo entry {index} read before it was written"))?;
        self.stack.push(id);
        Ok(())
    }

    fn import(&mut self, module: &str, name: &str) -> Step<()> {
        // Like CPython's `fix_imports`, protocol 0-2 pickles name Python 2 globals.
        let written = Global::new(module, name);
        let global = if self.protocol < 3 {
            python3_name(&written)
        } else {
            written.clone()
        };
        let written = (global != written).then_some(written);
        self.record(global.clone(), written, None)?;
        self.push(Value::Global(global))
    }

    fn record(
        &mut self,
        global: Global,
        written: Option<Global>,
        computed_by: Option<String>,
    ) -> Step<()> {
        let key = (global, written, computed_by);
        match self.import_index.get(&key) {
            Some(&i) => self.imports[i].count += 1,
            None => {
                self.import_index.insert(key.clone(), self.imports.len());
                let (global, written, computed_by) = key;
                self.imports.push(Import {
                    global,
                    written,
                    computed_by,
                    via: None,
                    count: 1,
                    first_offset: self.op_offset,
                });
            }
        }
        Ok(())
    }

    /// `STACK_GLOBAL` over values that are not plain strings: names built at load time by
    /// calls (`_codecs.decode(...)`, `str.join`), so which global Python imports is known
    /// only by running them. Recorded as a computed import naming the callable.
    fn computed_import(&mut self, module: ValueId, name: ValueId) -> Step<()> {
        // What is called to make a value: a global, or what a call returned, called again
        // (`builtins.getattr(...)(...)` for `getattr('', 'join')(parts)`).
        fn maker(graph: &ObjectGraph, id: ValueId, depth: usize) -> String {
            match graph.get(id) {
                Value::Global(g) => g.qualified(),
                Value::Object(o) if depth < 8 => {
                    format!("{}(...)", maker(graph, o.callable, depth + 1))
                }
                other => format!("a {}", other.type_name()),
            }
        }
        let builder = |id: ValueId| -> Option<String> {
            match self.graph.get(id) {
                Value::Str(_) => None,
                Value::Object(o) => Some(maker(self.graph, o.callable, 0)),
                other => Some(format!("a {}", other.type_name())),
            }
        };
        let by = [builder(module), builder(name)]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(", ");
        let shown = |id: ValueId| self.graph.as_str(id).unwrap_or("?").to_string();
        let global = Global::new(&shown(module), &shown(name));
        self.record(global.clone(), None, Some(by))?;
        self.push(Value::Global(global))
    }

    fn str_value(&mut self, bytes: &[u8], what: &str) -> Step<Value> {
        let s = std::str::from_utf8(bytes).map_err(|_| format!("{what} is not valid UTF-8"))?;
        Ok(Value::Str(s.into()))
    }

    fn object(&mut self, callable: ValueId, args: ValueId, kind: ObjectKind) -> Step<()> {
        self.push(Value::Object(Box::new(Object {
            callable,
            args,
            kind,
            state: None,
            list_items: Vec::new(),
            dict_items: Vec::new(),
        })))
    }

    fn int_value(&mut self, le: Vec<u8>) -> Step<()> {
        match bigint_to_i64(&le) {
            Some(v) => self.push(Value::Int(v)),
            None => self.push(Value::BigInt(le.into())),
        }
    }

    // ---- opcodes ---------------------------------------------------------------------

    fn step(&mut self, op: u8, c: &mut Cursor<'_>, hooks: &mut dyn Hooks) -> Step<Option<ValueId>> {
        match op {
            // -- control
            0x80 => {
                let v = Self::u8(c)? as u8;
                if v > 5 {
                    return Err(format!("unsupported pickle protocol {v}"));
                }
                self.protocol = self.protocol.max(v);
            }
            0x95 => {
                // FRAME: framing does not change meaning, but like CPython's unpickler we
                // refuse a frame longer than the data left.
                let n = Self::u64(c)?;
                if n > c.remaining() {
                    return Err(format!(
                        "FRAME claims {n} bytes but only {} remain (truncated)",
                        c.remaining()
                    ));
                }
            }
            b'.' => {
                let result = self.pop()?;
                return Ok(Some(result));
            }
            b'(' => {
                if self.marks.len() >= self.limits.max_mark_depth {
                    return Err(format!(
                        "limit: more than {} nested MARKs",
                        self.limits.max_mark_depth
                    ));
                }
                self.marks.push(self.stack.len());
            }
            b'0' => {
                let floor = self.marks.last().copied().unwrap_or(0);
                if self.stack.len() > floor {
                    self.stack.pop();
                } else {
                    self.pop_mark()?;
                }
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let top = self.top()?;
                self.stack.push(top);
            }
            // -- scalars
            b'N' => self.push(Value::None)?,
            0x88 => self.push(Value::Bool(true))?,
            0x89 => self.push(Value::Bool(false))?,
            b'I' => {
                let line = self.read_line(c)?;
                let text = std::str::from_utf8(&line).map_err(|_| "INT is not ASCII")?;
                match text {
                    "00" => self.push(Value::Bool(false))?,
                    "01" => self.push(Value::Bool(true))?,
                    _ => {
                        let le = decimal_to_bigint(text.trim_end_matches('L'))
                            .ok_or_else(|| format!("INT argument {text:?} is not an integer"))?;
                        self.int_value(le)?;
                    }
                }
            }
            b'L' => {
                let line = self.read_line(c)?;
                let text = std::str::from_utf8(&line).map_err(|_| "LONG is not ASCII")?;
                let le = decimal_to_bigint(text.trim_end_matches('L'))
                    .ok_or_else(|| format!("LONG argument {text:?} is not an integer"))?;
                self.int_value(le)?;
            }
            b'J' => {
                let v = Self::u32(c)? as u32 as i32;
                self.push(Value::Int(v as i64))?;
            }
            b'K' => {
                let v = Self::u8(c)?;
                self.push(Value::Int(v as i64))?;
            }
            b'M' => {
                let v = Self::u16(c)?;
                self.push(Value::Int(v as i64))?;
            }
            0x8a | 0x8b => {
                let n = if op == 0x8a {
                    Self::u8(c)?
                } else {
                    Self::u32(c)? as u32 as i32 as i64 as u64
                };
                if (n as i64) < 0 {
                    return Err("LONG4 with a negative length".into());
                }
                if n > self.limits.max_bigint {
                    return Err(format!(
                        "limit: a {n}-byte integer (limit {})",
                        self.limits.max_bigint
                    ));
                }
                let le = self.read_sized(c, n)?.to_vec();
                self.int_value(le)?;
            }
            b'F' => {
                let line = self.read_line(c)?;
                let v = std::str::from_utf8(&line)
                    .ok()
                    .and_then(|t| parse_py_float(t.trim()))
                    .ok_or("FLOAT argument is not a number")?;
                self.push(Value::Float(v))?;
            }
            b'G' => {
                let b = Self::read(c, 8)?;
                let v = f64::from_be_bytes(b.try_into().expect("8"));
                self.push(Value::Float(v))?;
            }
            // -- strings and bytes
            b'S' => {
                let line = self.read_line(c)?;
                let bytes = decode_string_literal(&line)?;
                // Python 3 decodes protocol-0 strings as ASCII by default; Latin-1 keeps
                // every byte representable for display.
                let s: String = bytes.iter().map(|&b| b as char).collect();
                self.count_bytes(s.len() as u64)?;
                self.push(Value::Str(s.into()))?;
            }
            b'T' | b'U' => {
                let n = if op == b'T' {
                    Self::u32(c)? as u32 as i32 as i64
                } else {
                    Self::u8(c)? as i64
                };
                if n < 0 {
                    return Err("BINSTRING with a negative length".into());
                }
                let bytes = self.read_sized(c, n as u64)?;
                let s: String = bytes.iter().map(|&b| b as char).collect();
                self.push(Value::Str(s.into()))?;
            }
            b'V' => {
                let line = self.read_line(c)?;
                let s = decode_raw_unicode_escape(&line)?;
                self.count_bytes(s.len() as u64)?;
                self.push(Value::Str(s.into()))?;
            }
            b'X' | 0x8c | 0x8d => {
                let n = match op {
                    b'X' => Self::u32(c)?,
                    0x8c => Self::u8(c)?,
                    _ => Self::u64(c)?,
                };
                let bytes = self.read_sized(c, n)?.to_vec();
                let v = self.str_value(&bytes, "BINUNICODE")?;
                self.push(v)?;
            }
            b'B' | b'C' | 0x8e | 0x96 => {
                let n = match op {
                    b'B' => Self::u32(c)?,
                    b'C' => Self::u8(c)?,
                    _ => Self::u64(c)?,
                };
                let bytes: Box<[u8]> = self.read_sized(c, n)?.into();
                if op == 0x96 {
                    self.push(Value::ByteArray(bytes))?;
                } else {
                    self.push(Value::Bytes(bytes))?;
                }
            }
            0x97 => return Err("NEXT_BUFFER: out-of-band buffers are not supported".into()),
            0x98 => {
                self.top()?;
            }
            // -- containers
            b')' => self.push(Value::Tuple(Box::new([])))?,
            b't' => {
                let items = self.pop_mark()?;
                self.push(Value::Tuple(items.into()))?;
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let floor = self.marks.last().copied().unwrap_or(0);
                if self.stack.len() < floor + n {
                    return Err("stack underflow".into());
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.push(Value::Tuple(items.into()))?;
            }
            b']' => self.push(Value::List(Vec::new()))?,
            b'l' => {
                let items = self.pop_mark()?;
                self.push(Value::List(items))?;
            }
            b'}' => self.push(Value::Dict(Dict::default()))?,
            b'd' => {
                let items = self.pop_mark()?;
                if items.len() % 2 != 0 {
                    return Err("DICT with an odd number of items".into());
                }
                let dict = self.alloc(Value::Dict(Dict::default()))?;
                for kv in items.chunks_exact(2) {
                    self.graph.dict_insert(dict, kv[0], kv[1]);
                }
                self.stack.push(dict);
            }
            0x8f => self.push(Value::Set(Vec::new()))?,
            0x91 => {
                let items = self.pop_mark()?;
                self.push(Value::FrozenSet(items))?;
            }
            b'a' => {
                let item = self.pop()?;
                let target = self.top()?;
                self.append(target, vec![item])?;
            }
            b'e' => {
                let items = self.pop_mark()?;
                let target = self.top()?;
                self.append(target, items)?;
            }
            b's' => {
                let value = self.pop()?;
                let key = self.pop()?;
                let target = self.top()?;
                self.set_items(target, vec![key, value])?;
            }
            b'u' => {
                let items = self.pop_mark()?;
                if items.len() % 2 != 0 {
                    return Err("SETITEMS with an odd number of items".into());
                }
                let target = self.top()?;
                self.set_items(target, items)?;
            }
            0x90 => {
                let items = self.pop_mark()?;
                let target = self.top()?;
                match self.graph.get_mut(target) {
                    Value::Set(s) => s.extend(items),
                    Value::Object(o) => o.list_items.extend(items),
                    other => return Err(format!("ADDITEMS on a {}", other.type_name())),
                }
            }
            // -- memo
            b'p' => {
                let line = self.read_line(c)?;
                let index = parse_index(&line, "PUT")?;
                let top = self.top()?;
                self.memo_put(index, top)?;
            }
            b'q' => {
                let index = Self::u8(c)?;
                let top = self.top()?;
                self.memo_put(index, top)?;
            }
            b'r' => {
                let index = Self::u32(c)?;
                let top = self.top()?;
                self.memo_put(index, top)?;
            }
            0x94 => {
                let index = self.memo.len() as u64;
                let top = self.top()?;
                self.memo_put(index, top)?;
            }
            b'g' => {
                let line = self.read_line(c)?;
                let index = parse_index(&line, "GET")?;
                self.memo_get(index)?;
            }
            b'h' => {
                let index = Self::u8(c)?;
                self.memo_get(index)?;
            }
            b'j' => {
                let index = Self::u32(c)?;
                self.memo_get(index)?;
            }
            // -- globals and objects: recorded, never imported or called
            b'c' => {
                let module = self.read_line(c)?;
                let name = self.read_line(c)?;
                let (module, name) = (utf8(&module, "GLOBAL module")?, utf8(&name, "GLOBAL name")?);
                self.import(&module, &name)?;
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (Some(m), Some(n)) = (self.graph.as_str(module), self.graph.as_str(name))
                else {
                    return self.computed_import(module, name).map(|()| None);
                };
                let (m, n) = (m.to_string(), n.to_string());
                self.import(&m, &n)?;
            }
            0x82..=0x84 => {
                let code = match op {
                    0x82 => Self::u8(c)?,
                    0x83 => Self::u16(c)?,
                    _ => Self::u32(c)?,
                };
                self.import("copyreg._extension_registry", &code.to_string())?;
            }
            b'i' => {
                let module = self.read_line(c)?;
                let name = self.read_line(c)?;
                let (module, name) = (utf8(&module, "INST module")?, utf8(&name, "INST name")?);
                let args = self.pop_mark()?;
                self.import(&module, &name)?;
                let class = self.pop()?;
                let args = self.alloc(Value::Tuple(args.into()))?;
                self.object(class, args, ObjectKind::Inst)?;
            }
            b'o' => {
                let items = self.pop_mark()?;
                let (&class, rest) = items.split_first().ok_or("OBJ without a class")?;
                let args = self.alloc(Value::Tuple(rest.into()))?;
                self.object(class, args, ObjectKind::Inst)?;
            }
            0x81 => {
                let args = self.pop()?;
                let class = self.pop()?;
                self.object(class, args, ObjectKind::NewObj)?;
            }
            0x92 => {
                let kwargs = self.pop()?;
                let args = self.pop()?;
                let class = self.pop()?;
                let both = self.alloc(Value::Tuple(Box::new([args, kwargs])))?;
                self.object(class, both, ObjectKind::NewObjEx)?;
            }
            b'R' => {
                let args = self.pop()?;
                let callable = self.pop()?;
                match hooks.reduce(self.graph, callable, args)? {
                    Some(id) => self.stack.push(id),
                    None => self.object(callable, args, ObjectKind::Reduce)?,
                }
            }
            b'b' => {
                let state = self.pop()?;
                let target = self.top()?;
                match self.graph.get_mut(target) {
                    Value::Object(o) => o.state = Some(state),
                    Value::Tensor(_) | Value::Storage(_) => {
                        if let Some(v) = hooks.build_tensor(self.graph, target, state)? {
                            self.pop()?;
                            self.stack.push(v);
                        }
                    }
                    other => return Err(format!("BUILD on a {}", other.type_name())),
                }
            }
            b'P' => {
                let line = self.read_line(c)?;
                let pid = self.str_value(&line, "PERSID")?;
                let pid = self.alloc(pid)?;
                let v = hooks.persistent_load(self.graph, pid)?;
                self.stack.push(v);
            }
            b'Q' => {
                let pid = self.pop()?;
                let v = hooks.persistent_load(self.graph, pid)?;
                self.stack.push(v);
            }
            other => return Err(format!("unknown opcode 0x{other:02x}")),
        }
        Ok(None)
    }

    fn append(&mut self, target: ValueId, items: Vec<ValueId>) -> Step<()> {
        match self.graph.get_mut(target) {
            Value::List(l) => l.extend(items),
            Value::Object(o) => o.list_items.extend(items),
            other => return Err(format!("APPEND on a {}", other.type_name())),
        }
        Ok(())
    }

    fn set_items(&mut self, target: ValueId, items: Vec<ValueId>) -> Step<()> {
        match self.graph.get_mut(target) {
            Value::Dict(_) => {
                for kv in items.chunks_exact(2) {
                    self.graph.dict_insert(target, kv[0], kv[1]);
                }
            }
            Value::Object(o) => o
                .dict_items
                .extend(items.chunks_exact(2).map(|kv| (kv[0], kv[1]))),
            other => return Err(format!("SETITEM on a {}", other.type_name())),
        }
        Ok(())
    }
}

/// The Python 3 name of a Python 2 global, as `pickle`'s `fix_imports` finds it:
/// `_compat_pickle.NAME_MAPPING` for the pair, else `IMPORT_MAPPING` for the module.
fn python3_name(global: &Global) -> Global {
    let (m, n) = (global.module.as_str(), global.name.as_str());
    if let Some(&(_, _, pm, pn)) = super::py2::NAME_MAPPING
        .iter()
        .find(|&&(wm, wn, _, _)| wm == m && wn == n)
    {
        return Global::new(pm, pn);
    }
    Global::new(python3_module(m), n)
}

/// The Python 3 name of a Python 2 module (`_compat_pickle.IMPORT_MAPPING`).
fn python3_module(module: &str) -> &str {
    super::py2::IMPORT_MAPPING
        .iter()
        .find(|&&(w, _)| w == module)
        .map_or(module, |&(_, p)| p)
}

fn utf8(bytes: &[u8], what: &str) -> Step<String> {
    std::str::from_utf8(bytes)
        .map(str::to_string)
        .map_err(|_| format!("{what} is not UTF-8"))
}

fn parse_index(line: &[u8], what: &str) -> Step<u64> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .ok_or_else(|| format!("{what} index is not a number"))
}

fn parse_py_float(text: &str) -> Option<f64> {
    match text {
        "inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        "nan" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}
