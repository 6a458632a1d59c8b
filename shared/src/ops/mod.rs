//! Operations on checkpoints: pure functions over metadata.
//!
//! A [`Working`] checkpoint is what a recipe step sees: the state dict as ordered
//! [`LazyTensor`]s, and (until stripped) the rest of a torch object tree it came from —
//! optimizer state, callbacks, hyper-parameters — to be re-emitted verbatim. No operation
//! reads a tensor byte; arithmetic is deferred into the plan that writes the result.

mod arith;
pub(crate) mod ema;
mod inputs;
mod merge;
mod output;
mod select;

pub use arith::{add_difference, weighted_sum};
pub use ema::{apply_ema, EmaMode};
pub use inputs::{diffusers_weight_files, find_state_dict, Input, Inputs, DIFFUSERS_WEIGHT_FILES};
pub use merge::{fill_from, graft, GraftReport};
pub use output::{safetensors_plan, torch_plan, OutputNotes, OutputPolicy};
pub use select::{cast, drop_matching, keep_matching, rename_prefix, swap_component};

use crate::error::{Error, Result};
use crate::plan::LazyTensor;
use crate::value::ValueId;
use indexmap::IndexMap;

/// Where a state-dict tensor came from unchanged: tensor value `id` of input `input`'s
/// object tree. Writers use it to keep torch's storage sharing and views as the source had them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub input: usize,
    pub id: ValueId,
}

/// One state-dict entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub tensor: LazyTensor,
    /// Set while the tensor is an input's tensor, unchanged.
    pub origin: Option<Origin>,
}

/// The object tree a working checkpoint still carries: input `input`'s whole tree, whose
/// state-dict value `state_dict` is replaced by the working state dict when written.
#[derive(Debug, Clone, Copy)]
pub struct Tree {
    pub input: usize,
    pub state_dict: ValueId,
}

/// A checkpoint being rewritten.
#[derive(Debug, Clone, Default)]
pub struct Working {
    pub state_dict: IndexMap<String, Entry>,
    pub tree: Option<Tree>,
    /// The state-dict container of the input it came from (a `dict` or an `OrderedDict` with
    /// torch's `_metadata`), reproduced when a bare state dict is written as a torch file.
    pub container: Option<Origin>,
}

impl Working {
    /// Drop everything but the state dict.
    pub fn strip(&mut self) {
        self.tree = None;
    }

    pub fn get(&self, key: &str) -> Result<&Entry> {
        self.state_dict
            .get(key)
            .ok_or_else(|| Error::op(format!("no tensor '{key}'")))
    }
}
