//! Reading tensor values to measure them: one tensor's statistics, and how two checkpoints
//! differ. Both stream a chunk at a time, so memory stays flat for any file size.

pub mod diff;
pub mod stats;

/// Elements read per chunk.
const CHUNK: u64 = 1 << 20;
