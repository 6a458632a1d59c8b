//! The whole reading pipeline (detect, zip / legacy / safetensors, pickle, torch rebuild,
//! tensor walk, report). Invariant: every tensor's view lies inside its storage and every
//! located storage inside the input.
#![no_main]
use ldmkit_core::source::{MemSource, Source};
use ldmkit_core::tensor::{DataLocation, TensorRef};
use ldmkit_core::{Checkpoint, Report};
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let src = Arc::new(MemSource::new(data.to_vec()));
    let len = src.len();
    let Ok(ckpt) = Checkpoint::open(src) else { return };
    let Ok(tensors) = ckpt.tensors() else { return };
    for t in &tensors {
        let s = ckpt.storage(t.tensor);
        let span = TensorRef::storage_span(&t.tensor.shape, &t.tensor.strides, t.tensor.storage_offset)
            .expect("validated views do not overflow");
        assert!((span * t.tensor.dtype.bits()).div_ceil(8) <= s.nbytes().unwrap());
        if let DataLocation::Range { offset, len: n } = s.data {
            assert!(offset + n <= len);
        }
    }
    let _ = Report::new(&ckpt);
});
