//! The pickle machine on arbitrary bytes, with torch's hooks (as a zip `data.pkl` would be
//! read) and without. Invariant: never panics, and every import it reports is also a
//! `Global` value in the graph.
#![no_main]
use ldmkit_core::pickle::{DefaultHooks, Limits, Unpickler};
use ldmkit_core::source::{Cursor, MemSource, Source};
use ldmkit_core::value::{ObjectGraph, Value};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let src = MemSource::new(data.to_vec());
    let mut graph = ObjectGraph::new();
    let limits = Limits { max_values: 200_000, max_total_bytes: 8 << 20, ..Limits::default() };
    let mut unpickler = Unpickler::new(&mut graph, limits);
    let mut cursor = Cursor::new(&src, 0, src.len());
    let _ = unpickler.load(&mut cursor, &mut DefaultHooks);
    let imports: Vec<_> = unpickler.imports().to_vec();
    for imp in imports {
        assert!(graph.iter().any(|(_, v)| matches!(v, Value::Global(g) if *g == imp.global)));
    }
});
