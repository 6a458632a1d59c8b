//! The safetensors reader. Invariant: every accepted tensor's bytes lie inside the input and
//! match its shape and dtype.
#![no_main]
use ldmkit_core::source::{MemSource, Source};
use ldmkit_core::tensor::DataLocation;
use ldmkit_core::Checkpoint;
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    // Force the safetensors path: a length prefix and a header that starts with '{'.
    let mut bytes = data.to_vec();
    if bytes.len() >= 9 {
        bytes[8] = b'{';
    }
    let src = Arc::new(MemSource::new(bytes));
    let len = src.len();
    if let Ok(ckpt) = Checkpoint::open(src) {
        for t in ckpt.tensors().expect("safetensors trees are flat") {
            let DataLocation::Range { offset, len: n } = ckpt.storage(t.tensor).data else {
                panic!("safetensors storages are ranges");
            };
            assert!(offset + n <= len);
            assert_eq!(n, t.tensor.nbytes());
        }
    }
});
