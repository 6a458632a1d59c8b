//! One module per subcommand; each returns the process exit code.

pub mod adapter_view;
pub mod bench_encoders;
pub mod bench_train;
pub mod check_attention;
pub mod diff;
pub mod export;
pub mod hash;
pub mod inputs;
pub mod inspect;
pub mod meta;
pub mod pre_encode;
pub mod rewrite;
pub mod sample;
pub mod scan;
pub mod scan_dir;
pub mod shortcuts;
pub mod stats;
pub mod tokenize;
pub mod train;

use ldmkit_core::source::{FileSource, SharedSource};
use std::path::Path;
use std::sync::Arc;

/// Exit code for an unreadable input.
pub const EXIT_ERROR: u8 = 2;

/// Open a file as a source, with the message users should see if it fails.
pub fn open_source(path: &Path) -> Result<SharedSource, String> {
    FileSource::open(path)
        .map(|s| Arc::new(s) as SharedSource)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_string(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            _ => e.to_string(),
        })
}

/// Print `error: FILE: message` on stderr.
pub fn report_error(path: &Path, message: impl std::fmt::Display) {
    eprintln!("error: {}: {message}", path.display());
}
