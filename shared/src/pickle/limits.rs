//! Hard limits for the pickle machine.
//!
//! A real SD training checkpoint's `data.pkl` holds a few thousand tensors and well under a
//! million values; the defaults leave two orders of magnitude of headroom while keeping the
//! worst case for hostile input to a few hundred MB and linear time.

/// Caps on what one pickle may build.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Values in the object graph (every int, string, container, ...).
    pub max_values: usize,
    /// Memo entries.
    pub max_memo: usize,
    /// Open `MARK`s at once (nesting depth while building).
    pub max_mark_depth: usize,
    /// Bytes in one string/bytes value.
    pub max_string: u64,
    /// Bytes in all strings/bytes values together.
    pub max_total_bytes: u64,
    /// Bytes of one arbitrary-precision integer.
    pub max_bigint: u64,
    /// Nesting depth when walking the tree for tensors.
    pub max_walk_depth: usize,
    /// Bytes of one pickle held in memory (`data.pkl`).
    pub max_pickle_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_values: 4_000_000,
            max_memo: 4_000_000,
            max_mark_depth: 10_000,
            max_string: 64 << 20,
            max_total_bytes: 256 << 20,
            max_bigint: 4096,
            max_walk_depth: 500,
            max_pickle_bytes: 512 << 20,
        }
    }
}
