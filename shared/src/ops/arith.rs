//! Arithmetic merges with AUTOMATIC1111's semantics (`modules/extras.py:run_modelmerger`).
//!
//! Weighted sum `A·(1−α) + B·α`; add difference `A + (B − C)·α`. Floating tensors present
//! in every input with one shape are combined; integer tensors (CLIP's `position_ids`) and
//! keys missing from B keep A's values; keys only in B are added, as A1111 does. The result
//! has A's dtype. Shape mismatches are refused: a silent partial merge is worse than none.

use super::{Entry, Working};
use crate::error::{Error, Result};
use crate::plan::{LazyData, LazyTensor};
use std::sync::Arc;

fn mismatch(key: &str, a: &LazyTensor, b: &LazyTensor) -> Error {
    Error::op(format!(
        "'{key}' has shape {:?} in one model and {:?} in the other",
        a.shape, b.shape
    ))
}

/// `work := work·(1−α) + b·α`.
pub fn weighted_sum(work: &mut Working, b: &Working, alpha: f64) -> Result<()> {
    combine(work, b, None, |a, b, _| LazyData::WeightedSum {
        a: a.clone(),
        b: b.clone(),
        alpha,
    })
}

/// `work := work + (b − c)·α`.
pub fn add_difference(work: &mut Working, b: &Working, c: &Working, alpha: f64) -> Result<()> {
    combine(work, b, Some(c), |a, b, c| LazyData::AddDifference {
        a: a.clone(),
        b: b.clone(),
        c: c.expect("three inputs").clone(),
        alpha,
    })
}

fn combine(
    work: &mut Working,
    b: &Working,
    c: Option<&Working>,
    op: impl Fn(&LazyTensor, &LazyTensor, Option<&LazyTensor>) -> LazyData,
) -> Result<()> {
    for (key, entry) in work.state_dict.iter_mut() {
        let a = &entry.tensor;
        let Some(eb) = b.state_dict.get(key) else {
            continue;
        };
        let ec = match c {
            Some(c) => match c.state_dict.get(key) {
                Some(e) => Some(&e.tensor),
                None => continue,
            },
            None => None,
        };
        if !a.dtype.is_float() || !eb.tensor.dtype.is_float() {
            continue;
        }
        if eb.tensor.shape != a.shape {
            return Err(mismatch(key, a, &eb.tensor));
        }
        if let Some(t) = ec {
            if t.shape != a.shape {
                return Err(mismatch(key, a, t));
            }
        }
        let data = op(a, &eb.tensor, ec);
        *entry = Entry {
            tensor: LazyTensor {
                dtype: a.dtype,
                shape: a.shape.clone(),
                data: Arc::new(data),
            },
            origin: None,
        };
    }
    // Keys only in B come along, as in A1111 — but not B's LitEma copies: A's were dropped
    // or kept on purpose before the merge.
    for (key, entry) in &b.state_dict {
        if !work.state_dict.contains_key(key) && !key.starts_with(crate::ops::ema::EMA_PREFIX) {
            work.state_dict.insert(key.clone(), entry.clone());
        }
    }
    Ok(())
}
