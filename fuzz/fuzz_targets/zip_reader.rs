//! The zip directory reader. Invariant: every entry it accepts lies inside the input.
#![no_main]
use ldmkit_core::container::zip::ZipArchive;
use ldmkit_core::source::{MemSource, Source};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let src = MemSource::new(data.to_vec());
    if let Ok(archive) = ZipArchive::open(&src) {
        for e in archive.entries() {
            assert!(e.data_offset + e.compressed_size <= src.len());
            let _ = archive.read(&src, e, 1 << 20);
        }
    }
});
