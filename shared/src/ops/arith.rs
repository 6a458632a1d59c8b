//! Arithmetic merges with AUTOMATIC1111's semantics (`modules/extras.py:run_modelmerger`).
//!
//! Weighted sum `A·(1−α) + B·α`; add difference `A + (B − C)·α`. Floating tensors present
//! in every input with one shape are combined; integer tensors (CLIP's `position_ids`) and
//! keys missing from B keep A's values; keys only in B are added, as A1111 does. The result
//! has A's dtype. Shape mismatches are refused: a silent partial merge is worse than none.
//!
//! With block weights (supermerger's block-weighted merge), α is the weight of the key's
//! block ([`crate::adapter::blocks`]): `BASE` for the text encoders, `IN00`…`OUT11` for the
//! UNet; keys outside any block (the VAE) keep the step's own α.

use super::{Entry, Working};
use crate::adapter::blocks::{self, BlockWeights};
use crate::error::{Error, Result};
use crate::plan::{LazyData, LazyTensor};
use std::sync::Arc;

fn mismatch(key: &str, a: &LazyTensor, b: &LazyTensor) -> Error {
    Error::op(format!(
        "'{key}' has shape {:?} in one model and {:?} in the other",
        a.shape, b.shape
    ))
}

/// α for each key: the step's, or its block's.
fn alpha_of<'a>(
    alpha: f64,
    blocks: Option<&'a BlockWeights>,
    sdxl: bool,
) -> impl Fn(&str) -> f64 + 'a {
    move |key| match blocks.zip(blocks::of_checkpoint_key(key, sdxl)) {
        Some((w, block)) => w.weight(block),
        None => alpha,
    }
}

/// `work := work·(1−α) + b·α`.
pub fn weighted_sum(
    work: &mut Working,
    b: &Working,
    alpha: f64,
    blocks: Option<&BlockWeights>,
) -> Result<()> {
    if let Some(w) = blocks {
        if let Some((block, bad)) = w.weights().iter().find(|(_, a)| !(0.0..=1.0).contains(a)) {
            return Err(Error::op(format!(
                "weighted-sum block weight {} of {} must be between 0 and 1",
                crate::value::python_float_repr(*bad),
                block.id()
            )));
        }
    }
    let alpha = alpha_of(alpha, blocks, blocks::sdxl_numbering(work));
    combine(work, b, None, |key, a, b, _| LazyData::WeightedSum {
        a: a.clone(),
        b: b.clone(),
        alpha: alpha(key),
    })
}

/// `work := work + (b − c)·α`.
pub fn add_difference(
    work: &mut Working,
    b: &Working,
    c: &Working,
    alpha: f64,
    blocks: Option<&BlockWeights>,
) -> Result<()> {
    let alpha = alpha_of(alpha, blocks, blocks::sdxl_numbering(work));
    combine(work, b, Some(c), |key, a, b, c| LazyData::AddDifference {
        a: a.clone(),
        b: b.clone(),
        c: c.expect("three inputs").clone(),
        alpha: alpha(key),
    })
}

fn combine(
    work: &mut Working,
    b: &Working,
    c: Option<&Working>,
    op: impl Fn(&str, &LazyTensor, &LazyTensor, Option<&LazyTensor>) -> LazyData,
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
        let data = op(key, a, &eb.tensor, ec);
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
